//! The store's behaviour, one check per function, run on every engine: the SQLite unit
//! tests and the PostgreSQL end-to-end suite (`tests/tests/store.rs`) both call [`all`].
//! Each check gets its stores from a [`Maker`]: a fresh empty one, and the same one opened
//! again (a restart).

#![allow(missing_docs)]

use crate::sop::plan::StepKind;
use crate::sop::store::*;

type R = Result<(), Box<dyn std::error::Error>>;
/// One named check.
type Check = (&'static str, fn(&dyn Maker) -> R);

/// Makes the stores a check uses.
pub trait Maker {
    /// A new, empty store, writable (fenced with a lease where the engine needs one).
    fn fresh(&self) -> Result<Store, Box<dyn std::error::Error>>;
    /// The store made last, opened again.
    fn reopen(&self) -> Result<Store, Box<dyn std::error::Error>>;
}

/// Every check, with its name: the first failure is returned, named.
pub fn all(m: &dyn Maker) -> Result<usize, String> {
    let checks: &[Check] = &[
        (
            "a_host_lock_is_apart_from_the_cluster_lock_and_released_by_an_abort",
            a_host_lock_is_apart_from_the_cluster_lock_and_released_by_an_abort,
        ),
        (
            "one_run_per_cluster_until_it_succeeds_or_is_aborted",
            one_run_per_cluster_until_it_succeeds_or_is_aborted,
        ),
        (
            "end_times_are_kept_and_every_write_is_signalled",
            end_times_are_kept_and_every_write_is_signalled,
        ),
        (
            "the_deny_list_keeps_the_first_revocation_and_survives_a_reopen",
            the_deny_list_keeps_the_first_revocation_and_survives_a_reopen,
        ),
        (
            "an_enrollment_revokes_the_certificate_it_supersedes_in_the_same_write",
            an_enrollment_revokes_the_certificate_it_supersedes_in_the_same_write,
        ),
        (
            "a_renewal_revokes_the_old_certificate_when_the_new_one_is_first_used",
            a_renewal_revokes_the_old_certificate_when_the_new_one_is_first_used,
        ),
        (
            "revocations_of_long_expired_certificates_are_pruned_unknown_expiries_stay",
            revocations_of_long_expired_certificates_are_pruned_unknown_expiries_stay,
        ),
        (
            "a_run_stored_by_0_2_loads_and_shows_typed",
            a_run_stored_by_0_2_loads_and_shows_typed,
        ),
        (
            "steps_and_interruptions_survive_a_reopen",
            steps_and_interruptions_survive_a_reopen,
        ),
        (
            "interrupted_runs_are_listed_as_halted_and_counted",
            interrupted_runs_are_listed_as_halted_and_counted,
        ),
        (
            "an_imported_run_keeps_its_steps_and_lock",
            an_imported_run_keeps_its_steps_and_lock,
        ),
        ("a_token_is_used_once", a_token_is_used_once),
    ];
    for (name, check) in checks {
        check(m).map_err(|e| format!("{name}: {e}"))?;
    }
    Ok(checks.len())
}

macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err(format!($($arg)+).into());
        }
    };
}

