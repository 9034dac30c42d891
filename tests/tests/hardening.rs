//! The security probe's low findings (2026-11), each reproduced against the real binaries:
//! an inventory that takes seconds to parse does not stall the coordinator (L1); the server,
//! not only the CLI, demands confirmation for a destructive ad-hoc task, and a fan-out never
//! takes down two members of one etcd cluster (L4); a plan refuses an inventory whose
//! etcd_data is not the data dir the host's agent manages (L5); the Patroni REST password
//! never lands in the coordinator's state dir, which is private (L2); and the newcomer
//! friction around the CA's location, the agent's key and the member certificates (F1-F4),
//! and a task file too big for a message (F12).

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;

use anyhow::{Context, Result};
use quorum_proto::pb;
use quorum_proto::pb::admin_service_client::AdminServiceClient;
use quorum_tests::etcd::{Fleet, HostPaths};
use quorum_tests::{run, wait_for, Proc, World};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

const IPS: [&str; 3] = ["127.0.0.11", "127.0.0.12", "127.0.0.13"];

/// A world with a coordinator, three agents and a created 3-member etcd cluster.
fn etcd_world() -> Result<(World, Fleet)> {
    let mut w = World::new()?;
    w.coordinator_extra =
        "gate_timeout_secs: 20\nstale_after_secs: 10\ntask_timeout_secs: 60\n".into();
    let fleet = Fleet::new(&w, &IPS)?;
    fleet.write_inventory(&w, &[(IPS[0], 1), (IPS[1], 2), (IPS[2], 3)], "")?;
    w.start_coordinator()?;
    fleet.start_agents(&mut w)?;
    let out = w.admin(&["cluster", "create", "--yes"])?;
    anyhow::ensure!(out.code == 0, "create failed: {out:?}");
    Ok((w, fleet))
}

/// The admin service as a raw gRPC client with the world's admin certificate: what a script
/// (or the probe's curl) does without the CLI's own checks.
async fn raw_admin(w: &World) -> Result<AdminServiceClient<Channel>> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read_to_string(
            w.p("ca/ca.crt"),
        )?))
        .identity(Identity::from_pem(
            std::fs::read_to_string(w.p("admin/admin.crt"))?,
            std::fs::read_to_string(w.p("admin/admin.key"))?,
        ));
    let channel = tonic::transport::Endpoint::from_shared(w.url())?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?;
    Ok(AdminServiceClient::new(channel))
}

fn restart_etcd() -> pb::Task {
    pb::Task {
        id: String::new(),
        epoch: 0,
        epoch_holder: String::new(),
        kind: Some(pb::task::Kind::ServiceAction(pb::ServiceAction {
            service: pb::Service::Etcd as i32,
            action: pb::Action::Restart as i32,
            if_changed: vec![],
            force: true,
            with_log: false,
        })),
    }
}

/// A valid inventory of about 4 MB (just under the limit) that takes libyaml seconds: one
/// etcd member and a long list variable.
fn big_inventory() -> String {
    let mut text = String::from(
        "all:\n  children:\n    etcd:\n      hosts:\n        127.0.0.11: { etcd_seq: 1 }\n      vars: { etcd_cluster: etcd }\n  vars:\n    filler:\n",
    );
    let mut n = 0u32;
    while text.len() < 4_000_000 {
        text.push_str(&format!(
            "      - {{ name: item{n}, value: 'some text {n}' }}\n"
        ));
        n += 1;
    }
    text
}

