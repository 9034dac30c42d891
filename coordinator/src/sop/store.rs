//! The run store: every run and each of its steps, in an embedded SQLite file in the state
//! dir, written before and after every step so a coordinator killed at any point resumes
//! without repeating a finished step or skipping one. Also the per-cluster lock, and a
//! change signal that wakes whoever follows a run (`WatchRun`) after every write.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::sop::plan::StepKind;

/// Store errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("run store: {0}; check the state dir's disk and permissions")]
    Sql(#[from] rusqlite::Error),
    /// A step could not be encoded or decoded.
    #[error("run store: a step record is unreadable: {0}")]
    Codec(#[from] serde_json::Error),
    /// Another run holds the cluster.
    #[error("cluster {cluster} is locked by run {holder} ({state}); wait for it, or `quorum run resume {holder}` / `quorum run abort {holder}`")]
    Locked {
        /// The cluster.
        cluster: String,
        /// The run holding it.
        holder: String,
        /// Its state.
        state: String,
    },
    /// No such run.
    #[error("no run {0}; see `quorum run list`")]
    NoRun(String),
    /// The store file could not be created.
    #[error("run store: {0}; check the state dir's disk and permissions")]
    Io(#[from] std::io::Error),
}

/// The state of a run.
pub mod run_state {
    /// Being walked now.
    pub const RUNNING: &str = "running";
    /// The coordinator stopped while it was running; `quorum run resume` continues it.
    pub const INTERRUPTED: &str = "interrupted";
    /// Every step done.
    pub const SUCCEEDED: &str = "succeeded";
    /// Halted at a failed step; resume or abort.
    pub const FAILED: &str = "failed";
    /// Stopped by an operator.
    pub const ABORTED: &str = "aborted";
    /// Recorded to start by itself when its host's agent connects: the stop, wipe and
    /// retirement of a member removed while its host was unreachable. Holds its host's lock.
    pub const WAITING: &str = "waiting";
}

/// The lock key of a host, held by a run that must finish on that host before any other SOP
/// may touch it (a deferred cleanup). Cluster locks are keyed by cluster name.
pub fn host_lock(host: std::net::IpAddr) -> String {
    format!("host:{host}")
}

/// The state of a step.
pub mod step_state {
    /// Not started.
    pub const PENDING: &str = "pending";
    /// Started, not finished (the record written before the step).
    pub const RUNNING: &str = "running";
    /// Finished well.
    pub const DONE: &str = "done";
    /// Failed (or refused); the run halted here.
    pub const FAILED: &str = "failed";
}

/// One step as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepRecord {
    /// Position in the run, from 0.
    pub index: usize,
    /// What the step does.
    pub kind: StepKind,
    /// For the operator.
    pub description: String,
    /// The host it acts on ("" for a cluster-wide coordinator action).
    pub host: String,
    /// Pending, running, done, failed.
    pub state: String,
    /// Task ids given to agents for this step (fixed before dispatch, so a redelivery after a
    /// crash is recognized by the agent's journal).
    pub task_ids: Vec<String>,
    /// How often the step was started.
    pub attempt: u32,
    /// Outcome word ("changed", "unchanged", "skipped", "ok", "refused", "failed").
    pub outcome: String,
    /// What the step said.
    pub output: String,
    /// Start time, Unix ms.
    pub started_ms: i64,
    /// End time, Unix ms.
    pub finished_ms: i64,
    /// Set when the agents answered the step's tasks from their journals: the work was done
    /// before (an earlier attempt cut short by a coordinator stop), at these times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal: Option<RanBefore>,
}

impl StepRecord {
    /// The record of a step not started yet.
    pub fn pending(index: usize, kind: &StepKind) -> Self {
        Self {
            index,
            kind: kind.clone(),
            description: kind.describe(),
            host: kind.hosts_label(),
            state: step_state::PENDING.into(),
            task_ids: Vec::new(),
            attempt: 0,
            outcome: String::new(),
            output: String::new(),
            started_ms: 0,
            finished_ms: 0,
            journal: None,
        }
    }
}

/// When a step answered from the agents' journals really ran (Unix ms, the agents' clocks;
/// 0 when an agent's journal does not say).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RanBefore {
    /// Start of the earliest task.
    pub started_ms: i64,
    /// End of the latest task.
    pub finished_ms: i64,
}

/// One run as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    /// Run id.
    pub id: String,
    /// The SOP.
    pub sop: String,
    /// The etcd cluster.
    pub cluster: String,
    /// SOP arguments and the context the runner needs (member endpoints), as JSON.
    pub context: String,
    /// Run state.
    pub state: String,
    /// The admin who started it.
    pub started_by: String,
    /// sha256 of the inventory it was planned from.
    pub inventory_digest: String,
    /// Creation time, Unix ms.
    pub created_ms: i64,
    /// When it last ended (succeeded, failed, aborted), Unix ms; 0 while it runs, when it was
    /// interrupted, and for runs stored before this was recorded.
    #[serde(default)]
    pub finished_ms: i64,
    /// Why it failed, if it did.
    pub error: String,
    /// The steps.
    pub steps: Vec<StepRecord>,
}

/// The SQLite store.
pub struct Store {
    conn: Mutex<Connection>,
    /// Bumped after every write of a run or a step.
    changes: watch::Sender<u64>,
}

/// A run stopped part-way, as [`Store::halted_runs`] lists it.
#[derive(Debug, Clone)]
pub struct HaltedRun {
    /// Run id.
    pub id: String,
    /// The SOP.
    pub sop: String,
    /// The cluster (or host) it locks.
    pub cluster: String,
    /// failed, interrupted or waiting.
    pub state: String,
    /// When it stopped, Unix ms.
    pub since_ms: i64,
}

