//! The shared run store on a real PostgreSQL 15: the same checks the SQLite store passes
//! (`quorum_coordinator::sop::store_suite`), the lease (one holder, epochs that only rise, a
//! takeover only after expiry on the database's clock), and fenced writes: a store whose
//! lease was taken over commits nothing.

use std::cell::{Cell, RefCell};
use std::time::Duration;

use anyhow::Result;
use quorum_coordinator::sop::db::PgTarget;
use quorum_coordinator::sop::lease::LeaseConn;
use quorum_coordinator::sop::store::{Fence, Store, StoreError};
use quorum_coordinator::sop::store_suite::{self, Maker};
use quorum_tests::postgres::{Postgres, QUORUM_PASSWORD};
use quorum_tests::World;

fn target(w: &World, pg: &Postgres, db: &str) -> PgTarget {
    PgTarget {
        conninfo: pg.conninfo(db),
        ca_cert: Some(w.dir.path().join("ca/ca.crt")),
        password: Some(QUORUM_PASSWORD.into()),
    }
}

/// Opens the store in `db` and fences it with a fresh lease of its own.
fn leased_store(t: &PgTarget, holder: &str) -> Result<(Store, i64), Box<dyn std::error::Error>> {
    let store = Store::open_postgres(t)?;
    let mut lease = LeaseConn::connect(t)?;
    let epoch = match lease.acquire(holder, "https://127.0.0.1:1", Duration::from_secs(60))? {
        Some(e) => e,
        None => lease.current()?.ok_or("no lease row")?.epoch,
    };
    store.fence_with(Fence {
        epoch,
        holder: holder.into(),
    });
    Ok((store, epoch))
}

struct Pg<'a> {
    w: &'a World,
    pg: &'a Postgres,
    n: Cell<usize>,
    last: RefCell<Option<PgTarget>>,
}

impl Maker for Pg<'_> {
    fn fresh(&self) -> Result<Store, Box<dyn std::error::Error>> {
        self.n.set(self.n.get() + 1);
        let db = format!("suite{}", self.n.get());
        self.pg.create_db(&db)?;
        *self.last.borrow_mut() = Some(target(self.w, self.pg, &db));
        self.reopen()
    }

    fn reopen(&self) -> Result<Store, Box<dyn std::error::Error>> {
        let t = self.last.borrow().clone().ok_or("no store made yet")?;
        Ok(leased_store(&t, "suite")?.0)
    }
}

#[test]
fn the_store_suite_passes_on_postgresql() -> Result<()> {
    let w = World::new()?;
    let pg = Postgres::start(&w)?;
    let n = store_suite::all(&Pg {
        w: &w,
        pg: &pg,
        n: Cell::new(0),
        last: RefCell::new(None),
    })
    .map_err(anyhow::Error::msg)?;
    assert!(n >= 10, "{n} checks ran");
    // Schema quorum, migrated once, in a logged table set.
    let tables = pg.psql(
        "suite1",
        "SELECT string_agg(c.relname || ':' || c.relpersistence::text, ',' ORDER BY c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'quorum' AND c.relkind = 'r'",
    )?;
    assert_eq!(
        tables,
        "enrolled:p,leaders:p,lease:p,locks:p,migrations:p,revoked:p,runs:p,steps:p,used_tokens:p"
    );
    assert_eq!(
        pg.psql("suite1", "SELECT max(version) FROM quorum.migrations")?,
        "2"
    );
    Ok(())
}

