//! The run store: every run and each of its steps, in an embedded SQLite file in the state
//! dir, written before and after every step so a coordinator killed at any point resumes
//! without repeating a finished step or skipping one. Also the per-cluster lock, and a
//! change signal that wakes whoever follows a run (`WatchRun`) after every write.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;

use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::sop::db::{PgEngine, PgTarget, Row, Sql, P};
use crate::sop::plan::StepKind;

pub use crate::sop::db::StoreError;

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
    engine: Engine,
    /// Bumped after every write of a run or a step.
    changes: watch::Sender<u64>,
    /// The lease writes are fenced with (the shared store refuses writes without one).
    fence: Mutex<Option<Fence>>,
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
                host TEXT PRIMARY KEY, serial TEXT NOT NULL, enrolled_unix INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS used_tokens (nonce TEXT PRIMARY KEY, exp_unix INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS epochs (
                epoch INTEGER PRIMARY KEY, holder TEXT NOT NULL, acquired_ms INTEGER NOT NULL);",
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
            engine: Engine::Sqlite(Mutex::new(conn)),
            changes: watch::Sender::new(0),
            fence: Mutex::new(None),
        })
    }

    /// Opens the shared store in PostgreSQL: connects, creates schema `quorum` and applies
    /// the migrations it lacks. Writes are refused until [`Store::fence_with`] gives it the
    /// lease this coordinator holds.
    pub fn open_postgres(target: &PgTarget) -> Result<Self, StoreError> {
        let mut client = target.connect()?;
        crate::sop::db::pg_migrate(&mut client)?;
        Ok(Self {
            engine: Engine::Postgres(PgEngine {
                client: Mutex::new(client),
                target: target.clone(),
            }),
            changes: watch::Sender::new(0),
            fence: Mutex::new(None),
        })
    }

    /// Whether this store is the shared one in PostgreSQL.
    pub fn is_shared(&self) -> bool {
        matches!(self.engine, Engine::Postgres(_))
    }

    /// From now on every write of the shared store commits only while `fence` is the lease
    /// in the database: a coordinator whose lease was taken over changes nothing.
    pub fn fence_with(&self, fence: Fence) {
        *lock(&self.fence) = Some(fence);
    }

    /// The holder id writes are fenced with ("" before any).
    pub fn holder(&self) -> String {
        lock(&self.fence)
            .as_ref()
            .map(|f| f.holder.clone())
            .unwrap_or_default()
    }

    /// The epoch writes are fenced with (0 before any).
    pub fn epoch(&self) -> i64 {
        lock(&self.fence).as_ref().map(|f| f.epoch).unwrap_or(0)
    }

    /// A receiver that sees a change after every write of any run or step: a follower
    /// subscribes, then reads its run, then reads it again after each change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Runs `f` in one transaction, committed when it returns Ok, timed as `op` in the
    /// metrics. In the shared store the transaction first checks, holding the lease row
    /// against a takeover until it commits, that this coordinator's lease is still the
    /// current one.
    fn write<R>(
        &self,
        op: &str,
        f: impl FnOnce(&dyn Sql) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let start = std::time::Instant::now();
        let r = match &self.engine {
            Engine::Sqlite(conn) => {
                let mut c = lock(conn);
                let tx = c.transaction()?;
                let r = f(&*tx)?;
                tx.commit()?;
                Ok(r)
            }
            Engine::Postgres(pg) => {
                let fence = lock(&self.fence).clone();
                let Some(fence) = fence else {
                    return Err(StoreError::Fenced {
                        epoch: 0,
                        why: "this coordinator holds no lease".into(),
                    });
                };
                let mut c = pg_client(pg)?;
                crate::sop::db::pg_transaction(&mut c, |tx| {
                    let held = tx.first(
                        "SELECT epoch FROM lease WHERE id = 1 AND epoch = ?1 AND holder = ?2 AND expires_at > now() FOR SHARE",
                        &[P::I(fence.epoch), P::T(&fence.holder)],
                    )?;
                    if held.is_none() {
                        return Err(StoreError::Fenced {
                            epoch: fence.epoch,
                            why: "its lease lapsed or another coordinator took over".into(),
                        });
                    }
                    f(tx)
                })
            }
        };
        crate::model::metrics::metrics().store_write(op, start.elapsed());
        r
    }

    /// Runs `f` on the store outside a transaction (reads).
    fn read<R>(&self, f: impl FnOnce(&dyn Sql) -> Result<R, StoreError>) -> Result<R, StoreError> {
        match &self.engine {
            Engine::Sqlite(conn) => f(&*lock(conn)),
            Engine::Postgres(pg) => f(&*pg_client(pg)?),
        }
    }

    /// Marks runs that were running when the coordinator stopped (or when the leader before
    /// this one lost its lease) as interrupted.
    pub fn mark_interrupted(&self) -> Result<Vec<String>, StoreError> {
        self.write("mark_interrupted", |c| {
            let ids = c
                .query(
                    "SELECT id FROM runs WHERE state = ?1 ORDER BY created_ms, id",
                    &[P::T(run_state::RUNNING)],
                )?
                .iter()
                .map(|r| r.text(0))
                .collect::<Result<Vec<_>, _>>()?;
            c.execute(
                "UPDATE runs SET state = ?1 WHERE state = ?2",
                &[P::T(run_state::INTERRUPTED), P::T(run_state::RUNNING)],
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
            if let Some((holder, state)) = holder_of(c, lock)? {
                return Err(StoreError::Locked {
                    cluster: lock.to_string(),
                    holder,
                    state,
                });
            }
            c.execute(
                "INSERT INTO runs (id, sop, cluster, context, state, started_by, inventory_digest, created_ms, error)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                &[
                    P::T(&run.id),
                    P::T(&run.sop),
                    P::T(&run.cluster),
                    P::T(&run.context),
                    P::T(&run.state),
                    P::T(&run.started_by),
                    P::T(&run.inventory_digest),
                    P::I(run.created_ms),
                    P::T(&run.error),
                ],
            )?;
            for s in &run.steps {
                let record = serde_json::to_string(s)?;
                c.execute(
                    "INSERT INTO steps (run_id, idx, record) VALUES (?1, ?2, ?3)",
                    &[P::T(&run.id), P::I(s.index as i64), P::T(&record)],
                )?;
            }
            c.execute(
                "INSERT INTO locks (cluster, run_id) VALUES (?1, ?2)
                 ON CONFLICT(cluster) DO UPDATE SET run_id = excluded.run_id",
                &[P::T(lock), P::T(&run.id)],
            )?;
            Ok(())
        })
        .inspect(|_| self.changed())
    }

    /// Writes one step's record (durably, before the runner goes on).
    pub fn put_step(&self, run_id: &str, step: &StepRecord) -> Result<(), StoreError> {
        let record = serde_json::to_string(step)?;
        self.write("put_step", |c| {
            c.execute(
                "UPDATE steps SET record = ?3 WHERE run_id = ?1 AND idx = ?2",
                &[P::T(run_id), P::I(step.index as i64), P::T(&record)],
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
            // An abort is final: a step that was still running when the operator aborted
            // must not turn the run back into failed or succeeded when it ends.
            c.execute(
                "UPDATE runs SET state = ?2, error = ?3, finished_ms = ?5 WHERE id = ?1 AND (state != ?4 OR ?2 = ?4)",
                &[
                    P::T(run_id),
                    P::T(state),
                    P::T(error),
                    P::T(run_state::ABORTED),
                    P::I(finished_ms),
                ],
            )?;
            if state == run_state::SUCCEEDED || state == run_state::ABORTED {
                c.execute("DELETE FROM locks WHERE run_id = ?1", &[P::T(run_id)])?;
            }
            Ok(())
        })
        .inspect(|_| self.changed())
    }

    /// A run with its steps.
    pub fn get_run(&self, run_id: &str) -> Result<RunRecord, StoreError> {
        self.read(|c| {
            let r = c
                .first(
                    "SELECT id, sop, cluster, context, state, started_by, inventory_digest, created_ms, error, finished_ms FROM runs WHERE id = ?1",
                    &[P::T(run_id)],
                )?
                .ok_or_else(|| StoreError::NoRun(run_id.to_string()))?;
            let mut run = RunRecord {
                id: r.text(0)?,
                sop: r.text(1)?,
                cluster: r.text(2)?,
                context: r.text(3)?,
                state: r.text(4)?,
                started_by: r.text(5)?,
                inventory_digest: r.text(6)?,
                created_ms: r.int(7)?,
                error: r.text(8)?,
                finished_ms: r.int(9)?,
                steps: Vec::new(),
            };
            for rec in c.query(
                "SELECT record FROM steps WHERE run_id = ?1 ORDER BY idx",
                &[P::T(run_id)],
            )? {
                run.steps.push(serde_json::from_str(&rec.text(0)?)?);
            }
            Ok(run)
        })
    }

    /// The run holding `lock` and its state, if one does.
    pub fn lock_holder(&self, lock: &str) -> Result<Option<(String, String)>, StoreError> {
        self.read(|c| holder_of(c, lock))
    }

    /// Ids of the runs waiting for their host's agent, oldest first.
    pub fn waiting_runs(&self) -> Result<Vec<String>, StoreError> {
        self.read(|c| {
            c.query(
                "SELECT id FROM runs WHERE state = ?1 ORDER BY created_ms, id",
                &[P::T(run_state::WAITING)],
            )?
            .iter()
            .map(|r| r.text(0))
            .collect()
        })
    }

    /// How many runs are in each state.
    pub fn run_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.read(|c| {
            c.query("SELECT state, COUNT(*) FROM runs GROUP BY state", &[])?
                .iter()
                .map(|r| Ok((r.text(0)?, r.int(1)?)))
                .collect()
        })
    }

    /// Runs stopped part-way (failed, interrupted, waiting), which hold their lock until
    /// resumed or aborted; `since_ms` is when they stopped (their creation when not recorded).
    pub fn halted_runs(&self) -> Result<Vec<HaltedRun>, StoreError> {
        self.read(|c| {
            c.query(
                "SELECT id, sop, cluster, state, CASE WHEN finished_ms > 0 THEN finished_ms ELSE created_ms END \
                 FROM runs WHERE state IN (?1, ?2, ?3) ORDER BY created_ms",
                &[
                    P::T(run_state::FAILED),
                    P::T(run_state::INTERRUPTED),
                    P::T(run_state::WAITING),
                ],
            )?
            .iter()
            .map(|r| {
                Ok(HaltedRun {
                    id: r.text(0)?,
                    sop: r.text(1)?,
                    cluster: r.text(2)?,
                    state: r.text(3)?,
                    since_ms: r.int(4)?,
                })
            })
            .collect()
        })
    }

    /// Run ids, newest first.
    pub fn list_runs(&self, limit: usize) -> Result<Vec<String>, StoreError> {
        self.read(|c| {
            c.query(
                "SELECT id FROM runs ORDER BY created_ms DESC, id DESC LIMIT ?1",
                &[P::I(limit as i64)],
            )?
            .iter()
            .map(|r| r.text(0))
            .collect()
        })
    }

    /// Every run with its steps, oldest first: what `quorum store export` copies.
    pub fn all_runs(&self) -> Result<Vec<RunRecord>, StoreError> {
        let mut ids = self.list_runs(usize::MAX >> 1)?;
        ids.reverse();
        ids.iter().map(|id| self.get_run(id)).collect()
    }

    /// Copies a run (with its steps, and its lock when it holds one of `locks`) from another
    /// store, as it is. Refused when this store has a run of that id.
    pub fn import_run(&self, run: &RunRecord, lock: Option<&str>) -> Result<bool, StoreError> {
        self.write("import_run", |c| {
            if c.first("SELECT 1 FROM runs WHERE id = ?1", &[P::T(&run.id)])?
                .is_some()
            {
                return Ok(false);
            }
            if let Some(l) = lock {
                if let Some((holder, state)) = holder_of(c, l)? {
                    return Err(StoreError::Locked {
                        cluster: l.to_string(),
                        holder,
                        state,
                    });
                }
            }
            c.execute(
                "INSERT INTO runs (id, sop, cluster, context, state, started_by, inventory_digest, created_ms, error, finished_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                &[
                    P::T(&run.id),
                    P::T(&run.sop),
                    P::T(&run.cluster),
                    P::T(&run.context),
                    P::T(&run.state),
                    P::T(&run.started_by),
                    P::T(&run.inventory_digest),
                    P::I(run.created_ms),
                    P::T(&run.error),
                    P::I(run.finished_ms),
                ],
            )?;
            for s in &run.steps {
                let record = serde_json::to_string(s)?;
                c.execute(
                    "INSERT INTO steps (run_id, idx, record) VALUES (?1, ?2, ?3)",
                    &[P::T(&run.id), P::I(s.index as i64), P::T(&record)],
                )?;
            }
            if let Some(l) = lock {
                c.execute(
                    "INSERT INTO locks (cluster, run_id) VALUES (?1, ?2)",
                    &[P::T(l), P::T(&run.id)],
                )?;
            }
            Ok(true)
        })
        .inspect(|_| self.changed())
    }

    /// The lock `run_id` holds, if any.
    pub fn lock_of(&self, run_id: &str) -> Result<Option<String>, StoreError> {
        self.read(|c| {
            c.first(
                "SELECT cluster FROM locks WHERE run_id = ?1",
                &[P::T(run_id)],
            )?
            .map(|r| r.text(0))
            .transpose()
        })
    }

    /// Whether the enrollment token `nonce` was used.
    pub fn token_used(&self, nonce: &str) -> Result<bool, StoreError> {
        self.read(|c| {
            Ok(
                c.first("SELECT 1 FROM used_tokens WHERE nonce = ?1", &[P::T(nonce)])?
                    .is_some(),
            )
        })
    }

    /// Records the enrollment token `nonce` (valid until `exp_unix`) as used; false when it
    /// was already.
    pub fn use_token(&self, nonce: &str, exp_unix: i64) -> Result<bool, StoreError> {
        self.write("use_token", |c| {
            Ok(c.execute(
                "INSERT INTO used_tokens (nonce, exp_unix) VALUES (?1, ?2) ON CONFLICT(nonce) DO NOTHING",
                &[P::T(nonce), P::I(exp_unix)],
            )? == 1)
        })
    }

    /// The highest epoch this SQLite store has recorded (0 when none).
    pub fn last_local_epoch(&self) -> Result<i64, StoreError> {
        match &self.engine {
            Engine::Sqlite(_) => self.read(|c| {
                c.first("SELECT COALESCE(MAX(epoch), 0) FROM epochs", &[])?
                    .map(|r| r.int(0))
                    .transpose()
                    .map(|e| e.unwrap_or(0))
            }),
            Engine::Postgres(_) => Ok(0),
        }
    }

    /// Takes the next epoch of a coordinator on SQLite: above every epoch it recorded and
    /// above `at_least`, recorded before any run is walked with it.
    pub fn take_local_epoch(&self, holder: &str, at_least: i64) -> Result<i64, StoreError> {
        let Engine::Sqlite(conn) = &self.engine else {
            return Err(StoreError::Config(
                "a shared store's epoch comes from its lease".into(),
            ));
        };
        let mut c = lock(conn);
        let tx = c.transaction()?;
        let last = Sql::first(&*tx, "SELECT COALESCE(MAX(epoch), 0) FROM epochs", &[])?
            .map(|r| r.int(0))
            .transpose()?
            .unwrap_or(0);
        let epoch = last.max(at_least) + 1;
        Sql::execute(
            &*tx,
            "INSERT INTO epochs (epoch, holder, acquired_ms) VALUES (?1, ?2, ?3)",
            &[P::I(epoch), P::T(holder), P::I(now_ms())],
        )?;
        tx.commit()?;
        drop(c);
        self.fence_with(Fence {
            epoch,
            holder: holder.to_string(),
        });
        Ok(epoch)
    }
}

