//! Real etcd for the end-to-end tests: a host layout per loopback IP (the paths the agent's
//! config points at instead of /etc and /data), a Pigsty inventory for those hosts, the
//! agent's `exec` backend driving `start-stop-daemon` around the selected etcd
//! ([`crate::etcd_dir`]: Debian's /usr/bin/etcd unless `QUORUM_TEST_ETCD_DIR` names another), and clients
//! that sample health and write in the background while an SOP runs.

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::World;

/// A port free on every one of `ips` (client and peer ports must be the same on every member).
pub fn free_port_on(ips: &[IpAddr]) -> Result<u16> {
    for _ in 0..200 {
        let first = TcpListener::bind(SocketAddr::new(ips[0], 0))?;
        let port = first.local_addr()?.port();
        let all_free = ips[1..]
            .iter()
            .all(|ip| TcpListener::bind(SocketAddr::new(*ip, port)).is_ok())
            && TcpListener::bind(SocketAddr::new(ips[0], port + 1)).is_ok();
        drop(first);
        if all_free && port < 65000 {
            return Ok(port);
        }
    }
    bail!("no port free on all of {ips:?}")
}

/// The paths of one simulated host inside a test's dir.
#[derive(Debug, Clone)]
pub struct HostPaths {
    /// The host's IP.
    pub ip: IpAddr,
    /// Its root inside the test dir.
    pub root: PathBuf,
}

