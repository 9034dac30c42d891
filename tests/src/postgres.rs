//! A PostgreSQL 15 of the test's own (Debian's package, run as `postgres` from the test's
//! temp dir) for the shared run store: TLS with a server certificate from the test's CA, a
//! `quorum` role with a password, database `meta` (Pigsty's name). Stopped (fast shutdown,
//! by pid) when dropped.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::{free_port, wait_for, Proc, World};

/// Debian's PostgreSQL 15 binaries.
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
/// The password of role `quorum`.
pub const QUORUM_PASSWORD: &str = "quorum-test-pw";

/// One PostgreSQL server.
pub struct Postgres {
    proc: Option<Proc>,
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    /// Its dir (data, socket, certificates), owned by `postgres`.
    pub dir: PathBuf,
    /// The file holding role quorum's password (for `password_file`).
    pub password_file: PathBuf,
    log: PathBuf,
}

fn postgres_ids() -> Result<(u32, u32)> {
    let user = nix::unistd::User::from_name("postgres")?
        .context("no `postgres` user: install postgresql-15")?;
    Ok((user.uid.as_raw(), user.gid.as_raw()))
}

fn own(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let (u, g) = postgres_ids()?;
    nix::unistd::chown(
        path,
        Some(nix::unistd::Uid::from_raw(u)),
        Some(nix::unistd::Gid::from_raw(g)),
    )?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn as_postgres(program: &str) -> Result<Command> {
    let (u, g) = postgres_ids()?;
    let mut cmd = Command::new(program);
    cmd.uid(u).gid(g);
    Ok(cmd)
}

impl Postgres {
    /// Initializes and starts a server in `world`'s dir (`pg/`), with TLS from the world's CA.
    pub fn start(world: &World) -> Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        // `postgres` must reach its dir inside the world's.
        std::fs::set_permissions(world.dir.path(), std::fs::Permissions::from_mode(0o711))?;
        let dir = world.dir.path().join("pg");
        std::fs::create_dir_all(&dir)?;
        own(&dir, 0o700)?;
        // A server certificate for 127.0.0.1 from the world's CA, as Pigsty's CA signs its
        // PostgreSQL servers' (the etcd kind has the SANs and serverAuth it needs).
        world
            .quorum(&[
                "pki",
                "issue",
                "etcd",
                "--name",
                "pg-meta-1",
                "--ip",
                "127.0.0.1",
                "--dir",
                &world.p("ca"),
                "--out",
                &world.p("pgtls"),
            ])?
            .ok()?;
        let crt = world.dir.path().join("pgtls/server.crt");
        let key = world.dir.path().join("pgtls/server.key");
        std::fs::copy(&crt, dir.join("server.crt"))?;
        std::fs::copy(&key, dir.join("server.key"))?;
        own(&dir.join("server.crt"), 0o644)?;
        own(&dir.join("server.key"), 0o600)?;
        let pw = dir.join("pw");
        std::fs::write(&pw, "postgres-su-pw\n")?;
        own(&pw, 0o600)?;
        let data = dir.join("data");
        let out = as_postgres(&format!("{PG_BIN}/initdb"))?
            .args(["-D"])
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                "--pwfile",
            ])
            .arg(&pw)
            .output()?;
        if !out.status.success() {
            bail!(
                "initdb failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // TLS only over TCP, from loopback.
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n",
        )?;
        own(&data.join("pg_hba.conf"), 0o600)?;
        let port = free_port("127.0.0.1".parse()?)?;
        let log = world.dir.path().join("postgres.log");
        let mut me = Self {
            proc: None,
            port,
            dir,
            password_file: world.dir.path().join("quorum-pg.pw"),
            log: log.clone(),
        };
        me.proc = Some(Proc::spawn("postgres", me.command()?, &log)?);
        me.wait_up()?;
        me.psql(
            "postgres",
            &format!("CREATE ROLE quorum LOGIN PASSWORD '{QUORUM_PASSWORD}'"),
        )?;
        me.create_db("meta")?;
        std::fs::write(&me.password_file, format!("{QUORUM_PASSWORD}\n"))?;
        Ok(me)
    }

    /// Starts the server again on its data dir (after [`Postgres::stop`]).
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        let log = self.log.with_extension("restarted.log");
        self.proc = Some(Proc::spawn("postgres", self.command()?, &log)?);
        self.wait_up()
    }

    fn command(&self) -> Result<Command> {
        let mut cmd = as_postgres(&format!("{PG_BIN}/postgres"))?;
        let dir = &self.dir;
        cmd.arg("-D").arg(dir.join("data")).args([
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            &format!("port={}", self.port),
            "-c",
            &format!("unix_socket_directories={}", dir.display()),
            "-c",
            "ssl=on",
            "-c",
            &format!("ssl_cert_file={}", dir.join("server.crt").display()),
            "-c",
            &format!("ssl_key_file={}", dir.join("server.key").display()),
            // The tests kill coordinators, never this server: durability is not under test.
            "-c",
            "fsync=off",
            "-c",
            "max_connections=200",
        ]);
        Ok(cmd)
    }

    fn wait_up(&mut self) -> Result<()> {
        let up = wait_for(
            "PostgreSQL to accept connections",
            Duration::from_secs(60),
            || {
                if let Some(p) = self.proc.as_mut() {
                    if !p.running() {
                        return Some(false);
                    }
                }
                self.psql("postgres", "SELECT 1").ok().map(|_| true)
            },
        )?;
        if !up {
            bail!(
                "PostgreSQL exited at start:\n{}",
                self.proc.as_ref().map(|p| p.log_text()).unwrap_or_default()
            );
        }
        Ok(())
    }

    /// A database owned by role quorum.
    pub fn create_db(&self, name: &str) -> Result<()> {
        self.psql("postgres", &format!("CREATE DATABASE {name} OWNER quorum"))?;
        Ok(())
    }

    /// Runs SQL as the superuser over the socket; returns psql's unaligned output.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String> {
        let out = as_postgres("psql")?
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.dir)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
                "-c",
                sql,
            ])
            .output()?;
        if !out.status.success() {
            bail!(
                "psql {sql:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// The connection string of role quorum to `db`, TLS checked against the world's CA.
    pub fn conninfo(&self, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} dbname={db} user=quorum sslmode=verify-full",
            self.port
        )
    }

    /// The `store:` section of coordinator.yml for `db`.
    pub fn store_yaml(&self, db: &str, ttl: &str, renew: &str) -> String {
        format!(
            "store:\n  postgres:\n    conninfo: \"{}\"\n    password_file: {}\n  lease_ttl: {ttl}\n  renew_every: {renew}\n",
            self.conninfo(db),
            self.password_file.display()
        )
    }
}

impl Postgres {
    /// Stops the server (fast shutdown), as a crashed pg-meta would be gone.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            // Fast shutdown: the postmaster ends its backends and removes its shared memory.
            let _ = p.signal(nix::sys::signal::Signal::SIGINT);
            if p.wait_exit(Duration::from_secs(15)).is_err() {
                p.kill();
            }
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}