pub fn a_host_lock_is_apart_from_the_cluster_lock_and_released_by_an_abort(
    m: &dyn Maker,
) -> Result<(), Box<dyn std::error::Error>> {
    let store = m.fresh()?;
    let host: std::net::IpAddr = "10.10.10.12".parse()?;
    let mut cleanup = run("r1-cleanup", "etcd");
    cleanup.state = run_state::WAITING.into();
    store.create_run_locked(&cleanup, &host_lock(host))?;
    // The cluster stays free for other SOPs; the host does not.
    store.create_run(&run("r2", "etcd"))?;
    assert_eq!(
        store.lock_holder(&host_lock(host))?,
        Some(("r1-cleanup".into(), "waiting".into()))
    );
    assert!(matches!(
        store.create_run_locked(&run("r3", "etcd"), &host_lock(host)),
        Err(StoreError::Locked { .. })
    ));
    assert_eq!(store.waiting_runs()?, vec!["r1-cleanup".to_string()]);
    store.set_run_state("r1-cleanup", run_state::ABORTED, "forgotten")?;
    assert_eq!(store.lock_holder(&host_lock(host))?, None);
    assert!(store.waiting_runs()?.is_empty());
    Ok(())
}
pub fn one_run_per_cluster_until_it_succeeds_or_is_aborted(
    m: &dyn Maker,
) -> Result<(), Box<dyn std::error::Error>> {
    let store = m.fresh()?;
    store.create_run(&run("r1", "etcd"))?;
    match store.create_run(&run("r2", "etcd")) {
        Err(StoreError::Locked { holder, .. }) => assert_eq!(holder, "r1"),
        other => panic!("{other:?}"),
    }
    store.create_run(&run("r3", "other"))?;
    // A failed run keeps the lock: resume or abort it first.
    store.set_run_state("r1", run_state::FAILED, "boom")?;
    assert!(store.create_run(&run("r4", "etcd")).is_err());
    store.set_run_state("r1", run_state::ABORTED, "by tester")?;
    // An abort is final even if the walker reports its last step afterwards.
    store.set_run_state("r1", run_state::SUCCEEDED, "")?;
    assert_eq!(store.get_run("r1")?.state, run_state::ABORTED);
    store.create_run(&run("r5", "etcd"))?;
    Ok(())
}
pub fn end_times_are_kept_and_every_write_is_signalled(
    m: &dyn Maker,
) -> Result<(), Box<dyn std::error::Error>> {
    let store = m.fresh()?;
    let mut changes = store.subscribe();
    let mut seen = || -> bool {
        let changed = changes.has_changed().unwrap_or(false);
        changes.mark_unchanged();
        changed
    };
    store.create_run(&run("r1", "etcd"))?;
    assert!(seen(), "create");
    assert!(!seen(), "nothing written since");
    let mut step = store.get_run("r1")?.steps[0].clone();
    step.journal = Some(RanBefore {
        started_ms: 1,
        finished_ms: 2,
    });
    store.put_step("r1", &step)?;
    assert!(seen(), "a step");
    assert_eq!(store.get_run("r1")?.steps[0].journal, step.journal);
    assert_eq!(store.get_run("r1")?.finished_ms, 0, "still running");
    let before = now_ms();
    store.set_run_state("r1", run_state::FAILED, "boom")?;
    assert!(seen(), "a state");
    assert!(store.get_run("r1")?.finished_ms >= before);
    store.set_run_state("r1", run_state::RUNNING, "")?;
    assert_eq!(store.get_run("r1")?.finished_ms, 0, "resumed: no end yet");
    Ok(())
}
pub fn the_deny_list_keeps_the_first_revocation_and_survives_a_reopen(
    m: &dyn Maker,
) -> Result<(), Box<dyn std::error::Error>> {
    let first = Revocation {
        serial: "1a2b".into(),
        subject: "agent 10.0.0.1".into(),
        reason: "lost laptop".into(),
        revoked_unix: 100,
        not_after_unix: 0,
    };
    {
        let store = m.fresh()?;
        assert_eq!(store.revocations()?, vec![]);
        assert_eq!(store.revoke(&first)?, first);
        // Again, with other words: the first stays.
        let again = Revocation {
            reason: "other".into(),
            revoked_unix: 200,
            ..first.clone()
        };
        assert_eq!(store.revoke(&again)?, first);
        let other = Revocation {
            serial: "ff".into(),
            revoked_unix: 300,
            ..first.clone()
        };
        store.revoke(&other)?;
    }
    let store = m.reopen()?;
    let serials: Vec<String> = store.revocations()?.into_iter().map(|r| r.serial).collect();
    assert_eq!(serials, ["1a2b", "ff"]);
    Ok(())
}
pub fn an_enrollment_revokes_the_certificate_it_supersedes_in_the_same_write(
    m: &dyn Maker,
) -> Result<(), Box<dyn std::error::Error>> {
    let host: std::net::IpAddr = "10.0.0.1".parse()?;
    let other: std::net::IpAddr = "10.0.0.2".parse()?;
    {
        let store = m.fresh()?;
        let why = "superseded by a new enrollment";
        assert_eq!(
            store.record_enrollment(host, &issued("aa", 10), why)?,
            vec![]
        );
        assert_eq!(
            store.record_enrollment(other, &issued("cc", 10), why)?,
            vec![]
        );
        let superseded = store.record_enrollment(host, &issued("bb", 20), why)?;
        assert_eq!(
            superseded
                .into_iter()
                .map(|r| (r.serial, r.reason, r.not_after_unix))
                .collect::<Vec<_>>(),
            vec![("aa".to_string(), why.to_string(), 10)]
        );
        assert!(revoked_serials(&store)?.contains(&"aa".to_string()));
        // The same serial recorded twice supersedes nothing.
        assert_eq!(
            store.record_enrollment(host, &issued("bb", 20), why)?,
            vec![]
        );
    }
    let store = m.reopen()?;
    assert_eq!(store.enrollment(host)?.map(|e| e.serial), Some("bb".into()));
    assert_eq!(store.enrolled_host("cc")?, Some("10.0.0.2".into()));
    assert_eq!(store.enrolled_host("aa")?, None);
    Ok(())
}
/// A renewal keeps the caller's certificate valid until the new one is used (its answer
/// may be lost); a renewal never taken up is revoked by the next one; an enrollment with
/// a token revokes both a host's certificates.
pub fn a_renewal_revokes_the_old_certificate_when_the_new_one_is_first_used(
    m: &dyn Maker,
) -> Result<(), Box<dyn std::error::Error>> {
    let store = m.fresh()?;
    let host: std::net::IpAddr = "10.0.0.1".parse()?;
    store.record_enrollment(host, &issued("a1", 100), SUPERSEDED_FOR_TEST)?;
    // Renewed into b2; the answer is lost, the agent still holds a1.
    assert_eq!(
        store.record_renewal(host, &issued("a1", 100), &issued("b2", 200))?,
        vec![]
    );
    assert_eq!(
        store.take_up(host, "a1")?,
        None,
        "the old one is not the new one"
    );
    assert_eq!(revoked_serials(&store)?, Vec::<String>::new());
    // It renews again with a1: b2 was never used and goes now.
    let gone = store.record_renewal(host, &issued("a1", 100), &issued("c3", 300))?;
    assert_eq!(
        gone.iter()
            .map(|r| (r.serial.as_str(), r.reason.as_str()))
            .collect::<Vec<_>>(),
        vec![("b2", NOT_TAKEN_UP)]
    );
    let e = store.enrollment(host)?.ok_or("no enrollment")?;
    assert_eq!(
        (e.serial.as_str(), e.previous.as_str(), e.renewals),
        ("c3", "a1", 2)
    );
    // First use of c3 revokes a1, once.
    let r = store.take_up(host, "c3")?.ok_or("a1 not revoked")?;
    assert_eq!(
        (r.serial.as_str(), r.reason.as_str(), r.not_after_unix),
        ("a1", RENEWED, 100)
    );
    assert_eq!(store.take_up(host, "c3")?, None);
    // A pending renewal and a token enrollment: both of the host's certificates go.
    store.record_renewal(host, &issued("c3", 300), &issued("d4", 400))?;
    let gone = store.record_enrollment(host, &issued("e5", 500), SUPERSEDED_FOR_TEST)?;
    let mut serials: Vec<_> = gone.into_iter().map(|r| r.serial).collect();
    serials.sort();
    assert_eq!(serials, ["c3", "d4"]);
    assert_eq!(store.enrollment(host)?.map(|e| e.renewals), Some(0));
    Ok(())
}
pub fn revocations_of_long_expired_certificates_are_pruned_unknown_expiries_stay(
    m: &dyn Maker,
) -> Result<(), Box<dyn std::error::Error>> {
    let store = m.fresh()?;
    let now = 10 * REVOCATION_AFTER_EXPIRY_SECS;
    for (serial, not_after_unix) in [
        ("expired-long-ago", now - REVOCATION_AFTER_EXPIRY_SECS - 1),
        ("expired-just-now", now - 1),
        ("valid", now + 100),
        ("unknown", 0),
    ] {
        store.revoke(&Revocation {
            serial: serial.into(),
            subject: String::new(),
            reason: "test".into(),
            revoked_unix: 1,
            not_after_unix,
        })?;
    }
    assert_eq!(store.prune_revocations(now)?, 1);
    let mut left = revoked_serials(&store)?;
    left.sort();
    assert_eq!(left, ["expired-just-now", "unknown", "valid"]);
    Ok(())
}
/// A run as 0.2 stored it (untyped `args` in its context, a refused step as words) loads,
/// its context still reads, and it shows with the typed states and outcome.
pub fn a_run_stored_by_0_2_loads_and_shows_typed(
    m: &dyn Maker,
) -> Result<(), Box<dyn std::error::Error>> {
    use quorum_proto::pb;
    let store = m.fresh()?;
    let mut old = run("old", "etcd");
    old.sop = "member-remove".into();
    old.context = r#"{"endpoints":["https://10.10.10.11:2379"],"args":{"host":"10.10.10.13","confirmed":"true"},"notes":[]}"#.into();
    old.state = run_state::FAILED.into();
    old.steps[0].state = step_state::FAILED.into();
    old.steps[0].outcome = "refused".into();
    store.create_run(&old)?;
    let loaded = store.get_run("old")?;
    let ctx: crate::sop::runner::RunContext = serde_json::from_str(&loaded.context)?;
    assert_eq!(ctx.request, None);
    assert_eq!(
        ctx.args.get("host").map(String::as_str),
        Some("10.10.10.13")
    );
    assert_eq!(ctx.endpoints, vec!["https://10.10.10.11:2379".to_string()]);
    let view = crate::sop::planning::run_view(&loaded);
    assert_eq!(view.state(), pb::RunState::Failed);
    assert_eq!(view.steps[0].state(), pb::StepState::Failed);
    assert_eq!(view.steps[0].outcome(), pb::Outcome::Refused);
    Ok(())
}
pub fn steps_and_interruptions_survive_a_reopen(
    m: &dyn Maker,
) -> Result<(), Box<dyn std::error::Error>> {
    {
        let store = m.fresh()?;
        store.create_run(&run("r1", "etcd"))?;
        let mut step = store.get_run("r1")?.steps[0].clone();
        step.state = step_state::RUNNING.into();
        step.task_ids = vec!["r1-s0-a1-127.0.0.1".into()];
        store.put_step("r1", &step)?;
    }
    let store = m.reopen()?;
    assert_eq!(store.mark_interrupted()?, vec!["r1".to_string()]);
    let r = store.get_run("r1")?;
    assert_eq!(r.state, run_state::INTERRUPTED);
    assert_eq!(r.steps[0].state, step_state::RUNNING);
    assert_eq!(r.steps[0].task_ids, vec!["r1-s0-a1-127.0.0.1".to_string()]);
    assert_eq!(store.list_runs(10)?, vec!["r1".to_string()]);
    assert!(matches!(store.get_run("nope"), Err(StoreError::NoRun(_))));
    Ok(())
}

