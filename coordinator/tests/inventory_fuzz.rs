//! `Inventory::parse` never panics, whatever it is fed: random bytes, random text, and
//! mutations of a real inventory (CI's stand-in for the `fuzz/` cargo-fuzz target, which
//! needs a nightly toolchain). Whatever it returns, errors carry a message.

use proptest::prelude::*;
use quorum_coordinator::model::inventory::Inventory;

const SEED: &str = "\
all:
  children:
    etcd:
      hosts:
        10.10.10.10: { etcd_seq: 1 }
        10.10.10.11: { etcd_seq: 2 }
        10.10.10.12: { etcd_seq: 3 }
      vars: { etcd_cluster: etcd }
    pg-meta:
      hosts: { 10.10.10.10: { pg_seq: 1, pg_role: primary } }
      vars: { pg_cluster: pg-meta, pg_vip_enabled: true, pg_vip_address: 10.10.10.2/24 }
  vars: { etcd_port: 2379, etcd_safeguard: false }
";

fn check(text: &str) {
    match Inventory::parse("fuzz.yml", text) {
        Ok(inv) => {
            for c in inv.etcd_clusters() {
                assert!(!c.members.is_empty());
                for m in &c.members {
                    // Rendering anything the inventory accepted must work too.
                    let _ =
                        quorum_coordinator::model::render::render_etcd_conf(c, m.ip, m.params.init);
                    let _ = quorum_coordinator::model::render::render_etcdctl_profile(c, m.ip);
                }
            }
        }
        Err(e) => {
            assert!(!e.errors.is_empty());
            for d in &e.errors {
                assert!(!d.to_string().is_empty());
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn yamlish_text(text in "([a-z0-9_.:{}\\[\\],'\"&*!|>#%@`<-]|\n|  |- |: ){0,200}") {
        check(&text);
    }

    #[test]
    fn mutated_inventory(
        cuts in prop::collection::vec((0usize..SEED.len(), 0usize..8, "[ -~\n]{0,6}"), 1..6),
    ) {
        let mut text = SEED.to_string();
        for (at, len, insert) in cuts {
            let start = at.min(text.len());
            let end = (start + len).min(text.len());
            text.replace_range(start..end, &insert);
        }
        check(&text);
    }
}

#[test]
fn pathological_inputs() {
    for text in [
        "[".repeat(10_000),
        "{a: ".repeat(2_000),
        "- ".repeat(5_000),
        "a: &x [*x]\n".to_string(),
        "all:\n  children:\n    a: { children: { b: { children: { a: {} } } } }\n".to_string(),
        "all: { children: { etcd: { hosts: { 10.0.0.1: { etcd_seq: 99999999999999999999 } } } } }\n"
            .to_string(),
        "all: { children: { etcd: { hosts: { '::1': { etcd_seq: 1 } } } } }\n".to_string(),
        "\u{feff}all: {}\n".to_string(),
        "---\nall: {}\n---\nall: {}\n".to_string(),
    ] {
        check(&text);
    }
}
