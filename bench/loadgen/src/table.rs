//! The one Markdown table `bench/run.sh` prints: every figure of the results file next to its
//! target, with the machine and the versions it was measured on. A figure missing from the
//! results (a skipped phase) shows as "–".

use std::collections::BTreeMap;

/// How a figure is judged against its target.
#[derive(Clone, Copy)]
enum Check {
    /// No target: informational.
    None,
    /// Met when the value is below the bound.
    Below(f64),
}

struct Table<'a> {
    r: &'a BTreeMap<String, String>,
    rows: Vec<[String; 5]>,
}

impl<'a> Table<'a> {
    fn get(&self, key: &str) -> Option<&'a str> {
        self.r.get(key).map(String::as_str)
    }

    /// The value of `key` with `unit`, or "–".
    fn val(&self, key: &str, unit: &str) -> String {
        match self.get(key) {
            Some(v) if unit.is_empty() => v.to_string(),
            Some(v) => format!("{v} {unit}"),
            None => "–".into(),
        }
    }

    fn verdict(&self, key: &str, check: Check) -> String {
        let Some(v) = self.get(key).and_then(|v| v.parse::<f64>().ok()) else {
            return String::new();
        };
        match check {
            Check::None => String::new(),
            Check::Below(bound) if v < bound => "yes".into(),
            Check::Below(_) => "**NO**".into(),
        }
    }

    fn row(&mut self, area: &str, what: &str, value: String, target: &str, verdict: String) {
        self.rows
            .push([area.into(), what.into(), value, target.into(), verdict]);
    }

    /// A row for one key.
    fn figure(&mut self, area: &str, what: &str, key: &str, unit: &str, target: &str, c: Check) {
        let value = self.val(key, unit);
        let verdict = self.verdict(key, c);
        self.row(area, what, value, target, verdict);
    }

    fn render(&self) -> String {
        let mut out =
            String::from("| area | measure | value | target | met |\n|---|---|---|---|---|\n");
        for r in &self.rows {
            out.push_str(&format!("| {} |\n", r.join(" | ")));
        }
        out
    }
}

