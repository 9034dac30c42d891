//! The host lab: Debian bookworm hosts, each booted by `systemd-nspawn` with systemd as init,
//! in its own network namespace with an address on a bridge the lab creates (10.77.K.0/24,
//! the bridge `qlK` on 10.77.K.1), each an overlay on one base root built once by
//! `scripts/lab-base`. The recipe and this machine's three workarounds (no D-Bus, /run on disk,
//! networkd not enabled) are in `../shared/reference/host-lab-nspawn.md`.
//!
//! Hosts are driven as an operator would drive a server: `nsenter` into the guest's
//! namespaces runs `systemctl`, `dpkg -i`, `journalctl` there. Faults a loopback lab cannot
//! make: a host's link taken down on the bridge (a partition), a power cut (SIGKILL to the
//! guest's init: every process of the host dies at once, its disk stays) and a boot again.
//!
//! Everything a lab makes is its own: the temp dir with the overlays, the bridge, the cgroups
//! `qlab.<host>` and the nspawn processes (by pid); dropping the lab powers the hosts off and
//! removes them. `QUORUM_KEEP=1` keeps the lab's dir (the hosts' overlay upper dirs: their
//! logs, configs and journals) after the test; `QUORUM_LAB_HOLD=SECONDS` keeps the hosts
//! running that long after it, for `scripts/lab-enter NAME`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::pg::ip_cmd;
use crate::{wait_for, CliOutput};

/// The base root, built (or found in its cache) by `scripts/lab-base`.
pub fn base() -> Result<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/lab-base");
    let out = Command::new(&script)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}): {}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let path = String::from_utf8(out.stdout)?.trim().to_string();
    Ok(PathBuf::from(path))
}

/// The packages `packaging/build.sh` built: (quorum-agent .deb, quorum .deb). Missing ones
/// are an error that says how to build them.
pub fn packages() -> Result<(PathBuf, PathBuf)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/packages");
    let find = |prefix: &str| -> Result<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
            .with_context(|| {
                format!(
                    "{}: no packages; build them with packaging/build.sh (scripts/test does)",
                    dir.display()
                )
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(prefix) && n.ends_with(".deb"))
            })
            .collect();
        found.sort();
        found.pop().with_context(|| {
            format!(
                "no {prefix}*.deb in {}; build it with packaging/build.sh (scripts/test does)",
                dir.display()
            )
        })
    };
    Ok((find("quorum-agent_")?, find("quorum_")?))
}

/// One host of a lab.
#[derive(Debug)]
pub struct Host {
    /// Its name (machine name and hostname): `l<K>h<last octet>`.
    pub name: String,
    /// Its address on the lab's bridge.
    pub ip: IpAddr,
    /// `<lab dir>/hosts/<name>`: upper, work, merged (the root the guest boots), console.log.
    pub dir: PathBuf,
    nspawn: Option<Child>,
    /// The guest's init as a pid of this machine, once it runs.
    leader: Option<i32>,
}

impl Host {
    /// The guest's root as the host machine sees it (the mounted overlay).
    pub fn root(&self) -> PathBuf {
        self.dir.join("merged")
    }

    /// A path of the guest (`/etc/etcd/etcd.conf`) as the host machine sees it.
    pub fn path(&self, guest: &str) -> PathBuf {
        self.root().join(guest.trim_start_matches('/'))
    }

    /// The host-side end of its veth on the bridge (`vb-<name>`, named by nspawn).
    pub fn veth(&self) -> String {
        format!("vb-{}", self.name)
    }
}

/// A lab of hosts on one bridge. Dropping it powers them off and removes everything.
pub struct Lab {
    /// The third octet of the lab's subnet.
    pub k: u8,
    /// The bridge.
    pub bridge: String,
    /// The lab's dir (overlays).
    pub dir: tempfile::TempDir,
    /// The base root every host overlays.
    pub base: PathBuf,
    /// The hosts.
    pub hosts: Vec<Host>,
}

