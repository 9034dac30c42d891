//! The inventory-only commands: exit codes of the library functions, and what the `quorum`
//! binary prints for them (goldens from `tests/golden/`, written by hand).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use quorum_coordinator::operator::inventory::{
    inventory_check, render_etcd_conf_cmd, render_etcdctl_env_cmd,
};
use quorum_proto::exit::Exit;

fn golden(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(rel)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn bad_inventory(dir: &Path) -> PathBuf {
    let p = dir.join("pigsty.yml");
    std::fs::write(
        &p,
        "all:\n  children:\n    etcd:\n      hosts:\n        10.10.10.10: { etcd_seq: 1 }\n        10.10.10.11: { etcd_seq: 1 }\n",
    )
    .unwrap();
    p
}

#[test]
fn exit_codes() {
    let seed = golden("seed/pigsty.yml");
    assert_eq!(inventory_check(&seed, false, None).unwrap(), Exit::Ok);
    assert_eq!(inventory_check(&seed, true, None).unwrap(), Exit::Ok);
    let dir = tempfile::tempdir().unwrap();
    let bad = bad_inventory(dir.path());
    assert_eq!(inventory_check(&bad, false, None).unwrap(), Exit::Usage);
    assert_eq!(inventory_check(&bad, true, None).unwrap(), Exit::Usage);
    assert_eq!(
        inventory_check(&dir.path().join("missing.yml"), false, None).unwrap(),
        Exit::Usage
    );

    assert_eq!(
        render_etcd_conf_cmd(&seed, ip("10.10.10.10"), None, None).unwrap(),
        Exit::Ok
    );
    assert_eq!(
        render_etcd_conf_cmd(&seed, ip("10.10.10.10"), Some("learner"), None).unwrap(),
        Exit::Ok
    );
    assert_eq!(
        render_etcd_conf_cmd(&seed, ip("10.10.10.10"), Some("join"), None).unwrap(),
        Exit::Usage
    );
    assert_eq!(
        render_etcd_conf_cmd(&seed, ip("10.10.10.13"), None, None).unwrap(),
        Exit::Usage
    );
    assert_eq!(
        render_etcd_conf_cmd(&bad, ip("10.10.10.10"), None, None).unwrap(),
        Exit::Usage
    );
    assert_eq!(
        render_etcdctl_env_cmd(&seed, ip("10.10.10.12"), None).unwrap(),
        Exit::Ok
    );
    assert_eq!(
        render_etcdctl_env_cmd(&seed, ip("10.10.10.13"), None).unwrap(),
        Exit::Usage
    );
}

fn quorum(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_quorum"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn binary_prints_the_rendered_files() {
    let seed = golden("seed/pigsty.yml");
    let seed = seed.to_str().unwrap();
    let out = quorum(&["render", "etcd-conf", "-i", seed, "--host", "10.10.10.11"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        std::fs::read_to_string(golden("seed/etcd-2.conf")).unwrap()
    );
    let out = quorum(&["render", "etcdctl-env", "-i", seed, "--host", "10.10.10.11"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        std::fs::read_to_string(golden("seed/etcdctl.sh")).unwrap()
    );
    let out = quorum(&["render", "etcd-conf", "-i", seed, "--host", "10.10.10.13"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("10.10.10.13 is not a member of any etcd cluster")
            && err.contains("10.10.10.13: { etcd_seq: <n> }"),
        "{err}"
    );
}

#[test]
fn binary_check_reports_problems_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let bad = bad_inventory(dir.path());
    let out = quorum(&[
        "inventory",
        "check",
        "-i",
        bad.to_str().unwrap(),
        "-o",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["errors"][0]["line"], 6);
    assert_eq!(v["errors"][0]["hosts"][0], "10.10.10.11");
    assert!(v["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("etcd_seq 1 is already used by 10.10.10.10 (line 5)"));

    let seed = golden("seed/pigsty.yml");
    let out = quorum(&[
        "inventory",
        "check",
        "-i",
        seed.to_str().unwrap(),
        "-o",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["etcd_clusters"][0]["members"][2]["name"], "etcd-3");
    assert_eq!(v["pg_clusters"][0]["members"][0]["vip"]["prefix"], 24);
    // The Patroni REST password is never printed.
    assert!(!String::from_utf8_lossy(&out.stdout).contains("Patroni.API"));
    assert_eq!(v["sha256"].as_str().unwrap().len(), 64);

    let out = quorum(&["inventory", "check", "-i", seed.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("etcd          etcd-1  10.10.10.10  2379    2380  /data/etcd"),
        "{text}"
    );
    assert!(
        text.contains("pg-meta     pg-meta-1  10.10.10.10  primary  :8008"),
        "{text}"
    );
}

/// Output cut short by the reader (`quorum ... | head`) ends the CLI quietly with status 0;
/// SIGPIPE stays ignored so a socket closed under a TLS write can never kill it silently.
#[test]
fn a_closed_stdout_ends_the_cli_quietly() {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_quorum"))
        .args(["completions", "bash"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("quorum starts");
    // Read one byte, then close the pipe before the script (tens of KiB) is written.
    let mut out = child.stdout.take().expect("stdout");
    let mut first = [0u8; 1];
    out.read_exact(&mut first).expect("some output");
    drop(out);
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("stderr reads");
    let status = child.wait().expect("quorum exits");
    assert_eq!(status.code(), Some(0), "{status:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// Probe L1: `[` nested 32 000 deep took libyaml 6 s; it is refused before parsing, with the
/// file, the line and the limit.
#[test]
fn binary_refuses_deep_nesting_fast() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("df.yml");
    std::fs::write(
        &p,
        format!(
            "all:\n  vars:\n    x: {}{}\n",
            "[".repeat(32_000),
            "]".repeat(32_000)
        ),
    )
    .unwrap();
    let start = std::time::Instant::now();
    let out = quorum(&["inventory", "check", "-i", p.to_str().unwrap()]);
    let took = start.elapsed();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:3: the inventory was not parsed", p.display()))
            && err.contains("deeper than 64 levels at line 3"),
        "{err}"
    );
    // Generous: the refusal takes milliseconds, libyaml took seconds.
    assert!(took < std::time::Duration::from_secs(3), "{took:?}");
}

/// Probe L1: an 8 MB inventory is refused unread, naming its size and the limit.
#[test]
fn binary_refuses_an_oversize_inventory() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("big.yml");
    let mut text = String::from("all:\n  children:\n    etcd:\n      hosts:\n");
    let mut n = 0u32;
    while text.len() < 8_000_000 {
        text.push_str(&format!(
            "        10.{}.{}.{}: {{ etcd_seq: {n} }}\n",
            n >> 16,
            (n >> 8) & 255,
            n & 255
        ));
        n += 1;
    }
    std::fs::write(&p, &text).unwrap();
    let out = quorum(&["inventory", "check", "-i", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}: the inventory was not parsed: it is {} bytes, over Quorum's limit of 4194304 bytes",
            p.display(),
            text.len()
        )),
        "{err}"
    );
}
