//! The SOPs on real hosts: Debian bookworm hosts booted by systemd-nspawn (the host lab,
//! `quorum_tests::lab`), the coordinator and the agents installed from the packages
//! `packaging/build.sh` built and run by their units, etcd at Pigsty's paths under Pigsty's
//! unit (Type=notify), Patroni with /etc/patroni/patroni.yml a link to /pg/conf/pg-test-1.yml.
//! Then the faults a loopback lab cannot make: a partitioned host, a power cut mid-SOP, a full
//! disk under the agent's state dir, the agent's unit restarted by systemd after a crash, and
//! the agent package upgraded from 0.2 mid-fleet while a run goes on. And Quorum's
//! registration with Pigsty v4's metrics stack on an infra node, through its agent.
//!
//! The labs of this file run one at a time (each boots five or six hosts with etcd, on two
//! cores); `LAB` serializes them.

use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use quorum_tests::lab::{Fleet, Spec};
use quorum_tests::pg::http_get;
use quorum_tests::wait_for;

/// One lab at a time.
static LAB: Mutex<()> = Mutex::new(());

fn lock() -> std::sync::MutexGuard<'static, ()> {
    LAB.lock().unwrap_or_else(|e| e.into_inner())
}

/// The octets of the etcd hosts.
const ETCD: [u8; 3] = [11, 12, 13];

fn members(f: &Fleet, lasts: &[u8]) -> Vec<(IpAddr, u32)> {
    lasts
        .iter()
        .enumerate()
        .map(|(i, l)| (f.lab.addr(*l), i as u32 + 1))
        .collect()
}

fn names(seqs: &[u32]) -> Vec<String> {
    seqs.iter().map(|s| format!("etcd-{s}")).collect()
}

/// A fleet with agents on `hosts` and a created 3-member cluster on `ETCD`.
fn created(hosts: &[u8], groups: &str) -> Result<Fleet> {
    let f = Fleet::new(hosts, None)?;
    f.write_inventory(&members(&f, &ETCD), "", groups)?;
    let out = f.admin(&["cluster", "create", "--yes"])?;
    ensure!(out.code == 0, "create failed: {out:?}");
    Ok(f)
}

/// A writer on the admin node: etcdctl puts keys w1, w2, ... through every member (each put
/// tried up to 5 times), until /root/writer.stop appears; acked and lost keys are logged.
fn start_writer(f: &Fleet) -> Result<()> {
    let eps: Vec<String> = ETCD
        .iter()
        .map(|l| format!("https://{}:2379", f.lab.addr(*l)))
        .collect();
    let ca = f.ca_dir();
    let script = format!(
        "i=0; while [ ! -e /root/writer.stop ]; do i=$((i+1)); n=0; \
         until ETCDCTL_API=3 etcdctl --endpoints={eps} --cacert={ca}/ca.crt --cert=/etc/quorum/coordinator.crt --key=/etc/quorum/coordinator.key --command-timeout=5s put w$i $i >/dev/null 2>&1; do \
           n=$((n+1)); if [ $n -ge 5 ]; then echo $i >> /root/writer.lost; break; fi; sleep 0.5; done; \
         [ $n -lt 5 ] && echo $i >> /root/writer.acked; sleep 0.05; done; echo done > /root/writer.done",
        eps = eps.join(",")
    );
    f.lab.sh_ok(
        f.admin,
        &format!(
            "rm -f /root/writer.*; nohup sh -c {} >/dev/null 2>&1 &",
            quorum_tests::lab::shell_quote(&script)
        ),
    )?;
    Ok(())
}

/// Stops the writer; (acked, lost, acked keys missing from etcd).
fn stop_writer(f: &Fleet) -> Result<(usize, usize, usize)> {
    f.lab.sh_ok(f.admin, "touch /root/writer.stop")?;
    wait_for("the writer to stop", Duration::from_secs(60), || {
        f.lab
            .host(f.admin)
            .ok()?
            .path("/root/writer.done")
            .exists()
            .then_some(())
    })?;
    let read = |name: &str| -> Vec<String> {
        f.lab
            .host(f.admin)
            .ok()
            .and_then(|h| std::fs::read_to_string(h.path(name)).ok())
            .map(|s| s.lines().map(str::to_string).collect())
            .unwrap_or_default()
    };
    let acked = read("/root/writer.acked");
    let lost = read("/root/writer.lost");
    let got = f
        .etcdctl(f.lab.addr(ETCD[0]), "get w --prefix --keys-only")?
        .ok()?;
    let have: std::collections::HashSet<&str> = got.stdout.lines().collect();
    let missing = acked
        .iter()
        .filter(|i| !have.contains(format!("w{i}").as_str()))
        .count();
    Ok((acked.len(), lost.len(), missing))
}

/// The Patroni host: PostgreSQL 15 under Patroni (Pigsty's unit), its config rendered as
/// Pigsty's pgsql role does (/pg/conf/pg-test-1.yml, /etc/patroni/patroni.yml linking to it),
/// etcd3 DCS over TLS with a certificate of the CA in /pg/cert; started through the agent.
fn bring_up_patroni(f: &Fleet, ip: IpAddr) -> Result<()> {
    let a = f.admin;
    f.lab.sh_ok(
        a,
        &format!(
            "quorum pki issue etcd --name pg-test-1 --ip {ip} --dir {} --out /root/pg-{ip}",
            f.ca_dir()
        ),
    )?;
    let from = f.lab.host(a)?.path(&format!("/root/pg-{ip}"));
    for file in ["ca.crt", "server.crt", "server.key"] {
        f.lab
            .copy_in(ip, &from.join(file), &format!("/pg/cert/{file}"))?;
    }
    let hosts: Vec<String> = ETCD
        .iter()
        .map(|l| format!("{}:2379", f.lab.addr(*l)))
        .collect();
    let net = format!("10.77.{}", f.lab.k);
    let yml = format!(
        "# rendered as Pigsty's pgsql role does\nscope: pg-test\nnamespace: /pg/\nname: pg-test-1\n\
         restapi:\n  listen: {ip}:8008\n  connect_address: {ip}:8008\n  authentication:\n    username: postgres\n    password: Patroni.API\n\
         etcd3:\n  hosts: '{hosts}'\n  protocol: https\n  cacert: /pg/cert/ca.crt\n  cert: /pg/cert/server.crt\n  key: /pg/cert/server.key\n\
         bootstrap:\n  dcs:\n    ttl: 30\n    loop_wait: 2\n    retry_timeout: 10\n  initdb:\n    - encoding: UTF8\n    - locale: C.UTF-8\n\
         postgresql:\n  listen: {ip}:5432\n  connect_address: {ip}:5432\n  data_dir: /pg/data\n  bin_dir: /usr/lib/postgresql/15/bin\n  pgpass: /pg/tmp/pgpass\n\
         \x20 authentication:\n    superuser: {{username: postgres, password: postgres-test}}\n    replication: {{username: replicator, password: replicator-test}}\n\
         \x20 parameters:\n    unix_socket_directories: /pg/tmp\n\
         \x20 pg_hba:\n    - local all all trust\n    - host all all 127.0.0.1/32 scram-sha-256\n    - host all all {net}.0/24 scram-sha-256\n    - host replication replicator {net}.0/24 scram-sha-256\n",
        hosts = hosts.join(","),
    );
    std::fs::create_dir_all(f.lab.host(ip)?.path("/pg/conf"))?;
    std::fs::write(f.lab.host(ip)?.path("/pg/conf/pg-test-1.yml"), yml)?;
    f.lab.sh_ok(
        ip,
        "mkdir -p /pg/data /pg/tmp /etc/patroni && chown -R postgres:postgres /pg && chmod 700 /pg/data && \
         chmod 0750 /pg/conf/pg-test-1.yml && chmod 600 /pg/cert/server.key && \
         ln -sfn /pg/conf/pg-test-1.yml /etc/patroni/patroni.yml",
    )?;
    f.admin(&["service", "start", "patroni", "--hosts", &ip.to_string()])?
        .ok()?;
    wait_for(
        "Patroni to run PostgreSQL as the leader",
        Duration::from_secs(90),
        || {
            let (_, body) = http_get(SocketAddr::new(ip, 8008), "/patroni").ok()?;
            let v: serde_json::Value = serde_json::from_str(&body).ok()?;
            (v["state"] == "running" && (v["role"] == "master" || v["role"] == "primary"))
                .then_some(())
        },
    )
    .with_context(|| f.lab.journal(ip, "patroni", 40))?;
    Ok(())
}

