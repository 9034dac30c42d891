//! The coordinator daemon's config file (`quorum serve --config coordinator.yml`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Default CA directory, as Pigsty lays it out on the admin node (relative to Pigsty's home:
/// `quorum pki` resolves it against the current directory and says so).
pub const DEFAULT_CA_DIR: &str = "files/pki/ca";
/// The coordinator config `quorum pki` reads the CA's location from when it exists.
pub const DEFAULT_COORDINATOR_CONFIG: &str = "/etc/quorum/coordinator.yml";
/// Pigsty's leaf certificate validity (`cert_validity: 7300d`): etcd members' certificates,
/// which Pigsty's own playbooks would issue the same way.
pub const DEFAULT_LEAF_DAYS: u32 = 7300;
/// [`DEFAULT_LEAF_DAYS`] as a lifetime.
pub const PIGSTY_LEAF_TTL: Duration = Duration::from_secs(DEFAULT_LEAF_DAYS as u64 * 86_400);
/// Quorum's own identities are short-lived (a stolen key works only until it expires): agents
/// renew theirs by themselves at 60–75 % of this lifetime.
pub const DEFAULT_AGENT_CERT_TTL: Duration = Duration::from_secs(90 * 86_400);
/// Operators' certificates: issued again by hand, so a month.
pub const DEFAULT_ADMIN_CERT_TTL: Duration = Duration::from_secs(30 * 86_400);
/// The coordinator's certificate: replaced by hand (`quorum pki issue coordinator --force`),
/// picked up from disk without a restart; Prometheus warns 30 days ahead.
pub const DEFAULT_COORDINATOR_CERT_TTL: Duration = Duration::from_secs(365 * 86_400);
/// The longest lifetime a certificate may be given (Pigsty's CA lives 100 years).
const MAX_CERT_TTL: Duration = Duration::from_secs(36_500 * 86_400);

/// Reads a lifetime written as a number and a unit: `30s`, `15m`, `1h`, `90d` (no unit:
/// seconds). Zero and more than 100 years are refused.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 90s, 15m, 1h or 90d"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?}: unknown unit {unit:?}; use s, m, h or d")),
    };
    let d = Duration::from_secs(n.saturating_mul(mult));
    if d.is_zero() {
        return Err(format!("{s:?}: a lifetime must be at least one second"));
    }
    if d > MAX_CERT_TTL {
        return Err(format!("{s:?} is longer than 100 years (36500d)"));
    }
    Ok(d)
}

fn de_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    parse_duration(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

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
    /// Lifetime of the agent certificates this coordinator signs, at enrollment and at every
    /// renewal (`90d`, `12h`, `30s`): agents renew at 60–75 % of it.
    /// Unset: [`DEFAULT_AGENT_CERT_TTL`]; read it with [`CoordinatorConfig::agent_cert_ttl`].
    #[serde(default, deserialize_with = "de_duration")]
    pub agent_cert_ttl: Option<Duration>,
    /// The lifetime key of 0.3.0 and older, in days; `agent_cert_ttl` replaces it (both at
    /// once is refused).
    #[serde(default)]
    pub enroll_cert_days: Option<u32>,
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
    /// Where runs, locks and the deny list are kept: the embedded SQLite file in the state
    /// dir (unset), or PostgreSQL shared by coordinators running active/standby.
    #[serde(default)]
    pub store: Option<StoreConfig>,
    /// The URL agents and the CLI reach this coordinator at, which standbys name when they
    /// refuse a call (default: `https://` and `listen`).
    #[serde(default)]
    pub advertise_url: Option<String>,
}

/// The shared store (`store:` in coordinator.yml).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// PostgreSQL (Pigsty's pg-meta).
    pub postgres: PostgresConfig,
    /// How long the leader's lease lasts without a renewal (default 12s).
    #[serde(default, deserialize_with = "de_duration")]
    pub lease_ttl: Option<Duration>,
    /// How often the leader renews it (default 3s; at most a third of lease_ttl).
    #[serde(default, deserialize_with = "de_duration")]
    pub renew_every: Option<Duration>,
}

/// How to reach PostgreSQL.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// A libpq connection string or postgresql:// URL: Pigsty's `default` service
    /// (`host=VIP-or-infra port=5436 dbname=meta user=dbuser_quorum sslmode=verify-full`)
    /// or the primary; never pgbouncer (6432).
    pub conninfo: String,
    /// A file holding the role's password (0600), kept out of this file.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// The CA PostgreSQL's server certificate chains to (default: tls.ca_cert, Pigsty's CA).
    #[serde(default)]
    pub ca_cert: Option<PathBuf>,
}

