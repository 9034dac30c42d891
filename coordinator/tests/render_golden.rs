//! Golden tests of the renderers. Every expected file under `tests/golden/` was written by hand
//! from `shared/reference/pigsty-etcd.md` (never produced by running the renderer):
//!
//! - `etcd.conf`: section "/etc/etcd/etcd.conf — the template, key by key": the managed comment
//!   first, then `name`, `data-dir`, `initial-cluster-token` (the cluster name, quoted),
//!   `initial-cluster-state` (quoted), `initial-cluster` (every member `name=https://ip:peer`
//!   in string order of IP, quoted), the three URL keys and `advertise-client-urls` (quoted),
//!   `election-timeout`, `heartbeat-interval`, `quota-backend-bytes: 17179869184`,
//!   `auto-compaction-mode: periodic`, `auto-compaction-retention: "24h"`, then the client and
//!   peer transport-security blocks with cert, key and CA under `/etc/etcd` (laid out as
//!   block mappings, as Pigsty's template file does).
//! - `etcdctl.sh`: section "/etc/profile.d/etcdctl.sh": two aliases, `ETCDCTL_ENDPOINTS`
//!   quoted and string-sorted, `ETCDCTL_CACERT=/etc/pki/ca.crt`, the server cert and key (the
//!   infra cert and key on infra hosts), after the same managed comment line.
//! - The Quorum extension keys (loopback case) follow the module docs of
//!   `quorum_coordinator::model::inventory` and real-components.md §3.1.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use quorum_coordinator::model::inventory::{EtcdInit, Inventory};
use quorum_coordinator::model::render::{
    client_endpoints, patroni_dcs_hosts, render_etcd_conf, render_etcdctl_profile,
    try_render_etcd_conf, vip_endpoints,
};