/// A certificate on the deny list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// Its serial, lowercase hex (`quorum_proto::identity::normalize_serial`).
    pub serial: String,
    /// Whose it was, as far as the coordinator knew ("agent 10.10.10.11"), or "".
    pub subject: String,
    /// Why.
    pub reason: String,
    /// When, Unix seconds.
    pub revoked_unix: i64,
    /// When the certificate expires, Unix seconds; 0 when unknown. An expired certificate is
    /// refused by its expiry alone, so its revocation is dropped a day after (the deny list
    /// of a fleet that renews stays as long as one lifetime's renewals).
    pub not_after_unix: i64,
}

/// How long after a revoked certificate expired its revocation is kept.
pub const REVOCATION_AFTER_EXPIRY_SECS: i64 = 86_400;

/// The certificate a host holds, as the store knows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Enrollment {
    /// The serial issued last (at enrollment or renewal).
    pub serial: String,
    /// When it expires, Unix seconds (0: unknown, from a store of 0.3.1).
    pub not_after_unix: i64,
    /// When it was issued, Unix seconds.
    pub issued_unix: i64,
    /// The serial a renewal replaced, still valid until the agent first uses the new one
    /// (a renewal whose answer was lost must not lock the agent out); "" when none.
    pub previous: String,
    /// When `previous` expires, Unix seconds (0: unknown).
    pub previous_not_after: i64,
    /// How many times this host renewed since it enrolled.
    pub renewals: i64,
}

