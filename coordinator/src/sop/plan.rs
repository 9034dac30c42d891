//! The planner: an SOP, the cluster as the inventory describes it, the files Pigsty's
//! templates render for it, the agents' facts and etcd's live state in; an ordered list of
//! steps out. Pure: no I/O, so every plan is tested with plain values. A plan is data: the
//! CLI prints it, the store keeps it, the runner only executes it.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

use quorum_proto::pb;
use serde::{Deserialize, Serialize};

use crate::clients::etcd::MemberInfo;
use crate::clients::patroni::PgRef;
use crate::model::inventory::{EtcdCluster, EtcdInit};
use crate::sop::agreement::{Disagreement, Roster};

pub use crate::sop::agreement::MemberSpec;

/// Builds the planner's view of `cluster`: members and the files rendered for each.
pub fn cluster_spec(cluster: &EtcdCluster, init: EtcdInit) -> ClusterSpec {
    let mut spec = ClusterSpec {
        name: cluster.name.clone(),
        members: Vec::new(),
        safeguard: cluster.params.safeguard,
        clean: cluster.params.clean,
        etcd_conf: HashMap::new(),
        profile: HashMap::new(),
        group: cluster.group.clone(),
        client_port: cluster.params.port,
        peer_port: cluster.params.peer_port,
        rbac: cluster.generation().v4(),
        pass_sha256: cluster.root_auth().map(|(_, p)| sha256_hex(p.expose())),
        pg_users: Vec::new(),
    };
    for m in &cluster.members {
        spec.members.push(MemberSpec {
            ip: m.ip,
            name: m.name.clone(),
            client_url: crate::model::render::client_url(m),
            peer_url: crate::model::render::peer_url(m),
        });
        spec.etcd_conf.insert(
            m.ip,
            crate::model::render::etcd_conf_spec(cluster, m.ip, init),
        );
        spec.profile.insert(
            m.ip,
            crate::model::render::etcdctl_profile_spec(cluster, m.ip),
        );
    }
    spec
}

/// One etcd cluster as planned, with the files rendered for each member.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterSpec {
    /// Cluster name.
    pub name: String,
    /// Members, in Pigsty's order (IPs sorted as strings).
    pub members: Vec<MemberSpec>,
    /// `etcd_safeguard`.
    pub safeguard: bool,
    /// `etcd_clean`.
    pub clean: bool,
    /// Typed `etcd.conf` per member (for a new cluster), rendered by the agent.
    pub etcd_conf: HashMap<IpAddr, pb::EtcdConf>,
    /// Typed etcdctl profile per host, rendered by the agent.
    pub profile: HashMap<IpAddr, pb::EtcdctlProfile>,
    /// The inventory group that defines the cluster (where a member's line goes).
    #[serde(default)]
    pub group: String,
    /// The group's `etcd_port`.
    #[serde(default)]
    pub client_port: u16,
    /// The group's `etcd_peer_port`.
    #[serde(default)]
    pub peer_port: u16,
    /// Pigsty v4 and later: etcd runs RBAC, each member has `/etc/etcd/etcd.pass`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rbac: bool,
    /// sha256 of `etcd_root_password`, to tell whether etcd.pass changes (planning only:
    /// never serialized).
    #[serde(skip)]
    pub pass_sha256: Option<String>,
    /// The etcd users of the PostgreSQL clusters that use this etcd cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pg_users: Vec<String>,
}

impl ClusterSpec {
    /// The inventory's membership, to compare with etcd's member list.
    pub fn roster(&self) -> Roster {
        Roster {
            cluster: self.name.clone(),
            group: if self.group.is_empty() {
                self.name.clone()
            } else {
                self.group.clone()
            },
            client_port: self.client_port,
            peer_port: self.peer_port,
            members: self.members.clone(),
        }
    }

    /// The member on `ip`.
    pub fn member(&self, ip: IpAddr) -> Option<&MemberSpec> {
        self.members.iter().find(|m| m.ip == ip)
    }

    /// Client URLs of every member.
    pub fn client_urls(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }
}

/// A managed service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceName {
    /// etcd.
    Etcd,
    /// Patroni.
    Patroni,
    /// vip-manager.
    VipManager,
}

impl ServiceName {
    /// The wire value.
    pub fn pb(self) -> pb::Service {
        match self {
            ServiceName::Etcd => pb::Service::Etcd,
            ServiceName::Patroni => pb::Service::Patroni,
            ServiceName::VipManager => pb::Service::VipManager,
        }
    }

    /// From the wire value; `None` for an unknown one.
    pub fn from_pb(v: i32) -> Option<Self> {
        match pb::Service::try_from(v).ok()? {
            pb::Service::Etcd => Some(ServiceName::Etcd),
            pb::Service::Patroni => Some(ServiceName::Patroni),
            pb::Service::VipManager => Some(ServiceName::VipManager),
            pb::Service::Unspecified => None,
        }
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ServiceName::Etcd => "etcd",
            ServiceName::Patroni => "patroni",
            ServiceName::VipManager => "vip-manager",
        })
    }
}

/// A service action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActionName {
    /// Start.
    Start,
    /// Stop.
    Stop,
    /// Restart.
    Restart,
    /// Reload.
    Reload,
    /// Status.
    Status,
}

impl ActionName {
    /// The wire value.
    pub fn pb(self) -> pb::Action {
        match self {
            ActionName::Start => pb::Action::Start,
            ActionName::Stop => pb::Action::Stop,
            ActionName::Restart => pb::Action::Restart,
            ActionName::Reload => pb::Action::Reload,
            ActionName::Status => pb::Action::Status,
        }
    }

    /// From the wire value; `None` for an unknown one.
    pub fn from_pb(v: i32) -> Option<Self> {
        match pb::Action::try_from(v).ok()? {
            pb::Action::Start => Some(ActionName::Start),
            pb::Action::Stop => Some(ActionName::Stop),
            pb::Action::Restart => Some(ActionName::Restart),
            pb::Action::Reload => Some(ActionName::Reload),
            pb::Action::Status => Some(ActionName::Status),
            pb::Action::Unspecified => None,
        }
    }
}

impl fmt::Display for ActionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ActionName::Start => "start",
            ActionName::Stop => "stop",
            ActionName::Restart => "restart",
            ActionName::Reload => "reload",
            ActionName::Status => "status",
        })
    }
}

/// What a step does. Named after what it does for the operator; the same words appear in the
/// CLI output, the store and the tests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StepKind {
    /// Refuse if an etcd instance exists on one of `hosts` while `etcd_safeguard` is set or
    /// `etcd_clean` is off (unless `ignore_safeguard`, a purge); re-checked live at run time.
    /// Before a removal, `etcd_safeguard` refuses whether or not etcd runs (Pigsty v4).
    ///
    /// Runs: coordinator, from the agents' last facts.
    SafeguardCheck {
        /// Hosts to check.
        hosts: Vec<IpAddr>,
        /// `etcd_safeguard`.
        safeguard: bool,
        /// `etcd_clean`.
        clean: bool,
        /// A purge ignores both.
        ignore_safeguard: bool,
        /// The check guards a removal (cluster remove), not a create.
        #[serde(default)]
        removal: bool,
    },
    /// Place ca.crt, server.crt, server.key for `member`.
    ///
    /// Runs: agent task `WriteEtcdCerts`.
    WriteEtcdCerts {
        /// Host.
        host: IpAddr,
        /// Member name (its certificate's CN).
        member: String,
    },
    /// Write etcd.conf, which the agent renders from these typed fields.
    ///
    /// Runs: agent task `WriteEtcdConf`.
    WriteEtcdConf {
        /// Host.
        host: IpAddr,
        /// The file's fields; `None` in runs planned by Quorum 0.2, which sent text instead
        /// (such a step is refused: plan the run again).
        #[serde(default)]
        conf: Option<pb::EtcdConf>,
        /// A config reload writes it without a restart: only `initial-cluster` /
        /// `initial-cluster-state` change, which a running member ignores.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        bootstrap_only: bool,
    },
    /// Write the etcdctl profile, which the agent renders from these typed fields.
    ///
    /// Runs: agent task `WriteEtcdctlProfile`.
    WriteEtcdctlProfile {
        /// Host.
        host: IpAddr,
        /// The file's fields; `None` in runs planned by Quorum 0.2.
        #[serde(default)]
        profile: Option<pb::EtcdctlProfile>,
    },
    /// Write etcd's RBAC root password file (Pigsty v4's `/etc/etcd/etcd.pass`). The password
    /// is read from the inventory when the step runs, never planned or stored.
    ///
    /// Runs: agent task `WriteEtcdPass`.
    WriteEtcdPass {
        /// Host.
        host: IpAddr,
    },
    /// Turn etcd RBAC on as Pigsty v4's `etcd_auth` does: user root with
    /// `etcd_root_password` and the root role, then `auth enable`; nothing when it is on.
    ///
    /// Runs: coordinator, through etcd's API.
    EnableAuth,
    /// Create or repair each PostgreSQL cluster's etcd role (read-write on
    /// `<pg_namespace>/<user>/`) and user (`pg_etcd_password`), as Pigsty v4's `pg_etcd`
    /// does, so that Patroni logs in (again, after a purge and re-create). Passwords are read
    /// from the inventory when the step runs.
    ///
    /// Runs: coordinator, through etcd's API.
    EnsurePgEtcdUsers {
        /// The PostgreSQL clusters' etcd users.
        users: Vec<String>,
    },
    /// Start etcd on all `hosts` at once (a new cluster needs its members up together).
    ///
    /// Runs: agent task `ServiceAction` (etcd start), on each host at once.
    StartEtcd {
        /// Hosts.
        hosts: Vec<IpAddr>,
    },
    /// Stop etcd.
    ///
    /// Runs: agent task `ServiceAction` (etcd stop), after the quorum guard again.
    StopEtcd {
        /// Host.
        host: IpAddr,
    },
    /// Restart etcd; skipped unless a step in `if_changed` changed something, or `force`.
    ///
    /// Runs: agent task `ServiceAction` (etcd restart), after the quorum guard again.
    RestartEtcd {
        /// Host.
        host: IpAddr,
        /// Indexes of earlier write steps on this host.
        if_changed: Vec<usize>,
        /// Restart even if nothing changed.
        force: bool,
    },
    /// Remove the contents of the etcd data dir (a purge stops etcd first).
    ///
    /// Runs: agent task `WipeEtcdData`.
    WipeEtcdData {
        /// Host.
        host: IpAddr,
        /// Purge.
        purge: bool,
        /// The member (hex) whose data this is, when known at plan time; the agent refuses
        /// the wipe if the data dir holds another. `None` in older runs: not checked.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        member_id: Option<String>,
        /// The cluster (hex) of that data, when known at plan time (else asked at run time).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cluster_id: Option<String>,
    },
    /// Take an etcd snapshot of the cluster, verify it and keep it in the coordinator's state
    /// dir (invariant 8); refused when none can be taken. Planned before every destructive
    /// step unless the operator waived it (`--no-snapshot`).
    ///
    /// Runs: coordinator, through etcd's snapshot API.
    SnapshotSave {
        /// The cluster.
        cluster: String,
    },
    /// Refuse unless every other voting member is healthy.
    ///
    /// Runs: coordinator, through etcd's API.
    QuorumGuard {
        /// The member about to go down.
        host: IpAddr,
    },
    /// Wait until this member and the whole cluster are healthy (bounded).
    ///
    /// Runs: coordinator, through etcd's API.
    HealthGate {
        /// The member just restarted.
        host: IpAddr,
    },
    /// Wait until every member is healthy (bounded).
    ///
    /// Runs: coordinator, through etcd's API.
    ClusterHealthGate,
    /// Refuse unless the cluster is healthy and has no other learner (re-checked live).
    ///
    /// Runs: coordinator, through etcd's API.
    MemberAddCheck {
        /// The joining host.
        host: IpAddr,
        /// Its peer URL.
        peer_url: String,
    },
    /// `member add --learner` (a learner with this peer URL already there counts as done).
    ///
    /// Runs: coordinator, through etcd's API.
    AddLearner {
        /// The joining host.
        host: IpAddr,
        /// Its peer URL.
        peer_url: String,
    },
    /// `member promote`, retried while etcd says the learner is not in sync yet (bounded).
    ///
    /// Runs: coordinator, through etcd's API.
    PromoteLearner {
        /// The joining host.
        host: IpAddr,
        /// Its peer URL.
        peer_url: String,
    },
    /// Refuse unless every other voting member is healthy (re-checked live).
    ///
    /// Runs: coordinator, through etcd's API.
    MemberRemoveCheck {
        /// The leaving host.
        host: IpAddr,
        /// Its peer URL.
        peer_url: String,
    },
    /// If the member on `host` leads when the step runs (whoever led at planning), hand
    /// leadership to a healthy, caught-up voter first: before a member leaves, or before its
    /// restart in a roll, where the members restarted before it are preferred.
    ///
    /// Runs: coordinator, through etcd's API.
    MoveLeaderAway {
        /// The leaving or restarting host.
        host: IpAddr,
        /// Its peer URL.
        peer_url: String,
        /// Hosts restarted earlier in the same roll, preferred as the new leader, in order.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        prefer: Vec<IpAddr>,
        /// In a roll: the restart it precedes is skipped unless a step here changed something
        /// (or `force`), and so is this step.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        if_changed: Vec<usize>,
        /// The restart it precedes happens whatever changed.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        force: bool,
    },
    /// `member remove` by the id read live (already gone counts as done).
    ///
    /// Runs: coordinator, through etcd's API.
    RemoveMember {
        /// The leaving host.
        host: IpAddr,
        /// Its peer URL.
        peer_url: String,
    },
    /// Take etcd off a host whose data was wiped: remove etcd.conf, the certificates and the
    /// profile, disable the service (no reboot can bootstrap a ghost cluster).
    ///
    /// Runs: agent task `RetireEtcd`.
    RetireEtcd {
        /// Host.
        host: IpAddr,
    },
    /// Wipe the data of a member that has left; refused while etcd still lists it.
    ///
    /// Runs: agent task `WipeEtcdData`, once etcd no longer lists the member.
    WipeRemovedMember {
        /// The host.
        host: IpAddr,
        /// Its peer URL.
        peer_url: String,
        /// Its member id (hex), read from the live member list at plan time; the agent
        /// refuses the wipe if the data dir holds another member. `None` in older runs, or
        /// when the member had already left at plan time: not checked.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        member_id: Option<String>,
    },
    /// The removed member's host is unreachable (no connected agent): record its stop, wipe
    /// and retirement as a run of their own that starts when its agent connects again, and
    /// that no other SOP may pass (the host cannot rejoin before it ran). Executed by the
    /// coordinator (the run store), not an agent.
    ///
    /// Runs: coordinator, in its run store.
    DeferCleanup {
        /// The unreachable host.
        host: IpAddr,
        /// Its peer URL (the wipe is refused while etcd lists it).
        peer_url: String,
        /// Its member id (hex) from the live member list at plan time, for the wipe's check.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        member_id: Option<String>,
    },
    /// Replace only the etcd hosts in the host's patroni.yml, then reload (or restart) Patroni.
    ///
    /// Runs: agent task `SetPatroniDcsHosts`, after the Patroni guard again when it restarts.
    SetPatroniHosts {
        /// Host.
        host: IpAddr,
        /// `ip:port` of every etcd member.
        hosts: Vec<String>,
        /// Restart Patroni (it applies a new host list only then) instead of reloading it.
        restart: bool,
    },
    /// Before a Patroni restart: the PostgreSQL cluster has a running leader, every instance
    /// runs, and this host does not lead (re-checked live).
    ///
    /// Runs: coordinator, through Patroni's REST API.
    PatroniGuard {
        /// The host about to restart Patroni.
        host: IpAddr,
        /// The PostgreSQL cluster.
        pg: PgRef,
    },
    /// Wait until Patroni on the host runs and the cluster has a leader (bounded).
    ///
    /// Runs: coordinator, through Patroni's REST API.
    PatroniGate {
        /// Host.
        host: IpAddr,
        /// The PostgreSQL cluster.
        pg: PgRef,
    },
    /// Hand leadership from the host to a healthy replica: a switchover, never a failover
    /// (already done when another instance leads).
    ///
    /// Runs: coordinator, through Patroni's REST API.
    Switchover {
        /// The leader to step down.
        host: IpAddr,
        /// The PostgreSQL cluster.
        pg: PgRef,
    },
    /// Replace only the DCS endpoints in the host's vip-manager config, then restart it
    /// (unless `defer_restart`: on the primary during a membership refresh).
    ///
    /// Runs: agent task `SetVipEndpoints`.
    SetVipEndpoints {
        /// Host.
        host: IpAddr,
        /// `https://ip:port` of every etcd member.
        endpoints: Vec<String>,
        /// Write only; vip-manager keeps running (it would release the VIP to restart).
        #[serde(default)]
        defer_restart: bool,
    },
    /// Wait until the VIP is on exactly one host, the primary's (bounded).
    ///
    /// Runs: agent task `CollectFacts` on each VIP host, judged by the coordinator.
    VipGate {
        /// The PostgreSQL cluster.
        pg: PgRef,
    },
    /// A service action on one or more hosts at once (Patroni, vip-manager, or etcd status).
    ///
    /// Runs: agent task `ServiceAction`, on each host at once.
    ServiceAction {
        /// Hosts (more than one only when forks > 1).
        hosts: Vec<IpAddr>,
        /// Service.
        service: ServiceName,
        /// Action.
        action: ActionName,
    },
}

