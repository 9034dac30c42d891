//! What the coordinator asks etcd itself, over mTLS with its own client certificate: the live
//! member list, each member's health, and the membership changes (learner add, promote,
//! remove, move-leader) that only the cluster can make.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, MemberAddOptions, TlsOptions};
use quorum_proto::tls::TlsMaterial;

/// How long one health probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);

/// A member as the cluster lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MemberInfo {
    /// Member id.
    pub id: u64,
    /// Name; empty while an added member has not started.
    pub name: String,
    /// Peer URLs.
    pub peer_urls: Vec<String>,
    /// Client URLs; empty while an added member has not started.
    pub client_urls: Vec<String>,
    /// A learner (non-voting).
    pub is_learner: bool,
}

/// What one member says of itself (`etcdctl endpoint status`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberStatus {
    /// The answering member's id.
    pub member_id: u64,
    /// The leader it knows (0: none).
    pub leader: u64,
    /// Its raft committed index.
    pub raft_index: u64,
    /// Its raft applied index.
    pub raft_applied_index: u64,
    /// Its raft term.
    pub raft_term: u64,
    /// It is a learner.
    pub is_learner: bool,
    /// Its etcd version.
    pub version: String,
    /// Its database size, bytes.
    pub db_size: i64,
    /// Alarms and errors it reports.
    pub errors: Vec<String>,
}

/// What went wrong asking one etcd endpoint, classified once from the client's error: the
/// way etcd's own client maps its server's messages back to typed errors
/// (`rpctypes.errStringToError`), so the runner matches variants and operators read a
/// sentence, never a Rust error's Debug dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Nothing answered at the endpoint: the OS's or TLS's reason ("connection refused").
    Unreachable(String),
    /// No answer in time.
    Timeout,
    /// etcd refuses a membership change until its leader has seen a quorum for a while
    /// (strict reconfiguration check): "etcdserver: unhealthy cluster".
    UnhealthyCluster,
    /// A promote refused because the learner has not caught up with the leader yet.
    LearnerNotReady,
    /// The member has no leader now: an election is under way, or quorum is lost.
    NoLeader,
    /// "etcdserver: member not found": seen from `member add` right after a member of the
    /// same peer URL was removed, while the removal settles.
    MemberNotFound,
    /// etcd RBAC refused the root password Quorum read from the inventory.
    AuthFailed,
    /// etcd RBAC is on and the request carried no (valid) user, or the user may not do it.
    PermissionDenied(String),
    /// Anything else, in etcd's (or the client's) own words.
    Other(String),
}

impl Fault {
    /// Classifies an etcd client error.
    pub fn of(e: &etcd_client::Error) -> Self {
        use etcd_client::Error as E;
        match e {
            E::GRpcStatus(st) => Self::of_status(st),
            E::TransportError(t) => {
                Self::in_sources(t).unwrap_or_else(|| Fault::Unreachable(deepest(t)))
            }
            E::IoError(io) => Fault::Unreachable(io_reason(io)),
            other => Fault::Other(other.to_string()),
        }
    }

    /// Classifies a gRPC status: a transport failure the client wrapped in it, else etcd's
    /// own message, else its code.
    pub fn of_status(st: &tonic::Status) -> Self {
        if let Some(f) = Self::in_sources(st) {
            return f;
        }
        if let Some(f) = Self::of_message(st.message()) {
            return f;
        }
        match st.code() {
            tonic::Code::DeadlineExceeded => Fault::Timeout,
            tonic::Code::Unavailable if std::error::Error::source(st).is_some() => {
                Fault::Unreachable(deepest(st))
            }
            _ => Fault::Other(st.message().to_string()),
        }
    }

