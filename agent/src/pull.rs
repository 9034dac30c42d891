//! The pull loop: one `Session` stream to the coordinator, on which the agent polls, runs
//! each task it is handed through the executor and reports it, then polls again; when the
//! session ends for any reason it reconnects with exponential backoff and jitter. SIGTERM
//! ends the loop between tasks (a running task finishes and is reported first).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use quorum_proto::exit::{BadInput, Exit};
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

/// How long a stopping agent waits for the coordinator to take its last reports.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

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

/// Loads the config at `path` and runs the pull loop until SIGTERM. Every error is a failed
/// start-up (the loop itself retries until stopped).
pub async fn run_from_config(path: &Path) -> anyhow::Result<Exit> {
    let cfg = Arc::new(AgentConfig::load(path)?);
    let tls = TlsMaterial::load(&cfg.tls.ca_cert, &cfg.tls.cert, &cfg.tls.key).map_err(|e| {
        BadInput(format!(
            "{e} (a new host gets its certificate with `quorum-agent enroll`)"
        ))
    })?;
    let trust_domain = check_own_identity(&cfg, &tls)?;
    let executor = Executor::new(cfg.clone())?;
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        quorum_proto::shutdown::signal().await;
        let _ = stop_tx.send(true);
    });
    run(cfg, tls, &trust_domain, executor, stop_rx).await?;
    tracing::info!("agent stopped");
    Ok(Exit::Ok)
}

/// Refuses to start with a certificate that does not name this host: every poll would be
/// refused, and the operator should hear why at once. Returns the trust domain the
/// certificate names, the one the coordinator's certificate must name too.
fn check_own_identity(cfg: &AgentConfig, tls: &TlsMaterial) -> Result<String, BadInput> {
    let der = quorum_proto::tls::first_cert_der(&tls.cert_pem)
        .ok_or_else(|| BadInput(format!("{} holds no certificate", cfg.tls.cert.display())))?;
    // The trust domain is the one this certificate names; the coordinator must name it too.
    let td = quorum_proto::identity::trust_domain_of(&der)
        .unwrap_or_else(|| quorum_proto::identity::DEFAULT_TRUST_DOMAIN.into());
    match peer_from_der(&der, &td) {
        Ok(Peer::Agent(ip)) if ip == cfg.host_ip => Ok(td),
        Ok(other) => Err(BadInput(format!(
            "certificate {} is for {other}, but this agent is host {} (host_ip in the config); enroll this host again",
            cfg.tls.cert.display(),
            cfg.host_ip
        ))),
        Err(e) => Err(BadInput(format!(
            "certificate {}: {e}",
            cfg.tls.cert.display()
        ))),
    }
}

/// The loop itself; returns when `stop` turns true.
pub async fn run(
    cfg: Arc<AgentConfig>,
    mut tls: TlsMaterial,
    trust_domain: &str,
    executor: Executor,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut puller = Puller {
        client: client_for(&cfg, &tls, trust_domain)?,
        agent_id: cfg.host_ip.to_string(),
        executor,
        backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(30)),
        connected: false,
    };
    tracing::info!(coordinator = %cfg.coordinator, agent = %puller.agent_id, "agent starting");
    while !*stop.borrow() {
        let Err(status) = puller.session(&mut stop).await else {
            break;
        };
        if !puller.connected {
            puller.executor.counters.connect_failed();
        }
        puller.connected = false;
        // Refused: perhaps the host enrolled again (which revokes the certificate this loop
        // was started with) and a new certificate is on disk. Use it, without a restart.
        if matches!(
            status.code(),
            tonic::Code::PermissionDenied | tonic::Code::Unauthenticated
        ) {
            if let Some(client) = renewed_client(&cfg, &mut tls, trust_domain) {
                puller.client = client;
                puller.backoff.reset();
            }
        }
        let delay = puller.backoff.next_delay();
        match (quorum_proto::tls::not_coordinator(&status), status.code()) {
            (Some(refused), _) => {
                tracing::error!("refusing the server: {refused}; retrying in {delay:?}")
            }
            (None, tonic::Code::PermissionDenied | tonic::Code::Unauthenticated) => tracing::error!(
                "the coordinator refused this agent: {}; retrying in {delay:?}",
                status.message()
            ),
            (None, tonic::Code::Unimplemented) => tracing::error!(
                "the coordinator does not offer the session call ({}); it is older than this agent: upgrade quorum on the coordinator host first; retrying in {delay:?}",
                status.message()
            ),
            (None, _) => tracing::warn!(
                "session with the coordinator ended ({:?}: {}); retrying in {delay:?}",
                status.code(),
                status.message()
            ),
        }
        tokio::select! {
            _ = stop.changed() => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
    Ok(())
}

/// A client of the coordinator that presents `tls`. The server must prove it is the
/// coordinator: any CA-signed certificate (an etcd member's) would otherwise be able to hand
/// this host tasks.
fn client_for(
    cfg: &AgentConfig,
    tls: &TlsMaterial,
    trust_domain: &str,
) -> anyhow::Result<AgentServiceClient<Channel>> {
    let endpoint = tls.coordinator_endpoint(&cfg.coordinator, trust_domain)?;
    // A lazy channel reconnects by itself; the loop only paces the retries.
    let channel: Channel = endpoint.connect_lazy();
    Ok(AgentServiceClient::new(channel)
        .max_decoding_message_size(quorum_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(quorum_proto::MAX_MESSAGE_BYTES))
}

/// A client with the certificate and key now on disk, when they differ from `tls` and are a
/// usable pair for this host (`quorum-agent enroll` ran meanwhile); `tls` becomes them.
/// `None` when nothing changed or the new files are not usable yet (enroll writes the key
/// first, then the certificate): the loop keeps what it has and looks again next time.
fn renewed_client(
    cfg: &AgentConfig,
    tls: &mut TlsMaterial,
    trust_domain: &str,
) -> Option<AgentServiceClient<Channel>> {
    let on_disk = std::fs::read(&cfg.tls.cert).ok()?;
    if on_disk == tls.cert_pem {
        return None;
    }
    let fresh = match TlsMaterial::load(&cfg.tls.ca_cert, &cfg.tls.cert, &cfg.tls.key) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!("the certificate on disk changed but cannot be used yet: {e}");
            return None;
        }
    };
    if let Err(e) = check_own_identity(cfg, &fresh) {
        tracing::warn!("the certificate on disk changed but cannot be used: {e}");
        return None;
    }
    match client_for(cfg, &fresh, trust_domain) {
        Ok(client) => {
            tracing::info!(
                cert = %cfg.tls.cert.display(),
                "the certificate on disk changed (the host enrolled again): using it from now on"
            );
            *tls = fresh;
            Some(client)
        }
        Err(e) => {
            tracing::warn!("the certificate on disk changed but cannot be used: {e}");
            None
        }
    }
}

