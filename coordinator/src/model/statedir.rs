//! The coordinator's state dir (`state_dir`, `/var/lib/quorum` when packaged): the run store,
//! the used enrollment tokens and the etcd member certificates and keys. It is the
//! coordinator's alone: a new state dir is made 0700 and every file in it 0600 (`quorum serve`
//! also sets its umask to 0077), and the files of an existing one that are readable by others
//! (as 0.2.0 left them: 0644) are tightened at start, with a log line each.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The files of the state dir that must be private.
pub const PRIVATE_FILES: [&str; 4] = [
    "runs.sqlite",
    "runs.sqlite-wal",
    "runs.sqlite-shm",
    "used-tokens",
];

/// Where the etcd member certificates and keys live, under the state dir.
pub fn member_cert_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("pki").join("etcd")
}

/// Creates `dir` (0700) if missing, or tightens the modes of its private files if looser
/// than 0600; returns a line per change made, for the log.
pub fn prepare(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut changes = Vec::new();
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {
            let mode = m.permissions().mode() & 0o777;
            if mode & 0o007 != 0 {
                // Not changed here: a packaged install shares /var/lib/quorum with the agent
                // and systemd sets its mode; the files in it are what must be private.
                changes.push(format!(
                    "state dir {} is {mode:o}, so every user can list it; its files are private, but `chmod 0700` it (0750 for the packaged /var/lib/quorum)",
                    dir.display()
                ));
            }
        }
        Ok(_) => {
            return Err(std::io::Error::other(format!(
                "{} exists and is not a directory",
                dir.display()
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        Err(e) => return Err(e),
    }
    for name in PRIVATE_FILES {
        changes.extend(tighten(&dir.join(name), 0o600)?);
    }
    let certs = member_cert_dir(dir);
    if certs.is_dir() {
        changes.extend(tighten(&certs, 0o700)?);
        for entry in std::fs::read_dir(&certs)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "key") {
                changes.extend(tighten(&path, 0o600)?);
            }
        }
    }
    Ok(changes)
}

/// Creates the member certificate dir (0700) and, while it holds no certificate yet, copies
/// the member certificates and keys found in `legacy` dirs (where 0.2.0 kept them: beside the
/// CA, as Pigsty's files/pki/etcd, or `<state_dir>/pki-etcd`), so members keep the
/// certificates they have and no config changes. Returns a line per file copied.
pub fn create_member_cert_dir<'a>(
    dir: &Path,
    legacy: impl IntoIterator<Item = &'a PathBuf>,
) -> std::io::Result<Vec<String>> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    tighten(dir, 0o700)?;
    let mut done = Vec::new();
    let empty = std::fs::read_dir(dir)?.next().is_none();
    if !empty {
        return Ok(done);
    }
    for old in legacy {
        let Ok(entries) = std::fs::read_dir(old) else {
            continue;
        };
        for entry in entries.flatten() {
            let from = entry.path();
            let mode = match from.extension().and_then(|e| e.to_str()) {
                Some("key") => 0o600,
                Some("crt") => 0o644,
                _ => continue,
            };
            let Some(name) = from.file_name() else {
                continue;
            };
            let to = dir.join(name);
            if to.exists() || !entry.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            let data = std::fs::read(&from)?;
            crate::model::pki::write_new(&to, &data, mode).map_err(std::io::Error::other)?;
            done.push(format!(
                "copied the etcd member certificate file {} to {}",
                from.display(),
                to.display()
            ));
        }
    }
    Ok(done)
}

/// Sets `path` to `mode` when it grants more than `mode`; a missing path is fine.
fn tighten(path: &Path, mode: u32) -> std::io::Result<Option<String>> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if meta.file_type().is_symlink() {
        return Ok(None);
    }
    let old = meta.permissions().mode() & 0o777;
    if old & !mode == 0 {
        return Ok(None);
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(Some(format!(
        "{} was {old:o}, readable by others; made it {mode:o}",
        path.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0)
    }

    /// Probe F4: member certificates go to `<state_dir>/pki/etcd` (0700, keys 0600); the ones
    /// 0.2.0 kept beside the CA are copied once, so members keep their certificates.
    #[test]
    fn member_certs_move_into_the_state_dir() -> std::io::Result<()> {
        let tmp = tempfile::tempdir()?;
        let legacy = tmp.path().join("files/pki/etcd");
        std::fs::create_dir_all(&legacy)?;
        std::fs::write(legacy.join("etcd-1.crt"), "crt")?;
        std::fs::write(legacy.join("etcd-1.key"), "key")?;
        std::fs::write(legacy.join("notes.txt"), "x")?;
        let state = tmp.path().join("state");
        prepare(&state)?;
        let dir = member_cert_dir(&state);
        let copied = create_member_cert_dir(&dir, [&legacy])?;
        assert_eq!(copied.len(), 2, "{copied:?}");
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("etcd-1.key")), 0o600);
        assert_eq!(std::fs::read_to_string(dir.join("etcd-1.crt"))?, "crt");
        assert!(!dir.join("notes.txt").exists());
        // Once the dir holds certificates, nothing more is copied.
        std::fs::write(legacy.join("etcd-2.crt"), "crt")?;
        assert!(create_member_cert_dir(&dir, [&legacy])?.is_empty());
        Ok(())
    }

    #[test]
    fn a_new_dir_is_private_and_old_files_are_tightened() -> std::io::Result<()> {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().join("state");
        assert!(prepare(&dir)?.is_empty());
        assert_eq!(mode(&dir), 0o700);
        // What 0.2.0 left: world-readable files.
        for name in ["runs.sqlite", "runs.sqlite-wal", "used-tokens"] {
            std::fs::write(dir.join(name), "x")?;
            std::fs::set_permissions(dir.join(name), std::fs::Permissions::from_mode(0o644))?;
        }
        std::fs::write(dir.join("other"), "x")?;
        std::fs::set_permissions(dir.join("other"), std::fs::Permissions::from_mode(0o644))?;
        let changes = prepare(&dir)?;
        assert_eq!(changes.len(), 3, "{changes:?}");
        assert!(changes[0].contains("was 644, readable by others; made it 600"));
        for name in ["runs.sqlite", "runs.sqlite-wal", "used-tokens"] {
            assert_eq!(mode(&dir.join(name)), 0o600, "{name}");
        }
        assert_eq!(mode(&dir.join("other")), 0o644, "not ours to change");
        assert!(prepare(&dir)?.is_empty(), "a second start changes nothing");
        // A dir others can list is reported, not changed.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        let changes = prepare(&dir)?;
        assert!(changes[0].contains("is 755"), "{changes:?}");
        assert_eq!(mode(&dir), 0o755);
        Ok(())
    }
}
