//! Real servers from Debian's packages, started by the tests on free
//! loopback ports with configurations the tests write, and stopped on drop.
//! One file per server kind; this file holds what they share.
#![allow(dead_code)]

pub mod beam;
pub mod haproxy;
pub mod memcached;
pub mod nginx;
pub mod postgres;
pub mod redis;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A port nobody listens on now (bound once, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// A scratch directory for one server's files, removed on drop.
pub struct Scratch {
    pub dir: PathBuf,
}

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "headroom-real-{tag}-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch { dir }
    }

    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.join(name);
        std::fs::write(&p, text).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        p
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether `bin` is installed; the tests that need it fail in CI without
/// it (scripts/setup.sh installs every one) and say so elsewhere.
pub fn installed(bin: &str) -> bool {
    Path::new(bin).exists()
}

/// Waits until something accepts on `addr` (a server that has started).
pub fn wait_listening(addr: SocketAddr, within: Duration) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// A server process, killed (with its process group) on drop.
pub struct Running {
    pub child: Child,
    pub addr: SocketAddr,
    /// The pid `status --pid` should look at (the master, the postmaster).
    pub pid: u32,
    /// Kept alive as long as the server runs.
    pub scratch: Scratch,
}

impl Running {
    /// Starts `cmd` in its own process group and waits until `addr` accepts.
    pub fn start(mut cmd: Command, addr: SocketAddr, scratch: Scratch) -> Running {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
        // A server must not inherit the harness's stray descriptors (a shell
        // can pass some down): they would shift its descriptor count, and
        // memcached's cap is a descriptor number.
        // SAFETY: close_range only marks this child's descriptors close-on-exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 4u32);
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("start {cmd:?}: {e}"));
        let pid = child.id();
        let r = Running {
            child,
            addr,
            pid,
            scratch,
        };
        assert!(
            wait_listening(addr, Duration::from_secs(20)),
            "{cmd:?} did not listen on {addr} within 20 s"
        );
        r
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // SAFETY: signals to the process group this test created.
        unsafe {
            libc::kill(-(self.pid as i32), libc::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
