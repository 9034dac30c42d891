//! The agents the coordinator knows, and the task queue of each: what is waiting to be
//! delivered, what was delivered and not yet reported (redelivered on the next poll, since
//! delivery is at least once), and who is waiting for each report.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use quorum_proto::pb;
use tokio::sync::{oneshot, Notify};

/// How an agent looks from here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentState {
    /// In a long poll right now.
    Connected,
    /// Seen recently, between polls.
    Idle,
    /// Not seen for longer than the stale threshold.
    Stale,
}

impl AgentState {
    /// The word the CLI prints.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentState::Connected => "connected",
            AgentState::Idle => "idle",
            AgentState::Stale => "stale",
        }
    }
}

struct Entry {
    facts: pb::Facts,
    last_seen: SystemTime,
    polls_open: u32,
    queue: VecDeque<pb::Task>,
    inflight: Vec<pb::Task>,
    notify: Arc<Notify>,
    /// When a facts request to it went unanswered, if it has sent nothing since.
    silent_since: Option<SystemTime>,
    /// When each queued task was queued (until it is handed over), for the dispatch wait.
    queued_at: HashMap<String, std::time::Instant>,
    /// When the certificate of its last session stops being valid, Unix seconds (0: none
    /// since the coordinator started).
    cert_not_after: i64,
    /// When it became valid, Unix seconds (0 as above).
    cert_not_before: i64,
    /// The serial of that certificate, lowercase hex ("" : none since the coordinator
    /// started), so `quorum agents revoke IP` can name it.
    cert_serial: String,
}

impl Entry {
    fn new() -> Self {
        Self {
            facts: pb::Facts::default(),
            last_seen: SystemTime::now(),
            polls_open: 0,
            queue: VecDeque::new(),
            inflight: Vec::new(),
            notify: Arc::new(Notify::new()),
            silent_since: None,
            queued_at: HashMap::new(),
            cert_not_after: 0,
            cert_not_before: 0,
            cert_serial: String::new(),
        }
    }
}

#[derive(Default)]
struct Inner {
    agents: HashMap<IpAddr, Entry>,
    waiters: HashMap<String, Vec<oneshot::Sender<pb::TaskResult>>>,
}

/// The registry, shared by the gRPC services and the runner.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Mutex<Inner>>,
    stale_after: Duration,
}

/// The kind of a task, as the metrics and logs name it.
pub fn kind_name(t: &pb::Task) -> &'static str {
    use pb::task::Kind;
    match &t.kind {
        Some(Kind::WriteEtcdCerts(_)) => "WriteEtcdCerts",
        Some(Kind::ServiceAction(_)) => "ServiceAction",
        Some(Kind::SetPatroniDcsHosts(_)) => "SetPatroniDcsHosts",
        Some(Kind::SetVipEndpoints(_)) => "SetVipEndpoints",
        Some(Kind::WipeEtcdData(_)) => "WipeEtcdData",
        Some(Kind::CollectFacts(_)) => "CollectFacts",
        Some(Kind::WriteEtcdConf(_)) => "WriteEtcdConf",
        Some(Kind::WriteEtcdctlProfile(_)) => "WriteEtcdctlProfile",
        Some(Kind::RetireEtcd(_)) => "RetireEtcd",
        Some(Kind::WriteEtcdPass(_)) => "WriteEtcdPass",
        Some(Kind::WriteMonitoring(_)) => "WriteMonitoring",
        None => "none",
    }
}

/// The oldest agent this coordinator hands a task that changes something: its own major and
/// minor version. Agents before it do not know the typed etcd.conf and profile tasks, and
/// would ignore the member identity a wipe must match (protobuf skips unknown fields), so the
/// documented order is the coordinator first, then the agents.
const MIN_AGENT: (u64, u64) = {
    let v = env!("CARGO_PKG_VERSION").as_bytes();
    // "MAJOR.MINOR.PATCH": parsed at compile time.
    let mut i = 0;
    let mut major = 0u64;
    while v[i] != b'.' {
        major = major * 10 + (v[i] - b'0') as u64;
        i += 1;
    }
    i += 1;
    let mut minor = 0u64;
    while i < v.len() && v[i] != b'.' {
        minor = minor * 10 + (v[i] - b'0') as u64;
        i += 1;
    }
    (major, minor)
};

