//! Golden plans: `quorum <sop> --plan -o json` of every etcd SOP, against a real cluster on
//! 127.0.0.61-64 in a known state, compared with `tests/golden/plans/<name>.json` after
//! everything that differs between runs is normalised (see [`Norm`]). A refactor of the
//! coordinator that changes no behaviour leaves every golden as it is.
//!
//! `QUORUM_BLESS=1 cargo test -p quorum-tests --test plan_golden` (re)writes the goldens;
//! without it a missing or different golden fails the test with the first differing lines.
//!
//! One cluster serves every phase (each costs seconds to set up). Each phase writes the
//! inventory it plans against first and only plans (changes nothing), so a failing phase
//! does not change what the next one sees; every phase runs, and the failure names each
//! SOP whose plan differs. The destructive parts come in the order they must: `cluster
//! create` runs once (its plan before, and again after), and a host is killed for the last
//! phase (the removal of a dead host's member).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use quorum_tests::etcd::{move_leader_to, Fleet};
use quorum_tests::World;
use serde_json::Value;

const IPS: [&str; 4] = ["127.0.0.61", "127.0.0.62", "127.0.0.63", "127.0.0.64"];

/// The member that leads while rolls are planned: etcd-2, so the roll order (followers
/// first, the leader last) differs from inventory order and the golden shows the rule.
const LEADER: usize = 1;

/// Every inventory of this test sets it (the default, named so `cluster remove` is planned
/// with the safeguard off whatever the default becomes).
const BASE_VARS: &str = "etcd_safeguard: false";

/// (ip, etcd_seq) of the first `n` hosts.
fn members(n: usize) -> Vec<(&'static str, u32)> {
    IPS.iter()
        .take(n)
        .zip(1..)
        .map(|(ip, s)| (*ip, s))
        .collect()
}

/// The client endpoints of the hosts `idx`.
fn endpoints(f: &Fleet, idx: &[usize]) -> Vec<String> {
    idx.iter().map(|i| f.client_url(f.hosts[*i].ip)).collect()
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("golden/plans")
}

fn blessing() -> bool {
    std::env::var_os("QUORUM_BLESS").is_some_and(|v| !v.is_empty() && v != "0")
}

/// What differs between runs, and what replaces it in a golden:
/// - the World's temp dir, in every path of a diff -> `<dir>`;
/// - the random ports (a whole run of digits equal to one) -> `<client-port>`, `<peer-port>`,
///   `<coordinator-port>`;
/// - etcd's member ids (random per cluster; hex as the plan prints them) -> `<id:etcd-N>`,
///   named after the member etcd lists with that id, so a golden still shows that each wipe
///   names its own member; the cluster id -> `<cluster-id>`;
/// - `run_id` and `inventory_digest` (the inventory holds the dir and ports), when set;
/// - times (`*_unix_ms`, `duration_ms`), when set: a plan has only its creation time.
///
/// Nothing else is: no pid, snapshot id or path appears in a plan today, and one that
/// appears makes the golden differ, as it should. The leader, which orders every roll, is
/// not normalised but made so (see [`plan_led_by`]).
struct Norm {
    /// The World's temp dir -> `<dir>`.
    dir: String,
    /// Port -> placeholder (`<client-port>`, `<peer-port>`, `<coordinator-port>`).
    ports: Vec<(String, &'static str)>,
    /// etcd member id (hex, as the plan prints it) -> `<id:etcd-N>`; the cluster id ->
    /// `<cluster-id>`.
    ids: Vec<(String, String)>,
}

impl Norm {
    fn new(w: &World, f: &Fleet) -> Self {
        Self {
            dir: w.dir.path().display().to_string(),
            ports: vec![
                (f.port.to_string(), "<client-port>"),
                (f.peer_port.to_string(), "<peer-port>"),
                (w.listen.port().to_string(), "<coordinator-port>"),
            ],
            ids: Vec::new(),
        }
    }

    /// Learns the ids of the members etcd lists now (asked of `eps` one at a time).
    async fn learn_ids(&mut self, w: &World, eps: &[String]) -> Result<()> {
        for ep in eps {
            let Ok(mut c) = quorum_tests::etcd::client(w, std::slice::from_ref(ep)).await else {
                continue;
            };
            let Ok(list) = c.member_list().await else {
                continue;
            };
            self.ids.clear();
            for m in list.members() {
                self.ids
                    .push((format!("{:x}", m.id()), format!("<id:{}>", m.name())));
            }
            if let Some(h) = list.header() {
                self.ids
                    .push((format!("{:x}", h.cluster_id()), "<cluster-id>".into()));
            }
            return Ok(());
        }
        bail!("no member of {eps:?} listed the members")
    }

