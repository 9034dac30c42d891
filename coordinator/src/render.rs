//! Renders the two files Pigsty's etcd role writes from the inventory, byte for byte the same
//! for every inventory: `/etc/etcd/etcd.conf` and `/etc/profile.d/etcdctl.sh`, plus the
//! endpoint lists the Patroni and vip-manager patchers write.
//!
//! Every list of members is in Pigsty's order, sorted by IP *as strings*
//! (`10.10.10.100` < `10.10.10.11` < `10.10.10.9`), whatever order the cluster's `members`
//! are in. Each member's own ports are used in its URLs (Pigsty uses the rendering host's
//! values, which is the same whenever ports are uniform, as the inventory check recommends).
//!
//! Renderers take an [`EtcdCluster`], so member add and member remove render with one member
//! more or less than the inventory through [`EtcdCluster::with_members`],
//! [`EtcdCluster::without_member`] and [`EtcdCluster::new_member`].

use std::net::IpAddr;

use crate::inventory::{EtcdCluster, EtcdInit, EtcdMember};

/// Why a file could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// The host is not a member of the cluster.
    #[error("{ip} is not a member of etcd cluster `{cluster}` (members: {members}); add it to group `{group}` in pigsty.yml as `{ip}: {{ etcd_seq: <n> }}`")]
    NotAMember {
        /// The host asked for.
        ip: IpAddr,
        /// The cluster.
        cluster: String,
        /// The cluster's inventory group.
        group: String,
        /// The members' IPs, comma-separated.
        members: String,
    },
}

/// `quota-backend-bytes` of Pigsty v3.x (16 GiB).
pub const QUOTA_BACKEND_BYTES: u64 = 17_179_869_184;

/// The first line of every rendered file (Pigsty's is `# {{ ansible_managed }}`).
pub const MANAGED: &str =
    "# managed by Quorum from the Pigsty inventory: local edits are overwritten";

/// A host as it appears in a URL or `host:port` (IPv6 in brackets, which Pigsty's templates
/// do not do but etcd and Patroni need).
pub fn url_host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// The members in Pigsty's order.
fn sorted(cluster: &EtcdCluster) -> Vec<&EtcdMember> {
    let mut members: Vec<&EtcdMember> = cluster.members.iter().collect();
    members.sort_by_cached_key(|m| m.ip.to_string());
    members
}

/// `https://<ip>:<peer_port>`.
pub fn peer_url(member: &EtcdMember) -> String {
    format!(
        "https://{}:{}",
        url_host(member.ip),
        member.params.peer_port
    )
}

/// `https://<ip>:<port>`.
pub fn client_url(member: &EtcdMember) -> String {
    format!("https://{}:{}", url_host(member.ip), member.params.port)
}

/// `initial-cluster`: `<name>=https://<ip>:<peer_port>` for every member, comma-joined.
pub fn initial_cluster(cluster: &EtcdCluster) -> String {
    sorted(cluster)
        .into_iter()
        .map(|m| format!("{}={}", m.name, peer_url(m)))
        .collect::<Vec<_>>()
        .join(",")
}

/// Client URLs of every member (`https://<ip>:<port>`): `ETCDCTL_ENDPOINTS`, and what the
/// coordinator's own etcd client dials.
pub fn client_endpoints(cluster: &EtcdCluster) -> Vec<String> {
    sorted(cluster).into_iter().map(client_url).collect()
}

/// vip-manager's `dcs-endpoints`: the client URLs of every member, as Pigsty renders them.
pub fn vip_endpoints(cluster: &EtcdCluster) -> Vec<String> {
    client_endpoints(cluster)
}

/// Patroni's `etcd3.hosts`: `<ip>:<port>` of every member, no scheme.
pub fn patroni_dcs_hosts(cluster: &EtcdCluster) -> Vec<String> {
    sorted(cluster)
        .into_iter()
        .map(|m| format!("{}:{}", url_host(m.ip), m.params.port))
        .collect()
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

/// A shell word for a path: bare like Pigsty's template when safe, single-quoted otherwise.
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+@%=:,".contains(c))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn in_dir(dir: &str, file: &str) -> String {
    format!("{}/{file}", dir.trim_end_matches('/'))
}

