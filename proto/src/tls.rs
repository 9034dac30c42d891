//! TLS material from PEM files and the TLS configs built from it: the coordinator's server
//! config, and the client endpoints with which agents and the CLI reach the coordinator (and
//! accept a server only if its certificate names the coordinator role). Every error names the
//! file and says what to do, because a wrong path or an expired certificate is the first thing
//! an operator hits.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{ClientTlsConfig, Endpoint, Identity};

use crate::identity::{peer_from_der, IdentityError, Peer};

/// Errors loading TLS material or connecting.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {what} {path}: {source}; check the path (see --help for the flag or config key that sets it)")]
    Read {
        /// Which file this is ("CA certificate", "certificate", "private key").
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file does not hold what it should.
    #[error("{what} {path} is not a PEM {expected}; give the right file")]
    NotPem {
        /// Which file this is.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The PEM block expected.
        expected: &'static str,
    },
    /// The certificate is outside its validity window.
    #[error("certificate {path} is {state} (valid from {not_before} to {not_after}, Unix seconds); issue a new one with `quorum pki issue` or re-enroll")]
    Expired {
        /// The path.
        path: PathBuf,
        /// "expired" or "not yet valid".
        state: &'static str,
        /// Start of validity.
        not_before: i64,
        /// End of validity.
        not_after: i64,
    },
    /// The URL is not usable.
    #[error("bad coordinator URL {url}: {why}; give it as https://IP:PORT")]
    BadUrl {
        /// The URL.
        url: String,
        /// What is wrong.
        why: String,
    },
    /// tonic refused the TLS configuration.
    #[error("TLS setup failed: {0}")]
    Transport(String),
}

/// CA, certificate and key, read and checked.
#[derive(Clone)]
pub struct TlsMaterial {
    /// The CA certificate(s), PEM.
    pub ca_pem: Vec<u8>,
    /// This side's certificate chain, PEM.
    pub cert_pem: Vec<u8>,
    /// This side's private key, PEM.
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial").finish_non_exhaustive()
    }
}

/// Reads a file, naming it in the error.
pub fn read_file(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a PEM file holding at least one certificate.
pub fn read_cert_pem(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    let pem = read_file(path, what)?;
    if first_cert_der(&pem).is_none() {
        return Err(TlsError::NotPem {
            what,
            path: path.to_path_buf(),
            expected: "CERTIFICATE",
        });
    }
    Ok(pem)
}

/// Reads a PEM private key (PKCS#8, PKCS#1 or SEC1).
pub fn read_key_pem(path: &Path) -> Result<Vec<u8>, TlsError> {
    let pem = read_file(path, "private key")?;
    if rustls_pki_types::PrivateKeyDer::from_pem_slice(&pem).is_err() {
        return Err(TlsError::NotPem {
            what: "private key",
            path: path.to_path_buf(),
            expected: "PRIVATE KEY",
        });
    }
    Ok(pem)
}

/// The DER of the first certificate in a PEM buffer.
pub fn first_cert_der(pem: &[u8]) -> Option<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem).next()?.ok()
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Fails when the first certificate in `pem` (read from `path`) is not valid now.
pub fn check_validity(path: &Path, pem: &[u8]) -> Result<(), TlsError> {
    let der = first_cert_der(pem).ok_or_else(|| TlsError::NotPem {
        what: "certificate",
        path: path.to_path_buf(),
        expected: "CERTIFICATE",
    })?;
    let (not_before, not_after) =
        crate::identity::validity_from_der(&der).map_err(|_| TlsError::NotPem {
            what: "certificate",
            path: path.to_path_buf(),
            expected: "CERTIFICATE",
        })?;
    let now = unix_now();
    let state = if now > not_after {
        "expired"
    } else if now < not_before {
        "not yet valid"
    } else {
        return Ok(());
    };
    Err(TlsError::Expired {
        path: path.to_path_buf(),
        state,
        not_before,
        not_after,
    })
}