    /// etcd's messages that mean something to the runner (etcd's `rpctypes`, 3.4 and 3.5).
    fn of_message(m: &str) -> Option<Self> {
        Some(match m {
            "etcdserver: unhealthy cluster" => Fault::UnhealthyCluster,
            "etcdserver: can only promote a learner member which is in sync with leader" => {
                Fault::LearnerNotReady
            }
            "etcdserver: no leader" | "etcdserver: leader changed" => Fault::NoLeader,
            "etcdserver: member not found" => Fault::MemberNotFound,
            "etcdserver: authentication failed, invalid user ID or password" => Fault::AuthFailed,
            "etcdserver: permission denied"
            | "etcdserver: user name is empty"
            | "etcdserver: user name not found"
            | "etcdserver: invalid auth token" => Fault::PermissionDenied(m.to_string()),
            "etcdserver: request timed out"
            | "etcdserver: request timed out, possibly due to previous leader failure"
            | "etcdserver: request timed out, possibly due to connection lost"
            | "etcdserver: request timed out, waiting for the applied index took too long" => {
                Fault::Timeout
            }
            _ => return None,
        })
    }

    /// A transport failure among `e` and its sources: the I/O error under a refused or reset
    /// connection or a failed TLS handshake, or tonic's own timeout.
    fn in_sources(e: &(dyn std::error::Error + 'static)) -> Option<Self> {
        let mut cur = Some(e);
        while let Some(err) = cur {
            if err.downcast_ref::<tonic::TimeoutExpired>().is_some() {
                return Some(Fault::Timeout);
            }
            if let Some(io) = err.downcast_ref::<std::io::Error>() {
                return Some(Fault::Unreachable(io_reason(io)));
            }
            cur = err.source();
        }
        None
    }

    /// Whether another endpoint may do better: a connection problem or a member without a
    /// leader, not an answer from the cluster.
    fn try_elsewhere(&self) -> bool {
        matches!(
            self,
            Fault::Unreachable(_) | Fault::Timeout | Fault::NoLeader | Fault::UnhealthyCluster
        )
    }

    /// The operator's sentence for this fault at `endpoint`.
    pub fn at(&self, endpoint: &str) -> String {
        match self {
            Fault::Unreachable(why) => format!("cannot reach {endpoint}: {why}"),
            Fault::Timeout => format!("{endpoint} did not answer in time"),
            Fault::UnhealthyCluster => format!(
                "{endpoint}: etcd refuses membership changes until its leader has seen a quorum for 5 seconds (unhealthy cluster)"
            ),
            Fault::LearnerNotReady => {
                format!("{endpoint}: the learner has not caught up with the leader yet")
            }
            Fault::NoLeader => format!(
                "{endpoint}: the member has no leader (an election is under way, or quorum is lost)"
            ),
            Fault::MemberNotFound => format!("{endpoint}: etcdserver: member not found"),
            Fault::AuthFailed => format!(
                "{endpoint}: etcd refused the root password: etcd_root_password in pigsty.yml is not the password of the cluster's root user. Nothing was changed. Put the cluster's current root password back in pigsty.yml (change it in etcd first with `etcdctl user passwd root` if a new one is meant)"
            ),
            Fault::PermissionDenied(m) => format!(
                "{endpoint}: {m} (etcd RBAC is on: set the inventory's Pigsty version to v4 or later, or quorum_pigsty_version, so that Quorum logs in as root with etcd_root_password)"
            ),
            Fault::Other(m) => format!("{endpoint}: {m}"),
        }
    }
}

/// The OS's word for a failed connection ("connection refused"), without Rust's framing; a
/// TLS failure, which comes as an I/O error around rustls' own, in rustls' words.
fn io_reason(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => "connection refused".into(),
        ConnectionReset => "connection reset".into(),
        TimedOut => "timed out".into(),
        _ => match (e.raw_os_error(), e.get_ref()) {
            (Some(_), _) => {
                let s = e.to_string();
                s.split(" (os error").next().unwrap_or(&s).to_lowercase()
            }
            (None, Some(inner)) => inner.to_string(),
            (None, None) => e.to_string(),
        },
    }
}

/// The message of the innermost source of `e`: the most specific words available.
fn deepest(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}

/// etcd errors, with the endpoints asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EtcdError {
    /// No endpoint did `op`: what each one said.
    NoAnswer {
        /// The operation.
        op: &'static str,
        /// Each endpoint tried, with its fault.
        tried: Vec<(String, Fault)>,
    },
    /// etcd answered `op` with a refusal.
    Refused {
        /// The operation.
        op: &'static str,
        /// The endpoint that answered.
        endpoint: String,
        /// etcd's answer.
        fault: Fault,
    },
}

