//! The security probe's host-side steps (H3, M1, M2, M3 and F13/F15 of
//! reference/security-probe-2026-11.md), replayed through `quorum task` and a real agent:
//! no wipe while etcd's state cannot be read, no wipe through a link or across a mount, no
//! read or write through a link, FIFO or escaping parent at a managed path, and Pigsty's own
//! patroni.yml link written through and kept.

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use prost::Message;
use quorum_proto::pb;
use quorum_tests::etcd::{free_port_on, Fleet, HostPaths};
use quorum_tests::{wait_for, CliOutput, Proc, World};

/// A world with a coordinator and one host (not yet with an agent).
fn world(ip: &str) -> Result<(World, Fleet, HostPaths)> {
    let mut w = World::new()?;
    let f = Fleet::new(&w, &[ip])?;
    f.write_inventory(&w, &[(ip, 1)], "")?;
    w.start_coordinator()?;
    let h = f.hosts[0].clone();
    Ok((w, f, h))
}

fn start_agent(w: &mut World, ip: &str, extra: &str) -> Result<()> {
    w.start_agent(ip, extra)?;
    w.wait_agent_state(ip, &["connected", "idle"], Duration::from_secs(30))
}

/// `quorum task --host IP --yes ARGS`.
fn task(w: &World, ip: &str, args: &[&str]) -> Result<CliOutput> {
    let mut a = vec!["task", "--host", ip, "--yes"];
    a.extend_from_slice(args);
    w.admin(&a)
}

/// `quorum-agent run-task` of a facts task with `config`: how an agent start-up check is seen
/// without leaving a daemon behind.
fn agent_start_check(w: &World, config: &str) -> Result<CliOutput> {
    let t = pb::Task {
        id: "start-check".into(),
        epoch: 0,
        epoch_holder: String::new(),
        kind: Some(pb::task::Kind::CollectFacts(pb::CollectFacts {})),
    };
    let file = w.dir.path().join("facts.pb");
    std::fs::write(&file, t.encode_to_vec())?;
    quorum_tests::run(
        "quorum-agent",
        &[
            "run-task",
            "--config",
            config,
            "--task",
            &file.display().to_string(),
        ],
        &[],
    )
}

/// A tmpfs the test mounted; unmounted when dropped.
struct Mounted(PathBuf);

impl Mounted {
    fn tmpfs(at: &Path) -> Result<Self> {
        std::fs::create_dir_all(at)?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "quorum-test"])
            .arg(at)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "cannot mount a tmpfs at {} (the tests run as root): {}",
            at.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(Self(at.to_path_buf()))
    }
    fn unmount(&self) -> Result<()> {
        let out = Command::new("umount").arg(&self.0).output()?;
        anyhow::ensure!(out.status.success(), "umount {}", self.0.display());
        Ok(())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).output();
    }
}

