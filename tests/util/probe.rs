//! Helpers for the `headroom probe` tests: a probe process that reports when
//! it is watching, small Python workloads run inside a test's network
//! namespace, and sock_diag counts (ss) taken at a given moment.
#![allow(dead_code)]

use crate::util::{headroom_bin, repo_root, Netns};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Kills the child on drop, so a failing assertion leaves no process behind.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `headroom probe ... --once --json` running in `ns`, started and watching.
pub struct Probe {
    child: Guard,
    stderr: mpsc::Receiver<String>,
    /// The line that says whether eBPF is on and why not.
    pub status_line: String,
}

/// Reads lines of `r` in a thread, so waits on them can time out.
fn lines<R: Read + Send + 'static>(r: R) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Probe {
    /// Starts the probe and waits (bounded) until it says eBPF is on or off:
    /// from then on it counts. `args` come after `probe`.
    pub fn start(ns: &Netns, args: &[&str]) -> Probe {
        let bin = headroom_bin();
        let mut argv = vec![bin.to_str().expect("utf-8 path"), "probe"];
        argv.extend_from_slice(args);
        let mut cmd = ns.command(&argv);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = Guard(cmd.spawn().expect("spawn headroom probe"));
        let rx = lines(child.0.stderr.take().expect("stderr"));
        let status_line = loop {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(l) if l.contains("eBPF on") || l.contains("eBPF off") => break l,
                Ok(_) => continue,
                Err(e) => panic!("headroom probe {args:?} never said whether eBPF is on: {e}"),
            }
        };
        Probe {
            child,
            stderr: rx,
            status_line,
        }
    }

    /// The next stderr line that contains `needle` (bounded wait).
    pub fn stderr_line(&self, needle: &str) -> String {
        loop {
            match self.stderr.recv_timeout(Duration::from_secs(60)) {
                Ok(l) if l.contains(needle) => return l,
                Ok(_) => continue,
                Err(e) => panic!("headroom probe never printed {needle:?}: {e}"),
            }
        }
    }

    /// Waits (bounded) for the probe's single JSON snapshot.
    pub fn output(mut self) -> Value {
        let mut stdout = self.child.0.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stdout.read_to_string(&mut s);
            let _ = tx.send(s);
        });
        let out = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("headroom probe --once did not finish in 60 s");
        let status = self.child.0.wait().expect("wait probe");
        assert!(status.success(), "headroom probe exited {status}: {out}");
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("probe JSON: {e}: {out}"))
    }
}

/// A Python script from tests/python running in `ns`, talking line by line.
pub struct Script {
    child: Guard,
    stdin: ChildStdin,
    out: mpsc::Receiver<String>,
}

/// The system python3 (these scripts need only the standard library).
pub fn python() -> String {
    std::env::var("HEADROOM_PYTHON").unwrap_or_else(|_| "python3".into())
}

impl Script {
    pub fn start(ns: Option<&Netns>, prefix: &[&str], script: &str, args: &[&str]) -> Script {
        let path = repo_root().join("tests/python").join(script);
        let py = python();
        let mut argv: Vec<&str> = prefix.to_vec();
        argv.push(&py);
        argv.push(path.to_str().expect("utf-8 path"));
        argv.extend_from_slice(args);
        let mut cmd = match ns {
            Some(ns) => ns.command(&argv),
            None => {
                let mut c = Command::new(argv[0]);
                c.args(&argv[1..]);
                c
            }
        };
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        let mut child = Guard(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("spawn {script}: {e}")),
        );
        let stdin = child.0.stdin.take().expect("stdin");
        let stdout: ChildStdout = child.0.stdout.take().expect("stdout");
        Script {
            child,
            stdin,
            out: lines(stdout),
        }
    }

    /// The next line the script prints (bounded wait).
    pub fn line(&self) -> String {
        self.out
            .recv_timeout(Duration::from_secs(60))
            .expect("script printed nothing in 60 s")
    }

    pub fn send(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").expect("write to script");
        self.stdin.flush().expect("flush script stdin");
    }

    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }
}

/// GET http://ADDR/metrics from inside `ns` (python3, standard library).
pub fn scrape(ns: &Netns, addr: &str) -> String {
    let py = python();
    let code = format!(
        "import urllib.request,sys;sys.stdout.write(urllib.request.urlopen('http://{addr}/metrics',timeout=10).read().decode())"
    );
    let out = ns.exec(&[&py, "-c", &code]);
    assert!(out.status.success(), "scrape {addr}: {out:?}");
    String::from_utf8(out.stdout).expect("utf-8 metrics")
}

/// Number of TCP sockets in `state` (an ss state filter such as
/// `established` or `time-wait`) whose local port is `port`, via sock_diag.
pub fn ss_count(ns: &Netns, state: &str, port: u16) -> u64 {
    ss_count_where(ns, state, &format!("sport = :{port}"))
}

/// Number of TCP sockets in `state` matching an ss filter expression.
pub fn ss_count_where(ns: &Netns, state: &str, filter: &str) -> u64 {
    let out = ns.exec(&["ss", "-Htn", "state", state, filter]);
    assert!(out.status.success(), "ss: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count() as u64
}

/// TcpExt ListenOverflows in `ns`.
pub fn listen_overflows(ns: &Netns) -> u64 {
    let out = ns.exec(&["cat", "/proc/net/netstat"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (names, values) = (
        lines.next().expect("TcpExt names"),
        lines.next().expect("TcpExt values"),
    );
    let i = names
        .split_whitespace()
        .position(|n| n == "ListenOverflows")
        .expect("ListenOverflows");
    values
        .split_whitespace()
        .nth(i)
        .expect("value")
        .parse()
        .expect("number")
}

/// The listener on `port` in a probe's JSON snapshot.
pub fn listener(doc: &Value, port: u16) -> Value {
    doc["snapshot"]["listeners"]
        .as_array()
        .expect("listeners")
        .iter()
        .find(|l| l["port"] == port)
        .unwrap_or_else(|| panic!("no listener on {port} in {doc}"))
        .clone()
}

/// What a probe saw of a listener that never accepts.
pub struct Queued {
    pub ns: Netns,
    /// The probe's `--once --json` document.
    pub doc: Value,
    /// The listener's entry in it.
    pub listener: Value,
    /// The namespace's ListenOverflows before the connections.
    pub overflows_before: u64,
}

/// In a new namespace `tag`: a listener with `backlog` that never accepts,
/// a probe started by `start` on its port (`--once --json --interval
/// SECS`), then `connections` clients; returns what the probe printed.
pub fn queued(
    tag: &str,
    backlog: u32,
    connections: u32,
    interval: &str,
    start: impl Fn(&Netns, &[&str]) -> Probe,
) -> Queued {
    let ns = Netns::new(tag);
    let mut srv = Script::start(Some(&ns), &[], "listener.py", &[&backlog.to_string()]);
    let port = srv.line();
    let overflows_before = listen_overflows(&ns);
    let probe = start(
        &ns,
        &["--port", &port, "--once", "--json", "--interval", interval],
    );
    srv.send(&format!("connect {connections}"));
    assert_eq!(srv.line(), "done");
    let doc = probe.output();
    let listener = listener(&doc, port.parse().unwrap());
    Queued {
        ns,
        doc,
        listener,
        overflows_before,
    }
}
