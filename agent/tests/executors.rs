//! The agent's executors on real files in temp dirs and a real etcd process (Debian's
//! /usr/bin/etcd, or QUORUM_TEST_ETCD_DIR's) driven by the exec backend; crash safety under SIGKILL; redelivery; bad
//! tasks. Each test owns its dir and kills what it started.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use prost::Message;
use quorum_agent::config::AgentConfig;
use quorum_agent::executor::Executor;
use quorum_proto::pb;
use quorum_proto::pb::task::Kind;

struct Host {
    dir: tempfile::TempDir,
}

impl Host {
    fn new() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("quorum-agent-test-")
            .tempdir()?;
        for d in [
            "etc/etcd",
            "etc/profile.d",
            "etc/patroni",
            "etc/default",
            "data/etcd",
            "var/lib/quorum",
            "run",
            "log",
        ] {
            std::fs::create_dir_all(dir.path().join(d))?;
        }
        Ok(Self { dir })
    }
    fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    fn s(&self, rel: &str) -> String {
        self.p(rel).display().to_string()
    }
    /// Agent config; `exec` lines go under `exec:`.
    fn config(&self, safeguard: bool, exec: &str) -> Result<PathBuf> {
        let text = format!(
            "coordinator: https://127.0.0.1:1\nhost_ip: 127.0.0.1\ntls: {{ ca_cert: {r}/ca.crt }}\n\
             paths:\n  etcd_conf: {r}/etc/etcd/etcd.conf\n  etcd_ca: {r}/etc/etcd/ca.crt\n  etcd_cert: {r}/etc/etcd/server.crt\n  etcd_key: {r}/etc/etcd/server.key\n  etcdctl_profile: {r}/etc/profile.d/etcdctl.sh\n  patroni_conf: {r}/etc/patroni/patroni.yml\n  vip_conf: {r}/etc/default/vip-manager.yml\n  etcd_data: {r}/data/etcd\n  journal_dir: {r}/var/lib/quorum\n\
             allowed_prefixes: [{r}]\nowners:\n  etcd: {{ user: root, group: root }}\n  profile: {{ user: root, group: root }}\n\
             service_backend: exec\nexec_timeout_secs: 30\nsafeguard: {safeguard}\nexec:\n{exec}",
            r = self.dir.path().display()
        );
        let path = self.p("agent.yml");
        std::fs::write(&path, text)?;
        Ok(path)
    }
    fn executor(&self, safeguard: bool, exec: &str) -> Result<Executor> {
        let cfg = AgentConfig::load(&self.config(safeguard, exec)?)?;
        Ok(Executor::new(Arc::new(cfg))?)
    }
    fn marker_exec(&self) -> String {
        // patroni reload and vip-manager restart append to a marker the test reads.
        let m = self.s("log/marker");
        format!(
            "  patroni:\n    reload: [/bin/sh, -c, 'echo patroni-reload >> {m}']\n    restart: [/bin/sh, -c, 'echo patroni-restart >> {m}']\n  vip_manager:\n    restart: [/bin/sh, -c, 'echo vip-restart >> {m}']\n  etcd:\n    restart: [/bin/sh, -c, 'echo etcd-restart >> {m}']\n    status: ['false']\n{NO_START_CHECK}"
        )
    }
    fn marker(&self) -> Vec<String> {
        std::fs::read_to_string(self.p("log/marker"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// The marker's etcd "restart" starts nothing, so the start check (etcd must run and answer
/// health afterwards) is off for it.
const NO_START_CHECK: &str = "start_check_secs: 0\n";

fn task(id: &str, kind: Kind) -> pb::Task {
    pb::Task {
        id: id.into(),
        epoch: 0,
        epoch_holder: String::new(),
        kind: Some(kind),
    }
}

/// A typed etcd.conf for member `name` alone; `peers` more members make it longer.
fn conf_spec(name: &str, peers: usize) -> pb::EtcdConf {
    let mut initial_cluster = vec![pb::EtcdPeer {
        name: name.into(),
        ip: "127.0.0.1".into(),
        peer_port: 2380,
    }];
    for i in 0..peers {
        initial_cluster.push(pb::EtcdPeer {
            name: format!("{}-{i}", "m".repeat(100)),
            ip: format!("10.0.{}.{}", i / 250, i % 250 + 1),
            peer_port: 2380,
        });
    }
    pb::EtcdConf {
        name: name.into(),
        ip: "127.0.0.1".into(),
        client_port: 2379,
        peer_port: 2380,
        data_dir: "/data/etcd".into(),
        cluster_token: "etcd".into(),
        initial_cluster,
        election_timeout_ms: 1000,
        heartbeat_interval_ms: 100,
        quota_backend_bytes: 17_179_869_184,
        cert_dir: "/etc/etcd".into(),
        ..Default::default()
    }
}

fn conf(name: &str) -> Kind {
    Kind::WriteEtcdConf(pb::WriteEtcdConf {
        conf: Some(conf_spec(name, 0)),
    })
}

/// What the agent writes for [`conf`].
fn conf_text(name: &str) -> String {
    quorum_proto::render::format_etcd_conf(&conf_spec(name, 0))
}

fn service(s: pb::Service, a: pb::Action) -> Kind {
    Kind::ServiceAction(pb::ServiceAction {
        service: s as i32,
        action: a as i32,
        if_changed: vec![],
        force: true,
        ..Default::default()
    })
}

#[tokio::test]
async fn writes_are_atomic_idempotent_and_keep_the_previous_version() -> Result<()> {
    let h = Host::new()?;
    let ex = h.executor(false, &h.marker_exec())?;
    let r = ex.execute(&task("t1", conf("etcd-1"))).await;
    assert_eq!(r.outcome, pb::Outcome::Changed, "{r:?}");
    let r = ex.execute(&task("t2", conf("etcd-1"))).await;
    assert_eq!(r.outcome, pb::Outcome::Unchanged, "{r:?}");
    assert!(!h.p("etc/etcd/etcd.conf.bak").exists());
    let r = ex.execute(&task("t3", conf("etcd-2"))).await;
    assert_eq!(r.outcome, pb::Outcome::Changed);
    assert_eq!(
        std::fs::read_to_string(h.p("etc/etcd/etcd.conf"))?,
        conf_text("etcd-2")
    );
    assert_eq!(
        std::fs::read_to_string(h.p("etc/etcd/etcd.conf.bak"))?,
        conf_text("etcd-1")
    );
    let profile = Kind::WriteEtcdctlProfile(pb::WriteEtcdctlProfile {
        profile: Some(pb::EtcdctlProfile {
            endpoints: vec![pb::EtcdEndpoint {
                ip: "127.0.0.1".into(),
                port: 2379,
            }],
            cacert: "/etc/etcd/ca.crt".into(),
            cert: "/etc/etcd/server.crt".into(),
            key: "/etc/etcd/server.key".into(),
            ..Default::default()
        }),
    });
    assert_eq!(
        ex.execute(&task("t4", profile)).await.outcome,
        pb::Outcome::Changed
    );
    // A restart that follows unchanged writes is skipped; after a changed one it runs.
    let restart_if = |ids: &[&str]| {
        Kind::ServiceAction(pb::ServiceAction {
            service: pb::Service::Etcd as i32,
            action: pb::Action::Restart as i32,
            if_changed: ids.iter().map(|s| s.to_string()).collect(),
            force: false,
            ..Default::default()
        })
    };
    let r = ex.execute(&task("t5", restart_if(&["t2"]))).await;
    assert_eq!(r.outcome, pb::Outcome::Skipped, "{r:?}");
    assert!(h.marker().is_empty());
    let r = ex.execute(&task("t6", restart_if(&["t2", "t3"]))).await;
    assert_eq!(r.outcome, pb::Outcome::Changed, "{r:?}");
    assert_eq!(h.marker(), vec!["etcd-restart"]);
    // Facts: sha256 and, for non-secret files, the content.
    let facts = ex.facts().await;
    let f = &facts.files["etcd_conf"];
    assert!(f.exists && f.sha256.len() == 64 && f.content == conf_text("etcd-2"));
    assert!(!facts.files["etcd_key"].exists);
    assert!(!facts.data_dir.as_ref().context("data dir fact")?.has_member);
    Ok(())
}

#[tokio::test]
async fn certs_are_checked_before_anything_is_touched() -> Result<()> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
    let h = Host::new()?;
    // The agent's own CA (its tls.ca_cert) and a member certificate for this host from it.
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate()?;
    let ca = ca_params.self_signed(&ca_key)?.pem();
    std::fs::write(h.p("ca.crt"), &ca)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let mut leaf = CertificateParams::new(Vec::<String>::new())?;
    leaf.subject_alt_names = vec![SanType::IpAddress([127, 0, 0, 1].into())];
    let key = KeyPair::generate()?;
    let cert = leaf.signed_by(&key, &issuer)?.pem();
    let key = key.serialize_pem();
    let ex = h.executor(false, "  {}\n")?;
    let bad = Kind::WriteEtcdCerts(pb::WriteEtcdCerts {
        ca_crt: ca.clone(),
        server_crt: cert.clone(),
        server_key: "-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n".into(),
    });
    let r = ex.execute(&task("c1", bad)).await;
    assert_eq!(r.outcome, pb::Outcome::Refused);
    assert!(
        r.output.contains("server_key is not a PEM private key"),
        "{}",
        r.output
    );
    let other_key = KeyPair::generate()?.serialize_pem();
    let mismatched = Kind::WriteEtcdCerts(pb::WriteEtcdCerts {
        ca_crt: ca.clone(),
        server_crt: cert.clone(),
        server_key: other_key,
    });
    let r = ex.execute(&task("c1b", mismatched)).await;
    assert_eq!(r.outcome, pb::Outcome::Refused);
    assert!(r.output.contains("is not the private key"), "{}", r.output);
    assert!(
        !h.p("etc/etcd/ca.crt").exists(),
        "a refused cert task touched ca.crt"
    );
    let good = Kind::WriteEtcdCerts(pb::WriteEtcdCerts {
        ca_crt: ca,
        server_crt: cert,
        server_key: key,
    });
    // A link at server.key refuses the whole task before ca.crt or server.crt is written.
    std::os::unix::fs::symlink(h.p("elsewhere.key"), h.p("etc/etcd/server.key"))?;
    let r = ex.execute(&task("c1c", good.clone())).await;
    assert_eq!(r.outcome, pb::Outcome::Refused, "{r:?}");
    assert!(!h.p("etc/etcd/ca.crt").exists() && !h.p("etc/etcd/server.crt").exists());
    std::fs::remove_file(h.p("etc/etcd/server.key"))?;
    assert_eq!(
        ex.execute(&task("c2", good.clone())).await.outcome,
        pb::Outcome::Changed
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(h.p("etc/etcd/server.key"))?
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(h.p("etc/etcd/server.crt"))?
            .permissions()
            .mode()
            & 0o777,
        0o644
    );
    assert_eq!(
        ex.execute(&task("c3", good)).await.outcome,
        pb::Outcome::Unchanged
    );
    Ok(())
}

#[tokio::test]
async fn patroni_and_vip_edits_change_only_the_endpoints() -> Result<()> {
    let h = Host::new()?;
    let ex = h.executor(false, &h.marker_exec())?;
    let patroni = "scope: pg-meta\n# keep me\netcd3:\n  hosts: '10.10.10.10:2379'\n  protocol: https\nrestapi:\n  listen: 0.0.0.0:8008\n";
    std::fs::write(h.p("etc/patroni/patroni.yml"), patroni)?;
    let hosts = vec![
        "10.10.10.10:2379".to_string(),
        "10.10.10.11:2379".to_string(),
    ];
    let r = ex
        .execute(&task(
            "p1",
            Kind::SetPatroniDcsHosts(pb::SetPatroniDcsHosts {
                hosts: hosts.clone(),
                restart: false,
            }),
        ))
        .await;
    assert_eq!(r.outcome, pb::Outcome::Changed, "{r:?}");
    assert!(
        r.output.contains("only when it restarts"),
        "reload must say it did not apply: {}",
        r.output
    );
    let after = std::fs::read_to_string(h.p("etc/patroni/patroni.yml"))?;
    assert_eq!(
        after,
        patroni.replace("'10.10.10.10:2379'", "'10.10.10.10:2379,10.10.10.11:2379'")
    );
    assert_eq!(h.marker(), vec!["patroni-reload"]);
    let r = ex
        .execute(&task(
            "p2",
            Kind::SetPatroniDcsHosts(pb::SetPatroniDcsHosts {
                hosts,
                restart: false,
            }),
        ))
        .await;
    assert_eq!(r.outcome, pb::Outcome::Unchanged);
    // An unparseable file: refused, nothing written.
    std::fs::write(h.p("etc/patroni/patroni.yml"), "etcd3: [unclosed\n")?;
    let r = ex
        .execute(&task(
            "p3",
            Kind::SetPatroniDcsHosts(pb::SetPatroniDcsHosts {
                hosts: vec!["a:1".into()],
                restart: false,
            }),
        ))
        .await;
    assert_eq!(r.outcome, pb::Outcome::Refused, "{r:?}");
    assert_eq!(
        std::fs::read_to_string(h.p("etc/patroni/patroni.yml"))?,
        "etcd3: [unclosed\n"
    );
    // A file that is not UTF-8: refused, and the message says so (not "it must exist").
    let binary = b"etcd3:\n  hosts: '\xff:2379'\n";
    std::fs::write(h.p("etc/patroni/patroni.yml"), binary)?;
    let r = ex
        .execute(&task(
            "p4",
            Kind::SetPatroniDcsHosts(pb::SetPatroniDcsHosts {
                hosts: vec!["a:1".into()],
                restart: false,
            }),
        ))
        .await;
    assert_eq!(r.outcome, pb::Outcome::Refused, "{r:?}");
    assert!(r.output.contains("is not UTF-8 text"), "{}", r.output);
    assert!(!r.output.contains("must exist"), "{}", r.output);
    assert_eq!(std::fs::read(h.p("etc/patroni/patroni.yml"))?, binary);
    let vip =
        "ip: 10.10.10.2\ndcs-type: etcd\ndcs-endpoints:\n  - https://10.10.10.10:2379\n# end\n";
    std::fs::write(h.p("etc/default/vip-manager.yml"), vip)?;
    let r = ex
        .execute(&task(
            "v1",
            Kind::SetVipEndpoints(pb::SetVipEndpoints {
                endpoints: vec!["https://10.10.10.11:2379".into()],
                defer_restart: false,
            }),
        ))
        .await;
    assert_eq!(r.outcome, pb::Outcome::Changed, "{r:?}");
    assert_eq!(
        std::fs::read_to_string(h.p("etc/default/vip-manager.yml"))?,
        vip.replace("10.10.10.10", "10.10.10.11")
    );
    assert_eq!(h.marker(), vec!["patroni-reload", "vip-restart"]);
    Ok(())
}

#[tokio::test]
async fn bad_tasks_are_refused_and_touch_nothing() -> Result<()> {
    let h = Host::new()?;
    let ex = h.executor(false, &h.marker_exec())?;
    let r = ex
        .execute(&pb::Task {
            id: "b1".into(),
            epoch: 0,
            epoch_holder: String::new(),
            kind: None,
        })
        .await;
    assert_eq!(r.outcome, pb::Outcome::Refused);
    assert!(r.output.contains("of a kind this agent"), "{}", r.output);
    let r = ex
        .execute(&task(
            "b2",
            Kind::ServiceAction(pb::ServiceAction {
                service: 0,
                action: 3,
                if_changed: vec![],
                force: true,
                ..Default::default()
            }),
        ))
        .await;
    assert_eq!(r.outcome, pb::Outcome::Refused);
    let r = ex
        .execute(&task(
            "b3",
            Kind::ServiceAction(pb::ServiceAction {
                service: 1,
                action: 42,
                if_changed: vec![],
                force: true,
                ..Default::default()
            }),
        ))
        .await;
    assert_eq!(r.outcome, pb::Outcome::Refused);
    // A field that would open a new key in etcd.conf is refused before anything is written.
    let r = ex
        .execute(&task("b4", conf("etcd-1\ndata-dir: /etc")))
        .await;
    assert_eq!(r.outcome, pb::Outcome::Refused);
    assert!(r.output.contains("conf.name"), "{}", r.output);
    let text_task = Kind::WriteEtcdConf(pb::WriteEtcdConf { conf: None });
    let r = ex.execute(&task("b4b", text_task)).await;
    assert_eq!(r.outcome, pb::Outcome::Refused);
    assert!(r.output.contains("carries no fields"), "{}", r.output);
    // A 0.2 coordinator's free-text etcd.conf (field 10 of Task, its content in field 1)
    // decodes to a task of no known kind: refused, nothing written.
    let text = b"echo QUORUM-PROBE $(id -u)\n";
    let mut inner = vec![0x0a, text.len() as u8];
    inner.extend_from_slice(text);
    let mut old = vec![0x0a, 3];
    old.extend_from_slice(b"old");
    old.extend_from_slice(&[0x52, inner.len() as u8]);
    old.extend_from_slice(&inner);
    let r = ex.execute(&pb::Task::decode(old.as_slice())?).await;
    assert_eq!(r.outcome, pb::Outcome::Refused, "{r:?}");
    assert!(!h.p("etc/etcd/etcd.conf").exists());
    let r = ex.execute(&task("", conf("x"))).await;
    assert_eq!(r.outcome, pb::Outcome::Refused);
    let r = ex
        .execute(&task(
            "b5",
            Kind::SetPatroniDcsHosts(pb::SetPatroniDcsHosts {
                hosts: vec!["no-port".into()],
                restart: false,
            }),
        ))
        .await;
    assert_eq!(r.outcome, pb::Outcome::Refused);
    assert!(!h.p("etc/etcd/etcd.conf").exists());
    assert!(h.marker().is_empty());
    // A malformed payload never reaches an executor: it does not decode.
    assert!(pb::Task::decode(&b"\x0a\xff\xff\xff"[..]).is_err());
    Ok(())
}

#[tokio::test]
async fn facts_report_each_managed_service_and_the_vip() -> Result<()> {
    let h = Host::new()?;
    let exec = "  etcd:\n    status: ['true']\n  patroni:\n    status: ['false']\n";
    let ex = h.executor(false, exec)?;
    let f = ex.facts().await;
    let state = |k: &str| f.services.get(k).copied();
    assert_eq!(state("etcd"), Some(pb::ServiceState::Active as i32));
    assert_eq!(state("patroni"), Some(pb::ServiceState::Inactive as i32));
    assert_eq!(
        state("vip-manager"),
        None,
        "vip-manager is not managed here"
    );
    assert!(f.vip.is_none(), "no vip-manager config, no VIP fact");
    // 127.0.0.1 is on `lo` on every host; a VIP there reads as present, one elsewhere not.
    std::fs::write(
        h.p("etc/default/vip-manager.yml"),
        "ip: 127.0.0.1\nnetmask: 8\ninterface: lo\ndcs-endpoints: [https://127.0.0.1:2379]\n",
    )?;
    let vip = ex.facts().await.vip.context("a VIP fact")?;
    assert!(vip.present && vip.error.is_empty(), "{vip:?}");
    std::fs::write(
        h.p("etc/default/vip-manager.yml"),
        "ip: 127.0.0.1\nnetmask: 8\ninterface: no-such-if\ndcs-endpoints: [https://127.0.0.1:2379]\n",
    )?;
    let vip = ex.facts().await.vip.context("a VIP fact")?;
    assert!(!vip.present, "{vip:?}");
    std::fs::write(h.p("etc/default/vip-manager.yml"), "ip: [")?;
    let vip = ex.facts().await.vip.context("a VIP fact")?;
    assert!(vip.error.contains("does not parse"), "{vip:?}");
    Ok(())
}

#[tokio::test]
async fn read_only_tasks_leave_the_journal_alone() -> Result<()> {
    let h = Host::new()?;
    let ex = h.executor(false, &h.marker_exec())?;
    let journal = h.p("var/lib/quorum/journal.jsonl");
    let lines = || {
        std::fs::read_to_string(&journal)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    let facts = task("f1", Kind::CollectFacts(pb::CollectFacts {}));
    assert_eq!(ex.execute(&facts).await.outcome, pb::Outcome::Ok);
    let status = task("s1", service(pb::Service::Etcd, pb::Action::Status));
    ex.execute(&status).await;
    assert_eq!(lines(), 0, "a read-only task wrote to the journal");
    let write = task("w1", conf("etcd-1"));
    assert_eq!(ex.execute(&write).await.outcome, pb::Outcome::Changed);
    assert_eq!(lines(), 2, "a write is journaled at start and at finish");
    Ok(())
}

#[tokio::test]
async fn a_redelivered_task_runs_once() -> Result<()> {
    let h = Host::new()?;
    let ex = h.executor(false, &h.marker_exec())?;
    let t = task("r1", service(pb::Service::Etcd, pb::Action::Restart));
    assert_eq!(ex.execute(&t).await.outcome, pb::Outcome::Changed);
    let again = ex.execute(&t).await;
    assert_eq!(again.outcome, pb::Outcome::Changed);
    assert!(
        again.output.contains("answered from the journal"),
        "{}",
        again.output
    );
    // Also across an agent restart (a new executor on the same journal).
    drop(ex);
    let ex = h.executor(false, &h.marker_exec())?;
    assert_eq!(ex.execute(&t).await.outcome, pb::Outcome::Changed);
    assert_eq!(
        h.marker(),
        vec!["etcd-restart"],
        "the restart ran more than once"
    );
    Ok(())
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A single-member etcd for the exec backend: config, start-stop-daemon commands.
fn etcd_exec(h: &Host) -> Result<String> {
    let (c, p) = (free_port()?, free_port()?);
    let conf = format!(
        "name: solo\ndata-dir: {data}\nlisten-client-urls: http://127.0.0.1:{c}\nadvertise-client-urls: http://127.0.0.1:{c}\nlisten-peer-urls: http://127.0.0.1:{p}\ninitial-advertise-peer-urls: http://127.0.0.1:{p}\ninitial-cluster: solo=http://127.0.0.1:{p}\n",
        data = h.s("data/etcd")
    );
    std::fs::write(h.p("etc/etcd/etcd.conf"), conf)?;
    let (pid, log, cf, m) = (
        h.s("run/etcd.pid"),
        h.s("log/etcd.log"),
        h.s("etc/etcd/etcd.conf"),
        h.s("log/marker"),
    );
    // The etcd under test: QUORUM_TEST_ETCD_DIR (`QUORUM_ETCD=3.5 scripts/test`), else Debian's.
    let etcd = std::env::var("QUORUM_TEST_ETCD_DIR")
        .ok()
        .filter(|d| !d.is_empty())
        .map_or_else(|| "/usr/bin/etcd".to_string(), |d| format!("{d}/etcd"));
    Ok(format!(
        "  etcd:\n    start: [start-stop-daemon, --start, --background, --oknodo, --make-pidfile, --pidfile, {pid}, --output, {log}, --exec, {etcd}, --, --config-file, {cf}]\n    stop: [start-stop-daemon, --stop, --oknodo, --pidfile, {pid}, --retry, TERM/30/KILL/5, --remove-pidfile]\n    restart: [/bin/sh, -c, 'echo etcd-restart >> {m} && start-stop-daemon --stop --oknodo --pidfile {pid} --retry TERM/30/KILL/5 --remove-pidfile && start-stop-daemon --start --background --make-pidfile --pidfile {pid} --output {log} --exec {etcd} -- --config-file {cf}']\n    status: [/bin/sh, -c, 'p=$(cat {pid} 2>/dev/null) && [ -n \"$p\" ] && grep -q \"^State:[[:space:]]*[RSDI]\" /proc/$p/status']\n    log: {log}\n"
    ))
}

fn etcd_pid(h: &Host) -> Option<i32> {
    std::fs::read_to_string(h.p("run/etcd.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

struct KillOnDrop(PathBuf);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = std::fs::read_to_string(&self.0)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

async fn wait_member(h: &Host) -> Result<()> {
    let end = Instant::now() + Duration::from_secs(20);
    while !h.p("data/etcd/member/wal").exists() {
        anyhow::ensure!(Instant::now() < end, "etcd never wrote its data dir");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

#[tokio::test]
async fn the_exec_backend_drives_real_etcd_and_wipes_follow_the_rules() -> Result<()> {
    let h = Host::new()?;
    let exec = etcd_exec(&h)?;
    let _guard = KillOnDrop(h.p("run/etcd.pid"));
    let ex = h.executor(false, &exec)?;
    let status = |id: &str| task(id, service(pb::Service::Etcd, pb::Action::Status));
    assert!(ex.execute(&status("s0")).await.output.ends_with("inactive"));
    assert_eq!(
        ex.execute(&task("s1", service(pb::Service::Etcd, pb::Action::Start)))
            .await
            .outcome,
        pb::Outcome::Changed
    );
    wait_member(&h).await?;
    assert!(ex.execute(&status("s2")).await.output.ends_with("active"));
    // Starting a running etcd changes nothing, and says so (as systemd would).
    let r = ex
        .execute(&task("s2b", service(pb::Service::Etcd, pb::Action::Start)))
        .await;
    assert_eq!(r.outcome, pb::Outcome::Unchanged, "{r:?}");
    let first = etcd_pid(&h).context("pid after start")?;
    let r = ex
        .execute(&task("s3", service(pb::Service::Etcd, pb::Action::Restart)))
        .await;
    assert_eq!(r.outcome, pb::Outcome::Changed, "{r:?}");
    let second = etcd_pid(&h).context("pid after restart")?;
    assert_ne!(first, second, "restart kept the same process");
    // A plain wipe of a running member is refused.
    let r = ex
        .execute(&task(
            "w1",
            Kind::WipeEtcdData(pb::WipeEtcdData {
                purge: false,
                ..Default::default()
            }),
        ))
        .await;
    assert_eq!(r.outcome, pb::Outcome::Refused);
    assert!(r.output.contains("etcd is active"), "{}", r.output);
    assert!(h.p("data/etcd/member").exists());
    // Under the local safeguard even a purge is refused.
    let guarded = h.executor(true, &exec)?;
    let r = guarded
        .execute(&task(
            "w2",
            Kind::WipeEtcdData(pb::WipeEtcdData {
                purge: true,
                ..Default::default()
            }),
        ))
        .await;
    assert_eq!(r.outcome, pb::Outcome::Refused);
    assert!(r.output.contains("local safeguard"), "{}", r.output);
    assert!(h.p("data/etcd/member").exists());
    // Stop, then a wipe empties the dir but keeps it.
    assert_eq!(
        ex.execute(&task("s4", service(pb::Service::Etcd, pb::Action::Stop)))
            .await
            .outcome,
        pb::Outcome::Changed
    );
    assert!(ex.execute(&status("s5")).await.output.ends_with("inactive"));
    let r = ex
        .execute(&task("s5b", service(pb::Service::Etcd, pb::Action::Stop)))
        .await;
    assert_eq!(r.outcome, pb::Outcome::Unchanged, "{r:?}");
    assert!(r.output.contains("already inactive"), "{}", r.output);
    let r = ex
        .execute(&task(
            "w3",
            Kind::WipeEtcdData(pb::WipeEtcdData {
                purge: false,
                ..Default::default()
            }),
        ))
        .await;
    assert_eq!(r.outcome, pb::Outcome::Changed, "{r:?}");
    assert!(h.p("data/etcd").exists());
    assert_eq!(std::fs::read_dir(h.p("data/etcd"))?.count(), 0);
    // A purge of a running member stops it, then wipes.
    ex.execute(&task("s6", service(pb::Service::Etcd, pb::Action::Start)))
        .await;
    wait_member(&h).await?;
    let r = ex
        .execute(&task(
            "w4",
            Kind::WipeEtcdData(pb::WipeEtcdData {
                purge: true,
                ..Default::default()
            }),
        ))
        .await;
    assert_eq!(r.outcome, pb::Outcome::Changed, "{r:?}");
    assert!(ex.execute(&status("s7")).await.output.ends_with("inactive"));
    assert_eq!(std::fs::read_dir(h.p("data/etcd"))?.count(), 0);
    Ok(())
}

#[test]
fn a_write_killed_at_any_moment_leaves_old_or_new_never_a_mix() -> Result<()> {
    let h = Host::new()?;
    let cfg = h.config(false, "  {}\n")?;
    // The largest files a spec allows (127 peers with long names), so the kills can land
    // inside the write.
    let old = "old\n".repeat(500_000);
    let new_spec = conf_spec("etcd-1", 127);
    let new = quorum_proto::render::format_etcd_conf(&new_spec);
    std::fs::write(h.p("etc/etcd/etcd.conf"), &old)?;
    let bin = env!("CARGO_BIN_EXE_quorum-agent");
    let mut seen_new = 0;
    for i in 0..30 {
        // Every other round puts the old content back first, so each write changes the file.
        if i % 2 == 1 {
            std::fs::write(h.p("etc/etcd/etcd.conf"), &old)?;
        }
        let write = Kind::WriteEtcdConf(pb::WriteEtcdConf {
            conf: Some(new_spec.clone()),
        });
        let t = task(&format!("crash-{i}"), write);
        let file = h.p(&format!("task-{i}.pb"));
        std::fs::write(&file, t.encode_to_vec())?;
        let mut child = Command::new(bin)
            .args(["run-task", "--config"])
            .arg(&cfg)
            .arg("--task")
            .arg(&file)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        let delay = (i as u64 * 7919) % 40;
        std::thread::sleep(Duration::from_millis(delay));
        let _ = child.kill();
        let _ = child.wait();
        let now = std::fs::read_to_string(h.p("etc/etcd/etcd.conf"))?;
        assert!(
            now == old || now == new,
            "round {i}: the file is a mix ({} bytes)",
            now.len()
        );
        if now == new {
            seen_new += 1;
        }
    }
    // The kills landed at different points: some writes finished, some did not.
    assert!(
        seen_new > 0,
        "no write ever finished; the test proves nothing"
    );
    Ok(())
}

#[test]
fn the_documented_default_config_parses() -> Result<()> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/agent.yml");
    let cfg = AgentConfig::load(&path)?;
    assert_eq!(cfg.paths.etcd_conf, PathBuf::from("/etc/etcd/etcd.conf"));
    Ok(())
}

fn status_with_log() -> Kind {
    Kind::ServiceAction(pb::ServiceAction {
        service: pb::Service::Etcd as i32,
        action: pb::Action::Status as i32,
        with_log: true,
        ..Default::default()
    })
}

#[tokio::test]
async fn a_start_is_done_only_once_etcd_runs_and_answers_health() -> Result<()> {
    let h = Host::new()?;
    let exec = etcd_exec(&h)?;
    let _guard = KillOnDrop(h.p("run/etcd.pid"));
    let ex = h.executor(false, &exec)?;
    let start = |id: &str| task(id, service(pb::Service::Etcd, pb::Action::Start));
    let r = ex.execute(&start("s1")).await;
    assert_eq!(r.outcome, pb::Outcome::Changed, "{r:?}");
    assert!(r.output.contains("/health answers healthy"), "{}", r.output);
    let stop = task("s2", service(pb::Service::Etcd, pb::Action::Stop));
    assert_eq!(ex.execute(&stop).await.outcome, pb::Outcome::Changed);
    let wipe = task(
        "w1",
        Kind::WipeEtcdData(pb::WipeEtcdData {
            purge: false,
            ..Default::default()
        }),
    );
    assert_eq!(ex.execute(&wipe).await.outcome, pb::Outcome::Changed);
    // F7: a new member whose etcd.conf makes etcd exit at once (its own name is not in
    // initial-cluster). start-stop-daemon --background returns 0 all the same; the task must
    // fail, with etcd's own words, instead of reporting a start that did not happen.
    let conf = std::fs::read_to_string(h.p("etc/etcd/etcd.conf"))?;
    std::fs::write(
        h.p("etc/etcd/etcd.conf"),
        conf.replace("initial-cluster: solo=", "initial-cluster: other="),
    )?;
    let r = ex.execute(&start("s3")).await;
    assert_eq!(r.outcome, pb::Outcome::Failed, "{r:?}");
    assert!(r.output.contains("it exited"), "{}", r.output);
    assert!(
        // 3.4 logs text, 3.5 JSON (with the quotes escaped).
        r.output
            .contains("couldn't find local name \"solo\" in the initial cluster configuration")
            || r.output.contains(
                "couldn't find local name \\\"solo\\\" in the initial cluster configuration"
            ),
        "the report lacks etcd's own error:\n{}",
        r.output
    );
    // The same tail answers a status asked with its log (what a gate failure shows).
    let r = ex.execute(&task("s4", status_with_log())).await;
    assert_eq!(r.outcome, pb::Outcome::Ok, "{r:?}");
    assert!(r.output.starts_with("etcd inactive\n"), "{}", r.output);
    assert!(
        r.output.contains("couldn't find local name"),
        "{}",
        r.output
    );
    Ok(())
}

#[tokio::test]
async fn an_etcd_that_never_answers_fails_its_start_within_the_check() -> Result<()> {
    let h = Host::new()?;
    let exec = etcd_exec(&h)?;
    let _guard = KillOnDrop(h.p("run/etcd.pid"));
    // etcd runs but its health endpoint is elsewhere: a client URL on this host that
    // nothing listens on (as when etcd waits for peers it never reaches).
    let conf = std::fs::read_to_string(h.p("etc/etcd/etcd.conf"))?;
    let dead = free_port()?;
    std::fs::write(
        h.p("etc/etcd/etcd.conf"),
        conf.replace(
            "advertise-client-urls: http://127.0.0.1:",
            &format!("advertise-client-urls: http://127.0.0.1:{dead},http://127.0.0.1:"),
        ),
    )?;
    let ex = h.executor(false, &format!("{exec}start_check_secs: 2\n"))?;
    let r = ex
        .execute(&task("s1", service(pb::Service::Etcd, pb::Action::Start)))
        .await;
    assert_eq!(r.outcome, pb::Outcome::Failed, "{r:?}");
    assert!(
        r.output.contains(&format!(
            "http://127.0.0.1:{dead}/health: it does not answer (connection refused)"
        )),
        "{}",
        r.output
    );
    assert!(r.output.contains("within 2s"), "{}", r.output);
    assert!(
        r.output.contains("the last lines of etcd's log"),
        "{}",
        r.output
    );
    Ok(())
}

async fn etcdctl_member_id(h: &Host) -> Result<String> {
    let conf = std::fs::read_to_string(h.p("etc/etcd/etcd.conf"))?;
    let url = conf
        .lines()
        .find_map(|l| l.strip_prefix("advertise-client-urls: "))
        .context("client URL")?
        .to_string();
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &url, "member", "list", "-w", "json"])
        .output()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| String::from_utf8_lossy(&out.stderr).into_owned())?;
    let id = v["members"][0]["ID"].as_u64().context("member ID")?;
    let cluster = v["header"]["cluster_id"].as_u64().context("cluster_id")?;
    Ok(format!("{id:x}/{cluster:x}"))
}

#[tokio::test]
async fn a_wipe_meant_for_another_member_is_refused_and_the_data_survives() -> Result<()> {
    let h = Host::new()?;
    let exec = etcd_exec(&h)?;
    let _guard = KillOnDrop(h.p("run/etcd.pid"));
    let ex = h.executor(false, &exec)?;
    let r = ex
        .execute(&task("s1", service(pb::Service::Etcd, pb::Action::Start)))
        .await;
    assert_eq!(r.outcome, pb::Outcome::Changed, "{r:?}");
    let ids = etcdctl_member_id(&h).await?;
    let (member, cluster) = ids.split_once('/').context("ids")?;
    // Facts carry what etcd's own WAL says, as etcdctl shows it.
    let f = ex.facts().await;
    let d = f.data_dir.context("data dir fact")?;
    assert_eq!(
        (d.member_id.as_str(), d.cluster_id.as_str()),
        (member, cluster)
    );
    assert!(d.identity_error.is_empty(), "{d:?}");
    // A purge naming another member is refused before etcd is even stopped.
    let wipe = |id: &str, member: &str, cluster: &str, purge: bool| {
        task(
            id,
            Kind::WipeEtcdData(pb::WipeEtcdData {
                purge,
                member_id: member.into(),
                cluster_id: cluster.into(),
            }),
        )
    };
    let r = ex
        .execute(&wipe("w1", "8e9e05c52164694d", cluster, true))
        .await;
    assert_eq!(r.outcome, pb::Outcome::Refused, "{r:?}");
    assert!(
        r.output.contains(&format!(
            "holds member {member} of cluster {cluster}, not the expected member 8e9e05c52164694d of cluster {cluster}; nothing was wiped"
        )),
        "{}",
        r.output
    );
    assert!(etcd_pid(&h).is_some_and(|p| std::path::Path::new(&format!("/proc/{p}")).exists()));
    assert!(h.p("data/etcd/member/wal").exists());
    let stop = task("s2", service(pb::Service::Etcd, pb::Action::Stop));
    assert_eq!(ex.execute(&stop).await.outcome, pb::Outcome::Changed);
    // The right member of another cluster is refused too; a bad id is refused.
    let r = ex.execute(&wipe("w2", member, "1", false)).await;
    assert_eq!(r.outcome, pb::Outcome::Refused, "{r:?}");
    let r = ex.execute(&wipe("w3", "etcd-2", "", false)).await;
    assert_eq!(r.outcome, pb::Outcome::Refused, "{r:?}");
    assert!(r.output.contains("not a hex id"), "{}", r.output);
    assert!(
        h.p("data/etcd/member/wal").exists(),
        "a refused wipe removed data"
    );
    // A WAL that cannot be read is not taken for the expected member.
    let wal_dir = h.p("data/etcd/member/wal");
    let first = std::fs::read_dir(&wal_dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .min()
        .context("a WAL file")?;
    let saved = std::fs::read(&first)?;
    std::fs::write(&first, b"garbage")?;
    let r = ex.execute(&wipe("w4", member, cluster, false)).await;
    assert_eq!(r.outcome, pb::Outcome::Refused, "{r:?}");
    assert!(r.output.contains("cannot be read"), "{}", r.output);
    std::fs::write(&first, saved)?;
    // The member it is meant for is wiped, and the report says whose data it was.
    let r = ex.execute(&wipe("w5", member, cluster, false)).await;
    assert_eq!(r.outcome, pb::Outcome::Changed, "{r:?}");
    assert!(
        r.output.contains(&format!(
            "it held member {member} of cluster {cluster}, as expected"
        )),
        "{}",
        r.output
    );
    assert_eq!(std::fs::read_dir(h.p("data/etcd"))?.count(), 0);
    Ok(())
}

/// Pigsty v4's root password file: the password alone, 0640, never echoed; a profile whose
/// root-password block would read another file than this agent's own is refused; a file
/// that already says what the profile says, in Pigsty's words, is left as it is.
#[tokio::test]
async fn the_root_password_file_and_the_profile_that_reads_it() -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let h = Host::new()?;
    let ex = h.executor(false, &h.marker_exec())?;
    let pass = |id: &str, p: &str| {
        task(
            id,
            Kind::WriteEtcdPass(pb::WriteEtcdPass { password: p.into() }),
        )
    };
    let r = ex.execute(&pass("p1", "R00t.Secret")).await;
    assert_eq!(r.outcome, pb::Outcome::Changed, "{r:?}");
    assert!(!r.output.contains("R00t.Secret"), "{}", r.output);
    let file = h.p("etc/etcd/etcd.pass");
    assert_eq!(std::fs::read_to_string(&file)?, "R00t.Secret");
    assert_eq!(
        std::fs::metadata(&file)?.permissions().mode() & 0o777,
        0o640
    );
    assert_eq!(
        ex.execute(&pass("p2", "R00t.Secret")).await.outcome,
        pb::Outcome::Unchanged
    );
    for (i, bad) in ["", "two\nlines"].into_iter().enumerate() {
        let r = ex.execute(&pass(&format!("bad{i}"), bad)).await;
        assert_eq!(r.outcome, pb::Outcome::Refused, "{bad:?}: {r:?}");
        assert_eq!(std::fs::read_to_string(&file)?, "R00t.Secret");
    }
    let profile = |id: &str, pass_file: String| {
        task(
            id,
            Kind::WriteEtcdctlProfile(pb::WriteEtcdctlProfile {
                profile: Some(pb::EtcdctlProfile {
                    endpoints: vec![pb::EtcdEndpoint {
                        ip: "127.0.0.1".into(),
                        port: 2379,
                    }],
                    cacert: "/etc/etcd/ca.crt".into(),
                    cert: "/etc/etcd/server.crt".into(),
                    key: "/etc/etcd/server.key".into(),
                    login_users: vec!["root".into(), "dba".into()],
                    pass_file,
                    ..Default::default()
                }),
            }),
        )
    };
    let r = ex.execute(&profile("pr1", "/etc/shadow".into())).await;
    assert_eq!(r.outcome, pb::Outcome::Refused, "{r:?}");
    assert!(!h.p("etc/profile.d/etcdctl.sh").exists());
    // Pigsty's own words for the same profile: left as they are.
    let pigsty = format!(
        "#!/bin/bash\nalias e=\"etcdctl\"\nalias em=\"etcdctl member\"\nexport ETCDCTL_ENDPOINTS=\"https://127.0.0.1:2379\"\nexport ETCDCTL_CACERT=/etc/etcd/ca.crt\nexport ETCDCTL_CERT=/etc/etcd/server.crt\nexport ETCDCTL_KEY=/etc/etcd/server.key\n\ncase \"$(id -un)\" in\n  root|dba)\n    [ -r {f} ] && export ETCDCTL_USER=\"root:$(cat {f})\"\n    ;;\nesac",
        f = file.display()
    );
    std::fs::write(h.p("etc/profile.d/etcdctl.sh"), &pigsty)?;
    let r = ex.execute(&profile("pr2", h.s("etc/etcd/etcd.pass"))).await;
    assert_eq!(r.outcome, pb::Outcome::Unchanged, "{r:?}");
    assert_eq!(
        std::fs::read_to_string(h.p("etc/profile.d/etcdctl.sh"))?,
        pigsty
    );
    Ok(())
}

/// A monitoring task for the test's layout.
fn monitoring(layout: pb::MonitoringLayout, port: u32, ins: &str, remove: bool) -> Kind {
    Kind::WriteMonitoring(pb::WriteMonitoring {
        layout: layout as i32,
        targets: vec![pb::MonitorTarget {
            ip: "127.0.0.1".into(),
            port,
            ins: ins.into(),
        }],
        remove,
    })
}

#[tokio::test]
async fn monitoring_files_land_where_pigsty_reads_them_and_leave_on_deregistration() -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let h = Host::new()?;
    // Pigsty v4's layout: /infra is a link to /data/infra, which holds targets/ and rules/.
    for d in ["data/infra/targets/infra", "data/infra/rules"] {
        std::fs::create_dir_all(h.p(d))?;
    }
    std::os::unix::fs::symlink(h.p("data/infra"), h.p("infra"))?;
    let m = h.s("log/marker");
    let exec = format!(
        "  vmalert:\n    status: ['true']\n    reload: [/bin/sh, -c, 'test ! -e {r}/log/reload-fails && echo vmalert-reload >> {m}']\n\
         monitoring:\n  victoria: {{ root: {r}/infra, targets: {r}/infra/targets/infra/quorum.yml, rules: {r}/infra/rules/quorum.yml, owner: {{ user: root, group: root }} }}\n  \
         prometheus: {{ root: {r}/etc/prometheus, targets: {r}/etc/prometheus/targets/infra/quorum.yml, rules: {r}/etc/prometheus/rules/quorum.yml, owner: {{ user: root, group: root }} }}\n",
        r = h.dir.path().display()
    );
    let ex = h.executor(false, &exec)?;
    let v4 = pb::MonitoringLayout::Victoria;
    let targets = h.p("data/infra/targets/infra/quorum.yml");
    let rules = h.p("data/infra/rules/quorum.yml");

    let r = ex
        .execute(&task("m1", monitoring(v4, 9808, "quorum-1", false)))
        .await;
    assert_eq!(r.outcome, pb::Outcome::Changed, "{}", r.output);
    assert!(r.output.contains("reloaded vmalert"), "{}", r.output);
    let text = std::fs::read_to_string(&targets)?;
    let v: quorum_proto::yaml::Value = quorum_proto::yaml::from_str(&text)?;
    assert_eq!(v[0]["labels"]["cls"].as_str(), Some("quorum"), "{text}");
    assert_eq!(v[0]["labels"]["ins"].as_str(), Some("quorum-1"), "{text}");
    assert_eq!(
        v[0]["targets"][0].as_str(),
        Some("127.0.0.1:9808"),
        "{text}"
    );
    assert_eq!(
        std::fs::read_to_string(&rules)?,
        quorum_proto::render::QUORUM_RULES
    );
    let mode = |p: &Path| std::fs::metadata(p).map(|m| m.permissions().mode() & 0o777);
    assert_eq!(
        mode(&targets)?,
        0o640,
        "Pigsty's own target files there are 0640"
    );
    assert_eq!(mode(&rules)?, 0o644);
    assert_eq!(h.marker(), vec!["vmalert-reload"]);

    // The same again: nothing changes, nothing reloads.
    let r = ex
        .execute(&task("m2", monitoring(v4, 9808, "quorum-1", false)))
        .await;
    assert_eq!(r.outcome, pb::Outcome::Unchanged, "{}", r.output);
    // A new port rewrites the targets only; the rules are the same, so no reload.
    let r = ex
        .execute(&task("m3", monitoring(v4, 9809, "quorum-1", false)))
        .await;
    assert_eq!(r.outcome, pb::Outcome::Changed, "{}", r.output);
    assert!(std::fs::read_to_string(&targets)?.contains(":9809"));
    assert_eq!(h.marker(), vec!["vmalert-reload"]);

    // A target that is not one is refused before anything is touched.
    let r = ex
        .execute(&task(
            "m4",
            monitoring(v4, 9808, "q }\n- labels: {}", false),
        ))
        .await;
    assert_eq!(r.outcome, pb::Outcome::Refused, "{}", r.output);
    assert!(r.output.contains("targets[0].ins"), "{}", r.output);
    assert!(std::fs::read_to_string(&targets)?.contains(":9809"));

    // Pigsty v3's directories are not on this host: refused, naming what is missing.
    let r = ex
        .execute(&task(
            "m5",
            monitoring(pb::MonitoringLayout::Prometheus, 9808, "quorum-1", false),
        ))
        .await;
    assert_eq!(r.outcome, pb::Outcome::Refused, "{}", r.output);
    assert!(
        r.output.contains("etc/prometheus cannot be resolved")
            && r.output.contains("no infra node of Pigsty v3 (Prometheus)"),
        "{}",
        r.output
    );
    // A directory of the metrics stack's user swapped for a link that leads out of its root
    // (here to etcd's config dir, inside allowed_prefixes): refused where it really is.
    let real = h.p("data/infra/targets/infra.real");
    std::fs::rename(h.p("data/infra/targets/infra"), &real)?;
    std::os::unix::fs::symlink(h.p("etc/etcd"), h.p("data/infra/targets/infra"))?;
    let r = ex
        .execute(&task("m5b", monitoring(v4, 9808, "quorum-1", false)))
        .await;
    assert_eq!(r.outcome, pb::Outcome::Refused, "{}", r.output);
    assert!(
        r.output.contains("outside every allowed prefix"),
        "{}",
        r.output
    );
    assert!(!h.p("etc/etcd/quorum.yml").exists());
    std::fs::remove_file(h.p("data/infra/targets/infra"))?;
    std::fs::rename(&real, h.p("data/infra/targets/infra"))?;

    // Deregistration removes both files and their .bak, and reloads vmalert.
    let r = ex.execute(&task("m6", monitoring(v4, 0, "", true))).await;
    assert_eq!(r.outcome, pb::Outcome::Changed, "{}", r.output);
    for p in [&targets, &rules] {
        assert!(!p.exists(), "{} is still there", p.display());
        let mut bak = p.clone().into_os_string();
        bak.push(".bak");
        assert!(!Path::new(&bak).exists());
    }
    assert_eq!(h.marker(), vec!["vmalert-reload", "vmalert-reload"]);
    let r = ex.execute(&task("m7", monitoring(v4, 0, "", true))).await;
    assert_eq!(r.outcome, pb::Outcome::Unchanged, "{}", r.output);

    // A reload that fails fails the task, and the next registration retries it even though
    // the files are already in place; after a success nothing is reloaded again.
    std::fs::write(h.p("log/reload-fails"), "")?;
    let r = ex
        .execute(&task("m7b", monitoring(v4, 9808, "quorum-1", false)))
        .await;
    assert_eq!(r.outcome, pb::Outcome::Failed, "{}", r.output);
    assert!(
        r.output.contains("reloading vmalert failed") && r.output.contains("retries the reload"),
        "{}",
        r.output
    );
    assert!(rules.exists() && targets.exists());
    std::fs::remove_file(h.p("log/reload-fails"))?;
    let r = ex
        .execute(&task("m7c", monitoring(v4, 9808, "quorum-1", false)))
        .await;
    assert_eq!(r.outcome, pb::Outcome::Unchanged, "{}", r.output);
    assert!(r.output.contains("reloaded vmalert"), "{}", r.output);
    let r = ex
        .execute(&task("m7d", monitoring(v4, 9808, "quorum-1", false)))
        .await;
    assert!(!r.output.contains("reloaded"), "{}", r.output);
    let r = ex.execute(&task("m7e", monitoring(v4, 0, "", true))).await;
    assert_eq!(r.outcome, pb::Outcome::Changed, "{}", r.output);
    assert_eq!(h.marker().len(), 4, "{:?}", h.marker());

    // The agent counted what it ran, and says so in its facts.
    let counters = ex.facts().await.counters.context("counters")?;
    assert_eq!(counters.tasks.get("changed"), Some(&4), "{counters:?}");
    assert_eq!(counters.tasks.get("refused"), Some(&3), "{counters:?}");
    assert_eq!(counters.tasks.get("failed"), Some(&1), "{counters:?}");
    assert!(counters.journal_bytes > 0 && counters.started_unix > 0);

    // /infra leading outside allowed_prefixes: refused where it really is.
    let outside = tempfile::Builder::new()
        .prefix("quorum-agent-test-outside-")
        .tempdir()?;
    for d in ["targets/infra", "rules"] {
        std::fs::create_dir_all(outside.path().join(d))?;
    }
    std::fs::remove_file(h.p("infra"))?;
    std::os::unix::fs::symlink(outside.path(), h.p("infra"))?;
    let r = ex
        .execute(&task("m8", monitoring(v4, 9808, "quorum-1", false)))
        .await;
    assert_eq!(r.outcome, pb::Outcome::Refused, "{}", r.output);
    assert!(
        r.output.contains("outside every allowed prefix"),
        "{}",
        r.output
    );
    assert!(!outside.path().join("targets/infra/quorum.yml").exists());
    Ok(())
}

/// Fencing (invariant 9): once a task of coordinator epoch 5 was taken, a task of epoch 4
/// (a coordinator whose lease was taken over) is refused and runs nothing, read-only tasks
/// included, also after the agent restarts; epoch 5 and above still run.
#[tokio::test]
async fn a_task_from_a_lower_epoch_is_refused_across_restarts() -> Result<()> {
    let h = Host::new()?;
    let restart = |id: &str, epoch: u64| pb::Task {
        id: id.into(),
        epoch,
        epoch_holder: format!("coordinator-{epoch}"),
        kind: Some(Kind::ServiceAction(pb::ServiceAction {
            service: pb::Service::Patroni as i32,
            action: pb::Action::Reload as i32,
            force: true,
            ..Default::default()
        })),
    };
    {
        let ex = h.executor(false, &h.marker_exec())?;
        assert_eq!(ex.epoch(), 0);
        assert_eq!(
            ex.execute(&restart("e0", 0)).await.outcome,
            pb::Outcome::Changed
        );
        assert_eq!(
            ex.execute(&restart("e5", 5)).await.outcome,
            pb::Outcome::Changed
        );
        assert_eq!(ex.epoch(), 5);
        let r = ex.execute(&restart("e4", 4)).await;
        assert_eq!(r.outcome, pb::Outcome::Refused, "{r:?}");
        assert!(
            r.output.contains("epoch 4") && r.output.contains("fenced"),
            "{}",
            r.output
        );
        let facts = pb::Task {
            id: "f4".into(),
            epoch: 4,
            epoch_holder: "coordinator-4".into(),
            kind: Some(Kind::CollectFacts(pb::CollectFacts {})),
        };
        assert_eq!(ex.execute(&facts).await.outcome, pb::Outcome::Refused);
    }
    assert_eq!(h.marker(), vec!["patroni-reload", "patroni-reload"]);
    // A restarted agent remembers epoch 5.
    let ex = h.executor(false, &h.marker_exec())?;
    assert_eq!(ex.epoch(), 5);
    assert_eq!(
        ex.execute(&restart("e4b", 4)).await.outcome,
        pb::Outcome::Refused
    );
    assert_eq!(
        ex.execute(&restart("e0b", 0)).await.outcome,
        pb::Outcome::Refused
    );
    assert_eq!(
        ex.execute(&restart("e6", 6)).await.outcome,
        pb::Outcome::Changed
    );
    // Epoch 6 from another coordinator than the one that holds it: refused too.
    let twin = pb::Task {
        epoch_holder: "standalone".into(),
        ..restart("e6b", 6)
    };
    let r = ex.execute(&twin).await;
    assert_eq!(r.outcome, pb::Outcome::Refused, "{r:?}");
    assert!(
        r.output.contains("two coordinators claim one epoch"),
        "{}",
        r.output
    );
    assert_eq!(
        ex.execute(&restart("e6c", 6)).await.outcome,
        pb::Outcome::Changed
    );
    assert_eq!(h.marker().len(), 4);
    Ok(())
}
