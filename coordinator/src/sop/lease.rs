//! Leadership among coordinators that share a store in PostgreSQL: one row, `quorum.lease`,
//! holds the active coordinator's id, URL, epoch and expiry. It is taken and renewed by single
//! statements on the database's clock; each takeover raises the epoch by one and logs it in
//! `quorum.leaders`. The epoch is the fencing token: the store's writes commit only under the
//! current lease ([`crate::sop::store::Store::fence_with`]), every task carries it, and agents
//! refuse tasks from an epoch below the highest they have seen.
//!
//! The holder steps down before the database could call its lease lapsed: the local deadline
//! is counted from the moment the renewal was *sent* (the database stamps its expiry later
//! than that) minus a margin, on the monotonic clock, which keeps running while a process is
//! stopped (SIGSTOP) or a VM is paused.
//!
//! A coordinator on SQLite (one coordinator, or `serve --standalone`) has an epoch too: one
//! above every epoch its store recorded and every epoch it was told of, taken at each start.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::sop::db::{PgTarget, Sql, P};
use crate::sop::store::StoreError;

/// What this process may do now, as leader of its store.
pub struct Leadership {
    epoch: AtomicI64,
    /// Until when the lease is certainly ours (None: not bounded, the SQLite store).
    deadline: Mutex<Option<Instant>>,
    /// Set once the lease is lost, with why: nothing more is dispatched or written.
    lost: watch::Sender<Option<String>>,
}

impl Leadership {
    /// A coordinator whose store is its own (SQLite): its epoch does not lapse.
    pub fn unbounded(epoch: i64) -> Arc<Self> {
        Arc::new(Self {
            epoch: AtomicI64::new(epoch),
            deadline: Mutex::new(None),
            lost: watch::Sender::new(None),
        })
    }

    /// The holder of the shared store's lease of `epoch`, certainly held until `deadline`.
    pub fn leased(epoch: i64, deadline: Instant) -> Arc<Self> {
        Arc::new(Self {
            epoch: AtomicI64::new(epoch),
            deadline: Mutex::new(Some(deadline)),
            lost: watch::Sender::new(None),
        })
    }

    /// The epoch tasks carry.
    pub fn epoch(&self) -> i64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// A coordinator on SQLite moved to a higher epoch (an agent had seen a higher one).
    pub fn set_epoch(&self, epoch: i64) {
        self.epoch.store(epoch, Ordering::SeqCst);
    }

    /// Whether the lease is held now; the reason when it is not. Checked right before every
    /// dispatch and every change the coordinator makes itself.
    pub fn check(&self) -> Result<(), String> {
        if let Some(why) = self.lost.borrow().clone() {
            return Err(why);
        }
        let deadline = *lock(&self.deadline);
        match deadline {
            Some(d) if Instant::now() >= d => {
                let why = format!(
                    "the lease of epoch {} was not renewed in time: another coordinator may hold it now",
                    self.epoch()
                );
                self.lose(why.clone());
                Err(why)
            }
            _ => Ok(()),
        }
    }

    /// A renewal succeeded: the lease is ours until `deadline`.
    pub fn extend(&self, deadline: Instant) {
        let mut d = lock(&self.deadline);
        if d.is_some() && self.lost.borrow().is_none() {
            *d = Some(deadline);
        }
    }

    /// The lease is lost for `why`: from now on nothing is dispatched or written.
    pub fn lose(&self, why: String) {
        self.lost.send_if_modified(|l| {
            if l.is_none() {
                *l = Some(why);
                true
            } else {
                false
            }
        });
    }

    /// Sees the loss of the lease.
    pub fn subscribe(&self) -> watch::Receiver<Option<String>> {
        self.lost.subscribe()
    }

