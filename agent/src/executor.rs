//! The executors of the agent's closed task set. Each task maps to a path or unit fixed in
//! the agent's own config; every task is journaled, so a redelivered one is answered from the
//! journal instead of running twice; and the safety rules (local safeguard, no wipe of a
//! running etcd) are checked here, on the host, whatever the coordinator asked.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use quorum_proto::pb;
use quorum_proto::pb::task::Kind;
use quorum_proto::render;

use crate::backend::{Backend, Svc};
use crate::config::AgentConfig;
use crate::datadir::DataDir;
use crate::files::{self, Ids, Links, Managed, Written};
use crate::journal::{Journal, Seen, StaleEpoch};
use crate::wal;

/// Largest content a write task may carry.
pub const MAX_CONTENT: usize = 4 * 1024 * 1024;
/// Largest file content reported in facts (non-secret files only).
const FACT_CONTENT_CAP: usize = 64 * 1024;
/// Lines of a service's log that go with a failed start or a status asked with its log.
const LOG_LINES: usize = 20;
/// Lines read from the end of the log to look for errors above those last lines.
const LOG_SCAN_LINES: usize = 200;
/// Error lines from above the last lines that go along (the cause often scrolled away).
const LOG_ERROR_LINES: usize = 5;

/// When the certificate at `path` stops being valid, Unix seconds.
fn cert_not_after(path: &Path) -> Option<i64> {
    let pem = std::fs::read(path).ok()?;
    let der = quorum_proto::tls::first_cert_der(&pem)?;
    quorum_proto::identity::validity_from_der(&der)
        .ok()
        .map(|(_, not_after)| not_after)
}

/// How long Prometheus takes at most to apply a removed target file (its discovery manager
/// sends updates every 5 s), before it may be reloaded.
const PROMETHEUS_SD_SETTLE: std::time::Duration = std::time::Duration::from_secs(6);

/// What a partial monitoring change did before it stopped, to append to its error.
fn done_before(done: &[String]) -> String {
    if done.is_empty() {
        String::new()
    } else {
        format!(" (before that: {})", done.join("; "))
    }
}

/// `path`, a regular file (never a link) whose directory must really lie inside `root`.
fn inside<'a>(path: &'a Path, root: &'a [std::path::PathBuf]) -> Managed<'a> {
    Managed {
        path,
        prefixes: root,
        links: Links::Refuse,
    }
}

/// The report of a write of `path`.
fn written(path: &Path, result: Result<Written, files::FileError>) -> TaskReport {
    match result {
        Ok(Written::Changed) => {
            TaskReport::new(pb::Outcome::Changed, format!("wrote {}", path.display()))
        }
        Ok(Written::Unchanged) => TaskReport::new(
            pb::Outcome::Unchanged,
            format!("{} already up to date", path.display()),
        ),
        Err(e) if e.is_refusal() => TaskReport::refused(format!("{e}; it was not written")),
        Err(e) => TaskReport::failed(e.to_string()),
    }
}

/// A task's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskReport {
    /// The outcome.
    pub outcome: pb::Outcome,
    /// What happened, for the operator.
    pub output: String,
    /// Set when the report comes from the journal: when the task really ran.
    pub journal: Option<pb::JournalAnswer>,
}

impl TaskReport {
    fn new(outcome: pb::Outcome, output: impl Into<String>) -> Self {
        Self {
            outcome,
            output: output.into(),
            journal: None,
        }
    }
    fn refused(output: impl Into<String>) -> Self {
        Self::new(pb::Outcome::Refused, output)
    }
    fn failed(output: impl Into<String>) -> Self {
        Self::new(pb::Outcome::Failed, output)
    }
}

/// Start-up errors of the executor.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The journal could not be opened.
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    /// An owner in the config does not resolve.
    #[error("agent config {config}: owners: {message}")]
    Owner {
        /// Config path.
        config: String,
        /// What is wrong.
        message: String,
    },
}

/// What the agent counts about itself since it started; reported with its facts (the
/// coordinator exports them per agent: agents open no listener).
#[derive(Debug)]
pub struct Counters {
    started_unix: i64,
    tasks: Mutex<BTreeMap<&'static str, u64>>,
    journal_answers: AtomicU64,
    sessions: AtomicU64,
    connect_failures: AtomicU64,
    renewals: AtomicU64,
}

impl Counters {
    fn new() -> Self {
        Self {
            started_unix: quorum_proto::tls::unix_now(),
            tasks: Mutex::new(BTreeMap::new()),
            journal_answers: AtomicU64::new(0),
            sessions: AtomicU64::new(0),
            connect_failures: AtomicU64::new(0),
            renewals: AtomicU64::new(0),
        }
    }

    fn ran(&self, outcome: pb::Outcome) {
        let word = match outcome {
            pb::Outcome::Changed => "changed",
            pb::Outcome::Unchanged => "unchanged",
            pb::Outcome::Skipped => "skipped",
            pb::Outcome::Refused => "refused",
            pb::Outcome::Failed => "failed",
            pb::Outcome::Ok => "ok",
            pb::Outcome::Unspecified => "unspecified",
        };
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        *tasks.entry(word).or_default() += 1;
    }

    /// A session with the coordinator opened (its first poll answered).
    pub fn session_opened(&self) {
        self.sessions.fetch_add(1, Ordering::Relaxed);
    }

    /// A session ended before its first poll was answered.
    pub fn connect_failed(&self) {
        self.connect_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// The agent renewed its certificate.
    pub fn renewed(&self) {
        self.renewals.fetch_add(1, Ordering::Relaxed);
    }

    fn report(&self) -> pb::AgentCounters {
        let tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        pb::AgentCounters {
            started_unix: self.started_unix,
            tasks: tasks.iter().map(|(k, v)| ((*k).to_string(), *v)).collect(),
            journal_answers: self.journal_answers.load(Ordering::Relaxed),
            sessions: self.sessions.load(Ordering::Relaxed),
            connect_failures: self.connect_failures.load(Ordering::Relaxed),
            journal_bytes: 0,
            cert_not_after_unix: 0,
            cert_renewals: self.renewals.load(Ordering::Relaxed),
        }
    }
}

/// Runs tasks on this host.
pub struct Executor {
    /// What the agent counts about itself.
    pub counters: Counters,
    cfg: Arc<AgentConfig>,
    journal: Journal,
    backend: Backend,
    etcd_owner: Ids,
    profile_owner: Ids,
    /// Whether the last facts could not tell etcd's state (logged once per change, not at
    /// every poll).
    etcd_unknown: AtomicBool,
}

fn kind_name(kind: &Kind) -> &'static str {
    match kind {
        Kind::WriteEtcdConf(_) => "WriteEtcdConf",
        Kind::WriteEtcdCerts(_) => "WriteEtcdCerts",
        Kind::WriteEtcdctlProfile(_) => "WriteEtcdctlProfile",
        Kind::ServiceAction(_) => "ServiceAction",
        Kind::SetPatroniDcsHosts(_) => "SetPatroniDcsHosts",
        Kind::SetVipEndpoints(_) => "SetVipEndpoints",
        Kind::WipeEtcdData(_) => "WipeEtcdData",
        Kind::CollectFacts(_) => "CollectFacts",
        Kind::RetireEtcd(_) => "RetireEtcd",
        Kind::WriteEtcdPass(_) => "WriteEtcdPass",
        Kind::WriteMonitoring(_) => "WriteMonitoring",
    }
}

