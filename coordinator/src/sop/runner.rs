//! The runner: walks a stored run one step at a time, writing each step's record before and
//! after it, so a coordinator killed at any point resumes with neither a repeated nor a
//! skipped step. Agent steps reuse their task ids on resume, so an agent that already ran
//! one answers from its journal instead of running it again. The first failed step halts
//! the run.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quorum_proto::pb;
use serde::{Deserialize, Serialize};

use crate::clients::etcd::{EtcdAccess, Fault, MemberInfo};
use crate::clients::patroni::PgRef;
use crate::clients::registry::{AgentState, Registry};
use crate::model::pki::{Ca, LeafKind};
use crate::model::words::{outcome, outcome_word, service_state_word};
use crate::sop::gates;
use crate::sop::plan::StepKind;
use crate::sop::store::{now_ms, run_state, step_state, RanBefore, RunRecord, StepRecord, Store};
use crate::sop::wait::{until, Try, Waited};

/// What the runner needs beyond the steps, stored with the run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunContext {
    /// Client URLs of the cluster's members when the run was planned.
    pub endpoints: Vec<String>,
    /// The SOP as the operator asked for it (the audit trail). Absent in runs stored before
    /// requests were typed, which keep their untyped `args` instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<crate::sop::request::SopRequest>,
    /// The SOP's untyped arguments, as runs stored by 0.2 kept them (read, never written).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub args: BTreeMap<String, String>,
    /// Notes the planner left.
    pub notes: Vec<String>,
    // No credentials here: the Patroni REST password is read from the inventory when a
    // switchover needs it (see `Runner::patroni_auth`), never stored with the run. Runs
    // stored by 0.2.0 carry a `pg_auth` map; serde skips it, and the store scrubs it.
    /// The etcd members the inventory named when the run was planned (for member add, with
    /// the joining one; for member remove, without the leaving one): the membership checks
    /// compare etcd's member list with it again before the change. Absent in older runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roster: Option<crate::sop::agreement::Roster>,
}

/// Whether the plan put a QuorumGuard for `host` before step `index` with no other step
/// that takes a member down or waits on one in between: such a stop or restart re-checks
/// the guard as it acts. (A cluster remove stops every member on purpose and has none.)
fn guarded_by_plan(run: &RunRecord, index: usize, host: IpAddr) -> bool {
    for s in run.steps[..index.min(run.steps.len())].iter().rev() {
        match &s.kind {
            StepKind::QuorumGuard { host: h } => return *h == host,
            // Handing leadership over takes nobody down.
            StepKind::MoveLeaderAway { host: h, .. } if *h == host => continue,
            StepKind::WriteEtcdConf { .. }
            | StepKind::WriteEtcdctlProfile { .. }
            | StepKind::WriteEtcdCerts { .. } => continue,
            _ => return false,
        }
    }
    false
}

/// The PostgreSQL cluster whose PatroniGuard the plan put right before step `index` (a
/// Patroni restart on `host`), if it did.
fn guarding_patroni(run: &RunRecord, index: usize, host: IpAddr) -> Option<&PgRef> {
    match index
        .checked_sub(1)
        .and_then(|i| run.steps.get(i))
        .map(|s| &s.kind)
    {
        Some(StepKind::PatroniGuard { host: h, pg }) if *h == host => Some(pg),
        _ => None,
    }
}

/// Why a step planned as text is refused.
const PLANNED_AS_TEXT: &str = "this step was planned by Quorum 0.2, which sent the file as text; agents now render it from typed fields only. Abort this run (`quorum run abort`) and plan the SOP again";

/// The rules a SafeguardCheck step applies, as planned.
#[derive(Debug, Clone, Copy)]
struct Safeguard {
    /// `etcd_safeguard`.
    safeguard: bool,
    /// `etcd_clean`.
    clean: bool,
    /// A purge: ignores both, but not a host's local safeguard.
    ignore: bool,
    /// The check guards a removal: `etcd_safeguard` refuses even with etcd stopped.
    removal: bool,
}

impl Safeguard {
    /// Why the host refuses, if it does: `active` is etcd running there, `local` the
    /// agent's own safeguard.
    fn refusal(self, host: IpAddr, active: bool, local: bool) -> Option<String> {
        if self.ignore {
            return local.then(|| format!(
                "the local safeguard of the agent on {host} is set: it refuses every wipe there; unset `safeguard` in that host's agent.yml to purge it"
            ));
        }
        if self.removal && self.safeguard {
            return Some(format!(
                "Abort because etcd_safeguard is enabled: the member @ {host} is not removed whether or not etcd runs; set etcd_safeguard: false in pigsty.yml and plan again, or purge"
            ));
        }
        if active && (self.safeguard || !self.clean) {
            let why = if self.safeguard {
                "etcd_safeguard enabled, please disable it before purging."
            } else {
                "etcd_clean = false, use -e etcd_clean=true to override."
            };
            return Some(format!(
                "Abort because etcd instance @ {host} exists. {why}"
            ));
        }
        None
    }
}

/// The files a runner reads and writes besides its store.
pub struct Places {
    /// Where issued etcd member certificates and keys are kept.
    pub member_cert_dir: PathBuf,
    /// The inventory (re-read for credentials a step needs, never stored).
    pub inventory: PathBuf,
    /// Where snapshots before destructive steps are kept.
    pub snapshots: crate::sop::snapshot::Snapshots,
}

/// Timeouts of the runner.
#[derive(Debug, Clone)]
pub struct Timeouts {
    /// An agent step waits this long for the report.
    pub task: Duration,
    /// A health gate waits this long.
    pub gate: Duration,
    /// An agent not seen for this long fails its step.
    pub stale: Duration,
}

/// How a step ended.
struct StepEnd {
    ok: bool,
    outcome: pb::Outcome,
    output: String,
    /// The agents answered from their journals: the work was done before, at these times.
    journal: Option<RanBefore>,
}

impl StepEnd {
    fn new(ok: bool, outcome: pb::Outcome, output: impl Into<String>) -> Self {
        Self {
            ok,
            outcome,
            output: output.into(),
            journal: None,
        }
    }
    fn ok(outcome: pb::Outcome, output: impl Into<String>) -> Self {
        Self::new(true, outcome, output)
    }
    fn failed(output: impl Into<String>) -> Self {
        Self::new(false, pb::Outcome::Failed, output)
    }
    fn refused(output: impl Into<String>) -> Self {
        Self::new(false, pb::Outcome::Refused, output)
    }
}

/// The runner, shared by the admin service.
pub struct Runner {
    /// The run store.
    pub store: Arc<Store>,
    /// The epoch this coordinator acts under; checked right before each change it makes.
    leadership: Arc<crate::sop::lease::Leadership>,
    registry: Registry,
    etcd: EtcdAccess,
    ca: Option<Arc<Ca>>,
    member_cert_dir: PathBuf,
    /// The inventory, read again for the Patroni REST credentials when a switchover runs.
    inventory: PathBuf,
    timeouts: Timeouts,
    active: Mutex<HashSet<String>>,
    /// Where snapshots before destructive steps are kept.
    pub snapshots: crate::sop::snapshot::Snapshots,
}

/// Deterministic task id of a step's dispatch to `host` in `attempt`: the same on a resume of
/// an interrupted step (so the agent's journal recognizes it), new on a retry of a failed one.
pub fn task_id(run_id: &str, index: usize, attempt: u32, host: IpAddr) -> String {
    format!("{run_id}-s{index}-a{attempt}-{host}")
}

/// How long a refusal or failed gate waits for an agent's account of its etcd.
const ASK_AGENT: Duration = Duration::from_secs(5);