/// The lease a coordinator's writes are fenced with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The epoch of the lease.
    pub epoch: i64,
    /// Who holds it (this coordinator's holder id).
    pub holder: String,
}

enum Engine {
    Sqlite(Mutex<Connection>),
    Postgres(PgEngine),
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// The shared store's client, reconnected when its connection has ended.
fn pg_client(
    pg: &PgEngine,
) -> Result<std::sync::MutexGuard<'_, tokio_postgres::Client>, StoreError> {
    let mut c = lock(&pg.client);
    if c.is_closed() {
        *c = pg.target.connect()?;
    }
    Ok(c)
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
                &[P::I(now_unix - REVOCATION_AFTER_EXPIRY_SECS)],
            )? as usize)
        })
    }

    /// The whole deny list, oldest first.
    pub fn revocations(&self) -> Result<Vec<Revocation>, StoreError> {
        self.read(|c| {
            c.query(
                "SELECT serial, subject, reason, revoked_unix, not_after_unix FROM revoked ORDER BY revoked_unix, serial",
                &[],
            )?
            .iter()
            .map(revocation_row)
            .collect()
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
            let before = enrollment_of(c, host)?;
            let mut revoked = Vec::new();
            if let Some(b) = before {
                for (serial, not_after) in [(b.serial, b.not_after_unix), (b.previous, b.previous_not_after)] {
                    if !serial.is_empty() && serial != issued.serial {
                        revoked.push(revoke_in(c, host, &serial, not_after, reason)?);
                    }
                }
            }
            let h = host.to_string();
            c.execute(
                "INSERT INTO enrolled (host, serial, enrolled_unix, not_after_unix, previous, previous_not_after, renewals)
                 VALUES (?1, ?2, ?3, ?4, '', 0, 0)
                 ON CONFLICT(host) DO UPDATE SET serial = excluded.serial, enrolled_unix = excluded.enrolled_unix,
                   not_after_unix = excluded.not_after_unix, previous = '', previous_not_after = 0, renewals = 0",
                &[P::T(&h), P::T(&issued.serial), P::I(now_ms() / 1000), P::I(issued.not_after_unix)],
            )?;
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
            let before = enrollment_of(c, host)?.unwrap_or_default();
            let mut revoked = Vec::new();
            for (serial, not_after) in [
                (before.serial, before.not_after_unix),
                (before.previous, before.previous_not_after),
            ] {
                if !serial.is_empty() && serial != caller.serial && serial != issued.serial {
                    revoked.push(revoke_in(c, host, &serial, not_after, NOT_TAKEN_UP)?);
                }
            }
            let h = host.to_string();
            c.execute(
                "INSERT INTO enrolled (host, serial, enrolled_unix, not_after_unix, previous, previous_not_after, renewals)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(host) DO UPDATE SET serial = excluded.serial, enrolled_unix = excluded.enrolled_unix,
                   not_after_unix = excluded.not_after_unix, previous = excluded.previous,
                   previous_not_after = excluded.previous_not_after, renewals = excluded.renewals",
                &[
                    P::T(&h),
                    P::T(&issued.serial),
                    P::I(now_ms() / 1000),
                    P::I(issued.not_after_unix),
                    P::T(&caller.serial),
                    P::I(caller.not_after_unix),
                    P::I(before.renewals + 1),
                ],
            )?;
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
        let pending = self.read(|c| enrollment_of(c, host))?;
        let Some(e) = pending.filter(|e| e.serial == serial && !e.previous.is_empty()) else {
            return Ok(None);
        };
        self.write("take_up", |c| {
            let r = revoke_in(c, host, &e.previous, e.previous_not_after, RENEWED)?;
            c.execute(
                "UPDATE enrolled SET previous = '', previous_not_after = 0 WHERE host = ?1 AND serial = ?2",
                &[P::T(&host.to_string()), P::T(serial)],
            )?;
            Ok(Some(r))
        })
    }

    /// When the certificate `serial` expires, if it was issued here at an enrollment or a
    /// renewal and is still recorded (0 stays unknown: `None`).
    pub fn not_after_of(&self, serial: &str) -> Result<Option<i64>, StoreError> {
        self.read(|c| {
            c.first(
                "SELECT not_after_unix FROM enrolled WHERE serial = ?1 AND not_after_unix > 0
                 UNION ALL
                 SELECT previous_not_after FROM enrolled WHERE previous = ?1 AND previous_not_after > 0
                 LIMIT 1",
                &[P::T(serial)],
            )?
            .map(|r| r.int(0))
            .transpose()
        })
    }

    /// What the store knows of the certificate of `host`, if it enrolled here.
    pub fn enrollment(&self, host: std::net::IpAddr) -> Result<Option<Enrollment>, StoreError> {
        self.read(|c| enrollment_of(c, host))
    }

    /// The host a serial was issued to at enrollment, if it was.
    pub fn enrolled_host(&self, serial: &str) -> Result<Option<String>, StoreError> {
        self.read(|c| {
            c.first(
                "SELECT host FROM enrolled WHERE serial = ?1",
                &[P::T(serial)],
            )?
            .map(|r| r.text(0))
            .transpose()
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

fn revocation_row(r: &Row) -> Result<Revocation, StoreError> {
    Ok(Revocation {
        serial: r.text(0)?,
        subject: r.text(1)?,
        reason: r.text(2)?,
        revoked_unix: r.int(3)?,
        not_after_unix: r.int(4)?,
    })
}

fn insert_revocation(c: &dyn Sql, r: &Revocation) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO revoked (serial, subject, reason, revoked_unix, not_after_unix) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(serial) DO NOTHING",
        &[
            P::T(&r.serial),
            P::T(&r.subject),
            P::T(&r.reason),
            P::I(r.revoked_unix),
            P::I(r.not_after_unix),
        ],
    )?;
    Ok(())
}

fn read_revocation(c: &dyn Sql, serial: &str) -> Result<Revocation, StoreError> {
    c.first(
        "SELECT serial, subject, reason, revoked_unix, not_after_unix FROM revoked WHERE serial = ?1",
        &[P::T(serial)],
    )?
    .ok_or_else(|| StoreError::Column(format!("revocation of {serial} not found after writing it")))
    .and_then(|r| revocation_row(&r))
}

/// Revokes `serial` of agent `host` inside a transaction; returns the revocation as stored
/// (an earlier one of the same serial is kept).
fn revoke_in(
    c: &dyn Sql,
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

fn enrollment_of(c: &dyn Sql, host: std::net::IpAddr) -> Result<Option<Enrollment>, StoreError> {
    c.first(
        "SELECT serial, not_after_unix, enrolled_unix, previous, previous_not_after, renewals FROM enrolled WHERE host = ?1",
        &[P::T(&host.to_string())],
    )?
    .map(|r| {
        Ok(Enrollment {
            serial: r.text(0)?,
            not_after_unix: r.int(1)?,
            issued_unix: r.int(2)?,
            previous: r.text(3)?,
            previous_not_after: r.int(4)?,
            renewals: r.int(5)?,
        })
    })
    .transpose()
}

fn holder_of(c: &dyn Sql, lock: &str) -> Result<Option<(String, String)>, StoreError> {
    c.first(
        "SELECT l.run_id, r.state FROM locks l JOIN runs r ON r.id = l.run_id WHERE l.cluster = ?1",
        &[P::T(lock)],
    )?
    .map(|r| Ok((r.text(0)?, r.text(1)?)))
    .transpose()
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
            rusqlite::params![v.to_string(), id],
        )?;
    }
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    Ok(rows.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sop::store_suite::run;

    /// The engine-independent checks, on SQLite (tests/tests/store.rs runs them on PostgreSQL).
    #[test]
    fn the_store_suite_passes_on_sqlite() -> Result<(), Box<dyn std::error::Error>> {
        struct Sqlite(tempfile::TempDir, std::cell::Cell<usize>);
        impl crate::sop::store_suite::Maker for Sqlite {
            fn fresh(&self) -> Result<Store, Box<dyn std::error::Error>> {
                self.1.set(self.1.get() + 1);
                self.reopen()
            }
            fn reopen(&self) -> Result<Store, Box<dyn std::error::Error>> {
                let path = self.0.path().join(format!("runs-{}.sqlite", self.1.get()));
                Ok(Store::open(&path)?)
            }
        }
        let n = crate::sop::store_suite::all(&Sqlite(tempfile::tempdir()?, 0.into()))?;
        assert!(n >= 10, "{n} checks");
        Ok(())
    }

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
}
