//! The plain-HTTP listener of the coordinator's metrics (`metrics_listen` in coordinator.yml;
//! off unless set): `/metrics` (OpenMetrics to a scraper that asks for it, else the classic
//! text format), `/healthz` and `/readyz`. The gauges of state are read from the registry and
//! the store at each scrape.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};

use crate::clients::registry::Registry;
use crate::model::metrics::metrics;
use crate::model::metrics_text::classic_text;
use crate::sop::runner::Runner;

/// Whether the coordinator serves (its gRPC listener is bound): `/readyz` says so.
static READY: AtomicBool = AtomicBool::new(false);

/// Marks the coordinator ready (its gRPC listener is bound and its state is open).
pub fn set_ready(ready: bool) {
    READY.store(ready, Ordering::SeqCst);
}

/// The outcomes an agent counts its tasks by.
const OUTCOMES: [&str; 6] = ["changed", "unchanged", "skipped", "refused", "failed", "ok"];

/// The exposition now, with the state gauges read from `registry`, the runs store and the
/// snapshots.
pub fn render(registry: &Registry, runner: &Runner) -> String {
    let store = &runner.store;
    let m = metrics();
    let agents = registry.list();
    m.set_agents(agents.iter().map(|a| {
        (
            a.agent_id.as_str(),
            a.state.as_str(),
            a.last_seen_unix,
            a.version.as_str(),
        )
    }));
    m.set_agent_reports(
        agents
            .iter()
            .filter_map(|a| {
                let c = a.facts.as_ref()?.counters.as_ref()?;
                // The agent names the outcomes; only the known ones become series, so an
                // agent cannot make the coordinator export labels of its choosing.
                let mut tasks: Vec<(String, u64)> = c
                    .tasks
                    .iter()
                    .filter(|(k, _)| OUTCOMES.contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), *v))
                    .collect();
                tasks.sort();
                Some(crate::model::metrics::AgentCounts {
                    agent: a.agent_id.clone(),
                    tasks,
                    journal_answers: c.journal_answers,
                    sessions: c.sessions,
                    connect_failures: c.connect_failures,
                    journal_bytes: c.journal_bytes,
                    started_unix: c.started_unix,
                })
            })
            .collect(),
        agents
            .iter()
            .filter(|a| a.cert_not_after_unix > 0)
            .map(|a| (a.agent_id.clone(), a.cert_not_after_unix))
            .collect(),
    );
    let counts = store.run_counts().unwrap_or_else(|e| {
        tracing::warn!("metrics: cannot count runs: {e}");
        Vec::new()
    });
    let halted = store.halted_runs().unwrap_or_else(|e| {
        tracing::warn!("metrics: cannot list halted runs: {e}");
        Vec::new()
    });
    m.set_runs(
        counts.into_iter(),
        halted
            .into_iter()
            .map(|h| (h.id, h.sop, h.cluster, h.state, h.since_ms)),
    );
    match runner.snapshots.list(None) {
        Ok(all) => {
            // Newest first: the first of each cluster is its newest.
            let mut seen = std::collections::HashSet::new();
            m.set_snapshots(
                all.into_iter()
                    .filter(|s| seen.insert(s.cluster.clone()))
                    .map(|s| (s.cluster, s.taken_unix_ms, s.size)),
            );
        }
        Err(e) => tracing::warn!("metrics: cannot list snapshots: {e}"),
    }
    m.encode()
}

/// Connections the metrics listener serves at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 64;

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` (plain HTTP/1.1) until the
/// process ends. A connection that sends no complete request head within 5 s is closed.
pub async fn serve(listener: tokio::net::TcpListener, registry: Registry, runner: Arc<Runner>) {
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
        let runner = runner.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let answer = answer(&req, &registry, &runner);
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

fn answer(
    req: &Request<hyper::body::Incoming>,
    registry: &Registry,
    runner: &Runner,
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
            render(registry, runner),
        ),
        "/metrics" => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            classic_text(&render(registry, runner)),
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
