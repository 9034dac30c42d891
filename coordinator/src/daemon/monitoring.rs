//! `quorum monitor register|deregister`: which infra hosts get Quorum's scrape target and
//! alert rules, and the typed task each host's agent runs. Pigsty's own roles write their
//! target files into every infra node's metrics stack (`/infra/targets/<job>/`, or
//! `/etc/prometheus/targets/` up to v3) and load every rule file beside theirs; Quorum does
//! the same through its agents, so nothing of Pigsty is edited.

use std::net::{IpAddr, SocketAddr};

use quorum_proto::pb;
use tonic::Status;

use crate::model::inventory::Inventory;

/// The hosts a monitoring request visits, and the task each one runs. `metrics_listen` is
/// the coordinator's plain-HTTP listener (`metrics_listen` in its config).
pub fn plan(
    inv: &Inventory,
    req: &pb::MonitoringRequest,
    metrics_listen: Option<SocketAddr>,
) -> Result<(Vec<IpAddr>, pb::Task), Status> {
    let infra = inv.infra();
    if infra.hosts.is_empty() {
        return Err(Status::invalid_argument(format!(
            "{} has no `infra` group with hosts: Pigsty's metrics stack runs on the infra nodes it lists, and Quorum registers there; list them in an `infra` group with infra_seq, as Pigsty's own inventories do; nothing was changed",
            inv.file()
        )));
    }
    let mut hosts = Vec::new();
    for given in req.hosts.iter().flat_map(|h| h.split(',')).map(str::trim) {
        if given.is_empty() {
            continue;
        }
        let ip: IpAddr = given
            .parse()
            .map_err(|_| Status::invalid_argument(format!("--hosts {given}: not an IP address")))?;
        if !infra.hosts.iter().any(|h| h.ip == ip) {
            return Err(Status::invalid_argument(format!(
                "--hosts {ip}: not a host of the `infra` group in {} ({}); nothing was changed",
                inv.file(),
                list(infra.hosts.iter().map(|h| h.ip))
            )));
        }
        hosts.push(ip);
    }
    if hosts.is_empty() {
        hosts = infra.hosts.iter().map(|h| h.ip).collect();
    }
    hosts.sort();
    hosts.dedup();
    let layout = if infra.pigsty.generation.v4() {
        pb::MonitoringLayout::Victoria
    } else {
        pb::MonitoringLayout::Prometheus
    };
    let targets = if req.deregister {
        Vec::new()
    } else {
        vec![target(inv, metrics_listen, &hosts)?]
    };
    let task = pb::Task {
        id: String::new(),
        epoch: 0,
        epoch_holder: String::new(),
        kind: Some(pb::task::Kind::WriteMonitoring(pb::WriteMonitoring {
            layout: layout as i32,
            targets,
            remove: req.deregister,
        })),
    };
    Ok((hosts, task))
}

/// The scrape target for this coordinator: its `metrics_listen`, with the inventory's
/// `admin_ip` in place of an unspecified address.
fn target(
    inv: &Inventory,
    metrics_listen: Option<SocketAddr>,
    hosts: &[IpAddr],
) -> Result<pb::MonitorTarget, Status> {
    let Some(listen) = metrics_listen else {
        return Err(Status::invalid_argument(
            "the coordinator serves no metrics: metrics_listen is not set in its config; set it to the admin node's address and a port (for example `metrics_listen: 10.10.10.10:9808`), restart quorum, then register again; nothing was changed",
        ));
    };
    let ip = if listen.ip().is_unspecified() {
        inv.infra().admin_ip.ok_or_else(|| {
            Status::invalid_argument(format!(
                "metrics_listen is {listen}, which names no address Prometheus can scrape, and {} sets no admin_ip to use instead; bind metrics_listen to the admin node's address, or set admin_ip in all.vars; nothing was changed",
                inv.file()
            ))
        })?
    } else {
        listen.ip()
    };
    if ip.is_loopback() {
        if let Some(far) = hosts.iter().find(|h| !h.is_loopback()) {
            return Err(Status::invalid_argument(format!(
                "metrics_listen is {listen}, a loopback address that the metrics stack on infra host {far} cannot reach; bind it to the admin node's address, restart quorum, then register again; nothing was changed"
            )));
        }
    }
    Ok(pb::MonitorTarget {
        ip: ip.to_string(),
        port: u32::from(listen.port()),
        ins: "quorum-1".into(),
    })
}

