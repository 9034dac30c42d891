//! The pull loop: one `Session` stream to the coordinator, on which the agent polls, runs
//! each task it is handed through the executor and reports it, then polls again; when the
//! session ends for any reason it reconnects with exponential backoff and jitter. SIGTERM
//! ends the loop between tasks (a running task finishes and is reported first).
//!
//! The loop also renews the agent's certificate, at 60–75 % of its lifetime: between tasks it
//! closes the session, asks the coordinator to sign a CSR made with a new key (the call
//! authenticated by the current certificate), writes the new pair, and opens the next session
//! with it. A certificate that expired (the coordinator was away too long) cannot renew; the
//! agent says how to recover, and uses the certificate `quorum-agent enroll` writes.

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

/// The keepalive ping of an agent that knows several coordinators.
const KEEPALIVE_WITH_STANDBYS: Duration = Duration::from_secs(10);

/// How long a stopping agent waits for the coordinator to take its last reports.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// How long a renewal call may take.
const RENEW_DEADLINE: Duration = Duration::from_secs(30);

/// Why a session ended without an error.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// The agent is stopping.
    Stopped,
    /// The certificate is due for renewal.
    Renew,
}

/// When to renew a certificate valid from `not_before` to `not_after` (Unix seconds): at a
/// random point between 60 % and 75 % of its lifetime, so a fleet enrolled together does
/// not renew together; one already past that point renews within a minute (a fleet coming
/// back from a coordinator outage spreads over that minute).
pub fn renewal_time(validity: Option<(i64, i64)>, now_unix: f64) -> Duration {
    let Some((nb, na)) = validity.filter(|(nb, na)| na > nb) else {
        return Duration::from_secs(365 * 86_400);
    };
    let lifetime = (na - nb) as f64;
    let at = nb as f64 + lifetime * rand::random_range(0.60..0.75);
    if at > now_unix {
        Duration::from_secs_f64(at - now_unix)
    } else {
        let spread = (lifetime * 0.05).clamp(1.0, 60.0);
        Duration::from_secs_f64(rand::random_range(0.0..spread))
    }
}

/// How long to wait before trying a failed renewal again: a tenth of what is left of the
/// certificate's life, at least `floor` and at most `cap`.
fn renewal_retry(validity: Option<(i64, i64)>, floor: Duration, cap: Duration) -> Duration {
    let left = validity
        .map_or(0, |(_, na)| na - quorum_proto::tls::unix_now())
        .max(0);
    Duration::from_secs((left / 10) as u64).clamp(floor, cap)
}

fn now_unix_f64() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// When the certificate of `tls` expired, if it has.
fn expired_at(tls: &TlsMaterial) -> Option<i64> {
    let (_, na) = tls.validity()?;
    (quorum_proto::tls::unix_now() > na).then_some(na)
}

fn utc(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| format!("{unix} (Unix time)"))
}

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
    if let Some(done) = crate::enroll::finish_identity(&cfg.tls.cert, &cfg.tls.key) {
        tracing::warn!("{done}");
    }
    // An expired certificate still starts the agent: it says how to recover and waits for
    // the certificate `quorum-agent enroll` writes.
    let tls = TlsMaterial::read(&cfg.tls.ca_cert, &cfg.tls.cert, &cfg.tls.key).map_err(|e| {
        BadInput(format!(
            "{e} (a new host gets its certificate with `quorum-agent enroll`)"
        ))
    })?;
    let trust_domain = check_own_identity(&cfg, &tls)?;
    if let Err(e) = quorum_proto::tls::check_validity(&cfg.tls.cert, &tls.cert_pem) {
        tracing::error!("{e}; {}", recovery_hint(&cfg));
    }
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

/// What to do about an expired certificate, said where the agent notices it.
fn recovery_hint(cfg: &AgentConfig) -> String {
    format!(
        "the coordinator refuses an expired certificate and it cannot renew itself: on the admin node mint a token with `quorum pki token --host {ip}`, then run `quorum-agent enroll --token-file FILE` here; this running agent uses the new certificate by itself",
        ip = cfg.host_ip
    )
}