impl EtcdError {
    /// Whether any endpoint answered with `fault`.
    pub fn has(&self, fault: &Fault) -> bool {
        match self {
            EtcdError::NoAnswer { tried, .. } => tried.iter().any(|(_, f)| f == fault),
            EtcdError::Refused { fault: f, .. } => f == fault,
        }
    }
}

impl std::fmt::Display for EtcdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EtcdError::NoAnswer { op, tried } if tried.is_empty() => {
                write!(f, "no etcd endpoint to ask for {op}")
            }
            EtcdError::NoAnswer { op, tried } => {
                let each: Vec<String> = tried.iter().map(|(ep, fault)| fault.at(ep)).collect();
                let unreachable = tried
                    .iter()
                    .all(|(_, f)| matches!(f, Fault::Unreachable(_) | Fault::Timeout));
                if unreachable {
                    write!(f, "no etcd endpoint answered {op}: {}", each.join("; "))
                } else {
                    write!(
                        f,
                        "{op} did not succeed on any endpoint: {}",
                        each.join("; ")
                    )
                }
            }
            EtcdError::Refused {
                op,
                endpoint,
                fault,
            } => write!(f, "etcd refused {op}: {}", fault.at(endpoint)),
        }
    }
}

impl std::error::Error for EtcdError {}

/// Why a member is not a healthy voter.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Unhealthy {
    /// It could not be asked, or answered with a fault.
    Fault(Fault),
    /// It is a learner.
    Learner,
    /// Its status lists errors (alarms).
    Errors(String),
    /// It answers, but a quorum read through it fails.
    QuorumRead(Fault),
}

impl Unhealthy {
    fn at(&self, endpoint: &str) -> String {
        match self {
            Unhealthy::Fault(f) => f.at(endpoint),
            Unhealthy::Learner => format!("{endpoint} is a learner (not yet promoted)"),
            Unhealthy::Errors(e) => format!("{endpoint} reports errors: {e}"),
            Unhealthy::QuorumRead(f) => {
                format!("a quorum read through it failed: {}", f.at(endpoint))
            }
        }
    }
}

/// Client access to etcd with the coordinator's certificate, and under etcd RBAC (Pigsty v4)
/// as root with the inventory's `etcd_root_password`.
#[derive(Clone)]
pub struct EtcdAccess {
    tls: TlsMaterial,
    /// Client URL → (user, password) of members whose cluster runs RBAC, as the inventory
    /// said when last read ([`Self::remember`]). Never printed.
    logins: Arc<RwLock<HashMap<String, Login>>>,
}

type Login = (String, crate::model::inventory::Secret);

/// etcd's answer to a login while RBAC is off.
const AUTH_NOT_ENABLED: &str = "etcdserver: authentication is not enabled";

impl EtcdAccess {
    /// Access with this TLS material (the coordinator's certificate has clientAuth).
    pub fn new(tls: TlsMaterial) -> Self {
        Self {
            tls,
            logins: Arc::default(),
        }
    }

    /// Learns from the inventory (just read) how to log in to `cluster`'s members: as root
    /// with `etcd_root_password` when its Pigsty generation runs RBAC, not at all otherwise.
    /// Called wherever the inventory is read for a cluster (planning, a run's start, status),
    /// so a changed password is used from then on.
    pub fn remember(&self, cluster: &crate::model::inventory::EtcdCluster) {
        let login = cluster
            .root_auth()
            .map(|(user, password)| (user.to_string(), password.clone()));
        let Ok(mut logins) = self.logins.write() else {
            return;
        };
        for m in &cluster.members {
            let url = crate::model::render::client_url(m);
            match &login {
                Some(l) => logins.insert(url, l.clone()),
                None => logins.remove(&url),
            };
        }
    }

    fn login_for(&self, endpoint: &str) -> Option<Login> {
        self.logins.read().ok()?.get(endpoint).cloned()
    }

