//! headroom-host: the one reader of the system's limits, so that the probe,
//! preflight, the server, flood and the application readers read them the same way and every reader
//! can be tested on a fixture tree instead of the host it runs on.
//!
//! [`Host`] reads /proc/sys values (typed: one number, a pair such as
//! `net.ipv4.ip_local_port_range`, a triple such as `net.ipv4.tcp_mem`),
//! /proc/meminfo, /proc/sys/fs/file-nr and another process's command line,
//! executable, parent, status and limits (to recognise a server), every
//! path under a root that is `/` in production and a temp dir in tests (as
//! node_exporter's `--path.procfs`). Reads are size-limited and every error names the path
//! it read. The calling process's own rlimits and rusage are syscalls, not
//! files: [`process`] has them, so this crate is the one place for both.
//!
//! net.* sysctls belong to the network namespace of the thread that opens
//! them: a [`Host`] is only a path, so reading from a thread that has
//! entered another namespace reads that namespace's values.

mod meminfo;
mod pid;
pub mod process;

pub use meminfo::Meminfo;

use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// The most a single read takes: /proc/meminfo is about 1.5 KiB and sysctl
/// values are a few bytes, so anything bigger is not the file we expect.
pub const READ_LIMIT: u64 = 64 * 1024;

/// What went wrong, with the path (or syscall) it concerns.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot parse {}: {why}", path.display())]
    Parse { path: PathBuf, why: String },
    #[error("{}: larger than {limit} bytes", path.display())]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("{call}: {source}")]
    Syscall {
        call: &'static str,
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// The file the error concerns (`None` for a syscall).
    pub fn path(&self) -> Option<&Path> {
        match self {
            Error::Io { path, .. } | Error::Parse { path, .. } | Error::TooLarge { path, .. } => {
                Some(path)
            }
            Error::Syscall { .. } => None,
        }
    }

    /// The file does not exist (a module not loaded, a sysctl this
    /// namespace does not have).
    pub fn is_not_found(&self) -> bool {
        self.io_kind() == Some(io::ErrorKind::NotFound)
    }

    /// The file exists but this process may not read it.
    pub fn is_permission_denied(&self) -> bool {
        self.io_kind() == Some(io::ErrorKind::PermissionDenied)
    }

    fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            Error::Io { source, .. } | Error::Syscall { source, .. } => Some(source.kind()),
            _ => None,
        }
    }
}

/// The error as a plain [`io::Error`] for callers that speak io::Result: an
/// I/O error is passed on as the OS gave it (its kind and message intact,
/// the caller adds the path); anything else is `InvalidData`.
impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        match e {
            Error::Io { source, .. } | Error::Syscall { source, .. } => source,
            other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
        }
    }
}

/// `Ok(None)` where the file does not exist, so optional sysctls
/// (nf_conntrack_max without the module) read as absent, not as an error.
pub fn optional<T>(r: Result<T, Error>) -> Result<Option<T>, Error> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whitespace-separated unsigned numbers, as the kernel prints vectors;
/// `None` when any word is not a number or there is none.
pub fn parse_numbers(text: &str) -> Option<Vec<u64>> {
    let v: Option<Vec<u64>> = text.split_whitespace().map(|t| t.parse().ok()).collect();
    v.filter(|v| !v.is_empty())
}

/// fs.file-nr: allocated, allocated but unused (always 0 since 2.6), max.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileNr {
    pub allocated: u64,
    pub unused: u64,
    pub max: u64,
}

/// The system as seen through one procfs directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    proc: PathBuf,
}

impl Default for Host {
    fn default() -> Self {
        Host::system()
    }
}

impl Host {
    /// The running system: `/proc`.
    pub fn system() -> Host {
        Host::at("/")
    }

    /// Everything under `root`: `ROOT/proc/...`.
    pub fn at(root: impl AsRef<Path>) -> Host {
        Host::with_procfs(root.as_ref().join("proc"))
    }

    /// procfs mounted at `dir` (node_exporter's `--path.procfs`).
    pub fn with_procfs(dir: impl Into<PathBuf>) -> Host {
        Host { proc: dir.into() }
    }

    /// Where /proc is.
    pub fn procfs(&self) -> &Path {
        &self.proc
    }