impl StepKind {
    /// Whether the step can lose etcd data or quorum: a stop, restart or wipe of etcd, or a
    /// member remove (what invariant 8 puts a snapshot before).
    pub fn destroys_etcd_state(&self) -> bool {
        matches!(
            self,
            StepKind::StopEtcd { .. }
                | StepKind::RestartEtcd { .. }
                | StepKind::WipeEtcdData { .. }
                | StepKind::RemoveMember { .. }
                | StepKind::WipeRemovedMember { .. }
        )
    }

    /// Checks that belong right before the act they guard.
    fn checks_before_act(&self) -> bool {
        matches!(
            self,
            StepKind::QuorumGuard { .. }
                | StepKind::MemberRemoveCheck { .. }
                | StepKind::MoveLeaderAway { .. }
                | StepKind::WriteEtcdConf { .. }
                | StepKind::WriteEtcdctlProfile { .. }
        )
    }

    /// Who carries the step out: the table the `Runs:` line of each variant states, and what
    /// the runner's `exec_step` dispatches on (an agent task goes to every host of
    /// [`Self::agent_hosts`] with a task id fixed before dispatch).
    pub fn executor(&self) -> Executor {
        use Executor::{Agent, Coordinator};
        match self {
            StepKind::WriteEtcdCerts { .. } => Agent("WriteEtcdCerts"),
            StepKind::WriteEtcdConf { .. } => Agent("WriteEtcdConf"),
            StepKind::WriteEtcdctlProfile { .. } => Agent("WriteEtcdctlProfile"),
            StepKind::WriteEtcdPass { .. } => Agent("WriteEtcdPass"),
            StepKind::EnableAuth | StepKind::EnsurePgEtcdUsers { .. } => Coordinator("etcd's API"),
            StepKind::StartEtcd { .. }
            | StepKind::StopEtcd { .. }
            | StepKind::RestartEtcd { .. }
            | StepKind::ServiceAction { .. } => Agent("ServiceAction"),
            StepKind::WipeEtcdData { .. } | StepKind::WipeRemovedMember { .. } => {
                Agent("WipeEtcdData")
            }
            StepKind::RetireEtcd { .. } => Agent("RetireEtcd"),
            StepKind::SetPatroniHosts { .. } => Agent("SetPatroniDcsHosts"),
            StepKind::SetVipEndpoints { .. } => Agent("SetVipEndpoints"),
            StepKind::VipGate { .. } => Agent("CollectFacts"),
            StepKind::SafeguardCheck { .. } => Coordinator("the agents' last facts"),
            StepKind::SnapshotSave { .. }
            | StepKind::QuorumGuard { .. }
            | StepKind::HealthGate { .. }
            | StepKind::ClusterHealthGate
            | StepKind::MemberAddCheck { .. }
            | StepKind::AddLearner { .. }
            | StepKind::PromoteLearner { .. }
            | StepKind::MemberRemoveCheck { .. }
            | StepKind::MoveLeaderAway { .. }
            | StepKind::RemoveMember { .. } => Coordinator("etcd's API"),
            StepKind::DeferCleanup { .. } => Coordinator("the run store"),
            StepKind::PatroniGuard { .. }
            | StepKind::PatroniGate { .. }
            | StepKind::Switchover { .. } => Coordinator("Patroni's REST API"),
        }
    }

    /// The hosts whose agents get a task from this step, in order (none for the
    /// coordinator's own actions).
    pub fn agent_hosts(&self) -> Vec<IpAddr> {
        if matches!(self.executor(), Executor::Coordinator(_)) {
            return Vec::new();
        }
        match self {
            StepKind::StartEtcd { hosts } | StepKind::ServiceAction { hosts, .. } => hosts.clone(),
            StepKind::VipGate { pg } => pg.members.iter().filter(|m| m.vip).map(|m| m.ip).collect(),
            other => other.host().into_iter().collect(),
        }
    }

    /// The host a step acts on, if one.
    pub fn host(&self) -> Option<IpAddr> {
        match self {
            StepKind::WriteEtcdCerts { host, .. }
            | StepKind::WriteEtcdConf { host, .. }
            | StepKind::WriteEtcdctlProfile { host, .. }
            | StepKind::WriteEtcdPass { host }
            | StepKind::StopEtcd { host }
            | StepKind::RestartEtcd { host, .. }
            | StepKind::WipeEtcdData { host, .. }
            | StepKind::RetireEtcd { host }
            | StepKind::QuorumGuard { host }
            | StepKind::HealthGate { host }
            | StepKind::MemberAddCheck { host, .. }
            | StepKind::AddLearner { host, .. }
            | StepKind::PromoteLearner { host, .. }
            | StepKind::MemberRemoveCheck { host, .. }
            | StepKind::MoveLeaderAway { host, .. }
            | StepKind::RemoveMember { host, .. }
            | StepKind::WipeRemovedMember { host, .. }
            | StepKind::DeferCleanup { host, .. }
            | StepKind::SetPatroniHosts { host, .. }
            | StepKind::PatroniGuard { host, .. }
            | StepKind::PatroniGate { host, .. }
            | StepKind::Switchover { host, .. }
            | StepKind::SetVipEndpoints { host, .. } => Some(*host),
            StepKind::StartEtcd { hosts } | StepKind::ServiceAction { hosts, .. }
                if hosts.len() == 1 =>
            {
                hosts.first().copied()
            }
            _ => None,
        }
    }

    /// The hosts shown for a step.
    pub fn hosts_label(&self) -> String {
        match self {
            StepKind::StartEtcd { hosts }
            | StepKind::ServiceAction { hosts, .. }
            | StepKind::SafeguardCheck { hosts, .. } => hosts
                .iter()
                .map(|h| h.to_string())
                .collect::<Vec<_>>()
                .join(","),
            other => other.host().map(|h| h.to_string()).unwrap_or_default(),
        }
    }

