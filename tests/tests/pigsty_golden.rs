//! `quorum render etcd-conf|etcdctl-env` against Pigsty itself: for every inventory Pigsty
//! ships at each tag under `tests/golden/pigsty/` (see its README), the files Pigsty's own
//! etcd role templates render for each etcd member, rendered by Jinja2 with Ansible's settings
//! (`scripts/pigsty-goldens.py`). etcd.conf must be equal as YAML (Quorum writes its own
//! header comment and no blank lines); the profile must set the same aliases and exports and
//! the same root-password guard (`render::profile_meaning`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use quorum_proto::render::{profile_meaning, same_etcd_conf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden/pigsty")
}

/// Every directory holding an `inventory.yml`, sorted.
fn cases(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            if p.join("inventory.yml").is_file() {
                out.push(p.clone());
            }
            cases(&p, out)?;
        }
    }
    out.sort();
    Ok(())
}

/// The member hosts of a case: its subdirectories named by an IP.
fn hosts(case: &Path) -> Result<Vec<String>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(case)? {
        let p = e?.path();
        let name = p
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_string();
        if p.is_dir() && name.parse::<std::net::IpAddr>().is_ok() {
            v.push(name);
        }
    }
    v.sort();
    Ok(v)
}

fn render(what: &str, inventory: &Path, host: &str) -> Result<String> {
    let inv = inventory.display().to_string();
    let out = quorum_tests::run("quorum", &["render", what, "-i", &inv, "--host", host], &[])?;
    anyhow::ensure!(
        out.code == 0,
        "quorum render {what} -i {inv} --host {host}: {out:?}"
    );
    Ok(out.stdout)
}

#[test]
fn quorum_renders_what_pigsty_renders_for_every_shipped_inventory() -> Result<()> {
    let mut all = Vec::new();
    cases(&root(), &mut all)?;
    let mut tags = std::collections::BTreeMap::<String, usize>::new();
    let mut checked = 0;
    let mut wrong = Vec::new();
    for case in &all {
        let rel = case.strip_prefix(root())?.display().to_string();
        let inventory = case.join("inventory.yml");
        for host in hosts(case)? {
            let want_conf = std::fs::read_to_string(case.join(&host).join("etcd.conf"))
                .with_context(|| format!("{rel}/{host}/etcd.conf"))?;
            let want_profile = std::fs::read_to_string(case.join(&host).join("etcdctl.sh"))
                .with_context(|| format!("{rel}/{host}/etcdctl.sh"))?;
            let conf = render("etcd-conf", &inventory, &host)?;
            if !same_etcd_conf(&want_conf, &conf, &[]) {
                wrong.push(format!(
                    "{rel} {host} etcd.conf:\n--- Pigsty\n{want_conf}\n--- Quorum\n{conf}"
                ));
            }
            let profile = render("etcdctl-env", &inventory, &host)?;
            let (want, got) = (profile_meaning(&want_profile), profile_meaning(&profile));
            if want != got {
                wrong.push(format!(
                    "{rel} {host} etcdctl.sh:\n--- Pigsty {want:?}\n--- Quorum {got:?}"
                ));
            }
            checked += 1;
        }
        let tag = rel.split('/').next().unwrap_or("").to_string();
        *tags.entry(tag).or_default() += 1;
    }
    assert!(
        wrong.is_empty(),
        "{} of {checked} hosts differ from Pigsty's render:\n{}",
        wrong.len(),
        wrong
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n\n")
    );
    for tag in ["v2.7.0", "v3.4.1", "v3.6.1", "v4.5.0"] {
        assert!(
            tags.get(tag).is_some_and(|n| *n > 0),
            "no golden inventories of Pigsty {tag}: {tags:?}"
        );
    }
    assert!(checked > 100, "only {checked} hosts checked");
    Ok(())
}

/// The comparison can fail: a host rendered for the wrong generation (here Pigsty v3.6
/// instead of v2.7's missing quota and `ETCDCTL_API`, or v4.5's RBAC profile) differs.
#[test]
fn another_generations_render_differs_from_pigstys() -> Result<()> {
    for tag in ["v2.7.0", "v4.5.0"] {
        let mut all = Vec::new();
        cases(&root().join(tag), &mut all)?;
        let case = all.first().context("no case")?;
        let host = hosts(case)?.into_iter().next().context("no host")?;
        let inv = case.join("inventory.yml").display().to_string();
        let conf = quorum_tests::run(
            "quorum",
            &[
                "render",
                "etcd-conf",
                "-i",
                &inv,
                "--host",
                &host,
                "--pigsty-version",
                "v3.6.1",
            ],
            &[],
        )?;
        let profile = quorum_tests::run(
            "quorum",
            &[
                "render",
                "etcdctl-env",
                "-i",
                &inv,
                "--host",
                &host,
                "--pigsty-version",
                "v3.6.1",
            ],
            &[],
        )?;
        let want_conf = std::fs::read_to_string(case.join(&host).join("etcd.conf"))?;
        let want_profile = std::fs::read_to_string(case.join(&host).join("etcdctl.sh"))?;
        assert!(
            !same_etcd_conf(&want_conf, &conf.stdout, &[]) || tag == "v4.5.0",
            "{tag}: v3.6's etcd.conf reads the same as v2.7's"
        );
        assert_ne!(
            profile_meaning(&want_profile),
            profile_meaning(&profile.stdout),
            "{tag}: v3.6's profile reads the same"
        );
    }
    Ok(())
}