#[test]
fn a_wipe_is_refused_while_etcd_runs_and_its_state_cannot_be_read() -> Result<()> {
    let ip = "127.0.0.41";
    let (mut w, _f, h) = world(ip)?;
    // A real etcd serving from this host's data dir, owned by the test.
    let lo = "127.0.0.1".parse()?;
    let port = free_port_on(&[lo])?;
    let (client, peer) = (
        format!("http://127.0.0.1:{port}"),
        format!("http://127.0.0.1:{}", port + 1),
    );
    let mut cmd = quorum_tests::etcd_command("etcd");
    cmd.args(["--name", "solo", "--data-dir"])
        .arg(h.data())
        .args([
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
            "--initial-cluster",
            &format!("solo={peer}"),
        ]);
    let _etcd = Proc::spawn("etcd", cmd, &h.etcd_log())?;
    let etcdctl = |args: &[&str]| {
        quorum_tests::etcd_command("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &client, "--dial-timeout=2s"])
            .args(args)
            .output()
    };
    wait_for("etcd to take a write", Duration::from_secs(30), || {
        etcdctl(&["put", "k", "v"])
            .ok()
            .filter(|o| o.status.success())
    })?;

    // Without a status command the agent does not start: it could never tell.
    let no_status = format!(
        "{}service_backend: exec\nexec:\n  etcd:\n    stop: ['true']\n",
        h.paths_config()
    );
    let cfg = w.write_agent_config(ip, &no_status)?;
    let out = agent_start_check(&w, &cfg)?;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("exec.etcd.status"), "{}", out.stderr);

    // A status command that cannot be run; stop does nothing, so etcd keeps running.
    let extra = format!(
        "{}service_backend: exec\nexec:\n  etcd:\n    status: [{}]\n    stop: ['true']\n",
        h.paths_config(),
        h.root.join("bin/no-such-status-command").display()
    );
    start_agent(&mut w, ip, &extra)?;
    task(&w, ip, &["facts"])?.ok()?;
    let agents = w.admin(&["agents"])?.ok()?;
    assert!(
        agents.stdout.contains(&format!(
            "warning: {ip}: etcd state unknown: wipes are refused"
        )),
        "{}",
        agents.stdout
    );
    let log = w.agent(ip).context("agent")?.log_text();
    assert!(log.contains("cannot tell whether etcd is running"), "{log}");

    let out = task(&w, ip, &["wipe-etcd-data"])?;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.stdout.contains("cannot tell whether etcd is running"),
        "{}",
        out.stdout
    );
    // A purge stops etcd (here: a stop that does nothing) and then demands a positive stop.
    let out = task(&w, ip, &["wipe-etcd-data", "--purge"])?;
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("positively stopped"), "{}", out.stdout);
    assert!(
        h.data().join("member/wal").is_dir(),
        "the data dir was touched"
    );
    let got = etcdctl(&["get", "k", "--print-value-only"])?;
    assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), "v");
    Ok(())
}

#[test]
fn a_wipe_never_follows_a_link_or_crosses_a_mount() -> Result<()> {
    let ip = "127.0.0.42";
    let (mut w, _f, h) = world(ip)?;
    let extra = h.agent_config(false);
    start_agent(&mut w, ip, &extra)?;
    let outside = w.dir.path().join("outside/precious");
    std::fs::create_dir_all(outside.join("sub"))?;
    std::fs::write(outside.join("a.txt"), "keep1")?;
    std::fs::write(outside.join("sub/b.txt"), "keep2")?;
    let intact = || -> Result<()> {
        assert_eq!(std::fs::read_to_string(outside.join("a.txt"))?, "keep1");
        assert_eq!(std::fs::read_to_string(outside.join("sub/b.txt"))?, "keep2");
        Ok(())
    };

    // The probe's step: the data dir replaced by a link to a dir with files.
    std::fs::remove_dir(h.data())?;
    symlink(&outside, h.data())?;
    let out = task(&w, ip, &["wipe-etcd-data"])?;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stdout.contains("is a symbolic link"), "{}", out.stdout);
    intact()?;
    // An agent started on that layout refuses to start, naming the key.
    let cfg = w.p(&format!("agent-{ip}/agent.yml"));
    let out = agent_start_check(&w, &cfg)?;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("paths.etcd_data"), "{}", out.stderr);

    // A real data dir again, with links to outside inside it and a mount point.
    std::fs::remove_file(h.data())?;
    std::fs::create_dir_all(h.data().join("member/wal"))?;
    std::fs::write(h.data().join("member/wal/0.wal"), "wal")?;
    symlink(&outside, h.data().join("member/escape"))?;
    symlink(outside.join("a.txt"), h.data().join("a-link"))?;
    let mnt = Mounted::tmpfs(&h.data().join("mnt"))?;
    std::fs::write(h.data().join("mnt/other-fs"), "keep3")?;
    let out = task(&w, ip, &["wipe-etcd-data"])?;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stdout.contains("mount point"), "{}", out.stdout);
    assert!(
        h.data().join("member/wal/0.wal").exists(),
        "a refused wipe removed something"
    );
    assert_eq!(
        std::fs::read_to_string(h.data().join("mnt/other-fs"))?,
        "keep3"
    );
    mnt.unmount()?;
    let out = task(&w, ip, &["wipe-etcd-data"])?.ok()?;
    assert!(out.stdout.contains("wiped"), "{}", out.stdout);
    assert_eq!(std::fs::read_dir(h.data())?.count(), 0);
    intact()?;
    Ok(())
}

