//! The files an agent writes from typed fields: `etcd.conf` and the etcdctl profile, rendered
//! key by key as Pigsty's templates render them. The coordinator builds the typed fields from
//! the inventory and renders them here for its plan diffs; the agent validates the same fields
//! and renders them here before it writes. So the coordinator never sends text that becomes a
//! file on a host (the profile is sourced by every login shell, root's included), and a plan's
//! diff is exactly what the agent will write.
//!
//! [`validate_etcd_conf`] and [`validate_etcdctl_profile`] accept only values that make sense
//! in their place: names of `[A-Za-z0-9._-]`, IP addresses, ports, absolute paths without
//! `..` or control characters. The formatters quote every value that needs it, so even a
//! value that slipped past validation cannot open a new key or a shell command.

use std::net::IpAddr;
use std::path::{Component, Path};

use crate::pb;

/// The first line of every rendered file (Pigsty's is `# {{ ansible_managed }}`).
pub const MANAGED: &str =
    "# managed by Quorum from the Pigsty inventory: local edits are overwritten";

/// Most members an `initial-cluster` may list, and endpoints a profile may list.
const MAX_MEMBERS: usize = 128;
/// Longest path accepted.
const MAX_PATH: usize = 1024;
/// Longest member or cluster name accepted.
const MAX_NAME: usize = 128;
/// Most login users a profile exports `ETCDCTL_USER` for.
const MAX_LOGIN_USERS: usize = 8;

/// A field that cannot be rendered, named as the task carries it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {value:?} {why}")]
pub struct SpecError {
    /// The field, e.g. `conf.data_dir` or `conf.initial_cluster[2].ip`.
    pub field: String,
    /// The value as given (cut to 200 characters).
    pub value: String,
    /// What is wrong.
    pub why: &'static str,
}

fn bad(field: impl Into<String>, value: &str, why: &'static str) -> SpecError {
    SpecError {
        field: field.into(),
        value: value.chars().take(200).collect(),
        why,
    }
}

fn check_name(field: &str, s: &str) -> Result<(), SpecError> {
    if s.is_empty() || s.len() > MAX_NAME {
        return Err(bad(field, s, "must be 1 to 128 characters"));
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        return Err(bad(
            field,
            s,
            "may hold only letters, digits, '.', '_' and '-'",
        ));
    }
    Ok(())
}

fn check_ip(field: &str, s: &str) -> Result<IpAddr, SpecError> {
    s.parse().map_err(|_| bad(field, s, "is not an IP address"))
}

fn check_port(field: &str, p: u32) -> Result<(), SpecError> {
    if p == 0 || p > 65535 {
        return Err(bad(field, &p.to_string(), "is not a port (1-65535)"));
    }
    Ok(())
}

fn check_path(field: &str, s: &str) -> Result<(), SpecError> {
    if s.len() > MAX_PATH {
        return Err(bad(field, s, "is longer than 1024 bytes"));
    }
    if s.chars().any(char::is_control) {
        return Err(bad(field, s, "contains a control character"));
    }
    let p = Path::new(s);
    if !p.is_absolute() || p == Path::new("/") {
        return Err(bad(field, s, "is not an absolute path other than /"));
    }
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(bad(field, s, "contains '..'"));
    }
    Ok(())
}

/// Checks every field of an etcd.conf spec; the first problem is returned.
pub fn validate_etcd_conf(c: &pb::EtcdConf) -> Result<(), SpecError> {
    check_name("conf.name", &c.name)?;
    let ip = check_ip("conf.ip", &c.ip)?;
    check_port("conf.client_port", c.client_port)?;
    check_port("conf.peer_port", c.peer_port)?;
    check_path("conf.data_dir", &c.data_dir)?;
    check_name("conf.cluster_token", &c.cluster_token)?;
    check_path("conf.cert_dir", &c.cert_dir)?;
    for (field, v) in [
        ("conf.election_timeout_ms", c.election_timeout_ms),
        ("conf.heartbeat_interval_ms", c.heartbeat_interval_ms),
    ] {
        if v == 0 || v > 600_000 {
            return Err(bad(field, &v.to_string(), "must be 1 to 600000 ms"));
        }
    }
    if c.initial_cluster.is_empty() || c.initial_cluster.len() > MAX_MEMBERS {
        return Err(bad(
            "conf.initial_cluster",
            &c.initial_cluster.len().to_string(),
            "must list 1 to 128 members",
        ));
    }
    let mut itself = false;
    for (i, m) in c.initial_cluster.iter().enumerate() {
        check_name(&format!("conf.initial_cluster[{i}].name"), &m.name)?;
        let mip = check_ip(&format!("conf.initial_cluster[{i}].ip"), &m.ip)?;
        check_port(&format!("conf.initial_cluster[{i}].peer_port"), m.peer_port)?;
        itself |= m.name == c.name && mip == ip && m.peer_port == c.peer_port;
    }
    if !itself {
        return Err(bad(
            "conf.initial_cluster",
            &c.name,
            "does not list this member with its own IP and peer port",
        ));
    }
    Ok(())
}