/// Probe L1: two plans against an 8 MB inventory blocked both runtime workers, and
/// `quorum agents` took 8 s. Now the inventory is parsed off the runtime: `quorum agents`
/// answers while the plans are still parsing (checked by the order of completion).
#[test]
fn agents_answer_while_big_inventories_parse() -> Result<()> {
    let mut w = World::new()?;
    std::fs::write(w.dir.path().join("pigsty.yml"), big_inventory())?;
    w.start_coordinator()?;
    // As many parses as the coordinator has runtime workers (one per core): without
    // spawn_blocking they would hold every worker.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
    let mut plans = Vec::new();
    for _ in 0..workers {
        plans.push(w.spawn_admin_output(&["cluster", "create", "--plan"])?);
    }
    // Let the plans reach the coordinator and start parsing (a parse takes seconds).
    std::thread::sleep(Duration::from_millis(800));
    let start = Instant::now();
    let agents = w.admin(&["agents"])?;
    let took = start.elapsed();
    let mut still_parsing = 0;
    for p in plans.iter_mut() {
        if matches!(p.try_wait(), Ok(None)) {
            still_parsing += 1;
        }
    }
    let mut outputs = Vec::new();
    for p in plans {
        outputs.push(p.wait_with_output()?);
    }
    assert_eq!(agents.code, 0, "{agents:?}");
    assert_eq!(
        still_parsing, workers,
        "`quorum agents` ({took:?}) finished after a plan: the parses blocked the coordinator"
    );
    // The plans themselves went through: they were refused for the missing agent, not for
    // the inventory.
    for o in outputs {
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!err.contains("inventory is invalid"), "{err}");
    }
    Ok(())
}

/// Probe L4: a raw `RunTask{restart etcd}` with the admin certificate restarted etcd with no
/// confirmation, and `RunTasks` could stop every member at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_demands_confirmation_and_guards_fan_outs() -> Result<()> {
    let (w, f) = etcd_world()?;
    let pids = |f: &Fleet| -> Vec<Option<i32>> { f.hosts.iter().map(|h| h.etcd_pid()).collect() };
    let before = pids(&f);
    assert!(before.iter().all(Option::is_some), "{before:?}");
    let mut admin = raw_admin(&w).await?;

    let refused = admin
        .run_task(pb::RunTaskRequest {
            agent_id: IPS[0].into(),
            task: Some(restart_etcd()),
            timeout_secs: 30,
            confirmed: false,
        })
        .await
        .err()
        .context("an unconfirmed restart was accepted")?;
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert!(
        refused
            .message()
            .contains("would restart etcd on 127.0.0.11")
            && refused.message().contains("nothing was queued"),
        "{}",
        refused.message()
    );

    // Two members of one cluster at once: refused even when confirmed, naming them.
    let refused = admin
        .run_tasks(pb::RunTasksRequest {
            agent_ids: vec![IPS[1].into(), IPS[2].into()],
            task: Some(restart_etcd()),
            timeout_secs: 30,
            confirmed: true,
        })
        .await
        .err()
        .context("a fan-out restart of two members was accepted")?;
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert!(
        refused.message().contains(
            "2 members of etcd cluster etcd at once (etcd-2 @ 127.0.0.12, etcd-3 @ 127.0.0.13)"
        ) && refused
            .message()
            .contains("quorum service restart etcd --hosts 127.0.0.12,127.0.0.13"),
        "{}",
        refused.message()
    );
    // Unconfirmed fan-outs are refused for the confirmation first.
    let refused = admin
        .run_tasks(pb::RunTasksRequest {
            agent_ids: vec![IPS[1].into()],
            task: Some(restart_etcd()),
            timeout_secs: 30,
            confirmed: false,
        })
        .await
        .err()
        .context("an unconfirmed fan-out restart was accepted")?;
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);

    // Nothing was restarted (a restart takes well under this to show a new pid).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(pids(&f), before, "a refused task restarted etcd");
    assert!(f.hosts.iter().all(|h| h.restart_count() == 0));

    // The CLI's --yes is the confirmation the server reads: the restart runs.
    let out = w.admin(&[
        "task", "--host", IPS[0], "--yes", "service", "etcd", "restart",
    ])?;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(f.host(IPS[0])?.restart_count(), 1);
    Ok(())
}