/// The DCS hosts Patroni's config names, read through the link inside the host.
fn patroni_hosts(f: &Fleet, ip: IpAddr) -> Result<Vec<String>> {
    let text = f.lab.sh_ok(ip, "cat /etc/patroni/patroni.yml")?.stdout;
    Ok(quorum_proto::patch::read_patroni_hosts(&text)?)
}

fn pg_group(ip: IpAddr) -> String {
    format!(
        "    pg-test:\n      hosts:\n        {ip}: {{ pg_seq: 1, pg_role: primary }}\n      vars:\n        pg_cluster: pg-test\n        pg_vip_enabled: false\n        pg_namespace: /pg\n        patroni_username: postgres\n        patroni_password: Patroni.API\n"
    )
}

#[test]
fn every_sop_on_packaged_hosts_under_systemd() -> Result<()> {
    let _one = lock();
    let f = created(&[11, 12, 13, 14, 21], "")?;
    let pg = f.lab.addr(21);
    let etcd: Vec<IpAddr> = ETCD.iter().map(|l| f.lab.addr(*l)).collect();
    // Create: three members, etcd run by Pigsty's unit (enabled, as Pigsty leaves it).
    assert_eq!(f.member_names(etcd[0])?, names(&[1, 2, 3]));
    // The etcd of this leg runs there (bookworm's 3.4, or the 3.5 leg's over it).
    let want = quorum_tests::etcd_command("etcd")
        .arg("--version")
        .output()?;
    let want = String::from_utf8_lossy(&want.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("etcd Version: ").map(str::to_string))
        .context("no version from the selected etcd")?;
    let status = f.etcdctl(etcd[0], "endpoint status -w json")?.ok()?;
    let v: serde_json::Value = serde_json::from_str(&status.stdout)?;
    assert_eq!(
        v[0]["Status"]["version"],
        want.as_str(),
        "{}",
        status.stdout
    );
    for ip in &etcd {
        assert_eq!(f.unit_state(*ip, "etcd")?, "active");
        let enabled = f.lab.sh(*ip, "systemctl is-enabled etcd")?;
        assert_eq!(enabled.stdout.trim(), "enabled", "{ip}: {enabled:?}");
        let conf = f.lab.sh_ok(
            *ip,
            "stat -c '%U:%G %a' /etc/etcd/etcd.conf /etc/etcd/server.key",
        )?;
        assert_eq!(conf.stdout, "etcd:etcd 644\netcd:etcd 600\n", "{ip}");
    }
    // The coordinator, under its unit's sandbox, issued the member certificates into its
    // state dir (0.2 wrote them beside the CA, where its unit could not).
    let certs = f.lab.sh_ok(
        f.admin,
        "stat -c '%n %a' /var/lib/quorum/pki/etcd /var/lib/quorum/pki/etcd/etcd-1.crt /var/lib/quorum/pki/etcd/etcd-1.key",
    )?;
    assert_eq!(
        certs.stdout,
        "/var/lib/quorum/pki/etcd 700\n/var/lib/quorum/pki/etcd/etcd-1.crt 644\n/var/lib/quorum/pki/etcd/etcd-1.key 600\n"
    );
    // Patroni on the PostgreSQL host, its config behind Pigsty's link.
    f.write_inventory(&members(&f, &ETCD), "", &pg_group(pg))?;
    bring_up_patroni(&f, pg)?;

    // reload --restart with a writer: every member restarted once by systemd, no write lost.
    let before: Vec<u32> = etcd
        .iter()
        .map(|ip| f.main_pid(*ip, "etcd"))
        .collect::<Result<_>>()?;
    start_writer(&f)?;
    std::thread::sleep(Duration::from_secs(2));
    let out = f.admin(&["config", "reload", "--restart", "--yes"])?;
    ensure!(out.code == 0, "reload --restart: {out:?}");
    std::thread::sleep(Duration::from_secs(2));
    let (acked, lost, missing) = stop_writer(&f)?;
    assert!(acked > 20, "the writer wrote only {acked} keys");
    assert_eq!((lost, missing), (0, 0), "{acked} acked");
    for (ip, old) in etcd.iter().zip(&before) {
        let now = f.main_pid(*ip, "etcd")?;
        assert!(
            now != 0 && now != *old,
            "{ip}: etcd was not restarted ({old} -> {now})"
        );
    }

    // env refresh: every host's profile, and it works for etcdctl.
    f.admin(&["env", "refresh", "--yes"])?.ok()?;
    let health = f.etcdctl(etcd[1], "endpoint health")?;
    assert_eq!(health.code, 0, "{health:?}");

    // member add: a fourth member; Patroni's hosts follow, its config stays behind the link.
    let h14 = f.lab.addr(14);
    f.write_inventory(&members(&f, &[11, 12, 13, 14]), "", &pg_group(pg))?;
    let out = f.admin(&["member", "add", &h14.to_string(), "--yes"])?;
    ensure!(out.code == 0, "member add: {out:?}");
    assert_eq!(f.member_names(etcd[0])?, names(&[1, 2, 3, 4]));
    let link = f.lab.sh_ok(pg, "readlink /etc/patroni/patroni.yml")?;
    assert_eq!(
        link.stdout.trim(),
        "/pg/conf/pg-test-1.yml",
        "the link was replaced"
    );
    assert!(
        patroni_hosts(&f, pg)?.contains(&format!("{h14}:2379")),
        "Patroni's config does not name the new member"
    );
    assert_eq!(f.unit_state(pg, "patroni")?, "active");

    // member remove: back to three; the link is kept again.
    f.write_inventory(&members(&f, &ETCD), "", &pg_group(pg))?;
    let out = f.admin(&["member", "remove", &h14.to_string(), "--yes"])?;
    ensure!(out.code == 0, "member remove: {out:?}");
    assert_eq!(f.member_names(etcd[0])?, names(&[1, 2, 3]));
    assert_ne!(f.unit_state(h14, "etcd")?, "active");
    let link = f.lab.sh_ok(pg, "readlink /etc/patroni/patroni.yml")?;
    assert_eq!(link.stdout.trim(), "/pg/conf/pg-test-1.yml");
    assert!(!patroni_hosts(&f, pg)?.contains(&format!("{h14}:2379")));

    // remove, then create again and purge: each time every member is stopped, disabled (a
    // boot does not bring it back) and wiped.
    for sop in ["remove", "purge"] {
        if sop == "purge" {
            let out = f.admin(&["cluster", "create", "--yes"])?;
            ensure!(out.code == 0, "create again: {out:?}");
            assert_eq!(f.member_names(etcd[0])?, names(&[1, 2, 3]));
        }
        let out = f.admin(&["cluster", sop, "--yes"])?;
        ensure!(out.code == 0, "cluster {sop}: {out:?}");
        for ip in &etcd {
            retired(&f, *ip).with_context(|| format!("cluster {sop}"))?;
        }
    }
    Ok(())
}

