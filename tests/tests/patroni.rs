//! Patroni and vip-manager follow etcd membership, end to end with the real programs: etcd,
//! PostgreSQL 15 under Patroni (leader + replica) and vip-manager, each "host" a network
//! namespace on a bridge, every one driven by its own agent. A client writes through the VIP
//! the whole time. These tests need root and network namespaces: without them they fail (they
//! are never skipped).

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use quorum_tests::etcd::Fleet;
use quorum_tests::pg::{leader_of, timeline_of, Lab, LeaderKey, PgCluster, Watcher};
use quorum_tests::{wait_for, World};

const PORT: u16 = 2379;

/// A lab with etcd hosts .11.. (`etcd_n` of them, the first three members) and PostgreSQL
/// hosts .21 and .22, every agent running, the etcd cluster created through `quorum`, and the
/// PostgreSQL cluster up with its VIP on .21.
struct Setup {
    // Fields drop in this order: the PostgreSQL cluster, etcd, the world (agents, the
    // coordinator, the temp dir), then the lab's namespaces once nothing runs in them.
    pg: PgCluster,
    fleet: Fleet,
    world: World,
    lab: Lab,
    etcd_ips: Vec<IpAddr>,
}

fn setup(etcd_n: u8) -> Result<Setup> {
    setup_with(etcd_n, None)
}

/// [`setup`]; with `etcd_login` the inventory is Pigsty v4.5's (etcd RBAC) and Patroni logs
/// in to etcd with that user and password (no VIP: vip-manager 1.x reads only etcd's v2 API).
fn setup_with(etcd_n: u8, etcd_login: Option<(&str, &str)>) -> Result<Setup> {
    let mut lab = Lab::new()?;
    let mut etcd_ips = Vec::new();
    for i in 0..etcd_n {
        etcd_ips.push(lab.add_host(11 + i)?);
    }
    let pg_ips = vec![lab.add_host(21)?, lab.add_host(22)?];
    let mut world = World::new_on(lab.gateway())?;
    world.coordinator_extra =
        "gate_timeout_secs: 60\nstale_after_secs: 15\ntask_timeout_secs: 120\n".into();
    let ips: Vec<String> = etcd_ips.iter().map(|i| i.to_string()).collect();
    let ip_refs: Vec<&str> = ips.iter().map(String::as_str).collect();
    let fleet = Fleet::with_port(&world, &ip_refs, PORT)?;
    let mut pg = PgCluster::new(&world, &lab, "pg-test", &pg_ips)?;
    pg.etcd_login = etcd_login.map(|(u, p)| (u.to_string(), p.to_string()));
    let setup = Setup {
        lab,
        world,
        fleet,
        pg,
        etcd_ips,
    };
    let mut s = setup;
    s.write_inventory(3)?;
    s.world.start_coordinator()?;
    for h in &s.fleet.hosts {
        let ns = s.lab.ns(h.ip)?.to_string();
        s.world
            .start_agent_in(&h.ip.to_string(), &h.agent_config(false), Some(&ns))?;
    }
    s.pg.start_agents(&mut s.world)?;
    for h in &s.fleet.hosts {
        s.world.wait_agent_state(
            &h.ip.to_string(),
            &["connected", "idle"],
            Duration::from_secs(30),
        )?;
    }
    let out = s.world.admin(&["cluster", "create", "--yes"])?;
    anyhow::ensure!(out.code == 0, "cluster create failed: {out:?}");
    s.pg.write_configs(&s.dcs_hosts(&[0, 1, 2]))?;
    s.pg.bring_up(&s.world, &s.lab)?;
    Ok(s)
}

impl Setup {
    /// The inventory with etcd members .11.. by index (seq = index + 1).
    fn write_inventory_members(&self, members: &[usize]) -> Result<()> {
        let ips: Vec<String> = members
            .iter()
            .map(|i| self.etcd_ips[*i].to_string())
            .collect();
        let list: Vec<(&str, u32)> = members
            .iter()
            .zip(&ips)
            .map(|(i, ip)| (ip.as_str(), *i as u32 + 1))
            .collect();
        let vars = if self.pg.etcd_login.is_some() {
            // As Pigsty's etcd.conf: no client-cert-auth. With it and RBAC on, etcd 3.4's
            // gRPC gateway refuses Patroni's requests, which carry a client certificate
            // ("CommonName of client sending a request against gateway will be ignored").
            "version: v4.5.0\nquorum_etcd_enable_v2: true\nquorum_etcd_client_cert_auth: false"
        } else {
            "quorum_etcd_enable_v2: true"
        };
        self.fleet
            .write_inventory_with(&self.world, &list, vars, &self.pg.inventory_group())
    }

