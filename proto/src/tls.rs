//! TLS material from PEM files and the tonic TLS configs built from it. Every error names the
//! file and says what to do, because a wrong path or an expired certificate is the first thing
//! an operator hits.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

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
        let ca_pem = read_cert_pem(ca, "CA certificate")?;
        let cert_pem = read_cert_pem(cert, "certificate")?;
        check_validity(cert, &cert_pem)?;
        let key_pem = read_key_pem(key)?;
        Ok(Self {
            ca_pem,
            cert_pem,
            key_pem,
        })
    }

    /// The coordinator's server TLS: this side's identity, ALPN h2; client certificates from
    /// the CA are verified when presented (chain, validity, clientAuth) and optional only so
    /// that `Enroll` can be called by a host that has no certificate yet. Every other call
    /// demands one.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = Arc::new(root_store(&self.ca_pem)?);
        let clients =
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError::Transport(format!("client certificate verifier: {e}")))?;
        let chain = CertificateDer::pem_slice_iter(&self.cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Transport(format!("own certificate: {e}")))?;
        let key = PrivateKeyDer::from_pem_slice(&self.key_pem)
            .map_err(|e| TlsError::Transport(format!("own private key: {e}")))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Transport(e.to_string()))?
            .with_client_cert_verifier(clients)
            .with_single_cert(chain, key)
            .map_err(|e| {
                TlsError::Transport(format!(
                    "the certificate and key do not go together or are unusable: {e}"
                ))
            })?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }

    /// Client TLS presenting this side's certificate.
    pub fn client_config(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
    }
}

/// Client TLS with no client certificate (enrollment only).
pub fn anonymous_client_config(ca_pem: &[u8]) -> ClientTlsConfig {
    ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem))
}

/// An endpoint for `url` with `tls`; keepalives detect a dead peer during a held poll.
pub fn endpoint(url: &str, tls: ClientTlsConfig) -> Result<Endpoint, TlsError> {
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
    ep.tls_config(tls)
        .map_err(|e| TlsError::Transport(e.to_string()))
        .map(|ep| {
            ep.connect_timeout(Duration::from_secs(5))
                .tcp_nodelay(true)
                // A poll crosses the connection every 30 s anyway; a ping more often only costs
                // the coordinator CPU across a large fleet (BENCHMARKS.md, idle fleet). A dead
                // coordinator is still noticed within 35 s.
                .http2_keep_alive_interval(Duration::from_secs(30))
                .keep_alive_timeout(Duration::from_secs(5))
                .keep_alive_while_idle(true)
        })
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
