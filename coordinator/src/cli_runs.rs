//! The CLI side of SOPs and runs: ask the coordinator for a plan or a run, confirm wipes,
//! follow the run live (a progress line on a terminal, plain lines otherwise), and turn the
//! end state into the documented exit code.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use quorum_proto::pb;
use quorum_proto::pb::admin_service_client::AdminServiceClient;
use tonic::transport::Channel;

use crate::cli::exit;

/// Starts an SOP (or prints its plan) and follows it.
pub async fn start_sop(
    client: &mut AdminServiceClient<Channel>,
    sop: &str,
    cluster: Option<String>,
    mut args: HashMap<String, String>,
    plan_only: bool,
    yes: bool,
    json: bool,
) -> anyhow::Result<u8> {
    let plan = client
        .start_run(pb::StartRunRequest {
            sop: sop.into(),
            cluster: cluster.clone().unwrap_or_default(),
            args: args.clone(),
            plan_only: true,
        })
        .await?
        .into_inner();
    if plan_only {
        print_plan(&plan, json)?;
        return Ok(exit::OK);
    }
    if !plan.wipes.is_empty() {
        eprintln!("This run wipes the etcd data of: {}", plan.wipes.join(", "));
        if !yes && !confirm()? {
            eprintln!("refused: not confirmed; nothing was changed (pass --yes to confirm without a prompt)");
            return Ok(exit::REFUSED);
        }
        args.insert("confirmed".into(), "true".into());
    }
    let run = client
        .start_run(pb::StartRunRequest {
            sop: sop.into(),
            cluster: cluster.unwrap_or_default(),
            args,
            plan_only: false,
        })
        .await?
        .into_inner();
    for note in &run.notes {
        eprintln!("{note}");
    }
    eprintln!(
        "run {} started: {} on cluster {}",
        run.run_id, run.sop, run.cluster
    );
    follow(client, &run.run_id, json).await
}

fn confirm() -> anyhow::Result<bool> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Ok(false);
    }
    eprint!("Type yes to go on: ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    stdin.read_line(&mut line)?;
    Ok(line.trim() == "yes")
}

/// Prints a plan: steps, notes, wipes, and the diff of every file a step would change.
pub fn print_plan(plan: &pb::RunView, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(&run_json(plan))?);
        return Ok(());
    }
    println!(
        "plan: {} on cluster {} ({} steps; nothing has been changed)",
        plan.sop,
        plan.cluster,
        plan.steps.len()
    );
    for n in &plan.notes {
        println!("note: {n}");
    }
    for w in &plan.wipes {
        println!("wipes: {w}");
    }
    for s in &plan.steps {
        println!(
            "{:>3}. {:<20} {:<16} {}",
            s.index + 1,
            s.kind,
            s.host,
            s.description
        );
        for line in s.diff.lines() {
            println!("       {line}");
        }
    }
    Ok(())
}

/// The JSON form of a run.
pub fn run_json(run: &pb::RunView) -> serde_json::Value {
    serde_json::json!({
        "run_id": run.run_id,
        "sop": run.sop,
        "cluster": run.cluster,
        "state": run.state,
        "started_by": run.started_by,
        "inventory_digest": run.inventory_digest,
        "created_unix_ms": run.created_unix_ms,
        "error": run.error,
        "notes": run.notes,
        "wipes": run.wipes,
        "steps": run.steps.iter().map(|s| serde_json::json!({
            "index": s.index,
            "kind": s.kind,
            "host": s.host,
            "description": s.description,
            "state": s.state,
            "outcome": s.outcome,
            "output": s.output,
            "started_unix_ms": s.started_unix_ms,
            "finished_unix_ms": s.finished_unix_ms,
            "diff": s.diff,
        })).collect::<Vec<_>>(),
    })
}

fn terminal(state: &str) -> bool {
    matches!(state, "succeeded" | "failed" | "aborted" | "interrupted")
}

/// The exit code a finished run maps to.
pub fn run_exit_code(run: &pb::RunView) -> u8 {
    match run.state.as_str() {
        "succeeded" => exit::OK,
        "failed" => {
            if run
                .steps
                .iter()
                .any(|s| s.state == "failed" && s.outcome == "refused")
            {
                exit::REFUSED
            } else {
                exit::FAILED
            }
        }
        _ => exit::FAILED,
    }
}

/// Rewrites the terminal's current line with the running step (k of n, host, elapsed).
fn progress_line(s: &pb::StepView, n: usize, started: Instant) {
    eprint!(
        "\r\x1b[K[{}/{}] {:<16} {} ... ({:.1}s)",
        s.index + 1,
        n,
        s.host,
        s.description,
        started.elapsed().as_secs_f64()
    );
}

