//! Running the official MCP conformance suite (scripts/conformance.sh) and
//! the servers it tests, for tests/conformance.rs and the interop tests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A child process killed (and reaped) on drop, even when a test panics.
pub struct Server {
    pub child: Child,
    /// The first stdout line's payload (URL or JSON), as the server printed it.
    pub announced: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `cmd` and waits (at most 60 s) for its first stdout line.
pub fn spawn_announcing(mut cmd: Command) -> Server {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let mut server = Server {
        child,
        announced: String::new(),
    };
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("{cmd:?} printed nothing in 60 s"));
    assert!(!line.trim().is_empty(), "{cmd:?} exited before serving");
    server.announced = line.trim().to_string();
    server
}

/// The fixture server, `headroom-conformance --http 127.0.0.1:0`; its URL.
pub fn fixtures() -> (Server, String) {
    let s = spawn_announcing({
        let mut c = Command::new(conformance_bin());
        c.args(["--http", "127.0.0.1:0"]);
        c
    });
    let url = s.announced.clone();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    (s, url)
}

/// `headroom serve --http 127.0.0.1:0` (HTTP only); its URL.
pub fn headroom_serve_http() -> (Server, String) {
    let s = spawn_announcing({
        let mut c = Command::new(env!("CARGO_BIN_EXE_headroom"));
        c.args(["serve", "--http", "127.0.0.1:0", "--json"]);
        c
    });
    let v: serde_json::Value = serde_json::from_str(&s.announced)
        .unwrap_or_else(|e| panic!("serve --json printed {:?}: {e}", s.announced));
    let url = format!("http://{}/mcp", v["http"].as_str().expect("http address"));
    (s, url)
}

/// The `headroom-conformance` binary: beside `headroom` in the target dir;
/// built with cargo when a test run did not build it (`cargo test --test ...`).
pub fn conformance_bin() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_BIN_EXE_headroom"))
        .parent()
        .expect("binary dir")
        .to_path_buf();
    let bin = dir.join("headroom-conformance");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let profile = if dir.ends_with("release") {
            vec!["--release"]
        } else {
            vec![]
        };
        let st = Command::new(cargo)
            .args(["build", "-p", "headroom-conformance"])
            .args(profile)
            .current_dir(repo_root())
            .status()
            .expect("running cargo build -p headroom-conformance");
        assert!(st.success(), "cargo build -p headroom-conformance failed");
    }
    assert!(bin.exists(), "{} missing after the build", bin.display());
    bin
}

/// Where scripts/conformance.sh keeps the suite (same rules as the script).
fn suite_dir() -> PathBuf {
    let version = std::env::var("CONFORMANCE_VERSION").unwrap_or_else(|_| "0.2.0-alpha.12".into());
    let root = match std::env::var_os("CONFORMANCE_CACHE") {
        Some(c) => PathBuf::from(c),
        None => {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache")
                });
            cache.join("headroom").join("conformance")
        }
    };
    root.join(version)
}

/// True when the suite is installed (scripts/setup.sh does it). Missing: a
/// failure in CI (CI set), a skip with the reason on a developer machine.
pub fn require_suite(test: &str) -> bool {
    let cli = suite_dir().join("node_modules/@modelcontextprotocol/conformance/dist/index.js");
    if cli.exists() {
        return true;
    }
    let why = format!(
        "{test}: the MCP conformance suite is not installed at {} (run scripts/setup.sh or scripts/conformance.sh install)",
        cli.display()
    );
    if std::env::var_os("CI").is_some() {
        panic!("{why}");
    }
    eprintln!("{why}; skipped");
    false
}

/// One run's verdict: the script's last line, and each scenario's outcome.
#[derive(Debug)]
pub struct Verdict {
    pub passed: u32,
    pub failed: u32,
    pub skipped: u32,
    pub warnings: u32,
    /// (PASS|FAIL|SKIP, scenario) per scenario line.
    pub scenarios: Vec<(String, String)>,
    pub output: String,
}

impl Verdict {
    pub fn with(&self, status: &str) -> Vec<&str> {
        self.scenarios
            .iter()
            .filter(|(s, _)| s == status)
            .map(|(_, n)| n.as_str())
            .collect()
    }
}

/// Runs `scripts/conformance.sh URL ARGS...` and parses its verdict.
pub fn run_suite(url: &str, args: &[&str]) -> Verdict {
    let out = Command::new(repo_root().join("scripts/conformance.sh"))
        .arg(url)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running scripts/conformance.sh");
    let output = String::from_utf8_lossy(&out.stdout).into_owned();
    let last = output.lines().last().unwrap_or_default().to_string();
    let nums: Vec<u32> = last
        .strip_prefix("conformance: ")
        .unwrap_or_else(|| {
            panic!(
                "no verdict line; output:\n{output}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
        .split(", ")
        .map(|part| part.split(' ').next().unwrap().parse().expect("a count"))
        .collect();
    assert_eq!(nums.len(), 4, "verdict line: {last}");
    let scenarios = output
        .lines()
        .filter_map(|l| {
            let (status, rest) = l.split_once(' ')?;
            if !matches!(status, "PASS" | "FAIL" | "SKIP") {
                return None;
            }
            let name = rest.split(':').next()?;
            Some((status.to_string(), name.to_string()))
        })
        .collect();
    Verdict {
        passed: nums[0],
        failed: nums[1],
        skipped: nums[2],
        warnings: nums[3],
        scenarios,
        output,
    }
}