    /// The step's name, as the operator reads it.
    pub fn name(&self) -> &'static str {
        match self {
            StepKind::SafeguardCheck { .. } => "SafeguardCheck",
            StepKind::WriteEtcdCerts { .. } => "WriteEtcdCerts",
            StepKind::WriteEtcdConf { .. } => "WriteEtcdConf",
            StepKind::WriteEtcdctlProfile { .. } => "WriteEtcdctlProfile",
            StepKind::WriteEtcdPass { .. } => "WriteEtcdPass",
            StepKind::EnableAuth => "EnableAuth",
            StepKind::EnsurePgEtcdUsers { .. } => "EnsurePgEtcdUsers",
            StepKind::StartEtcd { .. } => "StartEtcd",
            StepKind::StopEtcd { .. } => "StopEtcd",
            StepKind::RestartEtcd { .. } => "RestartEtcd",
            StepKind::WipeEtcdData { .. } => "WipeEtcdData",
            StepKind::SnapshotSave { .. } => "SnapshotSave",
            StepKind::RetireEtcd { .. } => "RetireEtcd",
            StepKind::QuorumGuard { .. } => "QuorumGuard",
            StepKind::HealthGate { .. } => "HealthGate",
            StepKind::ClusterHealthGate => "ClusterHealthGate",
            StepKind::MemberAddCheck { .. } => "MemberAddCheck",
            StepKind::AddLearner { .. } => "AddLearner",
            StepKind::PromoteLearner { .. } => "PromoteLearner",
            StepKind::MemberRemoveCheck { .. } => "MemberRemoveCheck",
            StepKind::MoveLeaderAway { .. } => "MoveLeaderAway",
            StepKind::RemoveMember { .. } => "RemoveMember",
            StepKind::WipeRemovedMember { .. } => "WipeRemovedMember",
            StepKind::DeferCleanup { .. } => "DeferCleanup",
            StepKind::SetPatroniHosts { .. } => "SetPatroniHosts",
            StepKind::PatroniGuard { .. } => "PatroniGuard",
            StepKind::PatroniGate { .. } => "PatroniGate",
            StepKind::Switchover { .. } => "Switchover",
            StepKind::SetVipEndpoints { .. } => "SetVipEndpoints",
            StepKind::VipGate { .. } => "VipGate",
            StepKind::ServiceAction { .. } => "ServiceAction",
        }
    }

    /// A one-line description for the operator.
    pub fn describe(&self) -> String {
        match self {
            StepKind::SafeguardCheck {
                ignore_safeguard,
                removal,
                ..
            } => {
                if *ignore_safeguard {
                    "check no host's local safeguard forbids the purge".into()
                } else if *removal {
                    "check etcd_safeguard is off and etcd_clean allows removing instances".into()
                } else {
                    "check etcd_safeguard / etcd_clean allow touching existing instances".into()
                }
            }
            StepKind::WriteEtcdCerts { member, .. } => {
                format!("write ca.crt, server.crt, server.key of {member}")
            }
            StepKind::WriteEtcdConf { bootstrap_only, .. } => {
                if *bootstrap_only {
                    "write etcd.conf (rendered by the agent); no restart: only initial-cluster changes, which a running member ignores".into()
                } else {
                    "write etcd.conf (rendered by the agent)".into()
                }
            }
            StepKind::WriteEtcdctlProfile { .. } => {
                "write the etcdctl profile (rendered by the agent)".into()
            }
            StepKind::WriteEtcdPass { .. } => {
                "write /etc/etcd/etcd.pass (etcd_root_password, read from the inventory now)".into()
            }
            StepKind::EnableAuth => {
                "etcd RBAC: user root with etcd_root_password and the root role, auth enable (nothing if on)".into()
            }
            StepKind::EnsurePgEtcdUsers { users } => format!(
                "etcd RBAC: role and user for each PostgreSQL cluster ({}), read-write on its prefix",
                users.join(", ")
            ),
            StepKind::StartEtcd { hosts } => match hosts.len() {
                1 => "start etcd".into(),
                n => format!("start etcd on {n} hosts together"),
            },
            StepKind::StopEtcd { .. } => "stop etcd".into(),
            StepKind::RestartEtcd { force, .. } => {
                if *force {
                    "restart etcd".into()
                } else {
                    "restart etcd if its config changed".into()
                }
            }
            StepKind::WipeEtcdData {
                purge, member_id, ..
            } => {
                let what = if *purge {
                    "purge: stop etcd and wipe its data dir"
                } else {
                    "wipe the etcd data dir"
                };
                match member_id {
                    Some(id) => format!("{what} (only if it holds member {id})"),
                    None => what.into(),
                }
            }
            StepKind::RetireEtcd { .. } => {
                "remove etcd.conf, the certificates and the etcdctl profile; disable etcd".into()
            }
            StepKind::SnapshotSave { cluster } => {
                format!("snapshot etcd cluster {cluster}, verify it and keep it on the coordinator")
            }
            StepKind::QuorumGuard { .. } => {
                "quorum guard: every other voting member healthy".into()
            }
            StepKind::HealthGate { .. } => "gate: this member and the cluster healthy".into(),
            StepKind::ClusterHealthGate => "gate: every member healthy".into(),
            StepKind::MemberAddCheck { .. } => "check: cluster healthy, no other learner".into(),
            StepKind::AddLearner { peer_url, .. } => {
                format!("member add --learner --peer-urls={peer_url}")
            }
            StepKind::PromoteLearner { .. } => "member promote, once the learner is in sync".into(),
            StepKind::MemberRemoveCheck { .. } => "check: every other voting member healthy".into(),
            StepKind::MoveLeaderAway { prefer, .. } => {
                if prefer.is_empty() {
                    "move leadership away if this member leads".into()
                } else {
                    format!(
                        "if this member leads now, hand leadership to a caught-up member restarted before it ({})",
                        prefer
                            .iter()
                            .map(|h| h.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            }
            StepKind::RemoveMember { .. } => "member remove (id read live)".into(),
            StepKind::WipeRemovedMember { member_id, .. } => match member_id {
                Some(id) => {
                    format!("wipe the removed member's data dir (only if it holds member {id})")
                }
                None => "wipe the removed member's data dir".into(),
            },
            StepKind::DeferCleanup { member_id, .. } => format!(
                "its agent is unreachable: record stop etcd, wipe the data dir{}, retire etcd as a run that starts when the agent connects",
                member_id
                    .as_ref()
                    .map(|id| format!(" (only if it holds member {id})"))
                    .unwrap_or_default()
            ),
            StepKind::SetPatroniHosts { hosts, restart, .. } => format!(
                "set etcd hosts in patroni.yml to {}, then {} Patroni",
                hosts.join(","),
                if *restart { "restart" } else { "reload" }
            ),
            StepKind::PatroniGuard { pg, .. } => format!(
                "guard: {} has a running leader, every instance runs, this one does not lead",
                pg.name
            ),
            StepKind::PatroniGate { pg, .. } => {
                format!("gate: Patroni here running and {} has a leader", pg.name)
            }
            StepKind::Switchover { pg, .. } => format!(
                "switchover: hand {}'s leadership to a healthy replica (never a failover)",
                pg.name
            ),
            StepKind::SetVipEndpoints { endpoints, .. } => format!(
                "set vip-manager dcs-endpoints to {}, then restart vip-manager",
                endpoints.join(",")
            ),
            StepKind::VipGate { pg } => {
                format!("gate: {}'s VIP on exactly one host, the primary's", pg.name)
            }
            StepKind::ServiceAction {
                service, action, ..
            } => format!("{action} {service}"),
        }
    }
}

/// Who carries a step out (see [`StepKind::executor`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Executor {
    /// The agents of [`StepKind::agent_hosts`], one task of this `pb::task::Kind` each.
    Agent(&'static str),
    /// The coordinator itself, through what is named.
    Coordinator(&'static str),
}

/// A planned step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// What it does.
    pub kind: StepKind,
    /// Unified diff of the file it writes (plans only; empty when unchanged or unknown).
    pub diff: String,
}

/// A plan: steps in order, and notes for the operator.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The steps.
    pub steps: Vec<Step>,
    /// What the operator should know (e.g. "nothing to change").
    pub notes: Vec<String>,
    /// Members whose data the plan wipes (the CLI asks before going on).
    pub wipes: Vec<String>,
}

impl Plan {
    /// Adds a WriteEtcdConf step for `host` with the diff against what its agent reported.
    fn write_conf(
        &mut self,
        spec: &ClusterSpec,
        live: &Live,
        host: IpAddr,
    ) -> Result<usize, PlanError> {
        self.write_conf_marked(spec, live, host, false)
    }

    /// As [`Plan::write_conf`]; `bootstrap_only` marks a write a config reload does not
    /// restart for.
    fn write_conf_marked(
        &mut self,
        spec: &ClusterSpec,
        live: &Live,
        host: IpAddr,
        bootstrap_only: bool,
    ) -> Result<usize, PlanError> {
        let (conf, text) = conf_of(spec, host)?;
        let diff = alike_diff(
            &live.path_of(host, "etcd_conf", "/etc/etcd/etcd.conf"),
            live.file(host, "etcd_conf"),
            &text,
            |a, b| quorum_proto::render::same_etcd_conf(a, b, &[]),
        );
        let kind = StepKind::WriteEtcdConf {
            host,
            conf: Some(conf.clone()),
            bootstrap_only,
        };
        Ok(self.push_with_diff(kind, diff))
    }

    /// Adds a WriteEtcdctlProfile step for `host` with its diff.
    fn write_profile(
        &mut self,
        spec: &ClusterSpec,
        live: &Live,
        host: IpAddr,
    ) -> Result<usize, PlanError> {
        let (profile, text) = profile_of(spec, host)?;
        let diff = alike_diff(
            &live.path_of(host, "etcdctl_profile", "/etc/profile.d/etcdctl.sh"),
            live.file(host, "etcdctl_profile"),
            &text,
            quorum_proto::render::same_profile,
        );
        let kind = StepKind::WriteEtcdctlProfile {
            host,
            profile: Some(profile.clone()),
        };
        Ok(self.push_with_diff(kind, diff))
    }

    /// Puts a SnapshotSave step before the plan's first destructive step (a stop, restart,
    /// wipe or member remove of etcd), keeping every step's references to earlier steps
    /// right; a plan without one is left as it is. Returns whether a step was added.
    pub fn snapshot_first(&mut self, cluster: &str) -> bool {
        let Some(at) = self.steps.iter().position(|s| s.kind.destroys_etcd_state()) else {
            return false;
        };
        // Before the guards and checks that belong to that step, so they run right before it.
        let at = self.steps[..at]
            .iter()
            .rposition(|s| !s.kind.checks_before_act())
            .map(|i| i + 1)
            .unwrap_or(0);
        for step in &mut self.steps {
            if let StepKind::RestartEtcd { if_changed, .. } = &mut step.kind {
                for i in if_changed.iter_mut().filter(|i| **i >= at) {
                    *i += 1;
                }
            }
        }
        self.steps.insert(
            at,
            Step {
                kind: StepKind::SnapshotSave {
                    cluster: cluster.to_string(),
                },
                diff: String::new(),
            },
        );
        true
    }

    /// Pigsty v4: the root password file beside the etcd config, with whether it changes.
    fn write_pass(&mut self, spec: &ClusterSpec, live: &Live, host: IpAddr) {
        if !spec.rbac {
            return;
        }
        let path = live.path_of(host, "etcd_pass", "/etc/etcd/etcd.pass");
        let diff = match (live.file(host, "etcd_pass"), &spec.pass_sha256) {
            (Some(f), Some(sum)) if f.exists && f.problem.is_empty() && &f.sha256 == sum => {
                String::new()
            }
            (Some(f), _) if f.exists => {
                format!("--- {path}\n+++ {path}\n(the root password changes; content not shown)\n")
            }
            _ => format!("--- /dev/null\n+++ {path}\n(the root password; content not shown)\n"),
        };
        self.push_with_diff(StepKind::WriteEtcdPass { host }, diff);
    }

    /// Pigsty v4: RBAC on and the PostgreSQL clusters' users, once the cluster is healthy.
    fn enable_rbac(&mut self, spec: &ClusterSpec) {
        if !spec.rbac {
            return;
        }
        self.push(StepKind::EnableAuth);
        if !spec.pg_users.is_empty() {
            self.push(StepKind::EnsurePgEtcdUsers {
                users: spec.pg_users.clone(),
            });
        }
    }

    fn push(&mut self, kind: StepKind) -> usize {
        self.steps.push(Step {
            kind,
            diff: String::new(),
        });
        self.steps.len() - 1
    }

    fn push_with_diff(&mut self, kind: StepKind, diff: String) -> usize {
        self.steps.push(Step { kind, diff });
        self.steps.len() - 1
    }
}

/// Why a plan is refused; each says what to do. Nothing has been changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// An agent the plan needs has never connected or is stale.
    #[error("the agent on {host} is {state}: every host of the SOP needs a connected quorum-agent (see `quorum agents`)")]
    AgentMissing {
        /// Host.
        host: IpAddr,
        /// "not connected" or "stale".
        state: String,
    },
    /// Pigsty's etcd_check abort, word for word where it can be.
    #[error("Abort because etcd instance {member} @ {host} exists. {reason}")]
    InstanceExists {
        /// Member name.
        member: String,
        /// Host.
        host: IpAddr,
        /// Which rule.
        reason: String,
    },
    /// A host's local agent safeguard forbids a wipe the plan needs.
    #[error("the local safeguard of the agent on {host} is set: it refuses to wipe etcd data there, whatever the coordinator says; unset `safeguard` in that host's agent.yml if you mean it")]
    LocalSafeguard {
        /// Host.
        host: IpAddr,
    },
    /// A healthy running cluster whose files differ from the inventory.
    #[error("cluster {cluster} is running and healthy, but its files differ from the inventory on {hosts}; roll the change out one member at a time with `quorum config reload --restart` (and `quorum env refresh`)")]
    RunningClusterDiffers {
        /// Cluster.
        cluster: String,
        /// Hosts.
        hosts: String,
    },
    /// A value from the inventory that the agent would refuse to render.
    #[error("cannot plan {file} for {host}: {why}; fix the value in pigsty.yml")]
    Unrenderable {
        /// Host.
        host: IpAddr,
        /// Which file.
        file: &'static str,
        /// The field and what is wrong with it.
        why: String,
    },
    /// `etcd_safeguard` is set and the SOP would remove the cluster.
    #[error("Abort because etcd_safeguard is enabled for cluster {cluster}: a removal is refused whether or not etcd runs, and nothing was changed. Set etcd_safeguard: false in pigsty.yml if you mean to remove it, or use `quorum cluster purge`, which ignores it")]
    SafeguardSet {
        /// Cluster.
        cluster: String,
    },
    /// pigsty.yml and etcd's live member list disagree.
    #[error("{}", crate::sop::agreement::refusal(cluster, problems))]
    InventoryDisagrees {
        /// Cluster.
        cluster: String,
        /// Each disagreement, with the line that fixes it.
        problems: Vec<Disagreement>,
    },
    /// An unsafe request.
    #[error("{0}")]
    Unsafe(String),
    /// A bad request.
    #[error("{0}")]
    Usage(String),
}

/// What the planner knows about the hosts and the cluster right now.
#[derive(Debug, Clone, Default)]
pub struct Live {
    /// Facts of each connected, non-stale agent.
    pub facts: HashMap<IpAddr, pb::Facts>,
    /// Hosts whose agent is known but stale.
    pub stale: Vec<IpAddr>,
    /// etcd's member list, if any member answered.
    pub members: Option<Vec<MemberInfo>>,
    /// Why there is no member list, when there is none.
    pub members_error: String,
    /// Health of each inventory member (Ok, or why not).
    pub health: HashMap<IpAddr, Result<(), String>>,
    /// The member id of etcd's leader, if a member named one.
    pub leader: Option<u64>,
}

impl Live {
    /// The inventory member that leads now, if etcd named a leader the inventory knows.
    pub fn leader_host(&self, spec: &ClusterSpec) -> Option<IpAddr> {
        let id = self.leader.filter(|l| *l != 0)?;
        let m = self.members.as_ref()?.iter().find(|m| m.id == id)?;
        spec.members
            .iter()
            .find(|s| m.peer_urls.contains(&s.peer_url))
            .map(|s| s.ip)
    }

    /// Refuses when etcd's member list (when it could be read) disagrees with the inventory;
    /// the member with peer URL `changing` (joining or leaving) may differ.
    fn check_agreement(&self, spec: &ClusterSpec, changing: Option<&str>) -> Result<(), PlanError> {
        let Some(members) = &self.members else {
            return Ok(());
        };
        let problems = spec.roster().compare(members, changing);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(PlanError::InventoryDisagrees {
                cluster: spec.name.clone(),
                problems,
            })
        }
    }

    /// The note a plan carries when the member list could not be read (nothing compared).
    fn unchecked_note(&self, spec: &ClusterSpec) -> Option<String> {
        self.members.is_none().then(|| {
            format!(
                "etcd's member list of cluster {} could not be read ({}): pigsty.yml was not compared with it",
                spec.name,
                if self.members_error.is_empty() {
                    "no member answered"
                } else {
                    self.members_error.as_str()
                }
            )
        })
    }

    fn require_agents(&self, hosts: &[IpAddr]) -> Result<(), PlanError> {
        for h in hosts {
            if !self.facts.contains_key(h) {
                let state = if self.stale.contains(h) {
                    "stale"
                } else {
                    "not connected"
                };
                return Err(PlanError::AgentMissing {
                    host: *h,
                    state: state.into(),
                });
            }
        }
        Ok(())
    }

    fn etcd_active(&self, host: IpAddr) -> bool {
        self.facts
            .get(&host)
            .and_then(|f| f.services.get("etcd"))
            .is_some_and(|s| *s == pb::ServiceState::Active as i32)
    }

    fn has_data(&self, host: IpAddr) -> bool {
        self.facts
            .get(&host)
            .and_then(|f| f.data_dir.as_ref())
            .is_some_and(|d| d.has_member)
    }

    fn local_safeguard(&self, host: IpAddr) -> bool {
        self.facts.get(&host).is_some_and(|f| f.safeguard)
    }

    fn file<'a>(&'a self, host: IpAddr, key: &str) -> Option<&'a pb::FileFact> {
        self.facts.get(&host).and_then(|f| f.files.get(key))
    }

    /// Where the agent on `host` keeps the managed file `key` (Pigsty's `default` when the
    /// agent did not say): the path a diff names.
    fn path_of(&self, host: IpAddr, key: &str, default: &str) -> String {
        match self.file(host, key) {
            Some(f) if !f.path.is_empty() => f.path.clone(),
            _ => default.to_string(),
        }
    }

    /// Whether every inventory member is healthy and etcd lists exactly them, all voting.
    fn cluster_matches(&self, spec: &ClusterSpec) -> bool {
        let Some(members) = &self.members else {
            return false;
        };
        let mut live: Vec<&str> = members
            .iter()
            .filter(|m| !m.is_learner)
            .flat_map(|m| m.peer_urls.iter().map(String::as_str))
            .collect();
        let mut want: Vec<&str> = spec.members.iter().map(|m| m.peer_url.as_str()).collect();
        live.sort_unstable();
        want.sort_unstable();
        members.len() == spec.members.len()
            && live == want
            && spec
                .members
                .iter()
                .all(|m| matches!(self.health.get(&m.ip), Some(Ok(()))))
    }
}

/// sha256 hex of `content`.
pub fn sha256_hex(content: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(content.as_bytes()))
}

/// The unified diff a write would make, given what the agent reported ("" when unchanged).
pub fn file_diff(path: &str, current: Option<&pb::FileFact>, new: &str) -> String {
    match current {
        Some(f) if !f.problem.is_empty() => format!(
            "--- {path} (the agent refuses this path: {}; the write will be refused until it is fixed)\n+++ {path}\n{}",
            f.problem,
            new.lines().map(|l| format!("+{l}\n")).collect::<String>()
        ),
        Some(f) if f.exists && f.sha256 == sha256_hex(new) => String::new(),
        Some(f) if f.exists && f.content.is_empty() => format!(
            "--- {path} (current content not reported, sha256 {})\n+++ {path}\n{}",
            f.sha256,
            new.lines().map(|l| format!("+{l}\n")).collect::<String>()
        ),
        Some(f) if f.exists => similar::TextDiff::from_lines(f.content.as_str(), new)
            .unified_diff()
            .context_radius(2)
            .header(path, path)
            .to_string(),
        _ => similar::TextDiff::from_lines("", new)
            .unified_diff()
            .header("/dev/null", path)
            .to_string(),
    }
}

/// [`file_diff`], but "" when the file on the host says what `new` says in other words (as
/// `same` reads them; e.g. as Pigsty rendered it): the agent leaves such a file as it is.
pub fn alike_diff(
    path: &str,
    current: Option<&pb::FileFact>,
    new: &str,
    same: fn(&str, &str) -> bool,
) -> String {
    match current {
        Some(f)
            if f.exists
                && f.problem.is_empty()
                && !f.content.is_empty()
                && same(&f.content, new) =>
        {
            String::new()
        }
        _ => file_diff(path, current, new),
    }
}

