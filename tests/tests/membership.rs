//! Membership SOPs end to end on real etcd through real agents: grow 3 -> 4 -> 5 and shrink
//! back while a writer runs, re-add a removed host, every refusal with its message, and a
//! coordinator killed at every step boundary of an add and of a remove.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use quorum_tests::etcd::{Fleet, HostPaths, Writer};
use quorum_tests::{wait_for, World};

const IPS: [&str; 5] = [
    "127.0.0.21",
    "127.0.0.22",
    "127.0.0.23",
    "127.0.0.24",
    "127.0.0.25",
];

/// All five hosts with `etcd_seq` 1..5, for slicing into inventories.
fn inventory_all() -> Vec<(&'static str, u32)> {
    IPS.iter().zip(1..).map(|(ip, seq)| (*ip, seq)).collect()
}

/// Three members created, agents on all five hosts; the inventory names `members`.
fn setup(inventory: &[(&str, u32)]) -> Result<(World, Fleet)> {
    let mut w = World::new()?;
    w.coordinator_extra =
        "gate_timeout_secs: 30\nstale_after_secs: 10\ntask_timeout_secs: 60\n".into();
    let fleet = Fleet::new(&w, &IPS)?;
    fleet.write_inventory(&w, &[(IPS[0], 1), (IPS[1], 2), (IPS[2], 3)], "")?;
    w.start_coordinator()?;
    fleet.start_agents(&mut w)?;
    let out = w.admin(&["cluster", "create", "--yes"])?;
    anyhow::ensure!(out.code == 0, "create failed: {out:?}");
    fleet.write_inventory(&w, inventory, "")?;
    Ok((w, fleet))
}

fn eps(f: &Fleet, n: usize) -> Vec<String> {
    f.hosts[..n].iter().map(|h| f.client_url(h.ip)).collect()
}

/// (name, is_learner) of every member, sorted.
async fn members(w: &World, f: &Fleet) -> Result<Vec<(String, bool)>> {
    // One endpoint at a time: a client over several fails if any one is down.
    let mut list = None;
    for ep in eps(f, 5) {
        if let Ok(mut c) = quorum_tests::etcd::client(w, &[ep]).await {
            if let Ok(l) = c.member_list().await {
                list = Some(l);
                break;
            }
        }
    }
    let list = list.context("no member answered the member list")?;
    let mut v: Vec<(String, bool)> = list
        .members()
        .iter()
        .map(|m| (m.name().to_string(), m.is_learner()))
        .collect();
    v.sort();
    Ok(v)
}

fn names(n: &[u32]) -> Vec<(String, bool)> {
    n.iter().map(|i| (format!("etcd-{i}"), false)).collect()
}

