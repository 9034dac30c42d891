//! Fleet scale: one process plays N agents against a real coordinator. Each simulated agent
//! has its own certificate (so its own mTLS connection, leaving from its own 127/8 address),
//! polls with realistic facts exactly as `quorum-agent` does (one `Session` stream; or the
//! unary `Poll` and `Report` of 0.1 agents, `--protocol unary`), and answers every task it is
//! handed with an immediate report. Measured on the coordinator's
//! pid: memory with all N connected, CPU while all N sit in held polls, the time until it
//! lists all N as connected, and the latency of one task fanned out to every agent at once.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use quorum_proto::pb;
use quorum_proto::pb::admin_service_client::AdminServiceClient;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tonic::transport::Channel;

use crate::certs::{loopback_ips, Ca};
use crate::client::{endpoint, AdminCreds};
use crate::perf;
use crate::procfs;
use crate::results::Results;
use crate::sim::{sim_agent, Counters, Protocol};
use crate::stats::{ms, summarize};

/// What to run.
pub struct FleetArgs {
    /// Admin connection (also gives the URL and CA).
    pub admin: AdminCreds,
    /// The CA certificate and key that sign the simulated agents' certificates.
    pub ca_cert: PathBuf,
    /// The CA key.
    pub ca_key: PathBuf,
    /// Trust domain of the role URIs.
    pub trust_domain: String,
    /// Simulated agents.
    pub agents: usize,
    /// First address of the simulated hosts.
    pub ip_base: Ipv4Addr,
    /// TLS handshakes in flight at once while the fleet connects.
    pub connect_concurrency: usize,
    /// The coordinator's pid, sampled from /proc.
    pub coordinator_pid: u32,
    /// Seconds to sit with every agent in a held poll while measuring idle CPU.
    pub idle_secs: u64,
    /// Fan-outs one after the other (latencies of all of them are summarized together).
    pub fanout_rounds: usize,
    /// Processes to profile during the fan-out.
    pub perf: Vec<(u32, String)>,
    /// Processes to profile during the idle window.
    pub perf_idle: Vec<(u32, String)>,
    /// Key prefix in the results file.
    pub prefix: String,
    /// Give up when not all agents are connected within this.
    pub connect_timeout: Duration,
    /// Override the agents' HTTP/2 keepalive interval (a what-if; default: the real agent's).
    pub keepalive: Option<Duration>,
    /// The calls the simulated agents make.
    pub protocol: Protocol,
}

/// How many of `ours` the coordinator lists as in a poll right now.
async fn connected(
    admin: &mut AdminServiceClient<Channel>,
    ours: &HashSet<String>,
) -> Result<usize> {
    let list = admin
        .list_agents(pb::ListAgentsRequest {})
        .await?
        .into_inner();
    Ok(list
        .agents
        .iter()
        .filter(|a| a.state == "connected" && ours.contains(&a.agent_id))
        .count())
}

/// One fan-out: a single RunTasks(CollectFacts) call naming every agent, as an operator's
/// fan-out goes; pushes each report's latency (from the call's start to its arrival on the
/// stream) onto `lat`, returns the failures.
async fn fan_out(
    client: &AdminServiceClient<Channel>,
    ips: &[std::net::IpAddr],
    lat: &mut Vec<Duration>,
) -> Result<u64> {
    let mut c = client.clone();
    let req = pb::RunTasksRequest {
        agent_ids: ips.iter().map(|ip| ip.to_string()).collect(),
        task: Some(pb::Task {
            id: String::new(),
            epoch: 0,
            epoch_holder: String::new(),
            kind: Some(pb::task::Kind::CollectFacts(pb::CollectFacts {})),
        }),
        timeout_secs: 120,
        // Facts stop nothing: no confirmation needed.
        confirmed: false,
    };
    let t0 = Instant::now();
    let mut stream = c.run_tasks(req).await.context("RunTasks")?.into_inner();
    let mut errors = 0u64;
    let mut answered = 0usize;
    let mut first_error = None;
    loop {
        match stream.message().await {
            Ok(Some(r)) => {
                answered += 1;
                if r.outcome == pb::Outcome::Ok as i32 {
                    lat.push(t0.elapsed());
                } else {
                    errors += 1;
                    first_error.get_or_insert(format!("{}: {}", r.agent_id, r.output));
                }
            }
            Ok(None) => break,
            Err(s) => {
                first_error.get_or_insert(s.to_string());
                break;
            }
        }
    }
    errors += (ips.len() - answered.min(ips.len())) as u64;
    if let Some(e) = first_error {
        eprintln!("fan-out: {errors} failed; first error: {e}");
    }
    Ok(errors)
}

