//! The TLS edge, end to end with the real binaries: agents and the CLI accept only a server
//! whose certificate names the coordinator (not an etcd member's, though the same CA signed
//! it); the coordinator closes connections that never finish their handshake, caps how many
//! are open, logs every refused handshake and enrollment with the peer's address, and meters
//! `Enroll` per IP; its logs carry no colour escapes. `quorum-agent enroll` takes its one-time
//! token from a file or the environment.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use quorum_proto::pb;
use quorum_proto::pb::admin_service_client::AdminServiceClient;
use quorum_proto::pb::agent_service_client::AgentServiceClient;
use quorum_tests::{bin, free_port, run, wait_for, Proc, World};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// A channel to `url` trusting the world's CA, presenting `identity` if given, and checking
/// nothing about the server's role (the test's own client, to look behind the CLI).
async fn raw_channel(
    w: &World,
    url: &str,
    identity: Option<(&str, &str)>,
    source: Option<std::net::IpAddr>,
) -> Result<Channel> {
    let ca = std::fs::read_to_string(w.p("ca/ca.crt"))?;
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Ok(Endpoint::from_shared(url.to_string())?
        .tls_config(tls)?
        .local_address(source)
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?)
}

/// Env for the CLI as the world's admin, talking to `url`.
fn admin_env(w: &World, url: &str) -> Vec<(String, String)> {
    vec![
        ("QUORUM_COORDINATOR".into(), url.into()),
        ("QUORUM_CERT".into(), w.p("admin/admin.crt")),
        ("QUORUM_KEY".into(), w.p("admin/admin.key")),
        ("QUORUM_CACERT".into(), w.p("ca/ca.crt")),
    ]
}

fn run_env(
    binary: &str,
    args: &[&str],
    env: &[(String, String)],
) -> Result<quorum_tests::CliOutput> {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    run(binary, args, &env)
}

/// Starts `quorum serve` with `config` (YAML) and waits until it listens on `addr`.
fn start_serve(w: &World, name: &str, config: &str, addr: SocketAddr) -> Result<Proc> {
    let path = w.p(&format!("{name}.yml"));
    std::fs::write(&path, config)?;
    let mut cmd = Command::new(bin("quorum")?);
    cmd.args(["serve", "--config", &path]);
    let mut proc = Proc::spawn(name, cmd, &w.dir.path().join(format!("{name}.log")))?;
    let up = wait_for(
        &format!("{name} to listen"),
        Duration::from_secs(20),
        || {
            if !proc.running() {
                return Some(false);
            }
            TcpStream::connect_timeout(&addr, Duration::from_millis(100))
                .ok()
                .map(|_| true)
        },
    )?;
    anyhow::ensure!(up, "{name} exited at start:\n{}", proc.log_text());
    Ok(proc)
}

