//! Patroni's REST API as the coordinator uses it: who leads a PostgreSQL cluster, whether an
//! instance runs, and a switchover. Plain HTTP/1.1 over TCP (Pigsty's default,
//! `patroni_ssl_enabled: false`), one request per connection, bounded by timeouts.

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One Patroni instance as the runner reaches it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgNode {
    /// The host.
    pub ip: IpAddr,
    /// Patroni's member name (`<pg_cluster>-<pg_seq>`).
    pub name: String,
    /// Its REST API, `http://ip:port`.
    pub api: String,
    /// It runs vip-manager (`pg_vip_enabled`).
    pub vip: bool,
}

/// A PostgreSQL cluster as the runner reaches it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgRef {
    /// `pg_cluster`.
    pub name: String,
    /// Its instances.
    pub members: Vec<PgNode>,
}

impl PgRef {
    /// The instance on `ip`.
    pub fn node(&self, ip: IpAddr) -> Option<&PgNode> {
        self.members.iter().find(|m| m.ip == ip)
    }

    /// The instance a `/cluster` member stands for: by host, else by name.
    pub fn node_of(&self, m: &ClusterMember) -> Option<&PgNode> {
        let by_host = m.host.parse::<IpAddr>().ok().and_then(|ip| self.node(ip));
        by_host.or_else(|| self.members.iter().find(|n| n.name == m.name))
    }

    /// `/cluster` as the first instance that answers sees it.
    pub async fn cluster(&self) -> Result<ClusterView, String> {
        let mut errors = Vec::new();
        for n in &self.members {
            match get_json(&format!("{}/cluster", n.api)).await {
                Ok(v) => return ClusterView::from_json(&v),
                Err(e) => errors.push(format!("{}: {e}", n.ip)),
            }
        }
        Err(format!(
            "no Patroni of cluster {} answered GET /cluster ({})",
            self.name,
            errors.join("; ")
        ))
    }
}

/// One member of Patroni's `GET /cluster`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterMember {
    /// Member name.
    pub name: String,
    /// `leader`, `replica`, `sync_standby`, `standby_leader`, ...
    pub role: String,
    /// `running`, `streaming` (4.x replicas), `starting`, `stopped`, ...
    pub state: String,
    /// The host of its connect address.
    pub host: String,
    /// Its timeline, when reported.
    pub timeline: Option<u64>,
    /// Replication lag in bytes, when reported (replicas).
    pub lag: Option<u64>,
}

impl ClusterMember {
    /// It leads the cluster.
    pub fn is_leader(&self) -> bool {
        matches!(self.role.as_str(), "leader" | "standby_leader" | "master")
    }
    /// PostgreSQL runs there (3.x says `running`, 4.x replicas `streaming`).
    pub fn is_running(&self) -> bool {
        matches!(self.state.as_str(), "running" | "streaming")
    }
}

/// Patroni's `GET /cluster`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterView {
    /// The members.
    pub members: Vec<ClusterMember>,
}

impl ClusterView {
    fn from_json(v: &serde_json::Value) -> Result<Self, String> {
        let list = v
            .get("members")
            .and_then(|m| m.as_array())
            .ok_or("GET /cluster answered without a `members` list")?;
        let s = |m: &serde_json::Value, k: &str| {
            m.get(k)
                .and_then(|x| x.as_str())
                .unwrap_or_default()
                .to_string()
        };
        let members = list
            .iter()
            .map(|m| ClusterMember {
                name: s(m, "name"),
                role: s(m, "role"),
                state: s(m, "state"),
                host: s(m, "host"),
                timeline: m.get("timeline").and_then(|t| t.as_u64()),
                lag: m.get("lag").and_then(|t| t.as_u64()),
            })
            .collect();
        Ok(Self { members })
    }

    /// The running leader, if there is one.
    pub fn leader(&self) -> Option<&ClusterMember> {
        self.members.iter().find(|m| m.is_leader())
    }

