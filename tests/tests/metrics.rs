//! The coordinator's metrics as Prometheus sees them: Debian's Prometheus (unpacked by
//! `scripts/prometheus`, run from the test's own dir on its own port) scrapes a running
//! coordinator's `metrics_listen` while a cluster is created and rolled through real agents
//! and real etcd; the test then asks Prometheus' HTTP API for the run, step, gate, task and
//! agent series. `/healthz` and `/readyz` answer over the same plain-HTTP listener.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use quorum_tests::etcd::Fleet;
use quorum_tests::pg::http_get;
use quorum_tests::{free_port, wait_for, Proc, World};

const IPS: [&str; 3] = ["127.0.0.11", "127.0.0.12", "127.0.0.13"];

fn prometheus_dir() -> Result<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/prometheus");
    let out = Command::new(&script).output()?;
    ensure!(
        out.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?.trim().into())
}

/// `query` evaluated by Prometheus now: the first sample's value, if any.
fn query(prom: SocketAddr, query: &str) -> Option<f64> {
    let q: String = query
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    let (status, body) = http_get(prom, &format!("/api/v1/query?query={q}")).ok()?;
    if status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_runs_steps_gates_tasks_and_agents_after_a_rolling_reload() -> Result<()>
{
    let bin = prometheus_dir()?;
    let mut w = World::new()?;
    let lo: IpAddr = "127.0.0.1".parse()?;
    let metrics = SocketAddr::new(lo, free_port(lo)?);
    w.coordinator_extra = format!("metrics_listen: {metrics}\ngate_timeout_secs: 20\n");
    w.coordinator_args = vec!["--log-format".into(), "json".into()];
    let fleet = Fleet::new(&w, &IPS)?;
    // The first host is also Pigsty's infra node (v3.6: Prometheus, whose targets and rules
    // live under /etc/prometheus), so `quorum monitor register` writes there.
    fleet.write_inventory_with(
        &w,
        &[(IPS[0], 1), (IPS[1], 2), (IPS[2], 3)],
        "",
        &format!(
            "    infra:\n      hosts:\n        {}: {{ infra_seq: 1 }}\n      vars: {{ version: v3.6.1 }}\n",
            IPS[0]
        ),
    )?;
    w.start_coordinator()?;
    let infra = fleet.host(IPS[0])?;
    let etc_prometheus = infra.root.join("etc/prometheus");
    for d in ["targets/infra", "rules"] {
        std::fs::create_dir_all(etc_prometheus.join(d))?;
    }
    let prom_pid = w.dir.path().join("prometheus.pid");
    let monitoring_config = format!(
        "  prometheus:\n    status: [/bin/sh, -c, 'kill -0 \"$(cat {pid})\"']\n    reload: [/bin/sh, -c, 'kill -HUP \"$(cat {pid})\"']\n\
         monitoring:\n  prometheus: {{ root: {p}, targets: {p}/targets/infra/quorum.yml, rules: {p}/rules/quorum.yml, owner: {{ user: root, group: root }} }}\n",
        pid = prom_pid.display(),
        p = etc_prometheus.display()
    );
    for h in &fleet.hosts {
        let mut config = h.agent_config(false);
        if h.ip == infra.ip {
            // Into the exec: map, whose last entry ends just before `safeguard:`.
            config = config.replacen("safeguard:", &format!("{monitoring_config}safeguard:"), 1);
        }
        w.start_agent(&h.ip.to_string(), &config)?;
    }
    for ip in IPS {
        w.wait_agent_state(ip, &["connected", "idle"], Duration::from_secs(30))?;
    }

    // The plain-HTTP listener: health and readiness, and nothing else.
    let (code, body) = http_get(metrics, "/healthz")?;
    assert_eq!((code, body.trim()), (200, "ok"));
    let (code, _) = http_get(metrics, "/readyz")?;
    assert_eq!(code, 200);
    let (code, _) = http_get(metrics, "/nope")?;
    assert_eq!(code, 404);

    // Prometheus configured as Pigsty v3 configures it on its infra nodes: the `infra` job
    // reads every target file in targets/infra/, every rule file in rules/ is loaded. Quorum
    // is not in it until registered.
    let prom = SocketAddr::new(lo, free_port(lo)?);
    let cfg = w.dir.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: ['{p}/rules/*.yml']\nscrape_configs:\n  - job_name: infra\n    file_sd_configs:\n      - refresh_interval: 1s\n        files: ['{p}/targets/infra/*.yml']\n",
            p = etc_prometheus.display()
        ),
    )?;
    let mut cmd = Command::new(bin.join("prometheus"));
    cmd.arg(format!("--config.file={}", cfg.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            w.dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address={prom}"));
    let prometheus = Proc::spawn("prometheus", cmd, &w.dir.path().join("prometheus.log"))?;
    std::fs::write(&prom_pid, prometheus.pid().to_string())?;
    let prom_log =
        || std::fs::read_to_string(w.dir.path().join("prometheus.log")).unwrap_or_default();
    wait_for("Prometheus to serve", Duration::from_secs(60), || {
        http_get(prom, "/-/ready").ok().filter(|(c, _)| *c == 200)
    })
    .with_context(prom_log)?;
    assert_eq!(query(prom, "count(up{cls=\"quorum\"})"), None);

    let out = w.admin(&["monitor", "register"])?;
    ensure!(out.code == 0, "monitor register: {out:?}");
    assert!(
        out.stdout.contains(&format!("{} changed", IPS[0]))
            && out.stdout.contains("reloaded prometheus"),
        "{out:?}"
    );
    let targets = std::fs::read_to_string(etc_prometheus.join("targets/infra/quorum.yml"))?;
    assert!(targets.contains(&format!("\"{metrics}\"")), "{targets}");
    wait_for(
        "Prometheus to scrape the coordinator through the registered target file",
        Duration::from_secs(60),
        || {
            (query(
                prom,
                "up{job=\"infra\",cls=\"quorum\",ins=\"quorum-1\",ip=\"127.0.0.1\"}",
            )? == 1.0)
                .then_some(())
        },
    )
    .with_context(prom_log)?;
    // The rules were loaded by the reload the agent made.
    let rule_groups = || -> Option<String> {
        let (code, body) = http_get(prom, "/api/v1/rules").ok()?;
        (code == 200).then_some(body)
    };
    wait_for(
        "Prometheus to load Quorum's rules",
        Duration::from_secs(30),
        || {
            rule_groups()
                .filter(|b| b.contains("\"quorum-alert\"") && b.contains("QuorumRunHalted"))
        },
    )
    .with_context(prom_log)?;

    let out = w.admin(&["cluster", "create", "--yes"])?;
    ensure!(out.code == 0, "create: {out:?}");
    let out = w.admin(&["config", "reload", "--restart", "--yes"])?;
    ensure!(out.code == 0, "reload: {out:?}");

    let checks: Vec<(String, f64)> = vec![
        ("quorum_build_info".into(), 1.0),
        (
            "sum(quorum_runs_finished_total{sop=\"config-reload\",state=\"succeeded\"})".into(),
            1.0,
        ),
        (
            "sum(quorum_runs_finished_total{sop=\"cluster-create\",state=\"succeeded\"})".into(),
            1.0,
        ),
        (
            "sum(quorum_step_duration_seconds_count{kind=\"RestartEtcd\"})".into(),
            3.0,
        ),
        (
            "sum(quorum_gate_wait_seconds_count{gate=\"health\"})".into(),
            3.0,
        ),
        (
            "sum(quorum_task_results_total{kind=\"ServiceAction\",outcome=\"changed\"})".into(),
            3.0,
        ),
        (
            "sum(quorum_tasks_dispatched_total{kind=\"WriteEtcdConf\"})".into(),
            6.0,
        ),
        ("sum(quorum_task_dispatch_wait_seconds_count)".into(), 6.0),
        ("sum(quorum_agents{state=~\"connected|idle\"})".into(), 3.0),
        (
            format!(
                "count(quorum_agent_info{{version=\"{}\"}})",
                env!("CARGO_PKG_VERSION")
            ),
            3.0,
        ),
        (
            "count(quorum_agent_last_seen_timestamp_seconds)".into(),
            3.0,
        ),
        // What the agents count themselves and report over their sessions.
        (
            "sum(quorum_agent_tasks_total{outcome=\"changed\"})".into(),
            6.0,
        ),
        ("count(quorum_agent_sessions_total >= 1)".into(), 3.0),
        ("count(quorum_agent_connect_failures_total)".into(), 3.0),
        ("min(quorum_agent_journal_bytes)".into(), 1.0),
        (
            "count(quorum_agent_start_timestamp_seconds > 1700000000)".into(),
            3.0,
        ),
        (
            "min(quorum_certificate_expiry_timestamp_seconds{role=\"agent\"} - time())".into(),
            86400.0,
        ),
        (
            "count(quorum_certificate_expiry_timestamp_seconds{role=\"agent\"})".into(),
            3.0,
        ),
        ("sum(quorum_runs{state=\"succeeded\"})".into(), 2.0),
        (
            "sum(quorum_store_write_seconds_count{op=\"put_step\"})".into(),
            10.0,
        ),
        (
            "min(quorum_certificate_expiry_timestamp_seconds{role=\"coordinator\"} - time())"
                .into(),
            86400.0,
        ),
        (
            "quorum_snapshot_last_size_bytes{cluster=\"etcd\"}".into(),
            4096.0,
        ),
        (
            "quorum_snapshot_last_timestamp_seconds{cluster=\"etcd\"} - time() + 600".into(),
            0.0,
        ),
        (
            "quorum_snapshot_duration_seconds{cluster=\"etcd\"}".into(),
            0.000001,
        ),
    ];
    for (q, at_least) in &checks {
        wait_for(
            &format!("Prometheus to have {q} >= {at_least}"),
            Duration::from_secs(30),
            || (query(prom, q)? >= *at_least).then_some(()),
        )
        .with_context(|| {
            http_get(metrics, "/metrics")
                .map(|(_, b)| b)
                .unwrap_or_default()
        })?;
    }
    // promtool (Prometheus' own linter) finds nothing wrong in the exposition.
    let (_, text) = http_get(metrics, "/metrics")?;
    let mut lint = std::process::Command::new(bin.join("promtool"))
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    {
        use std::io::Write;
        lint.stdin
            .take()
            .context("promtool's stdin")?
            .write_all(text.as_bytes())?;
    }
    let lint = lint.wait_with_output()?;
    assert!(
        lint.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
    // The alert rules pass promtool's check and their unit tests (that they name only series
    // the coordinator exposes is a unit test of the metrics).
    let monitoring = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/monitoring");
    for args in [
        vec!["check", "rules", "quorum.rules.yml"],
        vec!["test", "rules", "quorum.rules.test.yml"],
    ] {
        let out = std::process::Command::new(bin.join("promtool"))
            .args(&args)
            .current_dir(&monitoring)
            .output()?;
        assert!(
            out.status.success(),
            "promtool {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // --log-format json: every line of the coordinator's log is one JSON object.
    let log = std::fs::read_to_string(w.dir.path().join("coordinator.log"))?;
    let mut messages = Vec::new();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("not JSON: {line}"))?;
        ensure!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
        messages.push(
            v["fields"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    assert!(
        messages.iter().any(|m| m == "coordinator listening"),
        "{messages:?}"
    );
    // Nothing is halted: no run holds a lock.
    assert_eq!(
        query(prom, "count(quorum_run_halted_timestamp_seconds)"),
        None,
        "a run is reported halted"
    );
    // A member down: the next rolling restart is refused by the quorum guard, and its run,
    // halted, holds the cluster's lock until aborted; Prometheus sees both.
    let h3 = fleet.host(IPS[2])?;
    h3.kill_etcd()?;
    let two: Vec<String> = IPS[..2]
        .iter()
        .map(|ip| fleet.client_url(ip.parse().expect("an IP")))
        .collect();
    quorum_tests::etcd::wait_members_up(&w, &two, Duration::from_secs(20)).await?;
    let out = w.admin(&["config", "reload", "--restart", "--yes"])?;
    assert_eq!(out.code, 3, "{out:?}");
    for (q, at_least) in [
        ("sum(quorum_quorum_guard_refusals_total)", 1.0),
        (
            "count(quorum_run_halted_timestamp_seconds{sop=\"config-reload\",state=\"failed\",cluster=\"etcd\"})",
            1.0,
        ),
    ] {
        wait_for(
            &format!("Prometheus to have {q} >= {at_least}"),
            Duration::from_secs(30),
            || (query(prom, q)? >= at_least).then_some(()),
        )?;
    }

    // Deregistration: both files go, Prometheus drops the target and, reloaded, the rules.
    let out = w.admin(&["monitor", "deregister"])?;
    ensure!(out.code == 0, "monitor deregister: {out:?}");
    assert!(
        out.stdout.contains(&format!("{} changed", IPS[0])),
        "{out:?}"
    );
    for f in ["targets/infra/quorum.yml", "rules/quorum.yml"] {
        assert!(!etc_prometheus.join(f).exists(), "{f} is still there");
    }
    wait_for(
        "Prometheus to drop the coordinator's target and Quorum's rules",
        Duration::from_secs(30),
        || {
            let gone = query(prom, "count(up{cls=\"quorum\"})").is_none()
                && rule_groups().is_some_and(|b| !b.contains("\"quorum-alert\""));
            gone.then_some(())
        },
    )
    .with_context(|| {
        format!(
            "up: {:?}; rules: {:?}; targets: {:?}; {out:?}",
            query(prom, "count(up{cls=\"quorum\"})"),
            rule_groups(),
            http_get(prom, "/api/v1/targets")
                .map(|(_, b)| b)
                .unwrap_or_default()
        )
    })?;
    // A host that is no infra node is refused, and nothing is written.
    let out = w.admin(&["monitor", "register", "--hosts", IPS[1]])?;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("not a host of the `infra` group"),
        "{out:?}"
    );
    assert!(!etc_prometheus.join("targets/infra/quorum.yml").exists());
    drop(prometheus);
    Ok(())
}
