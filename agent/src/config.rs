//! The agent's own config file (`/etc/quorum/agent.yml`): who it is, where the coordinator
//! is, and every path and unit a task may touch. The coordinator can never name a path or a
//! command: it names a task, and this file says what that task touches on this host.
//! Every key is documented in `packaging/agent.yml`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Default location of the agent's config file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/quorum/agent.yml";

/// Errors reading or validating the agent config.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read agent config {path}: {source}; check the path given to --config")]
    Read {
        /// The config path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid YAML for this schema (unknown keys included).
    #[error("agent config {path} is invalid: {message}; fix the file (every key is documented in packaging/agent.yml)")]
    Parse {
        /// The config path.
        path: PathBuf,
        /// What is wrong, with line and column where known.
        message: String,
    },
    /// A value is unsafe or inconsistent.
    #[error("agent config {path}: {key}: {message}")]
    Invalid {
        /// The config path.
        path: PathBuf,
        /// The offending key.
        key: String,
        /// What is wrong and what to do.
        message: String,
    },
}

/// TLS material of the agent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsPaths {
    /// The Pigsty CA certificate.
    #[serde(default = "default_ca")]
    pub ca_cert: PathBuf,
    /// The agent's certificate (made by `quorum-agent enroll`).
    #[serde(default = "default_cert")]
    pub cert: PathBuf,
    /// The agent's private key (made locally by `quorum-agent enroll`).
    #[serde(default = "default_key")]
    pub key: PathBuf,
}

impl Default for TlsPaths {
    fn default() -> Self {
        Self {
            ca_cert: default_ca(),
            cert: default_cert(),
            key: default_key(),
        }
    }
}

fn default_ca() -> PathBuf {
    PathBuf::from("/etc/quorum/ca.crt")
}
fn default_cert() -> PathBuf {
    PathBuf::from("/etc/quorum/agent.crt")
}
fn default_key() -> PathBuf {
    PathBuf::from("/etc/quorum/agent.key")
}

/// Every path a task may touch (Pigsty's locations by default).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Paths {
    /// etcd's config.
    pub etcd_conf: PathBuf,
    /// The CA certificate etcd trusts.
    pub etcd_ca: PathBuf,
    /// etcd's server (and peer) certificate.
    pub etcd_cert: PathBuf,
    /// etcd's server key.
    pub etcd_key: PathBuf,
    /// etcd's RBAC root password file (Pigsty v4). Unset: `etcd.pass` beside `etcd_ca`
    /// (Pigsty's `/etc/etcd/etcd.pass`); see [`Paths::etcd_pass`].
    #[serde(rename = "etcd_pass")]
    pub etcd_pass_file: Option<PathBuf>,
    /// The etcdctl profile.
    pub etcdctl_profile: PathBuf,
    /// Patroni's config.
    pub patroni_conf: PathBuf,
    /// vip-manager's config.
    pub vip_conf: PathBuf,
    /// etcd's data dir (only its contents are ever wiped).
    pub etcd_data: PathBuf,
    /// Where the agent keeps its journal of finished tasks.
    pub journal_dir: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Self {
            etcd_conf: "/etc/etcd/etcd.conf".into(),
            etcd_ca: "/etc/etcd/ca.crt".into(),
            etcd_cert: "/etc/etcd/server.crt".into(),
            etcd_key: "/etc/etcd/server.key".into(),
            etcd_pass_file: None,
            etcdctl_profile: "/etc/profile.d/etcdctl.sh".into(),
            patroni_conf: "/etc/patroni/patroni.yml".into(),
            vip_conf: "/etc/default/vip-manager.yml".into(),
            etcd_data: "/data/etcd".into(),
            journal_dir: "/var/lib/quorum".into(),
        }
    }
}

