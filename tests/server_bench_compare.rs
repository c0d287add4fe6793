//! `headroom bench http|throughput|sessions` and their rmcp comparator
//! (examples/rmcp_echo.rs). The numbers are not asserted (benchmarks, not
//! timed tests); the shape of the output is, and that every call was
//! answered with the echo result, so a comparison never rests on errors.

mod util;

use serde_json::Value;
use std::collections::BTreeSet;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kills the bench (and so its server children's client) if a test panics.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `headroom bench ARGS --json` with a deadline; its JSON output.
fn bench(args: &[&str]) -> Value {
    let mut child = Killed(
        Command::new(util::headroom_bin())
            .arg("bench")
            .args(args)
            .arg("--json")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start headroom bench"),
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "headroom bench {args:?}: no result in 120 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let (mut out, mut err) = (String::new(), String::new());
    child
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "headroom bench {args:?}: {status}\n{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

fn keys(v: &Value) -> BTreeSet<&str> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect()
}

fn set<'a>(k: &[&'a str]) -> BTreeSet<&'a str> {
    k.iter().copied().collect()
}

/// One server's row: every call answered with the echo result.
fn assert_row(row: &Value, what: &str) {
    assert_eq!(
        keys(row),
        set(&[
            "calls",
            "errors",
            "seconds",
            "calls_per_second",
            "p50_us",
            "p99_us"
        ]),
        "{what}: {row}"
    );
    assert!(row["calls"].as_u64().unwrap() > 0, "{what}: {row}");
    assert_eq!(row["errors"], 0, "{what}: {row}");
    assert!(row["seconds"].as_f64().unwrap() > 0.0, "{what}: {row}");
    let (p50, p99) = (
        row["p50_us"].as_f64().unwrap(),
        row["p99_us"].as_f64().unwrap(),
    );
    assert!(p50 > 0.0 && p50 <= p99, "{what}: {row}");
}

const HTTP_KEYS: [&str; 7] = [
    "clients",
    "rounds",
    "request",
    "headroom_serve",
    "rmcp",
    "rmcp_runtime",
    "ratio_to_rmcp",
];

#[test]
fn bench_http_against_headroom_alone() {
    let v = bench(&[
        "http",
        "--seconds",
        "1",
        "--rounds",
        "1",
        "--clients",
        "4",
        "--rmcp",
        "none",
    ]);
    assert_eq!(keys(&v), set(&["http"]));
    let h = &v["http"];
    assert_eq!(keys(h), set(&HTTP_KEYS));
    assert_eq!(h["clients"], 4);
    assert_eq!(h["rounds"], 1);
    assert_eq!(
        h["request"]["headers"],
        serde_json::json!([
            "content-type: application/json",
            "accept: application/json, text/event-stream",
            "mcp-protocol-version: 2026-07-28",
            "mcp-method: tools/call",
            "mcp-name: echo"
        ])
    );
    assert_eq!(h["request"]["path"], "/mcp");
    assert_row(&h["headroom_serve"], "headroom over HTTP");
    assert_eq!(
        h["rmcp"],
        serde_json::json!({"skipped": "not measured (--rmcp none)"})
    );
    assert_eq!(h["rmcp_runtime"], Value::Null);
    assert_eq!(h["ratio_to_rmcp"], Value::Null);
}

#[test]
fn bench_rejects_a_missing_rmcp_path() {
    let out = Command::new(util::headroom_bin())
        .args([
            "bench",
            "http",
            "--rmcp",
            "/nonexistent/rmcp_echo",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--rmcp /nonexistent/rmcp_echo: no such file"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

/// The comparator `cargo test` already built (examples are built with the
/// tests; nothing extra is compiled here). Run alone (`cargo test --test
/// server_bench_compare`) cargo builds no examples: then this says so and
/// does nothing, except in CI where `cargo test --workspace` builds it.
fn rmcp_echo() -> Option<PathBuf> {
    let p = util::headroom_bin()
        .parent()
        .unwrap()
        .join("examples")
        .join("rmcp_echo");
    if p.is_file() {
        return Some(p);
    }
    if std::env::var_os("CI").is_some() {
        panic!("{} missing: cargo test --workspace builds it", p.display());
    }
    eprintln!(
        "skipped: {} not built (cargo build --example rmcp_echo)",
        p.display()
    );
    None
}

#[test]
fn bench_compares_with_rmcp_over_http_and_tcp() {
    let Some(rmcp) = rmcp_echo() else { return };
    let rmcp = rmcp.to_str().unwrap();

    let v = bench(&[
        "http",
        "--seconds",
        "1",
        "--rounds",
        "1",
        "--clients",
        "4",
        "--rmcp",
        rmcp,
    ]);
    let h = &v["http"];
    assert_eq!(keys(h), set(&HTTP_KEYS));
    assert_row(&h["headroom_serve"], "headroom over HTTP");
    assert_row(&h["rmcp"], "rmcp over HTTP");
    assert!(h["rmcp_runtime"]
        .as_str()
        .unwrap()
        .starts_with("tokio multi-thread"));
    assert!(h["ratio_to_rmcp"].as_f64().unwrap() > 0.0);

    // TCP: distinct ids per request in flight, so rmcp answers every one.
    let v = bench(&[
        "throughput",
        "--seconds",
        "1",
        "--rounds",
        "1",
        "--sessions",
        "3",
        "--in-flight",
        "4",
        "--rmcp",
        rmcp,
    ]);
    let t = &v["throughput"];
    assert_eq!(
        keys(t),
        set(&[
            "sessions",
            "in_flight",
            "rounds",
            "headroom_serve",
            "bare_line_server",
            "rmcp",
            "rmcp_runtime",
            "ratio_to_bare",
            "ratio_to_rmcp"
        ])
    );
    assert_row(&t["headroom_serve"], "headroom over TCP");
    assert_row(&t["bare_line_server"], "bare line server");
    assert_row(&t["rmcp"], "rmcp over TCP");

    let v = bench(&[
        "sessions",
        "--sessions",
        "50",
        "--concurrency",
        "4",
        "--rmcp",
        rmcp,
    ]);
    let s = &v["sessions"];
    // Every session of the second server subscribed (the client waits for
    // each subscribe's result, so 50 here means 50 subscriptions).
    let sub = &s["with_subscription"];
    assert_eq!(sub["subscribed_to"], "headroom://capacity", "{sub}");
    assert!(sub["server_cpu_seconds_idle_2s"].is_number(), "{sub}");
    for row in [s, &s["rmcp"], sub] {
        assert_eq!(row["sessions"], 50, "{row}");
        assert!(row["sessions_per_second"].as_f64().unwrap() > 0.0, "{row}");
        assert!(row["server_rss_after_bytes"].as_u64().unwrap() > 0, "{row}");
    }
    assert!(s["open_rate_headroom_to_rmcp"].as_f64().unwrap() > 0.0);
    assert!(s["rss_per_session_headroom_to_rmcp"].is_number());
}
