//! The coordinator daemon's config file (`quorum serve --config coordinator.yml`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Default CA directory, as Pigsty lays it out on the admin node (relative to Pigsty's home:
/// `quorum pki` resolves it against the current directory and says so).
pub const DEFAULT_CA_DIR: &str = "files/pki/ca";
/// The coordinator config `quorum pki` reads the CA's location from when it exists.
pub const DEFAULT_COORDINATOR_CONFIG: &str = "/etc/quorum/coordinator.yml";
/// Pigsty's leaf certificate validity (`cert_validity: 7300d`).
pub const DEFAULT_LEAF_DAYS: u32 = 7300;

/// Errors reading the coordinator config.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read coordinator config {path}: {source}; check the path given to --config")]
    Read {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file does not match the schema (unknown keys included).
    #[error("coordinator config {path} is invalid: {message}; see packaging/coordinator.yml for every key")]
    Parse {
        /// The path.
        path: PathBuf,
        /// The problem, with line and column.
        message: String,
    },
}

/// TLS files of the coordinator.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorTls {
    /// The Pigsty CA certificate.
    pub ca_cert: PathBuf,
    /// The coordinator's certificate (`quorum pki issue coordinator`).
    pub cert: PathBuf,
    /// The coordinator's key.
    pub key: PathBuf,
    /// The CA key, needed to sign enrollment CSRs. Without it, `Enroll` is refused.
    #[serde(default)]
    pub ca_key: Option<PathBuf>,
}

/// The coordinator's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorConfig {
    /// Address the gRPC server listens on.
    pub listen: SocketAddr,
    /// TLS files.
    pub tls: CoordinatorTls,
    /// Trust domain of the role URIs (`spiffe://<trust_domain>/...`).
    #[serde(default = "default_trust_domain")]
    pub trust_domain: String,
    /// The Pigsty inventory.
    #[serde(default = "default_inventory")]
    pub inventory: PathBuf,
    /// Where runs, used tokens and other state live.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// How long a poll is held open when there is nothing to do, seconds.
    #[serde(default = "default_poll_hold")]
    pub poll_hold_secs: u64,
    /// An agent not seen for this long (and not in a poll) is stale, seconds.
    #[serde(default = "default_stale_after")]
    pub stale_after_secs: u64,
    /// Validity of certificates signed at enrollment, days.
    #[serde(default = "default_enroll_days")]
    pub enroll_cert_days: u32,
    /// How long an ad-hoc or SOP task may take before its step fails, seconds.
    #[serde(default = "default_task_timeout")]
    pub task_timeout_secs: u64,
    /// How long a health gate waits for the member and the cluster to be healthy, seconds.
    #[serde(default = "default_gate_timeout")]
    pub gate_timeout_secs: u64,
    /// Connections open at once (agents' sessions, admins' calls, handshakes in progress);
    /// new ones beyond it are closed at once. Sized for a 10,000-agent fleet plus admins.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// How long a new connection may take to finish its TLS handshake, seconds.
    #[serde(default = "default_handshake_timeout")]
    pub tls_handshake_timeout_secs: u64,
    /// How long a connection without a client certificate (enrollment only) may stay open
    /// after its handshake, seconds.
    #[serde(default = "default_anonymous_lifetime")]
    pub anonymous_connection_secs: u64,
    /// Snapshots kept per cluster (the newest; at least 1).
    #[serde(default = "default_snapshot_keep")]
    pub snapshot_keep: usize,
    /// Snapshots older than this are removed (the newest always stays), days.
    #[serde(default = "default_snapshot_max_age")]
    pub snapshot_max_age_days: u64,
    /// Where to serve `/metrics`, `/healthz` and `/readyz` over plain HTTP (the admin node's
    /// address or loopback, for Prometheus); unset: no such listener.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
}

fn default_trust_domain() -> String {
    quorum_proto::identity::DEFAULT_TRUST_DOMAIN.to_string()
}
fn default_inventory() -> PathBuf {
    PathBuf::from("pigsty.yml")
}
fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/quorum")
}
fn default_poll_hold() -> u64 {
    30
}
fn default_stale_after() -> u64 {
    90
}
fn default_enroll_days() -> u32 {
    DEFAULT_LEAF_DAYS
}
fn default_task_timeout() -> u64 {
    120
}
fn default_gate_timeout() -> u64 {
    60
}
fn default_max_connections() -> usize {
    12_000
}
fn default_handshake_timeout() -> u64 {
    10
}
fn default_anonymous_lifetime() -> u64 {
    30
}
fn default_snapshot_keep() -> usize {
    10
}
fn default_snapshot_max_age() -> u64 {
    30
}

impl CoordinatorConfig {
    /// Reads the config at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let config: Self = quorum_proto::yaml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let invalid = |message: &str| ConfigError::Parse {
            path: path.to_path_buf(),
            message: message.to_string(),
        };
        if config.max_connections == 0 {
            return Err(invalid(
                "max_connections: 0 would refuse every connection; give at least the number of agents plus a few for admins",
            ));
        }
        if config.tls_handshake_timeout_secs == 0 {
            return Err(invalid(
                "tls_handshake_timeout_secs: 0 would close every connection before its handshake; give a few seconds (default 10)",
            ));
        }
        if config.snapshot_keep == 0 {
            return Err(invalid(
                "snapshot_keep: 0 would delete the snapshot a destructive step was just guarded by; keep at least 1 (default 10)",
            ));
        }
        if config.anonymous_connection_secs == 0 {
            return Err(invalid(
                "anonymous_connection_secs: 0 would close every enrollment before it is answered; give a few seconds (default 30)",
            ));
        }
        Ok(config)
    }
}