    fn base_options(&self) -> ConnectOptions {
        ConnectOptions::new().with_tls(
            TlsOptions::new()
                .ca_certificate(Certificate::from_pem(&self.tls.ca_pem))
                .identity(Identity::from_pem(&self.tls.cert_pem, &self.tls.key_pem)),
        )
    }

    fn options(&self, timeout: Duration) -> ConnectOptions {
        self.base_options()
            .with_connect_timeout(timeout)
            .with_timeout(timeout)
    }

    /// Connects with `options`, logged in when RBAC credentials are set. The token is
    /// renewed by the client when etcd says it expired (a long run outlives etcd's
    /// `auth-token-ttl`, 300 s by default). A cluster whose RBAC is still off (one built
    /// before Pigsty v4, or a create before its `auth enable` step) answers the login with
    /// "authentication is not enabled": then the connection goes on without credentials.
    async fn connect(
        &self,
        endpoints: &[&str],
        options: ConnectOptions,
    ) -> Result<Client, etcd_client::Error> {
        let Some((user, password)) = endpoints.first().and_then(|e| self.login_for(e)) else {
            return Client::connect(endpoints, Some(options)).await;
        };
        let logged_in = options
            .clone()
            .with_user(user.clone(), password.expose())
            .with_auto_token_refresh(true);
        match Client::connect(endpoints, Some(logged_in)).await {
            Err(etcd_client::Error::GRpcStatus(st)) if st.message() == AUTH_NOT_ENABLED => {
                Client::connect(endpoints, Some(options)).await
            }
            other => other,
        }
    }

