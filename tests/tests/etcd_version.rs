//! The etcd the suites run is the one selected: Debian's 3.4 in /usr/bin when
//! `QUORUM_TEST_ETCD_DIR` is unset, else the etcd in that directory (`QUORUM_ETCD=3.5
//! scripts/test`). A matrix leg that selects 3.5 but still starts 3.4 somewhere fails here
//! instead of testing 3.4 twice.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use quorum_tests::etcd::{client, Fleet};
use quorum_tests::{etcd_command, etcd_dir, World};

/// What `BINARY ARG` (`etcd --version`, `etcdctl version`) prints after `prefix`.
fn version_of(binary: &str, arg: &str, prefix: &str) -> Result<String> {
    let out = etcd_command(binary)
        .arg(arg)
        .output()
        .with_context(|| format!("cannot run {}", etcd_dir().join(binary).display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .map(|v| v.trim().to_string())
        .with_context(|| format!("`{binary} {arg}` printed no `{prefix}` line: {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_etcd_the_agents_start_is_the_selected_one() -> Result<()> {
    let selected = std::env::var_os("QUORUM_TEST_ETCD_DIR").filter(|d| !d.is_empty());
    let expected = version_of("etcd", "--version", "etcd Version: ")?;
    if selected.is_none() {
        ensure!(
            expected.starts_with("3.4."),
            "QUORUM_TEST_ETCD_DIR is unset, so the tests run Debian bookworm's /usr/bin/etcd (3.4), but it is {expected}"
        );
    }
    // scripts/test's matrix selector, when given, must be what was selected.
    if let Ok(want) = std::env::var("QUORUM_ETCD") {
        ensure!(
            expected.starts_with(&format!("{want}.")),
            "QUORUM_ETCD={want} but the selected etcd ({}) is {expected}",
            etcd_dir().display()
        );
    }
    let etcdctl = version_of("etcdctl", "version", "etcdctl version: ")?;
    ensure!(
        etcdctl == expected,
        "etcdctl in {} is {etcdctl}, etcd is {expected}",
        etcd_dir().display()
    );

    // A member started the way every test starts one: cluster create through an agent's
    // exec backend.
    let ip = "127.0.0.71";
    let mut w = World::new()?;
    w.coordinator_extra = "gate_timeout_secs: 20\ntask_timeout_secs: 60\n".into();
    let f = Fleet::new(&w, &[ip])?;
    f.write_inventory(&w, &[(ip, 1)], "")?;
    w.start_coordinator()?;
    f.start_agents(&mut w)?;
    let out = w.admin(&["cluster", "create", "--yes"])?;
    ensure!(out.code == 0, "cluster create failed: {out:?}");

    let pid = f.host(ip)?.etcd_pid().context("etcd is not running")?;
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))?;
    ensure!(
        exe == std::fs::canonicalize(etcd_dir().join("etcd"))?,
        "the agent started {}, not the selected {}",
        exe.display(),
        etcd_dir().join("etcd").display()
    );
    let mut c = client(&w, &[f.client_url(ip.parse()?)]).await?;
    let status = tokio::time::timeout(Duration::from_secs(10), c.status()).await??;
    assert_eq!(
        status.version(),
        expected,
        "the running member's version (etcd's status) is not the selected etcd's"
    );
    eprintln!(
        "etcd {expected} from {} (server and etcdctl)",
        etcd_dir().display()
    );
    Ok(())
}
