//! Limits on what an unauthenticated peer can make the coordinator do: a per-IP token bucket
//! on `Enroll`, and a rate limit on the log lines refusals produce (so a flood of bad
//! handshakes or enrollments is visible in the log without filling the disk).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Token buckets by peer IP: each IP may make `burst` attempts at once, then `per_sec` a
/// second. Buckets that have refilled are dropped when the map grows large, so a scan from
/// many addresses cannot grow it without bound.
pub struct IpBuckets {
    burst: f64,
    per_sec: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Buckets kept before the full ones are dropped.
const MAX_BUCKETS: usize = 10_000;

impl IpBuckets {
    /// Buckets of `burst` tokens refilling at `per_sec` tokens a second.
    pub fn new(burst: u32, per_sec: f64) -> Self {
        Self {
            burst: f64::from(burst.max(1)),
            per_sec: per_sec.max(0.001),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The burst size.
    pub fn burst(&self) -> u32 {
        self.burst as u32
    }

    /// The refill rate, tokens a second.
    pub fn per_sec(&self) -> f64 {
        self.per_sec
    }

    /// Takes a token for `ip` now; `Err` holds how long until one is available.
    pub fn take(&self, ip: IpAddr) -> Result<(), Duration> {
        self.take_at(ip, Instant::now())
    }

    /// Takes a token for `ip` at `now` (tests pass their own clock).
    pub fn take_at(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        // A poisoned lock means a panic elsewhere while holding it; refusing every enrollment
        // from then on would be worse than not limiting.
        let Ok(mut map) = self.buckets.lock() else {
            return Ok(());
        };
        if map.len() >= MAX_BUCKETS && !map.contains_key(&ip) {
            let (burst, per_sec) = (self.burst, self.per_sec);
            map.retain(|_, b| refilled(b, now, burst, per_sec) < burst);
        }
        let bucket = map.entry(ip).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let tokens = refilled(bucket, now, self.burst, self.per_sec);
        if tokens >= 1.0 {
            *bucket = Bucket {
                tokens: tokens - 1.0,
                at: now,
            };
            Ok(())
        } else {
            *bucket = Bucket { tokens, at: now };
            Err(Duration::from_secs_f64((1.0 - tokens) / self.per_sec))
        }
    }
}

fn refilled(b: &Bucket, now: Instant, burst: f64, per_sec: f64) -> f64 {
    let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
    (b.tokens + elapsed * per_sec).min(burst)
}

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
    fn a_bucket_allows_its_burst_then_its_rate_per_ip() {
        let b = IpBuckets::new(3, 2.0);
        let a = IpAddr::from([127, 0, 0, 1]);
        let other = IpAddr::from([127, 0, 0, 2]);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(b.take_at(a, t0).is_ok());
        }
        let wait = b.take_at(a, t0).err();
        assert_eq!(wait, Some(Duration::from_millis(500)));
        // Another IP has its own bucket.
        assert!(b.take_at(other, t0).is_ok());
        // Half a second later one token is back, and only one.
        let t1 = t0 + Duration::from_millis(500);
        assert!(b.take_at(a, t1).is_ok());
        assert!(b.take_at(a, t1).is_err());
        // Never more than the burst after a long pause.
        let t2 = t1 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert!(b.take_at(a, t2).is_ok());
        }
        assert!(b.take_at(a, t2).is_err());
    }

    #[test]
    fn the_map_of_buckets_stays_bounded() {
        let b = IpBuckets::new(2, 1.0);
        let t0 = Instant::now();
        for i in 0..(MAX_BUCKETS as u32 + 10) {
            let _ = b.take_at(IpAddr::from(i.to_be_bytes()), t0);
        }
        // Long after, every bucket is full again and is dropped to make room.
        let later = t0 + Duration::from_secs(10);
        let _ = b.take_at(IpAddr::from([10, 0, 0, 1]), later);
        let len = b.buckets.lock().map(|m| m.len()).unwrap_or(usize::MAX);
        assert!(len <= MAX_BUCKETS, "{len} buckets");
    }

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