/// Starts `quorum ARGS` on the admin node in the background, its output in /root/run.out
/// and its exit code in /root/run.rc.
fn spawn_admin(f: &Fleet, args: &[&str]) -> Result<()> {
    let cmd = f.admin_command(args);
    f.lab.sh_ok(
        f.admin,
        &format!(
            "rm -f /root/run.out /root/run.rc; nohup sh -c {} >/dev/null 2>&1 &",
            quorum_tests::lab::shell_quote(&format!(
                "{cmd} > /root/run.out 2>&1; echo $? > /root/run.rc"
            ))
        ),
    )?;
    Ok(())
}

/// Waits for the background `quorum` of [`spawn_admin`]: (exit code, output).
fn wait_admin(f: &Fleet, timeout: Duration) -> Result<(i32, String)> {
    let host = f.lab.host(f.admin)?;
    let rc = wait_for("the operator's command to end", timeout, || {
        std::fs::read_to_string(host.path("/root/run.rc"))
            .ok()?
            .trim()
            .parse::<i32>()
            .ok()
    })?;
    let out = std::fs::read_to_string(host.path("/root/run.out")).unwrap_or_default();
    Ok((rc, out))
}

fn etcd_pids(f: &Fleet) -> Result<Vec<u32>> {
    ETCD.iter()
        .map(|l| f.main_pid(f.lab.addr(*l), "etcd"))
        .collect()
}

/// The index in `ETCD` of the member that leads now.
fn leader(f: &Fleet) -> Result<usize> {
    for (i, l) in ETCD.iter().enumerate() {
        let ip = f.lab.addr(*l);
        let Ok(out) = f.lab.sh(
            ip,
            &format!(". /etc/profile.d/etcdctl.sh && ETCDCTL_ENDPOINTS=https://{ip}:2379 etcdctl endpoint status -w json"),
        ) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&out.stdout) else {
            continue;
        };
        let st = &v[0]["Status"];
        if !st["leader"].is_null() && st["header"]["member_id"] == st["leader"] {
            return Ok(i);
        }
    }
    anyhow::bail!("no member says it leads")
}

/// Holds each member's etcd 3 s before it starts (a drop-in `ExecStartPre=/bin/sleep 3`), so
/// a restart is under way long enough for a test to act inside it, whatever the machine's load.
fn slow_starts(f: &Fleet) -> Result<()> {
    for l in ETCD {
        f.lab.sh_ok(
            f.lab.addr(l),
            "mkdir -p /etc/systemd/system/etcd.service.d && \
             printf '[Service]\\nExecStartPre=/bin/sleep 3\\n' > /etc/systemd/system/etcd.service.d/slow.conf && \
             systemctl daemon-reload",
        )?;
    }
    Ok(())
}

/// Waits until a member's etcd is being restarted (its unit `activating`, held there by
/// [`slow_starts`]); its index in `ETCD`.
fn restarting(f: &Fleet) -> Result<usize> {
    wait_for(
        "a member's etcd to be restarting",
        Duration::from_secs(120),
        || {
            ETCD.iter().position(|l| {
                f.unit_state(f.lab.addr(*l), "etcd").ok().as_deref() == Some("activating")
            })
        },
    )
}

/// Fails unless every member's etcd has another main pid than in `before`.
fn each_restarted(f: &Fleet, before: &[u32]) -> Result<()> {
    let after = etcd_pids(f)?;
    for (i, (a, b)) in after.iter().zip(before).enumerate() {
        ensure!(a != b, "etcd-{} was not restarted", i + 1);
    }
    Ok(())
}

/// Fails unless etcd on `ip` is stopped, disabled (a boot does not start it), its data dir
/// empty and its etcd.conf gone: a member taken off its host.
fn retired(f: &Fleet, ip: IpAddr) -> Result<()> {
    let state = f.unit_state(ip, "etcd")?;
    ensure!(state != "active", "{ip}: etcd is {state}");
    let enabled = f.lab.sh(ip, "systemctl is-enabled etcd")?;
    ensure!(
        enabled.stdout.trim() != "enabled",
        "{ip}: etcd is enabled, a boot would start it again"
    );
    let left = f.lab.sh_ok(ip, "ls -A /data/etcd")?.stdout;
    ensure!(left.is_empty(), "{ip}: data left in /data/etcd: {left}");
    ensure!(
        !f.lab.host(ip)?.path("/etc/etcd/etcd.conf").exists(),
        "{ip}: etcd.conf left"
    );
    Ok(())
}

fn run_id(f: &Fleet) -> Result<String> {
    Ok(f.newest_run()?["run_id"]
        .as_str()
        .context("run id")?
        .to_string())
}

fn wait_healthy(f: &Fleet) -> Result<()> {
    let h11 = f.lab.addr(ETCD[0]);
    wait_for("every member healthy", Duration::from_secs(90), || {
        (f.etcdctl(h11, "endpoint health --cluster").ok()?.code == 0).then_some(())
    })
}