    /// One string with every varying part replaced.
    fn text(&self, s: &str) -> String {
        let s = s.replace(&self.dir, "<dir>");
        let s = replace_tokens(
            &s,
            |c| c.is_ascii_hexdigit(),
            |t| {
                self.ids
                    .iter()
                    .find(|(id, _)| id == t)
                    .map(|(_, r)| r.clone())
            },
        );
        replace_tokens(
            &s,
            |c| c.is_ascii_digit(),
            |t| {
                self.ports
                    .iter()
                    .find(|(p, _)| p == t)
                    .map(|(_, r)| r.to_string())
            },
        )
    }

    /// The plan JSON with every varying value replaced and keys sorted.
    fn value(&self, key: &str, v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let sorted: BTreeMap<&String, &Value> = m.iter().collect();
                let mut out = serde_json::Map::new();
                for (k, v) in sorted {
                    out.insert(k.clone(), self.value(k, v));
                }
                Value::Object(out)
            }
            Value::Array(a) => Value::Array(a.iter().map(|v| self.value(key, v)).collect()),
            Value::String(s) => match key {
                "run_id" if !s.is_empty() => Value::String("<run-id>".into()),
                "inventory_digest" if !s.is_empty() => Value::String("<digest>".into()),
                // A diff (any text of several lines) as the array of its lines (split at
                // '\n', so one that ends with a newline ends with ""): a golden that differs
                // then shows the line of the file that differs, not one long string.
                _ if s.contains('\n') => Value::Array(
                    self.text(s)
                        .split('\n')
                        .map(|l| Value::String(l.to_string()))
                        .collect(),
                ),
                _ => Value::String(self.text(s)),
            },
            // Times and durations: a plan has none yet except when it was made; a set one
            // becomes a placeholder, an unset one (0 or null) stays as it is.
            Value::Number(n)
                if (key.ends_with("_unix_ms") || key == "duration_ms") && n.as_i64() != Some(0) =>
            {
                Value::String(format!("<{key}>"))
            }
            other => other.clone(),
        }
    }
}

/// `s` with every maximal run of characters for which `class` holds, that `map` knows,
/// replaced by what it maps to (whole runs only: port 4123 is not replaced inside 41234).
fn replace_tokens(
    s: &str,
    class: impl Fn(char) -> bool,
    map: impl Fn(&str) -> Option<String>,
) -> String {
    let mut out = String::with_capacity(s.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        match map(run) {
            Some(r) => out.push_str(&r),
            None => out.push_str(run),
        }
        run.clear();
    };
    for c in s.chars() {
        if class(c) {
            run.push(c);
        } else {
            if !run.is_empty() {
                flush(&mut run, &mut out);
            }
            out.push(c);
        }
    }
    if !run.is_empty() {
        flush(&mut run, &mut out);
    }
    out
}

/// `quorum ARGS --plan -o json`, parsed.
fn plan(w: &World, args: &[&str]) -> Result<Value> {
    let mut a = args.to_vec();
    a.extend_from_slice(&["--plan", "-o", "json"]);
    let out = w.admin(&a)?.ok()?;
    serde_json::from_str(&out.stdout)
        .with_context(|| format!("the plan is not JSON:\n{}", out.stdout))
}

/// (leader id, raft term) as one of `eps` sees it.
async fn leader_term(w: &World, eps: &[String]) -> Result<(u64, u64)> {
    for ep in eps {
        let Ok(mut c) = quorum_tests::etcd::client(w, std::slice::from_ref(ep)).await else {
            continue;
        };
        if let Ok(st) = c.status().await {
            if st.leader() != 0 {
                return Ok((st.leader(), st.raft_term()));
            }
        }
    }
    bail!("no member of {eps:?} named a leader")
}

