//! `quorum`: the coordinator daemon and the operator CLI in one binary.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = quorum_coordinator::cli::Cli::parse();
    if !cli.is_daemon() {
        // A one-shot command piped into `head` should end quietly like any Unix tool, not
        // panic on a closed pipe. The daemon keeps Rust's default (SIGPIPE ignored), so a
        // peer closing a socket never kills it.
        // SAFETY: called before any thread is started; restores the default disposition.
        unsafe {
            let _ = nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGPIPE,
                nix::sys::signal::SigHandler::SigDfl,
            );
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("QUORUM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(quorum_coordinator::cli::exit::FAILED);
        }
    };
    ExitCode::from(rt.block_on(quorum_coordinator::cli::run(cli)))
}
