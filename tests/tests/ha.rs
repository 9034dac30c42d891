//! Coordinators active/standby on a shared store in a real PostgreSQL 15: a standby answers
//! with the leader's URL; kill -9 of the leader at every step boundary of a rolling reload
//! and of a member add leaves the run to the standby, which finishes it without repeating a
//! restart; a leader paused past its lease (SIGSTOP) is fenced and, resumed, changes nothing.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use quorum_tests::etcd::Fleet;
use quorum_tests::postgres::Postgres;
use quorum_tests::{wait_for, World};

const IPS: [&str; 4] = ["127.0.0.11", "127.0.0.12", "127.0.0.13", "127.0.0.14"];

/// Short leases keep the failovers of these tests quick; the defaults (12s, 3s) are measured
/// by the benchmark.
const LEASE: (&str, &str) = ("6s", "1s");

struct Ha {
    w: World,
    f: Fleet,
    pg: Postgres,
}

/// Two coordinators on one PostgreSQL (the first takes the lease), agents that know both,
/// and a created 3-member cluster.
fn setup(hosts: usize, members: usize) -> Result<Ha> {
    let mut w = World::new()?;
    let pg = Postgres::start(&w)?;
    w.coordinator_extra = format!(
        "gate_timeout_secs: 20\nstale_after_secs: 30\ntask_timeout_secs: 60\n{}",
        pg.store_yaml("meta", LEASE.0, LEASE.1)
    );
    let f = Fleet::new(&w, &IPS[..hosts])?;
    let inv: Vec<(&str, u32)> = IPS[..members]
        .iter()
        .enumerate()
        .map(|(i, ip)| (*ip, i as u32 + 1))
        .collect();
    f.write_inventory(&w, &inv, "")?;
    w.add_coordinator()?;
    w.start_coordinator_at(0)?;
    let ha = Ha { w, f, pg };
    ha.wait_leader(0, Duration::from_secs(30))?;
    let mut ha = ha;
    ha.w.start_coordinator_at(1)?;
    ha.f.start_agents(&mut ha.w)?;
    let out = ha.w.admin(&["cluster", "create", "--yes"])?;
    anyhow::ensure!(out.code == 0, "create failed: {out:?}");
    Ok(ha)
}

impl Ha {
    /// The index of the coordinator holding a live lease, and its epoch.
    fn leader(&self) -> Result<Option<(usize, i64)>> {
        let row = self.pg.psql(
            "meta",
            "SELECT url || ' ' || epoch FROM quorum.lease WHERE expires_at > now()",
        )?;
        let Some((url, epoch)) = row.split_once(' ') else {
            return Ok(None);
        };
        let i = self
            .w
            .urls()
            .iter()
            .position(|u| u == url)
            .with_context(|| format!("the lease names {url}, no coordinator of this test"))?;
        Ok(Some((i, epoch.parse()?)))
    }

    fn wait_leader(&self, i: usize, timeout: Duration) -> Result<i64> {
        wait_for(
            &format!("coordinator {i} to hold the lease"),
            timeout,
            || {
                self.leader()
                    .ok()
                    .flatten()
                    .filter(|(l, _)| *l == i)
                    .map(|(_, e)| e)
            },
        )
    }

    /// After a takeover, until every agent has found the new leader (a SOP is refused while
    /// one of its hosts has no connected agent).
    fn wait_agents(&self) -> Result<()> {
        for h in &self.f.hosts {
            self.w.wait_agent_state(
                &h.ip.to_string(),
                &["connected", "idle"],
                Duration::from_secs(60),
            )?;
        }
        Ok(())
    }

