//! `headroom status` test helpers: small Python processes to look at
//! (tests/python/status_helper.py), killed on drop, and a bounded run of
//! `headroom status`.
#![allow(dead_code)]

use crate::util::{headroom_bin, repo_root, Netns};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// `$HEADROOM_PYTHON`, else the repo's venv, else the system python3.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("HEADROOM_PYTHON") {
        return p.into();
    }
    let venv = repo_root().join(".venv/bin/python");
    if venv.exists() {
        venv
    } else {
        "python3".into()
    }
}

/// A running status_helper.py. It exits when its stdin closes; drop also
/// kills it, so a failing test leaves nothing behind.
pub struct Helper {
    child: Child,
    pub pid: u32,
    pub port: u16,
    /// Open fds the helper counted itself.
    pub fds: u64,
}

impl Helper {
    /// Starts the helper with `args`, under `prlimit --nofile=N:N` and inside
    /// `ns` when given, and waits (at most 20 s) for its ready line.
    pub fn start(args: &[&str], nofile: Option<u64>, ns: Option<&Netns>) -> Helper {
        let script = repo_root().join("tests/python/status_helper.py");
        let mut argv: Vec<String> = Vec::new();
        if let Some(ns) = ns {
            argv.extend(["ip", "netns", "exec", &ns.name].map(String::from));
        }
        if let Some(n) = nofile {
            argv.extend(["prlimit".to_string(), format!("--nofile={n}:{n}")]);
        }
        argv.push(python().display().to_string());
        argv.push(script.display().to_string());
        argv.extend(args.iter().map(|s| s.to_string()));
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {argv:?}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(l) if !l.is_empty() => l,
            other => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("helper {argv:?} not ready: {other:?}");
            }
        };
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("helper said {line:?}: {e}"));
        Helper {
            child,
            pid: v["pid"].as_u64().unwrap() as u32,
            port: v["port"].as_u64().unwrap() as u16,
            fds: v["fds"].as_u64().unwrap(),
        }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `headroom status ARGS`, killed after 60 s.
pub fn status(args: &[&str]) -> Output {
    let mut child = Command::new(headroom_bin())
        .arg("status")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn headroom status");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("headroom status {args:?} did not finish in 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("status output")
}

/// `headroom status ARGS --json`, which must succeed; its document.
pub fn status_json(args: &[&str]) -> serde_json::Value {
    let mut a = args.to_vec();
    a.push("--json");
    let out = status(&a);
    assert!(
        out.status.success(),
        "headroom status {a:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "status --json is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}