/// Tasks that must not run again after the agent died inside them: repeating them could
/// restart or wipe something a second time.
fn repeat_is_unsafe(kind: &Kind) -> bool {
    match kind {
        Kind::WipeEtcdData(_) | Kind::SetVipEndpoints(_) => true,
        Kind::SetPatroniDcsHosts(t) => t.restart,
        Kind::ServiceAction(a) => {
            a.action == pb::Action::Restart as i32 || a.action == pb::Action::Stop as i32
        }
        _ => false,
    }
}

/// Tasks that only read: safe to run again, and no `if_changed` ever names them, so they
/// skip the journal and its two fsyncs (they sit on the dispatch path of every facts task).
fn read_only(kind: &Kind) -> bool {
    match kind {
        Kind::CollectFacts(_) => true,
        Kind::ServiceAction(a) => a.action == pb::Action::Status as i32,
        _ => false,
    }
}

impl Executor {
    /// An executor for `cfg`; opens the journal and resolves the configured owners.
    pub fn new(cfg: Arc<AgentConfig>) -> Result<Self, ExecError> {
        let journal = Journal::open(&cfg.paths.journal_dir)?;
        let owner = |o: &crate::config::Owner| {
            files::resolve_owner(&o.user, &o.group).map_err(|message| ExecError::Owner {
                config: cfg.source.display().to_string(),
                message,
            })
        };
        let etcd_owner = owner(&cfg.owners.etcd)?;
        let profile_owner = owner(&cfg.owners.profile)?;
        let backend = Backend::new(cfg.clone(), cfg.paths.journal_dir.clone());
        Ok(Self {
            cfg,
            journal,
            backend,
            etcd_owner,
            profile_owner,
            etcd_unknown: AtomicBool::new(false),
            counters: Counters::new(),
        })
    }

    /// A managed path with this agent's prefixes and the link rule for it.
    fn managed<'a>(&'a self, path: &'a Path) -> Managed<'a> {
        Managed {
            path,
            prefixes: &self.cfg.allowed_prefixes,
            links: if self.cfg.paths.may_be_link(path) {
                Links::WriteThrough
            } else {
                Links::Refuse
            },
        }
    }

    /// The highest coordinator epoch a task was taken from (0: none yet).
    pub fn epoch(&self) -> u64 {
        self.journal.epoch()
    }

    /// Runs `task` once: a task id already finished is answered from the journal.
    pub async fn execute(&self, task: &pb::Task) -> TaskReport {
        if task.id.is_empty() || task.id.len() > 256 {
            return TaskReport::refused(
                "the task has no valid id (1-256 characters); nothing was done",
            );
        }
        let Some(kind) = &task.kind else {
            return TaskReport::refused(format!(
                "task {} is of a kind this agent (version {}) does not know; nothing was done. Upgrade the agent, or check the coordinator's version",
                task.id,
                env!("CARGO_PKG_VERSION")
            ));
        };
        // Fencing: a coordinator that lost its lease to a newer one acts through no agent.
        // Read-only tasks included: its view of the fleet is not to be trusted either.
        match self.journal.admit_epoch(task.epoch, &task.epoch_holder) {
            Ok(Ok(())) => {}
            Ok(Err(StaleEpoch {
                other_holder: Some((theirs, ours)),
                task: epoch,
                ..
            })) => {
                tracing::error!(
                    task = %task.id,
                    epoch,
                    holder = %theirs,
                    known_holder = %ours,
                    "refused a task of epoch {epoch} from {theirs}: this agent took that epoch's tasks from {ours}; two coordinators claim one epoch (a standalone one beside the shared store's leader?)"
                );
                self.counters.ran(pb::Outcome::Refused);
                return TaskReport::refused(format!(
                    "task {} comes from coordinator {theirs} with epoch {epoch}, which this agent took from coordinator {ours}: two coordinators claim one epoch; stop the one that should not run (a `serve --standalone` beside the shared store's leader?) and run `quorum store export`; nothing was done",
                    task.id
                ));
            }
            Ok(Err(stale)) => {
                tracing::error!(
                    task = %task.id,
                    task_epoch = stale.task,
                    highest_epoch = stale.highest,
                    "refused a task from a fenced coordinator: its epoch {} is below {}, the highest this agent took a task from; a newer coordinator holds the lease",
                    stale.task,
                    stale.highest
                );
                self.counters.ran(pb::Outcome::Refused);
                return TaskReport::refused(format!(
                    "task {} comes from coordinator epoch {}, below epoch {} this agent already took tasks from: that coordinator lost its lease to a newer one and is fenced; nothing was done",
                    task.id, stale.task, stale.highest
                ));
            }
            Err(e) => {
                return TaskReport::failed(format!(
                    "cannot record the coordinator's epoch {}: {e}; nothing was done",
                    task.epoch
                ))
            }
        }
        if read_only(kind) {
            let report = self.run(kind).await;
            self.counters.ran(report.outcome);
            return report;
        }
        match self.journal.seen(&task.id) {
            Seen::Finished(outcome, output) => {
                self.counters
                    .journal_answers
                    .fetch_add(1, Ordering::Relaxed);
                let (started_unix_ms, finished_unix_ms) =
                    self.journal.ran(&task.id).unwrap_or((0, 0));
                let took = if started_unix_ms > 0 && finished_unix_ms >= started_unix_ms {
                    format!(
                        " and took {:.1} s",
                        (finished_unix_ms - started_unix_ms) as f64 / 1000.0
                    )
                } else {
                    String::new()
                };
                let mut report = TaskReport::new(
                    outcome,
                    format!(
                        "{output}\n(answered from the journal: task {} already ran{took})",
                        task.id
                    )
                    .trim()
                    .to_string(),
                );
                report.journal = Some(pb::JournalAnswer {
                    started_unix_ms,
                    finished_unix_ms,
                });
                return report;
            }
            Seen::Interrupted if repeat_is_unsafe(kind) => {
                if let Some(report) = self.carried_out_before_the_stop(&task.id, kind).await {
                    let _ = self
                        .journal
                        .finish(&task.id, report.outcome, &report.output);
                    return report;
                }
                let report = TaskReport::failed(format!(
                    "task {} ({}) was interrupted by an agent stop while running; it is not run again because that could repeat a restart or a wipe. Check the service on this host, then resume the run",
                    task.id,
                    kind_name(kind)
                ));
                let _ = self
                    .journal
                    .finish(&task.id, report.outcome, &report.output);
                return report;
            }
            _ => {}
        }
        if let Err(e) = self.journal.start(&task.id) {
            return TaskReport::failed(format!("{e}; the task was not run"));
        }
        let report = self.run(kind).await;
        self.counters.ran(report.outcome);
        if let Err(e) = self
            .journal
            .finish(&task.id, report.outcome, &report.output)
        {
            tracing::error!("{e}");
        }
        report
    }

    async fn run(&self, kind: &Kind) -> TaskReport {
        let p = &self.cfg.paths;
        match kind {
            Kind::WriteEtcdConf(t) => {
                match render_typed(t.conf.as_ref(), "etcd.conf", render::etcd_conf) {
                    Ok(text)
                        if self.alike(&p.etcd_conf, &text, |a, b| {
                            render::same_etcd_conf(a, b, &[])
                        }) =>
                    {
                        Self::alike_report(&p.etcd_conf)
                    }
                    Ok(text) => self.write(&p.etcd_conf, &text, 0o644, self.etcd_owner),
                    Err(r) => r,
                }
            }
            Kind::WriteEtcdctlProfile(t) => self.write_profile(t.profile.as_ref()),
            Kind::WriteEtcdPass(t) => self.write_pass(&t.password),
            Kind::WriteEtcdCerts(t) => self.write_certs(t),
            Kind::ServiceAction(a) => self.service_action(a).await,
            Kind::SetPatroniDcsHosts(t) => self.set_patroni_hosts(t).await,
            Kind::SetVipEndpoints(t) => self.set_vip_endpoints(t).await,
            Kind::WipeEtcdData(t) => self.wipe(t).await,
            Kind::CollectFacts(_) => TaskReport::new(pb::Outcome::Ok, "facts collected"),
            Kind::RetireEtcd(_) => self.retire().await,
            Kind::WriteMonitoring(t) => self.write_monitoring(t).await,
        }
    }

