//! The SQL the run store speaks, over either engine: SQLite (the embedded default) or
//! PostgreSQL (Pigsty's pg-meta, for coordinators that run active/standby). The store's logic
//! is written once against [`Sql`]; each engine runs the same statements, written with
//! SQLite's `?N` placeholders and turned into PostgreSQL's `$N` here.
//!
//! PostgreSQL is reached with `tokio-postgres`, whose connection is driven by a thread of its
//! own; the store waits for each answer on the calling thread, as it waits for SQLite's
//! fsync, so the store stays one blocking API whatever the engine.

use std::sync::Mutex;
use std::time::Duration;

use rusqlite::Connection;

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
    /// PostgreSQL failed.
    #[error("run store (PostgreSQL): {0}; check that the database is up and reachable, and the role's rights on schema quorum")]
    Postgres(#[from] tokio_postgres::Error),
    /// A column was not what the store wrote.
    #[error("run store: a row is unreadable: {0}")]
    Column(String),
    /// The store's settings are wrong.
    #[error("run store: {0}")]
    Config(String),
    /// This coordinator's lease is not the current one: it must change nothing.
    #[error("this coordinator's lease (epoch {epoch}) is not the current one: {why}; it changes nothing and steps down")]
    Fenced {
        /// The epoch it held.
        epoch: i64,
        /// Why.
        why: String,
    },
}

/// A statement parameter: the store binds only integers and text.
#[derive(Debug, Clone, Copy)]
pub enum P<'a> {
    /// An integer (SQLite INTEGER, PostgreSQL BIGINT).
    I(i64),
    /// Text.
    T(&'a str),
}

impl From<i64> for P<'_> {
    fn from(v: i64) -> Self {
        P::I(v)
    }
}

impl<'a> From<&'a str> for P<'a> {
    fn from(v: &'a str) -> Self {
        P::T(v)
    }
}

impl<'a> From<&'a String> for P<'a> {
    fn from(v: &'a String) -> Self {
        P::T(v)
    }
}

/// One value of a result row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum V {
    /// An integer.
    I(i64),
    /// Text.
    T(String),
    /// NULL.
    Null,
}

/// One result row.
#[derive(Debug, Clone)]
pub struct Row(pub Vec<V>);

impl Row {
    /// Column `i` as an integer.
    pub fn int(&self, i: usize) -> Result<i64, StoreError> {
        match self.0.get(i) {
            Some(V::I(v)) => Ok(*v),
            other => Err(StoreError::Column(format!(
                "column {i} is {other:?}, not an integer"
            ))),
        }
    }

    /// Column `i` as text.
    pub fn text(&self, i: usize) -> Result<String, StoreError> {
        match self.0.get(i) {
            Some(V::T(v)) => Ok(v.clone()),
            other => Err(StoreError::Column(format!(
                "column {i} is {other:?}, not text"
            ))),
        }
    }
}

