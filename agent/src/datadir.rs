//! The etcd data dir, opened and emptied by descriptor. A wipe removes the contents of one
//! real directory: it is reached from `/` one component at a time without following a link,
//! its resolved path is checked again against the agent config's rules, and it is walked with
//! `openat`/`unlinkat`, so a link inside it is removed as a link and a mount point inside it
//! is never crossed.

use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};

/// Why the data dir cannot be opened or emptied, naming the path.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// A component of the path (the data dir itself or an ancestor) is a symbolic link.
    #[error("{link} is a symbolic link (to {target}): the data dir {path} is only ever reached through real directories, so a wipe cannot be redirected; set paths.etcd_data to the real directory")]
    Link {
        /// The configured data dir.
        path: PathBuf,
        /// The component that is a link.
        link: PathBuf,
        /// What it points at.
        target: String,
    },
    /// A component of the path is not a directory.
    #[error("{at} is not a directory, so {path} cannot be the data dir; fix paths.etcd_data")]
    NotDir {
        /// The configured data dir.
        path: PathBuf,
        /// The component that is not a directory.
        at: PathBuf,
    },
    /// A file etcd keeps as a regular file (a WAL) is something else.
    #[error("{at} is not a regular file")]
    NotFile {
        /// The path.
        at: PathBuf,
    },
    /// The resolved path breaks the config's rules (a system dir, outside the prefixes).
    #[error("{path} resolves to {real}, which {why}")]
    NotAllowed {
        /// The configured data dir.
        path: PathBuf,
        /// Where it really is.
        real: PathBuf,
        /// The rule it breaks.
        why: String,
    },
    /// Mount points inside the data dir: a wipe never crosses into another file system.
    #[error("{} holds {} (another file system); a wipe never crosses a mount point, so nothing was removed: unmount {} and wipe again", path.display(), list(points), if points.len() == 1 { "it" } else { "them" })]
    MountPoints {
        /// The data dir.
        path: PathBuf,
        /// The mount points found.
        points: Vec<PathBuf>,
    },
    /// A system call failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// On what.
        path: PathBuf,
        /// The error.
        source: Errno,
    },
}

fn list(points: &[PathBuf]) -> String {
    let names: Vec<String> = points
        .iter()
        .map(|p| format!("the mount point {}", p.display()))
        .collect();
    names.join(", ")
}

impl DataDirError {
    /// Whether this is a refusal (the layout is unsafe) rather than an I/O failure.
    pub fn is_refusal(&self) -> bool {
        !matches!(self, DataDirError::Io { .. })
    }
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(Errno) -> DataDirError + 'a {
    move |source| DataDirError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// An open data dir.
#[derive(Debug)]
pub struct DataDir {
    fd: OwnedFd,
    path: PathBuf,
    real: PathBuf,
    dev: u64,
}

impl DataDir {
    /// Opens `path` from `/`, one component at a time with `O_NOFOLLOW`, and checks where it
    /// really is with `allowed` (which says what is wrong, if anything). `Ok(None)` when it
    /// does not exist.
    pub fn open(
        path: &Path,
        allowed: impl Fn(&Path) -> Result<(), String>,
    ) -> Result<Option<Self>, DataDirError> {
        let mut fd =
            nix::fcntl::open("/", DIR_FLAGS, Mode::empty()).map_err(io("open", Path::new("/")))?;
        let mut at = PathBuf::from("/");
        for c in path.components() {
            let name = match c {
                Component::RootDir | Component::CurDir => continue,
                Component::Normal(n) => n,
                Component::ParentDir | Component::Prefix(_) => {
                    return Err(DataDirError::NotAllowed {
                        path: path.to_path_buf(),
                        real: path.to_path_buf(),
                        why: "is not a plain absolute path".into(),
                    })
                }
            };
            let parent = fd;
            at.push(name);
            fd = match nix::fcntl::openat(&parent, name, DIR_FLAGS, Mode::empty()) {
                Ok(next) => next,
                Err(Errno::ENOENT) => return Ok(None),
                Err(Errno::ELOOP | Errno::ENOTDIR) => {
                    return Err(match nix::fcntl::readlinkat(&parent, name) {
                        Ok(target) => DataDirError::Link {
                            path: path.to_path_buf(),
                            link: at,
                            target: target.to_string_lossy().into_owned(),
                        },
                        Err(_) => DataDirError::NotDir {
                            path: path.to_path_buf(),
                            at,
                        },
                    })
                }
                Err(e) => return Err(io("open", &at)(e)),
            };
        }
        if at == Path::new("/") {
            return Err(DataDirError::NotAllowed {
                path: path.to_path_buf(),
                real: at,
                why: "is the root directory".into(),
            });
        }
        let real = resolved(&fd, path);
        allowed(&real).map_err(|why| DataDirError::NotAllowed {
            path: path.to_path_buf(),
            real: real.clone(),
            why,
        })?;
        let dev = fstat(&fd).map_err(io("stat", path))?.st_dev;
        Ok(Some(Self {
            fd,
            path: path.to_path_buf(),
            real,
            dev,
        }))
    }