impl HostPaths {
    /// Layout for `ip` under `dir/hosts/<ip>`.
    pub fn new(dir: &Path, ip: IpAddr) -> Self {
        Self {
            ip,
            root: dir.join("hosts").join(ip.to_string()),
        }
    }
    /// `/etc/etcd` of this host.
    pub fn etc_etcd(&self) -> PathBuf {
        self.root.join("etc/etcd")
    }
    /// etcd.conf.
    pub fn etcd_conf(&self) -> PathBuf {
        self.etc_etcd().join("etcd.conf")
    }
    /// The etcdctl profile.
    pub fn profile(&self) -> PathBuf {
        self.root.join("etc/profile.d/etcdctl.sh")
    }
    /// The etcd data dir.
    pub fn data(&self) -> PathBuf {
        self.root.join("data/etcd")
    }
    /// The agent's journal dir.
    pub fn journal(&self) -> PathBuf {
        self.root.join("var/lib/quorum")
    }
    /// etcd's pid file (written by start-stop-daemon).
    pub fn pidfile(&self) -> PathBuf {
        self.root.join("run/etcd.pid")
    }
    /// etcd's log.
    pub fn etcd_log(&self) -> PathBuf {
        self.root.join("log/etcd.log")
    }
    /// A file the restart command appends a line to, so tests can count restarts.
    pub fn restarts(&self) -> PathBuf {
        self.root.join("log/restarts")
    }
    /// The pid of this host's etcd, if it runs.
    pub fn etcd_pid(&self) -> Option<i32> {
        crate::live_pid(&self.pidfile())
    }
    /// Kills this host's etcd (SIGKILL, by pid) and waits until it is gone.
    pub fn kill_etcd(&self) -> Result<()> {
        let pid = self
            .etcd_pid()
            .with_context(|| format!("etcd on {} does not run", self.ip))?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )?;
        crate::wait_for(
            &format!("etcd on {} to die", self.ip),
            Duration::from_secs(10),
            || self.etcd_pid().is_none().then_some(()),
        )
    }

    /// How many restarts the exec backend ran.
    pub fn restart_count(&self) -> usize {
        std::fs::read_to_string(self.restarts())
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }
    /// Makes the host's directories.
    pub fn create(&self) -> Result<()> {
        for d in [
            "etc/etcd",
            "etc/profile.d",
            "data/etcd",
            "var/lib/quorum",
            "run",
            "log",
        ] {
            std::fs::create_dir_all(self.root.join(d))?;
        }
        Ok(())
    }
    /// The agent config lines (after coordinator/host_ip/tls) for this host: its paths, root
    /// owners (tests run as root), and the exec backend around start-stop-daemon.
    pub fn agent_config(&self, safeguard: bool) -> String {
        let r = |p: PathBuf| p.display().to_string();
        let pid = r(self.pidfile());
        let log = r(self.etcd_log());
        let conf = r(self.etcd_conf());
        let etcd = r(crate::etcd_dir().join("etcd"));
        let start = format!(
            "[start-stop-daemon, --start, --background, --oknodo, --make-pidfile, --pidfile, {pid}, --output, {log}, --exec, {etcd}, --, --config-file, {conf}]"
        );
        // `--exec` on the stop too: without it start-stop-daemon waits until the pid is gone
        // from /proc, and PID 1 here reaps an exited etcd only ~1.5 s later; a zombie has no
        // executable, so with `--exec` the stop ends when etcd has exited.
        let stop = format!(
            "[start-stop-daemon, --stop, --oknodo, --pidfile, {pid}, --exec, {etcd}, --retry, TERM/30/KILL/5, --remove-pidfile]"
        );
        let restart = format!(
            "[/bin/sh, -c, 'echo restart >> {restarts} && start-stop-daemon --stop --oknodo --pidfile {pid} --exec {etcd} --retry TERM/30/KILL/5 --remove-pidfile && start-stop-daemon --start --background --oknodo --make-pidfile --pidfile {pid} --output {log} --exec {etcd} -- --config-file {conf}']",
            restarts = r(self.restarts())
        );
        // Not `start-stop-daemon --status`: PID 1 here reaps orphans late, and a zombie etcd
        // (a removed member exits by itself) must not count as running.
        let status = format!(
            "[/bin/sh, -c, 'p=$(cat {pid} 2>/dev/null) && [ -n \"$p\" ] && grep -q \"^State:[[:space:]]*[RSDI]\" /proc/$p/status']"
        );
        format!(
            "{paths}service_backend: exec\n\
             exec:\n  etcd:\n    start: {start}\n    stop: {stop}\n    restart: {restart}\n    status: {status}\n    log: {log}\n\
             safeguard: {safeguard}\n",
            paths = self.paths_config(),
        )
    }

    /// The agent config lines that put every managed path of this host under its root (and
    /// allow only that root), with root owners (tests run as root).
    pub fn paths_config(&self) -> String {
        let r = |p: PathBuf| p.display().to_string();
        format!(
            "paths:\n  etcd_conf: {conf}\n  etcd_ca: {ca}\n  etcd_cert: {cert}\n  etcd_key: {key}\n  etcdctl_profile: {profile}\n  patroni_conf: {root}/etc/patroni/patroni.yml\n  vip_conf: {root}/etc/default/vip-manager.yml\n  etcd_data: {data}\n  journal_dir: {journal}\n\
             allowed_prefixes: [{root}]\n\
             owners:\n  etcd: {{ user: root, group: root }}\n  profile: {{ user: root, group: root }}\n",
            conf = r(self.etcd_conf()),
            ca = r(self.etc_etcd().join("ca.crt")),
            cert = r(self.etc_etcd().join("server.crt")),
            key = r(self.etc_etcd().join("server.key")),
            profile = r(self.profile()),
            data = r(self.data()),
            journal = r(self.journal()),
            root = r(self.root.clone()),
        )
    }
}

/// An etcd "fleet" of a test: hosts, ports, and the inventory that names them.
pub struct Fleet {
    /// The hosts, in inventory order.
    pub hosts: Vec<HostPaths>,
    /// Client port (same on every member).
    pub port: u16,
    /// Peer port.
    pub peer_port: u16,
}

impl Fleet {
    /// Hosts `ips` inside `world`, with free ports.
    pub fn new(world: &World, ips: &[&str]) -> Result<Self> {
        let parsed: Vec<IpAddr> = ips.iter().map(|s| s.parse()).collect::<Result<_, _>>()?;
        let port = free_port_on(&parsed)?;
        Self::with_port(world, ips, port)
    }

