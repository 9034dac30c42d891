//! Ad-hoc tasks (`quorum task`, the RunTask and RunTasks calls): the rules the server applies
//! before it queues one. The CLI asks for `--yes` too, but a raw gRPC call skips the CLI, so
//! the coordinator decides: a task that stops, restarts or wipes something runs only when the
//! request says it was confirmed, and a fan-out never takes down more than one member of an
//! etcd cluster at once (SOPs are the guarded way to do that, one member at a time).

use std::net::IpAddr;

use pb::task::Kind;
use quorum_proto::pb;
use tonic::Status;

use crate::model::inventory::Inventory;

/// What a task stops, restarts or wipes, in the operator's words; `None` when it is harmless
/// (facts, a status, a start, a reload, a file write without a restart).
pub fn disruption(kind: &Kind) -> Option<String> {
    match kind {
        Kind::ServiceAction(a) => {
            let verb = match pb::Action::try_from(a.action) {
                Ok(pb::Action::Stop) => "stop",
                Ok(pb::Action::Restart) => "restart",
                _ => return None,
            };
            let service = match pb::Service::try_from(a.service) {
                Ok(pb::Service::Etcd) => "etcd".to_string(),
                Ok(pb::Service::Patroni) => "patroni".to_string(),
                Ok(pb::Service::VipManager) => "vip-manager".to_string(),
                _ => format!("service {}", a.service),
            };
            Some(format!("{verb} {service}"))
        }
        Kind::WipeEtcdData(w) if w.purge => {
            Some("stop etcd and wipe its data dir (purge)".to_string())
        }
        Kind::WipeEtcdData(_) => Some("wipe the etcd data dir".to_string()),
        Kind::SetPatroniDcsHosts(t) if t.restart => {
            Some("rewrite Patroni's etcd hosts and restart Patroni".to_string())
        }
        // vip-manager reads its endpoints only at start, so this task always restarts it.
        Kind::SetVipEndpoints(_) => {
            Some("rewrite vip-manager's endpoints and restart vip-manager".to_string())
        }
        _ => None,
    }
}

/// Refuses a disruptive task the operator did not confirm; `targets` names the hosts.
pub fn require_confirmation(kind: &Kind, confirmed: bool, targets: &str) -> Result<(), Status> {
    match disruption(kind) {
        Some(what) if !confirmed => Err(Status::failed_precondition(format!(
            "this task would {what} on {targets} outside any SOP, without the quorum guard, and the request is not confirmed; \
             confirm it (`quorum task --yes`, or `confirmed: true` in the request) or use the SOP commands; nothing was queued"
        ))),
        _ => Ok(()),
    }
}

/// Whether the task takes etcd down on its host (a stop, a restart, a purge).
fn takes_etcd_down(kind: &Kind) -> bool {
    match kind {
        Kind::ServiceAction(a) => {
            pb::Service::try_from(a.service) == Ok(pb::Service::Etcd)
                && matches!(
                    pb::Action::try_from(a.action),
                    Ok(pb::Action::Stop | pb::Action::Restart)
                )
        }
        Kind::WipeEtcdData(w) => w.purge,
        _ => false,
    }
}

/// Whether a fan-out of `kind` to `targets` could take more than one etcd member down, so
/// [`fan_out_guard`] must look at the inventory.
pub fn needs_fan_out_guard(kind: &Kind, targets: &[IpAddr]) -> bool {
    takes_etcd_down(kind) && targets.len() > 1
}

