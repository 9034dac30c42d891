//! Service backends: `systemd` (`systemctl ACTION UNIT`, status from `systemctl is-active`,
//! start as `systemctl enable --now UNIT`)
//! and `exec` (one argv per action from the agent config, run without a shell, with a
//! timeout). Output goes to a file, not a pipe, so a daemon that inherits it cannot make the
//! agent wait; errors carry the exit status and the tail of the output.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use quorum_proto::pb;

use crate::config::{AgentConfig, BackendKind};
use crate::journal::{tail, OUTPUT_CAP};

/// How much of the end of a log file is read for its last lines.
const LOG_TAIL_BYTES: u64 = 64 * 1024;

/// A managed service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Svc {
    /// etcd.
    Etcd,
    /// Patroni.
    Patroni,
    /// vip-manager.
    VipManager,
    /// vmalert (Pigsty v4's rule engine), reloaded after Quorum's rules change.
    Vmalert,
    /// Prometheus (Pigsty v3's), reloaded after Quorum's rules change.
    Prometheus,
}

impl Svc {
    /// From the wire.
    pub fn from_pb(s: pb::Service) -> Option<Self> {
        match s {
            pb::Service::Etcd => Some(Svc::Etcd),
            pb::Service::Patroni => Some(Svc::Patroni),
            pb::Service::VipManager => Some(Svc::VipManager),
            pb::Service::Unspecified => None,
        }
    }
    /// The key in the config's `exec:` map.
    pub fn exec_key(self) -> &'static str {
        match self {
            Svc::Etcd => "etcd",
            Svc::Patroni => "patroni",
            Svc::VipManager => "vip_manager",
            Svc::Vmalert => "vmalert",
            Svc::Prometheus => "prometheus",
        }
    }
    /// The name in facts.
    pub fn fact_key(self) -> &'static str {
        match self {
            Svc::Etcd => "etcd",
            Svc::Patroni => "patroni",
            Svc::VipManager => "vip-manager",
            Svc::Vmalert => "vmalert",
            Svc::Prometheus => "prometheus",
        }
    }
    /// The services whose state the facts report.
    pub const ALL: [Svc; 3] = [Svc::Etcd, Svc::Patroni, Svc::VipManager];
}

/// A failed service command.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// Not configured.
    #[error("no `{action}` command for {service} under exec: in {config}; add one or use service_backend: systemd")]
    NotConfigured {
        /// Service.
        service: &'static str,
        /// Action.
        action: String,
        /// Config path.
        config: String,
    },
    /// Could not start the command.
    #[error("cannot run {argv}: {source}")]
    Spawn {
        /// The command.
        argv: String,
        /// The error.
        source: std::io::Error,
    },
    /// Timed out (killed).
    #[error("{argv} did not finish within {secs} s and was killed; output:\n{output}")]
    Timeout {
        /// The command.
        argv: String,
        /// The limit.
        secs: u64,
        /// Output so far.
        output: String,
    },
    /// Non-zero exit.
    #[error("{argv} exited with {status}; output:\n{output}")]
    Failed {
        /// The command.
        argv: String,
        /// Exit status.
        status: String,
        /// Output tail.
        output: String,
    },
}

/// A service's state as the backend read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The state; `Unknown` when the backend could not tell.
    pub state: pb::ServiceState,
    /// Why the state is unknown (`None` when it is known).
    pub why: Option<String>,
}

impl Probe {
    fn unknown(why: String) -> Self {
        Self {
            state: pb::ServiceState::Unknown,
            why: Some(why),
        }
    }

    /// Whether the service is positively stopped (`inactive` or `failed`): the only states in
    /// which its data may be wiped.
    pub fn is_stopped(&self) -> bool {
        matches!(
            self.state,
            pb::ServiceState::Inactive | pb::ServiceState::Failed
        )
    }
}

/// A service's last transitions as systemd recorded them ([`Backend::transitions`]).
#[derive(Debug, Clone)]
pub struct Transitions {
    /// `ActiveState`: active, activating, inactive, failed, ...
    pub state: String,
    /// When it last became active, Unix ms.
    pub active_since_ms: Option<i64>,
    /// When it last became inactive, Unix ms.
    pub inactive_since_ms: Option<i64>,
}

