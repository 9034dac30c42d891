//! etcd snapshots taken before anything destructive (invariant 8): the coordinator streams a
//! snapshot from a healthy member with its own client certificate, verifies it (etcd's
//! sha256 trailer, bbolt's meta page, and `etcdctl snapshot status` where etcdctl is
//! installed), keeps it in `<state_dir>/snapshots/<cluster>/` with bounded retention, and
//! prints the exact steps to restore one.
//!
//! Why the coordinator and not an agent takes it: the coordinator already holds a client to
//! every member, while an agent's session carries messages of at most 1 MiB and a snapshot
//! is as large as the cluster's database (Pigsty's quota is 8-16 GiB). The snapshot never
//! leaves the admin node.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use quorum_proto::pb;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use tonic::Status;

use crate::sop::plan::ClusterSpec;

/// Retention of stored snapshots, per cluster.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Keep at most this many (the newest); at least 1.
    pub keep: usize,
    /// Remove those older than this, but never the newest.
    pub max_age: Duration,
}

/// What is known of a stored snapshot (the `.json` beside its `.db`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// Its id: the file name without `.db`.
    pub id: String,
    /// The etcd cluster.
    pub cluster: String,
    /// Full path of the `.db` file.
    pub path: String,
    /// Bytes, the sha256 trailer included.
    pub size: u64,
    /// Lower-case hex sha256 of the database (what etcd's trailer says, verified).
    pub sha256: String,
    /// The cluster's revision when it was taken.
    pub revision: i64,
    /// The member it was streamed from.
    pub endpoint: String,
    /// When, Unix ms.
    pub taken_unix_ms: i64,
    /// Why (the run or command that took it).
    pub reason: String,
    /// What `etcdctl snapshot status` said, when it was run.
    pub status: String,
}

/// The snapshot store of one coordinator.
#[derive(Debug, Clone)]
pub struct Snapshots {
    dir: PathBuf,
    retention: Retention,
}

/// bbolt's meta page magic and flag: a snapshot is a bbolt file whose first page is a meta page.
const BOLT_MAGIC: u32 = 0xED0C_DAED;
const BOLT_META_FLAG: u16 = 0x04;

impl Snapshots {
    /// The store under `state_dir`.
    pub fn new(state_dir: &Path, retention: Retention) -> Self {
        Self {
            dir: state_dir.join("snapshots"),
            retention,
        }
    }

    fn cluster_dir(&self, cluster: &str) -> PathBuf {
        self.dir.join(cluster)
    }

    /// Streams a snapshot of `cluster` from the first of `endpoints` that answers, verifies
    /// it and stores it; then applies the retention. Nothing is kept of a snapshot that fails
    /// verification.
    pub async fn take(
        &self,
        etcd: &crate::clients::etcd::EtcdAccess,
        cluster: &str,
        endpoints: &[String],
        reason: &str,
    ) -> Result<SnapshotMeta, String> {
        let start = std::time::Instant::now();
        let taken = self.take_unmetered(etcd, cluster, endpoints, reason).await;
        crate::model::metrics::metrics().snapshot_taken(cluster, start.elapsed(), taken.is_ok());
        taken
    }

