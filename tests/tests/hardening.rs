//! The security probe's low findings (2026-11), each reproduced against the real binaries:
//! an inventory that takes seconds to parse does not stall the coordinator (L1); the server,
//! not only the CLI, demands confirmation for a destructive ad-hoc task, and a fan-out never
//! takes down two members of one etcd cluster (L4); a plan refuses an inventory whose
//! etcd_data is not the data dir the host's agent manages (L5).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use quorum_proto::pb;
use quorum_proto::pb::admin_service_client::AdminServiceClient;
use quorum_tests::etcd::Fleet;
use quorum_tests::World;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

const IPS: [&str; 3] = ["127.0.0.11", "127.0.0.12", "127.0.0.13"];

/// A world with a coordinator, three agents and a created 3-member etcd cluster.
fn etcd_world() -> Result<(World, Fleet)> {
    let mut w = World::new()?;
    w.coordinator_extra =
        "gate_timeout_secs: 20\nstale_after_secs: 10\ntask_timeout_secs: 60\n".into();
    let fleet = Fleet::new(&w, &IPS)?;
    fleet.write_inventory(&w, &[(IPS[0], 1), (IPS[1], 2), (IPS[2], 3)], "")?;
    w.start_coordinator()?;
    fleet.start_agents(&mut w)?;
    let out = w.admin(&["cluster", "create", "--yes"])?;
    anyhow::ensure!(out.code == 0, "create failed: {out:?}");
    Ok((w, fleet))
}

/// The admin service as a raw gRPC client with the world's admin certificate: what a script
/// (or the probe's curl) does without the CLI's own checks.
async fn raw_admin(w: &World) -> Result<AdminServiceClient<Channel>> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read_to_string(
            w.p("ca/ca.crt"),
        )?))
        .identity(Identity::from_pem(
            std::fs::read_to_string(w.p("admin/admin.crt"))?,
            std::fs::read_to_string(w.p("admin/admin.key"))?,
        ));
    let channel = tonic::transport::Endpoint::from_shared(w.url())?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?;
    Ok(AdminServiceClient::new(channel))
}

fn restart_etcd() -> pb::Task {
    pb::Task {
        id: String::new(),
        kind: Some(pb::task::Kind::ServiceAction(pb::ServiceAction {
            service: pb::Service::Etcd as i32,
            action: pb::Action::Restart as i32,
            if_changed: vec![],
            force: true,
        })),
    }
}

/// A valid inventory of about 4 MB (just under the limit) that takes libyaml seconds: one
/// etcd member and a long list variable.
fn big_inventory() -> String {
    let mut text = String::from(
        "all:\n  children:\n    etcd:\n      hosts:\n        127.0.0.11: { etcd_seq: 1 }\n      vars: { etcd_cluster: etcd }\n  vars:\n    filler:\n",
    );
    let mut n = 0u32;
    while text.len() < 4_000_000 {
        text.push_str(&format!(
            "      - {{ name: item{n}, value: 'some text {n}' }}\n"
        ));
        n += 1;
    }
    text
}

/// Probe L1: two plans against an 8 MB inventory blocked both runtime workers, and
/// `quorum agents` took 8 s. Now the inventory is parsed off the runtime: `quorum agents`
/// answers while the plans are still parsing (checked by the order of completion).
#[test]
fn agents_answer_while_big_inventories_parse() -> Result<()> {
    let mut w = World::new()?;
    std::fs::write(w.dir.path().join("pigsty.yml"), big_inventory())?;
    w.start_coordinator()?;
    // As many parses as the coordinator has runtime workers (one per core): without
    // spawn_blocking they would hold every worker.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
    let mut plans = Vec::new();
    for _ in 0..workers {
        plans.push(w.spawn_admin_output(&["cluster", "create", "--plan"])?);
    }
    // Let the plans reach the coordinator and start parsing (a parse takes seconds).
    std::thread::sleep(Duration::from_millis(800));
    let start = Instant::now();
    let agents = w.admin(&["agents"])?;
    let took = start.elapsed();
    let mut still_parsing = 0;
    for p in plans.iter_mut() {
        if matches!(p.try_wait(), Ok(None)) {
            still_parsing += 1;
        }
    }
    let mut outputs = Vec::new();
    for p in plans {
        outputs.push(p.wait_with_output()?);
    }
    assert_eq!(agents.code, 0, "{agents:?}");
    assert_eq!(
        still_parsing, workers,
        "`quorum agents` ({took:?}) finished after a plan: the parses blocked the coordinator"
    );
    // The plans themselves went through: they were refused for the missing agent, not for
    // the inventory.
    for o in outputs {
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!err.contains("inventory is invalid"), "{err}");
    }
    Ok(())
}

