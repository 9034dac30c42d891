//! A table of bad inventories, each with the exact messages Quorum must print: file, line,
//! host, what is wrong and what to do. Line numbers are counted in the literal below each case
//! (line 1 is `all:`).

use quorum_coordinator::model::inventory::Inventory;

/// Parses `text` as `pigsty.yml` and returns every error and warning as printed.
fn problems(text: &str) -> (Vec<String>, Vec<String>) {
    match Inventory::parse("pigsty.yml", text) {
        Ok(inv) => (
            Vec::new(),
            inv.warnings().iter().map(ToString::to_string).collect(),
        ),
        Err(e) => (
            e.errors.iter().map(ToString::to_string).collect(),
            e.warnings.iter().map(ToString::to_string).collect(),
        ),
    }
}

fn errors(text: &str) -> Vec<String> {
    problems(text).0
}

/// The seed's etcd group with one host line replaced.
fn etcd_with(line6: &str) -> String {
    format!(
        "all:\n  children:\n    etcd:\n      hosts:\n        10.10.10.10: {{ etcd_seq: 1 }}\n{line6}\n        10.10.10.12: {{ etcd_seq: 3 }}\n      vars: {{ etcd_cluster: etcd }}\n"
    )
}

#[test]
fn table_of_bad_inventories() {
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "duplicate etcd_seq",
            etcd_with("        10.10.10.11: { etcd_seq: 1 }"),
            vec!["pigsty.yml:6: host 10.10.10.11: etcd_seq 1 is already used by 10.10.10.10 (line 5) in etcd cluster `etcd`; give every member its own etcd_seq (members are named `etcd-<etcd_seq>`)"],
        ),
        (
            "missing etcd_seq",
            etcd_with("        10.10.10.11: { }"),
            vec!["pigsty.yml:6: host 10.10.10.11: no etcd_seq, but it is in etcd cluster `etcd` (Pigsty: \"variable 'etcd_seq' is required for etcd instance\"); add `etcd_seq: <n>`, an integer >= 0 unique in the cluster"],
        ),
        (
            "missing etcd_seq, host without vars",
            etcd_with("        10.10.10.11:"),
            vec!["pigsty.yml:6: host 10.10.10.11: no etcd_seq, but it is in etcd cluster `etcd` (Pigsty: \"variable 'etcd_seq' is required for etcd instance\"); add `etcd_seq: <n>`, an integer >= 0 unique in the cluster"],
        ),
        (
            "non-integer etcd_seq",
            etcd_with("        10.10.10.11: { etcd_seq: two }"),
            vec!["pigsty.yml:6: host 10.10.10.11: etcd_seq is `two`; it must be an integer >= 0"],
        ),
        (
            "negative etcd_seq",
            etcd_with("        10.10.10.11: { etcd_seq: -2 }"),
            vec!["pigsty.yml:6: host 10.10.10.11: etcd_seq is `-2`; it must be an integer >= 0"],
        ),
        (
            "fractional etcd_seq",
            etcd_with("        10.10.10.11: { etcd_seq: 2.5 }"),
            vec!["pigsty.yml:6: host 10.10.10.11: etcd_seq is `2.5`; it must be an integer >= 0"],
        ),
        (
            "host key that is not an IP",
            etcd_with("        etcd-two: { etcd_seq: 2 }"),
            vec!["pigsty.yml:6: host etcd-two: host key `etcd-two` in group `etcd` is not an IP address; Pigsty keys every host by its IP (write `10.10.10.10: { ... }`)"],
        ),
        (
            "unknown etcd_init",
            etcd_with("        10.10.10.11: { etcd_seq: 2, etcd_init: join }"),
            vec!["pigsty.yml:6: host 10.10.10.11: etcd_init is `join`; use `new` to create a cluster or `existing` to join a running one"],
        ),
        (
            "port 0",
            etcd_with("        10.10.10.11: { etcd_seq: 2, etcd_port: 0 }"),
            vec!["pigsty.yml:6: host 10.10.10.11: etcd_port is `0`, not a port; use an integer from 1 to 65535"],
        ),
        (
            "port above 65535",
            etcd_with("        10.10.10.11: { etcd_seq: 2, etcd_peer_port: 65536 }"),
            vec!["pigsty.yml:6: host 10.10.10.11: etcd_peer_port is `65536`, not a port; use an integer from 1 to 65535"],
        ),
        (
            "non-integer port",
            etcd_with("        10.10.10.11: { etcd_seq: 2, etcd_port: http }"),
            vec!["pigsty.yml:6: host 10.10.10.11: etcd_port is `http`, not a port; use an integer from 1 to 65535"],
        ),
        (
            "peer port equals client port",
            etcd_with("        10.10.10.11: { etcd_seq: 2, etcd_peer_port: 2379 }"),
            vec!["pigsty.yml:6: host 10.10.10.11: etcd_port and etcd_peer_port are both 2379; etcd needs two different ports (Pigsty's defaults are 2379 and 2380)"],
        ),
        (
            "bad boolean",
            etcd_with("        10.10.10.11: { etcd_seq: 2, etcd_safeguard: maybe }"),
            vec!["pigsty.yml:6: host 10.10.10.11: etcd_safeguard is `maybe`, not a boolean; use true or false"],
        ),
        (
            "relative data dir",
            etcd_with("        10.10.10.11: { etcd_seq: 2, etcd_data: data/etcd }"),
            vec!["pigsty.yml:6: host 10.10.10.11: etcd_data is `data/etcd`, not an absolute path; use a path that starts with `/`"],
        ),
        (
            "data dir is / (probe L5)",
            etcd_with("        10.10.10.11: { etcd_seq: 2, etcd_data: / }"),
            vec!["pigsty.yml:6: host 10.10.10.11: etcd_data is `/`, which is /: wiping this member's data would empty that system directory; use a dedicated directory such as /data/etcd (Pigsty's default)"],
        ),
        (
            "data dir is a system dir, spelled oddly",
            etcd_with("        10.10.10.11: { etcd_seq: 2, etcd_data: '/var/lib/etcd/../' }"),
            vec!["pigsty.yml:6: host 10.10.10.11: etcd_data is `/var/lib/etcd/../`, which is /var/lib: wiping this member's data would empty that system directory; use a dedicated directory such as /data/etcd (Pigsty's default)"],
        ),
        (
            "group data dir /data, on its own line",
            "all:\n  children:\n    etcd:\n      hosts:\n        10.10.10.10: { etcd_seq: 1 }\n      vars:\n        etcd_cluster: etcd\n        etcd_data: /data/\n".into(),
            vec!["pigsty.yml:8: host 10.10.10.10: etcd_data is `/data/`, which is /data: wiping this member's data would empty that system directory; use a dedicated directory such as /data/etcd (Pigsty's default)"],
        ),
        (
            "zero election timeout",
            etcd_with("        10.10.10.11: { etcd_seq: 2, etcd_election_timeout: 0 }"),
            vec!["pigsty.yml:6: host 10.10.10.11: etcd_election_timeout is `0`; use a positive integer (milliseconds)"],
        ),
        (
            "etcd_cluster missing on a group with etcd_seq hosts",
            "all:\n  children:\n    meta:\n      hosts:\n        10.10.10.10: { etcd_seq: 1 }\n        10.10.10.11: { etcd_seq: 2 }\n".into(),
            vec![
                "pigsty.yml:5: host 10.10.10.10: etcd_seq is set, but group `meta` sets no etcd_cluster; add `vars: { etcd_cluster: meta }` to group `meta` (Pigsty names an etcd cluster after its group)",
                "pigsty.yml:6: host 10.10.10.11: etcd_seq is set, but group `meta` sets no etcd_cluster; add `vars: { etcd_cluster: meta }` to group `meta` (Pigsty names an etcd cluster after its group)",
            ],
        ),
        (
            "two etcd clusters claim one host",
            "all:\n  children:\n    etcd:\n      hosts: { 10.10.10.10: { etcd_seq: 1 } }\n      vars: { etcd_cluster: etcd }\n    etcd2:\n      hosts:\n        10.10.10.10: { etcd_seq: 1 }\n      vars: { etcd_cluster: etcd2 }\n".into(),
            vec!["pigsty.yml:8: host 10.10.10.10: listed in etcd clusters `etcd` and `etcd2`; an etcd member belongs to exactly one cluster, so remove it from one of the groups"],
        ),
        (
            "two groups define one cluster name",
            "all:\n  children:\n    etcd:\n      hosts: { 10.10.10.10: { etcd_seq: 1 } }\n    etcd-b:\n      hosts: { 10.10.10.11: { etcd_seq: 1 } }\n      vars: { etcd_cluster: etcd }\n".into(),
            vec!["pigsty.yml:5: groups `etcd` and `etcd-b` both define etcd cluster `etcd`; give each group its own etcd_cluster"],
        ),
        (
            "host-level etcd_cluster contradicting its group",
            etcd_with("        10.10.10.11: { etcd_seq: 2, etcd_cluster: other }"),
            vec!["pigsty.yml:6: host 10.10.10.11: etcd_cluster is `other` for this host, but it is listed in the group of etcd cluster `etcd`; remove the host-level etcd_cluster"],
        ),
        (
            "cluster name that would break the files",
            "all:\n  children:\n    etcd:\n      hosts: { 10.10.10.10: { etcd_seq: 1 } }\n      vars: { etcd_cluster: \"my etcd\" }\n".into(),
            vec!["pigsty.yml:5: etcd_cluster is `my etcd`; use letters, digits, `-`, `_` and `.` only, starting with a letter or digit"],
        ),
        (
            "group-level bad port: one error naming every host",
            "all:\n  children:\n    etcd:\n      hosts:\n        10.10.10.10: { etcd_seq: 1 }\n        10.10.10.11: { etcd_seq: 2 }\n        10.10.10.12: { etcd_seq: 3 }\n      vars:\n        etcd_cluster: etcd\n        etcd_port: 99999\n".into(),
            vec!["pigsty.yml:10: hosts 10.10.10.10, 10.10.10.11, 10.10.10.12: etcd_port is `99999`, not a port; use an integer from 1 to 65535"],
        ),
        (
            "YAML syntax error, with line and column",
            "all:\n  children:\n    etcd:\n      hosts:\n        10.10.10.10: { etcd_seq: 1\n        10.10.10.11: { etcd_seq: 2 }\n".into(),
            vec!["pigsty.yml:6:20: YAML syntax error: did not find expected ',' or '}' at line 6 column 20, while parsing a flow mapping at line 5 column 22; fix the YAML here, nothing else was checked"],
        ),
        (
            "hosts given as a list",
            "all:\n  children:\n    etcd:\n      hosts:\n        - 10.10.10.10\n      vars: { etcd_cluster: etcd }\n".into(),
            vec!["pigsty.yml:4: `all.children.etcd.hosts` is a list, expected a mapping of `<ip>: { host vars }`"],
        ),
        (
            "empty file",
            "# nothing yet\n".into(),
            vec!["pigsty.yml: the inventory is empty; define hosts under `all.children.<group>.hosts` as in Pigsty's pigsty.yml"],
        ),
        (
            "pg: missing and duplicate pg_seq, bad VIP",
            "all:\n  children:\n    pg-test:\n      hosts:\n        10.10.10.11: { pg_seq: 1, pg_role: primary }\n        10.10.10.12: { pg_seq: 1, pg_role: replica }\n        10.10.10.13: { pg_role: replica }\n      vars: { pg_cluster: pg-test, pg_vip_enabled: true, pg_vip_address: 10.10.10.3 }\n".into(),
            vec![
                "pigsty.yml:6: host 10.10.10.12: pg_seq 1 is already used by 10.10.10.11 (line 5) in pg cluster `pg-test`; give every instance its own pg_seq",
                "pigsty.yml:7: host 10.10.10.13: no pg_seq, but it is in pg cluster `pg-test`; add `pg_seq: <n>`, an integer >= 0 unique in the cluster",
                "pigsty.yml:8: hosts 10.10.10.11, 10.10.10.12, 10.10.10.13: pg_vip_address is `10.10.10.3`; with pg_vip_enabled it must be `<ipv4>/<prefix>`, e.g. 10.10.10.2/24",
            ],
        ),
    ];
    let mut failures = Vec::new();
    for (name, text, want) in &cases {
        let got = errors(text);
        if got != *want {
            failures.push(format!("{name}:\n  got:  {got:#?}\n  want: {want:#?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = "\
all:
  children:
    etcd:
      hosts:
        10.10.10.10: { etcd_seq: 1 }
        10.10.10.11: { etcd_seq: 1 }
        node-3: { etcd_seq: 3 }
        10.10.10.13: { etcd_seq: 4, etcd_port: 0 }
        10.10.10.14: { }
      vars: { etcd_cluster: etcd }
";
    assert_eq!(
        errors(text),
        [
            "pigsty.yml:6: host 10.10.10.11: etcd_seq 1 is already used by 10.10.10.10 (line 5) in etcd cluster `etcd`; give every member its own etcd_seq (members are named `etcd-<etcd_seq>`)",
            "pigsty.yml:7: host node-3: host key `node-3` in group `etcd` is not an IP address; Pigsty keys every host by its IP (write `10.10.10.10: { ... }`)",
            "pigsty.yml:8: host 10.10.10.13: etcd_port is `0`, not a port; use an integer from 1 to 65535",
            "pigsty.yml:9: host 10.10.10.14: no etcd_seq, but it is in etcd cluster `etcd` (Pigsty: \"variable 'etcd_seq' is required for etcd instance\"); add `etcd_seq: <n>`, an integer >= 0 unique in the cluster",
        ]
    );
}

#[test]
fn warnings_do_not_fail_the_inventory() {
    let text = "\
all:
  children:
    etcd:
      hosts:
        10.10.10.10: { etcd_seq: 1 }
        10.10.10.11: { etcd_seq: 2 }
      vars: { etcd_cluster: etcd }
      hostvars: { oops: true }
";
    let (errs, warns) = problems(text);
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(
        warns,
        [
            "pigsty.yml:3: etcd cluster `etcd` has 2 members; an even size tolerates no more failures than 1 members do, so use an odd number (3 or 5)",
            "pigsty.yml:8: group `etcd` has the key `hostvars`, which Ansible ignores (a group has only hosts, vars and children)",
        ]
    );
}

#[test]
fn error_report_lists_everything_for_the_cli() {
    let err = Inventory::parse(
        "pigsty.yml",
        &etcd_with("        10.10.10.11: { etcd_seq: x }"),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "1 problem in the inventory; nothing was changed:\n  pigsty.yml:6: host 10.10.10.11: etcd_seq is `x`; it must be an integer >= 0"
    );
    assert_eq!(err.errors[0].hosts, ["10.10.10.11"]);
    assert_eq!(err.errors[0].line, Some(6));
}

#[test]
fn unreadable_and_non_utf8_files() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.yml");
    let err = Inventory::load(&missing).unwrap_err();
    assert!(err.errors[0].to_string().starts_with(&format!(
        "{}: cannot read the inventory: ",
        missing.display()
    )));
    let bin = dir.path().join("bin.yml");
    std::fs::write(&bin, b"all: \xff\xfe\n").unwrap();
    let err = Inventory::load(&bin).unwrap_err();
    assert_eq!(
        err.errors[0].to_string(),
        format!(
            "{}: the inventory is not UTF-8 text; save it as UTF-8",
            bin.display()
        )
    );
}