impl TlsMaterial {
    /// Reads CA, certificate and key, and checks the certificate is valid now.
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let m = Self::read(ca, cert, key)?;
        check_validity(cert, &m.cert_pem)?;
        Ok(m)
    }

    /// Reads CA, certificate and key, whether or not the certificate is valid now (an agent
    /// whose certificate expired still starts, says so, and waits for a new one).
    pub fn read(ca: &Path, cert: &Path, key: &Path) -> Result<Self, TlsError> {
        Ok(Self {
            ca_pem: read_cert_pem(ca, "CA certificate")?,
            cert_pem: read_cert_pem(cert, "certificate")?,
            key_pem: read_key_pem(key)?,
        })
    }

    /// When this side's certificate is valid: (not before, not after), Unix seconds.
    pub fn validity(&self) -> Option<(i64, i64)> {
        let der = first_cert_der(&self.cert_pem)?;
        crate::identity::validity_from_der(&der).ok()
    }

    /// The coordinator's server TLS: this side's identity, ALPN h2; client certificates from
    /// the CA are verified when presented (chain, validity, clientAuth) and optional only so
    /// that `Enroll` can be called by a host that has no certificate yet. Every other call
    /// demands one.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let identity = Arc::new(ServerIdentity::new(
            certified_key(&self.cert_pem, &self.key_pem)?,
            self.cert_pem.clone(),
            self.key_pem.clone(),
        ));
        self.server_config_with(identity)
    }

    /// As [`TlsMaterial::server_config`], presenting whatever `identity` holds at each
    /// handshake (it can be replaced while the server runs).
    pub fn server_config_with(
        &self,
        identity: Arc<ServerIdentity>,
    ) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = Arc::new(root_store(&self.ca_pem)?);
        let clients =
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError::Transport(format!("client certificate verifier: {e}")))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Transport(e.to_string()))?
            .with_client_cert_verifier(clients)
            .with_cert_resolver(identity);
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }

    /// An endpoint for the coordinator at `url`, presenting this side's certificate and
    /// accepting the server only if its certificate names the coordinator of `trust_domain`.
    pub fn coordinator_endpoint(
        &self,
        url: &str,
        trust_domain: &str,
    ) -> Result<Endpoint, TlsError> {
        let identity = Identity::from_pem(&self.cert_pem, &self.key_pem);
        verified_endpoint(url, &self.ca_pem, Some(identity), trust_domain)
    }
}

/// A certificate chain and its private key as rustls presents them, checked to go together.
pub fn certified_key(
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<rustls::sign::CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Transport(format!("own certificate: {e}")))?;
    if chain.is_empty() {
        return Err(TlsError::Transport(
            "own certificate: no certificate in the file".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| TlsError::Transport(format!("own private key: {e}")))?;
    let provider = rustls::crypto::ring::default_provider();
    let certified = rustls::sign::CertifiedKey::new(
        chain,
        provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| TlsError::Transport(format!("own private key is unusable: {e}")))?,
    );
    certified.keys_match().map_err(|e| {
        TlsError::Transport(format!(
            "the certificate and key do not go together ({e}); give the key the certificate was issued for"
        ))
    })?;
    Ok(certified)
}

/// The identity a server presents, replaceable while it runs: the coordinator reads its
/// certificate and key again when they change on disk, and new handshakes present the new
/// pair (connections already open keep theirs).
pub struct ServerIdentity {
    current: std::sync::RwLock<(Vec<u8>, Vec<u8>, Arc<rustls::sign::CertifiedKey>)>,
}

impl std::fmt::Debug for ServerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerIdentity")
    }
}

impl ServerIdentity {
    /// An identity presenting `key` (read from `cert_pem` and `key_pem`).
    pub fn new(key: rustls::sign::CertifiedKey, cert_pem: Vec<u8>, key_pem: Vec<u8>) -> Self {
        Self {
            current: std::sync::RwLock::new((cert_pem, key_pem, Arc::new(key))),
        }
    }

    /// Whether `cert_pem` and `key_pem` are what it presents now.
    pub fn is_current(&self, cert_pem: &[u8], key_pem: &[u8]) -> bool {
        let cur = match self.current.read() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        };
        cur.0 == cert_pem && cur.1 == key_pem
    }

    /// Presents `key` from the next handshake on.
    pub fn replace(&self, key: rustls::sign::CertifiedKey, cert_pem: Vec<u8>, key_pem: Vec<u8>) {
        let mut cur = match self.current.write() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        };
        *cur = (cert_pem, key_pem, Arc::new(key));
    }
}

