//! Fuzzes the Patroni patcher with arbitrary files: it must never panic, and a file it
//! patches must read back the new hosts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quorum_proto::patch::{patch_patroni_hosts, read_patroni_hosts};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let hosts = vec![
        "10.10.10.10:2379".to_string(),
        "10.10.10.11:2379".to_string(),
    ];
    if let Ok(out) = patch_patroni_hosts(&text, &hosts) {
        assert_eq!(read_patroni_hosts(&out).ok(), Some(hosts));
    }
});