/// Every live member's etcd.conf lists exactly the live members.
fn confs_list_exactly(f: &Fleet, live: &[usize]) -> Result<()> {
    let want: Vec<String> = live
        .iter()
        .map(|i| format!("etcd-{}=https://{}:{}", i + 1, IPS[*i], f.peer_port))
        .collect();
    for i in live {
        let conf = std::fs::read_to_string(f.hosts[*i].etcd_conf())?;
        let line = conf
            .lines()
            .find(|l| l.starts_with("initial-cluster:"))
            .context("initial-cluster line")?;
        let mut listed: Vec<String> = line
            .trim_start_matches("initial-cluster:")
            .trim()
            .trim_matches('"')
            .split(',')
            .map(str::to_string)
            .collect();
        listed.sort();
        let mut w = want.clone();
        w.sort();
        assert_eq!(listed, w, "{} lists the wrong members", IPS[*i]);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grow_to_five_and_shrink_to_three_losing_no_write() -> Result<()> {
    let all = inventory_all();
    let (w, f) = setup(&all[..3])?;
    let writer = Writer::start(&w, eps(&f, 3)).await?;
    // 3 -> 4: the host is in the inventory (Pigsty's step 2 first).
    f.write_inventory(&w, &all[..4], "")?;
    let out = w.admin(&["member", "add", IPS[3], "--yes"])?;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(members(&w, &f).await?, names(&[1, 2, 3, 4]));
    confs_list_exactly(&f, &[0, 1, 2, 3])?;
    // 4 -> 5.
    f.write_inventory(&w, &all, "")?;
    let out = w.admin(&["member", "add", IPS[4], "--yes"])?;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(members(&w, &f).await?, names(&[1, 2, 3, 4, 5]));
    // 5 -> 4 -> 3.
    let out = w.admin(&["member", "remove", IPS[4], "--yes"])?;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(members(&w, &f).await?, names(&[1, 2, 3, 4]));
    confs_list_exactly(&f, &[0, 1, 2, 3])?;
    assert_eq!(
        std::fs::read_dir(f.hosts[4].data())?.count(),
        0,
        "the removed member was not wiped"
    );
    f.write_inventory(&w, &all[..4], "")?;
    let out = w.admin(&["member", "remove", IPS[3], "--yes"])?;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(members(&w, &f).await?, names(&[1, 2, 3]));
    confs_list_exactly(&f, &[0, 1, 2])?;
    // The profiles work.
    let health = f.etcdctl_via_profile(IPS[0], "endpoint health")?;
    assert_eq!(health.code, 0, "{health:?}");
    let (acked, missing, lost) = writer.finish(&w, eps(&f, 3)).await?;
    assert!(acked > 0);
    assert_eq!((missing, lost), (0, 0), "{acked} acked");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_host_rejoins_only_with_its_old_data_wiped() -> Result<()> {
    let all = inventory_all();
    let (w, f) = setup(&all[..4])?;
    w.admin(&["member", "add", IPS[3], "--yes"])?.ok()?;
    // Remove it, then put old data back as if the wipe never happened (a restored backup).
    let h4 = f.hosts[3].clone();
    let saved = w.dir.path().join("saved-data");
    copy_dir(&h4.data(), &saved)?;
    let saved_etc = w.dir.path().join("saved-etc");
    copy_dir(&h4.etc_etcd(), &saved_etc)?;
    w.admin(&["member", "remove", IPS[3], "--yes"])?.ok()?;
    // Retired (e2e probe F5): no etcd.conf, certificates or profile are left behind...
    for p in [
        h4.etcd_conf(),
        h4.etc_etcd().join("ca.crt"),
        h4.etc_etcd().join("server.crt"),
        h4.etc_etcd().join("server.key"),
        h4.profile(),
    ] {
        assert!(!p.exists(), "{} is left on the removed host", p.display());
        let bak = format!("{}.bak", p.display());
        assert!(!std::path::Path::new(&bak).exists(), "{bak} is left");
    }
    // ...so a reboot that starts the service brings up no ghost cluster with the old identity.
    let out = w.admin(&[
        "task", "--host", IPS[3], "--yes", "service", "etcd", "start",
    ])?;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.contains("it exited"), "{}", out.stdout);
    wait_for(
        "the retired host's etcd to give up",
        Duration::from_secs(20),
        || h4.etcd_pid().is_none().then_some(()),
    )?;
    assert_eq!(
        std::fs::read_dir(h4.data())?.count(),
        0,
        "etcd made a new data dir on the retired host"
    );
    assert_eq!(members(&w, &f).await?, names(&[1, 2, 3]));
    copy_dir(&saved, &h4.data())?;
    copy_dir(&saved_etc, &h4.etc_etcd())?;
    // Started with its old data and files (a restored backup), the removed member exits by
    // itself, and the start says so
    // with etcd's own reason (start means running)...
    let out = w.admin(&[
        "task", "--host", IPS[3], "--yes", "service", "etcd", "start",
    ])?;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.contains("it exited"), "{}", out.stdout);
    assert!(
        out.stdout.contains("permanently removed from the cluster"),
        "{}",
        out.stdout
    );
    wait_for(
        "the removed member to exit by itself",
        Duration::from_secs(20),
        || h4.etcd_pid().is_none().then_some(()),
    )?;
    assert_eq!(members(&w, &f).await?, names(&[1, 2, 3]));
    // ...and re-adding it wipes the old data first, says so, and then it joins.
    let plan = w.admin(&["member", "add", IPS[3], "--plan"])?.ok()?;
    assert!(
        plan.stdout.contains("holds etcd data but is not a member"),
        "{}",
        plan.stdout
    );
    w.admin(&["member", "add", IPS[3], "--yes"])?.ok()?;
    assert_eq!(members(&w, &f).await?, names(&[1, 2, 3, 4]));
    Ok(())
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> Result<()> {
    if to.exists() {
        for e in std::fs::read_dir(to)? {
            let p = e?.path();
            if p.is_dir() {
                std::fs::remove_dir_all(&p)?;
            } else {
                std::fs::remove_file(&p)?;
            }
        }
    }
    let st = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .status()?;
    anyhow::ensure!(st.success(), "cp failed");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_etcd_that_exits_at_once_fails_its_start_with_etcds_error() -> Result<()> {
    let all = inventory_all();
    let (w, f) = setup(&all[..4])?;
    // F7: the new member's client port is taken, so its etcd exits right after the fork.
    let _taken = std::net::TcpListener::bind((IPS[3], f.port))?;
    let out = w.admin(&["member", "add", IPS[3], "--yes"])?;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("StartEtcd 127.0.0.24"),
        "the start must fail, not the promote after it:\n{}",
        out.stderr
    );
    assert!(out.stderr.contains("it exited"), "{}", out.stderr);
    assert!(
        out.stderr.contains("address already in use"),
        "etcd's own error is missing:\n{}",
        out.stderr
    );
    assert!(!out.stderr.contains("did not catch up"), "{}", out.stderr);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_members_wipe_refuses_a_data_dir_of_another_member() -> Result<()> {
    let all = inventory_all();
    let (w, f) = setup(&all[..4])?;
    w.admin(&["member", "add", IPS[3], "--yes"])?.ok()?;
    // etcd-4 is stopped and its data dir now holds etcd-1's WAL head (a restore from the
    // wrong backup): the wipe after `member remove` must see that it is not etcd-4's data.
    let h4 = f.hosts[3].clone();
    w.admin(&["task", "--host", IPS[3], "--yes", "service", "etcd", "stop"])?
        .ok()?;
    let wal = |h: &HostPaths| -> Result<std::path::PathBuf> {
        std::fs::read_dir(h.data().join("member/wal"))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "wal"))
            .min()
            .context("a WAL file")
    };
    let head: Vec<u8> = std::fs::read(wal(&f.hosts[0])?)?
        .into_iter()
        .take(4096)
        .collect();
    let planted = wal(&h4)?;
    for e in std::fs::read_dir(h4.data().join("member/wal"))? {
        std::fs::remove_file(e?.path())?;
    }
    std::fs::write(&planted, &head)?;
    f.write_inventory(&w, &all[..3], "")?;
    let plan = w.admin(&["member", "remove", IPS[3], "--plan"])?.ok()?;
    assert!(
        plan.stdout.contains("only if it holds member"),
        "{}",
        plan.stdout
    );
    let out = w.admin(&["member", "remove", IPS[3], "--yes"])?;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains("WipeRemovedMember"), "{}", out.stderr);
    assert!(out.stderr.contains("nothing was wiped"), "{}", out.stderr);
    assert_eq!(
        std::fs::read(&planted)?,
        head,
        "the refused wipe touched the data"
    );
    assert!(
        h4.data().join("member/snap").exists(),
        "the refused wipe removed data"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_refusals_name_the_problem() -> Result<()> {
    let all = inventory_all();
    let (w, f) = setup(&all[..3])?;
    // A host not in the inventory, without --seq.
    let out = w.admin(&["member", "add", IPS[3]])?;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "add `{}: {{ etcd_seq: 4 }}` under all.children.etcd.hosts",
            IPS[3]
        )),
        "{}",
        out.stderr
    );
    // With --seq a host outside the inventory is planned with the group's parameters (whose
    // etcd_data must be the data dir its agent manages).
    let group_data = format!("etcd_data: {}", f.hosts[3].data().display());
    f.write_inventory(&w, &all[..3], &group_data)?;
    let plan = w
        .admin(&["member", "add", IPS[3], "--seq", "9", "--plan"])?
        .ok()?;
    assert!(plan.stdout.contains("etcd-9"), "{}", plan.stdout);
    let out = w.admin(&["member", "add", IPS[3], "--seq", "2", "--plan"])?;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.contains("--seq 2 is taken by etcd-2"),
        "{}",
        out.stderr
    );
    // A learner already there.
    let mut c = quorum_tests::etcd::client(&w, &eps(&f, 3)).await?;
    // etcd refuses membership changes for ~5 s after a start ("unhealthy cluster").
    let mut tries = 0;
    let added = loop {
        let r = c
            .member_add(
                [format!("https://{}:{}", IPS[4], f.peer_port)],
                Some(etcd_client::MemberAddOptions::new().with_is_learner()),
            )
            .await;
        match r {
            Ok(a) => break a,
            Err(_) if tries < 40 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    let learner_id = added.member().context("learner")?.id();
    f.write_inventory(&w, &all[..4], "")?;
    let out = w.admin(&["member", "add", IPS[3], "--yes"])?;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.stderr.contains("already has a learner"),
        "{}",
        out.stderr
    );
    c.member_remove(learner_id).await?;
    // An unhealthy cluster: refused for add, and for removing another member.
    let h3 = &f.hosts[2];
    h3.kill_etcd()?;
    // If etcd-3 led, the others elect a new leader first; until then every member looks
    // unhealthy (rightly), which is not the refusal this test is about.
    quorum_tests::etcd::wait_members_up(&w, &eps(&f, 2), Duration::from_secs(20)).await?;
    let out = w.admin(&["member", "add", IPS[3], "--yes"])?;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.stderr
            .contains("cluster etcd is unhealthy: member etcd-3 (127.0.0.23) is unhealthy"),
        "{}",
        out.stderr
    );
    let out = w.admin(&["member", "remove", IPS[1], "--yes"])?;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.stderr
            .contains("removing etcd-2 now would put quorum at risk"),
        "{}",
        out.stderr
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_member_cannot_be_removed() -> Result<()> {
    let mut w = World::new()?;
    let f = Fleet::new(&w, &IPS[..1])?;
    f.write_inventory(&w, &[(IPS[0], 1)], "")?;
    w.start_coordinator()?;
    f.start_agents(&mut w)?;
    w.admin(&["cluster", "create", "--yes"])?.ok()?;
    let out = w.admin(&["member", "remove", IPS[0], "--yes"])?;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.stderr.contains("is the last member of cluster etcd"),
        "{}",
        out.stderr
    );
    Ok(())
}