#[test]
fn a_partitioned_member_stops_a_rolling_restart_before_quorum_is_at_risk() -> Result<()> {
    let _one = lock();
    let f = created(&ETCD, "")?;
    let etcd = ETCD.map(|l| f.lab.addr(l));
    // Partitioned before the run: the quorum guard refuses to take anyone down.
    let before = etcd_pids(&f)?;
    f.lab.partition(etcd[2])?;
    let out = f.admin(&["config", "reload", "--restart", "--yes"])?;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.stderr.contains(&format!("({}) is unhealthy", etcd[2]))
            && out.stderr.contains("quorum run resume"),
        "the refusal names the partitioned member and what to do: {}",
        out.stderr
    );
    assert_eq!(
        etcd_pids(&f)?,
        before,
        "a member was restarted while another was cut off"
    );
    f.lab.heal(etcd[2])?;
    let id = run_id(&f)?;
    wait_healthy(&f)?;
    let out = f.admin(&["run", "resume", &id])?;
    assert_eq!(out.code, 0, "resume after the partition healed: {out:?}");

    // Partitioned mid-run: the leader (restarted last) is cut off while the first follower
    // restarts; the run stops before the other follower, and goes on once the link is back.
    wait_healthy(&f)?;
    slow_starts(&f)?;
    let before = etcd_pids(&f)?;
    let victim = leader(&f)?;
    start_writer(&f)?;
    spawn_admin(&f, &["config", "reload", "--restart", "--yes"])?;
    let first = restarting(&f)?;
    assert_ne!(first, victim, "the leader was restarted first");
    f.lab.partition(etcd[victim])?;
    let (code, out) = wait_admin(&f, Duration::from_secs(180))?;
    assert_ne!(code, 0, "{out}");
    // Halted by the gate after the first restart or by the guard before the next: either
    // names the member that cannot be reached, and says how to go on.
    assert!(
        out.contains(&format!("{}:2379", etcd[victim])) && out.contains("quorum run resume"),
        "{out}"
    );
    let other = (0..3)
        .find(|i| *i != first && *i != victim)
        .context("three members")?;
    assert_eq!(
        f.main_pid(etcd[other], "etcd")?,
        before[other],
        "etcd-{} was restarted while etcd-{} was cut off: {out}",
        other + 1,
        victim + 1
    );
    f.lab.heal(etcd[victim])?;
    let id = run_id(&f)?;
    wait_healthy(&f)?;
    let out = f.admin(&["run", "resume", &id])?;
    assert_eq!(out.code, 0, "{out:?}");
    let (acked, lost, missing) = stop_writer(&f)?;
    assert!(acked > 0);
    assert_eq!((lost, missing), (0, 0), "{acked} acked");
    each_restarted(&f, &before)?;
    Ok(())
}

#[test]
fn a_power_cut_mid_sop_is_resumed_after_boot_on_a_member_and_on_the_admin_node() -> Result<()> {
    let _one = lock();
    let mut f = created(&ETCD, "")?;
    let etcd = ETCD.map(|l| f.lab.addr(l));
    // The leader's host (restarted last) loses power while the first follower restarts; a
    // writer goes on through all of it.
    slow_starts(&f)?;
    let before = etcd_pids(&f)?;
    let victim = leader(&f)?;
    start_writer(&f)?;
    spawn_admin(&f, &["config", "reload", "--restart", "--yes"])?;
    let first = restarting(&f)?;
    f.lab.power_cut(etcd[victim])?;
    let (code, out) = wait_admin(&f, Duration::from_secs(300))?;
    assert_ne!(
        code,
        0,
        "the run went on without etcd-{}'s host: {out}",
        victim + 1
    );
    let other = (0..3)
        .find(|i| *i != first && *i != victim)
        .context("three members")?;
    assert_eq!(
        f.main_pid(etcd[other], "etcd")?,
        before[other],
        "etcd-{} was restarted while etcd-{}'s host was off: {out}",
        other + 1,
        victim + 1
    );
    let id = run_id(&f)?;
    // Booted again: etcd comes back by its enabled unit, the agent by its own; the run resumes.
    f.lab.boot(etcd[victim])?;
    f.wait_agent(etcd[victim])?;
    wait_healthy(&f)?;
    let out = f.admin(&["run", "resume", &id])?;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(f.run_show(&id)?["state"], "succeeded");
    assert_ne!(
        f.main_pid(etcd[other], "etcd")?,
        before[other],
        "etcd-{} was never restarted",
        other + 1
    );
    assert_eq!(f.member_names(etcd[0])?, names(&[1, 2, 3]));
    let (acked, lost, missing) = stop_writer(&f)?;
    assert!(acked > 0);
    assert_eq!((lost, missing), (0, 0), "{acked} acked");

    // The admin node loses power mid-run: the run is left as it was and resumes after boot.
    wait_healthy(&f)?;
    let before = etcd_pids(&f)?;
    spawn_admin(&f, &["config", "reload", "--restart", "--yes"])?;
    restarting(&f)?;
    let admin = f.admin;
    f.lab.power_cut(admin)?;
    f.lab.boot(admin)?;
    for ip in etcd {
        f.wait_agent(ip)?;
    }
    let run = f.newest_run()?;
    assert_ne!(run["state"], "succeeded", "{run}");
    let id = run_id(&f)?;
    wait_healthy(&f)?;
    let out = f.admin(&["run", "resume", &id])?;
    assert_eq!(out.code, 0, "{out:?}");
    each_restarted(&f, &before)?;
    Ok(())
}

