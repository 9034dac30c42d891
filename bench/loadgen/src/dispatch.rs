//! Dispatch latency: one `CollectFacts` task at a time through `AdminService.RunTask`, timed
//! from the call (the coordinator queues the task and wakes the agent's held poll) to its
//! answer (the agent ran the task and its `Report` released the waiting call). This is the
//! whole "queued to reported" path of an operator's ad-hoc task, on loopback.
//!
//! With `simulate`, the agent is a simulated one inside this process (see `sim`), which does
//! no host work: the figure is then the coordinator's and the wire's share alone, and the
//! difference to a real agent is what the agent spends collecting facts.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use quorum_proto::pb;
use tokio::sync::{watch, Semaphore};

use crate::certs::Ca;
use crate::client::{endpoint, AdminCreds};
use crate::perf;
use crate::results::Results;
use crate::stats::{ms, summarize};

/// What to measure.
pub struct DispatchArgs {
    /// Admin connection.
    pub admin: AdminCreds,
    /// The agent (its IP) that runs the tasks.
    pub agent: String,
    /// Timed round trips.
    pub count: usize,
    /// Untimed round trips first (connection warm-up).
    pub warmup: usize,
    /// Processes to profile while the timed round trips run.
    pub perf: Vec<(u32, String)>,
    /// Key prefix in the results file.
    pub prefix: String,
    /// Play the agent here, with a certificate signed by this CA (cert, key, trust domain).
    pub simulate: Option<(PathBuf, PathBuf, String)>,
}

/// Starts a simulated agent for `ip`; it runs until `stop` turns true.
fn start_simulated(
    admin: &AdminCreds,
    ca: &(PathBuf, PathBuf, String),
    ip: IpAddr,
    stop: watch::Receiver<bool>,
) -> Result<Arc<crate::sim::Counters>> {
    let pem = Ca::load(&ca.0, &ca.1)?
        .agents(&[ip], &ca.2)?
        .pop()
        .context("no certificate was made")?;
    let ep = endpoint(&admin.url, &admin.ca, &pem.cert, &pem.key, Some(ip))?;
    let counters = Arc::new(crate::sim::Counters::default());
    tokio::spawn(crate::sim::sim_agent(
        ip,
        ep,
        Arc::new(Semaphore::new(1)),
        counters.clone(),
        crate::sim::Protocol::Session,
        stop,
    ));
    Ok(counters)
}

fn facts_task() -> pb::Task {
    pb::Task {
        id: String::new(),
        epoch: 0,
        epoch_holder: String::new(),
        kind: Some(pb::task::Kind::CollectFacts(pb::CollectFacts {})),
    }
}

/// Runs the round trips and records p50, p99, max and mean.
pub async fn run(args: DispatchArgs, results: &Results) -> Result<()> {
    let mut client = args.admin.connect().await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    if let Some(ca) = &args.simulate {
        let ip: IpAddr = args.agent.parse().context("--agent is not an IP address")?;
        start_simulated(&args.admin, ca, ip, stop_rx)?;
        // RunTask is refused until the agent has polled once.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let list = client
                .list_agents(pb::ListAgentsRequest {})
                .await?
                .into_inner();
            if list.agents.iter().any(|a| a.agent_id == args.agent) {
                break;
            }
            if Instant::now() > deadline {
                bail!("the simulated agent {ip} did not connect within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let mut lat = Vec::with_capacity(args.count);
    let mut perfs = Vec::new();
    for i in 0..args.warmup + args.count {
        if i == args.warmup {
            perfs = perf::start_all(&args.perf).await;
        }
        let req = pb::RunTaskRequest {
            agent_id: args.agent.clone(),
            task: Some(facts_task()),
            timeout_secs: 30,
            confirmed: false,
        };
        let t = Instant::now();
        let answer = client.run_task(req).await;
        let took = t.elapsed();
        match answer {
            Ok(r) if r.get_ref().outcome == pb::Outcome::Ok as i32 => {}
            Ok(r) => bail!("task {} did not succeed: {:?}", i, r.into_inner()),
            Err(s) => bail!("RunTask {i} to {} failed: {s}", args.agent),
        }
        if i >= args.warmup {
            lat.push(took);
        }
    }
    perf::stop_all(perfs);
    let _ = stop_tx.send(true);
    let total: Duration = lat.iter().sum();
    let Some(s) = summarize(lat) else {
        bail!("no dispatches were timed (--count 0)");
    };
    let p = &args.prefix;
    results.put(&format!("{p}.count"), s.n)?;
    results.put(&format!("{p}.p50_ms"), ms(s.p50))?;
    results.put(&format!("{p}.p99_ms"), ms(s.p99))?;
    results.put(&format!("{p}.max_ms"), ms(s.max))?;
    results.put(&format!("{p}.mean_ms"), ms(s.mean))?;
    results.put(
        &format!("{p}.total_s"),
        format!("{:.2}", total.as_secs_f64()),
    )?;
    Ok(())
}
