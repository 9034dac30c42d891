//! A simulated agent: what `quorum-agent run` does on the wire, without the host work. It
//! connects with its own certificate from its own 127/8 address, polls with facts the size a
//! real host sends (on a `Session` stream as quorum-agent does, or with the unary `Poll` of
//! 0.1 agents), and answers every task it is handed with an immediate report (outcome OK), so
//! the time it adds is only the wire's.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quorum_proto::pb;
use tokio::sync::{watch, Semaphore};
use tonic::transport::{Channel, Endpoint};

use crate::client::agent_client;
use quorum_proto::pb::agent_service_client::AgentServiceClient;

/// The real agent's poll deadline (agent/src/pull.rs): the coordinator holds a poll ~30 s.
const POLL_DEADLINE: Duration = Duration::from_secs(75);

/// Counters the simulated agents share.
#[derive(Default)]
pub struct Counters {
    /// Failed connection attempts (each is retried after a pause).
    pub connect_errors: AtomicU64,
    /// Failed polls (retried after a pause).
    pub poll_errors: AtomicU64,
    /// Failed reports (the task is redelivered on the next poll).
    pub report_errors: AtomicU64,
    /// Tasks handed to the simulated agents.
    pub tasks: AtomicU64,
    /// Duration of each successful `connect()` (TCP + TLS + HTTP/2 handshake).
    pub handshakes: Mutex<Vec<Duration>>,
    /// The first error any simulated agent saw, for the operator.
    pub first_error: Mutex<Option<String>>,
}

impl Counters {
    /// Keeps `e` if it is the first error.
    pub fn note_error(&self, e: String) {
        if let Ok(mut f) = self.first_error.lock() {
            f.get_or_insert(e);
        }
    }
}

/// Facts the size a real Postgres host's agent sends: three services, seven file facts (two
/// present, with a sha256 each), the data dir. About 700 bytes on the wire.
fn sim_facts(ip: IpAddr) -> pb::Facts {
    let sha = |seed: &str| {
        let h: u128 = seed.bytes().fold(0xcbf29ce484222325, |h, b| {
            (h ^ u128::from(b)).wrapping_mul(0x100000001b3)
        });
        format!("{h:032x}{:032x}", h.rotate_left(64))
    };
    let mut f = pb::Facts {
        agent_version: "0.1.0-loadgen".into(),
        host_ip: ip.to_string(),
        hostname: format!("sim-{ip}"),
        ..Default::default()
    };
    for (svc, state) in [
        ("etcd", pb::ServiceState::Inactive),
        ("patroni", pb::ServiceState::Active),
        ("vip-manager", pb::ServiceState::Active),
    ] {
        f.services.insert(svc.into(), state as i32);
    }
    for key in [
        "etcd_conf",
        "etcd_ca",
        "etcd_cert",
        "etcd_key",
        "etcdctl_profile",
        "patroni_conf",
        "vip_conf",
    ] {
        let present = matches!(key, "patroni_conf" | "vip_conf");
        f.files.insert(
            key.into(),
            pb::FileFact {
                exists: present,
                sha256: if present {
                    sha(&format!("{ip}{key}"))
                } else {
                    String::new()
                },
                ..Default::default()
            },
        );
    }
    f.data_dir = Some(pb::DataDirFact {
        path: "/data/etcd".into(),
        has_member: false,
        ..Default::default()
    });
    f
}

/// One simulated agent: connect (bounded by `gate`), then poll / report until `stop`.
pub async fn sim_agent(
    ip: IpAddr,
    ep: Endpoint,
    gate: Arc<Semaphore>,
    counters: Arc<Counters>,
    protocol: Protocol,
    mut stop: watch::Receiver<bool>,
) {
    let channel: Channel = loop {
        let Ok(permit) = gate.acquire().await else {
            return;
        };
        let t = Instant::now();
        let attempt = tokio::select! {
            _ = stop.changed() => return,
            r = ep.connect() => r,
        };
        drop(permit);
        match attempt {
            Ok(ch) => {
                if let Ok(mut h) = counters.handshakes.lock() {
                    h.push(t.elapsed());
                }
                break ch;
            }
            Err(e) => {
                counters.connect_errors.fetch_add(1, Ordering::Relaxed);
                counters.note_error(format!("connect from {ip}: {e:?}"));
                let pause = Duration::from_millis(rand::random_range(200..1000));
                tokio::time::sleep(pause).await;
            }
        }
    };
    let client = agent_client(channel);
    let sim = Sim {
        ip,
        agent_id: ip.to_string(),
        facts: sim_facts(ip),
        counters,
    };
    match protocol {
        Protocol::Session => sim.sessions(client, stop).await,
        Protocol::Unary => sim.unary(client, stop).await,
    }
}

