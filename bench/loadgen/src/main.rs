//! `quorum-loadgen`: the load generator and meter behind `bench/run.sh`.
//!
//! Each subcommand measures one thing against real `quorum` / `quorum-agent` processes and
//! appends its figures as `key=value` lines to a results file; `table` turns that file into
//! the Markdown table the script prints (see BENCHMARKS.md for what every figure means).
//!
//! - `idle`: memory and CPU of a process over a quiet window (the connected, idle agent).
//! - `dispatch`: `RunTask(CollectFacts)` round trips to one agent, one at a time (a real
//!   agent, or one simulated in-process to isolate the coordinator's and the wire's share).
//! - `fleet`: N simulated agents, each with its own certificate and connection, polling a
//!   real coordinator; its memory, idle CPU, connect time and a fan-out to all N.
//! - `floor`: the physical floor of a rolling restart (the members' own restarts, leader
//!   last, until each serves a linearizable read).
//! - `sop`: a rolling restart against that floor, and its step timings.
//! - `renew`: N simulated agents renew their certificates once, as quorum-agent does: the
//!   coordinator's CPU and memory for a whole fleet's renewal cycle, and the deny list left.
//! - `table`: the results as one Markdown table.

#![warn(missing_docs)]

mod certs;
mod client;
mod dispatch;
mod fleet;
mod floor;
mod perf;
mod procfs;
mod renew;
mod results;
mod sim;
mod sop;
mod stats;
mod table;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

use crate::client::AdminCreds;
use crate::results::Results;

#[derive(Parser)]
#[command(
    name = "quorum-loadgen",
    version,
    about = "Load generator and meter for Quorum's benchmarks (bench/run.sh)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The admin connection shared by the subcommands that call the coordinator.
#[derive(Args)]
struct AdminArgs {
    /// Coordinator URL, https://IP:PORT.
    #[arg(long)]
    coordinator: String,
    /// The CA certificate (PEM).
    #[arg(long)]
    ca_cert: PathBuf,
    /// The admin certificate (`quorum pki issue admin`).
    #[arg(long)]
    admin_cert: PathBuf,
    /// The admin key.
    #[arg(long)]
    admin_key: PathBuf,
}

impl AdminArgs {
    fn load(&self) -> Result<AdminCreds> {
        AdminCreds::load(
            &self.coordinator,
            &self.ca_cert,
            &self.admin_cert,
            &self.admin_key,
        )
    }
}