#[test]
fn a_full_disk_under_the_agents_state_dir_fails_the_task_before_it_acts() -> Result<()> {
    let _one = lock();
    let f = created(&ETCD, "")?;
    let h11 = f.lab.addr(ETCD[0]);
    // The agent's state dir on a small tmpfs of its own, with the journal kept, then filled.
    f.lab.sh_ok(
        h11,
        "systemctl stop quorum-agent && cp -a /var/lib/quorum /root/quorum-state && \
         mount -t tmpfs -o size=256k,mode=0750 quorum-state /var/lib/quorum && \
         cp -a /root/quorum-state/. /var/lib/quorum/ && systemctl start quorum-agent",
    )?;
    f.wait_agent(h11)?;
    f.lab.sh(
        h11,
        "dd if=/dev/zero of=/var/lib/quorum/fill bs=4k 2>/dev/null; sync",
    )?;
    // The journal's last page may still hold a few lines: refresh the profile (removed each
    // time, so there is something to write) until a task cannot be journaled. Each try adds
    // two lines, so a 4 KiB page is used up within a few dozen.
    let mut failed = None;
    for _ in 0..60 {
        f.lab.sh_ok(h11, "rm -f /etc/profile.d/etcdctl.sh")?;
        let out = f.admin(&["env", "refresh", "--yes"])?;
        if out.code != 0 {
            failed = Some(out);
            break;
        }
    }
    let out = failed.context("60 tasks were journaled on a full disk")?;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("No space left on device")
            && out.stderr.contains("/var/lib/quorum/journal.jsonl")
            && out.stderr.contains("free space there"),
        "the error says the disk is full, where, and what to do: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains("the task was not run"),
        "{}",
        out.stderr
    );
    assert!(
        !f.lab.host(h11)?.path("/etc/profile.d/etcdctl.sh").exists(),
        "the task acted although it could not journal"
    );
    assert_eq!(
        f.unit_state(h11, "quorum-agent")?,
        "active",
        "the agent died of the full disk"
    );
    // No torn line is left in the journal: every line is whole JSON.
    f.lab.sh_ok(
        h11,
        "python3 -c 'import json; [json.loads(l) for l in open(\"/var/lib/quorum/journal.jsonl\")]'",
    )?;
    let id = run_id(&f)?;
    f.lab.sh_ok(h11, "rm /var/lib/quorum/fill")?;
    let out = f.admin(&["run", "resume", &id])?;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(f.lab.host(h11)?.path("/etc/profile.d/etcdctl.sh").exists());
    Ok(())
}

#[test]
fn an_agent_killed_inside_a_restart_is_restarted_by_systemd_and_finds_the_restart_done(
) -> Result<()> {
    let _one = lock();
    let f = created(&ETCD, "")?;
    let etcd = ETCD.map(|l| f.lab.addr(l));
    // The first member restarted (a follower) is held 3 s before its etcd starts, so its
    // agent is inside `systemctl restart` long enough to be killed there.
    slow_starts(&f)?;
    let before = etcd_pids(&f)?;
    spawn_admin(&f, &["config", "reload", "--restart", "--yes"])?;
    let victim = restarting(&f)?;
    let ip = etcd[victim];
    f.lab.sh_ok(ip, "systemctl kill -s KILL quorum-agent")?;
    wait_for(
        "systemd to restart the agent",
        Duration::from_secs(30),
        || {
            let n = f
                .lab
                .sh(ip, "systemctl show -p NRestarts --value quorum-agent")
                .ok()?;
            (n.stdout.trim() == "1").then_some(())
        },
    )?;
    let restarted = wait_for(
        "etcd on the victim to run again",
        Duration::from_secs(60),
        || {
            let pid = f.main_pid(ip, "etcd").ok()?;
            (pid != 0 && pid != before[victim] && f.unit_state(ip, "etcd").ok()? == "active")
                .then_some(pid)
        },
    )?;
    // The agent, back, finds the restart it was inside done by systemd, checks etcd's
    // health as after any restart, and reports the step done: the run goes on by itself.
    let (code, out) = wait_admin(&f, Duration::from_secs(300))?;
    assert_eq!(code, 0, "{out}");
    let run = f.run_show(&run_id(&f)?)?;
    let step = run["steps"]
        .as_array()
        .and_then(|s| {
            s.iter()
                .find(|s| s["kind"] == "RestartEtcd" && s["host"] == ip.to_string())
        })
        .context("no restart step of the victim")?;
    let said = step["output"].as_str().unwrap_or_default();
    assert!(
        said.contains("systemd carried it out")
            && said.contains("is not run again")
            && said.contains("/health answers healthy"),
        "{step}"
    );
    assert_eq!(
        f.main_pid(ip, "etcd")?,
        restarted,
        "etcd on etcd-{}'s host was restarted again after its agent came back",
        victim + 1
    );
    Ok(())
}

/// The .debs of Quorum 0.2 (agent, coordinator), built from this repository's history by
/// `scripts/lab-0.2` (cached after the first build).
fn quorum_0_2() -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/lab-0.2");
    let out = std::process::Command::new(&script)
        .stdin(std::process::Stdio::null())
        .output()?;
    ensure!(
        out.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout)?;
    let mut lines = text.lines();
    let agent = lines.next().context("no agent .deb")?;
    let quorum = lines.next().context("no coordinator .deb")?;
    Ok((agent.into(), quorum.into()))
}

fn agent_versions(f: &Fleet) -> Result<Vec<String>> {
    let agents = f.agents_json()?;
    Ok(f.hosts
        .iter()
        .map(|ip| {
            agents
                .iter()
                .find(|a| a["agent_id"] == ip.to_string())
                .and_then(|a| a["version"].as_str())
                .unwrap_or("?")
                .to_string()
        })
        .collect())
}

