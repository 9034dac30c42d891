//! Example-based tests of the Patroni and vip-manager patchers: each case is a realistic file
//! (Pigsty's rendering, Patroni's docs, vip-manager's sample) and the exact bytes expected.

use quorum_proto::patch::{
    patch_patroni_hosts, patch_vip_endpoints, read_patroni_hosts, read_vip_endpoints, PatchError,
};

fn v(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// The DCS part of Pigsty's patroni template (reference/pigsty-etcd.md, "Patroni"), with the
/// neighbours a real file has.
const PIGSTY_PATRONI: &str = "\
#==============================================================#
# File      :   patroni.yml
#==============================================================#
scope: pg-meta
namespace: /pg/
name: pg-meta-1

restapi:
  listen: 0.0.0.0:8008
  connect_address: 10.10.10.10:8008

#--------------------------------------------------------------#
# DCS
#--------------------------------------------------------------#
etcd3:
  hosts: '10.10.10.10:2379,10.10.10.11:2379,10.10.10.12:2379'   # group etcd sorted, no scheme
  protocol: https
  cacert: /pg/cert/ca.crt
  cert:   /pg/cert/server.crt
  key:    /pg/cert/server.key

postgresql:
  listen: 0.0.0.0:5432
";

#[test]
fn pigsty_string_form_changes_only_the_string() {
    let out = patch_patroni_hosts(
        PIGSTY_PATRONI,
        &v(&["10.10.10.10:2379", "10.10.10.11:2379", "10.10.10.13:2379"]),
    )
    .unwrap();
    let want = PIGSTY_PATRONI.replace(
        "'10.10.10.10:2379,10.10.10.11:2379,10.10.10.12:2379'",
        "'10.10.10.10:2379,10.10.10.11:2379,10.10.10.13:2379'",
    );
    assert_eq!(out, want);
    assert_eq!(
        read_patroni_hosts(&out).unwrap(),
        v(&["10.10.10.10:2379", "10.10.10.11:2379", "10.10.10.13:2379"])
    );
    assert_eq!(
        read_patroni_hosts(PIGSTY_PATRONI).unwrap(),
        v(&["10.10.10.10:2379", "10.10.10.11:2379", "10.10.10.12:2379"])
    );
}

#[test]
fn block_list_keeps_indentation_and_the_last_comment() {
    // The layout real-components.md §7.2 uses (a list, because Patroni 3.0.2's validator
    // rejects the comma string).
    let text = "scope: pg-test\netcd3:\n  hosts:                      # a list\n    - 127.0.0.11:2379\n    - 127.0.0.12:2379   # second\n    - 127.0.0.13:2379   # third\n\n  # certs\n  protocol: https\n";
    let out = patch_patroni_hosts(text, &v(&["127.0.0.11:2379", "127.0.0.12:2379"])).unwrap();
    assert_eq!(
        out,
        "scope: pg-test\netcd3:\n  hosts:                      # a list\n    - 127.0.0.11:2379\n    - 127.0.0.12:2379   # third\n\n  # certs\n  protocol: https\n"
    );
    // Growing the list works the same way.
    let out = patch_patroni_hosts(
        text,
        &v(&[
            "127.0.0.11:2379",
            "127.0.0.12:2379",
            "127.0.0.13:2379",
            "127.0.0.14:2379",
        ]),
    )
    .unwrap();
    assert!(out.contains("    - 127.0.0.13:2379\n    - 127.0.0.14:2379   # third\n"));
}

#[test]
fn indentless_list_and_quoted_items() {
    let text = "etcd3:\n  hosts:\n  - \"a:2379\"\n  - \"b:2379\"\n  protocol: https\n";
    let out = patch_patroni_hosts(text, &v(&["c:2379"])).unwrap();
    assert_eq!(out, "etcd3:\n  hosts:\n  - \"c:2379\"\n  protocol: https\n");
}

#[test]
fn flow_list_keeps_padding() {
    let text = "etcd:\n  hosts: [ 10.99.0.11:2379, 10.99.0.12:2379 ]  # v2\n  protocol: https\n";
    let out = patch_patroni_hosts(text, &v(&["10.99.0.13:2379"])).unwrap();
    assert_eq!(
        out,
        "etcd:\n  hosts: [ 10.99.0.13:2379 ]  # v2\n  protocol: https\n"
    );
    let text = "etcd:\n  hosts: []\n";
    let out = patch_patroni_hosts(text, &v(&["a:1", "b:2"])).unwrap();
    assert_eq!(out, "etcd:\n  hosts: [a:1, b:2]\n");
}

#[test]
fn crlf_files_stay_crlf() {
    let text = "etcd3:\r\n  hosts:\r\n    - a:2379\r\n    - b:2379\r\n  protocol: https\r\n";
    let out = patch_patroni_hosts(text, &v(&["x:2379", "y:2379", "z:2379"])).unwrap();
    assert_eq!(
        out,
        "etcd3:\r\n  hosts:\r\n    - x:2379\r\n    - y:2379\r\n    - z:2379\r\n  protocol: https\r\n"
    );
}

#[test]
fn plain_string_that_would_change_type_gets_quoted() {
    let text = "etcd3:\n  hosts: a:2379\n";
    let out = patch_patroni_hosts(text, &v(&["[::1]:2379"])).unwrap();
    assert_eq!(out, "etcd3:\n  hosts: '[::1]:2379'\n");
    assert_eq!(read_patroni_hosts(&out).unwrap(), v(&["[::1]:2379"]));
}

#[test]
fn patroni_errors_name_what_is_missing() {
    let cases: &[(&str, &str)] = &[
        (
            "scope: x\nzookeeper:\n  hosts: [a]\n",
            "patroni.yml has no `etcd3:` (or legacy `etcd:`) section; this host's Patroni does not use etcd as its DCS; re-render it with `./pgsql.yml -t pg_conf` or leave it out of the etcd refresh",
        ),
        (
            "etcd3:\n  protocol: https\n",
            "patroni.yml has no `etcd3.hosts`; add `hosts: '<ip>:2379,...'` under it, as Pigsty renders it",
        ),
        (
            "etcd3:\n",
            "patroni.yml has no `etcd3.hosts` (the `etcd3:` section is empty or not a mapping); add `hosts: '<ip>:2379,...'` under it",
        ),
        (
            "etcd3:\n  host: 10.0.0.1:2379\n",
            "patroni.yml: `etcd3.host` is used instead of `etcd3.hosts`; Quorum rewrites only a `hosts:` list; replace the key with `hosts: '<ip>:2379,...'` as Pigsty renders it",
        ),
        (
            "- a\n- b\n",
            "patroni.yml is not a YAML mapping at the top level; it does not look like a patroni.yml file",
        ),
        (
            "etcd:\n  hosts: a:1\netcd3:\n  hosts: a:1\n",
            "patroni.yml has both an `etcd3:` and an `etcd:` section, and which one Patroni uses is ambiguous; Quorum manages only etcd endpoints, so it leaves this file alone",
        ),
        (
            "etcd3:\n  hosts: |\n    a:1\n",
            "patroni.yml: `etcd3.hosts` at line 2 is a block scalar (`|` or `>`); write it as a plain list or a comma string (`'a:2379,b:2379'`), as Pigsty renders it",
        ),
        (
            "etcd3:\n  hosts:\n  protocol: https\n",
            "patroni.yml: `etcd3.hosts` is null rather than a list or a comma string; write it as a list of endpoints or as `'a:2379,b:2379'`",
        ),
        (
            "x: &h [a:1]\netcd3:\n  hosts: *h\n",
            "patroni.yml: `etcd3.hosts` at line 3 is an alias (`*name`); write it as a plain list or a comma string (`'a:2379,b:2379'`), as Pigsty renders it",
        ),
    ];
    for (text, want) in cases {
        let err = patch_patroni_hosts(text, &v(&["c:2379"])).unwrap_err();
        assert_eq!(err.to_string(), *want, "input:\n{text}");
    }
}

#[test]
fn broken_yaml_is_an_error_with_a_line() {
    let err = patch_patroni_hosts("etcd3:\n  hosts: [a, b\n  protocol: https\n", &v(&["c:1"]))
        .unwrap_err();
    match &err {
        PatchError::Yaml { source, .. } => assert!(source.line.is_some(), "{err}"),
        other => panic!("unexpected {other:?}"),
    }
    assert!(err
        .to_string()
        .starts_with("patroni.yml does not parse as YAML: "));
}

#[test]
fn bad_new_lists_are_refused() {
    let text = "etcd3:\n  hosts: 'a:1'\n";
    assert_eq!(
        patch_patroni_hosts(text, &[]).unwrap_err().to_string(),
        "refusing to write an empty endpoint list into patroni.yml; pass at least one endpoint"
    );
    assert_eq!(
        patch_patroni_hosts(text, &v(&["a:1,b:2"])).unwrap_err().to_string(),
        "endpoint \"a:1,b:2\" for patroni.yml contains a comma; pass entries like `10.10.10.10:2379` or `https://10.10.10.10:2379`"
    );
    assert!(patch_patroni_hosts(text, &v(&["a 1"])).is_err());
    assert!(patch_patroni_hosts(text, &v(&[""])).is_err());
}

/// Probe L7: entries that could be written safely (quoted) but are not endpoints.
#[test]
fn entries_must_be_host_and_port() {
    let patroni = "etcd3:\n  hosts: 'a:1'\n";
    for bad in [
        "a]:2379",
        "a':2379",
        "*alias:2379",
        "&anc:2379",
        "!!python/object:2379",
        "%TAG:2379",
        "`:2379",
        "10.10.10.10",
        "10.10.10.10:0",
        "10.10.10.10:65536",
        "10.10.10.10:23x9",
        ":2379",
        "-a.example:2379",
        "a..b:2379",
        "999.1.1.1:2379",
        "[10.0.0.1]:2379",
        "::1:2379",
        "https://10.10.10.10:2379",
    ] {
        let err = patch_patroni_hosts(patroni, &v(&[bad]))
            .err()
            .unwrap_or_else(|| panic!("{bad:?} was accepted"));
        assert!(
            err.to_string().contains("is not host:port"),
            "{bad:?}: {err}"
        );
    }
    for good in [
        "10.10.10.10:2379",
        "[::1]:2379",
        "[fd00::11]:65535",
        "etcd-1.example.com:2379",
        "localhost:1",
    ] {
        assert!(
            patch_patroni_hosts(patroni, &v(&[good])).is_ok(),
            "{good:?} was refused"
        );
    }
    let vip = "dcs-endpoints: 'https://a:1'\n";
    for bad in [
        "10.10.10.10:2379",
        "ftp://10.10.10.10:2379",
        "https://10.10.10.10",
        "https://a]:2379",
        "https://10.10.10.10:2379/path",
        "https://user@10.10.10.10:2379",
    ] {
        let err = patch_vip_endpoints(vip, &v(&[bad]))
            .err()
            .unwrap_or_else(|| panic!("{bad:?} was accepted"));
        assert!(
            err.to_string().contains("is not http(s)://host:port"),
            "{bad:?}: {err}"
        );
    }
    for good in [
        "https://10.10.10.10:2379",
        "http://[::1]:2379",
        "https://etcd-1:2379",
    ] {
        assert!(
            patch_vip_endpoints(vip, &v(&[good])).is_ok(),
            "{good:?} was refused"
        );
    }
}

/// vip-manager's config as Pigsty renders it (reference/pigsty-etcd.md, "vip-manager").
const PIGSTY_VIP: &str = "\
interval: 1000
trigger-key: \"/pg/pg-meta/leader\"
trigger-value: \"pg-meta-1\"
ip: 10.10.10.2
netmask: 24
interface: eth1
hosting-type: basic
dcs-type: etcd
dcs-endpoints:
  - https://10.10.10.10:2379
  - https://10.10.10.11:2379
  - https://10.10.10.12:2379
etcd-ca-file: /pg/cert/ca.crt
etcd-cert-file: /pg/cert/server.crt
etcd-key-file: /pg/cert/server.key
retry-num: 2
retry-after: 250
verbose: false
";

#[test]
fn vip_block_list() {
    let new = v(&["https://10.10.10.10:2379", "https://10.10.10.12:2379"]);
    let out = patch_vip_endpoints(PIGSTY_VIP, &new).unwrap();
    assert_eq!(
        out,
        PIGSTY_VIP.replace(
            "  - https://10.10.10.10:2379\n  - https://10.10.10.11:2379\n  - https://10.10.10.12:2379\n",
            "  - https://10.10.10.10:2379\n  - https://10.10.10.12:2379\n"
        )
    );
    assert_eq!(read_vip_endpoints(&out).unwrap(), new);
    assert_eq!(patch_vip_endpoints(&out, &new).unwrap(), out);
}

#[test]
fn vip_old_and_new_keys_are_both_rewritten() {
    let text = "endpoints: 'https://a:2379'\ndcs-endpoints: [https://a:2379]\n";
    let out = patch_vip_endpoints(text, &v(&["https://b:2379", "https://c:2379"])).unwrap();
    assert_eq!(
        out,
        "endpoints: 'https://b:2379,https://c:2379'\ndcs-endpoints: [https://b:2379, https://c:2379]\n"
    );
}

#[test]
fn vip_errors() {
    assert_eq!(
        read_vip_endpoints("endpoints: [https://a:2379]\ndcs-endpoints: [https://b:2379]\n")
            .unwrap_err()
            .to_string(),
        "vip-manager config sets both `dcs-endpoints` and `endpoints` with different endpoint lists; vip-manager refuses to start like that: keep only `dcs-endpoints`"
    );
    assert_eq!(
        patch_vip_endpoints("dcs-type: consul\ndcs-endpoints: [http://a:8500]\n", &v(&["https://b:2379"]))
            .unwrap_err()
            .to_string(),
        "vip-manager config sets `dcs-type: consul`; Quorum manages only etcd endpoints, so it leaves this file alone"
    );
    assert_eq!(
        patch_vip_endpoints("ip: 10.0.0.2\n", &v(&["https://b:2379"]))
            .unwrap_err()
            .to_string(),
        "vip-manager config has no `dcs-endpoints:` key; re-render it with `./pgsql.yml -t pg_vip_config` (it writes `dcs-endpoints:`), then retry"
    );
}

#[test]
fn utf8_comments_do_not_shift_offsets() {
    let text = "# Données — config\netcd3:\n  # hôtes\n  hosts: 'a:1,b:2' # é\n";
    let out = patch_patroni_hosts(text, &v(&["c:3"])).unwrap();
    assert_eq!(
        out,
        "# Données — config\netcd3:\n  # hôtes\n  hosts: 'c:3' # é\n"
    );
}

/// Probe L1: a 128 KB `ip: [[[…]]]` made one facts collection take 16 s in the agent. Every
/// reader and patcher refuses it before parsing, saying which limit and where.
#[test]
fn deeply_nested_configs_are_refused_before_parsing() {
    let deep = format!("ip: {}{}\n", "[".repeat(64_000), "]".repeat(64_000));
    let start = std::time::Instant::now();
    let err = quorum_proto::patch::read_vip_settings(&deep).unwrap_err();
    assert!(
        err.to_string()
            .contains("nest deeper than 64 levels at line 1, over Quorum's limit"),
        "{err}"
    );
    assert!(read_vip_endpoints(&deep).is_err());
    let patroni = format!("etcd3:\n  hosts: 'a:1'\nx: {}\n", "{a: ".repeat(10_000));
    let err = patch_patroni_hosts(&patroni, &v(&["b:2"])).unwrap_err();
    assert!(err.to_string().contains("at line 3"), "{err}");
    assert!(start.elapsed() < std::time::Duration::from_secs(2));
    let big = format!("etcd3:\n  hosts: 'a:1'\n#{}\n", "x".repeat(5 << 20));
    let err = read_patroni_hosts(&big).unwrap_err();
    assert!(
        err.to_string()
            .contains("over Quorum's limit of 4194304 bytes"),
        "{err}"
    );
}