/// Like [`render_etcd_conf`], but refuses a host that is not a member of `cluster`.
pub fn try_render_etcd_conf(
    cluster: &EtcdCluster,
    member_ip: IpAddr,
    init: EtcdInit,
) -> Result<String, RenderError> {
    match cluster.member(member_ip) {
        Some(m) => Ok(etcd_conf(cluster, m, init)),
        None => Err(RenderError::NotAMember {
            ip: member_ip,
            cluster: cluster.name.clone(),
            group: cluster.group.clone(),
            members: sorted(cluster)
                .iter()
                .map(|m| m.ip.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// `/etc/etcd/etcd.conf` for the member at `member_ip`, as Pigsty's `etcd.conf` template
/// renders it: the managed comment, then the keys in the template's order, `initial-cluster`
/// listing every member of `cluster`. `init` is `initial-cluster-state`: [`EtcdInit::New`]
/// when creating the cluster, [`EtcdInit::Existing`] for a member joining a running one,
/// **a learner join included** (the learner flag belongs to `member add`, not to the config).
/// Quorum's extension variables add keys only when enabled (see [`crate::inventory`]).
///
/// `member_ip` should be a member (render member add with [`EtcdCluster::with_members`]). A
/// host that is not one is rendered as if it had just been added to the group with the next
/// free `etcd_seq`, never as a file missing its own member; use [`try_render_etcd_conf`] to
/// refuse instead.
pub fn render_etcd_conf(cluster: &EtcdCluster, member_ip: IpAddr, init: EtcdInit) -> String {
    if let Some(m) = cluster.member(member_ip) {
        return etcd_conf(cluster, m, init);
    }
    let seq = cluster
        .members
        .iter()
        .map(|m| m.seq.saturating_add(1))
        .max()
        .unwrap_or(1);
    let newcomer = cluster.new_member(member_ip, seq);
    let mut members = cluster.members.clone();
    members.push(newcomer.clone());
    etcd_conf(&cluster.with_members(members), &newcomer, init)
}

fn etcd_conf(cluster: &EtcdCluster, m: &EtcdMember, init: EtcdInit) -> String {
    let p = &m.params;
    let host = url_host(m.ip);
    let listen_clients = if p.quorum.listen_localhost {
        format!("{},https://127.0.0.1:{}", client_url(m), p.port)
    } else {
        client_url(m)
    };
    let tls = {
        let dir = &p.quorum.conf_dir;
        let mut block = format!(
            "  cert-file: {}\n  key-file: {}\n  trusted-ca-file: {}\n",
            yaml_path(&in_dir(dir, "server.crt")),
            yaml_path(&in_dir(dir, "server.key")),
            yaml_path(&in_dir(dir, "ca.crt")),
        );
        if p.quorum.client_cert_auth {
            block.push_str("  client-cert-auth: true\n");
        }
        block
    };
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(MANAGED.to_string());
    line(format!("name: {}", m.name));
    line(format!("data-dir: {}", yaml_path(&p.data_dir)));
    line(format!("initial-cluster-token: \"{}\"", cluster.name));
    line(format!("initial-cluster-state: \"{}\"", init.as_str()));
    line(format!("initial-cluster: \"{}\"", initial_cluster(cluster)));
    line(format!(
        "initial-advertise-peer-urls: \"https://{host}:{}\"",
        p.peer_port
    ));
    line(format!(
        "listen-peer-urls: \"https://{host}:{}\"",
        p.peer_port
    ));
    line(format!("listen-client-urls: \"{listen_clients}\""));
    line(format!("advertise-client-urls: \"{}\"", client_url(m)));
    line(format!("election-timeout: {}", p.election_timeout));
    line(format!("heartbeat-interval: {}", p.heartbeat_interval));
    line(format!("quota-backend-bytes: {QUOTA_BACKEND_BYTES}"));
    line("auto-compaction-mode: periodic".into());
    line("auto-compaction-retention: \"24h\"".into());
    line(format!("client-transport-security:\n{}", tls.trim_end()));
    line(format!("peer-transport-security:\n{}", tls.trim_end()));
    if p.quorum.grpc_gateway {
        line("enable-grpc-gateway: true".into());
    }
    if p.quorum.enable_v2 {
        line("enable-v2: true".into());
    }
    out
}

/// `/etc/profile.d/etcdctl.sh` for the host at `host_ip`, as Pigsty's template renders it:
/// aliases, `ETCDCTL_ENDPOINTS` of every member, and the CA, cert and key (Pigsty's infra
/// cert on hosts of group `infra`, the member's server cert elsewhere). A host that is not a
/// member gets the group's settings and the server cert.
pub fn render_etcdctl_profile(cluster: &EtcdCluster, host_ip: IpAddr) -> String {
    let (q, infra) = match cluster.member(host_ip) {
        Some(m) => (&m.params.quorum, m.infra),
        None => (&cluster.params.quorum, false),
    };
    let (cert, key) = if infra {
        (
            "/etc/pki/infra.crt".to_string(),
            "/etc/pki/infra.key".to_string(),
        )
    } else {
        (
            in_dir(&q.conf_dir, "server.crt"),
            in_dir(&q.conf_dir, "server.key"),
        )
    };
    format!(
        "{MANAGED}\nalias e=\"etcdctl\"\nalias em=\"etcdctl member\"\nexport ETCDCTL_ENDPOINTS=\"{}\"\nexport ETCDCTL_CACERT={}\nexport ETCDCTL_CERT={}\nexport ETCDCTL_KEY={}\n",
        client_endpoints(cluster).join(","),
        shell_word(&q.etcdctl_cacert),
        shell_word(&cert),
        shell_word(&key),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_only_when_needed() {
        assert_eq!(yaml_path("/data/etcd"), "/data/etcd");
        assert_eq!(yaml_path("/data/my etcd"), "\"/data/my etcd\"");
        assert_eq!(yaml_path("/a\"b\\c"), "\"/a\\\"b\\\\c\"");
        assert_eq!(shell_word("/etc/pki/ca.crt"), "/etc/pki/ca.crt");
        assert_eq!(shell_word("/tmp/it's here"), "'/tmp/it'\\''s here'");
        assert_eq!(in_dir("/etc/etcd/", "ca.crt"), "/etc/etcd/ca.crt");
    }
}