/// Checks every field of an etcdctl profile spec.
pub fn validate_etcdctl_profile(p: &pb::EtcdctlProfile) -> Result<(), SpecError> {
    if p.endpoints.is_empty() || p.endpoints.len() > MAX_MEMBERS {
        return Err(bad(
            "profile.endpoints",
            &p.endpoints.len().to_string(),
            "must list 1 to 128 endpoints",
        ));
    }
    for (i, e) in p.endpoints.iter().enumerate() {
        check_ip(&format!("profile.endpoints[{i}].ip"), &e.ip)?;
        check_port(&format!("profile.endpoints[{i}].port"), e.port)?;
    }
    if !(p.cacert.is_empty() && p.cert.is_empty() && p.key.is_empty()) {
        check_path("profile.cacert", &p.cacert)?;
        check_path("profile.cert", &p.cert)?;
        check_path("profile.key", &p.key)?;
    }
    if p.login_users.len() > MAX_LOGIN_USERS {
        return Err(bad(
            "profile.login_users",
            &p.login_users.len().to_string(),
            "must list at most 8 users",
        ));
    }
    for (i, u) in p.login_users.iter().enumerate() {
        check_user(&format!("profile.login_users[{i}]"), u)?;
    }
    if !p.login_users.is_empty() {
        check_path("profile.pass_file", &p.pass_file)?;
    }
    if pb::ProfileFile::try_from(p.file).is_err() {
        return Err(bad(
            "profile.file",
            &p.file.to_string(),
            "is not a known owner and mode",
        ));
    }
    Ok(())
}

/// A Unix login name as `useradd` takes it: `[a-z_][a-z0-9_-]*`, 1 to 32 characters. It is
/// written into a shell `case` pattern, so nothing else may pass.
fn check_user(field: &str, s: &str) -> Result<(), SpecError> {
    let ok = !s.is_empty()
        && s.len() <= 32
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(bad(
            field,
            s,
            "is not a login name ([a-z_][a-z0-9_-]*, at most 32 characters)",
        ))
    }
}

/// Longest etcd root password accepted.
pub const MAX_PASSWORD: usize = 256;

/// Checks the root password of a `WriteEtcdPass` task: one line of 1 to 256 bytes without
/// control characters. The error never carries the password.
pub fn validate_etcd_pass(password: &str) -> Result<(), SpecError> {
    if password.is_empty() || password.len() > MAX_PASSWORD {
        return Err(bad("password", "(not shown)", "must be 1 to 256 bytes"));
    }
    if password.chars().any(char::is_control) {
        return Err(bad(
            "password",
            "(not shown)",
            "contains a control character",
        ));
    }
    Ok(())
}

/// Validates, then renders etcd.conf: what an agent writes.
pub fn etcd_conf(c: &pb::EtcdConf) -> Result<String, SpecError> {
    validate_etcd_conf(c)?;
    Ok(format_etcd_conf(c))
}

/// Validates, then renders the etcdctl profile: what an agent writes.
pub fn etcdctl_profile(p: &pb::EtcdctlProfile) -> Result<String, SpecError> {
    validate_etcdctl_profile(p)?;
    Ok(format_etcdctl_profile(p))
}

/// Quorum's alert rules, as the agent writes them into Pigsty's rules directory (and as the
/// `quorum` package installs them under `/usr/share/quorum/monitoring/`).
pub const QUORUM_RULES: &str = include_str!("../../packaging/monitoring/quorum.rules.yml");