#[test]
fn a_0_2_fleet_upgraded_coordinator_first_then_each_agent_while_a_run_goes_on() -> Result<()> {
    let _one = lock();
    let (old_agent, old_quorum) = quorum_0_2()?;
    let (new_agent, new_quorum) = quorum_tests::lab::packages()?;
    // A fleet as 0.2 could run it: its agent's unit starts only where every dir it names
    // exists (/pg, /etc/patroni: Pigsty's nodes with etcd and PostgreSQL together), and its
    // coordinator's unit reads only root's files (Pigsty installed by root, in /root/pigsty)
    // and writes none outside its state dir.
    let f = Fleet::with(
        &ETCD,
        Spec {
            agent_deb: Some(&old_agent),
            quorum_deb: Some(&old_quorum),
            prepare: "mkdir -p /pg /etc/patroni",
            // 0.2 writes member certificates beside the CA (files/pki/etcd), which its unit
            // keeps read-only: it runs where Pigsty has issued them already.
            prepare_admin: "mkdir -p {home}/files/pki/etcd && for n in 1 2 3; do \
                quorum pki issue etcd --name etcd-$n --ip {net}.1$n --dir {ca} --out /root/etcd-$n && \
                mv /root/etcd-$n/server.crt {home}/files/pki/etcd/etcd-$n.crt && \
                mv /root/etcd-$n/server.key {home}/files/pki/etcd/etcd-$n.key || exit 1; done",
            admin_user: "root",
        },
    )?;
    let etcd = ETCD.map(|l| f.lab.addr(l));
    assert_eq!(agent_versions(&f)?, vec!["0.2.0"; 3]);
    f.write_inventory(&members(&f, &ETCD), "", "")?;
    let out = f.admin(&["cluster", "create", "--yes"])?;
    ensure!(out.code == 0, "create with 0.2: {out:?}");
    assert_eq!(f.member_names(etcd[0])?, names(&[1, 2, 3]));

    // The coordinator first, as README says: its runs and certificates carry over.
    let runs_before = f.admin(&["run", "list", "-o", "json"])?.ok()?.stdout;
    f.install_quorum(&new_quorum)?;
    for ip in etcd {
        f.wait_agent(ip)?;
    }
    let runs_after = f.admin(&["run", "list", "-o", "json"])?.ok()?.stdout;
    let ids = |text: &str| -> Result<Vec<String>> {
        let v: Vec<serde_json::Value> = serde_json::from_str(text)?;
        Ok(v.iter()
            .filter_map(|r| r["run_id"].as_str().map(str::to_string))
            .collect())
    };
    assert_eq!(
        ids(&runs_after)?,
        ids(&runs_before)?,
        "the runs of 0.2 are kept"
    );
    // The member certificates 0.2 used (Pigsty's, beside the CA) are the ones 0.3 keeps in
    // its state dir: members keep their certificates.
    f.lab.sh_ok(
        f.admin,
        "for n in 1 2 3; do cmp /root/pigsty/files/pki/etcd/etcd-$n.crt /var/lib/quorum/pki/etcd/etcd-$n.crt && \
         cmp /root/pigsty/files/pki/etcd/etcd-$n.key /var/lib/quorum/pki/etcd/etcd-$n.key || exit 1; done",
    )?;
    // A 0.2 agent gets nothing that changes something: the run stops at its first step
    // there, naming the upgrade, and nothing was done on that host.
    let before = etcd_pids(&f)?;
    let out = f.admin(&["config", "reload", "--restart", "--yes"])?;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.stderr.contains("runs quorum-agent 0.2.0")
            && out.stderr.contains("Upgrade the quorum-agent package"),
        "{}",
        out.stderr
    );
    assert_eq!(
        etcd_pids(&f)?,
        before,
        "a member restarted through a 0.2 agent"
    );
    let refused = run_id(&f)?;

    // Then the agents, one host at a time, while the run goes on: one upgraded, the run
    // resumed in the background, and the other two upgraded while it runs (each package's
    // postinst restarts its agent, maybe inside a task). Wherever the run meets an agent
    // still old, it stops as above; the next resume, with every agent upgraded, finishes.
    f.install_agent(etcd[0], &new_agent)?;
    f.wait_agent(etcd[0])?;
    spawn_admin(&f, &["run", "resume", &refused])?;
    for ip in &etcd[1..] {
        f.install_agent(*ip, &new_agent)?;
    }
    let (code, out) = wait_admin(&f, Duration::from_secs(300))?;
    let mut last = out.clone();
    if code != 0 {
        assert_eq!(code, 3, "{out}");
        assert!(out.contains("Upgrade the quorum-agent package"), "{out}");
        for ip in etcd {
            f.wait_agent(ip)?;
        }
        let again = f.admin(&["run", "resume", &refused])?;
        assert_eq!(again.code, 0, "{again:?}");
        last = format!("{out}\n{again:?}");
    }
    let run = f.run_show(&refused)?;
    assert_eq!(run["state"], "succeeded", "{last}");
    for (i, ip) in etcd.iter().enumerate() {
        let restarts = run["steps"]
            .as_array()
            .map(|s| {
                s.iter()
                    .filter(|s| {
                        s["kind"] == "RestartEtcd"
                            && s["host"] == ip.to_string()
                            && s["outcome"] == "changed"
                    })
                    .count()
            })
            .unwrap_or(0);
        assert_eq!(restarts, 1, "{ip} restarted {restarts} times: {run}");
        assert_ne!(
            f.main_pid(*ip, "etcd")?,
            before[i],
            "etcd-{} was not restarted",
            i + 1
        );
    }
    assert_eq!(agent_versions(&f)?, vec![env!("CARGO_PKG_VERSION"); 3]);
    assert_eq!(f.member_names(etcd[0])?, names(&[1, 2, 3]));
    Ok(())
}

/// An upgrade package of `deb`: the same files, its version `+1` (dpkg-deb on the host).
fn bumped(f: &Fleet, ip: IpAddr, deb: &str, out: &str) -> Result<()> {
    f.lab.sh_ok(
        ip,
        &format!(
            "rm -rf /root/bump && dpkg-deb -R {deb} /root/bump && \
             sed -i -E 's/^(Version: .*)$/\\1+1/' /root/bump/DEBIAN/control && \
             dpkg-deb --root-owner-group -b /root/bump {out} >/dev/null"
        ),
    )?;
    Ok(())
}

#[test]
fn the_packages_install_upgrade_remove_and_purge_on_a_systemd_host() -> Result<()> {
    let _one = lock();
    let (agent, quorum) = quorum_tests::lab::packages()?;
    // A fleet with no agent host: the admin node has the coordinator; a second host gets
    // the agent's package by hand, as an operator would install it.
    let mut f = Fleet::new(&[], None)?;
    let h = f.lab.add_host(11)?;
    f.lab.copy_in(h, &agent, "/root/quorum-agent.deb")?;
    f.lab.sh_ok(h, "dpkg -i /root/quorum-agent.deb")?;
    let v = f.lab.sh_ok(h, "quorum-agent --version")?.stdout;
    assert!(v.contains(env!("CARGO_PKG_VERSION")), "{v}");
    assert_eq!(
        f.lab.sh_ok(h, "stat -c %a /var/lib/quorum")?.stdout.trim(),
        "750"
    );
    // Enabled, not started: no certificate yet (the unit's condition says so).
    assert_eq!(
        f.lab
            .sh(h, "systemctl is-enabled quorum-agent")?
            .stdout
            .trim(),
        "enabled"
    );
    assert_eq!(f.unit_state(h, "quorum-agent")?, "inactive");
    let cond = f
        .lab
        .sh_ok(h, "systemctl show -p ConditionResult --value quorum-agent")?;
    assert_eq!(cond.stdout.trim(), "no", "{cond:?}");
    // systemd itself finds nothing wrong in either unit (the man pages are checked in the
    // package by .ci/packaging.sh; the base has no man).
    for (ip, unit) in [(h, "quorum-agent.service"), (f.admin, "quorum.service")] {
        let verify = f
            .lab
            .sh(ip, &format!("systemd-analyze verify --man=no {unit}"))?;
        assert_eq!(verify.code, 0, "{unit}: {verify:?}");
        assert!(
            !verify.stderr.contains(unit),
            "systemd-analyze complains about {unit}: {}",
            verify.stderr
        );
    }
    // Enrolled and started; then upgraded with an edited config: the edit is kept and the
    // agent runs the new package.
    f.hosts.push(h);
    f.enroll(h)?;
    f.wait_agent(h)?;
    f.lab
        .sh_ok(h, "echo '# edited on the host' >> /etc/quorum/agent.yml")?;
    let pid = f.main_pid(h, "quorum-agent")?;
    bumped(&f, h, "/root/quorum-agent.deb", "/root/quorum-agent-up.deb")?;
    f.lab
        .sh_ok(h, "dpkg -i --force-confold /root/quorum-agent-up.deb")?;
    assert!(f
        .lab
        .sh_ok(h, "dpkg -s quorum-agent")?
        .stdout
        .contains(&format!("Version: {}-1+1", env!("CARGO_PKG_VERSION"))));
    assert!(f
        .lab
        .sh_ok(h, "cat /etc/quorum/agent.yml")?
        .stdout
        .contains("# edited on the host"));
    let now = f.main_pid(h, "quorum-agent")?;
    assert!(
        now != 0 && now != pid,
        "the upgrade did not restart the agent ({pid} -> {now})"
    );
    f.wait_agent(h)?;
    // remove keeps config and state; purge removes the package's own, nothing else.
    // (A journal as an agent that ran tasks has; and a file of another tool's.)
    f.lab.sh_ok(
        h,
        "touch /var/lib/quorum/journal.jsonl /var/lib/quorum/other-tool-state",
    )?;
    f.lab.sh_ok(h, "dpkg --remove quorum-agent")?;
    assert_eq!(f.unit_state(h, "quorum-agent")?, "inactive");
    f.lab.sh_ok(
        h,
        "test -f /etc/quorum/agent.yml && test -f /etc/quorum/agent.crt && test -f /var/lib/quorum/journal.jsonl",
    )?;
    f.lab.sh_ok(h, "dpkg --purge quorum-agent")?;
    f.lab.sh_ok(
        h,
        "test ! -e /etc/quorum/agent.yml && test ! -e /etc/quorum/agent.key && \
         test ! -e /var/lib/quorum/journal.jsonl && test -f /var/lib/quorum/other-tool-state",
    )?;
    // The coordinator: upgraded in place keeps its edited config and its runs, and runs.
    let a = f.admin;
    f.lab.sh_ok(
        a,
        "echo '# edited on the admin node' >> /etc/quorum/coordinator.yml",
    )?;
    f.lab.copy_in(a, &quorum, "/root/quorum.deb")?;
    bumped(&f, a, "/root/quorum.deb", "/root/quorum-up.deb")?;
    f.lab
        .sh_ok(a, "dpkg -i --force-confold /root/quorum-up.deb")?;
    f.wait_listening()?;
    assert!(f
        .lab
        .sh_ok(a, "cat /etc/quorum/coordinator.yml")?
        .stdout
        .contains("# edited on the admin node"));
    assert_eq!(f.unit_state(a, "quorum")?, "active");
    f.admin(&["agents"])?.ok()?;
    Ok(())
}