/// Which calls a simulated agent makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// One `Session` stream per agent, as quorum-agent 0.2 does.
    Session,
    /// A unary `Poll` and `Report` per task, as quorum-agent 0.1 did.
    Unary,
}

impl Protocol {
    /// The name the results file and the table use.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Session => "session",
            Protocol::Unary => "unary",
        }
    }
}

struct Sim {
    ip: IpAddr,
    agent_id: String,
    facts: pb::Facts,
    counters: Arc<Counters>,
}

impl Sim {
    fn poll_failed(&self, e: String) -> Duration {
        self.counters.poll_errors.fetch_add(1, Ordering::Relaxed);
        self.counters
            .note_error(format!("poll from {}: {e}", self.ip));
        Duration::from_millis(rand::random_range(200..1000))
    }

    /// The report of `task`, with facts as every agent sends them.
    fn report(&self, task: pb::Task) -> pb::ReportRequest {
        self.counters.tasks.fetch_add(1, Ordering::Relaxed);
        pb::ReportRequest {
            agent_id: self.agent_id.clone(),
            task_id: task.id,
            outcome: pb::Outcome::Ok as i32,
            output: "facts collected".into(),
            facts: Some(self.facts.clone()),
            journal: None,
        }
    }

    /// quorum-agent 0.1: a unary poll, a unary report per task.
    async fn unary(
        &self,
        mut client: AgentServiceClient<Channel>,
        mut stop: watch::Receiver<bool>,
    ) {
        while !*stop.borrow() {
            let mut req = tonic::Request::new(pb::PollRequest {
                agent_id: self.agent_id.clone(),
                facts: Some(self.facts.clone()),
                highest_epoch: 0,
            });
            req.set_timeout(POLL_DEADLINE);
            let answer = tokio::select! {
                _ = stop.changed() => return,
                r = client.poll(req) => r,
            };
            match answer {
                Ok(resp) => {
                    for task in resp.into_inner().tasks {
                        if let Err(s) = client.report(self.report(task)).await {
                            self.counters.report_errors.fetch_add(1, Ordering::Relaxed);
                            self.counters
                                .note_error(format!("report from {}: {s}", self.ip));
                        }
                    }
                }
                Err(s) => tokio::time::sleep(self.poll_failed(s.to_string())).await,
            }
        }
    }

    /// quorum-agent 0.2: polls and reports on one `Session` stream (agent/src/pull.rs), a new
    /// session after a pause when one ends.
    async fn sessions(
        &self,
        mut client: AgentServiceClient<Channel>,
        mut stop: watch::Receiver<bool>,
    ) {
        while !*stop.borrow() {
            let ended = tokio::select! {
                _ = stop.changed() => return,
                e = self.session(&mut client) => e,
            };
            tokio::time::sleep(self.poll_failed(ended)).await;
        }
    }

    /// One session; returns why it ended.
    async fn session(&self, client: &mut AgentServiceClient<Channel>) -> String {
        use pb::agent_message::Kind;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let poll = |facts: bool| pb::AgentMessage {
            kind: Some(Kind::Poll(pb::PollRequest {
                agent_id: self.agent_id.clone(),
                facts: facts.then(|| self.facts.clone()),
                highest_epoch: 0,
            })),
        };
        if tx.send(poll(true)).await.is_err() {
            return "session closed".into();
        }
        let mut inbound = match client
            .session(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
        {
            Ok(r) => r.into_inner(),
            Err(s) => return s.to_string(),
        };
        loop {
            let tasks = match tokio::time::timeout(POLL_DEADLINE, inbound.message()).await {
                Ok(Ok(Some(r))) => r.tasks,
                Ok(Ok(None)) => return "the coordinator ended the session".into(),
                Ok(Err(s)) => return s.to_string(),
                Err(_) => return "no answer to a poll".into(),
            };
            let ran = !tasks.is_empty();
            for task in tasks {
                let report = Kind::Report(self.report(task));
                if tx
                    .send(pb::AgentMessage { kind: Some(report) })
                    .await
                    .is_err()
                {
                    return "session closed".into();
                }
            }
            if tx.send(poll(!ran)).await.is_err() {
                return "session closed".into();
            }
        }
    }
}
