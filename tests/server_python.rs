//! Interop: the official MCP Python SDK (2.x) drives `headroom serve --stdio`,
//! in `auto` mode (negotiates 2026-07-28 via server/discover) and in
//! `legacy` mode (initialize, 2025-11-25).

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
        serde_json::json!(["host_capacity", "service_capacity", "listeners", "preflight_check", "echo"])
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
