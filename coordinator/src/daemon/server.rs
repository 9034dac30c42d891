//! The coordinator daemon: the gRPC services agents and operators call, over mutual TLS, with
//! authorization by the role in the peer certificate's URI SAN and nothing else.

use std::collections::HashSet;
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quorum_proto::identity::{peer_from_der, Peer};
use quorum_proto::pb;
use quorum_proto::pb::admin_service_server::{AdminService, AdminServiceServer};
use quorum_proto::pb::agent_service_server::{AgentService, AgentServiceServer};
use quorum_proto::tls::TlsMaterial;
use tonic::{Request, Response, Status};

use crate::clients::etcd::EtcdAccess;
use crate::clients::registry::{AgentState, Registry};
use crate::daemon::adhoc;
use crate::daemon::limit::{IpBuckets, LogLimit};
use crate::model::config::CoordinatorConfig;
use crate::model::pki::Ca;
use crate::sop::lease::Leadership;
use crate::sop::planning as sop;
use crate::sop::request::SopRequest;
use crate::sop::runner::{Runner, Timeouts};
use crate::sop::store::{run_state, Store, StoreError};

/// Reads the caller's role and certificate serial from its TLS client certificate, and
/// refuses a certificate on the deny list.
fn identify<T>(req: &Request<T>, c: &Coordinator) -> Result<(Peer, String), Status> {
    let certs = req.peer_certs().ok_or_else(|| {
        Status::unauthenticated(
            "no client certificate was presented; this call needs a certificate from the Pigsty CA (see `quorum pki issue`)",
        )
    })?;
    let first = certs.first().ok_or_else(|| {
        Status::unauthenticated("no client certificate was presented; this call needs one")
    })?;
    let (peer, serial) = cached_peer(first.as_ref(), c.td())?;
    // Checked on every call, after the cache: a revoked certificate's role stays cached.
    if let Some(r) = c.deny.get(&serial) {
        return Err(crate::daemon::revocation::refusal(&peer, &r));
    }
    Ok((peer, serial))
}

/// Reads the caller's role from its TLS client certificate; a revoked certificate is refused.
pub fn authenticate<T>(req: &Request<T>, c: &Coordinator) -> Result<Peer, Status> {
    identify(req, c).map(|(peer, _)| peer)
}

/// Certificates already read, by DER: every poll, report and admin call presents the same
/// certificate again, and parsing it each time cost ~9% of the coordinator's CPU in the
/// fan-out benchmark. rustls has verified the chain before this runs; only the role mapping
/// and the serial are cached (the deny list is checked after, on every call). Bounded:
/// cleared when it holds more certificates than a large fleet has.
fn cached_peer(der: &[u8], trust_domain: &str) -> Result<(Peer, String), Status> {
    type Cache = std::collections::HashMap<Vec<u8>, (String, Peer, String)>;
    static CACHE: std::sync::OnceLock<std::sync::Mutex<Cache>> = std::sync::OnceLock::new();
    const MAX: usize = 50_000;
    let cache = CACHE.get_or_init(Default::default);
    if let Ok(c) = cache.lock() {
        if let Some((td, peer, serial)) = c.get(der) {
            if td == trust_domain {
                return Ok((peer.clone(), serial.clone()));
            }
        }
    }
    let peer =
        peer_from_der(der, trust_domain).map_err(|e| Status::permission_denied(e.to_string()))?;
    let serial = quorum_proto::identity::serial_from_der(der)
        .map_err(|e| Status::permission_denied(e.to_string()))?;
    if let Ok(mut c) = cache.lock() {
        if c.len() >= MAX {
            c.clear();
        }
        c.insert(
            der.to_vec(),
            (trust_domain.to_string(), peer.clone(), serial.clone()),
        );
    }
    Ok((peer, serial))
}

/// When the caller's certificate is valid (not before, not after), Unix seconds.
fn peer_validity<T>(req: &Request<T>) -> Option<(i64, i64)> {
    req.peer_certs()
        .and_then(|certs| certs.first().cloned())
        .and_then(|der| quorum_proto::identity::validity_from_der(der.as_ref()).ok())
}

/// The serial and expiry of a certificate just signed.
fn issued_of(cert_pem: &[u8]) -> Result<crate::sop::store::Issued, String> {
    let der = quorum_proto::tls::first_cert_der(cert_pem)
        .ok_or("the certificate just signed cannot be read back")?;
    let serial = quorum_proto::identity::serial_from_der(der.as_ref())
        .map_err(|e| format!("the certificate just signed: {e}"))?;
    let (_, not_after_unix) = quorum_proto::identity::validity_from_der(der.as_ref())
        .map_err(|e| format!("the certificate just signed: {e}"))?;
    Ok(crate::sop::store::Issued {
        serial,
        not_after_unix,
    })
}

/// Demands that the caller is the agent named `agent_id`.
fn authorize_agent<T>(req: &Request<T>, c: &Coordinator, agent_id: &str) -> Result<IpAddr, Status> {
    let (ip, _) = agent_peer(req, c)?;
    same_agent(ip, agent_id)?;
    Ok(ip)
}

/// Demands an agent caller; returns the host its certificate names and the serial.
fn agent_peer<T>(req: &Request<T>, c: &Coordinator) -> Result<(IpAddr, String), Status> {
    match identify(req, c)? {
        (Peer::Agent(ip), serial) => Ok((ip, serial)),
        (other, _) => Err(Status::permission_denied(format!(
            "{other} may not call the agent service; only agent certificates may"
        ))),
    }
}

/// Demands that `agent_id`, as a message names it, is the agent `ip` of the certificate.
fn same_agent(ip: IpAddr, agent_id: &str) -> Result<(), Status> {
    let claimed: IpAddr = agent_id.parse().map_err(|_| {
        Status::invalid_argument(format!("agent_id {agent_id:?} is not an IP address"))
    })?;
    if claimed != ip {
        return Err(Status::permission_denied(format!(
            "the certificate of agent {ip} cannot act as agent {claimed}; an agent polls and reports only its own tasks"
        )));
    }
    Ok(())
}

/// Demands an admin caller; returns the admin's name for the audit trail.
fn authorize_admin<T>(req: &Request<T>, c: &Coordinator) -> Result<String, Status> {
    match authenticate(req, c)? {
        Peer::Admin(name) => Ok(name),
        other => Err(Status::permission_denied(format!(
            "{other} may not call the admin service; use an admin certificate (`quorum pki issue admin --name NAME`)"
        ))),
    }
}

/// Enrollment tokens already used, kept in the state dir so a restart does not forget them.
struct UsedTokens {
    path: PathBuf,
    seen: Mutex<HashSet<String>>,
}

impl UsedTokens {
    fn open(path: PathBuf) -> std::io::Result<Self> {
        let seen = match std::fs::read_to_string(&path) {
            Ok(text) => text
                .lines()
                .filter_map(|l| l.split_whitespace().next())
                .map(str::to_string)
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashSet::new(),
            Err(e) => return Err(e),
        };
        Ok(Self {
            path,
            seen: Mutex::new(seen),
        })
    }

    fn is_used(&self, nonce: &str) -> bool {
        self.seen.lock().map(|s| s.contains(nonce)).unwrap_or(true)
    }

