//! The operator commands that need only the inventory file, no coordinator: `quorum inventory
//! check` and `quorum render etcd-conf|etcdctl-env`. Each returns the process exit code:
//! `Ok` when all is well, `Usage` when the input is bad (the problems are on stderr), so
//! scripts and CI can gate on `quorum inventory check` before running a SOP.

use std::io::Write;
use std::net::IpAddr;
use std::path::Path;

use quorum_proto::exit::Exit;
use quorum_proto::pb;
use serde_json::json;

use crate::model::inventory::{EtcdCluster, EtcdInit, EtcdMember, Inventory, InventoryErrors};
use crate::model::render;

/// `quorum inventory check`: resolves the inventory and prints its etcd and PostgreSQL
/// clusters as tables (or with `json`, one JSON object
/// `{"ok", "file", "sha256", "errors", "warnings", "etcd_clusters", "pg_clusters"}` on
/// stdout), or every problem found. Warnings are printed too. Returns 0 when the inventory
/// is usable, 2 (`Usage`) when it has errors (printed to stderr in text mode).
pub fn inventory_check(path: &Path, json: bool, pigsty: Option<&str>) -> anyhow::Result<Exit> {
    let loaded = Inventory::load_as(path, pigsty);
    let mut out = std::io::stdout().lock();
    if json {
        let doc = match &loaded {
            Ok(inv) => json!({
                "ok": true,
                "file": inv.file(),
                "sha256": inv.digest(),
                "errors": [],
                "warnings": inv.warnings(),
                "etcd_clusters": inv.etcd_clusters(),
                "pg_clusters": inv.pg_clusters(),
            }),
            Err(e) => json!({
                "ok": false,
                "file": path.display().to_string(),
                "sha256": null,
                "errors": e.errors,
                "warnings": e.warnings,
                "etcd_clusters": [],
                "pg_clusters": [],
            }),
        };
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
        return Ok(if loaded.is_ok() {
            Exit::Ok
        } else {
            Exit::Usage
        });
    }
    let inv = match loaded {
        Ok(inv) => inv,
        Err(e) => {
            print_problems(&e);
            return Ok(Exit::Usage);
        }
    };
    writeln!(out, "inventory {} (sha256 {})", inv.file(), inv.digest())?;
    for c in inv.etcd_clusters() {
        writeln!(
            out,
            "etcd cluster {}: Pigsty generation {} ({}); etcd RBAC {}",
            c.name,
            c.generation(),
            c.pigsty.why,
            if c.generation().v4() {
                "on (Quorum logs in as root with etcd_root_password)"
            } else {
                "off"
            }
        )?;
    }
    let mut etcd = vec![row(&[
        "ETCD CLUSTER",
        "MEMBER",
        "IP",
        "CLIENT",
        "PEER",
        "DATA DIR",
        "INIT",
        "SAFEGUARD",
    ])];
    for c in inv.etcd_clusters() {
        for m in &c.members {
            etcd.push(row(&[
                &c.name,
                &m.name,
                &m.ip.to_string(),
                &m.params.port.to_string(),
                &m.params.peer_port.to_string(),
                &m.params.data_dir,
                m.params.init.as_str(),
                if m.params.safeguard { "on" } else { "off" },
            ]));
        }
    }
    if etcd.len() > 1 {
        write_table(&mut out, &etcd)?;
    } else {
        writeln!(out, "no etcd cluster")?;
    }
    let mut pg = vec![row(&[
        "PG CLUSTER",
        "INSTANCE",
        "IP",
        "ROLE",
        "PATRONI",
        "VIP-MANAGER",
        "DCS",
    ])];
    for c in inv.pg_clusters() {
        for m in &c.members {
            let vip = m.vip.as_ref().map_or_else(
                || "-".to_string(),
                |v| format!("{}/{} on {}", v.address, v.prefix, v.interface),
            );
            pg.push(row(&[
                &c.name,
                &m.name,
                &m.ip.to_string(),
                if m.role.is_empty() { "-" } else { &m.role },
                &format!(":{}", m.patroni_port),
                &vip,
                c.dcs.as_deref().unwrap_or("-"),
            ]));
        }
    }
    if pg.len() > 1 {
        writeln!(out)?;
        write_table(&mut out, &pg)?;
    }
    for w in inv.warnings() {
        eprintln!("warning: {w}");
    }
    Ok(Exit::Ok)
}