/// Kills the coordinator once `boundary` steps of the newest run are done, restarts it,
/// resumes the run to success. Also samples the learner count while it runs.
/// What a chaos test kills at a step boundary.
#[derive(Clone, Copy)]
enum Victim {
    /// The coordinator (restarted after the CLI following the run has ended).
    Coordinator,
    /// The joining / leaving host's agent, restarted at once as systemd would.
    Agent(usize),
}

async fn crash_and_resume(
    w: &mut World,
    f: &Fleet,
    args: &[&str],
    sop: &str,
    boundary: usize,
    victim: Victim,
) -> Result<()> {
    let mut child = w.spawn_admin(args)?;
    let run_id = w.wait_steps_done(
        sop,
        boundary,
        &["running", "succeeded"],
        Duration::from_secs(90),
    )?;
    let learners = members(w, f)
        .await
        .map(|m| m.iter().filter(|(_, l)| *l).count())
        .unwrap_or(0);
    assert!(learners <= 1, "{learners} learners at boundary {boundary}");
    match victim {
        Victim::Coordinator => {
            w.kill_coordinator();
            let _ = child.wait();
            w.start_coordinator()?;
        }
        Victim::Agent(i) => {
            let h = f.hosts[i].clone();
            let ip = h.ip.to_string();
            if let Some(a) = w.agent(&ip) {
                a.kill();
            }
            w.start_agent(&ip, &h.agent_config(false))?;
            // The run either finishes (redelivered tasks answered from the journal) or halts
            // at a task the agent died inside; the resume below finishes it.
            let _ = child.wait();
        }
    }
    for h in &f.hosts {
        w.wait_agent_state(
            &h.ip.to_string(),
            &["connected", "idle"],
            Duration::from_secs(60),
        )?;
    }
    let run = w
        .resume_after_crash(&run_id)
        .with_context(|| format!("{sop} boundary {boundary}"))?;
    assert_eq!(
        run["state"], "succeeded",
        "{sop} boundary {boundary}: {run}"
    );
    Ok(())
}

