//! Readable runs, end to end: the CLI follows a run as the coordinator streams it (WatchRun);
//! `run list` and `run show` say when each run and step started and how long it took; a step
//! answered from an agent's journal on resume says so, with when it really ran; a follow that
//! loses the coordinator says what became of the run; and planning names a silent agent
//! without waiting for it a second time.

use std::time::Duration;

use anyhow::{Context, Result};
use quorum_proto::pb;
use quorum_proto::pb::admin_service_client::AdminServiceClient;
use quorum_tests::etcd::Fleet;
use quorum_tests::{wait_for, CliOutput, World};
use serde_json::Value;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

const IPS: [&str; 3] = ["127.0.0.11", "127.0.0.12", "127.0.0.13"];

/// A coordinator, three agents with the exec backend around etcd, an inventory naming them;
/// no cluster yet.
fn setup(extra: &str) -> Result<(World, Fleet)> {
    let mut w = World::new()?;
    w.coordinator_extra = format!("gate_timeout_secs: 20\ntask_timeout_secs: 60\n{extra}");
    let fleet = Fleet::new(&w, &IPS)?;
    fleet.write_inventory(&w, &[(IPS[0], 1), (IPS[1], 2), (IPS[2], 3)], "")?;
    w.start_coordinator()?;
    fleet.start_agents(&mut w)?;
    Ok((w, fleet))
}

/// The admin's gRPC channel to the coordinator.
async fn admin_channel(w: &World) -> Result<Channel> {
    let ca = std::fs::read_to_string(w.p("ca/ca.crt"))?;
    let cert = std::fs::read_to_string(w.p("admin/admin.crt"))?;
    let key = std::fs::read_to_string(w.p("admin/admin.key"))?;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .identity(Identity::from_pem(cert, key));
    Ok(tonic::transport::Endpoint::from_shared(w.url())?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?)
}

/// Unix ms as the CLI shows it with TZ=UTC.
fn utc(ms: i64) -> Result<String> {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)?;
    Ok(format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    ))
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(-1)
}

