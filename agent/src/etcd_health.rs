//! Whether the local etcd answers its health endpoint: the second half of "start means
//! running". The client URL and the TLS files are read from the etcd.conf this agent manages
//! (what etcd itself was started with); the check is one `GET /health` over HTTP/1.0 with the
//! member's own certificate as the client certificate, and only ever to this host (its IP or
//! loopback), so a changed etcd.conf cannot send the agent elsewhere.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest answer read from `/health`.
const ANSWER_CAP: u64 = 64 * 1024;
/// Largest PEM file read.
const PEM_CAP: u64 = 1024 * 1024;

/// Where and how to ask etcd for its health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The URL as etcd.conf gives it, for messages.
    pub url: String,
    /// Address to connect to.
    pub addr: SocketAddr,
    /// TLS files, for an https URL.
    pub tls: Option<TlsFiles>,
}

/// The files of etcd.conf's `client-transport-security`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// `trusted-ca-file`: the CA etcd's server certificate is checked against.
    pub ca: PathBuf,
    /// `cert-file` and `key-file`: the member's certificate, presented as the client's.
    pub identity: Option<(PathBuf, PathBuf)>,
}

#[derive(Deserialize, Default)]
struct ConfFile {
    #[serde(rename = "advertise-client-urls", default)]
    advertise: Option<String>,
    #[serde(rename = "listen-client-urls", default)]
    listen: Option<String>,
    #[serde(rename = "client-transport-security", default)]
    tls: Option<ConfTls>,
}

#[derive(Deserialize, Default)]
struct ConfTls {
    #[serde(rename = "cert-file", default)]
    cert: Option<String>,
    #[serde(rename = "key-file", default)]
    key: Option<String>,
    #[serde(rename = "trusted-ca-file", default)]
    ca: Option<String>,
}

/// The endpoint to check, from the text of etcd.conf: the first advertised (else listened)
/// client URL on `host_ip` or loopback (a wildcard listen address is asked on loopback).
/// `Err` says why etcd's health cannot be asked.
pub fn endpoint_from_conf(text: &str, host_ip: IpAddr) -> Result<Endpoint, String> {
    let conf: ConfFile = quorum_proto::yaml::from_str(text)
        .map_err(|e| format!("etcd.conf does not parse as YAML ({e})"))?;
    let urls = [conf.advertise.as_deref(), conf.listen.as_deref()];
    let mut candidates = urls
        .into_iter()
        .flatten()
        .flat_map(|list| list.split(','))
        .map(str::trim)
        .filter(|u| !u.is_empty());
    let (url, addr, https) = candidates
        .find_map(|u| local_address(u, host_ip).map(|(addr, https)| (u, addr, https)))
        .ok_or_else(|| {
            format!("etcd.conf names no client URL on {host_ip} or loopback (advertise-client-urls, listen-client-urls)")
        })?;
    let tls = if https {
        let t = conf.tls.unwrap_or_default();
        let ca = t.ca.filter(|s| !s.is_empty()).ok_or_else(|| {
            format!("{url} is https, but etcd.conf's client-transport-security names no trusted-ca-file to check etcd's certificate with")
        })?;
        let identity = match (t.cert, t.key) {
            (Some(c), Some(k)) if !c.is_empty() && !k.is_empty() => {
                Some((PathBuf::from(c), PathBuf::from(k)))
            }
            _ => None,
        };
        Some(TlsFiles {
            ca: PathBuf::from(ca),
            identity,
        })
    } else {
        None
    };
    Ok(Endpoint {
        url: url.to_string(),
        addr,
        tls,
    })
}

/// The address of `url` when it is on this host, and whether it is https.
fn local_address(url: &str, host_ip: IpAddr) -> Option<(SocketAddr, bool)> {
    let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else {
        (false, url.strip_prefix("http://")?)
    };
    let hostport = rest.split('/').next()?;
    let (host, port) = hostport.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let ip: IpAddr = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()?;
    let ip = if ip.is_unspecified() {
        match ip {
            IpAddr::V4(_) => IpAddr::from([127, 0, 0, 1]),
            IpAddr::V6(_) => IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        }
    } else {
        ip
    };
    (ip == host_ip || ip.is_loopback()).then_some((SocketAddr::new(ip, port), https))
}

/// Why etcd is not (yet) healthy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotHealthy {
    /// Nothing answered at the address, or the TLS handshake failed: the OS's or TLS's reason.
    Unreachable(String),
    /// etcd answered that it is not healthy (no leader, no quorum, an alarm).
    Unhealthy(String),
    /// No answer within the time given.
    NoAnswer,
    /// The TLS handshake failed (etcd's certificate, or ours, was not accepted): the check
    /// cannot be made with these files.
    Tls(String),
    /// The TLS files could not be used: the check cannot be made at all.
    Setup(String),
}