    /// Runs `op` against each of `endpoints` in turn until one answers. One endpoint at a
    /// time, because a client over several fails when any one of them is down, which is
    /// exactly when the coordinator needs to ask the others. A refusal by etcd itself (not a
    /// connection problem) is final and returned at once.
    async fn on_any<T, F, Fut>(
        &self,
        endpoints: &[String],
        op_name: &'static str,
        op: F,
    ) -> Result<T, EtcdError>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let mut tried = Vec::new();
        for ep in endpoints {
            let client = match self
                .connect(&[ep.as_str()], self.options(PROBE_TIMEOUT * 2))
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    tried.push((ep.clone(), Fault::of(&e)));
                    continue;
                }
            };
            // Bounded here too: a member without a leader can hold a request (a
            // linearizable member list) past the client's own deadline, and a gate that waits
            // on it must still end at its own deadline.
            let answer = match tokio::time::timeout(PROBE_TIMEOUT * 2, op(client)).await {
                Ok(a) => a,
                Err(_) => {
                    tried.push((ep.clone(), Fault::Timeout));
                    continue;
                }
            };
            match answer {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let fault = Fault::of(&e);
                    if !fault.try_elsewhere() {
                        return Err(EtcdError::Refused {
                            op: op_name,
                            endpoint: ep.clone(),
                            fault,
                        });
                    }
                    tried.push((ep.clone(), fault));
                }
            }
        }
        Err(EtcdError::NoAnswer { op: op_name, tried })
    }

    /// Whether the member at `endpoint` is a healthy voting member: it answers, knows a
    /// leader, is not a learner, and serves a linearizable read (which needs the leader).
    /// `Err` is the operator's sentence for why not.
    pub async fn member_health(&self, endpoint: &str) -> Result<(), String> {
        match self.member_health_once(endpoint).await {
            // An election in progress is not a sick member: ask once more after it.
            Err(Unhealthy::Fault(Fault::NoLeader)) => {
                tokio::time::sleep(Duration::from_millis(1200)).await;
                self.member_health_once(endpoint).await
            }
            other => other,
        }
        .map_err(|why| why.at(endpoint))
    }

    async fn member_health_once(&self, endpoint: &str) -> Result<(), Unhealthy> {
        let eps = [endpoint.to_string()];
        let probe = async {
            let fault = |e: etcd_client::Error| Unhealthy::Fault(Fault::of(&e));
            let mut c = self
                .connect(&[eps[0].as_str()], self.options(PROBE_TIMEOUT))
                .await
                .map_err(fault)?;
            let st = c.status().await.map_err(fault)?;
            if st.is_learner() {
                return Err(Unhealthy::Learner);
            }
            if st.leader() == 0 {
                return Err(Unhealthy::Fault(Fault::NoLeader));
            }
            if !st.errors().is_empty() {
                return Err(Unhealthy::Errors(st.errors().join("; ")));
            }
            c.get("health", None)
                .await
                .map_err(|e| Unhealthy::QuorumRead(Fault::of(&e)))?;
            Ok(())
        };
        match tokio::time::timeout(PROBE_TIMEOUT * 2, probe).await {
            Ok(r) => r,
            Err(_) => Err(Unhealthy::Fault(Fault::Timeout)),
        }
    }

    /// The live member list, asked of any of `endpoints`.
    pub async fn member_list(&self, endpoints: &[String]) -> Result<Vec<MemberInfo>, EtcdError> {
        Ok(self.member_list_of_cluster(endpoints).await?.1)
    }

    /// The cluster's id and its live member list, asked of any of `endpoints`.
    pub async fn member_list_of_cluster(
        &self,
        endpoints: &[String],
    ) -> Result<(u64, Vec<MemberInfo>), EtcdError> {
        let resp = self
            .on_any(endpoints, "member list", |mut c| async move {
                c.member_list().await
            })
            .await?;
        let cluster = resp.header().map(|h| h.cluster_id()).unwrap_or(0);
        let members = resp
            .members()
            .iter()
            .map(|m| MemberInfo {
                id: m.id(),
                name: m.name().to_string(),
                peer_urls: m.peer_urls().to_vec(),
                client_urls: m.client_urls().to_vec(),
                is_learner: m.is_learner(),
            })
            .collect();
        Ok((cluster, members))
    }

    /// Adds a learner with `peer_url`; returns its id.
    pub async fn add_learner(
        &self,
        endpoints: &[String],
        peer_url: &str,
    ) -> Result<u64, EtcdError> {
        let resp = self
            .on_any(endpoints, "member add --learner", |mut c| async move {
                c.member_add([peer_url], Some(MemberAddOptions::new().with_is_learner()))
                    .await
            })
            .await?;
        resp.member().map(|m| m.id()).ok_or(EtcdError::Refused {
            op: "member add --learner",
            endpoint: endpoints.join(","),
            fault: Fault::Other("no member in the answer".into()),
        })
    }

    /// Promotes learner `id`.
    pub async fn promote(&self, endpoints: &[String], id: u64) -> Result<(), EtcdError> {
        self.on_any(endpoints, "member promote", |mut c| async move {
            c.member_promote(id).await
        })
        .await
        .map(|_| ())
    }

    /// Removes member `id`.
    pub async fn remove(&self, endpoints: &[String], id: u64) -> Result<(), EtcdError> {
        self.on_any(endpoints, "member remove", |mut c| async move {
            c.member_remove(id).await
        })
        .await
        .map(|_| ())
    }

    /// The current leader's id, asked of any of `endpoints`.
    pub async fn leader(&self, endpoints: &[String]) -> Result<u64, EtcdError> {
        self.on_any(endpoints, "status", |mut c| async move { c.status().await })
            .await
            .map(|st| st.leader())
    }

    /// Moves leadership to `target`; must be asked of the current leader's endpoint.
    pub async fn move_leader(&self, leader_endpoint: &str, target: u64) -> Result<(), EtcdError> {
        self.on_any(
            &[leader_endpoint.to_string()],
            "move-leader",
            |mut c| async move { c.move_leader(target).await },
        )
        .await
        .map(|_| ())
    }
}

/// What [`EtcdAccess::enable_auth`] found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthEnabled {
    /// RBAC was on already and root logs in with the inventory's password.
    Already,
    /// Root was created (or its password set) and RBAC turned on now.
    Now,
}

/// etcd's answers that an idempotent RBAC step takes as done.
fn exists(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(st) if matches!(
        st.message(),
        "etcdserver: user name already exists" | "etcdserver: role name already exists"
    ))
}