/// Renders the table from the results.
pub fn render(r: &BTreeMap<String, String>) -> String {
    let mut t = Table {
        r,
        rows: Vec::new(),
    };
    let machine = format!(
        "{} cores ({}), {} GiB RAM, Linux {}",
        t.val("machine.cores", ""),
        t.val("machine.cpu", ""),
        t.val("machine.mem_gib", ""),
        t.val("machine.kernel", ""),
    );
    t.row("machine", "where it ran", machine, "", String::new());
    let load = format!(
        "{} at the start, {} at the end (other work on the machine skews every figure)",
        t.val("machine.load_start", ""),
        t.val("machine.load_end", ""),
    );
    t.row("machine", "load average (1 min)", load, "", String::new());
    let versions = format!(
        "quorum {} ({}), etcd {}, rustc {}",
        t.val("version.quorum", ""),
        t.val("version.git", ""),
        t.val("version.etcd", ""),
        t.val("version.rustc", ""),
    );
    t.row("versions", "measured build", versions, "", String::new());

    let idle = t.val("agent.idle_secs", "s");
    t.figure(
        "1 agent",
        "VmRSS, connected and idle",
        "agent.rss_mib",
        "MiB",
        "< 10 MiB",
        Check::Below(10.0),
    );
    t.figure(
        "1 agent",
        "VmHWM (peak RSS) at that point",
        "agent.hwm_mib",
        "MiB",
        "",
        Check::None,
    );
    let cpu = format!(
        "{} ({} % of a core); children {}",
        t.val("agent.idle_cpu_ms", "ms"),
        t.val("agent.idle_cpu_pct", ""),
        t.val("agent.children_cpu_ms", "ms"),
    );
    let cpu_ok = t.verdict("agent.idle_cpu_pct", Check::Below(0.1));
    t.row(
        "1 agent",
        &format!("CPU (utime+stime) over {idle} idle"),
        cpu,
        "~0 (< 0.1 %)",
        cpu_ok,
    );
    t.figure(
        "1 agent",
        "quorum-agent binary, stripped release",
        "bin.quorum_agent_mib",
        "MiB",
        "< 15 MiB",
        Check::Below(15.0),
    );
    t.figure(
        "1 agent",
        "quorum binary, stripped release",
        "bin.quorum_mib",
        "MiB",
        "",
        Check::None,
    );

    let n = t.val("dispatch.count", "");
    let what = format!("facts task queued → reported, p50 / p99 / max of {n}");
    let lat = format!(
        "{} / {} / {} ms",
        t.val("dispatch.p50_ms", ""),
        t.val("dispatch.p99_ms", ""),
        t.val("dispatch.max_ms", "")
    );
    let ok = t.verdict("dispatch.p99_ms", Check::Below(10.0));
    t.row("2 dispatch", &what, lat, "p99 < 10 ms", ok);
    let lat = format!(
        "{} / {} / {} ms",
        t.val("dispatch_sim.p50_ms", ""),
        t.val("dispatch_sim.p99_ms", ""),
        t.val("dispatch_sim.max_ms", "")
    );
    t.row(
        "2 dispatch",
        "same to a simulated agent (coordinator + wire only)",
        lat,
        "",
        String::new(),
    );

    let fleets: Vec<String> = t
        .get("fleet.list")
        .unwrap_or("")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    for n in &fleets {
        let k = |s: &str| format!("fleet.{n}.{s}");
        let area = format!("3 fleet N={n}");
        let rss_target = if n == "10000" {
            "< 500 MiB at 10,000"
        } else {
            ""
        };
        let rss_check = if n == "10000" {
            Check::Below(500.0)
        } else {
            Check::None
        };
        t.figure(
            &area,
            "coordinator VmRSS, all connected",
            &k("coord_rss_mib"),
            "MiB",
            rss_target,
            rss_check,
        );
        t.figure(
            &area,
            "coordinator VmHWM after the fan-out",
            &k("coord_hwm_mib"),
            "MiB",
            "",
            Check::None,
        );
        let idle = format!(
            "{} % of a core ({} over {})",
            t.val(&k("coord_idle_cpu_pct"), ""),
            t.val(&k("coord_idle_cpu_ms"), "ms"),
            t.val(&k("idle_secs"), "s"),
        );
        t.row(
            &area,
            "coordinator CPU, all idle in held polls",
            idle,
            "",
            String::new(),
        );
        let conn = format!(
            "{} (handshake p50 {} / p99 {} ms; coordinator CPU {})",
            t.val(&k("connect_s"), "s"),
            t.val(&k("handshake_p50_ms"), ""),
            t.val(&k("handshake_p99_ms"), ""),
            t.val(&k("connect_cpu_ms"), "ms"),
        );
        t.row(
            &area,
            "time until all N are listed connected",
            conn,
            "",
            String::new(),
        );
        let fan = format!(
            "{} / {} / {} ms, {} errors (CPU: coordinator {}, loadgen {}; agents on {})",
            t.val(&k("fanout_p50_ms"), ""),
            t.val(&k("fanout_p99_ms"), ""),
            t.val(&k("fanout_max_ms"), ""),
            t.val(&k("fanout_errors"), ""),
            t.val(&k("fanout_cpu_ms"), "ms"),
            t.val(&k("fanout_loadgen_cpu_ms"), "ms"),
            t.val(&k("protocol"), ""),
        );
        let ok = t.verdict(&k("fanout_p99_ms"), Check::Below(1000.0));
        t.row(
            &area,
            "fan-out of one task to all N: p50 / p99 / max",
            fan,
            "p99 < 1 s",
            ok,
        );
    }

    let renewals: Vec<String> = t
        .get("renew.list")
        .unwrap_or("")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    for n in &renewals {
        let k = |s: &str| format!("renew.{n}.{s}");
        let area = format!("6 renewal N={n}");
        let round = format!(
            "{} ({} a second, {} in flight; {} errors)",
            t.val(&k("wall_s"), "s"),
            t.val(&k("per_s"), ""),
            t.val(&k("concurrency"), ""),
            t.val(&k("errors"), ""),
        );
        t.row(
            &area,
            "every agent renews once, all at once",
            round,
            "",
            String::new(),
        );
        let cpu = format!(
            "{} per renewal ({} for all; loadgen {})",
            t.val(&k("coord_cpu_per_renewal_ms"), "ms"),
            t.val(&k("coord_cpu_ms"), "ms"),
            t.val(&k("loadgen_cpu_ms"), "ms"),
        );
        t.row(
            &area,
            "coordinator CPU (sign, store, new connection, session)",
            cpu,
            "",
            String::new(),
        );
        let lat = format!(
            "{} / {} ms; new connection + session {} / {} ms",
            t.val(&k("renew_p50_ms"), ""),
            t.val(&k("renew_p99_ms"), ""),
            t.val(&k("take_up_p50_ms"), ""),
            t.val(&k("take_up_p99_ms"), ""),
        );
        t.row(&area, "`Renew` call p50 / p99", lat, "", String::new());
        let mem = format!(
            "{} before, {} after; store +{}",
            t.val(&k("coord_rss_before_mib"), "MiB"),
            t.val(&k("coord_rss_after_mib"), "MiB"),
            t.val(&k("store_growth_kib"), "KiB"),
        );
        t.row(&area, "coordinator VmRSS", mem, "", String::new());
        let deny = format!(
            "{} serials; CRL {} exported in {}",
            t.val(&k("revoked"), ""),
            t.val(&k("crl_kib"), "KiB"),
            t.val(&k("crl_ms"), "ms"),
        );
        t.row(&area, "deny list after the round", deny, "", String::new());
    }

    if t.get("failover.rounds").is_some() {
        let area = format!(
            "7 failover ({} rounds)",
            t.get("failover.rounds").unwrap_or("?")
        );
        let lease = format!(
            "{} / {} (lease {} s, renewed every {} s)",
            t.val("failover.lease_p50_ms", "ms"),
            t.val("failover.lease_max_ms", "ms"),
            t.get("failover.lease_ttl_s").unwrap_or("?"),
            t.get("failover.renew_s").unwrap_or("?"),
        );
        t.row(
            &area,
            "kill -9 of the leader -> standby holds the lease: p50 / max",
            lease,
            "",
            String::new(),
        );
        let step = format!(
            "{} / {}",
            t.val("failover.step_p50_ms", "ms"),
            t.val("failover.step_max_ms", "ms"),
        );
        let ok = t.verdict("failover.step_max_ms", Check::Below(20_000.0));
        t.row(
            &area,
            "kill -9 of the leader -> next step started by the standby: p50 / max",
            step,
            "max < 20 s",
            ok,
        );
    }

    let members: Vec<String> = r
        .iter()
        .filter_map(|(key, v)| {
            let host = key.strip_prefix("sop.member.")?.strip_suffix("_s")?;
            Some(format!("{host} {v} s"))
        })
        .collect();
    t.figure(
        "4 SOP",
        "`config reload --restart`, 3 members, wall clock (last round)",
        "sop.wall_s",
        "s",
        "",
        Check::None,
    );
    let sum = format!(
        "{} ({})",
        t.val("sop.member_sum_s", "s"),
        members.join(", ")
    );
    t.row(
        "4 SOP",
        "sum of members' RestartEtcd + HealthGate (last round)",
        sum,
        "",
        String::new(),
    );
    let rounds: Vec<String> = (1..=t
        .get("sop.rounds")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0u32))
        .map(|n| {
            format!(
                "{} ms / {} ms, order {}",
                t.val(&format!("sop.r{n}.wall_ms"), ""),
                t.val(&format!("sop.r{n}.floor_ms"), ""),
                t.val(&format!("sop.r{n}.order"), ""),
            )
        })
        .collect();
    t.row(
        "4 SOP",
        "each round: SOP wall / physical floor just before it (same fleet, same restart command: restart → serving a linearizable read, per member, leader last, summed)",
        rounds.join("; "),
        "leader last",
        String::new(),
    );
    let totals = format!(
        "{} / {} over {} rounds",
        t.val("sop.wall_total_s", "s"),
        t.val("sop.floor_total_s", "s"),
        t.val("sop.rounds", ""),
    );
    t.row(
        "4 SOP",
        "Σ SOP wall / Σ physical floor",
        totals,
        "",
        String::new(),
    );
    t.figure(
        "4 SOP",
        "ratio Σ wall / Σ physical floor",
        "sop.floor_ratio",
        "",
        "≤ 1.3",
        Check::Below(1.3),
    );
    t.figure(
        "4 SOP",
        "Σ restart commands: SOP's RestartEtcd steps / floor's (etcd's own stop, random)",
        "sop.restarts_total_s",
        "s",
        "",
        Check::None,
    );
    t.figure(
        "4 SOP",
        "ratio without the restart commands: SOP rest / floor rest (start → serving)",
        "sop.rest_ratio",
        "",
        "",
        Check::None,
    );
    t.figure(
        "4 SOP",
        "ratio wall / its own RestartEtcd + HealthGate",
        "sop.ratio",
        "",
        "",
        Check::None,
    );
    let inside = format!(
        "{} (guards + writes {}, between steps {})",
        t.val("sop.span_ratio", ""),
        t.val("sop.other_steps_s", "s"),
        t.val("sop.gaps_s", "s"),
    );
    t.row(
        "4 SOP",
        "ratio first step → last step / sum",
        inside,
        "",
        String::new(),
    );

    t.figure(
        "5 profile",
        "coordinator, fan-out: top self frames",
        "profile.coordinator_top",
        "",
        "",
        Check::None,
    );
    t.figure(
        "5 profile",
        "coordinator, idle fleet: top self frames",
        "profile.coordinator_idle_top",
        "",
        "",
        Check::None,
    );
    let agent = match t.get("profile.agent_children_pct") {
        Some(pct) => format!(
            "{}; {pct} % of all samples in its child processes",
            t.val("profile.agent_top", "")
        ),
        None => t.val("profile.agent_top", ""),
    };
    t.row(
        "5 profile",
        "agent, dispatch loop: top self frames",
        agent,
        "",
        String::new(),
    );
    t.figure(
        "run",
        "bench/run.sh wall clock (build included)",
        "run.total_s",
        "s",
        "< 600 s",
        Check::Below(600.0),
    );
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judges_figures_and_marks_missing_ones() {
        let r = crate::results::parse(
            "agent.rss_mib=6.5\ndispatch.p99_ms=12.0\nfleet.list=100\nfleet.100.fanout_p99_ms=40\n",
        );
        let out = render(&r);
        assert!(out.contains("| 6.5 MiB | < 10 MiB | yes |"), "{out}");
        assert!(out.contains("p99 < 10 ms | **NO** |"), "{out}");
        assert!(out.contains("3 fleet N=100"), "{out}");
        assert!(out.contains("| – |"), "{out}");
        assert_eq!(out.lines().filter(|l| l.starts_with("|---")).count(), 1);
    }
}
