//! Certificate lifetimes with real processes and lifetimes of seconds: agents renew their
//! certificates over and over while rolling reloads run, without a restart and without a
//! failed or repeated step; an agent whose certificate expired while the coordinator was away
//! comes back with one token; the coordinator presents a new certificate of its own from disk
//! without a restart (and keeps its old one when the new files are unusable); an expired
//! certificate is refused with a message that says so and what to do.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use quorum_tests::etcd::{Fleet, HealthSampler};
use quorum_tests::{run, wait_for, World};

const IPS: [&str; 3] = ["127.0.0.11", "127.0.0.12", "127.0.0.13"];

/// The serial of the PEM certificate at `path`, as the coordinator spells it.
fn serial_of(path: &Path) -> Result<String> {
    let pem = std::fs::read(path).with_context(|| path.display().to_string())?;
    let der = quorum_proto::tls::first_cert_der(&pem).context("not a PEM certificate")?;
    Ok(quorum_proto::identity::serial_from_der(&der)?)
}

/// When the certificate at `path` expires, Unix seconds.
fn not_after(path: &Path) -> Result<i64> {
    let pem = std::fs::read(path).with_context(|| path.display().to_string())?;
    let der = quorum_proto::tls::first_cert_der(&pem).context("not a PEM certificate")?;
    Ok(quorum_proto::identity::validity_from_der(&der)?.1)
}

/// How many renewals the agent `ip` has logged.
fn renewals(w: &mut World, ip: &str) -> usize {
    w.agent(ip)
        .map(|a| {
            a.log_text()
                .matches("renewed this agent's certificate")
                .count()
        })
        .unwrap_or(0)
}

/// Serials listed in the coordinator's CRL (`quorum pki crl`).
fn crl_serials(w: &World) -> Result<Vec<String>> {
    let pem = w.admin(&["pki", "crl"])?.ok()?.stdout;
    let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.as_bytes())?;
    let (_, crl) = x509_parser::parse_x509_crl(&parsed.contents)?;
    Ok(crl
        .iter_revoked_certificates()
        .filter_map(|r| {
            let hex: String = r.raw_serial().iter().map(|b| format!("{b:02x}")).collect();
            quorum_proto::identity::normalize_serial(&hex)
        })
        .collect())
}