/// The plan of `args` made while `leader` led throughout: leadership is handed to it first,
/// and a plan during which the leader or the term changed (an election on a loaded
/// machine) is made again, so the roll order in a golden never depends on luck.
async fn plan_led_by(w: &World, eps: &[String], leader: IpAddr, args: &[&str]) -> Result<Value> {
    for _ in 0..5 {
        move_leader_to(w, eps, leader).await?;
        let before = leader_term(w, eps).await?;
        let p = plan(w, args)?;
        if leader_term(w, eps).await? == before {
            return Ok(p);
        }
    }
    bail!("leadership kept moving while planning {args:?}")
}

/// The kinds of the plan's steps.
fn kinds(p: &Value) -> Vec<String> {
    p["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["kind"].as_str().map(str::to_string))
        .collect()
}

/// Whether some step of the plan shows a file change.
fn has_diff(p: &Value) -> bool {
    p["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|s| s["diff"].as_str().is_some_and(|d| !d.is_empty()))
}

/// Compares the normalised plan with `golden/plans/<name>.json` (or writes it, blessing).
fn check_golden(name: &str, norm: &Norm, plan: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(&norm.value("", plan))? + "\n";
    let path = golden_dir().join(format!("{name}.json"));
    if blessing() {
        std::fs::create_dir_all(golden_dir())?;
        if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            std::fs::write(&path, &text)?;
            eprintln!("blessed {}", path.display());
        }
        return Ok(());
    }
    let bless_hint = "if the change is intended, bless it: QUORUM_BLESS=1 cargo test -p quorum-tests --test plan_golden (then review `git diff tests/golden`)";
    let Ok(want) = std::fs::read_to_string(&path) else {
        bail!(
            "golden {} is missing; {bless_hint}. The plan now:\n{text}",
            path.display()
        );
    };
    if want == text {
        return Ok(());
    }
    bail!(
        "the plan differs from golden {}:\n{}\n{bless_hint}",
        path.display(),
        first_difference(&want, &text)
    )
}

/// Where `want` and `got` (golden texts) first differ: the part of the plan (a step is
/// named by its index, kind and host), then the first differing lines as a hunk (golden
/// lines `-`, plan lines `+`) with a little context.
fn first_difference(want: &str, got: &str) -> String {
    let w: Vec<&str> = want.lines().collect();
    let g: Vec<&str> = got.lines().collect();
    let at = w
        .iter()
        .zip(&g)
        .position(|(a, b)| a != b)
        .unwrap_or(w.len().min(g.len()));
    // Where the two agree again: the nearest pair of lines from which 3 lines (or the ends)
    // match, so an inserted or dropped step shows as such.
    let agree = |i: usize, j: usize| {
        (0..3).all(|k| match (w.get(i + k), g.get(j + k)) {
            (Some(a), Some(b)) => a == b,
            (None, None) => true,
            _ => false,
        })
    };
    let (end_w, end_g) = (0..=(w.len() + g.len()))
        .flat_map(|d| (0..=d).map(move |i| (at + i, at + d - i)))
        .find(|(i, j)| *i <= w.len() && *j <= g.len() && agree(*i, *j))
        .unwrap_or((w.len(), g.len()));
    let mut out = format!(
        "first difference in {}, at line {} (golden {} lines, plan {} lines):\n",
        differing_part(want, got),
        at + 1,
        w.len(),
        g.len()
    );
    const MAX: usize = 20;
    for (i, l) in w.iter().enumerate().take(at).skip(at.saturating_sub(3)) {
        out.push_str(&format!("  {:>4}   {l}\n", i + 1));
    }
    for (i, l) in w.iter().enumerate().take(end_w).skip(at).take(MAX) {
        out.push_str(&format!("  {:>4} - {l}\n", i + 1));
    }
    for (i, l) in g.iter().enumerate().take(end_g).skip(at).take(MAX) {
        out.push_str(&format!("  {:>4} + {l}\n", i + 1));
    }
    if end_w - at > MAX || end_g - at > MAX {
        out.push_str("  ... (the hunk goes on)\n");
    }
    for (i, l) in g.iter().enumerate().skip(end_g).take(2) {
        out.push_str(&format!("  {:>4}   {l}\n", i + 1));
    }
    if w[end_w.min(w.len())..] != g[end_g.min(g.len())..] {
        out.push_str("  (and more differences after this one)\n");
    }
    out
}

/// The first part of the plan that differs: a top-level key, or `steps[i] (Kind host)`.
fn differing_part(want: &str, got: &str) -> String {
    let (Ok(w), Ok(g)) = (
        serde_json::from_str::<Value>(want),
        serde_json::from_str::<Value>(got),
    ) else {
        return "the text (the golden is not JSON)".into();
    };
    let (Some(wm), Some(gm)) = (w.as_object(), g.as_object()) else {
        return "the whole plan".into();
    };
    let mut keys: Vec<&String> = wm.keys().chain(gm.keys()).collect();
    keys.sort();
    keys.dedup();
    let Some(key) = keys.into_iter().find(|k| wm.get(*k) != gm.get(*k)) else {
        return "the text".into();
    };
    if key != "steps" {
        return format!("`{key}`");
    }
    let empty = Vec::new();
    let ws = w["steps"].as_array().unwrap_or(&empty);
    let gs = g["steps"].as_array().unwrap_or(&empty);
    let i = (0..ws.len().max(gs.len()))
        .find(|i| ws.get(*i) != gs.get(*i))
        .unwrap_or(0);
    let step = ws.get(i).or(gs.get(i)).unwrap_or(&Value::Null);
    format!(
        "steps[{i}] ({} {})",
        step["kind"].as_str().unwrap_or("?"),
        step["host"].as_str().unwrap_or("")
    )
}

/// Records one phase's outcome: a failure (a golden that differs, or a plan that could not
/// be made) is kept, named after the golden, and the next phase runs.
fn record(failures: &mut Vec<String>, name: &str, r: Result<()>) {
    if let Err(e) = r {
        failures.push(format!("=== {name}: {e:#}"));
    }
}

/// Every etcd SOP's plan, in the states the SOPs meet in practice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_etcd_sop_plans_the_golden_steps() -> Result<()> {
    let mut w = World::new()?;
    w.coordinator_extra =
        "gate_timeout_secs: 30\nstale_after_secs: 10\ntask_timeout_secs: 60\n".into();
    let f = Fleet::new(&w, &IPS)?;
    f.write_inventory(&w, &members(3), BASE_VARS)?;
    w.start_coordinator()?;
    f.start_agents(&mut w)?;
    let mut norm = Norm::new(&w, &f);
    let mut failures = Vec::new();
    let leader = f.hosts[LEADER].ip;
    let all3 = endpoints(&f, &[0, 1, 2]);

    // Fresh hosts: the whole creation.
    let r = (|| {
        let p = plan(&w, &["cluster", "create"])?;
        anyhow::ensure!(
            has_diff(&p),
            "a create plan on fresh hosts shows no etcd.conf"
        );
        check_golden("cluster-create", &norm, &p)
    })();
    record(&mut failures, "cluster-create", r);

    let out = w.admin(&["cluster", "create", "--yes"])?;
    anyhow::ensure!(out.code == 0, "create failed: {out:?}");
    norm.learn_ids(&w, &all3).await?;

    // Created: nothing to change.
    let r = async {
        let p = plan_led_by(&w, &all3, leader, &["cluster", "create"]).await?;
        anyhow::ensure!(kinds(&p) == ["ClusterHealthGate"], "{p:#}");
        check_golden("cluster-create-again", &norm, &p)
    }
    .await;
    record(&mut failures, "cluster-create-again", r);

    // A var that changes etcd.conf: diffs, and a roll with the leader last.
    let r = async {
        f.write_inventory(
            &w,
            &members(3),
            &format!("{BASE_VARS}\netcd_election_timeout: 1500"),
        )?;
        let p = plan_led_by(&w, &all3, leader, &["config", "reload"]).await?;
        anyhow::ensure!(has_diff(&p), "no diff planned: {p:#}");
        check_golden("config-reload", &norm, &p)
    }
    .await;
    record(&mut failures, "config-reload", r);

    // Nothing changed, every member restarted anyway.
    let r = async {
        f.write_inventory(&w, &members(3), BASE_VARS)?;
        let p = plan_led_by(&w, &all3, leader, &["config", "reload", "--restart"]).await?;
        check_golden("config-reload-restart", &norm, &p)
    }
    .await;
    record(&mut failures, "config-reload-restart", r);

    let r = async {
        f.write_inventory(&w, &members(3), BASE_VARS)?;
        let p = plan_led_by(&w, &all3, leader, &["env", "refresh"]).await?;
        check_golden("env-refresh", &norm, &p)
    }
    .await;
    record(&mut failures, "env-refresh", r);

    // The leader's restart: leadership is handed away first.
    let r = async {
        f.write_inventory(&w, &members(3), BASE_VARS)?;
        let args = ["service", "restart", "etcd", "--hosts", IPS[LEADER]];
        let p = plan_led_by(&w, &all3, leader, &args).await?;
        check_golden("service-restart-etcd", &norm, &p)
    }
    .await;
    record(&mut failures, "service-restart-etcd", r);

    // Pigsty's order: the host goes into the inventory, then `member add`.
    let r = async {
        f.write_inventory(&w, &members(4), BASE_VARS)?;
        let p = plan_led_by(&w, &all3, leader, &["member", "add", IPS[3]]).await?;
        check_golden("member-add", &norm, &p)
    }
    .await;
    record(&mut failures, "member-add", r);

    // Pigsty's order: the host leaves the inventory, then `member remove`.
    let r = async {
        f.write_inventory(&w, &members(2), BASE_VARS)?;
        let p = plan_led_by(&w, &all3, leader, &["member", "remove", IPS[2]]).await?;
        anyhow::ensure!(kinds(&p).iter().any(|k| k == "WipeRemovedMember"), "{p:#}");
        check_golden("member-remove", &norm, &p)
    }
    .await;
    record(&mut failures, "member-remove", r);

    let r = async {
        f.write_inventory(&w, &members(3), BASE_VARS)?;
        let p = plan_led_by(&w, &all3, leader, &["cluster", "remove"]).await?;
        check_golden("cluster-remove", &norm, &p)
    }
    .await;
    record(&mut failures, "cluster-remove", r);

    let r = async {
        f.write_inventory(&w, &members(3), BASE_VARS)?;
        let p = plan_led_by(&w, &all3, leader, &["cluster", "purge"]).await?;
        check_golden("cluster-purge", &norm, &p)
    }
    .await;
    record(&mut failures, "cluster-purge", r);

    // Last, as it cannot be undone here: etcd-3's host dies (agent and etcd killed), its
    // agent goes stale, and it leaves the inventory; its cleanup is deferred.
    let r = async {
        w.agent(IPS[2]).context("the agent of etcd-3")?.kill();
        if let Some(pid) = f.hosts[2].etcd_pid() {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            )?;
        }
        w.wait_agent_state(IPS[2], &["stale"], Duration::from_secs(40))?;
        f.write_inventory(&w, &members(2), BASE_VARS)?;
        let survivors = endpoints(&f, &[0, 1]);
        let p = plan_led_by(&w, &survivors, leader, &["member", "remove", IPS[2]]).await?;
        anyhow::ensure!(kinds(&p).iter().any(|k| k == "DeferCleanup"), "{p:#}");
        check_golden("member-remove-dead-host", &norm, &p)
    }
    .await;
    record(&mut failures, "member-remove-dead-host", r);

    if !failures.is_empty() {
        bail!(
            "{} of the etcd SOPs' plans failed:\n\n{}",
            failures.len(),
            failures.join("\n\n")
        );
    }
    Ok(())
}

