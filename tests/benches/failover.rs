//! Failover benchmark (bench/run.sh step 7): two coordinators on one PostgreSQL 15 with the
//! default lease (12 s, renewed every 3 s), a real 3-member etcd cluster and its agents. Each
//! round starts a rolling `config reload --restart`, kills the leader (SIGKILL) once three steps
//! are done, and times, from the kill: the standby taking the lease (`quorum.leaders`), and
//! the next step it starts (the step's start time in the store). Prints `key=value` lines for
//! the results file.
//!
//! `cargo bench -p quorum-tests --bench failover -- [--rounds N] [--out FILE]`; the binaries
//! come from QUORUM_BIN_DIR (bench/run.sh points it at target/release).

use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use quorum_tests::etcd::Fleet;
use quorum_tests::postgres::Postgres;
use quorum_tests::{wait_for, World};

const IPS: [&str; 3] = ["127.0.0.11", "127.0.0.12", "127.0.0.13"];

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn leader(w: &World, pg: &Postgres) -> Option<usize> {
    let url = pg
        .psql(
            "meta",
            "SELECT url FROM quorum.lease WHERE expires_at > now()",
        )
        .ok()?;
    w.urls().iter().position(|u| *u == url)
}

fn newest_run(w: &World) -> Option<String> {
    let out = w.admin(&["run", "list", "-o", "json"]).ok()?;
    let runs: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).ok()?;
    runs.first()?["run_id"].as_str().map(str::to_string)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let rounds: usize = arg("--rounds").map(|r| r.parse()).transpose()?.unwrap_or(5);
    let out = arg("--out");
    let mut w = World::new()?;
    let pg = Postgres::start(&w)?;
    w.coordinator_extra = format!(
        "gate_timeout_secs: 30\nstale_after_secs: 60\ntask_timeout_secs: 60\n{}",
        pg.store_yaml("meta", "12s", "3s")
    );
    let f = Fleet::new(&w, &IPS)?;
    f.write_inventory(&w, &[(IPS[0], 1), (IPS[1], 2), (IPS[2], 3)], "")?;
    w.add_coordinator()?;
    w.start_coordinator_at(0)?;
    wait_for("a leader", Duration::from_secs(30), || leader(&w, &pg))?;
    w.start_coordinator_at(1)?;
    f.start_agents(&mut w)?;
    let created = w.admin(&["cluster", "create", "--yes"])?;
    if created.code != 0 {
        bail!("cluster create failed: {created:?}");
    }
    let (mut lease_ms, mut step_ms) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let l = wait_for("a leader", Duration::from_secs(30), || leader(&w, &pg))?;
        let previous = newest_run(&w);
        let mut child = w.spawn_admin(&["config", "reload", "--restart"])?;
        wait_for("the new run", Duration::from_secs(60), || {
            newest_run(&w).filter(|r| Some(r) != previous.as_ref())
        })?;
        let run_id =
            w.wait_steps_done("config-reload", 3, &["running"], Duration::from_secs(90))?;
        let killed_ms = now_ms();
        w.kill_coordinator_at(l);
        let _ = child.wait();
        let run = wait_for(
            "the standby to finish the run",
            Duration::from_secs(180),
            || {
                let out = w.admin(&["run", "show", &run_id, "-o", "json"]).ok()?;
                let v: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
                (v["state"] == "succeeded").then_some(v)
            },
        )?;
        let acquired: i64 = pg
            .psql(
                "meta",
                "SELECT (extract(epoch FROM max(acquired_at)) * 1000)::bigint FROM quorum.leaders",
            )?
            .parse()
            .context("the takeover's time")?;
        let next = run["steps"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["started_unix_ms"].as_i64())
            .filter(|t| *t >= killed_ms)
            .min()
            .context("no step started after the kill")?;
        lease_ms.push(acquired - killed_ms);
        step_ms.push(next - killed_ms);
        eprintln!(
            "round {round}: lease taken {} ms, next step {} ms after the kill",
            acquired - killed_ms,
            next - killed_ms
        );
        w.start_coordinator_at(l)?;
    }
    let stat = |v: &mut Vec<i64>| {
        v.sort();
        let p50 = v.get(v.len() / 2).copied().unwrap_or(0);
        let max = v.last().copied().unwrap_or(0);
        (p50, max)
    };
    let (lease_p50, lease_max) = stat(&mut lease_ms);
    let (step_p50, step_max) = stat(&mut step_ms);
    let lines = format!(
        "failover.rounds={rounds}\nfailover.lease_ttl_s=12\nfailover.renew_s=3\nfailover.lease_p50_ms={lease_p50}\nfailover.lease_max_ms={lease_max}\nfailover.step_p50_ms={step_p50}\nfailover.step_max_ms={step_max}\n"
    );
    print!("{lines}");
    if let Some(path) = out {
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)?
            .write_all(lines.as_bytes())?;
    }
    Ok(())
}
