//! `headroom probe` with its eBPF programs attached: exact accept-queue
//! peaks, queue-full events, EMFILE counts per process and TCP state counts
//! per port, checked against what the kernel (ss, /proc/net/netstat) and
//! the workload itself report. Needs root (CI runs as root).

#[path = "util/probe.rs"]
mod probe;
mod util;

use probe::{listen_overflows, queued, scrape, ss_count, Probe, Script};
use util::{require_root, Netns};

fn start_ebpf(ns: &Netns, args: &[&str]) -> Probe {
    let p = Probe::start(ns, args);
    assert!(
        p.status_line.contains("eBPF on"),
        "eBPF must load here (CI installs the toolchain): {}",
        p.status_line
    );
    p
}

#[test]
#[ignore = "needs root"]
fn backlog_32_with_20_queued_reports_peak_20_limit_32() {
    require_root();
    let q = queued("pq32", 32, 20, "3", start_ebpf);
    let (doc, l) = (&q.doc, &q.listener);
    assert_eq!(doc["source"], "ebpf", "{doc}");
    assert_eq!(l["accept_queue_peak"], 20, "{l}");
    assert_eq!(l["accept_queue_depth"], 20, "{l}");
    assert_eq!(l["accept_queue_limit"], 32, "{l}");
    assert_eq!(l["queue_full_events"], 0, "{l}");
}

#[test]
#[ignore = "needs root"]
fn backlog_8_with_40_connections_fills_at_9_and_counts_full_events() {
    require_root();
    let q = queued("pq8", 8, 40, "3", start_ebpf);
    let (doc, l, before) = (&q.doc, &q.listener, q.overflows_before);
    // sk_acceptq_is_full() is `backlog > max`: the kernel queues limit + 1.
    assert_eq!(l["accept_queue_peak"], 9, "{l}");
    assert_eq!(l["accept_queue_limit"], 8, "{l}");
    // The 9th connection left the queue full; later SYNs are dropped before
    // they are queued, so exactly one queueing found it full.
    assert_eq!(l["queue_full_events"], 1, "{l}");
    let overflows = doc["snapshot"]["netstat"]["listen_overflows"]
        .as_u64()
        .unwrap();
    assert!(
        overflows >= before + 31,
        "ListenOverflows {before} -> {overflows}"
    );
    assert!(listen_overflows(&q.ns) >= before + 31);
}

#[test]
#[ignore = "needs root"]
fn emfile_count_for_a_pid_equals_the_failures_it_saw() {
    require_root();
    let ns = Netns::new("pemf");
    let mut child = Script::start(
        None,
        &["prlimit", "--nofile=64"],
        "emfile.py",
        &["10", "release"],
    );
    let pid = child.line();
    let probe = start_ebpf(&ns, &["--pid", &pid, "--once", "--json", "--interval", "3"]);
    child.send("go");
    let line = child.line();
    let (failures, peak) = line.split_once(' ').expect("failures peak");
    let (failures, peak): (u64, u64) = (failures.parse().unwrap(), peak.parse().unwrap());
    assert_eq!(failures, 11, "EMFILE once, then 10 more");
    let doc = probe.output();
    let pid: u64 = pid.parse().unwrap();
    let errors: Vec<_> = doc["snapshot"]["fd_errors"]
        .as_array()
        .expect("fd_errors")
        .iter()
        .filter(|e| e["pid"] == pid && e["errno"] == "EMFILE")
        .cloned()
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["syscall"], "socket");
    assert_eq!(errors[0]["count"], failures, "{errors:?}");
    // It filled its fd table (64 slots, plus any inherited fd numbered above
    // the limit) and closed the sockets again before the sample: only the
    // in-kernel fd tracking knows the peak.
    let p = &doc["snapshot"]["processes"][0];
    assert!(peak >= 64, "the child's own count: {peak}");
    assert!(p["open_fds"].as_u64().unwrap() < 16, "{p}");
    assert_eq!(p["open_fds_peak"], peak, "{p}");
}