    /// Records a nonce durably; false if it was already there.
    fn mark(&self, nonce: &str, exp: i64) -> std::io::Result<bool> {
        let mut seen = self
            .seen
            .lock()
            .map_err(|_| std::io::Error::other("used-token set poisoned"))?;
        if !seen.insert(nonce.to_string()) {
            return Ok(false);
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        writeln!(f, "{nonce} {exp}")?;
        f.sync_all()?;
        Ok(true)
    }
}

/// The CA the coordinator config names (`tls.ca_cert`, `tls.ca_key`) cannot be loaded: the
/// files or the config are wrong, and the daemon does not start.
#[derive(Debug, thiserror::Error)]
#[error("{0} (tls.ca_cert and tls.ca_key in the coordinator config)")]
pub struct ConfiguredCaError(pub crate::model::pki::PkiError);

/// Shared state of the services.
pub struct Coordinator {
    /// The config it was started with.
    pub config: CoordinatorConfig,
    /// Agents and their task queues.
    pub registry: Registry,
    ca: Option<Arc<Ca>>,
    used_tokens: UsedTokens,
    etcd: EtcdAccess,
    runner: Arc<Runner>,
    /// Turns true when the daemon is stopping: agent sessions end so the server can drain.
    stopping: tokio::sync::watch::Sender<bool>,
    /// `Enroll` attempts by peer IP: anyone can call it, so it is metered.
    enroll_buckets: IpBuckets,
    /// Refused enrollments are logged, at a limited rate.
    enroll_log: LogLimit,
    /// Revoked certificate serials: refused on every call, and their sessions end.
    deny: crate::daemon::revocation::DenyList,
    /// The epoch this coordinator acts under, and whether its lease still holds.
    leadership: Arc<Leadership>,
}

/// `Enroll` attempts one IP may make at once, then per second: enough for a few hosts behind
/// one NAT enrolling together, far too few to make guessing or flooding worthwhile.
const ENROLL_BURST: u32 = 10;
const ENROLL_PER_SEC: f64 = 2.0;

impl Coordinator {
    /// Builds the coordinator state from its config, over `store`, acting as `leadership`
    /// says (the state dir is prepared by [`serve`] first).
    pub fn new(
        config: CoordinatorConfig,
        tls: TlsMaterial,
        store: Arc<Store>,
        leadership: Arc<Leadership>,
    ) -> anyhow::Result<Arc<Self>> {
        // The key from exactly the file tls.ca_key names, the certificate from tls.ca_cert.
        let ca = match &config.tls.ca_key {
            Some(key) => Some(Arc::new(
                Ca::load_files(&config.tls.ca_cert, key, Some(&config.trust_domain))
                    .map_err(ConfiguredCaError)?,
            )),
            None => None,
        };
        // Member certificates and keys live in the state dir, which the packaged unit may
        // write (the CA's directory may be read-only to it).
        let member_cert_dir = crate::model::statedir::member_cert_dir(&config.state_dir);
        let legacy = [
            config
                .tls
                .ca_key
                .as_ref()
                .and_then(|k| k.parent())
                .and_then(|d| d.parent())
                .map(|p| p.join("etcd")),
            Some(config.state_dir.join("pki-etcd")),
        ];
        let adopted = crate::model::statedir::create_member_cert_dir(
            &member_cert_dir,
            legacy.iter().flatten(),
        )
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot create {}: {e}; the state dir must be writable",
                member_cert_dir.display()
            )
        })?;
        for a in adopted {
            tracing::info!("{a}");
        }
        let deny = crate::daemon::revocation::DenyList::new(store.revocations()?);
        let registry = Registry::new(Duration::from_secs(config.stale_after_secs));
        let etcd = EtcdAccess::new(tls);
        let runner = Runner::new(
            store,
            leadership.clone(),
            registry.clone(),
            etcd.clone(),
            ca.clone(),
            crate::sop::runner::Places {
                member_cert_dir,
                inventory: config.inventory.clone(),
                snapshots: crate::sop::snapshot::Snapshots::new(
                    &config.state_dir,
                    crate::sop::snapshot::Retention {
                        keep: config.snapshot_keep,
                        max_age: Duration::from_secs(config.snapshot_max_age_days * 86_400),
                    },
                ),
            },
            Timeouts {
                task: Duration::from_secs(config.task_timeout_secs),
                gate: Duration::from_secs(config.gate_timeout_secs),
                stale: Duration::from_secs(config.stale_after_secs),
            },
        );
        let used_tokens = UsedTokens::open(config.state_dir.join("used-tokens")).map_err(|e| {
            anyhow::anyhow!(
                "cannot read {}: {e}",
                config.state_dir.join("used-tokens").display()
            )
        })?;
        Ok(Arc::new(Self {
            registry,
            ca,
            used_tokens,
            etcd,
            runner,
            config,
            stopping: tokio::sync::watch::Sender::new(false),
            enroll_buckets: IpBuckets::new(ENROLL_BURST, ENROLL_PER_SEC),
            enroll_log: LogLimit::new(20, Duration::from_secs(10)),
            deny,
            leadership,
        }))
    }

    /// Refuses a plan that touches a host whose deferred cleanup has not run (the host must
    /// not rejoin or take tasks before its old member is wiped), except the
    /// `member remove IP --forget` that drops it: then the pending run is returned (to abort
    /// once the new run is stored) and the plan says so.
    fn pending_cleanup_in_the_way(
        &self,
        r: &crate::sop::request::Request,
        hosts: impl IntoIterator<Item = IpAddr>,
        notes: &mut Vec<String>,
    ) -> Result<Option<String>, Status> {
        let forgetting = match r.sop {
            SopRequest::MemberRemove { host, forget: true } => Some(host),
            _ => None,
        };
        let mut dropped = None;
        for h in hosts {
            let held = self
                .runner
                .store
                .lock_holder(&crate::sop::store::host_lock(h))
                .map_err(store_status)?;
            let Some((holder, state)) = held else {
                continue;
            };
            if forgetting == Some(h) && state != run_state::RUNNING {
                notes.push(format!(
                    "the pending cleanup of {h} (run {holder}, {state}) is dropped: nothing will stop, wipe or retire etcd there"
                ));
                dropped = Some(holder);
                continue;
            }
            let what = match state.as_str() {
                run_state::RUNNING => "is running now; wait for it".to_string(),
                run_state::WAITING => format!(
                    "is waiting: it stops etcd, wipes the data dir and retires etcd there, and starts by itself when the agent on {h} connects (`quorum run show {holder}`). Start quorum-agent on {h}, or drop it with `quorum member remove {h} --forget`"
                ),
                other => format!(
                    "is {other}: see why with `quorum run show {holder}`, fix it and `quorum run resume {holder}`, or drop it with `quorum run abort {holder}`"
                ),
            };
            return Err(Status::failed_precondition(format!(
                "{h} has a pending cleanup of a member removed while its agent was unreachable: run {holder} {what}. Nothing was changed"
            )));
        }
        Ok(dropped)
    }

    /// Starts every waiting cleanup whose host's agent is connected again (called each
    /// second): its member must be wiped before anything else happens there.
    fn start_returned_cleanups(&self) {
        let ids = match self.runner.store.waiting_runs() {
            Ok(ids) => ids,
            Err(e) => {
                tracing::error!("cannot read the waiting runs: {e}");
                return;
            }
        };
        for id in ids {
            let Ok(run) = self.runner.store.get_run(&id) else {
                continue;
            };
            let host = serde_json::from_str::<crate::sop::runner::RunContext>(&run.context)
                .ok()
                .and_then(|c| match c.request {
                    Some(SopRequest::HostCleanup { host, .. }) => Some(host),
                    _ => None,
                });
            let Some(host) = host else {
                tracing::error!(run = %id, "a waiting run names no host; abort it with `quorum run abort {id}`");
                continue;
            };
            let back = matches!(
                self.registry.state(host),
                Some(AgentState::Connected | AgentState::Idle)
            ) && self.registry.facts(host).is_some()
                && self.registry.silent_since(host).is_none();
            if !back {
                continue;
            }
            tracing::info!(run = %id, %host, "the agent on {host} is back: its pending cleanup starts");
            if let Err(e) = self.runner.store.set_run_state(&id, run_state::RUNNING, "") {
                tracing::error!(run = %id, "cannot start the pending cleanup: {e}");
                continue;
            }
            self.runner.start(id);
        }
    }

    fn td(&self) -> &str {
        &self.config.trust_domain
    }

    /// Closes a task with an agent's report (from `Report` or a session).
    fn take_report(&self, ip: IpAddr, r: pb::ReportRequest) {
        let result = pb::TaskResult {
            task_id: r.task_id,
            outcome: r.outcome,
            output: r.output,
            agent_id: ip.to_string(),
            journal: r.journal,
        };
        if !self.registry.report(ip, result, r.facts) {
            // A duplicate report of a closed task is harmless: acknowledge it.
            tracing::debug!(agent = %ip, "report for a task not in flight");
        }
    }

    /// Signs an agent's CSR for the host its one-time token names, if the caller's IP has
    /// not used up its enrollment attempts.
    fn enroll(
        &self,
        peer: Option<std::net::SocketAddr>,
        body: pb::EnrollRequest,
    ) -> Result<pb::EnrollResponse, Status> {
        let ip = peer.map_or(IpAddr::from([0, 0, 0, 0]), |p| p.ip());
        if let Err(wait) = self.enroll_buckets.take(ip) {
            return Err(Status::resource_exhausted(format!(
                "too many enrollment attempts from {ip} (at most {} at once, then {} a second); retry in {} s with a valid token from `quorum pki token --host IP`",
                self.enroll_buckets.burst(),
                self.enroll_buckets.per_sec(),
                wait.as_secs().max(1)
            )));
        }
        let ca = self.ca.as_ref().ok_or_else(|| {
            Status::failed_precondition(
                "this coordinator has no CA key configured (tls.ca_key), so it cannot enroll hosts; issue the agent certificate with `quorum pki issue agent` instead",
            )
        })?;
        let claims = ca
            .verify_token(&body.token)
            .map_err(|e| Status::permission_denied(e.to_string()))?;
        let shared = self.runner.store.is_shared();
        let used = if shared {
            self.runner
                .store
                .token_used(&claims.nonce)
                .map_err(store_status)?
        } else {
            self.used_tokens.is_used(&claims.nonce)
        };
        if used {
            return Err(Status::permission_denied(
                "enrollment token refused: it was already used (tokens work once); mint a new one with `quorum pki token --host IP`",
            ));
        }
        let cert_pem = ca
            .sign_agent_csr(&body.csr_pem, claims.host, self.config.agent_cert_ttl())
            .map_err(|e| Status::permission_denied(e.to_string()))?;
        // On the shared store a token is used once across every coordinator.
        let marked = if shared {
            self.runner
                .store
                .use_token(&claims.nonce, claims.exp)
                .map_err(|e| std::io::Error::other(e.to_string()))
        } else {
            self.used_tokens.mark(&claims.nonce, claims.exp)
        };
        match marked {
            Ok(true) => {}
            Ok(false) => {
                return Err(Status::permission_denied(
                    "enrollment token refused: it was already used (tokens work once)",
                ))
            }
            Err(e) => {
                return Err(Status::internal(format!(
                    "cannot record the used token in the state dir: {e}"
                )))
            }
        }
        self.supersede_enrollment(claims.host, &cert_pem)?;
        tracing::info!(host = %claims.host, "enrolled agent");
        Ok(pb::EnrollResponse {
            cert_pem,
            ca_pem: ca.cert_pem().to_string(),
        })
    }

    /// Records the certificate just issued to `host` at enrollment and revokes the ones
    /// issued to it before: a host has one enrolled certificate, and an old copy of its key (a
    /// backup, a decommissioned disk) stops working the moment it enrolls again.
    fn supersede_enrollment(&self, host: IpAddr, cert_pem: &str) -> Result<(), Status> {
        let spent = |what: String| {
            Status::internal(format!(
                "{what}; the token is spent: mint a new one with `quorum pki token --host {host}` and enroll again once the state dir is writable"
            ))
        };
        let issued = issued_of(cert_pem.as_bytes()).map_err(spent)?;
        let superseded = self
            .runner
            .store
            .record_enrollment(host, &issued, crate::daemon::revocation::SUPERSEDED)
            .map_err(|e| spent(format!("cannot record the enrollment: {e}")))?;
        for old in superseded {
            tracing::info!(%host, serial = %old.serial, "revoked a certificate of the host's previous enrollment");
            self.deny.add(old);
        }
        Ok(())
    }

    /// Signs a new certificate for the agent `ip` calling with the certificate `caller`
    /// (checked: not revoked, the host's own). The caller's certificate is revoked once a
    /// session opens with the new one ([`Coordinator::took_up`]).
    fn renew(
        &self,
        ip: IpAddr,
        caller: crate::sop::store::Issued,
        csr_pem: &str,
    ) -> Result<pb::EnrollResponse, Status> {
        if let Err(wait) = self.enroll_buckets.take(ip) {
            return Err(Status::resource_exhausted(format!(
                "too many enrollments and renewals from {ip}; retry in {} s",
                wait.as_secs().max(1)
            )));
        }
        let ca = self.ca.as_ref().ok_or_else(|| {
            Status::failed_precondition(
                "this coordinator has no CA key configured (tls.ca_key), so it cannot renew certificates; the agent keeps its certificate until it expires: configure tls.ca_key, or issue a new certificate with `quorum pki issue agent` before then",
            )
        })?;
        let cert_pem = ca
            .sign_agent_csr(csr_pem, ip, self.config.agent_cert_ttl())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let issued = issued_of(cert_pem.as_bytes()).map_err(Status::internal)?;
        let revoked = self
            .runner
            .store
            .record_renewal(ip, &caller, &issued)
            .map_err(|e| {
                Status::internal(format!(
                    "cannot record the renewal: {e}; the current certificate stays valid, the agent retries"
                ))
            })?;
        for old in revoked {
            tracing::info!(host = %ip, serial = %old.serial, "revoked a renewed certificate its agent never used");
            self.deny.add(old);
        }
        crate::model::metrics::metrics().cert_renewed();
        tracing::info!(host = %ip, old = %caller.serial, new = %issued.serial, not_after = issued.not_after_unix, "renewed agent certificate");
        Ok(pb::EnrollResponse {
            cert_pem,
            ca_pem: ca.cert_pem().to_string(),
        })
    }

    /// Tasks leave for an agent only while this coordinator's lease holds, each stamped with
    /// its epoch (the agent refuses an epoch below the highest it has seen).
    fn hand_out(&self, mut tasks: Vec<pb::Task>) -> Result<Vec<pb::Task>, Status> {
        self.leadership.check().map_err(|why| {
            Status::unavailable(format!(
                "this coordinator stopped dispatching: {why}; agents look for the leader among the coordinators they know"
            ))
        })?;
        let epoch = u64::try_from(self.leadership.epoch()).unwrap_or(0);
        let holder = self.runner.store.holder();
        for t in &mut tasks {
            t.epoch = epoch;
            t.epoch_holder.clone_from(&holder);
        }
        Ok(tasks)
    }

    /// Agent `ip` has taken tasks up to epoch `highest`. Above ours: a coordinator on the
    /// shared store was fenced by a newer leader and steps down; one on its own SQLite store
    /// (one coordinator, or `serve --standalone`) moves its epoch above it.
    fn agent_epoch(&self, ip: IpAddr, highest: u64) -> Result<(), Status> {
        let ours = self.leadership.epoch();
        let Ok(highest) = i64::try_from(highest) else {
            return Err(Status::invalid_argument(format!(
                "agent {ip} reports epoch {highest}, out of range"
            )));
        };
        if highest <= ours {
            return Ok(());
        }
        let store = &self.runner.store;
        if store.is_shared() {
            let why = format!(
                "agent {ip} has taken tasks from epoch {highest}, above this coordinator's {ours}: a newer coordinator holds the lease"
            );
            self.leadership.lose(why.clone());
            return Err(Status::unavailable(why));
        }
        let epoch = store
            .take_local_epoch(&store.holder(), highest)
            .map_err(store_status)?;
        self.leadership.set_epoch(epoch);
        crate::model::metrics::metrics().set_epoch(epoch, false);
        tracing::warn!(
            agent = %ip,
            agent_epoch = highest,
            epoch,
            "an agent has taken tasks from a higher epoch than this coordinator's (another coordinator, or this one's store was replaced): moved to epoch {epoch}"
        );
        Ok(())
    }

    /// Agent `ip` opened a session with the certificate `serial`: if a renewal issued it, the
    /// certificate it replaced is revoked now.
    fn took_up(&self, ip: IpAddr, serial: &str) {
        match self.runner.store.take_up(ip, serial) {
            Ok(Some(old)) => {
                tracing::info!(host = %ip, serial = %old.serial, "revoked the certificate a renewal replaced");
                self.deny.add(old);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(
                host = %ip,
                "cannot record that the agent uses its renewed certificate: {e}; the one it replaced stays valid until it expires or the next session records it"
            ),
        }
    }

    /// Whether an agent certificate valid `(not_before, not_after)` lives far longer than
    /// `agent_cert_ttl` (issued before the lifetime was shortened): then the seconds within
    /// which its agent should renew it (a tenth of the lifetime, at most ten minutes, so a
    /// fleet upgraded at once renews spread out), else 0. Never without a CA key to sign with.
    fn renewal_due_now(&self, (not_before, not_after): (i64, i64)) -> u32 {
        let ttl = i64::try_from(self.config.agent_cert_ttl().as_secs()).unwrap_or(i64::MAX / 4);
        if self.ca.is_none() || not_after - not_before <= ttl.saturating_mul(3) / 2 + 600 {
            return 0;
        }
        u32::try_from((ttl / 10).clamp(1, 600)).unwrap_or(600)
    }

    /// Drops revocations of certificates long expired (refused by their expiry alone), from
    /// the store and the deny list.
    fn prune_revocations(&self) {
        let now = quorum_proto::tls::unix_now();
        match self.runner.store.prune_revocations(now) {
            Ok(n) => {
                let dropped = self.deny.prune(now);
                if n > 0 || dropped > 0 {
                    tracing::info!(
                        store = n,
                        memory = dropped,
                        "dropped revocations of certificates that expired over a day ago"
                    );
                }
            }
            Err(e) => {
                tracing::warn!("cannot prune the deny list: {e}; it is tried again in an hour")
            }
        }
    }

    /// Puts `serial` on the deny list (the store first, so a restart keeps it; then memory,
    /// which ends its open session). A serial revoked before keeps its first record.
    fn revoke_serial(
        &self,
        serial: &str,
        subject: String,
        reason: String,
    ) -> Result<crate::sop::store::Revocation, StoreError> {
        // Its expiry, where known, lets the revocation be dropped once it no longer matters.
        let not_after_unix = match self.runner.store.not_after_of(serial)? {
            Some(t) => t,
            None => self.registry.cert_not_after_of(serial).unwrap_or(0),
        };
        let stored = self.runner.store.revoke(&crate::sop::store::Revocation {
            serial: serial.to_string(),
            subject,
            reason,
            revoked_unix: crate::sop::store::now_ms() / 1000,
            not_after_unix,
        })?;
        self.deny.add(stored.clone());
        Ok(stored)
    }

    /// The serials `Revoke` targets, each with whose it is.
    fn revoke_targets(
        &self,
        target: Option<pb::revoke_request::Target>,
    ) -> Result<Vec<(String, String)>, Status> {
        use pb::revoke_request::Target;
        match target {
            None => Err(Status::invalid_argument(
                "name what to revoke: an agent's IP (`quorum agents revoke IP`) or a serial (`quorum pki revoke --serial HEX`)",
            )),
            Some(Target::AgentIp(ip)) => {
                let ip: IpAddr = ip.trim().parse().map_err(|_| {
                    Status::invalid_argument(format!("{ip:?} is not an IP address; name the agent by its host IP (see `quorum agents`)"))
                })?;
                let mut serials = Vec::new();
                // The host's last certificate, the one a renewal replaced if the agent has not
                // used the new one yet (still valid until then), and its session's.
                let enrolled = self
                    .runner
                    .store
                    .enrollment(ip)
                    .map_err(store_status)?
                    .map(|e| [e.serial, e.previous])
                    .unwrap_or_default();
                for serial in enrolled
                    .into_iter()
                    .filter(|s| !s.is_empty())
                    .chain(self.registry.cert_serial(ip))
                {
                    if !serials.contains(&serial) {
                        serials.push(serial);
                    }
                }
                if serials.is_empty() {
                    return Err(Status::not_found(format!(
                        "no certificate is known for agent {ip}: it did not enroll with this coordinator and has not connected since the coordinator started; revoke its certificate by serial (`openssl x509 -noout -serial -in agent.crt`, then `quorum pki revoke --serial HEX`). Nothing was revoked"
                    )));
                }
                Ok(serials.into_iter().map(|s| (s, format!("agent {ip}"))).collect())
            }
            Some(Target::Serial(given)) => {
                let serial = quorum_proto::identity::normalize_serial(&given).ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "{given:?} is not a hex serial number; read one with `openssl x509 -noout -serial -in CERT`. Nothing was revoked"
                    ))
                })?;
                let subject = match self.runner.store.enrolled_host(&serial).map_err(store_status)? {
                    Some(host) => format!("agent {host}"),
                    None => self
                        .registry
                        .list()
                        .into_iter()
                        .find(|a| a.cert_serial == serial)
                        .map(|a| format!("agent {}", a.agent_id))
                        .unwrap_or_default(),
                };
                Ok(vec![(serial, subject)])
            }
        }
    }

    /// Queues `task` for each of `ips` (ids `<task id or a new one>-<ip>`) and streams each
    /// report as it arrives; an agent that does not report within `timeout_secs` (0: the
    /// configured default) gets a failed result of its own, never the end of the stream.
    fn fan_out(
        &self,
        ips: Vec<IpAddr>,
        task: pb::Task,
        timeout_secs: u32,
    ) -> <AdminSvc as AdminService>::RunTasksStream {
        let base = if task.id.is_empty() {
            crate::clients::registry::new_task_id()
        } else {
            task.id.clone()
        };
        let secs = if timeout_secs == 0 {
            self.config.task_timeout_secs
        } else {
            u64::from(timeout_secs)
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        let (tx, rx) = tokio::sync::mpsc::channel(ips.len().clamp(1, 1024));
        for ip in ips {
            let mut t = task.clone();
            t.id = format!("{base}-{ip}");
            let id = t.id.clone();
            let wait = self.registry.queue(ip, t);
            let registry = self.registry.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                // One agent's failure is its own result, never the end of the stream.
                let failed = |output: String| pb::TaskResult {
                    task_id: id.clone(),
                    outcome: pb::Outcome::Failed as i32,
                    output,
                    agent_id: ip.to_string(),
                    journal: None,
                };
                let answer = match tokio::time::timeout_at(deadline, wait).await {
                    Ok(Ok(mut result)) => {
                        result.agent_id = ip.to_string();
                        result
                    }
                    Ok(Err(_)) => failed(format!("task {id} on {ip} was cancelled")),
                    Err(_) => {
                        registry.cancel(ip, &id);
                        failed(format!(
                            "agent {ip} did not report task {id} within {secs} s; check the agent's log"
                        ))
                    }
                };
                let _ = tx.send(Ok(answer)).await;
            });
        }
        Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
    }

    /// The agent `agent_id` names, if it can take an ad-hoc task now (connected or idle).
    fn live_agent(&self, agent_id: &str) -> Result<IpAddr, Status> {
        let ip: IpAddr = agent_id.parse().map_err(|_| {
            Status::invalid_argument(format!("agent_id {agent_id:?} is not an IP address"))
        })?;
        match self.registry.state(ip) {
            None => Err(Status::not_found(format!(
                "no agent {ip} has connected; start quorum-agent on that host (see `quorum agents`); no task was queued"
            ))),
            Some(AgentState::Stale) => Err(Status::failed_precondition(format!(
                "agent {ip} is stale (no poll for over {} s); check quorum-agent on that host; no task was queued",
                self.config.stale_after_secs
            ))),
            Some(_) => Ok(ip),
        }
    }
}

