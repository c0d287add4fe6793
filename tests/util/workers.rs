//! Helpers for the `serve --workers` tests: a service started under a
//! nofile limit and stopped (SIGTERM, then SIGKILL) on drop, its metrics,
//! and `headroom status --port` as JSON.
#![allow(dead_code)]

use crate::util::headroom_bin;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub struct Service {
    pub child: Option<Child>,
    pub port: u16,
    pub metrics: String,
    pub max_connections: u64,
    pub worker_pids: Vec<u32>,
    pub pid: u32,
}

impl Service {
    /// `prlimit --nofile=N headroom serve --workers W ...`, ready when its JSON line arrives.
    pub fn start(nofile: Option<u64>, extra: &[&str]) -> Service {
        let bin = headroom_bin();
        let mut cmd = match nofile {
            Some(n) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}")).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        cmd.args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
            "--json",
            "--drain-timeout",
            "5",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("start headroom serve --workers");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                panic!("serve --workers printed no ready line within 60 s");
            }
        };
        let v: serde_json::Value = serde_json::from_str(&line).expect("ready line is JSON");
        let listen = v["listen"].as_str().unwrap();
        Service {
            port: listen.rsplit(':').next().unwrap().parse().unwrap(),
            metrics: v["metrics"].as_str().unwrap().to_string(),
            max_connections: v["max_connections"].as_u64().unwrap(),
            worker_pids: v["worker_pids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_u64().unwrap() as u32)
                .collect(),
            pid: v["pid"].as_u64().unwrap() as u32,
            child: Some(child),
        }
    }

    pub fn target(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The merged Prometheus page.
    pub fn scrape(&self) -> String {
        let mut s = std::net::TcpStream::connect(&self.metrics).expect("connect to metrics");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        body
    }

    /// Sum of every sample of `name` whose labels contain all of `labels`.
    pub fn metric(&self, name: &str, labels: &[&str]) -> u64 {
        sum_metric(&self.scrape(), name, labels)
    }

    /// SIGTERM; the exit status within `limit`.
    pub fn terminate(&mut self, limit: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if self.child.is_some() {
            // Workers follow their supervisor (PR_SET_PDEATHSIG).
            self.terminate(Duration::from_secs(10));
        }
    }
}

pub fn sum_metric(page: &str, name: &str, labels: &[&str]) -> u64 {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            let n = l.find(['{', ' ']).unwrap_or(l.len());
            &l[..n] == name && labels.iter().all(|x| l.contains(x))
        })
        .map(|l| {
            l.rsplit(' ')
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0) as u64
        })
        .sum()
}

/// `headroom status --port PORT --json`.
pub fn status(port: u16) -> serde_json::Value {
    let out = Command::new(headroom_bin())
        .args(["status", "--port", &port.to_string(), "--json"])
        .output()
        .expect("run headroom status");
    assert!(
        out.status.success(),
        "status --port {port}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("status JSON")
}

pub fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}