/// Waits until the coordinator's log holds a line with every one of `parts`; returns it.
fn wait_log_line(w: &World, parts: &[&str], timeout: Duration) -> Result<String> {
    let log = w.dir.path().join("coordinator.log");
    wait_for(
        &format!("a coordinator log line with {parts:?}"),
        timeout,
        || {
            let text = std::fs::read_to_string(&log).ok()?;
            text.lines()
                .find(|l| parts.iter().all(|p| l.contains(p)))
                .map(str::to_string)
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_and_the_cli_refuse_a_server_whose_certificate_is_not_the_coordinators() -> Result<()>
{
    let mut w = World::new()?;
    w.coordinator_extra = "stale_after_secs: 5\npoll_hold_secs: 1\n".into();
    w.start_coordinator()?;

    // A fake coordinator: the real `quorum serve`, but with an etcd member's certificate,
    // which the same CA signed for 127.0.0.1 (serverAuth) and which names no Quorum role.
    w.quorum(&[
        "pki",
        "issue",
        "etcd",
        "--ip",
        "127.0.0.1",
        "--name",
        "etcd-1",
        "--dir",
        &w.p("ca"),
        "--out",
        &w.p("etcd-1"),
    ])?
    .ok()?;
    let fake_addr = SocketAddr::new("127.0.0.1".parse()?, free_port("127.0.0.1".parse()?)?);
    let fake_url = format!("https://{fake_addr}");
    let fake_cfg = format!(
        "listen: {fake_addr}\ntls:\n  ca_cert: {ca}\n  cert: {crt}\n  key: {key}\nstate_dir: {state}\ninventory: {inv}\npoll_hold_secs: 1\n",
        ca = w.p("ca/ca.crt"),
        crt = w.p("etcd-1/server.crt"),
        key = w.p("etcd-1/server.key"),
        state = w.p("fake-state"),
        inv = w.p("pigsty.yml"),
    );
    let fake = start_serve(&w, "fake", &fake_cfg, fake_addr)?;
    assert!(
        fake.log_text()
            .contains("agents and the CLI will refuse this server"),
        "the fake's own log should say its certificate is not a coordinator's:\n{}",
        fake.log_text()
    );

    // An agent pointed at the fake: it refuses the server, says why, and keeps retrying.
    w.issue_agent_cert("127.0.0.12")?;
    let cfg = w.write_agent_config("127.0.0.12", "")?;
    let text = std::fs::read_to_string(&cfg)?.replace(&w.url(), &fake_url);
    std::fs::write(&cfg, text)?;
    let mut cmd = Command::new(bin("quorum-agent")?);
    cmd.args(["run", "--config", &cfg]);
    let mut agent = Proc::spawn("agent .12", cmd, &w.dir.path().join("agent-fake.log"))?;
    wait_for(
        "the agent to refuse the fake",
        Duration::from_secs(20),
        || {
            let log = agent.log_text();
            (log.matches("it is not a Quorum coordinator").count() >= 2).then_some(())
        },
    )?;
    let log = agent.log_text();
    assert!(
        log.contains("CN=etcd-1"),
        "the refusal names the certificate:\n{log}"
    );
    assert!(log.contains(&fake_url), "the refusal names the URL:\n{log}");
    assert!(
        !log.contains("connected to the coordinator") && !log.contains("task done"),
        "{log}"
    );
    assert!(
        agent.running(),
        "the agent retries, it does not exit:\n{log}"
    );

    // The fake never got a session from it, so it cannot hand it a task (seen from behind the
    // CLI with the test's own client, which checks no role).
    let admin_crt = std::fs::read_to_string(w.p("admin/admin.crt"))?;
    let admin_key = std::fs::read_to_string(w.p("admin/admin.key"))?;
    let mut behind = AdminServiceClient::new(
        raw_channel(&w, &fake_url, Some((&admin_crt, &admin_key)), None).await?,
    );
    let listed = behind
        .list_agents(pb::ListAgentsRequest {})
        .await?
        .into_inner();
    assert!(listed.agents.is_empty(), "{listed:?}");
    let err = behind
        .run_task(pb::RunTaskRequest {
            agent_id: "127.0.0.12".into(),
            task: Some(pb::Task {
                kind: Some(pb::task::Kind::CollectFacts(pb::CollectFacts {})),
                ..Default::default()
            }),
            timeout_secs: 5,
            confirmed: false,
        })
        .await
        .err()
        .context("the fake queued a task for an agent that refused it")?;
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");

    // The CLI pointed at the fake: exit 4, and the sentence says it is not a coordinator.
    for args in [
        &["agents"][..],
        &["task", "--host", "127.0.0.12", "--timeout", "5", "facts"][..],
    ] {
        let out = run_env("quorum", args, &admin_env(&w, &fake_url))?;
        assert_eq!(out.code, 4, "{args:?}: {out:?}");
        assert!(
            out.stderr.contains("it is not a Quorum coordinator")
                && out.stderr.contains("CN=etcd-1")
                && out.stderr.contains("check the coordinator URL"),
            "{args:?}: {}",
            out.stderr
        );
    }

    // Enrollment (no client certificate yet) checks the server too: the token is not sent.
    let token = w
        .quorum(&["pki", "token", "--host", "127.0.0.13", "--dir", &w.p("ca")])?
        .ok()?
        .stdout;
    std::fs::write(w.p("token-13"), token)?;
    let enroll = |url: &str, out: &str| {
        run(
            "quorum-agent",
            &[
                "enroll",
                "--coordinator",
                url,
                "--token-file",
                &w.p("token-13"),
                "--ca-cert",
                &w.p("ca/ca.crt"),
                "--cert",
                &w.p(&format!("{out}/agent.crt")),
                "--key",
                &w.p(&format!("{out}/agent.key")),
                "--host-ip",
                "127.0.0.13",
            ],
            &[],
        )
    };
    let out = enroll(&fake_url, "enroll-fake")?;
    assert_ne!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains("it is not a Quorum coordinator")
            && out.stderr.contains("the token was not sent"),
        "{}",
        out.stderr
    );
    assert!(!w.dir.path().join("enroll-fake/agent.key").exists());

    // The genuine coordinator still works for all of them.
    enroll(&w.url(), "agent-127.0.0.13")?.ok()?;
    w.start_agent("127.0.0.11", "")?;
    w.start_agent("127.0.0.13", "")?;
    for ip in ["127.0.0.11", "127.0.0.13"] {
        w.wait_agent_state(ip, &["connected", "idle"], Duration::from_secs(20))?;
    }
    let out = w
        .admin(&["task", "--host", "127.0.0.11", "--timeout", "20", "facts"])?
        .ok()?;
    assert!(out.stdout.contains(" ok"), "{}", out.stdout);
    agent.kill();
    Ok(())
}

#[test]
fn idle_connections_are_closed_after_the_handshake_timeout_and_the_cap_refuses_the_rest(
) -> Result<()> {
    const CAP: usize = 40;
    const IDLE: usize = 300;
    let mut w = World::new()?;
    w.coordinator_extra = format!("max_connections: {CAP}\ntls_handshake_timeout_secs: 2\n");
    w.start_coordinator()?;
    let started = wait_log_line(&w, &["coordinator listening"], Duration::from_secs(5))?;
    assert!(
        started.contains(&format!("max_connections={CAP}"))
            && started.contains("tls_handshake_timeout=2s"),
        "{started}"
    );

    // Connections that never send a ClientHello, far more than the cap.
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        idle.push(TcpStream::connect_timeout(
            &w.listen,
            Duration::from_secs(5),
        )?);
    }
    let line = wait_log_line(&w, &["refusing new connections"], Duration::from_secs(20))?;
    assert!(
        line.contains(&format!("{CAP} are open (max_connections"))
            && line.contains("peer=127.0.0.1:"),
        "{line}"
    );

    // Every one of them is closed by the coordinator: beyond the cap at once, the others
    // when their handshake time is up. (The read timeout only bounds a broken test.)
    for (i, s) in idle.iter_mut().enumerate() {
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut byte = [0u8; 1];
        match s.read(&mut byte) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => anyhow::bail!("idle connection {i} was not closed: {other:?}"),
        }
    }
    let reaped = wait_log_line(
        &w,
        &[
            "did not finish its TLS handshake within 2s",
            "peer=127.0.0.1:",
        ],
        Duration::from_secs(5),
    )?;
    assert!(reaped.contains("tls_handshake_timeout_secs"), "{reaped}");

    // With the idle ones gone, the operator gets in again.
    w.admin(&["agents"])?.ok()?;
    // Lines about refusals are rate-limited: 300 connections made no 300 lines.
    let log = std::fs::read_to_string(w.dir.path().join("coordinator.log"))?;
    let lines = log.lines().filter(|l| l.contains(" WARN ")).count();
    assert!(lines < IDLE / 2, "{lines} warnings for {IDLE} connections");
    Ok(())
}