fn golden(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(golden(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn load(rel: &str) -> Inventory {
    Inventory::load(&golden(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Compares line by line first, so a mismatch names the line.
fn same(got: &str, want_rel: &str) {
    let want = read(want_rel);
    for (n, (g, w)) in got.lines().zip(want.lines()).enumerate() {
        assert_eq!(g, w, "{want_rel} line {}", n + 1);
    }
    assert_eq!(got, want, "{want_rel}");
}

#[test]
fn seed_inventory_every_member() {
    // The seed's "Create Cluster" inventory: etcd-1..3 on 10.10.10.10-12, defaults everywhere.
    let inv = load("seed/pigsty.yml");
    let c = inv.etcd_cluster(None).unwrap();
    same(
        &render_etcd_conf(c, ip("10.10.10.10"), EtcdInit::New),
        "seed/etcd-1.conf",
    );
    same(
        &render_etcd_conf(c, ip("10.10.10.11"), EtcdInit::New),
        "seed/etcd-2.conf",
    );
    same(
        &render_etcd_conf(c, ip("10.10.10.12"), EtcdInit::New),
        "seed/etcd-3.conf",
    );
    // The profile names every member, so it is the same file on each of them.
    for h in ["10.10.10.10", "10.10.10.11", "10.10.10.12"] {
        same(&render_etcdctl_profile(c, ip(h)), "seed/etcdctl.sh");
    }
}

#[test]
fn single_member_with_pigsty_defaults_only() {
    // No vars at all: etcd_cluster defaults to `etcd`, the group Pigsty's etcd.yml targets.
    let inv = load("single/pigsty.yml");
    let c = inv.etcd_cluster(Some("etcd")).unwrap();
    same(
        &render_etcd_conf(c, ip("10.10.10.10"), EtcdInit::New),
        "single/etcd.conf",
    );
    same(
        &render_etcdctl_profile(c, ip("10.10.10.10")),
        "single/etcdctl.sh",
    );
}

#[test]
fn members_sort_as_strings() {
    // reference: "`10.10.10.100` sorts before `10.10.10.11`, and `10.10.10.9` last".
    let inv = load("sort/pigsty.yml");
    let c = inv.etcd_cluster(None).unwrap();
    same(
        &render_etcd_conf(c, ip("10.10.10.9"), EtcdInit::New),
        "sort/etcd-1.conf",
    );
    same(
        &render_etcdctl_profile(c, ip("10.10.10.100")),
        "sort/etcdctl.sh",
    );
    assert_eq!(
        patroni_dcs_hosts(c),
        ["10.10.10.10:2379", "10.10.10.100:2379", "10.10.10.9:2379"]
    );
}

#[test]
fn five_members() {
    let inv = load("five/pigsty.yml");
    let c = inv.etcd_cluster(None).unwrap();
    same(
        &render_etcd_conf(c, ip("10.10.10.200"), EtcdInit::New),
        "five/etcd-3.conf",
    );
    same(
        &render_etcdctl_profile(c, ip("10.10.10.3")),
        "five/etcdctl.sh",
    );
}

#[test]
fn custom_name_ports_data_dir_and_timings() {
    // Host vars beat group vars beat all.vars (reference: "Variable precedence").
    let inv = load("custom/pigsty.yml");
    let c = inv.etcd_cluster(Some("meta-etcd")).unwrap();
    same(
        &render_etcd_conf(c, ip("10.20.0.2"), EtcdInit::New),
        "custom/meta-etcd-12.conf",
    );
    same(
        &render_etcd_conf(c, ip("10.20.0.3"), EtcdInit::New),
        "custom/meta-etcd-13.conf",
    );
    same(
        &render_etcdctl_profile(c, ip("10.20.0.1")),
        "custom/etcdctl.sh",
    );
    assert!(c.params.safeguard, "etcd_safeguard from all.vars");
}

#[test]
fn existing_join_from_the_inventory() {
    // The seed's "Add Member": the new host in group etcd with etcd_init=existing. Its own
    // config lists all four members and says `existing`.
    let inv = load("seed/pigsty-join.yml");
    let c = inv.etcd_cluster(None).unwrap();
    let m = c.member(ip("10.10.10.13")).unwrap();
    assert_eq!(m.params.init, EtcdInit::Existing);
    assert!(m.params.learner);
    same(
        &render_etcd_conf(c, m.ip, m.params.init),
        "seed/join-etcd-4.conf",
    );
}

#[test]
fn learner_join_renders_like_existing() {
    // A learner join (member add --learner before the inventory changes) renders exactly as
    // an `existing` join: the learner flag is for `etcdctl member add`, not for etcd.conf.
    let inv = load("seed/pigsty.yml");
    let c = inv.etcd_cluster(None).unwrap();
    let mut members = c.members.clone();
    members.push(c.new_member(ip("10.10.10.13"), 4));
    let grown = c.with_members(members);
    same(
        &render_etcd_conf(&grown, ip("10.10.10.13"), EtcdInit::Existing),
        "seed/join-etcd-4.conf",
    );
    // Rendering a non-member directly gives the same file: it is rendered as just added.
    same(
        &render_etcd_conf(c, ip("10.10.10.13"), EtcdInit::Existing),
        "seed/join-etcd-4.conf",
    );
    assert!(try_render_etcd_conf(c, ip("10.10.10.13"), EtcdInit::Existing).is_err());
}

#[test]
fn member_remove_renders_without_it() {
    // The seed's "Remove Member" step 1: reload config without the leaving member.
    let inv = load("seed/pigsty.yml");
    let c = inv.etcd_cluster(None).unwrap();
    let shrunk = c.without_member(ip("10.10.10.12"));
    same(
        &render_etcd_conf(&shrunk, ip("10.10.10.10"), EtcdInit::New),
        "seed/remove-etcd-3-etcd-1.conf",
    );
    same(
        &render_etcdctl_profile(&shrunk, ip("10.10.10.11")),
        "seed/remove-etcd-3-etcdctl.sh",
    );
    assert_eq!(
        patroni_dcs_hosts(&shrunk),
        ["10.10.10.10:2379", "10.10.10.11:2379"]
    );
}

#[test]
fn loopback_test_layout_with_every_extension() {
    let inv = load("loopback/pigsty.yml");
    let c = inv.etcd_cluster(None).unwrap();
    same(
        &render_etcd_conf(c, ip("127.0.0.11"), EtcdInit::New),
        "loopback/etcd-test-1.conf",
    );
    same(
        &render_etcdctl_profile(c, ip("127.0.0.12")),
        "loopback/etcdctl.sh",
    );
}

#[test]
fn infra_host_profile_uses_the_infra_cert() {
    let inv = load("infra/pigsty.yml");
    let c = inv.etcd_cluster(None).unwrap();
    same(
        &render_etcdctl_profile(c, ip("10.10.10.10")),
        "infra/etcdctl-infra.sh",
    );
    same(
        &render_etcdctl_profile(c, ip("10.10.10.11")),
        "seed/etcdctl.sh",
    );
}

#[test]
fn sop_endpoint_helpers() {
    // reference: Patroni `hosts: '10.10.10.10:2379,...'` (no scheme); vip-manager
    // `dcs-endpoints` and ETCDCTL_ENDPOINTS `https://<ip>:<etcd_port>`; all string-sorted.
    let inv = load("seed/pigsty.yml");
    let c = inv.etcd_cluster(None).unwrap();
    assert_eq!(
        patroni_dcs_hosts(c),
        ["10.10.10.10:2379", "10.10.10.11:2379", "10.10.10.12:2379"]
    );
    let urls = [
        "https://10.10.10.10:2379",
        "https://10.10.10.11:2379",
        "https://10.10.10.12:2379",
    ];
    assert_eq!(vip_endpoints(c), urls);
    assert_eq!(client_endpoints(c), urls);
}

#[test]
fn rendered_conf_is_yaml_etcd_can_read() {
    // Every golden etcd.conf parses, and the keys etcd reads have the expected values.
    let inv = load("custom/pigsty.yml");
    let c = inv.etcd_cluster(None).unwrap();
    let text = render_etcd_conf(c, ip("10.20.0.1"), EtcdInit::Existing);
    let v: quorum_proto::yaml::Value = quorum_proto::yaml::from_str(&text).unwrap();
    assert_eq!(v["name"].as_str(), Some("meta-etcd-11"));
    assert_eq!(v["initial-cluster-state"].as_str(), Some("existing"));
    assert_eq!(v["quota-backend-bytes"].as_u64(), Some(17_179_869_184));
    assert_eq!(
        v["peer-transport-security"]["trusted-ca-file"].as_str(),
        Some("/etc/etcd/ca.crt")
    );
}

/// Pigsty v4's profile lists `groups[etcd_cluster]` unsorted, in inventory order, while
/// `initial-cluster` stays sorted as strings (no shipped inventory lists its members out of
/// order, so the goldens cannot show it; the template says so).
#[test]
fn v4_profile_endpoints_keep_inventory_order() {
    let text = "all:\n  children:\n    etcd:\n      hosts:\n        10.10.10.12: { etcd_seq: 3 }\n        10.10.10.10: { etcd_seq: 1 }\n        10.10.10.100: { etcd_seq: 2 }\n      vars: { etcd_cluster: etcd }\n  vars: { version: v4.5.0 }\n";
    let inv = Inventory::parse("pigsty.yml", text).unwrap();
    let c = inv.etcd_cluster(None).unwrap();
    let profile = render_etcdctl_profile(c, ip("10.10.10.10"));
    assert!(
        profile.contains("export ETCDCTL_ENDPOINTS=\"https://10.10.10.12:2379,https://10.10.10.10:2379,https://10.10.10.100:2379\"\n"),
        "{profile}"
    );
    let conf = render_etcd_conf(c, ip("10.10.10.10"), EtcdInit::New);
    assert!(
        conf.contains("initial-cluster: \"etcd-1=https://10.10.10.10:2380,etcd-2=https://10.10.10.100:2380,etcd-3=https://10.10.10.12:2380\"\n"),
        "{conf}"
    );
    // Before v4: sorted as strings.
    let v3 = text.replace("v4.5.0", "v3.6.1");
    let inv = Inventory::parse("pigsty.yml", &v3).unwrap();
    let profile = render_etcdctl_profile(inv.etcd_cluster(None).unwrap(), ip("10.10.10.10"));
    assert!(
        profile.contains(
            "https://10.10.10.10:2379,https://10.10.10.100:2379,https://10.10.10.12:2379"
        ),
        "{profile}"
    );
}
