//! `quorum-agent run-task`: one task from a file, through the same executor, journal and
//! safety rules as the pull loop; for tests and local debugging.

use std::path::Path;
use std::sync::Arc;

use prost::Message;
use quorum_proto::exit::{BadInput, Exit};
use quorum_proto::pb;

use crate::config::AgentConfig;
use crate::executor::Executor;

/// Runs the task in `task_file` (prost-encoded `quorum.v1.Task`); prints one JSON line.
/// `Exit::Ok` for changed/unchanged/skipped/ok, `Refused` for refused, `Failed` for failed.
pub async fn run_task_file(config: &Path, task_file: &Path) -> anyhow::Result<Exit> {
    let cfg = Arc::new(AgentConfig::load(config)?);
    let bytes = std::fs::read(task_file).map_err(|e| {
        BadInput(format!(
            "cannot read task file {}: {e}",
            task_file.display()
        ))
    })?;
    let task = pb::Task::decode(bytes.as_slice()).map_err(|e| {
        BadInput(format!(
            "task file {} is not a quorum.v1.Task: {e}",
            task_file.display()
        ))
    })?;
    let executor = Executor::new(cfg)?;
    let report = executor.execute(&task).await;
    let word = match report.outcome {
        pb::Outcome::Changed => "CHANGED",
        pb::Outcome::Unchanged => "UNCHANGED",
        pb::Outcome::Skipped => "SKIPPED",
        pb::Outcome::Ok => "OK",
        pb::Outcome::Refused => "REFUSED",
        pb::Outcome::Failed | pb::Outcome::Unspecified => "FAILED",
    };
    println!(
        "{}",
        serde_json::json!({"task_id": task.id, "outcome": word, "output": report.output})
    );
    Ok(match report.outcome {
        pb::Outcome::Refused => Exit::Refused,
        pb::Outcome::Failed | pb::Outcome::Unspecified => Exit::Failed,
        _ => Exit::Ok,
    })
}
