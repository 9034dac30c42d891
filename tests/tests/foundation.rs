//! Foundation, end to end: a real coordinator and real agents over mTLS on loopback, with
//! certificates from `quorum pki`; every refusal the trust model promises, each with its
//! specific error; token enrollment; delivery on the agents' sessions, and on the unary calls
//! of 0.1 agents.

use std::time::Duration;

use anyhow::{Context, Result};
use quorum_proto::pb;
use quorum_proto::pb::admin_service_client::AdminServiceClient;
use quorum_proto::pb::agent_service_client::AgentServiceClient;
use quorum_tests::etcd::HostPaths;
use quorum_tests::{run, World};
use rcgen::{CertificateParams, Issuer, KeyPair, SanType};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

fn fast(w: &mut World) {
    w.coordinator_extra = "stale_after_secs: 2\npoll_hold_secs: 1\n".into();
}

/// A client channel presenting `cert`/`key` (PEM) and trusting the world's CA.
async fn channel(w: &World, cert: &str, key: &str) -> Result<Channel> {
    let ca = std::fs::read_to_string(w.p("ca/ca.crt"))?;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .identity(Identity::from_pem(cert, key));
    Ok(tonic::transport::Endpoint::from_shared(w.url())?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?)
}

/// Signs a certificate with the world's CA directly (to make ones `quorum pki` never would).
fn craft(w: &World, sans: Vec<SanType>, expired: bool) -> Result<(String, String)> {
    let ca_key = KeyPair::from_pem(&std::fs::read_to_string(w.p("ca/ca.key"))?)?;
    let issuer = Issuer::from_ca_cert_pem(&std::fs::read_to_string(w.p("ca/ca.crt"))?, ca_key)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.subject_alt_names = sans;
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let now = time::OffsetDateTime::now_utc();
    if expired {
        params.not_before = now - time::Duration::days(10);
        params.not_after = now - time::Duration::days(1);
    } else {
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = now + time::Duration::days(1);
    }
    let cert = params.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn read(w: &World, rel: &str) -> Result<String> {
    Ok(std::fs::read_to_string(w.p(rel))?)
}

#[test]
fn agents_are_listed_then_one_goes_stale_after_it_is_killed() -> Result<()> {
    let mut w = World::new()?;
    fast(&mut w);
    w.start_coordinator()?;
    w.start_agent("127.0.0.11", "")?;
    w.start_agent("127.0.0.12", "")?;
    for ip in ["127.0.0.11", "127.0.0.12"] {
        w.wait_agent_state(ip, &["connected", "idle"], Duration::from_secs(20))?;
    }
    let agents = w.agents_json()?;
    assert_eq!(agents.len(), 2, "{agents:?}");
    for a in &agents {
        assert_eq!(a["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(a["facts"]["host_ip"], a["agent_id"]);
    }
    w.agent("127.0.0.12").context("agent .12")?.kill();
    w.wait_agent_state("127.0.0.12", &["stale"], Duration::from_secs(30))?;
    // The other one is unaffected.
    let agents = w.agents_json()?;
    let a11 = agents
        .iter()
        .find(|a| a["agent_id"] == "127.0.0.11")
        .context("agent .11 listed")?;
    assert_ne!(a11["state"], "stale", "{a11}");
    assert_eq!(a11["facts_stale"], false, "{a11}");
    let a12 = agents
        .iter()
        .find(|a| a["agent_id"] == "127.0.0.12")
        .context("agent .12 listed")?;
    assert_eq!(a12["facts_stale"], true, "{a12}");
    // The table form names both; the stale one's services are unknown, not its last word.
    let table = w.admin(&["agents"])?.ok()?.stdout;
    assert!(
        table.contains("127.0.0.11") && table.contains("127.0.0.12") && table.contains("stale"),
        "{table}"
    );
    let row = table
        .lines()
        .find(|l| l.starts_with("127.0.0.12"))
        .context("the row of .12")?;
    assert!(row.contains("unknown (stale since "), "{table}");
    assert!(
        table.contains("warning: 127.0.0.12: no poll since "),
        "{table}"
    );
    Ok(())
}

#[test]
fn agent_exits_cleanly_on_sigterm() -> Result<()> {
    let mut w = World::new()?;
    w.start_coordinator()?;
    w.start_agent("127.0.0.11", "")?;
    w.wait_agent_state("127.0.0.11", &["connected"], Duration::from_secs(20))?;
    let agent = w.agent("127.0.0.11").context("agent")?;
    agent.signal(nix::sys::signal::Signal::SIGTERM)?;
    let code = agent.wait_exit(Duration::from_secs(10))?;
    assert_eq!(code, Some(0), "log:\n{}", agent.log_text());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_each_say_why() -> Result<()> {
    let mut w = World::new()?;
    w.start_coordinator()?;
    w.issue_agent_cert("127.0.0.11")?;

    // A client certificate from another CA: refused at the handshake.
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
    let out = run(
        "quorum",
        &["agents"],
        &[
            ("QUORUM_COORDINATOR", &w.url()),
            ("QUORUM_CERT", &format!("{od}/admin/admin.crt")),
            ("QUORUM_KEY", &format!("{od}/admin/admin.key")),
            ("QUORUM_CACERT", &w.p("ca/ca.crt")),
        ],
    )?;
    assert_eq!(out.code, 4, "{out:?}");
    assert!(
        out.stderr.contains("refused our TLS client certificate"),
        "another CA: {}",
        out.stderr
    );
    let foreign = channel(
        &w,
        &std::fs::read_to_string(format!("{od}/admin/admin.crt"))?,
        &std::fs::read_to_string(format!("{od}/admin/admin.key"))?,
    )
    .await;
    let refused_at_handshake = match foreign {
        Err(_) => true,
        Ok(ch) => AdminServiceClient::new(ch)
            .list_agents(pb::ListAgentsRequest {})
            .await
            .is_err(),
    };
    assert!(
        refused_at_handshake,
        "a certificate from another CA was accepted"
    );

    // An expired certificate: the CLI says so before dialing, and the server refuses it.
    let ip11: std::net::IpAddr = "127.0.0.11".parse()?;
    let (crt, key) = craft(
        &w,
        vec![SanType::URI("spiffe://pigsty/admin/old".try_into()?)],
        true,
    )?;
    std::fs::write(w.p("expired.crt"), &crt)?;
    std::fs::write(w.p("expired.key"), &key)?;
    let out = run(
        "quorum",
        &["agents"],
        &[
            ("QUORUM_COORDINATOR", &w.url()),
            ("QUORUM_CERT", &w.p("expired.crt")),
            ("QUORUM_KEY", &w.p("expired.key")),
            ("QUORUM_CACERT", &w.p("ca/ca.crt")),
        ],
    )?;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("is expired"), "{}", out.stderr);
    let expired_ok = match channel(&w, &crt, &key).await {
        Err(_) => false,
        Ok(ch) => AdminServiceClient::new(ch)
            .list_agents(pb::ListAgentsRequest {})
            .await
            .is_ok(),
    };
    assert!(!expired_ok, "the server accepted an expired certificate");

    // A certificate from the right CA but with no role URI: PERMISSION_DENIED, named.
    let (crt, key) = craft(&w, vec![SanType::IpAddress(ip11)], false)?;
    let err = AdminServiceClient::new(channel(&w, &crt, &key).await?)
        .list_agents(pb::ListAgentsRequest {})
        .await
        .err()
        .context("a cert without a role was accepted")?;
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(
        err.message().contains("names no Quorum role"),
        "{}",
        err.message()
    );

    // An agent certificate calling the admin service.
    let agent_crt = read(&w, "agent-127.0.0.11/agent.crt")?;
    let agent_key = read(&w, "agent-127.0.0.11/agent.key")?;
    let err = AdminServiceClient::new(channel(&w, &agent_crt, &agent_key).await?)
        .list_agents(pb::ListAgentsRequest {})
        .await
        .err()
        .context("an agent cert called the admin service")?;
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(
        err.message().contains("may not call the admin service"),
        "{}",
        err.message()
    );
    let out = run(
        "quorum",
        &["agents"],
        &[
            ("QUORUM_COORDINATOR", &w.url()),
            ("QUORUM_CERT", &w.p("agent-127.0.0.11/agent.crt")),
            ("QUORUM_KEY", &w.p("agent-127.0.0.11/agent.key")),
            ("QUORUM_CACERT", &w.p("ca/ca.crt")),
        ],
    )?;
    assert_eq!(out.code, 3, "{out:?}");

    // Agent A's certificate polling for agent B.
    let mut a = AgentServiceClient::new(channel(&w, &agent_crt, &agent_key).await?);
    let err = a
        .poll(pb::PollRequest {
            agent_id: "127.0.0.12".into(),
            facts: None,
            highest_epoch: 0,
        })
        .await
        .err()
        .context("agent .11 polled as .12")?;
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(
        err.message().contains("cannot act as agent 127.0.0.12"),
        "{}",
        err.message()
    );
    let err = a
        .report(pb::ReportRequest {
            agent_id: "127.0.0.12".into(),
            task_id: "t-x".into(),
            ..Default::default()
        })
        .await
        .err()
        .context("agent .11 reported as .12")?;
    assert_eq!(err.code(), tonic::Code::PermissionDenied);

    // No client certificate at all on a call that needs one.
    let ca = read(&w, "ca/ca.crt")?;
    let anon = tonic::transport::Endpoint::from_shared(w.url())?
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))?
        .connect()
        .await?;
    let err = AgentServiceClient::new(anon)
        .poll(pb::PollRequest {
            agent_id: "127.0.0.11".into(),
            facts: None,
            highest_epoch: 0,
        })
        .await
        .err()
        .context("a poll without a certificate was accepted")?;
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    assert!(
        err.message().contains("no client certificate"),
        "{}",
        err.message()
    );

    // Plain TCP without TLS: the server never speaks gRPC in plain text.
    let plain = tonic::transport::Endpoint::from_shared(format!("http://{}", w.listen))?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(3))
        .connect()
        .await;
    let plain_ok = match plain {
        Err(_) => false,
        Ok(ch) => AgentServiceClient::new(ch)
            .poll(pb::PollRequest::default())
            .await
            .is_ok(),
    };
    assert!(!plain_ok, "a plain-text gRPC call was answered");

    // A malformed message: field 1 (agent_id, a string) sent as a varint.
    let mut grpc = tonic::client::Grpc::new(channel(&w, &agent_crt, &agent_key).await?);
    grpc.ready().await?;
    let path = http::uri::PathAndQuery::from_static("/quorum.v1.AgentService/Poll");
    let bad = grpc
        .unary::<Malformed, pb::PollResponse, _>(
            tonic::Request::new(Malformed { agent_id: 7 }),
            path,
            tonic_prost::ProstCodec::default(),
        )
        .await
        .err()
        .context("a malformed message was accepted")?;
    assert!(
        matches!(
            bad.code(),
            tonic::Code::Internal | tonic::Code::InvalidArgument
        ),
        "{bad:?}"
    );

    // An oversized message: refused by the size bound, not buffered.
    let huge = pb::PollRequest {
        agent_id: "127.0.0.11".into(),
        facts: Some(pb::Facts {
            hostname: "x".repeat(2 * 1024 * 1024),
            ..Default::default()
        }),
        highest_epoch: 0,
    };
    let err = AgentServiceClient::new(channel(&w, &agent_crt, &agent_key).await?)
        .max_encoding_message_size(8 * 1024 * 1024)
        .poll(huge)
        .await
        .err()
        .context("an oversized message was accepted")?;
    assert!(
        matches!(
            err.code(),
            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
        ),
        "{err:?}"
    );
    assert!(err.message().contains("too large"), "{}", err.message());
    Ok(())
}