/// An ad-hoc task as given, if it is one of the closed task set.
fn given_task(task: Option<pb::Task>) -> Result<pb::Task, Status> {
    let task = task.ok_or_else(|| Status::invalid_argument("no task given"))?;
    if task.kind.is_none() {
        return Err(Status::invalid_argument(
            "the task has no kind from the closed task set",
        ));
    }
    Ok(task)
}

/// The agent-facing service.
#[derive(Clone)]
pub struct AgentSvc(pub Arc<Coordinator>);

#[tonic::async_trait]
impl AgentService for AgentSvc {
    async fn enroll(
        &self,
        req: Request<pb::EnrollRequest>,
    ) -> Result<Response<pb::EnrollResponse>, Status> {
        let peer = req.remote_addr();
        let result = self.0.enroll(peer, req.into_inner());
        if let Err(status) = &result {
            if let Some(more) = self.0.enroll_log.admit() {
                let peer = peer.map_or_else(|| "an unknown address".into(), |p| p.to_string());
                tracing::warn!(
                    %peer,
                    "enrollment refused ({:?}): {}{more}",
                    status.code(),
                    status.message()
                );
            }
        }
        result.map(Response::new)
    }

    async fn poll(
        &self,
        req: Request<pb::PollRequest>,
    ) -> Result<Response<pb::PollResponse>, Status> {
        let (ip, serial) = agent_peer(&req, &self.0)?;
        same_agent(ip, &req.get_ref().agent_id)?;
        let pb::PollRequest {
            facts,
            highest_epoch,
            ..
        } = req.into_inner();
        self.0.agent_epoch(ip, highest_epoch)?;
        let hold = Duration::from_secs(self.0.config.poll_hold_secs);
        // A held poll ends at once when its certificate is revoked meanwhile.
        let mut revocations = self.0.deny.subscribe();
        tokio::select! {
            tasks = self.0.registry.poll(ip, facts, hold) => Ok(Response::new(pb::PollResponse { tasks: self.0.hand_out(tasks)?, renew_within_secs: 0 })),
            r = self.0.deny.revoked(&serial, &mut revocations) => {
                Err(crate::daemon::revocation::refusal(&Peer::Agent(ip), &r))
            }
        }
    }