/// The quorum guard of a fan-out: refuses one that would take etcd down on more than one
/// member of one etcd cluster at once. `inventory` is the coordinator's inventory, or why it
/// could not be read (then any fan-out to two or more hosts is refused, since which of them
/// are members of one cluster is unknown).
pub fn fan_out_guard(
    kind: &Kind,
    targets: &[IpAddr],
    inventory: Result<&Inventory, String>,
) -> Result<(), Status> {
    if !needs_fan_out_guard(kind, targets) {
        return Ok(());
    }
    let what = disruption(kind).unwrap_or_else(|| "take etcd down".into());
    let inv = match inventory {
        Ok(inv) => inv,
        Err(why) => {
            return Err(Status::failed_precondition(format!(
                "this fan-out would {what} on {} hosts at once, and the coordinator cannot tell which of them are members of one etcd cluster ({why}); \
                 run it on one host at a time, or use `quorum service restart etcd --hosts ...`, which rolls one member at a time behind the quorum guard; nothing was queued",
                targets.len()
            )))
        }
    };
    for cluster in inv.etcd_clusters() {
        let hit: Vec<_> = cluster
            .members
            .iter()
            .filter(|m| targets.contains(&m.ip))
            .collect();
        if hit.len() < 2 {
            continue;
        }
        let names: Vec<String> = hit
            .iter()
            .map(|m| format!("{} @ {}", m.name, m.ip))
            .collect();
        let ips: Vec<String> = hit.iter().map(|m| m.ip.to_string()).collect();
        let hint = match kind {
            Kind::WipeEtcdData(_) => "purge one host at a time, or use `quorum member remove` (one member) or `quorum cluster purge` (the whole cluster, with a snapshot)".to_string(),
            Kind::ServiceAction(a) if pb::Action::try_from(a.action) == Ok(pb::Action::Stop) => format!(
                "use `quorum service stop etcd --hosts {}`, which goes one member at a time behind the quorum guard",
                ips.join(",")
            ),
            _ => format!(
                "use `quorum service restart etcd --hosts {}`, which rolls one member at a time behind the quorum guard",
                ips.join(",")
            ),
        };
        return Err(Status::failed_precondition(format!(
            "this fan-out would {what} on {} members of etcd cluster {} at once ({}); at most one voting member may be down at a time, \
             or the cluster can lose its quorum. {hint}; nothing was queued",
            hit.len(),
            cluster.name,
            names.join(", "),
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(service: pb::Service, action: pb::Action) -> Kind {
        Kind::ServiceAction(pb::ServiceAction {
            service: service as i32,
            action: action as i32,
            if_changed: vec![],
            force: true,
            with_log: false,
        })
    }

    #[test]
    fn what_needs_confirmation() {
        for kind in [
            service(pb::Service::Etcd, pb::Action::Restart),
            service(pb::Service::Patroni, pb::Action::Stop),
            service(pb::Service::VipManager, pb::Action::Restart),
            Kind::WipeEtcdData(pb::WipeEtcdData {
                purge: false,
                ..Default::default()
            }),
            Kind::SetPatroniDcsHosts(pb::SetPatroniDcsHosts {
                hosts: vec!["a:1".into()],
                restart: true,
            }),
            Kind::SetVipEndpoints(pb::SetVipEndpoints {
                endpoints: vec![],
                defer_restart: false,
            }),
        ] {
            let err = require_confirmation(&kind, false, "10.10.10.11").unwrap_err();
            assert_eq!(err.code(), tonic::Code::FailedPrecondition);
            assert!(
                err.message().contains("on 10.10.10.11"),
                "{}",
                err.message()
            );
            assert!(require_confirmation(&kind, true, "10.10.10.11").is_ok());
        }
        for kind in [
            service(pb::Service::Etcd, pb::Action::Start),
            service(pb::Service::Etcd, pb::Action::Status),
            service(pb::Service::Patroni, pb::Action::Reload),
            Kind::CollectFacts(pb::CollectFacts {}),
            Kind::SetPatroniDcsHosts(pb::SetPatroniDcsHosts {
                hosts: vec!["a:1".into()],
                restart: false,
            }),
        ] {
            assert!(require_confirmation(&kind, false, "x").is_ok());
        }
    }

    #[test]
    fn a_fan_out_takes_down_one_member_per_cluster_at_most(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let inv = Inventory::parse(
            "pigsty.yml",
            "all:\n  children:\n    etcd:\n      hosts:\n        10.0.0.1: { etcd_seq: 1 }\n        10.0.0.2: { etcd_seq: 2 }\n        10.0.0.3: { etcd_seq: 3 }\n      vars: { etcd_cluster: etcd }\n    etcd2:\n      hosts:\n        10.0.1.1: { etcd_seq: 1 }\n      vars: { etcd_cluster: etcd2 }\n",
        )?;
        let ip = |s: &str| s.parse::<IpAddr>();
        let restart = service(pb::Service::Etcd, pb::Action::Restart);
        let err =
            fan_out_guard(&restart, &[ip("10.0.0.1")?, ip("10.0.0.3")?], Ok(&inv)).unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
        assert!(
            err.message().contains(
                "2 members of etcd cluster etcd at once (etcd-1 @ 10.0.0.1, etcd-3 @ 10.0.0.3)"
            ) && err
                .message()
                .contains("quorum service restart etcd --hosts 10.0.0.1,10.0.0.3"),
            "{}",
            err.message()
        );
        // One member of each cluster, or hosts outside any cluster: allowed.
        assert!(fan_out_guard(
            &restart,
            &[ip("10.0.0.1")?, ip("10.0.1.1")?, ip("10.9.9.9")?],
            Ok(&inv)
        )
        .is_ok());
        // Purge stops etcd too; a plain wipe (refused by agents while etcd runs) does not.
        let purge = Kind::WipeEtcdData(pb::WipeEtcdData {
            purge: true,
            ..Default::default()
        });
        assert!(fan_out_guard(&purge, &[ip("10.0.0.1")?, ip("10.0.0.2")?], Ok(&inv)).is_err());
        let wipe = Kind::WipeEtcdData(pb::WipeEtcdData {
            purge: false,
            ..Default::default()
        });
        assert!(fan_out_guard(&wipe, &[ip("10.0.0.1")?, ip("10.0.0.2")?], Ok(&inv)).is_ok());
        let patroni = service(pb::Service::Patroni, pb::Action::Restart);
        assert!(fan_out_guard(&patroni, &[ip("10.0.0.1")?, ip("10.0.0.2")?], Ok(&inv)).is_ok());
        // No inventory: which hosts share a cluster is unknown, so two at once are refused.
        let err = fan_out_guard(
            &restart,
            &[ip("10.0.0.1")?, ip("10.0.1.1")?],
            Err("cannot read pigsty.yml".into()),
        )
        .unwrap_err();
        assert!(
            err.message().contains("cannot read pigsty.yml"),
            "{}",
            err.message()
        );
        Ok(())
    }
}