/// Why an agent reporting `version` must not get `task`, or `None`. Facts and status reads
/// go to any version (they show the operator which hosts to upgrade); an agent that has not
/// said its version yet (no facts) gets the task, as before this check.
pub fn too_old(version: &str, task: &pb::Task) -> Option<String> {
    use pb::task::Kind;
    let reads = match &task.kind {
        Some(Kind::CollectFacts(_)) => true,
        Some(Kind::ServiceAction(a)) => a.action == pb::Action::Status as i32,
        _ => false,
    };
    if reads || version.is_empty() {
        return None;
    }
    let mut parts = version
        .split(['.', '-', '+'])
        .map(|p| p.parse::<u64>().ok());
    let have = match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor),
        _ => (0, 0),
    };
    (have < MIN_AGENT).then(|| {
        format!(
            "the agent runs quorum-agent {version}, and this coordinator ({}) hands tasks that change something only to agents of {}.{} or later; nothing was done on this host. Upgrade the quorum-agent package here, then `quorum run resume`",
            env!("CARGO_PKG_VERSION"),
            MIN_AGENT.0,
            MIN_AGENT.1
        )
    })
}

/// Marks a poll closed when dropped, also when the agent's connection dies mid-poll.
struct PollGuard {
    registry: Registry,
    agent: IpAddr,
}

