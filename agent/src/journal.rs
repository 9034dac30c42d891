//! The journal: which task ids this host has started and finished, with their outcomes, on
//! disk and fsynced. Delivery is at least once, so a redelivered task is answered from here
//! instead of running twice; a task started but never finished (the agent died inside it)
//! is recognized, so a restart or wipe is never repeated by accident. Each entry keeps when
//! the task started and finished, so an answer from here can say when the work was really done.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use quorum_proto::pb;
use serde::{Deserialize, Serialize};

/// How many finished tasks are kept (older ones are dropped at compaction).
pub const KEEP: usize = 1000;
/// Largest output kept per task (the tail).
pub const OUTPUT_CAP: usize = 16 * 1024;

/// One journal line.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Line {
    id: String,
    /// "started" or "finished".
    state: String,
    #[serde(default)]
    outcome: i32,
    #[serde(default)]
    output: String,
    /// When the task started, Unix ms (0 in lines written by an agent of 0.2).
    #[serde(default, skip_serializing_if = "is_zero")]
    started_ms: i64,
    /// When it finished, Unix ms ("finished" lines only).
    #[serde(default, skip_serializing_if = "is_zero")]
    finished_ms: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A finished task as the journal keeps it.
#[derive(Debug, Clone)]
struct Done {
    outcome: i32,
    output: String,
    started_ms: i64,
    finished_ms: i64,
}

/// What the journal knows of a task id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// Never seen.
    New,
    /// Started and never finished: the agent stopped inside it.
    Interrupted,
    /// Finished with this outcome and output.
    Finished(pb::Outcome, String),
}

struct Inner {
    finished: HashMap<String, Done>,
    order: VecDeque<String>,
    /// Started and not finished, with the start time.
    started: HashMap<String, i64>,
    lines: usize,
    /// The file's length up to its last whole line: an append that fails part-way (a full
    /// disk takes the first bytes of a line and refuses the rest) is cut back to it, so the
    /// next line never glues onto a torn one, which would hide both.
    good_len: u64,
}

/// The journal file.
pub struct Journal {
    path: PathBuf,
    inner: Mutex<Inner>,
    /// The highest coordinator epoch a task was taken from, kept in `epoch` beside the
    /// journal (written whole and renamed into place before the task runs).
    epoch_path: PathBuf,
    epoch: Mutex<(u64, String)>,
}

/// A task from a coordinator whose epoch is below the highest this agent has taken a task
/// from (that coordinator lost its lease to a newer one), or of that epoch from another
/// coordinator than the one holding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleEpoch {
    /// The task's epoch.
    pub task: u64,
    /// The highest epoch seen.
    pub highest: u64,
    /// Set when the epoch is the highest but its holder is not the one seen.
    pub other_holder: Option<(String, String)>,
}

/// Journal I/O errors.
#[derive(Debug, thiserror::Error)]
#[error("journal {}: {source}{}", path.display(), journal_hint(source))]
pub struct JournalError {
    path: PathBuf,
    source: std::io::Error,
}

fn journal_hint(e: &std::io::Error) -> &'static str {
    match crate::files::io_hint(e) {
        "" => "; check journal_dir in the agent config",
        hint => hint,
    }
}

/// Keeps the last `cap` bytes of `s`, on a char boundary.
pub fn tail(s: &str, cap: usize) -> String {
    if s.len() <= cap {
        return s.to_string();
    }
    let mut start = s.len() - cap;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("[... {} bytes cut]\n{}", start, &s[start..])
}