/// Now, Unix ms.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Store {
    /// Opens (creating) the store at `path`. A new store file is made 0600 before SQLite
    /// opens it, so its `-wal` and `-shm` files (SQLite gives them the database's mode) are
    /// private too.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e.into()),
        }
        let conn = Connection::open(path)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=FULL;
             CREATE TABLE IF NOT EXISTS runs (
                id TEXT PRIMARY KEY, sop TEXT NOT NULL, cluster TEXT NOT NULL, context TEXT NOT NULL,
                state TEXT NOT NULL, started_by TEXT NOT NULL, inventory_digest TEXT NOT NULL,
                created_ms INTEGER NOT NULL, error TEXT NOT NULL DEFAULT '');
             CREATE TABLE IF NOT EXISTS steps (
                run_id TEXT NOT NULL, idx INTEGER NOT NULL, record TEXT NOT NULL,
                PRIMARY KEY (run_id, idx));
             CREATE TABLE IF NOT EXISTS locks (cluster TEXT PRIMARY KEY, run_id TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS revoked (
                serial TEXT PRIMARY KEY, subject TEXT NOT NULL, reason TEXT NOT NULL,
                revoked_unix INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS enrolled (
                host TEXT PRIMARY KEY, serial TEXT NOT NULL, enrolled_unix INTEGER NOT NULL);",
        )?;
        // Stores of 0.3.1 know no expiry and no renewal.
        for (table, column, decl) in [
            ("revoked", "not_after_unix", "INTEGER NOT NULL DEFAULT 0"),
            ("enrolled", "not_after_unix", "INTEGER NOT NULL DEFAULT 0"),
            ("enrolled", "previous", "TEXT NOT NULL DEFAULT ''"),
            (
                "enrolled",
                "previous_not_after",
                "INTEGER NOT NULL DEFAULT 0",
            ),
            ("enrolled", "renewals", "INTEGER NOT NULL DEFAULT 0"),
        ] {
            let exists: bool = conn
                .prepare(&format!(
                    "SELECT 1 FROM pragma_table_info('{table}') WHERE name = '{column}'"
                ))?
                .exists([])?;
            if !exists {
                conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl};"))?;
            }
        }
        let scrubbed = scrub_stored_credentials(&conn)?;
        if scrubbed > 0 {
            tracing::warn!(
                runs = scrubbed,
                "removed the Patroni REST credentials that Quorum 0.2.0 stored with runs; they are read from the inventory when needed"
            );
        }
        // Stores of 0.2 have no end time per run.
        let has_finished: bool = conn
            .prepare("SELECT 1 FROM pragma_table_info('runs') WHERE name = 'finished_ms'")?
            .exists([])?;
        if !has_finished {
            conn.execute_batch(
                "ALTER TABLE runs ADD COLUMN finished_ms INTEGER NOT NULL DEFAULT 0;",
            )?;
        }
        Ok(Self {
            conn: Mutex::new(conn),
            changes: watch::Sender::new(0),
        })
    }

    /// A receiver that sees a change after every write of any run or step: a follower
    /// subscribes, then reads its run, then reads it again after each change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// As [`Store::with`] for a write, timed as `op` in the metrics.
    fn write<R>(
        &self,
        op: &str,
        f: impl FnOnce(&mut Connection) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let start = std::time::Instant::now();
        let r = self.with(f);
        crate::model::metrics::metrics().store_write(op, start.elapsed());
        r
    }

    fn with<R>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let mut guard = match self.conn.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        f(&mut guard)
    }

    /// Marks runs that were running when the coordinator stopped as interrupted.
    pub fn mark_interrupted(&self) -> Result<Vec<String>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare("SELECT id FROM runs WHERE state = ?1")?;
            let ids: Vec<String> = stmt
                .query_map([run_state::RUNNING], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            c.execute(
                "UPDATE runs SET state = ?1 WHERE state = ?2",
                params![run_state::INTERRUPTED, run_state::RUNNING],
            )?;
            Ok(ids)
        })
        .inspect(|_| self.changed())
    }

    /// Stores a new run and takes its cluster's lock, in one transaction; refused when another
    /// unfinished run holds the lock.
    pub fn create_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        self.create_run_locked(run, &run.cluster)
    }

    /// Stores a new run holding the lock `lock` (a cluster name, or [`host_lock`]).
    pub fn create_run_locked(&self, run: &RunRecord, lock: &str) -> Result<(), StoreError> {
        self.write("create_run", |c| {
            let tx = c.transaction()?;
            if let Some((holder, state)) = holder_of(&tx, lock)? {
                return Err(StoreError::Locked {
                    cluster: lock.to_string(),
                    holder,
                    state,
                });
            }
            tx.execute(
                "INSERT INTO runs (id, sop, cluster, context, state, started_by, inventory_digest, created_ms, error)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    run.id,
                    run.sop,
                    run.cluster,
                    run.context,
                    run.state,
                    run.started_by,
                    run.inventory_digest,
                    run.created_ms,
                    run.error
                ],
            )?;
            for s in &run.steps {
                tx.execute(
                    "INSERT INTO steps (run_id, idx, record) VALUES (?1, ?2, ?3)",
                    params![run.id, s.index as i64, serde_json::to_string(s)?],
                )?;
            }
            tx.execute(
                "INSERT OR REPLACE INTO locks (cluster, run_id) VALUES (?1, ?2)",
                params![lock, run.id],
            )?;
            tx.commit()?;
            Ok(())
        })
        .inspect(|_| self.changed())
    }

    /// Writes one step's record (durably, before the runner goes on).
    pub fn put_step(&self, run_id: &str, step: &StepRecord) -> Result<(), StoreError> {
        self.write("put_step", |c| {
            c.execute(
                "UPDATE steps SET record = ?3 WHERE run_id = ?1 AND idx = ?2",
                params![run_id, step.index as i64, serde_json::to_string(step)?],
            )?;
            Ok(())
        })
        .inspect(|_| self.changed())
    }

    /// Sets a run's state (and error); a terminal success or abort releases the lock. An
    /// end state records the end time; running again (a resume) clears it.
    pub fn set_run_state(&self, run_id: &str, state: &str, error: &str) -> Result<(), StoreError> {
        let finished_ms = match state {
            run_state::SUCCEEDED | run_state::FAILED | run_state::ABORTED => now_ms(),
            _ => 0,
        };
        self.write("set_run_state", |c| {
            let tx = c.transaction()?;
            // An abort is final: a step that was still running when the operator aborted
            // must not turn the run back into failed or succeeded when it ends.
            tx.execute(
                "UPDATE runs SET state = ?2, error = ?3, finished_ms = ?5 WHERE id = ?1 AND (state != ?4 OR ?2 = ?4)",
                params![run_id, state, error, run_state::ABORTED, finished_ms],
            )?;
            if state == run_state::SUCCEEDED || state == run_state::ABORTED {
                tx.execute("DELETE FROM locks WHERE run_id = ?1", [run_id])?;
            }
            tx.commit()?;
            Ok(())
        })
        .inspect(|_| self.changed())
    }

    /// A run with its steps.
    pub fn get_run(&self, run_id: &str) -> Result<RunRecord, StoreError> {
        self.with(|c| {
            let mut run = c
                .query_row(
                    "SELECT id, sop, cluster, context, state, started_by, inventory_digest, created_ms, error, finished_ms FROM runs WHERE id = ?1",
                    [run_id],
                    |r| {
                        Ok(RunRecord {
                            id: r.get(0)?,
                            sop: r.get(1)?,
                            cluster: r.get(2)?,
                            context: r.get(3)?,
                            state: r.get(4)?,
                            started_by: r.get(5)?,
                            inventory_digest: r.get(6)?,
                            created_ms: r.get(7)?,
                            error: r.get(8)?,
                            finished_ms: r.get(9)?,
                            steps: Vec::new(),
                        })
                    },
                )
                .optional()?
                .ok_or_else(|| StoreError::NoRun(run_id.to_string()))?;
            let mut stmt = c.prepare("SELECT record FROM steps WHERE run_id = ?1 ORDER BY idx")?;
            let records: Vec<String> = stmt
                .query_map([run_id], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            for rec in records {
                run.steps.push(serde_json::from_str(&rec)?);
            }
            Ok(run)
        })
    }

    /// The run holding `lock` and its state, if one does.
    pub fn lock_holder(&self, lock: &str) -> Result<Option<(String, String)>, StoreError> {
        self.with(|c| holder_of(c, lock))
    }

    /// Ids of the runs waiting for their host's agent, oldest first.
    pub fn waiting_runs(&self) -> Result<Vec<String>, StoreError> {
        self.with(|c| {
            let mut stmt =
                c.prepare("SELECT id FROM runs WHERE state = ?1 ORDER BY created_ms, id")?;
            let ids = stmt
                .query_map([run_state::WAITING], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            Ok(ids)
        })
    }

    /// How many runs are in each state.
    pub fn run_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare("SELECT state, COUNT(*) FROM runs GROUP BY state")?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
    }

    /// Runs stopped part-way (failed, interrupted, waiting), which hold their lock until
    /// resumed or aborted; `since_ms` is when they stopped (their creation when not recorded).
    pub fn halted_runs(&self) -> Result<Vec<HaltedRun>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT id, sop, cluster, state, CASE WHEN finished_ms > 0 THEN finished_ms ELSE created_ms END \
                 FROM runs WHERE state IN (?1, ?2, ?3) ORDER BY created_ms",
            )?;
            let rows = stmt
                .query_map(
                    [run_state::FAILED, run_state::INTERRUPTED, run_state::WAITING],
                    |r| {
                        Ok(HaltedRun {
                            id: r.get(0)?,
                            sop: r.get(1)?,
                            cluster: r.get(2)?,
                            state: r.get(3)?,
                            since_ms: r.get(4)?,
                        })
                    },
                )?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
    }

    /// Run ids, newest first.
    pub fn list_runs(&self, limit: usize) -> Result<Vec<String>, StoreError> {
        self.with(|c| {
            let mut stmt =
                c.prepare("SELECT id FROM runs ORDER BY created_ms DESC, id DESC LIMIT ?1")?;
            let ids = stmt
                .query_map([limit as i64], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            Ok(ids)
        })
    }
}