/// A `CLOCK_MONOTONIC` stamp in microseconds (systemd's `...TimestampMonotonic`) as Unix ms,
/// through the offset between the two clocks now.
fn monotonic_us_to_unix_ms(us: i64) -> i64 {
    use nix::time::{clock_gettime, ClockId};
    let ms = |t: nix::sys::time::TimeSpec| t.tv_sec() * 1000 + t.tv_nsec() / 1_000_000;
    match (
        clock_gettime(ClockId::CLOCK_MONOTONIC),
        clock_gettime(ClockId::CLOCK_REALTIME),
    ) {
        (Ok(mono), Ok(real)) => ms(real) - (ms(mono) - us / 1000),
        _ => 0,
    }
}

/// `systemctl is-active UNIT`: the one word it prints; a stopped word counts only with the
/// non-zero exit systemctl gives it. Anything else is `Err` (unknown), never a guess from the
/// exit code: a guess that says "inactive" would let a wipe through.
pub fn systemd_state(code: Option<i32>, out: &str) -> Result<pb::ServiceState, String> {
    let word = out.trim();
    let state = match word {
        "active" | "reloading" | "refreshing" => pb::ServiceState::Active,
        // Starting or stopping: a process may be running, so it counts as running.
        "activating" | "deactivating" => pb::ServiceState::Active,
        "inactive" if code.is_some_and(|c| c != 0) => pb::ServiceState::Inactive,
        "failed" if code.is_some_and(|c| c != 0) => pb::ServiceState::Failed,
        _ => {
            return Err(format!(
                "answered {word:?} with {}, which is not a state this agent knows",
                code.map(|c| format!("exit status {c}"))
                    .unwrap_or_else(|| "no exit status (a signal)".into())
            ))
        }
    };
    Ok(state)
}

/// An exec `status` command: exit 0 means running, any other exit means stopped, except the
/// codes that mean "could not tell": 4 (LSB "status unknown"), 126/127 (the shell could not
/// run the command), 128 and above or a signal (the command was killed).
pub fn exec_state(code: Option<i32>) -> Result<pb::ServiceState, String> {
    match code {
        Some(0) => Ok(pb::ServiceState::Active),
        Some(4) => Err("exited with 4 (LSB: status unknown)".into()),
        Some(c @ (126 | 127)) => Err(format!(
            "exited with {c}: the shell could not run the command"
        )),
        Some(c) if c >= 128 => Err(format!("exited with {c}: it was killed")),
        Some(_) => Ok(pb::ServiceState::Inactive),
        None => Err("was killed by a signal".into()),
    }
}

/// The backend of this agent.
pub struct Backend {
    cfg: std::sync::Arc<AgentConfig>,
    scratch: PathBuf,
}

impl Backend {
    /// The backend the config names; `scratch` is a dir for command output files.
    pub fn new(cfg: std::sync::Arc<AgentConfig>, scratch: PathBuf) -> Self {
        Self { cfg, scratch }
    }

    /// `svc`'s systemd unit (`services:` in agent.yml).
    fn unit(&self, svc: Svc) -> &String {
        let s = &self.cfg.services;
        match svc {
            Svc::Etcd => &s.etcd,
            Svc::Patroni => &s.patroni,
            Svc::VipManager => &s.vip_manager,
            Svc::Vmalert => &s.vmalert,
            Svc::Prometheus => &s.prometheus,
        }
    }

    fn argv(&self, svc: Svc, action: &str) -> Option<Vec<String>> {
        match self.cfg.service_backend {
            BackendKind::Systemd => {
                let unit = self.unit(svc);
                Some(match action {
                    "status" => vec!["systemctl".into(), "is-active".into(), unit.clone()],
                    // As Pigsty launches its services (`state: started, enabled: yes`): a
                    // started service also starts at boot, a member re-added after a
                    // retire (which disables it) included.
                    "start" => vec![
                        "systemctl".into(),
                        "enable".into(),
                        "--now".into(),
                        unit.clone(),
                    ],
                    other => vec!["systemctl".into(), other.into(), unit.clone()],
                })
            }
            BackendKind::Exec => self
                .cfg
                .exec
                .get(svc.exec_key())?
                .commands
                .get(action)
                .cloned(),
        }
    }

    /// Whether the backend has a command for `action` on `svc` (systemd: always).
    pub fn can(&self, svc: Svc, action: &str) -> bool {
        self.argv(svc, action).is_some()
    }

    /// Whether the backend can act on `svc` at all (exec: any command configured).
    pub fn manages(&self, svc: Svc) -> bool {
        match self.cfg.service_backend {
            BackendKind::Systemd => true,
            BackendKind::Exec => self.cfg.exec.contains_key(svc.exec_key()),
        }
    }