impl Drop for PollGuard {
    fn drop(&mut self) {
        self.registry.with(|inner| {
            if let Some(e) = inner.agents.get_mut(&self.agent) {
                e.polls_open = e.polls_open.saturating_sub(1);
                e.last_seen = SystemTime::now();
            }
        });
    }
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Registry {
    /// A registry that calls an agent stale after `stale_after` without a poll.
    pub fn new(stale_after: Duration) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner::default())),
            stale_after,
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        // A poisoned lock only means another thread panicked mid-update of plain data;
        // the data is still the best we have.
        let mut guard = match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        f(&mut guard)
    }

    fn state_of(&self, e: &Entry, now: SystemTime) -> AgentState {
        if e.polls_open > 0 {
            AgentState::Connected
        } else if now.duration_since(e.last_seen).unwrap_or_default() > self.stale_after {
            AgentState::Stale
        } else {
            AgentState::Idle
        }
    }

    /// Records facts an agent sent (with a poll or a report).
    pub fn observe(&self, agent: IpAddr, facts: Option<pb::Facts>) {
        self.with(|inner| {
            let e = inner.agents.entry(agent).or_insert_with(Entry::new);
            e.last_seen = SystemTime::now();
            e.silent_since = None;
            if let Some(f) = facts {
                e.facts = f;
            }
        });
    }

    /// Records the certificate `agent` opened a session with: when it is valid, and its
    /// serial.
    pub fn certificate(&self, agent: IpAddr, (not_before, not_after): (i64, i64), serial: &str) {
        self.with(|inner| {
            let e = inner.agents.entry(agent).or_insert_with(Entry::new);
            e.cert_not_before = not_before;
            e.cert_not_after = not_after;
            e.cert_serial = serial.to_string();
        });
    }

    /// When the certificate `serial` expires, if an agent opened a session with it since the
    /// coordinator started.
    pub fn cert_not_after_of(&self, serial: &str) -> Option<i64> {
        self.with(|inner| {
            inner
                .agents
                .values()
                .find(|e| e.cert_serial == serial && e.cert_not_after > 0)
                .map(|e| e.cert_not_after)
        })
    }

    /// The serial of the certificate of `agent`'s last session, if it had one since the
    /// coordinator started.
    pub fn cert_serial(&self, agent: IpAddr) -> Option<String> {
        self.with(|inner| {
            inner
                .agents
                .get(&agent)
                .map(|e| e.cert_serial.clone())
                .filter(|s| !s.is_empty())
        })
    }

    /// Notes that `agent` left a facts request made at `asked` unanswered (it is silent until
    /// it next polls or reports), so planning does not wait for it again.
    pub fn mark_silent(&self, agent: IpAddr, asked: SystemTime) {
        self.with(|inner| {
            if let Some(e) = inner.agents.get_mut(&agent) {
                e.silent_since.get_or_insert(asked);
            }
        });
    }

    /// When the facts request `agent` left unanswered was made, if it has sent nothing since.
    pub fn silent_since(&self, agent: IpAddr) -> Option<SystemTime> {
        self.with(|inner| inner.agents.get(&agent).and_then(|e| e.silent_since))
    }

    /// When `agent` last polled or reported.
    pub fn last_seen(&self, agent: IpAddr) -> Option<SystemTime> {
        self.with(|inner| inner.agents.get(&agent).map(|e| e.last_seen))
    }

    /// How long without a poll makes an agent stale.
    pub fn stale_after(&self) -> Duration {
        self.stale_after
    }

    /// A long poll: returns the agent's undelivered and unreported tasks at once if there are
    /// any, else waits up to `hold` for one to be queued.
    pub async fn poll(
        &self,
        agent: IpAddr,
        facts: Option<pb::Facts>,
        hold: Duration,
    ) -> Vec<pb::Task> {
        self.observe(agent, facts);
        let notify = self.with(|inner| {
            let e = inner.agents.entry(agent).or_insert_with(Entry::new);
            e.polls_open += 1;
            e.notify.clone()
        });
        let _guard = PollGuard {
            registry: self.clone(),
            agent,
        };
        let deadline = tokio::time::Instant::now() + hold;
        loop {
            // Register interest before looking, so a task queued in between is not missed.
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let tasks = self.with(|inner| {
                let Some(e) = inner.agents.get_mut(&agent) else {
                    return Vec::new();
                };
                let metrics = crate::model::metrics::metrics();
                let version = e.facts.agent_version.clone();
                while let Some(t) = e.queue.pop_front() {
                    let waited = e
                        .queued_at
                        .remove(&t.id)
                        .map(|at| at.elapsed())
                        .unwrap_or_default();
                    // One refused below is answered here, never handed over: not dispatched.
                    if too_old(&version, &t).is_none() {
                        metrics.task_dispatched(kind_name(&t), waited);
                    }
                    e.inflight.push(t);
                }
                // A task this agent's version cannot be trusted with is answered here, never
                // handed over (checked at every poll: an agent can be replaced by another
                // version between two).
                let mut refused = Vec::new();
                e.inflight.retain(|t| match too_old(&version, t) {
                    Some(why) => {
                        metrics.task_result(kind_name(t), "refused");
                        refused.push(pb::TaskResult {
                            task_id: t.id.clone(),
                            outcome: pb::Outcome::Refused as i32,
                            output: why,
                            agent_id: agent.to_string(),
                            journal: None,
                        });
                        false
                    }
                    None => true,
                });
                for r in refused {
                    if let Some(waiters) = inner.waiters.remove(&r.task_id) {
                        for w in waiters {
                            let _ = w.send(r.clone());
                        }
                    }
                }
                e.inflight.clone()
            });
            if !tasks.is_empty() {
                return tasks;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Vec::new();
            }
        }
    }

    /// Queues `task` for `agent`; the receiver gets the report. The agent need not be known yet.
    pub fn queue(&self, agent: IpAddr, task: pb::Task) -> oneshot::Receiver<pb::TaskResult> {
        let (tx, rx) = oneshot::channel();
        self.with(|inner| {
            inner.waiters.entry(task.id.clone()).or_default().push(tx);
            let e = inner.agents.entry(agent).or_insert_with(|| {
                let mut e = Entry::new();
                // Known only because a task waits for it: not seen, so stale until it polls.
                e.last_seen = UNIX_EPOCH;
                e
            });
            let dup = e
                .queue
                .iter()
                .chain(e.inflight.iter())
                .any(|t| t.id == task.id);
            if !dup {
                e.queued_at
                    .insert(task.id.clone(), std::time::Instant::now());
                e.queue.push_back(task);
            }
            e.notify.notify_one();
        });
        rx
    }

    /// Closes a task with its report. Returns false when the agent had no such task
    /// (a late duplicate report, or a task id it was never given).
    pub fn report(&self, agent: IpAddr, result: pb::TaskResult, facts: Option<pb::Facts>) -> bool {
        self.observe(agent, facts);
        self.with(|inner| {
            let Some(e) = inner.agents.get_mut(&agent) else {
                return false;
            };
            let before = e.inflight.len();
            if let Some(t) = e.inflight.iter().find(|t| t.id == result.task_id) {
                let outcome = pb::Outcome::try_from(result.outcome)
                    .map(crate::model::words::outcome_word)
                    .unwrap_or("unknown");
                crate::model::metrics::metrics().task_result(kind_name(t), outcome);
            }
            e.inflight.retain(|t| t.id != result.task_id);
            let known = e.inflight.len() != before;
            if known {
                if let Some(waiters) = inner.waiters.remove(&result.task_id) {
                    for w in waiters {
                        let _ = w.send(result.clone());
                    }
                }
            }
            known
        })
    }

    /// Drops a queued or in-flight task nobody waits for any more (a timed-out step).
    pub fn cancel(&self, agent: IpAddr, task_id: &str) {
        self.with(|inner| {
            inner.waiters.remove(task_id);
            if let Some(e) = inner.agents.get_mut(&agent) {
                let metrics = crate::model::metrics::metrics();
                for (t, delivered) in e
                    .queue
                    .iter()
                    .map(|t| (t, false))
                    .chain(e.inflight.iter().map(|t| (t, true)))
                    .filter(|(t, _)| t.id == task_id)
                {
                    metrics.task_timed_out(kind_name(t), delivered);
                }
                e.queued_at.remove(task_id);
                e.queue.retain(|t| t.id != task_id);
                e.inflight.retain(|t| t.id != task_id);
            }
        });
    }

    /// The state of one agent, `None` if never seen.
    pub fn state(&self, agent: IpAddr) -> Option<AgentState> {
        let now = SystemTime::now();
        self.with(|inner| inner.agents.get(&agent).map(|e| self.state_of(e, now)))
    }

    /// The last facts of one agent.
    pub fn facts(&self, agent: IpAddr) -> Option<pb::Facts> {
        self.with(|inner| inner.agents.get(&agent).map(|e| e.facts.clone()))
    }

    /// Every agent, sorted by IP.
    pub fn list(&self) -> Vec<pb::AgentView> {
        let now = SystemTime::now();
        let mut out: Vec<(IpAddr, pb::AgentView)> = self.with(|inner| {
            inner
                .agents
                .iter()
                .filter(|(_, e)| e.last_seen != UNIX_EPOCH || e.polls_open > 0)
                .map(|(ip, e)| {
                    (
                        *ip,
                        pb::AgentView {
                            agent_id: ip.to_string(),
                            version: e.facts.agent_version.clone(),
                            last_seen_unix: unix(e.last_seen),
                            state: self.state_of(e, now).as_str().to_string(),
                            facts: Some(e.facts.clone()),
                            cert_not_after_unix: e.cert_not_after,
                            cert_not_before_unix: e.cert_not_before,
                            // The store knows renewals; the caller fills them in.
                            cert_renewals: 0,
                            cert_serial: e.cert_serial.clone(),
                        },
                    )
                })
                .collect()
        });
        out.sort_by_key(|(ip, _)| *ip);
        out.into_iter().map(|(_, v)| v).collect()
    }
}

