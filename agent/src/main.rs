//! `quorum-agent`: run the pull loop, enroll for a certificate, or run one task locally.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code for a usage or configuration error (or a start-up failure).
const EXIT_USAGE: u8 = 2;
/// Exit code when the coordinator refused (enrollment token or CSR refused).
const EXIT_REFUSED: u8 = 3;

#[derive(Parser)]
#[command(
    name = "quorum-agent",
    version,
    about = "Quorum agent: pulls etcd/Patroni/vip-manager tasks from the coordinator over mTLS"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("QUORUM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour only on a terminal: escapes in a log file or the journal are noise.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
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
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<quorum_agent::enroll::Refused>().is_some() {
                ExitCode::from(EXIT_REFUSED)
            } else {
                ExitCode::from(EXIT_USAGE)
            }
        }
    }
}