    /// Runs `action` on `svc`; returns the command's output.
    pub async fn run(&self, svc: Svc, action: &str) -> Result<String, BackendError> {
        let argv = self
            .argv(svc, action)
            .ok_or_else(|| BackendError::NotConfigured {
                service: svc.fact_key(),
                action: action.to_string(),
                config: self.cfg.source.display().to_string(),
            })?;
        let (code, output) = self.exec(&argv).await?;
        if code == Some(0) {
            Ok(output)
        } else {
            Err(BackendError::Failed {
                argv: argv.join(" "),
                status: code
                    .map(|c| format!("status {c}"))
                    .unwrap_or_else(|| "a signal".into()),
                output,
            })
        }
    }

    /// The last `lines` lines of `svc`'s log, for the operator: `journalctl -u UNIT` under
    /// systemd, the file `exec.<svc>.log` under exec. `Err` says why there are none.
    pub async fn log_tail(&self, svc: Svc, lines: usize) -> Result<String, String> {
        match self.cfg.service_backend {
            BackendKind::Systemd => {
                let unit = self.unit(svc);
                let argv: Vec<String> = vec![
                    "journalctl".into(),
                    "-u".into(),
                    unit.clone(),
                    "-n".into(),
                    lines.to_string(),
                    "--no-pager".into(),
                ];
                match self.exec(&argv).await {
                    Ok((Some(0), out)) => Ok(out),
                    Ok((code, out)) => Err(format!(
                        "{} exited with {}: {}",
                        argv.join(" "),
                        code.map(|c| format!("status {c}"))
                            .unwrap_or_else(|| "a signal".into()),
                        out.trim()
                    )),
                    Err(e) => Err(e.to_string()),
                }
            }
            BackendKind::Exec => {
                let Some(path) = self
                    .cfg
                    .exec
                    .get(svc.exec_key())
                    .and_then(|s| s.log.as_ref())
                else {
                    return Err(format!(
                        "no log file is configured for {} (exec.{}.log in {})",
                        svc.fact_key(),
                        svc.exec_key(),
                        self.cfg.source.display()
                    ));
                };
                crate::files::tail_lines(path, lines, LOG_TAIL_BYTES)
            }
        }
    }

    /// When systemd last saw `svc` become active and become inactive (Unix ms; `None`:
    /// never since boot), with its state word. `Err` when the backend cannot tell (exec) or
    /// systemctl fails. systemd's monotonic stamps are used (every version has them), turned
    /// into wall-clock time with this host's clocks.
    pub async fn transitions(&self, svc: Svc) -> Result<Transitions, String> {
        if self.cfg.service_backend != BackendKind::Systemd {
            return Err(
                "the exec backend does not record when a service started or stopped".into(),
            );
        }
        let unit = self.unit(svc);
        let argv: Vec<String> = [
            "systemctl",
            "show",
            "-p",
            "ActiveState",
            "-p",
            "ActiveEnterTimestampMonotonic",
            "-p",
            "InactiveEnterTimestampMonotonic",
            unit,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let (code, out) = self.exec(&argv).await.map_err(|e| e.to_string())?;
        if code != Some(0) {
            return Err(format!("{} failed: {}", argv.join(" "), out.trim()));
        }
        let field = |key: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .map(str::trim)
        };
        let stamp = |key: &str| -> Option<i64> {
            let us: i64 = field(key)?.parse().ok()?;
            (us > 0).then(|| monotonic_us_to_unix_ms(us))
        };
        Ok(Transitions {
            state: field("ActiveState").unwrap_or("unknown").to_string(),
            active_since_ms: stamp("ActiveEnterTimestampMonotonic"),
            inactive_since_ms: stamp("InactiveEnterTimestampMonotonic"),
        })
    }

    /// The state of `svc`.
    pub async fn status(&self, svc: Svc) -> pb::ServiceState {
        self.probe(svc).await.state
    }

