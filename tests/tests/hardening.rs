//! The security probe's low findings (2026-11), each reproduced against the real binaries:
//! an inventory that takes seconds to parse does not stall the coordinator (L1).

use std::time::{Duration, Instant};

use anyhow::Result;
use quorum_tests::World;

/// A valid inventory of about 4 MB (just under the limit) that takes libyaml seconds: one
/// etcd member and a long list variable.
fn big_inventory() -> String {
    let mut text = String::from(
        "all:\n  children:\n    etcd:\n      hosts:\n        127.0.0.11: { etcd_seq: 1 }\n      vars: { etcd_cluster: etcd }\n  vars:\n    filler:\n",
    );
    let mut n = 0u32;
    while text.len() < 4_000_000 {
        text.push_str(&format!(
            "      - {{ name: item{n}, value: 'some text {n}' }}\n"
        ));
        n += 1;
    }
    text
}

/// Probe L1: two plans against an 8 MB inventory blocked both runtime workers, and
/// `quorum agents` took 8 s. Now the inventory is parsed off the runtime: `quorum agents`
/// answers while the plans are still parsing (checked by the order of completion).
#[test]
fn agents_answer_while_big_inventories_parse() -> Result<()> {
    let mut w = World::new()?;
    std::fs::write(w.dir.path().join("pigsty.yml"), big_inventory())?;
    w.start_coordinator()?;
    // As many parses as the coordinator has runtime workers (one per core): without
    // spawn_blocking they would hold every worker.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
    let mut plans = Vec::new();
    for _ in 0..workers {
        plans.push(w.spawn_admin_output(&["cluster", "create", "--plan"])?);
    }
    // Let the plans reach the coordinator and start parsing (a parse takes seconds).
    std::thread::sleep(Duration::from_millis(800));
    let start = Instant::now();
    let agents = w.admin(&["agents"])?;
    let took = start.elapsed();
    let mut still_parsing = 0;
    for p in plans.iter_mut() {
        if matches!(p.try_wait(), Ok(None)) {
            still_parsing += 1;
        }
    }
    let mut outputs = Vec::new();
    for p in plans {
        outputs.push(p.wait_with_output()?);
    }
    assert_eq!(agents.code, 0, "{agents:?}");
    assert_eq!(
        still_parsing, workers,
        "`quorum agents` ({took:?}) finished after a plan: the parses blocked the coordinator"
    );
    // The plans themselves went through: they were refused for the missing agent, not for
    // the inventory.
    for o in outputs {
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!err.contains("inventory is invalid"), "{err}");
    }
    Ok(())
}