/// A new unique task id.
pub fn new_task_id() -> String {
    let r: [u8; 8] = rand::random();
    format!("t-{}", hex::encode(r))
}

/// How long a plan waits for an agent's fresh facts.
const FACTS_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Asks every connected agent of `hosts` for fresh facts and waits (briefly) for them: facts
/// that ride on polls can be half a minute old, and a plan must not rest on a stale "etcd is
/// stopped". An agent that does not answer in time keeps its last facts and is marked silent:
/// until it polls or reports again, later plans (the CLI plans once to show, once to run) do
/// not wait for it again. Returns a note naming each silent agent.
pub async fn refresh_facts(registry: &Registry, hosts: &[IpAddr]) -> Vec<String> {
    let mut waits = Vec::new();
    let mut notes = Vec::new();
    for h in hosts {
        if matches!(
            registry.state(*h),
            Some(AgentState::Connected | AgentState::Idle)
        ) {
            if let Some(asked) = registry.silent_since(*h) {
                notes.push(silent_note(registry, *h, Some(asked)));
                continue;
            }
            let id = format!("facts-{}", new_task_id());
            let rx = registry.queue(
                *h,
                pb::Task {
                    id: id.clone(),
                    epoch: 0,
                    epoch_holder: String::new(),
                    kind: Some(pb::task::Kind::CollectFacts(pb::CollectFacts {})),
                },
            );
            waits.push((*h, id, rx));
        }
    }
    let asked = std::time::SystemTime::now();
    let deadline = tokio::time::Instant::now() + FACTS_WAIT;
    for (h, id, rx) in waits {
        if tokio::time::timeout_at(deadline, rx).await.is_err() {
            registry.cancel(h, &id);
            registry.mark_silent(h, asked);
            notes.push(silent_note(registry, h, None));
        }
    }
    notes
}

