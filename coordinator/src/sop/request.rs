//! An SOP as the operator asked for it: the typed form of a `StartRunRequest`, checked once at
//! the daemon's edge and kept with the run (its audit trail, in the store's JSON).

use std::net::IpAddr;

use quorum_proto::pb;
use serde::{Deserialize, Serialize};
use tonic::Status;

use crate::sop::plan::{ActionName, RestartPolicy, ServiceName};

/// Which PostgreSQL clusters a Patroni or VIP SOP visits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PgPick {
    /// The inventory's only one.
    Only,
    /// This `pg_cluster`.
    Cluster(String),
    /// Every one in the inventory.
    All,
}

/// One SOP and its own arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "sop", rename_all = "kebab-case")]
pub enum SopRequest {
    /// `quorum cluster create`.
    ClusterCreate,
    /// `quorum cluster remove`.
    ClusterRemove,
    /// `quorum cluster purge`.
    ClusterPurge,
    /// `quorum config reload`.
    ConfigReload {
        /// Which members restart.
        restart: RestartPolicy,
    },
    /// `quorum env refresh`.
    EnvRefresh,
    /// `quorum service ACTION SERVICE`.
    Service {
        /// The service.
        service: ServiceName,
        /// What to do.
        action: ActionName,
        /// IPs or inventory group names; empty: the service's hosts.
        hosts: Vec<String>,
        /// Hosts at once (etcd stops and restarts: one).
        forks: usize,
    },
    /// `quorum member add`.
    MemberAdd {
        /// The joining host.
        host: IpAddr,
        /// `etcd_seq` for a host not in the inventory yet.
        seq: Option<u32>,
    },
    /// `quorum member remove`.
    MemberRemove {
        /// The leaving host.
        host: IpAddr,
        /// Record no cleanup for its return, and drop one recorded earlier.
        forget: bool,
    },
    /// `quorum patroni reload`.
    PatroniReload {
        /// Which PostgreSQL clusters.
        pg: PgPick,
        /// Restart Patroni instead of reloading it.
        restart_patroni: bool,
    },
    /// `quorum vip reload`.
    VipReload {
        /// Which PostgreSQL clusters.
        pg: PgPick,
    },
    /// Not asked for by an operator: the stop, wipe and retirement of a member removed while
    /// its host's agent was unreachable, recorded by run `parent` and started when that
    /// agent connects again.
    HostCleanup {
        /// The host.
        host: IpAddr,
        /// The member remove that recorded it.
        parent: String,
    },
}

/// The SOP names runs are stored and shown with.
pub mod sop_name {
    /// `quorum cluster create`.
    pub const CLUSTER_CREATE: &str = "cluster-create";
    /// `quorum cluster remove`.
    pub const CLUSTER_REMOVE: &str = "cluster-remove";
    /// `quorum cluster purge`.
    pub const CLUSTER_PURGE: &str = "cluster-purge";
    /// `quorum config reload`.
    pub const CONFIG_RELOAD: &str = "config-reload";
    /// `quorum env refresh`.
    pub const ENV_REFRESH: &str = "env-refresh";
    /// `quorum service ...`.
    pub const SERVICE: &str = "service";
    /// `quorum member add`.
    pub const MEMBER_ADD: &str = "member-add";
    /// `quorum member remove`.
    pub const MEMBER_REMOVE: &str = "member-remove";
    /// `quorum patroni reload`.
    pub const PATRONI_RELOAD: &str = "patroni-reload";
    /// `quorum vip reload`.
    pub const VIP_RELOAD: &str = "vip-reload";
    /// A deferred cleanup (see [`super::SopRequest::HostCleanup`]).
    pub const HOST_CLEANUP: &str = "host-cleanup";
}

impl SopRequest {
    /// The name runs of this SOP are stored and shown with.
    pub fn name(&self) -> &'static str {
        match self {
            SopRequest::ClusterCreate => sop_name::CLUSTER_CREATE,
            SopRequest::ClusterRemove => sop_name::CLUSTER_REMOVE,
            SopRequest::ClusterPurge => sop_name::CLUSTER_PURGE,
            SopRequest::ConfigReload { .. } => sop_name::CONFIG_RELOAD,
            SopRequest::EnvRefresh => sop_name::ENV_REFRESH,
            SopRequest::Service { .. } => sop_name::SERVICE,
            SopRequest::MemberAdd { .. } => sop_name::MEMBER_ADD,
            SopRequest::MemberRemove { .. } => sop_name::MEMBER_REMOVE,
            SopRequest::PatroniReload { .. } => sop_name::PATRONI_RELOAD,
            SopRequest::VipReload { .. } => sop_name::VIP_RELOAD,
            SopRequest::HostCleanup { .. } => sop_name::HOST_CLEANUP,
        }
    }
}