/// kill -9 of the coordinator at every step boundary of `member add` (the add test) and of
/// `member remove` (the remove test), then restart and resume: the final membership is right,
/// never more than one learner, the removed member wiped. Two tests so they run side by side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_killed_at_every_step_of_member_add_resumes_right() -> Result<()> {
    let all = inventory_all();
    let (mut w, f) = setup(&all[..4])?;
    let add_steps = w.plan_len(&["member", "add", IPS[3]])?;
    assert!(add_steps >= 10, "add plan has {add_steps} steps");
    for boundary in 0..add_steps {
        f.write_inventory(&w, &all[..4], "")?;
        crash_and_resume(
            &mut w,
            &f,
            &["member", "add", IPS[3], "--yes"],
            "member-add",
            boundary,
            Victim::Coordinator,
        )
        .await?;
        assert_eq!(
            members(&w, &f).await?,
            names(&[1, 2, 3, 4]),
            "after add, boundary {boundary}"
        );
        let h: &HostPaths = &f.hosts[3];
        assert!(h.etcd_pid().is_some());
        f.write_inventory(&w, &all[..3], "")?;
        let out = w.admin(&["member", "remove", IPS[3], "--yes"])?;
        assert_eq!(out.code, 0, "{out:?}");
        assert_eq!(members(&w, &f).await?, names(&[1, 2, 3]));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_killed_at_every_step_of_member_remove_resumes_right() -> Result<()> {
    let all = inventory_all();
    let (mut w, f) = setup(&all[..4])?;
    w.admin(&["member", "add", IPS[3], "--yes"])?.ok()?;
    f.write_inventory(&w, &all[..3], "")?;
    let remove_steps = w.plan_len(&["member", "remove", IPS[3]])?;
    assert!(remove_steps >= 8, "remove plan has {remove_steps} steps");
    for boundary in 0..remove_steps {
        f.write_inventory(&w, &all[..3], "")?;
        crash_and_resume(
            &mut w,
            &f,
            &["member", "remove", IPS[3], "--yes"],
            "member-remove",
            boundary,
            Victim::Coordinator,
        )
        .await?;
        assert_eq!(
            members(&w, &f).await?,
            names(&[1, 2, 3]),
            "after remove, boundary {boundary}"
        );
        assert_eq!(
            std::fs::read_dir(f.hosts[3].data())?.count(),
            0,
            "boundary {boundary}: not wiped"
        );
        f.write_inventory(&w, &all[..4], "")?;
        let out = w.admin(&["member", "add", IPS[3], "--yes"])?;
        assert_eq!(out.code, 0, "{out:?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_the_leader_hands_leadership_over_first() -> Result<()> {
    let all = inventory_all();
    let (w, f) = setup(&all[..3])?;
    // Find the leader's host.
    let mut c = quorum_tests::etcd::client(&w, &eps(&f, 1)).await?;
    let leader = c.status().await?.leader();
    let list = c.member_list().await?;
    let lead = list
        .members()
        .iter()
        .find(|m| m.id() == leader)
        .context("leader listed")?;
    let url = lead.peer_urls().first().context("peer url")?.clone();
    let ip = IPS[..3]
        .iter()
        .find(|ip| url.contains(&format!("//{ip}:")))
        .context("leader host")?
        .to_string();
    let remaining: Vec<(&str, u32)> = all[..3].iter().filter(|(i, _)| *i != ip).copied().collect();
    f.write_inventory(&w, &remaining, "")?;
    let out = w.admin(&["member", "remove", &ip, "--yes", "-o", "json"])?;
    assert_eq!(out.code, 0, "{out:?}");
    let run: serde_json::Value = serde_json::from_str(&out.stdout)?;
    let step = run["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["kind"] == "MoveLeaderAway"))
        .context("MoveLeaderAway step")?;
    assert_eq!(step["outcome"], "changed", "{step}");
    assert!(
        step["output"]
            .as_str()
            .is_some_and(|o| o.contains("leadership moved")),
        "{step}"
    );
    assert_eq!(members(&w, &f).await?.len(), 2);
    Ok(())
}

/// The joining host's agent killed (and restarted at once) at every step boundary of
/// `member add`, then the same for the leaving host's agent during `member remove`: each run
/// finishes, by itself or by a resume, with the right membership and never two learners.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_members_agent_killed_at_every_step_still_ends_right() -> Result<()> {
    let all = inventory_all();
    let (mut w, f) = setup(&all[..4])?;
    let add_steps = w.plan_len(&["member", "add", IPS[3]])?;
    for boundary in 0..add_steps {
        f.write_inventory(&w, &all[..4], "")?;
        let args = ["member", "add", IPS[3], "--yes"];
        crash_and_resume(&mut w, &f, &args, "member-add", boundary, Victim::Agent(3)).await?;
        assert_eq!(
            members(&w, &f).await?,
            names(&[1, 2, 3, 4]),
            "add, boundary {boundary}"
        );
        f.write_inventory(&w, &all[..3], "")?;
        w.admin(&["member", "remove", IPS[3], "--yes"])?.ok()?;
    }
    f.write_inventory(&w, &all[..4], "")?;
    w.admin(&["member", "add", IPS[3], "--yes"])?.ok()?;
    f.write_inventory(&w, &all[..3], "")?;
    let remove_steps = w.plan_len(&["member", "remove", IPS[3]])?;
    for boundary in 0..remove_steps {
        f.write_inventory(&w, &all[..3], "")?;
        let args = ["member", "remove", IPS[3], "--yes"];
        crash_and_resume(
            &mut w,
            &f,
            &args,
            "member-remove",
            boundary,
            Victim::Agent(3),
        )
        .await?;
        assert_eq!(
            members(&w, &f).await?,
            names(&[1, 2, 3]),
            "remove, boundary {boundary}"
        );
        assert_eq!(
            std::fs::read_dir(f.hosts[3].data())?.count(),
            0,
            "remove, boundary {boundary}: not wiped"
        );
        f.write_inventory(&w, &all[..4], "")?;
        w.admin(&["member", "add", IPS[3], "--yes"])?.ok()?;
    }
    Ok(())
}

/// `quorum cluster status -o json`, parsed, with its exit code.
fn status(w: &World) -> Result<(i32, serde_json::Value)> {
    let out = w.admin(&["cluster", "status", "-o", "json"])?;
    let v = serde_json::from_str(&out.stdout).with_context(|| format!("{out:?}"))?;
    Ok((out.code, v))
}

/// Item 3 (e2e probe F3), item 9 and F6: the inventory is compared with etcd's member list by
/// every SOP (a host that never joined, a live member the inventory lacks, a learner never
/// promoted), `cluster status` shows the comparison, and a removal after Pigsty's order (host
/// out of pigsty.yml first) names the real member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inventory_must_agree_with_the_member_list() -> Result<()> {
    let all = inventory_all();
    let (w, f) = setup(&all[..3])?;
    let (code, v) = status(&w)?;
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["agrees"], true, "{v}");
    let listed = v["members"].as_array().context("members")?;
    assert_eq!(listed.len(), 3, "{v}");
    assert_eq!(
        listed.iter().filter(|m| m["is_leader"] == true).count(),
        1,
        "{v}"
    );
    assert!(
        listed
            .iter()
            .all(|m| m["healthy"] == true && m["raft_index"].as_u64().is_some_and(|i| i > 0)),
        "{v}"
    );
    let table = w.admin(&["cluster", "status"])?;
    assert_eq!(table.code, 0, "{table:?}");
    assert!(table.stdout.contains("RAFT INDEX"), "{}", table.stdout);

    // e2e probe F3b: a host in the inventory that never joined.
    f.write_inventory(&w, &all[..4], "")?;
    let not_member = format!(
        "{} (etcd-4, https://{}:{}) is in pigsty.yml but not a member of etcd: run `quorum member add {}`",
        IPS[3], IPS[3], f.peer_port, IPS[3]
    );
    for args in [&["config", "reload"][..], &["env", "refresh"][..]] {
        let out = w.admin(args)?;
        assert_eq!(out.code, 3, "{args:?}: {out:?}");
        assert!(out.stderr.contains(&not_member), "{args:?}: {}", out.stderr);
    }
    let (code, v) = status(&w)?;
    assert_eq!(code, 1, "{v}");
    assert!(
        v["agreement"].as_array().is_some_and(|a| a
            .iter()
            .any(|l| l["kind"] == "not_a_member" && l["host"] == IPS[3])),
        "{v}"
    );

    // e2e probe F3a: the inventory lacks live etcd-1 and names the joining .24.
    f.write_inventory(&w, &all[1..4], "")?;
    let out = w.admin(&["member", "add", IPS[3], "--yes"])?;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "member etcd-1 (https://{}:{}) is not in pigsty.yml: add `{}: {{ etcd_seq: 1 }}` under all.children.etcd.hosts",
            IPS[0], f.peer_port, IPS[0]
        )),
        "{}",
        out.stderr
    );
    assert_eq!(
        members(&w, &f).await?,
        names(&[1, 2, 3]),
        "something was changed"
    );

    // Item 9: a learner added by hand (Pigsty's SOP step 1) for a host of the inventory stays
    // out of every profile until it is promoted.
    f.write_inventory(&w, &all[..4], "")?;
    let mut c = quorum_tests::etcd::client(&w, &eps(&f, 3)).await?;
    let peer = format!("https://{}:{}", IPS[3], f.peer_port);
    let mut tries = 0;
    loop {
        let r = c
            .member_add(
                [peer.clone()],
                Some(etcd_client::MemberAddOptions::new().with_is_learner()),
            )
            .await;
        match r {
            Ok(_) => break,
            // etcd refuses membership changes for ~5 s after a start ("unhealthy cluster").
            Err(_) if tries < 40 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    let profiles: Vec<String> = f.hosts[..3]
        .iter()
        .map(|h| std::fs::read_to_string(h.profile()))
        .collect::<std::io::Result<_>>()?;
    let out = w.admin(&["env", "refresh"])?;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains("never promoted"), "{}", out.stderr);
    for (h, before) in f.hosts[..3].iter().zip(&profiles) {
        assert_eq!(
            &std::fs::read_to_string(h.profile())?,
            before,
            "{} was rewritten",
            h.ip
        );
    }
    let (_, v) = status(&w)?;
    assert!(
        v["members"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["is_learner"] == true)),
        "{v}"
    );
    assert!(
        v["agreement"]
            .as_array()
            .is_some_and(|a| a.iter().any(|l| l["kind"] == "unpromoted")),
        "{v}"
    );
    // Finishing the join adopts the learner; then the profiles list it.
    w.admin(&["member", "add", IPS[3], "--yes"])?.ok()?;
    w.admin(&["env", "refresh"])?.ok()?;
    assert!(std::fs::read_to_string(f.hosts[0].profile())?.contains(IPS[3]));

    // e2e probe F6: Pigsty's order takes the host out of pigsty.yml first; the wipe is
    // confirmed against the member's real name, read from etcd.
    f.write_inventory(&w, &all[..3], "")?;
    let out = w.admin(&["member", "remove", IPS[3]])?;
    assert_eq!(out.code, 3, "not confirmed: {out:?}");
    assert!(
        out.stderr.contains(&format!(
            "This run wipes the etcd data of: etcd-4 @ {}",
            IPS[3]
        )),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("etcd-0"), "{}", out.stderr);
    w.admin(&["member", "remove", IPS[3], "--yes"])?.ok()?;
    assert_eq!(members(&w, &f).await?, names(&[1, 2, 3]));
    let (code, v) = status(&w)?;
    assert_eq!(code, 0, "{v}");
    Ok(())
}