    /// Registers the coordinator with Pigsty's metrics stack on this infra host (the target
    /// file and Quorum's rules, where `monitoring.<layout>` says), or removes both; reloads
    /// the rule engine when the rules changed and it runs. The directories must already be
    /// there: Pigsty's infra role makes them, and a host without them is no infra node of
    /// that layout. Every write and removal stays inside the layout's `root` as it really is
    /// (the directories below it belong to the metrics stack's user, who could otherwise
    /// swap one for a link elsewhere).
    async fn write_monitoring(&self, t: &pb::WriteMonitoring) -> TaskReport {
        let (paths, svc, targets_mode, stack) = match pb::MonitoringLayout::try_from(t.layout) {
            Ok(pb::MonitoringLayout::Victoria) => (
                &self.cfg.monitoring.victoria,
                Svc::Vmalert,
                0o640,
                "Pigsty v4 (VictoriaMetrics)",
            ),
            Ok(pb::MonitoringLayout::Prometheus) => (
                &self.cfg.monitoring.prometheus,
                Svc::Prometheus,
                0o644,
                "Pigsty v3 (Prometheus)",
            ),
            Err(_) => {
                return TaskReport::refused(format!(
                    "monitoring layout {} is not one this agent knows; nothing was written",
                    t.layout
                ))
            }
        };
        let key = if svc == Svc::Vmalert {
            "monitoring.victoria"
        } else {
            "monitoring.prometheus"
        };
        let cfg = self.cfg.source.display();
        let targets = if t.remove {
            None
        } else {
            match render::monitor_targets(t) {
                Ok(text) => Some(text),
                Err(e) => return TaskReport::refused(format!("{e}; nothing was written")),
            }
        };
        let root = match std::fs::canonicalize(&paths.root) {
            Ok(real) if files::under_prefixes(&real, &self.cfg.allowed_prefixes, true) => real,
            Ok(real) => {
                return TaskReport::refused(format!(
                    "{} ({key}.root in {cfg}) resolves to {}, outside every allowed prefix; nothing was changed",
                    paths.root.display(),
                    real.display()
                ))
            }
            Err(_) if t.remove => {
                return TaskReport::new(
                    pb::Outcome::Unchanged,
                    format!("{} does not exist: nothing to remove", paths.root.display()),
                )
            }
            Err(e) => {
                return TaskReport::refused(format!(
                    "{} cannot be resolved ({e}), so this host is no infra node of {stack}, whose infra role makes it (or {key}.root in {cfg} names another place); nothing was written",
                    paths.root.display()
                ))
            }
        };
        let confined = [root];

        let marker = self.cfg.paths.journal_dir.join("monitoring-reload-pending");
        let mut out = Vec::new();
        let mut changed = false;
        let mut rules_changed = false;
        if t.remove {
            for (what, path) in [("targets", &paths.targets), ("rules", &paths.rules)] {
                if what == "rules" && changed && svc == Svc::Prometheus && paths.rules.exists() {
                    // Prometheus (2.42, Pigsty v3's) keeps the targets of a file removed
                    // just before a reload: its discovery manager passes changes on at most
                    // every 5 s, and a reload in between loses the removal. The rules'
                    // reload waits until the removal has been passed on.
                    tokio::time::sleep(PROMETHEUS_SD_SETTLE).await;
                }
                match inside(path, &confined).remove() {
                    Ok(true) => {
                        changed = true;
                        rules_changed |= what == "rules";
                        out.push(format!("removed {}", path.display()));
                    }
                    Ok(false) => out.push(format!("{} was not there", path.display())),
                    Err(e) if e.is_refusal() => {
                        return TaskReport::refused(format!("{e}{}", done_before(&out)))
                    }
                    Err(e) => return TaskReport::failed(format!("{e}{}", done_before(&out))),
                }
            }
        } else {
            for path in [&paths.targets, &paths.rules] {
                let dir = path.parent().unwrap_or(Path::new("/"));
                if !dir.is_dir() {
                    return TaskReport::refused(format!(
                        "{} does not exist, so this host is no infra node of {stack}, whose infra role makes that directory (or {key} in {cfg} names another place); nothing was written",
                        dir.display(),
                    ));
                }
            }
            let owner = match files::resolve_owner(&paths.owner.user, &paths.owner.group) {
                Ok(ids) => ids,
                Err(e) => {
                    return TaskReport::refused(format!(
                        "{key}.owner in {cfg}: {e}; nothing was written"
                    ))
                }
            };
            let text = targets.unwrap_or_default();
            for (what, path, content, mode) in [
                ("targets", &paths.targets, text.as_str(), targets_mode),
                ("rules", &paths.rules, render::QUORUM_RULES, 0o644),
            ] {
                let r = written(
                    path,
                    inside(path, &confined).write(content.as_bytes(), mode, Some(owner)),
                );
                match r.outcome {
                    pb::Outcome::Changed => {
                        changed = true;
                        rules_changed |= what == "rules";
                    }
                    pb::Outcome::Unchanged => {}
                    _ => {
                        return TaskReport::new(
                            r.outcome,
                            format!("{}{}", r.output, done_before(&out)),
                        )
                    }
                }
                out.push(r.output);
            }
        }
        // A reload that failed before is tried again, also when nothing changed now.
        if rules_changed || marker.exists() {
            match self.reload_rule_engine(svc).await {
                Ok(said) => {
                    let _ = std::fs::remove_file(&marker);
                    out.push(said);
                }
                Err(why) => {
                    if let Err(e) = std::fs::write(&marker, b"") {
                        tracing::warn!(
                            "cannot mark the rule engine's reload as pending ({}): {e}",
                            marker.display()
                        );
                    }
                    out.push(why);
                    return TaskReport::failed(out.join("\n"));
                }
            }
        }
        let outcome = if changed {
            pb::Outcome::Changed
        } else {
            pb::Outcome::Unchanged
        };
        TaskReport::new(outcome, out.join("\n"))
    }

    /// Reloads the rule engine so it reads the rules now, when it runs. `Ok` says what
    /// happened (also when there was nothing to reload); `Err` that the reload failed.
    async fn reload_rule_engine(&self, svc: Svc) -> Result<String, String> {
        let name = svc.fact_key();
        if !self.backend.manages(svc) {
            return Ok(format!(
                "{name} is not managed by this agent (no exec.{} in {}): reload it to load the rules",
                svc.exec_key(),
                self.cfg.source.display()
            ));
        }
        match self.backend.status(svc).await {
            pb::ServiceState::Active => match self.backend.run(svc, "reload").await {
                Ok(_) => Ok(format!("reloaded {name}: the rules are loaded")),
                Err(e) => Err(format!(
                    "the files are in place, but reloading {name} failed: {e}; fix that, then run `quorum monitor register` (or deregister) again: it retries the reload"
                )),
            },
            _ => Ok(format!(
                "{name} is not running here: it loads the rules when it starts"
            )),
        }
    }

    fn write(&self, path: &Path, content: &str, mode: u32, owner: Ids) -> TaskReport {
        if content.len() > MAX_CONTENT {
            return TaskReport::refused(format!(
                "content of {} bytes is over the {MAX_CONTENT}-byte limit; {} was not touched",
                content.len(),
                path.display()
            ));
        }
        written(
            path,
            self.managed(path)
                .write(content.as_bytes(), mode, Some(owner)),
        )
    }

