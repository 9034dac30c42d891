//! What the coordinator asks etcd itself, over mTLS with its own client certificate: the live
//! member list, each member's health, and the membership changes (learner add, promote,
//! remove, move-leader) that only the cluster can make.

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

/// etcd errors, with the endpoints asked.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// No endpoint answered.
    #[error("no etcd endpoint answered ({endpoints}): {message}")]
    Unreachable {
        /// The endpoints tried.
        endpoints: String,
        /// The last error.
        message: String,
    },
    /// etcd answered with an error.
    #[error("etcd refused {op}: {message}")]
    Refused {
        /// The operation.
        op: &'static str,
        /// etcd's message.
        message: String,
    },
}

/// Client access to etcd with the coordinator's certificate.
#[derive(Clone)]
pub struct EtcdAccess {
    tls: TlsMaterial,
}

impl EtcdAccess {
    /// Access with this TLS material (the coordinator's certificate has clientAuth).
    pub fn new(tls: TlsMaterial) -> Self {
        Self { tls }
    }

    fn options(&self, timeout: Duration) -> ConnectOptions {
        ConnectOptions::new()
            .with_tls(
                TlsOptions::new()
                    .ca_certificate(Certificate::from_pem(&self.tls.ca_pem))
                    .identity(Identity::from_pem(&self.tls.cert_pem, &self.tls.key_pem)),
            )
            .with_connect_timeout(timeout)
            .with_timeout(timeout)
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
        let mut errors = Vec::new();
        for ep in endpoints {
            let client =
                match Client::connect([ep.as_str()], Some(self.options(PROBE_TIMEOUT * 2))).await {
                    Ok(c) => c,
                    Err(e) => {
                        errors.push(format!("{ep}: {e}"));
                        continue;
                    }
                };
            match op(client).await {
                Ok(v) => return Ok(v),
                Err(etcd_client::Error::GRpcStatus(st))
                    if !matches!(
                        st.code(),
                        tonic::Code::Unavailable
                            | tonic::Code::DeadlineExceeded
                            | tonic::Code::Cancelled
                            | tonic::Code::Unknown
                    ) =>
                {
                    return Err(EtcdError::Refused {
                        op: op_name,
                        message: st.message().to_string(),
                    })
                }
                Err(e) => errors.push(format!("{ep}: {e}")),
            }
        }
        Err(EtcdError::Unreachable {
            endpoints: endpoints.join(","),
            message: if errors.is_empty() {
                "no endpoint given".into()
            } else {
                errors.join("; ")
            },
        })
    }

    /// Whether the member at `endpoint` is a healthy voting member: it answers, knows a
    /// leader, is not a learner, and serves a linearizable read (which needs the leader).
    pub async fn member_health(&self, endpoint: &str) -> Result<(), String> {
        match self.member_health_once(endpoint).await {
            // An election in progress is not a sick member: ask once more after it.
            Err(e) if e.contains("leader changed") => {
                tokio::time::sleep(Duration::from_millis(1200)).await;
                self.member_health_once(endpoint).await
            }
            other => other,
        }
    }

    async fn member_health_once(&self, endpoint: &str) -> Result<(), String> {
        let eps = [endpoint.to_string()];
        let probe = async {
            let mut c = Client::connect(&eps, Some(self.options(PROBE_TIMEOUT)))
                .await
                .map_err(|e| format!("cannot connect: {e}"))?;
            let st = c
                .status()
                .await
                .map_err(|e| format!("status failed: {e}"))?;
            if st.is_learner() {
                return Err("it is a learner (not yet promoted)".to_string());
            }
            if st.leader() == 0 {
                return Err("it has no leader".to_string());
            }
            if !st.errors().is_empty() {
                return Err(format!("it reports errors: {}", st.errors().join("; ")));
            }
            c.get("health", None)
                .await
                .map_err(|e| format!("a quorum read failed: {e}"))?;
            Ok(())
        };
        match tokio::time::timeout(PROBE_TIMEOUT * 2, probe).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {:?}", PROBE_TIMEOUT * 2)),
        }
    }

    /// The live member list, asked of any of `endpoints`.
    pub async fn member_list(&self, endpoints: &[String]) -> Result<Vec<MemberInfo>, EtcdError> {
        let resp = self
            .on_any(endpoints, "member list", |mut c| async move {
                c.member_list().await
            })
            .await?;
        Ok(resp
            .members()
            .iter()
            .map(|m| MemberInfo {
                id: m.id(),
                name: m.name().to_string(),
                peer_urls: m.peer_urls().to_vec(),
                client_urls: m.client_urls().to_vec(),
                is_learner: m.is_learner(),
            })
            .collect())
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
            message: "no member in the answer".into(),
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
