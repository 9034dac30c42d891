//! The coordinator's Prometheus metrics: every family, and the calls that update them where
//! things happen (the runner's steps and runs, the registry's tasks). The gauges of state
//! (agents, runs by state, halted runs) are set from plain data at each scrape by
//! `daemon::metrics`, which also serves them. Names follow Prometheus' conventions: the
//! `quorum_` prefix, base units (seconds, bytes), `_total` for counters.

use std::sync::atomic::AtomicU64;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry as PromRegistry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Sop {
    sop: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SopState {
    sop: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindOutcome {
    kind: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindPhase {
    kind: String,
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Gate {
    gate: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct State {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Agent {
    agent: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AgentVersion {
    agent: String,
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Version {
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Halted {
    run: String,
    sop: String,
    cluster: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Cluster {
    cluster: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Op {
    op: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Role {
    role: String,
    subject: String,
}

type Hist<L> = Family<L, Histogram, fn() -> Histogram>;

/// Store writes: 0.5 ms to about 8 s (15 buckets, doubling).
fn store_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 15))
}

/// Durations from 10 ms to about 5.5 minutes (16 buckets, doubling).
fn duration_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 16))
}

/// Every metric of the coordinator.
pub struct Metrics {
    registry: Mutex<PromRegistry>,
    runs_started: Family<Sop, Counter>,
    runs_finished: Family<SopState, Counter>,
    run_duration: Hist<Sop>,
    steps: Family<KindOutcome, Counter>,
    step_duration: Hist<Kind>,
    gate_wait: Hist<Gate>,
    guard_refusals: Counter,
    tasks_dispatched: Family<Kind, Counter>,
    task_results: Family<KindOutcome, Counter>,
    task_timeouts: Family<KindPhase, Counter>,
    dispatch_wait: Histogram,
    agents: Family<State, Gauge>,
    agent_last_seen: Family<Agent, Gauge<f64, AtomicU64>>,
    agent_info: Family<AgentVersion, Gauge>,
    runs: Family<State, Gauge>,
    halted_since: Family<Halted, Gauge<f64, AtomicU64>>,
    store_write: Hist<Op>,
    snapshot_time: Family<Cluster, Gauge<f64, AtomicU64>>,
    snapshot_size: Family<Cluster, Gauge>,
    snapshot_duration: Family<Cluster, Gauge<f64, AtomicU64>>,
    snapshot_failures: Family<Cluster, Counter>,
    cert_expiry: Family<Role, Gauge<f64, AtomicU64>>,
    cert_renewals: Counter,
    revoked: Gauge,
    epoch: Gauge,
    shared_store: Gauge,
    /// The agent certificates set at the last scrape (removed at the next, so an agent that
    /// is gone leaves no series).
    agent_certs: Mutex<Vec<Role>>,
    /// What each agent reported about itself, as of the last scrape.
    agent_reported: std::sync::Arc<AgentReported>,
}

/// One agent's own counters, as its facts carry them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentCounts {
    /// The agent (its IP).
    pub agent: String,
    /// Tasks run, by outcome.
    pub tasks: Vec<(String, u64)>,
    /// Tasks answered from the journal.
    pub journal_answers: u64,
    /// Sessions opened.
    pub sessions: u64,
    /// Connection attempts that failed.
    pub connect_failures: u64,
    /// Bytes in its journal.
    pub journal_bytes: u64,
    /// When it started, Unix seconds.
    pub started_unix: i64,
}

/// One per-agent family: its name, its help, and its value of an agent's counts.
type AgentFamily<T> = (&'static str, &'static str, fn(&AgentCounts) -> T);

/// The families of what agents report about themselves: counted by the agents (they open no
/// listener), sent with their facts, exported here per agent at each scrape.
#[derive(Debug, Default)]
struct AgentReported(Mutex<Vec<AgentCounts>>);

impl prometheus_client::collector::Collector for AgentReported {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        use prometheus_client::metrics::MetricType;
        let agents = self.0.lock().unwrap_or_else(|p| p.into_inner());
        {
            let mut family = encoder.encode_descriptor(
                "quorum_agent_tasks",
                "Tasks each agent ran since it started (its own count; answers from its journal apart), by outcome",
                None,
                MetricType::Counter,
            )?;
            for a in agents.iter() {
                for (outcome, n) in &a.tasks {
                    let labels = [("agent", a.agent.as_str()), ("outcome", outcome.as_str())];
                    ConstCounter::new(*n).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        let counters: [AgentFamily<u64>; 3] = [
            (
                "quorum_agent_journal_answers",
                "Redelivered tasks each agent answered from its journal instead of running them again",
                |a| a.journal_answers,
            ),
            (
                "quorum_agent_sessions",
                "Sessions each agent opened to a coordinator since it started (the first and every reconnect)",
                |a| a.sessions,
            ),
            (
                "quorum_agent_connect_failures",
                "Attempts of each agent to open a session that failed since it started",
                |a| a.connect_failures,
            ),
        ];
        for (name, help, value) in counters {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for a in agents.iter() {
                let labels = [("agent", a.agent.as_str())];
                ConstCounter::new(value(a)).encode(family.encode_family(&labels)?)?;
            }
        }
        let gauges: [AgentFamily<i64>; 2] = [
            (
                "quorum_agent_journal_bytes",
                "Bytes in each agent's task journal",
                |a| i64::try_from(a.journal_bytes).unwrap_or(i64::MAX),
            ),
            (
                "quorum_agent_start_timestamp_seconds",
                "When each agent process started, Unix time",
                |a| a.started_unix,
            ),
        ];
        for (name, help, value) in gauges {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for a in agents.iter() {
                let labels = [("agent", a.agent.as_str())];
                ConstGauge::new(value(a)).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The coordinator's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    fn new() -> Self {
        let mut r = PromRegistry::default();
        let build: Family<Version, Gauge> = Family::default();
        build
            .get_or_create(&Version {
                version: env!("CARGO_PKG_VERSION").into(),
            })
            .set(1);
        r.register(
            "quorum_build_info",
            "The coordinator's version (always 1)",
            build,
        );
        let m = Self {
            registry: Mutex::new(PromRegistry::default()),
            runs_started: Family::default(),
            runs_finished: Family::default(),
            run_duration: Family::new_with_constructor(duration_buckets),
            steps: Family::default(),
            step_duration: Family::new_with_constructor(duration_buckets),
            gate_wait: Family::new_with_constructor(duration_buckets),
            guard_refusals: Counter::default(),
            tasks_dispatched: Family::default(),
            task_results: Family::default(),
            task_timeouts: Family::default(),
            dispatch_wait: duration_buckets(),
            agents: Family::default(),
            agent_last_seen: Family::default(),
            agent_info: Family::default(),
            runs: Family::default(),
            halted_since: Family::default(),
            store_write: Family::new_with_constructor(store_buckets),
            snapshot_time: Family::default(),
            snapshot_size: Family::default(),
            snapshot_duration: Family::default(),
            snapshot_failures: Family::default(),
            cert_expiry: Family::default(),
            cert_renewals: Counter::default(),
            revoked: Gauge::default(),
            epoch: Gauge::default(),
            shared_store: Gauge::default(),
            agent_certs: Mutex::new(Vec::new()),
            agent_reported: std::sync::Arc::new(AgentReported::default()),
        };
        r.register(
            "quorum_runs_started",
            "Runs the runner started walking (a resume counts again), by SOP",
            m.runs_started.clone(),
        );
        r.register(
            "quorum_runs_finished",
            "Runs that stopped walking, by SOP and the state they stopped in (succeeded, failed)",
            m.runs_finished.clone(),
        );
        r.register(
            "quorum_run_duration_seconds",
            "How long a run walked until it stopped, by SOP",
            m.run_duration.clone(),
        );
        r.register(
            "quorum_steps",
            "Steps finished, by kind and outcome (ok, changed, unchanged, skipped, failed, refused)",
            m.steps.clone(),
        );
        r.register(
            "quorum_step_duration_seconds",
            "How long a step took, by kind",
            m.step_duration.clone(),
        );
        r.register(
            "quorum_gate_wait_seconds",
            "How long a gate waited for health (etcd, Patroni, the VIP), by gate",
            m.gate_wait.clone(),
        );
        r.register(
            "quorum_quorum_guard_refusals",
            "Times the quorum guard refused to take a member down",
            m.guard_refusals.clone(),
        );
        r.register(
            "quorum_tasks_dispatched",
            "Tasks handed to agents, by kind",
            m.tasks_dispatched.clone(),
        );
        r.register(
            "quorum_task_results",
            "Task reports received (or answered by the coordinator), by kind and outcome",
            m.task_results.clone(),
        );
        r.register(
            "quorum_task_timeouts",
            "Tasks given up on, by kind and phase: delivery (no agent took it) or execution (taken, never reported)",
            m.task_timeouts.clone(),
        );
        r.register(
            "quorum_task_dispatch_wait_seconds",
            "How long a task waited between being queued and being handed to its agent",
            m.dispatch_wait.clone(),
        );
        r.register(
            "quorum_agents",
            "Agents the coordinator knows, by state (connected, idle, stale)",
            m.agents.clone(),
        );
        r.register(
            "quorum_agent_last_seen_timestamp_seconds",
            "When each agent last polled or reported, Unix time",
            m.agent_last_seen.clone(),
        );
        r.register(
            "quorum_agent_info",
            "Each agent's version (always 1)",
            m.agent_info.clone(),
        );
        r.register(
            "quorum_runs",
            "Runs in the store, by state (running, failed, interrupted, waiting, succeeded, aborted)",
            m.runs.clone(),
        );
        r.register(
            "quorum_run_halted_timestamp_seconds",
            "Runs stopped part-way (failed, interrupted, waiting), which hold their cluster's lock until resumed or aborted: since when, Unix time",
            m.halted_since.clone(),
        );
        r.register(
            "quorum_store_write_seconds",
            "How long a write to the runs store took (fsynced SQLite), by operation",
            m.store_write.clone(),
        );
        r.register(
            "quorum_snapshot_last_timestamp_seconds",
            "When the newest verified snapshot of each etcd cluster was taken, Unix time (its age: time() minus this)",
            m.snapshot_time.clone(),
        );
        r.register(
            "quorum_snapshot_last_size_bytes",
            "The size of the newest snapshot of each etcd cluster",
            m.snapshot_size.clone(),
        );
        r.register(
            "quorum_snapshot_duration_seconds",
            "How long the last snapshot of each etcd cluster took to stream and verify (since this coordinator started)",
            m.snapshot_duration.clone(),
        );
        r.register(
            "quorum_snapshot_failures",
            "Snapshots that could not be taken or verified, by cluster",
            m.snapshot_failures.clone(),
        );
        r.register(
            "quorum_certificate_expiry_timestamp_seconds",
            "When a certificate in use expires, Unix time, by role (coordinator; agent, with the agent's IP as subject, from its last session) and subject",
            m.cert_expiry.clone(),
        );
        r.register(
            "quorum_agent_certificate_renewals",
            "Agent certificates this coordinator renewed since it started",
            m.cert_renewals.clone(),
        );
        r.register(
            "quorum_revoked_certificates",
            "Serials on the deny list (revocations of certificates expired over a day ago are dropped)",
            m.revoked.clone(),
        );
        r.register(
            "quorum_coordinator_epoch",
            "The fencing epoch this coordinator acts under (its lease's, on a shared store); it serves metrics only while it acts",
            m.epoch.clone(),
        );
        r.register(
            "quorum_coordinator_shared_store",
            "1 when the runs are in the shared PostgreSQL store (active/standby), 0 on the local SQLite store",
            m.shared_store.clone(),
        );
        r.register_collector(Box::new(m.agent_reported.clone()));
        if let Ok(mut reg) = m.registry.lock() {
            *reg = r;
        }
        m
    }

    /// A run starts walking.
    pub fn run_started(&self, sop: &str) {
        self.runs_started
            .get_or_create(&Sop { sop: sop.into() })
            .inc();
    }

    /// A run stopped walking in `state` after `took`.
    pub fn run_finished(&self, sop: &str, state: &str, took: Duration) {
        self.runs_finished
            .get_or_create(&SopState {
                sop: sop.into(),
                state: state.into(),
            })
            .inc();
        self.run_duration
            .get_or_create(&Sop { sop: sop.into() })
            .observe(took.as_secs_f64());
    }

    /// A step of `kind` ended with `outcome` after `took`; a gate's time is its wait, and a
    /// refused quorum guard is counted as such.
    pub fn step_finished(&self, kind: &str, outcome: &str, took: Duration) {
        self.steps
            .get_or_create(&KindOutcome {
                kind: kind.into(),
                outcome: outcome.into(),
            })
            .inc();
        self.step_duration
            .get_or_create(&Kind { kind: kind.into() })
            .observe(took.as_secs_f64());
        if let Some(gate) = kind.strip_suffix("Gate") {
            self.gate_wait
                .get_or_create(&Gate {
                    gate: gate.to_lowercase(),
                })
                .observe(took.as_secs_f64());
        }
        if kind == "QuorumGuard" && outcome == "refused" {
            self.guard_refusals.inc();
        }
    }

    /// A task of `kind` was handed to its agent after waiting `waited` in the queue.
    pub fn task_dispatched(&self, kind: &str, waited: Duration) {
        self.tasks_dispatched
            .get_or_create(&Kind { kind: kind.into() })
            .inc();
        self.dispatch_wait.observe(waited.as_secs_f64());
    }

    /// A task's result arrived.
    pub fn task_result(&self, kind: &str, outcome: &str) {
        self.task_results
            .get_or_create(&KindOutcome {
                kind: kind.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    /// A task was given up on: `delivered` says whether its agent had taken it.
    pub fn task_timed_out(&self, kind: &str, delivered: bool) {
        self.task_timeouts
            .get_or_create(&KindPhase {
                kind: kind.into(),
                phase: if delivered { "execution" } else { "delivery" }.into(),
            })
            .inc();
    }

    /// A write to the runs store (`op`) took `took`.
    pub fn store_write(&self, op: &str, took: Duration) {
        self.store_write
            .get_or_create(&Op { op: op.into() })
            .observe(took.as_secs_f64());
    }

    /// A snapshot of `cluster` was taken (or failed) after `took`.
    pub fn snapshot_taken(&self, cluster: &str, took: Duration, ok: bool) {
        let c = Cluster {
            cluster: cluster.into(),
        };
        if ok {
            self.snapshot_duration
                .get_or_create(&c)
                .set(took.as_secs_f64());
        } else {
            self.snapshot_failures.get_or_create(&c).inc();
        }
    }

    /// Sets the newest snapshot of each cluster (at a scrape): `(cluster, taken Unix ms,
    /// size)` each.
    pub fn set_snapshots(&self, newest: impl Iterator<Item = (String, i64, u64)>) {
        self.snapshot_time.clear();
        self.snapshot_size.clear();
        for (cluster, taken_ms, size) in newest {
            let c = Cluster { cluster };
            self.snapshot_time
                .get_or_create(&c)
                .set(taken_ms as f64 / 1000.0);
            self.snapshot_size
                .get_or_create(&c)
                .set(i64::try_from(size).unwrap_or(i64::MAX));
        }
    }

    /// An agent certificate was renewed.
    pub fn cert_renewed(&self) {
        self.cert_renewals.inc();
    }

    /// The epoch this coordinator acts under, and whether its store is the shared one.
    pub fn set_epoch(&self, epoch: i64, shared: bool) {
        self.epoch.set(epoch);
        self.shared_store.set(i64::from(shared));
    }

    /// The deny list holds `n` serials (at a scrape).
    pub fn set_revoked(&self, n: usize) {
        self.revoked.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// A certificate in use by `role` (`subject`) expires at `not_after` (Unix seconds).
    pub fn cert_expires(&self, role: &str, subject: &str, not_after: i64) {
        self.cert_expiry
            .get_or_create(&Role {
                role: role.into(),
                subject: subject.into(),
            })
            .set(not_after as f64);
    }

    /// Sets the agent gauges from the registry's list (at a scrape): `(id, state, last seen
    /// Unix seconds, version)` each.
    pub fn set_agents<'a>(&self, agents: impl Iterator<Item = (&'a str, &'a str, i64, &'a str)>) {
        self.agents.clear();
        self.agent_last_seen.clear();
        self.agent_info.clear();
        for state in ["connected", "idle", "stale"] {
            self.agents
                .get_or_create(&State {
                    state: state.into(),
                })
                .set(0);
        }
        for (id, state, last_seen, version) in agents {
            self.agents
                .get_or_create(&State {
                    state: state.into(),
                })
                .inc();
            self.agent_last_seen
                .get_or_create(&Agent { agent: id.into() })
                .set(last_seen as f64);
            if !version.is_empty() {
                self.agent_info
                    .get_or_create(&AgentVersion {
                        agent: id.into(),
                        version: version.into(),
                    })
                    .set(1);
            }
        }
    }

    /// Sets the agents' own counters (at a scrape), and the expiry of each agent's
    /// certificate `(agent, not after Unix seconds)`; an agent missing from either leaves
    /// no series.
    pub fn set_agent_reports(&self, counts: Vec<AgentCounts>, certs: Vec<(String, i64)>) {
        *self
            .agent_reported
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = counts;
        let mut last = self.agent_certs.lock().unwrap_or_else(|p| p.into_inner());
        for old in last.drain(..) {
            self.cert_expiry.remove(&old);
        }
        for (agent, not_after) in certs {
            let role = Role {
                role: "agent".into(),
                subject: agent,
            };
            self.cert_expiry.get_or_create(&role).set(not_after as f64);
            last.push(role);
        }
    }

    /// Sets the run gauges (at a scrape): runs by state, and the halted runs `(id, sop,
    /// cluster, state, since Unix ms)`.
    pub fn set_runs(
        &self,
        counts: impl Iterator<Item = (String, i64)>,
        halted: impl Iterator<Item = (String, String, String, String, i64)>,
    ) {
        self.runs.clear();
        self.halted_since.clear();
        for (state, n) in counts {
            self.runs.get_or_create(&State { state }).set(n);
        }
        for (run, sop, cluster, state, since_ms) in halted {
            self.halted_since
                .get_or_create(&Halted {
                    run,
                    sop,
                    cluster,
                    state,
                })
                .set(since_ms as f64 / 1000.0);
        }
    }

    /// The exposition in OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if let Ok(reg) = self.registry.lock() {
            if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &reg) {
                tracing::warn!("metrics: cannot encode: {e}");
            }
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_exposed_with_help_and_type() {
        let m = metrics();
        m.run_started("cluster-create");
        m.run_finished("cluster-create", "succeeded", Duration::from_secs(2));
        m.step_finished("HealthGate", "ok", Duration::from_millis(40));
        m.step_finished("QuorumGuard", "refused", Duration::from_millis(1));
        m.task_dispatched("ServiceAction", Duration::from_millis(3));
        m.task_result("ServiceAction", "changed");
        m.task_timed_out("ServiceAction", true);
        m.store_write("put_step", Duration::from_millis(2));
        m.snapshot_taken("etcd", Duration::from_millis(300), true);
        m.snapshot_taken("etcd", Duration::from_millis(300), false);
        m.set_snapshots(std::iter::once((
            "etcd".to_string(),
            1_700_000_000_000,
            8192,
        )));
        m.cert_expires("coordinator", "/etc/quorum/coordinator.crt", 1_900_000_000);
        m.set_agents(std::iter::once((
            "10.0.0.1",
            "stale",
            1_700_000_000,
            "0.3.0",
        )));
        let counts = |agent: &str| AgentCounts {
            agent: agent.into(),
            tasks: vec![("changed".into(), 4), ("ok".into(), 9)],
            journal_answers: 1,
            sessions: 2,
            connect_failures: 3,
            journal_bytes: 512,
            started_unix: 1_700_000_000,
        };
        m.set_agent_reports(
            vec![counts("10.0.0.1"), counts("10.0.0.2")],
            vec![
                ("10.0.0.1".into(), 1_800_000_000),
                ("10.0.0.2".into(), 1_800_000_001),
            ],
        );
        // The next scrape no longer knows 10.0.0.2: its series go.
        m.set_agent_reports(
            vec![counts("10.0.0.1")],
            vec![("10.0.0.1".into(), 1_800_000_000)],
        );
        m.set_runs(
            std::iter::once(("failed".to_string(), 1)),
            std::iter::once((
                "r1".to_string(),
                "config-reload".to_string(),
                "etcd".to_string(),
                "failed".to_string(),
                1_700_000_000_000,
            )),
        );
        let classic = crate::model::metrics_text::classic_text(&m.encode());
        // Every family, and nothing else: the names the alert rules and the dashboard use.
        let mut exposed = std::collections::HashSet::new();
        for line in classic.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split(' ');
                if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                    exposed.insert(name.to_string());
                    if kind == "histogram" {
                        for suffix in ["_bucket", "_sum", "_count"] {
                            exposed.insert(format!("{name}{suffix}"));
                        }
                    }
                }
            }
        }
        let monitoring =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/monitoring");
        let mut texts = Vec::new();
        for file in ["quorum.rules.yml", "quorum-overview.json"] {
            texts.push(std::fs::read_to_string(monitoring.join(file)).expect("monitoring file"));
        }
        let mut used = 0;
        for text in &texts {
            let mut rest = text.as_str();
            while let Some(i) = rest.find("quorum_") {
                let name: String = rest[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                // Alert names and uids are not series.
                if name != "quorum_" && !name.starts_with("quorum_overview") {
                    assert!(exposed.contains(&name), "{name} is used but not exposed");
                    used += 1;
                }
                rest = &rest[i + name.len()..];
            }
        }
        assert!(
            used > 20,
            "only {used} series names found in the monitoring files"
        );
        for name in [
            "quorum_build_info",
            "quorum_runs_started_total",
            "quorum_runs_finished_total",
            "quorum_run_duration_seconds",
            "quorum_steps_total",
            "quorum_step_duration_seconds",
            "quorum_gate_wait_seconds",
            "quorum_quorum_guard_refusals_total",
            "quorum_tasks_dispatched_total",
            "quorum_task_results_total",
            "quorum_task_timeouts_total",
            "quorum_task_dispatch_wait_seconds",
            "quorum_agent_tasks_total",
            "quorum_agent_journal_answers_total",
            "quorum_agent_sessions_total",
            "quorum_agent_connect_failures_total",
            "quorum_agent_journal_bytes",
            "quorum_agent_start_timestamp_seconds",
        ] {
            assert!(
                classic.contains(&format!("# HELP {name} ")),
                "{name}:\n{classic}"
            );
            assert!(
                classic.contains(&format!("# TYPE {name} ")),
                "{name}:\n{classic}"
            );
        }
        assert!(
            classic.contains("quorum_gate_wait_seconds_count{gate=\"health\"} 1"),
            "{classic}"
        );
        assert!(
            classic.contains(
                "quorum_task_timeouts_total{kind=\"ServiceAction\",phase=\"execution\"} 1"
            ),
            "{classic}"
        );
        for line in [
            "quorum_agent_tasks_total{agent=\"10.0.0.1\",outcome=\"changed\"} 4",
            "quorum_agent_sessions_total{agent=\"10.0.0.1\"} 2",
            "quorum_agent_connect_failures_total{agent=\"10.0.0.1\"} 3",
            "quorum_agent_journal_bytes{agent=\"10.0.0.1\"} 512",
            "quorum_certificate_expiry_timestamp_seconds{role=\"agent\",subject=\"10.0.0.1\"} 1800000000",
        ] {
            assert!(classic.contains(line), "{line}:\n{classic}");
        }
        assert!(!classic.contains("10.0.0.2"), "{classic}");
    }
}