/// The typed etcd.conf of `host` and its text as the agent will render it; a field the
/// agent would refuse refuses the plan now.
fn conf_of(spec: &ClusterSpec, host: IpAddr) -> Result<(&pb::EtcdConf, String), PlanError> {
    let conf = spec
        .etcd_conf
        .get(&host)
        .ok_or_else(|| PlanError::Usage(format!("no etcd.conf rendered for {host}")))?;
    let text = quorum_proto::render::etcd_conf(conf).map_err(|e| PlanError::Unrenderable {
        host,
        file: "etcd.conf",
        why: e.to_string(),
    })?;
    Ok((conf, text))
}

/// The typed etcdctl profile of `host` and its text as the agent will render it.
fn profile_of(
    spec: &ClusterSpec,
    host: IpAddr,
) -> Result<(&pb::EtcdctlProfile, String), PlanError> {
    let profile = spec
        .profile
        .get(&host)
        .ok_or_else(|| PlanError::Usage(format!("no etcdctl profile rendered for {host}")))?;
    let text =
        quorum_proto::render::etcdctl_profile(profile).map_err(|e| PlanError::Unrenderable {
            host,
            file: "the etcdctl profile",
            why: e.to_string(),
        })?;
    Ok((profile, text))
}

fn hosts(spec: &ClusterSpec) -> Vec<IpAddr> {
    spec.members.iter().map(|m| m.ip).collect()
}

fn instance_exists_error(spec: &ClusterSpec, host: IpAddr) -> PlanError {
    let member = spec
        .member(host)
        .map(|m| m.name.clone())
        .unwrap_or_else(|| host.to_string());
    let reason = if spec.safeguard {
        "etcd_safeguard enabled, please disable it before purging.".to_string()
    } else {
        "etcd_clean = false, use -e etcd_clean=true to override.".to_string()
    };
    PlanError::InstanceExists {
        member,
        host,
        reason,
    }
}

/// `quorum cluster create` (Pigsty's `./etcd.yml`).
///
/// A cluster that is already healthy and matches the inventory is left alone (nothing to
/// change). Otherwise existing instances (etcd active, or a data dir holding a member) abort
/// the plan when `etcd_safeguard` is set or `etcd_clean` is off, exactly as Pigsty's
/// `etcd_check`; when allowed they are purged first, then every member gets its certs,
/// config (`initial-cluster-state: new`) and profile, all start together, and the run gates
/// on cluster health.
pub fn plan_cluster_create(spec: &ClusterSpec, live: &Live) -> Result<Plan, PlanError> {
    let hs = hosts(spec);
    live.require_agents(&hs)?;
    // A running cluster is compared with the inventory first: purging and re-creating it
    // because the inventory missed a member (or named a host that never joined) would be
    // the wrong fix. `quorum cluster purge` is there when starting over is what is meant.
    live.check_agreement(spec, None)?;
    let mut plan = Plan::default();
    if live.cluster_matches(spec) {
        let differ: Vec<String> = hs
            .iter()
            .filter(|h| {
                let conf_same = conf_of(spec, **h)
                    .map(|(_, c)| {
                        alike_diff("", live.file(**h, "etcd_conf"), &c, |a, b| {
                            quorum_proto::render::same_etcd_conf(a, b, &[])
                        })
                        .is_empty()
                    })
                    .unwrap_or(false);
                let prof_same = profile_of(spec, **h)
                    .map(|(_, c)| {
                        alike_diff(
                            "",
                            live.file(**h, "etcdctl_profile"),
                            &c,
                            quorum_proto::render::same_profile,
                        )
                        .is_empty()
                    })
                    .unwrap_or(false);
                !(conf_same && prof_same)
            })
            .map(|h| h.to_string())
            .collect();
        if !differ.is_empty() {
            return Err(PlanError::RunningClusterDiffers {
                cluster: spec.name.clone(),
                hosts: differ.join(", "),
            });
        }
        plan.push(StepKind::ClusterHealthGate);
        plan.notes.push(format!(
            "cluster {} is already running, healthy, and matches the inventory: nothing to change",
            spec.name
        ));
        return Ok(plan);
    }
    let existing: Vec<IpAddr> = hs
        .iter()
        .copied()
        .filter(|h| live.etcd_active(*h) || live.has_data(*h))
        .collect();
    if let Some(h) = existing.first() {
        if spec.safeguard || !spec.clean {
            return Err(instance_exists_error(spec, *h));
        }
    }
    for h in &existing {
        if live.local_safeguard(*h) {
            return Err(PlanError::LocalSafeguard { host: *h });
        }
    }
    plan.push(StepKind::SafeguardCheck {
        hosts: hs.clone(),
        safeguard: spec.safeguard,
        clean: spec.clean,
        ignore_safeguard: false,
        removal: false,
    });
    for h in &existing {
        plan.push(StepKind::WipeEtcdData {
            host: *h,
            purge: true,
            member_id: spec
                .member(*h)
                .and_then(|m| live_member_id(live, &m.peer_url)),
            cluster_id: None,
        });
        if let Some(m) = spec.member(*h) {
            plan.wipes.push(format!("{} @ {}", m.name, h));
        }
    }
    for m in &spec.members {
        plan.push(StepKind::WriteEtcdCerts {
            host: m.ip,
            member: m.name.clone(),
        });
        plan.write_conf(spec, live, m.ip)?;
        plan.write_pass(spec, live, m.ip);
        plan.write_profile(spec, live, m.ip)?;
    }
    plan.push(StepKind::StartEtcd { hosts: hs });
    plan.push(StepKind::ClusterHealthGate);
    plan.enable_rbac(spec);
    Ok(plan)
}

/// `quorum cluster remove` (`-t etcd_clean`, honors the safeguard) and `quorum cluster purge`
/// (`-t etcd_purge`, ignores it). The host's local agent safeguard is honored by both.
pub fn plan_cluster_remove(
    spec: &ClusterSpec,
    live: &Live,
    purge: bool,
) -> Result<Plan, PlanError> {
    let hs = hosts(spec);
    live.require_agents(&hs)?;
    if !purge {
        // With the safeguard set a removal is refused whether or not etcd runs (Pigsty v4's
        // etcd-rm aborts outright): stopped members still hold the cluster's data.
        if spec.safeguard {
            return Err(PlanError::SafeguardSet {
                cluster: spec.name.clone(),
            });
        }
        if let Some(h) = hs.iter().find(|h| live.etcd_active(**h)) {
            if !spec.clean {
                return Err(instance_exists_error(spec, *h));
            }
        }
    }
    for h in &hs {
        if live.local_safeguard(*h) {
            return Err(PlanError::LocalSafeguard { host: *h });
        }
    }
    let mut plan = Plan::default();
    plan.push(StepKind::SafeguardCheck {
        hosts: hs.clone(),
        safeguard: spec.safeguard,
        clean: spec.clean,
        ignore_safeguard: purge,
        removal: true,
    });
    for m in &spec.members {
        let member_id = live_member_id(live, &m.peer_url);
        if purge {
            plan.push(StepKind::WipeEtcdData {
                host: m.ip,
                purge: true,
                member_id,
                cluster_id: None,
            });
        } else {
            plan.push(StepKind::StopEtcd { host: m.ip });
            plan.push(StepKind::WipeEtcdData {
                host: m.ip,
                purge: false,
                member_id,
                cluster_id: None,
            });
        }
        plan.push(StepKind::RetireEtcd { host: m.ip });
        plan.wipes.push(format!("{} @ {}", m.name, m.ip));
    }
    Ok(plan)
}

/// How `config reload` restarts members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Write only.
    Never,
    /// Restart a member only if its etcd.conf changed (the default).
    IfChanged,
    /// Restart every member (Pigsty's `systemctl restart etcd -f 1`).
    Always,
}

/// `quorum config reload` (`-t etcd_conf`, then restart one member at a time): per member,
/// quorum guard, write, restart, gate on that member and the cluster healthy. Followers go
/// first and the leader last; right before its restart it hands leadership to a member
/// already restarted and caught up, so a roll costs one leader change. A member whose
/// etcd.conf changes only in `initial-cluster` / `initial-cluster-state` (ignored by a
/// running member) is written without a restart, unless every member restarts anyway.
pub fn plan_config_reload(
    spec: &ClusterSpec,
    live: &Live,
    restart: RestartPolicy,
) -> Result<Plan, PlanError> {
    let hs = hosts(spec);
    live.require_agents(&hs)?;
    live.check_agreement(spec, None)?;
    let mut plan = Plan::default();
    plan.notes.extend(live.unchecked_note(spec));
    if restart == RestartPolicy::Never {
        for h in hs {
            plan.write_conf(spec, live, h)?;
            plan.write_pass(spec, live, h);
        }
        return Ok(plan);
    }
    let leader = live.leader_host(spec);
    let mut restarted: Vec<IpAddr> = Vec::new();
    let mut quiet: Vec<String> = Vec::new();
    for m in roll_order(spec, leader) {
        plan.write_pass(spec, live, m.ip);
        if restart == RestartPolicy::IfChanged && bootstrap_only_change(spec, live, m.ip)? {
            plan.write_conf_marked(spec, live, m.ip, true)?;
            quiet.push(format!("{} ({})", m.name, m.ip));
            continue;
        }
        plan.push(StepKind::QuorumGuard { host: m.ip });
        let write = plan.write_conf(spec, live, m.ip)?;
        let force = restart == RestartPolicy::Always;
        if leader == Some(m.ip) {
            plan.push(StepKind::MoveLeaderAway {
                host: m.ip,
                peer_url: m.peer_url.clone(),
                prefer: restarted.clone(),
                if_changed: vec![write],
                force,
            });
        }
        plan.push(StepKind::RestartEtcd {
            host: m.ip,
            if_changed: vec![write],
            force,
        });
        plan.push(StepKind::HealthGate { host: m.ip });
        restarted.push(m.ip);
    }
    plan.notes.extend(roll_note(spec, live, leader));
    if !quiet.is_empty() {
        plan.notes.push(format!(
            "etcd.conf of {} changes only in initial-cluster / initial-cluster-state, which a running member ignores: written without a restart (`--restart` restarts every member anyway)",
            quiet.join(", ")
        ));
    }
    Ok(plan)
}

/// The inventory's members in the order a roll restarts them: followers first (in Pigsty's
/// order), the leader last.
fn roll_order(spec: &ClusterSpec, leader: Option<IpAddr>) -> Vec<&MemberSpec> {
    let mut order: Vec<&MemberSpec> = spec.members.iter().collect();
    // Stable: followers keep Pigsty's order.
    order.sort_by_key(|m| Some(m.ip) == leader);
    order
}

/// What the plan says about its restart order.
fn roll_note(spec: &ClusterSpec, live: &Live, leader: Option<IpAddr>) -> Option<String> {
    match leader.and_then(|l| spec.member(l)) {
        Some(m) => Some(format!(
            "restart order: followers first, the leader {} ({}) last; right before its restart it hands leadership to a member restarted before it and caught up (if it still leads then)",
            m.name, m.ip
        )),
        None if live.members.is_some() => Some(
            "etcd named no leader among the inventory's members: members restart in inventory order, and etcd hands leadership over by itself when its leader stops".into(),
        ),
        None => None,
    }
}

/// Whether the etcd.conf `host` would get differs from the one it runs with only in keys a
/// running member ignores (`initial-cluster`, `initial-cluster-state`): etcd reads them only
/// when it bootstraps an empty data dir. Only for a running member with data whose current
/// file the agent reported.
fn bootstrap_only_change(spec: &ClusterSpec, live: &Live, host: IpAddr) -> Result<bool, PlanError> {
    let (_, new) = conf_of(spec, host)?;
    let Some(cur) = live.file(host, "etcd_conf") else {
        return Ok(false);
    };
    if !cur.exists
        || !cur.problem.is_empty()
        || cur.content.is_empty()
        || cur.sha256 == sha256_hex(&new)
        || !live.etcd_active(host)
        || !live.has_data(host)
    {
        return Ok(false);
    }
    Ok(quorum_proto::render::same_etcd_conf(
        &cur.content,
        &new,
        &["initial-cluster", "initial-cluster-state"],
    ))
}

/// `quorum env refresh` (`-t etcd_env`): the etcdctl profile on every host.
pub fn plan_env_refresh(spec: &ClusterSpec, live: &Live) -> Result<Plan, PlanError> {
    let hs = hosts(spec);
    live.require_agents(&hs)?;
    // A profile lists every inventory member as an endpoint: a host etcd does not list, or
    // lists only as a learner, must not be there.
    live.check_agreement(spec, None)?;
    let mut plan = Plan::default();
    plan.notes.extend(live.unchecked_note(spec));
    for h in hs {
        plan.write_profile(spec, live, h)?;
    }
    Ok(plan)
}

/// `quorum service ACTION SERVICE --hosts ... --forks N` (the SOPs' `ansible -f N -a
/// 'systemctl ...'`). etcd stops and restarts go one host at a time behind the quorum guard
/// and a health gate, whatever `forks` says would be refused.
pub fn plan_service(
    spec: &ClusterSpec,
    live: &Live,
    service: ServiceName,
    action: ActionName,
    targets: &[IpAddr],
    forks: usize,
) -> Result<Plan, PlanError> {
    if targets.is_empty() {
        return Err(PlanError::Usage("no hosts to act on".into()));
    }
    if forks == 0 {
        return Err(PlanError::Usage("--forks must be at least 1".into()));
    }
    live.require_agents(targets)?;
    let mut plan = Plan::default();
    let disruptive_etcd =
        service == ServiceName::Etcd && matches!(action, ActionName::Stop | ActionName::Restart);
    if disruptive_etcd {
        if forks > 1 {
            return Err(PlanError::Unsafe(format!(
                "refusing to {action} etcd on {forks} hosts at once: that can cost the cluster its quorum; etcd goes one member at a time (--forks 1)"
            )));
        }
        let mut members = Vec::new();
        for h in targets {
            match spec.member(*h) {
                Some(m) => members.push(m),
                None => {
                    return Err(PlanError::Usage(format!(
                        "{h} is not a member of etcd cluster {}; check --hosts",
                        spec.name
                    )))
                }
            }
        }
        live.check_agreement(spec, None)?;
        plan.notes.extend(live.unchecked_note(spec));
        let leader = live.leader_host(spec);
        if action == ActionName::Restart {
            // As a roll: followers first, the leader last, after handing leadership over.
            members.sort_by_key(|m| Some(m.ip) == leader);
        }
        let mut restarted = Vec::new();
        for m in members {
            plan.push(StepKind::QuorumGuard { host: m.ip });
            if action == ActionName::Stop {
                plan.push(StepKind::StopEtcd { host: m.ip });
            } else {
                if leader == Some(m.ip) {
                    plan.push(StepKind::MoveLeaderAway {
                        host: m.ip,
                        peer_url: m.peer_url.clone(),
                        prefer: restarted.clone(),
                        if_changed: vec![],
                        force: true,
                    });
                }
                plan.push(StepKind::RestartEtcd {
                    host: m.ip,
                    if_changed: vec![],
                    force: true,
                });
                plan.push(StepKind::HealthGate { host: m.ip });
                restarted.push(m.ip);
            }
        }
        if action == ActionName::Restart && targets.len() > 1 {
            plan.notes.extend(roll_note(spec, live, leader));
        }
        return Ok(plan);
    }
    for batch in targets.chunks(forks) {
        plan.push(StepKind::ServiceAction {
            hosts: batch.to_vec(),
            service,
            action,
        });
        if service == ServiceName::Etcd && action == ActionName::Start {
            for h in batch {
                plan.push(StepKind::HealthGate { host: *h });
            }
        }
    }
    Ok(plan)
}