impl rustls::server::ResolvesServerCert for ServerIdentity {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let cur = match self.current.read() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        };
        Some(cur.2.clone())
    }
}

/// An endpoint for the coordinator at `url` presenting no client certificate (enrollment
/// only); the server must still prove it is the coordinator of `trust_domain`.
pub fn anonymous_coordinator_endpoint(
    url: &str,
    ca_pem: &[u8],
    trust_domain: &str,
) -> Result<Endpoint, TlsError> {
    verified_endpoint(url, ca_pem, None, trust_domain)
}

fn verified_endpoint(
    url: &str,
    ca_pem: &[u8],
    identity: Option<Identity>,
    trust_domain: &str,
) -> Result<Endpoint, TlsError> {
    let ep = base_endpoint(url)?;
    let verifier = Arc::new(CoordinatorVerifier::new(ca_pem, trust_domain, url)?);
    let tls = match identity {
        Some(id) => ClientTlsConfig::new().identity(id),
        None => ClientTlsConfig::new(),
    };
    ep.tls_config_with_verifier(tls, verifier)
        .map_err(|e| TlsError::Transport(e.to_string()))
}

/// How often a client pings the coordinator on an idle connection.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// The URL check and the connection settings every client shares; keepalives detect a dead
/// peer during a held poll.
fn base_endpoint(url: &str) -> Result<Endpoint, TlsError> {
    if !url.starts_with("https://") {
        return Err(TlsError::BadUrl {
            url: url.to_string(),
            why: "only https:// is accepted (Quorum never talks in plain text)".into(),
        });
    }
    let ep = Endpoint::from_shared(url.to_string()).map_err(|e| TlsError::BadUrl {
        url: url.to_string(),
        why: e.to_string(),
    })?;
    Ok(ep
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        // A poll crosses the connection every 30 s anyway; a ping more often only costs
        // the coordinator CPU across a large fleet (BENCHMARKS.md, idle fleet). A dead
        // coordinator is still noticed within 35 s.
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true))
}

fn root_store(ca_pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(ca_pem).flatten() {
        roots
            .add(der)
            .map_err(|e| TlsError::Transport(format!("the CA certificate is unusable: {e}")))?;
    }
    if roots.is_empty() {
        return Err(TlsError::Transport(
            "the CA file holds no certificate; give the Pigsty CA certificate (ca.crt)".into(),
        ));
    }
    Ok(roots)
}

/// What a server that is not the coordinator presented instead.
#[derive(Debug, Clone)]
pub enum ServerRole {
    /// A certificate naming another Quorum role (an agent's, an admin's).
    Other(Peer),
    /// A certificate whose role cannot be read (no spiffe URI SAN, as on an etcd member).
    Unreadable(IdentityError),
}

impl std::fmt::Display for ServerRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerRole::Other(peer) => write!(f, "a certificate for {peer}"),
            ServerRole::Unreadable(IdentityError::NoRole {
                subject,
                trust_domain,
            }) => write!(
                f,
                "a certificate with no Quorum role in trust domain {trust_domain} (subject {subject})"
            ),
            ServerRole::Unreadable(e) => write!(f, "a certificate whose role cannot be read ({e})"),
        }
    }
}

/// The server's certificate is from the CA but does not name the coordinator: whoever answers
/// there (an etcd member's key, a stray process) must not hand this host tasks.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the server at {url} presented {found}: it is not a Quorum coordinator; check the coordinator URL, and that the server there is `quorum serve` with a certificate from `quorum pki issue coordinator`")]
pub struct NotCoordinator {
    /// The URL dialed.
    pub url: String,
    /// What the certificate names instead.
    pub found: ServerRole,
}

/// Checks a server certificate as rustls's WebPKI verifier does (chain to the CA, validity,
/// serverAuth, the URL's IP or name), then demands the coordinator role in its URI SAN.
#[derive(Debug)]
pub struct CoordinatorVerifier {
    inner: Arc<WebPkiServerVerifier>,
    trust_domain: String,
    url: String,
}

