//! `quorum`: the coordinator daemon and the operator CLI in one binary.

use std::process::ExitCode;

use quorum_proto::exit::Exit;

/// A one-shot command piped into `head` should end quietly like any Unix tool. SIGPIPE stays
/// ignored (Rust's default): with the default disposition a TLS write to a socket the
/// coordinator had just closed (it refuses a foreign certificate) killed the CLI silently,
/// since rustls writes with `writev`, which has no MSG_NOSIGNAL. Instead, the panic a write to
/// a closed stdout raises ends the process with status 0 and no message.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        // `println!` says "failed printing to stdout: Broken pipe"; other writers (shell
        // completions) unwrap an io::Error of kind BrokenPipe.
        if msg.contains("Broken pipe") || msg.contains("BrokenPipe") {
            std::process::exit(Exit::Ok.code().into());
        }
        default(info);
    }));
}

fn main() -> ExitCode {
    let cli = match quorum_coordinator::operator::cli::Cli::from_args() {
        Ok(cli) => cli,
        Err(exit) => return exit.into(),
    };
    if !cli.is_daemon() {
        quiet_on_closed_stdout();
    }
    quorum_proto::logging::init(cli.log_format());
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return Exit::Failed.into();
        }
    };
    rt.block_on(quorum_coordinator::operator::cli::run(cli))
        .into()
}
