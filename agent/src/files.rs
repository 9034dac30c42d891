//! Managed files, read and written so that the agent (root) never works through something it
//! did not mean to: a path is checked with `lstat` first and must be a regular file; its
//! directory is opened and its real path checked against the allowed prefixes (a symlinked
//! parent that leads outside is refused); reads use `O_NOFOLLOW|O_NONBLOCK` and a size cap;
//! writes go to a temp file in the same directory (fsync, owner, mode), keep the previous
//! version as `<file>.bak` with that file's own owner and mode, rename over the file and fsync
//! the directory, all relative to the directory's descriptor.
//!
//! The one link that is followed is one Pigsty lays out itself (`/etc/patroni/patroni.yml` →
//! `/pg/conf/<cluster>-<seq>.yml`, see `Paths::may_be_link`): it is written through to its
//! target, which must be a regular file inside the allowed prefixes, and the link is kept.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, FileStat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};
use sha2::Digest;

/// Largest managed file the agent reads (and so writes, keeps as `.bak` or reports).
pub const READ_CAP: usize = 4 * 1024 * 1024;

/// Why a managed file was not read or written, naming the path.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// Not a regular file (FIFO, device, directory, socket).
    #[error("{} is a {what}, not a regular file; the agent reads and writes only regular files there: remove it (and find out who put it there)", path.display())]
    NotRegular {
        /// The managed path.
        path: PathBuf,
        /// What it is.
        what: &'static str,
    },
    /// A symbolic link the agent does not follow.
    #[error("{} is a symbolic link to {}: {why}", path.display(), target.display())]
    Link {
        /// The managed path.
        path: PathBuf,
        /// What the link says.
        target: PathBuf,
        /// Why it is not followed, and what to do.
        why: String,
    },
    /// The directory resolves outside the allowed prefixes.
    #[error("{}: its directory {} resolves to {}, outside every allowed prefix ({prefixes}); the agent does not read or write there: make {} a real directory inside the prefixes", path.display(), dir.display(), real.display(), dir.display())]
    Outside {
        /// The managed path.
        path: PathBuf,
        /// Its directory as configured.
        dir: PathBuf,
        /// Where that directory really is.
        real: PathBuf,
        /// The allowed prefixes.
        prefixes: String,
    },
    /// Over the size cap.
    #[error("{} holds {size} bytes or more, over the {cap}-byte limit for a managed file; the agent does not read it: check what it is", path.display())]
    TooLarge {
        /// The managed path.
        path: PathBuf,
        /// Its size (at least).
        size: u64,
        /// The cap.
        cap: usize,
    },
    /// A system call failed.
    #[error("cannot {action} {}: {source}{}", path.display(), io_hint(source))]
    Io {
        /// What was being done.
        action: &'static str,
        /// On what.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// What to do about an I/O error whose cause the operator can fix on the host.
pub fn io_hint(e: &std::io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(code) if code == nix::errno::Errno::EROFS as i32 => {
            "; the agent's unit (quorum-agent.service, ProtectSystem=full) may write in /etc only in the \
             directories its ReadWritePaths= names that existed when it started: make sure the \
             directory exists, then `systemctl restart quorum-agent`"
        }
        Some(code) if code == nix::errno::Errno::ENOSPC as i32 => {
            "; the file system is full: free space there, then `quorum run resume`"
        }
        _ => "",
    }
}

impl FileError {
    /// Whether this is a refusal (the path is not something the agent works on) rather than
    /// an I/O failure.
    pub fn is_refusal(&self) -> bool {
        !matches!(self, FileError::Io { .. })
    }
}

