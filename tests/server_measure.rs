//! `measure_service` end to end over TCP: a `headroom serve --allow-measure`
//! floods another service on loopback and answers with the measured
//! breaking point beside the prediction, inline in the initialize era and
//! as a task in 2026-07-28 (polled with tasks/get, stopped with
//! tasks/cancel, which kills the flood). Without `--allow-measure` the tool
//! is not offered.

#[path = "util/server.rs"]
mod server;
mod util;

use serde_json::{json, Value};
use server::{Client, Server};
use std::time::{Duration, Instant};

const STATELESS: &str = "2026-07-28";

/// `_meta` of a 2026-07-28 request that declares the tasks extension.
fn meta() -> Value {
    json!({"io.modelcontextprotocol/protocolVersion": STATELESS,
        "io.modelcontextprotocol/clientCapabilities":
            {"extensions": {"io.modelcontextprotocol/tasks": {}}}})
}

fn stateless(c: &mut Client, id: u64, method: &str, mut params: Value) -> Value {
    params["_meta"] = meta();
    c.request(json!(id), method, params)
}

fn tool_names(list: &Value) -> Vec<String> {
    list["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("no tools: {list}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

/// A measuring client may wait for the whole flood.
fn patient(c: &Client) {
    c.stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
}

fn assert_measured(doc: &Value, cap: u64) {
    assert_eq!(doc["held"], cap, "{doc}");
    assert_eq!(doc["prediction"]["predicted_max_connections"], cap, "{doc}");
    assert_eq!(
        doc["prediction"]["binding"], "headroom-max-connections",
        "{doc}"
    );
}

#[test]
fn measures_a_service_inline_in_the_initialize_era() {
    let target = Server::start(&["--max-connections", "150"]);
    let measurer = Server::start(&["--allow-measure"]);
    let mut c = measurer.connect();
    c.initialize("2025-11-25");
    let list = c.request(json!(1), "tools/list", json!({}));
    assert!(tool_names(&list).contains(&"measure_service".to_string()));
    patient(&c);
    let r = c.request(
        json!(2),
        "tools/call",
        json!({"name": "measure_service", "arguments":
            {"port": target.addr.port(), "mode": "mcp", "connections": 400, "duration_s": 20}}),
    );
    let result = &r["result"];
    assert_ne!(result["isError"], true, "{r}");
    assert_measured(&result["structuredContent"], 150);
    let text = result["content"][0]["text"].as_str().unwrap();
    assert!(
        text.starts_with("held 150, predicted 150 (headroom-max-connections); broke at"),
        "{text}"
    );

    // Out of bounds: refused before anything is flooded.
    let r = c.request(
        json!(3),
        "tools/call",
        json!({"name": "measure_service", "arguments": {"port": target.addr.port(), "connections": 20001}}),
    );
    assert_eq!(r["result"]["isError"], true, "{r}");
}

#[test]
fn runs_as_a_task_and_a_cancel_kills_the_flood() {
    let target = Server::start(&["--max-connections", "150"]);
    let measurer = Server::start(&["--allow-measure"]);
    let mut c = measurer.connect();
    patient(&c);
    let call = |c: &mut Client, id: u64, args: Value| {
        stateless(
            c,
            id,
            "tools/call",
            json!({"name": "measure_service", "arguments": args}),
        )
    };
    let created = call(
        &mut c,
        1,
        json!({"port": target.addr.port(), "mode": "mcp", "connections": 200}),
    );
    assert_eq!(created["result"]["resultType"], "task", "{created}");
    let id = created["result"]["taskId"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(90);
    let done = loop {
        let t = stateless(&mut c, 2, "tasks/get", json!({"taskId": id}));
        if t["result"]["status"] != "working" {
            break t;
        }
        assert!(Instant::now() < deadline, "the task never finished: {t}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(done["result"]["status"], "completed", "{done}");
    assert_measured(&done["result"]["result"]["structuredContent"], 150);

    // A listener that never accepts keeps the flood busy with timeouts;
    // the cancel must kill it and free the slot for the next measurement.
    let stalled = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = stalled.local_addr().unwrap().port();
    let created = call(
        &mut c,
        3,
        json!({"port": port, "connections": 20000, "duration_s": 60}),
    );
    let id = created["result"]["taskId"].as_str().unwrap().to_string();
    let floods = || flood_children(measurer.child.id());
    let deadline = Instant::now() + Duration::from_secs(20);
    while floods() == 0 {
        assert!(Instant::now() < deadline, "the flood never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let busy = call(&mut c, 4, json!({"port": port}));
    assert_eq!(busy["result"]["isError"], true, "{busy}");
    let ack = stateless(&mut c, 5, "tasks/cancel", json!({"taskId": id}));
    assert_eq!(ack["result"]["resultType"], "complete", "{ack}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while floods() > 0 {
        assert!(Instant::now() < deadline, "the flood outlived its cancel");
        std::thread::sleep(Duration::from_millis(50));
    }
    let t = stateless(&mut c, 6, "tasks/get", json!({"taskId": id}));
    assert_eq!(t["result"]["status"], "cancelled", "{t}");
    drop(stalled);
}

#[test]
fn not_offered_without_allow_measure() {
    let s = Server::start(&[]);
    let mut c = s.connect();
    c.initialize("2025-11-25");
    let list = c.request(json!(1), "tools/list", json!({}));
    let names = tool_names(&list);
    assert!(names.contains(&"host_capacity".to_string()), "{names:?}");
    assert!(!names.contains(&"measure_service".to_string()), "{names:?}");
}

/// `headroom flood` processes whose parent is `pid` (the flood forks its
/// workers in its own process group; its leader is the server's child).
fn flood_children(pid: u32) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
            let cmdline = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            ppid == Some(pid) && cmdline.split(|b| *b == 0).any(|a| a == b"flood")
        })
        .count()
}
