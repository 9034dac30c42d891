//! Latency summaries: nearest-rank percentiles over every sample (no histogram buckets, so a
//! p99 of 1,000 samples is the 990th smallest).

use std::time::Duration;

/// Percentiles of a set of latencies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Samples.
    pub n: usize,
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Largest.
    pub max: Duration,
    /// Arithmetic mean.
    pub mean: Duration,
}

/// The nearest-rank `q`-quantile (0 < q <= 1) of sorted `v`.
fn rank(sorted: &[Duration], q: f64) -> Duration {
    let idx = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[idx]
}

/// Summarizes `v`; `None` when it is empty.
pub fn summarize(mut v: Vec<Duration>) -> Option<Summary> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let total: Duration = v.iter().sum();
    Some(Summary {
        n: v.len(),
        p50: rank(&v, 0.50),
        p99: rank(&v, 0.99),
        max: v[v.len() - 1],
        mean: total / v.len() as u32,
    })
}

/// Milliseconds with three decimals, the unit of every latency in the results file.
pub fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<Duration> = (1..=1000).rev().map(Duration::from_millis).collect();
        let s = summarize(v).unwrap();
        assert_eq!(s.n, 1000);
        assert_eq!(s.p50, Duration::from_millis(500));
        assert_eq!(s.p99, Duration::from_millis(990));
        assert_eq!(s.max, Duration::from_millis(1000));
        let one = summarize(vec![Duration::from_millis(7)]).unwrap();
        assert_eq!((one.p50, one.p99, one.max), (one.max, one.max, one.max));
        assert!(summarize(Vec::new()).is_none());
        assert_eq!(ms(Duration::from_micros(1500)), "1.500");
    }
}