    fn newest_run(&self) -> Option<String> {
        let out = self.w.admin(&["run", "list", "-o", "json"]).ok()?;
        let runs: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).ok()?;
        runs.first()?["run_id"].as_str().map(str::to_string)
    }

    fn run_json(&self, id: &str) -> Result<serde_json::Value> {
        let out = self.w.admin(&["run", "show", id, "-o", "json"])?.ok()?;
        Ok(serde_json::from_str(&out.stdout)?)
    }

    fn wait_run_state(
        &self,
        id: &str,
        state: &str,
        timeout: Duration,
    ) -> Result<serde_json::Value> {
        wait_for(&format!("run {id} to be {state}"), timeout, || {
            self.run_json(id).ok().filter(|r| r["state"] == state)
        })
    }

    /// Starts `args` (a SOP), waits until `boundary` steps of its run are done, kills the
    /// leader, and waits for the standby to finish the run. Returns the run and how long the
    /// takeover took from the kill to the next step's start.
    fn kill_leader_at(
        &mut self,
        args: &[&str],
        sop: &str,
        boundary: usize,
    ) -> Result<(serde_json::Value, Option<Duration>)> {
        let (leader, epoch) = self.leader()?.context("no leader before the run")?;
        self.wait_agents()?;
        let previous = self.newest_run();
        let mut child = self.w.spawn_admin_output(args)?;
        let started = wait_for("the new run", Duration::from_secs(60), || {
            self.newest_run().filter(|r| Some(r) != previous.as_ref())
        });
        if let Err(e) = started {
            let _ = child.kill();
            let out = child.wait_with_output()?;
            bail!(
                "{e}: `quorum {}` said {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let run_id = self.w.wait_steps_done(
            sop,
            boundary,
            &["running", "succeeded"],
            Duration::from_secs(90),
        )?;
        let before = self.run_json(&run_id)?;
        let started_before = started_steps(&before);
        self.w.kill_coordinator_at(leader);
        let killed = Instant::now();
        let _ = child.wait();
        let standby = 1 - leader;
        let new_epoch = self.wait_leader(standby, Duration::from_secs(30))?;
        assert_eq!(new_epoch, epoch + 1, "one takeover, one epoch");
        // The time to the next step the new leader starts.
        let mut takeover = None;
        let run = wait_for(
            &format!("run {run_id} to succeed on the standby"),
            Duration::from_secs(120),
            || {
                let r = self.run_json(&run_id).ok()?;
                if takeover.is_none() && started_steps(&r) > started_before {
                    takeover = Some(killed.elapsed());
                }
                (r["state"] == "succeeded").then_some(r)
            },
        )
        .with_context(|| {
            format!(
                "{sop} boundary {boundary}:\n{}",
                std::fs::read_to_string(self.w.coordinator_log(standby)).unwrap_or_default()
            )
        })?;
        self.journals_ran_each_task_once(&run_id)?;
        // The killed one comes back, as a standby.
        self.w.start_coordinator_at(leader)?;
        Ok((run, takeover))
    }
}

impl Ha {
    /// The agents' journals: no task of `run_id` was started twice on a host (a redelivered
    /// task is answered from the journal, never run again).
    fn journals_ran_each_task_once(&self, run_id: &str) -> Result<()> {
        for h in &self.f.hosts {
            let text =
                std::fs::read_to_string(h.journal().join("journal.jsonl")).unwrap_or_default();
            let mut started = std::collections::HashMap::<String, usize>::new();
            for line in text.lines() {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                    continue;
                };
                let id = v["id"].as_str().unwrap_or_default();
                if v["state"] == "started" && id.starts_with(run_id) {
                    *started.entry(id.to_string()).or_default() += 1;
                }
            }
            if let Some((id, n)) = started.iter().find(|(_, n)| **n > 1) {
                bail!("{}: task {id} was started {n} times", h.ip);
            }
        }
        Ok(())
    }
}

/// How many steps have started (running or ended).
fn started_steps(run: &serde_json::Value) -> usize {
    run["steps"]
        .as_array()
        .map(|s| s.iter().filter(|s| s["state"] != "pending").count())
        .unwrap_or(0)
}