/// Probe L5: with the inventory's etcd_data for .13 moved to /srv/etcd-elsewhere, `config
/// reload --plan` showed `-data-dir: …/data/etcd` `+data-dir: /srv/etcd-elsewhere` with no
/// warning, while wipes and `has_member` kept using the agent's dir. Now every etcd SOP's
/// plan refuses it (exit 2), naming both paths and the host.
#[test]
fn a_plan_refuses_an_inventory_data_dir_the_agent_does_not_manage() -> Result<()> {
    let mut w = World::new()?;
    let f = Fleet::new(&w, &IPS)?;
    f.write_inventory(&w, &[(IPS[0], 1), (IPS[1], 2), (IPS[2], 3)], "")?;
    w.start_coordinator()?;
    f.start_agents(&mut w)?;
    let inventory = w.dir.path().join("pigsty.yml");
    let text = std::fs::read_to_string(&inventory)?;
    let agent_dir = f.host(IPS[2])?.data().display().to_string();
    let moved = text.replace(&agent_dir, "/srv/etcd-elsewhere");
    anyhow::ensure!(moved != text, "the inventory does not name {agent_dir}");
    std::fs::write(&inventory, moved)?;
    for sop in [
        vec!["cluster", "create", "--plan"],
        vec!["config", "reload", "--plan"],
        vec!["env", "refresh", "--plan"],
        vec!["service", "restart", "etcd", "--plan"],
        vec!["member", "remove", IPS[2], "--plan"],
    ] {
        let out = w.admin(&sop)?;
        assert_eq!(out.code, 2, "{sop:?}: {out:?}");
        assert!(
            out.stderr.contains(&format!(
                "pigsty.yml:7: host 127.0.0.13: etcd_data of etcd-3 is /srv/etcd-elsewhere, but the agent on 127.0.0.13 manages {agent_dir}"
            )) && out.stderr.contains("nothing was planned"),
            "{sop:?}: {}",
            out.stderr
        );
    }
    // The same dir spelled with a trailing slash is the same dir.
    std::fs::write(
        &inventory,
        text.replace(&agent_dir, &format!("{agent_dir}/")),
    )?;
    let out = w.admin(&["cluster", "create", "--plan"])?;
    assert_eq!(out.code, 0, "{out:?}");
    Ok(())
}

const PG_IPS: [&str; 2] = ["127.0.0.21", "127.0.0.22"];
const PATRONI_PASSWORD: &str = "S3cr3t-Patroni-PW";

/// A stand-in for Patroni's REST API on each instance's address: `GET /cluster`,
/// `GET /patroni` and an authenticated `POST /switchover` that moves the leader.
struct FakePatroni {
    leader: Arc<Mutex<String>>,
    /// The Authorization headers switchovers came with.
    auth_seen: Arc<Mutex<Vec<String>>>,
    /// Answer this many switchovers with 503 before doing one.
    fail_switchovers: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl FakePatroni {
    fn start(port: u16) -> Result<Self> {
        let leader = Arc::new(Mutex::new("pg-test-1".to_string()));
        let auth_seen = Arc::new(Mutex::new(Vec::new()));
        let fail_switchovers = Arc::new(AtomicU32::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for (i, ip) in PG_IPS.iter().enumerate() {
            let ip: IpAddr = ip.parse()?;
            let listener = TcpListener::bind(SocketAddr::new(ip, port))?;
            listener.set_nonblocking(true)?;
            let me = format!("pg-test-{}", i + 1);
            let (leader, auth_seen, fail, stop) = (
                leader.clone(),
                auth_seen.clone(),
                fail_switchovers.clone(),
                stop.clone(),
            );
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((conn, _)) => {
                            let _ = serve_one(conn, &me, &leader, &auth_seen, &fail);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            }));
        }
        Ok(Self {
            leader,
            auth_seen,
            fail_switchovers,
            stop,
            threads,
        })
    }
}