/// The live member id (hex, as `etcdctl member list` shows it) of the member with
/// `peer_url`, for a wipe to name the data it is meant for.
fn live_member_id(live: &Live, peer_url: &str) -> Option<String> {
    live_member(live, peer_url).map(|m| format!("{:x}", m.id))
}

fn live_member<'a>(live: &'a Live, peer_url: &str) -> Option<&'a MemberInfo> {
    live.members
        .as_ref()?
        .iter()
        .find(|m| m.peer_urls.iter().any(|u| u == peer_url))
}

fn require_member_list(live: &Live, cluster: &str) -> Result<(), PlanError> {
    if live.members.is_none() {
        return Err(PlanError::Unsafe(format!(
            "cannot read the member list of cluster {cluster}: {}; a membership change needs a running cluster",
            live.members_error
        )));
    }
    Ok(())
}

fn unhealthy_others(spec: &ClusterSpec, live: &Live, except: IpAddr) -> Option<String> {
    spec.members
        .iter()
        .filter(|m| m.ip != except)
        .find_map(|m| match live.health.get(&m.ip) {
            Some(Ok(())) => None,
            Some(Err(why)) => Some(format!("member {} ({}) is unhealthy: {why}", m.name, m.ip)),
            None => Some(format!("member {} ({}) was not checked", m.name, m.ip)),
        })
}

/// `quorum member add IP`: learner add, the new member's certs and config
/// (`initial-cluster-state: existing`), start, promote once in sync, then every other member's
/// etcd.conf and every profile list it. `spec` is the cluster with the new member in it.
pub fn plan_member_add(spec: &ClusterSpec, new: IpAddr, live: &Live) -> Result<Plan, PlanError> {
    let joining = spec
        .member(new)
        .cloned()
        .ok_or_else(|| PlanError::Usage(format!("{new} is not in the planned cluster")))?;
    let hs = hosts(spec);
    live.require_agents(&hs)?;
    require_member_list(live, &spec.name)?;
    let listed = live_member(live, &joining.peer_url);
    let mut plan = Plan::default();
    if let Some(other) = live
        .members
        .iter()
        .flatten()
        .find(|m| m.is_learner && !m.peer_urls.contains(&joining.peer_url))
    {
        return Err(PlanError::Unsafe(format!(
            "cluster {} already has a learner ({} {}); promote or remove it before adding another member (at most one learner at a time)",
            spec.name,
            if other.name.is_empty() { format!("{:x}", other.id) } else { other.name.clone() },
            other.peer_urls.join(",")
        )));
    }
    if let Some(why) = unhealthy_others(spec, live, new) {
        return Err(PlanError::Unsafe(format!(
            "cluster {} is unhealthy: {why}; fix it before adding a member",
            spec.name
        )));
    }
    // Every other member must be exactly etcd's: the new member's etcd.conf lists them all
    // (etcd refuses to start it otherwise), and the refresh that follows rewrites every file.
    live.check_agreement(spec, Some(&joining.peer_url))?;
    let already_voting = listed.is_some_and(|m| !m.is_learner);
    if already_voting {
        plan.notes.push(format!(
            "{} ({new}) is already a voting member: only the config and profile refresh remain",
            joining.name
        ));
    } else {
        let learner_listed = listed.is_some();
        if let Some(l) = listed {
            // AddLearner counts a learner with this peer URL as done: say it is adopted.
            plan.notes.push(format!(
                "a learner with peer URL {} is already in cluster {} (id {:x}, added by hand or by an earlier run): this run adopts it instead of adding another, then starts and promotes it",
                joining.peer_url, spec.name, l.id
            ));
        }
        // Data on the joining host that is not a running learner of this cluster is a removed
        // member's (etcd would refuse it) or another cluster's: it must go before the join.
        let stale_data = (live.has_data(new) || live.etcd_active(new)) && !learner_listed;
        if stale_data && live.etcd_active(new) {
            return Err(PlanError::Unsafe(format!(
                "etcd is running on {new} with its own data, and it is not a member of cluster {}; stop it and wipe it first (it may serve another cluster)",
                spec.name
            )));
        }
        if stale_data && live.local_safeguard(new) {
            return Err(PlanError::LocalSafeguard { host: new });
        }
        plan.push(StepKind::MemberAddCheck {
            host: new,
            peer_url: joining.peer_url.clone(),
        });
        if stale_data {
            // Not a member: the data the plan saw (the agent's facts) is what may go, and
            // nothing else that lands there by the time the step runs.
            let seen = live.facts.get(&new).and_then(|f| f.data_dir.as_ref());
            let id = |s: Option<&String>| s.filter(|s| !s.is_empty()).cloned();
            plan.push(StepKind::WipeEtcdData {
                host: new,
                purge: true,
                member_id: id(seen.map(|d| &d.member_id)),
                cluster_id: id(seen.map(|d| &d.cluster_id)),
            });
            plan.wipes
                .push(format!("{new} (old data, not a member of {})", spec.name));
            plan.notes.push(format!(
                "{new} holds etcd data but is not a member of cluster {}: it is wiped before it joins",
                spec.name
            ));
        }
        plan.push(StepKind::AddLearner {
            host: new,
            peer_url: joining.peer_url.clone(),
        });
        plan.push(StepKind::WriteEtcdCerts {
            host: new,
            member: joining.name.clone(),
        });
        plan.write_conf(spec, live, new)?;
        plan.write_pass(spec, live, new);
        plan.push(StepKind::StartEtcd { hosts: vec![new] });
        plan.push(StepKind::PromoteLearner {
            host: new,
            peer_url: joining.peer_url.clone(),
        });
        plan.push(StepKind::HealthGate { host: new });
    }
    refresh_members(&mut plan, spec, live, Some(new))?;
    Ok(plan)
}

/// Every member's etcd.conf (write only: running members ignore `initial-cluster`, so no
/// restart is needed) and every host's profile.
fn refresh_members(
    plan: &mut Plan,
    spec: &ClusterSpec,
    live: &Live,
    skip_conf: Option<IpAddr>,
) -> Result<(), PlanError> {
    for m in &spec.members {
        if Some(m.ip) == skip_conf {
            continue;
        }
        plan.write_conf(spec, live, m.ip)?;
    }
    for m in &spec.members {
        plan.write_profile(spec, live, m.ip)?;
    }
    Ok(())
}

/// `quorum member remove IP`: the remaining members' etcd.conf without it, leadership moved
/// away if it leads, `member remove` by the live id, then stop and wipe it, then profiles.
/// `spec` is the cluster without the leaving member.
///
/// When the leaving host's agent is unreachable (the host died: the most common reason to
/// remove a member), the member still leaves etcd after the same checks on the survivors, and
/// its stop, wipe and retirement wait, recorded as a run that starts when its agent connects
/// again; `forget` records nothing (the host is gone for good).
pub fn plan_member_remove(
    spec: &ClusterSpec,
    gone: &MemberSpec,
    live: &Live,
    forget: bool,
) -> Result<Plan, PlanError> {
    // Remaining members that are dead too (etcd down, agent unreachable): their files wait
    // (they are likely the next to leave); every other remaining host needs its agent.
    let dead_too: Vec<IpAddr> = spec
        .members
        .iter()
        .map(|m| m.ip)
        .filter(|h| !live.facts.contains_key(h) && live.health.get(h).is_some_and(|r| r.is_err()))
        .collect();
    let reachable: Vec<IpAddr> = hosts(spec)
        .into_iter()
        .filter(|h| !dead_too.contains(h))
        .collect();
    live.require_agents(&reachable)?;
    let unreachable = if live.facts.contains_key(&gone.ip) {
        None
    } else if live.stale.contains(&gone.ip) {
        Some("stale")
    } else {
        Some("not connected")
    };
    if forget && unreachable.is_none() {
        return Err(PlanError::Usage(format!(
            "--forget is for a host whose agent is gone, and the agent on {} is connected: drop --forget and its etcd is stopped, wiped and retired now (a pending cleanup that failed is dropped with `quorum run abort`)",
            gone.ip
        )));
    }
    require_member_list(live, &spec.name)?;
    let listed = live_member(live, &gone.peer_url);
    let voting = live
        .members
        .iter()
        .flatten()
        .filter(|m| !m.is_learner)
        .count();
    if spec.members.is_empty() || (listed.is_some_and(|m| !m.is_learner) && voting <= 1) {
        return Err(PlanError::Unsafe(format!(
            "{} is the last member of cluster {}: removing it would destroy the cluster; use `quorum cluster remove` for that",
            member_label(gone), spec.name
        )));
    }
    // The voting members' health, the leaving one included (it may be a dead host).
    let health: Vec<crate::sop::gates::Health> = live
        .members
        .iter()
        .flatten()
        .filter(|m| !m.is_learner)
        .map(|m| {
            let host = m
                .peer_urls
                .first()
                .and_then(|u| crate::sop::agreement::host_of_url(u));
            let label = if m.name.is_empty() {
                format!("{:x}", m.id)
            } else {
                m.name.clone()
            };
            let r = match host.and_then(|h| live.health.get(&h)) {
                Some(r) => r.clone(),
                None => Err("not checked".to_string()),
            };
            (label, host, r)
        })
        .collect();
    let removal_note = match crate::sop::gates::removal(&health, gone.ip) {
        Ok(note) => note,
        Err(why) => {
            return Err(PlanError::Unsafe(format!(
                "{why}; removing {} now would put quorum at risk. Fix it first",
                member_label(gone)
            )))
        }
    };
    if live.local_safeguard(gone.ip) {
        return Err(PlanError::LocalSafeguard { host: gone.ip });
    }
    // The remaining members' files are rewritten from the inventory: it must name exactly
    // the members etcd keeps.
    live.check_agreement(spec, Some(&gone.peer_url))?;
    let mut plan = Plan::default();
    plan.notes.extend(removal_note);
    if listed.is_none() {
        plan.notes.push(format!(
            "{} is no longer a member: only the cleanup and refresh remain",
            member_label(gone)
        ));
    }
    for h in &dead_too {
        let name = spec.member(*h).map(|m| m.name.as_str()).unwrap_or_default();
        plan.notes.push(format!(
            "{name} ({h}) is down and its agent unreachable too: its etcd.conf and profile are left as they are; remove it the same way, or run `quorum config reload` and `quorum env refresh` once it is back"
        ));
    }
    plan.push(StepKind::MemberRemoveCheck {
        host: gone.ip,
        peer_url: gone.peer_url.clone(),
    });
    for m in spec.members.iter().filter(|m| !dead_too.contains(&m.ip)) {
        plan.write_conf(spec, live, m.ip)?;
    }
    plan.push(StepKind::MoveLeaderAway {
        host: gone.ip,
        peer_url: gone.peer_url.clone(),
        prefer: Vec::new(),
        if_changed: Vec::new(),
        force: false,
    });
    plan.push(StepKind::RemoveMember {
        host: gone.ip,
        peer_url: gone.peer_url.clone(),
    });
    let member_id = listed.map(|m| format!("{:x}", m.id));
    let label = if gone.name.is_empty() {
        member_label(gone)
    } else {
        format!("{} @ {}", gone.name, gone.ip)
    };
    match unreachable {
        None => {
            plan.push(StepKind::StopEtcd { host: gone.ip });
            plan.push(StepKind::WipeRemovedMember {
                host: gone.ip,
                peer_url: gone.peer_url.clone(),
                member_id,
            });
            plan.push(StepKind::RetireEtcd { host: gone.ip });
            plan.wipes.push(label);
        }
        Some(state) if forget => plan.notes.push(format!(
            "the agent on {ip} is {state}: {label} is removed from etcd without it and, with --forget, nothing waits for {ip}: its etcd.conf, certificates, data dir and enabled etcd unit stay there. Wipe its data dir before that host ever boots on this network again",
            ip = gone.ip
        )),
        Some(state) => {
            plan.notes.push(format!(
                "the agent on {ip} is {state}: {label} is removed from etcd without it (the checks run on the survivors), and stopping its etcd, wiping its data dir and retiring etcd there wait as a run of their own that starts when that agent connects again; no SOP touches {ip} before it ran. `quorum member remove {ip} --forget` drops it",
                ip = gone.ip
            ));
            plan.push(StepKind::DeferCleanup {
                host: gone.ip,
                peer_url: gone.peer_url.clone(),
                member_id,
            });
            plan.wipes.push(format!("{label} (once its agent is back)"));
        }
    }
    for m in spec.members.iter().filter(|m| !dead_too.contains(&m.ip)) {
        plan.write_profile(spec, live, m.ip)?;
    }
    Ok(plan)
}

/// How a leaving member is named to the operator: its name, or where it is when neither
/// the inventory nor etcd knows its name.
pub fn member_label(m: &MemberSpec) -> String {
    if m.name.is_empty() {
        format!("member at {} (name unknown)", m.ip)
    } else {
        m.name.clone()
    }
}

/// The leaving member of a `member remove` whose host is no longer in the inventory
/// (Pigsty's SOP takes it out first): named and addressed as etcd lists it, so the wipe
/// confirmation names the real member. `fallback` is what the group's parameters would
/// give (used when etcd does not list the host); its name is dropped unless `seq_given`,
/// rather than inventing one.
pub fn leaving_member(
    live: &Live,
    host: IpAddr,
    fallback: MemberSpec,
    seq_given: bool,
) -> MemberSpec {
    let listed = live.members.iter().flatten().find(|m| {
        m.peer_urls
            .iter()
            .any(|u| crate::sop::agreement::host_of_url(u) == Some(host))
    });
    match listed {
        Some(m) => MemberSpec {
            ip: host,
            name: m.name.clone(),
            client_url: m
                .client_urls
                .first()
                .cloned()
                .unwrap_or(fallback.client_url),
            peer_url: m.peer_urls.first().cloned().unwrap_or(fallback.peer_url),
        },
        None => MemberSpec {
            name: if seq_given {
                fallback.name
            } else {
                String::new()
            },
            ..fallback
        },
    }
}