impl Lab {
    /// A lab on a free 10.77.K.0/24: K is taken by creating the bridge `qlK`, which fails
    /// when another lab owns it. Builds the base root first when it is not cached.
    pub fn new() -> Result<Self> {
        let base = base()?;
        let keep = std::env::var_os("QUORUM_KEEP").is_some();
        let dir = tempfile::Builder::new()
            .prefix("quorum-lab-")
            .disable_cleanup(keep)
            .tempdir_in(base.parent().context("the base has no parent dir")?)?;
        if keep {
            eprintln!("lab dir kept: {}", dir.path().display());
        }
        let start = std::process::id() as usize;
        for i in 0..200 {
            let k = (20 + (start + i * 7) % 200) as u8;
            let bridge = format!("ql{k}");
            if ip_cmd(&["link", "add", &bridge, "type", "bridge"]).is_err() {
                continue;
            }
            let lab = Self {
                k,
                bridge: bridge.clone(),
                dir,
                base,
                hosts: Vec::new(),
            };
            ip_cmd(&["addr", "add", &format!("10.77.{k}.1/24"), "dev", &bridge])?;
            ip_cmd(&["link", "set", &bridge, "up"])?;
            return Ok(lab);
        }
        bail!("cannot create a bridge for the host lab (`ip link add qlK type bridge` failed for every K): the lab needs root")
    }

    /// The address `10.77.K.last`.
    pub fn addr(&self, last: u8) -> IpAddr {
        IpAddr::from([10, 77, self.k, last])
    }

    /// The bridge's own address (the machine the tests run on).
    pub fn gateway(&self) -> IpAddr {
        self.addr(1)
    }

    /// The host on `ip`.
    pub fn host(&self, ip: IpAddr) -> Result<&Host> {
        self.hosts
            .iter()
            .find(|h| h.ip == ip)
            .with_context(|| format!("{ip} is not a host of the lab"))
    }

    fn host_mut(&mut self, ip: IpAddr) -> Result<&mut Host> {
        self.hosts
            .iter_mut()
            .find(|h| h.ip == ip)
            .with_context(|| format!("{ip} is not a host of the lab"))
    }

