//! The deny list: certificate serials revoked with `quorum agents revoke` / `quorum pki
//! revoke` or superseded by a re-enrollment. Kept in the run store (so a restart does not
//! forget it) and in memory here, where every call and every agent session checks it; a
//! change is signalled, so an open session of a revoked agent ends at once.

use std::collections::HashMap;
use std::sync::RwLock;

use quorum_proto::identity::Peer;
use tokio::sync::watch;
use tonic::Status;

use crate::sop::store::Revocation;

/// The serials refused, by serial.
pub struct DenyList {
    by_serial: RwLock<HashMap<String, Revocation>>,
    /// Bumped after every addition; sessions watch it.
    changed: watch::Sender<u64>,
}

impl DenyList {
    /// A deny list holding `list` (the store's).
    pub fn new(list: Vec<Revocation>) -> Self {
        crate::model::metrics::metrics().set_revoked(list.len());
        Self {
            by_serial: RwLock::new(list.into_iter().map(|r| (r.serial.clone(), r)).collect()),
            changed: watch::Sender::new(0),
        }
    }

    /// The revocation of `serial`, if it is on the list.
    pub fn get(&self, serial: &str) -> Option<Revocation> {
        let map = match self.by_serial.read() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        map.get(serial).cloned()
    }

    /// Adds a revocation (already stored) and wakes the sessions.
    pub fn add(&self, r: Revocation) {
        {
            let mut map = match self.by_serial.write() {
                Ok(m) => m,
                Err(p) => p.into_inner(),
            };
            map.insert(r.serial.clone(), r);
            crate::model::metrics::metrics().set_revoked(map.len());
        }
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Drops the revocations of certificates that expired more than a day before `now_unix`
    /// (their expiry refuses them); returns how many.
    pub fn prune(&self, now_unix: i64) -> usize {
        let cutoff = now_unix - crate::sop::store::REVOCATION_AFTER_EXPIRY_SECS;
        let mut map = match self.by_serial.write() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        let before = map.len();
        map.retain(|_, r| r.not_after_unix == 0 || r.not_after_unix >= cutoff);
        crate::model::metrics::metrics().set_revoked(map.len());
        before - map.len()
    }

    /// How many serials are on the list.
    pub fn len(&self) -> usize {
        match self.by_serial.read() {
            Ok(m) => m.len(),
            Err(p) => p.into_inner().len(),
        }
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A receiver that sees a change after every addition.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Waits until `serial` is on the list; returns its revocation.
    pub async fn revoked(&self, serial: &str, changes: &mut watch::Receiver<u64>) -> Revocation {
        loop {
            if let Some(r) = self.get(serial) {
                return r;
            }
            if changes.changed().await.is_err() {
                // The list is gone with the coordinator: nothing more is revoked.
                std::future::pending::<()>().await;
            }
        }
    }
}

/// The reason recorded when a host's enrollment supersedes its previous certificate.
pub const SUPERSEDED: &str = "superseded by a new enrollment";

/// The refusal of a call or session made with the revoked certificate of `peer`: which
/// certificate, when and why, and what to do instead.
pub fn refusal(peer: &Peer, r: &Revocation) -> Status {
    let when = chrono::DateTime::from_timestamp(r.revoked_unix, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| format!("{} (Unix time)", r.revoked_unix));
    let what_now = match peer {
        Peer::Agent(ip)
            if r.reason == crate::sop::store::RENEWED
                || r.reason == crate::sop::store::NOT_TAKEN_UP =>
        {
            format!(
                "the agent on {ip} renewed its certificate and uses the new one; this is an old copy of its key (if the agent itself is refused, enroll it again: `quorum pki token --host {ip}`, then `quorum-agent enroll` on {ip})"
            )
        }
        Peer::Agent(ip) if r.reason.starts_with(SUPERSEDED) => format!(
            "{ip} enrolled again: a running quorum-agent switches to the new certificate on disk by itself (else restart it on {ip})"
        ),
        Peer::Agent(ip) => format!(
            "enroll the host again with a new token (`quorum pki token --host {ip}` on the admin node, then `quorum-agent enroll` on {ip})"
        ),
        Peer::Admin(name) => format!(
            "use another admin certificate, or issue a new one (`quorum pki issue admin --name {name} --out DIR --force`)"
        ),
        Peer::Coordinator => {
            "issue a new coordinator certificate (`quorum pki issue coordinator --ip ...`); note that agents do not consult the deny list, so a revoked coordinator certificate is refused only by this coordinator".into()
        }
    };
    Status::permission_denied(format!(
        "certificate serial {} ({peer}) was revoked at {when} ({}); {what_now}",
        r.serial, r.reason
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revocation(serial: &str) -> Revocation {
        Revocation {
            serial: serial.into(),
            subject: "agent 10.0.0.1".into(),
            reason: "lost".into(),
            revoked_unix: 0,
            not_after_unix: 0,
        }
    }

    #[tokio::test]
    async fn a_waiting_session_wakes_only_for_its_own_serial() {
        let list = std::sync::Arc::new(DenyList::new(vec![revocation("01")]));
        assert!(list.get("01").is_some());
        let mut changes = list.subscribe();
        let waiter = {
            let list = list.clone();
            tokio::spawn(async move { list.revoked("aa", &mut changes).await })
        };
        list.add(revocation("bb"));
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "woke for another serial");
        list.add(revocation("aa"));
        let r = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .ok()
            .and_then(Result::ok);
        assert_eq!(r.map(|r| r.serial), Some("aa".into()));
    }

    #[test]
    fn pruning_drops_only_revocations_of_certificates_expired_over_a_day_ago() {
        let now = 1_000_000;
        let day = crate::sop::store::REVOCATION_AFTER_EXPIRY_SECS;
        let with_expiry = |serial: &str, not_after_unix| Revocation {
            not_after_unix,
            ..revocation(serial)
        };
        let list = DenyList::new(vec![
            with_expiry("old", now - day - 1),
            with_expiry("recent", now - 10),
            with_expiry("valid", now + 10),
            revocation("unknown"),
        ]);
        assert_eq!(list.prune(now), 1);
        assert_eq!(list.len(), 3);
        assert!(list.get("old").is_none());
        assert!(list.get("recent").is_some() && list.get("unknown").is_some());
    }

    #[test]
    fn a_renewed_certificate_is_refused_as_an_old_copy() {
        let ip = std::net::IpAddr::from([10, 0, 0, 1]);
        let renewed = Revocation {
            reason: crate::sop::store::RENEWED.into(),
            ..revocation("aa")
        };
        let m = refusal(&Peer::Agent(ip), &renewed).message().to_string();
        assert!(
            m.contains("renewed its certificate and uses the new one"),
            "{m}"
        );
        assert!(m.contains("quorum pki token --host 10.0.0.1"), "{m}");
    }

    #[test]
    fn the_refusal_names_the_serial_the_holder_and_the_way_out() {
        let ip = "10.0.0.1"
            .parse()
            .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
        let s = refusal(&Peer::Agent(ip), &revocation("1a2b"));
        assert_eq!(s.code(), tonic::Code::PermissionDenied);
        let m = s.message();
        for part in [
            "1a2b",
            "10.0.0.1",
            "revoked at 1970-01-01 00:00:00 UTC (lost)",
            "quorum pki token --host 10.0.0.1",
        ] {
            assert!(m.contains(part), "{part}: {m}");
        }
        let m = refusal(&Peer::Admin("alice".into()), &revocation("ff"))
            .message()
            .to_string();
        assert!(m.contains("(admin alice)"), "{m}");
        assert!(m.contains("quorum pki issue admin --name alice"), "{m}");
    }
}
