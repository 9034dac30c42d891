//! How the operator CLI reaches the coordinator: connection settings from flags, then the
//! environment (`QUORUM_COORDINATOR`, `QUORUM_CERT`, `QUORUM_KEY`, `QUORUM_CACERT`), then a
//! config file, in that order; and the admin gRPC client built from them.

use std::path::{Path, PathBuf};

use quorum_proto::exit::BadInput;
use quorum_proto::pb::admin_service_client::AdminServiceClient;
use quorum_proto::tls::TlsMaterial;
use serde::Deserialize;
use tonic::transport::Channel;

/// Default CLI config file.
pub const DEFAULT_CLI_CONFIG: &str = "/etc/quorum/cli.yml";

/// The CLI config file's keys (all optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CliFile {
    /// Coordinator URL.
    pub coordinator: Option<String>,
    /// Admin certificate.
    pub cert: Option<PathBuf>,
    /// Admin key.
    pub key: Option<PathBuf>,
    /// CA certificate.
    pub cacert: Option<PathBuf>,
}

/// Resolved connection settings.
#[derive(Debug, Clone)]
pub struct Connection {
    /// Coordinator URL.
    pub coordinator: String,
    /// Admin certificate.
    pub cert: PathBuf,
    /// Admin key.
    pub key: PathBuf,
    /// CA certificate.
    pub cacert: PathBuf,
}

/// Fills what flags/env left empty from the config file, and names what is still missing.
pub fn resolve(
    coordinator: Option<String>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    cacert: Option<PathBuf>,
    config: Option<&Path>,
) -> Result<Connection, BadInput> {
    let path = config.unwrap_or(Path::new(DEFAULT_CLI_CONFIG));
    let file: CliFile = match std::fs::read_to_string(path) {
        Ok(text) => quorum_proto::yaml::from_str(&text)
            .map_err(|e| BadInput(format!("CLI config {} is invalid: {e}", path.display())))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && config.is_none() => {
            CliFile::default()
        }
        Err(e) => {
            return Err(BadInput(format!(
                "cannot read CLI config {}: {e}",
                path.display()
            )))
        }
    };
    let missing = |what: &str, flag: &str, env: &str| {
        BadInput(format!(
            "no {what} given: pass {flag}, set {env}, or put it in {}",
            path.display()
        ))
    };
    Ok(Connection {
        coordinator: coordinator
            .or(file.coordinator)
            .ok_or_else(|| missing("coordinator URL", "--coordinator", "QUORUM_COORDINATOR"))?,
        cert: cert
            .or(file.cert)
            .ok_or_else(|| missing("admin certificate", "--cert", "QUORUM_CERT"))?,
        key: key
            .or(file.key)
            .ok_or_else(|| missing("admin key", "--key", "QUORUM_KEY"))?,
        cacert: cacert
            .or(file.cacert)
            .ok_or_else(|| missing("CA certificate", "--cacert", "QUORUM_CACERT"))?,
    })
}

/// Connects as admin, to a server that proves it is the coordinator of the admin
/// certificate's trust domain. `conn.coordinator` may list several coordinators running
/// active/standby (`https://a:7443,https://b:7443`): the leader among them is found (a
/// standby names it).
pub async fn admin_client(conn: &Connection) -> anyhow::Result<AdminServiceClient<Channel>> {
    let urls = quorum_proto::leader::split_urls(&conn.coordinator);
    if urls.len() <= 1 {
        return connect_one(conn, urls.first().unwrap_or(&conn.coordinator)).await;
    }
    let mut queue: std::collections::VecDeque<String> = urls.iter().cloned().collect();
    let mut tried: Vec<String> = Vec::new();
    let mut why: Vec<String> = Vec::new();
    while let Some(url) = queue.pop_front() {
        if tried.contains(&url) || tried.len() > 2 * urls.len() {
            continue;
        }
        tried.push(url.clone());
        // A coordinator that accepts and then says nothing (a stopped process, a frozen
        // host) must not hold the CLI: each is given a few seconds.
        let probe = async {
            let mut client = connect_one(conn, &url).await?;
            let answer = client
                .list_runs(quorum_proto::pb::ListRunsRequest { limit: 1 })
                .await;
            Ok::<_, anyhow::Error>((client, answer))
        };
        let (client, answer) = match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                why.push(e.to_string());
                continue;
            }
            Err(_) => {
                why.push(format!("{url} did not answer within {PROBE_TIMEOUT:?}"));
                continue;
            }
        };
        match answer {
            Err(status) => match quorum_proto::leader::leader_hint(&status) {
                Some(leader) => {
                    why.push(format!("{url} is a standby"));
                    if !leader.is_empty() {
                        queue.push_front(leader);
                    }
                }
                // Any other answer comes from the leader; the call itself says what it is.
                None => return Ok(client),
            },
            Ok(_) => return Ok(client),
        }
    }
    Err(anyhow::Error::new(Unreachable(format!(
        "no leader among the coordinators {}: {}; during a takeover one takes the lease within seconds: try again",
        urls.join(", "),
        why.join("; ")
    ))))
}

/// How long the CLI gives each of several coordinators to say whether it leads.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

async fn connect_one(conn: &Connection, url: &str) -> anyhow::Result<AdminServiceClient<Channel>> {
    let tls = TlsMaterial::load(&conn.cacert, &conn.cert, &conn.key)?;
    let trust_domain = quorum_proto::tls::first_cert_der(&tls.cert_pem)
        .and_then(|der| quorum_proto::identity::trust_domain_of(&der))
        .unwrap_or_else(|| quorum_proto::identity::DEFAULT_TRUST_DOMAIN.to_string());
    let channel = tls
        .coordinator_endpoint(url, &trust_domain)?
        .connect()
        .await
        .map_err(|e| {
            let why = match quorum_proto::tls::not_coordinator(&e) {
                Some(refused) => refused.to_string(),
                None if quorum_proto::tls::server_cert_expired(&e) => format!(
                    "refusing the server at {}: {}; {}",
                    url,
                    error_chain(&e),
                    quorum_proto::tls::COORDINATOR_CERT_EXPIRED
                ),
                None => format!(
                    "cannot reach the coordinator at {}: {}; is `quorum serve` running there, and is the CA right?",
                    url,
                    error_chain(&e)
                ),
            };
            anyhow::Error::new(Unreachable(why))
        })?;
    Ok(AdminServiceClient::new(channel).max_decoding_message_size(16 * 1024 * 1024))
}

/// The coordinator could not be reached (its own exit code).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unreachable(pub String);

/// An error and its sources on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let msg = c.to_string();
        if !s.contains(&msg) {
            s.push_str(": ");
            s.push_str(&msg);
        }
        cur = c.source();
    }
    s
}
