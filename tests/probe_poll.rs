//! `headroom probe --no-ebpf`: the polling fallback, with the same workloads
//! as probe_ebpf.rs and the assertions polling can honour: current depth and
//! limit, ListenOverflows, state counts; no eBPF-only fields, and a reason.

#[path = "util/probe.rs"]
mod probe;
mod util;

use probe::{queued, ss_count, ss_count_where, Probe, Script};
use util::{require_root, Netns};

fn start_poll(ns: &Netns, args: &[&str]) -> Probe {
    let mut argv = vec!["--no-ebpf"];
    argv.extend_from_slice(args);
    let p = Probe::start(ns, &argv);
    assert!(
        p.status_line.contains("eBPF off: disabled by --no-ebpf"),
        "{}",
        p.status_line
    );
    p
}

#[test]
#[ignore = "needs root"]
fn poll_backlog_32_with_20_queued_reports_depth_20_limit_32() {
    require_root();
    let q = queued("pp32", 32, 20, "2", start_poll);
    let (doc, l) = (&q.doc, &q.listener);
    assert_eq!(doc["source"], "poll");
    assert_eq!(doc["ebpf"]["enabled"], false);
    assert_eq!(doc["ebpf"]["reason"], "disabled by --no-ebpf");
    assert!(doc["source_note"]
        .as_str()
        .unwrap()
        .contains("disabled by --no-ebpf"));
    assert_eq!(l["accept_queue_depth"], 20, "{l}");
    assert_eq!(l["accept_queue_peak"], 20, "{l}");
    assert_eq!(l["accept_queue_limit"], 32, "{l}");
    assert!(
        l["queue_full_events"].is_null(),
        "polling cannot see full events: {l}"
    );
}

#[test]
#[ignore = "needs root"]
fn poll_backlog_8_with_40_connections_shows_depth_9_and_overflows() {
    require_root();
    let q = queued("pp8", 8, 40, "2", start_poll);
    let (doc, l, before) = (&q.doc, &q.listener, q.overflows_before);
    assert_eq!(l["accept_queue_depth"], 9, "{l}");
    assert_eq!(l["accept_queue_limit"], 8, "{l}");
    let overflows = doc["snapshot"]["netstat"]["listen_overflows"]
        .as_u64()
        .unwrap();
    assert!(
        overflows >= before + 31,
        "ListenOverflows {before} -> {overflows}"
    );
}

#[test]
#[ignore = "needs root"]
fn poll_cannot_see_emfile_and_says_so() {
    require_root();
    let ns = Netns::new("ppemf");
    let mut child = Script::start(None, &["prlimit", "--nofile=64"], "emfile.py", &["10"]);
    let pid = child.line();
    let probe = start_poll(&ns, &["--pid", &pid, "--once", "--json", "--interval", "2"]);
    child.send("go");
    let line = child.line();
    let (failures, total) = line.split_once(' ').expect("failures total");
    assert_eq!(failures, "11");
    let doc = probe.output();
    assert_eq!(doc["source"], "poll");
    assert_eq!(doc["snapshot"]["fd_errors"].as_array().unwrap().len(), 0);
    // What polling does see: the fds held (a full table of 64, plus any
    // inherited fd numbered above the limit), against the limit of 64.
    let p = &doc["snapshot"]["processes"][0];
    assert_eq!(p["nofile_soft"], 64, "{p}");
    assert_eq!(p["open_fds"], total.parse::<u64>().unwrap(), "{p}");
    assert!(p["open_fds"].as_u64().unwrap() >= 64, "{p}");
}

#[test]
#[ignore = "needs root"]
fn poll_state_counts_for_a_port_match_sock_diag() {
    require_root();
    let ns = Netns::new("ppst");
    let mut srv = Script::start(Some(&ns), &[], "listener.py", &["64", "accept"]);
    let port: u16 = srv.line().parse().unwrap();
    let probe = start_poll(
        &ns,
        &[
            "--port",
            &port.to_string(),
            "--once",
            "--json",
            "--interval",
            "2",
        ],
    );
    srv.send("churn 10 4");
    assert_eq!(srv.line(), "done");
    let established = ss_count(&ns, "established", port);
    let time_wait = ss_count(&ns, "time-wait", port);
    // Polling counts the sockets the target process holds: here both ends.
    let held = ss_count_where(
        &ns,
        "established",
        &format!("( sport = :{port} or dport = :{port} )"),
    );
    let doc = probe.output();
    assert_eq!(
        (established, time_wait, held),
        (6, 4, 12),
        "the workload itself"
    );
    assert_eq!(doc["snapshot"]["sockets"]["ESTABLISHED"], held);
    // TIME_WAIT sockets belong to no process: polling reports the namespace's.
    assert_eq!(doc["snapshot"]["time_wait"], time_wait);
}