#[test]
fn links_fifos_and_escaping_parents_at_managed_paths_are_refused_and_never_read() -> Result<()> {
    let ip = "127.0.0.43";
    let (mut w, _f, h) = world(ip)?;
    let extra = h.agent_config(false);
    start_agent(&mut w, ip, &extra)?;
    let outside = w.dir.path().join("outside");
    std::fs::create_dir_all(outside.join("notallowed"))?;
    let shadow = outside.join("shadow");
    let secret = "root:$6$TOPSECRET-hash:19000:0:99999:7:::\n";
    std::fs::write(&shadow, secret)?;
    std::fs::set_permissions(&shadow, std::fs::Permissions::from_mode(0o600))?;

    // etcd.conf is a link to a root-only file: refused, no .bak with its content.
    symlink(&shadow, h.etcd_conf())?;
    let out = task(&w, ip, &["write-etcd-conf", "-i", &w.p("pigsty.yml")])?;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stdout.contains("is a symbolic link"), "{}", out.stdout);
    assert!(!h.etc_etcd().join("etcd.conf.bak").exists());
    assert!(std::fs::symlink_metadata(h.etcd_conf())?.is_symlink());
    assert_eq!(std::fs::read_to_string(&shadow)?, secret);

    // The profile is a link to it: neither the facts nor a plan show its content.
    symlink(&shadow, h.profile())?;
    task(&w, ip, &["facts"])?.ok()?;
    let plan = w.admin(&["env", "refresh", "--plan"])?;
    assert!(
        !plan.stdout.contains("TOPSECRET") && !plan.stderr.contains("TOPSECRET"),
        "{plan:?}"
    );
    let json = w.admin(&["agents", "-o", "json"])?.ok()?;
    assert!(!json.stdout.contains("TOPSECRET"), "{}", json.stdout);
    let table = w.admin(&["agents"])?.ok()?;
    assert!(
        table
            .stdout
            .contains(&format!("warning: {ip}: etcdctl_profile: ")),
        "{}",
        table.stdout
    );
    std::fs::remove_file(h.profile())?;

    // The profile's directory is a link to outside the prefixes: refused, nothing lands there.
    let profile_d = h.root.join("etc/profile.d");
    std::fs::rename(&profile_d, h.root.join("etc/profile.d.real"))?;
    symlink(outside.join("notallowed"), &profile_d)?;
    let out = task(&w, ip, &["write-etcdctl-profile", "-i", &w.p("pigsty.yml")])?;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.stdout.contains("outside every allowed prefix"),
        "{}",
        out.stdout
    );
    assert_eq!(std::fs::read_dir(outside.join("notallowed"))?.count(), 0);

    // A FIFO at etcd.conf: the facts task finishes (a read that blocked on the FIFO would
    // run into the task's timeout and fail) and says what it is.
    std::fs::remove_file(h.etcd_conf())?;
    nix::unistd::mkfifo(
        &h.etcd_conf(),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )?;
    task(&w, ip, &["--timeout", "15", "facts"])?.ok()?;
    let table = w.admin(&["agents"])?.ok()?;
    assert!(
        table
            .stdout
            .contains(&format!("warning: {ip}: etcd_conf: "))
            && table.stdout.contains("is a FIFO"),
        "{}",
        table.stdout
    );
    let out = task(&w, ip, &["write-etcd-conf", "-i", &w.p("pigsty.yml")])?;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stdout.contains("FIFO"), "{}", out.stdout);
    Ok(())
}