/// `r`, with "already exists" taken as done.
fn done_if_exists<T>(r: Result<T, etcd_client::Error>) -> Result<(), etcd_client::Error> {
    match r {
        Err(e) if !exists(&e) => Err(e),
        _ => Ok(()),
    }
}

impl EtcdAccess {
    /// Turns etcd RBAC on as Pigsty v4's `etcd_auth` does, idempotently: when root already
    /// logs in with `password`, nothing; while RBAC is off, user root with `password` (its
    /// password set when it exists), the root role granted, then `auth enable`. A cluster
    /// whose RBAC is on with another root password is refused ([`Fault::AuthFailed`]).
    pub async fn enable_auth(
        &self,
        endpoints: &[String],
        password: &crate::model::inventory::Secret,
    ) -> Result<AuthEnabled, EtcdError> {
        let op = "auth enable";
        let mut tried = Vec::new();
        for ep in endpoints {
            let options = self.options(PROBE_TIMEOUT * 2);
            let logged_in = options
                .clone()
                .with_user("root", password.expose())
                .with_auto_token_refresh(true);
            match Client::connect([ep.as_str()], Some(logged_in)).await {
                Ok(_) => return Ok(AuthEnabled::Already),
                Err(etcd_client::Error::GRpcStatus(st)) if st.message() == AUTH_NOT_ENABLED => {}
                Err(e) => {
                    let fault = Fault::of(&e);
                    if !fault.try_elsewhere() {
                        return Err(EtcdError::Refused {
                            op,
                            endpoint: ep.clone(),
                            fault,
                        });
                    }
                    tried.push((ep.clone(), fault));
                    continue;
                }
            }
            let steps = async {
                let mut c = Client::connect([ep.as_str()], Some(options)).await?;
                match c.user_add("root", password.expose(), None).await {
                    Err(e) if exists(&e) => {
                        c.user_change_password("root", password.expose()).await?;
                    }
                    other => {
                        other?;
                    }
                }
                done_if_exists(c.role_add("root").await)?;
                c.user_grant_role("root", "root").await?;
                c.auth_enable().await?;
                Ok::<_, etcd_client::Error>(())
            };
            return match tokio::time::timeout(PROBE_TIMEOUT * 4, steps).await {
                Ok(Ok(())) => Ok(AuthEnabled::Now),
                Ok(Err(e)) => Err(EtcdError::Refused {
                    op,
                    endpoint: ep.clone(),
                    fault: Fault::of(&e),
                }),
                Err(_) => Err(EtcdError::Refused {
                    op,
                    endpoint: ep.clone(),
                    fault: Fault::Timeout,
                }),
            };
        }
        Err(EtcdError::NoAnswer { op, tried })
    }

    /// Creates or repairs a PostgreSQL cluster's etcd login as Pigsty v4's `pg_etcd` does:
    /// role `user` with read-write on keys under `prefix`, user `user` with `password` (set
    /// again when it exists), the role granted. Idempotent; needs root's login.
    pub async fn ensure_pg_user(
        &self,
        endpoints: &[String],
        user: &str,
        password: &crate::model::inventory::Secret,
        prefix: &str,
    ) -> Result<(), EtcdError> {
        self.on_any(endpoints, "pg etcd user", |mut c| async move {
            done_if_exists(c.role_add(user).await)?;
            c.role_grant_permission(
                user,
                etcd_client::Permission::read_write(prefix).with_prefix(),
            )
            .await?;
            // Added, or there already (by Pigsty, or a Citus primary at the same time): then
            // its password is set again.
            match c.user_add(user, password.expose(), None).await {
                Err(e) if exists(&e) => {
                    c.user_change_password(user, password.expose()).await?;
                }
                other => {
                    other?;
                }
            }
            c.user_grant_role(user, user).await?;
            Ok(())
        })
        .await
    }
}