/// What a plan says of an agent that did not answer a request for fresh facts: just now
/// (`asked` is None), or at `asked`, so it was not asked again.
fn silent_note(registry: &Registry, host: IpAddr, asked: Option<std::time::SystemTime>) -> String {
    let ago = |t: std::time::SystemTime| {
        std::time::SystemTime::now()
            .duration_since(t)
            .unwrap_or_default()
            .as_secs()
    };
    let heard = match registry.last_seen(host) {
        Some(t) => format!("last heard from {} s ago", ago(t)),
        None => "never heard from".to_string(),
    };
    let stale = registry.stale_after().as_secs();
    let what = match asked {
        None => format!(
            "did not answer a request for fresh facts within {} s",
            FACTS_WAIT.as_secs()
        ),
        Some(t) => format!(
            "has not answered a request for fresh facts made {} s ago, so it was not asked again",
            ago(t)
        ),
    };
    format!(
        "the agent on {host} {what} ({heard}; it counts as stale after {stale} s): this plan uses the facts it sent last. Check quorum-agent on {host}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_conf(id: &str) -> pb::Task {
        pb::Task {
            id: id.into(),
            epoch: 0,
            epoch_holder: String::new(),
            kind: Some(pb::task::Kind::WriteEtcdConf(pb::WriteEtcdConf::default())),
        }
    }

    #[test]
    fn agents_older_than_the_coordinators_minor_get_only_reads() {
        let facts = pb::Task {
            id: "f".into(),
            epoch: 0,
            epoch_holder: String::new(),
            kind: Some(pb::task::Kind::CollectFacts(pb::CollectFacts::default())),
        };
        let status = pb::Task {
            id: "s".into(),
            epoch: 0,
            epoch_holder: String::new(),
            kind: Some(pb::task::Kind::ServiceAction(pb::ServiceAction {
                action: pb::Action::Status as i32,
                ..Default::default()
            })),
        };
        let (major, minor) = MIN_AGENT;
        let now = format!("{major}.{minor}.0");
        let later = format!("{major}.{}.0-2", minor + 1);
        let older = format!("{major}.{}.9", minor.saturating_sub(1));
        assert!(too_old(&now, &write_conf("w")).is_none());
        assert!(too_old(&later, &write_conf("w")).is_none());
        assert!(
            too_old("", &write_conf("w")).is_none(),
            "no facts yet: as before"
        );
        let why = too_old(&older, &write_conf("w")).expect("an older agent is refused");
        assert!(
            why.contains(&older) && why.contains("Upgrade the quorum-agent package"),
            "{why}"
        );
        assert!(too_old("not-a-version", &write_conf("w")).is_some());
        assert!(too_old(&older, &facts).is_none());
        assert!(too_old(&older, &status).is_none());
    }

    #[tokio::test]
    async fn a_poll_answers_a_task_the_agent_is_too_old_for_and_hands_the_rest() {
        let r = Registry::new(Duration::from_secs(60));
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        let facts = |v: &str| pb::Facts {
            agent_version: v.into(),
            ..Default::default()
        };
        let rx = r.queue(ip, write_conf("t1"));
        let got = r
            .poll(ip, Some(facts("0.0.1")), Duration::from_millis(10))
            .await;
        assert!(got.is_empty(), "{got:?}");
        let result = rx.await.expect("answered");
        assert_eq!(result.outcome, pb::Outcome::Refused as i32);
        assert!(result.output.contains("0.0.1"), "{}", result.output);
        // The same host upgraded: the next task is handed over.
        let _rx = r.queue(ip, write_conf("t2"));
        let version = env!("CARGO_PKG_VERSION");
        let got = r
            .poll(ip, Some(facts(version)), Duration::from_millis(10))
            .await;
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].id, "t2");
    }
}
