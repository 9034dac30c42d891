//! The coordinator's front door. It accepts TCP itself, before tonic sees a connection, so
//! that: the number of open connections is capped (`max_connections`); a connection that does
//! not finish its TLS handshake within `tls_handshake_timeout_secs` is closed; an accept error
//! (EMFILE at the open-file limit) backs off instead of spinning; and every refused handshake
//! (a client certificate from another CA, an expired one, not TLS at all) is logged at warn
//! with the peer's address, at a limited rate. tonic gets the finished TLS streams, whose
//! connect info still carries the client certificate (`Request::peer_certs`).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::CertificateError;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tonic::transport::server::Connected;

use crate::daemon::limit::LogLimit;

/// How the front door limits connections.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once (in handshake or serving); more are closed at accept.
    pub max_connections: usize,
    /// How long a new connection may take to finish its TLS handshake.
    pub handshake_timeout: Duration,
    /// How long a connection without a client certificate may stay open after its handshake:
    /// it can only call `Enroll`, one short call. Without a limit an anonymous client that
    /// answers HTTP/2 pings could hold a `max_connections` slot forever.
    pub anonymous_lifetime: Duration,
}

/// First and longest pause after an accept error such as EMFILE.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));

/// A TLS connection that holds one of the `max_connections` slots until it is dropped. One
/// without a client certificate ends after [`Limits::anonymous_lifetime`].
pub struct Conn {
    io: TlsStream<TcpStream>,
    _slot: OwnedSemaphorePermit,
    anonymous_until: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Conn {
    fn new(io: TlsStream<TcpStream>, slot: OwnedSemaphorePermit, anonymous: Duration) -> Self {
        let has_cert = io.get_ref().1.peer_certificates().is_some();
        Self {
            io,
            _slot: slot,
            anonymous_until: (!has_cert).then(|| Box::pin(tokio::time::sleep(anonymous))),
        }
    }
}

impl Connected for Conn {
    type ConnectInfo = <TlsStream<TcpStream> as Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        if let Some(until) = me.anonymous_until.as_mut() {
            if until.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "a connection without a client certificate lives only long enough to enroll (anonymous_connection_secs)",
                )));
            }
        }
        Pin::new(&mut me.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Rate limits of the front door's log lines, one per kind so that a flood of one kind does
/// not hide another.
struct Logs {
    refused: LogLimit,
    at_cap: LogLimit,
    accept: LogLimit,
}

/// Starts accepting on `listener`; returns the stream of finished TLS connections for
/// tonic. The accept loop ends (and the listening socket closes) when the stream is dropped,
/// which tonic does when it begins its graceful shutdown.
pub fn incoming(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    limits: Limits,
) -> tokio_stream::wrappers::ReceiverStream<Result<Conn, io::Error>> {
    let (tx, rx) = mpsc::channel(1024);
    let logs = Arc::new(Logs {
        refused: LogLimit::new(20, Duration::from_secs(10)),
        at_cap: LogLimit::new(1, Duration::from_secs(10)),
        accept: LogLimit::new(1, Duration::from_secs(10)),
    });
    tokio::spawn(accept_loop(
        listener,
        TlsAcceptor::from(tls),
        limits,
        tx,
        logs,
    ));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    limits: Limits,
    tx: mpsc::Sender<Result<Conn, io::Error>>,
    logs: Arc<Logs>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut pause = ACCEPT_BACKOFF.0;
    loop {
        let accepted = tokio::select! {
            _ = tx.closed() => return,
            r = listener.accept() => r,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => {
                pause = ACCEPT_BACKOFF.0;
                a
            }
            // The peer gave up between SYN and accept: its problem, not the listener's.
            Err(e) if is_per_connection(&e) => continue,
            Err(e) => {
                if let Some(more) = logs.accept.admit() {
                    tracing::error!(
                        "cannot accept connections: {e}; pausing {pause:?}. At the open-file limit, raise LimitNOFILE in quorum.service above max_connections ({}){more}",
                        limits.max_connections
                    );
                }
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(ACCEPT_BACKOFF.1);
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            if let Some(more) = logs.at_cap.admit() {
                tracing::warn!(
                    %peer,
                    "refusing new connections: {} are open (max_connections in coordinator.yml); connections that do not finish their TLS handshake are closed after {:?}{more}",
                    limits.max_connections,
                    limits.handshake_timeout
                );
            }
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(handshake(
            tcp,
            peer,
            slot,
            acceptor.clone(),
            limits,
            tx.clone(),
            logs.clone(),
        ));
    }
}

/// Accept errors that concern one connection only; the next accept is fine.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

async fn handshake(
    tcp: TcpStream,
    peer: SocketAddr,
    slot: OwnedSemaphorePermit,
    acceptor: TlsAcceptor,
    limits: Limits,
    tx: mpsc::Sender<Result<Conn, io::Error>>,
    logs: Arc<Logs>,
) {
    let timeout = limits.handshake_timeout;
    match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Ok(Ok(io)) => {
            // Only fails when tonic has stopped taking connections (shutdown): drop it.
            let _ = tx
                .send(Ok(Conn::new(io, slot, limits.anonymous_lifetime)))
                .await;
        }
        Ok(Err(e)) => match refusal(&e) {
            Some(why) => {
                if let Some(more) = logs.refused.admit() {
                    tracing::warn!(%peer, "TLS handshake refused: {why}{more}");
                }
            }
            // Closed or reset before the handshake ended: a port probe or a client that
            // gave up, nothing refused.
            None => tracing::debug!(%peer, "connection closed during the TLS handshake: {e}"),
        },
        Err(_) => {
            if let Some(more) = logs.refused.admit() {
                tracing::warn!(
                    %peer,
                    "closed a connection that did not finish its TLS handshake within {timeout:?} (tls_handshake_timeout_secs){more}"
                );
            }
        }
    }
}

/// What a failed server handshake means for the operator, or None if the peer just went away.
fn refusal(e: &io::Error) -> Option<String> {
    let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return match e.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => None,
            _ => Some(e.to_string()),
        };
    };
    Some(match tls {
        rustls::Error::InvalidCertificate(c) => client_cert_refusal(c),
        rustls::Error::AlertReceived(rustls::AlertDescription::CertificateExpired) => {
            "the client refused this server's certificate as expired (or its clock is off): issue a new one with `quorum pki issue coordinator --ip ... --out DIR --force` into the files tls.cert and tls.key name; this coordinator presents it within seconds".to_string()
        }
        rustls::Error::AlertReceived(alert) => format!(
            "the client aborted the handshake ({alert:?}); if it is a Quorum agent or CLI, it refused this server's certificate: check that its CA is the one that signed tls.cert and that tls.cert names the coordinator"
        ),
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            format!("the client does not speak TLS ({tls}); Quorum accepts only TLS")
        }
        other => other.to_string(),
    })
}

fn client_cert_refusal(c: &CertificateError) -> String {
    let why = match c {
        // Another CA of the same name (every CA `quorum pki init` makes is "pigsty-ca") gets
        // as far as the signature check.
        CertificateError::UnknownIssuer | CertificateError::BadSignature => {
            "is not signed by this coordinator's CA (tls.ca_cert): its issuer is unknown or its signature does not verify".to_string()
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            "has expired: an agent's did not renew in time (enroll it again: `quorum pki token --host IP`, then `quorum-agent enroll` there); an operator's is issued again with `quorum pki issue admin`".to_string()
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "is not valid yet (check the clocks)".to_string()
        }
        CertificateError::Revoked => "is revoked".to_string(),
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            "is not for client authentication (no clientAuth usage)".to_string()
        }
        other => format!("was refused ({other})"),
    };
    format!("the client certificate {why}")
}