impl Store {
    /// Puts a serial on the deny list; the first revocation of a serial is the one kept.
    /// Returns the revocation as stored.
    pub fn revoke(&self, r: &Revocation) -> Result<Revocation, StoreError> {
        self.write("revoke", |c| {
            insert_revocation(c, r)?;
            read_revocation(c, &r.serial)
        })
    }

    /// Drops the revocations of certificates that expired more than
    /// [`REVOCATION_AFTER_EXPIRY_SECS`] before `now_unix`; returns how many.
    pub fn prune_revocations(&self, now_unix: i64) -> Result<usize, StoreError> {
        self.write("prune_revocations", |c| {
            Ok(c.execute(
                "DELETE FROM revoked WHERE not_after_unix > 0 AND not_after_unix < ?1",
                [now_unix - REVOCATION_AFTER_EXPIRY_SECS],
            )?)
        })
    }

    /// The whole deny list, oldest first.
    pub fn revocations(&self) -> Result<Vec<Revocation>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT serial, subject, reason, revoked_unix, not_after_unix FROM revoked ORDER BY revoked_unix, serial",
            )?;
            let rows = stmt
                .query_map([], revocation_row)?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
    }

    /// Records `issued` as the certificate of `host` after an enrollment with a token and, in
    /// the same transaction, revokes every certificate issued to it before (for `reason`),
    /// a renewal's previous one included: a crash between the two can leave neither the old
    /// serial unrecorded nor unrevoked. Returns those revocations.
    pub fn record_enrollment(
        &self,
        host: std::net::IpAddr,
        issued: &Issued,
        reason: &str,
    ) -> Result<Vec<Revocation>, StoreError> {
        self.write("enroll", |c| {
            let tx = c.transaction()?;
            let before = enrollment_of(&tx, host)?;
            let mut revoked = Vec::new();
            if let Some(b) = before {
                for (serial, not_after) in [(b.serial, b.not_after_unix), (b.previous, b.previous_not_after)] {
                    if !serial.is_empty() && serial != issued.serial {
                        revoked.push(revoke_in(&tx, host, &serial, not_after, reason)?);
                    }
                }
            }
            tx.execute(
                "INSERT INTO enrolled (host, serial, enrolled_unix, not_after_unix, previous, previous_not_after, renewals)
                 VALUES (?1, ?2, ?3, ?4, '', 0, 0)
                 ON CONFLICT(host) DO UPDATE SET serial = excluded.serial, enrolled_unix = excluded.enrolled_unix,
                   not_after_unix = excluded.not_after_unix, previous = '', previous_not_after = 0, renewals = 0",
                params![host.to_string(), issued.serial, now_ms() / 1000, issued.not_after_unix],
            )?;
            tx.commit()?;
            Ok(revoked)
        })
    }

    /// Records `issued` as the certificate `host` renewed into, calling with the certificate
    /// `caller`. The caller's certificate stays valid until the host first uses the new one
    /// ([`Store::take_up`]): an answer lost on the way must not lock the agent out. Any other
    /// certificate recorded for the host (a renewal it never took up) is revoked now, in the
    /// same transaction; returns those revocations.
    pub fn record_renewal(
        &self,
        host: std::net::IpAddr,
        caller: &Issued,
        issued: &Issued,
    ) -> Result<Vec<Revocation>, StoreError> {
        self.write("renew", |c| {
            let tx = c.transaction()?;
            let before = enrollment_of(&tx, host)?.unwrap_or_default();
            let mut revoked = Vec::new();
            for (serial, not_after) in [
                (before.serial, before.not_after_unix),
                (before.previous, before.previous_not_after),
            ] {
                if !serial.is_empty() && serial != caller.serial && serial != issued.serial {
                    revoked.push(revoke_in(&tx, host, &serial, not_after, NOT_TAKEN_UP)?);
                }
            }
            tx.execute(
                "INSERT INTO enrolled (host, serial, enrolled_unix, not_after_unix, previous, previous_not_after, renewals)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(host) DO UPDATE SET serial = excluded.serial, enrolled_unix = excluded.enrolled_unix,
                   not_after_unix = excluded.not_after_unix, previous = excluded.previous,
                   previous_not_after = excluded.previous_not_after, renewals = excluded.renewals",
                params![
                    host.to_string(),
                    issued.serial,
                    now_ms() / 1000,
                    issued.not_after_unix,
                    caller.serial,
                    caller.not_after_unix,
                    before.renewals + 1
                ],
            )?;
            tx.commit()?;
            Ok(revoked)
        })
    }

    /// `host` used the certificate `serial`: when that is the one it renewed into, the one the
    /// renewal replaced is revoked now. Returns that revocation. Reads only, unless a renewal
    /// is pending.
    pub fn take_up(
        &self,
        host: std::net::IpAddr,
        serial: &str,
    ) -> Result<Option<Revocation>, StoreError> {
        let pending = self.with(|c| enrollment_of(c, host))?;
        let Some(e) = pending.filter(|e| e.serial == serial && !e.previous.is_empty()) else {
            return Ok(None);
        };
        self.write("take_up", |c| {
            let tx = c.transaction()?;
            let r = revoke_in(&tx, host, &e.previous, e.previous_not_after, RENEWED)?;
            tx.execute(
                "UPDATE enrolled SET previous = '', previous_not_after = 0 WHERE host = ?1 AND serial = ?2",
                params![host.to_string(), serial],
            )?;
            tx.commit()?;
            Ok(Some(r))
        })
    }

    /// When the certificate `serial` expires, if it was issued here at an enrollment or a
    /// renewal and is still recorded (0 stays unknown: `None`).
    pub fn not_after_of(&self, serial: &str) -> Result<Option<i64>, StoreError> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT not_after_unix FROM enrolled WHERE serial = ?1 AND not_after_unix > 0
                 UNION ALL
                 SELECT previous_not_after FROM enrolled WHERE previous = ?1 AND previous_not_after > 0
                 LIMIT 1",
                [serial],
                |r| r.get(0),
            )
            .optional()?)
        })
    }

    /// What the store knows of the certificate of `host`, if it enrolled here.
    pub fn enrollment(&self, host: std::net::IpAddr) -> Result<Option<Enrollment>, StoreError> {
        self.with(|c| enrollment_of(c, host))
    }

    /// The host a serial was issued to at enrollment, if it was.
    pub fn enrolled_host(&self, serial: &str) -> Result<Option<String>, StoreError> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT host FROM enrolled WHERE serial = ?1",
                [serial],
                |r| r.get(0),
            )
            .optional()?)
        })
    }
}

