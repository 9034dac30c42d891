//! Fills the two files Pigsty's etcd role writes from the inventory, as typed fields that the
//! agent renders (`quorum_proto::render`, byte for byte Pigsty's templates):
//! `/etc/etcd/etcd.conf` and `/etc/profile.d/etcdctl.sh`, plus the endpoint lists the Patroni
//! and vip-manager patchers write.
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

use quorum_proto::pb;
use quorum_proto::render::in_dir;

use crate::model::inventory::{EtcdCluster, EtcdInit, EtcdMember};
use crate::model::pigsty::ProfileFile;

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

pub use quorum_proto::render::MANAGED;

/// A host as it appears in a URL or `host:port` (IPv6 in brackets, which Pigsty's templates
/// do not do but etcd and Patroni need).
pub fn url_host(ip: IpAddr) -> String {
    quorum_proto::render::url_host(&ip.to_string())
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

/// Like [`render_etcd_conf`], but refuses a host that is not a member of `cluster`.
pub fn try_render_etcd_conf(
    cluster: &EtcdCluster,
    member_ip: IpAddr,
    init: EtcdInit,
) -> Result<String, RenderError> {
    match cluster.member(member_ip) {
        Some(m) => Ok(quorum_proto::render::format_etcd_conf(&conf_spec(
            cluster, m, init,
        ))),
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

/// The typed etcd.conf of the member at `member_ip`, as Pigsty's `etcd.conf` template fills
/// it: `initial-cluster` lists every member of `cluster` in Pigsty's order. `init` is
/// `initial-cluster-state`: [`EtcdInit::New`] when creating the cluster,
/// [`EtcdInit::Existing`] for a member joining a running one, **a learner join included**
/// (the learner flag belongs to `member add`, not to the config). Quorum's extension
/// variables add keys only when enabled (see [`crate::model::inventory`]).
///
/// `member_ip` should be a member (render member add with [`EtcdCluster::with_members`]). A
/// host that is not one is rendered as if it had just been added to the group with the next
/// free `etcd_seq`, never as a file missing its own member; use [`try_render_etcd_conf`] to
/// refuse instead.
pub fn etcd_conf_spec(cluster: &EtcdCluster, member_ip: IpAddr, init: EtcdInit) -> pb::EtcdConf {
    if let Some(m) = cluster.member(member_ip) {
        return conf_spec(cluster, m, init);
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
    conf_spec(&cluster.with_members(members), &newcomer, init)
}

/// `/etc/etcd/etcd.conf` for the member at `member_ip`: [`etcd_conf_spec`] rendered by the
/// renderer agents use, byte for byte what the agent writes.
pub fn render_etcd_conf(cluster: &EtcdCluster, member_ip: IpAddr, init: EtcdInit) -> String {
    quorum_proto::render::format_etcd_conf(&etcd_conf_spec(cluster, member_ip, init))
}

fn conf_spec(cluster: &EtcdCluster, m: &EtcdMember, init: EtcdInit) -> pb::EtcdConf {
    let p = &m.params;
    pb::EtcdConf {
        name: m.name.clone(),
        ip: m.ip.to_string(),
        client_port: u32::from(p.port),
        peer_port: u32::from(p.peer_port),
        data_dir: p.data_dir.clone(),
        cluster_token: cluster.name.clone(),
        existing: init == EtcdInit::Existing,
        initial_cluster: sorted(cluster)
            .into_iter()
            .map(|o| pb::EtcdPeer {
                name: o.name.clone(),
                ip: o.ip.to_string(),
                peer_port: u32::from(o.params.peer_port),
            })
            .collect(),
        listen_localhost: p.quorum.listen_localhost,
        election_timeout_ms: p.election_timeout,
        heartbeat_interval_ms: p.heartbeat_interval,
        quota_backend_bytes: cluster.generation().quota_backend_bytes().unwrap_or(0),
        cert_dir: p.quorum.conf_dir.clone(),
        client_cert_auth: p.quorum.client_cert_auth,
        grpc_gateway: p.quorum.grpc_gateway,
        enable_v2: p.quorum.enable_v2,
    }
}

/// The typed etcdctl profile of the host at `host_ip`, as the template of the cluster's
/// Pigsty generation fills it (see [`crate::model::pigsty`]). Up to v3.x: `ETCDCTL_ENDPOINTS`
/// of every member in Pigsty's order, the CA (`/etc/pki/ca.crt`), and Pigsty's infra cert on
/// hosts of group `infra`, the member's server cert elsewhere; `ETCDCTL_API=3` up to v3.4.
/// From v4: the endpoints in inventory order, the etcd CA and server cert, and
/// `ETCDCTL_USER` from the root password file for root and the admin user. A host that is
/// not a member gets the group's settings.
pub fn etcdctl_profile_spec(cluster: &EtcdCluster, host_ip: IpAddr) -> pb::EtcdctlProfile {
    let generation = cluster.generation();
    let file = match generation.profile_file() {
        ProfileFile::Root0644 => pb::ProfileFile::Root0644,
        ProfileFile::Root0755 => pb::ProfileFile::Root0755,
        ProfileFile::Etcd0755 => pb::ProfileFile::Etcd0755,
    } as i32;
    let (p, infra) = match cluster.member(host_ip) {
        Some(m) => (&m.params, m.infra),
        None => (&cluster.params, false),
    };
    let q = &p.quorum;
    if generation.v4() {
        let mut members: Vec<&EtcdMember> = cluster.members.iter().collect();
        members.sort_by_key(|m| m.position);
        let mut login_users = vec!["root".to_string()];
        login_users.extend(p.admin_user.clone());
        let member = cluster.member(host_ip).is_some();
        let in_dir_if = |f: &str| {
            if member {
                in_dir(&q.conf_dir, f)
            } else {
                String::new()
            }
        };
        return pb::EtcdctlProfile {
            endpoints: members
                .into_iter()
                .map(|m| pb::EtcdEndpoint {
                    ip: m.ip.to_string(),
                    port: u32::from(p.port),
                })
                .collect(),
            cacert: in_dir_if("ca.crt"),
            cert: in_dir_if("server.crt"),
            key: in_dir_if("server.key"),
            api3: false,
            login_users,
            pass_file: in_dir(&q.conf_dir, "etcd.pass"),
            file,
        };
    }
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
    pb::EtcdctlProfile {
        endpoints: sorted(cluster)
            .into_iter()
            .map(|m| pb::EtcdEndpoint {
                ip: m.ip.to_string(),
                port: u32::from(m.params.port),
            })
            .collect(),
        cacert: q.etcdctl_cacert.clone(),
        cert,
        key,
        api3: generation.exports_api3(),
        login_users: Vec::new(),
        pass_file: String::new(),
        file,
    }
}

/// `/etc/profile.d/etcdctl.sh` for the host at `host_ip`: [`etcdctl_profile_spec`] rendered
/// by the renderer agents use.
pub fn render_etcdctl_profile(cluster: &EtcdCluster, host_ip: IpAddr) -> String {
    quorum_proto::render::format_etcdctl_profile(&etcdctl_profile_spec(cluster, host_ip))
}