/// The default lease of the shared store's leader.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(12);
/// How often the leader renews it by default.
pub const DEFAULT_RENEW_EVERY: Duration = Duration::from_secs(3);

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
        let mut config: Self =
            quorum_proto::yaml::from_str(&text).map_err(|e| ConfigError::Parse {
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
        if let Some(days) = config.enroll_cert_days {
            if config.agent_cert_ttl.is_some() {
                return Err(invalid(
                    "both enroll_cert_days and agent_cert_ttl are set; keep agent_cert_ttl (e.g. `agent_cert_ttl: 90d`) and remove enroll_cert_days",
                ));
            }
            config.agent_cert_ttl = Some(
                parse_duration(&format!("{days}d"))
                    .map_err(|e| invalid(&format!("enroll_cert_days: {e}")))?,
            );
        }
        if let Some(store) = &config.store {
            let (ttl, every) = (store.lease_ttl(), store.renew_every());
            if ttl < Duration::from_secs(3) || every.is_zero() || every * 3 > ttl {
                return Err(invalid(&format!(
                    "store.lease_ttl {ttl:?} with store.renew_every {every:?}: the lease must last at least 3s and three renewals; keep the defaults (12s, 3s) unless you know why"
                )));
            }
        }
        if let Some(url) = &config.advertise_url {
            if !url.starts_with("https://") {
                return Err(invalid(&format!(
                    "advertise_url {url:?} is not an https:// URL; give this coordinator's URL as agents reach it, https://IP:PORT"
                )));
            }
        }
        Ok(config)
    }

    /// The URL standbys name for this coordinator.
    pub fn advertise_url(&self) -> String {
        self.advertise_url
            .clone()
            .unwrap_or_else(|| format!("https://{}", self.listen))
    }

    /// The lifetime of the agent certificates this coordinator signs.
    pub fn agent_cert_ttl(&self) -> Duration {
        self.agent_cert_ttl.unwrap_or(DEFAULT_AGENT_CERT_TTL)
    }
}

impl StoreConfig {
    /// The lease's lifetime.
    pub fn lease_ttl(&self) -> Duration {
        self.lease_ttl.unwrap_or(DEFAULT_LEASE_TTL)
    }

    /// How often it is renewed.
    pub fn renew_every(&self) -> Duration {
        self.renew_every.unwrap_or(DEFAULT_RENEW_EVERY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(extra: &str) -> Result<CoordinatorConfig, ConfigError> {
        let dir = tempfile::tempdir().map_err(|source| ConfigError::Read {
            path: PathBuf::from("tempdir"),
            source,
        })?;
        let path = dir.path().join("coordinator.yml");
        let text = format!(
            "listen: 127.0.0.1:9000\ntls: {{ ca_cert: ca.crt, cert: c.crt, key: c.key }}\n{extra}"
        );
        std::fs::write(&path, text).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        CoordinatorConfig::load(&path)
    }

    #[test]
    fn agent_certificates_live_90_days_unless_configured() -> Result<(), ConfigError> {
        assert_eq!(load("")?.agent_cert_ttl(), DEFAULT_AGENT_CERT_TTL);
        assert_eq!(
            load("agent_cert_ttl: 30s")?.agent_cert_ttl(),
            Duration::from_secs(30)
        );
        assert_eq!(
            load("agent_cert_ttl: 12h")?.agent_cert_ttl(),
            Duration::from_secs(43_200)
        );
        // The key of 0.3.0, in days, still works.
        assert_eq!(
            load("enroll_cert_days: 7300")?.agent_cert_ttl(),
            Duration::from_secs(7300 * 86_400)
        );
        Ok(())
    }

    #[test]
    fn a_bad_or_doubled_lifetime_is_refused_naming_the_key() {
        for (text, want) in [
            ("agent_cert_ttl: 90x", "unknown unit"),
            ("agent_cert_ttl: 0d", "at least one second"),
            ("agent_cert_ttl: 40000d", "longer than 100 years"),
            (
                "agent_cert_ttl: 90d\nenroll_cert_days: 90",
                "both enroll_cert_days and agent_cert_ttl",
            ),
        ] {
            match load(text) {
                Err(ConfigError::Parse { message, .. }) => {
                    assert!(message.contains(want), "{text}: {message}")
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn durations_read_as_operators_write_them() {
        assert_eq!(parse_duration("90d"), Ok(Duration::from_secs(90 * 86_400)));
        assert_eq!(parse_duration(" 15m "), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert!(parse_duration("d").is_err());
        assert!(parse_duration("-1d").is_err());
    }
}