/// A message whose field 1 has the wrong wire type for PollRequest.agent_id.
#[derive(Clone, PartialEq, prost::Message)]
struct Malformed {
    #[prost(uint64, tag = "1")]
    agent_id: u64,
}

#[test]
fn enrollment_token_works_once_and_only_for_its_host() -> Result<()> {
    let mut w = World::new()?;
    w.start_coordinator()?;
    let ca = w.p("ca/ca.crt");
    let url = w.url();
    let token = w
        .quorum(&["pki", "token", "--host", "127.0.0.12", "--dir", &w.p("ca")])?
        .ok()?
        .stdout
        .trim()
        .to_string();
    let enroll = |token: &str, ip: &str, out: &str| {
        run(
            "quorum-agent",
            &[
                "enroll",
                "--coordinator",
                &url,
                "--token",
                token,
                "--ca-cert",
                &ca,
                "--cert",
                &w.p(&format!("{out}/agent.crt")),
                "--key",
                &w.p(&format!("{out}/agent.key")),
                "--host-ip",
                ip,
            ],
            &[],
        )
    };
    // A CSR for another IP than the token names: refused, and the token is not burned.
    let out = enroll(&token, "127.0.0.13", "wrong-ip")?;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.stderr.contains("the token allows only IP 127.0.0.12"),
        "{}",
        out.stderr
    );
    // The right host: works.
    enroll(&token, "127.0.0.12", "agent-127.0.0.12")?.ok()?;
    let mode = std::fs::metadata(w.p("agent-127.0.0.12/agent.key"))?;
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
    // Reuse: refused.
    let out = enroll(&token, "127.0.0.12", "again")?;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains("already used"), "{}", out.stderr);
    // Forged: a token with its payload changed to another host.
    let parts: Vec<&str> = token.split('.').collect();
    let forged_payload = {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut claims: serde_json::Value = serde_json::from_slice(&b64.decode(parts[1])?)?;
        claims["host"] = "127.0.0.13".into();
        b64.encode(serde_json::to_vec(&claims)?)
    };
    let forged = format!("qt1.{forged_payload}.{}", parts[2]);
    let out = enroll(&forged, "127.0.0.13", "forged")?;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.stderr.contains("signature does not match"),
        "{}",
        out.stderr
    );
    let out = enroll("not-a-token", "127.0.0.13", "garbage")?;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains("not a Quorum token"), "{}", out.stderr);
    // Expired.
    let short = w
        .quorum(&[
            "pki",
            "token",
            "--host",
            "127.0.0.14",
            "--ttl",
            "1s",
            "--dir",
            &w.p("ca"),
        ])?
        .ok()?
        .stdout
        .trim()
        .to_string();
    std::thread::sleep(Duration::from_millis(2100));
    let out = enroll(&short, "127.0.0.14", "expired")?;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains("expired"), "{}", out.stderr);
    // The enrolled certificate works: the agent connects and is listed.
    w.start_agent("127.0.0.12", "")?;
    w.wait_agent_state(
        "127.0.0.12",
        &["connected", "idle"],
        Duration::from_secs(20),
    )?;
    Ok(())
}

