//! Exit codes of the `quorum` binary that need no coordinator: bad input exits 2, an error
//! outside the input (a certificate that cannot be written, a port in use) exits 1.

use std::path::Path;
use std::process::{Command, Output};

use quorum_proto::exit::Exit;

fn quorum(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_quorum"))
        .args(args)
        .output()
        .unwrap()
}

fn code(out: &Output) -> Option<i32> {
    out.status.code()
}

fn exit(e: Exit) -> Option<i32> {
    Some(i32::from(e.code()))
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A CA in `dir/ca`, made by `quorum pki init`.
fn ca(dir: &Path) -> String {
    let ca = dir.join("ca");
    let out = quorum(&["pki", "init", "--dir", path(&ca)]);
    assert_eq!(code(&out), exit(Exit::Ok), "{out:?}");
    ca.display().to_string()
}

#[test]
fn pki_issue_that_cannot_write_its_certificate_fails_and_bad_flags_are_usage() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca(dir.path());
    // --out is a file, so its directory cannot be made: not bad input, exit 1.
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let out = quorum(&[
        "pki",
        "issue",
        "admin",
        "--name",
        "ops",
        "--dir",
        &ca,
        "--out",
        path(&file),
    ]);
    assert_eq!(code(&out), exit(Exit::Failed), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot create"),
        "{out:?}"
    );

    // What the operator gave wrong stays 2: an existing certificate without --force, a CA
    // directory without a CA, an unknown flag.
    let admin = dir.path().join("admin");
    let issue = |force: bool| {
        let mut args = vec![
            "pki",
            "issue",
            "admin",
            "--name",
            "ops",
            "--dir",
            &ca,
            "--out",
            path(&admin),
        ];
        if force {
            args.push("--force");
        }
        quorum(&args)
    };
    assert_eq!(code(&issue(false)), exit(Exit::Ok));
    let again = issue(false);
    assert_eq!(code(&again), exit(Exit::Usage), "{again:?}");
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("pass --force"),
        "{again:?}"
    );
    assert_eq!(code(&issue(true)), exit(Exit::Ok));
    let no_ca = dir.path().join("no-ca");
    let out = quorum(&["pki", "token", "--host", "10.0.0.1", "--dir", path(&no_ca)]);
    assert_eq!(code(&out), exit(Exit::Usage), "{out:?}");
    let out = quorum(&["pki", "token", "--no-such-flag"]);
    assert_eq!(code(&out), exit(Exit::Usage), "{out:?}");
    assert_eq!(code(&quorum(&["--help"])), exit(Exit::Ok));
}

#[test]
fn serve_on_a_port_in_use_fails_and_a_bad_config_is_usage() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca(dir.path());
    let tls = dir.path().join("coordinator");
    let out = quorum(&[
        "pki",
        "issue",
        "coordinator",
        "--ip",
        "127.0.0.1",
        "--dir",
        &ca,
        "--out",
        path(&tls),
    ]);
    assert_eq!(code(&out), exit(Exit::Ok), "{out:?}");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = |listen: &str, cert: &Path| {
        let file = dir.path().join("coordinator.yml");
        std::fs::write(
            &file,
            format!(
                "listen: {listen}\ntls: {{ ca_cert: {}, cert: {}, key: {} }}\nstate_dir: {}\ninventory: {}\n",
                tls.join("ca.crt").display(),
                cert.display(),
                tls.join("coordinator.key").display(),
                dir.path().join("state").display(),
                dir.path().join("pigsty.yml").display(),
            ),
        )
        .unwrap();
        file
    };
    let listen = taken.local_addr().unwrap().to_string();
    let file = config(&listen, &tls.join("coordinator.crt"));
    let out = quorum(&["serve", "--config", path(&file)]);
    assert_eq!(code(&out), exit(Exit::Failed), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("cannot listen on {listen}")),
        "{out:?}"
    );

    // A certificate file the config names that is not there is bad input.
    let file = config(&listen, &dir.path().join("missing.crt"));
    let out = quorum(&["serve", "--config", path(&file)]);
    assert_eq!(code(&out), exit(Exit::Usage), "{out:?}");
}