    /// The etcdctl profile, with the owner and mode of its Pigsty generation. Its root
    /// password block may only read this agent's own password file.
    fn write_profile(&self, profile: Option<&pb::EtcdctlProfile>) -> TaskReport {
        let text = match render_typed(profile, "the etcdctl profile", render::etcdctl_profile) {
            Ok(text) => text,
            Err(r) => return r,
        };
        let p = &self.cfg.paths;
        let (file, pass_file) = match profile {
            Some(t) => (t.file(), t.pass_file.as_str()),
            None => (pb::ProfileFile::Root0644, ""),
        };
        let own = p.etcd_pass();
        if profile.is_some_and(|t| !t.login_users.is_empty()) && Path::new(pass_file) != own {
            return TaskReport::refused(format!(
                "the profile would read the root password from {pass_file}, but this agent keeps it at {} (paths.etcd_pass in its agent.yml); set quorum_etcd_conf_dir in pigsty.yml to that directory; {} was not touched",
                own.display(),
                p.etcdctl_profile.display()
            ));
        }
        if self.alike(&p.etcdctl_profile, &text, render::same_profile) {
            return Self::alike_report(&p.etcdctl_profile);
        }
        let (mode, owner) = match file {
            pb::ProfileFile::Root0644 => (0o644, self.profile_owner),
            pb::ProfileFile::Root0755 => (0o755, self.profile_owner),
            pb::ProfileFile::Etcd0755 => (0o755, self.etcd_owner),
        };
        self.write(&p.etcdctl_profile, &text, mode, owner)
    }

    /// Whether the file at `path` already says what `new` says (as `same` reads them),
    /// though its bytes differ: a file Pigsty rendered, which is left as it is so that
    /// adopting a Pigsty-built cluster rewrites nothing and restarts nothing.
    fn alike(&self, path: &Path, new: &str, same: fn(&str, &str) -> bool) -> bool {
        // Larger than any file Pigsty renders here: not worth reading or parsing.
        if std::fs::symlink_metadata(path).map_or(true, |m| m.len() > FACT_CONTENT_CAP as u64) {
            return false;
        }
        match self.managed(path).read() {
            Ok(Some(c)) if c.data.len() <= FACT_CONTENT_CAP => {
                std::str::from_utf8(&c.data).is_ok_and(|old| old != new && same(old, new))
            }
            _ => false,
        }
    }

    fn alike_report(path: &Path) -> TaskReport {
        TaskReport::new(
            pb::Outcome::Unchanged,
            format!(
                "{} already says the same (in other words, e.g. as Pigsty rendered it); left as it is",
                path.display()
            ),
        )
    }

    /// `/etc/etcd/etcd.pass`: root and etcd's group may read it (Pigsty's root:etcd 0640).
    /// The owner is resolved here, not at start: hosts without etcd never get this task.
    fn write_pass(&self, password: &str) -> TaskReport {
        let path = self.cfg.paths.etcd_pass();
        if let Err(e) = render::validate_etcd_pass(password) {
            return TaskReport::refused(format!(
                "the root password is unusable: {e}; {} was not touched",
                path.display()
            ));
        }
        let o = &self.cfg.owners;
        let owner = match files::resolve_owner(&o.profile.user, &o.etcd.group) {
            Ok(ids) => ids,
            Err(message) => {
                return TaskReport::failed(format!(
                    "cannot own {} as {}:{}: {message}; {} was not touched",
                    path.display(),
                    o.profile.user,
                    o.etcd.group,
                    path.display()
                ))
            }
        };
        self.write(&path, password, 0o640, owner)
    }

    fn write_certs(&self, t: &pb::WriteEtcdCerts) -> TaskReport {
        // All three are checked before any is touched.
        let ca_path = &self.cfg.tls.ca_cert;
        let trusted = match std::fs::read(ca_path) {
            Ok(pem) => pem,
            Err(e) => {
                return TaskReport::failed(format!(
                    "cannot read this agent's CA certificate {} ({e}), which etcd's CA must match; no certificate file was touched",
                    ca_path.display()
                ))
            }
        };
        if let Err(e) = crate::certs::check_member_material(
            &t.ca_crt,
            &t.server_crt,
            &t.server_key,
            self.cfg.host_ip,
            &trusted,
            &ca_path.display().to_string(),
        ) {
            return TaskReport::refused(format!("{e}; no certificate file was touched"));
        }
        let p = &self.cfg.paths;
        // A link or special file at any of the three paths refuses the task before the
        // first of them is written.
        for path in [&p.etcd_ca, &p.etcd_cert, &p.etcd_key] {
            match self.managed(path).read() {
                Ok(_) => {}
                Err(e) if e.is_refusal() => {
                    return TaskReport::refused(format!("{e}; no certificate file was touched"))
                }
                Err(e) => {
                    return TaskReport::failed(format!("{e}; no certificate file was touched"))
                }
            }
        }
        let mut changed = Vec::new();
        for (path, content, mode) in [
            (&p.etcd_ca, &t.ca_crt, 0o644),
            (&p.etcd_cert, &t.server_crt, 0o644),
            (&p.etcd_key, &t.server_key, 0o600),
        ] {
            let r = self.write(path, content, mode, self.etcd_owner);
            match r.outcome {
                pb::Outcome::Changed => changed.push(path.display().to_string()),
                pb::Outcome::Unchanged => {}
                _ => return r,
            }
        }
        if changed.is_empty() {
            TaskReport::new(
                pb::Outcome::Unchanged,
                "ca.crt, server.crt and server.key already up to date",
            )
        } else {
            TaskReport::new(
                pb::Outcome::Changed,
                format!("wrote {}", changed.join(", ")),
            )
        }
    }

    async fn service_action(&self, a: &pb::ServiceAction) -> TaskReport {
        let Some(svc) = pb::Service::try_from(a.service).ok().and_then(Svc::from_pb) else {
            return TaskReport::refused(format!(
                "service {} is not one this agent manages (etcd, patroni, vip-manager)",
                a.service
            ));
        };
        let action = match pb::Action::try_from(a.action) {
            Ok(pb::Action::Start) => "start",
            Ok(pb::Action::Stop) => "stop",
            Ok(pb::Action::Restart) => "restart",
            Ok(pb::Action::Reload) => "reload",
            Ok(pb::Action::Status) => "status",
            _ => {
                return TaskReport::refused(format!(
                    "action {} is not start, stop, restart, reload or status",
                    a.action
                ))
            }
        };
        if action == "status" {
            let st = self.backend.status(svc).await;
            let mut out = format!("{} {}", svc.fact_key(), state_word(st));
            if a.with_log {
                out.push('\n');
                out.push_str(&self.log_section(svc).await);
            }
            return TaskReport::new(pb::Outcome::Ok, out);
        }
        if !a.force && !a.if_changed.is_empty() {
            let changed = a
                .if_changed
                .iter()
                .any(|id| self.journal.outcome(id) == Some(pb::Outcome::Changed));
            if !changed {
                return TaskReport::new(
                    pb::Outcome::Skipped,
                    format!(
                        "{action} {} skipped: nothing it follows changed",
                        svc.fact_key()
                    ),
                );
            }
        }
        // As systemd reports it: starting a running service or stopping a stopped one changes
        // nothing. A state the backend cannot tell runs the action.
        if action == "start" || action == "stop" {
            let st = self.backend.status(svc).await;
            let already = match action {
                "start" => st == pb::ServiceState::Active,
                _ => matches!(st, pb::ServiceState::Inactive | pb::ServiceState::Failed),
            };
            if already {
                return TaskReport::new(
                    pb::Outcome::Unchanged,
                    format!(
                        "{} is already {}: nothing to {action}",
                        svc.fact_key(),
                        state_word(st)
                    ),
                );
            }
        }
        let out = match self.backend.run(svc, action).await {
            Ok(out) => out,
            Err(e) => {
                let mut msg = e.to_string();
                if svc == Svc::Etcd && matches!(action, "start" | "restart") {
                    msg = format!("{msg}\n{}", self.log_section(svc).await);
                }
                return TaskReport::failed(msg);
            }
        };
        let mut report = format!("{action} {}: ok", svc.fact_key());
        if svc == Svc::Etcd && matches!(action, "start" | "restart") {
            match self.confirm_etcd_running(action).await {
                Ok(note) => report = format!("{report}; {note}"),
                Err(why) => {
                    return TaskReport::failed(format!("{why}\n{}", self.log_section(svc).await))
                }
            }
        }
        TaskReport::new(
            pb::Outcome::Changed,
            format!("{report}\n{out}").trim().to_string(),
        )
    }