/// Agents on 45-second certificates renew (at 60-75 % of that, every 20-30 s) while rolling
/// reloads restart every member: reloads run back to back until each agent has renewed
/// during one, and
/// every one of them succeeds with each member restarted exactly once per run. Each renewal
/// makes a new key on the host; the certificate it replaced is revoked once the new one is in
/// use, and the agents' own counts match the coordinator's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_renew_again_and_again_while_rolling_reloads_run() -> Result<()> {
    let mut w = World::new()?;
    w.coordinator_extra =
        "gate_timeout_secs: 20\nstale_after_secs: 10\ntask_timeout_secs: 60\nagent_cert_ttl: 45s\n"
            .into();
    let fleet = Fleet::new(&w, &IPS)?;
    fleet.write_inventory(&w, &[(IPS[0], 1), (IPS[1], 2), (IPS[2], 3)], "")?;
    for ip in IPS {
        w.issue_agent_cert_for(ip, "45s")?;
    }
    let first_serials: Vec<String> = IPS
        .iter()
        .map(|ip| serial_of(&w.dir.path().join(format!("agent-{ip}/agent.crt"))))
        .collect::<Result<_>>()?;
    let key_of = |w: &World, ip: &str| {
        std::fs::read(w.dir.path().join(format!("agent-{ip}/agent.key"))).unwrap_or_default()
    };
    let first_keys: Vec<Vec<u8>> = IPS.iter().map(|ip| key_of(&w, ip)).collect();
    w.start_coordinator()?;
    fleet.start_agents(&mut w)?;
    let out = w.admin(&["cluster", "create", "--yes"])?;
    anyhow::ensure!(out.code == 0, "create failed: {out:?}");

    let sampler = HealthSampler::start(fleet.hosts.clone());
    let mut renewed_during_a_run = [false; 3];
    let mut runs = 0;
    // Each agent renews every 20-30 s; a reload takes a few seconds. Two minutes is four
    // renewal periods of the slowest.
    let started = std::time::Instant::now();
    while renewed_during_a_run.iter().any(|r| !r) {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(120),
            "after {runs} reloads in {:?} not every agent renewed during one: {renewed_during_a_run:?}",
            started.elapsed()
        );
        let before: Vec<usize> = IPS.iter().map(|ip| renewals(&mut w, ip)).collect();
        let out = w.admin(&["config", "reload", "--restart"])?;
        assert_eq!(out.code, 0, "reload {} failed: {out:?}", runs + 1);
        runs += 1;
        for (i, ip) in IPS.iter().enumerate() {
            if renewals(&mut w, ip) > before[i] {
                renewed_during_a_run[i] = true;
            }
        }
    }
    let (max_down, _) = sampler.stop();
    assert!(max_down <= 1, "{max_down} members were down at one moment");
    for h in &fleet.hosts {
        assert_eq!(
            h.restart_count(),
            runs,
            "{} restarted {} times in {runs} reloads: a step was repeated or skipped",
            h.ip,
            h.restart_count()
        );
    }
    eprintln!("renewal: {runs} reloads until every agent had renewed during one");

    // Several cycles each, with no operator action.
    for (i, ip) in IPS.iter().enumerate() {
        wait_for(
            &format!("agent {ip} to renew three times"),
            Duration::from_secs(120),
            || (renewals(&mut w, ip) >= 3).then_some(()),
        )?;
        let crt = w.dir.path().join(format!("agent-{ip}/agent.crt"));
        let serial = serial_of(&crt)?;
        assert_ne!(
            serial, first_serials[i],
            "{ip} still has its first certificate"
        );
        // The key on the host is new too (made there for the renewal), and private.
        let key = key_of(&w, ip);
        assert!(
            !key.is_empty() && key != first_keys[i],
            "{ip} kept its first key"
        );
        let mode = std::fs::metadata(w.dir.path().join(format!("agent-{ip}/agent.key")))
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)?;
        assert_eq!(mode, 0o600, "{ip}'s key");
    }
    // The coordinator lists each agent on its current certificate, with its renewals, and
    // the agent's own count agrees.
    let agents = wait_for(
        "the coordinator to see every agent on its renewed certificate",
        Duration::from_secs(60),
        || {
            let agents = w.agents_json().ok()?;
            IPS.iter()
                .all(|ip| {
                    agents.iter().any(|a| {
                        a["agent_id"] == *ip
                            && a["state"] != "stale"
                            && a["cert_renewals"].as_u64().unwrap_or(0) >= 3
                            && a["facts"]["counters"]["cert_not_after_unix"].as_i64() > Some(0)
                    })
                })
                .then_some(agents)
        },
    )?;
    for a in &agents {
        let state = a["cert_renewal"].as_str().unwrap_or_default();
        assert!(
            ["ok", "due"].iter().any(|w| state.starts_with(w)),
            "{}: renewal state {state:?}",
            a["agent_id"]
        );
    }
    // Every first certificate was replaced and is revoked now; a renewal revokes only after
    // the new certificate is in use, so the one each agent holds now is not.
    let revoked = crl_serials(&w)?;
    for (i, ip) in IPS.iter().enumerate() {
        assert!(
            revoked.contains(&first_serials[i]),
            "{ip}'s first certificate {} is not revoked: {revoked:?}",
            first_serials[i]
        );
        let now = serial_of(&w.dir.path().join(format!("agent-{ip}/agent.crt")))?;
        assert!(
            !revoked.contains(&now),
            "{ip}'s current certificate is revoked"
        );
    }
    // No agent was refused or restarted along the way.
    for ip in IPS {
        let log = w.agent(ip).map(|a| a.log_text()).unwrap_or_default();
        assert!(!log.contains("refused this agent"), "{ip}:\n{log}");
        assert!(!log.contains("cannot renew"), "{ip}:\n{log}");
        assert_eq!(log.matches("agent starting").count(), 1, "{ip} restarted");
    }
    let coordinator = std::fs::read_to_string(w.dir.path().join("coordinator.log"))?;
    assert!(
        coordinator.contains("revoked the certificate a renewal replaced"),
        "{coordinator}"
    );
    assert!(!coordinator.contains("renewal refused"), "{coordinator}");
    Ok(())
}