#[test]
#[ignore = "needs root"]
fn state_counts_for_a_port_match_sock_diag() {
    require_root();
    state_counts_match_sock_diag("pst", false);
}

#[test]
#[ignore = "needs root"]
fn time_wait_events_count_time_wait_in_the_kernel() {
    require_root();
    state_counts_match_sock_diag("ptw", true);
}

/// 10 connections to a port, 4 of them closed by the server first (so its
/// ends wait in TIME_WAIT on that port); the probe's counts must equal
/// sock_diag's taken at the same moment. With
/// `--time-wait-events` TIME_WAIT is counted by the timer programs, and its
/// transitions too; by default by sock_diag at the read, with none.
fn state_counts_match_sock_diag(ns_name: &str, time_wait_events: bool) {
    let ns = Netns::new(ns_name);
    let mut srv = Script::start(Some(&ns), &[], "listener.py", &["64", "accept"]);
    let port: u16 = srv.line().parse().unwrap();
    let port_arg = port.to_string();
    let mut args = vec!["--port", &port_arg, "--once", "--json", "--interval", "3"];
    if time_wait_events {
        args.push("--time-wait-events");
    }
    let probe = start_ebpf(&ns, &args);
    srv.send("churn 10 4");
    assert_eq!(srv.line(), "done");
    let established = ss_count(&ns, "established", port);
    let time_wait = ss_count(&ns, "time-wait", port);
    let doc = probe.output();
    assert_eq!((established, time_wait), (6, 4), "the workload itself");
    let s = &doc["snapshot"]["sockets"];
    assert_eq!(s["ESTABLISHED"], established, "{s}");
    assert_eq!(s["TIME_WAIT"], time_wait, "{s}");
    assert_eq!(s["LISTEN"], 1, "{s}");
    let x = &doc["ebpf"];
    let t = &x["transitions"];
    assert_eq!(t["established"].as_u64().unwrap(), 10, "{t}");
    if time_wait_events {
        assert_eq!(x["time_wait_source"], "ebpf");
        assert_eq!(t["time_wait"], 4, "{t}");
        assert!(
            x["attached"].to_string().contains("timer:timer_cancel"),
            "{x}"
        );
    } else {
        assert_eq!(x["time_wait_source"], "sock_diag");
        assert!(t.get("time_wait").is_none(), "{t}");
        assert!(!x["attached"].to_string().contains("timer:"), "{x}");
    }
    assert_eq!(x["dropped"]["ports"], 0);
    assert_eq!(x["dropped"]["time_wait"], 0);
}

#[test]
#[ignore = "needs root"]
fn metrics_endpoint_serves_the_probe_reading() {
    require_root();
    let ns = Netns::new("pmet");
    let mut srv = Script::start(Some(&ns), &[], "listener.py", &["16"]);
    let port = srv.line();
    let probe = start_ebpf(
        &ns,
        &[
            "--port",
            &port,
            "--listen",
            "127.0.0.1:0",
            "--interval",
            "0.5",
        ],
    );
    let line = probe.stderr_line("metrics at http://");
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|s| s.strip_suffix("/metrics"))
        .expect("address")
        .to_string();
    srv.send("connect 3");
    assert_eq!(srv.line(), "done");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let text = scrape(&ns, &addr);
    let l = format!("listener=\"127.0.0.1:{port}\"");
    for want in [
        format!("headroom_accept_queue_peak{{{l}}} 3"),
        format!("headroom_accept_queue_depth{{{l}}} 3"),
        format!("headroom_accept_queue_limit{{{l}}} 16"),
        format!("headroom_accept_queue_full_total{{{l}}} 0"),
        "headroom_probe_source{source=\"ebpf\"} 1".to_string(),
        "headroom_probe_ebpf_enabled{reason=\"\"} 1".to_string(),
        "headroom_probe_events_dropped_total{map=\"listeners\"} 0".to_string(),
        "headroom_tcp_sockets{state=\"listen\"} 1".to_string(),
    ] {
        assert!(text.lines().any(|x| x == want), "missing {want} in\n{text}");
    }
    drop(probe);
}