impl Journal {
    /// Opens (creating) the journal in `dir`.
    pub fn open(dir: &Path) -> Result<Self, JournalError> {
        let path = dir.join("journal.jsonl");
        let err = |source| JournalError {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(err)?;
        // Bytes, not a String: a line torn inside a multi-byte character (a power cut
        // mid-append) must not stop the agent from starting.
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(err(e)),
        };
        let mut inner = Inner {
            finished: HashMap::new(),
            order: VecDeque::new(),
            started: HashMap::new(),
            lines: 0,
            good_len: 0,
        };
        // A torn last line (a crash or a full disk mid-append) is cut off now, before the
        // first append could glue onto it; if the cut fails, the first append cuts it.
        let whole = bytes
            .iter()
            .rposition(|b| *b == b'\n')
            .map(|i| i + 1)
            .unwrap_or(0);
        inner.good_len = whole as u64;
        if whole < bytes.len() {
            if let Ok(f) = std::fs::OpenOptions::new().write(true).open(&path) {
                let _ = f.set_len(inner.good_len).and_then(|_| f.sync_all());
            }
        }
        let text = String::from_utf8_lossy(&bytes[..whole]);
        for l in text.lines() {
            // A torn last line (crash mid-append) is skipped: that task counts as unfinished.
            let Ok(line) = serde_json::from_str::<Line>(l) else {
                continue;
            };
            inner.lines += 1;
            if line.state == "finished" {
                inner.started.remove(&line.id);
                let done = Done {
                    outcome: line.outcome,
                    output: line.output,
                    started_ms: line.started_ms,
                    finished_ms: line.finished_ms,
                };
                if inner.finished.insert(line.id.clone(), done).is_none() {
                    inner.order.push_back(line.id);
                }
            } else {
                inner.started.insert(line.id, line.started_ms);
            }
        }
        let epoch_path = dir.join("epoch");
        let epoch = match std::fs::read_to_string(&epoch_path) {
            Ok(t) => {
                let mut words = t.split_whitespace();
                let epoch = words
                    .next()
                    .unwrap_or_default()
                    .parse::<u64>()
                    .map_err(|e| JournalError {
                        path: epoch_path.clone(),
                        source: std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("not an epoch ({e}); it holds the highest coordinator epoch this agent took a task from and its holder: restore it, or remove it if no coordinator of a higher epoch can be running"),
                        ),
                    })?;
                (epoch, words.next().unwrap_or_default().to_string())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (0, String::new()),
            Err(e) => {
                return Err(JournalError {
                    path: epoch_path,
                    source: e,
                })
            }
        };
        Ok(Self {
            path,
            inner: Mutex::new(inner),
            epoch_path,
            epoch: Mutex::new(epoch),
        })
    }

    /// The highest coordinator epoch a task was taken from (0: none yet).
    pub fn epoch(&self) -> u64 {
        match self.epoch.lock() {
            Ok(g) => g.0,
            Err(p) => p.into_inner().0,
        }
    }