/// Item 9: while a member is added, no profile lists it before PromoteLearner has finished
/// (a client that dialled a learner would get "rpc not supported for learner").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_profile_lists_a_joining_member_before_it_is_promoted() -> Result<()> {
    let all = inventory_all();
    let (w, f) = setup(&all[..4])?;
    // Watch every profile: when did each first name the joining host?
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hosts: Vec<HostPaths> = f.hosts[..4].to_vec();
    let (s, joining) = (stop.clone(), IPS[3].to_string());
    let watcher = std::thread::spawn(move || {
        let mut first: Vec<Option<i64>> = vec![None; hosts.len()];
        while !s.load(std::sync::atomic::Ordering::SeqCst) {
            for (i, h) in hosts.iter().enumerate() {
                if first[i].is_none()
                    && std::fs::read_to_string(h.profile()).is_ok_and(|p| p.contains(&joining))
                {
                    first[i] = Some(now_ms());
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        first
    });
    let out = w.admin(&["member", "add", IPS[3], "--yes", "-o", "json"])?;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let first = watcher
        .join()
        .map_err(|_| anyhow::anyhow!("the profile watcher panicked"))?;
    assert_eq!(out.code, 0, "{out:?}");
    let run: serde_json::Value = serde_json::from_str(&out.stdout)?;
    let promoted = run["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["kind"] == "PromoteLearner"))
        .and_then(|s| s["finished_unix_ms"].as_i64())
        .context("PromoteLearner's end")?;
    for (i, seen) in first.iter().enumerate() {
        let seen = seen.with_context(|| format!("{}'s profile never listed {}", IPS[i], IPS[3]))?;
        assert!(
            seen >= promoted,
            "{}'s profile listed {} at {seen}, before the promotion ended at {promoted}",
            IPS[i],
            IPS[3]
        );
    }
    Ok(())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The host of etcd-3 dies: its agent and its etcd are gone, and it stays away long enough
/// for its agent to count as stale.
fn kill_host(w: &mut World, f: &Fleet, i: usize) -> Result<()> {
    w.agent(IPS[i]).context("the agent")?.kill();
    if let Some(pid) = f.hosts[i].etcd_pid() {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )?;
    }
    w.wait_agent_state(IPS[i], &["stale"], Duration::from_secs(40))
}

/// The state of run `id`.
fn run_state(w: &World, id: &str) -> Result<String> {
    let out = w.admin(&["run", "show", id, "-o", "json"])?.ok()?;
    let v: serde_json::Value = serde_json::from_str(&out.stdout)?;
    Ok(v["state"].as_str().unwrap_or_default().to_string())
}

/// The id of the newest run of `sop`.
fn newest_run(w: &World, sop: &str) -> Result<String> {
    let out = w.admin(&["run", "list", "-o", "json"])?.ok()?;
    let v: serde_json::Value = serde_json::from_str(&out.stdout)?;
    v.as_array()
        .into_iter()
        .flatten()
        .find(|r| r["sop"] == sop)
        .and_then(|r| r["run_id"].as_str())
        .map(str::to_string)
        .with_context(|| format!("no {sop} run in {v}"))
}

/// Item 2 (e2e probe F2): a member whose host died is removed at once, after the checks on
/// the survivors, with writes going on; its stop, wipe and retirement wait as a run of their
/// own that no other SOP may pass (re-adding the host is refused), and that runs by itself
/// when the host's agent is back; then the host may rejoin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_hosts_member_leaves_now_and_its_cleanup_waits_for_its_agent() -> Result<()> {
    let all = inventory_all();
    let (mut w, f) = setup(&all[..3])?;
    let writer = Writer::start(&w, eps(&f, 2)).await?;
    kill_host(&mut w, &f, 2)?;
    let dead = f.hosts[2].clone();
    // Pigsty's SOP takes the host out of pigsty.yml first.
    f.write_inventory(&w, &all[..2], "")?;
    let plan = w.admin(&["member", "remove", IPS[2], "--plan"])?.ok()?;
    assert!(
        plan.stdout
            .contains(&format!("the agent on {} is stale", IPS[2])),
        "{}",
        plan.stdout
    );
    assert!(plan.stdout.contains("DeferCleanup"), "{}", plan.stdout);
    assert!(!plan.stdout.contains("StopEtcd"), "{}", plan.stdout);
    let out = w.admin(&["member", "remove", IPS[2], "--yes"])?;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(members(&w, &f).await?, names(&[1, 2]));
    confs_list_exactly(&f, &[0, 1])?;
    // Nothing on the dead host was touched yet; its cleanup waits.
    assert!(dead.etcd_conf().exists());
    assert!(std::fs::read_dir(dead.data())?.count() > 0);
    let cleanup = newest_run(&w, "host-cleanup")?;
    assert_eq!(run_state(&w, &cleanup)?, "waiting");
    let resume = w.admin(&["run", "resume", &cleanup])?;
    assert_eq!(resume.code, 3, "{resume:?}");
    assert!(resume.stderr.contains("starts by itself"), "{resume:?}");
    // The host may not rejoin before its old member is wiped.
    f.write_inventory(&w, &all[..3], "")?;
    let add = w.admin(&["member", "add", IPS[2], "--plan"])?;
    assert_eq!(add.code, 3, "{add:?}");
    assert!(add.stderr.contains("pending cleanup"), "{add:?}");
    assert!(add.stderr.contains(&cleanup), "{add:?}");
    // The host is back: the cleanup runs by itself.
    w.start_agent(IPS[2], &dead.agent_config(false))?;
    wait_for("the cleanup to run", Duration::from_secs(60), || {
        (run_state(&w, &cleanup).ok()? == "succeeded").then_some(())
    })?;
    for p in [
        dead.etcd_conf(),
        dead.profile(),
        dead.etc_etcd().join("server.key"),
    ] {
        assert!(!p.exists(), "{} is left on the removed host", p.display());
    }
    assert_eq!(std::fs::read_dir(dead.data())?.count(), 0, "not wiped");
    // Now it rejoins, and no acknowledged write was lost on the way.
    w.admin(&["member", "add", IPS[2], "--yes"])?.ok()?;
    assert_eq!(members(&w, &f).await?, names(&[1, 2, 3]));
    let (acked, missing, lost) = writer.finish(&w, eps(&f, 3)).await?;
    assert!(acked > 0);
    assert_eq!((missing, lost), (0, 0), "{acked} acked");
    Ok(())
}

/// Item 2: `--forget` drops a dead host's pending cleanup (a host gone for good): its
/// returning agent is then given nothing. `--forget` is refused for a connected agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_drops_the_cleanup_of_a_host_gone_for_good() -> Result<()> {
    let all = inventory_all();
    let (mut w, f) = setup(&all[..3])?;
    let out = w.admin(&["member", "remove", IPS[1], "--forget", "--plan"])?;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("is connected"), "{out:?}");
    kill_host(&mut w, &f, 2)?;
    let dead = f.hosts[2].clone();
    f.write_inventory(&w, &all[..2], "")?;
    w.admin(&["member", "remove", IPS[2], "--yes"])?.ok()?;
    let cleanup = newest_run(&w, "host-cleanup")?;
    let plan = w
        .admin(&["member", "remove", IPS[2], "--forget", "--plan"])?
        .ok()?;
    assert!(plan.stdout.contains("is dropped"), "{}", plan.stdout);
    assert!(!plan.stdout.contains("DeferCleanup"), "{}", plan.stdout);
    assert_eq!(run_state(&w, &cleanup)?, "waiting", "a plan changed it");
    w.admin(&["member", "remove", IPS[2], "--forget", "--yes"])?
        .ok()?;
    assert_eq!(run_state(&w, &cleanup)?, "aborted");
    assert_eq!(members(&w, &f).await?, names(&[1, 2]));
    // The agent returns to nothing: its files and data stay as they were.
    w.start_agent(IPS[2], &dead.agent_config(false))?;
    w.wait_agent_state(IPS[2], &["connected", "idle"], Duration::from_secs(30))?;
    // The coordinator looks for returned agents every second.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(run_state(&w, &cleanup)?, "aborted");
    assert!(dead.etcd_conf().exists());
    assert!(std::fs::read_dir(dead.data())?.count() > 0);
    Ok(())
}

