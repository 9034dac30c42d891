//! Readable runs, end to end: a run is followed as the coordinator streams it (WatchRun).

use std::time::Duration;

use anyhow::{Context, Result};
use quorum_proto::pb;
use quorum_proto::pb::admin_service_client::AdminServiceClient;
use quorum_tests::etcd::Fleet;
use quorum_tests::World;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

const IPS: [&str; 3] = ["127.0.0.11", "127.0.0.12", "127.0.0.13"];

/// A coordinator, three agents with the exec backend around etcd, an inventory naming them;
/// no cluster yet.
fn setup(extra: &str) -> Result<(World, Fleet)> {
    let mut w = World::new()?;
    w.coordinator_extra = format!("gate_timeout_secs: 20\ntask_timeout_secs: 60\n{extra}");
    let fleet = Fleet::new(&w, &IPS)?;
    fleet.write_inventory(&w, &[(IPS[0], 1), (IPS[1], 2), (IPS[2], 3)], "")?;
    w.start_coordinator()?;
    fleet.start_agents(&mut w)?;
    Ok((w, fleet))
}

/// The admin's gRPC channel to the coordinator.
async fn admin_channel(w: &World) -> Result<Channel> {
    let ca = std::fs::read_to_string(w.p("ca/ca.crt"))?;
    let cert = std::fs::read_to_string(w.p("admin/admin.crt"))?;
    let key = std::fs::read_to_string(w.p("admin/admin.key"))?;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .identity(Identity::from_pem(cert, key));
    Ok(tonic::transport::Endpoint::from_shared(w.url())?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_run_sends_each_change_and_ends_with_the_run() -> Result<()> {
    // env refresh needs agents only, no etcd.
    let (w, _f) = setup("")?;
    let mut admin = AdminServiceClient::new(admin_channel(&w).await?);
    let started = admin
        .start_run(pb::StartRunRequest {
            sop: "env-refresh".into(),
            cluster: String::new(),
            args: Default::default(),
            plan_only: false,
        })
        .await?
        .into_inner();
    let watch = |admin: &mut AdminServiceClient<Channel>, id: String| {
        let mut admin = admin.clone();
        async move {
            let mut stream = admin
                .watch_run(pb::GetRunRequest { run_id: id })
                .await?
                .into_inner();
            let mut views = Vec::new();
            // A guard against a hang, not a limit on how fast it is.
            while let Some(v) = tokio::time::timeout(Duration::from_secs(120), stream.message())
                .await
                .context("the stream neither sent nor ended")??
            {
                views.push(v);
            }
            anyhow::Ok(views)
        }
    };
    let views = watch(&mut admin, started.run_id.clone()).await?;
    let last = views.last().context("no view at all")?;
    assert_eq!(last.state, "succeeded", "{last:?}");
    assert_eq!(last.steps.len(), 3);
    assert!(last.finished_unix_ms >= last.created_unix_ms);
    assert!(views.iter().all(|v| v.now_unix_ms > 0));
    // Each view is a change, and steps only move forward.
    let done: Vec<usize> = views
        .iter()
        .map(|v| v.steps.iter().filter(|s| s.state == "done").count())
        .collect();
    assert!(done.windows(2).all(|p| p[0] <= p[1]), "{done:?}");
    assert!(
        views
            .windows(2)
            .all(|p| p[0].steps != p[1].steps || p[0].state != p[1].state),
        "a view was sent twice"
    );
    // An ended run: one view, then the end.
    let again = watch(&mut admin, started.run_id.clone()).await?;
    assert_eq!(again.len(), 1, "{again:?}");
    // An unknown run is refused before any stream.
    let err = admin
        .watch_run(pb::GetRunRequest {
            run_id: "r-none".into(),
        })
        .await
        .err()
        .context("an unknown run was watched")?;
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    Ok(())
}