    async fn report(
        &self,
        req: Request<pb::ReportRequest>,
    ) -> Result<Response<pb::ReportResponse>, Status> {
        let ip = authorize_agent(&req, &self.0, &req.get_ref().agent_id)?;
        self.0.take_report(ip, req.into_inner());
        Ok(Response::new(pb::ReportResponse {}))
    }

    async fn renew(
        &self,
        req: Request<pb::RenewRequest>,
    ) -> Result<Response<pb::EnrollResponse>, Status> {
        let (ip, serial) = agent_peer(&req, &self.0)?;
        let not_after_unix = peer_validity(&req).map_or(0, |(_, not_after)| not_after);
        let caller = crate::sop::store::Issued {
            serial,
            not_after_unix,
        };
        let result = self.0.renew(ip, caller, &req.get_ref().csr_pem);
        if let Err(status) = &result {
            tracing::warn!(host = %ip, "renewal refused ({:?}): {}", status.code(), status.message());
        }
        result.map(Response::new)
    }

    type SessionStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<pb::PollResponse, Status>> + Send + 'static>,
    >;

    async fn session(
        &self,
        req: Request<tonic::Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        // Subscribed before the check, so a revocation in between is not missed.
        let revocations = self.0.deny.subscribe();
        let (ip, serial) = agent_peer(&req, &self.0)?;
        let validity = peer_validity(&req);
        if let Some(validity) = validity {
            self.0.registry.certificate(ip, validity, &serial);
        }
        self.0.took_up(ip, &serial);
        // A session outlives no certificate: it ends when the one it opened with expires.
        let left = validity.map_or(i64::MAX / 4, |(_, na)| na - quorum_proto::tls::unix_now());
        let renew_within_secs = validity.map_or(0, |v| self.0.renewal_due_now(v));
        if renew_within_secs > 0 {
            tracing::info!(agent = %ip, %serial, "the agent's certificate outlives agent_cert_ttl: asking it to renew within {renew_within_secs} s");
        }
        let session = Session {
            renew_within_secs,
            expires: tokio::time::Instant::now()
                + Duration::from_secs(u64::try_from(left).unwrap_or(0).min(100 * 365 * 86_400)),
            serial,
            revocations,
            stopping: self.0.stopping.subscribe(),
            c: self.0.clone(),
            ip,
            inbound: req.into_inner(),
        };
        // The response body drives the session: no task or channel of its own per agent
        // (10,000 sessions live for as long as their agents).
        let answers = futures_util::stream::unfold(Some(session), |session| async move {
            let mut session = session?;
            match session.next_answer().await {
                Ok(tasks) => {
                    // Asked once, on the session's first answer.
                    let renew_within_secs = std::mem::take(&mut session.renew_within_secs);
                    Some((
                        Ok(pb::PollResponse {
                            tasks,
                            renew_within_secs,
                        }),
                        Some(session),
                    ))
                }
                Err(Some(why)) => {
                    tracing::debug!(agent = %session.ip, "session ended: {}", why.message());
                    Some((Err(why), None))
                }
                Err(None) => None,
            }
        });
        Ok(Response::new(Box::pin(answers)))
    }
}

/// One agent's session: each poll is held in the registry exactly as a unary `Poll` is and
/// answered with one `PollResponse`; each report closes its task as a unary `Report` does. The
/// session ends when the agent closes its side, breaks the protocol, its certificate is
/// revoked, or the coordinator stops.
struct Session {
    c: Arc<Coordinator>,
    ip: IpAddr,
    /// The serial of the agent's certificate, watched on the deny list.
    serial: String,
    /// When that certificate expires.
    expires: tokio::time::Instant,
    /// Sent with the first answer: renew within this many seconds (0: no need).
    renew_within_secs: u32,
    revocations: tokio::sync::watch::Receiver<u64>,
    inbound: tonic::Streaming<pb::AgentMessage>,
    stopping: tokio::sync::watch::Receiver<bool>,
}

impl Session {
    /// Reads the agent's messages until a poll is answered: its tasks. `Err` ends the session,
    /// with the status to send, or with none when the agent is gone.
    async fn next_answer(&mut self) -> Result<Vec<pb::Task>, Option<Status>> {
        use pb::agent_message::Kind;
        let hold = Duration::from_secs(self.c.config.poll_hold_secs);
        loop {
            let message = tokio::select! {
                _ = self.stopping.wait_for(|s| *s) => return Err(Some(stopping_status())),
                r = self.c.deny.revoked(&self.serial, &mut self.revocations) => {
                    return Err(Some(revoked_session(self.ip, &r)))
                }
                _ = tokio::time::sleep_until(self.expires) => return Err(Some(expired_session(self.ip))),
                m = self.inbound.message() => m,
            };
            // None: the agent closed its side (it is stopping) or the connection broke.
            let kind = message.ok().flatten().ok_or(None)?.kind;
            match kind {
                Some(Kind::Report(r)) => {
                    same_agent(self.ip, &r.agent_id).map_err(Some)?;
                    self.c.take_report(self.ip, r);
                }
                Some(Kind::Poll(p)) => {
                    same_agent(self.ip, &p.agent_id).map_err(Some)?;
                    self.c.agent_epoch(self.ip, p.highest_epoch).map_err(Some)?;
                    // Hold the poll while watching the stream: a closed stream ends it (the
                    // registry then counts the agent as between polls, then stale). Tasks
                    // handed out stay in flight until reported: if the answer never reaches
                    // the agent, its next poll gets them again.
                    return tokio::select! {
                        tasks = self.c.registry.poll(self.ip, p.facts, hold) => self.c.hand_out(tasks).map_err(Some),
                        _ = self.stopping.wait_for(|s| *s) => Err(Some(stopping_status())),
                        r = self.c.deny.revoked(&self.serial, &mut self.revocations) => {
                            Err(Some(revoked_session(self.ip, &r)))
                        }
                        _ = tokio::time::sleep_until(self.expires) => Err(Some(expired_session(self.ip))),
                        m = self.inbound.message() => match m {
                            Ok(Some(_)) => Err(Some(Status::failed_precondition(
                                "the agent sent a message while its poll was held; a session agent waits for the answer to each poll (is this a Quorum agent?)",
                            ))),
                            Ok(None) | Err(_) => Err(None),
                        },
                    };
                }
                None => return Err(Some(Status::invalid_argument(
                    "a session message with neither a poll nor a report; is this a Quorum agent?",
                ))),
            }
        }
    }
}