impl EtcdAccess {
    /// The status of the member at `endpoint` (that member only, not any other).
    pub async fn member_status(&self, endpoint: &str) -> Result<MemberStatus, EtcdError> {
        let st = self
            .on_any(&[endpoint.to_string()], "status", |mut c| async move {
                c.status().await
            })
            .await?;
        Ok(MemberStatus {
            member_id: st.header().map(|h| h.member_id()).unwrap_or(0),
            leader: st.leader(),
            raft_index: st.raft_index(),
            raft_applied_index: st.raft_applied_index(),
            raft_term: st.raft_term(),
            is_learner: st.is_learner(),
            version: st.version().to_string(),
            db_size: st.db_size(),
            errors: st.errors().to_vec(),
        })
    }
}

impl EtcdAccess {
    /// Streams a snapshot from the first of `endpoints` that answers into `path` (created
    /// 0600, truncated on each attempt); returns the endpoint and the revision it was taken
    /// at. The stream ends with etcd's sha256 of the database, which the caller verifies.
    pub async fn snapshot_to(
        &self,
        endpoints: &[String],
        path: &std::path::Path,
    ) -> Result<(String, i64), EtcdError> {
        let mut tried = Vec::new();
        for ep in endpoints {
            match self.snapshot_from(ep, path).await {
                Ok(rev) => return Ok((ep.clone(), rev)),
                Err(fault) => tried.push((ep.clone(), fault)),
            }
        }
        Err(EtcdError::NoAnswer {
            op: "snapshot",
            tried,
        })
    }

