//! The coordinator's Prometheus metrics, and the plain-HTTP listener that serves them with
//! `/healthz` and `/readyz` (`metrics_listen` in coordinator.yml; off unless set).
//!
//! Counters and histograms are updated where things happen (the runner's steps and runs, the
//! registry's tasks); the gauges of state (agents, runs holding their cluster's lock) are read
//! from the registry and the store at each scrape. Names follow Prometheus' conventions: the
//! `quorum_` prefix, base units (seconds, bytes), `_total` for counters.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry as PromRegistry;

use crate::clients::registry::Registry;
use crate::sop::store::Store;

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

type Hist<L> = Family<L, Histogram, fn() -> Histogram>;

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
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// Whether the coordinator serves (its gRPC listener is bound): `/readyz` says so.
static READY: AtomicBool = AtomicBool::new(false);

/// The coordinator's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// Marks the coordinator ready (its gRPC listener is bound and its state is open).
pub fn set_ready(ready: bool) {
    READY.store(ready, Ordering::SeqCst);
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

    /// The exposition text, with the state gauges read now from `registry` and `store`.
    pub fn render(&self, registry: &Registry, store: &Store) -> String {
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
        for a in registry.list() {
            self.agents
                .get_or_create(&State {
                    state: a.state.clone(),
                })
                .inc();
            self.agent_last_seen
                .get_or_create(&Agent {
                    agent: a.agent_id.clone(),
                })
                .set(a.last_seen_unix as f64);
            if !a.version.is_empty() {
                self.agent_info
                    .get_or_create(&AgentVersion {
                        agent: a.agent_id.clone(),
                        version: a.version.clone(),
                    })
                    .set(1);
            }
        }
        self.runs.clear();
        self.halted_since.clear();
        match store.run_counts() {
            Ok(counts) => {
                for (state, n) in counts {
                    self.runs.get_or_create(&State { state }).set(n);
                }
            }
            Err(e) => tracing::warn!("metrics: cannot count runs: {e}"),
        }
        match store.halted_runs() {
            Ok(halted) => {
                for h in halted {
                    self.halted_since
                        .get_or_create(&Halted {
                            run: h.id,
                            sop: h.sop,
                            cluster: h.cluster,
                            state: h.state,
                        })
                        .set(h.since_ms as f64 / 1000.0);
                }
            }
            Err(e) => tracing::warn!("metrics: cannot list halted runs: {e}"),
        }
        let mut text = String::new();
        if let Ok(reg) = self.registry.lock() {
            if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &reg) {
                tracing::warn!("metrics: cannot encode: {e}");
            }
        }
        text
    }
}

/// Connections the metrics listener serves at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 64;

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` (plain HTTP/1.1) until the
/// process ends. A connection that sends no complete request head within 5 s is closed.
pub async fn serve(listener: tokio::net::TcpListener, registry: Registry, store: Arc<Store>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("metrics listener: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let registry = registry.clone();
        let store = store.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let answer = answer(&req, &registry, &store);
                async move { Ok::<_, Infallible>(answer) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5))
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            // A scrape is one short request; a connection kept open longer is closed.
            if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(60), conn).await {
                tracing::debug!(%peer, "metrics connection: {e}");
            }
        });
    }
}

fn accepts_openmetrics(req: &Request<hyper::body::Incoming>) -> bool {
    req.headers()
        .get_all(hyper::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"))
}

/// OpenMetrics text as the classic Prometheus text format 0.0.4: a counter's HELP and TYPE
/// name its `_total` samples, and the `# EOF` and `# UNIT` lines go.
pub fn classic_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = line
            .strip_prefix("# HELP ")
            .map(|rest| ("# HELP ", rest))
            .or_else(|| line.strip_prefix("# TYPE ").map(|rest| ("# TYPE ", rest)));
        match meta {
            Some((tag, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                if counters.contains(name) {
                    out.push_str(&format!("{tag}{name}_total {tail}"));
                } else {
                    out.push_str(line);
                }
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

fn answer(
    req: &Request<hyper::body::Incoming>,
    registry: &Registry,
    store: &Store,
) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
            r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
        }
        r
    };
    const TEXT: &str = "text/plain; charset=utf-8";
    if req.method() != hyper::Method::GET && req.method() != hyper::Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            TEXT,
            "only GET: /metrics, /healthz, /readyz\n".into(),
        );
    }
    match req.uri().path() {
        // OpenMetrics to a scraper that asks for it (Prometheus does), else the classic text
        // format 0.0.4 (curl, promtool, older scrapers).
        "/metrics" if accepts_openmetrics(req) => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics().render(registry, store),
        ),
        "/metrics" => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            classic_text(&metrics().render(registry, store)),
        ),
        "/healthz" => reply(StatusCode::OK, TEXT, "ok\n".into()),
        "/readyz" if READY.load(Ordering::SeqCst) => reply(StatusCode::OK, TEXT, "ready\n".into()),
        "/readyz" => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            TEXT,
            "not ready: the coordinator is starting or stopping\n".into(),
        ),
        other => reply(
            StatusCode::NOT_FOUND,
            TEXT,
            format!("{other}: not here; /metrics, /healthz and /readyz are\n"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_text_names_counters_by_their_samples_and_drops_eof() {
        let om = "# HELP quorum_x Things done.\n# TYPE quorum_x counter\nquorum_x_total{a=\"b\"} 3\n# HELP quorum_g A gauge.\n# TYPE quorum_g gauge\nquorum_g 1\n# EOF\n";
        assert_eq!(
            classic_text(om),
            "# HELP quorum_x_total Things done.\n# TYPE quorum_x_total counter\nquorum_x_total{a=\"b\"} 3\n# HELP quorum_g A gauge.\n# TYPE quorum_g gauge\nquorum_g 1\n"
        );
    }

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
        let text = if let Ok(reg) = m.registry.lock() {
            let mut t = String::new();
            prometheus_client::encoding::text::encode(&mut t, &reg).expect("encodes");
            t
        } else {
            String::new()
        };
        let classic = classic_text(&text);
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
    }
}