fn host_of_url(url: &str) -> Option<IpAddr> {
    let rest = url.split("://").nth(1)?;
    let hostport = rest.split('/').next()?;
    let host = match hostport.rsplit_once(':') {
        Some((h, _)) => h,
        None => hostport,
    };
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

impl Runner {
    /// A runner over `store`, keeping its files where `places` says.
    pub fn new(
        store: Arc<Store>,
        leadership: Arc<crate::sop::lease::Leadership>,
        registry: Registry,
        etcd: EtcdAccess,
        ca: Option<Arc<Ca>>,
        places: Places,
        timeouts: Timeouts,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            leadership,
            registry,
            etcd,
            ca,
            member_cert_dir: places.member_cert_dir,
            inventory: places.inventory,
            timeouts,
            active: Mutex::new(HashSet::new()),
            snapshots: places.snapshots,
        })
    }

    /// Whether this process is walking `run_id` now.
    pub fn is_active(&self, run_id: &str) -> bool {
        self.active
            .lock()
            .map(|a| a.contains(run_id))
            .unwrap_or(false)
    }

    /// Starts walking `run_id` in the background (no-op if already walking it).
    pub fn start(self: &Arc<Self>, run_id: String) {
        {
            let Ok(mut active) = self.active.lock() else {
                return;
            };
            if !active.insert(run_id.clone()) {
                return;
            }
        }
        let me = self.clone();
        tokio::spawn(async move {
            if let Err(e) = me.walk(&run_id).await {
                tracing::error!(run = %run_id, "run stopped: {e}");
            }
            if let Ok(mut active) = me.active.lock() {
                active.remove(&run_id);
            }
        });
    }

    async fn walk(&self, run_id: &str) -> anyhow::Result<()> {
        let mut run = self.store.get_run(run_id)?;
        let ctx: RunContext = match serde_json::from_str(&run.context) {
            Ok(c) => c,
            Err(e) => {
                // An empty context would fail every etcd step later with the wrong reason.
                let error = format!(
                    "the run's stored context is unreadable ({e}): nothing was done; abort it (`quorum run abort {run_id}`) and plan the SOP again"
                );
                self.store
                    .set_run_state(run_id, run_state::FAILED, &error)?;
                return Ok(());
            }
        };
        self.store.set_run_state(run_id, run_state::RUNNING, "")?;
        tracing::info!(run = %run_id, sop = %run.sop, "run walking");
        let metrics = crate::model::metrics::metrics();
        metrics.run_started(&run.sop);
        let walking = std::time::Instant::now();
        // How to log in to the cluster's etcd (Pigsty v4 RBAC), as the inventory says now.
        if let Ok(inv) = crate::model::inventory::Inventory::load_off_runtime(&self.inventory).await
        {
            if let Ok(cluster) = inv.etcd_cluster(Some(&run.cluster)) {
                self.etcd.remember(cluster);
            }
        }
        for i in 0..run.steps.len() {
            if run.steps[i].state == step_state::DONE {
                continue;
            }
            if self.store.get_run(run_id)?.state == run_state::ABORTED {
                tracing::info!(run = %run_id, "run aborted by an operator");
                return Ok(());
            }
            let mut step = run.steps[i].clone();
            // A step interrupted while running keeps its attempt (and so its task ids);
            // a failed or never-started step gets a new attempt.
            if step.state != step_state::RUNNING {
                step.attempt += 1;
            }
            step.task_ids = step
                .kind
                .agent_hosts()
                .into_iter()
                .map(|h| task_id(run_id, i, step.attempt, h))
                .collect();
            step.state = step_state::RUNNING.into();
            step.started_ms = now_ms();
            step.finished_ms = 0;
            step.journal = None;
            self.store.put_step(run_id, &step)?;
            // The write above committed under the lease; a coordinator paused since then
            // (SIGSTOP, a frozen VM) finds it lapsed here and acts no more.
            if let Err(why) = self.leadership.check() {
                anyhow::bail!("stopped before step {} of run {run_id}: {why}", i + 1);
            }
            let end = self.exec_step(&run, &ctx, &step).await;
            step.state = if end.ok {
                step_state::DONE.into()
            } else {
                step_state::FAILED.into()
            };
            step.outcome = outcome_word(end.outcome).to_string();
            step.output = end.output;
            step.journal = end.journal;
            step.finished_ms = now_ms();
            self.store.put_step(run_id, &step)?;
            tracing::info!(run = %run_id, step = i, kind = step.kind.name(), host = %step.host, outcome = %step.outcome, "step finished");
            metrics.step_finished(
                step.kind.name(),
                &step.outcome,
                Duration::from_millis((step.finished_ms - step.started_ms).max(0) as u64),
            );
            run.steps[i] = step.clone();
            if !end.ok {
                let error = format!(
                    "step {} of {} ({} {}) {}: {}",
                    i + 1,
                    run.steps.len(),
                    step.kind.name(),
                    step.host,
                    step.outcome,
                    step.output.trim()
                );
                self.store
                    .set_run_state(run_id, run_state::FAILED, &error)?;
                metrics.run_finished(&run.sop, run_state::FAILED, walking.elapsed());
                return Ok(());
            }
        }
        self.store.set_run_state(run_id, run_state::SUCCEEDED, "")?;
        metrics.run_finished(&run.sop, run_state::SUCCEEDED, walking.elapsed());
        Ok(())
    }

    async fn exec_step(&self, run: &RunRecord, ctx: &RunContext, step: &StepRecord) -> StepEnd {
        use pb::task::Kind;
        let id = |n: usize| step.task_ids.get(n).cloned().unwrap_or_default();
        match &step.kind {
            StepKind::WriteEtcdPass { host } => match self.rbac_cluster(run).await {
                Ok((_, cluster)) => {
                    let password = cluster.root_password.expose().to_string();
                    self.agent_task(
                        *host,
                        id(0),
                        Kind::WriteEtcdPass(pb::WriteEtcdPass { password }),
                    )
                    .await
                }
                Err(e) => StepEnd::failed(e),
            },
            StepKind::EnableAuth => match self.rbac_cluster(run).await {
                Ok((_, cluster)) => {
                    match self.etcd.enable_auth(&ctx.endpoints, &cluster.root_password).await {
                        Ok(crate::clients::etcd::AuthEnabled::Already) => StepEnd::ok(
                            pb::Outcome::Unchanged,
                            "etcd RBAC is on and root logs in with etcd_root_password",
                        ),
                        Ok(crate::clients::etcd::AuthEnabled::Now) => StepEnd::ok(
                            pb::Outcome::Changed,
                            "user root with etcd_root_password and the root role; etcd RBAC enabled",
                        ),
                        Err(e) => StepEnd::failed(e.to_string()),
                    }
                }
                Err(e) => StepEnd::failed(e),
            },
            StepKind::EnsurePgEtcdUsers { users } => match self.rbac_cluster(run).await {
                Ok((inv, cluster)) => {
                    let mut done = Vec::new();
                    for pg in inv.pg_clusters_using(&cluster.name) {
                        if !users.contains(&pg.etcd_user) || done.contains(&pg.etcd_user) {
                            continue;
                        }
                        let prefix =
                            format!("{}/{}/", pg.namespace.trim_end_matches('/'), pg.etcd_user);
                        if let Err(e) = self
                            .etcd
                            .ensure_pg_user(
                                &ctx.endpoints,
                                &pg.etcd_user,
                                &pg.etcd_password,
                                &prefix,
                            )
                            .await
                        {
                            return StepEnd::failed(format!(
                                "the etcd user of PostgreSQL cluster {} ({}): {e}{}",
                                pg.name,
                                pg.etcd_user,
                                if done.is_empty() {
                                    String::new()
                                } else {
                                    format!("; done before: {}", done.join(", "))
                                }
                            ));
                        }
                        done.push(pg.etcd_user.clone());
                    }
                    let missing: Vec<&String> =
                        users.iter().filter(|u| !done.contains(u)).collect();
                    if !missing.is_empty() {
                        return StepEnd::failed(format!(
                            "the inventory no longer names a PostgreSQL cluster with etcd user {} on etcd cluster {}; restore it, or plan the SOP again",
                            missing.iter().map(|u| u.as_str()).collect::<Vec<_>>().join(", "),
                            cluster.name
                        ));
                    }
                    StepEnd::ok(
                        pb::Outcome::Ok,
                        format!(
                            "etcd role and user with read-write on its prefix: {}",
                            done.join(", ")
                        ),
                    )
                }
                Err(e) => StepEnd::failed(e),
            },
            StepKind::SafeguardCheck {
                hosts,
                safeguard,
                clean,
                ignore_safeguard,
                removal,
            } => {
                // Runs planned by 0.2 did not mark the removal's check; their SOP does.
                let removal = *removal || run.sop == crate::sop::request::sop_name::CLUSTER_REMOVE;
                let rules = Safeguard {
                    safeguard: *safeguard,
                    clean: *clean,
                    ignore: *ignore_safeguard,
                    removal,
                };
                self.safeguard_check(hosts, rules)
            }
            StepKind::WriteEtcdCerts { host, member } => match self.member_cert(*host, member) {
                Ok((ca_crt, server_crt, server_key)) => {
                    self.agent_task(
                        *host,
                        id(0),
                        Kind::WriteEtcdCerts(pb::WriteEtcdCerts {
                            ca_crt,
                            server_crt,
                            server_key,
                        }),
                    )
                    .await
                }
                Err(e) => StepEnd::failed(e),
            },
            StepKind::WriteEtcdConf { host, conf, .. } => match conf {
                Some(conf) => {
                    let task = pb::WriteEtcdConf {
                        conf: Some(conf.clone()),
                    };
                    self.agent_task(*host, id(0), Kind::WriteEtcdConf(task))
                        .await
                }
                None => StepEnd::refused(PLANNED_AS_TEXT),
            },
            StepKind::WriteEtcdctlProfile { host, profile } => match profile {
                Some(profile) => {
                    let task = pb::WriteEtcdctlProfile {
                        profile: Some(profile.clone()),
                    };
                    self.agent_task(*host, id(0), Kind::WriteEtcdctlProfile(task))
                        .await
                }
                None => StepEnd::refused(PLANNED_AS_TEXT),
            },
            StepKind::StartEtcd { hosts } => {
                let tasks = hosts.iter().enumerate().map(|(n, h)| {
                    self.agent_task(
                        *h,
                        id(n),
                        service_kind(pb::Service::Etcd, pb::Action::Start),
                    )
                });
                join_ends(hosts, futures_util::future::join_all(tasks).await)
            }
            StepKind::StopEtcd { host } => {
                if let Some(refused) = self.guard_again(run, step, ctx, *host).await {
                    return refused;
                }
                self.agent_task(
                    *host,
                    id(0),
                    service_kind(pb::Service::Etcd, pb::Action::Stop),
                )
                .await
            }
            StepKind::RestartEtcd {
                host,
                if_changed,
                force,
            } => {
                self.restart_etcd(run, ctx, step, *host, if_changed, *force)
                    .await
            }
            StepKind::WipeEtcdData {
                host,
                purge,
                member_id,
                cluster_id,
            } => {
                self.wipe_etcd_data(ctx, step, *host, *purge, member_id, cluster_id)
                    .await
            }
            StepKind::SnapshotSave { cluster } => self.snapshot_save(run, ctx, cluster).await,
            StepKind::RetireEtcd { host } => {
                self.agent_task(*host, id(0), Kind::RetireEtcd(pb::RetireEtcd {}))
                    .await
            }
            StepKind::QuorumGuard { host } => self.quorum_guard(ctx, *host).await,
            StepKind::HealthGate { host } => self.health_gate(ctx, Some(*host)).await,
            StepKind::ClusterHealthGate => self.health_gate(ctx, None).await,
            StepKind::MemberAddCheck { host, peer_url } => {
                self.member_add_check(ctx, *host, peer_url).await
            }
            StepKind::AddLearner { peer_url, .. } => self.add_learner(ctx, peer_url).await,
            StepKind::PromoteLearner { peer_url, .. } => self.promote_learner(ctx, peer_url).await,
            StepKind::MemberRemoveCheck { host, peer_url } => {
                self.member_remove_check(ctx, *host, peer_url).await
            }
            StepKind::MoveLeaderAway {
                host,
                peer_url,
                prefer,
                if_changed,
                force,
            } => {
                if changed_before(run, if_changed, *force).is_none() {
                    return StepEnd::ok(
                        pb::Outcome::Skipped,
                        "etcd.conf unchanged: no restart follows, so leadership stays",
                    );
                }
                let restarted = restarted_before(run, step.index, prefer);
                self.move_leader_away(ctx, *host, peer_url, prefer, &restarted)
                    .await
            }
            StepKind::RemoveMember { host, peer_url } => {
                self.remove_member(ctx, *host, peer_url).await
            }
            StepKind::WipeRemovedMember {
                host,
                peer_url,
                member_id,
            } => {
                self.wipe_removed_member(ctx, step, *host, peer_url, member_id)
                    .await
            }
            StepKind::DeferCleanup {
                host,
                peer_url,
                member_id,
            } => {
                self.defer_cleanup(run, ctx, *host, peer_url, member_id)
                    .await
            }
            StepKind::SetPatroniHosts {
                host,
                hosts,
                restart,
            } => {
                self.set_patroni_hosts(run, step, *host, hosts, *restart)
                    .await
            }
            StepKind::PatroniGuard { host, pg } => self.patroni_guard(*host, pg).await,
            StepKind::PatroniGate { host, pg } => self.patroni_gate(*host, pg).await,
            StepKind::Switchover { host, pg } => self.switchover(run, *host, pg).await,
            StepKind::SetVipEndpoints {
                host,
                endpoints,
                defer_restart,
            } => {
                self.agent_task(
                    *host,
                    id(0),
                    Kind::SetVipEndpoints(pb::SetVipEndpoints {
                        endpoints: endpoints.clone(),
                        defer_restart: *defer_restart,
                    }),
                )
                .await
            }
            StepKind::VipGate { pg } => self.vip_gate(&step.task_ids, pg).await,
            StepKind::ServiceAction {
                hosts,
                service,
                action,
            } => {
                let tasks = hosts.iter().enumerate().map(|(n, h)| {
                    self.agent_task(*h, id(n), service_kind(service.pb(), action.pb()))
                });
                join_ends(hosts, futures_util::future::join_all(tasks).await)
            }
        }
    }

    /// The quorum guard again, immediately before a stop or restart of etcd on `host` that
    /// the plan guarded: the guard step may have passed long ago (a run resumed after a
    /// coordinator crash starts at the restart itself), against a cluster that has changed
    /// since. `Some` is the refusal.
    async fn guard_again(
        &self,
        run: &RunRecord,
        step: &StepRecord,
        ctx: &RunContext,
        host: IpAddr,
    ) -> Option<StepEnd> {
        if !guarded_by_plan(run, step.index, host) {
            return None;
        }
        let guard = self.quorum_guard(ctx, host).await;
        (!guard.ok).then_some(guard)
    }

    fn safeguard_check(&self, hosts: &[IpAddr], rules: Safeguard) -> StepEnd {
        for h in hosts {
            let Some(facts) = self.registry.facts(*h) else {
                return StepEnd::failed(format!(
                    "no facts from the agent on {h}; is it connected?"
                ));
            };
            let active =
                facts.services.get("etcd").copied() == Some(pb::ServiceState::Active as i32);
            if let Some(why) = rules.refusal(*h, active, facts.safeguard) {
                return StepEnd::refused(why);
            }
        }
        StepEnd::ok(pb::Outcome::Ok, "no safeguard stands in the way")
    }

    fn member_cert(&self, host: IpAddr, member: &str) -> Result<(String, String, String), String> {
        let ca = self.ca.as_ref().ok_or_else(|| {
            "the coordinator has no CA key (tls.ca_key in its config), so it cannot issue etcd member certificates".to_string()
        })?;
        let crt = self.member_cert_dir.join(format!("{member}.crt"));
        let key = self.member_cert_dir.join(format!("{member}.key"));
        // Issued once and kept, as Pigsty keeps files/pki/etcd/etcd-N.*: a re-run writes the
        // same bytes, so it changes nothing on the host.
        if !(crt.exists() && key.exists()) {
            let (c, k) = ca
                .issue(
                    LeafKind::Etcd,
                    &[host],
                    Some(member),
                    crate::model::config::PIGSTY_LEAF_TTL,
                )
                .map_err(|e| e.to_string())?;
            crate::model::pki::write_replace(&key, k.as_bytes(), 0o600)
                .map_err(|e| e.to_string())?;
            crate::model::pki::write_replace(&crt, c.as_bytes(), 0o644)
                .map_err(|e| e.to_string())?;
        }
        let read = |p: &PathBuf| {
            std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
        };
        Ok((ca.cert_pem().to_string(), read(&crt)?, read(&key)?))
    }

    /// Queues one task and waits for its report; a stale agent or a timeout fails the step.
    async fn agent_task(&self, host: IpAddr, id: String, kind: pb::task::Kind) -> StepEnd {
        if let Err(end) = self.may_act() {
            return end;
        }
        let task = pb::Task {
            id: id.clone(),
            epoch: 0,
            epoch_holder: String::new(),
            kind: Some(kind),
        };
        let mut rx = self.registry.queue(host, task);
        let start = tokio::time::Instant::now();
        loop {
            tokio::select! {
                r = &mut rx => {
                    return match r {
                        Ok(result) => {
                            let outcome = pb::Outcome::try_from(result.outcome).unwrap_or(pb::Outcome::Unspecified);
                            let mut end = match outcome {
                                pb::Outcome::Refused => StepEnd::refused(result.output),
                                pb::Outcome::Failed | pb::Outcome::Unspecified => {
                                    StepEnd::failed(result.output)
                                }
                                _ => StepEnd::ok(outcome, result.output),
                            };
                            end.journal = result.journal.map(|j| RanBefore {
                                started_ms: j.started_unix_ms,
                                finished_ms: j.finished_unix_ms,
                            });
                            end
                        }
                        Err(_) => StepEnd::failed(format!("task {id} on {host} was cancelled")),
                    };
                }
                _ = tokio::time::sleep(Duration::from_millis(500)) => {
                    let elapsed = start.elapsed();
                    let state = self.registry.state(host);
                    // Right after a coordinator restart agents are still reconnecting: give them
                    // the stale window before calling them stale.
                    if elapsed > self.timeouts.stale && !matches!(state, Some(AgentState::Connected | AgentState::Idle)) {
                        self.registry.cancel(host, &id);
                        return StepEnd::failed(format!(
                            "the agent on {host} is stale (no poll for over {:?}); check quorum-agent there, then `quorum run resume`",
                            self.timeouts.stale
                        ));
                    }
                    if elapsed > self.timeouts.task {
                        self.registry.cancel(host, &id);
                        return StepEnd::failed(format!(
                            "the agent on {host} did not report task {id} within {:?}; check its log, then `quorum run resume`",
                            self.timeouts.task
                        ));
                    }
                }
            }
        }
    }

    /// Whether this coordinator may still change anything (its lease holds): checked right
    /// before each etcd membership change and each task queued.
    fn may_act(&self) -> Result<(), StepEnd> {
        self.leadership.check().map_err(|why| {
            StepEnd::failed(format!(
                "this coordinator lost its lease and changes nothing more: {why}"
            ))
        })
    }

    async fn members(&self, ctx: &RunContext) -> Result<Vec<MemberInfo>, String> {
        self.etcd
            .member_list(&ctx.endpoints)
            .await
            .map_err(|e| format!("cannot read the member list: {e}"))
    }

    /// Health of every voting member, as (member label, host, result).
    async fn voting_health(&self, members: &[MemberInfo]) -> Vec<gates::Health> {
        let mut out = Vec::new();
        for m in members.iter().filter(|m| !m.is_learner) {
            let host = m.peer_urls.first().and_then(|u| host_of_url(u));
            let label = if m.name.is_empty() {
                format!("{:x}", m.id)
            } else {
                m.name.clone()
            };
            let r = match m.client_urls.first() {
                Some(url) => self.etcd.member_health(url).await,
                None => Err("it has not started (no client URL)".to_string()),
            };
            out.push((label, host, r));
        }
        out
    }

    async fn quorum_guard(&self, ctx: &RunContext, host: IpAddr) -> StepEnd {
        let members = match self.members(ctx).await {
            Ok(m) => m,
            Err(e) => {
                return StepEnd::refused(format!(
                    "{e}; quorum cannot be verified, so nothing is taken down"
                ))
            }
        };
        let health = self.voting_health(&members).await;
        if let Some((label, h, why)) = gates::unhealthy_other(&health, host) {
            return StepEnd::refused(format!(
                "member {label} ({}) is unhealthy: {why}; taking down {host} now could lose quorum. Fix {label} first, then `quorum run resume`\n{}",
                h.map(|h| h.to_string()).unwrap_or_default(),
                self.etcd_on(h).await
            ));
        }
        StepEnd::ok(pb::Outcome::Ok, "every other voting member is healthy")
    }

    /// Ok when every voting member but `host` is healthy, else why not.
    /// [`gates::removal`] on the voting members' health now; a refusal adds what the agent on
    /// the unhealthy member's host says.
    async fn removal_allowed(
        &self,
        members: &[MemberInfo],
        host: IpAddr,
    ) -> Result<Option<String>, String> {
        let health = self.voting_health(members).await;
        match gates::removal(&health, host) {
            Ok(note) => Ok(note),
            Err(why) => {
                let h = gates::unhealthy_other(&health, host).and_then(|(_, h, _)| h);
                Err(format!("{why}\n{}", self.etcd_on(h).await))
            }
        }
    }

    async fn others_healthy(&self, members: &[MemberInfo], host: IpAddr) -> Result<(), String> {
        let health = self.voting_health(members).await;
        match gates::unhealthy_other(&health, host) {
            None => Ok(()),
            Some((label, h, why)) => Err(format!(
                "member {label} ({}) is unhealthy: {why}\n{}",
                h.map(|h| h.to_string()).unwrap_or_default(),
                self.etcd_on(h).await
            )),
        }
    }

    /// What the agent on `host` says of its etcd, for a refusal or a failed gate (never on the
    /// happy path): the service state and, when the agent answers within a few seconds, the
    /// last lines of etcd's log; else the state its last facts carried.
    async fn etcd_on(&self, host: Option<IpAddr>) -> String {
        let Some(host) = host else {
            return "(its host is not known, so its agent was not asked)".into();
        };
        let reported = self
            .registry
            .facts(host)
            .and_then(|f| f.services.get("etcd").copied())
            .and_then(|s| pb::ServiceState::try_from(s).ok())
            .map(service_state_word)
            .unwrap_or("unknown");
        match self.registry.state(host) {
            None => format!("no quorum-agent on {host} has connected, so etcd's state there is unknown"),
            Some(AgentState::Stale) => format!(
                "the agent on {host} is stale (no poll for over {:?}); it last reported etcd {reported}",
                self.timeouts.stale
            ),
            Some(_) => {
                let id = format!("why-{host}-{}", now_ms());
                let ask = self.agent_task(
                    host,
                    id.clone(),
                    pb::task::Kind::ServiceAction(pb::ServiceAction {
                        service: pb::Service::Etcd as i32,
                        action: pb::Action::Status as i32,
                        with_log: true,
                        ..Default::default()
                    }),
                );
                match tokio::time::timeout(ASK_AGENT, ask).await {
                    Ok(end) if end.ok => {
                        format!("the agent on {host} reports: {}", end.output.trim())
                    }
                    Ok(end) => format!(
                        "the agent on {host} last reported etcd {reported}; asked again, it answered: {}",
                        end.output.trim()
                    ),
                    Err(_) => {
                        self.registry.cancel(host, &id);
                        format!(
                            "the agent on {host} last reported etcd {reported} (asked again, it did not answer within {ASK_AGENT:?})"
                        )
                    }
                }
            }
        }
    }

    /// The cluster's id (hex), when a member answers.
    async fn cluster_id(&self, ctx: &RunContext) -> Option<String> {
        match self.etcd.member_list_of_cluster(&ctx.endpoints).await {
            Ok((id, _)) if id != 0 => Some(format!("{id:x}")),
            _ => None,
        }
    }

    /// Retries a membership change while etcd calls the cluster "unhealthy": with its strict
    /// reconfiguration check, etcd refuses a change until the leader has seen a quorum for
    /// five seconds (right after a start or a restart). Bounded by the gate timeout.
    async fn retry_unhealthy<T, F, Fut>(&self, op: F) -> Result<T, String>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, crate::clients::etcd::EtcdError>>,
    {
        self.retry_unhealthy_typed(op)
            .await
            .map_err(|e| e.to_string())
    }

    /// [`Self::retry_unhealthy`], keeping etcd's typed error.
    async fn retry_unhealthy_typed<T, F, Fut>(
        &self,
        op: F,
    ) -> Result<T, crate::clients::etcd::EtcdError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, crate::clients::etcd::EtcdError>>,
    {
        until(self.timeouts.gate, gates::SLOW_PACE, || async {
            match op().await {
                Ok(v) => Try::Done(v),
                Err(e) if e.has(&Fault::UnhealthyCluster) => Try::Again(e),
                Err(e) => Try::Stop(e),
            }
        })
        .await
        .map_err(Waited::reason)
    }

    async fn member_add_check(&self, ctx: &RunContext, host: IpAddr, peer_url: &str) -> StepEnd {
        let members = match self.members(ctx).await {
            Ok(m) => m,
            Err(e) => return StepEnd::refused(e),
        };
        if let Some(refused) = roster_disagrees(ctx, &members, peer_url) {
            return refused;
        }
        if let Some(l) = members
            .iter()
            .find(|m| m.is_learner && !m.peer_urls.iter().any(|u| u == peer_url))
        {
            return StepEnd::refused(format!(
                "a learner already exists ({} {}); at most one learner at a time",
                l.name,
                l.peer_urls.join(",")
            ));
        }
        match self.others_healthy(&members, host).await {
            Ok(()) => StepEnd::ok(pb::Outcome::Ok, "cluster healthy, no other learner"),
            Err(why) => StepEnd::refused(format!("{why}; fix it before adding a member")),
        }
    }

    /// Adds the learner, again while etcd answers "member not found": right after a member of
    /// the same peer URL was removed (a re-add), etcd 3.4 can refuse the add for a moment.
    /// Each try reads the member list first, so a learner added by an earlier try is kept.
    async fn add_learner(&self, ctx: &RunContext, peer_url: &str) -> StepEnd {
        let tried = until(self.timeouts.gate, gates::SLOW_PACE, || async {
            match self.add_learner_once(ctx, peer_url).await {
                Ok(end) => Try::Done(end),
                Err(e) if e.has(&Fault::MemberNotFound) => Try::Again(e),
                Err(e) => Try::Stop(e),
            }
        })
        .await;
        tried.unwrap_or_else(|e| StepEnd::failed(e.reason().to_string()))
    }

    async fn add_learner_once(
        &self,
        ctx: &RunContext,
        peer_url: &str,
    ) -> Result<StepEnd, crate::clients::etcd::EtcdError> {
        let members = match self.members(ctx).await {
            Ok(m) => m,
            Err(e) => return Ok(StepEnd::failed(e)),
        };
        if let Some(m) = by_peer(&members, peer_url) {
            return Ok(StepEnd::ok(
                pb::Outcome::Unchanged,
                format!(
                    "{peer_url} is already a {} (id {:x})",
                    if m.is_learner {
                        "learner"
                    } else {
                        "voting member"
                    },
                    m.id
                ),
            ));
        }
        // Re-checked right before the change: never a second learner.
        if let Some(l) = members.iter().find(|m| m.is_learner) {
            return Ok(StepEnd::refused(format!(
                "a learner already exists ({}); at most one learner at a time",
                l.peer_urls.join(",")
            )));
        }
        if let Err(end) = self.may_act() {
            return Ok(end);
        }
        let id = self
            .retry_unhealthy_typed(|| self.etcd.add_learner(&ctx.endpoints, peer_url))
            .await?;
        Ok(StepEnd::ok(
            pb::Outcome::Changed,
            format!("added learner {id:x} with peer URL {peer_url}"),
        ))
    }

    async fn promote_learner(&self, ctx: &RunContext, peer_url: &str) -> StepEnd {
        let promoted = until(self.timeouts.gate, gates::PROMOTE_PACE, || async {
            let members = match self.members(ctx).await {
                Ok(m) => m,
                Err(e) => return Try::Stop(e),
            };
            let Some(m) = by_peer(&members, peer_url) else {
                return Try::Stop(format!(
                    "no member with peer URL {peer_url}: the learner is gone; resume re-adds it"
                ));
            };
            if !m.is_learner {
                return Try::Done(StepEnd::ok(
                    pb::Outcome::Unchanged,
                    format!("{:x} is already a voting member", m.id),
                ));
            }
            if let Err(end) = self.may_act() {
                return Try::Done(end);
            }
            // A learner still catching up is tried again; anything else is final.
            match gates::promotion(self.etcd.promote(&ctx.endpoints, m.id).await, m.id) {
                Try::Done(msg) => Try::Done(StepEnd::ok(pb::Outcome::Changed, msg)),
                Try::Again(e) => Try::Again(e),
                Try::Stop(e) => Try::Stop(e),
            }
        })
        .await;
        match promoted {
            Ok(end) => end,
            Err(Waited::Stopped(e)) => StepEnd::failed(e),
            Err(Waited::TimedOut(e)) => StepEnd::failed(format!(
                "the learner did not catch up within {:?} ({e}); check its log, then `quorum run resume`\n{}",
                self.timeouts.gate,
                self.etcd_on(host_of_url(peer_url)).await
            )),
        }
    }

    /// Hands leadership away from `host` if it leads now (whoever led when the run was
    /// planned): to the first of `prefer` (members visited earlier in this roll; those of
    /// them `restarted` first) that is healthy and caught up, else to any other healthy,
    /// caught-up voter.
    async fn move_leader_away(
        &self,
        ctx: &RunContext,
        host: IpAddr,
        peer_url: &str,
        prefer: &[IpAddr],
        restarted: &[IpAddr],
    ) -> StepEnd {
        let members = match self.members(ctx).await {
            Ok(m) => m,
            Err(e) => return StepEnd::failed(e),
        };
        let Some(gone) = by_peer(&members, peer_url) else {
            return StepEnd::ok(
                pb::Outcome::Skipped,
                format!("{host} is no longer a member"),
            );
        };
        let leader = match self.etcd.leader(&ctx.endpoints).await {
            Ok(l) => l,
            Err(e) => return StepEnd::failed(e.to_string()),
        };
        if leader != gone.id {
            return StepEnd::ok(
                pb::Outcome::Skipped,
                format!("{host} does not lead (leader {leader:x})"),
            );
        }
        let Some(url) = gone.client_urls.first() else {
            return StepEnd::failed(format!(
                "{host} has no client URL to ask for the leadership move"
            ));
        };
        // The leader's raft index now: a candidate that has applied up to it is caught up.
        let leader_index = match self.etcd.member_status(url).await {
            Ok(st) => st.raft_index,
            Err(e) => return StepEnd::failed(format!("status of the leader {host}: {e}")),
        };
        let host_of = |m: &MemberInfo| m.peer_urls.first().and_then(|u| host_of_url(u));
        let mut candidates: Vec<&MemberInfo> = members
            .iter()
            .filter(|m| !m.is_learner && m.id != gone.id)
            .collect();
        // Members restarted earlier in this roll first, then the others it visited, in the
        // roll's order; then the rest.
        candidates.sort_by_key(|m| {
            let h = host_of(m);
            (
                !h.is_some_and(|h| restarted.contains(&h)),
                h.and_then(|h| prefer.iter().position(|p| *p == h))
                    .unwrap_or(usize::MAX),
            )
        });
        let mut why_not = Vec::new();
        let mut target = None;
        for m in candidates {
            let label = if m.name.is_empty() {
                format!("{:x}", m.id)
            } else {
                m.name.clone()
            };
            let Some(murl) = m.client_urls.first() else {
                why_not.push(format!("{label}: not started"));
                continue;
            };
            if let Err(e) = self.etcd.member_health(murl).await {
                why_not.push(format!("{label}: {e}"));
                continue;
            }
            match self.caught_up(murl, leader_index).await {
                Ok(applied) => {
                    let was_restarted = host_of(m).is_some_and(|h| restarted.contains(&h));
                    target = Some((m.id, label, applied, was_restarted));
                    break;
                }
                Err(e) => why_not.push(format!("{label}: {e}")),
            }
        }
        let Some((target, label, applied, was_restarted)) = target else {
            return StepEnd::refused(format!(
                "no healthy, caught-up voting member to hand leadership to ({}); {host} keeps it and is not taken down",
                why_not.join("; ")
            ));
        };
        if let Err(end) = self.may_act() {
            return end;
        }
        match self.etcd.move_leader(url, target).await {
            Ok(()) => StepEnd::ok(pb::Outcome::Changed,
                format!(
                    "leadership moved from {:x} ({host}) to {target:x} ({label}{}, applied index {applied} >= the leader's {leader_index})",
                    gone.id,
                    if was_restarted {
                        ", restarted earlier in this run"
                    } else {
                        ""
                    }
                ),
            ),
            Err(e) => StepEnd::failed(e.to_string()),
        }
    }

    /// Waits (bounded, briefly) until the member at `url` has applied `index`; its applied
    /// index, or why not.
    async fn caught_up(&self, url: &str, index: u64) -> Result<u64, String> {
        let within = self.timeouts.gate.min(Duration::from_secs(5));
        until(within, gates::CATCH_UP_PACE, || async {
            match self.etcd.member_status(url).await {
                Err(e) => Try::Stop(e.to_string()),
                Ok(st) if st.raft_applied_index >= index => Try::Done(st.raft_applied_index),
                Ok(st) => Try::Again(format!(
                    "applied index {} still behind the leader's {index}",
                    st.raft_applied_index
                )),
            }
        })
        .await
        .map_err(Waited::reason)
    }

    async fn remove_member(&self, ctx: &RunContext, host: IpAddr, peer_url: &str) -> StepEnd {
        let members = match self.members(ctx).await {
            Ok(m) => m,
            Err(e) => return StepEnd::failed(e),
        };
        let Some(gone) = by_peer(&members, peer_url) else {
            return StepEnd::ok(pb::Outcome::Unchanged, format!("{host} is already removed"));
        };
        // Re-checked right before the change: the remaining members must hold quorum.
        if let Err(why) = self.removal_allowed(&members, host).await {
            return StepEnd::refused(format!(
                "{why}; removing {host} now would put quorum at risk"
            ));
        }
        let id = gone.id;
        if let Err(end) = self.may_act() {
            return end;
        }
        match self
            .retry_unhealthy(|| self.etcd.remove(&ctx.endpoints, id))
            .await
        {
            Ok(()) => StepEnd::ok(
                pb::Outcome::Changed,
                format!("removed member {id:x} ({host})"),
            ),
            Err(e) => StepEnd::failed(e),
        }
    }

    /// Records the cleanup of a member removed while its host's agent was unreachable: a run
    /// of its own (stop, wipe, retire) in state `waiting`, holding the host's lock, started by
    /// the coordinator when the agent connects. Its id follows from this run's, so a resumed
    /// step finds it instead of recording a second one.
    async fn defer_cleanup(
        &self,
        run: &RunRecord,
        ctx: &RunContext,
        host: IpAddr,
        peer_url: &str,
        member_id: &Option<String>,
    ) -> StepEnd {
        match self.members(ctx).await {
            Err(e) => {
                return StepEnd::failed(format!(
                    "{e}; cannot prove {host} left, so its cleanup is not recorded yet"
                ))
            }
            Ok(members) if members.iter().any(|m| m.peer_urls.iter().any(|u| u == peer_url)) => {
                return StepEnd::refused(format!(
                    "{host} is still listed as a member: its cleanup is recorded only once it has left"
                ))
            }
            Ok(_) => {}
        }
        let id = format!("{}-cleanup", run.id);
        if self.store.get_run(&id).is_ok() {
            return StepEnd::ok(
                pb::Outcome::Unchanged,
                format!("the cleanup of {host} is recorded already as run {id}"),
            );
        }
        let lock = crate::sop::store::host_lock(host);
        let steps = [
            StepKind::StopEtcd { host },
            StepKind::WipeRemovedMember {
                host,
                peer_url: peer_url.to_string(),
                member_id: member_id.clone(),
            },
            StepKind::RetireEtcd { host },
        ];
        let context = RunContext {
            // The survivors answer for the wipe's "has it left?" check.
            endpoints: ctx
                .endpoints
                .iter()
                .filter(|u| host_of_url(u) != Some(host))
                .cloned()
                .collect(),
            request: Some(crate::sop::request::SopRequest::HostCleanup {
                host,
                parent: run.id.clone(),
            }),
            notes: vec![format!(
                "recorded by run {} ({}) while the agent on {host} was unreachable; starts when it connects",
                run.id, run.sop
            )],
            roster: ctx.roster.clone(),
            ..RunContext::default()
        };
        let record = RunRecord {
            id: id.clone(),
            sop: crate::sop::request::sop_name::HOST_CLEANUP.into(),
            cluster: run.cluster.clone(),
            context: match serde_json::to_string(&context) {
                Ok(c) => c,
                Err(e) => return StepEnd::failed(format!("cannot encode the cleanup run: {e}")),
            },
            state: run_state::WAITING.into(),
            started_by: run.started_by.clone(),
            inventory_digest: run.inventory_digest.clone(),
            created_ms: now_ms(),
            finished_ms: 0,
            error: String::new(),
            steps: steps
                .iter()
                .enumerate()
                .map(|(i, k)| StepRecord::pending(i, k))
                .collect(),
        };
        match self.store.create_run_locked(&record, &lock) {
            Ok(()) => StepEnd::ok(pb::Outcome::Changed,
                format!(
                    "run {id} waits for the agent on {host}: it stops etcd, wipes the data dir and retires etcd there as soon as the agent connects, and no other SOP may touch {host} before (`quorum run show {id}`; `quorum member remove {host} --forget` drops it)"
                ),
            ),
            Err(crate::sop::store::StoreError::Locked { holder, state, .. }) => StepEnd::ok(pb::Outcome::Unchanged,
                format!("the cleanup of {host} is pending already as run {holder} ({state})"),
            ),
            Err(e) => StepEnd::failed(e.to_string()),
        }
    }

    async fn health_gate(&self, ctx: &RunContext, host: Option<IpAddr>) -> StepEnd {
        let start = tokio::time::Instant::now();
        let gate = until(self.timeouts.gate, gates::HEALTH_PACE, || async {
            match self.members(ctx).await {
                Ok(members) => gates::health(&self.voting_health(&members).await, host),
                Err(e) => Try::Again(gates::NotHealthy {
                    why: e,
                    hosts: host.map(|h| vec![Some(h)]).unwrap_or_default(),
                }),
            }
        })
        .await;
        match gate {
            Ok(n) => StepEnd::ok(
                pb::Outcome::Ok,
                format!(
                    "{n} voting member(s) healthy after {:.1}s",
                    start.elapsed().as_secs_f64()
                ),
            ),
            Err(not) => {
                let not = not.reason();
                let mut why = String::new();
                for h in &not.hosts {
                    why.push('\n');
                    why.push_str(&self.etcd_on(*h).await);
                }
                StepEnd::failed(format!(
                    "the cluster was not healthy within {:?}: {}; the run halts here and touches no other host{why}",
                    self.timeouts.gate, not.why
                ))
            }
        }
    }
}