fn ferr<'a, E: Into<std::io::Error>>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(E) -> FileError + 'a {
    move |source| FileError::Io {
        action,
        path: path.to_path_buf(),
        source: source.into(),
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

fn prefix_list(prefixes: &[PathBuf]) -> String {
    prefixes
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Writes `data` to `path` atomically (no `.bak`, no prefix rules); for the agent's own files.
pub fn replace_atomically(
    path: &Path,
    data: &[u8],
    mode: u32,
    owner: Option<Ids>,
) -> Result<(), FileError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path.file_name().ok_or_else(|| FileError::Io {
        action: "write",
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "it names no file"),
    })?;
    let dirfd = nix::fcntl::open(dir, DIR_FLAGS, Mode::empty()).map_err(ferr("open", dir))?;
    write_in(&dirfd, dir, name, data, mode, owner)
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_CLOEXEC);

/// Writes `name` in the directory `dirfd` (at `dir`): temp file, fsync, owner and mode,
/// rename over `name` (a link there is replaced, never followed), fsync the directory.
fn write_in(
    dirfd: &OwnedFd,
    dir: &Path,
    name: &OsStr,
    data: &[u8],
    mode: u32,
    owner: Option<Ids>,
) -> Result<(), FileError> {
    let path = dir.join(name);
    let mut tmp_name = OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".quorum-tmp.{}", std::process::id()));
    let tmp = dir.join(&tmp_name);
    let _ = unlinkat(dirfd, tmp_name.as_os_str(), UnlinkatFlags::NoRemoveDir);
    let fd = nix::fcntl::openat(
        dirfd,
        tmp_name.as_os_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(mode & 0o777),
    )
    .map_err(ferr("create", &tmp))?;
    let filled = (|| {
        let mut f = fs::File::from(fd);
        f.write_all(data).map_err(ferr("write", &tmp))?;
        nix::sys::stat::fchmod(&f, Mode::from_bits_truncate(mode)).map_err(ferr("chmod", &tmp))?;
        if let Some((uid, gid)) = owner {
            nix::unistd::fchown(&f, Some(uid), Some(gid)).map_err(ferr("chown", &tmp))?;
        }
        f.sync_all().map_err(ferr("fsync", &tmp))?;
        nix::fcntl::renameat(dirfd, tmp_name.as_os_str(), dirfd, name)
            .map_err(ferr("rename into", &path))
    })();
    if let Err(e) = filled {
        let _ = unlinkat(dirfd, tmp_name.as_os_str(), UnlinkatFlags::NoRemoveDir);
        return Err(e);
    }
    nix::unistd::fsync(dirfd).map_err(ferr("fsync directory", dir))
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

/// sha256 hex of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(data))
}

/// Whether a managed path may be a symbolic link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    /// It must be a regular file (or absent); a link is refused.
    Refuse,
    /// A link Pigsty lays out: read and written through to its target, which must be a
    /// regular file inside the allowed prefixes; the link itself is kept.
    WriteThrough,
}

/// A managed file: its configured path, the prefixes it must resolve under, and whether it
/// may be a link.
#[derive(Debug, Clone, Copy)]
pub struct Managed<'a> {
    /// The configured path.
    pub path: &'a Path,
    /// `allowed_prefixes` of the agent config.
    pub prefixes: &'a [PathBuf],
    /// Whether it may be a link.
    pub links: Links,
}

/// A managed file's content, with the owner and mode it has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    /// The bytes (at most [`READ_CAP`]).
    pub data: Vec<u8>,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub owner: Ids,
}

/// Where a managed file really is: its directory (open) and its name there.
struct Located {
    dir: OwnedFd,
    dir_path: PathBuf,
    name: OsString,
}

/// What is at a name, by `lstat`.
enum Kind {
    Missing,
    Regular,
    Link,
    Other(&'static str),
}

fn kind_at(dir: &OwnedFd, name: &OsStr, path: &Path) -> Result<Kind, FileError> {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(kind_of(&st)),
        Err(Errno::ENOENT) => Ok(Kind::Missing),
        Err(e) => Err(ferr("stat", path)(e)),
    }
}

fn kind_of(st: &FileStat) -> Kind {
    let t = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
    if t == SFlag::S_IFREG {
        Kind::Regular
    } else if t == SFlag::S_IFLNK {
        Kind::Link
    } else if t == SFlag::S_IFIFO {
        Kind::Other("FIFO (named pipe)")
    } else if t == SFlag::S_IFCHR {
        Kind::Other("character device")
    } else if t == SFlag::S_IFBLK {
        Kind::Other("block device")
    } else if t == SFlag::S_IFDIR {
        Kind::Other("directory")
    } else if t == SFlag::S_IFSOCK {
        Kind::Other("socket")
    } else {
        Kind::Other("special file")
    }
}

/// The path the kernel has for an open directory; `canonicalize` when /proc is not there.
fn real_path(fd: &OwnedFd, path: &Path) -> Result<PathBuf, FileError> {
    fs::read_link(format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd()))
        .or_else(|_| fs::canonicalize(path))
        .map_err(ferr("resolve", path))
}