/// A certificate just signed: its serial and when it expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// Serial, lowercase hex.
    pub serial: String,
    /// Expiry, Unix seconds (0: unknown).
    pub not_after_unix: i64,
}

/// The reason recorded when a renewal's new certificate was first used.
pub const RENEWED: &str = "superseded by a renewal";
/// The reason recorded for a renewed certificate its agent never used (the answer was lost,
/// and the agent renewed again with the one before).
pub const NOT_TAKEN_UP: &str = "a renewal its agent did not take up";

fn revocation_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Revocation> {
    Ok(Revocation {
        serial: r.get(0)?,
        subject: r.get(1)?,
        reason: r.get(2)?,
        revoked_unix: r.get(3)?,
        not_after_unix: r.get(4)?,
    })
}

fn insert_revocation(c: &Connection, r: &Revocation) -> Result<(), StoreError> {
    c.execute(
        "INSERT OR IGNORE INTO revoked (serial, subject, reason, revoked_unix, not_after_unix) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![r.serial, r.subject, r.reason, r.revoked_unix, r.not_after_unix],
    )?;
    Ok(())
}

fn read_revocation(c: &Connection, serial: &str) -> Result<Revocation, StoreError> {
    Ok(c.query_row(
        "SELECT serial, subject, reason, revoked_unix, not_after_unix FROM revoked WHERE serial = ?1",
        [serial],
        revocation_row,
    )?)
}

/// Revokes `serial` of agent `host` inside a transaction; returns the revocation as stored
/// (an earlier one of the same serial is kept).
fn revoke_in(
    c: &Connection,
    host: std::net::IpAddr,
    serial: &str,
    not_after_unix: i64,
    reason: &str,
) -> Result<Revocation, StoreError> {
    insert_revocation(
        c,
        &Revocation {
            serial: serial.to_string(),
            subject: format!("agent {host}"),
            reason: reason.to_string(),
            revoked_unix: now_ms() / 1000,
            not_after_unix,
        },
    )?;
    read_revocation(c, serial)
}

fn enrollment_of(c: &Connection, host: std::net::IpAddr) -> Result<Option<Enrollment>, StoreError> {
    Ok(c.query_row(
        "SELECT serial, not_after_unix, enrolled_unix, previous, previous_not_after, renewals FROM enrolled WHERE host = ?1",
        [host.to_string()],
        |r| {
            Ok(Enrollment {
                serial: r.get(0)?,
                not_after_unix: r.get(1)?,
                issued_unix: r.get(2)?,
                previous: r.get(3)?,
                previous_not_after: r.get(4)?,
                renewals: r.get(5)?,
            })
        },
    )
    .optional()?)
}

