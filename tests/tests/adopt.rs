//! Adopting a cluster that Pigsty's Ansible built: its hosts hold the files Pigsty's own
//! templates rendered (the goldens of Pigsty v3.6.1's and v4.5.0's `conf/ha/trio.yml`, from
//! `tests/golden/pigsty/`), member certificates issued as Pigsty issues them (CN `etcd-N`, O
//! pigsty, OU etcd, no extended key usage) and, for v4, RBAC turned on as Pigsty's
//! `etcd_auth` does. Quorum's agents enroll there; `cluster create --plan` finds nothing to
//! change, `config reload` and `env refresh` change no byte and restart nothing, and member
//! add and remove then work.
//!
//! The files are moved onto this machine's loopback test layout and nothing else: the IPs
//! 10.10.10.10-12 become 127.0.0.81-83, the ports free ones, `/etc/etcd` and `/data/etcd`
//! directories of the test host, and three members on one machine cannot all listen on
//! `127.0.0.1:<port>`, so that listen URL is dropped (and `quorum_etcd_listen_localhost:
//! false` says the same to Quorum).

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use quorum_tests::etcd::{Fleet, HostPaths};
use quorum_tests::World;
use rcgen::{CertificateParams, DistinguishedName, DnType, Issuer, KeyPair, SanType};

const IPS: [&str; 4] = ["127.0.0.81", "127.0.0.82", "127.0.0.83", "127.0.0.84"];
const PIGSTY_IPS: [&str; 3] = ["10.10.10.10", "10.10.10.11", "10.10.10.12"];

/// Pigsty's file for `pigsty_ip` at `tag`, moved onto the test layout.
fn pigsty_file(tag: &str, pigsty_ip: &str, file: &str, f: &Fleet, h: &HostPaths) -> Result<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("golden/pigsty")
        .join(tag)
        .join("conf/ha/trio")
        .join(pigsty_ip)
        .join(file);
    let mut text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    for (from, to) in PIGSTY_IPS.iter().zip(IPS) {
        text = text.replace(from, to);
    }
    text = text
        .replace(":2379", &format!(":{}", f.port))
        .replace(":2380", &format!(":{}", f.peer_port))
        .replace(&format!(",https://127.0.0.1:{}", f.port), "")
        .replace("/etc/etcd/", &format!("{}/", h.etc_etcd().display()))
        .replace("/data/etcd", &h.data().display().to_string());
    Ok(text)
}

/// The member certificate Pigsty's `etcd_cert` tasks issue (openssl_csr with these fields,
/// no extended key usage), signed by the world's CA.
fn pigsty_cert(w: &World, h: &HostPaths, name: &str) -> Result<()> {
    let ca_key = KeyPair::from_pem(&std::fs::read_to_string(w.p("ca/ca.key"))?)?;
    let ca_pem = std::fs::read_to_string(w.p("ca/ca.crt"))?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn.push(DnType::OrganizationName, "pigsty");
    dn.push(DnType::OrganizationalUnitName, "etcd");
    params.distinguished_name = dn;
    params.subject_alt_names = vec![
        SanType::IpAddress("127.0.0.1".parse()?),
        SanType::DnsName("localhost".try_into()?),
        SanType::IpAddress(h.ip),
        SanType::DnsName(name.try_into()?),
    ];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::days(7300);
    let cert = params.signed_by(&key, &issuer)?;
    std::fs::write(h.etc_etcd().join("ca.crt"), &ca_pem)?;
    std::fs::write(h.etc_etcd().join("server.crt"), cert.pem())?;
    std::fs::write(h.etc_etcd().join("server.key"), key.serialize_pem())?;
    Ok(())
}

/// Starts etcd on `h` as the agents' exec backend does (same pidfile), from Pigsty's file.
fn start_etcd(h: &HostPaths) -> Result<()> {
    let etcd = quorum_tests::etcd_dir().join("etcd");
    let out = Command::new("start-stop-daemon")
        .args([
            "--start",
            "--background",
            "--oknodo",
            "--make-pidfile",
            "--pidfile",
        ])
        .arg(h.pidfile())
        .arg("--output")
        .arg(h.etcd_log())
        .arg("--exec")
        .arg(&etcd)
        .arg("--")
        .arg("--config-file")
        .arg(h.etcd_conf())
        .output()?;
    anyhow::ensure!(out.status.success(), "start etcd on {}: {out:?}", h.ip);
    Ok(())
}

/// Quorum's inventory of the same cluster: trio's etcd and infra groups, on the test layout.
fn write_inventory(w: &World, f: &Fleet, tag: &str, n: usize) -> Result<()> {
    let mut etcd_hosts = String::new();
    for (seq, h) in (1..).zip(&f.hosts[..n]) {
        etcd_hosts.push_str(&format!(
            "        {}: {{ etcd_seq: {seq}, etcd_data: {}, quorum_etcd_conf_dir: {} }}\n",
            h.ip,
            h.data().display(),
            h.etc_etcd().display()
        ));
    }
    let infra: String = IPS[..3]
        .iter()
        .map(|ip| format!("        {ip}: {{}}\n"))
        .collect();
    let text = format!(
        "all:\n  children:\n    infra:\n      hosts:\n{infra}    etcd:\n      hosts:\n{etcd_hosts}      vars:\n        etcd_cluster: etcd\n        etcd_safeguard: false\n        etcd_port: {}\n        etcd_peer_port: {}\n        quorum_etcd_listen_localhost: false\n  vars:\n    version: {tag}\n    etcd_root_password: Etcd.Root\n",
        f.port, f.peer_port
    );
    std::fs::write(w.p("pigsty.yml"), text)?;
    Ok(())
}