impl Runner {
    /// Ok once every instance of `pg` runs, the cluster has a running leader, and `host` does
    /// not lead; a host that leads is refused at once (it became the leader after planning).
    async fn patroni_guard(&self, host: IpAddr, pg: &PgRef) -> StepEnd {
        let guard = until(self.timeouts.gate, gates::SLOW_PACE, || async {
            match pg.cluster().await {
                Err(e) => Try::Again(e),
                Ok(c) => gates::patroni_guard(pg, host, &c),
            }
        })
        .await;
        match guard {
            Ok(msg) => StepEnd::ok(pb::Outcome::Ok, msg),
            Err(Waited::Stopped(why)) => StepEnd::refused(why),
            Err(Waited::TimedOut(why)) => StepEnd::refused(format!(
                "{why}; restarting Patroni on {host} now could leave {} without a primary. Fix it, then `quorum run resume`",
                pg.name
            )),
        }
    }

    /// Waits until Patroni on `host` runs and `pg` has a running leader.
    async fn patroni_gate(&self, host: IpAddr, pg: &PgRef) -> StepEnd {
        let Some(node) = pg.node(host) else {
            return StepEnd::failed(format!("{host} is not an instance of {}", pg.name));
        };
        let gate = until(self.timeouts.gate, gates::SLOW_PACE, || async {
            match crate::clients::patroni::instance_state(&node.api).await {
                Err(e) => Try::Again(e),
                Ok((state, role)) => {
                    // The cluster is asked only once the instance runs.
                    let c = if state == "running" || state == "streaming" {
                        pg.cluster().await
                    } else {
                        Err(String::new())
                    };
                    gates::patroni_gate(
                        pg,
                        host,
                        (&state, &role),
                        c.as_ref().map_err(String::as_str),
                    )
                }
            }
        })
        .await;
        match gate {
            Ok(msg) => StepEnd::ok(pb::Outcome::Ok, msg),
            Err(why) => StepEnd::failed(format!(
                "Patroni was not healthy within {:?}: {}; the run halts here and touches no other host",
                self.timeouts.gate,
                why.reason()
            )),
        }
    }