/// An agent enrolled on a 12-second certificate cannot renew while the coordinator is down;
/// once the certificate expired it is refused (both sides say it expired and how to recover),
/// and one new token for the same host brings the running agent back on a new certificate,
/// the expired one revoked.
#[test]
fn an_agent_whose_certificate_expired_comes_back_with_one_token() -> Result<()> {
    let mut w = World::new()?;
    w.coordinator_extra = "agent_cert_ttl: 12s\n".into();
    w.start_coordinator()?;
    let ip = "127.0.0.14";
    w.enroll_agent(ip)?;
    let crt = w.dir.path().join(format!("agent-{ip}/agent.crt"));
    w.start_agent(ip, "")?;
    w.wait_agent_state(ip, &["connected", "idle"], Duration::from_secs(20))?;
    w.kill_coordinator();

    // It tries to renew meanwhile, and cannot.
    wait_for("the agent to try to renew", Duration::from_secs(30), || {
        w.agent(ip)?
            .log_text()
            .contains("cannot renew this agent's certificate")
            .then_some(())
    })?;
    // The certificate it holds now (on a slow machine it may have renewed once before the
    // coordinator went away).
    let expired_serial = serial_of(&crt)?;
    let expires = not_after(&crt)?;
    wait_for("the certificate to expire", Duration::from_secs(30), || {
        (quorum_proto::tls::unix_now() > expires).then_some(())
    })?;
    w.start_coordinator()?;
    let hint = format!("quorum pki token --host {ip}");
    wait_for(
        "the agent to say its certificate expired and how to recover",
        Duration::from_secs(60),
        || {
            let log = w.agent(ip)?.log_text();
            (log.contains("certificate") && log.contains("expired at") && log.contains(&hint))
                .then_some(())
        },
    )?;
    wait_for(
        "the coordinator to say an expired certificate was refused",
        Duration::from_secs(30),
        || {
            std::fs::read_to_string(w.dir.path().join("coordinator.log"))
                .ok()?
                .contains("the client certificate has expired")
                .then_some(())
        },
    )?;
    let listed = w.agents_json()?;
    assert!(
        !listed
            .iter()
            .any(|a| a["agent_id"] == ip && a["state"] == "connected"),
        "an expired agent is connected: {listed:?}"
    );

    // One token, same host: the running agent takes the new certificate by itself.
    w.coordinator_extra = "agent_cert_ttl: 1h\n".into();
    w.kill_coordinator();
    w.start_coordinator()?;
    w.enroll_agent(ip)?;
    let fresh = serial_of(&crt)?;
    assert_ne!(fresh, expired_serial);
    wait_for(
        "the agent back on its new certificate",
        Duration::from_secs(60),
        || {
            let agents = w.agents_json().ok()?;
            agents
                .iter()
                .any(|a| {
                    a["agent_id"] == ip && a["state"] == "connected" && a["cert_serial"] == *fresh
                })
                .then_some(())
        },
    )?;
    assert!(
        crl_serials(&w)?.contains(&expired_serial),
        "the expired certificate was not revoked by the new enrollment"
    );
    let log = w.agent(ip).map(|a| a.log_text()).unwrap_or_default();
    assert_eq!(log.matches("agent starting").count(), 1, "{log}");
    // `quorum agents` shows the expiry and warns: an hour is within 14 days.
    let table = w.admin(&["agents"])?.ok()?;
    assert!(table.stdout.contains("CERT EXPIRES"), "{}", table.stdout);
    assert!(table.stdout.contains(&format!("{ip} ")), "{}", table.stdout);
    assert!(
        table
            .stderr
            .contains("agent certificate(s) expire within 14 days"),
        "{}",
        table.stderr
    );
    assert!(table.stderr.contains(ip), "{}", table.stderr);
    Ok(())
}

