//! Active/standby on a shared store: a standby answers every call with "not the leader, the
//! leader is X" while it tries to take the lease; the leader renews the lease and steps down
//! (the process exits, [`quorum_proto::exit::Exit::SteppedDown`]) before the lease can lapse
//! in the database. See [`crate::sop::lease`] for the lease itself.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tonic::codegen::{http, Service};

use crate::sop::db::PgTarget;
use crate::sop::lease::{margin, Leadership, LeaseConn};

/// The leader as a standby last read it: URL and epoch (None: no live lease).
pub type LeaderSeen = watch::Receiver<Option<(String, i64)>>;

/// A service that refuses every call of the gRPC service it is named for with the standby's
/// answer; `AGENT` picks AgentService or AdminService.
#[derive(Clone)]
pub struct Standby<const AGENT: bool> {
    leader: LeaderSeen,
}

impl<const AGENT: bool> Standby<AGENT> {
    /// A refusal naming the leader `leader` shows.
    pub fn new(leader: LeaderSeen) -> Self {
        Self { leader }
    }
}

impl tonic::server::NamedService for Standby<true> {
    const NAME: &'static str = "quorum.v1.AgentService";
}

impl tonic::server::NamedService for Standby<false> {
    const NAME: &'static str = "quorum.v1.AdminService";
}

impl<const AGENT: bool, B> Service<http::Request<B>> for Standby<AGENT> {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: http::Request<B>) -> Self::Future {
        let leader = self.leader.borrow().clone();
        let status =
            quorum_proto::leader::not_leader(leader.as_ref().map(|(u, e)| (u.as_str(), *e)));
        std::future::ready(Ok(status.into_http()))
    }
}

/// One item of the listener's stream.
pub type Accepted = Result<crate::daemon::listener::Conn, std::io::Error>;

/// Hands the connections of one listener to one server after another: the standby's, then
/// the leader's, without closing the port in between.
pub struct Relay {
    current: Arc<Mutex<mpsc::Sender<Accepted>>>,
}

impl Relay {
    /// Starts relaying `incoming`; returns the relay and the first server's stream.
    pub fn start(
        mut incoming: impl tokio_stream::Stream<Item = Accepted> + Unpin + Send + 'static,
    ) -> (Self, tokio_stream::wrappers::ReceiverStream<Accepted>) {
        use tokio_stream::StreamExt;
        let (tx, rx) = mpsc::channel(1024);
        let current = Arc::new(Mutex::new(tx));
        let shared = current.clone();
        tokio::spawn(async move {
            while let Some(item) = incoming.next().await {
                let tx = match shared.lock() {
                    Ok(g) => g.clone(),
                    Err(p) => p.into_inner().clone(),
                };
                // A server that is gone drops the connection with the item.
                let _ = tx.send(item).await;
            }
        });
        (
            Self { current },
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )
    }

    /// From now on connections go to the stream returned.
    pub fn next_server(&self) -> tokio_stream::wrappers::ReceiverStream<Accepted> {
        let (tx, rx) = mpsc::channel(1024);
        match self.current.lock() {
            Ok(mut g) => *g = tx,
            Err(p) => *p.into_inner() = tx,
        }
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }
}

/// How the lease is kept.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    /// The lease's lifetime.
    pub ttl: Duration,
    /// How often it is renewed.
    pub renew_every: Duration,
    /// How often a standby tries to take it.
    pub retry: Duration,
    /// This process's holder id.
    pub holder: String,
    /// The URL it advertises.
    pub url: String,
}

/// The lease, won.
pub struct Won {
    /// Its epoch.
    pub epoch: i64,
    /// Until when it is certainly held.
    pub deadline: Instant,
    /// The lease's own connection.
    pub conn: LeaseConn,
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| anyhow::anyhow!("a blocking task of the lease failed: {e}"))
}