/// Follows a run until it ends; prints progress; returns the exit code.
pub async fn follow(
    client: &mut AdminServiceClient<Channel>,
    run_id: &str,
    json: bool,
) -> anyhow::Result<u8> {
    let tty = std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut reported: HashMap<u32, String> = HashMap::new();
    loop {
        let run = client
            .get_run(pb::GetRunRequest {
                run_id: run_id.to_string(),
            })
            .await?
            .into_inner();
        let n = run.steps.len();
        for s in &run.steps {
            let last = reported.get(&s.index).cloned().unwrap_or_default();
            if last == s.state {
                continue;
            }
            match s.state.as_str() {
                "running" => {
                    if tty {
                        progress_line(s, n, started);
                    } else {
                        eprintln!(
                            "[{}/{}] {} {} {}: started",
                            s.index + 1,
                            n,
                            s.kind,
                            s.host,
                            s.description
                        );
                    }
                }
                "done" | "failed" => {
                    let took = (s.finished_unix_ms - s.started_unix_ms).max(0) as f64 / 1000.0;
                    if tty {
                        eprint!("\r\x1b[K");
                    }
                    eprintln!(
                        "[{}/{}] {} {} {}: {} ({:.1}s)",
                        s.index + 1,
                        n,
                        s.kind,
                        s.host,
                        s.description,
                        s.outcome,
                        took
                    );
                    if s.state == "failed" && !s.output.is_empty() {
                        for line in s.output.trim().lines() {
                            eprintln!("      {line}");
                        }
                    }
                }
                _ => {}
            }
            reported.insert(s.index, s.state.clone());
        }
        if terminal(&run.state) {
            if tty {
                eprint!("\r\x1b[K");
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&run_json(&run))?);
            }
            match run.state.as_str() {
                "succeeded" => {
                    let changed = run.steps.iter().filter(|s| s.outcome == "changed").count();
                    if changed == 0 {
                        eprintln!("run {} succeeded: nothing changed", run.run_id);
                    } else {
                        eprintln!("run {} succeeded: {changed} step(s) changed something", run.run_id);
                    }
                }
                state => eprintln!(
                    "run {} {state}: {}\nfix the cause, then `quorum run resume {}` (or `quorum run abort {}`)",
                    run.run_id, run.error, run.run_id, run.run_id
                ),
            }
            return Ok(run_exit_code(&run));
        }
        if tty {
            if let Some(s) = run.steps.iter().find(|s| s.state == "running") {
                progress_line(s, n, started);
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `quorum run list`.
pub async fn list(client: &mut AdminServiceClient<Channel>, json: bool) -> anyhow::Result<u8> {
    let runs = client
        .list_runs(pb::ListRunsRequest { limit: 50 })
        .await?
        .into_inner()
        .runs;
    if json {
        let v: Vec<_> = runs.iter().map(run_json).collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(exit::OK);
    }
    println!(
        "{:<26} {:<14} {:<10} {:<12} {:<10} STEPS",
        "RUN", "SOP", "CLUSTER", "STATE", "BY"
    );
    for r in &runs {
        let done = r.steps.iter().filter(|s| s.state == "done").count();
        println!(
            "{:<26} {:<14} {:<10} {:<12} {:<10} {}/{}",
            r.run_id,
            r.sop,
            r.cluster,
            r.state,
            r.started_by,
            done,
            r.steps.len()
        );
    }
    Ok(exit::OK)
}

/// `quorum run show ID`.
pub async fn show(
    client: &mut AdminServiceClient<Channel>,
    run_id: &str,
    json: bool,
) -> anyhow::Result<u8> {
    let run = client
        .get_run(pb::GetRunRequest {
            run_id: run_id.to_string(),
        })
        .await?
        .into_inner();
    if json {
        println!("{}", serde_json::to_string_pretty(&run_json(&run))?);
        return Ok(exit::OK);
    }
    println!(
        "run {}: {} on cluster {} by {}, {}",
        run.run_id, run.sop, run.cluster, run.started_by, run.state
    );
    println!("inventory sha256 {}", run.inventory_digest);
    if !run.error.is_empty() {
        println!("error: {}", run.error);
    }
    for s in &run.steps {
        let took = if s.finished_unix_ms > 0 {
            format!(
                "{:.1}s",
                (s.finished_unix_ms - s.started_unix_ms).max(0) as f64 / 1000.0
            )
        } else {
            String::new()
        };
        println!(
            "{:>3}. {:<20} {:<16} {:<8} {:<10} {:>6}  {}",
            s.index + 1,
            s.kind,
            s.host,
            s.state,
            s.outcome,
            took,
            s.description
        );
        if !s.output.is_empty() && s.state == "failed" {
            for line in s.output.trim().lines() {
                println!("        {line}");
            }
        }
    }
    Ok(exit::OK)
}