    /// Hands leadership from `host` to the healthiest replica and waits until the new leader
    /// runs and the old one runs as a replica. Done already when another instance leads.
    async fn switchover(&self, run: &RunRecord, host: IpAddr, pg: &PgRef) -> StepEnd {
        let c = match pg.cluster().await {
            Ok(c) => c,
            Err(e) => {
                return StepEnd::refused(format!(
                    "{e}; no switchover without a view of the cluster"
                ))
            }
        };
        let Some(leader) = c.leader() else {
            return StepEnd::refused(format!(
                "{} has no leader ({}); a switchover needs one",
                pg.name,
                c.summary()
            ));
        };
        let Some(leader_node) = pg.node_of(leader) else {
            return StepEnd::refused(format!(
                "the leader {} is not an instance of {} in the inventory",
                leader.name, pg.name
            ));
        };
        if leader_node.ip != host {
            return StepEnd::ok(
                pb::Outcome::Ok,
                format!(
                    "{} leads already, not {host}: nothing to switch",
                    leader.name
                ),
            );
        }
        let mut candidates: Vec<_> = c
            .members
            .iter()
            .filter(|m| !m.is_leader() && m.is_running() && pg.node_of(m).is_some())
            .collect();
        candidates.sort_by_key(|m| (m.role != "sync_standby", m.lag.unwrap_or(u64::MAX)));
        let Some(cand) = candidates.first() else {
            return StepEnd::refused(format!(
                "{} has no running replica to take over ({}); its primary is not restarted",
                pg.name,
                c.summary()
            ));
        };
        let (user, password) = match self.patroni_auth(run, &pg.name).await {
            Ok(auth) => auth,
            Err(e) => return StepEnd::failed(e),
        };
        let said = match crate::clients::patroni::switchover(
            &leader_node.api,
            Some((user.as_str(), password.as_str())),
            &leader.name,
            &cand.name,
        )
        .await
        {
            Ok(s) => s,
            Err(e) => {
                return StepEnd::failed(format!("switchover {} -> {}: {e}", leader.name, cand.name))
            }
        };
        let settled = until(self.timeouts.gate, gates::SLOW_PACE, || async {
            match pg.cluster().await {
                Err(e) => Try::Again(e),
                Ok(now) => gates::switched_over(&now, &leader.name, &cand.name),
            }
        })
        .await;
        match settled {
            Ok(summary) => StepEnd::ok(pb::Outcome::Changed, format!("{said}; {summary}")),
            Err(why) => StepEnd::failed(format!(
                "after the switchover ({said}) the cluster did not settle within {:?}: {}",
                self.timeouts.gate,
                why.reason()
            )),
        }
    }

