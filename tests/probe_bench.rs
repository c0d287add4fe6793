//! `headroom bench probe`, short: the structure of its report, and the exact
//! equalities it measures (every connection opened is one ESTABLISHED and one
//! SYN_RECV transition counted by the probe, nothing dropped). Timings are
//! printed by the benchmark, never asserted. Needs root (eBPF).

#[path = "util/probe.rs"]
mod probe;
mod util;

use probe::Guard;
use serde_json::Value;
use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};
use util::{headroom_bin, require_root, Netns};

/// Runs `headroom bench probe ARGS --json` in `ns` (bounded) and parses it.
fn bench_probe(ns: &Netns, args: &[&str]) -> Value {
    let bin = headroom_bin();
    let mut argv = vec![bin.to_str().expect("utf-8 path"), "bench", "probe"];
    argv.extend_from_slice(args);
    argv.push("--json");
    let mut cmd = ns.command(&argv);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = Guard(cmd.spawn().expect("spawn headroom bench probe"));
    let mut stdout = child.0.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(240);
    let status = loop {
        if let Some(s) = child.0.try_wait().expect("wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "bench probe {args:?} ran over 240 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    let _ = child
        .0
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err);
    let out = reader.join().expect("stdout reader");
    assert!(status.success(), "bench probe {args:?}: {status}\n{err}");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[test]
#[ignore = "needs root"]
fn bench_probe_counts_every_connection_and_drops_none() {
    require_root();
    let ns = Netns::new("pbench");
    let doc = bench_probe(
        &ns,
        &[
            "--rounds",
            "2",
            "--seconds",
            "1",
            "--churn-seconds",
            "0.5",
            "--connections",
            "2000",
            "--threads",
            "2",
        ],
    );
    let p = &doc["probe"];
    let tps: Vec<&str> = p["tracepoints"]
        .as_array()
        .expect("tracepoints")
        .iter()
        .map(|t| t.as_str().expect("string"))
        .collect();
    for tp in ["sock:inet_sock_set_state", "syscalls:sys_exit_accept4"] {
        assert!(tps.contains(&tp), "{tp} not attached: {tps:?}");
    }
    assert_eq!(p["rounds_per_condition"], 2, "{p}");

    // Steady echo load: two rounds per condition, each with calls answered.
    let steady = &p["steady"];
    assert_eq!(
        (steady["sessions"].clone(), steady["in_flight"].clone()),
        (100.into(), 16.into())
    );
    for side in ["off", "on"] {
        let rounds = steady[side]["rounds"].as_array().expect("steady rounds");
        assert_eq!(rounds.len(), 2, "{side}: {steady}");
        for r in rounds {
            assert!(r["calls"].as_u64().expect("calls") > 0, "{side}: {r}");
        }
        assert!(steady[side]["calls_per_second"].is_f64(), "{steady}");
        assert!(steady[side]["p99_us"].is_f64(), "{steady}");
        assert!(steady[side]["cpu_us_per_call"].is_f64(), "{steady}");
    }
    // The probe was read at least once per attached round (plus the final reads).
    assert!(
        steady["probe_reads"].as_u64().expect("reads") >= 4,
        "{steady}"
    );
    assert!(steady["drop_percent"].is_f64(), "{steady}");

    // Churn: two rounds per condition with connections made.
    let churn = &p["churn"];
    for side in ["off", "on"] {
        let rounds = churn[side]["rounds"].as_array().expect("churn rounds");
        assert_eq!(rounds.len(), 2, "{side}: {churn}");
        for r in rounds {
            assert!(r["made"].as_u64().expect("made") > 0, "{side}: {r}");
        }
    }

    // Program cost: every attached program reported, with runs under both loads.
    for (load, per) in [("steady", "per_call"), ("churn", "per_connection")] {
        let c = &p["program_cost"][load];
        let progs = c["programs"].as_object().expect("programs");
        for prog in ["inet_sock_set_state", "sys_exit_open1", "sys_exit_close"] {
            assert!(progs.contains_key(prog), "{load}: {prog} missing: {c}");
        }
        assert!(
            c[format!("runs_{per}")].as_f64().expect("runs") > 0.0,
            "{c}"
        );
        assert!(c["program_percent_of_one_core"].is_f64(), "{c}");
    }
    // Churn connects and accepts: the state and accept-queue programs ran.
    let churn_progs = &p["program_cost"]["churn"]["programs"];
    for prog in ["inet_sock_set_state", "sys_exit_open1"] {
        assert!(
            churn_progs[prog]["runs_per_second"].as_f64().expect("runs") > 0.0,
            "{churn_progs}"
        );
    }

    // No-drop: every connection made reached accept() and was counted by the
    // probe as exactly one SYN_RECV and one ESTABLISHED on that port.
    let nd = &p["no_drop"];
    assert_eq!(nd["connections"], 2000, "{nd}");
    assert_eq!(nd["made"], 2000, "{nd}");
    assert_eq!(nd["failed"], 0, "{nd}");
    assert_eq!(nd["accepted"], 2000, "{nd}");
    assert_eq!(nd["listen_overflows"], 0, "{nd}");
    let pr = &nd["probe"];
    assert_eq!(pr["established_transitions"], 2000, "{nd}");
    assert_eq!(pr["syn_recv_transitions"], 2000, "{nd}");
    assert_eq!(pr["queue_full_events"], 0, "{nd}");
    let somaxconn: u64 =
        String::from_utf8_lossy(&ns.exec(&["sysctl", "-n", "net.core.somaxconn"]).stdout)
            .trim()
            .parse()
            .expect("somaxconn");
    assert_eq!(pr["accept_queue_limit"], somaxconn.min(4096), "{nd}");
    let dropped = pr["dropped"].as_object().expect("dropped");
    let names: Vec<&str> = dropped.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["fd_errors", "fd_usage", "listeners", "ports", "time_wait"],
        "{nd}"
    );
    assert!(dropped.values().all(|v| v == 0), "{nd}");
    assert_eq!(pr["dropped_total"], 0, "{nd}");
    assert_eq!(nd["every_connection_counted"], true, "{nd}");
}
