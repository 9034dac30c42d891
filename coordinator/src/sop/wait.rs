//! The one bounded wait every guard, gate and retry of the runner uses: probe, and while the
//! probe says "not yet", sleep and probe again until a deadline on tokio's clock (so tests
//! drive it with paused time instead of sleeping).

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// What one probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Try<T, E> {
    /// The wait is over: here is the answer.
    Done(T),
    /// Not yet, for this reason: probe again if time is left.
    Again(E),
    /// Final: probing again cannot help (a refusal, an error that is not transient).
    Stop(E),
}

/// How a wait ended without an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waited<E> {
    /// The deadline passed; the last reason the probe gave.
    TimedOut(E),
    /// The probe said stop.
    Stopped(E),
}

impl<E> Waited<E> {
    /// The reason, however the wait ended.
    pub fn reason(self) -> E {
        match self {
            Waited::TimedOut(e) | Waited::Stopped(e) => e,
        }
    }
}

/// How long to sleep between probes: a fixed interval, or one that doubles up to a cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    first: Duration,
    max: Duration,
}

impl Pace {
    /// The same interval every time.
    pub const fn every(d: Duration) -> Self {
        Self { first: d, max: d }
    }

    /// `first`, then twice as long each time, never longer than `max`.
    pub const fn doubling(first: Duration, max: Duration) -> Self {
        Self { first, max }
    }
}

/// Probes until it answers [`Try::Done`] or [`Try::Stop`], or `within` has passed since the
/// first probe. The probe runs at least once; after a "not yet" past the deadline the wait
/// ends with that reason.
pub async fn until<T, E, F, Fut>(within: Duration, pace: Pace, mut probe: F) -> Result<T, Waited<E>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Try<T, E>>,
{
    let deadline = Instant::now() + within;
    let mut sleep = pace.first;
    loop {
        match probe().await {
            Try::Done(v) => return Ok(v),
            Try::Stop(e) => return Err(Waited::Stopped(e)),
            Try::Again(e) => {
                if Instant::now() >= deadline {
                    return Err(Waited::TimedOut(e));
                }
            }
        }
        tokio::time::sleep(sleep).await;
        sleep = (sleep * 2).min(pace.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// When each probe ran, in ms since the start.
    type Times = Arc<Mutex<Vec<u128>>>;

    /// Probe times and a probe that answers a scripted sequence (then "not yet" forever).
    fn scripted(
        answers: Vec<Try<u32, String>>,
    ) -> (Times, impl FnMut() -> std::future::Ready<Try<u32, String>>) {
        let start = Instant::now();
        let times = Arc::new(Mutex::new(Vec::new()));
        let seen = times.clone();
        let mut answers = answers.into_iter();
        let probe = move || {
            if let Ok(mut t) = seen.lock() {
                t.push(start.elapsed().as_millis());
            }
            std::future::ready(
                answers
                    .next()
                    .unwrap_or_else(|| Try::Again("still not".into())),
            )
        };
        (times, probe)
    }

    fn times(t: &Times) -> Vec<u128> {
        t.lock().map(|v| v.clone()).unwrap_or_default()
    }

    #[tokio::test(start_paused = true)]
    async fn answers_as_soon_as_the_probe_does() {
        let (t, probe) = scripted(vec![
            Try::Again("a".into()),
            Try::Again("b".into()),
            Try::Done(7),
        ]);
        let r = until(
            Duration::from_secs(10),
            Pace::every(Duration::from_millis(50)),
            probe,
        )
        .await;
        assert_eq!(r, Ok(7));
        assert_eq!(times(&t), vec![0, 50, 100]);
    }

    #[tokio::test(start_paused = true)]
    async fn times_out_with_the_last_reason_after_probing_past_the_deadline() {
        let (t, probe) = scripted(vec![Try::Again("first".into())]);
        let r = until(
            Duration::from_secs(2),
            Pace::every(Duration::from_millis(500)),
            probe,
        )
        .await;
        assert_eq!(r, Err(Waited::TimedOut("still not".to_string())));
        assert_eq!(times(&t), vec![0, 500, 1000, 1500, 2000]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_the_wait_at_once() {
        let (t, probe) = scripted(vec![Try::Again("a".into()), Try::Stop("refused".into())]);
        let r = until(
            Duration::from_secs(60),
            Pace::every(Duration::from_millis(500)),
            probe,
        )
        .await;
        assert_eq!(r, Err(Waited::Stopped("refused".to_string())));
        assert_eq!(times(&t), vec![0, 500]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_doubling_pace_backs_off_to_its_cap() {
        let (t, probe) = scripted(vec![]);
        let pace = Pace::doubling(Duration::from_millis(200), Duration::from_secs(2));
        let r = until(Duration::from_secs(7), pace, probe).await;
        assert!(matches!(r, Err(Waited::TimedOut(_))));
        // 200, 400, 800, 1600 -> capped at 2000.
        assert_eq!(times(&t), vec![0, 200, 600, 1400, 3000, 5000, 7000]);
    }
}