    fn write_inventory(&self, n: usize) -> Result<()> {
        self.write_inventory_members(&(0..n).collect::<Vec<_>>())
    }

    fn dcs_hosts(&self, members: &[usize]) -> Vec<String> {
        members
            .iter()
            .map(|i| format!("{}:{PORT}", self.etcd_ips[*i]))
            .collect()
    }

    /// Runs an SOP with `-o json` and returns the final run.
    fn sop(&self, args: &[&str]) -> Result<(i32, serde_json::Value)> {
        let mut a = args.to_vec();
        a.extend_from_slice(&["--yes", "-o", "json"]);
        let out = self.world.admin(&a)?;
        let run: serde_json::Value = serde_json::from_str(&out.stdout)
            .with_context(|| format!("{args:?} printed no run: {out:?}"))?;
        Ok((out.code, run))
    }

    /// Every instance's patroni.yml and vip-manager config name exactly `members`.
    /// The index of an etcd member that answers and does not lead.
    fn etcd_follower(&self) -> Result<usize> {
        let tls = [
            self.world.dir.path().join("ca/ca.crt"),
            self.world.dir.path().join("coordinator/coordinator.crt"),
            self.world.dir.path().join("coordinator/coordinator.key"),
        ];
        for (i, ip) in self.etcd_ips.iter().enumerate() {
            let out = std::process::Command::new("curl")
                .args(["-sf", "--max-time", "3", "--cacert"])
                .arg(&tls[0])
                .arg("--cert")
                .arg(&tls[1])
                .arg("--key")
                .arg(&tls[2])
                .args(["-X", "POST", "-d", "{}"])
                .arg(format!("https://{ip}:{PORT}/v3/maintenance/status"))
                .output()?;
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
                continue;
            };
            let me = &v["header"]["member_id"];
            if !me.is_null() && v["leader"] != *me {
                return Ok(i);
            }
        }
        anyhow::bail!("no etcd member answered as a follower")
    }

    /// Every instance's patroni.yml names exactly `members`.
    fn configs_name_patroni(&self, members: &[usize]) -> Result<()> {
        let hosts = self.dcs_hosts(members);
        for (h, got) in self.pg.hosts.iter().zip(self.pg.patroni_hosts()?) {
            anyhow::ensure!(
                got == hosts,
                "{}: patroni.yml lists {got:?}, want {hosts:?}",
                h.ip
            );
        }
        Ok(())
    }

    fn configs_name(&self, members: &[usize]) -> Result<()> {
        let hosts = self.dcs_hosts(members);
        let urls: Vec<String> = hosts.iter().map(|h| format!("https://{h}")).collect();
        for (h, got) in self.pg.hosts.iter().zip(self.pg.patroni_hosts()?) {
            anyhow::ensure!(
                got == hosts,
                "{}: patroni.yml lists {got:?}, want {hosts:?}",
                h.ip
            );
        }
        for (h, got) in self.pg.hosts.iter().zip(self.pg.vip_endpoints()?) {
            anyhow::ensure!(
                got == urls,
                "{}: vip-manager lists {got:?}, want {urls:?}",
                h.ip
            );
        }
        Ok(())
    }
}

fn steps_of<'a>(run: &'a serde_json::Value, kind: &str) -> Vec<&'a serde_json::Value> {
    run["steps"]
        .as_array()
        .map(|s| s.iter().filter(|s| s["kind"] == kind).collect())
        .unwrap_or_default()
}