impl Managed<'_> {
    /// Reads the file: `Ok(None)` when it (or its directory) does not exist.
    pub fn read(&self) -> Result<Option<Content>, FileError> {
        match self.locate(false)? {
            Some(loc) => self.read_at(&loc),
            None => Ok(None),
        }
    }

    /// Writes `data` with `mode` and `owner` unless it is already there; the previous
    /// version is kept as `<file>.bak` beside the file actually written (a link's target),
    /// with the owner and mode it had. Creates missing directories inside the prefixes.
    pub fn write(&self, data: &[u8], mode: u32, owner: Option<Ids>) -> Result<Written, FileError> {
        let loc = self.locate(true)?.ok_or_else(|| FileError::Io {
            action: "open the directory of",
            path: self.path.to_path_buf(),
            source: std::io::ErrorKind::NotFound.into(),
        })?;
        let current = self.read_at(&loc)?;
        if current.as_ref().map(|c| c.data.as_slice()) == Some(data) {
            return Ok(Written::Unchanged);
        }
        if let Some(old) = &current {
            let mut bak = loc.name.clone();
            bak.push(".bak");
            write_in(
                &loc.dir,
                &loc.dir_path,
                &bak,
                &old.data,
                old.mode,
                Some(old.owner),
            )?;
        }
        write_in(&loc.dir, &loc.dir_path, &loc.name, data, mode, owner)?;
        Ok(Written::Changed)
    }

    /// Removes the file and its `.bak` when they are there (regular files only, checked as
    /// `read` and `write` check them); a path that may be a link is never removed. Returns
    /// whether anything was removed.
    pub fn remove(&self) -> Result<bool, FileError> {
        if self.links == Links::WriteThrough {
            return Err(FileError::Link {
                path: self.path.to_path_buf(),
                target: PathBuf::new(),
                why: "a file that may be Pigsty's link is never removed by the agent".into(),
            });
        }
        let Some(loc) = self.locate(false)? else {
            return Ok(false);
        };
        let mut bak = loc.name.clone();
        bak.push(".bak");
        let mut removed = false;
        for name in [&loc.name, &bak] {
            let path = loc.dir_path.join(name);
            match kind_at(&loc.dir, name, &path)? {
                Kind::Missing => {}
                Kind::Regular => {
                    unlinkat(&loc.dir, name.as_os_str(), UnlinkatFlags::NoRemoveDir)
                        .map_err(ferr("remove", &path))?;
                    removed = true;
                }
                Kind::Link => {
                    return Err(FileError::Link {
                        path,
                        target: PathBuf::new(),
                        why: "the agent removes only regular files".into(),
                    })
                }
                Kind::Other(what) => return Err(FileError::NotRegular { path, what }),
            }
        }
        if removed {
            nix::unistd::fsync(&loc.dir).map_err(ferr("fsync directory", &loc.dir_path))?;
        }
        Ok(removed)
    }

    fn file_name(&self) -> Result<&OsStr, FileError> {
        self.path.file_name().ok_or_else(|| FileError::Io {
            action: "use",
            path: self.path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "it names no file"),
        })
    }

    /// Finds the file actually meant: checks the directory's real path, what is at the name,
    /// and for a permitted link its target. `None` when the directory does not exist (and is
    /// not to be created).
    fn locate(&self, create: bool) -> Result<Option<Located>, FileError> {
        let name = self.file_name()?;
        let dir = self.path.parent().unwrap_or(Path::new("/"));
        let Some((fd, real)) = self.open_dir(dir, create)? else {
            return Ok(None);
        };
        match kind_at(&fd, name, self.path)? {
            Kind::Missing | Kind::Regular => Ok(Some(Located {
                dir: fd,
                dir_path: real,
                name: name.to_owned(),
            })),
            Kind::Other(what) => Err(FileError::NotRegular {
                path: self.path.to_path_buf(),
                what,
            }),
            Kind::Link => {
                let target = PathBuf::from(
                    nix::fcntl::readlinkat(&fd, name).map_err(ferr("read the link", self.path))?,
                );
                let refuse = |why: String| FileError::Link {
                    path: self.path.to_path_buf(),
                    target: target.clone(),
                    why,
                };
                if self.links == Links::Refuse {
                    return Err(refuse(
                        "Pigsty lays no link at this path, so the agent neither reads nor writes through it; replace the link with a regular file".into(),
                    ));
                }
                let abs = real.join(&target);
                let (Some(tdir), Some(tname)) = (abs.parent(), abs.file_name()) else {
                    return Err(refuse("the target names no file".into()));
                };
                let (tfd, treal) = match self.open_dir(tdir, false) {
                    Ok(Some(found)) => found,
                    Ok(None) => {
                        return Err(refuse(format!(
                            "its directory {} does not exist; only a link to an existing regular file is written through",
                            tdir.display()
                        )))
                    }
                    Err(FileError::Outside { real, prefixes, .. }) => {
                        return Err(refuse(format!(
                            "its directory resolves to {}, outside every allowed prefix ({prefixes}); only a link into the prefixes is written through",
                            real.display()
                        )))
                    }
                    Err(e) => return Err(e),
                };
                match kind_at(&tfd, tname, &abs)? {
                    Kind::Regular => Ok(Some(Located {
                        dir: tfd,
                        dir_path: treal,
                        name: tname.to_owned(),
                    })),
                    Kind::Missing => Err(refuse(
                        "the target does not exist; only a link to an existing regular file is written through".into(),
                    )),
                    Kind::Link => Err(refuse(
                        "the target is itself a link; only a link straight to a regular file is written through".into(),
                    )),
                    Kind::Other(what) => Err(refuse(format!(
                        "the target is a {what}; only a link to a regular file is written through"
                    ))),
                }
            }
        }
    }

    /// Opens `dir` and checks where it really is; creates it first (inside the prefixes) when
    /// asked. `None` when it does not exist and is not to be created.
    fn open_dir(&self, dir: &Path, create: bool) -> Result<Option<(OwnedFd, PathBuf)>, FileError> {
        if create {
            self.create_dir(dir)?;
        }
        let fd = match nix::fcntl::open(dir, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) if !create => return Ok(None),
            Err(Errno::ENOTDIR) => {
                return Err(FileError::NotRegular {
                    path: dir.to_path_buf(),
                    what: "file where a directory should be",
                })
            }
            Err(e) => return Err(ferr("open", dir)(e)),
        };
        let real = real_path(&fd, dir)?;
        if !under_prefixes(&real, self.prefixes, false) {
            return Err(self.outside(dir, real));
        }
        Ok(Some((fd, real)))
    }

    fn outside(&self, dir: &Path, real: PathBuf) -> FileError {
        FileError::Outside {
            path: self.path.to_path_buf(),
            dir: dir.to_path_buf(),
            real,
            prefixes: prefix_list(self.prefixes),
        }
    }

    /// Creates `dir` when missing, but only when the deepest part that exists resolves so
    /// that the new directories land inside the prefixes.
    fn create_dir(&self, dir: &Path) -> Result<(), FileError> {
        let mut existing = dir;
        let mut missing = Vec::new();
        while fs::symlink_metadata(existing).is_err() {
            let (Some(parent), Some(name)) = (existing.parent(), existing.file_name()) else {
                break;
            };
            missing.push(name);
            existing = parent;
        }
        if missing.is_empty() {
            return Ok(());
        }
        let mut real = fs::canonicalize(existing).map_err(ferr("resolve", existing))?;
        real.extend(missing.iter().rev());
        if !under_prefixes(&real, self.prefixes, false) {
            return Err(self.outside(dir, real));
        }
        fs::create_dir_all(dir).map_err(ferr("create", dir))
    }

    /// Reads the located file: opened without following a link and without blocking (a FIFO
    /// raced in after the `lstat` does not hang the agent), checked again by `fstat`, capped.
    fn read_at(&self, loc: &Located) -> Result<Option<Content>, FileError> {
        let path = loc.dir_path.join(&loc.name);
        let fd = match nix::fcntl::openat(
            &loc.dir,
            loc.name.as_os_str(),
            OFlag::O_RDONLY
                | OFlag::O_NOFOLLOW
                | OFlag::O_NONBLOCK
                | OFlag::O_NOCTTY
                | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(None),
            Err(Errno::ELOOP) => return Err(FileError::Link {
                path: path.clone(),
                target: PathBuf::from(
                    nix::fcntl::readlinkat(&loc.dir, loc.name.as_os_str()).unwrap_or_default(),
                ),
                why:
                    "it became a link while the agent was reading it; the agent does not follow it"
                        .into(),
            }),
            Err(e) => return Err(ferr("open", &path)(e)),
        };
        let st = fstat(&fd).map_err(ferr("stat", &path))?;
        match kind_of(&st) {
            Kind::Regular => {}
            Kind::Other(what) => return Err(FileError::NotRegular { path, what }),
            Kind::Link | Kind::Missing => {
                return Err(FileError::NotRegular {
                    path,
                    what: "symbolic link",
                })
            }
        }
        let size = u64::try_from(st.st_size).unwrap_or(0);
        if size > READ_CAP as u64 {
            return Err(FileError::TooLarge {
                path,
                size,
                cap: READ_CAP,
            });
        }
        let mut data = Vec::with_capacity(size as usize);
        fs::File::from(fd)
            .take(READ_CAP as u64 + 1)
            .read_to_end(&mut data)
            .map_err(ferr("read", &path))?;
        if data.len() > READ_CAP {
            return Err(FileError::TooLarge {
                path,
                size: data.len() as u64,
                cap: READ_CAP,
            });
        }
        Ok(Some(Content {
            data,
            mode: st.st_mode & 0o7777,
            owner: (
                nix::unistd::Uid::from_raw(st.st_uid),
                nix::unistd::Gid::from_raw(st.st_gid),
            ),
        }))
    }
}