/// A PostgreSQL cluster as the Patroni and vip-manager planners see it.
#[derive(Debug, Clone)]
pub struct PgTarget {
    /// The cluster and how to reach its Patroni instances.
    pub pg: PgRef,
    /// The instance that leads now (read live from Patroni), if any.
    pub leader: Option<IpAddr>,
    /// `ip:port` of every member of its etcd cluster, for `patroni.yml`.
    pub dcs_hosts: Vec<String>,
    /// `https://ip:port` of the same members, for vip-manager.
    pub dcs_endpoints: Vec<String>,
}

impl PgTarget {
    /// Hosts in the order a rolling change visits them: replicas first, the leader last.
    fn rolling_order(&self, only_vip: bool) -> Vec<IpAddr> {
        let mut hosts: Vec<IpAddr> = self
            .pg
            .members
            .iter()
            .filter(|m| !only_vip || m.vip)
            .map(|m| m.ip)
            .collect();
        hosts.sort_by_key(|h| (Some(*h) == self.leader, *h));
        hosts
    }
}

/// `quorum patroni reload` (`./pgsql.yml -t pg_conf` + reload patroni): per instance, one at
/// a time, replicas before the primary: write the etcd hosts into patroni.yml, reload Patroni,
/// gate on it running with a leader in the cluster. With `restart`, Patroni restarts instead
/// (it applies a changed etcd host list only then): each restart is guarded, and the primary
/// first hands its leadership to a replica by a switchover.
pub fn plan_patroni_reload(
    targets: &[PgTarget],
    live: &Live,
    restart: bool,
) -> Result<Plan, PlanError> {
    let mut plan = Plan::default();
    push_patroni_refresh(&mut plan, targets, live, restart, None)?;
    if restart {
        plan.notes.push(
            "Patroni restarts on every instance, replicas first; the primary hands its leadership to a replica by a switchover first, so the cluster ends with another primary (and the VIP follows it)".into(),
        );
    } else if !targets.is_empty() {
        plan.notes.push(
            "reload rewrites patroni.yml and makes Patroni re-read it, but Patroni applies a changed etcd host list only when it restarts: until then it keeps its old list (and follows etcd's member list from it). Use --restart-patroni to apply the list now".into(),
        );
    }
    Ok(plan)
}

/// `quorum vip reload` (`./pgsql.yml -t pg_vip_config` + restart vip-manager): per instance with
/// a VIP, one at a time, the primary last: write the endpoints, restart vip-manager, gate on the
/// VIP being on exactly one host, the primary's.
pub fn plan_vip_reload(targets: &[PgTarget], live: &Live) -> Result<Plan, PlanError> {
    let mut plan = Plan::default();
    push_vip_refresh(&mut plan, targets, live, false, None)?;
    if plan.steps.is_empty() {
        plan.notes
            .push("no PostgreSQL instance has pg_vip_enabled: nothing to do".into());
    }
    Ok(plan)
}

/// The Patroni and vip-manager refresh that ends `member add` and `member remove`: every
/// PostgreSQL cluster on this etcd cluster gets the new member list (reload, no restart).
///
/// `unreachable` is a leaving etcd member's host whose agent is gone (a dead host removed):
/// if it also runs PostgreSQL, its Patroni and vip-manager are left as they are, and the plan
/// says what to run once it is back.
pub fn push_pg_refresh(
    plan: &mut Plan,
    targets: &[PgTarget],
    live: &Live,
    unreachable: Option<IpAddr>,
) -> Result<(), PlanError> {
    if let Some(h) = unreachable {
        for t in targets.iter().filter(|t| t.pg.node(h).is_some()) {
            plan.notes.push(format!(
                "{h} also runs {} of PostgreSQL cluster {}, and its agent is unreachable: its Patroni and vip-manager keep the old etcd endpoints; once it is back (after its pending cleanup), run `quorum patroni reload --cluster {}` and `quorum vip reload --cluster {}`",
                t.pg.node(h).map(|n| n.name.as_str()).unwrap_or("an instance"),
                t.pg.name,
                t.pg.name,
                t.pg.name
            ));
        }
    }
    push_patroni_refresh(plan, targets, live, false, unreachable)?;
    push_vip_refresh(plan, targets, live, true, unreachable)?;
    if !targets.is_empty() {
        plan.notes.push(
            "Patroni is reloaded, not restarted: it applies the new etcd host list at its next restart (`quorum patroni reload --restart-patroni` does that now); meanwhile it follows etcd's member list".into(),
        );
    }
    Ok(())
}

fn push_patroni_refresh(
    plan: &mut Plan,
    targets: &[PgTarget],
    live: &Live,
    restart: bool,
    skip: Option<IpAddr>,
) -> Result<(), PlanError> {
    for t in targets {
        let mut order = t.rolling_order(false);
        order.retain(|h| Some(*h) != skip);
        require_pg_agents(live, t, &order)?;
        if restart && t.pg.members.len() < 2 {
            return Err(PlanError::Unsafe(format!(
                "PostgreSQL cluster {} has no replica to switch over to, so restarting its Patroni would stop its primary; restart it yourself when downtime is acceptable (`quorum service restart patroni --hosts {}`), or reload without --restart-patroni",
                t.pg.name,
                order.first().map(|h| h.to_string()).unwrap_or_default()
            )));
        }
        for h in order {
            if restart {
                if Some(h) == t.leader {
                    plan.push(StepKind::Switchover {
                        host: h,
                        pg: t.pg.clone(),
                    });
                }
                plan.push(StepKind::PatroniGuard {
                    host: h,
                    pg: t.pg.clone(),
                });
            }
            plan.push(StepKind::SetPatroniHosts {
                host: h,
                hosts: t.dcs_hosts.clone(),
                restart,
            });
            plan.push(StepKind::PatroniGate {
                host: h,
                pg: t.pg.clone(),
            });
        }
    }
    Ok(())
}

/// Every PostgreSQL host of the refresh has a connected agent; the error says why it is needed.
fn require_pg_agents(live: &Live, t: &PgTarget, hosts: &[IpAddr]) -> Result<(), PlanError> {
    live.require_agents(hosts).map_err(|e| match e {
        PlanError::AgentMissing { host, state } => PlanError::Unsafe(format!(
            "the agent on {host} ({} of PostgreSQL cluster {}) is {state}: this SOP points Patroni and vip-manager there at the etcd members, so every PostgreSQL host needs a connected quorum-agent (see `quorum agents`); nothing was changed",
            t.pg.node(host).map(|n| n.name.as_str()).unwrap_or("an instance"),
            t.pg.name
        )),
        other => other,
    })
}

