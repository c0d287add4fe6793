//! The host as the inspections see it: configuration files and (through
//! headroom-host) /proc under an injectable root, every file read with a
//! size limit so that a hostile or runaway file costs a bounded read and a
//! clear line, never a hang.

use headroom_core::Snapshot;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

/// Largest configuration file read (nginx.conf and its includes count each).
pub const MAX_FILE_BYTES: u64 = 4 << 20;

/// The file system under a root: configuration files read here, /proc
/// through headroom-host under the same root.
pub struct Host {
    root: PathBuf,
    proc: headroom_host::Host,
}

impl Host {
    pub fn new(root: &Path) -> Host {
        Host {
            root: root.to_path_buf(),
            proc: headroom_host::Host::at(root),
        }
    }

    /// `path` (absolute, as the server names it) under the root.
    pub fn path(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    /// A configuration file, at most [`MAX_FILE_BYTES`] (an nginx.conf with
    /// its includes is bigger than anything under /proc); the error is one
    /// line that names the file and why.
    pub fn read(&self, path: &str) -> Result<String, String> {
        use std::io::Read;
        let full = self.path(path);
        let f = std::fs::File::open(&full).map_err(|e| format!("{path}: {e}"))?;
        let mut buf = Vec::new();
        f.take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut buf)
            .map_err(|e| format!("{path}: {e}"))?;
        if buf.len() as u64 > MAX_FILE_BYTES {
            return Err(format!("{path}: larger than {MAX_FILE_BYTES} bytes"));
        }
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    /// The process's command line, argument by argument.
    pub fn cmdline(&self, pid: u32) -> Option<Vec<String>> {
        self.proc.cmdline(pid).ok()
    }

    /// The target of /proc/PID/exe.
    pub fn exe(&self, pid: u32) -> Option<String> {
        self.proc.exe(pid).ok()
    }

    pub fn ppid(&self, pid: u32) -> Option<u32> {
        self.proc.ppid(pid).ok()
    }

    /// Every pid under /proc, ascending.
    pub fn pids(&self) -> Vec<u32> {
        self.proc.pids().unwrap_or_default()
    }

    /// Direct children of `pid`.
    pub fn children(&self, pid: u32) -> Vec<u32> {
        self.proc.children(pid).unwrap_or_default()
    }

    /// A field of /proc/PID/status, e.g. `RssAnon` (in kB) or `Uid`.
    pub fn status_field(&self, pid: u32, name: &str) -> Option<String> {
        self.proc.status_field(pid, name).ok().flatten()
    }

    /// A soft limit of /proc/PID/limits by its row name (`Max processes`);
    /// `Some(None)`: unlimited.
    pub fn soft_limit(&self, pid: u32, row: &str) -> Option<Option<u64>> {
        self.proc.soft_limit(pid, row).ok()
    }

    /// A sysctl holding one number (`kernel.pid_max`).
    pub fn sysctl_u64(&self, key: &str) -> Option<u64> {
        self.proc.sysctl_u64(key).ok()
    }

    /// One number from a file such as a cgroup's pids.max.
    pub fn number(&self, path: &str) -> Option<u64> {
        std::fs::read_to_string(self.path(path))
            .ok()?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }
}

/// Where to ask a server on its own port: its first listener, a wildcard
/// address replaced by loopback of the same family.
pub fn query_address(snap: &Snapshot) -> Option<SocketAddr> {
    let l = snap.listeners.first()?;
    let addr: SocketAddr = l.address.parse().ok()?;
    let ip = match addr.ip() {
        IpAddr::V4(v) if v.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v) if v.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    Some(SocketAddr::new(ip, addr.port()))
}

/// The value of `-x V` or `-xV` or `--long=V` / `--long V` in a command line.
pub fn flag_value(cmdline: &[String], short: &str, long: Option<&str>) -> Option<String> {
    let mut it = cmdline.iter().skip(1);
    while let Some(a) = it.next() {
        if a == short || long.is_some_and(|l| a == l) {
            return it.next().cloned();
        }
        if let Some(l) = long {
            if let Some(v) = a.strip_prefix(l).and_then(|r| r.strip_prefix('=')) {
                return Some(v.to_string());
            }
        }
        if short.len() == 2 && a.len() > 2 && a.starts_with(short) && !a.starts_with("--") {
            return Some(a[2..].to_string());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::Root;
    use headroom_core::Listener;

    #[test]
    fn wildcard_listener_is_asked_on_loopback() {
        let mut s = Snapshot::default();
        s.listeners.push(Listener {
            address: "0.0.0.0:6379".into(),
            port: 6379,
            ..Default::default()
        });
        assert_eq!(query_address(&s), Some("127.0.0.1:6379".parse().unwrap()));
        s.listeners[0].address = "[::]:11211".into();
        assert_eq!(query_address(&s), Some("[::1]:11211".parse().unwrap()));
        s.listeners[0].address = "127.0.0.5:80".into();
        assert_eq!(query_address(&s), Some("127.0.0.5:80".parse().unwrap()));
    }

    #[test]
    fn flags_in_all_spellings() {
        let c: Vec<String> = ["memcached", "-c", "1024", "-p11211", "--conn-limit=9"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            flag_value(&c, "-c", Some("--conn-limit")).as_deref(),
            Some("1024")
        );
        assert_eq!(
            flag_value(&c, "-p", Some("--port")).as_deref(),
            Some("11211")
        );
        assert_eq!(flag_value(&c, "-m", None), None);
    }

    #[test]
    fn oversize_file_is_one_clear_line() {
        let r = Root::new("host");
        r.file("/big.conf", vec![b'#'; MAX_FILE_BYTES as usize + 1]);
        let h = r.host();
        let e = h.read("/big.conf").unwrap_err();
        assert!(e.contains("larger than"), "{e}");
        assert!(h
            .read("/missing.conf")
            .unwrap_err()
            .starts_with("/missing.conf:"));
    }
}