#[test]
fn accept_errors_at_the_open_file_limit_are_logged_and_the_coordinator_recovers() -> Result<()> {
    let mut w = World::new()?;
    // A cap above the open-file limit, as with systemd's default 1024 and a large fleet.
    w.coordinator_extra = "max_connections: 10000\ntls_handshake_timeout_secs: 2\n".into();
    w.start_coordinator()?;
    let pid = w.coordinator.as_ref().context("coordinator")?.pid();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count();
    let limit = fds + 20;
    let out = Command::new("prlimit")
        .args([
            "--pid",
            &pid.to_string(),
            &format!("--nofile={limit}:{limit}"),
        ])
        .output()?;
    anyhow::ensure!(out.status.success(), "prlimit: {out:?}");
    let mut idle = Vec::new();
    for _ in 0..100 {
        idle.push(TcpStream::connect_timeout(
            &w.listen,
            Duration::from_secs(5),
        )?);
    }
    let line = wait_log_line(&w, &["cannot accept connections"], Duration::from_secs(20))?;
    assert!(
        line.contains("LimitNOFILE") && line.contains("pausing"),
        "{line}"
    );
    // The idle ones time out, the backlog drains, and the coordinator serves again.
    for s in idle.iter_mut() {
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut byte = [0u8; 1];
        let _ = s.read(&mut byte);
    }
    drop(idle);
    wait_for("an admin call to succeed", Duration::from_secs(30), || {
        w.admin(&["agents"]).ok().filter(|o| o.code == 0)
    })?;
    let log = std::fs::read_to_string(w.dir.path().join("coordinator.log"))?;
    let lines = log.matches("cannot accept connections").count();
    assert!(
        lines <= 5,
        "accept errors are rate-limited, got {lines} lines"
    );
    Ok(())
}