#[test]
fn a_task_queued_during_a_long_poll_is_delivered_at_once() -> Result<()> {
    let mut w = World::new()?;
    // Polls are held far longer than the task may wait: delivery cannot be the poll's timeout.
    w.coordinator_extra = "poll_hold_secs: 600\n".into();
    w.start_coordinator()?;
    w.start_agent("127.0.0.11", "")?;
    w.wait_agent_state("127.0.0.11", &["connected"], Duration::from_secs(20))?;
    for _ in 0..3 {
        let out = w
            .admin(&["task", "--host", "127.0.0.11", "--timeout", "20", "facts"])?
            .ok()?;
        assert!(out.stdout.starts_with("127.0.0.11 t-"), "{}", out.stdout);
        assert!(out.stdout.contains(" ok"), "{}", out.stdout);
    }
    Ok(())
}

#[test]
fn bad_coordinator_config_is_refused_with_the_key_named() -> Result<()> {
    let w = World::new()?;
    let path = w.p("bad.yml");
    std::fs::write(
        &path,
        "listen: 127.0.0.1:1\ntls: { ca_cert: a, cert: b, key: c }\nlisen_typo: 1\n",
    )?;
    let out = w.quorum(&["serve", "--config", &path])?;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("lisen_typo"), "{}", out.stderr);
    Ok(())
}