/// The end of the session of agent `ip` whose certificate was revoked, logged: it is cut off.
fn revoked_session(ip: IpAddr, r: &crate::sop::store::Revocation) -> Status {
    tracing::warn!(agent = %ip, serial = %r.serial, reason = %r.reason, "closed the session of a revoked certificate");
    crate::daemon::revocation::refusal(&Peer::Agent(ip), r)
}

fn expired_session(ip: IpAddr) -> Status {
    tracing::warn!(agent = %ip, "closed the session of an agent whose certificate expired meanwhile (it did not renew)");
    Status::unauthenticated(format!(
        "the certificate of agent {ip} expired during its session; it renews at 60-75 % of its lifetime, so it could not reach the coordinator or its renewals were refused (see its log): enroll it again with a token (`quorum pki token --host {ip}`, then `quorum-agent enroll` on {ip})"
    ))
}

fn stopping_status() -> Status {
    Status::unavailable("the coordinator is stopping; the agent reconnects by itself")
}

/// The operator-facing service.
#[derive(Clone)]
pub struct AdminSvc(pub Arc<Coordinator>);

#[tonic::async_trait]
impl AdminService for AdminSvc {
    async fn list_agents(
        &self,
        req: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        authorize_admin(&req, &self.0)?;
        let mut agents = self.0.registry.list();
        for a in &mut agents {
            let Ok(ip) = a.agent_id.parse::<IpAddr>() else {
                continue;
            };
            // Counted since the last enrollment, and only while the agent still holds the
            // certificate the store recorded last.
            if let Ok(Some(e)) = self.0.runner.store.enrollment(ip) {
                if e.serial == a.cert_serial {
                    a.cert_renewals = u32::try_from(e.renewals).unwrap_or(u32::MAX);
                }
            }
        }
        Ok(Response::new(pb::ListAgentsResponse { agents }))
    }

    async fn run_task(
        &self,
        req: Request<pb::RunTaskRequest>,
    ) -> Result<Response<pb::TaskResult>, Status> {
        let admin = authorize_admin(&req, &self.0)?;
        let r = req.into_inner();
        let mut task = given_task(r.task)?;
        if let Some(kind) = &task.kind {
            adhoc::require_confirmation(kind, r.confirmed, &r.agent_id)?;
        }
        let ip = self.0.live_agent(&r.agent_id)?;
        if task.id.is_empty() {
            task.id = crate::clients::registry::new_task_id();
        }
        let id = task.id.clone();
        tracing::info!(%admin, agent = %ip, task = %id, "ad-hoc task");
        let rx = self.0.registry.queue(ip, task);
        let secs = if r.timeout_secs == 0 {
            self.0.config.task_timeout_secs
        } else {
            u64::from(r.timeout_secs)
        };
        match tokio::time::timeout(Duration::from_secs(secs), rx).await {
            Ok(Ok(result)) => Ok(Response::new(result)),
            Ok(Err(_)) => Err(Status::aborted(format!("task {id} was cancelled"))),
            Err(_) => {
                self.0.registry.cancel(ip, &id);
                Err(Status::deadline_exceeded(format!(
                    "agent {ip} did not report task {id} within {secs} s; check the agent's log"
                )))
            }
        }
    }

    type RunTasksStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<pb::TaskResult, Status>> + Send + 'static>,
    >;

    async fn run_tasks(
        &self,
        req: Request<pb::RunTasksRequest>,
    ) -> Result<Response<Self::RunTasksStream>, Status> {
        let admin = authorize_admin(&req, &self.0)?;
        let r = req.into_inner();
        let task = given_task(r.task)?;
        if let Some(kind) = &task.kind {
            adhoc::require_confirmation(kind, r.confirmed, &r.agent_ids.join(", "))?;
        }
        let ips = r
            .agent_ids
            .iter()
            .map(|a| self.0.live_agent(a))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(kind) = &task.kind {
            // Only a fan-out that could take members down needs the inventory.
            if adhoc::needs_fan_out_guard(kind, &ips) {
                let inv = crate::sop::planning::load_inventory(&self.0.config.inventory)
                    .await
                    .map_err(|s| s.message().to_string());
                adhoc::fan_out_guard(kind, &ips, inv.as_ref().map_err(Clone::clone))?;
            }
        }
        tracing::info!(%admin, agents = ips.len(), "ad-hoc fan-out");
        Ok(Response::new(self.0.fan_out(ips, task, r.timeout_secs)))
    }

    type MonitoringStream = Self::RunTasksStream;