fn list(ips: impl Iterator<Item = IpAddr>) -> String {
    ips.map(|ip| ip.to_string()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv(vars: &str, infra: &str) -> Inventory {
        let text = format!(
            "all:\n  vars: {{ {vars} }}\n  children:\n{infra}    etcd:\n      hosts:\n        10.10.10.10: {{ etcd_seq: 1 }}\n      vars: {{ etcd_cluster: etcd }}\n"
        );
        match Inventory::parse("pigsty.yml", &text) {
            Ok(i) => i,
            Err(e) => panic!("{e}\n{text}"),
        }
    }

    const INFRA: &str =
        "    infra:\n      hosts:\n        10.10.10.10: { infra_seq: 1 }\n        10.10.10.11: { infra_seq: 2 }\n";

    fn req(deregister: bool, hosts: &[&str]) -> pb::MonitoringRequest {
        pb::MonitoringRequest {
            deregister,
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            timeout_secs: 0,
        }
    }

    fn monitoring(task: &pb::Task) -> Option<&pb::WriteMonitoring> {
        match &task.kind {
            Some(pb::task::Kind::WriteMonitoring(m)) => Some(m),
            _ => None,
        }
    }

    #[test]
    fn every_infra_host_gets_the_coordinators_target_in_its_generations_layout(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let listen: SocketAddr = "10.10.10.10:9808".parse()?;
        let v4 = inv("version: v4.1.0", INFRA);
        let (hosts, task) = plan(&v4, &req(false, &[]), Some(listen))?;
        assert_eq!(
            hosts,
            vec!["10.10.10.10".parse::<IpAddr>()?, "10.10.10.11".parse()?]
        );
        let m = monitoring(&task).ok_or("not a monitoring task")?;
        assert_eq!(m.layout, pb::MonitoringLayout::Victoria as i32);
        assert_eq!(m.targets[0].ip, "10.10.10.10");
        assert_eq!(m.targets[0].port, 9808);
        assert!(!m.remove);
        // Pigsty v3 keeps Prometheus under /etc/prometheus.
        let v3 = inv("version: v3.6.1", INFRA);
        let (_, task) = plan(&v3, &req(false, &["10.10.10.11"]), Some(listen))?;
        let m = monitoring(&task).ok_or("not a monitoring task")?;
        assert_eq!(m.layout, pb::MonitoringLayout::Prometheus as i32);
        // 0.0.0.0 is scraped at admin_ip.
        let any: SocketAddr = "0.0.0.0:9808".parse()?;
        let with_admin = inv("version: v4.1.0, admin_ip: 10.10.10.10", INFRA);
        let (_, task) = plan(&with_admin, &req(false, &[]), Some(any))?;
        let m = monitoring(&task).ok_or("not a monitoring task")?;
        assert_eq!(m.targets[0].ip, "10.10.10.10");
        // Deregistration needs no listener.
        let (_, task) = plan(&v4, &req(true, &[]), None)?;
        let m = monitoring(&task).ok_or("not a monitoring task")?;
        assert!(m.remove && m.targets.is_empty());
        Ok(())
    }

    #[test]
    fn what_cannot_be_registered_is_refused_with_what_to_do(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let listen: SocketAddr = "10.10.10.10:9808".parse()?;
        let v4 = inv("version: v4.1.0", INFRA);
        let cases: Vec<(Inventory, pb::MonitoringRequest, Option<SocketAddr>, &str)> =
            vec![
            (inv("version: v4.1.0", ""), req(false, &[]), Some(listen), "no `infra` group"),
            (v4.clone(), req(false, &[]), None, "metrics_listen is not set"),
            (
                v4.clone(),
                req(false, &["10.10.10.99"]),
                Some(listen),
                "--hosts 10.10.10.99: not a host of the `infra` group",
            ),
            (v4.clone(), req(false, &["infra-1"]), Some(listen), "not an IP address"),
            (
                v4.clone(),
                req(false, &[]),
                Some("0.0.0.0:9808".parse()?),
                "sets no admin_ip",
            ),
            (
                v4.clone(),
                req(false, &[]),
                Some("127.0.0.1:9808".parse()?),
                "loopback address that the metrics stack on infra host 10.10.10.10 cannot reach",
            ),
        ];
        for (inventory, r, listen, want) in cases {
            let err = plan(&inventory, &r, listen).expect_err(want);
            // Inventory, flag or config mistakes: the CLI's exit 2.
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{want}");
            assert!(err.message().contains(want), "{want}: {}", err.message());
            assert!(
                err.message().contains("nothing was changed") || want.contains("IP"),
                "{}",
                err.message()
            );
        }
        Ok(())
    }
}