#[test]
fn binaries_print_their_version() -> Result<()> {
    let v = env!("CARGO_PKG_VERSION");
    assert!(run("quorum", &["--version"], &[])?.ok()?.stdout.contains(v));
    assert!(run("quorum-agent", &["--version"], &[])?
        .ok()?
        .stdout
        .contains(v));
    Ok(())
}

#[test]
fn cli_settings_come_from_flags_then_environment_then_a_config_file() -> Result<()> {
    let mut w = World::new()?;
    w.start_coordinator()?;
    let cfg = w.p("cli.yml");
    std::fs::write(
        &cfg,
        format!(
            "coordinator: {}\ncert: {}\nkey: {}\ncacert: {}\n",
            w.url(),
            w.p("admin/admin.crt"),
            w.p("admin/admin.key"),
            w.p("ca/ca.crt")
        ),
    )?;
    // The file alone is enough.
    run("quorum", &["agents", "--cli-config", &cfg], &[])?.ok()?;
    // The environment beats the file: a wrong URL there is used, and fails.
    let out = run(
        "quorum",
        &["agents", "--cli-config", &cfg],
        &[("QUORUM_COORDINATOR", "https://127.0.0.1:1")],
    )?;
    assert_eq!(out.code, 4, "{out:?}");
    // A flag beats the environment.
    let url = w.url();
    run(
        "quorum",
        &["agents", "--cli-config", &cfg, "--coordinator", &url],
        &[("QUORUM_COORDINATOR", "https://127.0.0.1:1")],
    )?
    .ok()?;
    // Nothing anywhere: the message names all three ways.
    let out = run(
        "quorum",
        &["agents", "--cli-config", &w.p("missing.yml")],
        &[],
    )?;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("cannot read CLI config"),
        "{}",
        out.stderr
    );
    std::fs::write(w.p("empty.yml"), "{}\n")?;
    let out = run(
        "quorum",
        &["agents", "--cli-config", &w.p("empty.yml")],
        &[],
    )?;
    assert!(
        out.stderr
            .contains("pass --coordinator, set QUORUM_COORDINATOR, or put it in"),
        "{}",
        out.stderr
    );
    Ok(())
}