    /// A restart or stop the agent died inside, whose job systemd carried out anyway: the
    /// service entered the state the action asked for after the task began (the journal's
    /// start). Then the task is done, and reported so (a restart of etcd after the same
    /// health check as a restart), instead of being refused or run a second time. `None`:
    /// it cannot be told (exec backend, no start time, another state), so the caller
    /// refuses as before.
    async fn carried_out_before_the_stop(&self, id: &str, kind: &Kind) -> Option<TaskReport> {
        let Kind::ServiceAction(a) = kind else {
            return None;
        };
        let svc = pb::Service::try_from(a.service)
            .ok()
            .and_then(Svc::from_pb)?;
        let restart = a.action == pb::Action::Restart as i32;
        if !restart && a.action != pb::Action::Stop as i32 {
            return None;
        }
        let began = self.journal.started_at(id)?;
        // A restart systemd is still carrying out (a slow start) is waited for, as long as a
        // start would be.
        let deadline = std::time::Instant::now()
            + std::time::Duration::from_secs(self.cfg.start_check_secs.max(5));
        let (word, at) = loop {
            let t = self.backend.transitions(svc).await.ok()?;
            let done = if restart {
                (t.state == "active")
                    .then_some(t.active_since_ms)
                    .flatten()
                    .filter(|at| *at >= began)
                    .map(|at| ("became active", at))
            } else {
                matches!(t.state.as_str(), "inactive" | "failed")
                    .then_some(t.inactive_since_ms)
                    .flatten()
                    .filter(|at| *at >= began)
                    .map(|at| ("stopped", at))
            };
            if let Some(done) = done {
                break done;
            }
            let moving = ["activating", "deactivating", "reloading"].contains(&t.state.as_str());
            if !moving || std::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        };
        let action = if restart { "restart" } else { "stop" };
        let mut report = format!(
            "{action} {}: the agent was stopped inside this task, but systemd carried it out: {} {word} {:.1} s after the task began; it is not run again",
            svc.fact_key(),
            svc.fact_key(),
            (at - began) as f64 / 1000.0
        );
        if svc == Svc::Etcd && restart {
            match self.confirm_etcd_running("restart").await {
                Ok(note) => report = format!("{report}; {note}"),
                Err(why) => {
                    return Some(TaskReport::failed(format!(
                        "{report}, but {why}\n{}",
                        self.log_section(svc).await
                    )))
                }
            }
        }
        Some(TaskReport::new(pb::Outcome::Changed, report))
    }