#[test]
fn a_standby_names_the_leader_and_the_cli_and_agents_find_it() -> Result<()> {
    let ha = setup(3, 3)?;
    let (leader, epoch) = ha.leader()?.context("a leader")?;
    assert_eq!(leader, 0);
    let urls = ha.w.urls();
    // The standby alone: refused, naming the leader; exit 4 (not reachable as a leader).
    let only_standby =
        ha.w.admin_env(&["run", "list"], &[("QUORUM_COORDINATOR", &urls[1])])?;
    assert_eq!(only_standby.code, 4, "{only_standby:?}");
    assert!(
        only_standby.stderr.contains("not the leader")
            && only_standby.stderr.contains(&urls[0])
            && only_standby.stderr.contains(&format!("epoch {epoch}")),
        "{}",
        only_standby.stderr
    );
    // The standby listed first: the CLI goes on to the leader.
    let both = ha.w.admin_env(
        &["agents", "-o", "json"],
        &[("QUORUM_COORDINATOR", &format!("{},{}", urls[1], urls[0]))],
    )?;
    assert_eq!(both.code, 0, "{both:?}");
    // Agents listed both and hold sessions with the leader.
    for ip in &IPS[..3] {
        ha.w.wait_agent_state(ip, &["connected", "idle"], Duration::from_secs(30))?;
    }
    Ok(())
}

/// kill -9 of the leader at every step boundary of a rolling reload: the standby takes the
/// lease (epoch + 1), resumes the run from the store and finishes it; every member restarts
/// exactly once per run (the agents' journals answer a redelivered restart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_killed_at_every_step_of_a_rolling_reload_leaves_the_run_to_the_standby(
) -> Result<()> {
    let mut ha = setup(3, 3)?;
    let steps = ha.w.plan_len(&["config", "reload", "--restart"])?;
    assert_eq!(steps, 14);
    let mut takeovers = Vec::new();
    for boundary in 0..steps {
        let before: Vec<usize> = ha.f.hosts.iter().map(|h| h.restart_count()).collect();
        let (run, took) = ha.kill_leader_at(
            &["config", "reload", "--restart"],
            "config-reload",
            boundary,
        )?;
        assert_eq!(run["state"], "succeeded", "boundary {boundary}: {run}");
        for (h, b) in ha.f.hosts.iter().zip(&before) {
            assert_eq!(
                h.restart_count(),
                b + 1,
                "boundary {boundary}: {} restarted {} times in one run",
                h.ip,
                h.restart_count() - b
            );
        }
        takeovers.extend(took);
    }
    eprintln!("takeovers (kill to next step started): {takeovers:?}");
    let epochs = ha.pg.psql("meta", "SELECT count(*) FROM quorum.leaders")?;
    assert_eq!(epochs, (steps + 1).to_string(), "one epoch per takeover");
    Ok(())
}

/// kill -9 of the leader at every step boundary of a member add: the standby finishes each
/// add, never with more than one learner, and the cluster ends with the member voting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_killed_at_every_step_of_a_member_add_leaves_the_run_to_the_standby(
) -> Result<()> {
    let mut ha = setup(4, 3)?;
    let all: Vec<(&str, u32)> = IPS
        .iter()
        .enumerate()
        .map(|(i, ip)| (*ip, i as u32 + 1))
        .collect();
    ha.f.write_inventory(&ha.w, &all, "")?;
    let steps = ha.w.plan_len(&["member", "add", IPS[3]])?;
    assert!(steps >= 10, "add plan has {steps} steps");
    for boundary in 0..steps {
        ha.f.write_inventory(&ha.w, &all, "")?;
        let (run, _) =
            ha.kill_leader_at(&["member", "add", IPS[3], "--yes"], "member-add", boundary)?;
        assert_eq!(run["state"], "succeeded", "boundary {boundary}: {run}");
        let members = quorum_tests::etcd::voting_members(&ha.w, &ha.f).await?;
        assert_eq!(
            members,
            vec!["etcd-1", "etcd-2", "etcd-3", "etcd-4"],
            "boundary {boundary}"
        );
        ha.f.write_inventory(&ha.w, &all[..3], "")?;
        ha.wait_agents()?;
        let out = ha.w.admin(&["member", "remove", IPS[3], "--yes"])?;
        assert_eq!(out.code, 0, "boundary {boundary}: {out:?}");
    }
    Ok(())
}