/// What the store needs of an engine, inside or outside a transaction.
pub trait Sql {
    /// Runs a statement; returns how many rows it changed.
    fn execute(&self, sql: &str, params: &[P<'_>]) -> Result<u64, StoreError>;
    /// Runs a query; returns its rows.
    fn query(&self, sql: &str, params: &[P<'_>]) -> Result<Vec<Row>, StoreError>;
    /// The first row of a query, if any.
    fn first(&self, sql: &str, params: &[P<'_>]) -> Result<Option<Row>, StoreError> {
        Ok(self.query(sql, params)?.into_iter().next())
    }
}

fn sqlite_params<'a>(params: &'a [P<'a>]) -> Vec<&'a dyn rusqlite::ToSql> {
    params
        .iter()
        .map(|p| match p {
            P::I(v) => v as &dyn rusqlite::ToSql,
            P::T(v) => v as &dyn rusqlite::ToSql,
        })
        .collect()
}

impl Sql for Connection {
    fn execute(&self, sql: &str, params: &[P<'_>]) -> Result<u64, StoreError> {
        Ok(Connection::execute(self, sql, sqlite_params(params).as_slice())? as u64)
    }

    fn query(&self, sql: &str, params: &[P<'_>]) -> Result<Vec<Row>, StoreError> {
        let mut stmt = self.prepare(sql)?;
        let n = stmt.column_count();
        let rows = stmt.query_map(sqlite_params(params).as_slice(), |r| {
            let mut row = Vec::with_capacity(n);
            for i in 0..n {
                row.push(match r.get_ref(i)? {
                    rusqlite::types::ValueRef::Integer(v) => V::I(v),
                    rusqlite::types::ValueRef::Text(t) => {
                        V::T(String::from_utf8_lossy(t).into_owned())
                    }
                    rusqlite::types::ValueRef::Null => V::Null,
                    rusqlite::types::ValueRef::Real(f) => V::I(f as i64),
                    rusqlite::types::ValueRef::Blob(b) => {
                        V::T(String::from_utf8_lossy(b).into_owned())
                    }
                });
            }
            Ok(Row(row))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// `?N` placeholders as PostgreSQL's `$N` (the store's SQL has no `?` in its literals).
pub fn dollar_placeholders(sql: &str) -> String {
    sql.replace('?', "$")
}

fn pg_params<'a>(params: &'a [P<'a>]) -> Vec<&'a (dyn tokio_postgres::types::ToSql + Sync)> {
    params
        .iter()
        .map(|p| match p {
            P::I(v) => v as &(dyn tokio_postgres::types::ToSql + Sync),
            P::T(v) => v as &(dyn tokio_postgres::types::ToSql + Sync),
        })
        .collect()
}

fn pg_row(r: &tokio_postgres::Row) -> Result<Row, StoreError> {
    use tokio_postgres::types::Type;
    let mut row = Vec::with_capacity(r.len());
    for (i, c) in r.columns().iter().enumerate() {
        let v = match *c.type_() {
            Type::INT8 => r.try_get::<_, Option<i64>>(i)?.map(V::I),
            Type::INT4 => r.try_get::<_, Option<i32>>(i)?.map(|v| V::I(v.into())),
            Type::INT2 => r.try_get::<_, Option<i16>>(i)?.map(|v| V::I(v.into())),
            Type::BOOL => r.try_get::<_, Option<bool>>(i)?.map(|v| V::I(v.into())),
            _ => r.try_get::<_, Option<String>>(i)?.map(V::T),
        };
        row.push(v.unwrap_or(V::Null));
    }
    Ok(Row(row))
}

/// Waits for a tokio-postgres future on the calling thread; the connection is driven by its
/// own thread, so this needs no runtime here.
fn wait<F: std::future::Future>(f: F) -> F::Output {
    futures_executor::block_on(f)
}

/// A statement on a client or in a transaction (tokio-postgres' `GenericClient`).
fn pg_execute<C: tokio_postgres::GenericClient>(
    c: &C,
    sql: &str,
    params: &[P<'_>],
) -> Result<u64, StoreError> {
    let sql = dollar_placeholders(sql);
    Ok(wait(c.execute(sql.as_str(), &pg_params(params)))?)
}

/// A query on a client or in a transaction.
fn pg_query<C: tokio_postgres::GenericClient>(
    c: &C,
    sql: &str,
    params: &[P<'_>],
) -> Result<Vec<Row>, StoreError> {
    let sql = dollar_placeholders(sql);
    let rows = wait(c.query(sql.as_str(), &pg_params(params)))?;
    rows.iter().map(pg_row).collect()
}

impl Sql for tokio_postgres::Client {
    fn execute(&self, sql: &str, params: &[P<'_>]) -> Result<u64, StoreError> {
        pg_execute(self, sql, params)
    }

    fn query(&self, sql: &str, params: &[P<'_>]) -> Result<Vec<Row>, StoreError> {
        pg_query(self, sql, params)
    }
}

impl Sql for tokio_postgres::Transaction<'_> {
    fn execute(&self, sql: &str, params: &[P<'_>]) -> Result<u64, StoreError> {
        pg_execute(self, sql, params)
    }

    fn query(&self, sql: &str, params: &[P<'_>]) -> Result<Vec<Row>, StoreError> {
        pg_query(self, sql, params)
    }
}

/// How to reach PostgreSQL: a libpq-style connection string (`host=10.10.10.10 port=5436
/// dbname=meta user=dbuser_quorum sslmode=verify-full`, or a `postgresql://` URL), and the CA
/// its server certificate must chain to.
#[derive(Debug, Clone)]
pub struct PgTarget {
    /// The connection string; its password is never logged.
    pub conninfo: String,
    /// The CA (Pigsty's) for `sslmode=require` and above.
    pub ca_cert: Option<std::path::PathBuf>,
    /// Password, read from a file when configured so (kept out of the config).
    pub password: Option<String>,
}

/// How long PostgreSQL lets a store session sit idle inside a transaction (the store's
/// transactions run their statements back to back, in milliseconds).
pub const IDLE_IN_TRANSACTION_MS: u64 = 5_000;

/// pgbouncer's port in Pigsty: its transaction pooling breaks the session state the lease
/// and the transactions rely on.
pub const PGBOUNCER_PORT: u16 = 6432;

/// Pigsty's `default` service (HAProxy to the primary, no pooling).
pub const PIGSTY_DEFAULT_SERVICE_PORT: u16 = 5436;

impl PgTarget {
    /// The parsed config, refused when it points at pgbouncer or lacks what is needed.
    pub fn config(&self) -> Result<tokio_postgres::Config, StoreError> {
        // The connector always checks the chain to the CA and the host name, which is what
        // libpq calls verify-full; the driver itself knows only `require`.
        let conninfo = self
            .conninfo
            .replace("sslmode=verify-full", "sslmode=require")
            .replace("sslmode=verify-ca", "sslmode=require");
        let mut cfg: tokio_postgres::Config = conninfo.parse().map_err(|e| {
            StoreError::Config(format!(
                "store.postgres.conninfo cannot be read: {e}; write it as `host=H port=5436 dbname=meta user=U` or a postgresql:// URL"
            ))
        })?;
        if cfg.get_ports().contains(&PGBOUNCER_PORT) {
            return Err(StoreError::Config(format!(
                "store.postgres.conninfo points at port {PGBOUNCER_PORT}, pgbouncer's: its transaction pooling breaks the lease's session; use Pigsty's `default` service (port {PIGSTY_DEFAULT_SERVICE_PORT}) or the primary's port 5432"
            )));
        }
        match cfg.get_ssl_mode() {
            tokio_postgres::config::SslMode::Require => {}
            _ if !conninfo.contains("sslmode") => {
                cfg.ssl_mode(tokio_postgres::config::SslMode::Require);
            }
            other => {
                return Err(StoreError::Config(format!(
                    "store.postgres.conninfo asks for sslmode {other:?}: the run store is reached over TLS only, checked against the Pigsty CA; use sslmode=verify-full (or leave it out)"
                )))
            }
        }
        if cfg.get_ports().is_empty() {
            cfg.port(PIGSTY_DEFAULT_SERVICE_PORT);
        }
        if cfg.get_dbname().is_none() {
            cfg.dbname("meta");
        }
        if cfg.get_user().is_none() {
            return Err(StoreError::Config(
                "store.postgres.conninfo names no user; add `user=dbuser_quorum` (or the role you created for Quorum)".into(),
            ));
        }
        if let Some(p) = &self.password {
            cfg.password(p.as_bytes());
        }
        cfg.application_name("quorum");
        cfg.connect_timeout(Duration::from_secs(5));
        cfg.keepalives_idle(Duration::from_secs(10));
        Ok(cfg)
    }

    /// Connects; the connection is driven by a thread of its own, which ends when the client
    /// is dropped or the connection fails. Every session works in schema `quorum`.
    pub fn connect(&self) -> Result<tokio_postgres::Client, StoreError> {
        let cfg = self.config()?;
        let tls = self.tls()?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("quorum-pg".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(StoreError::Io(e)));
                        return;
                    }
                };
                rt.block_on(async move {
                    match cfg.connect(tls).await {
                        Ok((client, connection)) => {
                            let _ = tx.send(Ok(client));
                            if let Err(e) = connection.await {
                                tracing::warn!(
                                    "the PostgreSQL connection of the run store ended: {e}"
                                );
                            }
                        }
                        Err(e) => {
                            let _ = tx.send(Err(StoreError::Postgres(e)));
                        }
                    }
                });
            })?;
        let client = rx
            .recv()
            .map_err(|_| StoreError::Config("the PostgreSQL connection thread ended".into()))??;
        Sql::execute(&client, "SET search_path TO quorum", &[])?;
        // The migrations' "already exists, skipping" notices are not news.
        Sql::execute(&client, "SET client_min_messages = warning", &[])?;
        // A coordinator stopped (SIGSTOP, a frozen VM) inside a write transaction holds the
        // lease row against takeovers; the server ends such a session instead of waiting.
        Sql::execute(
            &client,
            &format!("SET idle_in_transaction_session_timeout = {IDLE_IN_TRANSACTION_MS}"),
            &[],
        )?;
        Ok(client)
    }

    fn tls(&self) -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
        let mut roots = rustls::RootCertStore::empty();
        if let Some(ca) = &self.ca_cert {
            let pem = std::fs::read(ca).map_err(|e| {
                StoreError::Config(format!(
                    "cannot read {} (store.postgres.ca_cert): {e}",
                    ca.display()
                ))
            })?;
            for c in rustls_pemfile_certs(&pem) {
                roots.add(c).map_err(|e| {
                    StoreError::Config(format!(
                        "{} (store.postgres.ca_cert) holds a certificate rustls refuses: {e}",
                        ca.display()
                    ))
                })?;
            }
        }
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Config(format!("TLS to PostgreSQL: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
    }
}

fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls_pki_types::CertificateDer<'static>> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .collect()
}

/// The store's PostgreSQL schema, one migration per entry, applied in order at start under
/// an advisory lock (two coordinators starting together apply each once).
pub const PG_MIGRATIONS: &[&str] = &[
    // 1: the tables of the SQLite store as of 0.3.2, and the leader lease.
    "CREATE TABLE runs (
        id TEXT PRIMARY KEY, sop TEXT NOT NULL, cluster TEXT NOT NULL, context TEXT NOT NULL,
        state TEXT NOT NULL, started_by TEXT NOT NULL, inventory_digest TEXT NOT NULL,
        created_ms BIGINT NOT NULL, error TEXT NOT NULL DEFAULT '', finished_ms BIGINT NOT NULL DEFAULT 0);
     CREATE TABLE steps (
        run_id TEXT NOT NULL REFERENCES runs(id), idx BIGINT NOT NULL, record TEXT NOT NULL,
        PRIMARY KEY (run_id, idx));
     CREATE TABLE locks (cluster TEXT PRIMARY KEY, run_id TEXT NOT NULL);
     CREATE TABLE revoked (
        serial TEXT PRIMARY KEY, subject TEXT NOT NULL, reason TEXT NOT NULL,
        revoked_unix BIGINT NOT NULL, not_after_unix BIGINT NOT NULL DEFAULT 0);
     CREATE TABLE enrolled (
        host TEXT PRIMARY KEY, serial TEXT NOT NULL, enrolled_unix BIGINT NOT NULL,
        not_after_unix BIGINT NOT NULL DEFAULT 0, previous TEXT NOT NULL DEFAULT '',
        previous_not_after BIGINT NOT NULL DEFAULT 0, renewals BIGINT NOT NULL DEFAULT 0);
     CREATE TABLE lease (
        id INT PRIMARY KEY CHECK (id = 1), holder TEXT NOT NULL, url TEXT NOT NULL,
        epoch BIGINT NOT NULL, acquired_at TIMESTAMPTZ NOT NULL, expires_at TIMESTAMPTZ NOT NULL);
     CREATE TABLE leaders (
        epoch BIGINT PRIMARY KEY, holder TEXT NOT NULL, url TEXT NOT NULL,
        acquired_at TIMESTAMPTZ NOT NULL DEFAULT now());",
    // 2: enrollment tokens used, shared by every coordinator (a token works once, whichever
    // coordinator it is shown to).
    "CREATE TABLE used_tokens (nonce TEXT PRIMARY KEY, exp_unix BIGINT NOT NULL);",
];

/// Creates schema `quorum` and applies the migrations it lacks.
pub fn pg_migrate(client: &mut tokio_postgres::Client) -> Result<(), StoreError> {
    let tx = wait(client.transaction())?;
    Sql::execute(
        &tx,
        "SELECT pg_advisory_xact_lock(hashtext('quorum schema'))",
        &[],
    )?;
    Sql::execute(&tx, "CREATE SCHEMA IF NOT EXISTS quorum", &[])?;
    Sql::execute(
        &tx,
        "CREATE TABLE IF NOT EXISTS quorum.migrations (version BIGINT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        &[],
    )?;
    let done = Sql::first(
        &tx,
        "SELECT COALESCE(MAX(version), 0) FROM quorum.migrations",
        &[],
    )?
    .map(|r| r.int(0))
    .transpose()?
    .unwrap_or(0);
    if done > PG_MIGRATIONS.len() as i64 {
        return Err(StoreError::Config(format!(
            "schema quorum is at version {done}, newer than this coordinator knows ({}); upgrade this coordinator to the version the others run",
            PG_MIGRATIONS.len()
        )));
    }
    for (i, m) in PG_MIGRATIONS.iter().enumerate().skip(done as usize) {
        wait(tx.batch_execute(m))?;
        Sql::execute(
            &tx,
            "INSERT INTO quorum.migrations (version) VALUES (?1)",
            &[P::I(i as i64 + 1)],
        )?;
    }
    wait(tx.commit())?;
    Ok(())
}

/// A PostgreSQL store's client, behind a lock as SQLite's connection is.
pub struct PgEngine {
    /// The client (the connection thread drives it).
    pub client: Mutex<tokio_postgres::Client>,
    /// Where it connects (for a reconnect).
    pub target: PgTarget,
}

/// Runs `f` in a transaction of `client`, committed when it returns Ok.
pub fn pg_transaction<R>(
    client: &mut tokio_postgres::Client,
    f: impl FnOnce(&tokio_postgres::Transaction<'_>) -> Result<R, StoreError>,
) -> Result<R, StoreError> {
    let tx = wait(client.transaction())?;
    let r = f(&tx)?;
    wait(tx.commit())?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_dollars() {
        assert_eq!(
            dollar_placeholders("UPDATE runs SET state = ?2 WHERE id = ?1"),
            "UPDATE runs SET state = $2 WHERE id = $1"
        );
    }

    #[test]
    fn pgbouncer_is_refused_and_pigsty_defaults_fill_in() {
        let t = |s: &str| PgTarget {
            conninfo: s.into(),
            ca_cert: None,
            password: None,
        };
        let e = t("host=10.10.10.10 port=6432 user=u").config().err();
        assert!(
            format!("{e:?}").contains("pgbouncer"),
            "pgbouncer refused: {e:?}"
        );
        let cfg = t("host=10.10.10.10 user=u").config().ok();
        assert_eq!(
            cfg.as_ref().map(|c| c.get_ports().to_vec()),
            Some(vec![PIGSTY_DEFAULT_SERVICE_PORT])
        );
        assert_eq!(cfg.as_ref().and_then(|c| c.get_dbname()), Some("meta"));
        assert!(t("host=10.10.10.10").config().is_err(), "no user");
        assert!(
            t("host=10.10.10.10 user=u sslmode=disable")
                .config()
                .is_err(),
            "no TLS"
        );
        assert_eq!(
            t("host=10.10.10.10 user=u sslmode=verify-full")
                .config()
                .ok()
                .map(|c| c.get_ssl_mode()),
            Some(tokio_postgres::config::SslMode::Require)
        );
        assert_eq!(
            t("postgresql://u@10.10.10.10/meta")
                .config()
                .ok()
                .map(|c| c.get_ssl_mode()),
            Some(tokio_postgres::config::SslMode::Require)
        );
        assert!(t("host=10.10.10.10 port=notaport user=u").config().is_err());
    }
}