/// A `StartRunRequest`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The etcd cluster; `None`: the inventory's only one.
    pub cluster: Option<String>,
    /// Plan and show only.
    pub plan_only: bool,
    /// The operator confirmed the plan's wipes.
    pub confirmed: bool,
    /// No snapshot before destructive steps.
    pub no_snapshot: bool,
    /// The SOP.
    pub sop: SopRequest,
}

fn host(s: &str, flag: &str) -> Result<IpAddr, Status> {
    s.parse().map_err(|_| {
        Status::invalid_argument(format!(
            "{flag}: {s:?} is not an IP address; give the member's host as an IP address"
        ))
    })
}

fn pick(p: Option<&pb::PgSelection>) -> PgPick {
    match p.and_then(|p| p.pick.as_ref()) {
        Some(pb::pg_selection::Pick::Cluster(c)) if !c.is_empty() => PgPick::Cluster(c.clone()),
        Some(pb::pg_selection::Pick::All(true)) => PgPick::All,
        _ => PgPick::Only,
    }
}

fn pb_pick(p: &PgPick) -> Option<pb::PgSelection> {
    let pick = match p {
        PgPick::Only => return None,
        PgPick::Cluster(c) => pb::pg_selection::Pick::Cluster(c.clone()),
        PgPick::All => pb::pg_selection::Pick::All(true),
    };
    Some(pb::PgSelection { pick: Some(pick) })
}