    async fn monitoring(
        &self,
        req: Request<pb::MonitoringRequest>,
    ) -> Result<Response<Self::MonitoringStream>, Status> {
        let admin = authorize_admin(&req, &self.0)?;
        let r = req.into_inner();
        let inv = sop::load_inventory(&self.0.config.inventory).await?;
        let (ips, task) = crate::daemon::monitoring::plan(&inv, &r, self.0.config.metrics_listen)?;
        let ips = ips
            .iter()
            .map(|ip| self.0.live_agent(&ip.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        tracing::info!(%admin, hosts = ips.len(), deregister = r.deregister, "monitoring registration");
        Ok(Response::new(self.0.fan_out(ips, task, r.timeout_secs)))
    }

    async fn start_run(
        &self,
        req: Request<pb::StartRunRequest>,
    ) -> Result<Response<pb::RunView>, Status> {
        let admin = authorize_admin(&req, &self.0)?;
        let r = crate::sop::request::Request::from_pb(req.get_ref())?;
        let c = &self.0;
        // A host re-added before its pending cleanup ran is refused for that first (its agent
        // may well be missing too, which the planner would name instead).
        if let SopRequest::MemberAdd { host, .. } = r.sop {
            c.pending_cleanup_in_the_way(&r, [host], &mut Vec::new())?;
        }
        let mut planned = sop::plan_request(&c.config.inventory, &c.registry, &c.etcd, &r).await?;
        let mut touched = std::collections::BTreeSet::new();
        for s in &planned.plan.steps {
            touched.extend(s.kind.host());
            touched.extend(s.kind.agent_hosts());
        }
        let forgotten = c.pending_cleanup_in_the_way(&r, touched, &mut planned.plan.notes)?;
        if r.plan_only {
            return Ok(Response::new(sop::plan_view(r.sop.name(), &planned)));
        }
        if !planned.plan.wipes.is_empty() && !r.confirmed {
            return Err(Status::failed_precondition(format!(
                "this run wipes {}; confirm it (the CLI asks, or pass --yes)",
                planned.plan.wipes.join(", ")
            )));
        }
        let id = sop::new_run_id();
        let record = sop::run_record(&id, r.sop.name(), &admin, &planned)?;
        c.runner.store.create_run(&record).map_err(store_status)?;
        if let (Some(pending), SopRequest::MemberRemove { host, .. }) = (forgotten, &r.sop) {
            let why = format!(
                "dropped by {admin} with `quorum member remove {host} --forget` (run {id})"
            );
            tracing::warn!(run = %pending, %admin, "pending cleanup dropped: {why}");
            c.runner
                .store
                .set_run_state(&pending, run_state::ABORTED, &why)
                .map_err(store_status)?;
        }
        tracing::info!(run = %id, sop = %r.sop.name(), cluster = %record.cluster, %admin, "run started");
        c.runner.start(id.clone());
        let run = c.runner.store.get_run(&id).map_err(store_status)?;
        Ok(Response::new(sop::run_view(&run)))
    }

    async fn get_run(
        &self,
        req: Request<pb::GetRunRequest>,
    ) -> Result<Response<pb::RunView>, Status> {
        authorize_admin(&req, &self.0)?;
        let run = self
            .0
            .runner
            .store
            .get_run(&req.get_ref().run_id)
            .map_err(store_status)?;
        Ok(Response::new(sop::run_view(&run)))
    }

    type WatchRunStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<pb::RunView, Status>> + Send + 'static>,
    >;

    async fn watch_run(
        &self,
        req: Request<pb::GetRunRequest>,
    ) -> Result<Response<Self::WatchRunStream>, Status> {
        authorize_admin(&req, &self.0)?;
        let id = req.into_inner().run_id;
        let store = self.0.runner.store.clone();
        // Subscribed before the first read, so no write in between goes unseen.
        let changes = store.subscribe();
        // An unknown run is refused before the stream starts.
        store.get_run(&id).map_err(store_status)?;
        let watch = RunWatch {
            store,
            id,
            changes,
            stopping: self.0.stopping.subscribe(),
            last: None,
            done: false,
        };
        let views = futures_util::stream::unfold(watch, |mut w| async move {
            let item = w.next_view().await?;
            Some((item, w))
        });
        Ok(Response::new(Box::pin(views)))
    }

    async fn list_runs(
        &self,
        req: Request<pb::ListRunsRequest>,
    ) -> Result<Response<pb::ListRunsResponse>, Status> {
        authorize_admin(&req, &self.0)?;
        let limit = match req.get_ref().limit {
            0 => 50,
            n => n as usize,
        };
        let store = &self.0.runner.store;
        let mut runs = Vec::new();
        for id in store.list_runs(limit).map_err(store_status)? {
            runs.push(sop::run_view(&store.get_run(&id).map_err(store_status)?));
        }
        Ok(Response::new(pb::ListRunsResponse { runs }))
    }

    async fn resume_run(
        &self,
        req: Request<pb::GetRunRequest>,
    ) -> Result<Response<pb::RunView>, Status> {
        let admin = authorize_admin(&req, &self.0)?;
        let id = req.into_inner().run_id;
        let runner = &self.0.runner;
        let run = runner.store.get_run(&id).map_err(store_status)?;
        if runner.is_active(&id) {
            return Err(Status::failed_precondition(format!(
                "run {id} is running already"
            )));
        }
        match run.state.as_str() {
            run_state::FAILED | run_state::INTERRUPTED | run_state::RUNNING => {}
            // Bad input rather than a refusal: the run names no work left to do.
            run_state::SUCCEEDED => {
                return Err(Status::invalid_argument(format!(
                    "run {id} succeeded: there is nothing to resume (`quorum run show {id}` lists what it did)"
                )))
            }
            run_state::ABORTED => {
                return Err(Status::invalid_argument(format!(
                    "run {id} was aborted, and an abort is final: there is nothing to resume; plan the SOP again for what is left"
                )))
            }
            run_state::WAITING => {
                return Err(Status::failed_precondition(format!(
                    "run {id} waits for its host's agent and starts by itself when that agent connects; start quorum-agent there, or drop the run with `quorum run abort {id}`"
                )))
            }
            other => {
                return Err(Status::failed_precondition(format!(
                    "run {id} is {other}; only a failed or interrupted run can be resumed"
                )))
            }
        }
        tracing::info!(run = %id, %admin, "run resumed");
        runner
            .store
            .set_run_state(&id, run_state::RUNNING, "")
            .map_err(store_status)?;
        runner.start(id.clone());
        let run = runner.store.get_run(&id).map_err(store_status)?;
        Ok(Response::new(sop::run_view(&run)))
    }

    async fn abort_run(
        &self,
        req: Request<pb::GetRunRequest>,
    ) -> Result<Response<pb::RunView>, Status> {
        let admin = authorize_admin(&req, &self.0)?;
        let id = req.into_inner().run_id;
        let store = &self.0.runner.store;
        let run = store.get_run(&id).map_err(store_status)?;
        if matches!(
            run.state.as_str(),
            run_state::SUCCEEDED | run_state::ABORTED
        ) {
            return Err(Status::failed_precondition(format!(
                "run {id} is {} already",
                run.state
            )));
        }
        tracing::info!(run = %id, %admin, "run aborted");
        store
            .set_run_state(&id, run_state::ABORTED, &format!("aborted by {admin}"))
            .map_err(store_status)?;
        Ok(Response::new(sop::run_view(
            &store.get_run(&id).map_err(store_status)?,
        )))
    }

    async fn snapshot(
        &self,
        req: Request<pb::SnapshotRequest>,
    ) -> Result<Response<pb::SnapshotResponse>, Status> {
        let admin = authorize_admin(&req, &self.0)?;
        let c = &self.0;
        crate::sop::snapshot::answer(
            req.into_inner(),
            &c.config,
            &c.etcd,
            &c.runner.snapshots,
            &admin,
        )
        .await
        .map(Response::new)
    }

    async fn cluster_status(
        &self,
        req: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        self.cluster_status_of(req).await
    }

    async fn revoke(
        &self,
        req: Request<pb::RevokeRequest>,
    ) -> Result<Response<pb::RevokeResponse>, Status> {
        let admin = authorize_admin(&req, &self.0)?;
        let r = req.into_inner();
        let reason = match r.reason.trim() {
            "" => format!("revoked by {admin}"),
            given => format!("{given}, revoked by {admin}"),
        };
        let mut revoked = Vec::new();
        for (serial, subject) in self.0.revoke_targets(r.target)? {
            let stored = self
                .0
                .revoke_serial(&serial, subject, reason.clone())
                .map_err(store_status)?;
            tracing::warn!(serial = %stored.serial, subject = %stored.subject, reason = %stored.reason, %admin, "certificate revoked");
            revoked.push(pb::RevokedCertificate {
                serial: stored.serial,
                subject: stored.subject,
                reason: stored.reason,
                revoked_unix: stored.revoked_unix,
            });
        }
        Ok(Response::new(pb::RevokeResponse { revoked }))
    }

    async fn crl(&self, req: Request<pb::CrlRequest>) -> Result<Response<pb::CrlResponse>, Status> {
        authorize_admin(&req, &self.0)?;
        let ca = self.0.ca.as_ref().ok_or_else(|| {
            Status::failed_precondition(
                "this coordinator has no CA key configured (tls.ca_key), so it cannot sign a CRL; set tls.ca_key in the coordinator config",
            )
        })?;
        let list: Vec<(String, i64)> = self
            .0
            .runner
            .store
            .revocations()
            .map_err(store_status)?
            .into_iter()
            .map(|r| (r.serial, r.revoked_unix))
            .collect();
        let pem = ca.crl(&list).map_err(|e| match e {
            crate::model::pki::PkiError::BadCa { .. } | crate::model::pki::PkiError::Usage(_) => {
                Status::failed_precondition(e.to_string())
            }
            other => Status::internal(other.to_string()),
        })?;
        Ok(Response::new(pb::CrlResponse {
            pem,
            entries: list.len() as u32,
        }))
    }
}

impl AdminSvc {
    /// `ClusterStatus`, answered by [`crate::sop::status`].
    async fn cluster_status_of(
        &self,
        req: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        authorize_admin(&req, &self.0)?;
        let c = &self.0;
        let status = crate::sop::status::cluster_status(
            &c.config.inventory,
            &c.registry,
            &c.etcd,
            req.into_inner(),
        )
        .await?;
        Ok(Response::new(status))
    }
}

/// One follower of a run (`WatchRun`): sends the run when it differs from what was last sent,
/// waits for the store's next write otherwise, and ends after a view in an end state.
struct RunWatch {
    store: Arc<Store>,
    id: String,
    changes: tokio::sync::watch::Receiver<u64>,
    stopping: tokio::sync::watch::Receiver<bool>,
    /// The last view sent, without its clock.
    last: Option<pb::RunView>,
    done: bool,
}

impl RunWatch {
    /// The next item of the stream; `None` ends it.
    async fn next_view(&mut self) -> Option<Result<pb::RunView, Status>> {
        if self.done {
            return None;
        }
        loop {
            let run = match self.store.get_run(&self.id) {
                Ok(run) => run,
                Err(e) => {
                    self.done = true;
                    return Some(Err(store_status(e)));
                }
            };
            let mut view = sop::run_view(&run);
            view.now_unix_ms = 0;
            if self.last.as_ref() != Some(&view) {
                self.done = matches!(
                    run.state.as_str(),
                    run_state::SUCCEEDED
                        | run_state::FAILED
                        | run_state::ABORTED
                        | run_state::INTERRUPTED
                );
                self.last = Some(view.clone());
                view.now_unix_ms = crate::sop::store::now_ms();
                return Some(Ok(view));
            }
            let stopping = tokio::select! {
                changed = self.changes.changed() => changed.is_err(),
                _ = self.stopping.wait_for(|s| *s) => true,
            };
            if stopping {
                self.done = true;
                return Some(Err(Status::unavailable(format!(
                    "the coordinator is stopping: run {id} stops with it and is left interrupted; once it is back, see `quorum run list` and continue with `quorum run resume {id}`",
                    id = self.id
                ))));
            }
        }
    }
}

fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::Fenced { .. } => Status::unavailable(e.to_string()),
        StoreError::Locked { .. } => Status::failed_precondition(e.to_string()),
        StoreError::NoRun(_) => Status::not_found(e.to_string()),
        other => Status::internal(other.to_string()),
    }
}

/// Agents and the CLI accept a server only if its certificate names the coordinator role; say
/// so at start if ours does not (an etcd member's certificate given as tls.cert, say).
fn warn_unless_coordinator(config: &CoordinatorConfig, tls: &TlsMaterial) {
    let Some(der) = quorum_proto::tls::first_cert_der(&tls.cert_pem) else {
        return;
    };
    match peer_from_der(der.as_ref(), &config.trust_domain) {
        Ok(Peer::Coordinator) => {}
        Ok(other) => tracing::warn!(
            "tls.cert {} is a certificate for {other}, not for the coordinator: agents and the CLI will refuse this server; issue one with `quorum pki issue coordinator --ip ...`",
            config.tls.cert.display()
        ),
        Err(e) => tracing::warn!(
            "tls.cert {}: {e}; agents and the CLI will refuse this server until it has a coordinator certificate (`quorum pki issue coordinator --ip ...`)",
            config.tls.cert.display()
        ),
    }
}

/// How often revocations of long-expired certificates are dropped.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// How often the coordinator looks at its own certificate and key on disk.
const OWN_CERT_EVERY: Duration = Duration::from_secs(5);

