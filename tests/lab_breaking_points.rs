//! The breaking-point lab: each case sets one limit low in its own sandbox
//! (a throwaway network namespace, a prlimit, a cgroup), floods the target
//! with `headroom flood`, and asserts both the capacity model's prediction
//! and the behaviour at the wall. Root only; see docs/lab.md.

#[path = "util/lab.rs"]
mod lab;
mod util;

use lab::{flood, listener_in, tcpext, Acceptor};
use util::{require_root, Netns};

/// Port range: one client, one destination, a 1000-port range. connect()
/// fails with EADDRNOTAVAIL exactly where the model says, and a second
/// loopback source address doubles it.
#[test]
#[ignore = "needs root"]
fn lab_port_range_bound() {
    require_root();
    let ns = Netns::new("ports");
    // The listener takes its port first, from the default range, so that it
    // does not sit inside the range under test.
    let listener = listener_in(&ns, 4096);
    let port = listener.local_addr().unwrap().port();
    assert!(
        port > 21000,
        "listener port {port} must be outside the test range"
    );
    ns.sysctl("net.ipv4.ip_local_port_range", "20000 20999");
    let acceptor = Acceptor::spawn(listener);
    let target = format!("127.0.0.1:{port}");

    for sources in [1u64, 2] {
        let predicted =
            headroom_core::ephemeral_ports_per_destination((20000, 20999), sources, 0, 0)
                .max_connections;
        assert_eq!(predicted, 1000 * sources);
        let n = (predicted + 100).to_string();
        let r = flood(
            Some(&ns),
            &[
                "--target",
                &target,
                "--mode",
                "connect",
                "-n",
                &n,
                "--sources",
                &sources.to_string(),
                "--fail-streak",
                "50",
                "--timeout",
                "5s",
                "--port",
                &port.to_string(),
            ],
        );
        // The flood's model names its own wall, not the listener's.
        assert_eq!(r["prediction"]["binding"], "ephemeral-ports", "{r:#}");
        assert_eq!(r["prediction"]["predicted_max_connections"], predicted);
        assert_eq!(r["prediction"]["ratio"], 1.0);
        assert_eq!(r["opened"], predicted, "sources {sources}: {r:#}");
        assert_eq!(r["stop"], "failure", "{r:#}");
        assert_eq!(r["breaking_point"]["connections"], predicted);
        assert_eq!(r["breaking_point"]["cause"], "eaddrnotavail");
        // Every failure is the port wall, nothing else.
        let failures = r["failures"].as_object().unwrap();
        assert_eq!(failures.len(), 1, "{failures:?}");
        let attempted = r["attempted"].as_u64().unwrap();
        assert_eq!(
            failures["eaddrnotavail"].as_u64().unwrap(),
            attempted - predicted
        );
    }
    // Every connection the client held reached the server.
    assert_eq!(acceptor.finish(), 3000);
}

/// Accept backlog: somaxconn 64 in the namespace, a listener asking for 1024
/// that never accepts. The queue holds min(1024, 64) + 1, the probe reports
/// that limit and depth, further SYNs are dropped (clients time out) and
/// ListenOverflows rises.
#[test]
#[ignore = "needs root"]
fn lab_backlog_bound() {
    require_root();
    let ns = Netns::new("backlog");
    ns.sysctl("net.core.somaxconn", "64");
    let listener = listener_in(&ns, 1024);
    let port = listener.local_addr().unwrap().port();
    let limit = headroom_core::effective_backlog(1024, 64);
    let capacity = headroom_core::accept_queue_capacity(limit);
    assert_eq!((limit, capacity), (64, 65));
    let overflows_before = tcpext(&ns, "ListenOverflows");

    // One attempt at a time, so that every handshake the kernel completes
    // lands in the queue before the next SYN is sent.
    let r = flood(
        Some(&ns),
        &[
            "--target",
            &format!("127.0.0.1:{port}"),
            "--mode",
            "connect",
            "-n",
            "200",
            "--concurrency",
            "1",
            "--timeout",
            "1s",
            "--fail-streak",
            "3",
        ],
    );
    assert_eq!(r["opened"], capacity, "{r:#}");
    assert_eq!(r["breaking_point"]["connections"], capacity);
    assert_eq!(r["breaking_point"]["cause"], "timeout");
    assert_eq!(r["failures"]["timeout"], 3);
    let overflows = tcpext(&ns, "ListenOverflows") - overflows_before;
    assert!(
        overflows >= 3,
        "each dropped SYN is an overflow, got {overflows}"
    );

    // Never accepted, the reset connections still fill the queue: the probe
    // (`headroom status --port`) sees the limit the model predicts and the
    // depth the flood reached. (Its ListenOverflows come from the owning
    // process's namespace, here the test's own, so they are read above.)
    let (probe_limit, probe_peak) = lab::probe_listener(&ns, port);
    assert_eq!(probe_limit, limit);
    assert_eq!(probe_peak, capacity);
    drop(listener);
}

/// fd limit: the server under `prlimit --nofile=512`. The model, from a
/// snapshot of the idle server, predicts the maximum; the flood measures it;
/// every attempt past it gets the server's refusal line naming `nofile`,
/// and the sessions it holds still answer.
#[test]
#[ignore = "needs root"]
fn lab_fd_bound() {
    require_root();
    let bin = util::headroom_bin();
    let mut server = lab::Guard(
        std::process::Command::new("prlimit")
            .arg("--nofile=512")
            .arg(&bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--json"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("prlimit headroom serve"),
    );
    let ready = lab::wait_for_line(&mut server.0, std::time::Duration::from_secs(30), |l| {
        l.starts_with('{')
    });
    let ready: serde_json::Value = serde_json::from_str(&ready).unwrap();
    let target = ready["listen"].as_str().unwrap().to_string();
    let pid = ready["pid"].as_u64().unwrap().to_string();

    let r = flood(
        None,
        &[
            "--target",
            &target,
            "--pid",
            &pid,
            "--mode",
            "mcp",
            "-n",
            "1000",
            "--fail-streak",
            "100",
            "--timeout",
            "10s",
        ],
    );
    let predicted = r["prediction"]["predicted_max_connections"]
        .as_u64()
        .unwrap();
    assert_eq!(r["prediction"]["binding"], "nofile", "{r:#}");
    let measured = r["breaking_point"]["connections"]
        .as_u64()
        .expect("a breaking point");
    assert!(
        measured.abs_diff(predicted) * 100 <= predicted,
        "predicted {predicted}, measured {measured}"
    );
    // The server's own ceiling is the measured one, and it says why.
    assert_eq!(r["server_refusal"]["limit"], "nofile", "{r:#}");
    assert_eq!(r["server_refusal"]["max"], measured);
    assert_eq!(ready["max_connections"], measured);
    // Every attempt past the wall got the refusal line, nothing else.
    assert_eq!(r["breaking_point"]["cause"], "refused");
    let failures = r["failures"].as_object().unwrap();
    assert_eq!(failures.len(), 1, "{failures:?}");
    let attempted = r["attempted"].as_u64().unwrap();
    assert_eq!(failures["refused"].as_u64().unwrap(), attempted - measured);
    assert!(attempted - measured >= 100);
    // The server still answers every session it holds.
    assert_eq!(r["ping"]["sessions"], measured);
    assert_eq!(r["ping"]["replies"], measured);
    assert_eq!(r["dropped_later"], 0);
}