    /// The deadline now (for the watchdog).
    pub fn deadline(&self) -> Option<Instant> {
        *lock(&self.deadline)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// The lease row as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseView {
    /// The holder's id.
    pub holder: String,
    /// The URL it advertised.
    pub url: String,
    /// Its epoch.
    pub epoch: i64,
    /// Milliseconds left on the database's clock (negative: lapsed).
    pub left_ms: i64,
}

impl LeaseView {
    /// Whether it is still held.
    pub fn live(&self) -> bool {
        self.left_ms > 0
    }
}

/// A connection of its own for the lease, so that a long store transaction never delays a
/// renewal. Every call blocks: run it on a blocking thread.
pub struct LeaseConn {
    client: tokio_postgres::Client,
    target: PgTarget,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl LeaseConn {
    /// Connects.
    pub fn connect(target: &PgTarget) -> Result<Self, StoreError> {
        Ok(Self {
            client: Self::session(target)?,
            target: target.clone(),
        })
    }

    /// A session whose lease statements never wait long for the row: a store transaction
    /// holds it for milliseconds, and one of a stopped coordinator is ended by the server
    /// ([`crate::sop::db::IDLE_IN_TRANSACTION_MS`]); the next try comes soon anyway.
    fn session(target: &PgTarget) -> Result<tokio_postgres::Client, StoreError> {
        let client = target.connect()?;
        Sql::execute(&client, "SET lock_timeout = 1000", &[])?;
        Ok(client)
    }

    fn client(&mut self) -> Result<&tokio_postgres::Client, StoreError> {
        if self.client.is_closed() {
            self.client = Self::session(&self.target)?;
        }
        Ok(&self.client)
    }

    /// Takes the lease when no one holds it (never held, lapsed, or released): one statement
    /// that raises the epoch and logs the takeover. Returns the new epoch, or `None` when a
    /// live lease is held by another.
    pub fn acquire(
        &mut self,
        holder: &str,
        url: &str,
        ttl: Duration,
    ) -> Result<Option<i64>, StoreError> {
        let row = self.client()?.first(
            "WITH taken AS (
               INSERT INTO lease AS l (id, holder, url, epoch, acquired_at, expires_at)
               VALUES (1, ?1, ?2, 1, now(), now() + (?3::bigint * interval '1 millisecond'))
               ON CONFLICT (id) DO UPDATE SET holder = excluded.holder, url = excluded.url,
                 epoch = l.epoch + 1, acquired_at = now(), expires_at = excluded.expires_at
               WHERE l.expires_at <= now()
               RETURNING epoch, holder, url)
             INSERT INTO leaders (epoch, holder, url) SELECT epoch, holder, url FROM taken RETURNING epoch",
            &[P::T(holder), P::T(url), P::I(ms(ttl))],
        )?;
        row.map(|r| r.int(0)).transpose()
    }

    /// Extends the lease of `epoch` held by `holder` by `ttl` from now (the database's now);
    /// false when it is no longer held (lapsed, or taken over).
    pub fn renew(&mut self, holder: &str, epoch: i64, ttl: Duration) -> Result<bool, StoreError> {
        let n = Sql::execute(
            self.client()?,
            "UPDATE lease SET expires_at = now() + (?3::bigint * interval '1 millisecond')
             WHERE id = 1 AND holder = ?1 AND epoch = ?2 AND expires_at > now()",
            &[P::T(holder), P::I(epoch), P::I(ms(ttl))],
        )?;
        Ok(n == 1)
    }

    /// Raises the epoch of the lease `holder` holds to at least `at_least` (after a
    /// standalone coordinator's runs were exported: the next leader's epoch is above every
    /// epoch the standalone one used).
    pub fn raise_epoch(&mut self, holder: &str, at_least: i64) -> Result<(), StoreError> {
        Sql::execute(
            self.client()?,
            "UPDATE lease SET epoch = GREATEST(epoch, ?2) WHERE id = 1 AND holder = ?1 AND expires_at > now()",
            &[P::T(holder), P::I(at_least)],
        )?;
        Ok(())
    }

    /// Gives the lease up (a clean stop): a standby takes it at its next try.
    pub fn release(&mut self, holder: &str, epoch: i64) -> Result<(), StoreError> {
        Sql::execute(
            self.client()?,
            "UPDATE lease SET expires_at = now() WHERE id = 1 AND holder = ?1 AND epoch = ?2 AND expires_at > now()",
            &[P::T(holder), P::I(epoch)],
        )?;
        Ok(())
    }

    /// The lease row, if one was ever taken.
    pub fn current(&mut self) -> Result<Option<LeaseView>, StoreError> {
        let row = self.client()?.first(
            "SELECT holder, url, epoch, (EXTRACT(EPOCH FROM (expires_at - now())) * 1000)::bigint FROM lease WHERE id = 1",
            &[],
        )?;
        row.map(|r| {
            Ok(LeaseView {
                holder: r.text(0)?,
                url: r.text(1)?,
                epoch: r.int(2)?,
                left_ms: r.int(3)?,
            })
        })
        .transpose()
    }
}

/// The margin kept between the local deadline and the lease's expiry in the database: for
/// the time a renewal's statement takes to reach it and for clock-rate differences.
pub fn margin(ttl: Duration) -> Duration {
    (ttl / 4).max(Duration::from_millis(500))
}

/// This process's holder id: host name, pid and a random tag, never reused.
pub fn holder_id() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "host".into());
    format!(
        "{host}/{}/{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unrenewed_lease_is_lost_at_its_deadline_and_stays_lost() {
        let l = Leadership::leased(3, Instant::now() + Duration::from_millis(30));
        assert_eq!(l.check(), Ok(()));
        std::thread::sleep(Duration::from_millis(40));
        assert!(l.check().is_err());
        // A renewal that comes too late does not bring it back.
        l.extend(Instant::now() + Duration::from_secs(60));
        assert!(l.check().is_err());
        assert!(l.subscribe().borrow().is_some());
        let local = Leadership::unbounded(1);
        assert_eq!(local.check(), Ok(()));
        local.lose("an agent saw epoch 9".into());
        assert!(local.check().is_err());
    }
}
