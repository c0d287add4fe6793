//! `headroom advise` as a command: `--watch` prints an event only when the
//! advice changes, `--apply` writes only what a profile bounds (through
//! preflight's journal, undone by `preflight rollback`), bad input exits 3
//! with one line, missing inputs are named, and the MCP server's `advise`
//! tool is read-only. The namespace tests need root (CI runs as root).

#[path = "util/probe.rs"]
mod probe;
#[path = "util/server.rs"]
mod server;
mod util;

use probe::{Guard, Script};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use util::{headroom_bin, require_root, run, Netns};

fn bin() -> String {
    headroom_bin().to_str().expect("utf-8 path").to_string()
}

#[test]
#[ignore = "needs root"]
fn watch_prints_an_event_only_when_the_advice_changes() {
    require_root();
    let ns = Netns::new("adwat");
    let mut srv = Script::start(Some(&ns), &[], "listener.py", &["8"]);
    let port = srv.line();
    let b = bin();
    let mut cmd = ns.command(&[
        &b,
        "advise",
        "--port",
        &port,
        "--watch",
        "--json",
        "--interval",
        "0.3",
    ]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child = Guard(cmd.spawn().expect("spawn advise --watch"));
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let event = |within: u64| -> Option<Value> {
        rx.recv_timeout(Duration::from_secs(within))
            .ok()
            .map(|l| serde_json::from_str(&l).expect("one JSON object per event"))
    };
    let first = event(60).expect("a first event");
    assert_eq!(first["event"], "advice");
    let rules = |e: &Value| -> Vec<String> {
        e["advice"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["rule"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(
        !rules(&first).contains(&"listen-backlog".to_string()),
        "{first:#}"
    );
    // Six evaluations with the same advice: no event.
    assert!(event(2).is_none(), "an event without a change");
    srv.send("connect 40");
    assert_eq!(srv.line(), "done");
    let next = event(30).expect("an event once the queue overflows");
    assert_eq!(next["advice"][0]["rule"], "listen-backlog", "{next:#}");
    assert_eq!(next["advice"][0]["severity"], "hit");
    assert_eq!(next["advice"][0]["capacity_now"], 9);
}

#[test]
#[ignore = "needs root"]
fn apply_writes_only_the_profiles_bounded_keys_through_the_journal() {
    require_root();
    let ns = Netns::new("adapl");
    ns.sysctl("net.core.somaxconn", "64");
    let mut srv = Script::start(Some(&ns), &[], "listener.py", &["8"]);
    let port = srv.line();
    srv.send("connect 40");
    assert_eq!(srv.line(), "done");
    let root = tempfile::tempdir().unwrap();
    let r = root.path().to_str().unwrap();
    let b = bin();
    let somaxconn = || {
        let out = ns.exec(&["sysctl", "-n", "net.core.somaxconn"]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let advise = |extra: &[&str]| -> Value {
        let mut argv = vec![
            b.as_str(),
            "advise",
            "--port",
            &port,
            "--json",
            "--interval",
            "0.2",
        ];
        argv.extend_from_slice(&["--apply", "--profile", "c10k", "--root", r]);
        argv.extend_from_slice(extra);
        let out = ns.exec(&argv);
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).expect("advise JSON")
    };

    // Dry run: the plan, nothing written.
    let dry = advise(&[]);
    assert_eq!(dry["apply"]["dry_run"], true);
    assert_eq!(
        dry["apply"]["selection"]["sysctls"],
        json!(["net.core.somaxconn"])
    );
    assert_eq!(somaxconn(), "64");
    assert!(!root.path().join("var/lib/headroom/rollback.json").exists());

    let doc = advise(&["--yes"]);
    let a = &doc["apply"];
    assert_eq!(
        a["selection"]["sysctls"],
        json!(["net.core.somaxconn"]),
        "{a:#}"
    );
    let skipped = &a["selection"]["skipped"][0];
    assert_eq!(skipped["key"], "listen() backlog");
    assert!(skipped["reason"]
        .as_str()
        .unwrap()
        .contains("advised, never edited"));
    assert_eq!(a["applied"]["sysctls"], 1);
    assert_eq!(somaxconn(), "4096");
    let persisted =
        std::fs::read_to_string(root.path().join("etc/sysctl.d/90-headroom.conf")).unwrap();
    assert!(
        persisted.contains("net.core.somaxconn = 4096"),
        "{persisted}"
    );
    assert!(root.path().join("var/lib/headroom/rollback.json").exists());

    let out = ns.exec(&[&b, "preflight", "rollback", "--root", r]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(somaxconn(), "64");
    assert!(!root.path().join("etc/sysctl.d/90-headroom.conf").exists());
}

#[test]
fn unknown_port_or_pid_exits_3_with_one_line() {
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for args in [
        vec!["advise", "--port", &free.to_string()],
        vec!["advise", "--pid", "4294967294"],
    ] {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let out = run(Command::new(headroom_bin()).args(&args).arg("--no-ebpf"));
        assert_eq!(out.status.code(), Some(3), "{args:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("headroom: advise "), "{err}");
        assert!(out.stdout.is_empty());
    }
    let out = run(Command::new(headroom_bin()).args(["advise"]));
    assert_eq!(out.status.code(), Some(2), "no target: a usage error");
}

#[test]
fn without_ebpf_the_missing_inputs_are_named_and_advice_still_given() {
    let me = std::process::id().to_string();
    let out = run(Command::new(headroom_bin()).args([
        "advise",
        "--pid",
        &me,
        "--no-ebpf",
        "--once",
        "--json",
    ]));
    assert!(out.status.success(), "{out:?}");
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (&doc["source"], &doc["interval_s"]),
        (&"poll".into(), &Value::Null)
    );
    let missing: Vec<&str> = doc["missing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    assert!(missing.contains(
        &"fd errors (EMFILE, ENFILE, EADDRNOTAVAIL): not seen without eBPF (disabled by --no-ebpf)"
    ));
    assert!(missing
        .iter()
        .any(|m| m.starts_with("counter deltas (ListenOverflows): one sample only")));
    assert!(doc["advice"].is_array());
    // This test process binds on nofile: that advice is there, ranked.
    let a = &doc["advice"][0];
    assert_eq!(
        (&a["rank"], &a["rule"]),
        (&1.into(), &"nofile".into()),
        "{doc:#}"
    );
}

#[test]
fn mcp_advise_tool_is_read_only_and_advises_a_port() {
    let srv = server::Server::start(&[]);
    let mut c = srv.connect();
    c.initialize("2025-06-18");
    let tools = c.request(json!(1), "tools/list", json!({}));
    let advise = tools["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "advise")
        .expect("an advise tool")
        .clone();
    assert_eq!(advise["annotations"]["readOnlyHint"], true);
    let port = srv.addr.port();
    let r = c.request(
        json!(2),
        "tools/call",
        json!({"name": "advise", "arguments": {"port": port, "interval_s": 0.1}}),
    );
    let doc = &r["result"]["structuredContent"];
    assert_eq!(doc["target"], format!("port {port}"), "{r:#}");
    assert_eq!(doc["interval_s"], 0.1);
    assert!(
        doc["advice"].is_array() && doc["missing"].is_array(),
        "{doc:#}"
    );
    let r = c.request(
        json!(3),
        "tools/call",
        json!({"name": "advise", "arguments": {}}),
    );
    assert_eq!(r["result"]["isError"], true, "{r:#}");
}
