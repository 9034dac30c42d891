//! What each guard and gate decides from what it observed. The runner probes etcd, Patroni and
//! the agents, hands the observation to one of these pure functions, and waits with
//! [`crate::sop::wait::until`] on its answer; so a gate's logic and its timing are tested here with
//! fake observations under paused time, and end to end in `tests/`.

use std::net::IpAddr;
use std::time::Duration;

use crate::clients::etcd::{EtcdError, Fault};
use crate::clients::patroni::{ClusterView, PgRef};
use crate::sop::wait::{Pace, Try};

/// One voting member's health as a guard sees it: its label (name, or id in hex), its host
/// (from its peer URL) and whether it answered `/health`.
pub type Health = (String, Option<IpAddr>, Result<(), String>);

/// The health gate and the quorum guard probe this often: a restarted member serves ~0.1 s
/// after it starts, so a 200 ms pace cost a roll ~0.1 s per member for nothing (bench step 4
/// against the physical floor).
pub const HEALTH_PACE: Pace = Pace::every(Duration::from_millis(50));
/// Patroni, the VIP and etcd's own retries (unhealthy cluster, member not found).
pub const SLOW_PACE: Pace = Pace::every(Duration::from_millis(500));
/// A learner's promotion backs off while etcd says it is not in sync yet.
pub const PROMOTE_PACE: Pace = Pace::doubling(Duration::from_millis(200), Duration::from_secs(2));
/// How often a caught-up check reads the member's applied index.
pub const CATCH_UP_PACE: Pace = Pace::every(Duration::from_millis(50));

/// The quorum guard: the first voting member other than `host` that is unhealthy (taking
/// `host` down with it down could lose quorum), as (label, host, why).
pub fn unhealthy_other(health: &[Health], host: IpAddr) -> Option<(&str, Option<IpAddr>, &str)> {
    health.iter().find_map(|(label, h, r)| match r {
        Err(why) if *h != Some(host) => Some((label.as_str(), *h, why.as_str())),
        _ => None,
    })
}

/// Whether the member on `host` may leave, by the health of every voting member (`health`,
/// the leaving one included). A healthy member leaves only while every other voter is healthy
/// (taking it out with another down would leave no margin). A member that is down itself (a
/// dead host) takes no live member away and lowers the majority needed, so it may leave while
/// others are down too, as long as the cluster has a healthy majority now: with two dead hosts
/// of five, each can be removed in turn. `Ok` carries a note when others are down; `Err` why not.
pub fn removal(health: &[Health], host: IpAddr) -> Result<Option<String>, String> {
    let Some((label, h, why)) = unhealthy_other(health, host) else {
        return Ok(None);
    };
    let usual = || {
        format!(
            "member {label} ({}) is unhealthy: {why}",
            h.map(|h| h.to_string()).unwrap_or_default()
        )
    };
    let leaving_down = health
        .iter()
        .any(|(_, mh, r)| *mh == Some(host) && r.is_err());
    if !leaving_down {
        return Err(usual());
    }
    let healthy = health.iter().filter(|(_, _, r)| r.is_ok()).count();
    let majority = health.len() / 2 + 1;
    let down: Vec<&str> = health
        .iter()
        .filter(|(_, mh, r)| r.is_err() && *mh != Some(host))
        .map(|(l, _, _)| l.as_str())
        .collect();
    if healthy >= majority {
        Ok(Some(format!(
            "{} down as well; the leaving member is down itself, so its removal takes no live member away: {healthy} of the {} voting members are healthy, a majority now and after",
            down.join(", "),
            health.len()
        )))
    } else {
        Err(format!(
            "{}; only {healthy} of the {} voting members are healthy, no majority: the cluster cannot commit a removal",
            usual(),
            health.len()
        ))
    }
}

/// Why the health gate is not passed yet, and the hosts to ask about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotHealthy {
    /// What is wrong, for the operator.
    pub why: String,
    /// Whose agent to ask for etcd's state and log if the gate fails.
    pub hosts: Vec<Option<IpAddr>>,
}

