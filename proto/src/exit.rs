//! The exit codes of both binaries, `quorum` and `quorum-agent`: one table (README "Exit
//! codes"), so a script reads a code the same way whichever binary it ran. Each binary maps
//! its typed errors to a code in one place (`classify`); an error no rule names is `Failed`,
//! never `Usage`: "bad input" must mean the input was bad.

/// How a process ended, as its exit status.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Exit {
    /// 0: the command did what it was asked (a run succeeded, a plan or a listing was
    /// printed); the agent stopped cleanly on SIGTERM.
    Ok = 0,
    /// 1: the operation ran and failed: a failed step or task (the run is left `failed` for
    /// `run resume` / `run abort`; the agent's `run-task`), an unhealthy cluster in `cluster
    /// status`, or an error outside the input (a certificate or key that cannot be written, a
    /// port in use, a state dir that cannot be opened).
    Failed = 1,
    /// 2: bad input: flags, config, inventory, certificate files, an unknown run, a run with
    /// nothing to resume; for the agent also a failed start-up check. Nothing was changed.
    Usage = 2,
    /// 3: refused by a safety rule (safeguard, quorum guard, a lock, an unconfirmed wipe, a
    /// permission) or, for the agent, enrollment refused by the coordinator. Nothing was
    /// changed by the refused step.
    Refused = 3,
    /// 4: the coordinator could not be reached, refused our TLS client certificate, or is not
    /// a coordinator (for the agent: at `enroll`, before the token is sent); or it went away
    /// while the CLI followed a run (left `interrupted`).
    Unreachable = 4,
    /// 5: `quorum serve` stepped down: it lost the lease of the shared store (another
    /// coordinator took over, or PostgreSQL was out of reach for as long as the lease lasts)
    /// and stopped before the lease could lapse. Its service manager starts it again; it
    /// comes back as a standby.
    SteppedDown = 5,
}

impl Exit {
    /// Every exit code, in order.
    pub const ALL: [Exit; 6] = [
        Exit::Ok,
        Exit::Failed,
        Exit::Usage,
        Exit::Refused,
        Exit::Unreachable,
        Exit::SteppedDown,
    ];

    /// The process exit status.
    pub const fn code(self) -> u8 {
        self as u8
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(exit: Exit) -> Self {
        std::process::ExitCode::from(exit.code())
    }
}

/// Input the user gave is wrong (a flag, a file named on the command line or in a config, a
/// missing setting), found by the binary itself: exit [`Exit::Usage`]. The message says what
/// is wrong and what to do.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

#[cfg(test)]
mod tests {
    use super::Exit;
    use std::collections::HashSet;

    /// The word each code's row in README's table starts its `quorum` column with. The match
    /// is exhaustive: a new variant does not compile until it has a README row.
    fn readme_words(e: Exit) -> &'static str {
        match e {
            Exit::Ok => "success",
            Exit::Failed => "the operation ran and failed",
            Exit::Usage => "bad input",
            Exit::Refused => "refused",
            Exit::Unreachable => "the coordinator could not be reached",
            Exit::SteppedDown => "`serve` stepped down",
        }
    }

    #[test]
    fn exit_codes_are_distinct() {
        // etcd's cobrautl gives two meanings one number; ours must not.
        let codes: HashSet<u8> = Exit::ALL.iter().map(|e| e.code()).collect();
        assert_eq!(codes.len(), Exit::ALL.len());
        for e in Exit::ALL {
            // Every variant is in ALL (readme_words is exhaustive, ALL is checked here).
            assert!(!readme_words(e).is_empty());
        }
        assert_eq!(
            Exit::ALL.iter().map(|e| e.code()).collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 4, 5]
        );
    }

    /// The rows of README's "## Exit codes" table: (code, `quorum` column).
    fn readme_rows() -> Vec<(u8, String)> {
        let readme = include_str!("../../README.md");
        let table = readme
            .split("\n## Exit codes\n")
            .nth(1)
            .expect("README has a \"## Exit codes\" section");
        table
            .lines()
            .skip_while(|l| !l.starts_with('|'))
            .take_while(|l| l.starts_with('|'))
            .skip(2) // the header and the |---| line
            .map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                let code = cells[1]
                    .parse()
                    .unwrap_or_else(|_| panic!("README exit-code row without a code: {l}"));
                (code, cells[2].to_string())
            })
            .collect()
    }

    #[test]
    fn readme_documents_every_exit_code_and_no_other() {
        let rows = readme_rows();
        let documented: Vec<u8> = rows.iter().map(|(c, _)| *c).collect();
        let ours: Vec<u8> = Exit::ALL.iter().map(|e| e.code()).collect();
        assert_eq!(
            documented, ours,
            "README's exit-code table and `Exit` differ"
        );
        for e in Exit::ALL {
            let (_, quorum) = rows
                .iter()
                .find(|(c, _)| *c == e.code())
                .expect("checked above");
            assert!(
                quorum.starts_with(readme_words(e)),
                "README says code {} ({e:?}) means {quorum:?}",
                e.code()
            );
        }
    }
}
