//! Enrollment without SSH: make a key on this host (it never leaves), send a CSR with the
//! one-time token from `quorum pki token`, and save the certificate the coordinator signs for
//! exactly the IP the token names.

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use quorum_proto::exit::{BadInput, Exit};
use quorum_proto::pb;
use quorum_proto::pb::agent_service_client::AgentServiceClient;
use rcgen::{CertificateParams, KeyPair, SanType};

/// What `quorum-agent enroll` needs.
pub struct EnrollArgs {
    /// The coordinator URL.
    pub coordinator: String,
    /// The one-time token.
    pub token: String,
    /// The CA certificate.
    pub ca_cert: PathBuf,
    /// Where to write the certificate.
    pub cert: PathBuf,
    /// Where to write the key.
    pub key: PathBuf,
    /// This host's IP.
    pub host_ip: IpAddr,
    /// The trust domain the coordinator's certificate must name (`spiffe://<td>/coordinator`).
    pub trust_domain: String,
}

/// The coordinator said no (exit code 3).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// The coordinator could not be reached, or the server there is not a coordinator; the token
/// was not sent (exit code 4).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unreachable(pub String);

/// The token from `--token-file` or else from `--token` / `QUORUM_ENROLL_TOKEN`.
pub fn token_from(file: Option<&Path>, given: Option<String>) -> Result<String, BadInput> {
    let token = match (file, given) {
        (Some(path), _) => std::fs::read_to_string(path)
            .map_err(|e| {
                BadInput(format!(
                    "cannot read the token file {}: {e}; write the output of `quorum pki token --host IP` there",
                    path.display()
                ))
            })?
            .trim()
            .to_string(),
        (None, Some(token)) => token.trim().to_string(),
        (None, None) => return Err(BadInput(
            "no enrollment token given: put the output of `quorum pki token --host IP` in a file and pass --token-file PATH, or set QUORUM_ENROLL_TOKEN".into()
        )),
    };
    if token.is_empty() {
        return Err(BadInput(
            "the enrollment token is empty; mint one with `quorum pki token --host IP` on the admin node".into()
        ));
    }
    Ok(token)
}

/// Builds a key pair and a CSR for `host_ip`; returns (key PEM, CSR PEM).
pub fn make_csr(host_ip: IpAddr) -> anyhow::Result<(String, String)> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![SanType::IpAddress(host_ip)];
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("quorum-agent-{host_ip}"));
    let csr = params.serialize_request(&key)?;
    Ok((key.serialize_pem(), csr.pem()?))
}

fn write_atomic(path: &Path, data: &[u8], mode: u32) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    let tmp = path.with_extension(format!("enroll-tmp.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", tmp.display()))?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .map_err(|e| anyhow::anyhow!("cannot rename into {}: {e}", path.display()))?;
    Ok(())
}

/// Enrolls this host; returns `Exit::Ok`, or an error saying what to do.
pub async fn enroll(args: &EnrollArgs) -> anyhow::Result<Exit> {
    let ca_pem = quorum_proto::tls::read_cert_pem(&args.ca_cert, "CA certificate")?;
    let (key_pem, csr_pem) = make_csr(args.host_ip)?;
    // The token goes only to a server that proves it is the coordinator.
    let channel = quorum_proto::tls::anonymous_coordinator_endpoint(
        &args.coordinator,
        &ca_pem,
        &args.trust_domain,
    )?
    .connect()
    .await
    .map_err(|e| match quorum_proto::tls::not_coordinator(&e) {
        Some(refused) => Unreachable(format!("{refused}; the token was not sent")),
        None => Unreachable(format!(
            "cannot reach the coordinator at {}: {e}; check the URL and that --ca-cert is the CA that signed the coordinator's certificate",
            args.coordinator
        )),
    })?;
    let mut client = AgentServiceClient::new(channel);
    let resp = client
        .enroll(pb::EnrollRequest {
            token: args.token.clone(),
            csr_pem,
        })
        .await
        .map_err(|s| anyhow::Error::new(Refused(format!("enrollment refused: {}", s.message()))))?
        .into_inner();
    // Key first: a certificate without its key is useless, a key without a certificate is
    // simply re-enrolled.
    write_atomic(&args.key, key_pem.as_bytes(), 0o600)?;
    write_atomic(&args.cert, resp.cert_pem.as_bytes(), 0o644)?;
    println!(
        "enrolled {}: certificate {} and key {} (0600); a quorum-agent already running here switches to them by itself when the coordinator refuses its previous certificate",
        args.host_ip,
        args.cert.display(),
        args.key.display()
    );
    Ok(Exit::Ok)
}