    /// `/proc/<rel>` under this root, e.g. `proc_path("meminfo")`.
    pub fn proc_path(&self, rel: &str) -> PathBuf {
        self.proc.join(rel.trim_start_matches('/'))
    }

    /// `/proc/sys/...` for a dotted sysctl name (`net.core.somaxconn`).
    pub fn sysctl_path(&self, key: &str) -> PathBuf {
        self.proc.join("sys").join(key.replace('.', "/"))
    }

    /// A file under /proc, whole, at most [`READ_LIMIT`] bytes.
    pub fn read_proc(&self, rel: &str) -> Result<String, Error> {
        read_limited(&self.proc_path(rel))
    }

    /// A sysctl's value with surrounding whitespace trimmed.
    pub fn sysctl(&self, key: &str) -> Result<String, Error> {
        read_limited(&self.sysctl_path(key)).map(|s| s.trim().to_string())
    }

    /// A sysctl's numbers, at least `want` of them.
    pub fn sysctl_numbers(&self, key: &str, want: usize) -> Result<Vec<u64>, Error> {
        let path = self.sysctl_path(key);
        numbers(&path, &read_limited(&path)?, want)
    }

    /// A sysctl holding one number (`fs.nr_open`).
    pub fn sysctl_u64(&self, key: &str) -> Result<u64, Error> {
        Ok(self.sysctl_numbers(key, 1)?[0])
    }

    /// A sysctl holding two numbers (`net.ipv4.ip_local_port_range`).
    pub fn sysctl_pair(&self, key: &str) -> Result<(u64, u64), Error> {
        let v = self.sysctl_numbers(key, 2)?;
        Ok((v[0], v[1]))
    }

    /// A sysctl holding three numbers (`net.ipv4.tcp_mem`).
    pub fn sysctl_triple(&self, key: &str) -> Result<(u64, u64, u64), Error> {
        let v = self.sysctl_numbers(key, 3)?;
        Ok((v[0], v[1], v[2]))
    }

    /// /proc/sys/fs/file-nr.
    pub fn file_nr(&self) -> Result<FileNr, Error> {
        let (allocated, unused, max) = self.sysctl_triple("fs.file-nr")?;
        Ok(FileNr {
            allocated,
            unused,
            max,
        })
    }

    /// /proc/meminfo.
    pub fn meminfo(&self) -> Result<Meminfo, Error> {
        let path = self.proc_path("meminfo");
        Meminfo::parse(&read_limited(&path)?).map_err(|why| Error::Parse { path, why })
    }

    /// Resident set size of `pid` in bytes, from /proc/PID/statm (its
    /// second field, in pages of [`process::page_size`]).
    pub fn rss_bytes(&self, pid: u32) -> Result<u64, Error> {
        let path = self.proc_path(&format!("{pid}/statm"));
        let v = numbers(&path, &read_limited(&path)?, 2)?;
        Ok(v[1] * process::page_size())
    }
}

/// Whitespace-separated unsigned numbers of `path`, at least `want`.
fn numbers(path: &Path, text: &str, want: usize) -> Result<Vec<u64>, Error> {
    let v = text
        .split_whitespace()
        .map(|w| {
            w.parse::<u64>().map_err(|_| Error::Parse {
                path: path.to_path_buf(),
                why: format!("{w:?} is not a number"),
            })
        })
        .collect::<Result<Vec<u64>, Error>>()?;
    if v.len() < want {
        return Err(Error::Parse {
            path: path.to_path_buf(),
            why: format!("expected {want} numbers, found {}", v.len()),
        });
    }
    Ok(v)
}

/// `path` whole, at most `limit` bytes: a file past that is not the one we
/// expect, and reading it is refused rather than followed.
fn read_bytes_limited(path: &Path, limit: u64) -> Result<Vec<u8>, Error> {
    let io_err = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut buf = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(limit + 1).read_to_end(&mut buf))
        .map_err(io_err)?;
    if buf.len() as u64 > limit {
        return Err(Error::TooLarge {
            path: path.to_path_buf(),
            limit,
        });
    }
    Ok(buf)
}

fn read_limited(path: &Path) -> Result<String, Error> {
    String::from_utf8(read_bytes_limited(path, READ_LIMIT)?).map_err(|_| Error::Parse {
        path: path.to_path_buf(),
        why: "not UTF-8".into(),
    })
}

#[cfg(test)]
mod tests;