/// Ends a session on SIGTERM so that nothing sent is lost: closes the agent's side and waits
/// (briefly) for the coordinator to end its side, which it does only after it has taken every
/// report sent before. A report cut off here would not be lost either (its task is handed out
/// again and the journal answers it), but the operator's call would wait for the next start.
async fn close(
    tx: tokio::sync::mpsc::Sender<pb::AgentMessage>,
    mut inbound: tonic::Streaming<pb::PollResponse>,
) -> Result<(), tonic::Status> {
    drop(tx);
    let drained = async { while let Ok(Some(_)) = inbound.message().await {} };
    if tokio::time::timeout(CLOSE_WAIT, drained).await.is_err() {
        tracing::warn!("the coordinator did not close the session within {CLOSE_WAIT:?}");
    }
    Ok(())
}

/// The agent's side of the pull protocol.
struct Puller {
    client: AgentServiceClient<Channel>,
    agent_id: String,
    executor: Executor,
    backoff: Backoff,
    connected: bool,
}

impl Puller {
    /// One `Session` stream: poll, run each task handed out, report it, poll again. Returns
    /// Ok when `stop` turns true (between tasks) and the reason when the session ends.
    async fn session(&mut self, stop: &mut watch::Receiver<bool>) -> Result<(), tonic::Status> {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let gone = || tonic::Status::unavailable("the session closed while the agent was sending");
        let facts = self.executor.facts().await;
        tx.send(self.poll(Some(facts))).await.map_err(|_| gone())?;
        let call = self
            .client
            .session(tokio_stream::wrappers::ReceiverStream::new(rx));
        let mut inbound = tokio::select! {
            _ = stop.changed() => return Ok(()),
            r = call => r?.into_inner(),
        };
        loop {
            let answer = tokio::select! {
                _ = stop.changed() => return close(tx, inbound).await,
                r = tokio::time::timeout(POLL_DEADLINE, inbound.message()) => r,
            };
            let tasks = match answer {
                Ok(Ok(Some(resp))) => resp.tasks,
                Ok(Ok(None)) => {
                    return Err(tonic::Status::unavailable(
                        "the coordinator ended the session",
                    ))
                }
                Ok(Err(status)) => return Err(status),
                Err(_) => {
                    return Err(tonic::Status::deadline_exceeded(format!(
                        "no answer to a poll in {POLL_DEADLINE:?}"
                    )))
                }
            };
            if !self.connected {
                tracing::info!("connected to the coordinator");
                self.connected = true;
                self.executor.counters.session_opened();
            }
            self.backoff.reset();
            let ran = !tasks.is_empty();
            for task in tasks {
                let report = self.executor.execute(&task).await;
                tracing::info!(task = %task.id, outcome = ?report.outcome, "task done");
                let kind = pb::agent_message::Kind::Report(pb::ReportRequest {
                    agent_id: self.agent_id.clone(),
                    task_id: task.id.clone(),
                    outcome: report.outcome as i32,
                    output: report.output,
                    facts: Some(self.executor.facts().await),
                    journal: report.journal,
                });
                // A report lost with the session is redelivered as the task on the next one,
                // and the journal answers it without running it again.
                tx.send(pb::AgentMessage { kind: Some(kind) })
                    .await
                    .map_err(|_| gone())?;
                if *stop.borrow() {
                    return close(tx, inbound).await;
                }
            }
            // After reports the coordinator has facts milliseconds old; computing them again
            // (service status commands, file hashes) would double the agent's share of
            // every dispatch. After an idle hold, send fresh ones.
            let facts = if ran {
                None
            } else {
                Some(self.executor.facts().await)
            };
            tx.send(self.poll(facts)).await.map_err(|_| gone())?;
        }
    }

    fn poll(&self, facts: Option<pb::Facts>) -> pb::AgentMessage {
        pb::AgentMessage {
            kind: Some(pb::agent_message::Kind::Poll(pb::PollRequest {
                agent_id: self.agent_id.clone(),
                facts,
            })),
        }
    }
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