    async fn snapshot_from(&self, ep: &str, path: &std::path::Path) -> Result<i64, Fault> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        // A large database streams for long: a connect timeout, no request deadline.
        let options = self.base_options().with_connect_timeout(PROBE_TIMEOUT * 2);
        let mut c = self
            .connect(&[ep], options)
            .await
            .map_err(|e| Fault::of(&e))?;
        // The revision the snapshot holds at least (its stream carries none on etcd 3.4).
        let status = tokio::time::timeout(PROBE_TIMEOUT * 2, c.status())
            .await
            .map_err(|_| Fault::Timeout)?
            .map_err(|e| Fault::of(&e))?;
        let mut revision = status.header().map(|h| h.revision()).unwrap_or(0);
        let mut stream = c
            .maintenance_client()
            .snapshot()
            .await
            .map_err(|e| Fault::of(&e))?;
        let file_fault = |what: &str, e: std::io::Error| {
            Fault::Other(format!("cannot {what} {}: {e}", path.display()))
        };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| file_fault("create", e))?;
        while let Some(chunk) = stream.message().await.map_err(|e| Fault::of(&e))? {
            if let Some(h) = chunk.header() {
                revision = revision.max(h.revision());
            }
            f.write_all(chunk.blob())
                .map_err(|e| file_fault("write", e))?;
        }
        f.sync_all().map_err(|e| file_fault("fsync", e))?;
        Ok(revision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::{Code, Status};

    /// TLS material from a fresh CA: what the coordinator presents to etcd.
    fn material(dir: &std::path::Path) -> Result<TlsMaterial, Box<dyn std::error::Error>> {
        crate::model::pki::init_ca(dir, "quorum.test")?;
        let ca = crate::model::pki::Ca::load(dir, None)?;
        let ip = std::net::IpAddr::from([127, 0, 0, 1]);
        let (cert, key) = ca.issue(
            crate::model::pki::LeafKind::Coordinator,
            &[ip],
            None,
            std::time::Duration::from_secs(86_400),
        )?;
        Ok(TlsMaterial {
            ca_pem: ca.cert_pem().as_bytes().to_vec(),
            cert_pem: cert.into_bytes(),
            key_pem: key.into_bytes(),
        })
    }

    fn no_dump(msg: &str) {
        for raw in [
            "tonic::",
            "Error(",
            "Os {",
            "ConnectError",
            "source:",
            "grpc request error",
        ] {
            assert!(!msg.contains(raw), "a raw error dump in {msg:?}");
        }
    }

    #[tokio::test]
    async fn a_dead_member_reads_as_connection_refused() -> Result<(), Box<dyn std::error::Error>> {
        let t = tempfile::tempdir()?;
        let etcd = EtcdAccess::new(material(t.path())?);
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let url = format!("https://127.0.0.1:{port}");
        let health = etcd.member_health(&url).await;
        assert_eq!(
            health,
            Err(format!("cannot reach {url}: connection refused"))
        );
        let list = etcd.member_list(std::slice::from_ref(&url)).await;
        let err = list.err().ok_or("a member list from a closed port")?;
        assert_eq!(
            err,
            EtcdError::NoAnswer {
                op: "member list",
                tried: vec![(url.clone(), Fault::Unreachable("connection refused".into()))]
            }
        );
        let msg = err.to_string();
        assert_eq!(
            msg,
            format!(
                "no etcd endpoint answered member list: cannot reach {url}: connection refused"
            )
        );
        no_dump(&msg);
        Ok(())
    }

    #[tokio::test]
    async fn a_silent_endpoint_reads_as_no_answer_in_time() -> Result<(), Box<dyn std::error::Error>>
    {
        let t = tempfile::tempdir()?;
        let etcd = EtcdAccess::new(material(t.path())?);
        // Accepts connections (the kernel's backlog) and never speaks TLS.
        let silent = std::net::TcpListener::bind("127.0.0.1:0")?;
        let url = format!("https://{}", silent.local_addr()?);
        let health = etcd.member_health(&url).await;
        assert_eq!(health, Err(format!("{url} did not answer in time")));
        Ok(())
    }

    #[test]
    fn etcds_messages_map_to_faults_and_sentences() {
        let st = |code, msg: &str| Fault::of_status(&Status::new(code, msg));
        assert_eq!(
            st(Code::Unavailable, "etcdserver: unhealthy cluster"),
            Fault::UnhealthyCluster
        );
        assert_eq!(
            st(Code::NotFound, "etcdserver: member not found"),
            Fault::MemberNotFound
        );
        assert_eq!(
            st(
                Code::FailedPrecondition,
                "etcdserver: can only promote a learner member which is in sync with leader"
            ),
            Fault::LearnerNotReady
        );
        assert_eq!(
            st(Code::Unavailable, "etcdserver: leader changed"),
            Fault::NoLeader
        );
        assert_eq!(
            st(Code::Unavailable, "etcdserver: no leader"),
            Fault::NoLeader
        );
        assert_eq!(
            st(Code::Unavailable, "etcdserver: request timed out"),
            Fault::Timeout
        );
        assert_eq!(
            st(Code::DeadlineExceeded, "deadline has elapsed"),
            Fault::Timeout
        );
        // The promote of a voting member is final, in etcd's own words.
        let other = st(
            Code::FailedPrecondition,
            "etcdserver: can only promote a learner member",
        );
        assert_eq!(
            other,
            Fault::Other("etcdserver: can only promote a learner member".into())
        );
        assert!(!other.try_elsewhere());
        // A connection refused that the client wrapped in a status, as tonic does.
        let wrapped = Status::from_error(Box::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        assert_eq!(
            Fault::of_status(&wrapped),
            Fault::Unreachable("connection refused".into())
        );
        let err = EtcdError::NoAnswer {
            op: "member add --learner",
            tried: vec![
                ("https://10.0.0.1:2379".into(), Fault::UnhealthyCluster),
                (
                    "https://10.0.0.2:2379".into(),
                    Fault::Unreachable("connection refused".into()),
                ),
            ],
        };
        assert!(err.has(&Fault::UnhealthyCluster));
        assert!(!err.has(&Fault::LearnerNotReady));
        assert_eq!(
            err.to_string(),
            "member add --learner did not succeed on any endpoint: https://10.0.0.1:2379: etcd refuses membership changes until its leader has seen a quorum for 5 seconds (unhealthy cluster); cannot reach https://10.0.0.2:2379: connection refused"
        );
        let refused = EtcdError::Refused {
            op: "member remove",
            endpoint: "https://10.0.0.1:2379".into(),
            fault: Fault::Other("etcdserver: member not found".into()),
        };
        assert_eq!(
            refused.to_string(),
            "etcd refused member remove: https://10.0.0.1:2379: etcdserver: member not found"
        );
    }
}