impl Request {
    /// Checks a request off the wire: every field typed, or INVALID_ARGUMENT naming it.
    pub fn from_pb(r: &pb::StartRunRequest) -> Result<Self, Status> {
        use pb::start_run_request::Sop;
        let sop = match &r.sop {
            None => {
                return Err(Status::invalid_argument(
                    "the request names no SOP: a Quorum 0.2 CLI sends SOPs as untyped arguments, which this coordinator no longer takes; upgrade the CLI (the `quorum` package) to the coordinator's version",
                ))
            }
            Some(Sop::ClusterCreate(_)) => SopRequest::ClusterCreate,
            Some(Sop::ClusterRemove(_)) => SopRequest::ClusterRemove,
            Some(Sop::ClusterPurge(_)) => SopRequest::ClusterPurge,
            Some(Sop::EnvRefresh(_)) => SopRequest::EnvRefresh,
            Some(Sop::ConfigReload(c)) => SopRequest::ConfigReload {
                restart: match pb::RestartPolicy::try_from(c.restart) {
                    Ok(pb::RestartPolicy::Always) => RestartPolicy::Always,
                    Ok(pb::RestartPolicy::Never) => RestartPolicy::Never,
                    Ok(pb::RestartPolicy::IfChanged | pb::RestartPolicy::Unspecified) => {
                        RestartPolicy::IfChanged
                    }
                    Err(_) => {
                        return Err(Status::invalid_argument(format!(
                            "unknown restart policy {}: use always, if-changed or never",
                            c.restart
                        )))
                    }
                },
            },
            Some(Sop::Service(s)) => SopRequest::Service {
                service: ServiceName::from_pb(s.service).ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "unknown service {}: etcd, patroni or vip-manager",
                        s.service
                    ))
                })?,
                action: ActionName::from_pb(s.action).ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "unknown action {}: start, stop, restart, reload or status",
                        s.action
                    ))
                })?,
                hosts: s.hosts.clone(),
                forks: (s.forks as usize).max(1),
            },
            Some(Sop::MemberAdd(m)) => SopRequest::MemberAdd {
                host: host(&m.host, "member add")?,
                seq: m.seq,
            },
            Some(Sop::MemberRemove(m)) => SopRequest::MemberRemove {
                host: host(&m.host, "member remove")?,
                forget: m.forget,
            },
            Some(Sop::PatroniReload(p)) => SopRequest::PatroniReload {
                pg: pick(p.pg.as_ref()),
                restart_patroni: p.restart_patroni,
            },
            Some(Sop::VipReload(v)) => SopRequest::VipReload {
                pg: pick(v.pg.as_ref()),
            },
        };
        Ok(Self {
            cluster: Some(r.cluster.clone()).filter(|c| !c.is_empty()),
            plan_only: r.plan_only,
            confirmed: r.confirmed,
            no_snapshot: r.no_snapshot,
            sop,
        })
    }

    /// The wire form (what the CLI sends). A [`SopRequest::HostCleanup`] is never sent: it
    /// is refused as bad input here.
    pub fn to_pb(&self) -> Result<pb::StartRunRequest, Status> {
        use pb::start_run_request::Sop;
        let sop = match &self.sop {
            SopRequest::ClusterCreate => Sop::ClusterCreate(pb::ClusterCreate {}),
            SopRequest::ClusterRemove => Sop::ClusterRemove(pb::ClusterRemove {}),
            SopRequest::ClusterPurge => Sop::ClusterPurge(pb::ClusterPurge {}),
            SopRequest::EnvRefresh => Sop::EnvRefresh(pb::EnvRefresh {}),
            SopRequest::ConfigReload { restart } => Sop::ConfigReload(pb::ConfigReload {
                restart: match restart {
                    RestartPolicy::Always => pb::RestartPolicy::Always,
                    RestartPolicy::Never => pb::RestartPolicy::Never,
                    RestartPolicy::IfChanged => pb::RestartPolicy::IfChanged,
                } as i32,
            }),
            SopRequest::Service {
                service,
                action,
                hosts,
                forks,
            } => Sop::Service(pb::ServiceSop {
                service: service.pb() as i32,
                action: action.pb() as i32,
                hosts: hosts.clone(),
                forks: u32::try_from(*forks).unwrap_or(u32::MAX),
            }),
            SopRequest::MemberAdd { host, seq } => Sop::MemberAdd(pb::MemberAdd {
                host: host.to_string(),
                seq: *seq,
            }),
            SopRequest::MemberRemove { host, forget } => Sop::MemberRemove(pb::MemberRemove {
                host: host.to_string(),
                forget: *forget,
            }),
            SopRequest::PatroniReload {
                pg,
                restart_patroni,
            } => Sop::PatroniReload(pb::PatroniReload {
                pg: pb_pick(pg),
                restart_patroni: *restart_patroni,
            }),
            SopRequest::VipReload { pg } => Sop::VipReload(pb::VipReload { pg: pb_pick(pg) }),
            SopRequest::HostCleanup { .. } => {
                return Err(Status::invalid_argument(
                    "a host cleanup is recorded by a member remove, never asked for",
                ))
            }
        };
        Ok(pb::StartRunRequest {
            cluster: self.cluster.clone().unwrap_or_default(),
            plan_only: self.plan_only,
            confirmed: self.confirmed,
            no_snapshot: self.no_snapshot,
            sop: Some(sop),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operator_sop_goes_over_the_wire_and_back_unchanged() -> Result<(), Status> {
        let ip: IpAddr = IpAddr::from([10, 10, 10, 13]);
        let sops = vec![
            SopRequest::ClusterCreate,
            SopRequest::ClusterRemove,
            SopRequest::ClusterPurge,
            SopRequest::EnvRefresh,
            SopRequest::ConfigReload {
                restart: RestartPolicy::Never,
            },
            SopRequest::ConfigReload {
                restart: RestartPolicy::Always,
            },
            SopRequest::Service {
                service: ServiceName::Patroni,
                action: ActionName::Restart,
                hosts: vec!["10.10.10.11".into(), "pg-test".into()],
                forks: 2,
            },
            SopRequest::MemberAdd {
                host: ip,
                seq: Some(4),
            },
            SopRequest::MemberRemove {
                host: ip,
                forget: true,
            },
            SopRequest::PatroniReload {
                pg: PgPick::Cluster("pg-test".into()),
                restart_patroni: true,
            },
            SopRequest::VipReload { pg: PgPick::All },
            SopRequest::VipReload { pg: PgPick::Only },
        ];
        for sop in sops {
            let r = Request {
                cluster: Some("etcd".into()),
                plan_only: true,
                confirmed: true,
                no_snapshot: false,
                sop,
            };
            assert_eq!(Request::from_pb(&r.to_pb()?)?, r);
        }
        Ok(())
    }

    #[test]
    fn bad_fields_are_named() {
        let r = pb::StartRunRequest {
            sop: Some(pb::start_run_request::Sop::MemberAdd(pb::MemberAdd {
                host: "etcd-4".into(),
                seq: None,
            })),
            ..Default::default()
        };
        let e = Request::from_pb(&r).err().map(|e| e.message().to_string());
        assert!(
            e.as_deref()
                .is_some_and(|m| m.contains("\"etcd-4\" is not an IP address")),
            "{e:?}"
        );
        let e = Request::from_pb(&pb::StartRunRequest::default())
            .err()
            .map(|e| e.message().to_string());
        assert!(
            e.as_deref().is_some_and(|m| m.contains("upgrade the CLI")),
            "{e:?}"
        );
    }
}