#[test]
fn member_add_and_remove_refresh_patroni_and_vip_while_writes_go_through_the_vip() -> Result<()> {
    let mut s = setup(4)?;
    let primary = s.pg.hosts[0].ip;
    let before = s.pg.cluster()?;
    let timeline = timeline_of(&before).context("no timeline")?;
    let vip_restarts: Vec<usize> = s.pg.hosts.iter().map(|h| h.vip_restarts()).collect();
    let leader_key = LeaderKey {
        endpoints: s
            .etcd_ips
            .iter()
            .map(|ip| format!("https://{ip}:{PORT}"))
            .collect(),
        key: "/service/pg-test/leader".into(),
        tls: [
            s.world.dir.path().join("ca/ca.crt"),
            s.world.dir.path().join("coordinator/coordinator.crt"),
            s.world.dir.path().join("coordinator/coordinator.key"),
        ],
    };
    anyhow::ensure!(
        leader_key.read() == Some(Some("pg-test-1".into())),
        "the leader key is not readable before the SOPs: {:?}",
        leader_key.read()
    );
    let watcher = Watcher::start(&s.pg, primary, leader_key)?;

    // Grow 3 -> 4: the new member joins, then both PostgreSQL hosts are pointed at four.
    s.write_inventory(4)?;
    let (code, run) = s.sop(&["member", "add", &s.etcd_ips[3].to_string()])?;
    assert_eq!(code, 0, "member add: {run}");
    assert_eq!(run["state"], "succeeded", "{run}");
    s.configs_name(&[0, 1, 2, 3])?;
    // Replicas first, the primary last; every Patroni step is gated.
    let patroni_hosts: Vec<&str> = steps_of(&run, "SetPatroniHosts")
        .iter()
        .filter_map(|st| st["host"].as_str())
        .collect();
    assert_eq!(
        patroni_hosts,
        vec![s.pg.hosts[1].ip.to_string(), primary.to_string()],
        "{run}"
    );
    assert_eq!(steps_of(&run, "PatroniGate").len(), 2, "{run}");
    assert_eq!(steps_of(&run, "VipGate").len(), 2, "{run}");
    let mid = watcher.snapshot();

    // Shrink 4 -> 3 by removing a member whose host died (#16 item 2): its agent and etcd
    // are gone. A follower, so the election a dead leader would cause (not Quorum's doing)
    // stays out of what the watcher judges.
    let dead = s.etcd_follower()?;
    let dead_ip = s.etcd_ips[dead].to_string();
    s.world.agent(&dead_ip).context("the agent")?.kill();
    let pid = s.fleet.hosts[dead].etcd_pid().context("etcd's pid")?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    s.world
        .wait_agent_state(&dead_ip, &["stale"], Duration::from_secs(60))?;
    let keep: Vec<usize> = (0..4).filter(|i| *i != dead).collect();
    s.write_inventory_members(&keep)?;
    let (code, run) = s.sop(&["member", "remove", &dead_ip])?;
    assert_eq!(code, 0, "member remove: {run}");
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(steps_of(&run, "DeferCleanup").len(), 1, "{run}");
    assert_eq!(steps_of(&run, "SetPatroniHosts").len(), 2, "{run}");
    s.configs_name(&keep)?;

    // A few more writes after the last SOP (and at least 20 in all, so the verdict rests on
    // enough samples however fast the SOPs went), then the verdict.
    let at_end = watcher.snapshot().writes_ok;
    quorum_tests::wait_for(
        "more writes through the VIP after the last SOP",
        Duration::from_secs(60),
        || {
            let ok = watcher.snapshot().writes_ok;
            (ok >= 20 && ok >= at_end + 3).then_some(())
        },
    )?;
    let seen = watcher.finish();
    eprintln!(
        "watch: {} samples, {} writes ok, {} failed, leaders {:?}, leader key {:?}, timelines {:?}, mid-way {} ok",
        seen.samples,
        seen.writes_ok,
        seen.writes_failed.len(),
        seen.leaders,
        seen.leader_key,
        seen.timelines,
        mid.writes_ok
    );
    assert!(
        seen.writes_ok >= 20,
        "too few writes went through: {seen:?}"
    );
    assert!(
        seen.writes_failed.is_empty(),
        "writes through the VIP failed: {:?}",
        seen.writes_failed
    );
    assert_eq!(
        seen.leaders,
        vec!["pg-test-1".to_string()],
        "the leader changed: {seen:?}"
    );
    assert_eq!(seen.no_leader, 0, "a sample saw no leader: {seen:?}");
    assert_eq!(
        seen.leader_key,
        vec!["pg-test-1".to_string()],
        "the leader key changed hands: {seen:?}"
    );
    assert_eq!(
        seen.leader_key_absent, 0,
        "the leader key was gone: {seen:?}"
    );
    assert_eq!(
        seen.leader_key_unread, 0,
        "no etcd member answered: {seen:?}"
    );
    assert_eq!(
        seen.timelines,
        vec![timeline],
        "the timeline moved (a failover): {seen:?}"
    );
    assert!(
        seen.vip_off.is_empty(),
        "the VIP left the primary: {:?}",
        seen.vip_off
    );
    // Each SOP restarted vip-manager on the replica (its endpoints changed each time) and
    // never on the primary, which would release the VIP to restart: the primary's config has
    // the new endpoints all the same (checked above), for its next restart.
    for (h, n) in s.pg.hosts.iter().zip(vip_restarts) {
        let want = if h.ip == primary { n } else { n + 2 };
        assert_eq!(h.vip_restarts(), want, "vip-manager restarts on {}", h.ip);
    }
    Ok(())
}