/// A leader stopped (SIGSTOP) past its lease: the standby takes over and finishes the run;
/// the old one, resumed, finds its lease gone, dispatches nothing, writes nothing and exits
/// with code 5.
#[test]
fn a_paused_leader_is_fenced_and_changes_nothing_when_it_resumes() -> Result<()> {
    let mut ha = setup(3, 3)?;
    let (leader, epoch) = ha.leader()?.context("a leader")?;
    let before: Vec<usize> = ha.f.hosts.iter().map(|h| h.restart_count()).collect();
    let mut child = ha.w.spawn_admin(&["config", "reload", "--restart"])?;
    let run_id =
        ha.w.wait_steps_done("config-reload", 5, &["running"], Duration::from_secs(90))?;
    let pid = ha.w.coordinator_at(leader).context("the leader")?.pid();
    let pid = nix::unistd::Pid::from_raw(pid as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP)?;
    let resumed = (|| -> Result<serde_json::Value> {
        let new_epoch = ha.wait_leader(1 - leader, Duration::from_secs(30))?;
        assert_eq!(new_epoch, epoch + 1);
        // Agents leave the silent leader when their keepalive fails, then follow the standby.
        ha.wait_run_state(&run_id, "succeeded", Duration::from_secs(180))
    })();
    // The CLI that followed the run is attached to the stopped leader.
    let _ = child.kill();
    let _ = child.wait();
    let run = match resumed {
        Ok(r) => r,
        Err(e) => {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
            return Err(e);
        }
    };
    for (h, b) in ha.f.hosts.iter().zip(&before) {
        assert_eq!(h.restart_count(), b + 1, "{} restarted once", h.ip);
    }
    let runs_before = ha.pg.psql(
        "meta",
        "SELECT string_agg(id || state || finished_ms, ',' ORDER BY id) FROM quorum.runs",
    )?;
    let steps_before = ha.pg.psql(
        "meta",
        "SELECT md5(string_agg(record, '' ORDER BY run_id, idx)) FROM quorum.steps",
    )?;
    let log_len = std::fs::metadata(ha.w.coordinator_log(leader))?.len() as usize;
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT)?;
    let code =
        ha.w.coordinator_at(leader)
            .context("the old leader")?
            .wait_exit(Duration::from_secs(20))?;
    assert_eq!(code, Some(5), "the old leader steps down with code 5");
    let log = std::fs::read_to_string(ha.w.coordinator_log(leader))?;
    let after = &log[log_len.min(log.len())..];
    assert!(after.contains("stepping down"), "{after}");
    assert!(
        !after.contains("step finished"),
        "the old leader went on walking:\n{after}"
    );
    // Nothing it could have written is there, and no member restarted again.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        ha.pg.psql(
            "meta",
            "SELECT string_agg(id || state || finished_ms, ',' ORDER BY id) FROM quorum.runs"
        )?,
        runs_before
    );
    assert_eq!(
        ha.pg.psql(
            "meta",
            "SELECT md5(string_agg(record, '' ORDER BY run_id, idx)) FROM quorum.steps"
        )?,
        steps_before
    );
    for (h, b) in ha.f.hosts.iter().zip(&before) {
        assert_eq!(h.restart_count(), b + 1, "{} restarted again", h.ip);
    }
    assert_eq!(run["state"], "succeeded");
    ha.journals_ran_each_task_once(&run_id)?;
    // The agents the new leader gave tasks to hold its epoch (the others, the old one's).
    let seen = agent_epochs(&ha.f)?;
    for e in &seen {
        assert!(*e == epoch || *e == epoch + 1, "epoch {e}");
    }
    assert!(
        seen.contains(&(epoch + 1)),
        "no agent took a task from the new leader: {seen:?}"
    );
    Ok(())
}