pub fn interrupted_runs_are_listed_as_halted_and_counted(m: &dyn Maker) -> R {
    let store = m.fresh()?;
    store.create_run(&run("r1", "etcd"))?;
    store.create_run(&run("r2", "other"))?;
    store.set_run_state("r2", run_state::FAILED, "boom")?;
    ensure!(
        store.mark_interrupted()? == vec!["r1".to_string()],
        "r1 interrupted"
    );
    let halted: Vec<(String, String)> = store
        .halted_runs()?
        .into_iter()
        .map(|h| (h.id, h.state))
        .collect();
    ensure!(
        halted
            == vec![
                ("r1".into(), "interrupted".into()),
                ("r2".into(), "failed".into())
            ],
        "halted: {halted:?}"
    );
    let mut counts = store.run_counts()?;
    counts.sort();
    ensure!(
        counts == vec![("failed".into(), 1), ("interrupted".into(), 1)],
        "counts: {counts:?}"
    );
    ensure!(store.list_runs(1)?.len() == 1, "limit");
    ensure!(store.lock_of("r1")? == Some("etcd".into()), "r1 holds etcd");
    Ok(())
}

pub fn a_token_is_used_once(m: &dyn Maker) -> R {
    let store = m.fresh()?;
    ensure!(!store.token_used("n1")?, "new");
    ensure!(store.use_token("n1", 100)?, "first use");
    ensure!(!store.use_token("n1", 100)?, "second use refused");
    let store = m.reopen()?;
    ensure!(store.token_used("n1")?, "remembered");
    Ok(())
}