impl Drop for FakePatroni {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn serve_one(
    mut conn: TcpStream,
    me: &str,
    leader: &Mutex<String>,
    auth_seen: &Mutex<Vec<String>>,
    fail: &AtomicU32,
) -> Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        let n = conn.read(&mut buf)?;
        anyhow::ensure!(n > 0, "closed early");
        raw.extend_from_slice(&buf[..n]);
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_string();
    let header = |name: &str| {
        head.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
            })
            .unwrap_or_default()
    };
    let len: usize = header("content-length").parse().unwrap_or(0);
    while raw.len() < head_end + len {
        let n = conn.read(&mut buf)?;
        anyhow::ensure!(n > 0, "closed early");
        raw.extend_from_slice(&buf[..n]);
    }
    let body = String::from_utf8_lossy(&raw[head_end..]).to_string();
    let first = head.lines().next().unwrap_or_default().to_string();
    let lead = leader.lock().map(|l| l.clone()).unwrap_or_default();
    let member = |name: &str, ip: &str| {
        let is_leader = name == lead;
        serde_json::json!({
            "name": name,
            "role": if is_leader { "leader" } else { "replica" },
            "state": if is_leader { "running" } else { "streaming" },
            "host": ip,
        })
    };
    let (status, answer) = if first.starts_with("GET /cluster") {
        let v = serde_json::json!({"members": [
            member("pg-test-1", PG_IPS[0]),
            member("pg-test-2", PG_IPS[1]),
        ]});
        (200, v.to_string())
    } else if first.starts_with("GET /patroni") {
        let role = if me == lead { "master" } else { "replica" };
        (
            200,
            serde_json::json!({"state": "running", "role": role}).to_string(),
        )
    } else if first.starts_with("POST /switchover") {
        let auth = header("authorization");
        if let Ok(mut seen) = auth_seen.lock() {
            seen.push(auth.clone());
        }
        let want = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD
                .encode(format!("postgres:{PATRONI_PASSWORD}"))
        );
        if auth != want {
            (401, "no auth".to_string())
        } else if fail
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            (503, "Switchover failed".to_string())
        } else {
            let v: serde_json::Value = serde_json::from_str(&body)?;
            let cand = v["candidate"].as_str().unwrap_or_default().to_string();
            if let Ok(mut l) = leader.lock() {
                *l = cand.clone();
            }
            (200, format!("Successfully switched over to \"{cand}\""))
        }
    } else {
        (404, "not found".to_string())
    };
    write!(
        conn,
        "HTTP/1.0 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
        answer.len()
    )?;
    Ok(())
}

/// Every file under `dir` (recursively), with its mode.
fn files_under(dir: &Path, out: &mut Vec<(std::path::PathBuf, u32, bool)>) -> Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let meta = e.metadata()?;
        let mode = meta.permissions().mode() & 0o777;
        out.push((e.path(), mode, meta.is_dir()));
        if meta.is_dir() {
            files_under(&e.path(), out)?;
        }
    }
    Ok(())
}

fn newest_run(w: &World) -> Result<serde_json::Value> {
    let out = w.admin(&["run", "list", "-o", "json"])?.ok()?;
    let runs: Vec<serde_json::Value> = serde_json::from_str(&out.stdout)?;
    runs.into_iter().next().context("no run")
}