/// Most scrape targets a monitoring task may name (one per coordinator).
const MAX_TARGETS: usize = 16;

/// Checks a monitoring task's targets: IP addresses, ports, instance names.
pub fn validate_monitoring(t: &pb::WriteMonitoring) -> Result<(), SpecError> {
    if t.remove {
        return Ok(());
    }
    if t.targets.is_empty() || t.targets.len() > MAX_TARGETS {
        return Err(bad(
            "targets",
            &t.targets.len().to_string(),
            "must name 1 to 16 targets",
        ));
    }
    for (i, target) in t.targets.iter().enumerate() {
        check_ip(&format!("targets[{i}].ip"), &target.ip)?;
        check_port(&format!("targets[{i}].port"), target.port)?;
        check_name(&format!("targets[{i}].ins"), &target.ins)?;
    }
    Ok(())
}

/// The scrape target file, as Pigsty writes its own under `targets/infra/`: one entry per
/// target with the labels `ip`, `ins` and `cls` (`quorum`).
pub fn format_monitor_targets(t: &pb::WriteMonitoring) -> String {
    let mut out =
        format!("{MANAGED}\n# the Quorum coordinator's /metrics (`quorum monitor register`)\n");
    for target in &t.targets {
        out.push_str(&format!(
            "- labels: {{ ip: {ip}, ins: {ins}, cls: quorum }}\n  targets: [ {address} ]\n",
            ip = yaml_quoted(&target.ip),
            ins = yaml_quoted(&target.ins),
            address = yaml_quoted(&format!("{}:{}", url_host(&target.ip), target.port)),
        ));
    }
    out
}

/// Validates, then renders the scrape target file: what an agent writes.
pub fn monitor_targets(t: &pb::WriteMonitoring) -> Result<String, SpecError> {
    validate_monitoring(t)?;
    Ok(format_monitor_targets(t))
}

/// A host as it appears in a URL or `host:port`: IPv6 in brackets (which Pigsty's templates
/// do not do, but etcd and Patroni need). Text that is not an IP is kept as it is.
pub fn url_host(ip: &str) -> String {
    match ip.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("[{v6}]"),
        _ => ip.to_string(),
    }
}

/// A YAML scalar for a path: plain like Pigsty's template when that reads back the same,
/// double-quoted otherwise (spaces, `#`, `: ` ...).
fn yaml_path(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+@%=~".contains(c))
    {
        return s.to_string();
    }
    yaml_quoted(s)
}

fn yaml_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A shell word: bare like Pigsty's template when safe, single-quoted otherwise.
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+@%=:,".contains(c))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// `<dir>/<file>`, with one slash between.
pub fn in_dir(dir: &str, file: &str) -> String {
    format!("{}/{file}", dir.trim_end_matches('/'))
}

/// Renders etcd.conf without validating (the coordinator's `render` commands and diffs of
/// values it has validated); every value is quoted where it needs to be.
pub fn format_etcd_conf(c: &pb::EtcdConf) -> String {
    let host = url_host(&c.ip);
    let client_url = format!("https://{host}:{}", c.client_port);
    let listen_clients = if c.listen_localhost {
        format!("{client_url},https://127.0.0.1:{}", c.client_port)
    } else {
        client_url.clone()
    };
    let initial_cluster = c
        .initial_cluster
        .iter()
        .map(|m| format!("{}=https://{}:{}", m.name, url_host(&m.ip), m.peer_port))
        .collect::<Vec<_>>()
        .join(",");
    let mut tls = format!(
        "  cert-file: {}\n  key-file: {}\n  trusted-ca-file: {}",
        yaml_path(&in_dir(&c.cert_dir, "server.crt")),
        yaml_path(&in_dir(&c.cert_dir, "server.key")),
        yaml_path(&in_dir(&c.cert_dir, "ca.crt")),
    );
    if c.client_cert_auth {
        tls.push_str("\n  client-cert-auth: true");
    }
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(MANAGED.to_string());
    line(format!("name: {}", yaml_path(&c.name)));
    line(format!("data-dir: {}", yaml_path(&c.data_dir)));
    line(format!(
        "initial-cluster-token: {}",
        yaml_quoted(&c.cluster_token)
    ));
    line(format!(
        "initial-cluster-state: \"{}\"",
        if c.existing { "existing" } else { "new" }
    ));
    line(format!(
        "initial-cluster: {}",
        yaml_quoted(&initial_cluster)
    ));
    line(format!(
        "initial-advertise-peer-urls: \"https://{host}:{}\"",
        c.peer_port
    ));
    line(format!(
        "listen-peer-urls: \"https://{host}:{}\"",
        c.peer_port
    ));
    line(format!(
        "listen-client-urls: {}",
        yaml_quoted(&listen_clients)
    ));
    line(format!(
        "advertise-client-urls: {}",
        yaml_quoted(&client_url)
    ));
    line(format!("election-timeout: {}", c.election_timeout_ms));
    line(format!("heartbeat-interval: {}", c.heartbeat_interval_ms));
    if c.quota_backend_bytes > 0 {
        line(format!("quota-backend-bytes: {}", c.quota_backend_bytes));
    }
    line("auto-compaction-mode: periodic".into());
    line("auto-compaction-retention: \"24h\"".into());
    line(format!("client-transport-security:\n{tls}"));
    line(format!("peer-transport-security:\n{tls}"));
    if c.grpc_gateway {
        line("enable-grpc-gateway: true".into());
    }
    if c.enable_v2 {
        line("enable-v2: true".into());
    }
    out
}