pub fn an_imported_run_keeps_its_steps_and_lock(m: &dyn Maker) -> R {
    let store = m.fresh()?;
    let mut r = run("exported", "etcd");
    r.state = run_state::FAILED.into();
    r.finished_ms = 42;
    r.steps[0].state = step_state::FAILED.into();
    ensure!(store.import_run(&r, Some("etcd"))?, "imported");
    ensure!(
        !store.import_run(&r, Some("etcd"))?,
        "a second import is skipped"
    );
    let back = store.get_run("exported")?;
    ensure!(
        back.finished_ms == 42 && back.steps[0].state == "failed",
        "{back:?}"
    );
    ensure!(
        store.lock_holder("etcd")? == Some(("exported".into(), "failed".into())),
        "the lock came along"
    );
    ensure!(
        matches!(
            store.create_run(&run("new", "etcd")),
            Err(StoreError::Locked { .. })
        ),
        "the imported run holds the cluster"
    );
    Ok(())
}

pub fn run(id: &str, cluster: &str) -> RunRecord {
    RunRecord {
        id: id.into(),
        sop: "config-reload".into(),
        cluster: cluster.into(),
        context: "{}".into(),
        state: run_state::RUNNING.into(),
        started_by: "tester".into(),
        inventory_digest: "00".into(),
        created_ms: now_ms(),
        finished_ms: 0,
        error: String::new(),
        steps: vec![StepRecord::pending(0, &StepKind::ClusterHealthGate)],
    }
}

pub fn issued(serial: &str, not_after_unix: i64) -> Issued {
    Issued {
        serial: serial.into(),
        not_after_unix,
    }
}

pub fn revoked_serials(store: &Store) -> Result<Vec<String>, StoreError> {
    Ok(store.revocations()?.into_iter().map(|r| r.serial).collect())
}

const SUPERSEDED_FOR_TEST: &str = "superseded by a new enrollment";