/// Probe L2: after `patroni reload`, the Patroni REST password was in runs.sqlite-wal, and
/// the state dir was 0755 with 0644 files. Now the run keeps no credentials: the switchover
/// reads them from the inventory when it runs, also on a resume (and fails, saying why, when
/// the inventory no longer has them); the state dir is 0700 and its files 0600.
#[test]
fn the_patroni_password_is_read_when_needed_and_never_stored() -> Result<()> {
    let mut w = World::new()?;
    w.coordinator_extra = "gate_timeout_secs: 20\nstale_after_secs: 10\n".into();
    let f = Fleet::new(&w, &IPS[..1])?;
    let pg_ips: Vec<IpAddr> = PG_IPS.iter().map(|s| s.parse()).collect::<Result<_, _>>()?;
    let port = quorum_tests::etcd::free_port_on(&pg_ips)?;
    let patroni = FakePatroni::start(port)?;
    let group = |name: &str| {
        format!(
            "    {name}:\n      hosts:\n        {}: {{ pg_seq: 1, pg_role: primary }}\n        {}: {{ pg_seq: 2, pg_role: replica }}\n      vars:\n        pg_cluster: {name}\n        patroni_port: {port}\n        patroni_password: {PATRONI_PASSWORD}\n",
            PG_IPS[0], PG_IPS[1]
        )
    };
    f.write_inventory_with(&w, &[(IPS[0], 1)], "", &group("pg-test"))?;
    w.start_coordinator()?;
    for ip in PG_IPS {
        let h = HostPaths::new(w.dir.path(), ip.parse()?);
        h.create()?;
        std::fs::create_dir_all(h.root.join("etc/patroni"))?;
        std::fs::write(
            h.root.join("etc/patroni/patroni.yml"),
            "scope: pg-test\netcd3:\n  hosts: '10.0.0.1:2379'\n",
        )?;
        let exec = "service_backend: exec\nexec:\n  patroni:\n    start: [/bin/true]\n    stop: [/bin/true]\n    restart: [/bin/true]\n    reload: [/bin/true]\n    status: [/bin/true]\n";
        w.start_agent(ip, &format!("{}{exec}", h.paths_config()))?;
    }
    for ip in PG_IPS {
        w.wait_agent_state(ip, &["connected", "idle"], Duration::from_secs(30))?;
    }

    // The first switchover fails (Patroni said no): the run halts before the primary.
    patroni.fail_switchovers.store(1, Ordering::SeqCst);
    let out = w.admin(&["patroni", "reload", "--restart-patroni", "--yes"])?;
    assert_eq!(out.code, 1, "{out:?}");
    let run = newest_run(&w)?;
    let id = run["run_id"].as_str().context("run id")?.to_string();
    assert_eq!(run["state"], "failed", "{run}");
    // Resumed after the inventory lost the cluster: the credentials cannot be read.
    let inventory = w.dir.path().join("pigsty.yml");
    let good = std::fs::read_to_string(&inventory)?;
    f.write_inventory_with(&w, &[(IPS[0], 1)], "", &group("pg-renamed"))?;
    let out = w.admin(&["run", "resume", &id])?;
    assert_eq!(out.code, 1, "{out:?}");
    let run = newest_run(&w)?;
    let error = run["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(
            "no longer defines PostgreSQL cluster pg-test (it changed since the run was planned"
        ) && error.contains(&format!("quorum run resume {id}")),
        "{run}"
    );
    // With the inventory back, the resume switches over with the inventory's credentials.
    std::fs::write(&inventory, &good)?;
    let out = w.admin(&["run", "resume", &id])?;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(newest_run(&w)?["state"], "succeeded");
    assert_eq!(
        patroni.leader.lock().map(|l| l.clone()).unwrap_or_default(),
        "pg-test-2"
    );
    let seen = patroni
        .auth_seen
        .lock()
        .map(|s| s.clone())
        .unwrap_or_default();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen.iter().all(|a| a.starts_with("Basic ")), "{seen:?}");

    // Nothing in the state dir holds the password, and it is private.
    let state = w.dir.path().join("state");
    let mut files = Vec::new();
    files_under(&state, &mut files)?;
    assert!(files.iter().any(|(p, _, _)| p.ends_with("runs.sqlite")));
    let state_mode = std::fs::metadata(&state)?.permissions().mode() & 0o777;
    assert_eq!(state_mode, 0o700);
    for (path, mode, is_dir) in &files {
        if *is_dir {
            assert_eq!(*mode, 0o700, "{}", path.display());
            continue;
        }
        assert_eq!(*mode, 0o600, "{}", path.display());
        let bytes = std::fs::read(path)?;
        assert!(
            !bytes
                .windows(PATRONI_PASSWORD.len())
                .any(|x| x == PATRONI_PASSWORD.as_bytes()),
            "{} holds the Patroni password",
            path.display()
        );
    }
    Ok(())
}