    /// Takes a task of coordinator epoch `epoch` held by `holder`: refused when it is below
    /// the highest seen, or is that epoch from another holder; a higher one is recorded
    /// durably first.
    pub fn admit_epoch(
        &self,
        epoch: u64,
        holder: &str,
    ) -> Result<Result<(), StaleEpoch>, JournalError> {
        let mut highest = match self.epoch.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if epoch < highest.0 {
            return Ok(Err(StaleEpoch {
                task: epoch,
                highest: highest.0,
                other_holder: None,
            }));
        }
        if epoch == highest.0 && epoch > 0 && !highest.1.is_empty() && highest.1 != holder {
            return Ok(Err(StaleEpoch {
                task: epoch,
                highest: highest.0,
                other_holder: Some((holder.to_string(), highest.1.clone())),
            }));
        }
        if epoch > highest.0 || (epoch == highest.0 && highest.1.is_empty() && !holder.is_empty()) {
            if holder.chars().any(|c| c.is_whitespace() || c.is_control()) || holder.len() > 256 {
                return Ok(Err(StaleEpoch {
                    task: epoch,
                    highest: highest.0,
                    other_holder: Some((holder.escape_debug().to_string(), highest.1.clone())),
                }));
            }
            let err = |source| JournalError {
                path: self.epoch_path.clone(),
                source,
            };
            let tmp = self.epoch_path.with_extension("tmp");
            {
                let mut f = std::fs::File::create(&tmp).map_err(err)?;
                f.write_all(format!("{epoch} {holder}\n").as_bytes())
                    .and_then(|_| f.sync_all())
                    .map_err(err)?;
            }
            std::fs::rename(&tmp, &self.epoch_path).map_err(err)?;
            if let Some(dir) = self.epoch_path.parent() {
                let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
            }
            *highest = (epoch, holder.to_string());
        }
        Ok(Ok(()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// How many bytes the journal file holds (0 when it cannot be read).
    pub fn bytes(&self) -> u64 {
        std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0)
    }

    /// What is known of `id`.
    pub fn seen(&self, id: &str) -> Seen {
        let inner = self.lock();
        if let Some(d) = inner.finished.get(id) {
            return Seen::Finished(
                pb::Outcome::try_from(d.outcome).unwrap_or(pb::Outcome::Unspecified),
                d.output.clone(),
            );
        }
        if inner.started.contains_key(id) {
            return Seen::Interrupted;
        }
        Seen::New
    }

    /// When a started, unfinished task started (Unix ms; `None` when not known).
    pub fn started_at(&self, id: &str) -> Option<i64> {
        self.lock().started.get(id).copied().filter(|ms| *ms > 0)
    }

    /// When a finished task started and finished (Unix ms; 0 where the entry does not say).
    pub fn ran(&self, id: &str) -> Option<(i64, i64)> {
        self.lock()
            .finished
            .get(id)
            .map(|d| (d.started_ms, d.finished_ms))
    }

    /// The outcome of a finished task, if known.
    pub fn outcome(&self, id: &str) -> Option<pb::Outcome> {
        match self.seen(id) {
            Seen::Finished(o, _) => Some(o),
            _ => None,
        }
    }

    fn append(&self, inner: &mut Inner, line: &Line) -> Result<(), JournalError> {
        let err = |source| JournalError {
            path: self.path.clone(),
            source,
        };
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(err)?;
        let mut text = serde_json::to_string(line).map_err(|e| err(std::io::Error::other(e)))?;
        text.push('\n');
        if f.metadata().map_err(err)?.len() != inner.good_len {
            // The bytes of a failed append are still there: cut them first.
            f.set_len(inner.good_len).map_err(err)?;
        }
        let written = f.write_all(text.as_bytes()).and_then(|_| f.sync_all());
        if let Err(e) = written {
            let _ = f.set_len(inner.good_len).and_then(|_| f.sync_all());
            return Err(err(e));
        }
        inner.good_len += text.len() as u64;
        inner.lines += 1;
        Ok(())
    }

    /// Records that `id` starts now (durably, before it runs).
    pub fn start(&self, id: &str) -> Result<(), JournalError> {
        let mut inner = self.lock();
        let at = now_ms();
        inner.started.insert(id.to_string(), at);
        self.append(
            &mut inner,
            &Line {
                id: id.into(),
                state: "started".into(),
                outcome: 0,
                output: String::new(),
                started_ms: at,
                finished_ms: 0,
            },
        )
    }

    /// Records that `id` finished.
    pub fn finish(&self, id: &str, outcome: pb::Outcome, output: &str) -> Result<(), JournalError> {
        let mut inner = self.lock();
        let output = tail(output, OUTPUT_CAP);
        let started_ms = inner.started.remove(id).unwrap_or(0);
        let done = Done {
            outcome: outcome as i32,
            output: output.clone(),
            started_ms,
            finished_ms: now_ms(),
        };
        let finished_ms = done.finished_ms;
        if inner.finished.insert(id.to_string(), done).is_none() {
            inner.order.push_back(id.to_string());
        }
        self.append(
            &mut inner,
            &Line {
                id: id.into(),
                state: "finished".into(),
                outcome: outcome as i32,
                output,
                started_ms,
                finished_ms,
            },
        )?;
        if inner.lines > 2 * KEEP + 100 {
            self.compact(&mut inner)?;
        }
        Ok(())
    }

    /// Rewrites the file with the last `KEEP` finished tasks and any unfinished ones.
    fn compact(&self, inner: &mut Inner) -> Result<(), JournalError> {
        let err = |source| JournalError {
            path: self.path.clone(),
            source,
        };
        while inner.order.len() > KEEP {
            if let Some(old) = inner.order.pop_front() {
                inner.finished.remove(&old);
            }
        }
        let mut text = String::new();
        for (id, at) in &inner.started {
            let l = Line {
                id: id.clone(),
                state: "started".into(),
                outcome: 0,
                output: String::new(),
                started_ms: *at,
                finished_ms: 0,
            };
            text.push_str(&serde_json::to_string(&l).map_err(|e| err(std::io::Error::other(e)))?);
            text.push('\n');
        }
        for id in &inner.order {
            if let Some(d) = inner.finished.get(id) {
                let l = Line {
                    id: id.clone(),
                    state: "finished".into(),
                    outcome: d.outcome,
                    output: d.output.clone(),
                    started_ms: d.started_ms,
                    finished_ms: d.finished_ms,
                };
                text.push_str(
                    &serde_json::to_string(&l).map_err(|e| err(std::io::Error::other(e)))?,
                );
                text.push('\n');
            }
        }
        crate::files::replace_atomically(&self.path, text.as_bytes(), 0o600, None)
            .map_err(|e| err(std::io::Error::other(e.to_string())))?;
        inner.lines = inner.started.len() + inner.order.len();
        inner.good_len = text.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_line_is_cut_so_the_next_line_is_never_hidden(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("journal.jsonl");
        // What a full disk or a power cut leaves: the first bytes of a line, no newline, here
        // cut inside a multi-byte character.
        let mut torn = b"{\"id\":\"a\",\"state\":\"finished\",\"outcome\":1,\"output\":\"\"}\n{\"id\":\"b\",\"output\":\"".to_vec();
        torn.extend_from_slice(&"\u{20ac}".as_bytes()[..2]);
        std::fs::write(&path, torn)?;
        let j = Journal::open(dir.path())?;
        assert!(std::fs::read_to_string(&path)?.ends_with('\n'));
        j.start("c")?;
        // Bytes of a failed append left behind (the cut after it failed too) are cut first.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)?
            .write_all(b"{\"id\":\"x\",\"st")?;
        j.start("d")?;
        drop(j);
        let text = std::fs::read_to_string(&path)?;
        assert!(
            text.lines()
                .all(|l| serde_json::from_str::<Line>(l).is_ok()),
            "{text}"
        );
        let j = Journal::open(dir.path())?;
        assert_eq!(
            j.seen("a"),
            Seen::Finished(pb::Outcome::Changed, String::new())
        );
        assert_eq!(j.seen("b"), Seen::New);
        assert_eq!(j.seen("c"), Seen::Interrupted);
        assert_eq!(j.seen("d"), Seen::Interrupted);
        Ok(())
    }

    #[test]
    fn survives_reopen_and_knows_interrupted_tasks() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let j = Journal::open(dir.path())?;
        j.start("a")?;
        j.finish("a", pb::Outcome::Changed, "did it")?;
        j.start("b")?;
        drop(j);
        let j = Journal::open(dir.path())?;
        assert_eq!(
            j.seen("a"),
            Seen::Finished(pb::Outcome::Changed, "did it".into())
        );
        assert_eq!(j.seen("b"), Seen::Interrupted);
        assert_eq!(j.seen("c"), Seen::New);
        Ok(())
    }

    #[test]
    fn keeps_when_a_task_ran_across_a_reopen_and_reads_old_lines(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        // A line of a 0.2 agent: no times.
        std::fs::write(
            dir.path().join("journal.jsonl"),
            "{\"id\":\"old\",\"state\":\"finished\",\"outcome\":1,\"output\":\"x\"}\n",
        )?;
        let j = Journal::open(dir.path())?;
        assert_eq!(j.ran("old"), Some((0, 0)));
        let before = now_ms();
        j.start("a")?;
        j.finish("a", pb::Outcome::Changed, "did it")?;
        drop(j);
        let j = Journal::open(dir.path())?;
        let (started, finished) = j.ran("a").ok_or("no times for a")?;
        assert!(
            started >= before && finished >= started,
            "{started} {finished}"
        );
        assert_eq!(j.ran("never"), None);
        Ok(())
    }

    #[test]
    fn stays_bounded() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let j = Journal::open(dir.path())?;
        for i in 0..(3 * KEEP) {
            let id = format!("t{i}");
            j.start(&id)?;
            j.finish(&id, pb::Outcome::Ok, "")?;
        }
        let lines = std::fs::read_to_string(dir.path().join("journal.jsonl"))?
            .lines()
            .count();
        assert!(lines <= 2 * KEEP + 100, "{lines} lines");
        assert_eq!(j.seen("t0"), Seen::New, "the oldest are dropped");
        assert!(matches!(
            j.seen(&format!("t{}", 3 * KEEP - 1)),
            Seen::Finished(..)
        ));
        Ok(())
    }

    #[test]
    fn output_keeps_the_tail() {
        let s = "x".repeat(100) + "END";
        let t = tail(&s, 10);
        assert!(t.ends_with("END") && t.contains("cut"), "{t}");
    }
}