/// The health gate: every voting member healthy and, for a member's gate, `host` among them.
/// Done with the number of voting members.
pub fn health(health: &[Health], host: Option<IpAddr>) -> Try<usize, NotHealthy> {
    let listed = host.is_none_or(|h| health.iter().any(|(_, mh, _)| *mh == Some(h)));
    if !listed {
        return Try::Again(NotHealthy {
            why: format!(
                "{} is not a voting member",
                host.map(|h| h.to_string()).unwrap_or_default()
            ),
            hosts: vec![host],
        });
    }
    let bad: Vec<&Health> = health.iter().filter(|(_, _, r)| r.is_err()).collect();
    if bad.is_empty() && !health.is_empty() {
        return Try::Done(health.len());
    }
    Try::Again(NotHealthy {
        why: bad
            .iter()
            .map(|(l, _, r)| format!("{l}: {}", r.as_ref().err().map_or("", String::as_str)))
            .collect::<Vec<_>>()
            .join("; "),
        hosts: bad.iter().map(|(_, h, _)| *h).collect(),
    })
}

/// One try of a learner's promotion: promoted, not in sync yet (try again), or a final error.
pub fn promotion(result: Result<(), EtcdError>, id: u64) -> Try<String, String> {
    match result {
        Ok(()) => Try::Done(format!("promoted {id:x}")),
        Err(e) if e.has(&Fault::LearnerNotReady) => Try::Again(e.to_string()),
        Err(e) => Try::Stop(e.to_string()),
    }
}

/// The Patroni guard before a restart of Patroni on `host`: every instance runs, the cluster
/// has a running leader, and `host` does not lead. A host that leads is refused at once (it
/// became the leader after planning); anything else is waited for.
pub fn patroni_guard(pg: &PgRef, host: IpAddr, c: &ClusterView) -> Try<String, String> {
    let leader = c.leader();
    if leader.is_some_and(|l| pg.node_of(l).map(|n| n.ip) == Some(host)) {
        let name = pg.node(host).map(|n| n.name.as_str()).unwrap_or_default();
        return Try::Stop(format!(
            "{name} ({host}) leads {} now ({}): restarting it would stop the primary; plan the SOP again so it switches over first",
            pg.name,
            c.summary()
        ));
    }
    match leader {
        None => Try::Again(format!("{} has no leader ({})", pg.name, c.summary())),
        Some(l) if !l.is_running() => Try::Again(format!("the leader {} is {}", l.name, l.state)),
        Some(_) => match c.members.iter().find(|m| !m.is_running()) {
            Some(m) => Try::Again(format!("{} is {}", m.name, m.state)),
            None => Try::Done(format!("{} healthy: {}", pg.name, c.summary())),
        },
    }
}

/// The Patroni gate after Patroni on `host` was reloaded or restarted: it runs (`state`,
/// `role` from its `/patroni`) and the cluster has a running leader.
pub fn patroni_gate(
    pg: &PgRef,
    host: IpAddr,
    (state, role): (&str, &str),
    c: Result<&ClusterView, &str>,
) -> Try<String, String> {
    if state != "running" && state != "streaming" {
        return Try::Again(format!("Patroni on {host} is {state} ({role})"));
    }
    match c {
        Err(e) => Try::Again(e.to_string()),
        Ok(c) => {
            // The cluster's view (the DCS) is what the next steps read, a switchover's
            // choice of replica included; it lags the instance's own word by up to a loop.
            let listed = c
                .members
                .iter()
                .find(|m| pg.node_of(m).is_some_and(|n| n.ip == host));
            match (c.leader(), listed) {
                (Some(l), Some(m)) if l.is_running() && m.is_running() => Try::Done(format!(
                    "Patroni on {host} is {state} ({role}); {}",
                    c.summary()
                )),
                (Some(l), _) if l.is_running() => Try::Again(format!(
                    "Patroni on {host} says {state}, but {} does not list it running yet ({})",
                    pg.name,
                    c.summary()
                )),
                _ => Try::Again(format!(
                    "{} has no running leader ({})",
                    pg.name,
                    c.summary()
                )),
            }
        }
    }
}

