//! The CLI side of SOPs and runs: ask the coordinator for a plan or a run, confirm wipes,
//! follow the run live as the coordinator streams it (a progress line on a terminal, plain
//! lines otherwise), show runs with their times, and turn the end state into the documented
//! exit code. Times are shown in the operator's local time zone.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use chrono::TimeZone;
use quorum_proto::exit::Exit;
use quorum_proto::pb;
use quorum_proto::pb::admin_service_client::AdminServiceClient;
use tonic::transport::Channel;

use crate::model::words::{outcome_word, run_state_word, step_state_word};
use crate::operator::client::Unreachable;
use crate::sop::request::Request;

/// Starts an SOP (or prints its plan, when `request.plan_only`) and follows it. The plan is
/// asked for first: its wipes are confirmed (`yes`, or at the prompt) before the run starts.
pub async fn start_sop(
    client: &mut AdminServiceClient<Channel>,
    mut request: Request,
    yes: bool,
    json: bool,
) -> anyhow::Result<Exit> {
    let plan_only = request.plan_only;
    request.plan_only = true;
    let plan = client.start_run(request.to_pb()?).await?.into_inner();
    if plan_only {
        print_plan(&plan, json)?;
        return Ok(Exit::Ok);
    }
    if !plan.wipes.is_empty() {
        eprintln!("This run wipes the etcd data of: {}", plan.wipes.join(", "));
        if !yes && !confirm()? {
            eprintln!("refused: not confirmed; nothing was changed (pass --yes to confirm without a prompt)");
            return Ok(Exit::Refused);
        }
        request.confirmed = true;
    }
    request.plan_only = false;
    let run = client.start_run(request.to_pb()?).await?.into_inner();
    for note in &run.notes {
        eprintln!("{note}");
    }
    eprintln!(
        "run {} started: {} on cluster {}",
        run.run_id, run.sop, run.cluster
    );
    follow(client, &run.run_id, json, Printed::new()).await
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

/// `ms` (Unix ms) as local date and time, `2026-11-30 21:17:03`; `-` when not set.
pub fn local_time(ms: i64) -> String {
    local(ms).map_or_else(
        || "-".to_string(),
        |t| t.format("%Y-%m-%d %H:%M:%S").to_string(),
    )
}

/// `ms` as the local time of day (`21:17:03`) when it falls on the same local day as
/// `reference`, else as the full local date and time.
pub fn local_time_near(ms: i64, reference: i64) -> String {
    match (local(ms), local(reference)) {
        (Some(t), Some(r)) if t.date_naive() == r.date_naive() => t.format("%H:%M:%S").to_string(),
        _ => local_time(ms),
    }
}

fn local(ms: i64) -> Option<chrono::DateTime<chrono::Local>> {
    (ms > 0)
        .then(|| chrono::Local.timestamp_millis_opt(ms).earliest())
        .flatten()
}

/// Now, Unix ms, by this machine's clock.
fn local_now_ms() -> i64 {
    crate::sop::store::now_ms()
}

/// A duration for people: `0.4s`, `12.3s`, `2m05s`, `1h02m`.
pub fn human_duration(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 59_950 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        let secs = (ms + 500) / 1000;
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        let mins = (ms + 30_000) / 60_000;
        format!("{}h{:02}m", mins / 60, mins % 60)
    }
}

/// How long a run took, once it has ended.
fn run_duration_ms(run: &pb::RunView) -> Option<i64> {
    (run.finished_unix_ms > 0 && run.created_unix_ms > 0)
        .then(|| (run.finished_unix_ms - run.created_unix_ms).max(0))
}

/// How long a step took, once it has finished.
fn step_duration_ms(s: &pb::StepView) -> Option<i64> {
    (s.finished_unix_ms > 0 && s.started_unix_ms > 0)
        .then(|| (s.finished_unix_ms - s.started_unix_ms).max(0))
}