#[test]
fn the_lease_has_one_holder_and_a_takeover_fences_the_old_one() -> Result<()> {
    let w = World::new()?;
    let pg = Postgres::start(&w)?;
    let t = target(&w, &pg, "meta");
    let a_store = Store::open_postgres(&t)?;
    let mut a = LeaseConn::connect(&t)?;
    let mut b = LeaseConn::connect(&t)?;
    let ttl = Duration::from_secs(2);
    let e1 = a
        .acquire("a", "https://127.0.0.1:7001", ttl)?
        .expect("a takes the free lease");
    assert_eq!(
        b.acquire("b", "https://127.0.0.1:7002", ttl)?,
        None,
        "held by a"
    );
    assert!(a.renew("a", e1, ttl)?);
    assert!(!b.renew("b", e1, ttl)?, "b does not hold it");
    let seen = b.current()?.expect("a lease row");
    assert_eq!(
        (seen.holder.as_str(), seen.url.as_str(), seen.epoch),
        ("a", "https://127.0.0.1:7001", e1)
    );
    assert!(seen.live());
    a_store.fence_with(Fence {
        epoch: e1,
        holder: "a".into(),
    });
    a_store.create_run(&store_suite::run("r1", "etcd"))?;
    // a stops renewing; b takes over once the database's clock says the lease lapsed.
    let e2 = quorum_tests::wait_for("the lease to lapse", Duration::from_secs(20), || {
        b.acquire("b", "https://127.0.0.1:7002", Duration::from_secs(60))
            .ok()
            .flatten()
    })?;
    assert_eq!(e2, e1 + 1, "each takeover raises the epoch by one");
    assert!(
        !a.renew("a", e1, ttl)?,
        "a's renewal after the takeover fails"
    );
    // Every write of a's store is refused now, and changes nothing.
    let before = pg.psql("meta", "SELECT state FROM quorum.runs WHERE id = 'r1'")?;
    match a_store.set_run_state("r1", "succeeded", "") {
        Err(StoreError::Fenced { epoch, .. }) => assert_eq!(epoch, e1),
        other => panic!("a fenced store wrote: {other:?}"),
    }
    assert!(matches!(
        a_store.create_run(&store_suite::run("r2", "other")),
        Err(StoreError::Fenced { .. })
    ));
    assert_eq!(
        pg.psql("meta", "SELECT state FROM quorum.runs WHERE id = 'r1'")?,
        before
    );
    assert_eq!(pg.psql("meta", "SELECT count(*) FROM quorum.runs")?, "1");
    // Reads still work (a standby shows runs); b's store writes.
    assert_eq!(a_store.get_run("r1")?.id, "r1");
    let b_store = Store::open_postgres(&t)?;
    b_store.fence_with(Fence {
        epoch: e2,
        holder: "b".into(),
    });
    b_store.set_run_state("r1", "succeeded", "")?;
    // The takeovers are logged.
    assert_eq!(
        pg.psql(
            "meta",
            "SELECT string_agg(epoch || '=' || holder, ',' ORDER BY epoch) FROM quorum.leaders"
        )?,
        format!("{e1}=a,{e2}=b")
    );
    // A clean stop releases the lease: the next one takes it at once.
    b.release("b", e2)?;
    assert_eq!(a.acquire("a", "https://127.0.0.1:7001", ttl)?, Some(e2 + 1));
    Ok(())
}

#[test]
fn the_store_refuses_pgbouncer_plain_text_and_a_wrong_ca() -> Result<()> {
    let w = World::new()?;
    let pg = Postgres::start(&w)?;
    let mut t = target(&w, &pg, "meta");
    t.conninfo = format!(
        "host=127.0.0.1 port={} dbname=meta user=quorum sslmode=disable",
        pg.port
    );
    let e = Store::open_postgres(&t)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("TLS only"), "{e}");
    t.conninfo = "host=127.0.0.1 port=6432 dbname=meta user=quorum".into();
    let e = Store::open_postgres(&t)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("pgbouncer"), "{e}");
    // A CA that did not sign the server's certificate: refused before the password is sent.
    let other = World::new()?;
    let mut t = target(&w, &pg, "meta");
    t.ca_cert = Some(other.dir.path().join("ca/ca.crt"));
    let e = Store::open_postgres(&t)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("PostgreSQL"), "{e}");
    assert_eq!(
        pg.psql(
            "meta",
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'quorum'"
        )?,
        "0",
        "nothing was created"
    );
    Ok(())
}