    /// The inventory, read now, and the run's etcd cluster in it: the RBAC steps take their
    /// passwords from it (never stored with a run). Also remembers how to log in to it.
    async fn rbac_cluster(
        &self,
        run: &RunRecord,
    ) -> Result<
        (
            crate::model::inventory::Inventory,
            crate::model::inventory::EtcdCluster,
        ),
        String,
    > {
        let resume = format!(
            "then `quorum run resume {id}`, or `quorum run abort {id}`",
            id = run.id
        );
        let inv = crate::model::inventory::Inventory::load_off_runtime(&self.inventory)
            .await
            .map_err(|e| {
                format!(
                    "etcd's RBAC passwords are read from the inventory when a step needs them (never stored with a run), and it cannot be read: {e}; fix it, {resume}"
                )
            })?;
        let cluster = inv
            .etcd_cluster(Some(&run.cluster))
            .map_err(|e| format!("{e}; {resume}"))?
            .clone();
        if !cluster.generation().v4() {
            return Err(format!(
                "the inventory now renders etcd cluster {} for {} ({}), which runs no etcd RBAC; plan the SOP again ({resume})",
                cluster.name,
                cluster.generation().releases(),
                cluster.pigsty.why
            ));
        }
        self.etcd.remember(&cluster);
        Ok((inv, cluster))
    }