/// Renders the etcdctl profile without validating (see [`format_etcd_conf`]).
pub fn format_etcdctl_profile(p: &pb::EtcdctlProfile) -> String {
    let endpoints = p
        .endpoints
        .iter()
        .map(|e| format!("https://{}:{}", url_host(&e.ip), e.port))
        .collect::<Vec<_>>()
        .join(",");
    let mut out = format!("{MANAGED}\nalias e=\"etcdctl\"\nalias em=\"etcdctl member\"\n");
    if p.api3 {
        out.push_str("export ETCDCTL_API=3\n");
    }
    out.push_str(&format!(
        "export ETCDCTL_ENDPOINTS={}\n",
        shell_double_quoted(&endpoints)
    ));
    if !(p.cacert.is_empty() && p.cert.is_empty() && p.key.is_empty()) {
        out.push_str(&format!(
            "export ETCDCTL_CACERT={}\nexport ETCDCTL_CERT={}\nexport ETCDCTL_KEY={}\n",
            shell_word(&p.cacert),
            shell_word(&p.cert),
            shell_word(&p.key),
        ));
    }
    if !p.login_users.is_empty() {
        // Pigsty v4's guard: only these users read the root password (the file is root:etcd
        // 0640, so others could not anyway, and get no ETCDCTL_USER).
        let pass = shell_word(&p.pass_file);
        out.push_str(&format!(
            "\ncase \"$(id -un)\" in\n  {})\n    [ -r {pass} ] && export ETCDCTL_USER=\"root:$(cat {pass})\"\n    ;;\nesac\n",
            p.login_users.join("|"),
        ));
    }
    out
}

/// `"…"` as Pigsty writes ETCDCTL_ENDPOINTS; text that would mean something inside double
/// quotes (`$`, `` ` ``, `"`, `\`) is single-quoted instead.
fn shell_double_quoted(s: &str) -> String {
    if s.chars().any(|c| "$`\"\\!".contains(c) || c.is_control()) {
        return format!("'{}'", s.replace('\'', "'\\''"));
    }
    format!("\"{s}\"")
}