    /// A one-line summary: `pg-test-1 leader running, pg-test-2 replica running`.
    pub fn summary(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{} {} {}", m.name, m.role, m.state))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `GET /patroni` of one instance: its `state` and `role`.
pub async fn instance_state(api: &str) -> Result<(String, String), String> {
    let v = get_json(&format!("{api}/patroni")).await?;
    let s = |k: &str| {
        v.get(k)
            .and_then(|x| x.as_str())
            .unwrap_or_default()
            .to_string()
    };
    Ok((s("state"), s("role")))
}

/// `POST /switchover` on the leader's API: leadership from `leader` to `candidate`.
/// Patroni answers once the switchover is done (or has failed).
pub async fn switchover(
    api: &str,
    auth: Option<(&str, &str)>,
    leader: &str,
    candidate: &str,
) -> Result<String, String> {
    let body = serde_json::json!({ "leader": leader, "candidate": candidate }).to_string();
    let (status, text) = request(
        "POST",
        &format!("{api}/switchover"),
        Some(&body),
        auth,
        Duration::from_secs(90),
    )
    .await?;
    match status {
        200 => Ok(text.trim().to_string()),
        401 | 403 => Err(format!(
            "Patroni refused the credentials ({status} {}): check patroni_username / patroni_password in the inventory",
            text.trim()
        )),
        _ => Err(format!("Patroni answered {status}: {}", text.trim())),
    }
}

async fn get_json(url: &str) -> Result<serde_json::Value, String> {
    let (status, body) = request("GET", url, None, None, Duration::from_secs(5)).await?;
    // /patroni answers 503 with a full body when PostgreSQL is not running: the body counts.
    if !(200..300).contains(&status) && status != 503 {
        return Err(format!("GET {url} answered {status}: {}", body.trim()));
    }
    serde_json::from_str(&body)
        .map_err(|e| format!("GET {url} answered a body that is not JSON ({e})"))
}

/// One HTTP/1.1 request over a fresh connection; returns (status, body).
pub async fn request(
    method: &str,
    url: &str,
    body: Option<&str>,
    auth: Option<(&str, &str)>,
    timeout: Duration,
) -> Result<(u16, String), String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        format!("{url}: only http:// Patroni APIs are supported (patroni_ssl_enabled: false)")
    })?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let run = async {
        let mut stream = tokio::net::TcpStream::connect(hostport)
            .await
            .map_err(|e| format!("cannot connect to {hostport}: {e}"))?;
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\nAccept: application/json\r\n"
        );
        if let Some((user, pass)) = auth {
            req.push_str(&format!(
                "Authorization: Basic {}\r\n",
                basic_credentials(user, pass)
            ));
        }
        let payload = body.unwrap_or("");
        if body.is_some() {
            req.push_str("Content-Type: application/json\r\n");
        }
        req.push_str(&format!(
            "Content-Length: {}\r\n\r\n{payload}",
            payload.len()
        ));
        stream
            .write_all(req.as_bytes())
            .await
            .map_err(|e| format!("cannot send to {hostport}: {e}"))?;
        let mut raw = Vec::new();
        stream
            .read_to_end(&mut raw)
            .await
            .map_err(|e| format!("cannot read from {hostport}: {e}"))?;
        parse_response(&raw).map_err(|e| format!("{method} {url}: {e}"))
    };
    tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| format!("{method} {url}: no answer within {timeout:?}"))?
}

fn parse_response(raw: &[u8]) -> Result<(u16, String), String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the answer has no end of headers")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or("the answer has no HTTP status line")?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let mut body = raw[split + 4..].to_vec();
    if chunked {
        body = dechunk(&body)?;
    }
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("a chunk has no size line")?;
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size {
            return Err("a chunk is cut short".into());
        }
        out.extend_from_slice(&data[..size]);
        data = data.get(size + 2..).unwrap_or_default();
    }
}

/// HTTP Basic credentials, `base64(user:password)` (RFC 7617).
fn basic_credentials(user: &str, pass: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_rfc7617() {
        assert_eq!(
            basic_credentials("postgres", "Patroni.API"),
            "cG9zdGdyZXM6UGF0cm9uaS5BUEk="
        );
    }

    #[test]
    fn responses_parse_plain_and_chunked() {
        let plain = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"a\":1}";
        assert_eq!(parse_response(plain), Ok((200, "{\"a\":1}".to_string())));
        let chunked =
            b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked), Ok((503, "abcde".to_string())));
        assert!(parse_response(b"garbage").is_err());
    }

    #[test]
    fn cluster_view_finds_the_leader() {
        let v = serde_json::json!({"members": [
            {"name": "pg-test-1", "role": "leader", "state": "running", "host": "10.0.0.21", "timeline": 3},
            {"name": "pg-test-2", "role": "replica", "state": "streaming", "host": "10.0.0.22", "lag": 0}
        ]});
        let c = ClusterView::from_json(&v).expect("parses");
        assert_eq!(c.leader().map(|m| m.name.as_str()), Some("pg-test-1"));
        assert!(c.members.iter().all(ClusterMember::is_running));
        assert_eq!(c.members[0].timeline, Some(3));
        assert!(ClusterView::from_json(&serde_json::json!({})).is_err());
    }
}