/// Break-glass: with PostgreSQL down, `serve --standalone` runs on SQLite above the last
/// epoch it saw, and agents follow it; while a live lease is visible it is refused.
#[test]
fn standalone_refuses_a_live_lease_and_runs_above_the_last_epoch_when_postgres_is_down(
) -> Result<()> {
    let mut ha = setup(3, 3)?;
    let (leader, epoch) = ha.leader()?.context("a leader")?;
    let standby = 1 - leader;
    let cfg = ha.w.p(&match standby {
        0 => "coordinator.yml".to_string(),
        i => format!("coordinator-{i}.yml"),
    });
    let out = quorum_tests::run("quorum", &["serve", "--config", &cfg, "--standalone"], &[])?;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("live lease"), "{}", out.stderr);
    // pg-meta goes down with the leader.
    ha.w.kill_coordinator_at(leader);
    ha.w.kill_coordinator_at(standby);
    ha.pg.stop();
    ha.w.coordinator_args = vec!["--standalone".into()];
    ha.w.start_coordinator_at(standby)?;
    for ip in &IPS[..3] {
        ha.w.wait_agent_state(ip, &["connected", "idle"], Duration::from_secs(60))?;
    }
    let out = ha.w.admin(&["env", "refresh"])?;
    assert_eq!(out.code, 0, "{out:?}");
    let standalone_epoch = agent_epochs(&ha.f)?.into_iter().max().unwrap_or(0);
    assert!(
        standalone_epoch > epoch,
        "standalone epoch {standalone_epoch}, the shared leader's was {epoch}"
    );
    // pg-meta is back, no coordinator holds the lease: the export copies the standalone
    // run, and the shared leaders come back above its epoch.
    ha.w.kill_coordinator_at(standby);
    ha.pg.restart()?;
    // The killed leader's lease runs out first (an export is refused while one is live).
    wait_for("the old lease to lapse", Duration::from_secs(30), || {
        matches!(ha.leader(), Ok(None)).then_some(())
    })?;
    let out = quorum_tests::run("quorum", &["store", "export", "--config", &cfg], &[])?;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("exported 1 runs"), "{}", out.stdout);
    let again = quorum_tests::run("quorum", &["store", "export", "--config", &cfg], &[])?;
    assert!(
        again
            .stdout
            .contains("exported 0 runs (1 were there already)"),
        "{again:?}"
    );
    ha.w.coordinator_args.clear();
    ha.w.start_coordinator_at(leader)?;
    let back = ha.wait_leader(leader, Duration::from_secs(30))?;
    assert!(
        back > standalone_epoch,
        "shared epoch {back} after the export, standalone {standalone_epoch}"
    );
    ha.w.start_coordinator_at(standby)?;
    // While a coordinator holds the lease, the export is refused (exit 3).
    let refused = quorum_tests::run("quorum", &["store", "export", "--config", &cfg], &[])?;
    assert_eq!(refused.code, 3, "{refused:?}");
    for ip in &IPS[..3] {
        ha.w.wait_agent_state(ip, &["connected", "idle"], Duration::from_secs(60))?;
    }
    let runs = ha.w.admin(&["run", "list", "-o", "json"])?.ok()?;
    assert!(runs.stdout.contains("env-refresh"), "{}", runs.stdout);
    let out = ha.w.admin(&["env", "refresh"])?;
    assert_eq!(
        out.code, 0,
        "the agents take the shared leader's tasks again: {out:?}"
    );
    assert!(agent_epochs(&ha.f)?.contains(&back));
    Ok(())
}

fn agent_epochs(f: &Fleet) -> Result<Vec<i64>> {
    f.hosts
        .iter()
        .map(|h| {
            let text = std::fs::read_to_string(h.journal().join("epoch"))?;
            Ok(text.split_whitespace().next().unwrap_or_default().parse()?)
        })
        .collect()
}
