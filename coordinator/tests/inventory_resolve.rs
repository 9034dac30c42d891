//! How the inventory resolves valid files: Ansible's variable precedence, group membership
//! through children, Pigsty's defaults, PostgreSQL clusters, and the lookup helpers.

use std::net::IpAddr;

use quorum_coordinator::model::inventory::{
    EtcdInit, EtcdParams, Inventory, LookupError, QuorumExt,
};

fn parse(text: &str) -> Inventory {
    Inventory::parse("pigsty.yml", text).unwrap_or_else(|e| panic!("{e}"))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn warnings(inv: &Inventory) -> Vec<String> {
    inv.warnings().iter().map(ToString::to_string).collect()
}

#[test]
fn pigsty_defaults_when_nothing_is_set() {
    let inv =
        parse("all:\n  children:\n    etcd:\n      hosts: { 10.10.10.10: { etcd_seq: 1 } }\n");
    let c = inv.etcd_cluster(None).unwrap();
    assert_eq!(c.name, "etcd");
    assert_eq!(c.group, "etcd");
    let want = EtcdParams {
        safeguard: false,
        clean: true,
        data_dir: "/data/etcd".into(),
        port: 2379,
        peer_port: 2380,
        init: EtcdInit::New,
        learner: false,
        election_timeout: 1000,
        heartbeat_interval: 100,
        admin_user: Some("dba".into()),
        quorum: QuorumExt {
            conf_dir: "/etc/etcd".into(),
            etcdctl_cacert: "/etc/pki/ca.crt".into(),
            listen_localhost: true,
            client_cert_auth: false,
            grpc_gateway: false,
            enable_v2: false,
        },
    };
    assert_eq!(c.params, want);
    assert_eq!(c.members[0].params, want);
    assert_eq!(c.members[0].name, "etcd-1");
    assert!(warnings(&inv).is_empty(), "{:?}", warnings(&inv));
}

#[test]
fn host_beats_group_beats_all() {
    let inv = parse(
        "\
all:
  vars: { etcd_data: /all, etcd_port: 1000, etcd_peer_port: 1001, etcd_clean: false }
  children:
    etcd:
      vars: { etcd_cluster: etcd, etcd_port: 2000, etcd_peer_port: 2001 }
      hosts:
        10.0.0.1: { etcd_seq: 1, etcd_port: 3000 }
        10.0.0.2: { etcd_seq: 2 }
        10.0.0.3: { etcd_seq: 3 }
",
    );
    let c = inv.etcd_cluster(None).unwrap();
    let m1 = c.member(ip("10.0.0.1")).unwrap();
    let m2 = c.member(ip("10.0.0.2")).unwrap();
    assert_eq!((m1.params.port, m1.params.peer_port), (3000, 2001));
    assert_eq!((m2.params.port, m2.params.peer_port), (2000, 2001));
    assert_eq!(m1.params.data_dir, "/all");
    assert!(!m1.params.clean);
    assert_eq!(c.params.port, 2000, "group-level params ignore host vars");
    assert_eq!(
        warnings(&inv),
        ["pigsty.yml:4: members of etcd cluster `etcd` have different etcd_port values; Pigsty renders every peer URL with the rendering host's own value, Quorum with each member's own: keep them equal"]
    );
}

#[test]
fn groups_merge_by_depth_then_priority_then_name() {
    // 10.0.0.1 is in `b` and in `z` (depth 1) and in `a-child` (depth 2, under `a`).
    let text = "\
all:
  children:
    etcd:
      hosts:
        10.0.0.1: { etcd_seq: 1 }
    z:
      vars: { etcd_election_timeout: 1500, etcd_heartbeat_interval: 150 }
      hosts: { 10.0.0.1: }
    b:
      vars: { etcd_election_timeout: 1200, etcd_heartbeat_interval: 120, etcd_data: /b }
      hosts: { 10.0.0.1: }
    a:
      vars: { etcd_data: /a, etcd_heartbeat_interval: 110 }
      children:
        a-child:
          vars: { etcd_election_timeout: 1100 }
          hosts: { 10.0.0.1: }
";
    let inv = parse(text);
    let m = &inv.etcd_cluster(None).unwrap().members[0];
    // Depth 2 (`a-child`) beats every depth-1 group.
    assert_eq!(m.params.election_timeout, 1100);
    // Among depth-1 groups, later names win: z > b > a.
    assert_eq!(m.params.heartbeat_interval, 150);
    assert_eq!(m.params.data_dir, "/b");

    // ansible_group_priority reorders groups of the same depth.
    let text = text.replace(
        "      vars: { etcd_election_timeout: 1200, etcd_heartbeat_interval: 120, etcd_data: /b }",
        "      vars: { etcd_election_timeout: 1200, etcd_heartbeat_interval: 120, etcd_data: /b, ansible_group_priority: 10 }",
    );
    let inv = parse(&text);
    let m = &inv.etcd_cluster(None).unwrap().members[0];
    assert_eq!(m.params.heartbeat_interval, 120);
}

#[test]
fn host_vars_from_several_listings_merge_later_wins() {
    let inv = parse(
        "\
all:
  children:
    etcd:
      hosts: { 10.0.0.1: { etcd_seq: 1, etcd_port: 1111 } }
    other:
      hosts: { 10.0.0.1: { etcd_port: 2222 } }
",
    );
    let m = &inv.etcd_cluster(None).unwrap().members[0];
    assert_eq!((m.seq, m.params.port), (1, 2222));
}

#[test]
fn members_come_from_child_groups_and_sort_as_strings() {
    let inv = parse(
        "\
all:
  children:
    etcd:
      vars: { etcd_cluster: etcd }
      children:
        etcd-dc1: { hosts: { 10.10.10.9: { etcd_seq: 1 }, 10.10.10.100: { etcd_seq: 3 } } }
        etcd-dc2: { hosts: { 10.10.10.10: { etcd_seq: 2 } } }
",
    );
    let c = inv.etcd_cluster(None).unwrap();
    let order: Vec<String> = c.members.iter().map(|m| m.ip.to_string()).collect();
    assert_eq!(order, ["10.10.10.10", "10.10.10.100", "10.10.10.9"]);
    assert_eq!(
        inv.etcd_member(ip("10.10.10.100")).unwrap().1.name,
        "etcd-3"
    );
}

#[test]
fn ansible_style_values_are_accepted() {
    // Ansible's |int and |bool accept these; so does Quorum.
    let inv = parse(
        "\
all:
  children:
    etcd:
      hosts:
        10.0.0.1: { etcd_seq: '1', etcd_safeguard: yes, etcd_learner: 'on', etcd_port: \"2379\" }
",
    );
    let m = &inv.etcd_cluster(None).unwrap().members[0];
    assert_eq!(m.seq, 1);
    assert!(m.params.safeguard && m.params.learner);
}

#[test]
fn merge_keys_and_top_level_groups() {
    // `<<` merges (PyYAML applies them) and a group at the top level (Ansible puts it under
    // `all`).
    let inv = parse(
        "\
defaults: &d { etcd_election_timeout: 1234 }
etcd:
  hosts:
    10.0.0.1: { <<: *d, etcd_seq: 1 }
",
    );
    // `defaults` is itself read as a (harmless) group with an unexpected key.
    let m = &inv.etcd_cluster(None).unwrap().members[0];
    assert_eq!(m.params.election_timeout, 1234);
}

#[test]
fn several_clusters_and_lookup_errors() {
    let inv = parse(
        "\
all:
  children:
    etcd-a:
      hosts: { 10.0.0.1: { etcd_seq: 1 } }
      vars: { etcd_cluster: etcd-a }
    etcd-b:
      hosts: { 10.0.1.1: { etcd_seq: 1 } }
      vars: { etcd_cluster: etcd-b }
",
    );
    assert_eq!(inv.etcd_clusters().len(), 2);
    assert_eq!(
        inv.etcd_cluster(Some("etcd-b")).unwrap().members[0].name,
        "etcd-b-1"
    );
    assert_eq!(
        inv.etcd_cluster(None).unwrap_err().to_string(),
        "pigsty.yml defines several etcd clusters (etcd-a, etcd-b); name one with --cluster"
    );
    assert_eq!(
        inv.etcd_cluster(Some("etcd")).unwrap_err(),
        LookupError::NotFound {
            file: "pigsty.yml".into(),
            name: "etcd".into(),
            names: "etcd-a, etcd-b".into()
        }
    );
    let empty = parse("all:\n  children:\n    infra: { hosts: { 10.0.0.1: {} } }\n");
    assert_eq!(
        empty.etcd_cluster(None).unwrap_err().to_string(),
        "pigsty.yml defines no etcd cluster; add a group `etcd` with `hosts: { <ip>: { etcd_seq: 1 } }` and `vars: { etcd_cluster: etcd }`"
    );
}

#[test]
fn postgres_clusters_patroni_and_vip_hosts() {
    let inv = parse(
        "\
all:
  children:
    etcd:
      hosts: { 10.10.10.10: { etcd_seq: 1 }, 10.10.10.11: { etcd_seq: 2 }, 10.10.10.12: { etcd_seq: 3 } }
      vars: { etcd_cluster: etcd }
    pg-meta:
      hosts: { 10.10.10.10: { pg_seq: 1, pg_role: primary } }
      vars: { pg_cluster: pg-meta, pg_vip_enabled: true, pg_vip_address: 10.10.10.2/24, pg_vip_interface: eth1 }
    pg-test:
      hosts:
        10.10.10.13: { pg_seq: 3, pg_role: replica }
        10.10.10.11: { pg_seq: 1, pg_role: primary }
        10.10.10.12: { pg_seq: 2, pg_role: replica, patroni_port: 8009 }
      vars: { pg_cluster: pg-test, patroni_ssl_enabled: true }
",
    );
    let pgs = inv.pg_clusters();
    assert_eq!(pgs.len(), 2);
    let meta = &pgs[0];
    assert_eq!(meta.name, "pg-meta");
    assert_eq!(meta.dcs.as_deref(), Some("etcd"));
    assert_eq!(meta.vip_hosts(), [ip("10.10.10.10")]);
    let vip = meta.members[0].vip.as_ref().unwrap();
    assert_eq!(
        (vip.address, vip.prefix, vip.interface.as_str()),
        (ip("10.10.10.2"), 24, "eth1")
    );
    assert_eq!(meta.members[0].patroni_username, "postgres");
    assert_eq!(meta.members[0].patroni_password, "Patroni.API");
    assert_eq!(meta.members[0].namespace, "/pg");
    let test = &pgs[1];
    assert_eq!(
        test.patroni_hosts(),
        [ip("10.10.10.11"), ip("10.10.10.12"), ip("10.10.10.13")]
    );
    assert!(test.vip_hosts().is_empty());
    assert_eq!(test.members[1].patroni_port, 8009);
    assert!(!meta.members[0].patroni_ssl);
    assert!(test.members.iter().all(|m| m.patroni_ssl));
    assert_eq!(test.members[2].name, "pg-test-3");
    assert_eq!(inv.pg_clusters_using("etcd").len(), 2);
}

#[test]
fn vip_defaults_follow_pigsty() {
    let inv = parse(
        "all:\n  children:\n    etcd: { hosts: { 10.0.0.1: { etcd_seq: 1 } } }\n    pg-x: { hosts: { 10.0.0.2: { pg_seq: 1, pg_role: primary } }, vars: { pg_cluster: pg-x, pg_vip_enabled: true } }\n",
    );
    let vip = inv.pg_clusters()[0].members[0].vip.clone().unwrap();
    assert_eq!(
        (vip.address, vip.prefix, vip.interface.as_str()),
        (ip("127.0.0.1"), 24, "eth0")
    );
}

#[test]
fn warnings_explain_what_pigsty_would_do() {
    let inv = parse(
        "\
all:
  children:
    meta:
      hosts: { 10.0.0.1: { etcd_seq: 1 } }
      vars: { etcd_cluster: dcs }
    pg-x:
      hosts: { 10.0.0.2: { pg_seq: 1, pg_role: leader } }
      vars: { pg_cluster: pg-x, etcd_cluster: pg-x }
",
    );
    assert_eq!(
        warnings(&inv),
        [
            "pigsty.yml:3: etcd cluster `dcs` is defined by group `meta`; Pigsty's templates list the hosts of the group named after the cluster, so rename the group to `dcs`",
            "pigsty.yml:6: group `pg-x` sets etcd_cluster `pg-x` but none of its hosts has etcd_seq; it is not treated as an etcd cluster",
            "pigsty.yml:7: host 10.0.0.2: pg_role is `leader`; Pigsty expects primary, replica or offline",
            "pigsty.yml:7: pg cluster `pg-x`: no etcd cluster is defined by group `etcd`, which Pigsty's Patroni and vip-manager templates read; Quorum assumes they use the only etcd cluster, `dcs`",
        ]
    );
    assert_eq!(inv.pg_clusters()[0].dcs.as_deref(), Some("dcs"));
}

#[test]
fn with_members_and_new_member_keep_pigsty_order() {
    let inv = parse(
        "all:\n  children:\n    etcd:\n      hosts: { 10.0.0.9: { etcd_seq: 1 }, 10.0.0.10: { etcd_seq: 2 }, 10.0.0.11: { etcd_seq: 3 } }\n      vars: { etcd_data: /srv/etcd }\n",
    );
    let c = inv.etcd_cluster(None).unwrap();
    let newcomer = c.new_member(ip("10.0.0.100"), 4);
    assert_eq!(newcomer.name, "etcd-4");
    assert_eq!(newcomer.params.data_dir, "/srv/etcd");
    let mut members = c.members.clone();
    members.insert(0, newcomer);
    let grown = c.with_members(members);
    let order: Vec<String> = grown.members.iter().map(|m| m.ip.to_string()).collect();
    assert_eq!(order, ["10.0.0.10", "10.0.0.100", "10.0.0.11", "10.0.0.9"]);
    assert_eq!(grown.without_member(ip("10.0.0.100")), *c);
}

#[test]
fn digest_is_sha256_of_the_bytes() {
    let text = "all:\n  children:\n    etcd: { hosts: { 10.0.0.1: { etcd_seq: 1 } } }\n";
    let inv = parse(text);
    assert_eq!(inv.digest().len(), 64);
    let again = parse(text);
    assert_eq!(inv.digest(), again.digest());
    let other = parse(&format!("{text}# comment\n"));
    assert_ne!(inv.digest(), other.digest());
    use sha2::Digest;
    assert_eq!(
        inv.digest(),
        hex::encode(sha2::Sha256::digest(text.as_bytes()))
    );
}

#[test]
fn infra_membership_is_recorded() {
    let inv = parse(
        "all:\n  children:\n    infra: { hosts: { 10.0.0.1: {} } }\n    etcd: { hosts: { 10.0.0.1: { etcd_seq: 1 }, 10.0.0.2: { etcd_seq: 2 }, 10.0.0.3: { etcd_seq: 3 } } }\n",
    );
    let c = inv.etcd_cluster(None).unwrap();
    let infra: Vec<bool> = c.members.iter().map(|m| m.infra).collect();
    assert_eq!(infra, [true, false, false]);
}