/// Presents a new certificate of the coordinator's from the next handshake on once
/// `tls.cert` and `tls.key` change on disk (`quorum pki issue coordinator --force`), without
/// a restart. A new pair that is expired, not for the coordinator, or whose key does not go
/// with the certificate is not used; that is logged once the files stay so for two looks
/// (`pki issue` writes the key, then the certificate).
async fn watch_own_certificate(
    config: CoordinatorConfig,
    identity: Arc<quorum_proto::tls::ServerIdentity>,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(OWN_CERT_EVERY);
    let mut refused: Option<(Vec<u8>, Vec<u8>)> = None;
    let mut reported: Option<(Vec<u8>, Vec<u8>)> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopping.wait_for(|s| *s) => return,
        }
        let (Ok(cert_pem), Ok(key_pem)) = (
            std::fs::read(&config.tls.cert),
            std::fs::read(&config.tls.key),
        ) else {
            // Being replaced, or gone: the pair in use stays, and is looked for again.
            continue;
        };
        if identity.is_current(&cert_pem, &key_pem) {
            refused = None;
            continue;
        }
        let checked = quorum_proto::tls::check_validity(&config.tls.cert, &cert_pem)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                let der = quorum_proto::tls::first_cert_der(&cert_pem)
                    .ok_or_else(|| "it holds no certificate".to_string())?;
                match peer_from_der(der.as_ref(), &config.trust_domain) {
                    Ok(Peer::Coordinator) => Ok(der),
                    Ok(other) => Err(format!(
                        "it is a certificate for {other}, not for the coordinator"
                    )),
                    Err(e) => Err(e.to_string()),
                }
            })
            .and_then(|der| {
                quorum_proto::tls::certified_key(&cert_pem, &key_pem)
                    .map(|k| (der, k))
                    .map_err(|e| e.to_string())
            });
        match checked {
            Ok((der, key)) => {
                let (not_after, serial) = (
                    quorum_proto::identity::validity_from_der(der.as_ref()).map_or(0, |v| v.1),
                    quorum_proto::identity::serial_from_der(der.as_ref()).unwrap_or_default(),
                );
                identity.replace(key, cert_pem, key_pem);
                crate::model::metrics::metrics().cert_expires(
                    "coordinator",
                    &config.tls.cert.display().to_string(),
                    not_after,
                );
                tracing::info!(
                    cert = %config.tls.cert.display(),
                    %serial,
                    not_after,
                    "the coordinator's certificate changed on disk: new connections get it from now on"
                );
                refused = None;
                reported = None;
            }
            Err(why) => {
                let pair = (cert_pem, key_pem);
                if refused.as_ref() == Some(&pair) && reported.as_ref() != Some(&pair) {
                    tracing::error!(
                        cert = %config.tls.cert.display(),
                        key = %config.tls.key.display(),
                        "the coordinator's certificate or key changed on disk but cannot be used: {why}; the previous pair stays in use: issue a new one with `quorum pki issue coordinator --ip ... --out DIR --force`"
                    );
                    reported = Some(pair.clone());
                }
                refused = Some(pair);
            }
        }
    }
}

/// How `quorum serve` was started.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServeOptions {
    /// Break-glass: the local SQLite store even when `store:` names PostgreSQL.
    pub standalone: bool,
    /// With `standalone`: start even while the shared store shows a live lease.
    pub force: bool,
}

/// Runs the daemon until SIGTERM or Ctrl-C. With a shared store it is a standby until it
/// takes the lease, then the leader until it stops or loses the lease (then the process
/// exits with [`quorum_proto::exit::Exit::SteppedDown`]).
pub async fn serve(config: CoordinatorConfig, opts: ServeOptions) -> anyhow::Result<()> {
    let tls = TlsMaterial::load(&config.tls.ca_cert, &config.tls.cert, &config.tls.key)?;
    let identity = Arc::new(quorum_proto::tls::ServerIdentity::new(
        quorum_proto::tls::certified_key(&tls.cert_pem, &tls.key_pem)?,
        tls.cert_pem.clone(),
        tls.key_pem.clone(),
    ));
    let server_tls = tls.server_config_with(identity.clone())?;
    warn_unless_coordinator(&config, &tls);
    if config.agent_cert_ttl() > Duration::from_secs(365 * 86_400) {
        tracing::warn!(
            days = config.agent_cert_ttl().as_secs() / 86_400,
            "agent certificates are signed for more than a year (agent_cert_ttl, or enroll_cert_days of an older coordinator.yml): a stolen agent key works that long; agents renew by themselves, so `agent_cert_ttl: 90d` costs nothing"
        );
    }
    let listen = config.listen;
    let limits = crate::daemon::listener::Limits {
        max_connections: config.max_connections,
        handshake_timeout: Duration::from_secs(config.tls_handshake_timeout_secs),
        anonymous_lifetime: Duration::from_secs(config.anonymous_connection_secs),
    };
    if let Some((_, not_after)) = quorum_proto::tls::first_cert_der(&tls.cert_pem)
        .and_then(|der| quorum_proto::identity::validity_from_der(&der).ok())
    {
        crate::model::metrics::metrics().cert_expires(
            "coordinator",
            &config.tls.cert.display().to_string(),
            not_after,
        );
    }
    // The state dir (created if missing) holds the SQLite store, the member certificates,
    // and on a shared store the last epoch seen.
    let changes = crate::model::statedir::prepare(&config.state_dir).map_err(|e| {
        anyhow::anyhow!(
            "cannot prepare state dir {}: {e}; set state_dir in the config to a writable directory",
            config.state_dir.display()
        )
    })?;
    for c in changes {
        tracing::warn!("{c}");
    }
    // Break-glass is checked before anything is bound or opened.
    let at_least = if opts.standalone {
        standalone_epoch(&config, opts.force).await?
    } else {
        0
    };
    // TLS is done by the listener (handshake timeout, connection cap, refusals logged), so
    // tonic gets finished TLS streams and no TLS config of its own. The relay hands the
    // connections to the standby's server first (shared store), then to the leader's. On its
    // own store the coordinator listens once it is built, as before: an open port means
    // ready.
    let bind = || async {
        let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
            anyhow::anyhow!("cannot listen on {listen}: {e}; is the address in use or not local?")
        })?;
        let incoming = crate::daemon::listener::incoming(listener, server_tls.clone(), limits);
        Ok::<_, anyhow::Error>(crate::daemon::leader::Relay::start(incoming))
    };
    let mut relay = None;
    let mut signalled = watch_signal();
    let holder = crate::sop::lease::holder_id();
    let shared = config.store.clone().filter(|_| !opts.standalone);
    let mut keep = None;
    let (store, leadership) = match shared {
        Some(sc) => {
            let target = pg_target(&config, &sc)?;
            // Settings are checked before anything waits on the database.
            target.config()?;
            let (r, first) = bind().await?;
            relay = Some(r);
            let settings = crate::daemon::leader::LeaseSettings {
                ttl: sc.lease_ttl(),
                renew_every: sc.renew_every(),
                retry: Duration::from_secs(1),
                holder: holder.clone(),
                url: config.advertise_url(),
            };
            let (seen_tx, seen_rx) = tokio::sync::watch::channel(None);
            {
                // The epochs a standby sees are noted too, for a later --standalone.
                let mut seen = seen_rx.clone();
                let config = config.clone();
                tokio::spawn(async move {
                    while seen.changed().await.is_ok() {
                        let epoch = seen.borrow_and_update().as_ref().map(|(_, e)| *e);
                        if let Some(epoch) = epoch {
                            remember_shared_epoch(&config, epoch);
                        }
                    }
                });
            }
            let (end_standby, standby_ended) = tokio::sync::oneshot::channel::<()>();
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(crate::daemon::leader::Standby::<true>::new(seen_rx.clone()))
                    .add_service(crate::daemon::leader::Standby::<false>::new(seen_rx))
                    .serve_with_incoming_shutdown(first, async move {
                        let _ = standby_ended.await;
                    }),
            );
            tracing::info!(%listen, url = %settings.url, "standby: answering calls with the leader's URL until this coordinator takes the lease");
            // PostgreSQL may be down at start (pg-meta after etcd lost quorum): wait for it
            // as a standby, which agents and the CLI get an answer from meanwhile.
            let store = loop {
                let t = target.clone();
                let opened = tokio::task::spawn_blocking(move || Store::open_postgres(&t))
                    .await
                    .map_err(|e| anyhow::anyhow!("opening the shared store failed: {e}"))?;
                match opened {
                    Ok(store) => break store,
                    Err(e @ StoreError::Config(_)) => return Err(e.into()),
                    Err(e) => tracing::warn!("standby: cannot open the shared store: {e}; trying again in 5 s (`quorum serve --standalone` runs without it)"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    _ = signalled.wait_for(|s| *s) => {
                        tracing::info!("coordinator stopped (standby)");
                        return Ok(());
                    }
                }
            };
            let won = crate::daemon::leader::campaign(&target, &settings, &seen_tx, &mut signalled)
                .await?;
            let _ = end_standby.send(());
            let Some(won) = won else {
                tracing::info!("coordinator stopped (standby)");
                return Ok(());
            };
            remember_shared_epoch(&config, won.epoch);
            store.fence_with(crate::sop::store::Fence {
                epoch: won.epoch,
                holder: holder.clone(),
            });
            let leadership = Leadership::leased(won.epoch, won.deadline);
            tracing::info!(epoch = won.epoch, holder = %holder, "took the lease of the shared store: this coordinator is the leader");
            keep = Some((won.conn, settings));
            (Arc::new(store), leadership)
        }
        None => {
            let store = Store::open(&config.state_dir.join("runs.sqlite"))?;
            let epoch = store.take_local_epoch(&holder, at_least)?;
            tracing::info!(epoch, "run store: SQLite in the state dir");
            (Arc::new(store), Leadership::unbounded(epoch))
        }
    };
    let interrupted = store.mark_interrupted()?;
    let shared = store.is_shared();
    crate::model::metrics::metrics().set_epoch(leadership.epoch(), shared);
    let coordinator = Coordinator::new(config, tls, store, leadership.clone())?;
    for id in interrupted {
        if shared {
            // A takeover: the run was walked by the leader before this one. It goes on from
            // its store record as `quorum run resume` would: an interrupted step keeps its
            // task ids (agents answer from their journals), and every guard runs again.
            tracing::warn!(run = %id, "taking over a run the previous leader was walking");
            coordinator.runner.start(id);
        } else {
            tracing::warn!(run = %id, "run was interrupted by a coordinator stop; continue it with `quorum run resume {id}`");
        }
    }
    {
        let c = coordinator.clone();
        let mut stopping = c.stopping.subscribe();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => c.start_returned_cleanups(),
                    _ = stopping.wait_for(|s| *s) => return,
                }
            }
        });
    }
    {
        let c = coordinator.clone();
        let mut stopping = c.stopping.subscribe();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PRUNE_EVERY);
            loop {
                tokio::select! {
                    _ = tick.tick() => c.prune_revocations(),
                    _ = stopping.wait_for(|s| *s) => return,
                }
            }
        });
    }
    tokio::spawn(watch_own_certificate(
        coordinator.config.clone(),
        identity,
        coordinator.stopping.subscribe(),
    ));
    let keeper = keep.map(|(conn, settings)| {
        let keeper = tokio::spawn(crate::daemon::leader::keep(
            conn,
            settings,
            leadership.clone(),
            coordinator.stopping.subscribe(),
        ));
        // The step-down: before the lease can lapse in the database, stop everything at once.
        let l = leadership.clone();
        let stopping = coordinator.stopping.subscribe();
        tokio::spawn(async move {
            let why = crate::daemon::leader::lost(&l).await;
            if *stopping.borrow() {
                return;
            }
            crate::daemon::metrics::set_ready(false);
            tracing::error!(
                epoch = l.epoch(),
                "stepping down: {why}; this coordinator dispatches nothing more and exits (code {}); started again, it is a standby",
                quorum_proto::exit::Exit::SteppedDown.code()
            );
            std::process::exit(i32::from(quorum_proto::exit::Exit::SteppedDown.code()));
        });
        keeper
    });
    // The leader's server takes the connections from now on (the relay is kept alive with
    // it); on its own store it is the first and only server.
    let (_relay, incoming) = match relay {
        Some(r) => {
            let next = r.next_server();
            (r, next)
        }
        None => bind().await?,
    };
    let agent = AgentServiceServer::new(AgentSvc(coordinator.clone()))
        .max_decoding_message_size(quorum_proto::MAX_MESSAGE_BYTES);
    let admin = AdminServiceServer::new(AdminSvc(coordinator.clone()))
        .max_decoding_message_size(quorum_proto::MAX_MESSAGE_BYTES);
    if let Some(addr) = coordinator.config.metrics_listen {
        let metrics = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on {addr} (metrics_listen in the coordinator config): {e}; is the address in use or not local?"
            )
        })?;
        tracing::info!(%addr, "serving /metrics, /healthz and /readyz (plain HTTP)");
        tokio::spawn(crate::daemon::metrics::serve(
            metrics,
            coordinator.registry.clone(),
            coordinator.runner.clone(),
        ));
    }
    tracing::info!(
        %listen,
        max_connections = limits.max_connections,
        tls_handshake_timeout = ?limits.handshake_timeout,
        "coordinator listening"
    );
    crate::daemon::metrics::set_ready(true);
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(60)))
        .http2_keepalive_timeout(Some(Duration::from_secs(5)))
        .add_service(agent)
        .add_service(admin)
        .serve_with_incoming_shutdown(incoming, {
            let coordinator = coordinator.clone();
            async move {
                let _ = signalled.wait_for(|s| *s).await;
                crate::daemon::metrics::set_ready(false);
                // Sessions last as long as their agents; end them, or the drain never finishes.
                coordinator.stopping.send_replace(true);
            }
        })
        .await
        .map_err(|e| anyhow::anyhow!("the server on {listen} failed: {e}"))?;
    if let Some(keeper) = keeper {
        // Nothing more is dispatched or written under this lease; a standby takes it now.
        leadership.lose("the coordinator is stopping".into());
        if let Ok(Some(conn)) = keeper.await {
            crate::daemon::leader::release(conn, holder, leadership.epoch()).await;
        }
    }
    tracing::info!("coordinator stopped");
    Ok(())
}