/// `rounds` fan-outs from a thread and runtime of their own, as the operator's CLI is a
/// process of its own: the admin client's reads must not queue behind the simulated agents'
/// work in this process's runtime, or the figure would time the load generator, not the
/// coordinator. Returns the latencies and the failures.
async fn fan_outs_apart(
    creds: &AdminCreds,
    ips: &[std::net::IpAddr],
    rounds: usize,
) -> Result<(Vec<Duration>, u64)> {
    let creds = creds.clone();
    let ips = ips.to_vec();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("fan-out".into())
        .spawn(move || {
            let run = || -> Result<(Vec<Duration>, u64)> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async {
                    let client = creds.connect().await?;
                    let mut lat = Vec::with_capacity(ips.len() * rounds);
                    let mut errors = 0;
                    for _ in 0..rounds {
                        errors += fan_out(&client, &ips, &mut lat).await?;
                    }
                    Ok((lat, errors))
                })
            };
            let _ = tx.send(run());
        })
        .context("cannot start the fan-out thread")?;
    rx.await.context("the fan-out thread died")?
}

/// Runs the whole fleet scenario and records its figures under `prefix`.
pub async fn run(args: FleetArgs, results: &Results) -> Result<()> {
    let p = args.prefix.clone();
    let key = |k: &str| format!("{p}.{k}");
    let pid = args.coordinator_pid;
    let n = args.agents;

    // Certificates, one per simulated host.
    let t = Instant::now();
    let ips = loopback_ips(args.ip_base, n)?;
    let ca = Ca::load(&args.ca_cert, &args.ca_key)?;
    let td = args.trust_domain.clone();
    let ips_for_certs = ips.clone();
    let pems = tokio::task::spawn_blocking(move || ca.agents(&ips_for_certs, &td)).await??;
    results.put(&key("agents"), n)?;
    results.put(&key("certs_s"), format!("{:.2}", t.elapsed().as_secs_f64()))?;

    let mut admin = args.admin.connect().await?;
    let at_start = procfs::sample(pid)?;
    results.put(
        &key("coord_rss_start_mib"),
        format!("{:.1}", at_start.rss_kib as f64 / 1024.0),
    )?;

    results.put(&key("protocol"), args.protocol.name())?;

    // Connect the fleet.
    let counters = Arc::new(Counters::default());
    let gate = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut agents = JoinSet::new();
    let t_connect = Instant::now();
    for (ip, pem) in ips.iter().zip(pems) {
        let mut ep = endpoint(
            &args.admin.url,
            &args.admin.ca,
            &pem.cert,
            &pem.key,
            Some(*ip),
        )?;
        if let Some(every) = args.keepalive {
            ep = ep.http2_keep_alive_interval(every);
        }
        agents.spawn(sim_agent(
            *ip,
            ep,
            gate.clone(),
            counters.clone(),
            args.protocol,
            stop_rx.clone(),
        ));
    }
    let ours: HashSet<String> = ips.iter().map(|i| i.to_string()).collect();
    let mut seen = 0;
    while seen < n {
        if t_connect.elapsed() > args.connect_timeout {
            bail!(
                "only {seen} of {n} agents connected within {:?}; first error: {:?}",
                args.connect_timeout,
                counters.first_error.lock().ok().and_then(|e| e.clone())
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        seen = connected(&mut admin, &ours).await?;
    }
    let connect_time = t_connect.elapsed();
    let connected_at = procfs::sample(pid)?;
    results.put(
        &key("connect_s"),
        format!("{:.2}", connect_time.as_secs_f64()),
    )?;
    results.put(&key("connect_cpu_ms"), connected_at.cpu_ms_since(&at_start))?;
    let handshakes = counters
        .handshakes
        .lock()
        .map(|h| h.clone())
        .unwrap_or_default();
    if let Some(h) = summarize(handshakes) {
        results.put(&key("handshake_p50_ms"), ms(h.p50))?;
        results.put(&key("handshake_p99_ms"), ms(h.p99))?;
    }
    results.put(
        &key("connect_errors"),
        counters.connect_errors.load(Ordering::Relaxed),
    )?;

    // Idle: every agent in a held poll; each re-polls once per hold (30 s by default), and
    // both sides send HTTP/2 keepalive pings.
    let perfs = perf::start_all(&args.perf_idle).await;
    let idle_from = procfs::sample(pid)?;
    tokio::time::sleep(Duration::from_secs(args.idle_secs)).await;
    let idle_to = procfs::sample(pid)?;
    perf::stop_all(perfs);
    let mib = |kib: u64| format!("{:.1}", kib as f64 / 1024.0);
    results.put(&key("coord_rss_mib"), mib(idle_to.rss_kib))?;
    results.put(&key("idle_secs"), args.idle_secs)?;
    results.put(&key("coord_idle_cpu_ms"), idle_to.cpu_ms_since(&idle_from))?;
    results.put(
        &key("coord_idle_cpu_pct"),
        format!("{:.2}", idle_to.cpu_pct_since(&idle_from)),
    )?;
    results.put(&key("coord_fds"), procfs::open_fds(pid).unwrap_or(0))?;
    results.put(&key("coord_threads"), idle_to.threads)?;
    results.put(
        &key("poll_errors_idle"),
        counters.poll_errors.load(Ordering::Relaxed),
    )?;

    // Fan-out: one CollectFacts task for every agent, all queued at once by one RunTasks
    // call; each latency runs from the call's start to that agent's answer on the stream.
    let perfs = perf::start_all(&args.perf).await;
    let fan_from = procfs::sample(pid)?;
    let me_from = procfs::sample(std::process::id())?;
    let (lat, errors) = fan_outs_apart(&args.admin, &ips, args.fanout_rounds.max(1)).await?;
    let fan_to = procfs::sample(pid)?;
    let me_to = procfs::sample(std::process::id())?;
    let fan_wall = fan_to.at.duration_since(fan_from.at);
    perf::stop_all(perfs);
    if let Some(s) = summarize(lat) {
        results.put(&key("fanout_p50_ms"), ms(s.p50))?;
        results.put(&key("fanout_p99_ms"), ms(s.p99))?;
        results.put(&key("fanout_max_ms"), ms(s.max))?;
    }
    results.put(&key("fanout_rounds"), args.fanout_rounds.max(1))?;
    results.put(&key("fanout_errors"), errors)?;
    results.put(
        &key("fanout_wall_ms"),
        format!("{:.0}", fan_wall.as_secs_f64() * 1000.0),
    )?;
    results.put(&key("fanout_cpu_ms"), fan_to.cpu_ms_since(&fan_from))?;
    results.put(&key("fanout_loadgen_cpu_ms"), me_to.cpu_ms_since(&me_from))?;
    results.put(&key("coord_rss_after_fanout_mib"), mib(fan_to.rss_kib))?;
    results.put(&key("coord_hwm_mib"), mib(fan_to.hwm_kib))?;
    results.put(
        &key("tasks_delivered"),
        counters.tasks.load(Ordering::Relaxed),
    )?;
    results.put(
        &key("report_errors"),
        counters.report_errors.load(Ordering::Relaxed),
    )?;
    results.put(&key("loadgen_rss_mib"), mib(me_to.rss_kib))?;

    // Hang up: every simulated agent closes its connection.
    let _ = stop_tx.send(true);
    let drain = tokio::time::timeout(Duration::from_secs(10), async {
        while agents.join_next().await.is_some() {}
    });
    if drain.await.is_err() {
        agents.abort_all();
    }
    Ok(())
}
