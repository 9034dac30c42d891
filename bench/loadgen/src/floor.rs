//! The physical floor of a rolling restart: the same members, restarted by the same exec
//! command the agents run, one at a time, followers first and the leader last, each timed
//! from the restart command's start until the member serves a linearizable read through its
//! own endpoint (up, with a leader, and caught up: a read through a follower waits until it
//! has applied everything committed when the read began). Summed, it is what no SOP can
//! beat: `quorum config reload --restart` on the same fleet is measured against it.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

use crate::results::Results;

/// One member: its host, client URL, and the file holding its restart command.
#[derive(Debug, Clone)]
pub struct Member {
    /// The host.
    pub ip: IpAddr,
    /// `https://ip:port`.
    pub url: String,
    /// A shell script with the restart command of the agent's exec config.
    pub restart: PathBuf,
}

impl std::str::FromStr for Member {
    type Err = String;

    /// `IP,URL,SCRIPT`.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s.splitn(3, ',');
        let (Some(ip), Some(url), Some(script)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!("{s:?}: give IP,CLIENT_URL,RESTART_SCRIPT"));
        };
        Ok(Member {
            ip: ip
                .parse()
                .map_err(|_| format!("{ip:?} is not an IP address"))?,
            url: url.to_string(),
            restart: PathBuf::from(script),
        })
    }
}

/// TLS material of an etcd client (a certificate with clientAuth from the CA).
pub struct Tls {
    /// CA certificate PEM.
    pub ca: String,
    /// Client certificate PEM.
    pub cert: String,
    /// Client key PEM.
    pub key: String,
}

async fn connect(tls: &Tls, url: &str) -> Result<Client> {
    let opts = ConnectOptions::new()
        .with_tls(
            TlsOptions::new()
                .ca_certificate(Certificate::from_pem(&tls.ca))
                .identity(Identity::from_pem(&tls.cert, &tls.key)),
        )
        .with_connect_timeout(Duration::from_millis(300))
        .with_timeout(Duration::from_millis(800));
    Ok(Client::connect([url], Some(opts)).await?)
}

/// Whether the member at `url` serves a linearizable read now.
async fn serves(tls: &Tls, url: &str) -> bool {
    let Ok(mut c) = connect(tls, url).await else {
        return false;
    };
    match c.status().await {
        Ok(st) if st.leader() != 0 && !st.is_learner() => {}
        _ => return false,
    }
    c.get("quorum-bench-floor", None).await.is_ok()
}

/// The member id each member answers with, and the leader they name.
async fn ids_and_leader(tls: &Tls, members: &[Member]) -> Result<(Vec<u64>, u64)> {
    let mut ids = Vec::new();
    let mut leader = 0;
    for m in members {
        let mut c = connect(tls, &m.url)
            .await
            .with_context(|| format!("cannot reach {}", m.url))?;
        let st = c
            .status()
            .await
            .with_context(|| format!("status of {}", m.url))?;
        ids.push(st.header().map(|h| h.member_id()).unwrap_or(0));
        if leader == 0 {
            leader = st.leader();
        }
    }
    if leader == 0 {
        bail!("no member names a leader: is the cluster up?");
    }
    Ok((ids, leader))
}

/// Restarts every member once, followers first and the leader last, and records each
/// member's restart → serving time and their sum.
pub async fn run(members: Vec<Member>, tls: Tls, prefix: &str, results: &Results) -> Result<()> {
    let (ids, leader) = ids_and_leader(&tls, &members).await?;
    let mut order: Vec<&Member> = members.iter().collect();
    order.sort_by_key(|m| {
        members
            .iter()
            .position(|x| x.ip == m.ip)
            .and_then(|i| ids.get(i))
            == Some(&leader)
    });
    let mut total = Duration::ZERO;
    let mut commands = Duration::ZERO;
    let mut names = Vec::new();
    for m in order {
        let start = Instant::now();
        let st = tokio::process::Command::new("/bin/sh")
            .arg(&m.restart)
            .status()
            .await
            .with_context(|| format!("cannot run {}", m.restart.display()))?;
        if !st.success() {
            bail!("{} failed: {st}", m.restart.display());
        }
        let command = start.elapsed();
        let deadline = start + Duration::from_secs(60);
        while !serves(&tls, &m.url).await {
            if Instant::now() > deadline {
                bail!(
                    "{} did not serve a linearizable read within 60 s of its restart",
                    m.url
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let took = start.elapsed();
        total += took;
        commands += command;
        let is_leader = members
            .iter()
            .position(|x| x.ip == m.ip)
            .and_then(|i| ids.get(i))
            == Some(&leader);
        names.push(format!(
            "{}{}",
            m.ip,
            if is_leader { " (leader)" } else { "" }
        ));
        results.put(
            &format!("{prefix}.member.{}_s", m.ip),
            format!("{:.2}", took.as_secs_f64()),
        )?;
        results.put(
            &format!("{prefix}.command.{}_s", m.ip),
            format!("{:.2}", command.as_secs_f64()),
        )?;
    }
    results.put(&format!("{prefix}.order"), names.join(" → "))?;
    // The restart commands alone: mostly etcd's own graceful stop, which takes a few ms or
    // ~0.5 / ~1 s at random (its servers wait for peers to drop their connections).
    results.put(&format!("{prefix}.commands_ms"), commands.as_millis())?;
    results.put(&format!("{prefix}_ms"), total.as_millis())?;
    results.put(
        &format!("{prefix}_s"),
        format!("{:.2}", total.as_secs_f64()),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_parse_from_the_command_line() {
        let m: Member = "127.0.0.11,https://127.0.0.11:2379,/tmp/r.sh"
            .parse()
            .expect("parses");
        assert_eq!(m.url, "https://127.0.0.11:2379");
        assert!("127.0.0.11,https://x".parse::<Member>().is_err());
        assert!("nope,https://x,/r".parse::<Member>().is_err());
    }
}
