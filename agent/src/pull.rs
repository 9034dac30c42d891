//! The pull loop: long-poll the coordinator, run each task through the executor, report,
//! and reconnect with exponential backoff and jitter when anything fails. SIGTERM ends the
//! loop between tasks (a running task finishes and is reported first).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use quorum_proto::identity::{peer_from_der, Peer};
use quorum_proto::pb;
use quorum_proto::pb::agent_service_client::AgentServiceClient;
use quorum_proto::tls::TlsMaterial;
use tokio::sync::watch;
use tonic::transport::Channel;

use crate::config::AgentConfig;
use crate::executor::Executor;

/// How long the agent waits for a poll answer: the coordinator holds a poll ~30 s.
const POLL_DEADLINE: Duration = Duration::from_secs(75);

/// Exponential backoff with full jitter, so a fleet reconnecting after a coordinator
/// restart does not arrive in one wave.
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    /// Backoff from `base` doubling up to `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            attempt: 0,
        }
    }

    /// The next delay: uniform in [ceiling/2, ceiling], ceiling doubling each time.
    pub fn next_delay(&mut self) -> Duration {
        let exp = self.base.saturating_mul(1u32 << self.attempt.min(16));
        let ceiling = exp.min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        let jitter_ms = rand::random_range(0..=half.as_millis().max(1) as u64);
        half + Duration::from_millis(jitter_ms)
    }

    /// Back to the base delay after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Loads the config at `path` and runs the pull loop until SIGTERM.
pub async fn run_from_config(path: &Path) -> anyhow::Result<u8> {
    let cfg = Arc::new(AgentConfig::load(path)?);
    let tls = TlsMaterial::load(&cfg.tls.ca_cert, &cfg.tls.cert, &cfg.tls.key).map_err(|e| {
        anyhow::anyhow!("{e} (a new host gets its certificate with `quorum-agent enroll`)")
    })?;
    check_own_identity(&cfg, &tls)?;
    let executor = Executor::new(cfg.clone())?;
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        quorum_proto::shutdown::signal().await;
        let _ = stop_tx.send(true);
    });
    run(cfg, tls, executor, stop_rx).await?;
    tracing::info!("agent stopped");
    Ok(0)
}

/// Refuses to start with a certificate that does not name this host: every poll would be
/// refused, and the operator should hear why at once.
fn check_own_identity(cfg: &AgentConfig, tls: &TlsMaterial) -> anyhow::Result<()> {
    let der = quorum_proto::tls::first_cert_der(&tls.cert_pem)
        .ok_or_else(|| anyhow::anyhow!("{} holds no certificate", cfg.tls.cert.display()))?;
    // The trust domain is the coordinator's business; read the role from any spiffe URI.
    let td = trust_domain_of(&der)
        .unwrap_or_else(|| quorum_proto::identity::DEFAULT_TRUST_DOMAIN.into());
    match peer_from_der(&der, &td) {
        Ok(Peer::Agent(ip)) if ip == cfg.host_ip => Ok(()),
        Ok(other) => anyhow::bail!(
            "certificate {} is for {other}, but this agent is host {} (host_ip in the config); enroll this host again",
            cfg.tls.cert.display(),
            cfg.host_ip
        ),
        Err(e) => anyhow::bail!("certificate {}: {e}", cfg.tls.cert.display()),
    }
}

fn trust_domain_of(der: &[u8]) -> Option<String> {
    use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    for ext in cert.extensions() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() {
            for name in &san.general_names {
                if let GeneralName::URI(u) = name {
                    if let Some(rest) = u.strip_prefix("spiffe://") {
                        return rest.split('/').next().map(str::to_string);
                    }
                }
            }
        }
    }
    None
}

/// The loop itself; returns when `stop` turns true.
pub async fn run(
    cfg: Arc<AgentConfig>,
    tls: TlsMaterial,
    executor: Executor,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let endpoint = quorum_proto::tls::endpoint(&cfg.coordinator, tls.client_config())?;
    // A lazy channel reconnects by itself; the loop only paces the retries.
    let channel: Channel = endpoint.connect_lazy();
    let mut client = AgentServiceClient::new(channel)
        .max_decoding_message_size(quorum_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(quorum_proto::MAX_MESSAGE_BYTES);
    let agent_id = cfg.host_ip.to_string();
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    let mut connected = false;
    tracing::info!(coordinator = %cfg.coordinator, agent = %agent_id, "agent starting");
    // Facts sent with the last report, reused by the poll right after it: they are
    // milliseconds old, and computing them (service status commands, file hashes) again
    // would double the agent's share of every dispatch.
    let mut fresh: Option<pb::Facts> = None;
    while !*stop.borrow() {
        let facts = match fresh.take() {
            Some(f) => f,
            None => executor.facts().await,
        };
        let mut req = tonic::Request::new(pb::PollRequest {
            agent_id: agent_id.clone(),
            facts: Some(facts),
        });
        req.set_timeout(POLL_DEADLINE);
        let answer = tokio::select! {
            _ = stop.changed() => break,
            r = client.poll(req) => r,
        };
        match answer {
            Ok(resp) => {
                if !connected {
                    tracing::info!("connected to the coordinator");
                    connected = true;
                }
                backoff.reset();
                for task in resp.into_inner().tasks {
                    let report = executor.execute(&task).await;
                    tracing::info!(task = %task.id, outcome = ?report.outcome, "task done");
                    let facts = executor.facts().await;
                    fresh = Some(facts.clone());
                    let req = pb::ReportRequest {
                        agent_id: agent_id.clone(),
                        task_id: task.id.clone(),
                        outcome: report.outcome as i32,
                        output: report.output,
                        facts: Some(facts),
                    };
                    // A lost report is redelivered as the task on the next poll, and the
                    // journal answers it without running it again.
                    if let Err(status) = client.report(req).await {
                        tracing::warn!(task = %task.id, "report failed: {}", status.message());
                    }
                    if *stop.borrow() {
                        break;
                    }
                }
            }
            Err(status) => {
                connected = false;
                let delay = backoff.next_delay();
                match status.code() {
                    tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => {
                        tracing::error!(
                            "the coordinator refused this agent: {}; retrying in {:?}",
                            status.message(),
                            delay
                        )
                    }
                    _ => tracing::warn!(
                        "poll failed ({:?}: {}); retrying in {:?}",
                        status.code(),
                        status.message(),
                        delay
                    ),
                }
                tokio::select! {
                    _ = stop.changed() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        for _ in 0..20 {
            let d = b.next_delay();
            assert!(d <= Duration::from_secs(2), "{d:?} over the cap");
        }
        let late = b.next_delay();
        assert!(
            late >= Duration::from_secs(1),
            "{late:?}: should sit near the cap"
        );
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