    /// The Patroni REST credentials of PostgreSQL cluster `pg`, read from the inventory now:
    /// they are never stored with a run, so a resumed run (or one walked by a restarted
    /// coordinator) reads them again, and fails with the reason if it cannot.
    async fn patroni_auth(&self, run: &RunRecord, pg: &str) -> Result<(String, String), String> {
        let inv = crate::model::inventory::Inventory::load_off_runtime(&self.inventory).await;
        patroni_credentials(inv.as_ref().map_err(String::as_str), pg, run)
    }

    /// Waits until `pg`'s VIP is on exactly one host, the leader's, asking each VIP host's
    /// agent for fresh facts.
    async fn vip_gate(&self, ids: &[String], pg: &PgRef) -> StepEnd {
        let hosts: Vec<IpAddr> = pg.members.iter().filter(|m| m.vip).map(|m| m.ip).collect();
        let round = std::sync::atomic::AtomicU32::new(0);
        let gate = until(self.timeouts.gate, gates::SLOW_PACE, || async {
            let n = round.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            match self.vip_once(ids, pg, &hosts, n).await {
                Ok(verdict) => verdict,
                Err(why) => Try::Again(why),
            }
        })
        .await;
        match gate {
            Ok(msg) => StepEnd::ok(pb::Outcome::Ok, msg),
            Err(why) => StepEnd::failed(format!(
                "the VIP of {} did not settle within {:?}: {}; the run halts here",
                pg.name,
                self.timeouts.gate,
                why.reason()
            )),
        }
    }

    async fn vip_once(
        &self,
        ids: &[String],
        pg: &PgRef,
        hosts: &[IpAddr],
        round: u32,
    ) -> Result<Try<String, String>, String> {
        let c = pg.cluster().await?;
        let leader = c
            .leader()
            .filter(|l| l.is_running())
            .ok_or_else(|| format!("{} has no running leader ({})", pg.name, c.summary()))?;
        let leader_ip = pg
            .node_of(leader)
            .map(|n| n.ip)
            .ok_or_else(|| format!("the leader {} is not in the inventory", leader.name))?;
        let asks = hosts.iter().enumerate().map(|(n, h)| {
            let id = format!(
                "{}-p{round}",
                ids.get(n).cloned().unwrap_or_else(|| format!("vip-{h}"))
            );
            self.agent_task(*h, id, pb::task::Kind::CollectFacts(pb::CollectFacts {}))
        });
        let ends = futures_util::future::join_all(asks).await;
        let mut holders = Vec::new();
        for (h, end) in hosts.iter().zip(ends) {
            if !end.ok {
                return Err(format!("no facts from {h}: {}", end.output));
            }
            let vip = self.registry.facts(*h).and_then(|f| f.vip);
            match vip {
                None => return Err(format!("{h} has no vip-manager config")),
                Some(v) if !v.error.is_empty() => return Err(format!("{h}: {}", v.error)),
                Some(v) if v.present => holders.push((*h, v.address)),
                Some(_) => {}
            }
        }
        Ok(gates::vip(&holders, &leader.name, leader_ip))
    }
}

/// The refusal of a membership check when etcd's member list no longer matches the
/// inventory the run was planned with (the member being added or removed aside).
fn roster_disagrees(ctx: &RunContext, members: &[MemberInfo], changing: &str) -> Option<StepEnd> {
    let roster = ctx.roster.as_ref()?;
    let problems = roster.compare(members, Some(changing));
    (!problems.is_empty()).then(|| {
        StepEnd::refused(format!(
            "{} (the run was planned against that inventory: abort it, fix pigsty.yml, plan again)",
            crate::sop::agreement::refusal(&roster.cluster, &problems)
        ))
    })
}

