//! Interop: the official MCP Python SDK (2.x) drives `headroom serve --stdio`,
//! in `auto` mode (negotiates 2026-07-28 via server/discover) and in
//! `legacy` mode (initialize, 2025-11-25).

#[path = "util/hold.rs"]
mod hold;
mod util;

use std::process::Command;
use std::time::Duration;

fn python() -> std::path::PathBuf {
    std::env::var_os("HEADROOM_PYTHON")
        .map(Into::into)
        .unwrap_or_else(|| util::repo_root().join(".venv/bin/python"))
}

fn drive(mode: &str) -> serde_json::Value {
    let script = util::repo_root().join("tests/python/server_stdio.py");
    let mut child = Command::new(python())
        .arg(&script)
        .arg(util::headroom_bin())
        .arg(mode)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} (run scripts/setup.sh): {e}",
                python().display()
            )
        });
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("python client timed out");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON line")
}

fn check_common(v: &serde_json::Value) {
    assert_eq!(
        v["tools"],
        serde_json::json!([
            "host_capacity",
            "service_capacity",
            "advise",
            "listeners",
            "preflight_check",
            "echo"
        ])
    );
    assert_eq!(v["echo"], "from python");
    assert_eq!(v["echo_is_error"], false);
    assert_eq!(v["binding"], "nofile");
    assert_eq!(v["capacity_binding"], "nofile");
    assert_eq!(v["resources"][0], "headroom://capacity");
    assert!(v["resources"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r == "headroom://profile/c10k"));
    assert_eq!(v["prompts"], serde_json::json!(["diagnose_capacity"]));
    assert_eq!(v["unknown_tool"], "MCPError");
    assert_eq!(v["server_name"], "headroom");
}

#[test]
fn python_sdk_auto_mode_over_stdio_negotiates_2026_07_28() {
    let v = drive("auto");
    assert_eq!(v["protocol_version"], "2026-07-28");
    check_common(&v);
}

#[test]
fn python_sdk_legacy_mode_over_stdio() {
    let v = drive("legacy");
    assert_eq!(v["protocol_version"], "2025-11-25");
    check_common(&v);
}

/// The Python SDK subscribed to a service's capacity (tests/python/subscribe_port.py):
/// one connection that takes the service's binding limit across 90% must be
/// told exactly once, within a second; nothing is said while nothing changes.
fn subscribed(target: &str, mode: &str) -> serde_json::Value {
    let listener = hold::HoldListener::start(200);
    let script = util::repo_root().join("tests/python/subscribe_port.py");
    let child = Command::new(python())
        .arg(&script)
        .arg(target)
        .arg(mode)
        .arg(listener.port.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run tests/python/subscribe_port.py");
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    let uri = listener.uri();
    assert_eq!(v["quiet_at_start"], 0, "{v}");
    let after = v["after_crossing"].as_array().unwrap();
    assert_eq!(
        after.len(),
        1,
        "exactly one notification for the crossing: {v}"
    );
    assert!(after[0][0].as_f64().unwrap() < 1.0, "told too late: {v}");
    assert_eq!(after[0][1], uri.as_str());
    if mode == "auto" {
        assert_eq!(v["protocol_version"], "2026-07-28");
        assert_eq!(v["honored"], serde_json::json!([uri]));
    } else {
        assert_eq!(v["protocol_version"], "2025-11-25");
    }
    v
}

#[test]
fn python_sdk_subscriber_legacy_stdio_is_told_of_the_90_percent_crossing() {
    subscribed(util::headroom_bin().to_str().unwrap(), "legacy");
}

#[test]
fn python_sdk_listen_stdio_is_told_of_the_90_percent_crossing() {
    subscribed(util::headroom_bin().to_str().unwrap(), "auto");
}

#[test]
fn python_sdk_listen_over_http_sse_is_told_of_the_90_percent_crossing() {
    let mut srv = Command::new(util::headroom_bin())
        .args(["serve", "--http", "127.0.0.1:0", "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(srv.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let ready: serde_json::Value = serde_json::from_str(&line).expect("ready line");
    let url = format!("http://{}/mcp", ready["http"].as_str().unwrap());
    subscribed(&url, "auto");
    let _ = srv.kill();
    let _ = srv.wait();
}
