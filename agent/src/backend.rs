//! Service backends: `systemd` (`systemctl ACTION UNIT`, status from `systemctl is-active`)
//! and `exec` (one argv per action from the agent config, run without a shell, with a
//! timeout). Output goes to a file, not a pipe, so a daemon that inherits it cannot make the
//! agent wait; errors carry the exit status and the tail of the output.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use quorum_proto::pb;

use crate::config::{AgentConfig, BackendKind};
use crate::journal::{tail, OUTPUT_CAP};

/// A managed service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Svc {
    /// etcd.
    Etcd,
    /// Patroni.
    Patroni,
    /// vip-manager.
    VipManager,
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
        }
    }
    /// The name in facts.
    pub fn fact_key(self) -> &'static str {
        match self {
            Svc::Etcd => "etcd",
            Svc::Patroni => "patroni",
            Svc::VipManager => "vip-manager",
        }
    }
    /// All of them.
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

    fn argv(&self, svc: Svc, action: &str) -> Option<Vec<String>> {
        match self.cfg.service_backend {
            BackendKind::Systemd => {
                let unit = match svc {
                    Svc::Etcd => &self.cfg.services.etcd,
                    Svc::Patroni => &self.cfg.services.patroni,
                    Svc::VipManager => &self.cfg.services.vip_manager,
                };
                let verb = if action == "status" {
                    "is-active"
                } else {
                    action
                };
                Some(vec!["systemctl".into(), verb.into(), unit.clone()])
            }
            BackendKind::Exec => self.cfg.exec.get(svc.exec_key())?.get(action).cloned(),
        }
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

    /// The state of `svc`.
    pub async fn status(&self, svc: Svc) -> pb::ServiceState {
        let Some(argv) = self.argv(svc, "status") else {
            return pb::ServiceState::Unknown;
        };
        match self.exec(&argv).await {
            Ok((code, out)) => match self.cfg.service_backend {
                BackendKind::Systemd => match out.trim() {
                    "active" | "reloading" | "activating" => pb::ServiceState::Active,
                    "failed" => pb::ServiceState::Failed,
                    "inactive" | "deactivating" => pb::ServiceState::Inactive,
                    _ if code == Some(0) => pb::ServiceState::Active,
                    _ => pb::ServiceState::Unknown,
                },
                BackendKind::Exec => {
                    if code == Some(0) {
                        pb::ServiceState::Active
                    } else {
                        pb::ServiceState::Inactive
                    }
                }
            },
            Err(_) => pb::ServiceState::Unknown,
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
        let mut child = tokio::process::Command::new(prog)
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
