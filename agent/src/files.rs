//! File writes that are never seen half-done: write a temp file in the same directory, fsync
//! it, set owner and mode, keep the previous version as `<file>.bak`, rename over the target,
//! fsync the directory. And the sha256 facts of managed files.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::Digest;

/// File write errors, naming the path.
#[derive(Debug, thiserror::Error)]
#[error("{action} {path}: {source}")]
pub struct FileError {
    action: &'static str,
    path: PathBuf,
    source: std::io::Error,
}

fn ferr<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> FileError + 'a {
    move |source| FileError {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// A resolved owner (uid, gid).
pub type Ids = (nix::unistd::Uid, nix::unistd::Gid);

/// Resolves `user`/`group` names.
pub fn resolve_owner(user: &str, group: &str) -> Result<Ids, String> {
    let u = nix::unistd::User::from_name(user)
        .map_err(|e| format!("cannot look up user {user}: {e}"))?
        .ok_or_else(|| {
            format!("user {user} does not exist on this host; create it or set owners in agent.yml")
        })?;
    let g = nix::unistd::Group::from_name(group)
        .map_err(|e| format!("cannot look up group {group}: {e}"))?
        .ok_or_else(|| {
            format!(
                "group {group} does not exist on this host; create it or set owners in agent.yml"
            )
        })?;
    Ok((u.uid, g.gid))
}

/// Whether the resolved `path` lies under one of `prefixes`, each taken as written and as it
/// resolves on this host (Pigsty's `/pg` is itself a link into `/data`); with `strictly`, a
/// path equal to a prefix does not count.
pub fn under_prefixes(path: &Path, prefixes: &[PathBuf], strictly: bool) -> bool {
    prefixes.iter().any(|pre| {
        let inside = |p: &Path| path.starts_with(p) && !(strictly && path == p);
        inside(pre) || fs::canonicalize(pre).is_ok_and(|real| inside(&real))
    })
}

/// Writes `data` to `path` atomically (no `.bak`); used for the agent's own files.
pub fn replace_atomically(
    path: &Path,
    data: &[u8],
    mode: u32,
    owner: Option<Ids>,
) -> Result<(), FileError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.quorum-tmp.{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(ferr("cannot create", &tmp))?;
        f.write_all(data).map_err(ferr("cannot write", &tmp))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))
            .map_err(ferr("cannot chmod", &tmp))?;
        if let Some((uid, gid)) = owner {
            nix::unistd::fchown(&f, Some(uid), Some(gid)).map_err(|e| FileError {
                action: "cannot chown",
                path: tmp.clone(),
                source: e.into(),
            })?;
        }
        f.sync_all().map_err(ferr("cannot fsync", &tmp))?;
    }
    fs::rename(&tmp, path).map_err(ferr("cannot rename into", path))?;
    fsync_dir(dir)
}

fn fsync_dir(dir: &Path) -> Result<(), FileError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(ferr("cannot fsync directory", dir))
}

/// Whether a write changed the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// The content was already there; nothing was touched.
    Unchanged,
    /// The file was written (the previous version, if any, is in `<file>.bak`).
    Changed,
}

/// The `.bak` path of a file.
pub fn backup_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".bak");
    PathBuf::from(s)
}

/// Writes `data` to `path` unless it is already there; keeps the previous version as `.bak`.
pub fn write_managed(
    path: &Path,
    data: &[u8],
    mode: u32,
    owner: Option<Ids>,
) -> Result<Written, FileError> {
    let current = match fs::read(path) {
        Ok(c) => Some(c),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(ferr("cannot read", path)(e)),
    };
    if current.as_deref() == Some(data) {
        return Ok(Written::Unchanged);
    }
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(ferr("cannot create", dir))?;
    }
    if let Some(old) = &current {
        let old_mode = fs::metadata(path)
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(mode);
        replace_atomically(&backup_path(path), old, old_mode, owner)?;
    }
    replace_atomically(path, data, mode, owner)?;
    Ok(Written::Changed)
}

/// sha256 hex of a file, `None` if it does not exist.
pub fn sha256_file(path: &Path) -> Option<(String, Vec<u8>)> {
    let data = fs::read(path).ok()?;
    Some((hex::encode(sha2::Sha256::digest(&data)), data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_keep_the_previous_version_and_skip_identical_content(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("etcd.conf");
        assert_eq!(write_managed(&p, b"one", 0o644, None)?, Written::Changed);
        assert_eq!(write_managed(&p, b"one", 0o644, None)?, Written::Unchanged);
        assert!(
            !backup_path(&p).exists(),
            "an unchanged write touches nothing"
        );
        assert_eq!(write_managed(&p, b"two", 0o600, None)?, Written::Changed);
        assert_eq!(fs::read(&p)?, b"two");
        assert_eq!(fs::read(backup_path(&p))?, b"one");
        assert_eq!(fs::metadata(&p)?.permissions().mode() & 0o777, 0o600);
        let leftovers: Vec<_> = fs::read_dir(dir.path())?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains("quorum-tmp"))
            .collect();
        assert!(leftovers.is_empty());
        Ok(())
    }
}