#[derive(Subcommand)]
enum Command {
    /// Memory (VmRSS, VmHWM) and CPU (utime+stime) of a process over a quiet window.
    Idle {
        /// The process.
        #[arg(long)]
        pid: u32,
        /// Length of the window, seconds.
        #[arg(long, default_value_t = 60)]
        secs: u64,
        /// Key prefix in the results file.
        #[arg(long, default_value = "agent")]
        prefix: String,
        /// The results file to append to.
        #[arg(long)]
        out: PathBuf,
    },
    /// Time `RunTask(CollectFacts)` round trips to one agent, one at a time.
    Dispatch {
        #[command(flatten)]
        admin: AdminArgs,
        /// The agent's id (its IP).
        #[arg(long)]
        agent: String,
        /// Timed round trips.
        #[arg(long, default_value_t = 1000)]
        count: usize,
        /// Untimed round trips first.
        #[arg(long, default_value_t = 20)]
        warmup: usize,
        /// Profile a process while the timed round trips run: PID=PATH (repeatable).
        #[arg(long, value_parser = perf::parse_target)]
        perf: Vec<(u32, String)>,
        /// Key prefix in the results file.
        #[arg(long, default_value = "dispatch")]
        prefix: String,
        /// Play the agent inside this process (no host work), with a certificate signed by
        /// this CA key (the CA certificate is --ca-cert).
        #[arg(long)]
        simulate_with_ca_key: Option<PathBuf>,
        /// Trust domain of the simulated agent's role URI.
        #[arg(long, default_value = "pigsty")]
        trust_domain: String,
        /// The results file to append to.
        #[arg(long)]
        out: PathBuf,
    },
    /// N simulated agents against a real coordinator: memory, idle CPU, connect, fan-out.
    Fleet {
        #[command(flatten)]
        admin: AdminArgs,
        /// The CA key, to sign the simulated agents' certificates.
        #[arg(long)]
        ca_key: PathBuf,
        /// Trust domain of the role URIs.
        #[arg(long, default_value = "pigsty")]
        trust_domain: String,
        /// How many agents.
        #[arg(long)]
        agents: usize,
        /// The coordinator's pid (read from /proc).
        #[arg(long)]
        coordinator_pid: u32,
        /// Seconds with every agent idle in a held poll.
        #[arg(long, default_value_t = 30)]
        idle_secs: u64,
        /// First simulated host address (each agent connects from its own 127/8 address).
        #[arg(long, default_value = "127.1.0.1")]
        ip_base: Ipv4Addr,
        /// TLS handshakes in flight at once while connecting.
        #[arg(long, default_value_t = 256)]
        connect_concurrency: usize,
        /// Fan-outs one after the other (all their latencies are summarized together).
        #[arg(long, default_value_t = 1)]
        fanout_rounds: usize,
        /// What-if: the simulated agents' HTTP/2 keepalive interval, seconds (default: what
        /// quorum-agent uses, from TlsMaterial::coordinator_endpoint).
        #[arg(long)]
        keepalive_secs: Option<u64>,
        /// The calls the simulated agents make.
        #[arg(long, value_enum, default_value_t = sim::Protocol::Session)]
        protocol: sim::Protocol,
        /// Seconds to wait for the whole fleet to connect.
        #[arg(long, default_value_t = 180)]
        connect_timeout: u64,
        /// Profile a process during the fan-out: PID=PATH (repeatable).
        #[arg(long, value_parser = perf::parse_target)]
        perf: Vec<(u32, String)>,
        /// Profile a process during the idle window: PID=PATH (repeatable).
        #[arg(long, value_parser = perf::parse_target)]
        perf_idle: Vec<(u32, String)>,
        /// Key prefix in the results file (default fleet.<N>).
        #[arg(long)]
        prefix: Option<String>,
        /// The results file to append to.
        #[arg(long)]
        out: PathBuf,
    },
    /// The overhead of a rolling restart, from the run's JSON and the CLI's wall clock.
    Sop {
        /// `quorum config reload --restart -o json` output (or `quorum run show ID -o json`).
        #[arg(long)]
        run_json: PathBuf,
        /// Wall clock of the CLI command, milliseconds.
        #[arg(long)]
        wall_ms: u64,
        /// The physical floor measured on the same fleet (`floor`), milliseconds.
        #[arg(long)]
        floor_ms: Option<u64>,
        /// Which round of floor + SOP this is (keys `sop.rN.*`).
        #[arg(long)]
        round: Option<u32>,
        /// The results file to append to.
        #[arg(long)]
        out: PathBuf,
    },
    /// Restart every member with its own restart command, followers first and the leader
    /// last, each until it serves a linearizable read: the floor of a rolling restart.
    Floor {
        /// `IP,CLIENT_URL,RESTART_SCRIPT` of each member (the script holds the restart
        /// command of the agent's exec config).
        #[arg(long = "member", required = true)]
        members: Vec<floor::Member>,
        /// The CA certificate (PEM).
        #[arg(long)]
        ca_cert: PathBuf,
        /// An etcd client certificate from that CA (the coordinator's has clientAuth).
        #[arg(long)]
        cert: PathBuf,
        /// Its key.
        #[arg(long)]
        key: PathBuf,
        /// Key prefix in the results.
        #[arg(long, default_value = "sop.floor")]
        prefix: String,
        /// The results file to append to.
        #[arg(long)]
        out: PathBuf,
    },
    /// N simulated agents renew their certificates once each (Renew, then a session on the
    /// new certificate): one renewal cycle of the whole fleet at once.
    Renew {
        #[command(flatten)]
        admin: AdminArgs,
        /// The CA key, to sign the simulated agents' first certificates.
        #[arg(long)]
        ca_key: PathBuf,
        /// Trust domain of the role URIs.
        #[arg(long, default_value = "pigsty")]
        trust_domain: String,
        /// How many agents.
        #[arg(long)]
        agents: usize,
        /// The coordinator's pid (read from /proc).
        #[arg(long)]
        coordinator_pid: u32,
        /// The coordinator's state dir (its store is sized before and after).
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// First simulated host address.
        #[arg(long, default_value = "127.2.0.1")]
        ip_base: Ipv4Addr,
        /// Renewals (and connections) in flight at once.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Key prefix in the results file (default renew.<N>).
        #[arg(long)]
        prefix: Option<String>,
        /// The results file to append to.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the results as one Markdown table.
    Table {
        /// The results file.
        #[arg(long)]
        results: PathBuf,
    },
}

async fn idle(pid: u32, secs: u64, prefix: &str, results: &Results) -> Result<()> {
    let from = procfs::sample(pid)?;
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let to = procfs::sample(pid)?;
    let mib = |kib: u64| format!("{:.2}", kib as f64 / 1024.0);
    results.put(&format!("{prefix}.idle_secs"), secs)?;
    results.put(&format!("{prefix}.rss_mib"), mib(to.rss_kib))?;
    results.put(&format!("{prefix}.hwm_mib"), mib(to.hwm_kib))?;
    results.put(&format!("{prefix}.idle_cpu_ms"), to.cpu_ms_since(&from))?;
    results.put(
        &format!("{prefix}.idle_cpu_pct"),
        format!("{:.3}", to.cpu_pct_since(&from)),
    )?;
    results.put(
        &format!("{prefix}.children_cpu_ms"),
        to.children_cpu_ms_since(&from),
    )?;
    results.put(&format!("{prefix}.threads"), to.threads)?;
    Ok(())
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Idle {
            pid,
            secs,
            prefix,
            out,
        } => idle(pid, secs, &prefix, &Results::new(&out)).await,
        Command::Dispatch {
            admin,
            agent,
            count,
            warmup,
            perf,
            prefix,
            simulate_with_ca_key,
            trust_domain,
            out,
        } => {
            let simulate =
                simulate_with_ca_key.map(|key| (admin.ca_cert.clone(), key, trust_domain));
            let args = dispatch::DispatchArgs {
                simulate,
                admin: admin.load()?,
                agent,
                count,
                warmup,
                perf,
                prefix,
            };
            dispatch::run(args, &Results::new(&out)).await
        }
        Command::Fleet {
            admin,
            ca_key,
            trust_domain,
            agents,
            coordinator_pid,
            idle_secs,
            ip_base,
            connect_concurrency,
            fanout_rounds,
            keepalive_secs,
            protocol,
            connect_timeout,
            perf,
            perf_idle,
            prefix,
            out,
        } => {
            let args = fleet::FleetArgs {
                ca_cert: admin.ca_cert.clone(),
                admin: admin.load()?,
                ca_key,
                trust_domain,
                agents,
                ip_base,
                connect_concurrency,
                coordinator_pid,
                idle_secs,
                fanout_rounds,
                perf,
                perf_idle,
                prefix: prefix.unwrap_or_else(|| format!("fleet.{agents}")),
                connect_timeout: Duration::from_secs(connect_timeout),
                keepalive: keepalive_secs.map(Duration::from_secs),
                protocol,
            };
            fleet::run(args, &Results::new(&out)).await
        }
        Command::Sop {
            run_json,
            wall_ms,
            floor_ms,
            round,
            out,
        } => sop::run(&run_json, wall_ms, floor_ms, round, &Results::new(&out)),
        Command::Floor {
            members,
            ca_cert,
            cert,
            key,
            prefix,
            out,
        } => {
            let read = |p: &PathBuf| {
                std::fs::read_to_string(p)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))
            };
            let tls = floor::Tls {
                ca: read(&ca_cert)?,
                cert: read(&cert)?,
                key: read(&key)?,
            };
            floor::run(members, tls, &prefix, &Results::new(&out)).await
        }
        Command::Renew {
            admin,
            ca_key,
            trust_domain,
            agents,
            coordinator_pid,
            state_dir,
            ip_base,
            concurrency,
            prefix,
            out,
        } => {
            let args = renew::RenewArgs {
                ca_cert: admin.ca_cert.clone(),
                admin: admin.load()?,
                ca_key,
                trust_domain,
                agents,
                ip_base,
                concurrency,
                coordinator_pid,
                state_dir,
                prefix: prefix.unwrap_or_else(|| format!("renew.{agents}")),
            };
            renew::run(args, &Results::new(&out)).await
        }
        Command::Table { results } => {
            print!("{}", table::render(&Results::load(&results)?));
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
