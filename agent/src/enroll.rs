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

/// Where a new certificate waits while it replaces the old one.
fn staged(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".new");
    path.with_file_name(name)
}

/// Replaces this host's certificate and key with a new pair so that a crash at any point
/// leaves a pair that goes together, or one [`finish_identity`] completes at the next start:
/// both are written and synced beside the old ones first, then the key is renamed into place,
/// then the certificate.
pub fn write_identity(
    cert: &Path,
    key: &Path,
    cert_pem: &[u8],
    key_pem: &[u8],
) -> anyhow::Result<()> {
    let (cert_new, key_new) = (staged(cert), staged(key));
    write_atomic(&key_new, key_pem, 0o600)?;
    write_atomic(&cert_new, cert_pem, 0o644)?;
    std::fs::rename(&key_new, key).map_err(|e| {
        anyhow::anyhow!(
            "cannot rename {} into {}: {e}",
            key_new.display(),
            key.display()
        )
    })?;
    std::fs::rename(&cert_new, cert).map_err(|e| {
        anyhow::anyhow!(
            "cannot rename {} into {}: {e}",
            cert_new.display(),
            cert.display()
        )
    })?;
    for dir in [cert.parent(), key.parent()].into_iter().flatten() {
        if let Ok(d) = std::fs::File::open(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        }) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Completes a replacement [`write_identity`] did not finish (the agent stopped between its
/// renames): the staged certificate goes into place when it goes with the key in place, or
/// both staged files when they go together; staged files that match nothing are removed.
/// Returns what it did, for the log.
pub fn finish_identity(cert: &Path, key: &Path) -> Option<String> {
    let (cert_new, key_new) = (staged(cert), staged(key));
    let staged_cert = std::fs::read(&cert_new).ok();
    let staged_key = std::fs::read(&key_new).ok();
    if staged_cert.is_none() && staged_key.is_none() {
        return None;
    }
    let pairs = |c: &[u8], k: &[u8]| quorum_proto::tls::certified_key(c, k).is_ok();
    let current_key = std::fs::read(key).ok();
    let done = match (&staged_cert, &staged_key, &current_key) {
        (Some(c), Some(k), _) if pairs(c, k) => std::fs::rename(&key_new, key)
            .and_then(|()| std::fs::rename(&cert_new, cert))
            .map(|()| {
                format!(
                    "put the new certificate and key staged in {} into place",
                    cert_new.display()
                )
            }),
        (Some(c), None, Some(k)) if pairs(c, k) => std::fs::rename(&cert_new, cert).map(|()| {
            format!(
                "put the new certificate staged in {} into place (its key already was)",
                cert_new.display()
            )
        }),
        _ => {
            let _ = std::fs::remove_file(&cert_new);
            let _ = std::fs::remove_file(&key_new);
            Ok(format!(
                "removed an unfinished certificate replacement ({}) that goes with no key",
                cert_new.display()
            ))
        }
    };
    Some(done.unwrap_or_else(|e| {
        format!(
            "could not finish the certificate replacement staged in {}: {e}",
            cert_new.display()
        )
    }))
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
    // The pair must go together before it replaces anything.
    quorum_proto::tls::certified_key(resp.cert_pem.as_bytes(), key_pem.as_bytes())
        .map_err(|e| Refused(format!("the coordinator answered with a certificate for another key: {e}; nothing was written")))?;
    write_identity(
        &args.cert,
        &args.key,
        resp.cert_pem.as_bytes(),
        key_pem.as_bytes(),
    )?;
    println!(
        "enrolled {}: certificate {} and key {} (0600); a quorum-agent already running here switches to them by itself when the coordinator refuses its previous certificate",
        args.host_ip,
        args.cert.display(),
        args.key.display()
    );
    Ok(Exit::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate and its key, PEM (pairing needs no CA).
    fn pair(name: &str) -> (Vec<u8>, Vec<u8>) {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let cert = CertificateParams::new(vec![name.to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        (cert.pem().into_bytes(), key.serialize_pem().into_bytes())
    }

    fn read(p: &Path) -> Vec<u8> {
        std::fs::read(p).unwrap_or_default()
    }

    #[test]
    fn a_replacement_cut_short_is_finished_or_undone_at_the_next_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = (dir.path().join("agent.crt"), dir.path().join("agent.key"));
        let (old_c, old_k) = pair("old");
        let (new_c, new_k) = pair("new");
        let reset = || {
            std::fs::write(&cert, &old_c).expect("write");
            std::fs::write(&key, &old_k).expect("write");
        };

        // Nothing staged: nothing done.
        reset();
        assert_eq!(finish_identity(&cert, &key), None);

        // Stopped before either rename: both go in.
        reset();
        std::fs::write(staged(&cert), &new_c).expect("write");
        std::fs::write(staged(&key), &new_k).expect("write");
        assert!(finish_identity(&cert, &key).is_some());
        assert_eq!((read(&cert), read(&key)), (new_c.clone(), new_k.clone()));

        // Stopped between the renames (the new key in place): the certificate follows.
        reset();
        std::fs::write(&key, &new_k).expect("write");
        std::fs::write(staged(&cert), &new_c).expect("write");
        assert!(finish_identity(&cert, &key).is_some());
        assert_eq!((read(&cert), read(&key)), (new_c.clone(), new_k.clone()));

        // A staged certificate that goes with no key: removed, the pair in place kept.
        reset();
        std::fs::write(staged(&cert), &new_c).expect("write");
        assert!(finish_identity(&cert, &key).is_some());
        assert_eq!((read(&cert), read(&key)), (old_c.clone(), old_k.clone()));
        assert!(!staged(&cert).exists());

        // The whole replacement leaves the new pair and nothing staged.
        reset();
        write_identity(&cert, &key, &new_c, &new_k).expect("write_identity");
        assert_eq!((read(&cert), read(&key)), (new_c, new_k));
        assert!(!staged(&cert).exists() && !staged(&key).exists());
    }
}
