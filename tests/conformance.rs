//! The official MCP conformance suite (@modelcontextprotocol/conformance,
//! run by scripts/conformance.sh) against headroom's Streamable HTTP server:
//! the fixture binary `headroom-conformance` must pass the whole active suite
//! and every 2026-07-28 scenario, the tasks extension's included, and
//! `headroom serve --http` every scenario that needs no fixture. Counts are
//! read from the script's last line: `conformance: P passed, F failed, S
//! skipped, W warnings`.
//!
//! The suite is installed by scripts/setup.sh; without it these tests fail in
//! CI and skip (saying so) elsewhere.

#[path = "util/conformance.rs"]
mod conformance;

use conformance::{fixtures, headroom_serve_http, require_suite, run_suite};
use std::sync::Mutex;

/// One suite at a time: scenarios time SSE reconnections, and three node
/// processes on two cores beside the other tests would make that flaky.
static SUITE: Mutex<()> = Mutex::new(());

/// The tasks extension's scenarios (SEP-2663, io.modelcontextprotocol/tasks):
/// the fixture's greet, slow_compute, failing_job, protocol_error_job,
/// confirm_delete, multi_input and test_tool_with_task drive them.
const TASKS_EXTENSION: [&str; 9] = [
    "tasks-capability-negotiation",
    "tasks-dispatch-and-envelope",
    "tasks-lifecycle",
    "tasks-mrtr-composition",
    "tasks-mrtr-input",
    "tasks-request-headers",
    "tasks-request-state-removal",
    "tasks-required-task-error",
    "tasks-wire-fields",
];

/// The suite itself skips this one (its check is a fixed SKIPPED "pending
/// subscriptions/listen rewrite" in 0.2.0-alpha.12): it runs no check
/// against any server, so it can be neither passed nor failed.
const SUITE_SKIPS: [&str; 1] = ["tasks-status-notifications"];

#[test]
fn fixtures_pass_the_whole_active_suite() {
    if !require_suite("fixtures_pass_the_whole_active_suite") {
        return;
    }
    let _one = SUITE.lock().unwrap_or_else(|e| e.into_inner());
    let (_server, url) = fixtures();
    let v = run_suite(&url, &[]);
    assert_eq!(
        (v.passed, v.failed, v.skipped, v.warnings),
        (31, 0, 0, 0),
        "{}",
        v.output
    );
    assert_eq!(v.with("PASS").len(), 31);
}

#[test]
fn fixtures_pass_2026_07_28_tasks_extension_included() {
    if !require_suite("fixtures_pass_2026_07_28_tasks_extension_included") {
        return;
    }
    let _one = SUITE.lock().unwrap_or_else(|e| e.into_inner());
    let (_server, url) = fixtures();
    let v = run_suite(&url, &["--requirements", "2026-07-28"]);
    // 50 scenarios: 49 pass, none fails, the suite skips its own one.
    assert_eq!(
        (v.passed, v.failed, v.skipped, v.warnings),
        (49, 0, 1, 0),
        "{}",
        v.output
    );
    assert_eq!(v.with("SKIP"), SUITE_SKIPS, "{}", v.output);
    let passed = v.with("PASS");
    for s in
        TASKS_EXTENSION
            .iter()
            .chain(&["server-stateless", "caching", "http-header-validation"])
    {
        assert!(passed.contains(s), "{s} did not pass\n{}", v.output);
    }
}

/// Scenarios that exercise only the protocol and transport, no `test_*`
/// fixture: `headroom serve --http` must pass each, with no warning.
const NO_FIXTURE_ACTIVE: [&str; 9] = [
    "server-initialize",
    "server-session-lifecycle",
    "ping",
    "logging-set-level",
    "dns-rebinding-protection",
    "server-sse-multiple-streams",
    "tools-list",
    "resources-list",
    "prompts-list",
];
const NO_FIXTURE_2026: [&str; 6] = [
    "caching",
    "http-header-validation",
    "sep-2164-resource-not-found",
    "input-required-result-unsupported-methods",
    "input-required-result-validate-input",
    "tools-list",
];

#[test]
fn headroom_serve_http_passes_every_scenario_without_fixtures() {
    if !require_suite("headroom_serve_http_passes_every_scenario_without_fixtures") {
        return;
    }
    let _one = SUITE.lock().unwrap_or_else(|e| e.into_inner());
    let (_server, url) = headroom_serve_http();
    let runs = NO_FIXTURE_ACTIVE
        .iter()
        .map(|s| (*s, vec!["--scenario", s]))
        .chain(
            NO_FIXTURE_2026
                .iter()
                .map(|s| (*s, vec!["--scenario", s, "--spec-version", "2026-07-28"])),
        );
    for (scenario, args) in runs {
        let v = run_suite(&url, &args);
        assert_eq!(
            (v.passed, v.failed, v.skipped, v.warnings),
            (1, 0, 0, 0),
            "{scenario} against headroom serve --http:\n{}",
            v.output
        );
        assert_eq!(v.with("PASS"), [scenario], "{}", v.output);
    }
}