    async fn take_unmetered(
        &self,
        etcd: &crate::clients::etcd::EtcdAccess,
        cluster: &str,
        endpoints: &[String],
        reason: &str,
    ) -> Result<SnapshotMeta, String> {
        let dir = self.cluster_dir(cluster);
        fs::create_dir_all(&dir)
            .and_then(|_| fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)))
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let now = crate::sop::store::now_ms();
        let id = format!("{cluster}-{}", utc_stamp(now));
        let path = dir.join(format!("{id}.db"));
        let partial = dir.join(format!(".{id}.partial"));
        let taken = etcd.snapshot_to(endpoints, &partial).await;
        let (endpoint, revision) = match taken {
            Ok(t) => t,
            Err(e) => {
                let _ = fs::remove_file(&partial);
                return Err(format!("cannot stream a snapshot: {e}"));
            }
        };
        let verified = verify(&partial);
        let (size, sha256) = match verified {
            Ok(v) => v,
            Err(e) => {
                let _ = fs::remove_file(&partial);
                return Err(format!(
                    "the snapshot streamed from {endpoint} failed verification: {e}"
                ));
            }
        };
        let status = match etcdctl_status(&partial).await {
            Ok(s) => s,
            Err(e) => {
                let _ = fs::remove_file(&partial);
                return Err(format!(
                    "etcdctl snapshot status refused the snapshot from {endpoint}: {e}"
                ));
            }
        };
        fs::rename(&partial, &path)
            .map_err(|e| format!("cannot move the snapshot to {}: {e}", path.display()))?;
        let meta = SnapshotMeta {
            id,
            cluster: cluster.to_string(),
            path: path.display().to_string(),
            size,
            sha256,
            revision,
            endpoint,
            taken_unix_ms: now,
            reason: reason.to_string(),
            status,
        };
        let json = serde_json::to_vec_pretty(&meta).map_err(|e| e.to_string())?;
        crate::model::pki::write_replace(&dir.join(format!("{}.json", meta.id)), &json, 0o600)
            .map_err(|e| e.to_string())?;
        self.prune(cluster, now);
        Ok(meta)
    }

    /// Stored snapshots of `cluster` (every cluster when `None`), newest first.
    pub fn list(&self, cluster: Option<&str>) -> Result<Vec<SnapshotMeta>, String> {
        let clusters: Vec<String> = match cluster {
            Some(c) => vec![c.to_string()],
            None => match fs::read_dir(&self.dir) {
                Ok(rd) => rd
                    .filter_map(Result::ok)
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(format!("cannot read {}: {e}", self.dir.display())),
            },
        };
        let mut all = Vec::new();
        for c in clusters {
            let dir = self.cluster_dir(&c);
            let entries = match fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(format!("cannot read {}: {e}", dir.display())),
            };
            for e in entries.filter_map(Result::ok) {
                let p = e.path();
                if p.extension().and_then(|x| x.to_str()) != Some("json") {
                    continue;
                }
                let meta = fs::read(&p)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<SnapshotMeta>(&b).ok());
                match meta {
                    Some(m) if Path::new(&m.path).exists() => all.push(m),
                    _ => {
                        tracing::warn!(file = %p.display(), "skipping an unreadable snapshot record")
                    }
                }
            }
        }
        all.sort_by_key(|m| std::cmp::Reverse(m.taken_unix_ms));
        Ok(all)
    }

    /// The stored snapshot `id`.
    pub fn get(&self, id: &str) -> Result<SnapshotMeta, String> {
        self.list(None)?
            .into_iter()
            .find(|m| m.id == id)
            .ok_or_else(|| format!("no snapshot {id:?}; see `quorum snapshot list`"))
    }

    /// Removes snapshots beyond the retention; the newest always stays.
    fn prune(&self, cluster: &str, now_ms: i64) {
        let Ok(list) = self.list(Some(cluster)) else {
            return;
        };
        let max_age = self.retention.max_age.as_millis() as i64;
        for (i, m) in list.iter().enumerate().skip(1) {
            if i >= self.retention.keep.max(1) || now_ms - m.taken_unix_ms > max_age {
                let _ = fs::remove_file(&m.path);
                let _ = fs::remove_file(self.cluster_dir(cluster).join(format!("{}.json", m.id)));
                tracing::info!(snapshot = %m.id, "removed by the snapshot retention");
            }
        }
    }
}