/// Probe L4: a raw `RunTask{restart etcd}` with the admin certificate restarted etcd with no
/// confirmation, and `RunTasks` could stop every member at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_demands_confirmation_and_guards_fan_outs() -> Result<()> {
    let (w, f) = etcd_world()?;
    let pids = |f: &Fleet| -> Vec<Option<i32>> { f.hosts.iter().map(|h| h.etcd_pid()).collect() };
    let before = pids(&f);
    assert!(before.iter().all(Option::is_some), "{before:?}");
    let mut admin = raw_admin(&w).await?;

    let refused = admin
        .run_task(pb::RunTaskRequest {
            agent_id: IPS[0].into(),
            task: Some(restart_etcd()),
            timeout_secs: 30,
            confirmed: false,
        })
        .await
        .err()
        .context("an unconfirmed restart was accepted")?;
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert!(
        refused
            .message()
            .contains("would restart etcd on 127.0.0.11")
            && refused.message().contains("nothing was queued"),
        "{}",
        refused.message()
    );

    // Two members of one cluster at once: refused even when confirmed, naming them.
    let refused = admin
        .run_tasks(pb::RunTasksRequest {
            agent_ids: vec![IPS[1].into(), IPS[2].into()],
            task: Some(restart_etcd()),
            timeout_secs: 30,
            confirmed: true,
        })
        .await
        .err()
        .context("a fan-out restart of two members was accepted")?;
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert!(
        refused.message().contains(
            "2 members of etcd cluster etcd at once (etcd-2 @ 127.0.0.12, etcd-3 @ 127.0.0.13)"
        ) && refused
            .message()
            .contains("quorum service restart etcd --hosts 127.0.0.12,127.0.0.13"),
        "{}",
        refused.message()
    );
    // Unconfirmed fan-outs are refused for the confirmation first.
    let refused = admin
        .run_tasks(pb::RunTasksRequest {
            agent_ids: vec![IPS[1].into()],
            task: Some(restart_etcd()),
            timeout_secs: 30,
            confirmed: false,
        })
        .await
        .err()
        .context("an unconfirmed fan-out restart was accepted")?;
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);

    // Nothing was restarted (a restart takes well under this to show a new pid).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(pids(&f), before, "a refused task restarted etcd");
    assert!(f.hosts.iter().all(|h| h.restart_count() == 0));

    // The CLI's --yes is the confirmation the server reads: the restart runs.
    let out = w.admin(&[
        "task", "--host", IPS[0], "--yes", "service", "etcd", "restart",
    ])?;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(f.host(IPS[0])?.restart_count(), 1);
    Ok(())
}

/// Probe L5: with the inventory's etcd_data for .13 moved to /srv/etcd-elsewhere, `config
/// reload --plan` showed `-data-dir: …/data/etcd` `+data-dir: /srv/etcd-elsewhere` with no
/// warning, while wipes and `has_member` kept using the agent's dir. Now every etcd SOP's
/// plan refuses it (exit 2), naming both paths and the host.
#[test]
fn a_plan_refuses_an_inventory_data_dir_the_agent_does_not_manage() -> Result<()> {
    let mut w = World::new()?;
    let f = Fleet::new(&w, &IPS)?;
    f.write_inventory(&w, &[(IPS[0], 1), (IPS[1], 2), (IPS[2], 3)], "")?;
    w.start_coordinator()?;
    f.start_agents(&mut w)?;
    let inventory = w.dir.path().join("pigsty.yml");
    let text = std::fs::read_to_string(&inventory)?;
    let agent_dir = f.host(IPS[2])?.data().display().to_string();
    let moved = text.replace(&agent_dir, "/srv/etcd-elsewhere");
    anyhow::ensure!(moved != text, "the inventory does not name {agent_dir}");
    std::fs::write(&inventory, moved)?;
    for sop in [
        vec!["cluster", "create", "--plan"],
        vec!["config", "reload", "--plan"],
        vec!["env", "refresh", "--plan"],
        vec!["service", "restart", "etcd", "--plan"],
        vec!["member", "remove", IPS[2], "--plan"],
    ] {
        let out = w.admin(&sop)?;
        assert_eq!(out.code, 2, "{sop:?}: {out:?}");
        assert!(
            out.stderr.contains(&format!(
                "pigsty.yml:7: host 127.0.0.13: etcd_data of etcd-3 is /srv/etcd-elsewhere, but the agent on 127.0.0.13 manages {agent_dir}"
            )) && out.stderr.contains("nothing was planned"),
            "{sop:?}: {}",
            out.stderr
        );
    }
    // The same dir spelled with a trailing slash is the same dir.
    std::fs::write(
        &inventory,
        text.replace(&agent_dir, &format!("{agent_dir}/")),
    )?;
    let out = w.admin(&["cluster", "create", "--plan"])?;
    assert_eq!(out.code, 0, "{out:?}");
    Ok(())
}