#[test]
fn pigstys_patroni_link_is_written_through_and_kept() -> Result<()> {
    let ip = "127.0.0.44";
    let (mut w, _f, h) = world(ip)?;
    let marker = h.root.join("log/marker");
    let extra = h.agent_config(false).replace(
        "exec:\n",
        &format!(
            "exec:\n  patroni:\n    reload: [/bin/sh, -c, 'echo patroni-reload >> {m}']\n  vip_manager:\n    restart: [/bin/sh, -c, 'echo vip-restart >> {m}']\n",
            m = marker.display()
        ),
    );
    let etc_patroni = h.root.join("etc/patroni");
    let pg_conf = h.root.join("pg/conf");
    std::fs::create_dir_all(&etc_patroni)?;
    std::fs::create_dir_all(&pg_conf)?;
    std::fs::create_dir_all(h.root.join("etc/default"))?;
    let rendered = pg_conf.join("pg-test-1.yml");
    let old = "scope: pg-test\netcd3:\n  hosts: '10.10.10.10:2379,10.10.10.11:2379'\n";
    std::fs::write(&rendered, old)?;
    std::fs::set_permissions(&rendered, std::fs::Permissions::from_mode(0o640))?;
    let link = etc_patroni.join("patroni.yml");
    symlink(&rendered, &link)?;
    start_agent(&mut w, ip, &extra)?;

    let hosts = [
        "set-patroni-dcs-hosts",
        "--hosts",
        "127.0.0.11:2379,127.0.0.12:2379",
    ];
    let out = task(&w, ip, &hosts)?.ok()?;
    assert!(out.stdout.contains(" changed"), "{}", out.stdout);
    assert!(
        std::fs::symlink_metadata(&link)?.is_symlink(),
        "the link was replaced"
    );
    assert_eq!(std::fs::read_link(&link)?, rendered);
    assert_eq!(
        std::fs::read_to_string(&rendered)?,
        old.replace(
            "10.10.10.10:2379,10.10.10.11:2379",
            "127.0.0.11:2379,127.0.0.12:2379"
        )
    );
    assert_eq!(
        std::fs::read_to_string(pg_conf.join("pg-test-1.yml.bak"))?,
        old
    );
    assert!(!etc_patroni.join("patroni.yml.bak").exists());
    assert_eq!(
        std::fs::metadata(&rendered)?.permissions().mode() & 0o777,
        0o640
    );

    // A link whose target is outside the prefixes is not written through.
    let outside = w.dir.path().join("outside");
    std::fs::create_dir_all(&outside)?;
    std::fs::write(outside.join("evil.yml"), old)?;
    std::fs::remove_file(&link)?;
    symlink(outside.join("evil.yml"), &link)?;
    let out = task(&w, ip, &hosts)?;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.stdout.contains("outside every allowed prefix"),
        "{}",
        out.stdout
    );
    assert_eq!(std::fs::read_to_string(outside.join("evil.yml"))?, old);

    // A patroni.yml that is not UTF-8 says so (F15).
    std::fs::remove_file(&link)?;
    let binary = b"scope: pg-test\netcd3:\n  hosts: '\xff\xfe:2379'\n";
    std::fs::write(&link, binary)?;
    let out = task(&w, ip, &hosts)?;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stdout.contains("is not UTF-8 text"), "{}", out.stdout);
    assert_eq!(std::fs::read(&link)?, binary);

    // Pigsty lays no link at the vip-manager config: a link there is refused.
    let vip = h.root.join("etc/default/vip-manager.yml");
    std::fs::write(
        outside.join("vip.yml"),
        "dcs-type: etcd\ndcs-endpoints: [https://10.0.0.1:2379]\n",
    )?;
    symlink(outside.join("vip.yml"), &vip)?;
    let out = task(
        &w,
        ip,
        &[
            "set-vip-endpoints",
            "--endpoints",
            "https://127.0.0.11:2379",
        ],
    )?;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stdout.contains("Pigsty lays no link"), "{}", out.stdout);
    assert_eq!(
        std::fs::read_to_string(&marker)?,
        "patroni-reload\n",
        "only the first, written-through patch reloads Patroni"
    );
    Ok(())
}
