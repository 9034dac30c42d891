//! The words Quorum shows and stores for its enums: run and step states, outcomes, service
//! states. The store keeps runs as readable words (runs stored by older versions load
//! unchanged); the wire carries the typed enums; the CLI prints and emits JSON with the words.
//! One table per enum; both directions are read from it.

use quorum_proto::pb;

/// Outcomes and their words; `Unspecified` (no outcome yet) is "".
const OUTCOMES: [(pb::Outcome, &str); 7] = [
    (pb::Outcome::Changed, "changed"),
    (pb::Outcome::Unchanged, "unchanged"),
    (pb::Outcome::Skipped, "skipped"),
    (pb::Outcome::Refused, "refused"),
    (pb::Outcome::Failed, "failed"),
    (pb::Outcome::Ok, "ok"),
    (pb::Outcome::Unspecified, ""),
];

/// Run states and their words.
const RUN_STATES: [(pb::RunState, &str); 8] = [
    (pb::RunState::Planned, "planned"),
    (pb::RunState::Running, "running"),
    (pb::RunState::Interrupted, "interrupted"),
    (pb::RunState::Succeeded, "succeeded"),
    (pb::RunState::Failed, "failed"),
    (pb::RunState::Aborted, "aborted"),
    (pb::RunState::Waiting, "waiting"),
    (pb::RunState::Unspecified, "unknown"),
];

/// Step states and their words.
const STEP_STATES: [(pb::StepState, &str); 6] = [
    (pb::StepState::Pending, "pending"),
    (pb::StepState::Running, "running"),
    (pb::StepState::Done, "done"),
    (pb::StepState::Failed, "failed"),
    (pb::StepState::Planned, "planned"),
    (pb::StepState::Unspecified, "unknown"),
];

fn word_of<E: PartialEq + Copy>(table: &[(E, &'static str)], e: E) -> &'static str {
    table
        .iter()
        .find(|(v, _)| *v == e)
        .map_or("unknown", |(_, w)| w)
}

/// The enum a word names; the table's last entry (unspecified) for any other word.
fn of_word<E: Copy>(table: &[(E, &'static str)], word: &str) -> E {
    let last = table[table.len() - 1].0;
    table
        .iter()
        .find(|(_, w)| *w == word)
        .map_or(last, |(e, _)| *e)
}

/// An outcome as a word ("changed", "refused", ...; "" when there is none yet).
pub fn outcome_word(o: pb::Outcome) -> &'static str {
    word_of(&OUTCOMES, o)
}

/// An outcome from its word (unknown words: unspecified).
pub fn outcome(word: &str) -> pb::Outcome {
    of_word(&OUTCOMES, word)
}

/// A run state as a word (the store's and the CLI's).
pub fn run_state_word(s: pb::RunState) -> &'static str {
    word_of(&RUN_STATES, s)
}

/// A run state from its word.
pub fn run_state(word: &str) -> pb::RunState {
    of_word(&RUN_STATES, word)
}

/// A step state as a word.
pub fn step_state_word(s: pb::StepState) -> &'static str {
    word_of(&STEP_STATES, s)
}

/// A step state from its word.
pub fn step_state(word: &str) -> pb::StepState {
    of_word(&STEP_STATES, word)
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
        for (e, w) in RUN_STATES {
            assert_eq!((run_state(w), run_state_word(e)), (e, w));
        }
        for (e, w) in STEP_STATES {
            assert_eq!((step_state(w), step_state_word(e)), (e, w));
        }
        for (e, w) in OUTCOMES {
            assert_eq!((outcome(w), outcome_word(e)), (e, w));
        }
        // Every variant is in its table (a new one added to the proto must get a word).
        for v in 0..16 {
            if let Ok(e) = pb::RunState::try_from(v) {
                assert!(RUN_STATES.iter().any(|(t, _)| *t == e), "{e:?}");
            }
            if let Ok(e) = pb::StepState::try_from(v) {
                assert!(STEP_STATES.iter().any(|(t, _)| *t == e), "{e:?}");
            }
            if let Ok(e) = pb::Outcome::try_from(v) {
                assert!(OUTCOMES.iter().any(|(t, _)| *t == e), "{e:?}");
            }
        }
        assert_eq!(run_state("nonsense"), pb::RunState::Unspecified);
    }
}