/// The first answer on a `Session` stream that carries `messages` (the stream stays open
/// until the answer is read): a poll's response, or the status the session ended with.
async fn session_answer(
    ch: Channel,
    messages: Vec<pb::AgentMessage>,
) -> Result<Result<pb::PollResponse, tonic::Status>> {
    let (tx, rx) = tokio::sync::mpsc::channel(messages.len().max(1));
    for m in messages {
        tx.send(m).await?;
    }
    let call = async {
        let mut inbound = AgentServiceClient::new(ch)
            .session(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await?
            .into_inner();
        inbound
            .message()
            .await?
            .ok_or_else(|| tonic::Status::unknown("the session ended without an answer"))
    };
    let answer = tokio::time::timeout(Duration::from_secs(15), call)
        .await
        .context("no answer on the session within 15 s")?;
    drop(tx);
    Ok(answer)
}

fn poll_msg(agent: &str) -> pb::AgentMessage {
    pb::AgentMessage {
        kind: Some(pb::agent_message::Kind::Poll(pb::PollRequest {
            agent_id: agent.into(),
            facts: None,
            highest_epoch: 0,
        })),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_held_to_the_protocol() -> Result<()> {
    let mut w = World::new()?;
    fast(&mut w);
    w.start_coordinator()?;
    w.issue_agent_cert("127.0.0.11")?;
    let crt = read(&w, "agent-127.0.0.11/agent.crt")?;
    let key = read(&w, "agent-127.0.0.11/agent.key")?;
    let expect = |answer: Result<pb::PollResponse, tonic::Status>,
                  code: tonic::Code,
                  words: &str|
     -> Result<()> {
        let status = answer.err().with_context(|| format!("expected {code:?}"))?;
        assert_eq!(status.code(), code, "{status:?}");
        assert!(status.message().contains(words), "{}", status.message());
        Ok(())
    };

    // A poll in order: held (1 s here) and answered with no tasks.
    let ok = session_answer(channel(&w, &crt, &key).await?, vec![poll_msg("127.0.0.11")]).await?;
    assert_eq!(ok.map_err(|s| anyhow::anyhow!("{s:?}"))?.tasks.len(), 0);

    // Agent .11 polling or reporting as .12.
    let answer =
        session_answer(channel(&w, &crt, &key).await?, vec![poll_msg("127.0.0.12")]).await?;
    expect(
        answer,
        tonic::Code::PermissionDenied,
        "cannot act as agent 127.0.0.12",
    )?;
    let report_as_12 = pb::AgentMessage {
        kind: Some(pb::agent_message::Kind::Report(pb::ReportRequest {
            agent_id: "127.0.0.12".into(),
            task_id: "t-x".into(),
            ..Default::default()
        })),
    };
    let answer = session_answer(channel(&w, &crt, &key).await?, vec![report_as_12]).await?;
    expect(
        answer,
        tonic::Code::PermissionDenied,
        "cannot act as agent 127.0.0.12",
    )?;

    // An admin certificate opening an agent session.
    let admin = channel(
        &w,
        &read(&w, "admin/admin.crt")?,
        &read(&w, "admin/admin.key")?,
    )
    .await?;
    let answer = session_answer(admin, vec![poll_msg("127.0.0.11")]).await?;
    expect(
        answer,
        tonic::Code::PermissionDenied,
        "may not call the agent service",
    )?;

    // No certificate at all.
    let anon = tonic::transport::Endpoint::from_shared(w.url())?
        .tls_config(
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(&w, "ca/ca.crt")?)),
        )?
        .connect()
        .await?;
    let answer = session_answer(anon, vec![poll_msg("127.0.0.11")]).await?;
    expect(
        answer,
        tonic::Code::Unauthenticated,
        "no client certificate",
    )?;

    // A message that is neither a poll nor a report, and a second poll while one is held.
    let answer = session_answer(
        channel(&w, &crt, &key).await?,
        vec![pb::AgentMessage { kind: None }],
    )
    .await?;
    expect(
        answer,
        tonic::Code::InvalidArgument,
        "neither a poll nor a report",
    )?;
    let answer = session_answer(
        channel(&w, &crt, &key).await?,
        vec![poll_msg("127.0.0.11"), poll_msg("127.0.0.11")],
    )
    .await?;
    expect(
        answer,
        tonic::Code::FailedPrecondition,
        "while its poll was held",
    )?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_of_0_1_still_polls_and_reports_with_unary_calls() -> Result<()> {
    let mut w = World::new()?;
    w.start_coordinator()?;
    w.issue_agent_cert("127.0.0.11")?;
    let crt = read(&w, "agent-127.0.0.11/agent.crt")?;
    let key = read(&w, "agent-127.0.0.11/agent.key")?;
    let mut agent = AgentServiceClient::new(channel(&w, &crt, &key).await?);
    let facts = pb::Facts {
        agent_version: "0.1.0".into(),
        host_ip: "127.0.0.11".into(),
        ..Default::default()
    };
    let poll = pb::PollRequest {
        agent_id: "127.0.0.11".into(),
        facts: Some(facts),
        highest_epoch: 0,
    };
    // The poll is held until the admin's task arrives.
    let held = tokio::spawn({
        let mut agent = agent.clone();
        let poll = poll.clone();
        async move { agent.poll(poll).await }
    });
    let state = async {
        let mut admin = AdminServiceClient::new(
            channel(
                &w,
                &read(&w, "admin/admin.crt")?,
                &read(&w, "admin/admin.key")?,
            )
            .await?,
        );
        for _ in 0..100 {
            let agents = admin
                .list_agents(pb::ListAgentsRequest {})
                .await?
                .into_inner();
            if agents.agents.iter().any(|a| a.state == "connected") {
                return Ok::<_, anyhow::Error>(admin);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!("the unary poll never showed the agent connected")
    };
    let mut admin = state.await?;
    let run = tokio::spawn(async move {
        admin
            .run_task(pb::RunTaskRequest {
                agent_id: "127.0.0.11".into(),
                task: Some(pb::Task {
                    id: "t-unary".into(),
                    epoch: 0,
                    epoch_holder: String::new(),
                    kind: Some(pb::task::Kind::CollectFacts(pb::CollectFacts {})),
                }),
                timeout_secs: 20,
                confirmed: false,
            })
            .await
    });
    let tasks = tokio::time::timeout(Duration::from_secs(15), held)
        .await
        .context("the held poll was not answered")???
        .into_inner()
        .tasks;
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert_eq!(tasks[0].id, "t-unary");
    agent
        .report(pb::ReportRequest {
            agent_id: "127.0.0.11".into(),
            task_id: "t-unary".into(),
            outcome: pb::Outcome::Ok as i32,
            output: "reported by a unary call".into(),
            facts: None,
            journal: None,
        })
        .await?;
    let result = run.await??.into_inner();
    assert_eq!(result.outcome, pb::Outcome::Ok as i32, "{result:?}");
    assert_eq!(result.output, "reported by a unary call");
    assert_eq!(result.agent_id, "127.0.0.11");
    Ok(())
}

#[test]
fn the_coordinator_stops_at_once_with_sessions_open_and_agents_come_back() -> Result<()> {
    let mut w = World::new()?;
    // A poll held for 10 minutes: a drain that waited for the sessions would hang.
    w.coordinator_extra = "poll_hold_secs: 600\n".into();
    w.start_coordinator()?;
    w.start_agent("127.0.0.11", "")?;
    w.wait_agent_state("127.0.0.11", &["connected"], Duration::from_secs(20))?;
    let mut coordinator = w.coordinator.take().context("coordinator")?;
    coordinator.signal(nix::sys::signal::Signal::SIGTERM)?;
    let code = coordinator.wait_exit(Duration::from_secs(20))?;
    assert_eq!(code, Some(0), "log:\n{}", coordinator.log_text());
    let agent = w.agent("127.0.0.11").context("agent")?;
    assert!(agent.running(), "the agent exited:\n{}", agent.log_text());
    // The agent reconnects by itself and takes tasks again.
    w.start_coordinator()?;
    w.wait_agent_state("127.0.0.11", &["connected"], Duration::from_secs(40))?;
    let out = w
        .admin(&["task", "--host", "127.0.0.11", "--timeout", "20", "facts"])?
        .ok()?;
    assert!(out.stdout.contains(" ok"), "{}", out.stdout);
    let log = w.agent("127.0.0.11").context("agent")?.log_text();
    assert!(log.contains("the coordinator is stopping"), "{log}");
    Ok(())
}

#[test]
fn an_agent_stopped_mid_task_reports_it_before_it_exits() -> Result<()> {
    let mut w = World::new()?;
    w.start_coordinator()?;
    // Every path in the world's dir; etcd's status command takes 2 s, so a facts task (and
    // the facts its report carries) keeps the agent busy for ~4 s.
    let host = HostPaths::new(w.dir.path(), "127.0.0.11".parse()?);
    host.create()?;
    let extra = format!(
        "{}service_backend: exec\nexec:\n  etcd:\n    status: [/bin/sh, -c, 'sleep 2; exit 3']\n",
        host.paths_config()
    );
    w.start_agent("127.0.0.11", &extra)?;
    w.wait_agent_state("127.0.0.11", &["connected"], Duration::from_secs(30))?;
    let task =
        w.spawn_admin_output(&["task", "--host", "127.0.0.11", "--timeout", "30", "facts"])?;
    // Inside the task: SIGTERM. The agent finishes it, reports it, and only then exits.
    std::thread::sleep(Duration::from_millis(1000));
    let agent = w.agent("127.0.0.11").context("agent")?;
    agent.signal(nix::sys::signal::Signal::SIGTERM)?;
    let code = agent.wait_exit(Duration::from_secs(20))?;
    let log = agent.log_text();
    assert_eq!(code, Some(0), "log:\n{log}");
    assert!(log.contains("task done"), "the task did not finish:\n{log}");
    let out = task.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}\nagent log:\n{log}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(" ok"), "{stdout}");
    Ok(())
}
