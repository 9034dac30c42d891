//! The words Quorum shows and stores for its enums: run and step states, outcomes, service
//! states. The store keeps runs as readable words (runs stored by older versions load
//! unchanged); the wire carries the typed enums; the CLI prints and emits JSON with the words.

use quorum_proto::pb;

/// An outcome as a word ("changed", "refused", ...; "" when there is none yet).
pub fn outcome_word(o: pb::Outcome) -> &'static str {
    match o {
        pb::Outcome::Changed => "changed",
        pb::Outcome::Unchanged => "unchanged",
        pb::Outcome::Skipped => "skipped",
        pb::Outcome::Refused => "refused",
        pb::Outcome::Failed => "failed",
        pb::Outcome::Ok => "ok",
        pb::Outcome::Unspecified => "",
    }
}

/// An outcome from its word (unknown words: unspecified).
pub fn outcome(word: &str) -> pb::Outcome {
    [
        pb::Outcome::Changed,
        pb::Outcome::Unchanged,
        pb::Outcome::Skipped,
        pb::Outcome::Refused,
        pb::Outcome::Failed,
        pb::Outcome::Ok,
    ]
    .into_iter()
    .find(|o| outcome_word(*o) == word)
    .unwrap_or(pb::Outcome::Unspecified)
}

/// A run state as a word (the store's and the CLI's).
pub fn run_state_word(s: pb::RunState) -> &'static str {
    match s {
        pb::RunState::Planned => "planned",
        pb::RunState::Running => "running",
        pb::RunState::Interrupted => "interrupted",
        pb::RunState::Succeeded => "succeeded",
        pb::RunState::Failed => "failed",
        pb::RunState::Aborted => "aborted",
        pb::RunState::Waiting => "waiting",
        pb::RunState::Unspecified => "unknown",
    }
}

/// A run state from its word.
pub fn run_state(word: &str) -> pb::RunState {
    [
        pb::RunState::Planned,
        pb::RunState::Running,
        pb::RunState::Interrupted,
        pb::RunState::Succeeded,
        pb::RunState::Failed,
        pb::RunState::Aborted,
        pb::RunState::Waiting,
    ]
    .into_iter()
    .find(|s| run_state_word(*s) == word)
    .unwrap_or(pb::RunState::Unspecified)
}

/// A step state as a word.
pub fn step_state_word(s: pb::StepState) -> &'static str {
    match s {
        pb::StepState::Pending => "pending",
        pb::StepState::Running => "running",
        pb::StepState::Done => "done",
        pb::StepState::Failed => "failed",
        pb::StepState::Planned => "planned",
        pb::StepState::Unspecified => "unknown",
    }
}

/// A step state from its word.
pub fn step_state(word: &str) -> pb::StepState {
    [
        pb::StepState::Pending,
        pb::StepState::Running,
        pb::StepState::Done,
        pb::StepState::Failed,
        pb::StepState::Planned,
    ]
    .into_iter()
    .find(|s| step_state_word(*s) == word)
    .unwrap_or(pb::StepState::Unspecified)
}

/// A service state as a word.
pub fn service_state_word(s: pb::ServiceState) -> &'static str {
    match s {
        pb::ServiceState::Active => "active",
        pb::ServiceState::Inactive => "inactive",
        pb::ServiceState::Failed => "failed",
        pb::ServiceState::Unknown | pb::ServiceState::Unspecified => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_reads_back_as_its_enum() {
        for s in [
            pb::RunState::Planned,
            pb::RunState::Running,
            pb::RunState::Interrupted,
            pb::RunState::Succeeded,
            pb::RunState::Failed,
            pb::RunState::Aborted,
            pb::RunState::Waiting,
        ] {
            assert_eq!(run_state(run_state_word(s)), s);
        }
        for s in [
            pb::StepState::Pending,
            pb::StepState::Running,
            pb::StepState::Done,
            pb::StepState::Failed,
        ] {
            assert_eq!(step_state(step_state_word(s)), s);
        }
        for o in [
            pb::Outcome::Changed,
            pb::Outcome::Unchanged,
            pb::Outcome::Skipped,
            pb::Outcome::Refused,
            pb::Outcome::Failed,
            pb::Outcome::Ok,
        ] {
            assert_eq!(outcome(outcome_word(o)), o);
        }
    }
}