impl std::fmt::Display for NotHealthy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotHealthy::Unreachable(why) => write!(f, "it does not answer ({why})"),
            NotHealthy::Unhealthy(why) => write!(f, "it answers but reports itself unhealthy ({why})"),
            NotHealthy::NoAnswer => write!(f, "it accepts connections but does not answer (etcd serves clients only once it has joined its cluster)"),
            NotHealthy::Tls(why) => write!(f, "the TLS handshake failed ({why})"),
            NotHealthy::Setup(why) => write!(f, "{why}"),
        }
    }
}

/// Asks `ep` for `/health` once, within `timeout`.
pub async fn check(ep: &Endpoint, timeout: Duration) -> Result<(), NotHealthy> {
    let tls = match &ep.tls {
        Some(files) => Some(client_config(files).map_err(NotHealthy::Setup)?),
        None => None,
    };
    match tokio::time::timeout(timeout, ask(ep, tls)).await {
        Ok(r) => r,
        Err(_) => Err(NotHealthy::NoAnswer),
    }
}

async fn ask(ep: &Endpoint, tls: Option<Arc<rustls::ClientConfig>>) -> Result<(), NotHealthy> {
    let tcp = tokio::net::TcpStream::connect(ep.addr)
        .await
        .map_err(|e| NotHealthy::Unreachable(io_reason(&e)))?;
    let request = format!("GET /health HTTP/1.0\r\nHost: {}\r\n\r\n", ep.addr);
    let answer = match tls {
        None => exchange(tcp, &request).await?,
        Some(config) => {
            let name = ServerName::IpAddress(ep.addr.ip().into());
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| {
                    // rustls' own verdict (a certificate refused) is not a connection problem.
                    if e.kind() == std::io::ErrorKind::InvalidData {
                        NotHealthy::Tls(io_reason(&e))
                    } else {
                        NotHealthy::Unreachable(io_reason(&e))
                    }
                })?;
            exchange(stream, &request).await?
        }
    };
    verdict(&answer)
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    request: &str,
) -> Result<Vec<u8>, NotHealthy> {
    s.write_all(request.as_bytes())
        .await
        .map_err(|e| NotHealthy::Unreachable(io_reason(&e)))?;
    let mut answer = Vec::new();
    // HTTP/1.0: etcd closes the connection after the answer. A close without TLS's
    // close_notify still leaves a complete answer in the buffer, which `verdict` judges.
    let _ = (&mut s).take(ANSWER_CAP).read_to_end(&mut answer).await;
    Ok(answer)
}

#[derive(Deserialize)]
struct HealthBody {
    health: String,
    #[serde(default)]
    reason: String,
}

/// Judges etcd's answer to `/health`: `{"health":"true"}` (3.5 adds `"reason"`).
pub fn verdict(answer: &[u8]) -> Result<(), NotHealthy> {
    let text = String::from_utf8_lossy(answer);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return Err(if text.is_empty() {
            NotHealthy::NoAnswer
        } else {
            NotHealthy::Unhealthy("an incomplete HTTP answer".into())
        });
    };
    let status = head.lines().next().unwrap_or_default().to_string();
    match serde_json::from_str::<HealthBody>(body.trim()) {
        Ok(b) if b.health == "true" => Ok(()),
        Ok(b) => Err(NotHealthy::Unhealthy(if b.reason.is_empty() {
            format!("health {}, {status}", b.health)
        } else {
            format!("health {}: {}", b.health, b.reason)
        })),
        Err(_) => Err(NotHealthy::Unhealthy(format!(
            "{status}, not etcd's health answer"
        ))),
    }
}

/// The OS's word for a failed connection ("connection refused"), without Rust's framing.
fn io_reason(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => "connection refused".into(),
        ConnectionReset => "connection reset".into(),
        TimedOut => "timed out".into(),
        UnexpectedEof => "the connection closed during the TLS handshake".into(),
        _ => match e.raw_os_error() {
            Some(_) => {
                let s = e.to_string();
                s.split(" (os error").next().unwrap_or(&s).to_lowercase()
            }
            // TLS failures arrive as io errors wrapping rustls' own error.
            None => e
                .get_ref()
                .map(|inner| inner.to_string())
                .unwrap_or_else(|| e.to_string()),
        },
    }
}

fn read_pem(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path)
        .map_err(|e| format!("cannot read etcd's {what} {} ({e})", path.display()))?;
    let mut buf = Vec::new();
    file.take(PEM_CAP)
        .read_to_end(&mut buf)
        .map_err(|e| format!("cannot read etcd's {what} {} ({e})", path.display()))?;
    Ok(buf)
}