    /// Hosts `ips` with client port `port` and peer port `port + 1` (in network namespaces
    /// every port is free, and the root namespace cannot bind those addresses to check).
    pub fn with_port(world: &World, ips: &[&str], port: u16) -> Result<Self> {
        let ips: Vec<IpAddr> = ips.iter().map(|s| s.parse()).collect::<Result<_, _>>()?;
        let hosts: Vec<HostPaths> = ips
            .iter()
            .map(|ip| HostPaths::new(world.dir.path(), *ip))
            .collect();
        for h in &hosts {
            h.create()?;
        }
        Ok(Self {
            hosts,
            port,
            peer_port: port + 1,
        })
    }

    /// The host on `ip`.
    pub fn host(&self, ip: &str) -> Result<&HostPaths> {
        let ip: IpAddr = ip.parse()?;
        self.hosts
            .iter()
            .find(|h| h.ip == ip)
            .context("no such host")
    }

    /// Client URL of a host.
    pub fn client_url(&self, ip: IpAddr) -> String {
        format!("https://{ip}:{}", self.port)
    }

    /// Writes `pigsty.yml` naming `members` (ip, seq) in the etcd group, with `vars` added to
    /// the group's vars (e.g. "etcd_safeguard: true"). Without a `version:` among them the
    /// inventory says `version: v3.6.1` (Pigsty v3.6, no etcd RBAC); tests of Pigsty v4 pass
    /// `version: v4.5.0`. The loopback extensions default as below unless `vars` sets them.
    pub fn write_inventory(
        &self,
        world: &World,
        members: &[(&str, u32)],
        vars: &str,
    ) -> Result<()> {
        self.write_inventory_with(world, members, vars, "")
    }

    /// As [`Fleet::write_inventory`], with `groups` (YAML at the indent of `all.children`'s
    /// entries, 4 spaces) appended: PostgreSQL clusters, for example.
    pub fn write_inventory_with(
        &self,
        world: &World,
        members: &[(&str, u32)],
        vars: &str,
        groups: &str,
    ) -> Result<()> {
        let mut hosts = String::new();
        for (ip, seq) in members {
            let h = HostPaths::new(world.dir.path(), ip.parse()?);
            hosts.push_str(&format!(
                "        {ip}: {{ etcd_seq: {seq}, etcd_data: {data}, quorum_etcd_conf_dir: {conf}, quorum_etcdctl_cacert: {conf}/ca.crt }}\n",
                data = h.data().display(),
                conf = h.etc_etcd().display(),
            ));
        }
        // The harness's defaults, each unless `vars` sets it: Pigsty v3.6 (no RBAC), and the
        // loopback layout's extensions (see the inventory module's docs).
        let defaults = [
            ("version", "v3.6.1"),
            ("quorum_etcd_listen_localhost", "false"),
            ("quorum_etcd_client_cert_auth", "true"),
            ("quorum_etcd_grpc_gateway", "true"),
        ];
        let mut all = String::new();
        for (key, value) in defaults {
            let given = vars
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{key}:")));
            if !given {
                all.push_str(&format!("        {key}: {value}\n"));
            }
        }
        for l in vars.lines() {
            all.push_str(&format!("        {l}\n"));
        }
        let text = format!(
            "all:\n  children:\n    etcd:\n      hosts:\n{hosts}      vars:\n        etcd_cluster: etcd\n        etcd_port: {port}\n        etcd_peer_port: {peer}\n{all}",
            port = self.port,
            peer = self.peer_port,
        ) + groups;
        std::fs::write(world.dir.path().join("pigsty.yml"), text)?;
        Ok(())
    }

    /// Starts an agent for every host with its exec backend.
    pub fn start_agents(&self, world: &mut World) -> Result<()> {
        for h in &self.hosts {
            world.start_agent(&h.ip.to_string(), &h.agent_config(false))?;
        }
        for h in &self.hosts {
            world.wait_agent_state(
                &h.ip.to_string(),
                &["connected", "idle"],
                Duration::from_secs(30),
            )?;
        }
        Ok(())
    }