    /// The state of `svc`, and why it is `Unknown` when it is: a wipe needs a positive
    /// answer, and the operator needs the reason when there is none.
    pub async fn probe(&self, svc: Svc) -> Probe {
        let Some(argv) = self.argv(svc, "status") else {
            return Probe::unknown(format!(
                "no `status` command for {} under exec: in {}",
                svc.fact_key(),
                self.cfg.source.display()
            ));
        };
        let (code, out) = match self.exec(&argv).await {
            Ok(r) => r,
            Err(e) => return Probe::unknown(e.to_string()),
        };
        let mapped = match self.cfg.service_backend {
            BackendKind::Systemd => systemd_state(code, &out),
            BackendKind::Exec => exec_state(code),
        };
        match mapped {
            Ok(state) => Probe { state, why: None },
            Err(why) => Probe::unknown(format!("{}: {why}", argv.join(" "))),
        }
    }
    async fn exec(&self, argv: &[String]) -> Result<(Option<i32>, String), BackendError> {
        let joined = argv.join(" ");
        let Some((prog, args)) = argv.split_first() else {
            return Err(BackendError::Spawn {
                argv: joined,
                source: std::io::Error::other("empty command"),
            });
        };
        let n: u64 = rand::random();
        let out_path = self.scratch.join(format!(".cmd-{n:x}.out"));
        let out = std::fs::File::create(&out_path).map_err(|source| BackendError::Spawn {
            argv: joined.clone(),
            source,
        })?;
        let err = out.try_clone().map_err(|source| BackendError::Spawn {
            argv: joined.clone(),
            source,
        })?;
        let mut cmd = tokio::process::Command::new(prog);
        if self.cfg.service_backend == BackendKind::Systemd {
            // Debian's etcd also ships a SysV script, so `systemctl enable etcd` would run
            // update-rc.d here to sync /etc/rc?.d, which the agent's unit keeps read-only
            // (ProtectSystem=full): the enable fails. systemd starts native units only, and
            // PID 1 makes the unit's own links, so the SysV sync is skipped.
            cmd.env("SYSTEMCTL_SKIP_SYSV", "1");
        }
        let mut child = cmd
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| BackendError::Spawn {
                argv: joined.clone(),
                source,
            })?;
        let secs = self.cfg.exec_timeout_secs;
        let waited = tokio::time::timeout(Duration::from_secs(secs), child.wait()).await;
        let output = tail(
            &std::fs::read_to_string(&out_path).unwrap_or_default(),
            OUTPUT_CAP,
        );
        let _ = std::fs::remove_file(&out_path);
        match waited {
            Ok(Ok(status)) => Ok((status.code(), output)),
            Ok(Err(source)) => Err(BackendError::Spawn {
                argv: joined,
                source,
            }),
            Err(_) => {
                let _ = child.kill().await;
                Err(BackendError::Timeout {
                    argv: joined,
                    secs,
                    output,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_monotonic_stamp_of_now_is_now_in_unix_time() {
        use nix::time::{clock_gettime, ClockId};
        let mono = clock_gettime(ClockId::CLOCK_MONOTONIC).expect("monotonic clock");
        let us = mono.tv_sec() * 1_000_000 + mono.tv_nsec() / 1000;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_millis() as i64;
        let got = monotonic_us_to_unix_ms(us);
        assert!((got - now).abs() < 1000, "{got} vs {now}");
        // Ten seconds earlier on the monotonic clock is ten seconds earlier in Unix time.
        assert!((monotonic_us_to_unix_ms(us - 10_000_000) - (got - 10_000)).abs() < 5);
    }

    #[test]
    fn systemctl_words_map_exactly_and_nothing_else_is_stopped() {
        use pb::ServiceState::*;
        for (code, out, want) in [
            (Some(0), "active\n", Ok(Active)),
            (Some(0), "reloading\n", Ok(Active)),
            (Some(3), "activating\n", Ok(Active)),
            (Some(3), "deactivating\n", Ok(Active)),
            (Some(3), "inactive\n", Ok(Inactive)),
            (Some(3), "failed\n", Ok(Failed)),
        ] {
            assert_eq!(systemd_state(code, out), want, "{out:?} {code:?}");
        }
        // Unknown words, errors on the bus, stopped words with a success exit, no output,
        // a signal: none of them may read as stopped.
        for (code, out) in [
            (Some(0), "unknown\n"),
            (
                Some(1),
                "Failed to connect to bus: No such file or directory\n",
            ),
            (Some(0), "inactive\n"),
            (Some(0), "failed\n"),
            (Some(0), ""),
            (Some(3), "maintenance\n"),
            (None, "inactive\n"),
        ] {
            assert!(systemd_state(code, out).is_err(), "{out:?} {code:?}");
        }
    }

    #[test]
    fn exec_status_codes_that_cannot_tell_are_unknown() {
        assert_eq!(exec_state(Some(0)), Ok(pb::ServiceState::Active));
        assert_eq!(exec_state(Some(1)), Ok(pb::ServiceState::Inactive));
        assert_eq!(exec_state(Some(3)), Ok(pb::ServiceState::Inactive));
        for code in [Some(4), Some(126), Some(127), Some(137), None] {
            assert!(exec_state(code).is_err(), "{code:?}");
        }
    }
}
