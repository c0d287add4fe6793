//! `headroom status` against live processes: accept queues read through
//! sock_diag, nofile as the binding limit with the exact predicted maximum,
//! a SO_REUSEPORT service of two processes, another network namespace, and
//! clean failures.

#[path = "util/status.rs"]
mod status;
mod util;

use serde_json::Value;
use status::{status, status_json, Helper};
use std::net::{TcpListener, TcpStream};
use util::{require_root, Netns};

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn constraint<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["constraints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} constraint in {doc}"))
}

/// Issue 2's acceptance test: backlog 8, never accepts, 5 connections.
#[test]
fn status_port_reports_accept_queue_depth_and_limit() {
    let srv = Helper::start(&["listen", "--backlog", "8"], None, None);
    let clients: Vec<TcpStream> = (0..5)
        .map(|_| TcpStream::connect(("127.0.0.1", srv.port)).unwrap())
        .collect();

    let port = srv.port.to_string();
    let doc = status_json(&["--port", &port]);
    assert_eq!(doc["schema_version"], 2);
    assert_eq!(doc["source"], "poll");
    assert_eq!(doc["target"]["port"], srv.port);
    assert_eq!(doc["pids"], serde_json::json!([srv.pid]));
    let ls = doc["listeners"].as_array().unwrap();
    assert_eq!(ls.len(), 1, "{ls:?}");
    assert_eq!(ls[0]["address"], format!("127.0.0.1:{}", srv.port));
    assert_eq!(u(&ls[0]["accept_queue_depth"]), 5);
    assert_eq!(u(&ls[0]["accept_queue_limit"]), 8);
    // The five wait in the queue (no process holds them yet).
    let socks = &doc["snapshot"]["sockets"];
    assert_eq!(u(&socks["ESTABLISHED"]), 5, "{socks}");
    assert_eq!(u(&socks["LISTEN"]), 1, "{socks}");
    assert_eq!(u(&doc["connections"]), 0);

    // The table says the same.
    let out = status(&["--port", &port]);
    assert!(out.status.success());
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.contains(&format!("127.0.0.1:{}  5 / 8", srv.port)),
        "{table}"
    );
    drop(clients);
}

/// nofile binds, and the prediction is exactly soft - open - reserve + held.
#[test]
fn status_pid_names_nofile_with_exact_prediction() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let cli = Helper::start(
        &["hold", "--connect", &port, "--count", "3", "--files", "4"],
        Some(256),
        None,
    );
    let pid = cli.pid.to_string();

    let doc = status_json(&["--pid", &pid]);
    assert_eq!(doc["binding"], "nofile");
    assert_eq!(doc["pids"], serde_json::json!([cli.pid]));
    let c = constraint(&doc, "nofile");
    assert_eq!(u(&c["limit"]), 256);
    assert_eq!(u(&c["used"]), cli.fds);
    assert_eq!(u(&c["reserve"]), 32);
    assert_eq!(u(&doc["connections"]), 3);
    assert_eq!(u(&doc["snapshot"]["processes"][0]["connections"]), 3);
    assert_eq!(u(&doc["predicted_max_connections"]), 256 - cli.fds - 32 + 3);

    // The reserve knob moves the prediction by exactly its difference.
    let doc = status_json(&["--pid", &pid, "--reserve", "10"]);
    assert_eq!(u(&doc["predicted_max_connections"]), 256 - cli.fds - 10 + 3);
}

/// A process with this machine's own limit (20000 here): nofile binds.
#[test]
fn status_pid_names_this_hosts_nofile_limit() {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) }, 0);
    let soft: u64 = rl.rlim_cur;
    let srv = Helper::start(&["listen", "--backlog", "16"], None, None);
    let doc = status_json(&["--pid", &srv.pid.to_string()]);
    assert_eq!(doc["binding"], "nofile", "{doc}");
    let c = constraint(&doc, "nofile");
    assert_eq!(u(&c["limit"]), soft);
    assert_eq!(u(&doc["snapshot"]["processes"][0]["nofile_soft"]), soft);
    assert_eq!(u(&doc["predicted_max_connections"]), soft - srv.fds - 32);
    assert_eq!(u(&doc["listeners"][0]["accept_queue_limit"]), 16);
}