#[test]
fn a_member_whose_host_lost_power_leaves_and_is_cleaned_up_when_it_boots() -> Result<()> {
    let _one = lock();
    let mut f = Fleet::new(&[11, 12, 13, 14], None)?;
    f.write_inventory(&members(&f, &[11, 12, 13, 14]), "", "")?;
    let out = f.admin(&["cluster", "create", "--yes"])?;
    ensure!(out.code == 0, "create: {out:?}");
    let etcd = ETCD.map(|l| f.lab.addr(l));
    let h14 = f.lab.addr(14);
    assert_eq!(f.member_names(etcd[0])?, names(&[1, 2, 3, 4]));
    // etcd-4's host loses power; Pigsty's SOP takes it out of pigsty.yml, then removes it.
    start_writer(&f)?;
    f.lab.power_cut(h14)?;
    f.write_inventory(&members(&f, &ETCD), "", "")?;
    wait_for("its agent to be stale", Duration::from_secs(60), || {
        f.agents_json()
            .ok()?
            .iter()
            .any(|a| a["agent_id"] == h14.to_string() && a["state"] == "stale")
            .then_some(())
    })?;
    let out = f.admin(&["member", "remove", &h14.to_string(), "--yes"])?;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(f.member_names(etcd[0])?, names(&[1, 2, 3]));
    let cleanup = f.newest_run()?;
    assert_eq!(cleanup["sop"], "host-cleanup", "{cleanup}");
    assert_eq!(cleanup["state"], "waiting", "{cleanup}");
    let cleanup = cleanup["run_id"].as_str().context("run id")?.to_string();
    // Booted again: Pigsty's enabled unit starts etcd on the removed member's data (it exits
    // by itself: it was removed), the agent connects, and the cleanup runs by itself, once.
    f.lab.boot(h14)?;
    wait_for("the cleanup to run", Duration::from_secs(120), || {
        (f.run_show(&cleanup).ok()?["state"] == "succeeded").then_some(())
    })
    .with_context(|| {
        format!(
            "{}\n{}",
            f.run_show(&cleanup)
                .map(|r| r.to_string())
                .unwrap_or_default(),
            f.lab.journal(h14, "etcd", 20)
        )
    })?;
    retired(&f, h14)?;
    let run = f.run_show(&cleanup)?;
    let wipes = run["steps"]
        .as_array()
        .map(|s| {
            s.iter()
                .filter(|s| s["kind"] == "WipeRemovedMember")
                .count()
        })
        .unwrap_or(0);
    assert_eq!(wipes, 1, "{run}");
    assert_eq!(f.member_names(etcd[0])?, names(&[1, 2, 3]));
    let (acked, lost, missing) = stop_writer(&f)?;
    assert!(acked > 0);
    assert_eq!((lost, missing), (0, 0), "{acked} acked");
    Ok(())
}

/// Pigsty v4's infra node as its infra role lays it out (the parts Quorum touches): group
/// `infra`, user `victoria`, `/data/infra` (root:infra 0771) linked from `/infra`, the target
/// and rules dirs (victoria:infra 0750), and vmalert's unit with Pigsty's `ExecReload`. The
/// vmalert here only logs each reload it gets (Debian has no vmalert; the real rule loading
/// is the Prometheus suite's).
const V4_INFRA_NODE: &str = "groupadd --system infra && useradd --system --gid infra victoria \
    && install -d -o root -g infra -m 0771 /data/infra \
    && install -d -o victoria -g infra -m 0750 /data/infra/targets /data/infra/targets/infra /data/infra/rules \
    && ln -s /data/infra /infra \
    && printf '%s\\n' '#!/bin/sh' 'trap \"echo reload >> /var/log/vmalert-reloads\" HUP' 'while :; do sleep 0.2; done' > /usr/local/bin/vmalert \
    && chmod 0755 /usr/local/bin/vmalert \
    && printf '%s\\n' '[Unit]' 'Description=vmalert (stand-in)' '[Service]' 'ExecStart=/usr/local/bin/vmalert' 'ExecReload=/bin/kill -HUP $MAINPID' '[Install]' 'WantedBy=multi-user.target' > /etc/systemd/system/vmalert.service \
    && systemctl daemon-reload && systemctl enable --now vmalert";