/// `quorum store export`: the runs (with the locks of the unfinished ones) and the deny list
/// of the local SQLite store, copied into the shared store under a lease of its own.
pub async fn export_store(config: CoordinatorConfig) -> anyhow::Result<String> {
    let Some(sc) = config.store.clone() else {
        return Err(quorum_proto::exit::BadInput(
            "store export: the coordinator config has no `store:` section naming PostgreSQL; add it (see packaging/coordinator.yml) and run again".into(),
        )
        .into());
    };
    let path = config.state_dir.join("runs.sqlite");
    if !path.exists() {
        return Err(quorum_proto::exit::BadInput(format!(
            "store export: {} does not exist: this host has no local store to export",
            path.display()
        ))
        .into());
    }
    let target = pg_target(&config, &sc)?;
    tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
        let local = Store::open(&path)?;
        let shared = Store::open_postgres(&target)?;
        let mut lease = crate::sop::lease::LeaseConn::connect(&target)?;
        let holder = format!("export/{}", crate::sop::lease::holder_id());
        let Some(epoch) = lease.acquire(&holder, "", Duration::from_secs(60))? else {
            let who = lease
                .current()?
                .map(|l| format!("{} at {} (epoch {})", l.holder, l.url, l.epoch))
                .unwrap_or_default();
            return Err(anyhow::Error::new(ExportRefused(format!(
                "store export refused: a coordinator holds the lease of the shared store ({who}); stop the shared coordinators, export, then start them again"
            ))));
        };
        shared.fence_with(crate::sop::store::Fence {
            epoch,
            holder: holder.clone(),
        });
        let result = (|| -> anyhow::Result<String> {
            let (mut copied, mut there) = (0, 0);
            for run in local.all_runs()? {
                let lock = match run.state.as_str() {
                    run_state::SUCCEEDED | run_state::ABORTED => None,
                    _ => local.lock_of(&run.id)?,
                };
                if shared.import_run(&run, lock.as_deref())? {
                    copied += 1;
                } else {
                    there += 1;
                }
            }
            let revocations = local.revocations()?;
            for r in &revocations {
                shared.revoke(r)?;
            }
            Ok(format!(
                "exported {copied} runs ({there} were there already) and {} revocations from {} to the shared store",
                revocations.len(),
                config.state_dir.join("runs.sqlite").display()
            ))
        })();
        let mut held = epoch;
        if result.is_ok() {
            // The next shared leader's epoch comes above every epoch used here.
            let local_epoch = local.last_local_epoch()?;
            lease.raise_epoch(&holder, local_epoch)?;
            held = held.max(local_epoch);
        }
        lease.release(&holder, held)?;
        result
    })
    .await
    .map_err(|e| anyhow::anyhow!("store export failed: {e}"))?
}

/// `store export` found the lease held.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ExportRefused(pub String);

/// Turns true at SIGTERM or Ctrl-C.
fn watch_signal() -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        quorum_proto::shutdown::signal().await;
        tx.send_replace(true);
    });
    rx
}

/// The PostgreSQL target of `store.postgres`, its password read from its file.
fn pg_target(
    config: &CoordinatorConfig,
    sc: &crate::model::config::StoreConfig,
) -> anyhow::Result<crate::sop::db::PgTarget> {
    let password = match &sc.postgres.password_file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .map_err(|e| crate::model::config::ConfigError::Parse {
                    path: f.clone(),
                    message: format!("store.postgres.password_file cannot be read: {e}"),
                })?
                .trim_end_matches(['\n', '\r'])
                .to_string(),
        ),
        None => None,
    };
    Ok(crate::sop::db::PgTarget {
        conninfo: sc.postgres.conninfo.clone(),
        ca_cert: Some(
            sc.postgres
                .ca_cert
                .clone()
                .unwrap_or_else(|| config.tls.ca_cert.clone()),
        ),
        password,
    })
}

/// Where a coordinator on the shared store notes the last epoch it saw, for a later
/// `serve --standalone` when PostgreSQL is out of reach.
fn shared_epoch_file(config: &CoordinatorConfig) -> PathBuf {
    config.state_dir.join("shared-epoch")
}

fn remember_shared_epoch(config: &CoordinatorConfig, epoch: i64) {
    if let Err(e) = std::fs::write(shared_epoch_file(config), format!("{epoch}\n")) {
        tracing::warn!(
            "cannot note epoch {epoch} in {}: {e}",
            shared_epoch_file(config).display()
        );
    }
}

/// The epoch a standalone coordinator must take one above: the lease's, when PostgreSQL
/// answers (refused while that lease is live, unless forced), else the last one noted here.
async fn standalone_epoch(config: &CoordinatorConfig, force: bool) -> anyhow::Result<i64> {
    let noted = std::fs::read_to_string(shared_epoch_file(config))
        .ok()
        .and_then(|t| t.trim().parse::<i64>().ok())
        .unwrap_or(0);
    let Some(sc) = &config.store else {
        tracing::warn!("--standalone: this coordinator has no shared store configured; it runs on its SQLite store as always");
        return Ok(noted);
    };
    let target = pg_target(config, sc)?;
    let seen = tokio::task::spawn_blocking(move || {
        crate::sop::lease::LeaseConn::connect(&target).and_then(|mut c| c.current())
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    match seen {
        Ok(Some(lease)) if lease.live() && !force => Err(quorum_proto::exit::BadInput(format!(
            "--standalone refused: the shared store shows a live lease of epoch {} held by {} at {} ({} ms left): a leader is running. Stop it first, or add --force if it cannot act (this coordinator takes a higher epoch, which agents prefer)",
            lease.epoch, lease.holder, lease.url, lease.left_ms
        ))
        .into()),
        Ok(lease) => {
            let epoch = lease.map_or(0, |l| l.epoch).max(noted);
            tracing::warn!(epoch, "--standalone: running on the local SQLite store above epoch {epoch}; export its runs to the shared store later with `quorum store export`");
            Ok(epoch)
        }
        Err(e) => {
            tracing::warn!(
                noted,
                "--standalone: the shared store is out of reach ({e}); running on the local SQLite store above epoch {noted}, the last one this host saw"
            );
            Ok(noted)
        }
    }
}
