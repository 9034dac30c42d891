//! Every task of the closed set, queued on the coordinator by an operator (`quorum task`) and
//! run by a real agent process: files written, Patroni and vip-manager configs patched,
//! services driven, a wipe refused then done, facts reported.

use std::time::Duration;

use anyhow::Result;
use quorum_tests::etcd::Fleet;
use quorum_tests::World;

#[test]
fn each_task_kind_runs_through_coordinator_and_agent() -> Result<()> {
    let mut w = World::new()?;
    let f = Fleet::new(&w, &["127.0.0.31"])?;
    f.write_inventory(&w, &[("127.0.0.31", 1)], "")?;
    w.start_coordinator()?;
    let h = f.hosts[0].clone();
    let marker = h.root.join("log/marker");
    let extra = h.agent_config(false).replace(
        "exec:\n",
        &format!(
            "exec:\n  patroni:\n    reload: [/bin/sh, -c, 'echo patroni-reload >> {m}']\n    restart: [/bin/sh, -c, 'echo patroni-restart >> {m}']\n  vip_manager:\n    restart: [/bin/sh, -c, 'echo vip-restart >> {m}']\n",
            m = marker.display()
        ),
    );
    std::fs::create_dir_all(h.root.join("etc/patroni"))?;
    std::fs::create_dir_all(h.root.join("etc/default"))?;
    std::fs::write(
        h.root.join("etc/patroni/patroni.yml"),
        "scope: pg\netcd3:\n  hosts: 10.0.0.1:2379\n",
    )?;
    std::fs::write(
        h.root.join("etc/default/vip-manager.yml"),
        "dcs-type: etcd\ndcs-endpoints: [https://10.0.0.1:2379]\n",
    )?;
    w.start_agent("127.0.0.31", &extra)?;
    w.wait_agent_state(
        "127.0.0.31",
        &["connected", "idle"],
        Duration::from_secs(30),
    )?;
    let task = |args: &[&str]| {
        let mut a = vec!["task", "--host", "127.0.0.31", "--yes"];
        a.extend_from_slice(args);
        w.admin(&a)
    };
    // The agent renders this host's files from the inventory's typed fields: what
    // `quorum render` prints is what lands on the host.
    let conf = w
        .quorum(&[
            "render",
            "etcd-conf",
            "--host",
            "127.0.0.31",
            "-i",
            &w.p("pigsty.yml"),
        ])?
        .ok()?;
    let inventory = w.p("pigsty.yml");
    let out = task(&["write-etcd-conf", "-i", &inventory])?.ok()?;
    assert!(out.stdout.contains(" changed"), "{}", out.stdout);
    assert_eq!(std::fs::read_to_string(h.etcd_conf())?, conf.stdout);
    let out = task(&["write-etcd-conf", "-i", &inventory])?.ok()?;
    assert!(out.stdout.contains(" unchanged"), "{}", out.stdout);
    w.quorum(&[
        "pki",
        "issue",
        "etcd",
        "--ip",
        "127.0.0.31",
        "--name",
        "etcd-1",
        "--dir",
        &w.p("ca"),
        "--out",
        &w.p("etcd-1"),
    ])?
    .ok()?;
    // Certificates are checked before anything is written (M6): a key that is not the
    // certificate's, and another member's certificate, are refused and nothing changes.
    w.quorum(&[
        "pki",
        "issue",
        "etcd",
        "--ip",
        "127.0.0.32",
        "--name",
        "etcd-2",
        "--dir",
        &w.p("ca"),
        "--out",
        &w.p("etcd-2"),
    ])?
    .ok()?;
    let certs = |crt: &str, key: &str| {
        task(&[
            "write-etcd-certs",
            "--ca-file",
            &w.p("ca/ca.crt"),
            "--cert-file",
            &w.p(crt),
            "--key-file",
            &w.p(key),
        ])
    };
    let out = certs("etcd-1/server.crt", "etcd-2/server.key")?;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.stdout
            .contains("server_key is not the private key of server_crt"),
        "{}",
        out.stdout
    );
    let out = certs("etcd-2/server.crt", "etcd-2/server.key")?;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.stdout.contains("does not name this host 127.0.0.31"),
        "{}",
        out.stdout
    );
    assert!(!h.etc_etcd().join("server.key").exists());
    certs("etcd-1/server.crt", "etcd-1/server.key")?.ok()?;
    let profile = w
        .quorum(&[
            "render",
            "etcdctl-env",
            "--host",
            "127.0.0.31",
            "-i",
            &w.p("pigsty.yml"),
        ])?
        .ok()?;
    task(&["write-etcdctl-profile", "-i", &inventory])?.ok()?;
    assert_eq!(std::fs::read_to_string(h.profile())?, profile.stdout);
    // Services on real etcd.
    let out = task(&["service", "etcd", "start"])?.ok()?;
    assert!(out.stdout.contains(" changed"), "{}", out.stdout);
    quorum_tests::wait_for(
        "etcd to answer through the profile",
        Duration::from_secs(30),
        || {
            f.etcdctl_via_profile("127.0.0.31", "endpoint health")
                .ok()
                .filter(|o| o.code == 0)
                .map(|_| ())
        },
    )?;
    let out = task(&["service", "etcd", "status"])?.ok()?;
    assert!(out.stdout.contains("etcd active"), "{}", out.stdout);
    // Starting a running etcd changes nothing, and the outcome says so.
    let out = task(&["service", "etcd", "start"])?.ok()?;
    assert!(out.stdout.contains(" unchanged"), "{}", out.stdout);
    let out = task(&["wipe-etcd-data"])?;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stdout.contains("etcd is active"), "{}", out.stdout);
    task(&["service", "etcd", "restart"])?.ok()?;
    let out = task(&["service", "etcd", "stop"])?.ok()?;
    assert!(out.stdout.contains(" changed"), "{}", out.stdout);
    let out = task(&["service", "etcd", "stop"])?.ok()?;
    assert!(out.stdout.contains(" unchanged"), "{}", out.stdout);
    let out = task(&["wipe-etcd-data"])?.ok()?;
    assert!(out.stdout.contains("wiped"), "{}", out.stdout);
    // Patroni and vip-manager: only the endpoint list changes.
    let out = task(&["set-patroni-dcs-hosts", "--hosts", "127.0.0.31:2379"])?.ok()?;
    assert!(
        out.stdout.contains("only when it restarts"),
        "{}",
        out.stdout
    );
    assert_eq!(
        std::fs::read_to_string(h.root.join("etc/patroni/patroni.yml"))?,
        "scope: pg\netcd3:\n  hosts: 127.0.0.31:2379\n"
    );
    task(&[
        "set-vip-endpoints",
        "--endpoints",
        "https://127.0.0.31:2379",
    ])?
    .ok()?;
    assert_eq!(
        std::fs::read_to_string(h.root.join("etc/default/vip-manager.yml"))?,
        "dcs-type: etcd\ndcs-endpoints: [https://127.0.0.31:2379]\n"
    );
    assert_eq!(
        std::fs::read_to_string(&marker)?,
        "patroni-reload\nvip-restart\n"
    );
    task(&["facts"])?.ok()?;
    let agents = w.agents_json()?;
    assert_eq!(agents[0]["facts"]["services"]["etcd"], "inactive");
    assert_eq!(agents[0]["facts"]["files"]["etcd_conf"]["exists"], true);
    // Without --yes a destructive ad-hoc task is refused before it reaches the agent.
    let out = w.admin(&["task", "--host", "127.0.0.31", "wipe-etcd-data"])?;
    assert_eq!(out.code, 3, "{out:?}");
    Ok(())
}