    /// Adds the host `10.77.K.last`, boots it and waits until its systemd says `running`.
    pub fn add_host(&mut self, last: u8) -> Result<IpAddr> {
        let ip = self.addr(last);
        let name = format!("l{}h{last}", self.k);
        let dir = self.dir.path().join("hosts").join(&name);
        for d in ["upper", "work", "merged"] {
            std::fs::create_dir_all(dir.join(d))?;
        }
        let host = Host {
            name: name.clone(),
            ip,
            dir,
            nspawn: None,
            leader: None,
        };
        let root = host.root();
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            self.base.display(),
            host.dir.join("upper").display(),
            host.dir.join("work").display()
        );
        run_ok(Command::new("mount").args([
            "-t",
            "overlay",
            &format!("qlab-{name}"),
            "-o",
            &opts,
            &root.display().to_string(),
        ]))?;
        self.hosts.push(host);
        std::fs::write(root.join("etc/hostname"), format!("{name}\n"))?;
        let id = format!("{:032x}\n", rand_u128());
        std::fs::write(root.join("etc/machine-id"), id)?;
        std::fs::create_dir_all(root.join("etc/systemd/network"))?;
        std::fs::write(
            root.join("etc/systemd/network/10-host0.network"),
            format!(
                "[Match]\nName=host0\n[Network]\nAddress={ip}/24\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n"
            ),
        )?;
        std::fs::write(
            root.join("etc/hosts"),
            format!("127.0.0.1 localhost\n{ip} {name}\n"),
        )?;
        // The etcd of the test run's leg: Debian bookworm's 3.4 from the base, or (with
        // QUORUM_TEST_ETCD_DIR, the 3.5 leg) that dir's etcd and etcdctl over it.
        let selected = crate::etcd_dir();
        if selected != Path::new("/usr/bin") {
            for bin in ["etcd", "etcdctl"] {
                std::fs::copy(selected.join(bin), root.join("usr/bin").join(bin))
                    .with_context(|| format!("copying {bin} from {}", selected.display()))?;
            }
        }
        self.boot(ip)?;
        Ok(ip)
    }

    /// Boots the host (again, after a power-off or a power cut; its disk is as it was left)
    /// and waits until its systemd is up.
    pub fn boot(&mut self, ip: IpAddr) -> Result<()> {
        let bridge = self.bridge.clone();
        let host = self.host_mut(ip)?;
        if let Some(child) = host.nspawn.as_mut() {
            if child.try_wait()?.is_none() {
                bail!("{} is running already", host.name);
            }
        }
        let name = host.name.clone();
        for h in ["systemd", "unified"] {
            std::fs::create_dir_all(format!("/sys/fs/cgroup/{h}/qlab.{name}"))?;
        }
        let console = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(host.dir.join("console.log"))?;
        // setsid, then into the host's own cgroups, then a private mount namespace with a
        // tmpfs on /run/systemd (nspawn refuses to clean up a runtime dir that is on disk);
        // every step execs, so the child's pid is nspawn's.
        let script = format!(
            "for h in systemd unified; do echo $$ > /sys/fs/cgroup/$h/qlab.{name}/cgroup.procs; done
exec unshare --mount --propagation private sh -c 'mount -t tmpfs -o mode=755 nspawnrun /run/systemd && exec systemd-nspawn \"$@\"' sh \
 -D {root} -M {name} -b --register=no --keep-unit --network-bridge={bridge} --console=passive --link-journal=no",
            root = host.root().display(),
        );
        let mut cmd = Command::new("setsid");
        cmd.args(["bash", "-c", &script])
            .stdin(Stdio::null())
            .stdout(console.try_clone()?)
            .stderr(console);
        host.nspawn = Some(cmd.spawn().context("starting systemd-nspawn")?);
        let started = Instant::now();
        let leader = wait_for(
            &format!("{name}'s init to start"),
            Duration::from_secs(30),
            || self.leader(ip).ok(),
        )?;
        self.host_mut(ip)?.leader = Some(leader);
        let out = wait_for(
            &format!("{name}'s systemd to finish booting"),
            Duration::from_secs(60),
            || {
                let out = nsenter(leader, &["systemctl", "is-system-running", "--wait"]).ok()?;
                // "initializing" and "starting" while it boots ("offline" before its manager
                // answers); "running" or "degraded" when it is done.
                let word = out.stdout.trim();
                (!word.is_empty() && !["offline", "initializing", "starting"].contains(&word))
                    .then_some(out)
            },
        )?;
        if out.stdout.trim() != "running" {
            let failed = self.sh(
                ip,
                "systemctl --failed --no-pager; journalctl -b --no-pager -p warning | tail -n 30",
            )?;
            bail!(
                "{name} booted {}: {}{}",
                out.stdout.trim(),
                failed.stdout,
                failed.stderr
            );
        }
        eprintln!(
            "lab: {name} ({ip}) booted in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// The guest's init (systemd) as a pid of this machine.
    pub fn leader(&self, ip: IpAddr) -> Result<i32> {
        let host = self.host(ip)?;
        let pid = host
            .nspawn
            .as_ref()
            .map(|c| c.id())
            .with_context(|| format!("{} is not booted", host.name))?;
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .with_context(|| format!("{} (nspawn pid {pid}) is not running", host.name))?;
        // nspawn's child becomes the guest's init by exec: until then it is not systemd.
        children
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
            .find(|p| {
                std::fs::read_to_string(format!("/proc/{p}/comm"))
                    .is_ok_and(|c| c.trim() == "systemd")
            })
            .with_context(|| format!("{}'s nspawn has no init yet", host.name))
    }

    /// Runs `sh -c SCRIPT` inside the host, as root (all its namespaces, its root directory).
    pub fn sh(&self, ip: IpAddr, script: &str) -> Result<CliOutput> {
        nsenter(self.leader(ip)?, &["/bin/sh", "-c", script])
    }

    /// As [`Lab::sh`]; a non-zero exit is an error with the output.
    pub fn sh_ok(&self, ip: IpAddr, script: &str) -> Result<CliOutput> {
        let out = self.sh(ip, script)?;
        if out.code != 0 {
            bail!(
                "on {}: `{script}` exited with {}:\n{}{}",
                self.host(ip)?.name,
                out.code,
                out.stdout,
                out.stderr
            );
        }
        Ok(out)
    }

    /// Copies a file of this machine into the host at `guest` (mode 0644, root).
    pub fn copy_in(&self, ip: IpAddr, from: &Path, guest: &str) -> Result<()> {
        let to = self.host(ip)?.path(guest);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::copy(from, &to)
            .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        Ok(())
    }

    /// Orderly power-off (SIGTERM to nspawn: the guest's systemd shuts down); waits up to
    /// 30 s for it, then cuts the power ([`Lab::power_cut`]) and says so.
    pub fn power_off(&mut self, ip: IpAddr) -> Result<()> {
        let host = self.host_mut(ip)?;
        let Some(child) = host.nspawn.as_mut() else {
            return Ok(());
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let name = host.name.clone();
                self.power_cut(ip)?;
                bail!("{name} did not power off within 30 s; its power was cut");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        host.nspawn = None;
        host.leader = None;
        Ok(())
    }

    /// A power cut: SIGKILL to the guest's init, so every process of the host dies at once
    /// (a PID namespace ends with its init) and nothing is flushed or stopped in order. A
    /// guest whose init never started loses its nspawn the same way.
    pub fn power_cut(&mut self, ip: IpAddr) -> Result<()> {
        let leader = self.leader(ip).ok().or(self.host(ip)?.leader);
        let host = self.host_mut(ip)?;
        if let Some(leader) = leader {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(leader),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if let Some(mut child) = host.nspawn.take() {
            let deadline = Instant::now() + Duration::from_secs(30);
            while child.try_wait()?.is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        host.leader = None;
        Ok(())
    }

    /// Cuts the host off the bridge (its link down on this machine's side): a partition.
    pub fn partition(&self, ip: IpAddr) -> Result<()> {
        ip_cmd(&["link", "set", &self.host(ip)?.veth(), "down"])
    }

    /// Ends a [`Lab::partition`].
    pub fn heal(&self, ip: IpAddr) -> Result<()> {
        ip_cmd(&["link", "set", &self.host(ip)?.veth(), "up"])
    }

    /// The last `lines` lines of a unit's journal on a host (for failure messages).
    pub fn journal(&self, ip: IpAddr, unit: &str, lines: usize) -> String {
        self.sh(
            ip,
            &format!("journalctl -u {unit} -n {lines} --no-pager -o short-monotonic"),
        )
        .map(|o| o.stdout + &o.stderr)
        .unwrap_or_else(|e| format!("(no journal: {e})"))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // QUORUM_LAB_HOLD=SECONDS: keep the hosts up that long for a look (scripts/lab-enter).
        if let Some(secs) = std::env::var("QUORUM_LAB_HOLD")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
        {
            let names: Vec<&str> = self.hosts.iter().map(|h| h.name.as_str()).collect();
            eprintln!(
                "lab: holding {} for {secs} s (QUORUM_LAB_HOLD): scripts/lab-enter NAME",
                names.join(", ")
            );
            std::thread::sleep(Duration::from_secs(secs));
        }
        let ips: Vec<IpAddr> = self.hosts.iter().map(|h| h.ip).collect();
        // Power off side by side: SIGTERM to all first, then wait for each.
        for h in &self.hosts {
            if let Some(c) = h.nspawn.as_ref() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(c.id() as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
        for ip in ips {
            if let Err(e) = self.power_off(ip) {
                eprintln!("lab: {e}");
            }
        }
        for h in &self.hosts {
            let _ = Command::new("umount")
                .arg(h.root())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            for hier in ["systemd", "unified"] {
                remove_cgroup(Path::new(&format!("/sys/fs/cgroup/{hier}/qlab.{}", h.name)));
            }
        }
        let _ = ip_cmd(&["link", "del", &self.bridge]);
    }
}

/// Removes a cgroup dir and the empty ones below it (a cgroup dir holds no files to delete).
fn remove_cgroup(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// `nsenter -t LEADER -a ARGS`: runs in every namespace of the guest, at its root.
fn nsenter(leader: i32, args: &[&str]) -> Result<CliOutput> {
    let out = Command::new("nsenter")
        .args(["-t", &leader.to_string(), "-a"])
        .args(args)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::null())
        .output()
        .context("running nsenter")?;
    Ok(out.into())
}

fn run_ok(cmd: &mut Command) -> Result<()> {
    let out = cmd.output()?;
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// 128 random bits for a machine id, from the kernel.
fn rand_u128() -> u128 {
    let mut buf = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut buf);
    }
    u128::from_le_bytes(buf)
}

/// Quotes `s` for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// How a fleet is installed: which packages, what each host gets first, who the admin is.
pub struct Spec<'a> {
    /// The agent's .deb (the tree's, from `packaging/build.sh`, when `None`).
    pub agent_deb: Option<&'a Path>,
    /// The coordinator's .deb (the tree's when `None`).
    pub quorum_deb: Option<&'a Path>,
    /// A shell script run on each agent host before its agent is installed.
    pub prepare: &'a str,
    /// A shell script run on the admin node after the CA is made, before the coordinator
    /// starts; `{net}` in it is the lab's `10.77.K`, `{ca}` the CA dir, `{home}` ~/pigsty.
    pub prepare_admin: &'a str,
    /// Pigsty's admin user on the admin node, who owns ~/pigsty and its CA: `dba` (Pigsty's
    /// default admin user) or `root` (Pigsty installed by root, in /root/pigsty).
    pub admin_user: &'static str,
}

impl Default for Spec<'_> {
    fn default() -> Self {
        Self {
            agent_deb: None,
            quorum_deb: None,
            prepare: "",
            prepare_admin: "",
            admin_user: "dba",
        }
    }
}
/// The coordinator's port.
pub const COORDINATOR_PORT: u16 = 7443;

/// A fleet on a lab: an admin node (10.77.K.10) with the coordinator installed from its .deb
/// and run by its unit, the CA in Pigsty's place, and hosts with `quorum-agent` installed
/// from its .deb, enrolled with a one-time token and run by its unit (the systemd backend),
/// etcd at Pigsty's paths under Pigsty's unit.
pub struct Fleet {
    /// The lab (dropping the fleet powers it off).
    pub lab: Lab,
    /// The admin node.
    pub admin: IpAddr,
    /// Hosts with an agent, in the order they were added.
    pub hosts: Vec<IpAddr>,
    /// Pigsty's admin user on the admin node.
    pub admin_user: &'static str,
}

impl Fleet {
    /// Boots the admin node and installs the coordinator; then boots a host per octet of
    /// `hosts` and installs, enrolls and starts its agent from `agent_deb` (the tree's .deb
    /// when `None`). The inventory is written by [`Fleet::write_inventory`].
    pub fn new(hosts: &[u8], agent_deb: Option<&Path>) -> Result<Self> {
        Self::with(
            hosts,
            Spec {
                agent_deb,
                ..Spec::default()
            },
        )
    }

    /// As [`Fleet::new`], installed as `spec` says.
    pub fn with(hosts: &[u8], spec: Spec) -> Result<Self> {
        let (new_agent, new_quorum) = packages()?;
        let agent_deb = spec.agent_deb.map(Path::to_path_buf).unwrap_or(new_agent);
        let quorum_deb = spec.quorum_deb.map(Path::to_path_buf).unwrap_or(new_quorum);
        let prepare = spec.prepare;
        let mut lab = Lab::new()?;
        let admin = lab.add_host(10)?;
        let mut fleet = Self {
            lab,
            admin,
            hosts: Vec::new(),
            admin_user: spec.admin_user,
        };
        fleet.install_coordinator(&quorum_deb, spec.prepare_admin)?;
        for last in hosts {
            let ip = fleet.lab.add_host(*last)?;
            fleet.hosts.push(ip);
        }
        for ip in fleet.hosts.clone() {
            if !prepare.is_empty() {
                fleet.lab.sh_ok(ip, prepare)?;
            }
            fleet.install_agent(ip, &agent_deb)?;
            fleet.enroll(ip)?;
        }
        for ip in fleet.hosts.clone() {
            fleet.wait_agent(ip)?;
        }
        Ok(fleet)
    }

    /// Pigsty's home on the admin node: ~admin/pigsty.
    pub fn home(&self) -> String {
        match self.admin_user {
            "root" => "/root/pigsty".into(),
            user => format!("/home/{user}/pigsty"),
        }
    }

    /// The CA dir on the admin node, where Pigsty keeps it.
    pub fn ca_dir(&self) -> String {
        format!("{}/files/pki/ca", self.home())
    }

    /// The inventory on the admin node.
    pub fn inventory(&self) -> String {
        format!("{}/pigsty.yml", self.home())
    }

    /// The operator's certificate dir (`quorum pki issue admin`).
    pub fn operator_dir(&self) -> String {
        format!("{}/../.quorum", self.home())
    }

    /// `cmd` as the admin user (a shell command line).
    fn as_admin(&self, cmd: &str) -> String {
        match self.admin_user {
            "root" => cmd.to_string(),
            user => format!("runuser -u {user} -- {cmd}"),
        }
    }

    /// The coordinator's URL.
    pub fn url(&self) -> String {
        format!("https://{}:{COORDINATOR_PORT}", self.admin)
    }

    /// The admin node, as Pigsty lays it out: the admin user's CA (`pki init` as dba: the key
    /// 0600, dba's), the coordinator's certificate, coordinator.yml naming both and the
    /// inventory in ~dba/pigsty; `dpkg -i` of the coordinator's package, then the unit started.
    fn install_coordinator(&self, deb: &Path, prepare: &str) -> Result<()> {
        let a = self.admin;
        self.lab.copy_in(a, deb, "/root/quorum.deb")?;
        self.lab
            .sh_ok(a, "dpkg -i --force-confold /root/quorum.deb")?;
        let (home, ca) = (self.home(), self.ca_dir());
        self.lab.sh_ok(
            a,
            &format!(
                "{mkdir} && {init} && \
                 quorum pki issue coordinator --ip {a} --dir {ca} --out /etc/quorum && {admin}",
                mkdir = self.as_admin(&format!("mkdir -p {home}")),
                init = self.as_admin(&format!("quorum pki init --dir {ca}")),
                admin = self.as_admin(&format!(
                    "quorum pki issue admin --name {} --dir {ca} --out {}",
                    self.admin_user,
                    self.operator_dir()
                )),
            ),
        )?;
        if !prepare.is_empty() {
            let script = prepare
                .replace("{net}", &format!("10.77.{}", self.lab.k))
                .replace("{ca}", &ca)
                .replace("{home}", &home);
            self.lab.sh_ok(a, &script)?;
        }
        let cfg = format!(
            "listen: {a}:{COORDINATOR_PORT}\ntls:\n  ca_cert: {ca}/ca.crt\n  cert: /etc/quorum/coordinator.crt\n  key: /etc/quorum/coordinator.key\n  ca_key: {ca}/ca.key\ntrust_domain: pigsty\ninventory: {inv}\nstate_dir: /var/lib/quorum\npoll_hold_secs: 10\nstale_after_secs: 15\ntask_timeout_secs: 90\ngate_timeout_secs: 30\n",
            inv = self.inventory(),
        );
        std::fs::write(self.lab.host(a)?.path("/etc/quorum/coordinator.yml"), cfg)?;
        // An empty inventory until the test writes one: the coordinator needs the file.
        self.write_admin_file(&self.inventory(), "all:\n  children: {}\n")?;
        self.lab.sh_ok(a, "systemctl start quorum.service")?;
        self.wait_listening()?;
        Ok(())
    }

    /// Writes a file on the admin node, the admin user's.
    pub fn write_admin_file(&self, path: &str, text: &str) -> Result<()> {
        let host = self.lab.host(self.admin)?;
        std::fs::write(host.path(path), text)?;
        let user = self.admin_user;
        self.lab
            .sh_ok(self.admin, &format!("chown {user}:{user} {path}"))?;
        Ok(())
    }

    /// `dpkg -i` of a coordinator package on the admin node over the installed one (an
    /// upgrade: its postinst restarts the unit); waits until it listens again.
    pub fn install_quorum(&self, deb: &Path) -> Result<()> {
        let a = self.admin;
        self.lab.copy_in(a, deb, "/root/quorum.deb")?;
        self.lab
            .sh_ok(a, "dpkg -i --force-confold /root/quorum.deb")?;
        self.wait_listening()
    }

    /// Waits until the coordinator on the admin node listens.
    pub fn wait_listening(&self) -> Result<()> {
        let a = self.admin;
        wait_for("the coordinator to listen", Duration::from_secs(30), || {
            let out = self
                .lab
                .sh(a, &format!("ss -Htln 'sport = :{COORDINATOR_PORT}'"))
                .ok()?;
            (!out.stdout.trim().is_empty()).then_some(())
        })
        .with_context(|| self.lab.journal(a, "quorum", 40))
    }

    /// `dpkg -i` of an agent package on `ip` (an install or an upgrade).
    pub fn install_agent(&self, ip: IpAddr, deb: &Path) -> Result<CliOutput> {
        self.lab.copy_in(ip, deb, "/root/quorum-agent.deb")?;
        self.lab
            .sh_ok(ip, "dpkg -i --force-confold /root/quorum-agent.deb")
    }

    /// Enrolls `ip`'s agent as README says: the CA certificate, a token minted on the admin
    /// node by its admin user, `quorum-agent enroll` (with `--token-file`; an agent of 0.2
    /// knows only `--token`), agent.yml's coordinator and host_ip; then `systemctl start
    /// quorum-agent`.
    pub fn enroll(&self, ip: IpAddr) -> Result<()> {
        let token = self
            .lab
            .sh_ok(
                self.admin,
                &format!(
                    "cd {} && {}",
                    self.home(),
                    self.as_admin(&format!("quorum pki token --host {ip} --ttl 15m"))
                ),
            )?
            .stdout
            .trim()
            .to_string();
        let host = self.lab.host(ip)?;
        std::fs::copy(
            self.lab
                .host(self.admin)?
                .path(&format!("{}/ca.crt", self.ca_dir())),
            host.path("/etc/quorum/ca.crt"),
        )?;
        // Pigsty's node role puts the CA in /etc/pki/ca.crt on every node (the profiles
        // before v4 name it).
        std::fs::create_dir_all(host.path("/etc/pki"))?;
        std::fs::copy(
            self.lab
                .host(self.admin)?
                .path(&format!("{}/ca.crt", self.ca_dir())),
            host.path("/etc/pki/ca.crt"),
        )?;
        std::fs::write(host.path("/root/token"), format!("{token}\n"))?;
        self.lab.sh_ok(
            ip,
            &format!(
                "chmod 600 /root/token && \
                 if quorum-agent enroll --help | grep -q -- --token-file; then t='--token-file /root/token'; \
                 else t=\"--token $(cat /root/token)\"; fi && \
                 quorum-agent enroll --coordinator {url} --ca-cert /etc/quorum/ca.crt --host-ip {ip} $t && rm /root/token && \
                 sed -i -e 's|^coordinator: .*|coordinator: {url}|' -e 's|^host_ip: .*|host_ip: {ip}|' /etc/quorum/agent.yml && \
                 systemctl start quorum-agent.service",
                url = self.url()
            ),
        )?;
        Ok(())
    }

    /// Waits until the coordinator sees `ip`'s agent connected.
    pub fn wait_agent(&self, ip: IpAddr) -> Result<()> {
        wait_for(
            &format!("agent {ip} to connect"),
            Duration::from_secs(60),
            || {
                let agents = self.agents_json().ok()?;
                agents
                    .iter()
                    .find(|a| {
                        a["agent_id"] == ip.to_string()
                            && (a["state"] == "connected" || a["state"] == "idle")
                    })
                    .map(|_| ())
            },
        )
        .with_context(|| self.lab.journal(ip, "quorum-agent", 30))
    }

    /// `quorum agents -o json`, parsed.
    pub fn agents_json(&self) -> Result<Vec<serde_json::Value>> {
        let out = self.admin(&["agents", "-o", "json"])?.ok()?;
        Ok(serde_json::from_str(&out.stdout)?)
    }

    /// Runs the operator CLI on the admin node as its admin user, with that user's certificate.
    pub fn admin(&self, args: &[&str]) -> Result<CliOutput> {
        self.lab.sh(self.admin, &self.admin_command(args))
    }

    /// The shell command line of [`Fleet::admin`] (for a run left in the background).
    pub fn admin_command(&self, args: &[&str]) -> String {
        let quoted: Vec<String> = args.iter().map(|a| shell_quote(a)).collect();
        let op = self.operator_dir();
        let cli = format!(
            "env QUORUM_COORDINATOR={url} QUORUM_CERT={op}/admin.crt QUORUM_KEY={op}/admin.key QUORUM_CACERT={ca}/ca.crt quorum {}",
            quoted.join(" "),
            url = self.url(),
            ca = self.ca_dir(),
        );
        format!("cd {} && {}", self.home(), self.as_admin(&cli))
    }

    /// Writes the inventory: etcd members `(ip, seq)` with Pigsty's defaults (v3.6, its paths)
    /// plus `vars`, and `groups` (YAML at the indent of `all.children`'s entries).
    pub fn write_inventory(
        &self,
        members: &[(IpAddr, u32)],
        vars: &str,
        groups: &str,
    ) -> Result<()> {
        let mut hosts = String::new();
        for (ip, seq) in members {
            hosts.push_str(&format!("        {ip}: {{ etcd_seq: {seq} }}\n"));
        }
        let mut extra = String::new();
        if !vars.contains("version:") {
            extra.push_str("        version: v3.6.1\n");
        }
        // Debian's etcd 3.4 started with a config file has the gRPC gateway off; Patroni's
        // etcd3 client needs it.
        extra.push_str("        quorum_etcd_grpc_gateway: true\n");
        for l in vars.lines() {
            extra.push_str(&format!("        {l}\n"));
        }
        let text = format!(
            "all:\n  children:\n    etcd:\n      hosts:\n{hosts}      vars:\n        etcd_cluster: etcd\n{extra}{groups}"
        );
        self.write_admin_file(&self.inventory(), &text)
    }

    /// A host's unit's main pid (0 when it does not run).
    pub fn main_pid(&self, ip: IpAddr, unit: &str) -> Result<u32> {
        let out = self
            .lab
            .sh_ok(ip, &format!("systemctl show -p MainPID --value {unit}"))?;
        Ok(out.stdout.trim().parse()?)
    }

    /// `systemctl is-active UNIT` on a host: its one word.
    pub fn unit_state(&self, ip: IpAddr, unit: &str) -> Result<String> {
        Ok(self
            .lab
            .sh(ip, &format!("systemctl is-active {unit}"))?
            .stdout
            .trim()
            .to_string())
    }

    /// etcdctl on a member through the profile the agent wrote, as an operator would.
    pub fn etcdctl(&self, ip: IpAddr, args: &str) -> Result<CliOutput> {
        self.lab.sh(
            ip,
            &format!(". /etc/profile.d/etcdctl.sh && etcdctl {args}"),
        )
    }

    /// The voting members' names, read on `via` through its profile.
    pub fn member_names(&self, via: IpAddr) -> Result<Vec<String>> {
        let out = self.etcdctl(via, "member list -w json")?.ok()?;
        let v: serde_json::Value = serde_json::from_str(&out.stdout)?;
        let mut names: Vec<String> = v["members"]
            .as_array()
            .map(|m| {
                m.iter()
                    .filter(|m| m["isLearner"] != true)
                    .filter_map(|m| m["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        Ok(names)
    }

    /// The run `quorum run show RUN -o json`.
    pub fn run_show(&self, run: &str) -> Result<serde_json::Value> {
        let out = self.admin(&["run", "show", run, "-o", "json"])?.ok()?;
        Ok(serde_json::from_str(&out.stdout)?)
    }

    /// The newest run, `quorum run list -o json`'s first.
    pub fn newest_run(&self) -> Result<serde_json::Value> {
        let out = self.admin(&["run", "list", "-o", "json"])?.ok()?;
        let runs: Vec<serde_json::Value> = serde_json::from_str(&out.stdout)?;
        runs.into_iter().next().context("no run yet")
    }

    /// Waits until the newest run is of `sop` with at least `done` steps done; its id.
    pub fn wait_steps_done(&self, sop: &str, done: usize, timeout: Duration) -> Result<String> {
        wait_for(&format!("{done} steps of {sop} done"), timeout, || {
            let r = self.newest_run().ok()?;
            let n = r["steps"]
                .as_array()?
                .iter()
                .filter(|s| s["state"] == "done")
                .count();
            (r["sop"] == sop && n >= done)
                .then(|| r["run_id"].as_str().map(str::to_string))
                .flatten()
        })
    }
}