/// Probe F1-F4 with a Pigsty-like admin node: the CA key is `keys/pigsty-ca.key` (not beside
/// ca.crt), the coordinator config names it, and member certificates from 0.2.0 sit in
/// `etcd/` beside the CA dir. `quorum pki token` run from another directory finds the CA
/// through the config (it used to say "no CA in files/pki/ca" and suggest a second CA); a
/// missing CA names the absolute path looked at; `quorum serve` loads that exact key file;
/// the member certificates move into the state dir; `enroll` puts the key next to --cert.
#[test]
fn the_ca_is_found_where_the_coordinator_says() -> Result<()> {
    let w = World::new()?;
    let d = w.dir.path();
    std::fs::create_dir_all(d.join("keys"))?;
    std::fs::rename(d.join("ca/ca.key"), d.join("keys/pigsty-ca.key"))?;
    std::fs::create_dir_all(d.join("etcd"))?;
    std::fs::write(d.join("etcd/etcd-1.crt"), "old member cert")?;
    std::fs::write(d.join("etcd/etcd-1.key"), "old member key")?;
    let config = |key: &str| {
        format!(
            "listen: {listen}\ntls:\n  ca_cert: {ca}\n  cert: {crt}\n  key: {ckey}\n  ca_key: {key}\nstate_dir: {state}\ninventory: {inv}\n",
            listen = w.listen,
            ca = w.p("ca/ca.crt"),
            crt = w.p("coordinator/coordinator.crt"),
            ckey = w.p("coordinator/coordinator.key"),
            state = w.p("state"),
            inv = w.p("pigsty.yml"),
        )
    };
    std::fs::write(
        d.join("coordinator.yml"),
        config(&w.p("keys/pigsty-ca.key")),
    )?;
    std::fs::write(d.join("missing.yml"), config(&w.p("keys/nope.key")))?;
    let elsewhere = d.join("elsewhere");
    std::fs::create_dir_all(&elsewhere)?;
    let quorum_in = |args: &[&str]| -> Result<quorum_tests::CliOutput> {
        Ok(std::process::Command::new(quorum_tests::bin("quorum")?)
            .args(args)
            .current_dir(&elsewhere)
            .output()?
            .into())
    };

    // A relative --dir is resolved and shown absolute; the hint warns that init makes a new CA.
    let out = quorum_in(&[
        "pki",
        "token",
        "--host",
        "127.0.0.31",
        "--dir",
        "files/pki/ca",
    ])?;
    assert_eq!(out.code, 2, "{out:?}");
    let looked = elsewhere.join("files/pki/ca");
    assert!(
        out.stderr.contains(&format!(
            "no CA in {} (ca.crt and ca.key)",
            looked.display()
        )) && out.stderr.contains("would create a NEW CA")
            && out.stderr.contains("does not trust"),
        "{}",
        out.stderr
    );
    // A config whose CA key is missing: named, and no advice to make another CA.
    let out = quorum_in(&[
        "pki",
        "token",
        "--host",
        "127.0.0.31",
        "--config",
        &w.p("missing.yml"),
    ])?;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr
            .contains(&format!("{} does not exist", w.p("keys/nope.key")))
            && out.stderr.contains("Do not run `quorum pki init`")
            && !out.stderr.contains("pki init --dir"),
        "{}",
        out.stderr
    );
    // The coordinator's config finds the CA from any directory.
    let token = quorum_in(&[
        "pki",
        "token",
        "--host",
        "127.0.0.31",
        "--config",
        &w.p("coordinator.yml"),
    ])?
    .ok()?
    .stdout
    .trim()
    .to_string();
    assert!(token.starts_with("qt1."), "{token}");
    let out = quorum_in(&["pki", "init", "--config", &w.p("coordinator.yml")])?.ok()?;
    assert!(out.stdout.contains("using the existing CA"), "{out:?}");

    // The coordinator with that config signs with keys/pigsty-ca.key.
    let mut cmd = std::process::Command::new(quorum_tests::bin("quorum")?);
    cmd.args(["serve", "--config", &w.p("coordinator.yml")]);
    let mut serve = Proc::spawn("coordinator", cmd, &d.join("coordinator.log"))?;
    let addr = w.listen;
    wait_for("the coordinator to listen", Duration::from_secs(20), || {
        if !serve.running() {
            return Some(());
        }
        TcpStream::connect_timeout(&addr, Duration::from_millis(100))
            .ok()
            .map(|_| ())
    })?;
    assert!(serve.running(), "{}", serve.log_text());
    let members = d.join("state/pki/etcd");
    assert_eq!(
        std::fs::read_to_string(members.join("etcd-1.key"))?,
        "old member key"
    );
    let mode = |p: &Path| -> Result<u32> { Ok(std::fs::metadata(p)?.permissions().mode() & 0o777) };
    assert_eq!(mode(&members)?, 0o700);
    assert_eq!(mode(&members.join("etcd-1.key"))?, 0o600);

    // Enrollment with --cert only: the key goes next to it.
    let host = d.join("host31");
    let out = run(
        "quorum-agent",
        &[
            "enroll",
            "--coordinator",
            &w.url(),
            "--token",
            &token,
            "--ca-cert",
            &w.p("ca/ca.crt"),
            "--cert",
            &host.join("agent.crt").display().to_string(),
            "--host-ip",
            "127.0.0.31",
        ],
        &[],
    )?;
    assert_eq!(out.code, 0, "{out:?}\n{}", serve.log_text());
    assert_eq!(mode(&host.join("agent.key"))?, 0o600);
    assert!(host.join("agent.crt").exists());
    serve.kill();
    Ok(())
}