    /// "Start means running": after a start or restart, etcd must be running and answer its
    /// health endpoint within `start_check_secs`. Without this, a start-stop-daemon that
    /// forked an etcd which exits at once (a wrong initial-cluster, a port in use) reads as
    /// done, and the run learns of it only a gate timeout later, without etcd's words.
    /// `Ok` says what was confirmed; `Err` says what went wrong.
    async fn confirm_etcd_running(&self, action: &str) -> Result<String, String> {
        use crate::etcd_health::{self, NotHealthy};
        use std::time::{Duration, Instant};
        let secs = self.cfg.start_check_secs;
        if secs == 0 {
            return Ok("not checked (start_check_secs: 0)".into());
        }
        // The health endpoint comes from the etcd.conf etcd was started with. When the check
        // cannot be made (no local client URL, unusable TLS files), only the process is
        // watched, for a shorter while: long enough to see an etcd that exits at once.
        let mut endpoint = match self.managed(&self.cfg.paths.etcd_conf).read() {
            Ok(Some(c)) => {
                etcd_health::endpoint_from_conf(&String::from_utf8_lossy(&c.data), self.cfg.host_ip)
            }
            Ok(None) => Err(format!(
                "{} does not exist",
                self.cfg.paths.etcd_conf.display()
            )),
            Err(e) => Err(e.to_string()),
        };
        let window = Duration::from_secs(secs);
        let watch_only = Duration::from_secs(secs.min(3));
        let started = Instant::now();
        let mut why = String::from("no answer yet");
        loop {
            let probe = self.backend.probe(Svc::Etcd).await;
            match probe.state {
                pb::ServiceState::Active => match &endpoint {
                    Ok(ep) => match etcd_health::check(ep, Duration::from_secs(2)).await {
                        Ok(()) => {
                            return Ok(format!(
                                "etcd runs and {}/health answers healthy after {:.1}s",
                                ep.url,
                                started.elapsed().as_secs_f64()
                            ))
                        }
                        Err(NotHealthy::Setup(e) | NotHealthy::Tls(e)) => endpoint = Err(e),
                        Err(e) => why = format!("{}/health: {e}", ep.url),
                    },
                    Err(cannot) if started.elapsed() >= watch_only => {
                        return Ok(format!(
                            "etcd kept running for {:.1}s; its health was not asked: {cannot}",
                            started.elapsed().as_secs_f64()
                        ))
                    }
                    Err(_) => {}
                },
                pb::ServiceState::Inactive | pb::ServiceState::Failed => {
                    return Err(format!(
                        "etcd is not running {:.1}s after the {action} (its status: {}): it exited",
                        started.elapsed().as_secs_f64(),
                        state_word(probe.state)
                    ))
                }
                _ => {
                    why = format!(
                        "its state cannot be read ({})",
                        probe.why.as_deref().unwrap_or("no reason given")
                    )
                }
            }
            if started.elapsed() >= window {
                return Err(format!(
                    "etcd did not become healthy within {secs}s of the {action} (start_check_secs): {why}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// The last lines of `svc`'s log, as a section of a report.
    async fn log_section(&self, svc: Svc) -> String {
        match self.backend.log_tail(svc, LOG_SCAN_LINES).await {
            Ok(t) if t.trim().is_empty() => format!("{}'s log is empty", svc.fact_key()),
            Ok(t) => log_summary(svc.fact_key(), &t, LOG_LINES, LOG_ERROR_LINES),
            Err(e) => format!("({}'s log is not available: {e})", svc.fact_key()),
        }
    }

    async fn set_patroni_hosts(&self, t: &pb::SetPatroniDcsHosts) -> TaskReport {
        for h in &t.hosts {
            let ok = h
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !ok {
                return TaskReport::refused(format!(
                    "{h:?} is not host:port; patroni.yml was not touched"
                ));
            }
        }
        let path = &self.cfg.paths.patroni_conf;
        let written = match self.patch_file(path, |text| {
            quorum_proto::patch::patch_patroni_hosts(text, &t.hosts).map_err(|e| e.to_string())
        }) {
            Ok(w) => w,
            Err(r) => return r,
        };
        if written == Written::Unchanged && !t.restart {
            return TaskReport::new(
                pb::Outcome::Unchanged,
                format!("{} already lists {}", path.display(), t.hosts.join(",")),
            );
        }
        let action = if t.restart { "restart" } else { "reload" };
        match self.backend.run(Svc::Patroni, action).await {
            Ok(_) if t.restart => TaskReport::new(pb::Outcome::Changed, format!("updated the etcd hosts in {} and restarted Patroni: it now uses {}", path.display(), t.hosts.join(","))),
            Ok(_) => TaskReport::new(
                pb::Outcome::Changed,
                format!(
                    "updated the etcd hosts in {} and reloaded Patroni; note: Patroni applies a changed etcd host list only when it restarts, so it still uses its old list until then",
                    path.display()
                ),
            ),
            Err(e) => TaskReport::failed(format!("{} was updated, but {action} of Patroni failed: {e}", path.display())),
        }
    }

    async fn set_vip_endpoints(&self, t: &pb::SetVipEndpoints) -> TaskReport {
        for e in &t.endpoints {
            if !(e.starts_with("https://") || e.starts_with("http://")) {
                return TaskReport::refused(format!(
                    "{e:?} is not an http(s):// URL; the vip-manager config was not touched"
                ));
            }
        }
        let path = &self.cfg.paths.vip_conf;
        let written = match self.patch_file(path, |text| {
            quorum_proto::patch::patch_vip_endpoints(text, &t.endpoints).map_err(|e| e.to_string())
        }) {
            Ok(w) => w,
            Err(r) => return r,
        };
        if written == Written::Unchanged {
            return TaskReport::new(
                pb::Outcome::Unchanged,
                format!("{} already lists {}", path.display(), t.endpoints.join(",")),
            );
        }
        if t.defer_restart {
            return TaskReport::new(
                pb::Outcome::Changed,
                format!(
                    "updated the endpoints in {}; vip-manager was left running (it holds the VIP and would release it to restart): it follows the leader key through the endpoints it has, and its next restart applies the new list",
                    path.display()
                ),
            );
        }
        match self.backend.run(Svc::VipManager, "restart").await {
            Ok(_) => TaskReport::new(
                pb::Outcome::Changed,
                format!(
                    "updated the endpoints in {} and restarted vip-manager",
                    path.display()
                ),
            ),
            Err(e) => TaskReport::failed(format!(
                "{} was updated, but the restart of vip-manager failed: {e}",
                path.display()
            )),
        }
    }

    /// Patches a host-owned file in place, keeping its owner and mode (through Pigsty's link
    /// to its target, where the config allows one).
    fn patch_file(
        &self,
        path: &Path,
        patch: impl FnOnce(&str) -> Result<String, String>,
    ) -> Result<Written, TaskReport> {
        let file = self.managed(path);
        let current = match file.read() {
            Ok(Some(c)) => c,
            Ok(None) => {
                return Err(TaskReport::failed(format!(
                    "{} does not exist; it must exist (Pigsty's pgsql playbook writes it): nothing was written",
                    path.display()
                )))
            }
            Err(e) if e.is_refusal() => {
                return Err(TaskReport::refused(format!("{e}; nothing was written")))
            }
            Err(e) => return Err(TaskReport::failed(e.to_string())),
        };
        let text = std::str::from_utf8(&current.data).map_err(|e| {
            TaskReport::refused(format!(
                "{} is not UTF-8 text (invalid byte at offset {}): a YAML config must be UTF-8; fix or re-render the file. Nothing was written",
                path.display(),
                e.valid_up_to()
            ))
        })?;
        let patched = patch(text).map_err(|e| {
            TaskReport::refused(format!("{}: {e}; nothing was written", path.display()))
        })?;
        file.write(patched.as_bytes(), current.mode, Some(current.owner))
            .map_err(|e| {
                if e.is_refusal() {
                    TaskReport::refused(format!("{e}; nothing was written"))
                } else {
                    TaskReport::failed(e.to_string())
                }
            })
    }

    /// Takes etcd off this host after its member left: its files go, its service is disabled.
    async fn retire(&self) -> TaskReport {
        if self.cfg.safeguard {
            return TaskReport::refused(format!(
                "the local safeguard is set (safeguard: true in {}): this agent never takes etcd off this host; set it to false there if you mean it",
                self.cfg.source.display()
            ));
        }
        let probe = self.backend.probe(Svc::Etcd).await;
        if !probe.is_stopped() {
            return TaskReport::refused(format!(
                "etcd is {} here ({}): its files are removed only once it is positively stopped; nothing was removed",
                state_word(probe.state),
                probe.why.as_deref().unwrap_or("running")
            ));
        }
        let p = &self.cfg.paths;
        let mut removed = Vec::new();
        for path in [
            &p.etcd_conf,
            &p.etcd_ca,
            &p.etcd_cert,
            &p.etcd_key,
            &p.etcd_pass(),
            &p.etcdctl_profile,
        ] {
            match self.managed(path).remove() {
                Ok(true) => removed.push(path.display().to_string()),
                Ok(false) => {}
                Err(e) => {
                    let before = if removed.is_empty() {
                        "nothing was removed".to_string()
                    } else {
                        format!("removed before: {}", removed.join(", "))
                    };
                    return if e.is_refusal() {
                        TaskReport::refused(format!("{e}; {before}"))
                    } else {
                        TaskReport::failed(format!("{e}; {before}"))
                    };
                }
            }
        }
        let disabled = if self.backend.can(Svc::Etcd, "disable") {
            match self.backend.run(Svc::Etcd, "disable").await {
                Ok(_) => "etcd disabled".to_string(),
                Err(e) => {
                    return TaskReport::failed(format!(
                        "removed {}, but disabling etcd failed: {e}",
                        if removed.is_empty() {
                            "no file".to_string()
                        } else {
                            removed.join(", ")
                        }
                    ))
                }
            }
        } else {
            "no exec.etcd.disable command is configured, so the service was left as it is".into()
        };
        if removed.is_empty() {
            TaskReport::new(
                pb::Outcome::Unchanged,
                format!("no etcd file left on this host; {disabled}"),
            )
        } else {
            TaskReport::new(
                pb::Outcome::Changed,
                format!("removed {}; {disabled}", removed.join(", ")),
            )
        }
    }

    async fn wipe(&self, t: &pb::WipeEtcdData) -> TaskReport {
        let purge = t.purge;
        let data = &self.cfg.paths.etcd_data;
        if self.cfg.safeguard {
            return TaskReport::refused(format!(
                "the local safeguard is set (safeguard: true in {}): this agent never wipes {}, whatever the coordinator asks; set it to false there if you mean it",
                self.cfg.source.display(),
                data.display()
            ));
        }
        // Before anything is stopped: a refusal changes nothing, not even etcd's state.
        let identity_note = match self.check_wipe_identity(t) {
            Ok(note) => note,
            Err(refusal) => return refusal,
        };
        // Fail closed: only a positive "stopped" lets a wipe through. A state the agent cannot
        // tell is treated as running.
        let probe = self.backend.probe(Svc::Etcd).await;
        if !probe.is_stopped() {
            if !purge {
                return TaskReport::refused(match &probe.why {
                    None => format!(
                        "etcd is active on this host: a wipe never touches a running member; stop etcd first, or purge. {} was not touched",
                        data.display()
                    ),
                    Some(why) => format!(
                        "this agent cannot tell whether etcd is running ({why}), and a wipe needs etcd positively stopped: fix the status command (exec.etcd.status, or the systemd unit) and try again. {} was not touched",
                        data.display()
                    ),
                });
            }
            if let Err(e) = self.backend.run(Svc::Etcd, "stop").await {
                return TaskReport::failed(format!(
                    "purge: cannot stop etcd ({e}); {} was not touched",
                    data.display()
                ));
            }
            let after = self.backend.probe(Svc::Etcd).await;
            if !after.is_stopped() {
                return TaskReport::failed(format!(
                    "purge: after stop, etcd is {} ({}); a wipe needs it positively stopped, so {} was not touched",
                    state_word(after.state),
                    after.why.as_deref().unwrap_or("still running"),
                    data.display()
                ));
            }
        }
        let dir = match DataDir::open(data, |real| self.cfg.data_dir_allowed(real)) {
            Ok(Some(dir)) => dir,
            Ok(None) => {
                return TaskReport::new(
                    pb::Outcome::Unchanged,
                    format!("{} does not exist: nothing to wipe", data.display()),
                )
            }
            Err(e) if e.is_refusal() => {
                return TaskReport::refused(format!("{e}. Nothing was removed"))
            }
            Err(e) => return TaskReport::failed(format!("{e}. Nothing was removed")),
        };
        match dir.remove_contents() {
            Ok(0) => TaskReport::new(
                pb::Outcome::Unchanged,
                format!("{} is already empty", data.display()),
            ),
            Ok(removed) => TaskReport::new(
                pb::Outcome::Changed,
                format!(
                    "wiped {} ({removed} entries){identity_note}",
                    data.display()
                ),
            ),
            Err((e, 0)) if e.is_refusal() => TaskReport::refused(e.to_string()),
            Err((e, removed)) => TaskReport::failed(format!(
                "{e} ({removed} entries of {} removed before)",
                data.display()
            )),
        }
    }

    /// What the data dir's WAL says about whose data it holds.
    fn data_identity(&self) -> DataIdentity {
        let data = &self.cfg.paths.etcd_data;
        let dir = match DataDir::open(data, |real| self.cfg.data_dir_allowed(real)) {
            Ok(Some(dir)) => dir,
            Ok(None) => return DataIdentity::NoWal,
            Err(e) => return DataIdentity::Unreadable(e.to_string()),
        };
        match dir.wal_head(wal::HEAD_LIMIT) {
            Ok(None) => DataIdentity::NoWal,
            Ok(Some((path, head))) => match wal::parse_identity(&head) {
                Ok(id) => DataIdentity::Found(id),
                Err(e) => DataIdentity::Unreadable(format!("{}: {e}", path.display())),
            },
            Err(e) => DataIdentity::Unreadable(e.to_string()),
        }
    }

    /// Refuses a wipe meant for another member: the task names the member (and cluster) the
    /// coordinator means, and the data dir's WAL says whose data it is. A task that names
    /// none (an older coordinator, an ad-hoc `quorum task`, a member whose id was not known
    /// at plan time) is not checked, as before. `Ok` carries a note for the report.
    fn check_wipe_identity(&self, t: &pb::WipeEtcdData) -> Result<String, TaskReport> {
        if t.member_id.is_empty() && t.cluster_id.is_empty() {
            return Ok(String::new());
        }
        let data = &self.cfg.paths.etcd_data;
        let parse = |what: &str, hex: &str| -> Result<Option<u64>, TaskReport> {
            if hex.is_empty() {
                return Ok(None);
            }
            u64::from_str_radix(hex, 16).map(Some).map_err(|_| {
                TaskReport::refused(format!(
                    "the task names {what} id {hex:?}, which is not a hex id; nothing was wiped"
                ))
            })
        };
        let want_member = parse("member", &t.member_id)?;
        let want_cluster = parse("cluster", &t.cluster_id)?;
        let expected = match (want_member, want_cluster) {
            (Some(m), Some(c)) => format!("member {m:x} of cluster {c:x}"),
            (Some(m), None) => format!("member {m:x}"),
            (None, Some(c)) => format!("a member of cluster {c:x}"),
            (None, None) => String::new(),
        };
        match self.data_identity() {
            // No WAL: no member's data to mistake for another's.
            DataIdentity::NoWal => Ok(String::new()),
            DataIdentity::Unreadable(why) => Err(TaskReport::refused(format!(
                "this wipe is meant for {expected}, but whose data {} holds cannot be read ({why}); nothing was wiped. Look at the data dir; if it really is that member's, wipe it with `quorum task --host {} --yes wipe-etcd-data`",
                data.display(),
                self.cfg.host_ip
            ))),
            DataIdentity::Found(id) => {
                let member_ok = want_member.is_none_or(|m| m == id.member);
                let cluster_ok = want_cluster.is_none_or(|c| c == id.cluster);
                if member_ok && cluster_ok {
                    Ok(format!("; it held {id}, as expected"))
                } else {
                    Err(TaskReport::refused(format!(
                        "the data dir {} holds {id}, not the expected {expected}; nothing was wiped. It may belong to another live member or cluster: check that the inventory names the right host for this member",
                        data.display()
                    )))
                }
            }
        }
    }

    /// Logs when the agent stops (or starts again) being able to tell etcd's state: while it
    /// cannot, every wipe is refused, and the operator should hear why once, not at every poll.
    fn note_etcd_state(&self, probe: &crate::backend::Probe) {
        let unknown = probe.state == pb::ServiceState::Unknown;
        let was = self.etcd_unknown.swap(unknown, Ordering::Relaxed);
        if unknown && !was {
            tracing::warn!(
                "cannot tell whether etcd is running ({}): wipes are refused until the agent can tell; fix the status command in {}",
                probe.why.as_deref().unwrap_or("no reason given"),
                self.cfg.source.display()
            );
        } else if !unknown && was {
            tracing::info!(
                "etcd's state can be read again: {}",
                state_word(probe.state)
            );
        }
    }

    /// The facts the coordinator plans with.
    pub async fn facts(&self) -> pb::Facts {
        let p = &self.cfg.paths;
        let mut f = pb::Facts {
            agent_version: env!("CARGO_PKG_VERSION").into(),
            host_ip: self.cfg.host_ip.to_string(),
            hostname: nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default(),
            safeguard: self.cfg.safeguard,
            counters: Some(pb::AgentCounters {
                journal_bytes: self.journal.bytes(),
                cert_not_after_unix: cert_not_after(&self.cfg.tls.cert).unwrap_or(0),
                ..self.counters.report()
            }),
            ..Default::default()
        };
        // The status commands run side by side: each is a process spawn (`systemctl
        // is-active`, or the exec backend's command), and facts sit on every dispatch's path.
        let status = |svc: Svc| async move {
            if self.backend.manages(svc) {
                Some((svc, self.backend.probe(svc).await))
            } else {
                None
            }
        };
        let [a, b, c] = Svc::ALL;
        let (a, b, c) = tokio::join!(status(a), status(b), status(c));
        for (svc, probe) in [a, b, c].into_iter().flatten() {
            if svc == Svc::Etcd {
                self.note_etcd_state(&probe);
            }
            f.services.insert(svc.fact_key().into(), probe.state as i32);
        }
        for (key, path, public) in [
            ("etcd_conf", &p.etcd_conf, true),
            ("etcd_ca", &p.etcd_ca, false),
            ("etcd_cert", &p.etcd_cert, false),
            ("etcd_key", &p.etcd_key, false),
            ("etcd_pass", &p.etcd_pass(), false),
            ("etcdctl_profile", &p.etcdctl_profile, true),
            ("patroni_conf", &p.patroni_conf, false),
            ("vip_conf", &p.vip_conf, false),
        ] {
            f.files
                .insert(key.into(), file_fact(self.managed(path), public));
        }
        f.vip = vip_fact(self.managed(&p.vip_conf));
        let member = p.etcd_data.join("member");
        let mut data_dir = pb::DataDirFact {
            path: p.etcd_data.display().to_string(),
            has_member: member.join("wal").exists() || member.join("snap").exists(),
            ..Default::default()
        };
        match self.data_identity() {
            DataIdentity::Found(id) => {
                data_dir.member_id = format!("{:x}", id.member);
                data_dir.cluster_id = format!("{:x}", id.cluster);
            }
            DataIdentity::Unreadable(why) => data_dir.identity_error = why,
            DataIdentity::NoWal => {}
        }
        f.data_dir = Some(data_dir);
        f
    }
}

/// Whose data the data dir holds, as its WAL says.
enum DataIdentity {
    /// No WAL (or no data dir): no member's data.
    NoWal,
    /// The member and cluster the WAL names.
    Found(wal::Identity),
    /// A WAL is there but cannot be read; why.
    Unreadable(String),
}

/// The fact of one managed file, read with the same checks as a write: a link, FIFO or
/// device at the path is reported as such, never opened or followed. The content goes along
/// only for `public` files (no secrets) up to `FACT_CONTENT_CAP`.
fn file_fact(file: Managed<'_>, public: bool) -> pb::FileFact {
    let path = file.path.display().to_string();
    match file.read() {
        Ok(Some(c)) => pb::FileFact {
            exists: true,
            sha256: files::sha256_hex(&c.data),
            content: if public && c.data.len() <= FACT_CONTENT_CAP {
                String::from_utf8(c.data).unwrap_or_default()
            } else {
                String::new()
            },
            problem: String::new(),
            path,
        },
        Ok(None) => pb::FileFact {
            path,
            ..Default::default()
        },
        Err(e) => pb::FileFact {
            exists: true,
            problem: e.to_string(),
            path,
            ..Default::default()
        },
    }
}

/// The VIP of this host's vip-manager config and whether it is on its interface now; `None`
/// when the host has no vip-manager config.
fn vip_fact(file: Managed<'_>) -> Option<pb::VipFact> {
    let conf = file.path;
    let text = match file.read() {
        Ok(Some(c)) => match String::from_utf8(c.data) {
            Ok(t) => t,
            Err(_) => {
                return Some(pb::VipFact {
                    error: format!("{} is not UTF-8 text", conf.display()),
                    ..Default::default()
                })
            }
        },
        Ok(None) => return None,
        Err(e) => {
            return Some(pb::VipFact {
                error: e.to_string(),
                ..Default::default()
            })
        }
    };
    let vip = match quorum_proto::patch::read_vip_settings(&text) {
        Ok(v) => v,
        Err(e) => {
            return Some(pb::VipFact {
                error: format!("{}: {e}", conf.display()),
                ..Default::default()
            })
        }
    };
    let mut fact = pb::VipFact {
        address: vip.address.to_string(),
        prefix: u32::from(vip.prefix),
        interface: vip.interface.clone(),
        ..Default::default()
    };
    match nix::ifaddrs::getifaddrs() {
        Ok(addrs) => {
            fact.present = addrs.into_iter().any(|a| {
                a.interface_name == vip.interface
                    && a.address.as_ref().is_some_and(|s| {
                        let ip: Option<std::net::IpAddr> = if let Some(v4) = s.as_sockaddr_in() {
                            Some(v4.ip().into())
                        } else {
                            s.as_sockaddr_in6().map(|v6| v6.ip().into())
                        };
                        ip == Some(vip.address)
                    })
            })
        }
        Err(e) => fact.error = format!("cannot list the host's addresses: {e}"),
    }
    Some(fact)
}

/// Renders a typed file with the renderer the coordinator planned with; a missing or bad
/// field refuses the task before anything is touched.
fn render_typed<T>(
    spec: Option<&T>,
    what: &str,
    render: impl FnOnce(&T) -> Result<String, render::SpecError>,
) -> Result<String, TaskReport> {
    let Some(spec) = spec else {
        return Err(TaskReport::refused(format!(
            "the task carries no fields for {what}; nothing was written (is the coordinator older than this agent?)"
        )));
    };
    render(spec)
        .map_err(|e| TaskReport::refused(format!("cannot render {what}: {e}; nothing was written")))
}

/// The end of a service's log for the operator: its last `last` lines and, above them, up to
/// `errors` error lines from earlier in `text` (a dying etcd logs its cause, then a screen of
/// shutdown lines). Error lines are etcd's: capnslog's `C`/`E` levels (3.4), zap's
/// `"level":"error"|"fatal"|"panic"` (3.5), and Go's `panic:`.
pub fn log_summary(name: &str, text: &str, last: usize, errors: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let split = lines.len().saturating_sub(last);
    let is_error = |l: &str| {
        l.contains(" C | ")
            || l.contains(" E | ")
            || l.contains("\"level\":\"error\"")
            || l.contains("\"level\":\"fatal\"")
            || l.contains("\"level\":\"panic\"")
            || l.trim_start().starts_with("panic:")
            // etcd 3.5 logs the error that stops the server ("the member has been
            // permanently removed from the cluster") at warn level, as "server error".
            || l.contains("\"msg\":\"server error\"")
    };
    let earlier: Vec<&str> = lines[..split]
        .iter()
        .copied()
        .filter(|l| is_error(l))
        .collect();
    let earlier = &earlier[earlier.len().saturating_sub(errors)..];
    let mut out = String::new();
    if !earlier.is_empty() {
        out.push_str(&format!(
            "--- errors earlier in {name}'s log ---\n{}\n",
            earlier.join("\n")
        ));
    }
    out.push_str(&format!(
        "--- the last lines of {name}'s log ---\n{}",
        lines[split..].join("\n").trim_end()
    ));
    out
}

fn state_word(s: pb::ServiceState) -> &'static str {
    match s {
        pb::ServiceState::Active => "active",
        pb::ServiceState::Inactive => "inactive",
        pb::ServiceState::Failed => "failed",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_that_scrolled_away_is_kept_above_the_last_lines() {
        let mut log = vec![
            "2026-11-30 22:12:56.1 I | etcdserver: starting".to_string(),
            "2026-11-30 22:12:56.2 E | etcdserver: the member has been permanently removed from the cluster".to_string(),
        ];
        for i in 0..30 {
            log.push(format!(
                "2026-11-30 22:12:56.3 I | rafthttp: stopped peer {i}"
            ));
        }
        let out = log_summary("etcd", &log.join("\n"), 20, 5);
        assert!(
            out.starts_with("--- errors earlier in etcd's log ---\n2026-11-30 22:12:56.2 E | etcdserver: the member has been permanently removed"),
            "{out}"
        );
        assert!(
            out.contains("--- the last lines of etcd's log ---\n"),
            "{out}"
        );
        assert_eq!(out.lines().count(), 1 + 1 + 1 + 20, "{out}");
        // 3.5's JSON lines count as errors by their level; nothing to add when all is recent.
        let json = "{\"level\":\"fatal\",\"msg\":\"listen tcp: bind: address already in use\"}";
        assert_eq!(
            log_summary("etcd", json, 20, 5),
            format!("--- the last lines of etcd's log ---\n{json}")
        );
        // 3.5 logs a removed member's reason at warn level, then ~25 shutdown lines.
        let mut log = vec![
            "{\"level\":\"warn\",\"msg\":\"server error\",\"error\":\"the member has been permanently removed from the cluster\"}".to_string(),
        ];
        for i in 0..25 {
            log.push(format!(
                "{{\"level\":\"info\",\"msg\":\"stopped remote peer {i}\"}}"
            ));
        }
        let out = log_summary("etcd", &log.join("\n"), 20, 5);
        assert!(
            out.starts_with("--- errors earlier in etcd's log ---\n{\"level\":\"warn\",\"msg\":\"server error\",\"error\":\"the member has been permanently removed"),
            "{out}"
        );
    }
}