#[test]
fn monitoring_registers_on_a_pigsty_v4_infra_node_and_leaves_on_deregistration() -> Result<()> {
    let _one = lock();
    let f = Fleet::with(
        &[11],
        Spec {
            prepare: V4_INFRA_NODE,
            ..Default::default()
        },
    )?;
    let (admin, infra) = (f.admin, f.hosts[0]);
    // The packaged coordinator serves /metrics on the admin node's address.
    f.lab.sh_ok(
        admin,
        "echo 'metrics_listen: 0.0.0.0:9808' >> /etc/quorum/coordinator.yml && systemctl restart quorum.service",
    )?;
    f.wait_listening()?;
    // The restarted coordinator knows the agent again once it has reconnected (its backoff).
    f.wait_agent(infra)?;
    f.write_inventory(
        &[(infra, 1)],
        "version: v4.5.0",
        &format!(
            "    infra:\n      hosts:\n        {infra}: {{ infra_seq: 1 }}\n      vars: {{ version: v4.5.0, admin_ip: {admin} }}\n"
        ),
    )?;
    let out = f.admin(&["monitor", "register"])?;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains(&format!("{infra} changed")) && out.stdout.contains("reloaded vmalert"),
        "{out:?}"
    );
    // Where Pigsty's own files are, owned and moded as theirs, naming admin_ip (the
    // coordinator listens on 0.0.0.0).
    let stat = f.lab.sh_ok(
        infra,
        "stat -c '%U:%G %a' /data/infra/targets/infra/quorum.yml /data/infra/rules/quorum.yml",
    )?;
    assert_eq!(
        stat.stdout.lines().collect::<Vec<_>>(),
        vec!["victoria:infra 640", "victoria:infra 644"],
        "{stat:?}"
    );
    let target = f
        .lab
        .sh_ok(infra, "cat /infra/targets/infra/quorum.yml")?
        .stdout;
    assert!(
        target.contains(&format!("\"{admin}:9808\"")) && target.contains("cls: quorum"),
        "{target}"
    );
    // The infra node reaches that target over the lab network, as its scraper would.
    let scrape = f.lab.sh_ok(
        infra,
        &format!(
            "python3 -c \"import urllib.request; print(urllib.request.urlopen('http://{admin}:9808/metrics').read().decode())\""
        ),
    )?;
    assert!(scrape.stdout.contains("quorum_build_info"), "{scrape:?}");
    let reloads = || -> Result<usize> {
        Ok(f.lab
            .sh(infra, "cat /var/log/vmalert-reloads")?
            .stdout
            .lines()
            .count())
    };
    wait_for("vmalert's reload", Duration::from_secs(10), || {
        (reloads().ok()? == 1).then_some(())
    })?;
    // Registering again changes nothing and reloads nothing.
    let out = f.admin(&["monitor", "register"])?;
    assert!(
        out.code == 0 && out.stdout.contains(&format!("{infra} unchanged")),
        "{out:?}"
    );
    assert_eq!(reloads()?, 1);

    let out = f.admin(&["monitor", "deregister"])?;
    assert_eq!(out.code, 0, "{out:?}");
    let left = f
        .lab
        .sh(infra, "ls /data/infra/targets/infra /data/infra/rules")?;
    assert!(!left.stdout.contains("quorum"), "{left:?}");
    wait_for("vmalert's second reload", Duration::from_secs(10), || {
        (reloads().ok()? == 2).then_some(())
    })?;
    assert_eq!(f.unit_state(infra, "quorum-agent")?, "active");
    Ok(())
}

/// Certificate lifetimes under the packaged units: an agent enrolled on the packaged 90-day
/// lifetime is asked to renew once the coordinator's `agent_cert_ttl` is shortened, and then
/// renews by itself again and again, writing its new certificate and key to /etc/quorum under
/// the unit's sandbox, without a restart. A coordinator certificate replaced on disk with `pki
/// issue --force` is presented without a restart of quorum.service.
#[test]
fn agents_renew_under_their_unit_and_the_coordinator_takes_a_new_certificate_from_disk(
) -> Result<()> {
    let _one = lock();
    let f = Fleet::new(&[11], None)?;
    let (admin, host) = (f.admin, f.hosts[0]);
    let serial = |ip: IpAddr, path: &str| -> Result<String> {
        Ok(f.lab
            .sh_ok(
                ip,
                &format!("openssl x509 -noout -serial -in {path} 2>/dev/null || sha256sum {path}"),
            )?
            .stdout
            .trim()
            .to_string())
    };
    let enrolled = serial(host, "/etc/quorum/agent.crt")?;
    let agent_pid = f.main_pid(host, "quorum-agent")?;
    f.lab.sh_ok(
        admin,
        "echo 'agent_cert_ttl: 30s' >> /etc/quorum/coordinator.yml && systemctl restart quorum.service",
    )?;
    f.wait_listening()?;
    f.wait_agent(host)?;
    let renewals = || -> usize {
        f.lab
            .journal(host, "quorum-agent", 400)
            .matches("renewed this agent's certificate")
            .count()
    };
    // Asked at once (its 90-day certificate outlives 30 s by far), then every ~20 s.
    wait_for(
        "three renewals under the unit",
        Duration::from_secs(120),
        || (renewals() >= 3).then_some(()),
    )
    .with_context(|| f.lab.journal(host, "quorum-agent", 60))?;
    assert_ne!(serial(host, "/etc/quorum/agent.crt")?, enrolled);
    let stat = f.lab.sh_ok(
        host,
        "stat -c '%U %a' /etc/quorum/agent.key /etc/quorum/agent.crt",
    )?;
    assert_eq!(
        stat.stdout.lines().collect::<Vec<_>>(),
        vec!["root 600", "root 644"],
        "{stat:?}"
    );
    assert_eq!(
        f.main_pid(host, "quorum-agent")?,
        agent_pid,
        "the agent restarted"
    );
    let journal = f.lab.journal(host, "quorum-agent", 400);
    assert!(!journal.contains("cannot renew"), "{journal}");
    f.wait_agent(host)?;

    // The coordinator's certificate, replaced on disk.
    let coordinator_pid = f.main_pid(admin, "quorum")?;
    let before = serial(admin, "/etc/quorum/coordinator.crt")?;
    f.lab.sh_ok(
        admin,
        &format!(
            "quorum pki issue coordinator --ip {admin} --dir {} --out /etc/quorum --force",
            f.ca_dir()
        ),
    )?;
    assert_ne!(serial(admin, "/etc/quorum/coordinator.crt")?, before);
    wait_for(
        "the coordinator to take its new certificate",
        Duration::from_secs(30),
        || {
            f.lab
                .journal(admin, "quorum", 200)
                .contains("the coordinator's certificate changed on disk")
                .then_some(())
        },
    )?;
    assert_eq!(
        f.main_pid(admin, "quorum")?,
        coordinator_pid,
        "quorum.service restarted"
    );
    f.wait_agent(host)?;
    Ok(())
}
