//! `quorum cluster status`, the CLI's side: prints the coordinator's typed answer as a table
//! or as JSON, and exits 0 only when the cluster is healthy and agrees with the inventory.

use quorum_proto::exit::Exit;
use quorum_proto::pb;
use quorum_proto::pb::admin_service_client::AdminServiceClient;
use tonic::transport::Channel;

use crate::model::words::service_state_word;

/// Whether the status shows a problem: no member list, a disagreement, an unhealthy member.
pub fn has_problem(s: &pb::ClusterStatusResponse) -> bool {
    !s.members_error.is_empty() || !s.agrees || s.members.iter().any(|m| !m.healthy)
}

/// `quorum cluster status` (the CLI's side): prints the table or the JSON; exit 0 when the
/// cluster is healthy and agrees with the inventory, 1 when not.
pub async fn status_command(
    client: &mut AdminServiceClient<Channel>,
    cluster: Option<String>,
    json: bool,
) -> anyhow::Result<Exit> {
    let s = client
        .cluster_status(pb::ClusterStatusRequest {
            cluster: cluster.unwrap_or_default(),
        })
        .await?
        .into_inner();
    if json {
        println!("{}", serde_json::to_string_pretty(&status_json(&s))?);
    } else {
        print!("{}", status_table(&s));
    }
    Ok(if has_problem(&s) {
        Exit::Failed
    } else {
        Exit::Ok
    })
}

fn etcd_word(state: i32) -> &'static str {
    match pb::ServiceState::try_from(state) {
        Ok(pb::ServiceState::Unspecified) | Err(_) => "-",
        Ok(s) => service_state_word(s),
    }
}

/// The JSON form of a status.
pub fn status_json(s: &pb::ClusterStatusResponse) -> serde_json::Value {
    serde_json::json!({
        "cluster": s.cluster,
        "group": s.group,
        "leader_id": format!("{:x}", s.leader_id),
        "members_error": s.members_error,
        "agrees": s.agrees,
        "members": s.members.iter().map(|m| serde_json::json!({
            "id": format!("{:x}", m.id),
            "name": m.name,
            "host": m.host,
            "peer_urls": m.peer_urls,
            "client_urls": m.client_urls,
            "is_learner": m.is_learner,
            "is_leader": m.is_leader,
            "raft_index": m.raft_index,
            "raft_applied_index": m.raft_applied_index,
            "raft_term": m.raft_term,
            "version": m.version,
            "healthy": m.healthy,
            "health_error": m.health_error,
            "in_inventory": m.in_inventory,
        })).collect::<Vec<_>>(),
        "agreement": s.agreement.iter().map(|a| serde_json::json!({
            "kind": a.kind,
            "host": a.host,
            "member": a.member,
            "text": a.text,
        })).collect::<Vec<_>>(),
        "agents": s.agents.iter().map(|a| serde_json::json!({
            "host": a.host,
            "agent_state": a.agent_state,
            "etcd": etcd_word(a.etcd),
            "agent_version": a.agent_version,
            "in_inventory": a.in_inventory,
        })).collect::<Vec<_>>(),
    })
}