/// How long the work of a step answered from the journals took when it really ran, if the
/// journals say.
fn journal_duration_ms(j: &pb::JournalAnswer) -> Option<i64> {
    (j.started_unix_ms > 0 && j.finished_unix_ms >= j.started_unix_ms)
        .then(|| j.finished_unix_ms - j.started_unix_ms)
}

/// "answered from the journal (ran 1.9s at 21:15:02)", said of a step whose tasks had already
/// run when it was resumed; `reference` picks time of day or full date.
fn journal_phrase(j: &pb::JournalAnswer, reference: i64) -> String {
    match journal_duration_ms(j) {
        Some(took) => format!(
            "answered from the journal (ran {} at {})",
            human_duration(took),
            local_time_near(j.started_unix_ms, reference)
        ),
        None => "answered from the journal (the agent's journal does not say when it ran)".into(),
    }
}

/// The JSON form of a run.
pub fn run_json(run: &pb::RunView) -> serde_json::Value {
    serde_json::json!({
        "run_id": run.run_id,
        "sop": run.sop,
        "cluster": run.cluster,
        "state": run_state_word(run.state()),
        "started_by": run.started_by,
        "inventory_digest": run.inventory_digest,
        "created_unix_ms": run.created_unix_ms,
        "finished_unix_ms": run.finished_unix_ms,
        "duration_ms": run_duration_ms(run),
        "error": run.error,
        "notes": run.notes,
        "wipes": run.wipes,
        "steps": run.steps.iter().map(|s| serde_json::json!({
            "index": s.index,
            "kind": s.kind,
            "host": s.host,
            "description": s.description,
            "state": step_state_word(s.state()),
            "outcome": outcome_word(s.outcome()),
            "output": s.output,
            "started_unix_ms": s.started_unix_ms,
            "finished_unix_ms": s.finished_unix_ms,
            "duration_ms": step_duration_ms(s),
            "answered_from_journal": s.journal.is_some(),
            "journal": s.journal.as_ref().map(|j| serde_json::json!({
                "started_unix_ms": j.started_unix_ms,
                "finished_unix_ms": j.finished_unix_ms,
                "duration_ms": journal_duration_ms(j),
            })),
            "diff": s.diff,
        })).collect::<Vec<_>>(),
    })
}

fn terminal(state: pb::RunState) -> bool {
    matches!(
        state,
        pb::RunState::Succeeded
            | pb::RunState::Failed
            | pb::RunState::Aborted
            | pb::RunState::Interrupted
    )
}

/// The exit code a finished run maps to.
pub fn run_exit_code(run: &pb::RunView) -> Exit {
    match run.state() {
        pb::RunState::Succeeded => Exit::Ok,
        pb::RunState::Failed => {
            if run
                .steps
                .iter()
                .any(|s| s.state() == pb::StepState::Failed && s.outcome() == pb::Outcome::Refused)
            {
                Exit::Refused
            } else {
                Exit::Failed
            }
        }
        _ => Exit::Failed,
    }
}

/// What a follower has printed of each step (by index): its state and start time. A step
/// started again (on a resume) differs and is printed again; an unchanged one is not.
pub type Printed = HashMap<u32, (pb::StepState, i64)>;

/// The steps of `run` as already printed: a resumed run's follower starts from the run as it
/// was before the resume, so earlier steps are not reprinted as if they ran now.
pub fn printed_as(run: &pb::RunView) -> Printed {
    run.steps
        .iter()
        .map(|s| (s.index, (s.state(), s.started_unix_ms)))
        .collect()
}

/// Whether stderr takes a rewritten progress line: a terminal that understands escapes.
fn progress_terminal() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("TERM").is_none_or(|t| t != "dumb")
}

