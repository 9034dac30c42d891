//! `quorum cluster status`, the coordinator's side: an etcd cluster as etcd and the agents
//! see it now — members, learners, the leader, each member's raft index and health — compared
//! with the inventory, line by line, with the fix for each disagreement. Read-only. The CLI
//! prints the typed answer (`AdminService.ClusterStatus`; see `cli_status`).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;

use quorum_proto::pb;
use tonic::Status;

use crate::clients::etcd::EtcdAccess;
use crate::clients::registry::Registry;
use crate::model::inventory::Inventory;
use crate::sop::agreement::{host_of_url, Disagreement};

/// Builds the status of the cluster `req` names (the coordinator's side).
pub async fn cluster_status(
    inventory_path: &Path,
    registry: &Registry,
    etcd: &EtcdAccess,
    req: pb::ClusterStatusRequest,
) -> Result<pb::ClusterStatusResponse, Status> {
    let inv = Inventory::load_off_runtime(inventory_path)
        .await
        .map_err(Status::invalid_argument)?;
    let name = (!req.cluster.is_empty()).then_some(req.cluster.as_str());
    let cluster = inv
        .etcd_cluster(name)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    etcd.remember(cluster);
    let spec = crate::sop::plan::cluster_spec(cluster, cluster.params.init);
    let roster = spec.roster();
    let mut out = pb::ClusterStatusResponse {
        cluster: spec.name.clone(),
        group: roster.group.clone(),
        ..Default::default()
    };
    let mut hosts: BTreeSet<IpAddr> = spec.members.iter().map(|m| m.ip).collect();
    match etcd.member_list(&spec.client_urls()).await {
        Ok(members) => {
            for m in &members {
                let host = m.peer_urls.first().and_then(|u| host_of_url(u));
                hosts.extend(host);
                let mut v = pb::EtcdMemberStatus {
                    id: m.id,
                    name: m.name.clone(),
                    peer_urls: m.peer_urls.clone(),
                    client_urls: m.client_urls.clone(),
                    is_learner: m.is_learner,
                    host: host.map(|h| h.to_string()).unwrap_or_default(),
                    in_inventory: spec
                        .members
                        .iter()
                        .any(|s| m.peer_urls.contains(&s.peer_url)),
                    ..Default::default()
                };
                match m.client_urls.first() {
                    None => v.health_error = "not started (no client URL)".into(),
                    Some(url) => {
                        match etcd.member_status(url).await {
                            Ok(st) => {
                                v.raft_index = st.raft_index;
                                v.raft_applied_index = st.raft_applied_index;
                                v.raft_term = st.raft_term;
                                v.version = st.version;
                                if st.leader != 0 && out.leader_id == 0 {
                                    out.leader_id = st.leader;
                                }
                            }
                            Err(e) => v.health_error = e.to_string(),
                        }
                        if v.health_error.is_empty() {
                            match etcd.member_health(url).await {
                                Ok(()) => v.healthy = true,
                                Err(e) => v.health_error = e,
                            }
                        }
                    }
                }
                out.members.push(v);
            }
            for v in &mut out.members {
                v.is_leader = out.leader_id != 0 && v.id == out.leader_id;
            }
            let problems = roster.compare(&members, None);
            out.agrees = problems.is_empty();
            for s in &spec.members {
                let listed = members
                    .iter()
                    .any(|m| !m.is_learner && m.peer_urls.contains(&s.peer_url));
                if listed {
                    out.agreement.push(pb::AgreementLine {
                        kind: "agrees".into(),
                        host: s.ip.to_string(),
                        member: s.name.clone(),
                        text: format!("{} ({}) is in pigsty.yml and a voting member", s.name, s.ip),
                    });
                }
            }
            out.agreement.extend(problems.iter().map(agreement_line));
        }
        Err(e) => out.members_error = e.to_string(),
    }
    crate::clients::registry::refresh_facts(registry, &hosts.iter().copied().collect::<Vec<_>>())
        .await;
    for h in hosts {
        let facts = registry.facts(h);
        out.agents.push(pb::HostAgentStatus {
            host: h.to_string(),
            agent_state: registry
                .state(h)
                .map(|s| s.as_str().to_string())
                .unwrap_or_else(|| "none".into()),
            etcd: facts
                .as_ref()
                .and_then(|f| f.services.get("etcd").copied())
                .unwrap_or(pb::ServiceState::Unspecified as i32),
            agent_version: facts.map(|f| f.agent_version).unwrap_or_default(),
            in_inventory: spec.member(h).is_some(),
        });
    }
    Ok(out)
}

fn agreement_line(d: &Disagreement) -> pb::AgreementLine {
    let (kind, host, member) = match d {
        Disagreement::NotInInventory { name, peer_url, .. } => (
            "not_in_inventory",
            host_of_url(peer_url)
                .map(|h| h.to_string())
                .unwrap_or_default(),
            name.clone(),
        ),
        Disagreement::NotAMember { ip, name, .. } => ("not_a_member", ip.to_string(), name.clone()),
        Disagreement::Unpromoted { ip, name, .. } => ("unpromoted", ip.to_string(), name.clone()),
    };
    pb::AgreementLine {
        kind: kind.into(),
        host,
        member,
        text: d.to_string(),
    }
}