fn bytes_of(hosts: &[HostPaths], v4: bool) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for h in hosts {
        out.push(std::fs::read(h.etcd_conf())?);
        out.push(std::fs::read(h.profile())?);
        if v4 {
            out.push(std::fs::read(h.etc_etcd().join("etcd.pass"))?);
        }
    }
    Ok(out)
}

async fn adopt(tag: &str) -> Result<()> {
    let v4 = tag.starts_with("v4");
    let mut w = World::new()?;
    w.coordinator_extra =
        "gate_timeout_secs: 30\nstale_after_secs: 10\ntask_timeout_secs: 60\n".into();
    let f = Fleet::new(&w, &IPS)?;
    // What Pigsty's etcd.yml left on each member.
    for (i, (pip, h)) in PIGSTY_IPS.iter().zip(&f.hosts).enumerate() {
        pigsty_cert(&w, h, &format!("etcd-{}", i + 1))?;
        for file in ["etcd.conf", "etcdctl.sh"] {
            let dest = if file == "etcd.conf" {
                h.etcd_conf()
            } else {
                h.profile()
            };
            std::fs::write(dest, pigsty_file(tag, pip, file, &f, h)?)?;
        }
        if v4 {
            std::fs::write(
                h.etc_etcd().join("etcd.pass"),
                pigsty_file(tag, pip, "etcd.pass", &f, h)?,
            )?;
        }
    }
    for h in &f.hosts[..3] {
        start_etcd(h)?;
    }
    let eps: Vec<String> = f.hosts[..3].iter().map(|h| f.client_url(h.ip)).collect();
    quorum_tests::etcd::wait_members_up(&w, &eps, Duration::from_secs(30)).await?;
    if v4 {
        // Pigsty's etcd_auth: root with etcd_root_password, then auth enable.
        let h = &f.hosts[0];
        for args in [
            vec!["user", "add", "root:Etcd.Root"],
            vec!["auth", "enable"],
        ] {
            let out = quorum_tests::etcd_command("etcdctl")
                .arg(format!("--endpoints={}", eps[0]))
                .arg(format!(
                    "--cacert={}",
                    h.etc_etcd().join("ca.crt").display()
                ))
                .arg(format!(
                    "--cert={}",
                    h.etc_etcd().join("server.crt").display()
                ))
                .arg(format!(
                    "--key={}",
                    h.etc_etcd().join("server.key").display()
                ))
                .args(&args)
                .env("ETCDCTL_API", "3")
                .output()?;
            anyhow::ensure!(out.status.success(), "etcdctl {args:?}: {out:?}");
        }
    }
    let before = bytes_of(&f.hosts[..3], v4)?;

    // Quorum arrives: agents on every host, the inventory Pigsty used.
    write_inventory(&w, &f, tag, 3)?;
    w.start_coordinator()?;
    f.start_agents(&mut w)?;
    let plan = w.admin(&["cluster", "create", "--plan"])?;
    assert_eq!(plan.code, 0, "{plan:?}");
    assert!(
        plan.stdout.contains("nothing to change") || plan.stderr.contains("nothing to change"),
        "{tag}: {plan:?}"
    );
    let reload = w.admin(&["config", "reload", "--plan"])?;
    assert_eq!(reload.code, 0, "{reload:?}");
    assert!(
        !reload
            .stdout
            .lines()
            .any(|l| l.starts_with("+++") || l.starts_with("---")),
        "{tag}: config reload plans a change:\n{}",
        reload.stdout
    );
    w.admin(&["config", "reload"])?.ok()?;
    w.admin(&["env", "refresh"])?.ok()?;
    assert_eq!(
        bytes_of(&f.hosts[..3], v4)?,
        before,
        "{tag}: adopting rewrote a file Pigsty rendered"
    );
    for h in &f.hosts[..3] {
        assert_eq!(h.restart_count(), 0, "{tag}: {} was restarted", h.ip);
    }

    // Then the SOPs work on it.
    write_inventory(&w, &f, tag, 4)?;
    w.admin(&["member", "add", IPS[3], "--yes"])?.ok()?;
    write_inventory(&w, &f, tag, 3)?;
    w.admin(&["member", "remove", IPS[3], "--yes"])?.ok()?;
    let status = w.admin(&["cluster", "status", "-o", "json"])?.ok()?;
    let status: serde_json::Value = serde_json::from_str(&status.stdout)?;
    let members = status["members"].as_array().context("members")?;
    assert_eq!(members.len(), 3, "{tag}: {status}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_pigsty_v3_6_built_is_adopted_without_a_change() -> Result<()> {
    adopt("v3.6.1").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_pigsty_v4_5_built_with_rbac_is_adopted_without_a_change() -> Result<()> {
    adopt("v4.5.0").await
}