    /// Kills every etcd this fleet started (by pid).
    pub fn kill_etcd(&self) {
        for h in &self.hosts {
            if let Some(pid) = h.etcd_pid() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }

    /// Runs etcdctl through a host's profile (the file the agent wrote), as an operator would.
    pub fn etcdctl_via_profile(&self, ip: &str, args: &str) -> Result<crate::CliOutput> {
        let h = self.host(ip)?;
        let out = std::process::Command::new("bash")
            .env("PATH", crate::etcd_path())
            .arg("-c")
            .arg(format!(
                ". {} && etcdctl --dial-timeout=2s {args}",
                h.profile().display()
            ))
            .output()?;
        Ok(out.into())
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.kill_etcd();
    }
}

/// The voting members' names, sorted, asked of one member at a time (a client over several
/// fails when one is down).
pub async fn voting_members(world: &World, fleet: &Fleet) -> Result<Vec<String>> {
    for h in &fleet.hosts {
        let Ok(mut c) = client(world, &[fleet.client_url(h.ip)]).await else {
            continue;
        };
        let Ok(list) = c.member_list().await else {
            continue;
        };
        let mut names: Vec<String> = list
            .members()
            .iter()
            .filter(|m| !m.is_learner())
            .map(|m| m.name().to_string())
            .collect();
        names.sort();
        return Ok(names);
    }
    bail!("no member answered the member list")
}

/// An etcd client with the world's admin-side certificate (the coordinator's, which has
/// clientAuth), for sampling and writing from the test.
pub async fn client(world: &World, endpoints: &[String]) -> Result<etcd_client::Client> {
    let opts = tls_options(world)?
        .with_connect_timeout(Duration::from_millis(500))
        .with_timeout(Duration::from_secs(2));
    Ok(etcd_client::Client::connect(endpoints, Some(opts)).await?)
}

/// [`client`] logged in as `user` (user, password) when given, under etcd RBAC (Pigsty v4),
/// with room for the login (etcd checks the password with bcrypt).
pub async fn client_as(
    world: &World,
    endpoints: &[String],
    user: Option<(&str, &str)>,
) -> Result<etcd_client::Client> {
    let mut opts = tls_options(world)?
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(5));
    if let Some((u, p)) = user {
        opts = opts.with_user(u, p);
    }
    Ok(etcd_client::Client::connect(endpoints, Some(opts)).await?)
}

/// mTLS with the coordinator's certificate, trusting the world's CA.
fn tls_options(world: &World) -> Result<etcd_client::ConnectOptions> {
    let ca = std::fs::read_to_string(world.p("ca/ca.crt"))?;
    let crt = std::fs::read_to_string(world.p("coordinator/coordinator.crt"))?;
    let key = std::fs::read_to_string(world.p("coordinator/coordinator.key"))?;
    Ok(etcd_client::ConnectOptions::new().with_tls(
        etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(ca))
            .identity(etcd_client::Identity::from_pem(crt, key)),
    ))
}