/// The reporter names the step and shows a dropped step as a hunk of `-` lines only; the
/// normaliser replaces whole runs only (no cluster: pure functions).
#[test]
fn a_differing_golden_is_reported_by_step_and_hunk() -> Result<()> {
    let step = |i: u32, kind: &str| serde_json::json!({"index": i, "kind": kind, "host": "h"});
    let want = serde_json::to_string_pretty(&serde_json::json!({
        "sop": "x",
        "steps": [step(0, "A"), step(1, "B"), step(2, "C")],
    }))?;
    let got = serde_json::to_string_pretty(&serde_json::json!({
        "sop": "x",
        "steps": [step(0, "A"), step(2, "C")],
    }))?;
    let report = first_difference(&want, &got);
    assert!(
        report.contains("first difference in steps[1] (B h)"),
        "{report}"
    );
    let minus = report.lines().filter(|l| l.contains(" - ")).count();
    let plus = report.lines().filter(|l| l.contains(" + ")).count();
    assert!(minus > 0 && plus <= 1, "{report}");
    let ports = |t: &str| -> Option<String> { (t == "4123").then(|| "<p>".into()) };
    assert_eq!(
        replace_tokens(":4123/ :41234 4123", |c| c.is_ascii_digit(), ports),
        ":<p>/ :41234 <p>"
    );
    Ok(())
}