/// After a switchover from `old` to `new`: settled once `new` leads and runs and `old` runs
/// as a replica.
pub fn switched_over(now: &ClusterView, old: &str, new: &str) -> Try<String, String> {
    let new_ok = now
        .leader()
        .is_some_and(|l| l.name == new && l.is_running());
    let old_ok = now
        .members
        .iter()
        .any(|m| m.name == old && !m.is_leader() && m.is_running());
    if new_ok && old_ok {
        Try::Done(now.summary())
    } else {
        Try::Again(now.summary())
    }
}

/// The VIP gate: the VIP on exactly one host, the primary's (`leader` on `leader_ip`);
/// `holders` are the hosts whose agent sees the VIP, with the address.
pub fn vip(holders: &[(IpAddr, String)], leader: &str, leader_ip: IpAddr) -> Try<String, String> {
    match holders {
        [(h, addr)] if *h == leader_ip => {
            Try::Done(format!("VIP {addr} is on {h} only, the primary {leader}"))
        }
        [] => Try::Again(format!(
            "no host holds the VIP (the primary is {leader} on {leader_ip})"
        )),
        _ => Try::Again(format!(
            "the VIP is on [{}], but the primary is {leader} on {leader_ip}",
            holders
                .iter()
                .map(|(h, _)| h.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clients::patroni::{ClusterMember, PgNode};
    use crate::sop::wait::{until, Waited};
    use tokio::time::Instant;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 10, 10, last])
    }

    fn ok(label: &str, last: u8) -> Health {
        (label.into(), Some(ip(last)), Ok(()))
    }

    fn down(label: &str, last: u8) -> Health {
        (
            label.into(),
            Some(ip(last)),
            Err("connection refused".into()),
        )
    }

    /// Feeds `seen` to `verdict` one observation per probe (the last one repeats), and returns
    /// the wait's result with the virtual time it took in ms.
    async fn gate<O: Clone, T, E>(
        within: Duration,
        pace: Pace,
        seen: Vec<O>,
        verdict: impl Fn(&O) -> Try<T, E>,
    ) -> (Result<T, Waited<E>>, u128) {
        let start = Instant::now();
        let mut n = 0;
        let r = until(within, pace, || {
            let o = seen[n.min(seen.len() - 1)].clone();
            n += 1;
            std::future::ready(verdict(&o))
        })
        .await;
        (r, start.elapsed().as_millis())
    }

    #[test]
    fn the_quorum_guard_names_the_first_unhealthy_other_member_and_ignores_its_own() {
        let h = vec![down("etcd-1", 1), ok("etcd-2", 2), down("etcd-3", 3)];
        assert_eq!(
            unhealthy_other(&h, ip(1)),
            Some(("etcd-3", Some(ip(3)), "connection refused"))
        );
        assert_eq!(unhealthy_other(&h[..2], ip(1)), None);
    }

    #[test]
    fn a_dead_member_may_leave_while_others_are_down_if_a_majority_is_healthy() {
        // Five members, two dead hosts: each can be removed in turn.
        let five = vec![
            ok("etcd-1", 1),
            ok("etcd-2", 2),
            ok("etcd-3", 3),
            down("etcd-4", 4),
            down("etcd-5", 5),
        ];
        let note = removal(&five, ip(4)).expect("etcd-4 may leave");
        assert!(note.is_some_and(|n| n.starts_with("etcd-5 down as well")));
        assert!(removal(&five[..4], ip(4)).is_ok());
        // A healthy member never leaves while another is down.
        let e = removal(&five, ip(1)).expect_err("etcd-1 is healthy");
        assert!(
            e.starts_with("member etcd-4 (10.10.10.4) is unhealthy"),
            "{e}"
        );
        // No healthy majority now: refused, even for a dead member.
        let lost = vec![ok("etcd-1", 1), down("etcd-2", 2), down("etcd-3", 3)];
        let e = removal(&lost, ip(3)).expect_err("no majority");
        assert!(
            e.contains("only 1 of the 3 voting members are healthy"),
            "{e}"
        );
        // Everyone else healthy: no note.
        assert_eq!(removal(&five[..3], ip(1)), Ok(None));
    }

    #[tokio::test(start_paused = true)]
    async fn the_health_gate_passes_once_the_restarted_member_answers() {
        let seen = vec![
            vec![ok("etcd-1", 1), down("etcd-2", 2), ok("etcd-3", 3)],
            vec![ok("etcd-1", 1), down("etcd-2", 2), ok("etcd-3", 3)],
            vec![ok("etcd-1", 1), ok("etcd-2", 2), ok("etcd-3", 3)],
        ];
        let (r, ms) = gate(Duration::from_secs(30), HEALTH_PACE, seen, |h| {
            health(h, Some(ip(2)))
        })
        .await;
        assert_eq!(r, Ok(3));
        assert_eq!(ms, 100);
    }

    #[tokio::test(start_paused = true)]
    async fn the_health_gate_fails_at_its_deadline_naming_the_member_and_its_host() {
        let seen = vec![vec![ok("etcd-1", 1), down("etcd-2", 2), ok("etcd-3", 3)]];
        let (r, ms) = gate(Duration::from_secs(30), HEALTH_PACE, seen, |h| {
            health(h, None)
        })
        .await;
        assert_eq!(
            r,
            Err(Waited::TimedOut(NotHealthy {
                why: "etcd-2: connection refused".into(),
                hosts: vec![Some(ip(2))],
            }))
        );
        assert_eq!(ms, 30_000);
        // A member's gate also waits for the member to be listed as a voter.
        assert!(matches!(
            health(&[ok("etcd-1", 1)], Some(ip(9))),
            Try::Again(NotHealthy { ref why, .. }) if why == "10.10.10.9 is not a voting member"
        ));
        assert!(matches!(health(&[], None), Try::Again(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn promotion_backs_off_while_the_learner_catches_up_and_stops_on_other_errors() {
        let not_ready = || EtcdError::Refused {
            op: "member promote",
            endpoint: "https://10.10.10.4:2379".into(),
            fault: Fault::LearnerNotReady,
        };
        let mut results = vec![Err(not_ready()), Err(not_ready()), Err(not_ready()), Ok(())];
        results.reverse();
        let start = Instant::now();
        let r = until(Duration::from_secs(60), PROMOTE_PACE, || {
            std::future::ready(promotion(results.pop().unwrap_or(Ok(())), 0xab))
        })
        .await;
        assert_eq!(r, Ok("promoted ab".to_string()));
        // 200 + 400 + 800 ms of backoff.
        assert_eq!(start.elapsed().as_millis(), 1400);
        let other = EtcdError::Refused {
            op: "member promote",
            endpoint: "https://10.10.10.4:2379".into(),
            fault: Fault::Other("etcdserver: permission denied".into()),
        };
        assert!(matches!(promotion(Err(other), 1), Try::Stop(_)));
    }

    fn pg() -> PgRef {
        PgRef {
            name: "pg-test".into(),
            members: (1..=2)
                .map(|i| PgNode {
                    ip: ip(20 + i),
                    name: format!("pg-test-{i}"),
                    api: format!("http://10.10.10.{}:8008", 20 + i),
                    vip: true,
                })
                .collect(),
        }
    }

    fn cluster(members: &[(&str, &str, &str)]) -> ClusterView {
        ClusterView {
            members: members
                .iter()
                .enumerate()
                .map(|(i, (name, role, state))| ClusterMember {
                    name: (*name).into(),
                    role: (*role).into(),
                    state: (*state).into(),
                    host: format!("10.10.10.{}", 21 + i),
                    ..ClusterMember::default()
                })
                .collect(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_patroni_guard_waits_for_every_instance_and_refuses_the_leader_at_once() {
        let pg = pg();
        let seen = vec![
            cluster(&[
                ("pg-test-1", "leader", "running"),
                ("pg-test-2", "replica", "starting"),
            ]),
            cluster(&[
                ("pg-test-1", "leader", "running"),
                ("pg-test-2", "replica", "streaming"),
            ]),
        ];
        let (r, ms) = gate(Duration::from_secs(60), SLOW_PACE, seen, |c| {
            patroni_guard(&pg, ip(22), c)
        })
        .await;
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(ms, 500);
        // The replica to restart became the leader after planning: refused without waiting.
        let seen = vec![cluster(&[
            ("pg-test-1", "replica", "running"),
            ("pg-test-2", "leader", "running"),
        ])];
        let (r, ms) = gate(Duration::from_secs(60), SLOW_PACE, seen, |c| {
            patroni_guard(&pg, ip(22), c)
        })
        .await;
        assert!(
            matches!(&r, Err(Waited::Stopped(why)) if why.contains("leads pg-test now")),
            "{r:?}"
        );
        assert_eq!(ms, 0);
        // No leader for the whole window: refused at the deadline with the last reason.
        let seen = vec![cluster(&[
            ("pg-test-1", "replica", "running"),
            ("pg-test-2", "replica", "running"),
        ])];
        let (r, ms) = gate(Duration::from_secs(60), SLOW_PACE, seen, |c| {
            patroni_guard(&pg, ip(22), c)
        })
        .await;
        assert!(
            matches!(&r, Err(Waited::TimedOut(why)) if why.starts_with("pg-test has no leader")),
            "{r:?}"
        );
        assert_eq!(ms, 60_000);
    }

    #[tokio::test(start_paused = true)]
    async fn the_patroni_gate_waits_for_the_instance_to_run_and_a_leader() {
        let pg = pg();
        let led = cluster(&[
            ("pg-test-1", "leader", "running"),
            ("pg-test-2", "replica", "streaming"),
        ]);
        // The instance says it streams before the cluster's view (the DCS, which a
        // switchover reads) lists it running: the gate waits for both.
        let lagging = cluster(&[
            ("pg-test-1", "leader", "running"),
            ("pg-test-2", "replica", "stopped"),
        ]);
        let seen: Vec<(&str, Result<ClusterView, String>)> = vec![
            ("starting", Ok(led.clone())),
            ("running", Err("no Patroni answered".into())),
            ("streaming", Ok(lagging.clone())),
            ("streaming", Ok(lagging)),
            ("streaming", Ok(led.clone())),
        ];
        let (r, ms) = gate(Duration::from_secs(60), SLOW_PACE, seen, |(state, c)| {
            patroni_gate(
                &pg,
                ip(22),
                (state, "replica"),
                c.as_ref().map_err(String::as_str),
            )
        })
        .await;
        assert!(r.is_ok(), "{r:?}");
        assert_eq!(ms, 2000);
    }

    #[tokio::test(start_paused = true)]
    async fn the_vip_gate_waits_until_only_the_primary_holds_the_vip() {
        let vip_on = |hosts: &[u8]| -> Vec<(IpAddr, String)> {
            hosts
                .iter()
                .map(|h| (ip(*h), "10.10.10.2/24".to_string()))
                .collect()
        };
        let seen = vec![vip_on(&[]), vip_on(&[21, 22]), vip_on(&[21])];
        let (r, ms) = gate(Duration::from_secs(60), SLOW_PACE, seen, |holders| {
            vip(holders, "pg-test-1", ip(21))
        })
        .await;
        assert_eq!(
            r,
            Ok("VIP 10.10.10.2/24 is on 10.10.10.21 only, the primary pg-test-1".into())
        );
        assert_eq!(ms, 1000);
        // On the replica only, for the whole window: the gate fails with where it is.
        let (r, _) = gate(
            Duration::from_secs(60),
            SLOW_PACE,
            vec![vip_on(&[22])],
            |h| vip(h, "pg-test-1", ip(21)),
        )
        .await;
        assert_eq!(
            r,
            Err(Waited::TimedOut(
                "the VIP is on [10.10.10.22], but the primary is pg-test-1 on 10.10.10.21".into()
            ))
        );
    }

    #[test]
    fn a_switchover_settles_when_the_new_leader_runs_and_the_old_one_replicates() {
        let mid = cluster(&[
            ("pg-test-1", "replica", "stopped"),
            ("pg-test-2", "leader", "running"),
        ]);
        assert!(matches!(
            switched_over(&mid, "pg-test-1", "pg-test-2"),
            Try::Again(_)
        ));
        let done = cluster(&[
            ("pg-test-1", "replica", "streaming"),
            ("pg-test-2", "leader", "running"),
        ]);
        assert!(matches!(
            switched_over(&done, "pg-test-1", "pg-test-2"),
            Try::Done(_)
        ));
    }
}