/// vip-manager on every instance with a VIP, replicas first. A membership refresh
/// (`membership`) leaves the primary's vip-manager running: it releases the VIP to restart (a
/// gap in service for every client of the VIP), and one member more or less leaves it
/// endpoints that are still members, so it keeps following the leader key until its next
/// restart applies the new list. `quorum vip reload` restarts it too.
fn push_vip_refresh(
    plan: &mut Plan,
    targets: &[PgTarget],
    live: &Live,
    membership: bool,
    skip: Option<IpAddr>,
) -> Result<(), PlanError> {
    for t in targets {
        let mut order = t.rolling_order(true);
        order.retain(|h| Some(*h) != skip);
        require_pg_agents(live, t, &order)?;
        for h in order {
            let defer_restart = membership && Some(h) == t.leader;
            if defer_restart {
                plan.notes.push(format!(
                    "vip-manager on {h}, the primary of {}, gets the new endpoints but is not restarted: it would release the VIP to restart; it follows the leader key through its current endpoints until its next restart (`quorum vip reload` restarts it now, with a short VIP gap)",
                    t.pg.name
                ));
            }
            plan.push(StepKind::SetVipEndpoints {
                host: h,
                endpoints: t.dcs_endpoints.clone(),
                defer_restart,
            });
            plan.push(StepKind::VipGate { pg: t.pg.clone() });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    fn spec(n: u8) -> ClusterSpec {
        let mut s = ClusterSpec {
            name: "etcd".into(),
            members: Vec::new(),
            safeguard: false,
            clean: true,
            etcd_conf: HashMap::new(),
            profile: HashMap::new(),
            group: "etcd".into(),
            client_port: 2379,
            peer_port: 2380,
            rbac: false,
            pass_sha256: None,
            pg_users: Vec::new(),
        };
        for i in 1..=n {
            let a = ip(&format!("10.10.10.{}", 9 + i));
            s.members.push(MemberSpec {
                ip: a,
                name: format!("etcd-{i}"),
                client_url: format!("https://{a}:2379"),
                peer_url: format!("https://{a}:2380"),
            });
        }
        let peers: Vec<pb::EtcdPeer> = s
            .members
            .iter()
            .map(|m| pb::EtcdPeer {
                name: m.name.clone(),
                ip: m.ip.to_string(),
                peer_port: 2380,
            })
            .collect();
        for m in s.members.clone() {
            let conf = pb::EtcdConf {
                name: m.name.clone(),
                ip: m.ip.to_string(),
                client_port: 2379,
                peer_port: 2380,
                data_dir: "/data/etcd".into(),
                cluster_token: "etcd".into(),
                initial_cluster: peers.clone(),
                election_timeout_ms: 1000,
                heartbeat_interval_ms: 100,
                cert_dir: "/etc/etcd".into(),
                ..Default::default()
            };
            let profile = pb::EtcdctlProfile {
                endpoints: vec![pb::EtcdEndpoint {
                    ip: m.ip.to_string(),
                    port: 2379,
                }],
                cacert: "/etc/pki/ca.crt".into(),
                cert: "/etc/etcd/server.crt".into(),
                key: "/etc/etcd/server.key".into(),
                ..Default::default()
            };
            s.etcd_conf.insert(m.ip, conf);
            s.profile.insert(m.ip, profile);
        }
        s
    }

    fn facts(active: bool, data: bool, safeguard: bool) -> pb::Facts {
        let mut f = pb::Facts {
            safeguard,
            data_dir: Some(pb::DataDirFact {
                path: "/data/etcd".into(),
                has_member: data,
                ..Default::default()
            }),
            ..Default::default()
        };
        let st = if active {
            pb::ServiceState::Active
        } else {
            pb::ServiceState::Inactive
        };
        f.services.insert("etcd".into(), st as i32);
        f
    }

    fn live(spec: &ClusterSpec, active: bool, data: bool) -> Live {
        let mut l = Live::default();
        for m in &spec.members {
            l.facts.insert(m.ip, facts(active, data, false));
        }
        l
    }

    fn healthy(spec: &ClusterSpec) -> Live {
        let mut l = live(spec, true, true);
        l.members = Some(
            spec.members
                .iter()
                .enumerate()
                .map(|(i, m)| MemberInfo {
                    id: i as u64 + 1,
                    name: m.name.clone(),
                    peer_urls: vec![m.peer_url.clone()],
                    client_urls: vec![m.client_url.clone()],
                    is_learner: false,
                })
                .collect(),
        );
        for m in &spec.members {
            l.health.insert(m.ip, Ok(()));
            let f = l.facts.entry(m.ip).or_default();
            for (key, content) in [
                (
                    "etcd_conf",
                    quorum_proto::render::format_etcd_conf(&spec.etcd_conf[&m.ip]),
                ),
                (
                    "etcdctl_profile",
                    quorum_proto::render::format_etcdctl_profile(&spec.profile[&m.ip]),
                ),
            ] {
                f.files.insert(
                    key.into(),
                    pb::FileFact {
                        exists: true,
                        sha256: sha256_hex(&content),
                        content,
                        path: String::new(),
                        problem: String::new(),
                    },
                );
            }
        }
        l
    }

    fn names(plan: &Plan) -> Vec<String> {
        plan.steps
            .iter()
            .map(|s| format!("{} {}", s.kind.name(), s.kind.hosts_label()))
            .collect()
    }

    #[test]
    fn create_on_fresh_hosts_writes_everything_then_starts_all_together() {
        let s = spec(3);
        let plan = plan_cluster_create(&s, &live(&s, false, false)).expect("plan");
        assert_eq!(
            names(&plan),
            vec![
                "SafeguardCheck 10.10.10.10,10.10.10.11,10.10.10.12",
                "WriteEtcdCerts 10.10.10.10",
                "WriteEtcdConf 10.10.10.10",
                "WriteEtcdctlProfile 10.10.10.10",
                "WriteEtcdCerts 10.10.10.11",
                "WriteEtcdConf 10.10.10.11",
                "WriteEtcdctlProfile 10.10.10.11",
                "WriteEtcdCerts 10.10.10.12",
                "WriteEtcdConf 10.10.10.12",
                "WriteEtcdctlProfile 10.10.10.12",
                "StartEtcd 10.10.10.10,10.10.10.11,10.10.10.12",
                "ClusterHealthGate ",
            ]
        );
        assert!(plan.wipes.is_empty());
        assert!(
            plan.steps[2].diff.contains("+name: etcd-1"),
            "{}",
            plan.steps[2].diff
        );
    }

    #[test]
    fn create_on_the_healthy_cluster_it_made_changes_nothing() {
        let s = spec(3);
        let plan = plan_cluster_create(&s, &healthy(&s)).expect("plan");
        assert_eq!(names(&plan), vec!["ClusterHealthGate "]);
        assert!(
            plan.notes[0].contains("nothing to change"),
            "{:?}",
            plan.notes
        );
    }

    #[test]
    fn create_on_a_healthy_cluster_with_other_files_refuses_and_points_to_reload() {
        let s = spec(3);
        let mut l = healthy(&s);
        if let Some(f) = l.facts.get_mut(&ip("10.10.10.11")) {
            f.files.insert(
                "etcd_conf".into(),
                pb::FileFact {
                    exists: true,
                    sha256: "00".into(),
                    content: "old".into(),
                    path: String::new(),
                    problem: String::new(),
                },
            );
        }
        let err = plan_cluster_create(&s, &l).expect_err("must refuse");
        assert_eq!(
            err.to_string(),
            "cluster etcd is running and healthy, but its files differ from the inventory on 10.10.10.11; roll the change out one member at a time with `quorum config reload --restart` (and `quorum env refresh`)"
        );
    }

    #[test]
    fn create_over_existing_instances_honors_safeguard_and_clean_like_pigsty() {
        let mut s = spec(3);
        let l = live(&s, true, true);
        s.safeguard = true;
        assert_eq!(
            plan_cluster_create(&s, &l).expect_err("safeguard").to_string(),
            "Abort because etcd instance etcd-1 @ 10.10.10.10 exists. etcd_safeguard enabled, please disable it before purging."
        );
        s.safeguard = false;
        s.clean = false;
        assert_eq!(
            plan_cluster_create(&s, &l).expect_err("clean").to_string(),
            "Abort because etcd instance etcd-1 @ 10.10.10.10 exists. etcd_clean = false, use -e etcd_clean=true to override."
        );
        s.clean = true;
        let plan = plan_cluster_create(&s, &l).expect("purge and recreate");
        assert_eq!(plan.wipes.len(), 3);
        assert!(matches!(
            plan.steps[1].kind,
            StepKind::WipeEtcdData { purge: true, .. }
        ));
    }

    #[test]
    fn a_stopped_member_with_data_counts_as_an_instance() {
        let mut s = spec(1);
        s.safeguard = true;
        let err =
            plan_cluster_create(&s, &live(&s, false, true)).expect_err("data dir holds a member");
        assert!(matches!(err, PlanError::InstanceExists { .. }));
    }

    #[test]
    fn every_plan_needs_every_agent() {
        let s = spec(3);
        let mut l = live(&s, false, false);
        l.facts.remove(&ip("10.10.10.12"));
        l.stale.push(ip("10.10.10.12"));
        let err = plan_config_reload(&s, &l, RestartPolicy::Always).expect_err("stale agent");
        assert_eq!(
            err.to_string(),
            "the agent on 10.10.10.12 is stale: every host of the SOP needs a connected quorum-agent (see `quorum agents`)"
        );
    }

    #[test]
    fn remove_honors_the_safeguard_purge_ignores_it_local_safeguard_beats_both() {
        let mut s = spec(3);
        s.safeguard = true;
        let l = live(&s, true, true);
        assert!(matches!(
            plan_cluster_remove(&s, &l, false),
            Err(PlanError::SafeguardSet { .. })
        ));
        // H1: every member stopped, data still there: the safeguard refuses all the same.
        let stopped = live(&s, false, true);
        assert!(matches!(
            plan_cluster_remove(&s, &stopped, false),
            Err(PlanError::SafeguardSet { .. })
        ));
        // etcd_clean off refuses a running instance only.
        s.safeguard = false;
        s.clean = false;
        assert!(matches!(
            plan_cluster_remove(&s, &l, false),
            Err(PlanError::InstanceExists { .. })
        ));
        assert!(plan_cluster_remove(&s, &stopped, false).is_ok());
        s.safeguard = true;
        s.clean = true;
        let purge = plan_cluster_remove(&s, &l, true).expect("purge ignores etcd_safeguard");
        assert_eq!(
            purge.wipes,
            vec![
                "etcd-1 @ 10.10.10.10",
                "etcd-2 @ 10.10.10.11",
                "etcd-3 @ 10.10.10.12"
            ]
        );
        let mut l2 = l.clone();
        if let Some(f) = l2.facts.get_mut(&ip("10.10.10.11")) {
            f.safeguard = true;
        }
        assert_eq!(
            plan_cluster_remove(&s, &l2, true).expect_err("local safeguard"),
            PlanError::LocalSafeguard {
                host: ip("10.10.10.11")
            }
        );
        s.safeguard = false;
        let remove = plan_cluster_remove(&s, &l, false).expect("remove");
        assert_eq!(
            names(&remove)[1..3],
            [
                "StopEtcd 10.10.10.10".to_string(),
                "WipeEtcdData 10.10.10.10".to_string()
            ]
        );
    }

    #[test]
    fn config_reload_goes_one_member_at_a_time_behind_the_guard() {
        let s = spec(3);
        let plan = plan_config_reload(&s, &healthy(&s), RestartPolicy::Always).expect("plan");
        let n = names(&plan);
        assert_eq!(n.len(), 12);
        for (i, m) in s.members.iter().enumerate() {
            let h = m.ip.to_string();
            assert_eq!(
                n[i * 4..i * 4 + 4],
                [
                    format!("QuorumGuard {h}"),
                    format!("WriteEtcdConf {h}"),
                    format!("RestartEtcd {h}"),
                    format!("HealthGate {h}"),
                ]
            );
        }
        assert!(
            matches!(plan.steps[2].kind, StepKind::RestartEtcd { force: true, ref if_changed, .. } if if_changed == &vec![1])
        );
        let plain = plan_config_reload(&s, &healthy(&s), RestartPolicy::Never).expect("plan");
        assert!(plain
            .steps
            .iter()
            .all(|st| matches!(st.kind, StepKind::WriteEtcdConf { .. })));
        assert!(
            plain.steps.iter().all(|st| st.diff.is_empty()),
            "unchanged files show no diff"
        );
    }

    #[test]
    fn etcd_restarts_never_fan_out() {
        let s = spec(3);
        let hosts: Vec<IpAddr> = s.members.iter().map(|m| m.ip).collect();
        let err = plan_service(
            &s,
            &live(&s, true, true),
            ServiceName::Etcd,
            ActionName::Restart,
            &hosts,
            2,
        )
        .expect_err("forks 2");
        assert!(err.to_string().contains("one member at a time"), "{err}");
        let ok = plan_service(
            &s,
            &live(&s, true, true),
            ServiceName::Patroni,
            ActionName::Reload,
            &hosts,
            2,
        )
        .expect("patroni may fan out");
        assert_eq!(ok.steps.len(), 2);
    }

    #[test]
    fn diffs_show_old_and_new_lines() {
        let cur = pb::FileFact {
            exists: true,
            sha256: sha256_hex("a\nb\n"),
            content: "a\nb\n".into(),
            path: String::new(),
            problem: String::new(),
        };
        let d = file_diff("/etc/etcd/etcd.conf", Some(&cur), "a\nc\n");
        assert!(d.contains("-b") && d.contains("+c"), "{d}");
        assert!(file_diff("/x", Some(&cur), "a\nb\n").is_empty());
    }

    fn pg_target(n: u8, leader: u8) -> (PgTarget, Live) {
        let mut live = Live::default();
        let members: Vec<crate::clients::patroni::PgNode> = (1..=n)
            .map(|i| {
                let a = ip(&format!("10.10.10.{}", 20 + i));
                live.facts.insert(a, facts(false, false, false));
                crate::clients::patroni::PgNode {
                    ip: a,
                    name: format!("pg-test-{i}"),
                    api: format!("http://{a}:8008"),
                    vip: true,
                }
            })
            .collect();
        let t = PgTarget {
            leader: Some(ip(&format!("10.10.10.{}", 20 + leader))),
            pg: PgRef {
                name: "pg-test".into(),
                members,
            },
            dcs_hosts: vec!["10.10.10.10:2379".into()],
            dcs_endpoints: vec!["https://10.10.10.10:2379".into()],
        };
        (t, live)
    }

    fn kinds_hosts(p: &Plan) -> Vec<(String, String)> {
        p.steps
            .iter()
            .map(|s| (s.kind.name().to_string(), s.kind.hosts_label()))
            .collect()
    }

    #[test]
    fn patroni_reload_visits_replicas_before_the_leader_and_gates_each() {
        let (t, live) = pg_target(3, 1);
        let p = plan_patroni_reload(&[t], &live, false).expect("plans");
        let want: Vec<(String, String)> = ["10.10.10.22", "10.10.10.23", "10.10.10.21"]
            .iter()
            .flat_map(|h| {
                [
                    ("SetPatroniHosts".to_string(), h.to_string()),
                    ("PatroniGate".to_string(), h.to_string()),
                ]
            })
            .collect();
        assert_eq!(kinds_hosts(&p), want);
        assert!(p.notes.iter().any(|n| n.contains("only when it restarts")));
    }

    #[test]
    fn patroni_restart_switches_the_leader_over_before_restarting_it() {
        let (t, live) = pg_target(2, 1);
        let p = plan_patroni_reload(&[t], &live, true).expect("plans");
        let names: Vec<(String, String)> = kinds_hosts(&p);
        let s = |k: &str, h: &str| (k.to_string(), h.to_string());
        assert_eq!(
            names,
            vec![
                s("PatroniGuard", "10.10.10.22"),
                s("SetPatroniHosts", "10.10.10.22"),
                s("PatroniGate", "10.10.10.22"),
                s("Switchover", "10.10.10.21"),
                s("PatroniGuard", "10.10.10.21"),
                s("SetPatroniHosts", "10.10.10.21"),
                s("PatroniGate", "10.10.10.21"),
            ]
        );
        assert!(p.steps.iter().all(|st| match &st.kind {
            StepKind::SetPatroniHosts { restart, .. } => *restart,
            _ => true,
        }));
    }

    #[test]
    fn patroni_restart_of_a_lone_primary_is_refused() {
        let (t, live) = pg_target(1, 1);
        let e = plan_patroni_reload(&[t], &live, true).expect_err("refused");
        assert!(matches!(e, PlanError::Unsafe(_)), "{e}");
        assert!(e.to_string().contains("no replica"), "{e}");
    }

    #[test]
    fn pg_refresh_needs_every_agent_and_puts_the_primary_last() {
        let (t, mut live) = pg_target(2, 2);
        let mut p = Plan::default();
        push_pg_refresh(&mut p, std::slice::from_ref(&t), &live, None).expect("plans");
        let vip: Vec<String> = p
            .steps
            .iter()
            .filter(|s| s.kind.name() == "SetVipEndpoints")
            .map(|s| s.kind.hosts_label())
            .collect();
        assert_eq!(vip, vec!["10.10.10.21", "10.10.10.22"]);
        assert_eq!(
            p.steps
                .iter()
                .filter(|s| s.kind.name() == "VipGate")
                .count(),
            2
        );
        live.facts.remove(&ip("10.10.10.21"));
        let e = push_pg_refresh(&mut Plan::default(), &[t], &live, None).expect_err("no agent");
        assert!(e.to_string().contains("10.10.10.21"), "{e}");
    }

    #[test]
    fn one_start_is_not_counted_and_an_adopted_learner_is_named() {
        let one = StepKind::StartEtcd {
            hosts: vec![ip("10.10.10.10")],
        };
        assert_eq!(one.describe(), "start etcd");
        let two = StepKind::StartEtcd {
            hosts: vec![ip("10.10.10.10"), ip("10.10.10.11")],
        };
        assert_eq!(two.describe(), "start etcd on 2 hosts together");
        // Pigsty's SOP step 1 by hand: a learner for the joining host is there already.
        let s = spec(3);
        let new = ip("10.10.10.12");
        let mut l = healthy(&s);
        l.facts.insert(new, facts(false, false, false));
        if let Some(m) = l.members.iter_mut().flatten().find(|m| m.name == "etcd-3") {
            m.is_learner = true;
            m.client_urls.clear();
        }
        let plan = plan_member_add(&s, new, &l).expect("plan");
        assert!(
            plan.notes
                .iter()
                .any(|n| n.contains("https://10.10.10.12:2380")
                    && n.contains("adopts it instead of adding another")),
            "{:?}",
            plan.notes
        );
        assert!(names(&plan).contains(&"AddLearner 10.10.10.12".to_string()));
        // Without one, nothing is said of learners.
        let mut fresh = healthy(&spec(2));
        fresh.facts.insert(new, facts(false, false, false));
        let plan = plan_member_add(&s, new, &fresh).expect("plan");
        assert!(
            !plan.notes.iter().any(|n| n.contains("adopts")),
            "{:?}",
            plan.notes
        );
    }

    /// A healthy cluster whose leader is the member on `leader`.
    fn led_by(spec: &ClusterSpec, leader: &str) -> Live {
        let mut l = healthy(spec);
        l.leader = l
            .members
            .iter()
            .flatten()
            .find(|m| {
                m.peer_urls
                    .iter()
                    .any(|u| u.contains(&format!("//{leader}:")))
            })
            .map(|m| m.id);
        l
    }

    #[test]
    fn config_reload_restarts_followers_first_and_hands_leadership_over_before_the_leader() {
        let s = spec(3);
        let live = led_by(&s, "10.10.10.10");
        let plan = plan_config_reload(&s, &live, RestartPolicy::Always).expect("plan");
        assert_eq!(
            names(&plan),
            vec![
                "QuorumGuard 10.10.10.11",
                "WriteEtcdConf 10.10.10.11",
                "RestartEtcd 10.10.10.11",
                "HealthGate 10.10.10.11",
                "QuorumGuard 10.10.10.12",
                "WriteEtcdConf 10.10.10.12",
                "RestartEtcd 10.10.10.12",
                "HealthGate 10.10.10.12",
                "QuorumGuard 10.10.10.10",
                "WriteEtcdConf 10.10.10.10",
                "MoveLeaderAway 10.10.10.10",
                "RestartEtcd 10.10.10.10",
                "HealthGate 10.10.10.10",
            ]
        );
        assert_eq!(
            plan.steps[10].kind,
            StepKind::MoveLeaderAway {
                host: ip("10.10.10.10"),
                peer_url: "https://10.10.10.10:2380".into(),
                prefer: vec![ip("10.10.10.11"), ip("10.10.10.12")],
                if_changed: vec![9],
                force: true,
            }
        );
        assert!(
            plan.notes
                .iter()
                .any(|n| n.contains("the leader etcd-1 (10.10.10.10) last")),
            "{:?}",
            plan.notes
        );
        // The same order for `service restart etcd` on every member.
        let hosts: Vec<IpAddr> = s.members.iter().map(|m| m.ip).collect();
        let svc = plan_service(&s, &live, ServiceName::Etcd, ActionName::Restart, &hosts, 1)
            .expect("plan");
        let restarts: Vec<String> = names(&svc)
            .into_iter()
            .filter(|n| n.starts_with("RestartEtcd") || n.starts_with("MoveLeaderAway"))
            .collect();
        assert_eq!(
            restarts,
            vec![
                "RestartEtcd 10.10.10.11",
                "RestartEtcd 10.10.10.12",
                "MoveLeaderAway 10.10.10.10",
                "RestartEtcd 10.10.10.10",
            ]
        );
    }

    #[test]
    fn a_move_step_between_guard_and_restart_keeps_its_shape() {
        // The runner re-checks the guard inside the restart by walking back over writes and
        // this step: the plan must keep it between the two.
        let s = spec(3);
        let plan = plan_config_reload(&s, &led_by(&s, "10.10.10.11"), RestartPolicy::Always)
            .expect("plan");
        let i = plan
            .steps
            .iter()
            .position(|st| matches!(st.kind, StepKind::MoveLeaderAway { .. }))
            .expect("a move step");
        assert!(
            matches!(plan.steps[i - 2].kind, StepKind::QuorumGuard { host } if host == ip("10.10.10.11"))
        );
        assert!(
            matches!(plan.steps[i + 1].kind, StepKind::RestartEtcd { host, .. } if host == ip("10.10.10.11"))
        );
    }

    /// `live` with the etcd.conf of `host` as it would be with `initial-cluster` listing an
    /// extra member (what a member add leaves behind) and, if `other`, a changed heartbeat.
    fn with_old_conf(spec: &ClusterSpec, live: &mut Live, host: &str, other: bool) {
        let mut conf = spec.etcd_conf[&ip(host)].clone();
        conf.initial_cluster.push(pb::EtcdPeer {
            name: "etcd-9".into(),
            ip: "10.10.10.99".into(),
            peer_port: 2380,
        });
        conf.existing = true;
        if other {
            conf.heartbeat_interval_ms = 150;
        }
        let content = quorum_proto::render::format_etcd_conf(&conf);
        if let Some(f) = live.facts.get_mut(&ip(host)) {
            f.files.insert(
                "etcd_conf".into(),
                pb::FileFact {
                    exists: true,
                    sha256: sha256_hex(&content),
                    content,
                    path: String::new(),
                    problem: String::new(),
                },
            );
        }
    }

    #[test]
    fn a_change_only_to_initial_cluster_is_written_without_a_restart() {
        let s = spec(3);
        let mut live = led_by(&s, "10.10.10.12");
        with_old_conf(&s, &mut live, "10.10.10.10", false);
        with_old_conf(&s, &mut live, "10.10.10.11", true);
        let plan = plan_config_reload(&s, &live, RestartPolicy::IfChanged).expect("plan");
        let n = names(&plan);
        assert_eq!(n[0], "WriteEtcdConf 10.10.10.10", "{n:?}");
        assert!(matches!(
            plan.steps[0].kind,
            StepKind::WriteEtcdConf {
                bootstrap_only: true,
                ..
            }
        ));
        assert!(plan.steps[0].kind.describe().contains("no restart"));
        assert!(!n.contains(&"RestartEtcd 10.10.10.10".to_string()), "{n:?}");
        assert!(!n.contains(&"QuorumGuard 10.10.10.10".to_string()), "{n:?}");
        // A real change (the heartbeat) restarts as before; the leader stays last.
        assert!(n.contains(&"RestartEtcd 10.10.10.11".to_string()), "{n:?}");
        assert_eq!(n.last().map(String::as_str), Some("HealthGate 10.10.10.12"));
        assert!(
            plan.notes.iter().any(|x| x.contains(
                "etcd.conf of etcd-1 (10.10.10.10) changes only in initial-cluster / initial-cluster-state"
            )),
            "{:?}",
            plan.notes
        );
        // --restart restarts every member anyway.
        let all = plan_config_reload(&s, &live, RestartPolicy::Always).expect("plan");
        assert!(names(&all).contains(&"RestartEtcd 10.10.10.10".to_string()));
        // A stopped member is not "a running member that ignores it".
        if let Some(f) = live.facts.get_mut(&ip("10.10.10.10")) {
            f.services
                .insert("etcd".into(), pb::ServiceState::Inactive as i32);
        }
        let stopped = plan_config_reload(&s, &live, RestartPolicy::IfChanged).expect("plan");
        assert!(names(&stopped).contains(&"RestartEtcd 10.10.10.10".to_string()));
    }

    fn disagree_text(e: PlanError) -> String {
        assert!(matches!(e, PlanError::InventoryDisagrees { .. }), "{e}");
        e.to_string()
    }

    /// A live member list of `n` members on 10.10.10.10.. (etcd-1..n) for a spec of other members.
    fn live_members(n: u8) -> Vec<MemberInfo> {
        healthy(&spec(n)).members.unwrap_or_default()
    }

    #[test]
    fn every_etcd_sop_refuses_when_the_inventory_misses_a_live_member() {
        // etcd has etcd-1..4; pigsty.yml names etcd-1..3.
        let s = spec(3);
        let mut live = healthy(&s);
        live.members = Some(live_members(4));
        let line = "add `10.10.10.13: { etcd_seq: 4 }` under all.children.etcd.hosts";
        let hosts: Vec<IpAddr> = s.members.iter().map(|m| m.ip).collect();
        for (sop, r) in [
            (
                "reload",
                plan_config_reload(&s, &live, RestartPolicy::IfChanged),
            ),
            ("env", plan_env_refresh(&s, &live)),
            ("create", plan_cluster_create(&s, &live)),
            (
                "restart",
                plan_service(&s, &live, ServiceName::Etcd, ActionName::Restart, &hosts, 1),
            ),
            (
                "stop",
                plan_service(
                    &s,
                    &live,
                    ServiceName::Etcd,
                    ActionName::Stop,
                    &hosts[..1],
                    1,
                ),
            ),
        ] {
            let text = disagree_text(r.expect_err(sop));
            assert!(text.contains(line), "{sop}: {text}");
            assert!(text.contains("nothing was changed"), "{sop}: {text}");
        }
        // A Patroni reload on the same hosts is not an etcd SOP.
        assert!(plan_service(
            &s,
            &live,
            ServiceName::Patroni,
            ActionName::Reload,
            &hosts,
            1
        )
        .is_ok());
    }

    #[test]
    fn a_host_that_never_joined_or_an_unpromoted_learner_is_refused() {
        let s = spec(4);
        let mut live = healthy(&s);
        live.members = Some(live_members(3));
        let text = disagree_text(plan_env_refresh(&s, &live).expect_err("not a member"));
        assert!(
            text.contains("10.10.10.13 (etcd-4, https://10.10.10.13:2380) is in pigsty.yml but not a member of etcd: run `quorum member add 10.10.10.13`"),
            "{text}"
        );
        // Item 9: a learner the inventory names stays out of every profile until promoted.
        let mut members = live_members(4);
        members[3].is_learner = true;
        live.members = Some(members);
        let text = disagree_text(plan_env_refresh(&s, &live).expect_err("learner"));
        assert!(text.contains("learner"), "{text}");
        assert!(text.contains("never promoted"), "{text}");
        // The member list unreadable: nothing to compare, and the plan says so.
        live.members = None;
        live.members_error = "no etcd endpoint answered".into();
        let plan = plan_env_refresh(&s, &live).expect("plan");
        assert!(plan.notes.iter().any(|n| n.contains("was not compared")));
    }

    /// A healthy cluster of every member of `spec` but `new`, which is a fresh host.
    fn joining(spec: &ClusterSpec, new: IpAddr) -> Live {
        let mut live = healthy(spec);
        live.members = Some(live_members(spec.members.len() as u8 - 1));
        live.facts.insert(new, facts(false, false, false));
        live.health.remove(&new);
        live
    }

    #[test]
    fn member_add_expects_only_the_joining_host_to_differ() {
        let s = spec(4);
        let new = ip("10.10.10.13");
        let live = joining(&s, new);
        let plan = plan_member_add(&s, new, &live).expect("plan");
        assert!(names(&plan).contains(&"AddLearner 10.10.10.13".to_string()));
        // e2e probe F3a: etcd has a member the inventory lacks.
        let s2 = ClusterSpec {
            members: s.members[1..].to_vec(),
            ..s.clone()
        };
        let text = disagree_text(plan_member_add(&s2, new, &live).expect_err("F3a"));
        assert!(
            text.contains("member etcd-1 (https://10.10.10.10:2380) is not in pigsty.yml: add `10.10.10.10: { etcd_seq: 1 }`"),
            "{text}"
        );
    }

    #[test]
    fn member_add_lists_the_learner_in_no_client_file_before_it_is_promoted() {
        let s = spec(4);
        let new = ip("10.10.10.13");
        let mut live = joining(&s, new);
        let mut plan = plan_member_add(&s, new, &live).expect("plan");
        let (t, _) = pg_target(2, 1);
        let t = PgTarget {
            dcs_hosts: s.members.iter().map(|m| format!("{}:2379", m.ip)).collect(),
            dcs_endpoints: s.client_urls(),
            ..t
        };
        for m in &t.pg.members {
            live.facts.insert(m.ip, facts(false, false, false));
        }
        push_pg_refresh(&mut plan, std::slice::from_ref(&t), &live, None).expect("refresh");
        let promote = plan
            .steps
            .iter()
            .position(|st| matches!(st.kind, StepKind::PromoteLearner { .. }))
            .expect("a promote step");
        let lists_new = |st: &Step| match &st.kind {
            StepKind::WriteEtcdctlProfile { profile, .. } => profile
                .as_ref()
                .is_some_and(|p| p.endpoints.iter().any(|e| e.ip == "10.10.10.13")),
            StepKind::SetPatroniHosts { hosts, .. } => {
                hosts.iter().any(|h| h.starts_with("10.10.10.13:"))
            }
            StepKind::SetVipEndpoints { endpoints, .. } => {
                endpoints.iter().any(|e| e.contains("//10.10.10.13:"))
            }
            _ => false,
        };
        let client_lists: Vec<usize> = plan
            .steps
            .iter()
            .enumerate()
            .filter(|(_, st)| lists_new(st))
            .map(|(i, _)| i)
            .collect();
        // Its own profile (this fixture's profiles list their host only), 2 Patroni, 2 VIP.
        assert_eq!(client_lists.len(), 1 + 2 + 2, "{:?}", names(&plan));
        assert!(
            client_lists.iter().all(|i| *i > promote),
            "a client list names the learner before PromoteLearner (step {promote}): {:?}",
            names(&plan)
        );
        // Before the promotion only the learner's own etcd.conf and certs are written.
        let before: Vec<String> = names(&plan)[..promote].to_vec();
        assert_eq!(
            before,
            vec![
                "MemberAddCheck 10.10.10.13",
                "AddLearner 10.10.10.13",
                "WriteEtcdCerts 10.10.10.13",
                "WriteEtcdConf 10.10.10.13",
                "StartEtcd 10.10.10.13",
            ]
        );
    }

    #[test]
    fn member_remove_expects_only_the_leaving_host_to_differ() {
        let s = spec(3);
        let gone = s.members[2].clone();
        let remaining = ClusterSpec {
            members: s.members[..2].to_vec(),
            ..s.clone()
        };
        let live = healthy(&s);
        let plan = plan_member_remove(&remaining, &gone, &live, false).expect("plan");
        assert_eq!(plan.wipes, vec!["etcd-3 @ 10.10.10.12"]);
        // The inventory also lost another live member: refused with its line.
        let one = ClusterSpec {
            members: s.members[1..2].to_vec(),
            ..s.clone()
        };
        let text =
            disagree_text(plan_member_remove(&one, &gone, &live, false).expect_err("refused"));
        assert!(
            text.contains("add `10.10.10.10: { etcd_seq: 1 }`"),
            "{text}"
        );
    }

    /// The step -> executor table holds for every step the planners make: an agent step has
    /// hosts to send its task to, a coordinator step none.
    #[test]
    fn every_planned_step_has_an_executor_and_agent_steps_have_hosts() {
        let s = spec(3);
        let l = healthy(&s);
        let remaining = ClusterSpec {
            members: s.members[..2].to_vec(),
            ..s.clone()
        };
        let mut plans = vec![
            plan_cluster_create(&s, &live(&s, false, false)).expect("create"),
            plan_config_reload(&s, &l, RestartPolicy::Always).expect("reload"),
            plan_env_refresh(&s, &l).expect("env"),
            plan_member_remove(&remaining, &s.members[2], &l, false).expect("remove"),
            plan_cluster_remove(&s, &live(&s, false, false), true).expect("purge"),
        ];
        let mut dead = healthy(&s);
        dead.facts.remove(&s.members[2].ip);
        plans.push(plan_member_remove(&remaining, &s.members[2], &dead, false).expect("dead"));
        let mut seen = std::collections::BTreeSet::new();
        for step in plans.iter().flat_map(|p| &p.steps) {
            let hosts = step.kind.agent_hosts();
            match step.kind.executor() {
                Executor::Agent(task) => {
                    assert!(!hosts.is_empty(), "{} -> {task}", step.kind.name())
                }
                Executor::Coordinator(_) => assert!(hosts.is_empty(), "{}", step.kind.name()),
            }
            seen.insert(step.kind.name());
        }
        assert!(seen.len() >= 15, "{seen:?}");
    }

    #[test]
    fn a_dead_hosts_cleanup_is_deferred_or_forgotten_never_dispatched() {
        let s = spec(3);
        let gone = s.members[2].clone();
        let remaining = ClusterSpec {
            members: s.members[..2].to_vec(),
            ..s.clone()
        };
        let kinds = |p: &Plan| p.steps.iter().map(|st| st.kind.name()).collect::<Vec<_>>();
        let mut live = healthy(&s);
        live.facts.remove(&gone.ip);
        live.stale.push(gone.ip);
        let plan = plan_member_remove(&remaining, &gone, &live, false).expect("plan");
        let k = kinds(&plan);
        assert!(
            k.contains(&"RemoveMember") && k.contains(&"DeferCleanup"),
            "{k:?}"
        );
        // Nothing is sent to the dead host itself.
        assert!(
            plan.steps
                .iter()
                .all(|st| st.kind.agent_hosts() != vec![gone.ip]),
            "{k:?}"
        );
        assert!(
            plan.notes
                .iter()
                .any(|n| n.contains("10.10.10.12 is stale")),
            "{:?}",
            plan.notes
        );
        assert_eq!(
            plan.wipes,
            vec!["etcd-3 @ 10.10.10.12 (once its agent is back)"]
        );
        // --forget: removed from etcd, nothing recorded, nothing to confirm.
        let plan = plan_member_remove(&remaining, &gone, &live, true).expect("plan");
        assert!(!kinds(&plan).contains(&"DeferCleanup"));
        assert!(plan.wipes.is_empty());
        // --forget for a host whose agent is connected is bad input.
        let e = plan_member_remove(&remaining, &gone, &healthy(&s), true).expect_err("usage");
        assert!(matches!(e, PlanError::Usage(_)), "{e}");
    }

    #[test]
    fn a_leaving_host_out_of_the_inventory_is_named_as_etcd_lists_it() {
        // e2e probe F6: Pigsty's order takes the host out of pigsty.yml first.
        let s = spec(3);
        let live = healthy(&s);
        let fallback = MemberSpec {
            ip: ip("10.10.10.11"),
            name: "etcd-0".into(),
            client_url: "https://10.10.10.11:2379".into(),
            peer_url: "https://10.10.10.11:2380".into(),
        };
        let gone = leaving_member(&live, ip("10.10.10.11"), fallback.clone(), false);
        assert_eq!(gone.name, "etcd-2");
        let remaining = ClusterSpec {
            members: vec![s.members[0].clone(), s.members[2].clone()],
            ..s.clone()
        };
        let plan = plan_member_remove(&remaining, &gone, &live, false).expect("plan");
        assert_eq!(plan.wipes, vec!["etcd-2 @ 10.10.10.11"]);
        // Not listed by etcd either: no made-up name.
        let stranger = leaving_member(
            &live,
            ip("10.10.10.77"),
            MemberSpec {
                ip: ip("10.10.10.77"),
                ..fallback
            },
            false,
        );
        assert_eq!(
            member_label(&stranger),
            "member at 10.10.10.77 (name unknown)"
        );
    }
}
