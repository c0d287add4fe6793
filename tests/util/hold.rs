//! A held-connections TCP service with a low fd limit (tests/python/hold_listener.py)
//! and the arithmetic of its nofile utilisation, for the subscription tests.
#![allow(dead_code)]

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

/// The listener process, killed on drop, and the client ends the test opened.
pub struct HoldListener {
    pub child: Child,
    pub port: u16,
    pub conns: Vec<TcpStream>,
}

impl HoldListener {
    /// Starts the listener with RLIMIT_NOFILE `nofile`.
    pub fn start(nofile: u32) -> HoldListener {
        let python = std::env::var_os("HEADROOM_PYTHON")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| "python3".into());
        let mut child = Command::new(python)
            .arg(crate::util::repo_root().join("tests/python/hold_listener.py"))
            .arg(nofile.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start tests/python/hold_listener.py");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().expect("the listener prints its port");
        HoldListener {
            child,
            port,
            conns: Vec::new(),
        }
    }

    /// Opens `n` more connections (the listener accepts and holds each: one fd).
    pub fn open(&mut self, n: usize) {
        for _ in 0..n {
            self.conns
                .push(TcpStream::connect(("127.0.0.1", self.port)).expect("connect"));
        }
    }

    pub fn uri(&self) -> String {
        format!("headroom://port/{}", self.port)
    }
}

impl Drop for HoldListener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (limit, used, reserve) of the binding constraint of a capacity document
/// (the text of `headroom://port/N`), which must be nofile.
pub fn nofile_of(doc_text: &str) -> (u64, u64, u64) {
    let doc: Value = serde_json::from_str(doc_text).expect("a JSON document");
    let p = &doc["prediction"];
    assert_eq!(p["binding"], "nofile", "{doc}");
    let c = p["constraints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "nofile")
        .unwrap();
    let n = |k: &str| c[k].as_u64().unwrap();
    (n("limit"), n("used"), n("reserve"))
}

/// Fds in use (reserve counted) from which utilisation is at least `t`,
/// with the server's own arithmetic.
pub fn in_use_at(limit: u64, t: f64) -> u64 {
    (0..=limit).find(|k| *k as f64 / limit as f64 >= t).unwrap()
}
