//! Limits on what an unauthenticated peer can make the coordinator do: a rate limit on the
//! log lines refusals produce (so a flood of bad handshakes is visible in the log without
//! filling the disk).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most `per_window` lines of one kind in each `window`; the next line after a quiet
/// spell says how many were left out.
pub struct LogLimit {
    per_window: u32,
    window: Duration,
    state: Mutex<LogWindow>,
}

struct LogWindow {
    start: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

/// Lines left out since the last one logged; displays as a suffix for that line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suppressed(pub u64);

impl std::fmt::Display for Suppressed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            0 => Ok(()),
            n => write!(f, " ({n} more like this were not logged)"),
        }
    }
}

impl LogLimit {
    /// A limit of `per_window` lines per `window`.
    pub fn new(per_window: u32, window: Duration) -> Self {
        Self {
            per_window,
            window,
            state: Mutex::new(LogWindow {
                start: None,
                logged: 0,
                suppressed: 0,
            }),
        }
    }

    /// Whether to log a line now; if so, how many were left out before it.
    pub fn admit(&self) -> Option<Suppressed> {
        self.admit_at(Instant::now())
    }

    /// [`LogLimit::admit`] at `now` (tests pass their own clock).
    pub fn admit_at(&self, now: Instant) -> Option<Suppressed> {
        let Ok(mut s) = self.state.lock() else {
            return Some(Suppressed(0));
        };
        let expired = s
            .start
            .is_none_or(|start| now.saturating_duration_since(start) >= self.window);
        if expired {
            s.start = Some(now);
            s.logged = 0;
        }
        if s.logged >= self.per_window {
            s.suppressed = s.suppressed.saturating_add(1);
            return None;
        }
        s.logged += 1;
        let left_out = std::mem::take(&mut s.suppressed);
        Some(Suppressed(left_out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_are_limited_per_window_and_the_next_one_counts_the_rest() {
        let l = LogLimit::new(2, Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(l.admit_at(t0), Some(Suppressed(0)));
        assert_eq!(l.admit_at(t0), Some(Suppressed(0)));
        assert_eq!(l.admit_at(t0), None);
        assert_eq!(l.admit_at(t0 + Duration::from_secs(1)), None);
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(l.admit_at(t1), Some(Suppressed(2)));
        assert_eq!(
            Suppressed(2).to_string(),
            " (2 more like this were not logged)"
        );
        assert_eq!(Suppressed(0).to_string(), "");
    }
}
