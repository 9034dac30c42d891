//! Certificate renewal at fleet scale: N simulated agents, each connected with its own
//! certificate, renew it as `quorum-agent` does: a `Renew` call over the connection they
//! have (with a CSR made for a new key), then a new connection presenting the new certificate
//! and a `Session` opened on it, at which the coordinator revokes the certificate the renewal
//! replaced. One round renews every agent once: one renewal cycle of the whole fleet, done at
//! once (what a fleet coming back from an outage does; in normal operation the same work is
//! spread over the 60-75 % window of each lifetime). Measured on the coordinator's pid: CPU
//! and memory for the round, the deny list it leaves, and the CRL export of that list.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use quorum_proto::pb;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::certs::{loopback_ips, Ca};
use crate::client::{agent_client, endpoint, AdminCreds};
use crate::procfs;
use crate::results::Results;
use crate::stats::{ms, summarize};

/// What to run.
pub struct RenewArgs {
    /// Admin connection (also gives the URL and CA).
    pub admin: AdminCreds,
    /// The CA certificate.
    pub ca_cert: PathBuf,
    /// The CA key, for the simulated agents' first certificates.
    pub ca_key: PathBuf,
    /// Trust domain of the role URIs.
    pub trust_domain: String,
    /// Simulated agents.
    pub agents: usize,
    /// First address of the simulated hosts.
    pub ip_base: Ipv4Addr,
    /// Renewals in flight at once.
    pub concurrency: usize,
    /// The coordinator's pid, sampled from /proc.
    pub coordinator_pid: u32,
    /// The coordinator's state dir, to size its store.
    pub state_dir: Option<PathBuf>,
    /// Key prefix in the results file.
    pub prefix: String,
}

/// A CSR for `ip` with a new key, as the agent makes it: (key PEM, CSR PEM).
fn csr(ip: IpAddr) -> Result<(String, String)> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = vec![rcgen::SanType::IpAddress(ip)];
    let req = params.serialize_request(&key)?;
    Ok((key.serialize_pem(), req.pem()?))
}

/// CSRs for every IP, made on every core before anything is timed.
fn csrs(ips: &[IpAddr]) -> Result<Vec<(String, String)>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = ips.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let workers: Vec<_> = ips
            .chunks(chunk)
            .map(|part| s.spawn(move || part.iter().map(|ip| csr(*ip)).collect::<Result<Vec<_>>>()))
            .collect();
        let mut all = Vec::with_capacity(ips.len());
        for w in workers {
            all.extend(
                w.join()
                    .map_err(|_| anyhow::anyhow!("a CSR worker panicked"))??,
            );
        }
        Ok(all)
    })
}

