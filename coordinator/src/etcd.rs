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
            // Bounded here too: a member without a leader can hold a request (a
            // linearizable member list) past the client's own deadline, and a gate that waits
            // on it must still end at its own deadline.
            let answer = match tokio::time::timeout(PROBE_TIMEOUT * 2, op(client)).await {
                Ok(a) => a,
                Err(_) => {
                    errors.push(format!("{ep}: no answer within {:?}", PROBE_TIMEOUT * 2));
                    continue;
                }
            };
            match answer {
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
    /// Streams a snapshot from the first of `endpoints` that answers into `path` (created
    /// 0600, truncated on each attempt); returns the endpoint and the revision it was taken
    /// at. The stream ends with etcd's sha256 of the database, which the caller verifies.
    pub async fn snapshot_to(
        &self,
        endpoints: &[String],
        path: &std::path::Path,
    ) -> Result<(String, i64), EtcdError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut errors = Vec::new();
        for ep in endpoints {
            let attempt = async {
                // A large database streams for long: a connect timeout, no request deadline.
                let options = ConnectOptions::new()
                    .with_tls(
                        TlsOptions::new()
                            .ca_certificate(Certificate::from_pem(&self.tls.ca_pem))
                            .identity(Identity::from_pem(&self.tls.cert_pem, &self.tls.key_pem)),
                    )
                    .with_connect_timeout(PROBE_TIMEOUT * 2);
                let c = Client::connect([ep.as_str()], Some(options))
                    .await
                    .map_err(|e| e.to_string())?;
                let mut stream = c
                    .maintenance_client()
                    .snapshot()
                    .await
                    .map_err(|e| e.to_string())?;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
                let mut revision = 0;
                while let Some(chunk) = stream.message().await.map_err(|e| e.to_string())? {
                    if let Some(h) = chunk.header() {
                        revision = revision.max(h.revision());
                    }
                    f.write_all(chunk.blob())
                        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                }
                f.sync_all()
                    .map_err(|e| format!("cannot fsync {}: {e}", path.display()))?;
                Ok::<i64, String>(revision)
            };
            match attempt.await {
                Ok(rev) => return Ok((ep.clone(), rev)),
                Err(e) => errors.push(format!("{ep}: {e}")),
            }
        }
        Err(EtcdError::Unreachable {
            endpoints: endpoints.join(","),
            message: errors.join("; "),
        })
    }
}