/// Whether one member answers a linearizable read through its own endpoint.
pub async fn member_up(world: &World, endpoint: &str) -> bool {
    match client(world, &[endpoint.to_string()]).await {
        Ok(mut c) => tokio::time::timeout(Duration::from_secs(1), c.get("health", None))
            .await
            .map(|r| r.is_ok())
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// Samples, every 20 ms, which members' etcd processes are running, and records the most
/// seen down at one moment. A process that is not running is what invariant 1 counts: an
/// election after a leader's restart leaves members briefly without a leader, but up. It
/// also records the etcd pids it saw per member, so a test can tell that it watched through
/// the restarts even when one falls between two samples.
pub struct HealthSampler {
    stop: Arc<AtomicBool>,
    /// Most members down in one sample.
    pub max_down: Arc<AtomicU64>,
    /// Samples taken.
    pub samples: Arc<AtomicU64>,
    /// The distinct etcd pids seen, per member (in the order of `hosts`).
    pids: Arc<std::sync::Mutex<Vec<std::collections::BTreeSet<i32>>>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl HealthSampler {
    /// Starts sampling the etcd processes of `hosts`.
    pub fn start(hosts: Vec<HostPaths>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let max_down = Arc::new(AtomicU64::new(0));
        let samples = Arc::new(AtomicU64::new(0));
        let pids = Arc::new(std::sync::Mutex::new(vec![
            std::collections::BTreeSet::new();
            hosts.len()
        ]));
        let (s, m, n, p) = (
            stop.clone(),
            max_down.clone(),
            samples.clone(),
            pids.clone(),
        );
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let now: Vec<Option<i32>> = hosts.iter().map(|h| h.etcd_pid()).collect();
                let down = now.iter().filter(|p| p.is_none()).count() as u64;
                if let Ok(mut seen) = p.lock() {
                    for (set, pid) in seen.iter_mut().zip(&now) {
                        set.extend(*pid);
                    }
                }
                m.fetch_max(down, Ordering::SeqCst);
                n.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Self {
            stop,
            max_down,
            samples,
            pids,
            handle: Some(handle),
        }
    }

    /// Per member, how many times its etcd pid changed while sampling (restarts seen).
    pub fn restarts_seen(&self) -> Vec<usize> {
        self.pids
            .lock()
            .map(|p| p.iter().map(|s| s.len().saturating_sub(1)).collect())
            .unwrap_or_default()
    }

    /// Stops; returns (max down, samples).
    pub fn stop(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        (
            self.max_down.load(Ordering::SeqCst),
            self.samples.load(Ordering::SeqCst),
        )
    }
}

/// Writes sequential keys in the background with retries; every acknowledged write is
/// checked at the end.
pub struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<String>>>,
    /// Writes that failed even after retries.
    pub lost: Arc<AtomicU64>,
    handle: Option<tokio::task::JoinHandle<()>>,
}

impl Writer {
    /// Starts writing `/quorum-test/<n>` through `endpoints`.
    pub async fn start(world: &World, endpoints: Vec<String>) -> Result<Self> {
        let mut c = client(world, &endpoints).await?;
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let lost = Arc::new(AtomicU64::new(0));
        let (s, a, l) = (stop.clone(), acked.clone(), lost.clone());
        let handle = tokio::spawn(async move {
            let mut n = 0u64;
            while !s.load(Ordering::SeqCst) {
                n += 1;
                let key = format!("/quorum-test/{n:08}");
                let deadline = Instant::now() + Duration::from_secs(15);
                loop {
                    if c.put(key.as_str(), "v", None).await.is_ok() {
                        if let Ok(mut v) = a.lock() {
                            v.push(key.clone());
                        }
                        break;
                    }
                    if Instant::now() > deadline {
                        l.fetch_add(1, Ordering::SeqCst);
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        Ok(Self {
            stop,
            acked,
            lost,
            handle: Some(handle),
        })
    }

    /// Stops, then checks every acknowledged key is readable; returns (acked, missing, lost).
    pub async fn finish(
        mut self,
        world: &World,
        endpoints: Vec<String>,
    ) -> Result<(usize, usize, u64)> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.await;
        }
        let acked = self.acked.lock().map(|v| v.clone()).unwrap_or_default();
        let mut c = client(world, &endpoints).await?;
        let resp = c
            .get(
                "/quorum-test/",
                Some(etcd_client::GetOptions::new().with_prefix()),
            )
            .await?;
        let present: std::collections::HashSet<String> = resp
            .kvs()
            .iter()
            .filter_map(|kv| kv.key_str().ok().map(str::to_string))
            .collect();
        let missing = acked.iter().filter(|k| !present.contains(*k)).count();
        Ok((acked.len(), missing, self.lost.load(Ordering::SeqCst)))
    }
}

/// Waits until every one of `endpoints` serves a quorum read (after a kill, the survivors may
/// first have to elect a leader).
pub async fn wait_members_up(world: &World, endpoints: &[String], timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut up = true;
        for ep in endpoints {
            up &= member_up(world, ep).await;
        }
        if up {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{endpoints:?} did not all serve a quorum read within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The host whose member leads now, asked of any of `endpoints` (one at a time: a client over
/// several fails when one is down).
pub async fn leader_host(world: &World, endpoints: &[String]) -> Result<IpAddr> {
    for ep in endpoints {
        let Ok(mut c) = client(world, std::slice::from_ref(ep)).await else {
            continue;
        };
        let (Ok(st), Ok(list)) = (c.status().await, c.member_list().await) else {
            continue;
        };
        if let Some(m) = list.members().iter().find(|m| m.id() == st.leader()) {
            if let Some(ip) = m.peer_urls().first().and_then(|u| host_of(u)) {
                return Ok(ip);
            }
        }
    }
    bail!("no member of {endpoints:?} named a leader")
}

/// `https://127.0.0.11:2380` -> 127.0.0.11.
fn host_of(url: &str) -> Option<IpAddr> {
    let rest = url.split("://").nth(1)?;
    let (host, _) = rest.split('/').next()?.rsplit_once(':')?;
    host.trim_matches(|c| c == '[' || c == ']').parse().ok()
}

/// Hands leadership to the member on `target` (etcdctl move-leader), so a test starts from a
/// known leader; waits until every member agrees.
pub async fn move_leader_to(world: &World, endpoints: &[String], target: IpAddr) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let leader = leader_host(world, endpoints).await;
        if let Ok(l) = &leader {
            if *l == target {
                return Ok(());
            }
            let leader_ep = endpoints
                .iter()
                .find(|e| host_of(e) == Some(*l))
                .context("the leader's endpoint")?;
            let mut c = client(world, std::slice::from_ref(leader_ep)).await?;
            let list = c.member_list().await?;
            let id = list
                .members()
                .iter()
                .find(|m| m.peer_urls().iter().any(|u| host_of(u) == Some(target)))
                .map(|m| m.id())
                .context("the target member")?;
            let _ = c.move_leader(id).await;
        }
        if Instant::now() > deadline {
            bail!("leadership did not move to {target} within 30 s (last: {leader:?})");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Samples, every 25 ms, the (raft term, leader) the first answering member names, in the
/// background. Kept by term, so a follower still naming the old leader for a moment after
/// an election does not count as another change.
pub struct LeaderSampler {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<std::collections::BTreeMap<u64, u64>>>,
    handle: Option<tokio::task::JoinHandle<()>>,
}

impl LeaderSampler {
    /// Starts sampling through `endpoints`.
    pub async fn start(world: &World, endpoints: Vec<String>) -> Result<Self> {
        let mut clients = Vec::new();
        for ep in &endpoints {
            clients.push(client(world, std::slice::from_ref(ep)).await?);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(std::collections::BTreeMap::new()));
        let (s, v) = (stop.clone(), seen.clone());
        let handle = tokio::spawn(async move {
            while !s.load(Ordering::SeqCst) {
                for c in &mut clients {
                    let st = tokio::time::timeout(Duration::from_millis(300), c.status()).await;
                    if let Ok(Ok(st)) = st {
                        if st.leader() != 0 {
                            if let Ok(mut v) = v.lock() {
                                v.entry(st.raft_term()).or_insert(st.leader());
                            }
                            break;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        });
        Ok(Self {
            stop,
            seen,
            handle: Some(handle),
        })
    }

    /// Stops; returns the leader of every term seen, by term.
    pub async fn stop(mut self) -> Vec<(u64, u64)> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.await;
        }
        self.seen
            .lock()
            .map(|v| v.iter().map(|(t, l)| (*t, *l)).collect())
            .unwrap_or_default()
    }
}