/// Bytes of the store's files in `dir` (runs.sqlite and its WAL).
fn store_bytes(dir: &std::path::Path) -> u64 {
    ["runs.sqlite", "runs.sqlite-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

#[derive(Default)]
struct Timings {
    renew: Vec<Duration>,
    take_up: Vec<Duration>,
    errors: u64,
    first_error: Option<String>,
}

/// One simulated agent's renewal: `Renew` on the connection it has, then a connection and a
/// session with the new certificate.
async fn renew_one(
    url: &str,
    ca: &str,
    ip: IpAddr,
    channel: tonic::transport::Channel,
    (key, csr_pem): (String, String),
) -> Result<(Duration, Duration)> {
    let mut client = agent_client(channel);
    let t = Instant::now();
    let answer = client
        .renew(pb::RenewRequest { csr_pem })
        .await
        .with_context(|| format!("renew from {ip}"))?
        .into_inner();
    let renew = t.elapsed();
    let t = Instant::now();
    let channel = endpoint(url, ca, &answer.cert_pem, &key, Some(ip))?
        .connect()
        .await
        .with_context(|| format!("connect from {ip} with the renewed certificate"))?;
    let mut client = agent_client(channel);
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(pb::AgentMessage {
        kind: Some(pb::agent_message::Kind::Poll(pb::PollRequest {
            agent_id: ip.to_string(),
            facts: None,
            highest_epoch: 0,
        })),
    })
    .await
    .map_err(|_| anyhow::anyhow!("the session stream closed"))?;
    // The coordinator answers the call (its headers) once it has recorded the new
    // certificate as taken up; the held poll itself is not waited for.
    let _stream = client
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .with_context(|| format!("session from {ip} with the renewed certificate"))?;
    Ok((renew, t.elapsed()))
}

/// Runs the renewal round and records its figures under `prefix`.
pub async fn run(args: RenewArgs, results: &Results) -> Result<()> {
    let p = args.prefix.clone();
    let key = |k: &str| format!("{p}.{k}");
    let pid = args.coordinator_pid;
    let n = args.agents;

    let ips = loopback_ips(args.ip_base, n)?;
    let ca = Ca::load(&args.ca_cert, &args.ca_key)?;
    let td = args.trust_domain.clone();
    let for_certs = ips.clone();
    let pems = tokio::task::spawn_blocking(move || ca.agents(&for_certs, &td)).await??;
    let for_csrs = ips.clone();
    let requests = tokio::task::spawn_blocking(move || csrs(&for_csrs)).await??;
    results.put(&key("agents"), n)?;
    results.put(&key("concurrency"), args.concurrency)?;

    let mut admin = args.admin.connect().await?;

    // The connections the agents hold before they renew (not part of the renewal's cost).
    let gate = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let mut connecting = JoinSet::new();
    for (i, (ip, old)) in ips.iter().copied().zip(pems).enumerate() {
        let gate = gate.clone();
        let (url, ca) = (args.admin.url.clone(), args.admin.ca.clone());
        connecting.spawn(async move {
            let _permit = gate.acquire().await?;
            let ch = endpoint(&url, &ca, &old.cert, &old.key, Some(ip))?
                .connect()
                .await
                .with_context(|| format!("connect from {ip}"))?;
            anyhow::Ok((i, ch))
        });
    }
    let mut channels: Vec<Option<tonic::transport::Channel>> = vec![None; n];
    while let Some(r) = connecting.join_next().await {
        let (i, ch) = r??;
        channels[i] = Some(ch);
    }
    let before = procfs::sample(pid)?;
    let store_before = args.state_dir.as_deref().map(store_bytes);
    let me_before = procfs::sample(std::process::id())?;

    let timings = Arc::new(Mutex::new(Timings::default()));
    let mut tasks = JoinSet::new();
    let t_round = Instant::now();
    for ((ip, channel), request) in ips.iter().copied().zip(channels).zip(requests) {
        let Some(channel) = channel else {
            continue;
        };
        let (gate, timings) = (gate.clone(), timings.clone());
        let (url, ca) = (args.admin.url.clone(), args.admin.ca.clone());
        tasks.spawn(async move {
            let Ok(_permit) = gate.acquire().await else {
                return;
            };
            let r = renew_one(&url, &ca, ip, channel, request).await;
            if let Ok(mut t) = timings.lock() {
                match r {
                    Ok((renew, take_up)) => {
                        t.renew.push(renew);
                        t.take_up.push(take_up);
                    }
                    Err(e) => {
                        t.errors += 1;
                        t.first_error.get_or_insert(format!("{e:#}"));
                    }
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let wall = t_round.elapsed();
    let after = procfs::sample(pid)?;
    let me_after = procfs::sample(std::process::id())?;

    let t = std::mem::take(&mut *timings.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    if let Some(e) = &t.first_error {
        eprintln!("renew: {} failed; first error: {e}", t.errors);
    }
    results.put(&key("errors"), t.errors)?;
    let done = t.renew.len();
    results.put(&key("renewed"), done)?;
    if let Some(s) = summarize(t.renew) {
        results.put(&key("renew_p50_ms"), ms(s.p50))?;
        results.put(&key("renew_p99_ms"), ms(s.p99))?;
    }
    if let Some(s) = summarize(t.take_up) {
        results.put(&key("take_up_p50_ms"), ms(s.p50))?;
        results.put(&key("take_up_p99_ms"), ms(s.p99))?;
    }
    results.put(&key("wall_s"), format!("{:.2}", wall.as_secs_f64()))?;
    results.put(
        &key("per_s"),
        format!("{:.0}", done as f64 / wall.as_secs_f64().max(1e-9)),
    )?;
    let cpu = after.cpu_ms_since(&before);
    results.put(&key("coord_cpu_ms"), cpu)?;
    results.put(
        &key("coord_cpu_per_renewal_ms"),
        format!("{:.3}", cpu as f64 / done.max(1) as f64),
    )?;
    results.put(&key("loadgen_cpu_ms"), me_after.cpu_ms_since(&me_before))?;
    let mib = |kib: u64| format!("{:.1}", kib as f64 / 1024.0);
    results.put(&key("coord_rss_before_mib"), mib(before.rss_kib))?;
    results.put(&key("coord_rss_after_mib"), mib(after.rss_kib))?;
    if let (Some(dir), Some(b)) = (args.state_dir.as_deref(), store_before) {
        let a = store_bytes(dir);
        results.put(
            &key("store_growth_kib"),
            format!("{:.0}", a.saturating_sub(b) as f64 / 1024.0),
        )?;
    }

    // The deny list the round left (every replaced certificate), exported as a CRL.
    let t = Instant::now();
    let crl = admin
        .crl(pb::CrlRequest {})
        .await
        .context("Crl")?
        .into_inner();
    results.put(&key("crl_ms"), ms(t.elapsed()))?;
    results.put(&key("revoked"), crl.entries)?;
    results.put(
        &key("crl_kib"),
        format!("{:.0}", crl.pem.len() as f64 / 1024.0),
    )?;
    Ok(())
}