/// `quorum render etcd-conf --host IP [--init new|existing|learner]`: prints the
/// `/etc/etcd/etcd.conf` Quorum (and Pigsty) would write on that member. Without `init`, the
/// member's `etcd_init` is used; `learner` renders as `existing`, as a learner joins a running
/// cluster. Returns 2 (`Usage`) for a bad inventory, a host that is not an etcd member, or a
/// bad `init`.
pub fn render_etcd_conf_cmd(
    path: &Path,
    host: IpAddr,
    init: Option<&str>,
    pigsty: Option<&str>,
) -> anyhow::Result<Exit> {
    let Some(conf) = member_conf_spec(path, host, init, pigsty) else {
        return Ok(Exit::Usage);
    };
    let text = quorum_proto::render::format_etcd_conf(&conf);
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(Exit::Ok)
}

/// The typed etcd.conf of member `host` (see [`render_etcd_conf_cmd`] for `init`): what
/// `quorum render etcd-conf` prints and `quorum task write-etcd-conf` sends. `None` after
/// the reasons were printed.
pub fn member_conf_spec(
    path: &Path,
    host: IpAddr,
    init: Option<&str>,
    pigsty: Option<&str>,
) -> Option<pb::EtcdConf> {
    let inv = load_or_report(path, pigsty)?;
    let (cluster, member) = member_or_report(&inv, host)?;
    let init = match init {
        None => member.params.init,
        Some("new") => EtcdInit::New,
        Some("existing" | "learner") => EtcdInit::Existing,
        Some(other) => {
            eprintln!(
                "error: --init {other:?} is not one of new, existing, learner; use `new` to create the cluster, `existing` (or `learner`) to join a running one"
            );
            return None;
        }
    };
    Some(render::etcd_conf_spec(cluster, host, init))
}

/// `quorum render etcdctl-env --host IP`: prints the `/etc/profile.d/etcdctl.sh` Quorum (and
/// Pigsty) would write on that member. Returns 2 (`Usage`) for a bad inventory or a host that
/// is not an etcd member.
pub fn render_etcdctl_env_cmd(
    path: &Path,
    host: IpAddr,
    pigsty: Option<&str>,
) -> anyhow::Result<Exit> {
    let Some(profile) = host_profile_spec(path, host, pigsty) else {
        return Ok(Exit::Usage);
    };
    let text = quorum_proto::render::format_etcdctl_profile(&profile);
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(Exit::Ok)
}

/// The typed etcdctl profile of member `host`: what `quorum render etcdctl-env` prints and
/// `quorum task write-etcdctl-profile` sends. `None` after the reasons were printed.
pub fn host_profile_spec(
    path: &Path,
    host: IpAddr,
    pigsty: Option<&str>,
) -> Option<pb::EtcdctlProfile> {
    let inv = load_or_report(path, pigsty)?;
    let (cluster, _) = member_or_report(&inv, host)?;
    Some(render::etcdctl_profile_spec(cluster, host))
}

fn load_or_report(path: &Path, pigsty: Option<&str>) -> Option<Inventory> {
    match Inventory::load_as(path, pigsty) {
        Ok(inv) => {
            for w in inv.warnings() {
                eprintln!("warning: {w}");
            }
            Some(inv)
        }
        Err(e) => {
            print_problems(&e);
            None
        }
    }
}

fn member_or_report(inv: &Inventory, host: IpAddr) -> Option<(&EtcdCluster, &EtcdMember)> {
    let found = inv.etcd_member(host);
    if found.is_none() {
        let groups: Vec<&str> = inv
            .etcd_clusters()
            .iter()
            .map(|c| c.group.as_str())
            .collect();
        let group = groups.first().copied().unwrap_or("etcd");
        eprintln!(
            "error: {host} is not a member of any etcd cluster in {}; add it to an etcd group ({}) with a unique etcd_seq:\n  all:\n    children:\n      {group}:\n        hosts:\n          {host}: {{ etcd_seq: <n> }}",
            inv.file(),
            if groups.is_empty() {
                "there is none yet".to_string()
            } else {
                groups.join(", ")
            },
        );
    }
    found
}

fn print_problems(e: &InventoryErrors) {
    for d in &e.errors {
        eprintln!("error: {d}");
    }
    for w in &e.warnings {
        eprintln!("warning: {w}");
    }
    let n = e.errors.len();
    eprintln!(
        "{n} error{} in the inventory; fix {} and run `quorum inventory check` again",
        if n == 1 { "" } else { "s" },
        if n == 1 { "it" } else { "them" }
    );
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|c| c.to_string()).collect()
}

/// Left-aligned columns separated by two spaces, like `etcdctl -w simple`-style listings.
fn write_table(out: &mut impl Write, rows: &[Vec<String>]) -> std::io::Result<()> {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(cell);
            } else {
                let pad = widths[i].saturating_sub(cell.chars().count()) + 2;
                line.push_str(cell);
                line.push_str(&" ".repeat(pad));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}