/// The progress line of a running step: k of n, host, what, and how long the step itself has
/// run by the coordinator's clock (`coordinator_now` is the coordinator's time now).
fn progress_text(s: &pb::StepView, n: usize, coordinator_now: i64) -> String {
    format!(
        "[{}/{}] {:<16} {} ... ({})",
        s.index + 1,
        n,
        s.host,
        s.description,
        human_duration(coordinator_now - s.started_unix_ms)
    )
}

/// The line printed when a step ends.
fn finished_text(s: &pb::StepView, n: usize, run_started: i64) -> String {
    let how = match &s.journal {
        Some(j) => format!(
            "{}, {}",
            outcome_word(s.outcome()),
            journal_phrase(j, run_started)
        ),
        None => format!(
            "{} ({})",
            outcome_word(s.outcome()),
            human_duration(step_duration_ms(s).unwrap_or(0))
        ),
    };
    format!(
        "[{}/{}] {} {} {}: {how}",
        s.index + 1,
        n,
        s.kind,
        s.host,
        s.description
    )
}

/// Prints a followed run's step changes as they come.
struct Follower {
    tty: bool,
    printed: Printed,
    /// The running step and the number of steps, for the progress line.
    running: Option<(pb::StepView, usize)>,
    /// The coordinator's clock minus ours, from the last view.
    offset_ms: i64,
}

impl Follower {
    fn show(&mut self, run: &pb::RunView) {
        if run.now_unix_ms > 0 {
            self.offset_ms = run.now_unix_ms - local_now_ms();
        }
        let n = run.steps.len();
        for s in &run.steps {
            let key = (s.state(), s.started_unix_ms);
            if self.printed.get(&s.index) == Some(&key) {
                continue;
            }
            match s.state() {
                pb::StepState::Running if !self.tty => eprintln!(
                    "[{}/{}] {} {} {}: started",
                    s.index + 1,
                    n,
                    s.kind,
                    s.host,
                    s.description
                ),
                pb::StepState::Done | pb::StepState::Failed => {
                    self.clear();
                    eprintln!("{}", finished_text(s, n, run.created_unix_ms));
                    if s.state() == pb::StepState::Failed && !s.output.is_empty() {
                        for line in s.output.trim().lines() {
                            eprintln!("      {line}");
                        }
                    }
                }
                _ => {}
            }
            self.printed.insert(s.index, key);
        }
        self.running = run
            .steps
            .iter()
            .find(|s| s.state() == pb::StepState::Running)
            .map(|s| (s.clone(), n));
        self.redraw();
    }

    /// Rewrites the terminal's line with the running step.
    fn redraw(&self) {
        if let (true, Some((s, n))) = (self.tty, &self.running) {
            eprint!(
                "\r\x1b[K{}",
                progress_text(s, *n, local_now_ms() + self.offset_ms)
            );
        }
    }

    fn clear(&self) {
        if self.tty {
            eprint!("\r\x1b[K");
        }
    }
}

/// Where a follower gets the run from: the coordinator's stream, or, from a coordinator too
/// old to stream (no WatchRun), a GetRun once a second.
enum Views {
    Stream(Box<tonic::Streaming<pb::RunView>>),
    Poll { next_at: tokio::time::Instant },
}

impl Views {
    async fn open(client: &mut AdminServiceClient<Channel>, run_id: &str) -> anyhow::Result<Self> {
        let req = pb::GetRunRequest {
            run_id: run_id.to_string(),
        };
        match client.watch_run(req).await {
            Ok(stream) => Ok(Views::Stream(Box::new(stream.into_inner()))),
            Err(s) if s.code() == tonic::Code::Unimplemented => Ok(Views::Poll {
                next_at: tokio::time::Instant::now(),
            }),
            Err(s) if connection_lost(&s) => Err(lost(run_id, &s)),
            Err(s) => Err(s.into()),
        }
    }

