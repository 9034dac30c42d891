//! SOP overhead: how much longer a rolling `quorum config reload --restart` takes than the
//! physical floor measured on the same fleet in the same run (`floor`: the same restart
//! command, member by member, leader last, until each serves a linearizable read). The
//! run's JSON (`quorum ... -o json`, the same as `quorum run show ID -o json`) also gives
//! every step's start and end: per member, RestartEtcd + HealthGate, and everything else
//! (the quorum guard, the config write, the leadership move, the runner's bookkeeping
//! between steps). Dividing by the run's own restart steps alone hides a slow order or a
//! slow restart command; dividing by the floor does not.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::results::Results;

/// Step timings of one run, folded per member.
#[derive(Debug, Default, PartialEq)]
pub struct Breakdown {
    /// Hosts in the order the run restarted them.
    pub order: Vec<String>,
    /// Per member host: RestartEtcd + HealthGate, ms.
    pub member_ms: BTreeMap<String, i64>,
    /// Every other step together (guards, writes), ms.
    pub other_steps_ms: i64,
    /// The RestartEtcd steps alone (the restart command and its dispatch), ms.
    pub restart_ms: i64,
    /// First step's start to last step's end, ms.
    pub span_ms: i64,
    /// Time inside the span that no step accounts for, ms.
    pub gaps_ms: i64,
}

impl Breakdown {
    /// Sum of the members' restart-to-healthy times, ms.
    pub fn member_sum_ms(&self) -> i64 {
        self.member_ms.values().sum()
    }
}

/// Folds the steps of a finished run.
pub fn breakdown(run: &Value) -> Result<Breakdown> {
    let state = run["state"].as_str().unwrap_or("?");
    if state != "succeeded" {
        bail!("the run is {state}, not succeeded: {}", run["error"]);
    }
    let steps = run["steps"].as_array().context("the run has no steps")?;
    let mut b = Breakdown::default();
    let (mut first, mut last, mut inside) = (i64::MAX, i64::MIN, 0);
    for s in steps {
        let start = s["started_unix_ms"].as_i64().unwrap_or(0);
        let end = s["finished_unix_ms"].as_i64().unwrap_or(0);
        if start == 0 || end < start {
            continue;
        }
        let took = end - start;
        first = first.min(start);
        last = last.max(end);
        inside += took;
        if s["kind"] == "RestartEtcd" {
            b.order.push(s["host"].as_str().unwrap_or("?").to_string());
            b.restart_ms += took;
        }
        match s["kind"].as_str() {
            Some("RestartEtcd" | "HealthGate") => {
                let host = s["host"].as_str().unwrap_or("?").to_string();
                *b.member_ms.entry(host).or_default() += took;
            }
            _ => b.other_steps_ms += took,
        }
    }
    if b.member_ms.is_empty() {
        bail!("the run has no RestartEtcd / HealthGate steps: was it `config reload --restart`?");
    }
    b.span_ms = last - first;
    b.gaps_ms = b.span_ms - inside;
    Ok(b)
}

/// Reads the run JSON at `path`, records the breakdown, and the ratios of `wall_ms` to the
/// run's own restart steps and, for round `round`, to `floor_ms` (the physical floor of the
/// same fleet measured just before).
pub fn run(
    path: &Path,
    wall_ms: u64,
    floor_ms: Option<u64>,
    round: Option<u32>,
    results: &Results,
) -> Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let run: Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not the JSON of a run", path.display()))?;
    let b = breakdown(&run)?;
    let s = |ms: i64| format!("{:.2}", ms as f64 / 1000.0);
    let sum = b.member_sum_ms().max(1);
    results.put("sop.run_id", run["run_id"].as_str().unwrap_or("?"))?;
    results.put("sop.members", b.member_ms.len())?;
    for (host, ms) in &b.member_ms {
        results.put(&format!("sop.member.{host}_s"), s(*ms))?;
    }
    results.put("sop.wall_s", s(wall_ms as i64))?;
    results.put("sop.span_s", s(b.span_ms))?;
    results.put("sop.member_sum_s", s(sum))?;
    results.put("sop.other_steps_s", s(b.other_steps_ms))?;
    results.put("sop.gaps_s", s(b.gaps_ms))?;
    results.put("sop.ratio", format!("{:.3}", wall_ms as f64 / sum as f64))?;
    results.put(
        "sop.span_ratio",
        format!("{:.3}", b.span_ms as f64 / sum as f64),
    )?;
    results.put("sop.order", b.order.join(" → "))?;
    let key = |k: &str| match round {
        Some(n) => format!("sop.r{n}.{k}"),
        None => format!("sop.{k}"),
    };
    if round.is_some() {
        results.put(&key("wall_ms"), wall_ms)?;
        results.put(&key("restart_ms"), b.restart_ms)?;
        results.put(&key("order"), b.order.join(" → "))?;
    }
    if let Some(floor) = floor_ms.filter(|f| *f > 0) {
        if round.is_some() {
            results.put(&key("floor_ms"), floor)?;
        }
        results.put(
            &key("floor_ratio"),
            format!("{:.3}", wall_ms as f64 / floor as f64),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_restart_and_gate_per_member() {
        let step = |kind: &str, host: &str, a: i64, b: i64| serde_json::json!({"kind": kind, "host": host, "started_unix_ms": a, "finished_unix_ms": b});
        let run = serde_json::json!({
            "state": "succeeded",
            "steps": [
                step("QuorumGuard", "h1", 1000, 1010),
                step("WriteEtcdConf", "h1", 1010, 1030),
                step("RestartEtcd", "h1", 1030, 1530),
                step("HealthGate", "h1", 1535, 2035),
                step("QuorumGuard", "h2", 2040, 2050),
                step("RestartEtcd", "h2", 2050, 2550),
                step("HealthGate", "h2", 2550, 2650),
            ]
        });
        let b = breakdown(&run).unwrap();
        assert_eq!(b.member_ms["h1"], 1000);
        assert_eq!(b.member_ms["h2"], 600);
        assert_eq!(b.member_sum_ms(), 1600);
        assert_eq!(b.other_steps_ms, 40);
        assert_eq!(b.span_ms, 1650);
        assert_eq!(b.gaps_ms, 10);
        assert_eq!(b.order, vec!["h1", "h2"]);
        assert_eq!(b.restart_ms, 1000);
        let failed = serde_json::json!({"state": "failed", "error": "x", "steps": []});
        assert!(breakdown(&failed).is_err());
    }
}