/// Two SO_REUSEPORT processes on one port: one service, nofile summed.
#[test]
fn status_port_finds_every_reuseport_process() {
    let a = Helper::start(
        &["listen", "--backlog", "16", "--reuseport"],
        Some(300),
        None,
    );
    let port = a.port.to_string();
    let b = Helper::start(
        &["listen", "--backlog", "32", "--reuseport", "--port", &port],
        Some(500),
        None,
    );
    assert_eq!(b.port, a.port);

    let doc = status_json(&["--port", &port]);
    let mut pids = vec![a.pid, b.pid];
    pids.sort_unstable();
    assert_eq!(doc["pids"], serde_json::json!(pids));
    let c = constraint(&doc, "nofile");
    assert_eq!(u(&c["limit"]), 800);
    assert_eq!(u(&c["used"]), a.fds + b.fds);
    assert_eq!(u(&c["reserve"]), 64);
    assert_eq!(doc["binding"], "nofile");
    assert_eq!(
        u(&doc["predicted_max_connections"]),
        800 - a.fds - b.fds - 64
    );
    let mut limits: Vec<u64> = doc["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| u(&l["accept_queue_limit"]))
        .collect();
    limits.sort_unstable();
    assert_eq!(limits, vec![16, 32]);

    // The same two named by pid are the same service.
    let by_pid = status_json(&["--pid", &format!("{},{}", b.pid, a.pid)]);
    assert_eq!(by_pid["target"]["pids"], serde_json::json!([b.pid, a.pid]));
    assert_eq!(by_pid["pids"], serde_json::json!(pids));
    assert_eq!(u(&constraint(&by_pid, "nofile")["limit"]), 800);
    assert_eq!(by_pid["listeners"].as_array().unwrap().len(), 2);
}

/// A target in another network namespace: its sockets and net.* sysctls are
/// read from inside that namespace.
#[test]
#[ignore = "needs root"]
fn status_pid_in_another_netns() {
    require_root();
    let ns = Netns::new("status");
    ns.sysctl("net.core.somaxconn", "6");
    let srv = Helper::start(&["listen", "--backlog", "100"], None, Some(&ns));
    let port = srv.port.to_string();
    let _cli = Helper::start(
        &["hold", "--connect", &port, "--count", "3"],
        None,
        Some(&ns),
    );

    let doc = status_json(&["--pid", &srv.pid.to_string()]);
    let want_ns = std::fs::read_link(format!("/proc/{}/ns/net", srv.pid)).unwrap();
    assert_eq!(doc["snapshot"]["netns"], want_ns.to_string_lossy().as_ref());
    assert_eq!(u(&doc["snapshot"]["system"]["somaxconn"]), 6);
    let l = &doc["listeners"][0];
    assert_eq!(u(&l["accept_queue_depth"]), 3);
    // backlog 100 clamped to the namespace's somaxconn.
    assert_eq!(u(&l["accept_queue_limit"]), 6);
}

#[test]
fn status_unknown_pid_fails_cleanly() {
    // Above the kernel's pid_max ceiling: never a live pid.
    let out = status(&["--pid", "4194305"]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim(),
        "headroom: status of pid 4194305: no process with pid 4194305"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn status_port_without_listener_fails_cleanly() {
    let free = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let out = status(&["--port", &port.to_string(), "--json"]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("no TCP listener on port {port}")),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// Without privilege over the target: one clear line, exit 3, no panic.
#[test]
#[ignore = "needs root"]
fn status_without_privilege_fails_cleanly() {
    require_root();
    let out = util::run(
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(util::headroom_bin())
            .args(["status", "--pid", "1"]),
    );
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("permission denied"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