fn client_config(files: &TlsFiles) -> Result<Arc<rustls::ClientConfig>, String> {
    let ca_pem = read_pem(&files.ca, "trusted-ca-file")?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&ca_pem) {
        let cert = cert.map_err(|e| {
            format!(
                "etcd's trusted-ca-file {} is not PEM ({e})",
                files.ca.display()
            )
        })?;
        roots.add(cert).map_err(|e| {
            format!(
                "etcd's trusted-ca-file {} holds an unusable certificate ({e})",
                files.ca.display()
            )
        })?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots);
    let mut config = match &files.identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let cert_pem = read_pem(cert, "cert-file")?;
            let key_pem = read_pem(key, "key-file")?;
            let chain = CertificateDer::pem_slice_iter(&cert_pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("etcd's cert-file {} is not PEM ({e})", cert.display()))?;
            let key_der = PrivateKeyDer::from_pem_slice(&key_pem)
                .map_err(|e| format!("etcd's key-file {} is not a PEM key ({e})", key.display()))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| format!("etcd's cert-file and key-file do not go together ({e})"))?
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIGSTY: &str = "name: etcd-1\ndata-dir: /data/etcd\nlisten-client-urls: \"https://10.10.10.10:2379,https://127.0.0.1:2379\"\nadvertise-client-urls: \"https://10.10.10.10:2379\"\nclient-transport-security:\n  cert-file: /etc/etcd/server.crt\n  key-file: /etc/etcd/server.key\n  trusted-ca-file: /etc/etcd/ca.crt\n  client-cert-auth: true\n";

    #[test]
    fn the_endpoint_is_the_members_own_url_with_its_tls_files() -> Result<(), String> {
        let ep = endpoint_from_conf(PIGSTY, "10.10.10.10".parse().map_err(|_| "ip")?)?;
        assert_eq!(ep.url, "https://10.10.10.10:2379");
        assert_eq!(ep.addr, "10.10.10.10:2379".parse().map_err(|_| "addr")?);
        assert_eq!(
            ep.tls,
            Some(TlsFiles {
                ca: "/etc/etcd/ca.crt".into(),
                identity: Some(("/etc/etcd/server.crt".into(), "/etc/etcd/server.key".into()))
            })
        );
        // Another host's etcd.conf: only its loopback listen URL is this host's.
        let ep = endpoint_from_conf(PIGSTY, "10.10.10.11".parse().map_err(|_| "ip")?)?;
        assert_eq!(ep.url, "https://127.0.0.1:2379");
        Ok(())
    }

    #[test]
    fn no_local_url_or_no_ca_means_no_check() {
        let ip: IpAddr = IpAddr::from([10, 10, 10, 11]);
        let remote = "advertise-client-urls: https://10.9.9.9:2379\nlisten-client-urls: https://10.9.9.9:2379\n";
        assert!(endpoint_from_conf(remote, ip).is_err());
        let no_ca = "advertise-client-urls: https://10.10.10.11:2379\n";
        assert!(endpoint_from_conf(no_ca, ip).is_err_and(|e| e.contains("trusted-ca-file")));
        let plain = "advertise-client-urls: http://0.0.0.0:2379\n";
        assert_eq!(
            endpoint_from_conf(plain, ip).map(|e| e.addr.to_string()),
            Ok("127.0.0.1:2379".to_string())
        );
        assert!(endpoint_from_conf(": : :", ip).is_err());
    }

    #[test]
    fn etcds_answers_are_judged_by_their_body() {
        let ok = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n{\"health\":\"true\"}";
        assert_eq!(verdict(ok), Ok(()));
        let ok35 = b"HTTP/1.0 200 OK\r\n\r\n{\"health\":\"true\",\"reason\":\"\"}";
        assert_eq!(verdict(ok35), Ok(()));
        let bad = b"HTTP/1.0 503 Service Unavailable\r\n\r\n{\"health\":\"false\"}";
        assert!(matches!(verdict(bad), Err(NotHealthy::Unhealthy(_))));
        let bad35 =
            b"HTTP/1.0 503 Service Unavailable\r\n\r\n{\"health\":\"false\",\"reason\":\"RAFT NO LEADER\"}";
        assert_eq!(
            verdict(bad35),
            Err(NotHealthy::Unhealthy("health false: RAFT NO LEADER".into()))
        );
        assert_eq!(verdict(b""), Err(NotHealthy::NoAnswer));
        assert!(verdict(b"HTTP/1.0 404 Not Found\r\n\r\n404 page not found").is_err());
    }

    #[tokio::test]
    async fn a_closed_port_reads_as_connection_refused() -> Result<(), Box<dyn std::error::Error>> {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = l.local_addr()?;
        drop(l);
        let ep = Endpoint {
            url: format!("http://{addr}"),
            addr,
            tls: None,
        };
        assert_eq!(
            check(&ep, Duration::from_secs(5)).await,
            Err(NotHealthy::Unreachable("connection refused".into()))
        );
        Ok(())
    }
}
