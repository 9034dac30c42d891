//! The TLS edge, end to end with the real binaries.

use std::time::Duration;

use anyhow::{Context, Result};
use quorum_tests::World;

#[test]
fn logs_written_to_a_file_carry_no_colour_escapes() -> Result<()> {
    let mut w = World::new()?;
    w.start_coordinator()?;
    w.start_agent("127.0.0.11", "")?;
    w.wait_agent_state(
        "127.0.0.11",
        &["connected", "idle"],
        Duration::from_secs(20),
    )?;
    let coordinator = std::fs::read_to_string(w.dir.path().join("coordinator.log"))?;
    let agent = w.agent("127.0.0.11").context("agent")?.log_text();
    for (name, log) in [("coordinator", &coordinator), ("agent", &agent)] {
        // Levels and field names are what a terminal would get in colour.
        assert!(log.contains(" INFO "), "{name} log:\n{log}");
        assert!(
            !log.contains("\x1b["),
            "{name} log has ANSI escapes:\n{log}"
        );
    }
    Ok(())
}