/// Whether two etcd.conf texts configure etcd alike: equal as YAML mappings, with comments,
/// blank lines, quoting and key order aside, and the keys in `ignore` left out. A file Pigsty
/// rendered and Quorum's render of the same inventory are alike, so adopting a cluster that
/// Pigsty built changes nothing. Text that is not a YAML mapping is alike only to itself.
pub fn same_etcd_conf(a: &str, b: &str, ignore: &[&str]) -> bool {
    if a == b {
        return true;
    }
    let read = |t: &str| -> Option<crate::yaml::Mapping> {
        let mut m = match crate::yaml::from_str::<crate::yaml::Value>(t).ok()? {
            crate::yaml::Value::Mapping(m) => m,
            _ => return None,
        };
        for k in ignore {
            m.remove(*k);
        }
        Some(m)
    };
    match (read(a), read(b)) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

/// What an etcdctl profile does, line by line, with comments, blank lines, order and quoting
/// aside: its aliases, its exports, and Pigsty v4's root password block (the users of its
/// `case` and the line inside). Any other line is kept as it is written.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ProfileMeaning {
    /// `alias NAME=VALUE`, unquoted.
    pub aliases: std::collections::BTreeMap<String, String>,
    /// `export NAME=VALUE` outside the guard, unquoted.
    pub exports: std::collections::BTreeMap<String, String>,
    /// The users of `case "$(id -un)" in`, sorted; empty without the block.
    pub guard_users: Vec<String>,
    /// The lines inside the guard, trimmed.
    pub guarded: Vec<String>,
    /// Every other line, trimmed.
    pub other: Vec<String>,
}

fn unquote(v: &str) -> String {
    let v = v.trim();
    for q in ['"', '\''] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return v[1..v.len() - 1].to_string();
        }
    }
    v.to_string()
}

