//! Pigsty v4's etcd RBAC end to end: an inventory that says `version: v4.5.0` gets a cluster
//! with authentication on (root with `etcd_root_password`, `/etc/etcd/etcd.pass`, the v4
//! etcdctl profile) and an etcd user per PostgreSQL cluster, and every SOP then logs in as
//! root: create (again: nothing to change), reload with restarts, env refresh, member add and
//! remove, purge and re-create. A changed `etcd_root_password` is refused before anything
//! is touched. Real etcd, real agents and coordinator over mTLS, on 127.0.0.71-74.

use std::os::unix::fs::PermissionsExt;

use anyhow::{Context, Result};
use quorum_tests::etcd::{client_as, Fleet};
use quorum_tests::World;

const IPS: [&str; 4] = ["127.0.0.71", "127.0.0.72", "127.0.0.73", "127.0.0.74"];
const ROOT_PASSWORD: &str = "R00t.Secret";
const PG_PASSWORD: &str = "Pg.Test.Pass";

fn v4_vars(root_password: &str) -> String {
    format!("version: v4.5.0\netcd_root_password: {root_password}\n")
}

/// A PostgreSQL cluster in the inventory: its etcd user is made with the etcd cluster (no
/// Patroni runs here; tests/tests/patroni.rs runs real ones).
fn pg_group() -> String {
    format!(
        "    pg-test:\n      hosts:\n        {}: {{ pg_seq: 1, pg_role: primary }}\n      vars: {{ pg_cluster: pg-test, pg_etcd_password: {PG_PASSWORD} }}\n",
        IPS[0]
    )
}

fn members(n: usize) -> Vec<(&'static str, u32)> {
    IPS[..n]
        .iter()
        .zip(1..)
        .map(|(ip, seq)| (*ip, seq))
        .collect()
}

fn eps(f: &Fleet, n: usize) -> Vec<String> {
    f.hosts[..n].iter().map(|h| f.client_url(h.ip)).collect()
}

/// (name, is_learner) of every member, asked as root.
async fn member_names(w: &World, f: &Fleet, n: usize) -> Result<Vec<String>> {
    let mut c = client_as(w, &eps(f, n), Some(("root", ROOT_PASSWORD))).await?;
    let mut names: Vec<String> = c
        .member_list()
        .await?
        .members()
        .iter()
        .map(|m| m.name().to_string())
        .collect();
    names.sort();
    Ok(names)
}

/// RBAC is on: no login, no write; root and the PG cluster's user (on its own prefix only)
/// may write.
async fn check_rbac(w: &World, f: &Fleet, n: usize) -> Result<()> {
    let mut anon = client_as(w, &eps(f, n), None).await?;
    let refused = anon.put("/anon", "x", None).await;
    anyhow::ensure!(
        refused.is_err(),
        "a write without a login went through: RBAC is off"
    );
    let mut root = client_as(w, &eps(f, n), Some(("root", ROOT_PASSWORD))).await?;
    root.put("/quorum-test/root", "ok", None).await?;
    let mut pg = client_as(w, &eps(f, n), Some(("pg-test", PG_PASSWORD))).await?;
    pg.put("/pg/pg-test/leader", "pg-test-1", None).await?;
    anyhow::ensure!(
        pg.put("/pg/other/leader", "x", None).await.is_err(),
        "pg-test may write outside its prefix"
    );
    Ok(())
}