/// Tries to take the lease every `retry` until it is won (Some) or `stop` turns true (None).
/// Meanwhile `seen` shows the current leader, for the standby's refusals.
pub async fn campaign(
    target: &PgTarget,
    s: &LeaseSettings,
    seen: &watch::Sender<Option<(String, i64)>>,
    stop: &mut watch::Receiver<bool>,
) -> anyhow::Result<Option<Won>> {
    let mut conn: Option<LeaseConn> = None;
    let mut warned = false;
    loop {
        let sent = Instant::now();
        let t = target.clone();
        let (holder, url, ttl) = (s.holder.clone(), s.url.clone(), s.ttl);
        let taken = conn.take();
        let (back, result) = blocking(move || {
            let mut c = match taken {
                Some(c) => c,
                None => match LeaseConn::connect(&t) {
                    Ok(c) => c,
                    Err(e) => return (None, Err(e)),
                },
            };
            let r = c.acquire(&holder, &url, ttl).and_then(|won| match won {
                Some(epoch) => Ok((Some(epoch), None)),
                None => c.current().map(|v| (None, v)),
            });
            (Some(c), r)
        })
        .await?;
        conn = back;
        match result {
            Ok((Some(epoch), _)) => {
                let Some(conn) = conn else {
                    anyhow::bail!("the lease's connection was lost as it was won");
                };
                return Ok(Some(Won {
                    epoch,
                    deadline: sent + s.ttl - margin(s.ttl),
                    conn,
                }));
            }
            Ok((None, view)) => {
                let shown = view.filter(|v| v.live()).map(|v| (v.url, v.epoch));
                if !warned || *seen.borrow() != shown {
                    match &shown {
                        Some((url, epoch)) => {
                            tracing::info!(leader = %url, epoch, "standby: the leader holds the lease; answering calls with its URL")
                        }
                        None => tracing::info!("standby: no live lease; taking it"),
                    }
                }
                warned = true;
                seen.send_replace(shown);
            }
            Err(e) => {
                tracing::warn!("standby: cannot reach the shared store to take the lease: {e}; trying again in {:?}", s.retry);
                seen.send_replace(None);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(s.retry) => {}
            _ = stop.wait_for(|s| *s) => return Ok(None),
        }
    }
}

/// Renews the lease every `renew_every`, extending `leadership`'s deadline after each
/// renewal; marks it lost when the database says it is no longer ours. Ends when it is lost;
/// returns the connection, for a release at a clean stop.
pub async fn keep(
    mut conn: LeaseConn,
    s: LeaseSettings,
    leadership: Arc<Leadership>,
    mut stop: watch::Receiver<bool>,
) -> Option<LeaseConn> {
    let epoch = leadership.epoch();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(s.renew_every) => {}
            _ = stop.wait_for(|s| *s) => return Some(conn),
        }
        if leadership.check().is_err() {
            return Some(conn);
        }
        let sent = Instant::now();
        let (holder, ttl) = (s.holder.clone(), s.ttl);
        let r = blocking(move || {
            let r = conn.renew(&holder, epoch, ttl);
            (conn, r)
        })
        .await;
        let (back, result) = match r {
            Ok(v) => v,
            Err(e) => {
                leadership.lose(format!("{e}"));
                return None;
            }
        };
        conn = back;
        match result {
            Ok(true) => leadership.extend(sent + s.ttl - margin(s.ttl)),
            Ok(false) => {
                leadership.lose(format!(
                    "the lease of epoch {epoch} is no longer this coordinator's in the shared store (it lapsed or another coordinator took it)"
                ));
                return Some(conn);
            }
            Err(e) => {
                let left = leadership
                    .deadline()
                    .map(|d| d.saturating_duration_since(Instant::now()))
                    .unwrap_or_default();
                tracing::warn!("cannot renew the lease of epoch {epoch}: {e}; stepping down in {left:?} unless a renewal succeeds");
            }
        }
    }
}

/// Waits until `leadership` is lost (its deadline passed without renewal, or a loss was
/// recorded); returns why.
pub async fn lost(leadership: &Leadership) -> String {
    let mut changes = leadership.subscribe();
    loop {
        if let Err(why) = leadership.check() {
            return why;
        }
        let until = leadership
            .deadline()
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            _ = tokio::time::sleep_until(until) => {}
            _ = changes.changed() => {}
        }
    }
}

/// Releases the lease at a clean stop, so a standby takes over at its next try.
pub async fn release(conn: LeaseConn, holder: String, epoch: i64) {
    let r = blocking(move || {
        let mut conn = conn;
        conn.release(&holder, epoch)
    })
    .await;
    match r {
        Ok(Ok(())) => tracing::info!(epoch, "released the lease: a standby takes over"),
        Ok(Err(e)) => tracing::warn!(
            "cannot release the lease of epoch {epoch}: {e}; a standby takes over when it lapses"
        ),
        Err(e) => tracing::warn!("{e}"),
    }
}