/// Reads an etcdctl profile into its [`ProfileMeaning`].
pub fn profile_meaning(text: &str) -> ProfileMeaning {
    let mut m = ProfileMeaning::default();
    let mut in_case = false;
    for raw in text.lines() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line == "case \"$(id -un)\" in" {
            in_case = true;
            continue;
        }
        if in_case {
            match line {
                "esac" => in_case = false,
                ";;" => {}
                l if l.ends_with(')') && !l.contains(' ') => {
                    let mut users: Vec<String> = l
                        .trim_end_matches(')')
                        .split('|')
                        .map(str::to_string)
                        .collect();
                    users.sort();
                    m.guard_users = users;
                }
                l => m.guarded.push(l.to_string()),
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("alias ") {
            if let Some((k, v)) = rest.split_once('=') {
                m.aliases.insert(k.trim().to_string(), unquote(v));
                continue;
            }
        }
        if let Some(rest) = line.strip_prefix("export ") {
            if let Some((k, v)) = rest.split_once('=') {
                m.exports.insert(k.trim().to_string(), unquote(v));
                continue;
            }
        }
        m.other.push(line.to_string());
    }
    m
}

/// Whether two etcdctl profiles set up the same environment ([`profile_meaning`]).
pub fn same_profile(a: &str, b: &str) -> bool {
    a == b || profile_meaning(a) == profile_meaning(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf() -> pb::EtcdConf {
        pb::EtcdConf {
            name: "etcd-1".into(),
            ip: "10.10.10.10".into(),
            client_port: 2379,
            peer_port: 2380,
            data_dir: "/data/etcd".into(),
            cluster_token: "etcd".into(),
            existing: false,
            initial_cluster: vec![pb::EtcdPeer {
                name: "etcd-1".into(),
                ip: "10.10.10.10".into(),
                peer_port: 2380,
            }],
            listen_localhost: true,
            election_timeout_ms: 1000,
            heartbeat_interval_ms: 100,
            quota_backend_bytes: 17_179_869_184,
            cert_dir: "/etc/etcd".into(),
            client_cert_auth: false,
            grpc_gateway: false,
            enable_v2: false,
        }
    }

    #[test]
    fn the_target_file_is_pigstys_shape_and_refuses_what_is_not_a_target(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let target = |ip: &str, port: u32, ins: &str| pb::MonitorTarget {
            ip: ip.into(),
            port,
            ins: ins.into(),
        };
        let task = pb::WriteMonitoring {
            layout: pb::MonitoringLayout::Victoria as i32,
            targets: vec![
                target("10.10.10.10", 9808, "quorum-1"),
                target("fd00::10", 9808, "quorum-2"),
            ],
            remove: false,
        };
        let text = monitor_targets(&task)?;
        assert!(text.starts_with(MANAGED));
        let v: crate::yaml::Value = crate::yaml::from_str(&text)?;
        let first = &v[0];
        assert_eq!(first["labels"]["ip"].as_str(), Some("10.10.10.10"));
        assert_eq!(first["labels"]["ins"].as_str(), Some("quorum-1"));
        assert_eq!(first["labels"]["cls"].as_str(), Some("quorum"));
        assert_eq!(first["targets"][0].as_str(), Some("10.10.10.10:9808"));
        assert_eq!(v[1]["targets"][0].as_str(), Some("[fd00::10]:9808"));
        for (bad_target, field) in [
            (target("10.0.0.1\n- labels: {}", 1, "q"), "targets[0].ip"),
            (target("10.0.0.1", 0, "q"), "targets[0].port"),
            (target("10.0.0.1", 70000, "q"), "targets[0].port"),
            (target("10.0.0.1", 9808, "q }\n- x"), "targets[0].ins"),
            (target("10.0.0.1", 9808, ""), "targets[0].ins"),
        ] {
            let t = pb::WriteMonitoring {
                targets: vec![bad_target],
                ..task.clone()
            };
            let err = monitor_targets(&t).expect_err("refused");
            assert_eq!(err.field, field, "{err}");
        }
        let none = pb::WriteMonitoring {
            targets: vec![],
            ..task.clone()
        };
        assert!(monitor_targets(&none).is_err());
        // A removal names no target.
        assert!(validate_monitoring(&pb::WriteMonitoring {
            remove: true,
            ..none
        })
        .is_ok());
        // The rules the agent writes are the ones the package ships, and YAML.
        let rules: crate::yaml::Value = crate::yaml::from_str(QUORUM_RULES)?;
        assert!(rules["groups"][0]["rules"][0]["alert"].as_str().is_some());
        Ok(())
    }

    #[test]
    fn quoting_only_when_needed() {
        assert_eq!(yaml_path("/data/etcd"), "/data/etcd");
        assert_eq!(yaml_path("/data/my etcd"), "\"/data/my etcd\"");
        assert_eq!(yaml_path("/a\"b\\c"), "\"/a\\\"b\\\\c\"");
        assert_eq!(shell_word("/etc/pki/ca.crt"), "/etc/pki/ca.crt");
        assert_eq!(shell_word("/tmp/it's here"), "'/tmp/it'\\''s here'");
        assert_eq!(in_dir("/etc/etcd/", "ca.crt"), "/etc/etcd/ca.crt");
    }

    #[test]
    fn a_valid_spec_renders_pigstys_keys() -> Result<(), SpecError> {
        let text = etcd_conf(&conf())?;
        assert!(text.starts_with(MANAGED));
        assert!(text.contains("\ninitial-cluster: \"etcd-1=https://10.10.10.10:2380\"\n"));
        assert!(text.contains(
            "\nlisten-client-urls: \"https://10.10.10.10:2379,https://127.0.0.1:2379\"\n"
        ));
        assert!(text.contains("\nquota-backend-bytes: 17179869184\n"));
        let mut no_quota = conf();
        no_quota.quota_backend_bytes = 0;
        assert!(!etcd_conf(&no_quota)?.contains("quota-backend-bytes"));
        Ok(())
    }

    #[test]
    fn hostile_fields_are_refused_with_the_field_named() {
        type Change = Box<dyn Fn(&mut pb::EtcdConf)>;
        let cases: Vec<(&str, Change)> = vec![
            ("conf.name", Box::new(|c| c.name = "etcd-1\nevil: x".into())),
            ("conf.ip", Box::new(|c| c.ip = "10.0.0.1; rm -rf /".into())),
            ("conf.client_port", Box::new(|c| c.client_port = 70000)),
            (
                "conf.data_dir",
                Box::new(|c| c.data_dir = "data/etcd".into()),
            ),
            (
                "conf.data_dir",
                Box::new(|c| c.data_dir = "/data/../etc".into()),
            ),
            (
                "conf.data_dir",
                Box::new(|c| c.data_dir = "/data/x\ny: 1".into()),
            ),
            ("conf.cert_dir", Box::new(|c| c.cert_dir = "/".into())),
            (
                "conf.cluster_token",
                Box::new(|c| c.cluster_token = "a\"b".into()),
            ),
            (
                "conf.election_timeout_ms",
                Box::new(|c| c.election_timeout_ms = 0),
            ),
            (
                "conf.initial_cluster",
                Box::new(|c| c.initial_cluster.clear()),
            ),
            (
                "conf.initial_cluster",
                Box::new(|c| c.initial_cluster[0].peer_port = 2390),
            ),
            (
                "conf.initial_cluster[1].ip",
                Box::new(|c| {
                    c.initial_cluster.push(pb::EtcdPeer {
                        name: "etcd-2".into(),
                        ip: "x".into(),
                        peer_port: 2380,
                    })
                }),
            ),
        ];
        for (field, change) in cases {
            let mut c = conf();
            change(&mut c);
            match etcd_conf(&c) {
                Err(e) => assert_eq!(e.field, field, "{e}"),
                Ok(text) => panic!("{field}: rendered {text}"),
            }
        }
    }

    #[test]
    fn the_profile_is_made_of_exports_only() -> Result<(), SpecError> {
        let p = pb::EtcdctlProfile {
            endpoints: vec![pb::EtcdEndpoint {
                ip: "10.10.10.10".into(),
                port: 2379,
            }],
            cacert: "/etc/pki/ca.crt".into(),
            cert: "/etc/etcd/server.crt".into(),
            key: "/etc/etcd/server.key".into(),
            ..Default::default()
        };
        let text = etcdctl_profile(&p)?;
        for line in text.lines().skip(1) {
            assert!(
                line.starts_with("alias e") || line.starts_with("export ETCDCTL_"),
                "{line}"
            );
        }
        let mut evil = p.clone();
        evil.cacert = "/x $(id)".into();
        // Valid as a path, and quoted so the shell reads it as one word.
        assert!(etcdctl_profile(&evil)?.contains("export ETCDCTL_CACERT='/x $(id)'\n"));
        evil.cacert = "/x\necho pwned".into();
        assert_eq!(
            etcdctl_profile(&evil).map_err(|e| e.field),
            Err("profile.cacert".to_string())
        );
        evil = p;
        evil.endpoints[0].ip = "$(id)".into();
        assert!(etcdctl_profile(&evil).is_err());
        Ok(())
    }

    #[test]
    fn the_v4_profile_guards_etcdctl_user_and_refuses_odd_users() -> Result<(), SpecError> {
        let p = pb::EtcdctlProfile {
            endpoints: vec![pb::EtcdEndpoint {
                ip: "10.10.10.10".into(),
                port: 2379,
            }],
            cacert: "/etc/etcd/ca.crt".into(),
            cert: "/etc/etcd/server.crt".into(),
            key: "/etc/etcd/server.key".into(),
            login_users: vec!["root".into(), "dba".into()],
            pass_file: "/etc/etcd/etcd.pass".into(),
            ..Default::default()
        };
        let text = etcdctl_profile(&p)?;
        assert!(
            text.ends_with("\ncase \"$(id -un)\" in\n  root|dba)\n    [ -r /etc/etcd/etcd.pass ] && export ETCDCTL_USER=\"root:$(cat /etc/etcd/etcd.pass)\"\n    ;;\nesac\n"),
            "{text}"
        );
        assert!(!text.contains("ETCDCTL_API"));
        // A host that is no member: no certificate lines at all.
        let mut bare = p.clone();
        (bare.cacert, bare.cert, bare.key) = (String::new(), String::new(), String::new());
        assert!(!etcdctl_profile(&bare)?.contains("ETCDCTL_CERT"));
        // Half a set is a mistake.
        bare.cert = "/etc/etcd/server.crt".into();
        assert_eq!(
            etcdctl_profile(&bare).map_err(|e| e.field),
            Err("profile.cacert".to_string())
        );
        for user in ["root)", "a b", "Dba", "x;id", ""] {
            let mut evil = p.clone();
            evil.login_users = vec![user.into()];
            assert_eq!(
                etcdctl_profile(&evil).map_err(|e| e.field),
                Err("profile.login_users[0]".to_string()),
                "{user:?}"
            );
        }
        let mut old = p;
        old.login_users.clear();
        old.api3 = true;
        let text = etcdctl_profile(&old)?;
        assert!(text.contains("\nexport ETCDCTL_API=3\nexport ETCDCTL_ENDPOINTS="));
        assert!(!text.contains("case"));
        assert!(validate_etcd_pass("Etcd.Root").is_ok());
        for bad in ["", "a\nb"] {
            let e = validate_etcd_pass(bad).err();
            assert!(e.is_some_and(|e| !e.to_string().contains(bad) || bad.is_empty()));
        }
        Ok(())
    }
}
