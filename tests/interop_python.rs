//! Interop over Streamable HTTP: the official MCP Python SDK (2.x) `Client`
//! drives `headroom serve --http` in `auto` mode (probes server/discover and
//! must land on 2026-07-28) and in `legacy` mode (initialize, 2025-11-25).
//! The same client over stdio is tests/server_python.rs.

#[path = "util/conformance.rs"]
mod conformance;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn python() -> std::path::PathBuf {
    std::env::var_os("HEADROOM_PYTHON")
        .map(Into::into)
        .unwrap_or_else(|| conformance::repo_root().join(".venv/bin/python"))
}

/// Runs tests/python/interop_client.py (bounded to 60 s) and parses its JSON.
fn drive(args: &[&str]) -> serde_json::Value {
    let script = conformance::repo_root().join("tests/python/interop_client.py");
    let mut child = Command::new(python())
        .arg(&script)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} (run scripts/setup.sh): {e}",
                python().display()
            )
        });
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("python client timed out: {args:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "interop_client.py {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

fn check(v: &serde_json::Value, version: &str) {
    assert_eq!(v["protocol_version"], version, "{v}");
    assert_eq!(v["server_name"], "headroom", "{v}");
    assert_eq!(
        v["tools"],
        serde_json::json!([
            "advise",
            "echo",
            "host_capacity",
            "listeners",
            "preflight_check",
            "service_capacity"
        ]),
        "{v}"
    );
    assert_eq!(v["echo"], serde_json::json!(["hello interop"]));
    assert_eq!(v["echo_is_error"], false);
    assert_eq!(v["echo_delayed"], serde_json::json!(["later"]));
    // Both progress notifications of the delayed call, in order, before its result.
    assert_eq!(
        v["progress"],
        serde_json::json!([[1.0, 2.0], [2.0, 2.0]]),
        "{v}"
    );
    assert!(
        v["resources"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("headroom://capacity")),
        "{v}"
    );
    assert_eq!(
        v["capacity_keys"],
        serde_json::json!(["prediction", "schema_version", "server", "snapshot"])
    );
    assert_eq!(v["prompts"], serde_json::json!(["diagnose_capacity"]));
}

#[test]
fn python_sdk_auto_mode_over_http_negotiates_2026_07_28() {
    let (_server, url) = conformance::headroom_serve_http();
    check(&drive(&["--mode", "auto", "--url", &url]), "2026-07-28");
}

#[test]
fn python_sdk_legacy_mode_over_http_initializes_2025_11_25() {
    let (_server, url) = conformance::headroom_serve_http();
    check(&drive(&["--mode", "legacy", "--url", &url]), "2025-11-25");
}