/// etcdctl through the profile the agent wrote, as root (the v4 profile exports
/// ETCDCTL_USER for root from etcd.pass).
fn etcdctl_works(f: &Fleet, ip: &str) -> Result<()> {
    let put = f.etcdctl_via_profile(ip, "put /quorum-test/profile yes")?;
    anyhow::ensure!(put.code == 0, "etcdctl put through the profile: {put:?}");
    let list = f.etcdctl_via_profile(ip, "member list")?;
    anyhow::ensure!(list.code == 0, "etcdctl member list: {list:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v4_cluster_runs_rbac_through_every_sop() -> Result<()> {
    let mut w = World::new()?;
    w.coordinator_extra =
        "gate_timeout_secs: 30\nstale_after_secs: 10\ntask_timeout_secs: 60\n".into();
    let f = Fleet::new(&w, &IPS)?;
    let vars = v4_vars(ROOT_PASSWORD);
    f.write_inventory_with(&w, &members(3), &vars, &pg_group())?;
    w.start_coordinator()?;
    f.start_agents(&mut w)?;
    let check = w
        .quorum(&["inventory", "check", "-i", &w.p("pigsty.yml")])?
        .ok()?;
    assert!(
        check.stdout.contains("Pigsty generation v4.5")
            && check.stdout.contains("version: v4.5.0 in the inventory")
            && check.stdout.contains("etcd RBAC on"),
        "{}",
        check.stdout
    );
    assert!(!check.stdout.contains(ROOT_PASSWORD), "{}", check.stdout);

    let plan = w.admin(&["cluster", "create", "--plan"])?.ok()?;
    for step in ["WriteEtcdPass", "EnableAuth", "EnsurePgEtcdUsers"] {
        assert!(plan.stdout.contains(step), "{step}:\n{}", plan.stdout);
    }
    assert!(!plan.stdout.contains(ROOT_PASSWORD), "{}", plan.stdout);
    w.admin(&["cluster", "create", "--yes"])?.ok()?;
    check_rbac(&w, &f, 3).await?;
    // etcd.pass: the password alone, root:etcd 0640 in Pigsty (root:root in this test).
    for h in &f.hosts[..3] {
        let pass = h.etc_etcd().join("etcd.pass");
        assert_eq!(std::fs::read_to_string(&pass)?, ROOT_PASSWORD);
        assert_eq!(
            std::fs::metadata(&pass)?.permissions().mode() & 0o777,
            0o640
        );
        let profile = std::fs::read_to_string(h.profile())?;
        assert!(
            profile.contains("case \"$(id -un)\" in\n  root|dba)\n")
                && profile.contains("ETCDCTL_USER=\"root:$(cat "),
            "{profile}"
        );
        assert_eq!(
            std::fs::metadata(h.profile())?.permissions().mode() & 0o777,
            0o644
        );
    }
    etcdctl_works(&f, IPS[1])?;
    // The password is in no run the store keeps, nor in the coordinator's log.
    let runs = w.admin(&["run", "list", "-o", "json"])?.ok()?;
    let ids: Vec<serde_json::Value> = serde_json::from_str(&runs.stdout)?;
    for r in &ids {
        let id = r["run_id"].as_str().context("run id")?;
        let shown = w.admin(&["run", "show", id, "-o", "json"])?.ok()?;
        assert!(!shown.stdout.contains(ROOT_PASSWORD), "{}", shown.stdout);
    }
    let log = std::fs::read_to_string(w.p("coordinator.log")).unwrap_or_default();
    assert!(
        !log.contains(ROOT_PASSWORD),
        "the coordinator logged the password"
    );

    // Again: nothing to change, logged in.
    let again = w.admin(&["cluster", "create"])?;
    assert_eq!(again.code, 0, "{again:?}");
    assert!(
        again.stderr.contains("nothing to change"),
        "{}",
        again.stderr
    );
    // Reload with a restart of every member, and the profiles again.
    w.admin(&["config", "reload", "--restart"])?.ok()?;
    w.admin(&["env", "refresh"])?.ok()?;
    check_rbac(&w, &f, 3).await?;

    // Member add and remove, logged in as root. The PostgreSQL cluster leaves the inventory
    // meanwhile: a membership change refreshes its (here absent) Patroni.
    let groups = pg_group();
    f.write_inventory(&w, &members(4), &vars)?;
    w.admin(&["member", "add", IPS[3], "--yes"])?.ok()?;
    assert_eq!(
        member_names(&w, &f, 4).await?,
        ["etcd-1", "etcd-2", "etcd-3", "etcd-4"]
    );
    assert_eq!(
        std::fs::read_to_string(f.hosts[3].etc_etcd().join("etcd.pass"))?,
        ROOT_PASSWORD
    );
    etcdctl_works(&f, IPS[3])?;
    f.write_inventory(&w, &members(3), &vars)?;
    w.admin(&["member", "remove", IPS[3], "--yes"])?.ok()?;
    assert_eq!(
        member_names(&w, &f, 3).await?,
        ["etcd-1", "etcd-2", "etcd-3"]
    );
    assert!(
        !f.hosts[3].etc_etcd().join("etcd.pass").exists(),
        "the retired member kept etcd.pass"
    );

    // A changed etcd_root_password is refused before anything is touched.
    f.write_inventory_with(&w, &members(3), &v4_vars("Not.The.Password"), &groups)?;
    let wrong = w.admin(&["config", "reload", "--restart"])?;
    assert_ne!(wrong.code, 0, "{wrong:?}");
    assert!(
        wrong.stderr.contains("etcd_root_password") && !wrong.stderr.contains("Not.The.Password"),
        "{}",
        wrong.stderr
    );
    assert_eq!(
        std::fs::read_to_string(f.hosts[0].etc_etcd().join("etcd.pass"))?,
        ROOT_PASSWORD,
        "etcd.pass was rewritten with a password etcd does not know"
    );
    check_rbac(&w, &f, 3).await?;

    // Purge and create again: RBAC and the PG cluster's user come back, so Patroni could log
    // in again.
    f.write_inventory_with(&w, &members(3), &vars, &groups)?;
    w.admin(&["cluster", "purge", "--yes"])?.ok()?;
    w.admin(&["cluster", "create", "--yes"])?.ok()?;
    check_rbac(&w, &f, 3).await?;
    etcdctl_works(&f, IPS[0])?;
    // And `cluster remove` (etcd_clean): every member stopped, wiped and retired.
    w.admin(&["cluster", "remove", "--yes"])?.ok()?;
    for h in &f.hosts[..3] {
        assert!(h.etcd_pid().is_none(), "{} still runs etcd", h.ip);
        assert!(!h.etc_etcd().join("etcd.pass").exists());
        assert!(!h.etcd_conf().exists());
    }
    Ok(())
}

/// etcd's simple auth tokens expire (`auth-token-ttl`, 300 s by default): a run that lasts
/// longer than a token must not fail on an expired one. Quorum opens a client (and logs in)
/// per etcd call, and asks the client to log in again when etcd says a token expired; here
/// the TTL is 1 s and a member add, whose learner catch-up and gates take longer, goes
/// through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_outlives_etcds_auth_token_ttl() -> Result<()> {
    let mut w = World::new()?;
    w.coordinator_extra =
        "gate_timeout_secs: 30\nstale_after_secs: 10\ntask_timeout_secs: 60\n".into();
    let f = Fleet::new(&w, &IPS)?;
    let vars = v4_vars(ROOT_PASSWORD);
    f.write_inventory(&w, &members(3), &vars)?;
    w.start_coordinator()?;
    f.start_agents(&mut w)?;
    w.admin(&["cluster", "create", "--yes"])?.ok()?;
    // A 1 s token TTL, set by hand in each member's etcd.conf, one member at a time.
    for h in &f.hosts[..3] {
        let mut conf = std::fs::read_to_string(h.etcd_conf())?;
        conf.push_str("auth-token-ttl: 1\n");
        std::fs::write(h.etcd_conf(), conf)?;
        w.admin(&[
            "service",
            "restart",
            "etcd",
            "--hosts",
            &h.ip.to_string(),
            "--yes",
        ])?
        .ok()?;
    }
    f.write_inventory(&w, &members(4), &vars)?;
    let add = w.admin(&["member", "add", IPS[3], "--yes"])?;
    assert_eq!(add.code, 0, "{add:?}");
    assert_eq!(
        member_names(&w, &f, 4).await?,
        ["etcd-1", "etcd-2", "etcd-3", "etcd-4"]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generations_before_v4_run_no_rbac_and_write_no_password() -> Result<()> {
    let mut w = World::new()?;
    w.coordinator_extra =
        "gate_timeout_secs: 30\nstale_after_secs: 10\ntask_timeout_secs: 60\n".into();
    let f = Fleet::new(&w, &IPS[..3])?;
    // Pigsty v3.4: ETCDCTL_API=3 in the profile, no RBAC.
    f.write_inventory(&w, &members(3), "version: v3.4.1")?;
    w.start_coordinator()?;
    f.start_agents(&mut w)?;
    let plan = w.admin(&["cluster", "create", "--plan"])?.ok()?;
    assert!(!plan.stdout.contains("EnableAuth"), "{}", plan.stdout);
    w.admin(&["cluster", "create", "--yes"])?.ok()?;
    let mut anon = client_as(&w, &eps(&f, 3), None).await?;
    anon.put("/open", "yes", None).await?;
    for h in &f.hosts {
        assert!(!h.etc_etcd().join("etcd.pass").exists());
        let profile = std::fs::read_to_string(h.profile())?;
        assert!(profile.contains("\nexport ETCDCTL_API=3\n"), "{profile}");
        assert!(!profile.contains("ETCDCTL_USER"), "{profile}");
        let conf = std::fs::read_to_string(h.etcd_conf())?;
        assert!(
            conf.contains("\nquota-backend-bytes: 17179869184\n"),
            "{conf}"
        );
    }
    etcdctl_works(&f, IPS[2])?;
    Ok(())
}