/// The coordinator starts on a certificate that expires in seconds. A replacement whose key
/// does not go with it is logged and not used; once the old certificate expired, the CLI
/// refuses the server and says why; a proper pair written to disk is presented from then on,
/// without a restart, and the CLI and the agent work again.
#[test]
fn the_coordinator_takes_a_new_certificate_from_disk_without_a_restart() -> Result<()> {
    let mut w = World::new()?;
    let issue = |w: &World, out: &str, ttl: &str| -> Result<()> {
        w.quorum(&[
            "pki",
            "issue",
            "coordinator",
            "--ip",
            "127.0.0.1",
            "--ttl",
            ttl,
            "--dir",
            &w.p("ca"),
            "--out",
            &w.p(out),
            "--force",
        ])?
        .ok()?;
        Ok(())
    };
    issue(&w, "coordinator", "12s")?;
    let crt = w.dir.path().join("coordinator/coordinator.crt");
    let key = w.dir.path().join("coordinator/coordinator.key");
    let expires = not_after(&crt)?;
    w.start_coordinator()?;
    let ip = "127.0.0.15";
    w.start_agent(ip, "")?;
    w.wait_agent_state(ip, &["connected", "idle"], Duration::from_secs(20))?;

    // A new certificate without its key: not used.
    issue(&w, "next", "1d")?;
    std::fs::copy(w.dir.path().join("next/coordinator.crt"), &crt)?;
    let log = w.dir.path().join("coordinator.log");
    wait_for(
        "the coordinator to refuse the mismatched pair",
        Duration::from_secs(30),
        || {
            std::fs::read_to_string(&log)
                .ok()?
                .contains("changed on disk but cannot be used")
                .then_some(())
        },
    )?;
    wait_for(
        "the first certificate to expire",
        Duration::from_secs(30),
        || (quorum_proto::tls::unix_now() > expires).then_some(()),
    )?;
    let refused = w.admin(&["agents"])?;
    assert_ne!(refused.code, 0, "{refused:?}");
    assert!(
        refused
            .stderr
            .contains("the coordinator's certificate has expired")
            && refused.stderr.contains("quorum pki issue coordinator"),
        "the CLI does not say the server's certificate expired and what to do: {}",
        refused.stderr
    );
    assert_eq!(refused.code, 4, "{refused:?}");
    wait_for(
        "the coordinator to log why the CLI refused it",
        Duration::from_secs(10),
        || {
            std::fs::read_to_string(&log)
                .ok()?
                .contains("refused this server's certificate as expired")
                .then_some(())
        },
    )?;

    // The pair, complete: presented from the next connection on.
    std::fs::copy(w.dir.path().join("next/coordinator.key"), &key)?;
    wait_for(
        "the coordinator to take the new pair",
        Duration::from_secs(30),
        || {
            std::fs::read_to_string(&log)
                .ok()?
                .contains("the coordinator's certificate changed on disk")
                .then_some(())
        },
    )?;
    let pid = w.coordinator.as_ref().map(|c| c.pid());
    w.admin(&["agents"])?.ok()?;
    w.wait_agent_state(ip, &["connected", "idle"], Duration::from_secs(60))?;
    assert_eq!(pid, w.coordinator.as_ref().map(|c| c.pid()), "restarted");
    let text = std::fs::read_to_string(&log)?;
    assert!(
        text.contains(&serial_of(&crt)?),
        "the log does not name the new serial:\n{text}"
    );

    // An operator's certificate that expired is refused before anything is sent, saying so.
    w.quorum(&[
        "pki",
        "issue",
        "admin",
        "--name",
        "brief",
        "--ttl",
        "1s",
        "--dir",
        &w.p("ca"),
        "--out",
        &w.p("brief"),
    ])?
    .ok()?;
    let brief = w.dir.path().join("brief/admin.crt");
    let until = not_after(&brief)?;
    wait_for(
        "the admin certificate to expire",
        Duration::from_secs(10),
        || (quorum_proto::tls::unix_now() > until).then_some(()),
    )?;
    let out = run(
        "quorum",
        &["agents"],
        &[
            ("QUORUM_COORDINATOR", &w.url()),
            ("QUORUM_CERT", &brief.display().to_string()),
            ("QUORUM_KEY", &w.p("brief/admin.key")),
            ("QUORUM_CACERT", &w.p("ca/ca.crt")),
        ],
    )?;
    assert_ne!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains("is expired") && out.stderr.contains("quorum pki issue"),
        "{}",
        out.stderr
    );
    Ok(())
}