/// Probe F12: a task file over the message limit exited 1 ("ran and failed") with tonic's
/// "decoded message length too large". It is bad input: exit 2, naming the file, its size and
/// the limit, and nothing is sent.
#[test]
fn an_oversize_task_file_is_bad_input() -> Result<()> {
    let mut w = World::new()?;
    w.start_coordinator()?;
    let h = HostPaths::new(w.dir.path(), IPS[0].parse()?);
    h.create()?;
    w.start_agent(IPS[0], &h.paths_config())?;
    w.wait_agent_state(IPS[0], &["connected", "idle"], Duration::from_secs(30))?;
    // The write tasks that still carry files are the certificates (etcd.conf and the profile
    // are rendered by the agent from typed fields since M6).
    let big = w.dir.path().join("server.crt.big");
    let size = 1_100_000;
    std::fs::write(&big, "#".repeat(size))?;
    let big = big.display().to_string();
    let out = w.admin(&[
        "task",
        "--host",
        IPS[0],
        "write-etcd-certs",
        "--ca-file",
        &big,
        "--cert-file",
        &big,
        "--key-file",
        &big,
    ])?;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "{big} is {size} bytes, over the 1044480 bytes a task can carry (the coordinator takes messages of at most 1048576 bytes); nothing was sent"
        )),
        "{}",
        out.stderr
    );
    // Three files, each under the limit, over it together.
    let part = w.dir.path().join("part.pem");
    std::fs::write(&part, "x".repeat(400_000))?;
    let p = part.display().to_string();
    let out = w.admin(&[
        "task",
        "--host",
        IPS[0],
        "write-etcd-certs",
        "--ca-file",
        &p,
        "--cert-file",
        &p,
        "--key-file",
        &p,
    ])?;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr
            .contains("over the coordinator's message limit of 1048576 bytes; nothing was sent"),
        "{}",
        out.stderr
    );
    assert!(!h.etcd_conf().exists() && !h.etc_etcd().join("ca.crt").exists());
    Ok(())
}
