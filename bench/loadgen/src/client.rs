//! mTLS channels to the coordinator, built exactly as the real agent and CLI build theirs
//! (`TlsMaterial::coordinator_endpoint`: the coordinator role checked, TCP_NODELAY, HTTP/2
//! keepalive every 10 s, 5 s connect timeout), so what the coordinator serves here is what it
//! serves in production.

use std::net::IpAddr;
use std::path::Path;

use anyhow::{Context, Result};
use quorum_proto::pb::admin_service_client::AdminServiceClient;
use quorum_proto::pb::agent_service_client::AgentServiceClient;
use tonic::transport::{Channel, Endpoint};

/// Largest message the loadgen accepts: `ListAgents` of 10,000 agents is a few MiB.
const MAX_DECODE: usize = 256 * 1024 * 1024;

/// An endpoint for `url` presenting `cert`/`key` (PEM) and trusting `ca` (PEM); with a
/// `source` address, the connection leaves from that loopback IP (as a real host's would).
pub fn endpoint(
    url: &str,
    ca: &str,
    cert: &str,
    key: &str,
    source: Option<IpAddr>,
) -> Result<Endpoint> {
    let tls = quorum_proto::tls::TlsMaterial {
        ca_pem: ca.as_bytes().to_vec(),
        cert_pem: cert.as_bytes().to_vec(),
        key_pem: key.as_bytes().to_vec(),
    };
    let trust_domain = quorum_proto::tls::first_cert_der(&tls.cert_pem)
        .and_then(|der| quorum_proto::identity::trust_domain_of(&der))
        .unwrap_or_else(|| quorum_proto::identity::DEFAULT_TRUST_DOMAIN.to_string());
    Ok(tls
        .coordinator_endpoint(url, &trust_domain)?
        .local_address(source))
}

/// An agent-service client over `channel`.
pub fn agent_client(channel: Channel) -> AgentServiceClient<Channel> {
    AgentServiceClient::new(channel)
        .max_decoding_message_size(MAX_DECODE)
        .max_encoding_message_size(quorum_proto::MAX_MESSAGE_BYTES)
}

/// Admin credentials read from PEM files.
#[derive(Clone)]
pub struct AdminCreds {
    /// Coordinator URL.
    pub url: String,
    /// CA certificate PEM.
    pub ca: String,
    /// Admin certificate PEM.
    pub cert: String,
    /// Admin key PEM.
    pub key: String,
}

impl AdminCreds {
    /// Reads the CA and the admin certificate and key.
    pub fn load(url: &str, ca: &Path, cert: &Path, key: &Path) -> Result<Self> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))
        };
        Ok(Self {
            url: url.to_string(),
            ca: read(ca)?,
            cert: read(cert)?,
            key: read(key)?,
        })
    }

    /// A connected admin client (the TLS handshake is done before this returns).
    pub async fn connect(&self) -> Result<AdminServiceClient<Channel>> {
        let channel = endpoint(&self.url, &self.ca, &self.cert, &self.key, None)?
            .connect()
            .await
            .with_context(|| format!("cannot connect to the coordinator at {}", self.url))?;
        Ok(AdminServiceClient::new(channel).max_decoding_message_size(MAX_DECODE))
    }
}