/// The table form of a status.
pub fn status_table(s: &pb::ClusterStatusResponse) -> String {
    use std::fmt::Write;
    let mut t = String::new();
    let leader = s
        .members
        .iter()
        .find(|m| m.is_leader)
        .map(|m| {
            if m.name.is_empty() {
                format!("{:x}", m.id)
            } else {
                m.name.clone()
            }
        })
        .unwrap_or_else(|| "none".into());
    let _ = writeln!(
        t,
        "cluster {} (group {}): {} member(s), {} learner(s), leader {leader}, inventory {}",
        s.cluster,
        s.group,
        s.members.iter().filter(|m| !m.is_learner).count(),
        s.members.iter().filter(|m| m.is_learner).count(),
        if !s.members_error.is_empty() {
            "not compared"
        } else if s.agrees {
            "agrees"
        } else {
            "DISAGREES"
        }
    );
    if !s.members_error.is_empty() {
        let _ = writeln!(t, "member list: {}", s.members_error);
    } else {
        let _ = writeln!(
            t,
            "{:<12} {:<16} {:<30} {:<7} {:<6} {:>10} {:>10}  HEALTH",
            "MEMBER", "ID", "PEER URL", "LEARNER", "LEADER", "RAFT INDEX", "APPLIED"
        );
        for m in &s.members {
            let yes = |b: bool| if b { "yes" } else { "no" };
            let _ = writeln!(
                t,
                "{:<12} {:<16x} {:<30} {:<7} {:<6} {:>10} {:>10}  {}",
                if m.name.is_empty() {
                    "-"
                } else {
                    m.name.as_str()
                },
                m.id,
                m.peer_urls.join(","),
                yes(m.is_learner),
                yes(m.is_leader),
                m.raft_index,
                m.raft_applied_index,
                if m.healthy {
                    "healthy".to_string()
                } else {
                    format!("unhealthy: {}", m.health_error)
                }
            );
        }
        let _ = writeln!(t, "inventory vs member list (by peer URL):");
        for a in &s.agreement {
            let mark = if a.kind == "agrees" { "ok  " } else { "FIX " };
            let _ = writeln!(t, "  {mark} {}", a.text);
        }
    }
    let _ = writeln!(
        t,
        "{:<16} {:<10} {:<10} {:<10} IN INVENTORY",
        "HOST", "AGENT", "VERSION", "ETCD"
    );
    for a in &s.agents {
        let _ = writeln!(
            t,
            "{:<16} {:<10} {:<10} {:<10} {}",
            a.host,
            a.agent_state,
            if a.agent_version.is_empty() {
                "-"
            } else {
                a.agent_version.as_str()
            },
            etcd_word(a.etcd),
            if a.in_inventory { "yes" } else { "no" }
        );
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, name: &str, ip: &str, leader: bool, learner: bool) -> pb::EtcdMemberStatus {
        pb::EtcdMemberStatus {
            id,
            name: name.into(),
            peer_urls: vec![format!("https://{ip}:2380")],
            client_urls: vec![format!("https://{ip}:2379")],
            is_learner: learner,
            is_leader: leader,
            raft_index: 42,
            raft_applied_index: 42,
            healthy: !learner,
            health_error: if learner {
                "it is a learner".into()
            } else {
                String::new()
            },
            host: ip.into(),
            in_inventory: !learner,
            ..Default::default()
        }
    }

    #[test]
    fn the_table_shows_members_learners_leader_indexes_agreement_and_agents() {
        let s = pb::ClusterStatusResponse {
            cluster: "etcd".into(),
            group: "etcd".into(),
            leader_id: 1,
            agrees: false,
            members: vec![
                member(1, "etcd-1", "10.10.10.10", true, false),
                member(2, "etcd-2", "10.10.10.11", false, true),
            ],
            agreement: vec![
                pb::AgreementLine {
                    kind: "agrees".into(),
                    host: "10.10.10.10".into(),
                    member: "etcd-1".into(),
                    text: "etcd-1 (10.10.10.10) is in pigsty.yml and a voting member".into(),
                },
                pb::AgreementLine {
                    kind: "not_in_inventory".into(),
                    host: "10.10.10.11".into(),
                    member: "etcd-2".into(),
                    text: "learner etcd-2 ... add `10.10.10.11: { etcd_seq: 2 }`".into(),
                },
            ],
            agents: vec![pb::HostAgentStatus {
                host: "10.10.10.10".into(),
                agent_state: "idle".into(),
                etcd: pb::ServiceState::Active as i32,
                agent_version: "0.2.0".into(),
                in_inventory: true,
            }],
            ..Default::default()
        };
        let t = status_table(&s);
        assert!(
            t.contains("1 member(s), 1 learner(s), leader etcd-1, inventory DISAGREES"),
            "{t}"
        );
        assert!(t.contains("RAFT INDEX"), "{t}");
        assert!(t.contains("FIX  learner etcd-2"), "{t}");
        assert!(
            t.contains("10.10.10.10      idle       0.2.0      active"),
            "{t}"
        );
        assert!(has_problem(&s));
        let j = status_json(&s);
        assert_eq!(j["members"][0]["is_leader"], true);
        assert_eq!(j["members"][1]["is_learner"], true);
        assert_eq!(j["agents"][0]["etcd"], "active");
        assert_eq!(j["leader_id"], "1");
    }
}