fn show_json(w: &World, id: &str) -> Result<Value> {
    let out = w.admin(&["run", "show", id, "-o", "json"])?.ok()?;
    Ok(serde_json::from_str(&out.stdout)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_are_listed_and_shown_with_when_and_how_long() -> Result<()> {
    let (w, _f) = setup("")?;
    let out = w.admin(&["cluster", "create", "--yes"])?;
    assert_eq!(out.code, 0, "{out:?}");
    // Output that is not a terminal carries no escapes; one start is not "1 host(s)".
    assert!(
        !out.stderr.contains('\x1b') && !out.stdout.contains('\x1b'),
        "{out:?}"
    );
    assert!(
        out.stderr.contains(
            "StartEtcd 127.0.0.11,127.0.0.12,127.0.0.13 start etcd on 3 hosts together: changed ("
        ),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains(" succeeded in "), "{}", out.stderr);

    let runs: Vec<Value> =
        serde_json::from_str(&w.admin(&["run", "list", "-o", "json"])?.ok()?.stdout)?;
    let run = runs.first().context("the create's run")?;
    let id = run["run_id"].as_str().context("run id")?;
    let (created, finished) = (int(&run["created_unix_ms"]), int(&run["finished_unix_ms"]));
    assert!(created > 0 && finished >= created, "{run}");
    assert_eq!(int(&run["duration_ms"]), finished - created, "{run}");
    let steps = run["steps"].as_array().context("steps")?;
    for s in steps {
        let took = int(&s["finished_unix_ms"]) - int(&s["started_unix_ms"]);
        assert_eq!(int(&s["duration_ms"]), took, "{s}");
        assert_eq!(s["answered_from_journal"], false, "{s}");
        assert!(s["journal"].is_null(), "{s}");
    }

    // The table forms, in the operator's time zone (UTC here).
    let tz = [("TZ", "UTC")];
    let list = w.admin_env(&["run", "list"], &tz)?.ok()?.stdout;
    let header = list.lines().next().unwrap_or_default();
    assert!(
        header.contains("STARTED") && header.contains("DURATION"),
        "{list}"
    );
    let row = list
        .lines()
        .find(|l| l.starts_with(id))
        .context("the run's row")?;
    assert!(row.contains(&utc(created)?), "{row}");
    let show = w.admin_env(&["run", "show", id], &tz)?.ok()?.stdout;
    assert!(
        show.contains(&format!("started {}, ended ", utc(created)?)) && show.contains(", took "),
        "{show}"
    );
    let first = utc(int(&steps[0]["started_unix_ms"]))?;
    let line = show
        .lines()
        .find(|l| l.trim_start().starts_with("1. "))
        .context("step 1")?;
    assert!(
        line.contains(&first[11..]),
        "step 1 starts at {first}:\n{show}"
    );

    // Nothing is left to resume of a run that succeeded: bad input, not a refusal.
    let again = w.admin(&["run", "resume", id])?;
    assert_eq!(again.code, 2, "{again:?}");
    assert!(
        again
            .stderr
            .contains("succeeded: there is nothing to resume"),
        "{}",
        again.stderr
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_run_sends_each_change_and_ends_with_the_run() -> Result<()> {
    // env refresh needs agents only, no etcd.
    let (w, _f) = setup("")?;
    let mut admin = AdminServiceClient::new(admin_channel(&w).await?);
    let started = admin
        .start_run(pb::StartRunRequest {
            sop: Some(pb::start_run_request::Sop::EnvRefresh(pb::EnvRefresh {})),
            ..Default::default()
        })
        .await?
        .into_inner();
    let watch = |admin: &mut AdminServiceClient<Channel>, id: String| {
        let mut admin = admin.clone();
        async move {
            let mut stream = admin
                .watch_run(pb::GetRunRequest { run_id: id })
                .await?
                .into_inner();
            let mut views = Vec::new();
            // A guard against a hang, not a limit on how fast it is.
            while let Some(v) = tokio::time::timeout(Duration::from_secs(120), stream.message())
                .await
                .context("the stream neither sent nor ended")??
            {
                views.push(v);
            }
            anyhow::Ok(views)
        }
    };
    let views = watch(&mut admin, started.run_id.clone()).await?;
    let last = views.last().context("no view at all")?;
    assert_eq!(last.state(), pb::RunState::Succeeded, "{last:?}");
    assert_eq!(last.steps.len(), 3);
    assert!(last.finished_unix_ms >= last.created_unix_ms);
    assert!(views.iter().all(|v| v.now_unix_ms > 0));
    // Each view is a change, and steps only move forward.
    let done: Vec<usize> = views
        .iter()
        .map(|v| {
            v.steps
                .iter()
                .filter(|s| s.state() == pb::StepState::Done)
                .count()
        })
        .collect();
    assert!(done.windows(2).all(|p| p[0] <= p[1]), "{done:?}");
    assert!(
        views
            .windows(2)
            .all(|p| p[0].steps != p[1].steps || p[0].state != p[1].state),
        "a view was sent twice"
    );
    // An ended run: one view, then the end.
    let again = watch(&mut admin, started.run_id.clone()).await?;
    assert_eq!(again.len(), 1, "{again:?}");
    // An unknown run is refused before any stream.
    let err = admin
        .watch_run(pb::GetRunRequest {
            run_id: "r-none".into(),
        })
        .await
        .err()
        .context("an unknown run was watched")?;
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    Ok(())
}

/// The coordinator is killed while an agent restarts etcd: the follow says the run is left
/// interrupted and what to run (exit 4); the resume prints only what it does, and the restart,
/// which the agent finished on its own, is answered from its journal with when it really ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follow_that_loses_the_coordinator_says_so_and_the_resume_reads_the_journal() -> Result<()>
{
    let (mut w, f) = setup("")?;
    w.admin(&["cluster", "create", "--yes"])?.ok()?;
    // Restarts that take a while, so the coordinator dies inside one.
    for h in &f.hosts {
        let normal = h.agent_config(false);
        let slow = normal.replace("'echo restart", "'sleep 3 && echo restart");
        assert_ne!(slow, normal, "the restart command changed shape");
        w.start_agent(&h.ip.to_string(), &slow)?;
    }
    for ip in IPS {
        w.wait_agent_state(ip, &["connected"], Duration::from_secs(60))?;
    }
    let mut child = w.spawn_admin_output(&["config", "reload", "--restart"])?;
    let run_id = w.wait_steps_done("config-reload", 0, &["running"], Duration::from_secs(60))?;
    let run = show_json(&w, &run_id)?;
    let (idx, host) = run["steps"]
        .as_array()
        .context("steps")?
        .iter()
        .find(|s| s["kind"] == "RestartEtcd")
        .and_then(|s| Some((int(&s["index"]), s["host"].as_str()?.to_string())))
        .context("a RestartEtcd step")?;
    let task = format!("{run_id}-s{idx}-a1-{host}");
    let journal = f.host(&host)?.journal().join("journal.jsonl");
    let journaled = |state: &str| {
        std::fs::read_to_string(&journal)
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains(&format!("\"{task}\"")) && l.contains(&format!("\"{state}\"")))
    };
    wait_for(
        "the agent to start the restart",
        Duration::from_secs(120),
        || journaled("started").then_some(()),
    )?;
    w.kill_coordinator();
    wait_for("the CLI to exit", Duration::from_secs(60), || {
        child.try_wait().ok().flatten()
    })?;
    let out: CliOutput = child.wait_with_output()?.into();
    assert_eq!(out.code, 4, "coordinator gone: {out:?}");
    for said in [
        format!("lost the coordinator while following run {run_id}"),
        "left interrupted".to_string(),
        "`quorum run list`".to_string(),
        format!("`quorum run resume {run_id}`"),
    ] {
        assert!(
            out.stderr.contains(&said),
            "{said:?} not in:\n{}",
            out.stderr
        );
    }
    assert!(
        !out.stderr.contains("TLS client certificate"),
        "{}",
        out.stderr
    );

    // The agent finishes the restart on its own and journals it; then the coordinator is back.
    wait_for("the restart to finish", Duration::from_secs(60), || {
        journaled("finished").then_some(())
    })?;
    w.start_coordinator()?;
    for ip in IPS {
        w.wait_agent_state(ip, &["connected", "idle"], Duration::from_secs(60))?;
    }
    assert_eq!(show_json(&w, &run_id)?["state"], "interrupted");
    let resumed = w.admin(&["run", "resume", &run_id])?;
    assert_eq!(resumed.code, 0, "{resumed:?}");
    assert!(
        resumed
            .stderr
            .contains(&format!("resumed at step {} of", idx + 1)),
        "{}",
        resumed.stderr
    );
    assert!(
        !resumed.stderr.contains("[1/"),
        "step 1 was done before the resume and reprinted:\n{}",
        resumed.stderr
    );
    assert!(
        resumed.stderr.contains(&format!(
            "RestartEtcd {host} restart etcd: changed, answered from the journal (ran "
        )),
        "{}",
        resumed.stderr
    );
    let run = show_json(&w, &run_id)?;
    let step = &run["steps"][idx as usize];
    assert_eq!(step["answered_from_journal"], true, "{step}");
    let j = &step["journal"];
    assert!(
        int(&j["started_unix_ms"]) > 0 && int(&j["duration_ms"]) > 0,
        "{step}"
    );
    let show = w.admin(&["run", "show", &run_id])?.ok()?.stdout;
    assert!(show.contains("answered from the journal (ran "), "{show}");
    assert_eq!(f.host(&host)?.restart_count(), 1, "restarted twice");
    Ok(())
}

/// e2e probe F8: an agent that went silent (not yet stale) is named in the plan; the next plan
/// (the CLI plans once to show, once to run) does not wait for it again until it polls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_agent_is_named_in_the_plan_and_not_waited_for_twice() -> Result<()> {
    let (mut w, f) = setup("stale_after_secs: 600\n")?;
    w.agent(IPS[2]).context("agent .13")?.kill();
    let first = w.admin(&["env", "refresh", "--plan"])?.ok()?;
    assert!(
        first.stdout.contains(
            "note: the agent on 127.0.0.13 did not answer a request for fresh facts within 10 s"
        ),
        "{}",
        first.stdout
    );
    let second = w.admin(&["env", "refresh", "--plan"])?.ok()?;
    assert!(
        second.stdout.contains(
            "note: the agent on 127.0.0.13 has not answered a request for fresh facts made"
        ) && second.stdout.contains("so it was not asked again"),
        "{}",
        second.stdout
    );
    // Back, it polls and is asked again like any other.
    w.start_agent(IPS[2], &f.host(IPS[2])?.agent_config(false))?;
    w.wait_agent_state(IPS[2], &["connected"], Duration::from_secs(60))?;
    let third = w.admin(&["env", "refresh", "--plan"])?.ok()?;
    assert!(
        !third.stdout.contains("127.0.0.13 did not answer"),
        "{}",
        third.stdout
    );
    assert!(
        !third.stdout.contains("has not answered"),
        "{}",
        third.stdout
    );
    Ok(())
}