impl Paths {
    /// The root password file: `paths.etcd_pass`, else `etcd.pass` in `etcd_ca`'s directory.
    pub fn etcd_pass(&self) -> PathBuf {
        match &self.etcd_pass_file {
            Some(p) => p.clone(),
            None => self
                .etcd_ca
                .parent()
                .unwrap_or_else(|| std::path::Path::new("/etc/etcd"))
                .join("etcd.pass"),
        }
    }

    /// Whether `path` may be a symbolic link that the agent reads and writes through (to a
    /// regular file inside allowed_prefixes, keeping the link). Only Patroni's config: Pigsty
    /// renders `/pg/conf/<cluster>-<seq>.yml` and links `/etc/patroni/patroni.yml` to it, so
    /// replacing the link would leave Patroni and Pigsty's next run reading different files.
    /// Pigsty lays no link at etcd.conf, the etcd certificates, the etcdctl profile or the
    /// vip-manager config, so a link there is someone else's doing and is refused.
    pub fn may_be_link(&self, path: &Path) -> bool {
        path == self.patroni_conf
    }
}

/// Owner of written files.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Owner {
    /// User name.
    pub user: String,
    /// Group name.
    pub group: String,
}

/// Owners of the files the agent writes (modes are Pigsty's: 0644, keys 0600).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Owners {
    /// etcd.conf and the etcd certificates (Pigsty: etcd:etcd).
    pub etcd: Owner,
    /// The etcdctl profile (Pigsty: root:root).
    pub profile: Owner,
}

impl Default for Owners {
    fn default() -> Self {
        Self {
            etcd: Owner {
                user: "etcd".into(),
                group: "etcd".into(),
            },
            profile: Owner {
                user: "root".into(),
                group: "root".into(),
            },
        }
    }
}

/// Unit names of the managed services (systemd backend).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Services {
    /// etcd's unit.
    pub etcd: String,
    /// Patroni's unit.
    pub patroni: String,
    /// vip-manager's unit.
    pub vip_manager: String,
    /// The rule engine of Pigsty v4's metrics stack, reloaded after Quorum's rules change.
    pub vmalert: String,
    /// Pigsty v3's Prometheus, reloaded after Quorum's rules change.
    pub prometheus: String,
}

impl Default for Services {
    fn default() -> Self {
        Self {
            etcd: "etcd".into(),
            patroni: "patroni".into(),
            vip_manager: "vip-manager".into(),
            vmalert: "vmalert".into(),
            prometheus: "prometheus".into(),
        }
    }
}

/// Where one Pigsty metrics stack reads scrape targets and alert rules, and who owns its
/// files there.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MonitoringPaths {
    /// The metrics stack's own directory: both files must be below it, and every write stays
    /// inside it as it really is (Pigsty v4: `/infra`, a link to `/data/infra`).
    pub root: PathBuf,
    /// Quorum's scrape target file (in the `infra` job's directory).
    pub targets: PathBuf,
    /// Quorum's alert rules file.
    pub rules: PathBuf,
    /// Owner of both files.
    pub owner: Owner,
}

/// The two layouts of Pigsty's metrics stack (`monitoring:`); a task names which one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Monitoring {
    /// Pigsty v4 and later: VictoriaMetrics and vmalert under `/infra` (a link to
    /// `/data/infra`).
    pub victoria: MonitoringPaths,
    /// Pigsty up to v3: Prometheus under `/etc/prometheus`.
    pub prometheus: MonitoringPaths,
}

impl Default for Monitoring {
    fn default() -> Self {
        Self {
            victoria: MonitoringPaths {
                root: "/infra".into(),
                targets: "/infra/targets/infra/quorum.yml".into(),
                rules: "/infra/rules/quorum.yml".into(),
                owner: Owner {
                    user: "victoria".into(),
                    group: "infra".into(),
                },
            },
            prometheus: MonitoringPaths {
                root: "/etc/prometheus".into(),
                targets: "/etc/prometheus/targets/infra/quorum.yml".into(),
                rules: "/etc/prometheus/rules/quorum.yml".into(),
                owner: Owner {
                    user: "prometheus".into(),
                    group: "prometheus".into(),
                },
            },
        }
    }
}

