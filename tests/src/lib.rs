//! End-to-end harness: a temp dir per test, real `quorum` and `quorum-agent` processes over
//! mTLS on loopback addresses (127.0.0.11, .12, ...), and later real etcd. Every process a
//! test starts is killed by pid when its handle drops.

pub mod etcd;
pub mod lab;
pub mod pg;
pub mod postgres;

use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Where the workspace's binaries are: `QUORUM_BIN_DIR`, else next to the test executable.
pub fn bin_dir() -> Result<PathBuf> {
    if let Ok(dir) = std::env::var("QUORUM_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let exe = std::env::current_exe()?;
    // target/debug/deps/<test> -> target/debug
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("cannot locate the target dir from the test executable")?
        .to_path_buf();
    for bin in ["quorum", "quorum-agent"] {
        if !dir.join(bin).exists() {
            bail!(
                "{} is missing: build the binaries first (`cargo build --workspace --bins`, or run scripts/test)",
                dir.join(bin).display()
            );
        }
    }
    Ok(dir)
}

/// The directory of the `etcd` and `etcdctl` every end-to-end test runs:
/// `QUORUM_TEST_ETCD_DIR` (`QUORUM_ETCD=3.5 scripts/test` points it at Debian trixie's 3.5,
/// unpacked by scripts/etcd-3.5), else Debian's own in /usr/bin (bookworm: 3.4). The agents'
/// exec backend starts `etcd_dir()/etcd`; the coordinator, the agents and the shell lines
/// the tests run find `etcdctl` here first ([`etcd_path`]).
pub fn etcd_dir() -> PathBuf {
    std::env::var_os("QUORUM_TEST_ETCD_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(|| PathBuf::from("/usr/bin"), PathBuf::from)
}

/// `PATH` with [`etcd_dir`] first, for every process the harness starts.
pub fn etcd_path() -> std::ffi::OsString {
    let mut dirs = vec![etcd_dir()];
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(dirs).unwrap_or_default()
}

/// A command for one of etcd's binaries (`etcd`, `etcdctl`) from [`etcd_dir`].
pub fn etcd_command(name: &str) -> Command {
    let mut cmd = Command::new(etcd_dir().join(name));
    cmd.env("PATH", etcd_path());
    cmd
}

/// Path of one of the workspace's binaries.
pub fn bin(name: &str) -> Result<PathBuf> {
    Ok(bin_dir()?.join(name))
}

/// A free TCP port on `ip` (bound and released; good enough for tests on loopback).
pub fn free_port(ip: IpAddr) -> Result<u16> {
    let l = TcpListener::bind(SocketAddr::new(ip, 0))?;
    Ok(l.local_addr()?.port())
}

/// Polls `f` until it returns Some or `timeout` passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() > end {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The pid written in `pidfile`, if that process runs: zombies linger here (PID 1 reaps
/// orphans late) and do not count.
pub fn live_pid(pidfile: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let state = stat.rsplit(')').next()?.split_whitespace().next()?;
    (state != "Z").then_some(pid)
}

/// A process the test owns; killed (SIGKILL) and reaped when dropped.
pub struct Proc {
    /// The child.
    pub child: Child,
    /// What it is, for messages.
    pub name: String,
    /// Its log file.
    pub log: PathBuf,
}

impl Proc {
    /// Spawns `cmd` with stdout and stderr to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Self> {
        let out = std::fs::File::create(log)?;
        let err = out.try_clone()?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        Ok(Self {
            child,
            name: name.to_string(),
            log: log.to_path_buf(),
        })
    }

    /// The pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal.
    pub fn signal(&self, sig: nix::sys::signal::Signal) -> Result<()> {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid() as i32), sig)?;
        Ok(())
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for it to exit (bounded); returns the exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<Option<i32>> {
        let name = self.name.clone();
        let status = wait_for(&format!("{name} to exit"), timeout, || {
            self.child.try_wait().ok().flatten()
        })?;
        Ok(status.code())
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Result of a CLI call.
#[derive(Debug)]
pub struct CliOutput {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl From<Output> for CliOutput {
    fn from(o: Output) -> Self {
        Self {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl CliOutput {
    /// Fails unless the exit code is 0.
    pub fn ok(self) -> Result<Self> {
        if self.code != 0 {
            bail!(
                "command failed with exit code {}\nstdout:\n{}\nstderr:\n{}",
                self.code,
                self.stdout,
                self.stderr
            );
        }
        Ok(self)
    }
}

/// Runs a binary of the workspace with arguments and extra environment.
pub fn run(binary: &str, args: &[&str], env: &[(&str, &str)]) -> Result<CliOutput> {
    let mut cmd = Command::new(bin(binary)?);
    cmd.args(args).stdin(Stdio::null()).env("PATH", etcd_path());
    for var in [
        "QUORUM_COORDINATOR",
        "QUORUM_CERT",
        "QUORUM_KEY",
        "QUORUM_CACERT",
        "QUORUM_CLI_CONFIG",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    Ok(cmd.output()?.into())
}

/// One test's world: a temp dir with a CA, a coordinator and agents.
pub struct World {
    /// The temp dir (removed on drop).
    pub dir: tempfile::TempDir,
    /// The coordinator's address.
    pub listen: SocketAddr,
    /// The coordinator process, once started.
    pub coordinator: Option<Proc>,
    /// Agent processes by IP.
    pub agents: Vec<(IpAddr, Proc)>,
    /// Extra lines for coordinator.yml.
    pub coordinator_extra: String,
    /// Extra flags for `quorum serve` (`--log-format json`, say).
    pub coordinator_args: Vec<String>,
    /// More coordinators on the same shared store (active/standby), by index from 1: their
    /// address and process. Agents and the CLI are given every coordinator's URL.
    pub others: Vec<(SocketAddr, Option<Proc>)>,
}

impl World {
    /// A new world with a CA, a coordinator certificate and an admin certificate.
    pub fn new() -> Result<Self> {
        Self::new_on("127.0.0.1".parse()?)
    }

    /// A world whose coordinator listens on `ip` (a network namespace lab's bridge address,
    /// so agents inside the namespaces reach it).
    pub fn new_on(ip: IpAddr) -> Result<Self> {
        // QUORUM_KEEP=1 keeps the dir (logs, configs) for a look after a failure.
        let keep = std::env::var_os("QUORUM_KEEP").is_some();
        let dir = tempfile::Builder::new()
            .prefix("quorum-test-")
            .disable_cleanup(keep)
            .tempdir()?;
        if keep {
            eprintln!("test dir kept: {}", dir.path().display());
        }
        let listen = SocketAddr::new(ip, free_port(ip)?);
        let w = Self {
            dir,
            listen,
            coordinator: None,
            agents: Vec::new(),
            coordinator_extra: String::new(),
            coordinator_args: Vec::new(),
            others: Vec::new(),
        };
        w.quorum(&["pki", "init", "--dir", &w.p("ca")])?.ok()?;
        w.quorum(&[
            "pki",
            "issue",
            "coordinator",
            "--ip",
            "127.0.0.1",
            "--ip",
            &ip.to_string(),
            "--dir",
            &w.p("ca"),
            "--out",
            &w.p("coordinator"),
        ])?
        .ok()?;
        w.quorum(&[
            "pki",
            "issue",
            "admin",
            "--name",
            "tester",
            "--dir",
            &w.p("ca"),
            "--out",
            &w.p("admin"),
        ])?
        .ok()?;
        Ok(w)
    }

    /// A path inside the world's dir, as a string.
    pub fn p(&self, rel: &str) -> String {
        self.dir.path().join(rel).display().to_string()
    }

    /// The coordinator URL.
    pub fn url(&self) -> String {
        format!("https://{}", self.listen)
    }

    /// Every coordinator's URL, the first one's first.
    pub fn urls(&self) -> Vec<String> {
        std::iter::once(self.listen)
            .chain(self.others.iter().map(|(a, _)| *a))
            .map(|a| format!("https://{a}"))
            .collect()
    }

    /// What the CLI is given as QUORUM_COORDINATOR: every coordinator's URL.
    fn admin_url(&self) -> String {
        self.urls().join(",")
    }

    /// Adds a coordinator (started with [`World::start_coordinator_at`]); returns its index.
    pub fn add_coordinator(&mut self) -> Result<usize> {
        let ip = self.listen.ip();
        self.others
            .push((SocketAddr::new(ip, free_port(ip)?), None));
        Ok(self.others.len())
    }

    /// Coordinator `i`'s address (0: the first).
    pub fn listen_at(&self, i: usize) -> Result<SocketAddr> {
        if i == 0 {
            return Ok(self.listen);
        }
        self.others
            .get(i - 1)
            .map(|(a, _)| *a)
            .with_context(|| format!("no coordinator {i}"))
    }

    /// Coordinator `i`'s process, if started.
    pub fn coordinator_at(&mut self, i: usize) -> Option<&mut Proc> {
        if i == 0 {
            return self.coordinator.as_mut();
        }
        self.others.get_mut(i - 1).and_then(|(_, p)| p.as_mut())
    }

    /// Coordinator `i`'s log file.
    pub fn coordinator_log(&self, i: usize) -> PathBuf {
        match i {
            0 => self.dir.path().join("coordinator.log"),
            i => self.dir.path().join(format!("coordinator-{i}.log")),
        }
    }

    /// Runs `quorum` without admin credentials.
    pub fn quorum(&self, args: &[&str]) -> Result<CliOutput> {
        run("quorum", args, &[])
    }

    /// Runs `quorum` as the admin.
    pub fn admin(&self, args: &[&str]) -> Result<CliOutput> {
        let url = self.admin_url();
        let cert = self.p("admin/admin.crt");
        let key = self.p("admin/admin.key");
        let ca = self.p("ca/ca.crt");
        run(
            "quorum",
            args,
            &[
                ("QUORUM_COORDINATOR", &url),
                ("QUORUM_CERT", &cert),
                ("QUORUM_KEY", &key),
                ("QUORUM_CACERT", &ca),
            ],
        )
    }

    /// Runs `quorum` as the admin with extra environment (`TZ=UTC`, say).
    pub fn admin_env(&self, args: &[&str], env: &[(&str, &str)]) -> Result<CliOutput> {
        let url = self.admin_url();
        let cert = self.p("admin/admin.crt");
        let key = self.p("admin/admin.key");
        let ca = self.p("ca/ca.crt");
        let mut all = vec![
            ("QUORUM_COORDINATOR", url.as_str()),
            ("QUORUM_CERT", cert.as_str()),
            ("QUORUM_KEY", key.as_str()),
            ("QUORUM_CACERT", ca.as_str()),
        ];
        all.extend_from_slice(env);
        run("quorum", args, &all)
    }

    /// Starts `quorum ARGS` as the admin in the background (output discarded), for tests that
    /// act while a run is under way.
    pub fn spawn_admin(&self, args: &[&str]) -> Result<Child> {
        let mut cmd = self.admin_command(args)?;
        Ok(cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn()?)
    }

    /// `quorum ARGS` with the admin's connection settings, stdin closed.
    fn admin_command(&self, args: &[&str]) -> Result<Command> {
        let mut cmd = Command::new(bin("quorum")?);
        cmd.args(args)
            .env("PATH", etcd_path())
            .env("QUORUM_COORDINATOR", self.admin_url())
            .env("QUORUM_CERT", self.p("admin/admin.crt"))
            .env("QUORUM_KEY", self.p("admin/admin.key"))
            .env("QUORUM_CACERT", self.p("ca/ca.crt"))
            .stdin(Stdio::null());
        Ok(cmd)
    }

    /// Starts `quorum ARGS` as the admin, its output piped for `wait_with_output`.
    pub fn spawn_admin_output(&self, args: &[&str]) -> Result<Child> {
        let mut cmd = self.admin_command(args)?;
        Ok(cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?)
    }

    /// The number of steps `quorum ARGS --plan -o json` plans.
    pub fn plan_len(&self, args: &[&str]) -> Result<usize> {
        let mut a = args.to_vec();
        a.extend_from_slice(&["--plan", "-o", "json"]);
        let out = self.admin(&a)?.ok()?;
        let v: serde_json::Value = serde_json::from_str(&out.stdout)?;
        Ok(v["steps"].as_array().map(|s| s.len()).unwrap_or(0))
    }

    /// Writes coordinator.yml and starts the coordinator; waits until it accepts connections.
    pub fn start_coordinator(&mut self) -> Result<()> {
        self.start_coordinator_at(0)
    }

    /// Writes coordinator `i`'s config (`coordinator.yml`, `coordinator-I.yml`; its own state
    /// dir) and starts it; waits until it accepts connections (a standby does too).
    pub fn start_coordinator_at(&mut self, i: usize) -> Result<()> {
        let listen = self.listen_at(i)?;
        let (name, state) = match i {
            0 => ("coordinator.yml".to_string(), "state".to_string()),
            i => (format!("coordinator-{i}.yml"), format!("state-{i}")),
        };
        let cfg = format!(
            "listen: {listen}\nadvertise_url: https://{listen}\ntls:\n  ca_cert: {ca}\n  cert: {crt}\n  key: {key}\n  ca_key: {cakey}\nstate_dir: {state}\ninventory: {inv}\n{extra}",
            ca = self.p("ca/ca.crt"),
            crt = self.p("coordinator/coordinator.crt"),
            key = self.p("coordinator/coordinator.key"),
            cakey = self.p("ca/ca.key"),
            state = self.p(&state),
            inv = self.p("pigsty.yml"),
            extra = self.coordinator_extra,
        );
        std::fs::write(self.dir.path().join(&name), cfg)?;
        let mut cmd = Command::new(bin("quorum")?);
        // Its snapshots are checked with the selected etcdctl.
        cmd.args(["serve", "--config", &self.p(&name)])
            .args(&self.coordinator_args)
            .env("PATH", etcd_path());
        let log = self.coordinator_log(i);
        let mut proc = Proc::spawn(&format!("coordinator {i}"), cmd, &log)?;
        let addr = listen;
        wait_for("the coordinator to listen", Duration::from_secs(20), || {
            if !proc.running() {
                return Some(false);
            }
            TcpStream::connect_timeout(&addr, Duration::from_millis(100))
                .ok()
                .map(|_| true)
        })
        .and_then(|up| {
            if up {
                Ok(())
            } else {
                bail!("the coordinator exited at start:\n{}", proc.log_text())
            }
        })?;
        match i {
            0 => self.coordinator = Some(proc),
            i => self.others[i - 1].1 = Some(proc),
        }
        Ok(())
    }

    /// Stops the coordinator with SIGKILL.
    pub fn kill_coordinator(&mut self) {
        self.kill_coordinator_at(0);
    }

    /// Stops coordinator `i` with SIGKILL.
    pub fn kill_coordinator_at(&mut self, i: usize) {
        let proc = match i {
            0 => self.coordinator.take(),
            i => self.others.get_mut(i - 1).and_then(|(_, p)| p.take()),
        };
        if let Some(mut c) = proc {
            c.kill();
        }
    }

    /// Issues an agent certificate for `ip` into `agent-<ip>/`.
    pub fn issue_agent_cert(&self, ip: &str) -> Result<()> {
        self.issue_agent_cert_for(ip, "90d")
    }

    /// Issues an agent certificate for `ip` living `ttl` (`45s`, `1d`) into `agent-<ip>/`.
    pub fn issue_agent_cert_for(&self, ip: &str, ttl: &str) -> Result<()> {
        self.quorum(&[
            "pki",
            "issue",
            "agent",
            "--ip",
            ip,
            "--ttl",
            ttl,
            "--dir",
            &self.p("ca"),
            "--out",
            &self.p(&format!("agent-{ip}")),
            "--force",
        ])?
        .ok()?;
        Ok(())
    }

    /// Enrolls host `ip` with a new one-time token, as an operator does: `quorum pki token`,
    /// then `quorum-agent enroll`, writing `agent-<ip>/agent.{crt,key}`.
    pub fn enroll_agent(&self, ip: &str) -> Result<()> {
        let token = self
            .quorum(&["pki", "token", "--host", ip, "--dir", &self.p("ca")])?
            .ok()?
            .stdout
            .trim()
            .to_string();
        let dir = format!("agent-{ip}");
        std::fs::create_dir_all(self.dir.path().join(&dir))?;
        run(
            "quorum-agent",
            &[
                "enroll",
                "--coordinator",
                &self.url(),
                "--token",
                &token,
                "--ca-cert",
                &self.p("ca/ca.crt"),
                "--cert",
                &self.p(&format!("{dir}/agent.crt")),
                "--key",
                &self.p(&format!("{dir}/agent.key")),
                "--host-ip",
                ip,
            ],
            &[],
        )?
        .ok()?;
        Ok(())
    }

    /// The agent config path for `ip`; `extra` is appended (paths, backend, safeguard, ...).
    pub fn write_agent_config(&self, ip: &str, extra: &str) -> Result<String> {
        let d = format!("agent-{ip}");
        let cfg = format!(
            "coordinator: {url}\nhost_ip: {ip}\ntls:\n  ca_cert: {ca}\n  cert: {crt}\n  key: {key}\n{extra}",
            url = match self.urls().as_slice() {
                [one] => one.clone(),
                all => format!("[{}]", all.join(", ")),
            },
            ca = self.p("ca/ca.crt"),
            crt = self.p(&format!("{d}/agent.crt")),
            key = self.p(&format!("{d}/agent.key")),
        );
        let path = self.p(&format!("{d}/agent.yml"));
        std::fs::create_dir_all(self.dir.path().join(&d))?;
        std::fs::write(&path, cfg)?;
        Ok(path)
    }

    /// Starts an agent for `ip` with a certificate (issued if missing) and `extra` config.
    pub fn start_agent(&mut self, ip: &str, extra: &str) -> Result<()> {
        self.start_agent_in(ip, extra, None)
    }

    /// Starts an agent for `ip`, inside network namespace `netns` when given (`ip netns exec`
    /// execs the agent, so the pid is the agent's); everything it starts runs there too.
    pub fn start_agent_in(&mut self, ip: &str, extra: &str, netns: Option<&str>) -> Result<()> {
        if !self
            .dir
            .path()
            .join(format!("agent-{ip}/agent.crt"))
            .exists()
        {
            self.issue_agent_cert(ip)?;
        }
        let cfg = self.write_agent_config(ip, extra)?;
        let agent = bin("quorum-agent")?;
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&agent);
                c
            }
            None => Command::new(&agent),
        };
        cmd.args(["run", "--config", &cfg]).env("PATH", etcd_path());
        let log = self.dir.path().join(format!("agent-{ip}.log"));
        let ip: IpAddr = ip.parse()?;
        // A restarted agent replaces the old handle (dropping it kills the old process).
        self.agents.retain(|(a, _)| *a != ip);
        let proc = Proc::spawn(&format!("agent {ip}"), cmd, &log)?;
        self.agents.push((ip, proc));
        Ok(())
    }

    /// The agent process for `ip`.
    pub fn agent(&mut self, ip: &str) -> Option<&mut Proc> {
        let ip: IpAddr = ip.parse().ok()?;
        self.agents
            .iter_mut()
            .find(|(a, _)| *a == ip)
            .map(|(_, p)| p)
    }

    /// Waits until the newest run is of `sop`, in one of `states`, with at least `done` steps
    /// done; returns its id. Chaos tests kill a process at that step boundary.
    pub fn wait_steps_done(
        &self,
        sop: &str,
        done: usize,
        states: &[&str],
        timeout: Duration,
    ) -> Result<String> {
        let seen = std::cell::RefCell::new(String::from("no run listed"));
        wait_for(&format!("{done} steps of {sop} done"), timeout, || {
            let out = self.admin(&["run", "list", "-o", "json"]).ok()?;
            let runs: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).ok()?;
            let r = runs.first()?;
            *seen.borrow_mut() = format!(
                "the newest run: {} {} {}, error {}; steps {}",
                r["run_id"],
                r["sop"],
                r["state"],
                r["error"],
                r["steps"]
                    .as_array()
                    .map(|s| s
                        .iter()
                        .map(|s| format!("{}:{}:{}", s["kind"], s["host"], s["state"]))
                        .collect::<Vec<_>>()
                        .join(" "))
                    .unwrap_or_default()
            );
            let n = r["steps"]
                .as_array()?
                .iter()
                .filter(|s| s["state"] == "done")
                .count();
            (r["sop"] == sop && states.iter().any(|st| r["state"] == *st) && n >= done)
                .then(|| r["run_id"].as_str().map(str::to_string))
                .flatten()
        })
        .with_context(|| seen.borrow().clone())
    }

    /// After a crash at a step boundary: resumes `run_id` unless it had already finished
    /// before the crash (a kill can land just after the last step), and returns the run.
    pub fn resume_after_crash(&self, run_id: &str) -> Result<serde_json::Value> {
        let show = |w: &Self| -> Result<serde_json::Value> {
            let out = w.admin(&["run", "show", run_id, "-o", "json"])?.ok()?;
            Ok(serde_json::from_str(&out.stdout)?)
        };
        if show(self)?["state"] != "succeeded" {
            let resumed = self.admin(&["run", "resume", run_id])?;
            if resumed.code != 0 {
                bail!("run resume {run_id} failed: {resumed:?}");
            }
        }
        show(self)
    }

    /// `quorum agents -o json`, parsed.
    pub fn agents_json(&self) -> Result<Vec<serde_json::Value>> {
        let out = self.admin(&["agents", "-o", "json"])?.ok()?;
        Ok(serde_json::from_str(&out.stdout)?)
    }

    /// Waits until the agent `ip` is in `state` ("connected", "idle", "stale").
    pub fn wait_agent_state(&self, ip: &str, states: &[&str], timeout: Duration) -> Result<()> {
        wait_for(&format!("agent {ip} to be {states:?}"), timeout, || {
            let agents = self.agents_json().ok()?;
            agents
                .iter()
                .find(|a| a["agent_id"] == ip && states.iter().any(|s| a["state"] == *s))
                .map(|_| ())
        })
    }
}
