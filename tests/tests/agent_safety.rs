//! The security probe's host-side steps (reference/security-probe-2026-11.md), replayed
//! through `quorum task` and a real agent: no wipe while etcd's state cannot be read (H3, F13).

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use prost::Message;
use quorum_proto::pb;
use quorum_tests::etcd::{free_port_on, Fleet, HostPaths};
use quorum_tests::{wait_for, CliOutput, Proc, World};

/// A world with a coordinator and one host (not yet with an agent).
fn world(ip: &str) -> Result<(World, Fleet, HostPaths)> {
    let mut w = World::new()?;
    let f = Fleet::new(&w, &[ip])?;
    f.write_inventory(&w, &[(ip, 1)], "")?;
    w.start_coordinator()?;
    let h = f.hosts[0].clone();
    Ok((w, f, h))
}

fn start_agent(w: &mut World, ip: &str, extra: &str) -> Result<()> {
    w.start_agent(ip, extra)?;
    w.wait_agent_state(ip, &["connected", "idle"], Duration::from_secs(30))
}

/// `quorum task --host IP --yes ARGS`.
fn task(w: &World, ip: &str, args: &[&str]) -> Result<CliOutput> {
    let mut a = vec!["task", "--host", ip, "--yes"];
    a.extend_from_slice(args);
    w.admin(&a)
}

/// `quorum-agent run-task` of a facts task with `config`: how an agent start-up check is seen
/// without leaving a daemon behind.
fn agent_start_check(w: &World, config: &str) -> Result<CliOutput> {
    let t = pb::Task {
        id: "start-check".into(),
        kind: Some(pb::task::Kind::CollectFacts(pb::CollectFacts {})),
    };
    let file = w.dir.path().join("facts.pb");
    std::fs::write(&file, t.encode_to_vec())?;
    quorum_tests::run(
        "quorum-agent",
        &[
            "run-task",
            "--config",
            config,
            "--task",
            &file.display().to_string(),
        ],
        &[],
    )
}

#[test]
fn a_wipe_is_refused_while_etcd_runs_and_its_state_cannot_be_read() -> Result<()> {
    let ip = "127.0.0.41";
    let (mut w, _f, h) = world(ip)?;
    // A real etcd serving from this host's data dir, owned by the test.
    let lo = "127.0.0.1".parse()?;
    let port = free_port_on(&[lo])?;
    let (client, peer) = (
        format!("http://127.0.0.1:{port}"),
        format!("http://127.0.0.1:{}", port + 1),
    );
    let mut cmd = Command::new("etcd");
    cmd.args(["--name", "solo", "--data-dir"])
        .arg(h.data())
        .args([
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
            "--initial-cluster",
            &format!("solo={peer}"),
        ]);
    let _etcd = Proc::spawn("etcd", cmd, &h.etcd_log())?;
    let etcdctl = |args: &[&str]| {
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &client, "--dial-timeout=2s"])
            .args(args)
            .output()
    };
    wait_for("etcd to take a write", Duration::from_secs(30), || {
        etcdctl(&["put", "k", "v"])
            .ok()
            .filter(|o| o.status.success())
    })?;

    // Without a status command the agent does not start: it could never tell.
    let no_status = format!(
        "{}service_backend: exec\nexec:\n  etcd:\n    stop: ['true']\n",
        h.paths_config()
    );
    let cfg = w.write_agent_config(ip, &no_status)?;
    let out = agent_start_check(&w, &cfg)?;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("exec.etcd.status"), "{}", out.stderr);

    // A status command that cannot be run; stop does nothing, so etcd keeps running.
    let extra = format!(
        "{}service_backend: exec\nexec:\n  etcd:\n    status: [{}]\n    stop: ['true']\n",
        h.paths_config(),
        h.root.join("bin/no-such-status-command").display()
    );
    start_agent(&mut w, ip, &extra)?;
    task(&w, ip, &["facts"])?.ok()?;
    let agents = w.admin(&["agents"])?.ok()?;
    assert!(
        agents.stdout.contains(&format!(
            "warning: {ip}: etcd state unknown: wipes are refused"
        )),
        "{}",
        agents.stdout
    );
    let log = w.agent(ip).context("agent")?.log_text();
    assert!(log.contains("cannot tell whether etcd is running"), "{log}");

    let out = task(&w, ip, &["wipe-etcd-data"])?;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.stdout.contains("cannot tell whether etcd is running"),
        "{}",
        out.stdout
    );
    // A purge stops etcd (here: a stop that does nothing) and then demands a positive stop.
    let out = task(&w, ip, &["wipe-etcd-data", "--purge"])?;
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("positively stopped"), "{}", out.stdout);
    assert!(
        h.data().join("member/wal").is_dir(),
        "the data dir was touched"
    );
    let got = etcdctl(&["get", "k", "--print-value-only"])?;
    assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), "v");
    Ok(())
}