/// The member with `peer_url`, if listed.
/// The credentials of PostgreSQL cluster `pg` in the inventory as it is now (`inventory`, or
/// why it could not be read): its first instance's `patroni_username` / `patroni_password`,
/// as the plan used. When they cannot be found the message says why, and that the run is
/// planned from another inventory if the digest changed.
fn patroni_credentials(
    inventory: Result<&crate::model::inventory::Inventory, &str>,
    pg: &str,
    run: &RunRecord,
) -> Result<(String, String), String> {
    let resume = format!(
        "then `quorum run resume {id}`, or `quorum run abort {id}`",
        id = run.id
    );
    let inv = inventory.map_err(|e| {
        format!(
            "the Patroni REST credentials of {pg} are read from the inventory when a switchover needs them (they are never stored with a run), and it cannot be read: {e}; fix it, {resume}"
        )
    })?;
    let changed = if inv.digest() == run.inventory_digest {
        String::new()
    } else {
        format!(
            " (it changed since the run was planned: sha256 {} then, {} now)",
            short(&run.inventory_digest),
            short(inv.digest())
        )
    };
    let member = inv
        .pg_clusters()
        .iter()
        .find(|p| p.name == pg)
        .and_then(|p| p.members.first())
        .ok_or_else(|| {
            format!(
                "{} no longer defines PostgreSQL cluster {pg}{changed}, so its Patroni REST credentials (patroni_username / patroni_password, never stored with a run) cannot be read; restore it, {resume}",
                inv.file()
            )
        })?;
    Ok((
        member.patroni_username.clone(),
        member.patroni_password.clone(),
    ))
}

fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}

fn by_peer<'a>(members: &'a [MemberInfo], peer_url: &str) -> Option<&'a MemberInfo> {
    members
        .iter()
        .find(|m| m.peer_urls.iter().any(|u| u == peer_url))
}

fn service_kind(service: pb::Service, action: pb::Action) -> pb::task::Kind {
    pb::task::Kind::ServiceAction(pb::ServiceAction {
        service: service as i32,
        action: action as i32,
        if_changed: vec![],
        force: true,
        with_log: false,
    })
}

/// The step executors too long for a line of `exec_step`.
impl Runner {
    /// Restarts etcd on `host` if a write before it (`if_changed`) changed its config, or
    /// `force`; the quorum guard again right before the agent is told to.
    async fn restart_etcd(
        &self,
        run: &RunRecord,
        ctx: &RunContext,
        step: &StepRecord,
        host: IpAddr,
        if_changed: &[usize],
        force: bool,
    ) -> StepEnd {
        let Some(prior) = changed_before(run, if_changed, force) else {
            return StepEnd::ok(
                pb::Outcome::Skipped,
                "etcd.conf unchanged: no restart needed",
            );
        };
        if let Some(refused) = self.guard_again(run, step, ctx, host).await {
            return refused;
        }
        let kind = pb::task::Kind::ServiceAction(pb::ServiceAction {
            service: pb::Service::Etcd as i32,
            action: pb::Action::Restart as i32,
            if_changed: prior.iter().flat_map(|s| s.task_ids.clone()).collect(),
            force,
            with_log: false,
        });
        self.agent_task(host, first_task(step), kind).await
    }

    /// Wipes (or purges) etcd's data on `host`, only if it holds the member and cluster the
    /// plan names.
    async fn wipe_etcd_data(
        &self,
        ctx: &RunContext,
        step: &StepRecord,
        host: IpAddr,
        purge: bool,
        member_id: &Option<String>,
        cluster_id: &Option<String>,
    ) -> StepEnd {
        // A wipe planned with the member's id also names its cluster: asked now when the plan
        // could not, and left out when no member answers (the agent then checks the member id
        // alone).
        let cluster_id = match (member_id, cluster_id) {
            (Some(_), None) => self.cluster_id(ctx).await,
            (_, c) => c.clone(),
        };
        let task = pb::WipeEtcdData {
            purge,
            member_id: member_id.clone().unwrap_or_default(),
            cluster_id: cluster_id.unwrap_or_default(),
        };
        self.agent_task(host, first_task(step), pb::task::Kind::WipeEtcdData(task))
            .await
    }

    /// A verified snapshot kept on the coordinator; refused (nothing destroyed) without one.
    async fn snapshot_save(&self, run: &RunRecord, ctx: &RunContext, cluster: &str) -> StepEnd {
        let reason = format!("run {} ({})", run.id, run.sop);
        match self
            .snapshots
            .take(&self.etcd, cluster, &ctx.endpoints, &reason)
            .await
        {
            Ok(m) => StepEnd::ok(
                pb::Outcome::Changed,
                format!(
                    "snapshot {} saved: {} bytes, revision {}, sha256 {}, verified; restore steps: `quorum snapshot restore --plan {}`",
                    m.path, m.size, m.revision, m.sha256, m.id
                ),
            ),
            Err(e) => StepEnd::refused(format!(
                "{e}; nothing destructive was done. Make a member answer and `quorum run resume`, or abort and plan again with --no-snapshot to go on without one"
            )),
        }
    }

    /// Before a member leaves: etcd's list still matches the plan's, and every other voting
    /// member is healthy (a member already gone passes).
    async fn member_remove_check(&self, ctx: &RunContext, host: IpAddr, peer_url: &str) -> StepEnd {
        let members = match self.members(ctx).await {
            Err(e) => return StepEnd::refused(e),
            Ok(m) => m,
        };
        if let Some(refused) = roster_disagrees(ctx, &members, peer_url) {
            return refused;
        }
        if !members
            .iter()
            .any(|m| m.peer_urls.iter().any(|u| u == peer_url))
        {
            return StepEnd::ok(pb::Outcome::Ok, format!("{host} is no longer a member"));
        }
        match self.removal_allowed(&members, host).await {
            Ok(None) => StepEnd::ok(pb::Outcome::Ok, "every other voting member is healthy"),
            Ok(Some(note)) => StepEnd::ok(pb::Outcome::Ok, note),
            Err(why) => StepEnd::refused(format!(
                "{why}; removing {host} now would put quorum at risk"
            )),
        }
    }

    /// Wipes a removed member's data once etcd no longer lists it, only if the data dir holds
    /// that member of this cluster.
    async fn wipe_removed_member(
        &self,
        ctx: &RunContext,
        step: &StepRecord,
        host: IpAddr,
        peer_url: &str,
        member_id: &Option<String>,
    ) -> StepEnd {
        let cluster = match self.etcd.member_list_of_cluster(&ctx.endpoints).await {
            Err(e) => {
                return StepEnd::refused(format!(
                    "cannot read the member list: {e}; cannot prove {host} left, so its data stays"
                ))
            }
            Ok((_, members))
                if members
                    .iter()
                    .any(|m| m.peer_urls.iter().any(|u| u == peer_url)) =>
            {
                return StepEnd::refused(format!(
                    "{host} is still listed as a member: refusing to wipe a live member's data"
                ))
            }
            Ok((cluster, _)) => cluster,
        };
        // The member left this cluster, so its data names this cluster's id. Runs planned
        // before ids were known name none and are not checked.
        let task = pb::WipeEtcdData {
            purge: false,
            member_id: member_id.clone().unwrap_or_default(),
            cluster_id: match member_id {
                Some(_) if cluster != 0 => format!("{cluster:x}"),
                _ => String::new(),
            },
        };
        self.agent_task(host, first_task(step), pb::task::Kind::WipeEtcdData(task))
            .await
    }

    /// Points Patroni on `host` at the etcd hosts, then reloads it, or restarts it after its
    /// Patroni guard again.
    async fn set_patroni_hosts(
        &self,
        run: &RunRecord,
        step: &StepRecord,
        host: IpAddr,
        hosts: &[String],
        restart: bool,
    ) -> StepEnd {
        if restart {
            if let Some(pg) = guarding_patroni(run, step.index, host) {
                let guard = self.patroni_guard(host, pg).await;
                if !guard.ok {
                    return guard;
                }
            }
        }
        let task = pb::SetPatroniDcsHosts {
            hosts: hosts.to_vec(),
            restart,
        };
        self.agent_task(
            host,
            first_task(step),
            pb::task::Kind::SetPatroniDcsHosts(task),
        )
        .await
    }
}

/// The id of a single-host step's task.
fn first_task(step: &StepRecord) -> String {
    step.task_ids.first().cloned().unwrap_or_default()
}

/// The writes a restart (or the leadership hand-over before it) follows, if it is to happen:
/// `None` when none of them changed anything (and it is not forced).
fn changed_before<'a>(
    run: &'a RunRecord,
    if_changed: &[usize],
    force: bool,
) -> Option<Vec<&'a StepRecord>> {
    let prior: Vec<&StepRecord> = if_changed
        .iter()
        .filter_map(|i| run.steps.get(*i))
        .collect();
    let unchanged = !prior.is_empty()
        && prior
            .iter()
            .all(|s| outcome(&s.outcome) != pb::Outcome::Changed);
    (force || !unchanged).then_some(prior)
}

