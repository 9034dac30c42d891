//! `quorum snapshot list|save|restore --plan`: the etcd snapshots the coordinator keeps
//! before destructive steps, one taken by hand, and the steps to restore one.

use quorum_proto::exit::Exit;
use quorum_proto::pb;
use quorum_proto::pb::snapshot_request::Action;

use crate::operator::client::Connection;

/// What `quorum snapshot` was asked to do.
pub enum SnapshotOp {
    /// List the kept snapshots.
    List,
    /// Take one now.
    Save,
    /// Print the steps to restore snapshot `id`.
    RestorePlan(String),
}

/// Runs `quorum snapshot …`.
pub async fn run(
    op: SnapshotOp,
    cluster: Option<String>,
    json: bool,
    conn: &Connection,
) -> anyhow::Result<Exit> {
    let action = match op {
        SnapshotOp::List => Action::List(pb::SnapshotListAction {}),
        SnapshotOp::Save => Action::Save(pb::SnapshotSaveAction {}),
        SnapshotOp::RestorePlan(id) => Action::RestorePlan(pb::SnapshotRestorePlanAction { id }),
    };
    let restore = matches!(action, Action::RestorePlan(_));
    let mut client = crate::operator::client::admin_client(conn).await?;
    let resp = client
        .snapshot(pb::SnapshotRequest {
            cluster: cluster.unwrap_or_default(),
            action: Some(action),
        })
        .await?
        .into_inner();
    if json {
        let list: Vec<serde_json::Value> = resp.snapshots.iter().map(snapshot_json).collect();
        let v = if restore {
            serde_json::json!({"snapshot": list.first(), "restore_plan": resp.restore_plan})
        } else {
            serde_json::Value::Array(list)
        };
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(Exit::Ok);
    }
    if restore {
        print!("{}", resp.restore_plan);
        return Ok(Exit::Ok);
    }
    if resp.snapshots.is_empty() {
        println!("no snapshots kept yet");
        return Ok(Exit::Ok);
    }
    println!(
        "{:<40} {:<10} {:>12} {:>10}  {:<20} REASON",
        "ID", "CLUSTER", "BYTES", "REVISION", "TAKEN (UTC)"
    );
    for s in &resp.snapshots {
        println!(
            "{:<40} {:<10} {:>12} {:>10}  {:<20} {}",
            s.id,
            s.cluster,
            s.size,
            s.revision,
            utc(s.taken_unix_ms),
            s.reason
        );
    }
    Ok(Exit::Ok)
}

fn snapshot_json(s: &pb::SnapshotView) -> serde_json::Value {
    serde_json::json!({
        "id": s.id,
        "cluster": s.cluster,
        "path": s.path,
        "size": s.size,
        "sha256": s.sha256,
        "revision": s.revision,
        "endpoint": s.endpoint,
        "taken_unix_ms": s.taken_unix_ms,
        "reason": s.reason,
    })
}

fn utc(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .map(|t| {
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            )
        })
        .unwrap_or_default()
}