/// Signs an admin certificate with the world's CA directly, expired.
fn expired_admin(w: &World) -> Result<(String, String)> {
    use rcgen::{CertificateParams, Issuer, KeyPair, SanType};
    let ca_key = KeyPair::from_pem(&std::fs::read_to_string(w.p("ca/ca.key"))?)?;
    let issuer = Issuer::from_ca_cert_pem(&std::fs::read_to_string(w.p("ca/ca.crt"))?, ca_key)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![SanType::URI("spiffe://pigsty/admin/old".try_into()?)];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(10);
    params.not_after = now - time::Duration::days(1);
    let cert = params.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_handshakes_are_logged_with_the_peer_and_the_reason() -> Result<()> {
    let mut w = World::new()?;
    w.start_coordinator()?;

    // Not TLS at all. (First: the refused certificates below make the tonic client redial
    // many times, and the log keeps at most 20 such lines in 10 s.)
    {
        use std::io::Write;
        let mut s = TcpStream::connect_timeout(&w.listen, Duration::from_secs(5))?;
        s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let _ = s.read(&mut [0u8; 64]);
    }
    wait_log_line(
        &w,
        &[
            "TLS handshake refused",
            "does not speak TLS",
            "peer=127.0.0.1:",
        ],
        Duration::from_secs(10),
    )?;

    // A client certificate from another CA: the CLI says to see the coordinator's log, and
    // the log now says who and why.
    let other = tempfile::tempdir()?;
    let od = other.path().display().to_string();
    run(
        "quorum",
        &["pki", "init", "--dir", &format!("{od}/ca")],
        &[],
    )?
    .ok()?;
    run(
        "quorum",
        &[
            "pki",
            "issue",
            "admin",
            "--name",
            "mallory",
            "--dir",
            &format!("{od}/ca"),
            "--out",
            &format!("{od}/admin"),
        ],
        &[],
    )?
    .ok()?;
    let mut env = admin_env(&w, &w.url());
    env[1].1 = format!("{od}/admin/admin.crt");
    env[2].1 = format!("{od}/admin/admin.key");
    let out = run_env("quorum", &["agents"], &env)?;
    assert_eq!(out.code, 4, "{out:?}");
    assert!(out.stderr.contains("coordinator's log"), "{}", out.stderr);
    let line = wait_log_line(
        &w,
        &[
            "TLS handshake refused",
            "not signed by this coordinator's CA",
        ],
        Duration::from_secs(10),
    )?;
    assert!(
        line.contains("WARN") && line.contains("peer=127.0.0.1:"),
        "{line}"
    );

    // An expired certificate (the CLI refuses it before dialing; the test's own client does not).
    let (crt, key) = expired_admin(&w)?;
    let expired = raw_channel(&w, &w.url(), Some((&crt, &key)), None).await;
    if let Ok(ch) = expired {
        let answer = AdminServiceClient::new(ch)
            .list_agents(pb::ListAgentsRequest {})
            .await;
        assert!(answer.is_err(), "an expired certificate was accepted");
    }
    let line = wait_log_line(
        &w,
        &[
            "TLS handshake refused",
            "the client certificate has expired",
        ],
        Duration::from_secs(10),
    )?;
    assert!(line.contains("peer=127.0.0.1:"), "{line}");

    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_bad_enrollments_from_one_ip_is_limited_and_logged() -> Result<()> {
    let mut w = World::new()?;
    w.start_coordinator()?;
    // A burst of bad enrollments from one IP: the first ones are refused for their token,
    // then the IP is limited; another IP is not.
    let mut from_one =
        AgentServiceClient::new(raw_channel(&w, &w.url(), None, Some("127.0.0.1".parse()?)).await?);
    let mut codes = Vec::new();
    let mut limited = None;
    for _ in 0..40 {
        let err = from_one
            .enroll(pb::EnrollRequest {
                token: "not-a-token".into(),
                csr_pem: String::new(),
            })
            .await
            .err()
            .context("a bad token enrolled")?;
        if err.code() == tonic::Code::ResourceExhausted && limited.is_none() {
            limited = Some(err.message().to_string());
        }
        codes.push(err.code());
    }
    assert!(
        codes[..10]
            .iter()
            .all(|c| *c == tonic::Code::PermissionDenied),
        "{codes:?}"
    );
    let limited = limited.context("40 bad enrollments in a row were never limited")?;
    assert!(
        limited.contains("too many enrollment attempts from 127.0.0.1"),
        "{limited}"
    );
    let err =
        AgentServiceClient::new(raw_channel(&w, &w.url(), None, Some("127.0.0.2".parse()?)).await?)
            .enroll(pb::EnrollRequest {
                token: "not-a-token".into(),
                csr_pem: String::new(),
            })
            .await
            .err()
            .context("a bad token enrolled")?;
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    let line = wait_log_line(
        &w,
        &[
            "enrollment refused",
            "not a Quorum token",
            "peer=127.0.0.1:",
        ],
        Duration::from_secs(10),
    )?;
    assert!(line.contains("WARN"), "{line}");
    wait_log_line(
        &w,
        &["enrollment refused (ResourceExhausted)", "peer=127.0.0.1:"],
        Duration::from_secs(10),
    )?;
    Ok(())
}

#[test]
fn logs_written_to_a_file_carry_no_colour_escapes() -> Result<()> {
    let mut w = World::new()?;
    w.start_coordinator()?;
    w.start_agent("127.0.0.11", "")?;
    w.wait_agent_state(
        "127.0.0.11",
        &["connected", "idle"],
        Duration::from_secs(20),
    )?;
    let coordinator = std::fs::read_to_string(w.dir.path().join("coordinator.log"))?;
    let agent = w.agent("127.0.0.11").context("agent")?.log_text();
    for (name, log) in [("coordinator", &coordinator), ("agent", &agent)] {
        // Levels and field names are what a terminal would get in colour.
        assert!(log.contains(" INFO "), "{name} log:\n{log}");
        assert!(
            !log.contains("\x1b["),
            "{name} log has ANSI escapes:\n{log}"
        );
    }
    Ok(())
}

#[test]
fn enroll_takes_its_token_from_a_file_or_the_environment_never_only_the_command_line() -> Result<()>
{
    let mut w = World::new()?;
    w.start_coordinator()?;
    let token = |ip: &str| -> Result<String> {
        Ok(
            w.quorum(&["pki", "token", "--host", ip, "--dir", &w.p("ca")])?
                .ok()?
                .stdout,
        )
    };
    let enroll = |ip: &str, extra: &[&str], env: &[(&str, &str)]| {
        let crt = w.p(&format!("agent-{ip}/agent.crt"));
        let key = w.p(&format!("agent-{ip}/agent.key"));
        let url = w.url();
        let ca = w.p("ca/ca.crt");
        let mut args = vec![
            "enroll",
            "--coordinator",
            &url,
            "--ca-cert",
            &ca,
            "--cert",
            &crt,
            "--key",
            &key,
            "--host-ip",
            ip,
        ];
        args.extend_from_slice(extra);
        run("quorum-agent", &args, env)
    };
    // From a file (a trailing newline, as `quorum pki token > file` writes it, is fine).
    std::fs::write(w.p("token-21"), token("127.0.0.21")?)?;
    enroll("127.0.0.21", &["--token-file", &w.p("token-21")], &[])?.ok()?;
    // From the environment.
    let t = token("127.0.0.22")?;
    enroll("127.0.0.22", &[], &[("QUORUM_ENROLL_TOKEN", t.trim())])?.ok()?;
    // Neither: a usage error that names both ways.
    let out = enroll("127.0.0.23", &[], &[])?;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("--token-file") && out.stderr.contains("QUORUM_ENROLL_TOKEN"),
        "{}",
        out.stderr
    );
    // A missing file: named.
    let out = enroll("127.0.0.23", &["--token-file", &w.p("nope")], &[])?;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains(&w.p("nope")), "{}", out.stderr);
    // `--help` documents the variable and the file.
    let help = run("quorum-agent", &["enroll", "--help"], &[])?.ok()?;
    assert!(
        help.stdout.contains("QUORUM_ENROLL_TOKEN") && help.stdout.contains("--token-file"),
        "{}",
        help.stdout
    );
    // Both enrolled agents connect.
    for ip in ["127.0.0.21", "127.0.0.22"] {
        w.start_agent(ip, "")?;
        w.wait_agent_state(ip, &["connected", "idle"], Duration::from_secs(20))?;
    }
    Ok(())
}