    /// The next view of the run; an error when the coordinator went away.
    async fn next(
        &mut self,
        client: &mut AdminServiceClient<Channel>,
        run_id: &str,
    ) -> anyhow::Result<pb::RunView> {
        match self {
            Views::Stream(stream) => match stream.message().await {
                Ok(Some(run)) => Ok(run),
                Ok(None) => Err(lost(
                    run_id,
                    &tonic::Status::unavailable("the coordinator ended the stream"),
                )),
                Err(s) => Err(lost(run_id, &s)),
            },
            Views::Poll { next_at } => {
                tokio::time::sleep_until(*next_at).await;
                *next_at = tokio::time::Instant::now() + Duration::from_secs(1);
                let req = pb::GetRunRequest {
                    run_id: run_id.to_string(),
                };
                match client.get_run(req).await {
                    Ok(run) => Ok(run.into_inner()),
                    Err(s) if connection_lost(&s) => Err(lost(run_id, &s)),
                    Err(s) => Err(s.into()),
                }
            }
        }
    }
}

/// A call that failed because the coordinator or the connection to it went away.
fn connection_lost(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        tonic::Code::Unavailable
            | tonic::Code::Unknown
            | tonic::Code::Cancelled
            | tonic::Code::Internal
            | tonic::Code::DeadlineExceeded
    )
}

/// The error of a follow that lost the coordinator: what that means for the run, and what to
/// do (the exit code is the one of an unreachable coordinator).
fn lost(run_id: &str, s: &tonic::Status) -> anyhow::Error {
    // The status's own words only: its sources repeat them down to TLS details.
    let why = match s.message() {
        "" => "the connection closed",
        m => m,
    };
    anyhow::Error::new(Unreachable(format!(
        "lost the coordinator while following run {run_id} ({why}).\n\
         If the coordinator stopped, the run stopped with it and is left interrupted: once the coordinator is back, \
         `quorum run list` shows it, and `quorum run resume {run_id}` continues it (or `quorum run abort {run_id}`).\n\
         If only the connection broke, the run goes on: see `quorum run show {run_id}`"
    )))
}

/// Follows a run as the coordinator streams it, until it ends; prints each step as it starts
/// and ends (`printed`: what not to print again); returns the exit code.
pub async fn follow(
    client: &mut AdminServiceClient<Channel>,
    run_id: &str,
    json: bool,
    printed: Printed,
) -> anyhow::Result<Exit> {
    let mut f = Follower {
        tty: progress_terminal(),
        printed,
        running: None,
        offset_ms: 0,
    };
    let mut views = Views::open(client, run_id).await?;
    // Only the terminal's progress line ticks; every change comes from the coordinator.
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let next = tokio::select! {
            next = views.next(client, run_id) => next,
            _ = tick.tick(), if f.tty && f.running.is_some() => {
                f.redraw();
                continue;
            }
        };
        let run = match next {
            Ok(run) => run,
            Err(e) => {
                f.clear();
                return Err(e);
            }
        };
        f.show(&run);
        if terminal(run.state()) {
            f.clear();
            if json {
                println!("{}", serde_json::to_string_pretty(&run_json(&run))?);
            }
            let took = run_duration_ms(&run)
                .map(|ms| format!(" in {}", human_duration(ms)))
                .unwrap_or_default();
            match run.state() {
                pb::RunState::Succeeded => {
                    let changed = run
                        .steps
                        .iter()
                        .filter(|s| s.outcome() == pb::Outcome::Changed)
                        .count();
                    if changed == 0 {
                        eprintln!("run {} succeeded{took}: nothing changed", run.run_id);
                    } else {
                        eprintln!(
                            "run {} succeeded{took}: {changed} step(s) changed something",
                            run.run_id
                        );
                    }
                }
                state => eprintln!(
                    "run {} {}: {}\nfix the cause, then `quorum run resume {}` (or `quorum run abort {}`)",
                    run.run_id,
                    run_state_word(state),
                    run.error,
                    run.run_id,
                    run.run_id
                ),
            }
            return Ok(run_exit_code(&run));
        }
    }
}