    /// Where the data dir really is.
    pub fn real(&self) -> &Path {
        &self.real
    }

    /// The mount points inside the data dir (none, for a wipe to go ahead).
    pub fn mount_points(&self) -> Result<Vec<PathBuf>, DataDirError> {
        let mut found = Vec::new();
        self.scan(&self.fd, &self.path, &mut found)?;
        Ok(found)
    }

    fn scan(&self, dir: &OwnedFd, at: &Path, found: &mut Vec<PathBuf>) -> Result<(), DataDirError> {
        for name in entries(dir, at)? {
            let path = at.join(OsStr::from_bytes(name.as_bytes()));
            if !is_dir(dir, &name, &path)? {
                continue;
            }
            match self.open_subdir(dir, &name, &path)? {
                Some(sub) => self.scan(&sub, &path, found)?,
                None => found.push(path),
            }
        }
        Ok(())
    }

    /// Removes everything inside the data dir (not the dir itself); returns how many entries
    /// were directly in it. Refuses, removing nothing, when a mount point is inside. On an
    /// error the count is of the entries removed before it.
    pub fn remove_contents(&self) -> Result<usize, (DataDirError, usize)> {
        let points = self.mount_points().map_err(|e| (e, 0))?;
        if !points.is_empty() {
            return Err((
                DataDirError::MountPoints {
                    path: self.path.clone(),
                    points,
                },
                0,
            ));
        }
        let mut removed = 0;
        for name in entries(&self.fd, &self.path).map_err(|e| (e, 0))? {
            self.remove_entry(&self.fd, &self.path, &name)
                .map_err(|e| (e, removed))?;
            removed += 1;
        }
        Ok(removed)
    }

    fn remove_entry(&self, dir: &OwnedFd, at: &Path, name: &CStr) -> Result<(), DataDirError> {
        let path = at.join(OsStr::from_bytes(name.to_bytes()));
        if is_dir(dir, name, &path)? {
            // Re-checked here, not only in the scan: a mount that appeared since is not crossed.
            let Some(sub) = self.open_subdir(dir, name, &path)? else {
                return Err(DataDirError::MountPoints {
                    path: self.path.clone(),
                    points: vec![path],
                });
            };
            for child in entries(&sub, &path)? {
                self.remove_entry(&sub, &path, &child)?;
            }
            unlinkat(dir, name, UnlinkatFlags::RemoveDir).map_err(io("remove", &path))
        } else {
            // unlinkat never follows a link: a link is removed, its target is not touched.
            unlinkat(dir, name, UnlinkatFlags::NoRemoveDir).map_err(io("remove", &path))
        }
    }

    /// The first `limit` bytes of the first WAL file (`member/wal/*.wal` in name order), and
    /// its path; `None` when there is none. Read by descriptor like a wipe walks: no link is
    /// followed, and only a regular file is read.
    pub fn wal_head(&self, limit: usize) -> Result<Option<(PathBuf, Vec<u8>)>, DataDirError> {
        use std::io::Read;
        let mut at = self.path.clone();
        let mut dir: Option<OwnedFd> = None;
        for name in [c"member", c"wal"] {
            at.push(OsStr::from_bytes(name.to_bytes()));
            let parent = dir.as_ref().unwrap_or(&self.fd);
            match nix::fcntl::openat(parent, name, DIR_FLAGS, Mode::empty()) {
                Ok(fd) => dir = Some(fd),
                Err(Errno::ENOENT) => return Ok(None),
                Err(e) => return Err(io("open", &at)(e)),
            }
        }
        let Some(wal_dir) = dir else {
            return Ok(None);
        };
        let mut names: Vec<CString> = entries(&wal_dir, &at)?
            .into_iter()
            .filter(|n| n.to_bytes().ends_with(b".wal"))
            .collect();
        names.sort();
        let Some(first) = names.first() else {
            return Ok(None);
        };
        let path = at.join(OsStr::from_bytes(first.to_bytes()));
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        let fd = nix::fcntl::openat(&wal_dir, first.as_c_str(), flags, Mode::empty())
            .map_err(io("open", &path))?;
        let st = fstat(&fd).map_err(io("stat", &path))?;
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
            return Err(DataDirError::NotFile { at: path });
        }
        let mut head = Vec::with_capacity(limit.min(64 * 1024));
        std::fs::File::from(fd)
            .take(limit as u64)
            .read_to_end(&mut head)
            .map_err(|e| DataDirError::Io {
                action: "read",
                path: path.clone(),
                source: Errno::from_raw(e.raw_os_error().unwrap_or(0)),
            })?;
        Ok(Some((path, head)))
    }