/// How services are driven.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// `systemctl ACTION UNIT`; status from `systemctl is-active`.
    #[default]
    Systemd,
    /// One argv per action from `exec:` (run without a shell); status from the exit code.
    Exec,
}

/// One service of the `exec` backend: a command per action, and where its log is.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ExecService {
    /// The file the service writes its log to (the start command's output): its last lines
    /// go with a start that failed and with a gate's explanation. Optional.
    #[serde(default)]
    pub log: Option<PathBuf>,
    /// action -> argv.
    #[serde(flatten)]
    pub commands: BTreeMap<String, Vec<String>>,
}

/// The most coordinators an agent's config may list.
pub const MAX_COORDINATORS: usize = 9;

/// One URL, or a list of them.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// The agent's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The coordinator's URL, `https://IP:PORT`, or a list of them: coordinators running
    /// active/standby on a shared store, among which the agent finds the active one.
    #[serde(deserialize_with = "one_or_many")]
    pub coordinator: Vec<String>,
    /// This host's IP: the agent id, and the IP its certificate names.
    pub host_ip: IpAddr,
    /// TLS material.
    #[serde(default)]
    pub tls: TlsPaths,
    /// Managed paths.
    #[serde(default)]
    pub paths: Paths,
    /// Every managed path must be under one of these.
    #[serde(default = "default_prefixes")]
    pub allowed_prefixes: Vec<PathBuf>,
    /// Owners of written files.
    #[serde(default)]
    pub owners: Owners,
    /// Unit names.
    #[serde(default)]
    pub services: Services,
    /// Where Pigsty's metrics stack reads targets and rules (infra hosts only).
    #[serde(default)]
    pub monitoring: Monitoring,
    /// systemd (default) or exec.
    #[serde(default)]
    pub service_backend: BackendKind,
    /// exec backend: service ("etcd", "patroni", "vip_manager") -> action -> argv, and `log`.
    #[serde(default)]
    pub exec: BTreeMap<String, ExecService>,
    /// How long one service command may run, seconds.
    #[serde(default = "default_exec_timeout")]
    pub exec_timeout_secs: u64,
    /// After a start or restart of etcd, how long the agent waits for it to run and answer
    /// its health endpoint before it fails the task, seconds; 0 turns the check off.
    #[serde(default = "default_start_check")]
    pub start_check_secs: u64,
    /// The host-local lock: when true, every wipe is refused, whatever the coordinator says.
    #[serde(default)]
    pub safeguard: bool,
    /// The file this config was read from (set at load, for messages).
    #[serde(skip)]
    pub source: PathBuf,
}

fn default_prefixes() -> Vec<PathBuf> {
    ["/etc", "/data", "/var/lib", "/pg"]
        .iter()
        .map(PathBuf::from)
        .collect()
}

fn default_exec_timeout() -> u64 {
    120
}

fn default_start_check() -> u64 {
    20
}

/// An absolute path without `..`.
fn plain_absolute(path: &Path) -> bool {
    path.is_absolute()
        && !path
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
}

/// Paths a data dir may never be: wiping their contents would wreck the host.
const FORBIDDEN_DATA_DIRS: &[&str] = &[
    "/", "/etc", "/data", "/var", "/var/lib", "/usr", "/home", "/root", "/boot", "/tmp", "/pg",
];

/// The refusal for a data dir that is a system directory.
fn system_dir(data: &Path) -> Option<String> {
    FORBIDDEN_DATA_DIRS.iter().any(|f| data == Path::new(f)).then(|| {
        format!(
            "{} is a system directory, and a wipe empties the data dir; use a dedicated directory such as /data/etcd",
            data.display()
        )
    })
}