/// `quorum run list`.
pub async fn list(client: &mut AdminServiceClient<Channel>, json: bool) -> anyhow::Result<Exit> {
    let runs = client
        .list_runs(pb::ListRunsRequest { limit: 50 })
        .await?
        .into_inner()
        .runs;
    if json {
        let v: Vec<_> = runs.iter().map(run_json).collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(Exit::Ok);
    }
    println!(
        "{:<26} {:<14} {:<10} {:<12} {:<10} {:<19} {:>8}  STEPS",
        "RUN", "SOP", "CLUSTER", "STATE", "BY", "STARTED", "DURATION"
    );
    for r in &runs {
        let done = r
            .steps
            .iter()
            .filter(|s| s.state() == pb::StepState::Done)
            .count();
        let took = run_duration_ms(r).map_or_else(|| "-".to_string(), human_duration);
        println!(
            "{:<26} {:<14} {:<10} {:<12} {:<10} {:<19} {:>8}  {}/{}",
            r.run_id,
            r.sop,
            r.cluster,
            run_state_word(r.state()),
            r.started_by,
            local_time(r.created_unix_ms),
            took,
            done,
            r.steps.len()
        );
    }
    Ok(Exit::Ok)
}

/// The line of `run show` that says when a run started, ended and how long it took.
fn run_times(run: &pb::RunView) -> String {
    let started = local_time(run.created_unix_ms);
    match run_duration_ms(run) {
        Some(took) => format!(
            "started {started}, ended {}, took {}",
            local_time_near(run.finished_unix_ms, run.created_unix_ms),
            human_duration(took)
        ),
        None if run.state() == pb::RunState::Interrupted => {
            format!("started {started}; interrupted by a coordinator stop, so it has no end time")
        }
        None if run.now_unix_ms > 0 => format!(
            "started {started}, running for {}",
            human_duration(run.now_unix_ms - run.created_unix_ms)
        ),
        None => format!("started {started}"),
    }
}

