//! The SOP engine end to end: a real 3-member etcd cluster on 127.0.0.11-13 created and
//! rolled through real agents (exec backend around start-stop-daemon and etcd) by a
//! real coordinator, checked against etcd itself.

use std::time::Duration;

use anyhow::{Context, Result};
use quorum_tests::etcd::{Fleet, HealthSampler, HostPaths, Writer};
use quorum_tests::{wait_for, World};

const IPS: [&str; 3] = ["127.0.0.11", "127.0.0.12", "127.0.0.13"];

/// A world with a coordinator, three agents and an inventory naming them; no cluster yet.
fn setup(vars: &str) -> Result<(World, Fleet)> {
    let mut w = World::new()?;
    w.coordinator_extra =
        "gate_timeout_secs: 20\nstale_after_secs: 10\ntask_timeout_secs: 60\n".into();
    let fleet = Fleet::new(&w, &IPS)?;
    fleet.write_inventory(&w, &[(IPS[0], 1), (IPS[1], 2), (IPS[2], 3)], vars)?;
    w.start_coordinator()?;
    fleet.start_agents(&mut w)?;
    Ok((w, fleet))
}

fn create(w: &World) -> Result<()> {
    let out = w.admin(&["cluster", "create", "--yes"])?;
    anyhow::ensure!(out.code == 0, "create failed: {out:?}");
    Ok(())
}

fn endpoints(f: &Fleet) -> Vec<String> {
    f.hosts.iter().map(|h| f.client_url(h.ip)).collect()
}