impl AgentConfig {
    /// Reads and validates the config at `path`, then checks where the data dir really is on
    /// this host (no link on the way to it, resolved path within the rules).
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let cfg = Self::parse(path, &text)?;
        crate::datadir::DataDir::open(&cfg.paths.etcd_data, |real| cfg.data_dir_allowed(real))
            .map_err(|e| ConfigError::Invalid {
                path: path.to_path_buf(),
                key: "paths.etcd_data".into(),
                message: e.to_string(),
            })?;
        Ok(cfg)
    }

    /// Whether `data`, the data dir as written or as it resolves, may be wiped: not a system
    /// directory, not an allowed prefix itself, strictly inside one. Says what is wrong.
    pub fn data_dir_allowed(&self, data: &Path) -> Result<(), String> {
        if let Some(message) = system_dir(data) {
            return Err(message);
        }
        if let Some(pre) = self
            .allowed_prefixes
            .iter()
            .find(|pre| data == *pre || std::fs::canonicalize(pre).is_ok_and(|r| data == r))
        {
            return Err(format!(
                "{} equals the allowed prefix {} itself, and a wipe would empty all of it; use a dedicated directory below it such as {}",
                data.display(),
                pre.display(),
                pre.join("etcd").display()
            ));
        }
        if !crate::files::under_prefixes(data, &self.allowed_prefixes, true) {
            return Err(format!(
                "{} is outside every allowed prefix ({})",
                data.display(),
                self.prefix_list()
            ));
        }
        Ok(())
    }

    fn prefix_list(&self) -> String {
        self.allowed_prefixes
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Parses and validates config text; `path` is used only in messages.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let mut cfg: AgentConfig =
            quorum_proto::yaml::from_str(text).map_err(|e| ConfigError::Parse {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        cfg.source = path.to_path_buf();
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: key.to_string(),
            message,
        };
        if cfg.coordinator.is_empty() || cfg.coordinator.len() > MAX_COORDINATORS {
            return Err(invalid(
                "coordinator",
                format!(
                    "lists {} URLs; give one coordinator URL, or the URLs of up to {MAX_COORDINATORS} coordinators running active/standby",
                    cfg.coordinator.len()
                ),
            ));
        }
        for (i, url) in cfg.coordinator.iter().enumerate() {
            if !url.starts_with("https://") {
                return Err(invalid(
                    "coordinator",
                    format!(
                        "{url:?} is not an https:// URL; give the coordinator as https://IP:PORT"
                    ),
                ));
            }
            if cfg.coordinator[..i].contains(url) {
                return Err(invalid(
                    "coordinator",
                    format!("{url} is listed twice; list each coordinator once"),
                ));
            }
        }
        for p in &cfg.allowed_prefixes {
            if !p.is_absolute() || p == Path::new("/") {
                return Err(invalid(
                    "allowed_prefixes",
                    format!("{} must be an absolute directory other than /", p.display()),
                ));
            }
        }
        // Checked first: `etcd_data: /` is a system directory before it is outside a prefix.
        if let Some(message) = system_dir(&cfg.paths.etcd_data) {
            return Err(invalid("paths.etcd_data", message));
        }
        let p = &cfg.paths;
        let pass = p.etcd_pass();
        for (key, path) in [
            ("paths.etcd_conf", &p.etcd_conf),
            ("paths.etcd_pass", &pass),
            ("paths.etcd_ca", &p.etcd_ca),
            ("paths.etcd_cert", &p.etcd_cert),
            ("paths.etcd_key", &p.etcd_key),
            ("paths.etcdctl_profile", &p.etcdctl_profile),
            ("paths.patroni_conf", &p.patroni_conf),
            ("paths.vip_conf", &p.vip_conf),
            ("paths.etcd_data", &p.etcd_data),
            ("paths.journal_dir", &p.journal_dir),
        ] {
            if !path.is_absolute() {
                return Err(invalid(
                    key,
                    format!(
                        "{} is a relative path; give an absolute one",
                        path.display()
                    ),
                ));
            }
            if path
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                return Err(invalid(
                    key,
                    format!(
                        "{} contains '..'; give a plain absolute path",
                        path.display()
                    ),
                ));
            }
            if let Some(pre) = cfg.allowed_prefixes.iter().find(|pre| path == *pre) {
                return Err(invalid(
                    key,
                    format!(
                        "{} equals the allowed prefix {} itself; a managed path must lie below a prefix: move it into a subdirectory",
                        path.display(),
                        pre.display()
                    ),
                ));
            }
            if !cfg.allowed_prefixes.iter().any(|pre| path.starts_with(pre)) {
                return Err(invalid(
                    key,
                    format!(
                        "{} is outside every allowed prefix ({}); move it or add its parent to allowed_prefixes",
                        path.display(),
                        cfg.prefix_list()
                    ),
                ));
            }
        }
        // Checked as plain absolute paths only: Pigsty v4's /infra is a link to /data/infra,
        // so whether they lie inside allowed_prefixes is decided where they really are, when
        // a monitoring task writes them (and an agent.yml from before `monitoring:` existed
        // must still load).
        for (layout, m) in [
            ("victoria", &cfg.monitoring.victoria),
            ("prometheus", &cfg.monitoring.prometheus),
        ] {
            if !plain_absolute(&m.root) || m.root == Path::new("/") {
                return Err(invalid(
                    &format!("monitoring.{layout}.root"),
                    format!(
                        "{} is not a plain absolute directory other than /; give the metrics stack's own directory, such as /infra",
                        m.root.display()
                    ),
                ));
            }
            for (file, path) in [("targets", &m.targets), ("rules", &m.rules)] {
                let key = format!("monitoring.{layout}.{file}");
                if !plain_absolute(path) || path.parent().is_none_or(|d| d == Path::new("/")) {
                    return Err(invalid(
                        &key,
                        format!(
                            "{} is not a plain absolute path of a file in a directory other than /; give one without '..'",
                            path.display()
                        ),
                    ));
                }
                if !path.starts_with(&m.root) || path == &m.root {
                    return Err(invalid(
                        &key,
                        format!(
                            "{} is not below monitoring.{layout}.root ({}); the agent writes only inside it",
                            path.display(),
                            m.root.display()
                        ),
                    ));
                }
            }
        }
        for (service, svc) in &cfg.exec {
            if !matches!(
                service.as_str(),
                "etcd" | "patroni" | "vip_manager" | "vmalert" | "prometheus"
            ) {
                return Err(invalid(
                    "exec",
                    format!("unknown service {service:?}; use etcd, patroni, vip_manager, vmalert or prometheus"),
                ));
            }
            if let Some(log) = &svc.log {
                if !plain_absolute(log) {
                    return Err(invalid(
                        &format!("exec.{service}.log"),
                        format!(
                            "{} is not a plain absolute path; give the file the service logs to, such as /var/log/etcd.log",
                            log.display()
                        ),
                    ));
                }
            }
            for (action, argv) in &svc.commands {
                if !matches!(
                    action.as_str(),
                    "start" | "stop" | "restart" | "reload" | "status" | "disable"
                ) {
                    return Err(invalid(
                        &format!("exec.{service}"),
                        format!(
                            "unknown action {action:?}; use start, stop, restart, reload, status or disable (commands), or log (a file)"
                        ),
                    ));
                }
                if argv.is_empty() || argv[0].is_empty() {
                    return Err(invalid(
                        &format!("exec.{service}.{action}"),
                        "the command is empty".into(),
                    ));
                }
            }
        }
        // Without a status command the agent cannot tell a running etcd from a stopped one,
        // and a wipe needs a positive "stopped".
        if cfg.service_backend == BackendKind::Exec
            && cfg
                .exec
                .get("etcd")
                .is_some_and(|svc| !svc.commands.contains_key("status"))
        {
            return Err(invalid(
                "exec.etcd.status",
                "missing: the agent must be able to tell whether etcd is running before it wipes its data; add a command that exits 0 while etcd runs and non-zero when it is stopped (see packaging/agent.yml)".into(),
            ));
        }
        if cfg.exec_timeout_secs == 0 {
            return Err(invalid("exec_timeout_secs", "must be at least 1".into()));
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_coordinator_or_a_list_of_them() {
        let with = |coordinator: &str| {
            AgentConfig::parse(
                Path::new("agent.yml"),
                &format!("coordinator: {coordinator}\nhost_ip: 10.10.10.11\nexec:\n  etcd:\n    status: ['true']\n"),
            )
        };
        let one = with("https://10.10.10.10:7443").map(|c| c.coordinator);
        assert_eq!(one.ok(), Some(vec!["https://10.10.10.10:7443".to_string()]));
        let three =
            with("[https://10.10.10.10:7443, https://10.10.10.11:7443, https://10.10.10.12:7443]")
                .map(|c| c.coordinator.len());
        assert_eq!(three.ok(), Some(3));
        for bad in [
            "[]",
            "[https://10.10.10.10:7443, http://10.10.10.11:7443]",
            "[https://10.10.10.10:7443, https://10.10.10.10:7443]",
        ] {
            let e = with(bad).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains("coordinator"), "{bad}: {e}");
        }
    }

    fn parse(extra: &str) -> Result<AgentConfig, ConfigError> {
        AgentConfig::parse(
            Path::new("agent.yml"),
            &format!("coordinator: https://10.10.10.10:7443\nhost_ip: 10.10.10.11\n{extra}"),
        )
    }

    #[test]
    fn pigsty_defaults() -> Result<(), ConfigError> {
        let c = parse("")?;
        assert_eq!(c.paths.etcd_conf, PathBuf::from("/etc/etcd/etcd.conf"));
        assert_eq!(c.paths.etcd_data, PathBuf::from("/data/etcd"));
        assert_eq!(c.service_backend, BackendKind::Systemd);
        assert!(!c.safeguard);
        assert_eq!(c.start_check_secs, 20);
        Ok(())
    }

    #[test]
    fn an_exec_service_names_its_log_beside_its_commands() -> Result<(), ConfigError> {
        let c = parse(
            "service_backend: exec\nexec: { etcd: { status: [x, y], log: /var/log/etcd.log } }",
        )?;
        let etcd = c.exec.get("etcd").ok_or_else(|| ConfigError::Invalid {
            path: "agent.yml".into(),
            key: "exec.etcd".into(),
            message: "missing".into(),
        })?;
        assert_eq!(etcd.log.as_deref(), Some(Path::new("/var/log/etcd.log")));
        assert_eq!(
            etcd.commands.get("status"),
            Some(&vec!["x".to_string(), "y".to_string()])
        );
        assert!(!etcd.commands.contains_key("log"));
        Ok(())
    }

    #[test]
    fn unsafe_values_are_refused_with_the_key_named() {
        for (extra, key) in [
            ("paths: { etcd_data: / }", "paths.etcd_data"),
            ("paths: { etcd_data: /etc }", "paths.etcd_data"),
            ("paths: { etcd_data: data/etcd }", "paths.etcd_data"),
            ("paths: { etcd_conf: /usr/etcd.conf }", "paths.etcd_conf"),
            ("paths: { etcd_data: /data/../etc }", "paths.etcd_data"),
            ("exec: { etcd: { restart: [] } }", "exec.etcd.restart"),
            ("exec: { postgres: { start: [x] } }", "exec"),
            (
                "monitoring: { victoria: { root: /infra, targets: infra/quorum.yml, rules: /infra/rules/quorum.yml, owner: { user: victoria, group: infra } } }",
                "monitoring.victoria.targets",
            ),
            (
                "monitoring: { victoria: { root: /infra, targets: /etc/quorum.yml, rules: /infra/rules/quorum.yml, owner: { user: victoria, group: infra } } }",
                "monitoring.victoria.targets",
            ),
            (
                "monitoring: { prometheus: { root: /etc/prometheus, targets: /etc/prometheus/targets/quorum.yml, rules: /etc/../rules.yml, owner: { user: prometheus, group: prometheus } } }",
                "monitoring.prometheus.rules",
            ),
        ] {
            match parse(extra) {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{extra}"),
                other => panic!("{extra}: {other:?}"),
            }
        }
        // The exec backend must be able to tell whether etcd runs before it may wipe.
        match parse("service_backend: exec\nexec: { etcd: { stop: [x] } }") {
            Err(ConfigError::Invalid { key, .. }) => assert_eq!(key, "exec.etcd.status"),
            other => panic!("{other:?}"),
        }
        assert!(parse("service_backend: exec\nexec: { etcd: { status: [x] } }").is_ok());
        assert!(parse("service_backend: exec\nexec: { patroni: { reload: [x] } }").is_ok());
        match parse("service_backend: exec\nexec: { etcd: { status: [x], log: var/etcd.log } }") {
            Err(ConfigError::Invalid { key, .. }) => assert_eq!(key, "exec.etcd.log"),
            other => panic!("{other:?}"),
        }
        match parse("typo_key: 1") {
            Err(ConfigError::Parse { message, .. }) => {
                assert!(message.contains("typo_key"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_path_equal_to_a_prefix_is_named_as_such() {
        for (extra, key) in [
            (
                "allowed_prefixes: [/etc, /var/lib, /srv/etcd]\npaths: { etcd_data: /srv/etcd }",
                "paths.etcd_data",
            ),
            ("paths: { etcd_conf: /etc }", "paths.etcd_conf"),
        ] {
            match parse(extra) {
                Err(e @ ConfigError::Invalid { .. }) => {
                    let msg = e.to_string();
                    assert!(msg.contains(key), "{msg}");
                    assert!(msg.contains("equals the allowed prefix"), "{msg}");
                    assert!(!msg.contains("outside every allowed prefix"), "{msg}");
                }
                other => panic!("{extra}: {other:?}"),
            }
        }
        match parse("paths: { etcd_data: / }") {
            Err(e) => assert!(e.to_string().contains("is a system directory"), "{e}"),
            Ok(_) => panic!("/ accepted"),
        }
    }

    #[test]
    fn a_data_dir_that_is_a_link_fails_the_load() -> Result<(), Box<dyn std::error::Error>> {
        let t = tempfile::tempdir()?;
        let root = t.path().join("host");
        std::fs::create_dir_all(root.join("data"))?;
        std::fs::create_dir_all(t.path().join("elsewhere"))?;
        std::os::unix::fs::symlink(t.path().join("elsewhere"), root.join("data/etcd"))?;
        let cfg = t.path().join("agent.yml");
        std::fs::write(
            &cfg,
            format!(
                "coordinator: https://10.10.10.10:7443\nhost_ip: 10.10.10.11\nallowed_prefixes: [{r}]\npaths: {{ etcd_conf: {r}/etc/etcd.conf, etcd_ca: {r}/etc/ca.crt, etcd_cert: {r}/etc/server.crt, etcd_key: {r}/etc/server.key, etcdctl_profile: {r}/etc/p.sh, patroni_conf: {r}/etc/patroni.yml, vip_conf: {r}/etc/vip.yml, etcd_data: {r}/data/etcd, journal_dir: {r}/var }}\n",
                r = root.display()
            ),
        )?;
        match AgentConfig::load(&cfg) {
            Err(e @ ConfigError::Invalid { .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.contains("paths.etcd_data") && msg.contains("symbolic link"),
                    "{msg}"
                );
            }
            other => panic!("{other:?}"),
        }
        std::fs::remove_file(root.join("data/etcd"))?;
        std::fs::create_dir(root.join("data/etcd"))?;
        AgentConfig::load(&cfg)?;
        Ok(())
    }
}