/// `quorum run show ID`.
pub async fn show(
    client: &mut AdminServiceClient<Channel>,
    run_id: &str,
    json: bool,
) -> anyhow::Result<Exit> {
    let run = client
        .get_run(pb::GetRunRequest {
            run_id: run_id.to_string(),
        })
        .await?
        .into_inner();
    if json {
        println!("{}", serde_json::to_string_pretty(&run_json(&run))?);
        return Ok(Exit::Ok);
    }
    println!(
        "run {}: {} on cluster {} by {}, {}",
        run.run_id,
        run.sop,
        run.cluster,
        run.started_by,
        run_state_word(run.state())
    );
    println!("{}", run_times(&run));
    println!("inventory sha256 {}", run.inventory_digest);
    if !run.error.is_empty() {
        println!("error: {}", run.error);
    }
    println!(
        "{:>3}  {:<20} {:<16} {:<8} {:<10} {:<8} {:>6}  WHAT",
        "#", "STEP", "HOST", "STATE", "OUTCOME", "STARTED", "TOOK"
    );
    for s in &run.steps {
        let took = step_duration_ms(s).map(human_duration).unwrap_or_default();
        let started = if s.started_unix_ms > 0 {
            local_time_near(s.started_unix_ms, run.created_unix_ms)
        } else {
            String::new()
        };
        println!(
            "{:>3}. {:<20} {:<16} {:<8} {:<10} {:<8} {:>6}  {}",
            s.index + 1,
            s.kind,
            s.host,
            step_state_word(s.state()),
            outcome_word(s.outcome()),
            started,
            took,
            s.description
        );
        if let Some(j) = &s.journal {
            println!("        {}", journal_phrase(j, run.created_unix_ms));
        }
        if !s.output.is_empty() && s.state() == pb::StepState::Failed {
            for line in s.output.trim().lines() {
                println!("        {line}");
            }
        }
    }
    Ok(Exit::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(index: u32, state: &str, started: i64, finished: i64) -> pb::StepView {
        pb::StepView {
            index,
            kind: "RestartEtcd".into(),
            host: "127.0.0.13".into(),
            description: "restart etcd".into(),
            state: crate::model::words::step_state(state) as i32,
            outcome: if finished > 0 {
                pb::Outcome::Changed as i32
            } else {
                pb::Outcome::Unspecified as i32
            },
            started_unix_ms: started,
            finished_unix_ms: finished,
            ..Default::default()
        }
    }

    #[test]
    fn durations_read_like_a_person_would_say_them() {
        assert_eq!(human_duration(0), "0.0s");
        assert_eq!(human_duration(-5), "0.0s");
        assert_eq!(human_duration(1_940), "1.9s");
        assert_eq!(human_duration(59_900), "59.9s");
        assert_eq!(human_duration(59_970), "1m00s");
        assert_eq!(human_duration(125_000), "2m05s");
        assert_eq!(human_duration(3_725_000), "1h02m");
    }

    #[test]
    fn the_progress_line_counts_the_steps_own_time_by_the_coordinators_clock() {
        // F12: the step started 1.5 s ago by the coordinator's clock; however long the CLI
        // has followed the run, the line says 1.5 s.
        let s = step(10, "running", 1_000_000, 0);
        let line = progress_text(&s, 12, 1_001_500);
        assert!(line.starts_with("[11/12] 127.0.0.13"), "{line}");
        assert!(line.ends_with("restart etcd ... (1.5s)"), "{line}");
    }

    #[test]
    fn a_step_answered_from_the_journal_says_so_with_when_it_ran() {
        let mut s = step(10, "done", 2_000_000, 2_000_010);
        let plain = finished_text(&s, 12, 2_000_000);
        assert!(plain.ends_with(": changed (0.0s)"), "{plain}");
        s.journal = Some(pb::JournalAnswer {
            started_unix_ms: 1_000_000,
            finished_unix_ms: 1_001_940,
        });
        let line = finished_text(&s, 12, 2_000_000);
        assert!(
            line.contains(": changed, answered from the journal (ran 1.9s at "),
            "{line}"
        );
        assert!(!line.contains("0.0s"), "{line}");
        s.journal = Some(pb::JournalAnswer::default());
        let line = finished_text(&s, 12, 2_000_000);
        assert!(line.contains("does not say when it ran"), "{line}");
    }

    #[test]
    fn a_resumed_run_prints_only_what_changed_since_the_resume() {
        let before = pb::RunView {
            steps: vec![
                step(0, "done", 1, 2),
                step(1, "failed", 3, 4),
                step(2, "pending", 0, 0),
            ],
            ..Default::default()
        };
        let mut f = Follower {
            tty: false,
            printed: printed_as(&before),
            running: None,
            offset_ms: 0,
        };
        let mut now = before.clone();
        now.steps[1] = step(1, "running", 10, 0);
        f.show(&now);
        // The done step is still as printed; the retried one is printed anew.
        assert_eq!(f.printed.get(&0), Some(&(pb::StepState::Done, 1)));
        assert_eq!(f.printed.get(&1), Some(&(pb::StepState::Running, 10)));
        assert_eq!(f.running.as_ref().map(|(s, _)| s.index), Some(1));
    }

    #[test]
    fn times_are_local_and_the_date_is_left_out_on_the_same_day() {
        let t = 1_764_533_823_000; // some afternoon in 2025
        let full = local_time(t);
        assert_eq!(full.len(), "2025-11-30 20:17:03".len(), "{full}");
        assert_eq!(local_time(0), "-");
        let near = local_time_near(t + 1_000, t);
        assert_eq!(near.len(), "20:17:04".len(), "{near}");
        assert!(full.ends_with(&local_time_near(t, t)), "{full}");
        // Another day: the full date.
        assert_eq!(local_time_near(t + 3 * 86_400_000, t).len(), full.len());
    }
}
