//! Helpers shared by the workspace integration tests: the binary under test,
//! privilege checks and throwaway network namespaces. Area-specific helpers go
//! in their own file under tests/util/.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

mod root;
// Each test crate uses what it needs of util; dead_code above does not cover
// re-exports.
#[allow(unused_imports)]
pub use root::{is_root, require_root};

/// The `headroom` binary cargo built for these tests.
pub fn headroom_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_headroom"))
}

/// The workspace root (where Cargo.toml, profiles/ and deploy/ are).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs a command, panicking with its output when it cannot be started.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// A throwaway network namespace (`ip netns add`), deleted on drop. Its net.*
/// sysctls are its own, so tests can set them low without touching the host.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "hr-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let out = run(Command::new("ip").args(["netns", "add", &name]));
        assert!(out.status.success(), "ip netns add {name}: {out:?}");
        let ns = Netns { name };
        let out = ns.exec(&["ip", "link", "set", "lo", "up"]);
        assert!(out.status.success(), "lo up in {}: {out:?}", ns.name);
        ns
    }

    /// A command that runs inside the namespace.
    pub fn command(&self, argv: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).args(argv);
        c
    }

    pub fn exec(&self, argv: &[&str]) -> Output {
        run(&mut self.command(argv))
    }

    /// `sysctl -w key=value` inside the namespace.
    pub fn sysctl(&self, key: &str, value: &str) {
        let out = self.exec(&["sysctl", "-q", "-w", &format!("{key}={value}")]);
        assert!(
            out.status.success(),
            "sysctl {key}={value} in {}: {out:?}",
            self.name
        );
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}