impl CoordinatorVerifier {
    /// A verifier trusting the CA(s) in `ca_pem`, for the coordinator of `trust_domain` at `url`.
    pub fn new(ca_pem: &[u8], trust_domain: &str, url: &str) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let inner =
            WebPkiServerVerifier::builder_with_provider(Arc::new(root_store(ca_pem)?), provider)
                .build()
                .map_err(|e| TlsError::Transport(format!("server certificate verifier: {e}")))?;
        Ok(Self {
            inner,
            trust_domain: trust_domain.to_string(),
            url: url.to_string(),
        })
    }
}

impl ServerCertVerifier for CoordinatorVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        let found = match peer_from_der(end_entity.as_ref(), &self.trust_domain) {
            Ok(Peer::Coordinator) => return Ok(verified),
            Ok(other) => ServerRole::Other(other),
            Err(e) => ServerRole::Unreadable(e),
        };
        let refused = NotCoordinator {
            url: self.url.clone(),
            found,
        };
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(
            rustls::OtherError(Arc::new(refused)),
        )))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Whether `err` (a failed connection, anywhere in its chain) is this side refusing the
/// server's certificate because it expired (or is not valid yet: a clock is off).
pub fn server_cert_expired(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(rustls::Error::InvalidCertificate(c)) = e.downcast_ref::<rustls::Error>() {
            return matches!(
                c,
                CertificateError::Expired
                    | CertificateError::ExpiredContext { .. }
                    | CertificateError::NotValidYet
                    | CertificateError::NotValidYetContext { .. }
            );
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if server_cert_expired(inner) {
                return true;
            }
        }
        cur = e.source();
    }
    false
}

/// What to do about a coordinator whose certificate expired, for the messages of the CLI
/// and the agent.
pub const COORDINATOR_CERT_EXPIRED: &str = "the coordinator's certificate has expired (or a clock is off): on the admin node issue a new one with `quorum pki issue coordinator --ip IP --out DIR --force` into the files tls.cert and tls.key of coordinator.yml name; the running coordinator presents it within seconds";

/// The refusal of a server that is not the coordinator, if that is why `err` (a connection
/// error, or a call's status) happened. rustls's error has no `source()`, and `io::Error`
/// skips the error it wraps in its own, so both are opened by hand.
pub fn not_coordinator(err: &(dyn std::error::Error + 'static)) -> Option<NotCoordinator> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(found) = e.downcast_ref::<NotCoordinator>() {
            return Some(found.clone());
        }
        if let Some(rustls::Error::InvalidCertificate(CertificateError::Other(other))) =
            e.downcast_ref::<rustls::Error>()
        {
            if let Some(found) = other.0.downcast_ref::<NotCoordinator>() {
                return Some(found.clone());
            }
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if let Some(found) = not_coordinator(inner) {
                return Some(found);
            }
        }
        cur = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("connection failed")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn a_refusal_is_found_inside_the_io_error_that_carries_the_rustls_error() {
        let refused = NotCoordinator {
            url: "https://127.0.0.1:7443".into(),
            found: ServerRole::Other(Peer::Admin("eve".into())),
        };
        let tls = rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(
            Arc::new(refused),
        )));
        let err = Outer(std::io::Error::new(std::io::ErrorKind::InvalidData, tls));
        let found = not_coordinator(&err).map(|n| n.to_string());
        assert_eq!(
            found.as_deref().and_then(|s| s.split(';').next()),
            Some("the server at https://127.0.0.1:7443 presented a certificate for admin eve: it is not a Quorum coordinator")
        );
        let other = Outer(std::io::Error::other("connection refused"));
        assert!(not_coordinator(&other).is_none());
    }

    #[test]
    fn a_certificate_without_a_role_is_described_by_its_subject() {
        let role = ServerRole::Unreadable(IdentityError::NoRole {
            subject: "CN=etcd-1, O=pigsty, OU=etcd".into(),
            trust_domain: "pigsty".into(),
        });
        assert_eq!(
            role.to_string(),
            "a certificate with no Quorum role in trust domain pigsty (subject CN=etcd-1, O=pigsty, OU=etcd)"
        );
    }
}