/// The sockets the process `pid` holds open (`socket:[inode]`). Compared by identity, not
/// counted: the connection `start_coordinator` probed readiness with may still be open on the
/// coordinator's side when a test starts, and close at any time after.
fn open_sockets(pid: u32) -> Result<std::collections::BTreeSet<String>> {
    let mut out = std::collections::BTreeSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let target = std::fs::read_link(fd?.path()).unwrap_or_default();
        let target = target.to_string_lossy();
        if target.starts_with("socket:") {
            out.insert(target.into_owned());
        }
    }
    Ok(out)
}

/// The one socket of `pid` that is not in `before`.
fn new_socket(pid: u32, before: &std::collections::BTreeSet<String>) -> Result<String> {
    let new: Vec<String> = open_sockets(pid)?.difference(before).cloned().collect();
    match new.as_slice() {
        [one] => Ok(one.clone()),
        _ => anyhow::bail!("expected one new connection, found {new:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_a_certificate_is_closed_after_it_could_have_enrolled() -> Result<()> {
    let mut w = World::new()?;
    w.coordinator_extra = "anonymous_connection_secs: 2\n".into();
    w.start_coordinator()?;
    let pid = w
        .coordinator
        .as_ref()
        .map(|p| p.pid())
        .context("the coordinator runs")?;
    let before = open_sockets(pid)?;
    // An anonymous client that finishes its handshake and one call, then keeps the
    // connection (tonic's channel would answer pings forever).
    let mut anon = AgentServiceClient::new(raw_channel(&w, &w.url(), None, None).await?);
    let err = anon
        .enroll(pb::EnrollRequest {
            token: "not-a-token".into(),
            csr_pem: String::new(),
        })
        .await
        .err()
        .context("a bad token enrolled")?;
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    let anonymous = new_socket(pid, &before).context("the anonymous connection is open")?;
    wait_for(
        "the coordinator to close the anonymous connection",
        Duration::from_secs(20),
        || (!open_sockets(pid).ok()?.contains(&anonymous)).then_some(()),
    )?;
    // An admin's connection, with a certificate, is not cut.
    let admin = (
        std::fs::read_to_string(w.p("admin/admin.crt"))?,
        std::fs::read_to_string(w.p("admin/admin.key"))?,
    );
    let before = open_sockets(pid)?;
    let mut client =
        AdminServiceClient::new(raw_channel(&w, &w.url(), Some((&admin.0, &admin.1)), None).await?);
    client.list_agents(pb::ListAgentsRequest {}).await?;
    let admin_conn = new_socket(pid, &before).context("the admin's connection is open")?;
    // Past the 2 s anonymous lifetime: it is still open.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        open_sockets(pid)?.contains(&admin_conn),
        "an admin's connection was closed"
    );
    client.list_agents(pb::ListAgentsRequest {}).await?;
    Ok(())
}