/// Checks a streamed snapshot: etcd appends the sha256 of the database to the stream, and the
/// database is a bbolt file that starts with a meta page. Returns (size, sha256 hex).
pub fn verify(path: &Path) -> Result<(u64, String), String> {
    let mut f = fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let size = f
        .metadata()
        .map_err(|e| format!("cannot stat {}: {e}", path.display()))?
        .len();
    if size < 4096 + 32 {
        return Err(format!(
            "it is {size} bytes, too small for an etcd database"
        ));
    }
    let body = size - 32;
    let mut hasher = sha2::Sha256::new();
    let mut first = Vec::new();
    let mut left = body;
    let mut buf = vec![0u8; 1 << 16];
    use std::io::Read;
    while left > 0 {
        let n = (left as usize).min(buf.len());
        f.read_exact(&mut buf[..n])
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if first.len() < 64 {
            first.extend_from_slice(&buf[..n.min(64 - first.len())]);
        }
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    let mut trailer = [0u8; 32];
    f.read_exact(&mut trailer)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let sum = hasher.finalize();
    if sum.as_slice() != trailer {
        return Err(
            "its sha256 trailer does not match its content (a torn or corrupted stream)".into(),
        );
    }
    // bbolt page header: id u64, flags u16, count u16, overflow u32; then the meta's magic u32.
    let flags = u16::from_le_bytes([first[8], first[9]]);
    let magic = u32::from_le_bytes([first[16], first[17], first[18], first[19]]);
    if flags != BOLT_META_FLAG || magic != BOLT_MAGIC {
        return Err("it does not start with a bbolt meta page; it is not an etcd database".into());
    }
    Ok((size, hex::encode(sum)))
}

/// `etcdctl snapshot status` of the file, when etcdctl is installed (Debian's etcd-client);
/// "" when it is not. etcdctl checks the database itself and its hash.
async fn etcdctl_status(path: &Path) -> Result<String, String> {
    let out = tokio::process::Command::new("etcdctl")
        .args(["snapshot", "status", "-w", "table"])
        .arg(path)
        .env("ETCDCTL_API", "3")
        .kill_on_drop(true)
        .output();
    let out = match tokio::time::timeout(Duration::from_secs(120), out).await {
        Err(_) => return Err("it did not finish within 120 s".into()),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        Ok(Err(e)) => return Err(format!("cannot run it: {e}")),
        Ok(Ok(o)) => o,
    };
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!(
            "{} {}",
            text,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `YYYYMMDDTHHMMSS.mmmZ` of a Unix ms time, UTC.
fn utc_stamp(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let t =
        time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        ms.rem_euclid(1000)
    )
}

/// Where the coordinator keeps what a restore puts back on the members besides the data.
pub struct RestoreFiles<'a> {
    /// The inventory the member files are rendered from.
    pub inventory: &'a Path,
    /// The Pigsty CA certificate.
    pub ca_cert: &'a Path,
    /// The issued member certificates and keys (`etcd-N.crt`, `etcd-N.key`).
    pub member_cert_dir: &'a Path,
}

/// The exact steps to restore `snap` onto `spec`'s members (Pigsty's layout from the
/// inventory): copy the file to each member, stop etcd, move the old data dir aside,
/// `etcdutl snapshot restore` (or `etcdctl snapshot restore` on etcd 3.4) with the member's
/// name and peer URL, put the member's certificates, etcd.conf and profile back through its
/// agent (a removal or purge retired them), start the members together. Nothing is run.
pub fn restore_plan(spec: &ClusterSpec, snap: &SnapshotMeta, files: &RestoreFiles<'_>) -> String {
    let initial: Vec<String> = spec
        .members
        .iter()
        .map(|m| format!("{}={}", m.name, m.peer_url))
        .collect();
    let initial = initial.join(",");
    let mut out = format!(
        "# Restore of snapshot {} (cluster {}, revision {}, sha256 {}):\n# every member gets the same snapshot and a new data dir; the cluster starts as a new one\n# with the snapshot's keys. Run on each host as root; nothing here has been run.\n",
        snap.id, snap.cluster, snap.revision, snap.sha256
    );
    for m in &spec.members {
        let data_dir = spec
            .etcd_conf
            .get(&m.ip)
            .map(|c| c.data_dir.clone())
            .unwrap_or_else(|| "/data/etcd".into());
        let data_dir = shell_quote(&data_dir);
        out.push_str(&format!(
            "\n## {name} @ {ip}\nscp {path} {ip}:/tmp/{id}.db\nsystemctl stop etcd\nmv {data_dir} {data_dir}.before-{id}\n\
             ETCDCTL_API=3 etcdctl snapshot restore /tmp/{id}.db --name {name} --initial-cluster {initial} --initial-cluster-token {token} --initial-advertise-peer-urls {peer} --data-dir {data_dir}\n\
             # etcd 3.5+: etcdutl snapshot restore /tmp/{id}.db (same flags)\n\
             chown -R etcd:etcd {data_dir} && chmod 0700 {data_dir}\n\
             # on the admin node: the member's certificates, etcd.conf and profile through its agent\n\
             quorum task --host {ip} write-etcd-certs --ca-file {ca} --cert-file {certs}/{name}.crt --key-file {certs}/{name}.key\n\
             quorum task --host {ip} write-etcd-conf -i {inventory}\n\
             quorum task --host {ip} write-etcdctl-profile -i {inventory}\n",
            name = m.name,
            ip = m.ip,
            path = shell_quote(&snap.path),
            id = snap.id,
            token = shell_quote(&spec.name),
            peer = m.peer_url,
            ca = shell_quote(&files.ca_cert.display().to_string()),
            certs = shell_quote(&files.member_cert_dir.display().to_string()),
            inventory = shell_quote(&files.inventory.display().to_string()),
        ));
    }
    out.push_str(&format!(
        "\n## then start every member at about the same time (one alone has no quorum)\n\
         quorum service start etcd --cluster {} --forks {}\n\
         # or, on each host: systemctl enable --now etcd\n\
         # check: quorum cluster status; etcdctl endpoint health\n",
        shell_quote(&spec.name),
        spec.members.len().max(1)
    ));
    out
}

impl From<&SnapshotMeta> for pb::SnapshotView {
    fn from(m: &SnapshotMeta) -> Self {
        pb::SnapshotView {
            id: m.id.clone(),
            cluster: m.cluster.clone(),
            path: m.path.clone(),
            size: m.size,
            sha256: m.sha256.clone(),
            revision: m.revision,
            endpoint: m.endpoint.clone(),
            taken_unix_ms: m.taken_unix_ms,
            reason: m.reason.clone(),
        }
    }
}

/// The admin service's `Snapshot` call: list, save now, or print the restore steps.
pub async fn answer(
    req: pb::SnapshotRequest,
    config: &crate::model::config::CoordinatorConfig,
    etcd: &crate::clients::etcd::EtcdAccess,
    snapshots: &Snapshots,
    admin: &str,
) -> Result<pb::SnapshotResponse, Status> {
    let inventory = config.inventory.as_path();
    use pb::snapshot_request::Action;
    let cluster_spec = || -> Result<ClusterSpec, Status> {
        let inv = crate::model::inventory::Inventory::load(inventory).map_err(|e| {
            Status::invalid_argument(format!("the coordinator's inventory is invalid:\n{e}"))
        })?;
        let name = (!req.cluster.is_empty()).then_some(req.cluster.as_str());
        let cluster = inv
            .etcd_cluster(name)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        etcd.remember(cluster);
        Ok(crate::sop::plan::cluster_spec(cluster, cluster.params.init))
    };
    match req.action {
        Some(Action::List(_)) => {
            let name = (!req.cluster.is_empty()).then_some(req.cluster.as_str());
            let list = snapshots.list(name).map_err(Status::internal)?;
            Ok(pb::SnapshotResponse {
                snapshots: list.iter().map(pb::SnapshotView::from).collect(),
                restore_plan: String::new(),
            })
        }
        Some(Action::Save(_)) => {
            let spec = cluster_spec()?;
            let meta = snapshots
                .take(
                    etcd,
                    &spec.name,
                    &spec.client_urls(),
                    &format!("saved by {admin}"),
                )
                .await
                .map_err(|e| Status::failed_precondition(format!("{e}; nothing was saved")))?;
            tracing::info!(snapshot = %meta.id, %admin, "snapshot saved");
            Ok(pb::SnapshotResponse {
                snapshots: vec![pb::SnapshotView::from(&meta)],
                restore_plan: String::new(),
            })
        }
        Some(Action::RestorePlan(r)) => {
            let meta = snapshots.get(&r.id).map_err(Status::not_found)?;
            let spec = cluster_spec()?;
            if spec.name != meta.cluster {
                return Err(Status::invalid_argument(format!(
                    "snapshot {} is of etcd cluster {}, not of {}; pass --cluster {}",
                    meta.id, meta.cluster, spec.name, meta.cluster
                )));
            }
            let files = RestoreFiles {
                inventory,
                ca_cert: &config.tls.ca_cert,
                member_cert_dir: &crate::model::statedir::member_cert_dir(&config.state_dir),
            };
            Ok(pb::SnapshotResponse {
                restore_plan: restore_plan(&spec, &meta, &files),
                snapshots: vec![pb::SnapshotView::from(&meta)],
            })
        }
        None => Err(Status::invalid_argument(
            "no snapshot action given (list, save or restore_plan)",
        )),
    }
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+@%=:,".contains(c))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bolt_like(len: usize) -> Vec<u8> {
        let mut db = vec![0u8; len];
        db[8..10].copy_from_slice(&BOLT_META_FLAG.to_le_bytes());
        db[16..20].copy_from_slice(&BOLT_MAGIC.to_le_bytes());
        db
    }

    #[test]
    fn a_stream_verifies_only_with_its_trailer_and_a_bolt_meta_page(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("s.db");
        let db = bolt_like(8192);
        let mut good = db.clone();
        good.extend_from_slice(&sha2::Sha256::digest(&db));
        fs::write(&p, &good)?;
        let (size, sum) = verify(&p)?;
        assert_eq!(size, 8192 + 32);
        assert_eq!(sum, hex::encode(sha2::Sha256::digest(&db)));
        let mut torn = good.clone();
        torn[5000] ^= 1;
        fs::write(&p, &torn)?;
        assert!(verify(&p).is_err_and(|e| e.contains("trailer")));
        let other = vec![7u8; 8192];
        let mut not_bolt = other.clone();
        not_bolt.extend_from_slice(&sha2::Sha256::digest(&other));
        fs::write(&p, &not_bolt)?;
        assert!(verify(&p).is_err_and(|e| e.contains("bbolt")));
        fs::write(&p, b"short")?;
        assert!(verify(&p).is_err_and(|e| e.contains("too small")));
        Ok(())
    }

    #[test]
    fn stamps_are_utc_and_sortable() {
        assert_eq!(utc_stamp(0), "19700101T000000.000Z");
        assert_eq!(utc_stamp(1_796_075_598_022), "20261130T215318.022Z");
    }
}
