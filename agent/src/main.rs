//! `quorum-agent`: run the pull loop, enroll for a certificate, or run one task locally.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use quorum_proto::exit::{BadInput, Exit};

#[derive(Parser)]
#[command(
    name = "quorum-agent",
    version,
    about = "Quorum agent: pulls etcd/Patroni/vip-manager tasks from the coordinator over mTLS"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How log lines are written on stderr: text, or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value_t)]
    log_format: quorum_proto::logging::LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// Hold a session with the coordinator: poll for tasks, run them, report back (until SIGTERM).
    Run {
        /// The agent config file.
        #[arg(long, short = 'c', default_value = quorum_agent::config::DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// Get a certificate: make a key here, send a CSR with a one-time token, save the result.
    Enroll {
        /// The coordinator's URL, https://IP:PORT.
        #[arg(long)]
        coordinator: String,
        /// A file holding the one-time token from `quorum pki token --host IP` (kept off the
        /// command line, where `ps` shows it to every user of the host).
        #[arg(long, value_name = "PATH", conflicts_with = "token")]
        token_file: Option<PathBuf>,
        /// The one-time token itself; prefer --token-file or the environment variable, since
        /// `ps` shows a command line to every user of the host.
        #[arg(long, env = "QUORUM_ENROLL_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// The trust domain of the role URIs: the coordinator's certificate must name
        /// spiffe://<TRUST_DOMAIN>/coordinator.
        #[arg(long, env = "QUORUM_TRUST_DOMAIN", default_value = quorum_proto::identity::DEFAULT_TRUST_DOMAIN)]
        trust_domain: String,
        /// The Pigsty CA certificate that signed the coordinator's certificate.
        #[arg(long)]
        ca_cert: PathBuf,
        /// Where to write the certificate.
        #[arg(long, default_value = "/etc/quorum/agent.crt")]
        cert: PathBuf,
        /// Where to write the private key (0600) [default: next to --cert, named like it with
        /// .key: /etc/quorum/agent.key for the default --cert].
        #[arg(long)]
        key: Option<PathBuf>,
        /// This host's IP, the one the token names.
        #[arg(long)]
        host_ip: std::net::IpAddr,
    },
    /// Run one task locally from a file (prost-encoded quorum.v1.Task) and print its outcome;
    /// for tests and local debugging. Honors the same config, journal and safety rules.
    #[command(hide = true)]
    RunTask {
        /// The agent config file.
        #[arg(long, short = 'c', default_value = quorum_agent::config::DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// The task file.
        #[arg(long)]
        task: PathBuf,
    },
}

/// The one error → exit-code mapping of `quorum-agent` (README "Exit codes"): a bad flag,
/// config or certificate file, or a failed start-up check is `Usage`; a refused enrollment
/// `Refused`; a coordinator that cannot be reached `Unreachable`; anything else (a key or
/// certificate that cannot be written) `Failed`.
fn classify(e: &anyhow::Error) -> Exit {
    if e.is::<quorum_agent::enroll::Refused>() {
        return Exit::Refused;
    }
    if e.is::<quorum_agent::enroll::Unreachable>() {
        return Exit::Unreachable;
    }
    if let Some(clap_error) = e.downcast_ref::<clap::Error>() {
        // --help and --version are "errors" to clap, printed on stdout.
        return if clap_error.use_stderr() {
            Exit::Usage
        } else {
            Exit::Ok
        };
    }
    if e.is::<BadInput>()
        || e.is::<quorum_agent::config::ConfigError>()
        || e.is::<quorum_agent::executor::ExecError>()
        || e.is::<quorum_proto::tls::TlsError>()
    {
        return Exit::Usage;
    }
    Exit::Failed
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Like clap's own `exit`: a closed stdout or stderr is no reason to fail.
            let _ = e.print();
            return classify(&e.into()).into();
        }
    };
    quorum_proto::logging::init(cli.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return Exit::Failed.into();
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Run { config } => quorum_agent::pull::run_from_config(&config).await,
            Command::Enroll {
                coordinator,
                token_file,
                token,
                trust_domain,
                ca_cert,
                cert,
                key,
                host_ip,
            } => {
                let token = quorum_agent::enroll::token_from(token_file.as_deref(), token)?;
                // The key goes next to the certificate unless --key says otherwise.
                let key = key.unwrap_or_else(|| cert.with_extension("key"));
                quorum_agent::enroll::enroll(&quorum_agent::enroll::EnrollArgs {
                    coordinator,
                    token,
                    ca_cert,
                    cert,
                    key,
                    host_ip,
                    trust_domain,
                })
                .await
            }
            Command::RunTask { config, task } => {
                quorum_agent::local::run_task_file(&config, &task).await
            }
        }
    });
    match result {
        Ok(exit) => exit.into(),
        Err(e) => {
            eprintln!("error: {e:#}");
            classify(&e).into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_the_documented_exit_codes() {
        let missing = std::path::Path::new("/nonexistent/quorum-test/agent.yml");
        let config = quorum_agent::config::AgentConfig::load(missing).unwrap_err();
        assert_eq!(classify(&config.into()), Exit::Usage);
        let start_up = quorum_agent::executor::ExecError::Owner {
            config: missing.display().to_string(),
            message: "no user etcd".into(),
        };
        assert_eq!(classify(&start_up.into()), Exit::Usage);
        let tls = quorum_proto::tls::TlsMaterial::load(missing, missing, missing).unwrap_err();
        assert_eq!(classify(&tls.into()), Exit::Usage);
        let token = quorum_agent::enroll::token_from(None, None).unwrap_err();
        assert_eq!(classify(&token.into()), Exit::Usage);
        let refused = quorum_agent::enroll::Refused("enrollment refused: token used".into());
        assert_eq!(classify(&refused.into()), Exit::Refused);
        let gone = quorum_agent::enroll::Unreachable("cannot reach the coordinator".into());
        assert_eq!(classify(&gone.into()), Exit::Unreachable);
        // Writing the enrolled key or certificate failed: not bad input.
        let write = anyhow::anyhow!("cannot write /etc/quorum/agent.key: no space left on device");
        assert_eq!(classify(&write), Exit::Failed);
    }

    #[test]
    fn clap_errors_are_usage_and_help_is_not() {
        let parse = |args: &[&str]| match Cli::try_parse_from(args) {
            Ok(_) => Exit::Ok,
            Err(e) => classify(&e.into()),
        };
        assert_eq!(parse(&["quorum-agent", "--no-such-flag"]), Exit::Usage);
        assert_eq!(
            parse(&[
                "quorum-agent",
                "enroll",
                "--coordinator",
                "x",
                "--ca-cert",
                "c",
                "--host-ip",
                "nope"
            ]),
            Exit::Usage
        );
        assert_eq!(parse(&["quorum-agent", "--help"]), Exit::Ok);
        assert_eq!(parse(&["quorum-agent", "--version"]), Exit::Ok);
    }
}