/// The loop itself; returns when `stop` turns true.
pub async fn run(
    cfg: Arc<AgentConfig>,
    mut tls: TlsMaterial,
    trust_domain: &str,
    executor: Executor,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    // Coordinators running active/standby are tried in turn; a standby names the leader.
    let mut at = 0usize;
    let mut puller = Puller {
        client: client_for(&cfg, &cfg.coordinator[at], &tls, trust_domain)?,
        agent_id: cfg.host_ip.to_string(),
        executor,
        backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(30)),
        connected: false,
        renewal_failing: false,
    };
    let mut renew_at = tokio::time::Instant::now() + renewal_time(tls.validity(), now_unix_f64());
    tracing::info!(coordinator = %cfg.coordinator.join(","), agent = %puller.agent_id, "agent starting");
    while !*stop.borrow() {
        // A certificate written meanwhile (`quorum-agent enroll` after an expiry or a
        // revocation) replaces the one in use.
        if let Some(client) = renewed_client(&cfg, &cfg.coordinator[at], &mut tls, trust_domain) {
            puller.client = client;
            puller.backoff.reset();
            renew_at = tokio::time::Instant::now() + renewal_time(tls.validity(), now_unix_f64());
        }
        if tokio::time::Instant::now() >= renew_at && expired_at(&tls).is_some() {
            // Nothing renews an expired certificate; a new one from `quorum-agent enroll`
            // (picked up above) sets the next renewal.
            renew_at = tokio::time::Instant::now() + Duration::from_secs(365 * 86_400);
        }
        if tokio::time::Instant::now() >= renew_at {
            renew_at = match renew(&cfg, &tls, &mut puller.client).await {
                Ok(fresh) => match client_for(&cfg, &cfg.coordinator[at], &fresh, trust_domain) {
                    Ok(client) => {
                        let (_, not_after) = fresh.validity().unwrap_or_default();
                        tracing::info!(
                            cert = %cfg.tls.cert.display(),
                            valid_until = %utc(not_after),
                            "renewed this agent's certificate (new key); the next session uses it"
                        );
                        puller.client = client;
                        puller.executor.counters.renewed();
                        puller.renewal_failing = false;
                        tls = fresh;
                        tokio::time::Instant::now() + renewal_time(tls.validity(), now_unix_f64())
                    }
                    Err(e) => {
                        tracing::error!(
                            "the renewed certificate is written but cannot be used: {e}"
                        );
                        tokio::time::Instant::now()
                            + renewal_retry(
                                tls.validity(),
                                Duration::from_secs(1),
                                Duration::from_secs(300),
                            )
                    }
                },
                Err(failure) => {
                    // The retry below paces the next attempt, not the coordinator's asking.
                    puller.renewal_failing = true;
                    let retry = if failure.coordinator_cannot {
                        renewal_retry(
                            tls.validity(),
                            Duration::from_secs(60),
                            Duration::from_secs(3600),
                        )
                    } else {
                        renewal_retry(
                            tls.validity(),
                            Duration::from_secs(1),
                            Duration::from_secs(300),
                        )
                    };
                    let (_, not_after) = tls.validity().unwrap_or_default();
                    tracing::warn!(
                        "cannot renew this agent's certificate (valid until {}): {}; the current one stays in use, trying again in {retry:?}",
                        utc(not_after),
                        failure.why
                    );
                    tokio::time::Instant::now() + retry
                }
            };
        }
        let status = match puller.session(&mut stop, &mut renew_at).await {
            Ok(Ended::Stopped) => break,
            Ok(Ended::Renew) => continue,
            Err(status) => status,
        };
        if !puller.connected {
            puller.executor.counters.connect_failed();
        }
        puller.connected = false;
        let url = cfg.coordinator[at].clone();
        let hint = quorum_proto::leader::leader_hint(&status);
        let delay = if hint.is_some() {
            // A standby answered: it is up, and names the leader (or none, during a
            // takeover). Look again soon, whatever the failures before.
            puller.backoff.reset();
            Duration::from_millis(rand::random_range(300..800))
        } else {
            puller.backoff.next_delay()
        };
        if cfg.coordinator.len() > 1 {
            at = match hint.as_deref() {
                Some(leader) if !leader.is_empty() && leader != url => {
                    match cfg.coordinator.iter().position(|u| u == leader) {
                        Some(i) => i,
                        None => {
                            tracing::warn!(leader, "the standby at {url} names a leader that is not in this agent's `coordinator:` list; add it there");
                            (at + 1) % cfg.coordinator.len()
                        }
                    }
                }
                _ => (at + 1) % cfg.coordinator.len(),
            };
            puller.client = client_for(&cfg, &cfg.coordinator[at], &tls, trust_domain)?;
        }
        if let Some(leader) = &hint {
            tracing::info!(
                "the coordinator at {url} is a standby ({}); trying {} in {delay:?}",
                if leader.is_empty() {
                    "no leader yet".to_string()
                } else {
                    format!("the leader is {leader}")
                },
                cfg.coordinator[at]
            );
            tokio::select! {
                _ = stop.changed() => break,
                _ = tokio::time::sleep(delay) => {}
            }
            continue;
        }
        if let Some(at) = expired_at(&tls) {
            tracing::error!(
                "this agent's certificate {} expired at {}: {}; retrying in {delay:?}",
                cfg.tls.cert.display(),
                utc(at),
                recovery_hint(&cfg)
            );
        } else {
            match (quorum_proto::tls::not_coordinator(&status), status.code()) {
                (Some(refused), _) => {
                    tracing::error!("refusing the server: {refused}; retrying in {delay:?}")
                }
                (None, _) if quorum_proto::tls::server_cert_expired(&status) => tracing::error!(
                    "refusing the server at {}: {}; retrying in {delay:?}",
                    url,
                    quorum_proto::tls::COORDINATOR_CERT_EXPIRED
                ),
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
        }
        tokio::select! {
            _ = stop.changed() => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
    Ok(())
}

/// A renewal that did not happen.
struct RenewFailure {
    why: String,
    /// The coordinator cannot renew at all (too old, or no CA key): try again less often.
    coordinator_cannot: bool,
}

impl RenewFailure {
    fn new(why: impl std::fmt::Display) -> Self {
        Self {
            why: why.to_string(),
            coordinator_cannot: false,
        }
    }
}

/// Renews the certificate of `tls`: a new key and CSR made here, signed by the coordinator
/// over a call authenticated by the current certificate; the new pair is checked (this
/// host's, valid now, the key's) and written in place of the old. Returns it.
async fn renew(
    cfg: &AgentConfig,
    tls: &TlsMaterial,
    client: &mut AgentServiceClient<Channel>,
) -> Result<TlsMaterial, RenewFailure> {
    // Only the certificate this loop holds is replaced: one written meanwhile is newer.
    if std::fs::read(&cfg.tls.cert).ok().as_deref() != Some(tls.cert_pem.as_slice()) {
        return Err(RenewFailure::new(format!(
            "{} changed on disk since it was loaded",
            cfg.tls.cert.display()
        )));
    }
    let (key_pem, csr_pem) = crate::enroll::make_csr(cfg.host_ip).map_err(RenewFailure::new)?;
    let answer = tokio::time::timeout(RENEW_DEADLINE, client.renew(pb::RenewRequest { csr_pem }))
        .await
        .map_err(|_| RenewFailure::new(format!("no answer in {RENEW_DEADLINE:?}")))?;
    let resp = match answer {
        Ok(r) => r.into_inner(),
        Err(status) => {
            let coordinator_cannot = matches!(
                status.code(),
                tonic::Code::Unimplemented | tonic::Code::FailedPrecondition
            );
            let why = if status.code() == tonic::Code::Unimplemented {
                "the coordinator is older than this agent and does not renew certificates: upgrade quorum on the coordinator host".to_string()
            } else {
                format!(
                    "the coordinator refused ({:?}): {}",
                    status.code(),
                    status.message()
                )
            };
            return Err(RenewFailure {
                why,
                coordinator_cannot,
            });
        }
    };
    let fresh = TlsMaterial {
        ca_pem: tls.ca_pem.clone(),
        cert_pem: resp.cert_pem.into_bytes(),
        key_pem: key_pem.into_bytes(),
    };
    check_own_identity(cfg, &fresh).map_err(|e| {
        RenewFailure::new(format!(
            "the coordinator answered with a certificate that is not this host's: {e}"
        ))
    })?;
    quorum_proto::tls::check_validity(&cfg.tls.cert, &fresh.cert_pem).map_err(RenewFailure::new)?;
    quorum_proto::tls::certified_key(&fresh.cert_pem, &fresh.key_pem).map_err(RenewFailure::new)?;
    crate::enroll::write_identity(&cfg.tls.cert, &cfg.tls.key, &fresh.cert_pem, &fresh.key_pem)
        .map_err(RenewFailure::new)?;
    Ok(fresh)
}

/// A client of the coordinator that presents `tls`. The server must prove it is the
/// coordinator: any CA-signed certificate (an etcd member's) would otherwise be able to hand
/// this host tasks.
fn client_for(
    cfg: &AgentConfig,
    url: &str,
    tls: &TlsMaterial,
    trust_domain: &str,
) -> anyhow::Result<AgentServiceClient<Channel>> {
    // With several coordinators, a leader that stops answering (a frozen host) is left for
    // the next one within 15 s instead of 35 s; one coordinator keeps the cheaper ping.
    let keepalive = if cfg.coordinator.len() > 1 {
        KEEPALIVE_WITH_STANDBYS
    } else {
        quorum_proto::tls::KEEPALIVE_INTERVAL
    };
    let endpoint = tls
        .coordinator_endpoint(url, trust_domain)?
        .http2_keep_alive_interval(keepalive);
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
    url: &str,
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
    match client_for(cfg, url, &fresh, trust_domain) {
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
    /// The last renewal failed: its retry time stands, whatever the coordinator asks.
    renewal_failing: bool,
}

impl Puller {
    /// One `Session` stream: poll, run each task handed out, report it, poll again. Returns
    /// Ok when `stop` turns true (between tasks) and the reason when the session ends.
    async fn session(
        &mut self,
        stop: &mut watch::Receiver<bool>,
        renew_at: &mut tokio::time::Instant,
    ) -> Result<Ended, tonic::Status> {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let gone = || tonic::Status::unavailable("the session closed while the agent was sending");
        let facts = self.executor.facts().await;
        tx.send(self.poll(Some(facts))).await.map_err(|_| gone())?;
        let call = self
            .client
            .session(tokio_stream::wrappers::ReceiverStream::new(rx));
        let mut inbound = tokio::select! {
            _ = stop.changed() => return Ok(Ended::Stopped),
            r = call => r?.into_inner(),
        };
        loop {
            // Due for renewal while waiting for work: end the session (tasks handed out in
            // that moment go back to the coordinator's queue, and come on the next one).
            let answer = tokio::select! {
                _ = stop.changed() => return close(tx, inbound).await.map(|()| Ended::Stopped),
                _ = tokio::time::sleep_until(*renew_at) => {
                    return close(tx, inbound).await.map(|()| Ended::Renew)
                }
                r = tokio::time::timeout(POLL_DEADLINE, inbound.message()) => r,
            };
            let tasks = match answer {
                Ok(Ok(Some(resp))) => {
                    if resp.renew_within_secs > 0 && !self.renewal_failing {
                        // The coordinator wants a shorter-lived certificate than this one.
                        let within = Duration::from_secs(u64::from(resp.renew_within_secs));
                        let at = tokio::time::Instant::now()
                            + Duration::from_secs_f64(rand::random_range(
                                0.0..within.as_secs_f64(),
                            ));
                        if at < *renew_at {
                            tracing::info!(
                                "the coordinator asks for a certificate of its shorter lifetime: renewing within {within:?}"
                            );
                            *renew_at = at;
                        }
                    }
                    resp.tasks
                }
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
                    return close(tx, inbound).await.map(|()| Ended::Stopped);
                }
            }
            // Between tasks is where a renewal may end the session: nothing runs now.
            if tokio::time::Instant::now() >= *renew_at {
                return close(tx, inbound).await.map(|()| Ended::Renew);
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
                highest_epoch: self.executor.epoch(),
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

    #[test]
    fn renewal_falls_between_60_and_75_percent_of_the_lifetime() {
        // Valid from 1000 to 2000, looked at when issued.
        for _ in 0..200 {
            let at = 1000.0 + renewal_time(Some((1000, 2000)), 1000.0).as_secs_f64();
            assert!((1600.0..1750.0).contains(&at), "renews at {at}");
        }
        // Past the window (a coordinator outage): within a minute, spread.
        let late: Vec<f64> = (0..200)
            .map(|_| renewal_time(Some((0, 100_000)), 90_000.0).as_secs_f64())
            .collect();
        assert!(late.iter().all(|d| (0.0..60.0).contains(d)), "{late:?}");
        assert!(late.iter().any(|d| *d > 1.0), "not spread: {late:?}");
        // Short lifetimes spread over 5 % of them.
        assert!(renewal_time(Some((0, 40)), 35.0) <= Duration::from_secs(2));
        // Unreadable validity: nothing to schedule soon.
        assert!(renewal_time(None, 0.0) > Duration::from_secs(86_400));
    }

    #[test]
    fn a_failed_renewal_is_retried_sooner_as_expiry_nears() {
        let now = quorum_proto::tls::unix_now();
        let floor = Duration::from_secs(1);
        let cap = Duration::from_secs(300);
        assert_eq!(
            renewal_retry(Some((0, now + 20)), floor, cap),
            Duration::from_secs(2)
        );
        assert_eq!(renewal_retry(Some((0, now + 86_400)), floor, cap), cap);
        assert_eq!(renewal_retry(Some((0, now - 5)), floor, cap), floor);
        assert_eq!(renewal_retry(None, floor, cap), floor);
    }
}
