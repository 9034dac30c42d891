//! PostgreSQL HA for the end-to-end tests: a lab of network namespaces on a bridge (one IP per
//! "host", 10.99.K.0/24 with K picked free), Patroni 3 with PostgreSQL 15 run as `postgres`,
//! and vip-manager 1.0 moving a VIP between the namespaces' `eth0`. Agents run inside the
//! namespaces and drive Patroni and vip-manager through their `exec` backend, as they drive
//! etcd. Debian's vip-manager 1.0 reads etcd's v2 API only, so the chain is v2 end to end:
//! etcd with `enable-v2`, Patroni with its `etcd:` (v2) DCS.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::{wait_for, World};

/// Runs `ip ARGS`; an error carries its stderr.
pub fn ip_cmd(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output()?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// One namespace "host" of a lab.
#[derive(Debug, Clone)]
pub struct LabHost {
    /// Its address on the lab's bridge.
    pub ip: IpAddr,
    /// The namespace.
    pub ns: String,
    /// The root-side end of its veth pair.
    pub veth: String,
}

/// A bridge in the root namespace (the coordinator and the test sit there, on 10.99.K.1) and
/// one namespace per host, each with a veth `eth0` on the bridge. Dropping it deletes them.
pub struct Lab {
    /// The third octet of this lab's subnet.
    pub k: u8,
    /// The bridge.
    pub bridge: String,
    /// The hosts.
    pub hosts: Vec<LabHost>,
}

impl Lab {
    /// A lab on a free 10.99.K.0/24 (K is taken by creating bridge `qbK`, which fails when
    /// another test owns it). Fails loudly when network namespaces are unavailable.
    pub fn new() -> Result<Self> {
        let start = std::process::id() as usize;
        for i in 0..150 {
            let k = (100 + (start + i * 7) % 150) as u8;
            let bridge = format!("qb{k}");
            if ip_cmd(&["link", "add", &bridge, "type", "bridge"]).is_err() {
                continue;
            }
            let lab = Self {
                k,
                bridge: bridge.clone(),
                hosts: Vec::new(),
            };
            ip_cmd(&["addr", "add", &format!("10.99.{k}.1/24"), "dev", &bridge])?;
            ip_cmd(&["link", "set", &bridge, "up"])?;
            return Ok(lab);
        }
        bail!("cannot create a bridge for the lab (`ip link add qbK type bridge` failed for every K): the tests need root and network namespace support")
    }

    /// The address `10.99.K.last`.
    pub fn addr(&self, last: u8) -> IpAddr {
        IpAddr::from([10, 99, self.k, last])
    }

    /// The bridge's own address, where the coordinator listens.
    pub fn gateway(&self) -> IpAddr {
        self.addr(1)
    }

    /// Adds host `10.99.K.last` in namespace `qK-hLAST`.
    pub fn add_host(&mut self, last: u8) -> Result<IpAddr> {
        let ip = self.addr(last);
        let ns = format!("q{}-h{last}", self.k);
        let veth = format!("q{}h{last}", self.k);
        ip_cmd(&["netns", "add", &ns])?;
        self.hosts.push(LabHost {
            ip,
            ns: ns.clone(),
            veth: veth.clone(),
        });
        ip_cmd(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ])?;
        ip_cmd(&["link", "set", &veth, "master", &self.bridge, "up"])?;
        ip_cmd(&["-n", &ns, "link", "set", "lo", "up"])?;
        ip_cmd(&["-n", &ns, "addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
        ip_cmd(&["-n", &ns, "link", "set", "eth0", "up"])?;
        Ok(ip)
    }

    /// The namespace of `ip`.
    pub fn ns(&self, ip: IpAddr) -> Result<&str> {
        self.hosts
            .iter()
            .find(|h| h.ip == ip)
            .map(|h| h.ns.as_str())
            .with_context(|| format!("{ip} is not a host of the lab"))
    }

    /// Whether `addr` is on `eth0` inside the namespace of `ip`.
    pub fn has_addr(&self, ip: IpAddr, addr: IpAddr) -> Result<bool> {
        let out = Command::new("ip")
            .args(["-n", self.ns(ip)?, "-o", "addr", "show", "dev", "eth0"])
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(text.contains(&format!(" {addr}/")))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for h in &self.hosts {
            let _ = ip_cmd(&["link", "del", &h.veth]);
            let _ = ip_cmd(&["netns", "del", &h.ns]);
        }
        let _ = ip_cmd(&["link", "del", &self.bridge]);
    }
}

/// Ownership and modes Patroni needs: PostgreSQL refuses to run as root.
fn postgres_ids() -> Result<(nix::unistd::Uid, nix::unistd::Gid)> {
    let user = nix::unistd::User::from_name("postgres")?
        .context("no `postgres` user: install postgresql-15")?;
    Ok((user.uid, user.gid))
}

fn chown_postgres(path: &Path) -> Result<()> {
    let (u, g) = postgres_ids()?;
    nix::unistd::chown(path, Some(u), Some(g))?;
    Ok(())
}

fn chmod(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// One PostgreSQL instance: Patroni and vip-manager on a lab host.
#[derive(Debug, Clone)]
pub struct PgHost {
    /// The host.
    pub ip: IpAddr,
    /// Its namespace.
    pub ns: String,
    /// `pg_seq`.
    pub seq: u32,
    /// Its root inside the test dir (the world dir is made traversable for `postgres`).
    pub root: PathBuf,
}

impl PgHost {
    /// patroni.yml.
    pub fn patroni_yml(&self) -> PathBuf {
        self.root.join("etc/patroni/patroni.yml")
    }
    /// vip-manager's config.
    pub fn vip_yml(&self) -> PathBuf {
        self.root.join("etc/default/vip-manager.yml")
    }
    /// PostgreSQL's and Patroni's own dir (owned by postgres).
    pub fn pg_dir(&self) -> PathBuf {
        self.root.join("pg")
    }
    /// Patroni's pid file.
    pub fn patroni_pid_file(&self) -> PathBuf {
        self.pg_dir().join("patroni.pid")
    }
    /// vip-manager's pid file.
    pub fn vip_pid_file(&self) -> PathBuf {
        self.root.join("run/vip-manager.pid")
    }
    /// Patroni's log.
    pub fn patroni_log(&self) -> PathBuf {
        self.pg_dir().join("patroni.log")
    }
    /// The REST API.
    pub fn api(&self) -> SocketAddr {
        SocketAddr::new(self.ip, 8008)
    }
    /// Patroni's pid, if it runs.
    pub fn patroni_pid(&self) -> Option<i32> {
        crate::live_pid(&self.patroni_pid_file())
    }
    /// How many times the exec backend restarted vip-manager.
    pub fn vip_restarts(&self) -> usize {
        std::fs::read_to_string(self.root.join("log/vip-restarts"))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }
    /// How many times the exec backend restarted Patroni.
    pub fn patroni_restarts(&self) -> usize {
        std::fs::read_to_string(self.root.join("log/patroni-restarts"))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    fn status_cmd(pidfile: &Path) -> String {
        format!(
            "[/bin/sh, -c, 'p=$(cat {} 2>/dev/null) && [ -n \"$p\" ] && grep -q \"^State:[[:space:]]*[RSDI]\" /proc/$p/status']",
            pidfile.display()
        )
    }

    /// The agent config lines for this host: its paths and the exec backend around
    /// start-stop-daemon for Patroni (as `postgres`) and vip-manager.
    pub fn agent_config(&self) -> String {
        let r = |p: PathBuf| p.display().to_string();
        let ppid = r(self.patroni_pid_file());
        let plog = r(self.patroni_log());
        let pyml = r(self.patroni_yml());
        let pgdir = r(self.pg_dir());
        let p_start = format!("start-stop-daemon --start --background --oknodo --make-pidfile --pidfile {ppid} --chuid postgres --chdir {pgdir} --output {plog} --startas /usr/bin/patroni -- {pyml}");
        let p_stop =
            format!("start-stop-daemon --stop --oknodo --pidfile {ppid} --retry TERM/60/KILL/5 --remove-pidfile");
        let vpid = r(self.vip_pid_file());
        let vlog = r(self.root.join("log/vip-manager.log"));
        let vyml = r(self.vip_yml());
        let v_start = format!("start-stop-daemon --start --background --oknodo --make-pidfile --pidfile {vpid} --output {vlog} --exec /usr/bin/vip-manager -- --config={vyml}");
        let v_stop =
            format!("start-stop-daemon --stop --oknodo --pidfile {vpid} --retry TERM/10/KILL/5 --remove-pidfile");
        let vrestarts = r(self.root.join("log/vip-restarts"));
        let prestarts = r(self.root.join("log/patroni-restarts"));
        let root = r(self.root.clone());
        let split = |c: &str| format!("[{}]", c.split(' ').collect::<Vec<_>>().join(", "));
        format!(
            "paths:\n  etcd_conf: {root}/etc/etcd/etcd.conf\n  etcd_ca: {root}/etc/etcd/ca.crt\n  etcd_cert: {root}/etc/etcd/server.crt\n  etcd_key: {root}/etc/etcd/server.key\n  etcdctl_profile: {root}/etc/profile.d/etcdctl.sh\n  patroni_conf: {pyml}\n  vip_conf: {vyml}\n  etcd_data: {root}/data/etcd\n  journal_dir: {root}/var/lib/quorum\n\
             allowed_prefixes: [{root}]\n\
             owners:\n  etcd: {{ user: root, group: root }}\n  profile: {{ user: root, group: root }}\n\
             service_backend: exec\n\
             exec:\n  patroni:\n    start: {ps}\n    stop: {pst}\n    restart: [/bin/sh, -c, 'echo restart >> {prestarts} && {p_stop} && {p_start}']\n    reload: [start-stop-daemon, --stop, --signal, HUP, --pidfile, {ppid}]\n    status: {pstat}\n  vip_manager:\n    start: {vs}\n    stop: {vst}\n    restart: [/bin/sh, -c, 'echo restart >> {vrestarts} && {v_stop} && {v_start}']\n    status: {vstat}\n",
            ps = split(&p_start),
            pst = split(&p_stop),
            pstat = Self::status_cmd(&self.patroni_pid_file()),
            vs = split(&v_start),
            vst = split(&v_stop),
            vstat = Self::status_cmd(&self.vip_pid_file()),
        )
    }
}

/// A two-or-more-node PostgreSQL cluster under Patroni with a VIP, on lab hosts.
pub struct PgCluster {
    /// `pg_cluster`.
    pub name: String,
    /// Its instances.
    pub hosts: Vec<PgHost>,
    /// The VIP.
    pub vip: IpAddr,
    /// The lab's subnet prefix, e.g. `10.99.123`.
    pub net: String,
    /// Pigsty v4: Patroni logs in to etcd with this cluster's own user and password (its
    /// `etcd3:` DCS, no vip-manager: vip-manager 1.x reads only the v2 API). `None`: Pigsty
    /// v3, `etcd:` (v2) DCS and vip-manager.
    pub etcd_login: Option<(String, String)>,
}

/// Patroni's REST credentials in these tests (Pigsty's defaults).
pub const PATRONI_USER: &str = "postgres";
/// The password.
pub const PATRONI_PASSWORD: &str = "Patroni.API";
/// PostgreSQL's superuser password.
pub const PG_PASSWORD: &str = "postgres-test";

impl PgCluster {
    /// Lays out `ips` (pg_seq 1, 2, ...) with the VIP `10.99.K.100`; makes the world dir
    /// traversable for `postgres` and gives Patroni a copy of the coordinator's client
    /// certificate for etcd.
    pub fn new(world: &World, lab: &Lab, name: &str, ips: &[IpAddr]) -> Result<Self> {
        chmod(world.dir.path(), 0o755)?;
        let hosts_dir = world.dir.path().join("hosts");
        std::fs::create_dir_all(&hosts_dir)?;
        chmod(&hosts_dir, 0o755)?;
        let mut hosts = Vec::new();
        for (i, ip) in ips.iter().enumerate() {
            let h = PgHost {
                ip: *ip,
                ns: lab.ns(*ip)?.to_string(),
                seq: i as u32 + 1,
                root: hosts_dir.join(ip.to_string()),
            };
            for d in [
                "etc/patroni",
                "etc/default",
                "etc/etcd",
                "etc/profile.d",
                "data/etcd",
                "var/lib/quorum",
                "run",
                "log",
                "pg/certs",
            ] {
                std::fs::create_dir_all(h.root.join(d))?;
            }
            chmod(&h.root, 0o755)?;
            for (src, dst, mode) in [
                ("ca/ca.crt", "ca.crt", 0o644),
                ("coordinator/coordinator.crt", "client.crt", 0o644),
                ("coordinator/coordinator.key", "client.key", 0o600),
            ] {
                let to = h.pg_dir().join("certs").join(dst);
                std::fs::copy(world.dir.path().join(src), &to)?;
                chmod(&to, mode)?;
                chown_postgres(&to)?;
            }
            chown_postgres(&h.pg_dir().join("certs"))?;
            chown_postgres(&h.pg_dir())?;
            chmod(&h.pg_dir(), 0o700)?;
            hosts.push(h);
        }
        Ok(Self {
            name: name.to_string(),
            hosts,
            vip: lab.addr(100),
            net: format!("10.99.{}", lab.k),
            etcd_login: None,
        })
    }

    /// The inventory group of this cluster (for [`crate::etcd::Fleet::write_inventory_with`]).
    pub fn inventory_group(&self) -> String {
        let mut s = format!("    {}:\n      hosts:\n", self.name);
        for h in &self.hosts {
            let role = if h.seq == 1 { "primary" } else { "replica" };
            s.push_str(&format!(
                "        {}: {{ pg_seq: {}, pg_role: {role} }}\n",
                h.ip, h.seq
            ));
        }
        s.push_str(&format!(
            "      vars:\n        pg_cluster: {}\n        pg_vip_enabled: {}\n        pg_vip_address: {}/24\n        pg_vip_interface: eth0\n        pg_namespace: /service\n        patroni_username: {PATRONI_USER}\n        patroni_password: {PATRONI_PASSWORD}\n",
            self.name,
            self.etcd_login.is_none(),
            self.vip
        ));
        if let Some((_, password)) = &self.etcd_login {
            s.push_str(&format!("        pg_etcd_password: {password}\n"));
        }
        s
    }

    /// Writes patroni.yml and vip-manager's config on every instance, naming `etcd` (`ip:port`
    /// entries) as Pigsty's pgsql playbook would.
    pub fn write_configs(&self, etcd: &[String]) -> Result<()> {
        let hosts_list: String = etcd.iter().map(|e| format!("    - {e}\n")).collect();
        // Pigsty v4's oltp.yml: `etcd3:` with the cluster's own etcd user.
        let (dcs, login) = match &self.etcd_login {
            Some((user, password)) => (
                "etcd3",
                format!("  username: {user}\n  password: {password}\n"),
            ),
            None => ("etcd", String::new()),
        };
        let endpoints: String = etcd.iter().map(|e| format!("  - https://{e}\n")).collect();
        for h in &self.hosts {
            let certs = h.pg_dir().join("certs");
            let c = |f: &str| certs.join(f).display().to_string();
            let pg = h.pg_dir();
            let patroni = format!(
                "# rendered by the test as Pigsty's pgsql role would\nscope: {name}\nnamespace: /service/\nname: {name}-{seq}\n\
                 log:\n  level: INFO\n\
                 restapi:\n  listen: 0.0.0.0:8008\n  connect_address: {ip}:8008\n  authentication:\n    username: {PATRONI_USER}\n    password: {PATRONI_PASSWORD}\n\
                 {dcs}:\n  hosts:\n{hosts_list}  protocol: https\n  cacert: {ca}\n  cert: {crt}\n  key: {key}\n{login}\
                 bootstrap:\n  dcs:\n    ttl: 30\n    loop_wait: 2\n    retry_timeout: 10\n    maximum_lag_on_failover: 1048576\n    postgresql:\n      use_pg_rewind: true\n  initdb:\n    - encoding: UTF8\n    - locale: C.UTF-8\n\
                 postgresql:\n  listen: 0.0.0.0:5432\n  connect_address: {ip}:5432\n  data_dir: {data}\n  bin_dir: /usr/lib/postgresql/15/bin\n  pgpass: {pgpass}\n\
                 \x20 authentication:\n    superuser: {{username: postgres, password: {PG_PASSWORD}}}\n    replication: {{username: replicator, password: replicator-test}}\n    rewind: {{username: postgres, password: {PG_PASSWORD}}}\n\
                 \x20 parameters:\n    unix_socket_directories: {sock}\n\
                 \x20 pg_hba:\n    - local all all trust\n    - host all all 127.0.0.0/8 scram-sha-256\n    - host all all {net}.0/24 scram-sha-256\n    - host replication replicator {net}.0/24 scram-sha-256\n",
                name = self.name,
                seq = h.seq,
                ip = h.ip,
                ca = c("ca.crt"),
                crt = c("client.crt"),
                key = c("client.key"),
                data = pg.join("data").display(),
                pgpass = pg.join("pgpass").display(),
                sock = pg.display(),
                net = self.net,
            );
            std::fs::write(h.patroni_yml(), patroni)?;
            chmod(&h.patroni_yml(), 0o644)?;
            let vip = format!(
                "ip: {vip}\nnetmask: 24\ninterface: eth0\ntrigger-key: \"/service/{name}/leader\"\ntrigger-value: \"{name}-{seq}\"\ndcs-type: etcd\ndcs-endpoints:\n{endpoints}etcd-ca-file: {ca}\netcd-cert-file: {crt}\netcd-key-file: {key}\ninterval: 1000\nretry-after: 250\nretry-num: 3\n",
                vip = self.vip,
                name = self.name,
                seq = h.seq,
                ca = c("ca.crt"),
                crt = c("client.crt"),
                key = c("client.key"),
            );
            std::fs::write(h.vip_yml(), vip)?;
        }
        Ok(())
    }

    /// Starts every instance's agent inside its namespace.
    pub fn start_agents(&self, world: &mut World) -> Result<()> {
        for h in &self.hosts {
            world.start_agent_in(&h.ip.to_string(), &h.agent_config(), Some(&h.ns))?;
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

    /// Starts Patroni through `quorum service start patroni`, the first instance first (it
    /// bootstraps), then vip-manager everywhere; waits for a leader, running replicas and the
    /// VIP on the leader.
    pub fn bring_up(&self, world: &World, lab: &Lab) -> Result<()> {
        let first = &self.hosts[0];
        world
            .admin(&[
                "service",
                "start",
                "patroni",
                "--hosts",
                &first.ip.to_string(),
            ])?
            .ok()?;
        wait_for(
            "the first instance to lead",
            Duration::from_secs(60),
            || {
                let c = self.cluster().ok()?;
                (leader_of(&c).as_deref() == Some(&format!("{}-1", self.name))).then_some(())
            },
        )
        .with_context(|| self.logs())?;
        let rest: Vec<String> = self.hosts[1..].iter().map(|h| h.ip.to_string()).collect();
        world
            .admin(&["service", "start", "patroni", "--hosts", &rest.join(",")])?
            .ok()?;
        self.wait_all_running(Duration::from_secs(90))?;
        if self.etcd_login.is_some() {
            return Ok(());
        }
        let all: Vec<String> = self.hosts.iter().map(|h| h.ip.to_string()).collect();
        world
            .admin(&["service", "start", "vip-manager", "--hosts", &all.join(",")])?
            .ok()?;
        wait_for("the VIP on the leader", Duration::from_secs(30), || {
            let holders = self.vip_holders(lab).ok()?;
            (holders == vec![first.ip]).then_some(())
        })?;
        Ok(())
    }

    /// Waits until every instance runs and one leads.
    pub fn wait_all_running(&self, timeout: Duration) -> Result<()> {
        let n = self.hosts.len();
        wait_for("every instance running", timeout, || {
            let c = self.cluster().ok()?;
            let members = c["members"].as_array()?;
            let running = members
                .iter()
                .filter(|m| matches!(m["state"].as_str(), Some("running" | "streaming")))
                .count();
            (running == n && leader_of(&c).is_some()).then_some(())
        })
        .with_context(|| self.logs())
    }

    /// `GET /cluster` from the first instance that answers.
    pub fn cluster(&self) -> Result<serde_json::Value> {
        let mut last = anyhow::anyhow!("no instance");
        for h in &self.hosts {
            match http_get(h.api(), "/cluster") {
                Ok((200, body)) => return Ok(serde_json::from_str(&body)?),
                Ok((code, body)) => last = anyhow::anyhow!("{code}: {body}"),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The hosts whose `eth0` holds the VIP now.
    pub fn vip_holders(&self, lab: &Lab) -> Result<Vec<IpAddr>> {
        let mut out = Vec::new();
        for h in &self.hosts {
            if lab.has_addr(h.ip, self.vip)? {
                out.push(h.ip);
            }
        }
        Ok(out)
    }

    /// The etcd hosts each instance's patroni.yml names now.
    pub fn patroni_hosts(&self) -> Result<Vec<Vec<String>>> {
        self.hosts
            .iter()
            .map(|h| {
                let text = std::fs::read_to_string(h.patroni_yml())?;
                Ok(quorum_proto::patch::read_patroni_hosts(&text)?)
            })
            .collect()
    }

    /// The endpoints each instance's vip-manager config names now.
    pub fn vip_endpoints(&self) -> Result<Vec<Vec<String>>> {
        self.hosts
            .iter()
            .map(|h| {
                let text = std::fs::read_to_string(h.vip_yml())?;
                Ok(quorum_proto::patch::read_vip_endpoints(&text)?)
            })
            .collect()
    }

    /// Every instance's Patroni log, for a failure message.
    pub fn logs(&self) -> String {
        self.hosts
            .iter()
            .map(|h| {
                let log = std::fs::read_to_string(h.patroni_log()).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(25).collect();
                format!(
                    "--- patroni {} (last lines)\n{}",
                    h.ip,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Stops every Patroni (it stops its PostgreSQL), then kills whatever is left by pid:
    /// Patroni, the postmaster, vip-manager.
    pub fn stop(&self) {
        for h in &self.hosts {
            let _ = Command::new("start-stop-daemon")
                .args(["--stop", "--oknodo", "--pidfile"])
                .arg(h.patroni_pid_file())
                .args(["--retry", "TERM/20/KILL/5", "--remove-pidfile"])
                .output();
            let postmaster = h.pg_dir().join("data/postmaster.pid");
            let kill = |pid: Option<i32>| {
                if let Some(pid) = pid {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            };
            kill(crate::live_pid(&postmaster));
            kill(crate::live_pid(&h.vip_pid_file()));
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The leader's name in a `GET /cluster` answer.
pub fn leader_of(c: &serde_json::Value) -> Option<String> {
    c["members"].as_array()?.iter().find_map(|m| {
        (m["role"] == "leader" || m["role"] == "master")
            .then(|| m["name"].as_str().map(str::to_string))
            .flatten()
    })
}

/// The leader's timeline in a `GET /cluster` answer.
pub fn timeline_of(c: &serde_json::Value) -> Option<u64> {
    c["members"].as_array()?.iter().find_map(|m| {
        (m["role"] == "leader" || m["role"] == "master")
            .then(|| m["timeline"].as_u64())
            .flatten()
    })
}

/// A plain HTTP GET; returns (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no HTTP status")?;
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Runs SQL on the instance at `host` (or the VIP) as the superuser.
pub fn psql(host: IpAddr, sql: &str) -> Result<String> {
    let out = Command::new("psql")
        .arg(format!(
            "host={host} port=5432 user=postgres dbname=postgres connect_timeout=3"
        ))
        .args(["-qtAX", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .env("PGPASSWORD", PG_PASSWORD)
        .output()?;
    if !out.status.success() {
        bail!(
            "psql at {host}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// What the watcher saw while an SOP ran.
#[derive(Debug, Default, Clone)]
pub struct Watch {
    /// Values of the leader key read from etcd's v2 API (deduplicated runs).
    pub leader_key: Vec<String>,
    /// Samples where an etcd member answered that the leader key does not exist.
    pub leader_key_absent: u64,
    /// Samples where no etcd member answered.
    pub leader_key_unread: u64,
    /// Writes through the VIP that committed.
    pub writes_ok: u64,
    /// Writes through the VIP that failed, with the error.
    pub writes_failed: Vec<String>,
    /// Leader names seen (in order, deduplicated runs).
    pub leaders: Vec<String>,
    /// Samples where Patroni reported no leader.
    pub no_leader: u64,
    /// Timelines seen (deduplicated runs).
    pub timelines: Vec<u64>,
    /// Samples where the VIP was not on exactly the expected host, with what was seen.
    pub vip_off: Vec<String>,
    /// Samples taken.
    pub samples: u64,
}

/// Reads Patroni's leader key from etcd's v2 API (where Patroni's `etcd:` DCS and vip-manager
/// 1.0 keep it) with `curl`, trying the members in turn.
#[derive(Debug, Clone)]
pub struct LeaderKey {
    /// `https://ip:port` of every etcd host that may be a member during the test.
    pub endpoints: Vec<String>,
    /// The key, e.g. `/service/pg-test/leader`.
    pub key: String,
    /// CA, client certificate and key (PEM files).
    pub tls: [PathBuf; 3],
}

impl LeaderKey {
    /// `Some(Some(value))`, `Some(None)` when a member says the key does not exist, `None`
    /// when no member answered.
    pub fn read(&self) -> Option<Option<String>> {
        for ep in &self.endpoints {
            let out = Command::new("curl")
                .args(["-s", "--max-time", "2", "--cacert"])
                .arg(&self.tls[0])
                .arg("--cert")
                .arg(&self.tls[1])
                .arg("--key")
                .arg(&self.tls[2])
                .arg(format!("{ep}/v2/keys{}", self.key))
                .output()
                .ok()?;
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
                continue;
            };
            if let Some(value) = v["node"]["value"].as_str() {
                return Some(Some(value.to_string()));
            }
            if v["errorCode"] == 100 {
                return Some(None);
            }
        }
        None
    }
}

/// Writes through the VIP and samples the leader, its timeline and the VIP's holders every
/// ~300 ms in a background thread, until stopped.
pub struct Watcher {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Watch>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watcher {
    /// Starts watching `pg`: the VIP must stay on `vip_on`.
    pub fn start(pg: &PgCluster, vip_on: IpAddr, etcd: LeaderKey) -> Result<Self> {
        psql(
            pg.vip,
            "CREATE TABLE IF NOT EXISTS quorum_w (id bigserial PRIMARY KEY, at timestamptz DEFAULT now())",
        )?;
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Watch::default()));
        let hosts: Vec<(IpAddr, String)> = pg.hosts.iter().map(|h| (h.ip, h.ns.clone())).collect();
        let apis: Vec<SocketAddr> = pg.hosts.iter().map(|h| h.api()).collect();
        let vip = pg.vip;
        let (st, sn) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                let write = psql(vip, "INSERT INTO quorum_w DEFAULT VALUES");
                let key = etcd.read();
                let cluster = apis.iter().find_map(|a| {
                    let (code, body) = http_get(*a, "/cluster").ok()?;
                    (code == 200)
                        .then(|| serde_json::from_str::<serde_json::Value>(&body).ok())
                        .flatten()
                });
                let mut holders = Vec::new();
                for (ip, ns) in &hosts {
                    let out = Command::new("ip")
                        .args(["-n", ns, "-o", "addr", "show", "dev", "eth0"])
                        .output();
                    if let Ok(o) = out {
                        if String::from_utf8_lossy(&o.stdout).contains(&format!(" {vip}/")) {
                            holders.push(*ip);
                        }
                    }
                }
                if let Ok(mut w) = sn.lock() {
                    w.samples += 1;
                    match key {
                        Some(Some(v)) => {
                            if w.leader_key.last() != Some(&v) {
                                w.leader_key.push(v);
                            }
                        }
                        Some(None) => w.leader_key_absent += 1,
                        None => w.leader_key_unread += 1,
                    }
                    match write {
                        Ok(_) => w.writes_ok += 1,
                        Err(e) => w.writes_failed.push(e.to_string()),
                    }
                    match cluster.as_ref().and_then(leader_of) {
                        Some(l) => {
                            if w.leaders.last() != Some(&l) {
                                w.leaders.push(l);
                            }
                        }
                        None => w.no_leader += 1,
                    }
                    if let Some(t) = cluster.as_ref().and_then(timeline_of) {
                        if w.timelines.last() != Some(&t) {
                            w.timelines.push(t);
                        }
                    }
                    if holders != vec![vip_on] {
                        w.vip_off.push(format!("{holders:?}"));
                    }
                }
                std::thread::sleep(Duration::from_millis(300));
            }
        });
        Ok(Self {
            stop,
            seen,
            thread: Some(thread),
        })
    }

    /// What was seen so far.
    pub fn snapshot(&self) -> Watch {
        self.seen.lock().map(|w| w.clone()).unwrap_or_default()
    }

    /// Stops and returns what was seen.
    pub fn finish(mut self) -> Watch {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.snapshot()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