/// The last `lines` lines of the log file at `path`, read from at most its last `cap` bytes.
/// A log is written by the service, not by the agent, so the path is opened without following
/// a link and must be a regular file: a link planted there cannot make the agent send another
/// file's end to the coordinator.
pub fn tail_lines(path: &Path, lines: usize, cap: u64) -> Result<String, String> {
    use std::io::{Seek, SeekFrom};
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let fd = nix::fcntl::open(path, flags, Mode::empty()).map_err(|e| match e {
        Errno::ELOOP => format!(
            "{} is a symbolic link; a log is read only as a regular file",
            path.display()
        ),
        e => format!("cannot open {}: {}", path.display(), e.desc()),
    })?;
    let st = fstat(&fd).map_err(|e| format!("cannot stat {}: {}", path.display(), e.desc()))?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Err(format!("{} is not a regular file", path.display()));
    }
    let mut file = fs::File::from(fd);
    let len = u64::try_from(st.st_size).unwrap_or(0);
    let start = len.saturating_sub(cap);
    file.seek(SeekFrom::Start(start))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut buf = Vec::new();
    file.take(cap)
        .read_to_end(&mut buf)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&buf);
    let mut all: Vec<&str> = text.lines().collect();
    // Reading from the middle of the file, the first line is a fragment.
    if start > 0 && !all.is_empty() {
        all.remove(0);
    }
    let from = all.len().saturating_sub(lines);
    Ok(all[from..].join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn managed<'a>(path: &'a Path, prefixes: &'a [PathBuf], links: Links) -> Managed<'a> {
        Managed {
            path,
            prefixes,
            links,
        }
    }

    #[test]
    fn writes_keep_the_previous_version_and_skip_identical_content(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let pre = [dir.path().to_path_buf()];
        let p = dir.path().join("etc/etcd.conf");
        let m = managed(&p, &pre, Links::Refuse);
        assert_eq!(m.write(b"one", 0o644, None)?, Written::Changed);
        assert_eq!(m.write(b"one", 0o644, None)?, Written::Unchanged);
        assert!(
            !backup_path(&p).exists(),
            "an unchanged write touches nothing"
        );
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640))?;
        assert_eq!(m.write(b"two", 0o600, None)?, Written::Changed);
        assert_eq!(fs::read(&p)?, b"two");
        assert_eq!(fs::read(backup_path(&p))?, b"one");
        assert_eq!(fs::metadata(&p)?.permissions().mode() & 0o777, 0o600);
        // The .bak keeps the old file's mode, not the new one's.
        assert_eq!(
            fs::metadata(backup_path(&p))?.permissions().mode() & 0o777,
            0o640
        );
        let leftovers: Vec<_> = fs::read_dir(dir.path().join("etc"))?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains("quorum-tmp"))
            .collect();
        assert!(leftovers.is_empty());
        Ok(())
    }

    #[test]
    fn special_files_links_and_escaping_parents_are_refused(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let t = tempfile::tempdir()?;
        let root = t.path().join("host");
        let outside = t.path().join("outside");
        fs::create_dir_all(root.join("etc"))?;
        fs::create_dir_all(&outside)?;
        fs::write(outside.join("secret"), "TOPSECRET")?;
        let pre = [root.clone()];
        // A FIFO: refused by lstat, never opened (opening it would block).
        let fifo = root.join("etc/fifo.conf");
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600))?;
        let m = managed(&fifo, &pre, Links::WriteThrough);
        assert!(matches!(m.read(), Err(FileError::NotRegular { .. })));
        assert!(matches!(
            m.write(b"x", 0o644, None),
            Err(FileError::NotRegular { .. })
        ));
        // A directory at the path.
        fs::create_dir(root.join("etc/dir.conf"))?;
        let d = root.join("etc/dir.conf");
        assert!(matches!(
            managed(&d, &pre, Links::Refuse).read(),
            Err(FileError::NotRegular { .. })
        ));
        // A link where links are refused: nothing read, nothing written, no .bak.
        let link = root.join("etc/etcd.conf");
        symlink(outside.join("secret"), &link)?;
        let m = managed(&link, &pre, Links::Refuse);
        assert!(matches!(m.read(), Err(FileError::Link { .. })));
        assert!(matches!(
            m.write(b"x", 0o644, None),
            Err(FileError::Link { .. })
        ));
        assert!(!backup_path(&link).exists());
        assert_eq!(fs::read_to_string(outside.join("secret"))?, "TOPSECRET");
        // A link to outside the prefixes where links are allowed: refused too.
        assert!(matches!(
            managed(&link, &pre, Links::WriteThrough).read(),
            Err(FileError::Link { .. })
        ));
        // A parent directory that is a link to outside.
        symlink(&outside, root.join("etc/profile.d"))?;
        let p = root.join("etc/profile.d/etcdctl.sh");
        let m = managed(&p, &pre, Links::Refuse);
        assert!(matches!(
            m.write(b"x", 0o644, None),
            Err(FileError::Outside { .. })
        ));
        assert!(!outside.join("etcdctl.sh").exists());
        // A missing directory below a link to outside is not created.
        let deep = root.join("etc/profile.d/new/etcdctl.sh");
        assert!(matches!(
            managed(&deep, &pre, Links::Refuse).write(b"x", 0o644, None),
            Err(FileError::Outside { .. })
        ));
        assert!(!outside.join("new").exists());
        Ok(())
    }

    #[test]
    fn a_pigsty_link_is_written_through_and_kept() -> Result<(), Box<dyn std::error::Error>> {
        let t = tempfile::tempdir()?;
        let root = t.path();
        fs::create_dir_all(root.join("etc/patroni"))?;
        fs::create_dir_all(root.join("pg/conf"))?;
        let target = root.join("pg/conf/pg-test-1.yml");
        fs::write(&target, "old")?;
        fs::set_permissions(&target, fs::Permissions::from_mode(0o640))?;
        let link = root.join("etc/patroni/patroni.yml");
        symlink(&target, &link)?;
        let pre = [root.to_path_buf()];
        let m = managed(&link, &pre, Links::WriteThrough);
        let cur = m.read()?.ok_or("no content")?;
        assert_eq!((cur.data.as_slice(), cur.mode), (&b"old"[..], 0o640));
        assert_eq!(
            m.write(b"new", cur.mode, Some(cur.owner))?,
            Written::Changed
        );
        assert!(fs::symlink_metadata(&link)?.file_type().is_symlink());
        assert_eq!(fs::read(&target)?, b"new");
        assert_eq!(fs::read(backup_path(&target))?, b"old");
        assert!(!backup_path(&link).exists());
        assert_eq!(fs::metadata(&target)?.permissions().mode() & 0o777, 0o640);
        Ok(())
    }

    #[test]
    fn reads_are_capped() -> Result<(), Box<dyn std::error::Error>> {
        let t = tempfile::tempdir()?;
        let p = t.path().join("big.conf");
        let f = fs::File::create(&p)?;
        f.set_len(READ_CAP as u64 + 1)?;
        let pre = [t.path().to_path_buf()];
        assert!(matches!(
            managed(&p, &pre, Links::Refuse).read(),
            Err(FileError::TooLarge { .. })
        ));
        Ok(())
    }
}