fn holder_of(c: &Connection, lock: &str) -> Result<Option<(String, String)>, StoreError> {
    Ok(c.query_row(
        "SELECT l.run_id, r.state FROM locks l JOIN runs r ON r.id = l.run_id WHERE l.cluster = ?1",
        [lock],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()?)
}

/// Removes the `pg_auth` map (Patroni REST user and password) that 0.2.0 stored in run
/// contexts. With `secure_delete` the old bytes are overwritten, not just freed, and a
/// truncating checkpoint leaves no copy in the WAL. Returns how many runs had one.
fn scrub_stored_credentials(conn: &Connection) -> Result<usize, StoreError> {
    let rows: Vec<(String, String)> = {
        let mut stmt = conn.prepare(
            "SELECT id, context FROM runs WHERE context LIKE '%\"pg\\_auth\"%' ESCAPE '\\'",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    if rows.is_empty() {
        return Ok(0);
    }
    conn.execute_batch("PRAGMA secure_delete=ON;")?;
    for (id, context) in &rows {
        let mut v: serde_json::Value = serde_json::from_str(context)?;
        if let Some(obj) = v.as_object_mut() {
            obj.remove("pg_auth");
        }
        conn.execute(
            "UPDATE runs SET context = ?1 WHERE id = ?2",
            params![v.to_string(), id],
        )?;
    }
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    Ok(rows.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stores_words_are_the_words_the_wire_enums_read() {
        use crate::model::words;
        use quorum_proto::pb;
        for w in [
            run_state::RUNNING,
            run_state::INTERRUPTED,
            run_state::SUCCEEDED,
            run_state::FAILED,
            run_state::ABORTED,
            run_state::WAITING,
        ] {
            assert_ne!(words::run_state(w), pb::RunState::Unspecified, "{w}");
        }
        for w in [
            step_state::PENDING,
            step_state::RUNNING,
            step_state::DONE,
            step_state::FAILED,
        ] {
            assert_ne!(words::step_state(w), pb::StepState::Unspecified, "{w}");
        }
    }

    #[test]
    fn a_host_lock_is_apart_from_the_cluster_lock_and_released_by_an_abort(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(&dir.path().join("runs.sqlite"))?;
        let host: std::net::IpAddr = "10.10.10.12".parse()?;
        let mut cleanup = run("r1-cleanup", "etcd");
        cleanup.state = run_state::WAITING.into();
        store.create_run_locked(&cleanup, &host_lock(host))?;
        // The cluster stays free for other SOPs; the host does not.
        store.create_run(&run("r2", "etcd"))?;
        assert_eq!(
            store.lock_holder(&host_lock(host))?,
            Some(("r1-cleanup".into(), "waiting".into()))
        );
        assert!(matches!(
            store.create_run_locked(&run("r3", "etcd"), &host_lock(host)),
            Err(StoreError::Locked { .. })
        ));
        assert_eq!(store.waiting_runs()?, vec!["r1-cleanup".to_string()]);
        store.set_run_state("r1-cleanup", run_state::ABORTED, "forgotten")?;
        assert_eq!(store.lock_holder(&host_lock(host))?, None);
        assert!(store.waiting_runs()?.is_empty());
        Ok(())
    }

    /// Probe L2: runs of 0.2.0 kept the Patroni REST password in the store (0644). Opening
    /// such a store scrubs it from every file of the store, and a new store file is 0600.
    #[test]
    fn stored_credentials_are_scrubbed_and_files_are_private(
    ) -> Result<(), Box<dyn std::error::Error>> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("runs.sqlite");
        {
            let store = Store::open(&path)?;
            let mut r = run("r1", "etcd");
            r.context = r#"{"endpoints":["https://10.0.0.1:2379"],"args":{},"notes":[],"pg_auth":{"pg-test":["postgres","S3cr3t-Patroni-PW"]}}"#.into();
            store.create_run(&r)?;
            store.create_run(&run("r2", "other"))?;
        }
        let has_secret = || -> std::io::Result<bool> {
            let mut found = false;
            for e in std::fs::read_dir(dir.path())? {
                let bytes = std::fs::read(e?.path())?;
                found |= bytes.windows(17).any(|w| w == b"S3cr3t-Patroni-PW");
            }
            Ok(found)
        };
        assert!(has_secret()?, "the test did not store the secret");
        let store = Store::open(&path)?;
        assert!(!has_secret()?, "the password is still in the store's files");
        let ctx: serde_json::Value = serde_json::from_str(&store.get_run("r1")?.context)?;
        assert_eq!(ctx["endpoints"][0], "https://10.0.0.1:2379");
        assert!(ctx.get("pg_auth").is_none());
        for e in std::fs::read_dir(dir.path())? {
            let e = e?;
            let mode = e.metadata()?.permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", e.path().display());
        }
        Ok(())
    }

    fn run(id: &str, cluster: &str) -> RunRecord {
        RunRecord {
            id: id.into(),
            sop: "config-reload".into(),
            cluster: cluster.into(),
            context: "{}".into(),
            state: run_state::RUNNING.into(),
            started_by: "tester".into(),
            inventory_digest: "00".into(),
            created_ms: now_ms(),
            finished_ms: 0,
            error: String::new(),
            steps: vec![StepRecord {
                index: 0,
                kind: StepKind::ClusterHealthGate,
                description: "gate".into(),
                host: String::new(),
                state: step_state::PENDING.into(),
                task_ids: vec![],
                attempt: 0,
                outcome: String::new(),
                output: String::new(),
                started_ms: 0,
                finished_ms: 0,
                journal: None,
            }],
        }
    }

    #[test]
    fn one_run_per_cluster_until_it_succeeds_or_is_aborted(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(&dir.path().join("runs.sqlite"))?;
        store.create_run(&run("r1", "etcd"))?;
        match store.create_run(&run("r2", "etcd")) {
            Err(StoreError::Locked { holder, .. }) => assert_eq!(holder, "r1"),
            other => panic!("{other:?}"),
        }
        store.create_run(&run("r3", "other"))?;
        // A failed run keeps the lock: resume or abort it first.
        store.set_run_state("r1", run_state::FAILED, "boom")?;
        assert!(store.create_run(&run("r4", "etcd")).is_err());
        store.set_run_state("r1", run_state::ABORTED, "by tester")?;
        // An abort is final even if the walker reports its last step afterwards.
        store.set_run_state("r1", run_state::SUCCEEDED, "")?;
        assert_eq!(store.get_run("r1")?.state, run_state::ABORTED);
        store.create_run(&run("r5", "etcd"))?;
        Ok(())
    }

    #[test]
    fn end_times_are_kept_and_every_write_is_signalled() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(&dir.path().join("runs.sqlite"))?;
        let mut changes = store.subscribe();
        let mut seen = || -> bool {
            let changed = changes.has_changed().unwrap_or(false);
            changes.mark_unchanged();
            changed
        };
        store.create_run(&run("r1", "etcd"))?;
        assert!(seen(), "create");
        assert!(!seen(), "nothing written since");
        let mut step = store.get_run("r1")?.steps[0].clone();
        step.journal = Some(RanBefore {
            started_ms: 1,
            finished_ms: 2,
        });
        store.put_step("r1", &step)?;
        assert!(seen(), "a step");
        assert_eq!(store.get_run("r1")?.steps[0].journal, step.journal);
        assert_eq!(store.get_run("r1")?.finished_ms, 0, "still running");
        let before = now_ms();
        store.set_run_state("r1", run_state::FAILED, "boom")?;
        assert!(seen(), "a state");
        assert!(store.get_run("r1")?.finished_ms >= before);
        store.set_run_state("r1", run_state::RUNNING, "")?;
        assert_eq!(store.get_run("r1")?.finished_ms, 0, "resumed: no end yet");
        Ok(())
    }

    #[test]
    fn the_deny_list_keeps_the_first_revocation_and_survives_a_reopen(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("runs.sqlite");
        let first = Revocation {
            serial: "1a2b".into(),
            subject: "agent 10.0.0.1".into(),
            reason: "lost laptop".into(),
            revoked_unix: 100,
            not_after_unix: 0,
        };
        {
            let store = Store::open(&path)?;
            assert_eq!(store.revocations()?, vec![]);
            assert_eq!(store.revoke(&first)?, first);
            // Again, with other words: the first stays.
            let again = Revocation {
                reason: "other".into(),
                revoked_unix: 200,
                ..first.clone()
            };
            assert_eq!(store.revoke(&again)?, first);
            let other = Revocation {
                serial: "ff".into(),
                revoked_unix: 300,
                ..first.clone()
            };
            store.revoke(&other)?;
        }
        let store = Store::open(&path)?;
        let serials: Vec<String> = store.revocations()?.into_iter().map(|r| r.serial).collect();
        assert_eq!(serials, ["1a2b", "ff"]);
        Ok(())
    }

    fn issued(serial: &str, not_after_unix: i64) -> Issued {
        Issued {
            serial: serial.into(),
            not_after_unix,
        }
    }

    fn revoked_serials(store: &Store) -> Result<Vec<String>, StoreError> {
        Ok(store.revocations()?.into_iter().map(|r| r.serial).collect())
    }

    #[test]
    fn an_enrollment_revokes_the_certificate_it_supersedes_in_the_same_write(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("runs.sqlite");
        let host: std::net::IpAddr = "10.0.0.1".parse()?;
        let other: std::net::IpAddr = "10.0.0.2".parse()?;
        {
            let store = Store::open(&path)?;
            let why = "superseded by a new enrollment";
            assert_eq!(
                store.record_enrollment(host, &issued("aa", 10), why)?,
                vec![]
            );
            assert_eq!(
                store.record_enrollment(other, &issued("cc", 10), why)?,
                vec![]
            );
            let superseded = store.record_enrollment(host, &issued("bb", 20), why)?;
            assert_eq!(
                superseded
                    .into_iter()
                    .map(|r| (r.serial, r.reason, r.not_after_unix))
                    .collect::<Vec<_>>(),
                vec![("aa".to_string(), why.to_string(), 10)]
            );
            assert!(revoked_serials(&store)?.contains(&"aa".to_string()));
            // The same serial recorded twice supersedes nothing.
            assert_eq!(
                store.record_enrollment(host, &issued("bb", 20), why)?,
                vec![]
            );
        }
        let store = Store::open(&path)?;
        assert_eq!(store.enrollment(host)?.map(|e| e.serial), Some("bb".into()));
        assert_eq!(store.enrolled_host("cc")?, Some("10.0.0.2".into()));
        assert_eq!(store.enrolled_host("aa")?, None);
        Ok(())
    }

    /// A renewal keeps the caller's certificate valid until the new one is used (its answer
    /// may be lost); a renewal never taken up is revoked by the next one; an enrollment with
    /// a token revokes both a host's certificates.
    #[test]
    fn a_renewal_revokes_the_old_certificate_when_the_new_one_is_first_used(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(&dir.path().join("runs.sqlite"))?;
        let host: std::net::IpAddr = "10.0.0.1".parse()?;
        store.record_enrollment(host, &issued("a1", 100), SUPERSEDED_FOR_TEST)?;
        // Renewed into b2; the answer is lost, the agent still holds a1.
        assert_eq!(
            store.record_renewal(host, &issued("a1", 100), &issued("b2", 200))?,
            vec![]
        );
        assert_eq!(
            store.take_up(host, "a1")?,
            None,
            "the old one is not the new one"
        );
        assert_eq!(revoked_serials(&store)?, Vec::<String>::new());
        // It renews again with a1: b2 was never used and goes now.
        let gone = store.record_renewal(host, &issued("a1", 100), &issued("c3", 300))?;
        assert_eq!(
            gone.iter()
                .map(|r| (r.serial.as_str(), r.reason.as_str()))
                .collect::<Vec<_>>(),
            vec![("b2", NOT_TAKEN_UP)]
        );
        let e = store.enrollment(host)?.ok_or("no enrollment")?;
        assert_eq!(
            (e.serial.as_str(), e.previous.as_str(), e.renewals),
            ("c3", "a1", 2)
        );
        // First use of c3 revokes a1, once.
        let r = store.take_up(host, "c3")?.ok_or("a1 not revoked")?;
        assert_eq!(
            (r.serial.as_str(), r.reason.as_str(), r.not_after_unix),
            ("a1", RENEWED, 100)
        );
        assert_eq!(store.take_up(host, "c3")?, None);
        // A pending renewal and a token enrollment: both of the host's certificates go.
        store.record_renewal(host, &issued("c3", 300), &issued("d4", 400))?;
        let gone = store.record_enrollment(host, &issued("e5", 500), SUPERSEDED_FOR_TEST)?;
        let mut serials: Vec<_> = gone.into_iter().map(|r| r.serial).collect();
        serials.sort();
        assert_eq!(serials, ["c3", "d4"]);
        assert_eq!(store.enrollment(host)?.map(|e| e.renewals), Some(0));
        Ok(())
    }

    #[test]
    fn revocations_of_long_expired_certificates_are_pruned_unknown_expiries_stay(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(&dir.path().join("runs.sqlite"))?;
        let now = 10 * REVOCATION_AFTER_EXPIRY_SECS;
        for (serial, not_after_unix) in [
            ("expired-long-ago", now - REVOCATION_AFTER_EXPIRY_SECS - 1),
            ("expired-just-now", now - 1),
            ("valid", now + 100),
            ("unknown", 0),
        ] {
            store.revoke(&Revocation {
                serial: serial.into(),
                subject: String::new(),
                reason: "test".into(),
                revoked_unix: 1,
                not_after_unix,
            })?;
        }
        assert_eq!(store.prune_revocations(now)?, 1);
        let mut left = revoked_serials(&store)?;
        left.sort();
        assert_eq!(left, ["expired-just-now", "unknown", "valid"]);
        Ok(())
    }

    const SUPERSEDED_FOR_TEST: &str = "superseded by a new enrollment";

    /// A store written before the deny list existed opens and gains it, runs intact.
    #[test]
    fn a_store_of_0_3_gains_the_deny_list() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("runs.sqlite");
        {
            let store = Store::open(&path)?;
            store.create_run(&run("r1", "etcd"))?;
            let c = Connection::open(&path)?;
            c.execute_batch("DROP TABLE revoked; DROP TABLE enrolled;")?;
        }
        let store = Store::open(&path)?;
        assert_eq!(store.get_run("r1")?.id, "r1");
        assert_eq!(store.revocations()?, vec![]);
        assert_eq!(store.enrollment("10.0.0.1".parse()?)?, None);
        Ok(())
    }

    #[test]
    fn a_store_of_0_2_gains_end_times() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("runs.sqlite");
        {
            let c = Connection::open(&path)?;
            c.execute_batch(
                "CREATE TABLE runs (
                    id TEXT PRIMARY KEY, sop TEXT NOT NULL, cluster TEXT NOT NULL, context TEXT NOT NULL,
                    state TEXT NOT NULL, started_by TEXT NOT NULL, inventory_digest TEXT NOT NULL,
                    created_ms INTEGER NOT NULL, error TEXT NOT NULL DEFAULT '');
                 INSERT INTO runs VALUES ('old', 'env-refresh', 'etcd', '{}', 'succeeded', 'x', '00', 5, '');",
            )?;
        }
        let store = Store::open(&path)?;
        let old = store.get_run("old")?;
        assert_eq!((old.state.as_str(), old.finished_ms), ("succeeded", 0));
        // Opening it again finds the column there.
        drop(store);
        Store::open(&path)?;
        Ok(())
    }

    /// A run as 0.2 stored it (untyped `args` in its context, a refused step as words) loads,
    /// its context still reads, and it shows with the typed states and outcome.
    #[test]
    fn a_run_stored_by_0_2_loads_and_shows_typed() -> Result<(), Box<dyn std::error::Error>> {
        use quorum_proto::pb;
        let dir = tempfile::tempdir()?;
        let store = Store::open(&dir.path().join("runs.sqlite"))?;
        let mut old = run("old", "etcd");
        old.sop = "member-remove".into();
        old.context = r#"{"endpoints":["https://10.10.10.11:2379"],"args":{"host":"10.10.10.13","confirmed":"true"},"notes":[]}"#.into();
        old.state = run_state::FAILED.into();
        old.steps[0].state = step_state::FAILED.into();
        old.steps[0].outcome = "refused".into();
        store.create_run(&old)?;
        let loaded = store.get_run("old")?;
        let ctx: crate::sop::runner::RunContext = serde_json::from_str(&loaded.context)?;
        assert_eq!(ctx.request, None);
        assert_eq!(
            ctx.args.get("host").map(String::as_str),
            Some("10.10.10.13")
        );
        assert_eq!(ctx.endpoints, vec!["https://10.10.10.11:2379".to_string()]);
        let view = crate::sop::planning::run_view(&loaded);
        assert_eq!(view.state(), pb::RunState::Failed);
        assert_eq!(view.steps[0].state(), pb::StepState::Failed);
        assert_eq!(view.steps[0].outcome(), pb::Outcome::Refused);
        Ok(())
    }

    #[test]
    fn steps_and_interruptions_survive_a_reopen() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("runs.sqlite");
        {
            let store = Store::open(&path)?;
            store.create_run(&run("r1", "etcd"))?;
            let mut step = store.get_run("r1")?.steps[0].clone();
            step.state = step_state::RUNNING.into();
            step.task_ids = vec!["r1-s0-a1-127.0.0.1".into()];
            store.put_step("r1", &step)?;
        }
        let store = Store::open(&path)?;
        assert_eq!(store.mark_interrupted()?, vec!["r1".to_string()]);
        let r = store.get_run("r1")?;
        assert_eq!(r.state, run_state::INTERRUPTED);
        assert_eq!(r.steps[0].state, step_state::RUNNING);
        assert_eq!(r.steps[0].task_ids, vec!["r1-s0-a1-127.0.0.1".to_string()]);
        assert_eq!(store.list_runs(10)?, vec!["r1".to_string()]);
        assert!(matches!(store.get_run("nope"), Err(StoreError::NoRun(_))));
        Ok(())
    }
}