/// Item 2 with two dead hosts of five: a healthy member may not leave while another is down,
/// but each dead one may, in turn, since its removal takes no live member away and three of
/// five (then three of four) are a healthy majority.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_dead_hosts_of_five_are_removed_in_turn() -> Result<()> {
    let all = inventory_all();
    let (mut w, f) = setup(&all[..4])?;
    w.admin(&["member", "add", IPS[3], "--yes"])?.ok()?;
    f.write_inventory(&w, &all, "")?;
    w.admin(&["member", "add", IPS[4], "--yes"])?.ok()?;
    assert_eq!(members(&w, &f).await?, names(&[1, 2, 3, 4, 5]));
    let writer = Writer::start(&w, eps(&f, 3)).await?;
    kill_host(&mut w, &f, 3)?;
    kill_host(&mut w, &f, 4)?;
    // A live member may not leave with others down.
    f.write_inventory(&w, &all[1..], "")?;
    let out = w.admin(&["member", "remove", IPS[0], "--plan"])?;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains("is unhealthy"), "{out:?}");
    // The dead ones may, one after the other.
    f.write_inventory(&w, &all[..4], "")?;
    let plan = w.admin(&["member", "remove", IPS[4], "--plan"])?.ok()?;
    assert!(
        plan.stdout.contains("etcd-4 down as well"),
        "{}",
        plan.stdout
    );
    w.admin(&["member", "remove", IPS[4], "--yes"])?.ok()?;
    assert_eq!(members(&w, &f).await?, names(&[1, 2, 3, 4]));
    f.write_inventory(&w, &all[..3], "")?;
    w.admin(&["member", "remove", IPS[3], "--yes"])?.ok()?;
    assert_eq!(members(&w, &f).await?, names(&[1, 2, 3]));
    confs_list_exactly(&f, &[0, 1, 2])?;
    // Each left its cleanup waiting for its agent.
    let out = w.admin(&["run", "list", "-o", "json"])?.ok()?;
    let runs: serde_json::Value = serde_json::from_str(&out.stdout)?;
    let waiting = runs
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["sop"] == "host-cleanup" && r["state"] == "waiting")
        .count();
    assert_eq!(waiting, 2, "{runs}");
    let (acked, missing, lost) = writer.finish(&w, eps(&f, 3)).await?;
    assert!(acked > 0);
    assert_eq!((missing, lost), (0, 0), "{acked} acked");
    Ok(())
}
