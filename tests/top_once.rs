//! `headroom top --once`: the dashboard's content as JSON, for a child whose
//! fd table and listeners are known exactly (3 std fds, its listeners, N
//! files), with SO_REUSEPORT listeners summed into one row.

mod util;

use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

/// argv: number of files to hold open, comma-separated backlogs (one
/// SO_REUSEPORT listener each, all on one port). Prints the port, never
/// accepts, exits when stdin closes.
const CHILD: &str = r#"
import os, socket, sys
os.closerange(3, 65536)  # whatever the test harness let us inherit
n_files = int(sys.argv[1])
backlogs = [int(b) for b in sys.argv[2].split(",")]
ls, port = [], 0
for b in backlogs:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", port)); s.listen(b); port = s.getsockname()[1]; ls.append(s)
files = [open(os.devnull) for _ in range(n_files)]
print(port, flush=True)
sys.stdin.read()
"#;

struct Known {
    child: Child,
    _stdin: ChildStdin,
    port: u16,
}

impl Known {
    fn start(files: usize, backlogs: &str) -> Known {
        let mut child = Command::new("python3")
            .args(["-c", CHILD, &files.to_string(), backlogs])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("port {line:?}"));
        let stdin = child.stdin.take().unwrap();
        Known {
            child,
            _stdin: stdin,
            port,
        }
    }
}

impl Drop for Known {
    fn drop(&mut self) {
        let _ = self._stdin.flush();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn top_once(args: &[&str]) -> Value {
    let out = Command::new(util::headroom_bin())
        .args(["top", "--once"])
        .args(args)
        .output()
        .expect("headroom runs");
    assert!(
        out.status.success(),
        "headroom top --once {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

fn queue(port: u16, n: usize) -> Vec<TcpStream> {
    let v: Vec<TcpStream> = (0..n)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    // The handshakes complete in the kernel; give the queue a moment.
    std::thread::sleep(Duration::from_millis(100));
    v
}

#[test]
fn once_reports_exact_fds_and_listener_of_a_known_child() {
    let k = Known::start(20, "7");
    let pid = k.child.id();
    let _c = queue(k.port, 3);
    let v = top_once(&["--pid", &pid.to_string(), "--no-ebpf", "--interval", "0.2"]);
    assert_eq!(v["source"], "/proc polling", "{v}");
    assert_eq!(v["source_note"], "eBPF off: disabled by --no-ebpf");
    assert_eq!(v["target"], format!("pid {pid} python3"));
    assert_eq!(v["samples"], 2);
    let p = &v["processes"][0];
    // stdin, stdout, stderr + 1 listener + 20 files.
    assert_eq!(p["open_fds"], 24, "{p}");
    assert_eq!(p["connections"], 0, "queued, never accepted: {p}");
    assert_eq!(
        v["listeners"],
        serde_json::json!([{
            "address": format!("127.0.0.1:{}", k.port),
            "port": k.port,
            "sockets": 1,
            "depth": 3,
            "peak": 3,
            "limit": 7,
            "full": null,
        }])
    );
    assert_eq!(v["binding"], "nofile");
}

#[test]
fn reuseport_listeners_are_one_row_with_a_socket_count() {
    let k = Known::start(0, "7,5");
    let _c = queue(k.port, 4);
    let v = top_once(&[
        "--port",
        &k.port.to_string(),
        "--no-ebpf",
        "--interval",
        "0.2",
    ]);
    assert_eq!(v["processes"][0]["open_fds"], 5, "{v}");
    let rows = v["listeners"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{v}");
    let r = &rows[0];
    assert_eq!(r["address"], format!("127.0.0.1:{}", k.port));
    assert_eq!((&r["sockets"], &r["limit"]), (&2.into(), &12.into()), "{r}");
    // The kernel hashes the 4 connections over both queues; together they hold all 4.
    assert_eq!(r["depth"], 4, "{r}");
    assert_eq!(v["sockets"]["listen"], 2, "{v}");
}

#[test]
#[ignore = "needs root"]
fn ebpf_feed_is_used_when_it_loads() {
    util::require_root();
    let k = Known::start(2, "7");
    let port = k.port;
    // Connections keep arriving while top watches (it attaches first), so
    // the programs see connections queue: one every 300 ms, 5 in all
    // (below the backlog, so that no SYN is dropped and no connect waits).
    let feeder = std::thread::spawn(move || {
        (0..5)
            .map(|_| {
                std::thread::sleep(Duration::from_millis(300));
                let a = std::net::SocketAddr::from(([127, 0, 0, 1], port));
                TcpStream::connect_timeout(&a, Duration::from_secs(2)).ok()
            })
            .collect::<Vec<_>>()
    });
    let v = top_once(&["--port", &port.to_string(), "--interval", "3"]);
    let _c = feeder.join().unwrap();
    assert_eq!(v["source"], "eBPF probe", "{v}");
    assert_eq!(v["source_note"], Value::Null, "{v}");
    assert_eq!(v["processes"][0]["open_fds"], 6, "{v}");
    let r = &v["listeners"][0];
    assert_eq!((&r["sockets"], &r["limit"]), (&1.into(), &7.into()), "{r}");
    // eBPF counts queue-full events (polling has no such counter: null).
    assert!(r["full"].is_u64(), "{r}");
    assert!(r["peak"].as_u64() >= r["depth"].as_u64(), "{r}");
}
