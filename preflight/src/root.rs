//! The filesystem preflight reads and writes, behind one injectable root so
//! that every rule, apply and rollback runs against temp-dir fixtures in unit
//! tests and against `/` in production.

use headroom_host::{optional, Host};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Where `/proc` is (runtime values, read in the caller's net namespace) and
/// where persisted files and the rollback state live.
#[derive(Debug, Clone)]
pub struct Root {
    proc: PathBuf,
    files: PathBuf,
}

impl Root {
    /// The running system: `/proc` and `/`.
    pub fn system() -> Root {
        Root {
            proc: PathBuf::from("/proc"),
            files: PathBuf::from("/"),
        }
    }

    /// Everything under one directory: `DIR/proc/...`, `DIR/etc/...`,
    /// `DIR/var/...`. Unit tests use this with a temp dir.
    pub fn at(dir: impl Into<PathBuf>) -> Root {
        let dir = dir.into();
        Root {
            proc: dir.join("proc"),
            files: dir,
        }
    }

    /// Keeps runtime values in this root's `/proc` but puts persisted files
    /// and the rollback state under `dir` (`apply --root DIR`).
    pub fn with_files(mut self, dir: impl Into<PathBuf>) -> Root {
        self.files = dir.into();
        self
    }

    pub fn files_dir(&self) -> &Path {
        &self.files
    }

    /// `/proc/<rel>` under this root.
    pub fn proc(&self, rel: &str) -> PathBuf {
        self.proc.join(rel)
    }

    /// A system path such as `/etc/sysctl.d/x.conf`, placed under this root.
    pub fn file(&self, abs: &str) -> PathBuf {
        self.files.join(abs.trim_start_matches('/'))
    }

    /// This root's `/proc` as a [`Host`]: every runtime value is read
    /// through it.
    pub fn host(&self) -> Host {
        Host::with_procfs(&self.proc)
    }

    /// `/proc/sys/...` for a dotted sysctl name.
    pub fn sysctl_path(&self, key: &str) -> PathBuf {
        self.host().sysctl_path(key)
    }

    /// A sysctl's value with surrounding whitespace trimmed; `None` when it
    /// does not exist here (module not loaded, or host-wide and invisible in
    /// this net namespace).
    pub fn read_sysctl(&self, key: &str) -> io::Result<Option<String>> {
        Ok(optional(self.host().sysctl(key))?)
    }

    /// Writes a sysctl the way sysctl(8) does: open for writing, one write.
    /// Never creates the file: a missing sysctl is an error, not a new file.
    pub fn write_sysctl(&self, key: &str, value: &str) -> io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(self.sysctl_path(key))?;
        f.write_all(format!("{value}\n").as_bytes())
    }

    /// The net namespace this root's `/proc/self` is in, e.g. `net:[4026531840]`.
    pub fn netns(&self) -> String {
        fs::read_link(self.proc("self/ns/net"))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|e| format!("unknown ({e})"))
    }
}

/// A file's contents, `None` when it does not exist.
pub fn read_optional(path: &Path) -> io::Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes `content` to a temp file beside `path`, syncs it and renames it
/// over `path`: readers see the old file or the new one, never half of one.
pub fn write_atomic(path: &Path, content: &str) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(content.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        // The rename itself is durable only once the directory is synced.
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Removes a file; a file already gone is not an error (rollback twice).
pub fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctl_paths_and_round_trip() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::at(t.path());
        assert_eq!(
            root.sysctl_path("net.core.somaxconn"),
            t.path().join("proc/sys/net/core/somaxconn")
        );
        assert_eq!(root.read_sysctl("net.core.somaxconn").unwrap(), None);
        fs::create_dir_all(t.path().join("proc/sys/net/core")).unwrap();
        fs::write(t.path().join("proc/sys/net/core/somaxconn"), "4096\n").unwrap();
        assert_eq!(
            root.read_sysctl("net.core.somaxconn").unwrap().as_deref(),
            Some("4096")
        );
        root.write_sysctl("net.core.somaxconn", "65535").unwrap();
        assert_eq!(
            root.read_sysctl("net.core.somaxconn").unwrap().as_deref(),
            Some("65535")
        );
        // A missing sysctl is never created.
        assert!(root.write_sysctl("net.core.nope", "1").is_err());
        assert!(!t.path().join("proc/sys/net/core/nope").exists());
    }

    #[test]
    fn files_go_under_the_files_root() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::system().with_files(t.path());
        assert_eq!(
            root.file("/etc/sysctl.d/x.conf"),
            t.path().join("etc/sysctl.d/x.conf")
        );
        assert_eq!(
            root.sysctl_path("fs.nr_open"),
            PathBuf::from("/proc/sys/fs/nr_open")
        );
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("state.json");
        write_atomic(&p, "one").unwrap();
        write_atomic(&p, "two").unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "two");
        assert_eq!(fs::read_dir(t.path()).unwrap().count(), 1);
        remove_if_exists(&p).unwrap();
        remove_if_exists(&p).unwrap();
    }
}