/// Of the members `prefer` names, those whose restart earlier in this run really happened.
fn restarted_before(run: &RunRecord, index: usize, prefer: &[IpAddr]) -> Vec<IpAddr> {
    prefer
        .iter()
        .copied()
        .filter(|h| {
            run.steps[..index.min(run.steps.len())].iter().any(|s| {
                matches!(s.kind, StepKind::RestartEtcd { host, .. } if host == *h)
                    && outcome(&s.outcome) == pb::Outcome::Changed
            })
        })
        .collect()
}

fn join_ends(hosts: &[IpAddr], ends: Vec<StepEnd>) -> StepEnd {
    let ok = ends.iter().all(|e| e.ok);
    let refused = ends.iter().any(|e| e.outcome == pb::Outcome::Refused);
    let output = hosts
        .iter()
        .zip(&ends)
        .map(|(h, e)| format!("{h}: {} {}", outcome_word(e.outcome), e.output.trim()))
        .collect::<Vec<_>>()
        .join("\n");
    let outcome = if ok {
        if ends.iter().any(|e| e.outcome == pb::Outcome::Changed) {
            pb::Outcome::Changed
        } else {
            pb::Outcome::Ok
        }
    } else if refused {
        pb::Outcome::Refused
    } else {
        pb::Outcome::Failed
    };
    // Answered from the journals only if every host's task was.
    let journal = ends
        .iter()
        .map(|e| e.journal)
        .collect::<Option<Vec<RanBefore>>>()
        .and_then(|all| {
            Some(RanBefore {
                started_ms: all.iter().map(|j| j.started_ms).min()?,
                finished_ms: all.iter().map(|j| j.finished_ms).max()?,
            })
        });
    StepEnd {
        ok,
        outcome,
        output,
        journal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_read_from_urls() {
        assert_eq!(
            host_of_url("https://10.10.10.10:2380"),
            "10.10.10.10".parse().ok()
        );
        assert_eq!(host_of_url("https://[::1]:2379"), "::1".parse().ok());
        assert_eq!(host_of_url("nonsense"), None);
    }

    /// Probe L2: the credentials come from the inventory at switchover time, and a resumed
    /// run whose inventory lost the cluster fails with a message saying so.
    #[test]
    fn patroni_credentials_are_read_from_the_inventory() -> Result<(), Box<dyn std::error::Error>> {
        let text = "all:\n  children:\n    pg-test:\n      hosts:\n        10.0.0.21: { pg_seq: 1, pg_role: primary }\n      vars: { pg_cluster: pg-test, patroni_password: S3cr3t }\n";
        let inv = crate::model::inventory::Inventory::parse("pigsty.yml", text)?;
        let run = RunRecord {
            id: "r1".into(),
            sop: "patroni-reload".into(),
            cluster: "etcd".into(),
            context: "{}".into(),
            state: run_state::RUNNING.into(),
            started_by: "tester".into(),
            inventory_digest: inv.digest().into(),
            created_ms: 0,
            finished_ms: 0,
            error: String::new(),
            steps: vec![],
        };
        assert_eq!(
            patroni_credentials(Ok(&inv), "pg-test", &run)?,
            ("postgres".to_string(), "S3cr3t".to_string())
        );
        let other = crate::model::inventory::Inventory::parse(
            "pigsty.yml",
            &text.replace("pg-test", "pg-other"),
        )?;
        let err = patroni_credentials(Ok(&other), "pg-test", &run).unwrap_err();
        assert!(
            err.contains("pigsty.yml no longer defines PostgreSQL cluster pg-test (it changed since the run was planned")
                && err.contains("quorum run resume r1"),
            "{err}"
        );
        let err = patroni_credentials(Err("cannot read pigsty.yml"), "pg-test", &run).unwrap_err();
        assert!(err.contains("cannot read pigsty.yml"), "{err}");
        Ok(())
    }

    #[test]
    fn task_ids_are_stable_per_attempt() {
        let ip: IpAddr = "127.0.0.11"
            .parse()
            .unwrap_or(IpAddr::from([127, 0, 0, 11]));
        assert_eq!(task_id("r-1", 3, 1, ip), task_id("r-1", 3, 1, ip));
        assert_ne!(task_id("r-1", 3, 1, ip), task_id("r-1", 3, 2, ip));
    }

    #[test]
    fn a_removal_with_the_safeguard_set_is_refused_even_with_etcd_stopped() {
        let h = IpAddr::from([127, 0, 0, 11]);
        let rules = |safeguard, clean, ignore, removal| Safeguard {
            safeguard,
            clean,
            ignore,
            removal,
        };
        // H1: every member stopped, etcd_safeguard set: a remove must still refuse.
        let refusal = rules(true, true, false, true).refusal(h, false, false);
        assert!(
            refusal
                .as_deref()
                .is_some_and(|r| r.contains("etcd_safeguard is enabled")),
            "{refusal:?}"
        );
        // A create with the safeguard set touches no stopped instance, as in Pigsty.
        assert_eq!(
            rules(true, true, false, false).refusal(h, false, false),
            None
        );
        assert!(rules(true, true, false, false)
            .refusal(h, true, false)
            .is_some());
        // etcd_clean off refuses only a running instance.
        assert!(rules(false, false, false, true)
            .refusal(h, true, false)
            .is_some());
        assert_eq!(
            rules(false, false, false, true).refusal(h, false, false),
            None
        );
        // A purge ignores both, never the host's local safeguard.
        assert_eq!(rules(true, false, true, true).refusal(h, true, false), None);
        assert!(rules(false, true, true, true)
            .refusal(h, false, true)
            .is_some());
    }

    #[test]
    fn a_restart_after_a_leadership_move_still_rechecks_its_guard() {
        // A roll puts MoveLeaderAway between the leader's guard and its restart; the restart
        // must still re-check the guard as it acts (e2e probe F1).
        let h = IpAddr::from([127, 0, 0, 11]);
        let other = IpAddr::from([127, 0, 0, 12]);
        let kinds = vec![
            StepKind::QuorumGuard { host: h },
            StepKind::WriteEtcdConf {
                host: h,
                conf: None,
                bootstrap_only: false,
            },
            StepKind::MoveLeaderAway {
                host: h,
                peer_url: "https://127.0.0.11:2380".into(),
                prefer: vec![other],
                if_changed: vec![1],
                force: true,
            },
            StepKind::RestartEtcd {
                host: h,
                if_changed: vec![1],
                force: true,
            },
            // Another host's move in between would not count.
            StepKind::QuorumGuard { host: other },
            StepKind::MoveLeaderAway {
                host: h,
                peer_url: "https://127.0.0.11:2380".into(),
                prefer: vec![],
                if_changed: vec![],
                force: true,
            },
            StepKind::RestartEtcd {
                host: other,
                if_changed: vec![],
                force: true,
            },
        ];
        let run = RunRecord {
            id: "r".into(),
            sop: "config-reload".into(),
            cluster: "etcd".into(),
            context: String::new(),
            state: run_state::RUNNING.into(),
            started_by: "t".into(),
            inventory_digest: String::new(),
            created_ms: 0,
            finished_ms: 0,
            error: String::new(),
            steps: kinds
                .into_iter()
                .enumerate()
                .map(|(index, kind)| StepRecord {
                    index,
                    host: kind.hosts_label(),
                    description: kind.describe(),
                    kind,
                    state: step_state::PENDING.into(),
                    task_ids: vec![],
                    attempt: 0,
                    outcome: String::new(),
                    output: String::new(),
                    started_ms: 0,
                    finished_ms: 0,
                    journal: None,
                })
                .collect(),
        };
        assert!(guarded_by_plan(&run, 3, h));
        assert!(!guarded_by_plan(&run, 6, other));
    }

    #[test]
    fn membership_checks_compare_with_the_inventory_the_run_was_planned_with() {
        let member = |i: u8, learner: bool| MemberInfo {
            id: u64::from(i),
            name: format!("etcd-{i}"),
            peer_urls: vec![format!("https://127.0.0.{}:2380", 10 + i)],
            client_urls: vec![format!("https://127.0.0.{}:2379", 10 + i)],
            is_learner: learner,
        };
        let spec = |i: u8| crate::sop::plan::MemberSpec {
            ip: IpAddr::from([127, 0, 0, 10 + i]),
            name: format!("etcd-{i}"),
            client_url: format!("https://127.0.0.{}:2379", 10 + i),
            peer_url: format!("https://127.0.0.{}:2380", 10 + i),
        };
        // A member add of etcd-4, planned with etcd-1..3 in the inventory.
        let ctx = RunContext {
            roster: Some(crate::sop::agreement::Roster {
                cluster: "etcd".into(),
                group: "etcd".into(),
                client_port: 2379,
                peer_port: 2380,
                members: (1..=4).map(spec).collect(),
            }),
            ..Default::default()
        };
        let joining = "https://127.0.0.14:2380";
        let live = vec![member(1, false), member(2, false), member(3, false)];
        assert!(roster_disagrees(&ctx, &live, joining).is_none());
        let mut with_learner = live.clone();
        with_learner.push(member(4, true));
        assert!(roster_disagrees(&ctx, &with_learner, joining).is_none());
        // Someone added etcd-5 by hand since the plan: refused, with the line to add.
        let mut grown = live.clone();
        grown.push(member(5, false));
        let refused = roster_disagrees(&ctx, &grown, joining).expect("refused");
        assert_eq!(refused.outcome, pb::Outcome::Refused);
        assert!(
            refused
                .output
                .contains("add `127.0.0.15: { etcd_seq: 5 }` under all.children.etcd.hosts"),
            "{}",
            refused.output
        );
        // Runs planned before the roster was stored are not compared.
        assert!(roster_disagrees(&RunContext::default(), &grown, joining).is_none());
    }
}
