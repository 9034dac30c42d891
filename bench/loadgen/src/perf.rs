//! `perf record` attached to a running process for the length of one benchmark phase, stopped
//! with SIGINT (by its own pid) so it writes a complete data file.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// A `perf record` child.
pub struct Perf {
    child: Child,
    what: String,
}

/// Parses `PID=PATH` (a process to profile and where its data goes).
pub fn parse_target(s: &str) -> Result<(u32, String), String> {
    let (pid, path) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected PID=PATH"))?;
    let pid = pid
        .parse()
        .map_err(|_| format!("{pid:?} is not a process id"))?;
    Ok((pid, path.to_string()))
}

impl Perf {
    /// Starts sampling `pid` with DWARF call graphs into `out`; waits until perf is attached.
    pub async fn start(pid: u32, out: &str) -> Result<Self> {
        if let Some(dir) = Path::new(out).parent() {
            std::fs::create_dir_all(dir)?;
        }
        let log = std::fs::File::create(format!("{out}.log"))?;
        let child = Command::new("perf")
            .args(["record", "-q", "-F", "999", "--call-graph", "dwarf,16384"])
            .args(["-p", &pid.to_string(), "-o", out])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start perf (apt-get install linux-perf)")?;
        // perf needs a moment to open its events on every thread of the target.
        tokio::time::sleep(Duration::from_millis(700)).await;
        Ok(Self {
            child,
            what: format!("perf record of pid {pid} into {out}"),
        })
    }

    /// Stops recording and waits for perf to write its file.
    pub fn stop(mut self) -> Result<()> {
        let pid = Pid::from_raw(self.child.id() as i32);
        kill(pid, Signal::SIGINT).with_context(|| format!("cannot stop {}", self.what))?;
        let status = self.child.wait()?;
        // perf ends with status 0 or, when the signal lands early, by SIGINT itself.
        if !status.success() && status.signal() != Some(Signal::SIGINT as i32) {
            eprintln!("warning: {} exited with {status}", self.what);
        }
        Ok(())
    }
}

/// Starts one recorder per target; a target that cannot be profiled is reported and skipped.
pub async fn start_all(targets: &[(u32, String)]) -> Vec<Perf> {
    let mut out = Vec::new();
    for (pid, path) in targets {
        match Perf::start(*pid, path).await {
            Ok(p) => out.push(p),
            Err(e) => eprintln!("warning: not profiling pid {pid}: {e:#}"),
        }
    }
    out
}

/// Stops every recorder.
pub fn stop_all(perfs: Vec<Perf>) {
    for p in perfs {
        if let Err(e) = p.stop() {
            eprintln!("warning: {e:#}");
        }
    }
}