    /// Opens a subdirectory without following a link or crossing a mount; `None` when it is
    /// a mount point.
    fn open_subdir(
        &self,
        dir: &OwnedFd,
        name: &CStr,
        path: &Path,
    ) -> Result<Option<OwnedFd>, DataDirError> {
        use nix::fcntl::{OpenHow, ResolveFlag};
        let how = OpenHow::new().flags(DIR_FLAGS).resolve(
            ResolveFlag::RESOLVE_NO_XDEV
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_BENEATH,
        );
        // openat2 also sees bind mounts of the same file system; kernels before 5.6 (or a
        // seccomp filter) lack it, and then the device number below is the check.
        let sub = match nix::fcntl::openat2(dir, name, how) {
            Ok(fd) => fd,
            Err(Errno::EXDEV) => return Ok(None),
            Err(Errno::ENOSYS | Errno::EPERM) => {
                nix::fcntl::openat(dir, name, DIR_FLAGS, Mode::empty()).map_err(io("open", path))?
            }
            Err(e) => return Err(io("open", path)(e)),
        };
        let dev = fstat(&sub).map_err(io("stat", path))?.st_dev;
        Ok((dev == self.dev).then_some(sub))
    }
}

/// The path the kernel has for an open directory (what `canonicalize` would give, without a
/// second lookup that a rename could race); the configured path when /proc is not there.
fn resolved(fd: &OwnedFd, path: &Path) -> PathBuf {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd()))
        .or_else(|_| std::fs::canonicalize(path))
        .unwrap_or_else(|_| path.to_path_buf())
}

/// Whether `name` in `dir` is a directory itself (a link to one is not).
fn is_dir(dir: &OwnedFd, name: &CStr, path: &Path) -> Result<bool, DataDirError> {
    let st = fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(io("stat", path))?;
    Ok(SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR)
}

/// The names in `dir`, without `.` and `..`.
fn entries(dir: &OwnedFd, at: &Path) -> Result<Vec<CString>, DataDirError> {
    let mut d = nix::dir::Dir::openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io("list", at))?;
    let mut names = Vec::new();
    for e in d.iter() {
        let e = e.map_err(io("list", at))?;
        let name = e.file_name();
        if name != c"." && name != c".." {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn ok(_: &Path) -> Result<(), String> {
        Ok(())
    }

    #[test]
    fn a_linked_data_dir_or_ancestor_is_refused() -> Result<(), Box<dyn std::error::Error>> {
        let t = tempfile::tempdir()?;
        let outside = t.path().join("outside");
        std::fs::create_dir_all(outside.join("sub"))?;
        std::fs::write(outside.join("a"), "keep")?;
        symlink(&outside, t.path().join("data"))?;
        match DataDir::open(&t.path().join("data"), ok) {
            Err(DataDirError::Link { link, .. }) => assert_eq!(link, t.path().join("data")),
            other => panic!("{other:?}"),
        }
        match DataDir::open(&t.path().join("data/sub"), ok) {
            Err(DataDirError::Link { link, .. }) => assert_eq!(link, t.path().join("data")),
            other => panic!("{other:?}"),
        }
        assert!(DataDir::open(&t.path().join("missing/etcd"), ok)?.is_none());
        assert_eq!(std::fs::read_to_string(outside.join("a"))?, "keep");
        Ok(())
    }

    #[test]
    fn links_inside_are_removed_as_links() -> Result<(), Box<dyn std::error::Error>> {
        let t = tempfile::tempdir()?;
        let data = t.path().join("data");
        let outside = t.path().join("outside");
        std::fs::create_dir_all(data.join("member/wal"))?;
        std::fs::create_dir_all(&outside)?;
        std::fs::write(outside.join("precious"), "keep")?;
        std::fs::write(data.join("member/wal/0.wal"), "x")?;
        symlink(&outside, data.join("member/link-dir"))?;
        symlink(outside.join("precious"), data.join("link-file"))?;
        let dir = DataDir::open(&data, ok)?.ok_or("data dir missing")?;
        assert_eq!(dir.remove_contents().map_err(|(e, _)| e)?, 2);
        assert_eq!(std::fs::read_dir(&data)?.count(), 0);
        assert_eq!(std::fs::read_to_string(outside.join("precious"))?, "keep");
        Ok(())
    }

    #[test]
    fn the_resolved_path_is_checked() -> Result<(), Box<dyn std::error::Error>> {
        let t = tempfile::tempdir()?;
        let data = t.path().join("data");
        std::fs::create_dir_all(&data)?;
        let r = DataDir::open(&data, |real| {
            Err(format!("{} is not allowed", real.display()))
        });
        match r {
            Err(DataDirError::NotAllowed { real, .. }) => assert_eq!(real, data),
            other => panic!("{other:?}"),
        }
        Ok(())
    }
}