/// An agent on a certificate far longer-lived than the coordinator's `agent_cert_ttl` (a fleet
/// enrolled under 0.3.1's 20-year default, or before the lifetime was shortened) is asked to
/// renew on its first session, and from then on holds certificates of the short lifetime.
#[test]
fn an_agent_on_a_long_lived_certificate_moves_to_the_short_lifetime_by_itself() -> Result<()> {
    let mut w = World::new()?;
    w.coordinator_extra = "agent_cert_ttl: 2m\n".into();
    let ip = "127.0.0.16";
    // `pki issue agent` with the lifetime 0.3.1 gave every enrollment.
    w.issue_agent_cert_for(ip, "7300d")?;
    let crt = w.dir.path().join(format!("agent-{ip}/agent.crt"));
    let long = serial_of(&crt)?;
    w.start_coordinator()?;
    w.start_agent(ip, "")?;
    // Asked to renew within a tenth of the lifetime: 12 s.
    wait_for("the agent to renew", Duration::from_secs(60), || {
        (renewals(&mut w, ip) >= 1).then_some(())
    })?;
    let now = quorum_proto::tls::unix_now();
    let until = not_after(&crt)?;
    assert!(
        until <= now + 120,
        "the renewed certificate lives until {until}, more than two minutes from {now}"
    );
    let log = w.agent(ip).map(|a| a.log_text()).unwrap_or_default();
    assert!(
        log.contains("the coordinator asks for a certificate of its shorter lifetime"),
        "{log}"
    );
    wait_for(
        "the long-lived certificate to be revoked once the new one is used",
        Duration::from_secs(30),
        || crl_serials(&w).ok()?.contains(&long).then_some(()),
    )?;
    Ok(())
}

/// A renewal that cannot be written (here: the staging path of the new key is taken by a
/// directory) fails, says why, and is retried at its own pace (a tenth of the remaining
/// lifetime, at most 5 minutes) even though the coordinator keeps asking on every session;
/// the agent stays connected on its current certificate meanwhile.
#[test]
fn a_renewal_that_cannot_be_written_is_retried_at_its_pace_and_the_agent_keeps_working(
) -> Result<()> {
    let mut w = World::new()?;
    // Short holds: a session's first answer (where the coordinator asks) comes every 2 s.
    w.coordinator_extra = "agent_cert_ttl: 2m\npoll_hold_secs: 2\n".into();
    let ip = "127.0.0.17";
    w.issue_agent_cert_for(ip, "1d")?;
    std::fs::create_dir(w.dir.path().join(format!("agent-{ip}/agent.key.new")))?;
    let crt = w.dir.path().join(format!("agent-{ip}/agent.crt"));
    let serial = serial_of(&crt)?;
    w.start_coordinator()?;
    w.start_agent(ip, "")?;
    let failures = |w: &mut World| {
        w.agent(ip)
            .map(|a| {
                a.log_text()
                    .matches("cannot renew this agent's certificate")
                    .count()
            })
            .unwrap_or(0)
    };
    wait_for("the renewal to fail", Duration::from_secs(60), || {
        (failures(&mut w) >= 1).then_some(())
    })?;
    // Polls are answered every 2 s; the retry is 5 minutes away.
    std::thread::sleep(Duration::from_secs(20));
    assert_eq!(
        failures(&mut w),
        1,
        "the renewal was retried before its time"
    );
    let log = w.agent(ip).map(|a| a.log_text()).unwrap_or_default();
    assert!(
        log.contains("agent.key.new"),
        "the failure does not say what: {log}"
    );
    assert!(log.contains("trying again in 300s"), "{log}");
    assert_eq!(serial_of(&crt)?, serial);
    w.wait_agent_state(ip, &["connected", "idle"], Duration::from_secs(10))?;
    Ok(())
}
