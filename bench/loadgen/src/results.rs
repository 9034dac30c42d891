//! The results file that ties a benchmark run together: one `key=value` per line, appended by
//! every step of `bench/run.sh` (the script itself and each loadgen subcommand), then read back
//! whole by `quorum-loadgen table`. A later line for the same key wins, so a step can be re-run.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// An append-only results file.
pub struct Results {
    path: PathBuf,
}

impl Results {
    /// Results appended to `path` (created on the first write).
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
        }
    }

    /// Appends `key=value`, and echoes it to stdout so the run's log shows progress.
    pub fn put(&self, key: &str, value: impl Display) -> Result<()> {
        let line = format!("{key}={value}");
        println!("{line}");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .with_context(|| format!("cannot append to {}", self.path.display()))?;
        writeln!(f, "{line}")?;
        Ok(())
    }

    /// Every key with its last value.
    pub fn load(path: &Path) -> Result<BTreeMap<String, String>> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read results file {}", path.display()))?;
        Ok(parse(&text))
    }
}

/// Parses `key=value` lines; lines without `=` are ignored, later keys win.
pub fn parse(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_lines_win_and_junk_is_skipped() {
        let m = parse("a=1\nnoise\nb = x y\na=2\n");
        assert_eq!(m["a"], "2");
        assert_eq!(m["b"], "x y");
        assert_eq!(m.len(), 2);
    }
}