async fn voting_members(w: &World, f: &Fleet) -> Result<Vec<String>> {
    quorum_tests::etcd::voting_members(w, f).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_makes_a_healthy_cluster_and_again_changes_nothing() -> Result<()> {
    let (w, f) = setup("")?;
    let plan = w.admin(&["cluster", "create", "--plan"])?.ok()?;
    assert!(
        plan.stdout.contains("nothing has been changed"),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout.contains("+initial-cluster-state: \"new\""),
        "the plan shows the new etcd.conf:\n{}",
        plan.stdout
    );
    assert!(
        f.host(IPS[0])?.etcd_pid().is_none(),
        "--plan started something"
    );
    create(&w)?;
    assert_eq!(
        voting_members(&w, &f).await?,
        vec!["etcd-1", "etcd-2", "etcd-3"]
    );
    let again = w.admin(&["cluster", "create"])?;
    assert_eq!(again.code, 0, "{again:?}");
    assert!(
        again.stderr.contains("nothing to change"),
        "{}",
        again.stderr
    );
    assert!(again.stderr.contains("nothing changed"), "{}", again.stderr);
    // The profiles the agents wrote work for etcdctl.
    w.admin(&["env", "refresh"])?.ok()?;
    for ip in IPS {
        let health = f.etcdctl_via_profile(ip, "endpoint health")?;
        assert_eq!(health.code, 0, "{health:?}");
        assert_eq!(
            health.stdout.matches("is healthy").count()
                + health.stderr.matches("is healthy").count(),
            3,
            "{health:?}"
        );
    }
    let put = f.etcdctl_via_profile(IPS[1], "put a 10")?;
    assert_eq!(put.code, 0, "{put:?}");
    let get = f.etcdctl_via_profile(IPS[2], "get a")?;
    assert!(get.stdout.contains("10"), "{get:?}");
    // Audit: who ran what, with every step.
    let runs = w.admin(&["run", "list", "-o", "json"])?.ok()?;
    let runs: Vec<serde_json::Value> = serde_json::from_str(&runs.stdout)?;
    assert!(runs.len() >= 3);
    assert!(runs.iter().all(|r| r["started_by"] == "tester"
        && r["inventory_digest"]
            .as_str()
            .is_some_and(|d| d.len() == 64)));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_reload_keeps_quorum_and_loses_no_write() -> Result<()> {
    let (w, f) = setup("")?;
    create(&w)?;
    let sampler = HealthSampler::start(f.hosts.clone());
    let writer = Writer::start(&w, endpoints(&f)).await?;
    let out = w.admin(&["config", "reload", "--restart"])?;
    assert_eq!(out.code, 0, "{out:?}");
    let restarts_seen = sampler.restarts_seen();
    let (max_down, samples) = sampler.stop();
    let (acked, missing, lost) = writer.finish(&w, endpoints(&f)).await?;
    assert!(samples > 10, "too few health samples ({samples})");
    assert!(max_down <= 1, "{max_down} members were down at one moment");
    // The sampler watched through every restart (else it would prove nothing). A restart
    // whose stop is quick can fall between two samples, so it is seen by the new pid.
    assert_eq!(
        restarts_seen,
        vec![1, 1, 1],
        "the sampler did not see each member's etcd restart once"
    );
    assert!(acked > 0, "the writer wrote nothing");
    assert_eq!(
        (missing, lost),
        (0, 0),
        "{acked} acked, {missing} missing, {lost} failed after retries"
    );
    for h in &f.hosts {
        assert_eq!(
            h.restart_count(),
            1,
            "{} restarted {} times",
            h.ip,
            h.restart_count()
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unhealthy_member_stops_the_reload_at_the_quorum_guard() -> Result<()> {
    let (w, f) = setup("")?;
    create(&w)?;
    let h3 = f.host(IPS[2])?;
    h3.kill_etcd()?;
    // A new leader first, if etcd-3 led: the refusal must name etcd-3, not an election.
    quorum_tests::etcd::wait_members_up(&w, &endpoints(&f)[..2], Duration::from_secs(20)).await?;
    let out = w.admin(&["config", "reload", "--restart"])?;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains("QuorumGuard"), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("member etcd-3 (127.0.0.13) is unhealthy"),
        "{}",
        out.stderr
    );
    // F9: the reason in the operator's words, not a Rust error's dump.
    assert!(
        out.stderr.contains(&format!(
            "cannot reach {}: connection refused",
            f.client_url(h3.ip)
        )),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("tonic::transport::Error") && !out.stderr.contains("Os {"),
        "{}",
        out.stderr
    );
    // The refusal carries what etcd-3's agent says: the service state and etcd's log.
    assert!(
        out.stderr
            .contains("the agent on 127.0.0.13 reports: etcd inactive"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("--- the last lines of etcd's log ---"),
        "{}",
        out.stderr
    );
    for h in &f.hosts {
        assert_eq!(h.restart_count(), 0, "{} was restarted", h.ip);
    }
    Ok(())
}

/// Restarts etcd-2's agent with a restart command that stops etcd and never starts it again
/// (`extra` is appended to its config); returns etcd-2's paths.
fn restart_never_starts(w: &mut World, f: &Fleet, extra: &str) -> Result<HostPaths> {
    let h2 = f.host(IPS[1])?.clone();
    if let Some(a) = w.agent(IPS[1]) {
        a.kill();
    }
    let broken = h2.agent_config(false).replace(
        "&& start-stop-daemon --start --background --oknodo --make-pidfile",
        "&& true --start --background --oknodo --make-pidfile",
    ) + extra;
    w.start_agent(IPS[1], &broken)?;
    Ok(h2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_failing_its_gate_halts_the_run_before_the_next_host() -> Result<()> {
    let (mut w, f) = setup("")?;
    create(&w)?;
    // etcd-3 leads, so the roll (followers first, the leader last) goes .11, .12, .13.
    quorum_tests::etcd::move_leader_to(&w, &endpoints(&f), f.hosts[2].ip).await?;
    // etcd-2's restart command stops etcd and never starts it again. Its agent does not
    // check its starts (start_check_secs: 0), so the gate after the restart is what sees it.
    let h2 = restart_never_starts(&mut w, &f, "start_check_secs: 0\n")?;
    w.wait_agent_state(IPS[1], &["connected", "idle"], Duration::from_secs(30))?;
    let out = w.admin(&["config", "reload", "--restart"])?;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("HealthGate 127.0.0.12"),
        "{}",
        out.stderr
    );
    // The gate's failure says what the member's agent sees: etcd stopped, and its log.
    assert!(
        out.stderr
            .contains("the agent on 127.0.0.12 reports: etcd inactive"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("--- the last lines of etcd's log ---"),
        "{}",
        out.stderr
    );
    assert_eq!(f.host(IPS[0])?.restart_count(), 1);
    assert_eq!(h2.restart_count(), 1);
    assert_eq!(
        f.host(IPS[2])?.restart_count(),
        0,
        "the run went on past the failed gate"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_that_leaves_etcd_stopped_fails_at_the_restart_itself() -> Result<()> {
    let (mut w, f) = setup("")?;
    create(&w)?;
    // etcd-3 leads, so the roll (followers first, the leader last) goes .11, .12, .13.
    quorum_tests::etcd::move_leader_to(&w, &endpoints(&f), f.hosts[2].ip).await?;
    // As above, etcd-2's restart never starts etcd again; its agent checks its starts.
    restart_never_starts(&mut w, &f, "")?;
    w.wait_agent_state(IPS[1], &["connected", "idle"], Duration::from_secs(30))?;
    let out = w.admin(&["config", "reload", "--restart"])?;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("RestartEtcd 127.0.0.12"),
        "the restart itself must fail, not the gate after it:\n{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("etcd is not running") && out.stderr.contains("it exited"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("--- the last lines of etcd's log ---"),
        "{}",
        out.stderr
    );
    // The run halted there: no step after the failed restart ran.
    let runs = w.admin(&["run", "list", "-o", "json"])?.ok()?;
    let runs: Vec<serde_json::Value> = serde_json::from_str(&runs.stdout)?;
    let steps = runs
        .first()
        .and_then(|r| r["steps"].as_array())
        .context("the run's steps")?;
    let failed = steps
        .iter()
        .position(|s| s["state"] == "failed")
        .context("a failed step")?;
    assert_eq!(steps[failed]["kind"], "RestartEtcd", "{:?}", steps[failed]);
    assert!(
        steps[failed + 1..].iter().all(|s| s["state"] == "pending"),
        "the run went on past the failed restart: {steps:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_honors_the_safeguard_and_purge_wipes_everything() -> Result<()> {
    let (w, f) = setup("etcd_safeguard: true")?;
    // A fresh create is allowed under the safeguard: nothing exists yet.
    create(&w)?;
    let out = w.admin(&["cluster", "remove", "--yes"])?;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.stderr
            .contains("Abort because etcd_safeguard is enabled for cluster etcd"),
        "{}",
        out.stderr
    );
    for h in &f.hosts {
        assert!(h.etcd_pid().is_some(), "{} was stopped", h.ip);
        assert!(h.data().join("member").exists(), "{} was wiped", h.ip);
    }
    // H1 (security probe): with etcd stopped on every member the safeguard still refuses a
    // removal, in the plan and in the run; every data dir keeps its member.
    for ip in IPS {
        w.admin(&["task", "--host", ip, "--yes", "service", "etcd", "stop"])?
            .ok()?;
    }
    for h in &f.hosts {
        wait_for("etcd to stop", Duration::from_secs(20), || {
            h.etcd_pid().is_none().then_some(())
        })?;
    }
    for args in [
        &["cluster", "remove", "--plan"][..],
        &["cluster", "remove", "--yes"][..],
    ] {
        let out = w.admin(args)?;
        assert_eq!(out.code, 3, "{args:?}: {out:?}");
        assert!(
            out.stderr
                .contains("a removal is refused whether or not etcd runs"),
            "{}",
            out.stderr
        );
    }
    for h in &f.hosts {
        assert!(h.data().join("member").exists(), "{} was wiped", h.ip);
    }
    // Without --yes and without a terminal, nothing is wiped.
    let out = w.admin(&["cluster", "purge", "--no-snapshot"])?;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains("etcd-1 @ 127.0.0.11"), "{}", out.stderr);
    assert!(f.host(IPS[0])?.data().join("member").exists());
    // Every member is stopped, so no snapshot can be taken first (invariant 8): the purge is
    // refused until the operator waives it.
    let out = w.admin(&["cluster", "purge", "--yes"])?;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.stderr.contains("no snapshot can be taken"),
        "{}",
        out.stderr
    );
    assert!(f.host(IPS[0])?.data().join("member").exists());
    let out = w.admin(&["cluster", "purge", "--yes", "--no-snapshot"])?;
    assert_eq!(out.code, 0, "{out:?}");
    for h in &f.hosts {
        assert!(h.etcd_pid().is_none(), "{} still runs etcd", h.ip);
        assert!(h.data().exists(), "the data dir itself must stay");
        assert_eq!(
            std::fs::read_dir(h.data())?.count(),
            0,
            "{} data dir not empty",
            h.ip
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_agent_safeguard_blocks_even_a_purge() -> Result<()> {
    let (mut w, f) = setup("")?;
    create(&w)?;
    let h2 = f.host(IPS[1])?.clone();
    if let Some(a) = w.agent(IPS[1]) {
        a.kill();
    }
    w.start_agent(IPS[1], &h2.agent_config(true))?;
    w.wait_agent_state(IPS[1], &["connected", "idle"], Duration::from_secs(30))?;
    let out = w.admin(&["cluster", "purge", "--yes"])?;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.stderr
            .contains("local safeguard of the agent on 127.0.0.12"),
        "{}",
        out.stderr
    );
    for h in &f.hosts {
        assert!(h.data().join("member").exists(), "{} was wiped", h.ip);
        assert!(h.etcd_pid().is_some(), "{} was stopped", h.ip);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sop_on_a_locked_cluster_is_refused_with_the_holder() -> Result<()> {
    let (w, _f) = setup("")?;
    create(&w)?;
    let mut child = w.spawn_admin(&["config", "reload", "--restart"])?;
    let holder = wait_for("the reload to be running", Duration::from_secs(20), || {
        let out = w.admin(&["run", "list", "-o", "json"]).ok()?;
        let runs: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).ok()?;
        runs.iter()
            .find(|r| r["sop"] == "config-reload" && r["state"] == "running")
            .and_then(|r| r["run_id"].as_str().map(str::to_string))
    })?;
    let second = w.admin(&["env", "refresh"])?;
    let _ = child.wait();
    assert_eq!(second.code, 3, "{second:?}");
    assert!(
        second.stderr.contains(&format!("locked by run {holder}")),
        "{}",
        second.stderr
    );
    Ok(())
}

/// kill -9 of the coordinator at every step boundary of a rolling reload (and inside steps),
/// then restart and resume: the run completes and every member is restarted exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_killed_at_any_step_resumes_without_repeating_a_restart() -> Result<()> {
    let (mut w, f) = setup("")?;
    create(&w)?;
    // A snapshot, 3 members x (guard, write, restart, gate), and the leader's MoveLeaderAway.
    let steps = w.plan_len(&["config", "reload", "--restart"])?;
    assert_eq!(steps, 14);
    let newest_run = |w: &World| -> Option<String> {
        let out = w.admin(&["run", "list", "-o", "json"]).ok()?;
        let runs: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).ok()?;
        runs.first()?["run_id"].as_str().map(str::to_string)
    };
    for boundary in 0..steps {
        let before: Vec<usize> = f.hosts.iter().map(|h| h.restart_count()).collect();
        let previous = newest_run(&w);
        let mut child = w.spawn_admin(&["config", "reload", "--restart"])?;
        wait_for("the new run", Duration::from_secs(60), || {
            newest_run(&w).filter(|r| Some(r) != previous.as_ref())
        })?;
        // Wait until `boundary` steps are done (the kill lands at that boundary or just inside
        // the next step: both are crash points the design must survive). The last gate takes
        // an instant, since a restart is done only once etcd is healthy: the run may have
        // succeeded by the time it is seen, and then the kill lands after its end.
        let run_id = w.wait_steps_done(
            "config-reload",
            boundary,
            &["running", "succeeded"],
            Duration::from_secs(60),
        )?;
        w.kill_coordinator();
        let _ = child.wait();
        w.start_coordinator()?;
        for ip in IPS {
            w.wait_agent_state(ip, &["connected", "idle"], Duration::from_secs(60))?;
        }
        let run = w
            .resume_after_crash(&run_id)
            .with_context(|| format!("boundary {boundary}"))?;
        assert_eq!(run["state"], "succeeded", "boundary {boundary}: {run}");
        for (h, b) in f.hosts.iter().zip(&before) {
            assert_eq!(
                h.restart_count(),
                b + 1,
                "boundary {boundary}: {} restarted {} times in one run",
                h.ip,
                h.restart_count() - b
            );
        }
    }
    assert_eq!(
        voting_members(&w, &f).await?,
        vec!["etcd-1", "etcd-2", "etcd-3"]
    );
    Ok(())
}

/// Invariant 1 on resume (e2e probe F1): a run stopped after its quorum guard and resumed
/// after another member died re-checks the guard as it restarts, and refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_restart_checks_quorum_again_before_it_acts() -> Result<()> {
    let (mut w, f) = setup("")?;
    create(&w)?;
    // etcd-3 leads, so etcd-1 is the first member the roll visits.
    quorum_tests::etcd::move_leader_to(&w, &endpoints(&f), f.hosts[2].ip).await?;
    let h1 = f.host(IPS[0])?.clone();
    // The run halts right after etcd-1's guard: its etcd.conf write is refused (a directory
    // is in the way; since M2 the agent refuses it, exit 3), so the restart is the next step
    // a resume takes.
    let conf = h1.etcd_conf();
    let saved = std::fs::read(&conf)?;
    std::fs::remove_file(&conf)?;
    std::fs::create_dir(&conf)?;
    let out = w.admin(&["config", "reload", "--restart"])?;
    assert_eq!(
        out.code, 3,
        "the agent refuses a directory at etcd.conf: {out:?}"
    );
    let runs: Vec<serde_json::Value> =
        serde_json::from_str(&w.admin(&["run", "list", "-o", "json"])?.ok()?.stdout)?;
    let run = runs.first().context("the reload's run")?;
    let id = run["run_id"].as_str().context("run id")?.to_string();
    assert_eq!(run["steps"][0]["kind"], "SnapshotSave", "{run}");
    assert_eq!(run["steps"][1]["kind"], "QuorumGuard", "{run}");
    assert_eq!(run["steps"][1]["state"], "done", "{run}");
    assert_eq!(run["steps"][2]["state"], "failed", "{run}");
    std::fs::remove_dir(&conf)?;
    std::fs::write(&conf, saved)?;
    // Meanwhile another member dies, and the coordinator is killed and comes back.
    let h2 = f.host(IPS[1])?;
    if let Some(pid) = h2.etcd_pid() {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )?;
    }
    wait_for("etcd-2 to die", Duration::from_secs(20), || {
        h2.etcd_pid().is_none().then_some(())
    })?;
    w.kill_coordinator();
    w.start_coordinator()?;
    for ip in IPS {
        w.wait_agent_state(ip, &["connected", "idle"], Duration::from_secs(60))?;
    }
    let pid = h1.etcd_pid();
    let resumed = w.admin(&["run", "resume", &id])?;
    assert_eq!(resumed.code, 3, "refused by the quorum guard: {resumed:?}");
    let show = w.admin(&["run", "show", &id, "-o", "json"])?.ok()?;
    let run: serde_json::Value = serde_json::from_str(&show.stdout)?;
    assert_eq!(run["steps"][3]["kind"], "RestartEtcd", "{run}");
    assert_eq!(run["steps"][3]["outcome"], "refused", "{run}");
    assert!(
        run["error"]
            .as_str()
            .is_some_and(|e| e.contains("could lose quorum")),
        "{run}"
    );
    assert_eq!(h1.etcd_pid(), pid, "etcd-1 was restarted with etcd-2 down");
    assert_eq!(h1.restart_count(), 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_agent_is_refused_at_plan_time_and_fails_its_step_at_run_time() -> Result<()> {
    let (mut w, f) = setup("")?;
    create(&w)?;
    let h3 = f.host(IPS[2])?.clone();
    // Dead before the plan: the plan is refused and nothing runs.
    if let Some(a) = w.agent(IPS[2]) {
        a.kill();
    }
    let out = w.admin(&["env", "refresh"])?;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.stderr.contains("the agent on 127.0.0.13 is stale"),
        "{}",
        out.stderr
    );
    // Dead during the run: the step waiting on it fails as stale and the run halts there.
    w.start_agent(IPS[2], &h3.agent_config(false))?;
    w.wait_agent_state(IPS[2], &["connected", "idle"], Duration::from_secs(30))?;
    let mut child = w.spawn_admin(&["config", "reload", "--restart"])?;
    let id = wait_for("the reload to be running", Duration::from_secs(30), || {
        let out = w.admin(&["run", "list", "-o", "json"]).ok()?;
        let runs: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).ok()?;
        runs.iter()
            .find(|r| r["sop"] == "config-reload" && r["state"] == "running")
            .and_then(|r| r["run_id"].as_str().map(str::to_string))
    })?;
    if let Some(a) = w.agent(IPS[2]) {
        a.kill();
    }
    let status = child.wait()?;
    assert_eq!(status.code(), Some(1));
    let show = w.admin(&["run", "show", &id, "-o", "json"])?.ok()?;
    let run: serde_json::Value = serde_json::from_str(&show.stdout)?;
    assert_eq!(run["state"], "failed", "{run}");
    assert!(
        run["error"]
            .as_str()
            .is_some_and(|e| e.contains("the agent on 127.0.0.13 is stale")),
        "{run}"
    );
    assert_eq!(
        h3.restart_count(),
        0,
        "etcd-3 was restarted without its agent"
    );
    // Back, the agent lets a resume finish the run.
    w.start_agent(IPS[2], &h3.agent_config(false))?;
    w.wait_agent_state(IPS[2], &["connected", "idle"], Duration::from_secs(30))?;
    let resumed = w.admin(&["run", "resume", &id])?;
    assert_eq!(resumed.code, 0, "{resumed:?}");
    assert_eq!(h3.restart_count(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_actions_go_one_host_at_a_time_and_runs_can_be_aborted() -> Result<()> {
    let (w, f) = setup("")?;
    create(&w)?;
    let out = w.admin(&["service", "restart", "etcd", "--hosts", IPS[1]])?;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains("QuorumGuard 127.0.0.12"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("HealthGate 127.0.0.12"),
        "{}",
        out.stderr
    );
    let counts: Vec<usize> = f.hosts.iter().map(|h| h.restart_count()).collect();
    assert_eq!(counts, vec![0, 1, 0]);
    // Restarting etcd on several hosts at once is refused before anything runs.
    let out = w.admin(&["service", "restart", "etcd", "--forks", "2"])?;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.stderr.contains("one member at a time"),
        "{}",
        out.stderr
    );
    let out = w.admin(&["service", "status", "etcd", "--hosts", "etcd"])?;
    assert_eq!(out.code, 0, "{out:?}");
    // A failed run holds the cluster until it is aborted.
    let h3 = f.host(IPS[2])?;
    h3.kill_etcd()?;
    let out = w.admin(&["config", "reload", "--restart"])?;
    assert_eq!(out.code, 3, "{out:?}");
    let runs = w.admin(&["run", "list", "-o", "json"])?.ok()?;
    let runs: Vec<serde_json::Value> = serde_json::from_str(&runs.stdout)?;
    let id = runs[0]["run_id"].as_str().context("run id")?.to_string();
    let out = w.admin(&["env", "refresh"])?;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.stderr.contains(&format!("locked by run {id}")),
        "{}",
        out.stderr
    );
    w.admin(&["run", "abort", &id])?.ok()?;
    let show = w.admin(&["run", "show", &id, "-o", "json"])?.ok()?;
    let run: serde_json::Value = serde_json::from_str(&show.stdout)?;
    assert_eq!(run["state"], "aborted");
    assert!(
        run["error"]
            .as_str()
            .is_some_and(|e| e.contains("aborted by tester")),
        "{run}"
    );
    w.admin(&["env", "refresh"])?.ok()?;
    Ok(())
}

/// Invariant 8 (e2e probe item 7): a destructive SOP takes a verified snapshot first and
/// keeps it with bounded retention; the restore steps `quorum snapshot restore --plan` prints,
/// followed on the hosts, bring the purged cluster back with its data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destructive_runs_snapshot_first_and_the_printed_restore_brings_data_back() -> Result<()> {
    let (mut w, f) = setup("")?;
    w.coordinator_extra.push_str("snapshot_keep: 2\n");
    w.kill_coordinator();
    w.start_coordinator()?;
    for ip in IPS {
        w.wait_agent_state(ip, &["connected", "idle"], Duration::from_secs(60))?;
    }
    create(&w)?;
    let mut c = quorum_tests::etcd::client(&w, &endpoints(&f)).await?;
    c.put("snap/key", "before-purge", None).await?;
    // The plan shows the snapshot before the first restart, and says so.
    let plan = w.admin(&["service", "restart", "etcd", "--hosts", IPS[1], "--plan"])?;
    let plan = plan.ok()?;
    assert!(plan.stdout.contains("SnapshotSave"), "{}", plan.stdout);
    assert!(
        plan.stdout.contains("a verified snapshot of etcd is taken"),
        "{}",
        plan.stdout
    );
    w.admin(&["service", "restart", "etcd", "--hosts", IPS[1], "--yes"])?
        .ok()?;
    let list = |w: &World| -> Result<Vec<serde_json::Value>> {
        let out = w.admin(&["snapshot", "list", "-o", "json"])?.ok()?;
        Ok(serde_json::from_str(&out.stdout)?)
    };
    let snaps = list(&w)?;
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    assert!(snaps[0]["reason"]
        .as_str()
        .is_some_and(|r| r.contains("service")));
    let path = snaps[0]["path"]
        .as_str()
        .context("snapshot path")?
        .to_string();
    let status = quorum_tests::etcd_command("etcdctl")
        .args(["snapshot", "status", &path])
        .env("ETCDCTL_API", "3")
        .output()?;
    assert!(status.status.success(), "{status:?}");
    // Retention keeps the newest two.
    for _ in 0..2 {
        w.admin(&["snapshot", "save"])?.ok()?;
    }
    assert_eq!(list(&w)?.len(), 2);
    assert!(
        !std::path::Path::new(&path).exists(),
        "the oldest was not pruned"
    );
    // The purge snapshots the running cluster, then wipes it.
    w.admin(&["cluster", "purge", "--yes"])?.ok()?;
    let newest = list(&w)?;
    let id = newest[0]["id"].as_str().context("snapshot id")?.to_string();
    let file = newest[0]["path"]
        .as_str()
        .context("snapshot path")?
        .to_string();
    assert!(newest[0]["reason"]
        .as_str()
        .is_some_and(|r| r.contains("cluster-purge")));
    for h in &f.hosts {
        assert_eq!(
            std::fs::read_dir(h.data())?.count(),
            0,
            "{} not wiped",
            h.ip
        );
    }
    let out = w.admin(&["snapshot", "restore", &id])?;
    assert_eq!(out.code, 2, "a restore is only ever printed: {out:?}");
    let steps = w
        .admin(&["snapshot", "restore", "--plan", &id])?
        .ok()?
        .stdout;
    // Follow the printed steps as an operator would: this lab's hosts share one machine, so
    // the copy is the file itself, and there is no systemd (the `quorum` lines start etcd).
    let copy = format!("/tmp/{id}.db");
    let mut followed = 0;
    for line in steps.lines() {
        if line.starts_with("mv ") || line.starts_with("ETCDCTL_API=3 etcdctl snapshot restore ") {
            let line = line.replace(&copy, &file);
            let out = std::process::Command::new("sh")
                .env("PATH", quorum_tests::etcd_path())
                .args(["-c", &line])
                .output()?;
            assert!(out.status.success(), "{line}: {out:?}");
            followed += 1;
        } else if let Some(args) = line.strip_prefix("quorum ") {
            let args: Vec<&str> = args.split_whitespace().collect();
            w.admin(&args)?.ok()?;
            followed += 1;
        }
    }
    // Per member: mv, restore, certs, etcd.conf, profile; then one start of all together.
    assert_eq!(followed, 5 * IPS.len() + 1, "{steps}");
    let mut c = quorum_tests::etcd::client(&w, &endpoints(&f)).await?;
    let got = c.get("snap/key", None).await?;
    assert_eq!(
        got.kvs().first().map(|kv| kv.value().to_vec()),
        Some(b"before-purge".to_vec())
    );
    assert_eq!(
        voting_members(&w, &f).await?,
        vec!["etcd-1", "etcd-2", "etcd-3"]
    );
    Ok(())
}

/// Item 4 (e2e probe F4): a roll restarts followers first and the leader last, after handing
/// its leadership to a member already restarted and caught up: one leader change per roll.
/// The leader is put on 127.0.0.11, the first host in inventory order, so a roll in IP order
/// would restart it first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_roll_restarts_the_leader_last_after_handing_leadership_to_a_restarted_member(
) -> Result<()> {
    let (w, f) = setup("")?;
    create(&w)?;
    let eps = endpoints(&f);
    quorum_tests::etcd::move_leader_to(&w, &eps, f.hosts[0].ip).await?;
    let plan = w
        .admin(&["config", "reload", "--restart", "--plan"])?
        .ok()?;
    assert!(
        plan.stdout.contains("the leader etcd-1 (127.0.0.11) last"),
        "{}",
        plan.stdout
    );
    let leader_before = quorum_tests::etcd::leader_host(&w, &eps).await?;
    let sampler = quorum_tests::etcd::LeaderSampler::start(&w, eps.clone()).await?;
    let out = w.admin(&["config", "reload", "--restart", "-o", "json"])?;
    let terms = sampler.stop().await;
    assert_eq!(out.code, 0, "{out:?}");
    let run: serde_json::Value = serde_json::from_str(&out.stdout)?;
    let steps = run["steps"].as_array().context("steps")?;
    let restarts: Vec<&str> = steps
        .iter()
        .filter(|s| s["kind"] == "RestartEtcd")
        .filter_map(|s| s["host"].as_str())
        .collect();
    assert_eq!(
        restarts.last().copied(),
        Some(leader_before.to_string().as_str()),
        "the leader at plan time was not restarted last: {restarts:?}"
    );
    let mv = steps
        .iter()
        .position(|s| s["kind"] == "MoveLeaderAway")
        .context("a MoveLeaderAway step")?;
    assert_eq!(steps[mv]["host"], leader_before.to_string());
    assert_eq!(steps[mv]["outcome"], "changed", "{}", steps[mv]);
    assert!(
        steps[mv]["output"]
            .as_str()
            .is_some_and(|o| o.contains("restarted earlier in this run")),
        "{}",
        steps[mv]
    );
    assert_eq!(steps[mv + 1]["kind"], "RestartEtcd");
    for h in &f.hosts {
        assert_eq!(
            h.restart_count(),
            1,
            "{} restarted {} times",
            h.ip,
            h.restart_count()
        );
    }
    // One change of leader (the hand-over) for the whole roll; a roll in IP order hands it
    // on at every restart. An election of its own on a loaded machine would add one, so
    // only the roll's own changes are counted: every term after the first.
    assert!(
        terms.len() <= 2,
        "leaders by term during the roll: {terms:?} (more than one change)"
    );
    Ok(())
}

/// e2e probe F15: a running member whose etcd.conf differs only in `initial-cluster` (a
/// membership change elsewhere) is written without a restart, and the plan says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_whose_only_change_is_initial_cluster_restarts_nobody() -> Result<()> {
    let (w, f) = setup("")?;
    create(&w)?;
    let pids: Vec<Option<i32>> = f.hosts.iter().map(|h| h.etcd_pid()).collect();
    // Every member's file lists one more member than the inventory, as after a removal.
    for h in &f.hosts {
        let conf = std::fs::read_to_string(h.etcd_conf())?;
        let edited: String = conf
            .lines()
            .map(|l| match l.strip_suffix('"') {
                Some(head) if l.starts_with("initial-cluster: ") => {
                    format!("{head},etcd-9=https://127.0.0.19:{}\"\n", f.peer_port)
                }
                _ => format!("{l}\n"),
            })
            .collect();
        anyhow::ensure!(
            edited != conf,
            "no initial-cluster line in {}",
            h.etcd_conf().display()
        );
        std::fs::write(h.etcd_conf(), edited)?;
    }
    let plan = w.admin(&["config", "reload", "--plan"])?.ok()?;
    assert!(
        plan.stdout
            .contains("changes only in initial-cluster / initial-cluster-state"),
        "{}",
        plan.stdout
    );
    assert!(!plan.stdout.contains("RestartEtcd"), "{}", plan.stdout);
    let out = w.admin(&["config", "reload"])?;
    assert_eq!(out.code, 0, "{out:?}");
    for (h, pid) in f.hosts.iter().zip(&pids) {
        assert_eq!(h.restart_count(), 0, "{} was restarted", h.ip);
        assert_eq!(h.etcd_pid(), *pid, "{} runs another etcd", h.ip);
        let conf = std::fs::read_to_string(h.etcd_conf())?;
        assert!(!conf.contains("etcd-9="), "{} was not rewritten", h.ip);
    }
    Ok(())
}

/// Item 3 (e2e probe F3): every etcd SOP compares pigsty.yml with etcd's member list and
/// refuses with the exact line to add; nothing is changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sops_refuse_an_inventory_that_misses_a_live_member() -> Result<()> {
    let (w, f) = setup("")?;
    create(&w)?;
    // etcd-1 is a live member; the inventory forgets it.
    f.write_inventory(&w, &[(IPS[1], 2), (IPS[2], 3)], "")?;
    let confs: Vec<String> = f
        .hosts
        .iter()
        .map(|h| std::fs::read_to_string(h.etcd_conf()))
        .collect::<std::io::Result<_>>()?;
    let line = "add `127.0.0.11: { etcd_seq: 1 }` under all.children.etcd.hosts";
    for args in [
        &["config", "reload", "--restart"][..],
        &["config", "reload", "--plan"][..],
        &["env", "refresh"][..],
        &["service", "restart", "etcd", "--hosts", IPS[1]][..],
        &["cluster", "create", "--yes"][..],
    ] {
        let out = w.admin(args)?;
        assert_eq!(out.code, 3, "{args:?}: {out:?}");
        assert!(out.stderr.contains(line), "{args:?}: {}", out.stderr);
    }
    for (h, before) in f.hosts.iter().zip(&confs) {
        assert_eq!(h.restart_count(), 0, "{} was restarted", h.ip);
        assert_eq!(
            &std::fs::read_to_string(h.etcd_conf())?,
            before,
            "{} was rewritten",
            h.ip
        );
    }
    // `cluster status` shows the same line, and exits 1.
    let status = w.admin(&["cluster", "status", "-o", "json"])?;
    assert_eq!(status.code, 1, "{status:?}");
    let v: serde_json::Value = serde_json::from_str(&status.stdout)?;
    assert_eq!(v["agrees"], false, "{v}");
    assert!(
        v["agreement"]
            .as_array()
            .is_some_and(|a| a.iter().any(|l| l["kind"] == "not_in_inventory"
                && l["text"].as_str().is_some_and(|t| t.contains(line)))),
        "{v}"
    );
    Ok(())
}