#[test]
fn patroni_reload_halts_on_a_broken_patroni_yml_and_restart_switches_over() -> Result<()> {
    let mut s = setup(3)?;
    let (primary, replica) = (&s.pg.hosts[0], &s.pg.hosts[1]);
    let timeline = timeline_of(&s.pg.cluster()?).context("no timeline")?;

    // The plan says plainly what a reload does not apply.
    let out = s.world.admin(&["patroni", "reload", "--plan"])?.ok()?;
    assert!(
        out.stdout
            .contains("applies a changed etcd host list only when it restarts"),
        "{}",
        out.stdout
    );

    // A PostgreSQL cluster the inventory does not have is bad input, named as such.
    let out = s
        .world
        .admin(&["patroni", "reload", "--cluster", "pg-nope", "--plan"])?;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("pg-nope") && out.stderr.contains("pg-test"),
        "{out:?}"
    );

    // A replica's patroni.yml no longer parses: the run halts there and nothing is written.
    let good = std::fs::read_to_string(replica.patroni_yml())?;
    let broken = format!("{good}\netcd: [unclosed\n");
    std::fs::write(replica.patroni_yml(), &broken)?;
    let primary_before = std::fs::read(primary.patroni_yml())?;
    let replica_pid = replica.patroni_pid();
    let (code, run) = s.sop(&["patroni", "reload", "--cluster", "pg-test"])?;
    assert_ne!(code, 0, "{run}");
    assert_eq!(run["state"], "failed", "{run}");
    let failed: Vec<&serde_json::Value> = run["steps"]
        .as_array()
        .map(|a| a.iter().filter(|st| st["state"] == "failed").collect())
        .unwrap_or_default();
    assert_eq!(failed.len(), 1, "{run}");
    assert_eq!(failed[0]["kind"], "SetPatroniHosts", "{run}");
    assert_eq!(failed[0]["host"], replica.ip.to_string(), "{run}");
    assert!(
        failed[0]["output"]
            .as_str()
            .is_some_and(|o| o.contains("does not parse as YAML")),
        "{run}"
    );
    assert_eq!(std::fs::read_to_string(replica.patroni_yml())?, broken);
    assert_eq!(std::fs::read(primary.patroni_yml())?, primary_before);
    assert_eq!(
        replica.patroni_pid(),
        replica_pid,
        "Patroni there was touched"
    );
    // Fixed by hand, the run resumes from the failed step and finishes.
    std::fs::write(replica.patroni_yml(), &good)?;
    let id = run["run_id"].as_str().context("run id")?;
    let out = s.world.admin(&["run", "resume", id])?;
    assert_eq!(out.code, 0, "{out:?}");

    // --restart-patroni: replica restarted, a switchover (not a failover), then the old primary.
    let pids = (primary.patroni_pid(), replica.patroni_pid());
    let (code, run) = s.sop(&["patroni", "reload", "--restart-patroni"])?;
    assert_eq!(code, 0, "{run}");
    assert_eq!(run["state"], "succeeded", "{run}");
    let order: Vec<(String, String)> = run["steps"]
        .as_array()
        .context("steps")?
        .iter()
        .filter(|st| st["kind"] == "SetPatroniHosts" || st["kind"] == "Switchover")
        .map(|st| {
            (
                st["kind"].as_str().unwrap_or_default().to_string(),
                st["host"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(
        order,
        vec![
            ("SetPatroniHosts".into(), replica.ip.to_string()),
            ("Switchover".into(), primary.ip.to_string()),
            ("SetPatroniHosts".into(), primary.ip.to_string()),
        ],
        "{run}"
    );
    assert_ne!(
        primary.patroni_pid(),
        pids.0,
        "Patroni on the old primary was not restarted"
    );
    assert_ne!(
        replica.patroni_pid(),
        pids.1,
        "Patroni on the replica was not restarted"
    );
    s.pg.wait_all_running(Duration::from_secs(60))?;
    let after = s.pg.cluster()?;
    assert_eq!(leader_of(&after).as_deref(), Some("pg-test-2"), "{after}");
    // A switchover moves to the next timeline exactly once.
    assert_eq!(timeline_of(&after), Some(timeline + 1), "{after}");

    // vip-manager follows the new leader; `vip reload` gates on it.
    wait_for(
        "the VIP on the new primary",
        Duration::from_secs(30),
        || (s.pg.vip_holders(&s.lab).ok()? == vec![replica.ip]).then_some(()),
    )?;
    let (code, run) = s.sop(&["vip", "reload"])?;
    assert_eq!(code, 0, "{run}");
    assert_eq!(run["state"], "succeeded", "{run}");
    let gates = steps_of(&run, "VipGate");
    assert!(
        gates.iter().all(|g| g["output"]
            .as_str()
            .is_some_and(|o| o.contains(&format!("on {} only", replica.ip)))),
        "{run}"
    );

    // The coordinator killed inside the switchover, then inside the old primary's restart:
    // each resumed run finishes, and every Patroni restarted exactly once per run.
    let w = &mut s.world;
    for boundary in [3usize, 5] {
        let before: Vec<usize> = s.pg.hosts.iter().map(|h| h.patroni_restarts()).collect();
        let leader_before = leader_of(&s.pg.cluster()?);
        let mut child = w.spawn_admin(&["patroni", "reload", "--restart-patroni", "--yes"])?;
        let run_id = w.wait_steps_done(
            "patroni-reload",
            boundary,
            &["running"],
            Duration::from_secs(120),
        )?;
        w.kill_coordinator();
        let _ = child.wait();
        w.start_coordinator()?;
        for h in &s.pg.hosts {
            w.wait_agent_state(
                &h.ip.to_string(),
                &["connected", "idle"],
                Duration::from_secs(60),
            )?;
        }
        let run = w
            .resume_after_crash(&run_id)
            .with_context(|| format!("boundary {boundary}"))?;
        assert_eq!(run["state"], "succeeded", "boundary {boundary}: {run}");
        for (h, b) in s.pg.hosts.iter().zip(&before) {
            assert_eq!(
                h.patroni_restarts(),
                b + 1,
                "boundary {boundary}: Patroni on {} restarted {} times in one run",
                h.ip,
                h.patroni_restarts() - b
            );
        }
        s.pg.wait_all_running(Duration::from_secs(60))?;
        let leader_after = leader_of(&s.pg.cluster()?);
        assert_ne!(
            leader_after, leader_before,
            "boundary {boundary}: no switchover"
        );
    }
    Ok(())
}

/// Pigsty v4 (#13): etcd runs RBAC and Patroni logs in with its cluster's own etcd user, which
/// `cluster create` made. Through a member add and a member remove, Patroni keeps its leader
/// and timeline, and the patched patroni.yml keeps its username and password.
#[test]
fn patroni_with_its_own_etcd_user_keeps_its_leader_through_member_add_and_remove() -> Result<()> {
    let s = setup_with(4, Some(("pg-test", "Pg.Test.Etcd")))?;
    let before = s.pg.cluster()?;
    let timeline = timeline_of(&before).context("no timeline")?;
    assert_eq!(leader_of(&before).as_deref(), Some("pg-test-1"), "{before}");
    s.write_inventory(4)?;
    let (code, run) = s.sop(&["member", "add", &s.etcd_ips[3].to_string()])?;
    assert_eq!(code, 0, "member add: {run}");
    s.configs_name_patroni(&[0, 1, 2, 3])?;
    s.write_inventory(3)?;
    let (code, run) = s.sop(&["member", "remove", &s.etcd_ips[3].to_string()])?;
    assert_eq!(code, 0, "member remove: {run}");
    s.configs_name_patroni(&[0, 1, 2])?;
    // `patroni reload` (Pigsty's pg_conf + reload) under RBAC too.
    let (code, run) = s.sop(&["patroni", "reload"])?;
    assert_eq!(code, 0, "patroni reload: {run}");
    s.pg.wait_all_running(Duration::from_secs(60))?;
    let after = s.pg.cluster()?;
    assert_eq!(leader_of(&after).as_deref(), Some("pg-test-1"), "{after}");
    assert_eq!(timeline_of(&after), Some(timeline), "{after}");
    for h in &s.pg.hosts {
        let text = std::fs::read_to_string(h.patroni_yml())?;
        assert!(
            text.contains("etcd3:\n")
                && text.contains("  username: pg-test\n")
                && text.contains("  password: Pg.Test.Etcd\n"),
            "{}: {text}",
            h.ip
        );
    }
    Ok(())
}
