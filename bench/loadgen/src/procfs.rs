//! What the kernel says about a process: resident memory now and at its peak
//! (`/proc/PID/status` VmRSS, VmHWM) and CPU time used (`/proc/PID/stat` utime + stime).

use std::time::Instant;

use anyhow::{bail, Context, Result};

/// Clock ticks per second of the times in `/proc/PID/stat` (USER_HZ: 100 on every Linux ABI).
const USER_HZ: u64 = 100;

/// One reading of a process.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Resident set size, KiB.
    pub rss_kib: u64,
    /// Peak resident set size since the process started, KiB.
    pub hwm_kib: u64,
    /// User + system CPU time since the process started, milliseconds (10 ms resolution).
    pub cpu_ms: u64,
    /// CPU time of its reaped children (cutime + cstime), milliseconds: the commands an
    /// agent runs to learn a service's state.
    pub children_cpu_ms: u64,
    /// Threads.
    pub threads: u64,
    /// When it was read.
    pub at: Instant,
}

impl Sample {
    /// CPU milliseconds used between `earlier` and this sample.
    pub fn cpu_ms_since(&self, earlier: &Sample) -> u64 {
        self.cpu_ms.saturating_sub(earlier.cpu_ms)
    }

    /// Children's CPU milliseconds between `earlier` and this sample.
    pub fn children_cpu_ms_since(&self, earlier: &Sample) -> u64 {
        self.children_cpu_ms.saturating_sub(earlier.children_cpu_ms)
    }

    /// CPU used between `earlier` and this sample, in percent of one core.
    pub fn cpu_pct_since(&self, earlier: &Sample) -> f64 {
        let wall = self.at.duration_since(earlier.at).as_secs_f64();
        if wall <= 0.0 {
            return 0.0;
        }
        self.cpu_ms_since(earlier) as f64 / 10.0 / wall
    }
}

/// Reads `pid` now.
pub fn sample(pid: u32) -> Result<Sample> {
    let at = Instant::now();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("process {pid} is gone (cannot read /proc/{pid}/status)"))?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("process {pid} is gone (cannot read /proc/{pid}/stat)"))?;
    let field = |name: &str| {
        status_field(&status, name)
            .with_context(|| format!("/proc/{pid}/status has no {name} line"))
    };
    Ok(Sample {
        rss_kib: field("VmRSS")?,
        hwm_kib: field("VmHWM")?,
        threads: field("Threads")?,
        cpu_ms: cpu_ticks(&stat, 11)? * 1000 / USER_HZ,
        children_cpu_ms: cpu_ticks(&stat, 13)? * 1000 / USER_HZ,
        at,
    })
}

/// Open file descriptors of `pid` (sockets included).
pub fn open_fds(pid: u32) -> Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// The number of a `Name:   123 kB` line of `/proc/PID/status`.
fn status_field(status: &str, name: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// Two adjacent CPU times from `/proc/PID/stat`, summed, in clock ticks: `first` = 11 gives
/// utime + stime (fields 14, 15), 13 gives cutime + cstime (16, 17), counting from field 3.
/// The command name (field 2) may hold spaces and parentheses, so fields are counted from
/// the last `)`.
fn cpu_ticks(stat: &str, first: usize) -> Result<u64> {
    let Some((_, rest)) = stat.rsplit_once(')') else {
        bail!("unexpected /proc/PID/stat format: {stat:?}");
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("field {} missing in /proc/PID/stat", i + 3))
    };
    Ok(num(first)? + num(first + 1)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_status_and_stat_fields() {
        let status = "Name:\tquorum\nVmHWM:\t   9000 kB\nVmRSS:\t   8123 kB\nThreads:\t3\n";
        assert_eq!(status_field(status, "VmRSS"), Some(8123));
        assert_eq!(status_field(status, "VmHWM"), Some(9000));
        assert_eq!(status_field(status, "Threads"), Some(3));
        assert_eq!(status_field(status, "VmSwap"), None);
        let stat = "42 (odd) name) S 1 42 42 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 3 0";
        assert_eq!(cpu_ticks(stat, 11).unwrap(), 12);
        assert_eq!(cpu_ticks(stat, 13).unwrap(), 0);
    }

    #[test]
    fn samples_this_process() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_kib > 0 && s.hwm_kib >= s.rss_kib && s.threads >= 1);
    }
}
