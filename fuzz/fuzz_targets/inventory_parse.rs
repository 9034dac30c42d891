//! Fuzzes `Inventory::parse` with arbitrary bytes (read as lossy UTF-8): it must never panic,
//! and whatever it accepts must render.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quorum_coordinator::model::inventory::Inventory;
use quorum_coordinator::model::render::{render_etcd_conf, render_etcdctl_profile};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(inv) = Inventory::parse("fuzz.yml", &text) {
        for c in inv.etcd_clusters() {
            for m in &c.members {
                let _ = render_etcd_conf(c, m.ip, m.params.init);
                let _ = render_etcdctl_profile(c, m.ip);
            }
        }
    }
});
