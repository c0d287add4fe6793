//! `headroom serve` over TCP: protocol edge cases, limits, refusals, drain.

#[path = "util/server.rs"]
mod server;
mod util;

use serde_json::json;
use server::{Client, Server};
use std::process::Command;
use std::time::Duration;

#[test]
fn edge_cases_do_not_kill_the_connection() {
    let srv = Server::start(&[]);
    let mut c = srv.connect();
    // Request before initialize: an error, the connection lives on.
    let r = c.request(json!(1), "tools/list", json!({}));
    assert_eq!(r["error"]["code"], -32602);
    assert_eq!(r["id"], 1);
    assert_eq!(
        c.initialize("2025-11-25")["result"]["protocolVersion"],
        "2025-11-25"
    );
    // Malformed JSON, invalid UTF-8, not an object.
    c.send_raw(b"{\"jsonrpc\": nope\n");
    let r = c.recv().unwrap();
    assert_eq!(
        (r["error"]["code"].as_i64(), r["id"].is_null()),
        (Some(-32700), true)
    );
    c.send_raw(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\xff\xfe\"}\n");
    assert_eq!(c.recv().unwrap()["error"]["code"], -32700);
    c.send_raw(b"[1,2]\n");
    assert_eq!(c.recv().unwrap()["error"]["code"], -32600);
    // Unknown method.
    let r = c.request(json!("m"), "no/such", json!({}));
    assert_eq!(
        (r["error"]["code"].as_i64(), r["id"].as_str()),
        (Some(-32601), Some("m"))
    );
    // A notification gets no reply: the next line is the ping's.
    c.send(&json!({"jsonrpc": "2.0", "method": "notifications/whatever"}));
    let r = c.request(json!(77), "ping", json!({}));
    assert_eq!(
        (r["id"].as_i64(), r["result"].clone()),
        (Some(77), json!({}))
    );
    // Unknown tool is a JSON-RPC error; a tool error is a result.
    let r = c.request(json!(2), "tools/call", json!({"name": "nope"}));
    assert_eq!(r["error"]["code"], -32602);
    let r = c.request(
        json!(3),
        "tools/call",
        json!({"name": "echo", "arguments": {}}),
    );
    assert_eq!(r["result"]["isError"], true);
    let r = c.request(
        json!(4),
        "tools/call",
        json!({"name": "echo", "arguments": {"message": "hi"}}),
    );
    assert_eq!(r["result"]["content"][0]["text"], "hi");
}

#[test]
fn duplicate_ids_and_progress() {
    let srv = Server::start(&[]);
    let mut c = srv.connect();
    c.initialize("2025-06-18");
    let slow = json!({"name": "echo", "arguments": {"message": "a", "delay_ms": 300, "steps": 3}, "_meta": {"progressToken": 5}});
    c.send(&json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": slow}));
    c.send(&json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": slow}));
    let mut lines = Vec::new();
    while lines.len() < 5 {
        lines.push(c.recv().expect("line"));
    }
    // The duplicate is refused at once; three progress notifications, then the one response.
    assert_eq!(lines[0]["error"]["code"], -32600);
    assert_eq!(lines[0]["id"], 9);
    for (i, l) in lines[1..4].iter().enumerate() {
        assert_eq!(l["method"], "notifications/progress");
        assert_eq!(l["params"]["progressToken"], 5);
        assert_eq!(l["params"]["progress"], (i + 1) as f64);
    }
    assert_eq!(lines[4]["id"], 9);
    assert_eq!(lines[4]["result"]["content"][0]["text"], "a");
}

#[test]
fn cancelled_request_gets_no_reply() {
    let srv = Server::start(&[]);
    let mut c = srv.connect();
    c.initialize("2025-11-25");
    c.send(&json!({"jsonrpc": "2.0", "id": "x", "method": "tools/call",
        "params": {"name": "echo", "arguments": {"message": "never", "delay_ms": 400}}}));
    c.send(&json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "x"}}));
    std::thread::sleep(Duration::from_millis(600));
    let r = c.request(json!("after"), "ping", json!({}));
    assert_eq!(r["id"], "after", "the cancelled call must not answer: {r}");
}

#[test]
fn oversize_line_gets_an_error_and_a_close() {
    let srv = Server::start(&["--max-message-bytes", "1024"]);
    let mut c = srv.connect();
    c.initialize("2025-11-25");
    // No newline: the server must not wait for the end of the line.
    c.send_raw(&vec![b'x'; 4096]);
    let r = c.recv().expect("error line");
    assert_eq!(r["error"]["code"], -32000);
    assert_eq!(
        r["error"]["data"],
        json!({"limit": "max-message-bytes", "max": 1024})
    );
    assert!(c.closed());
    // Others are unaffected.
    let mut d = srv.connect();
    assert_eq!(
        d.initialize("2025-11-25")["result"]["protocolVersion"],
        "2025-11-25"
    );
}

#[test]
fn slow_loris_and_idle_are_cut() {
    let srv = Server::start(&["--line-timeout", "1", "--idle-timeout", "2"]);
    let mut loris = srv.connect();
    loris.send_raw(b"{\"jsonrpc\":\"2.0\",");
    let mut idle = srv.connect();
    idle.initialize("2025-11-25");
    let r = loris.recv().expect("line-timeout error");
    assert_eq!(r["error"]["data"]["limit"], "line-timeout");
    assert!(loris.closed());
    let r = idle.recv().expect("idle-timeout error");
    assert_eq!(r["error"]["data"]["limit"], "idle-timeout");
    assert!(idle.closed());
}

#[test]
fn a_client_that_does_not_read_is_cut_after_the_write_timeout() {
    let srv = Server::start(&["--write-timeout", "1", "--metrics", "127.0.0.1:0"]);
    let mut c = srv.connect();
    c.initialize("2025-11-25");
    // Ask for ~2 KiB replies forever and never read them: the server stops
    // reading at its high-water mark, then cuts the connection.
    let req = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\"}\n".repeat(64);
    c.stream
        .set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut cut = false;
    while std::time::Instant::now() < deadline {
        use std::io::Write;
        match c.stream.write(&req) {
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                if srv.metric("headroom_server_connections_active{transport=\"tcp\"}") == Some(0.0)
                {
                    cut = true;
                    break;
                }
            }
            Err(_) => {
                cut = true;
                break;
            }
        }
    }
    assert!(cut, "the server kept a client that never reads");
    // The client can see the reset before the server's connection task has
    // counted itself out: wait for the gauge, not for a moment.
    let mut active = None;
    for _ in 0..100 {
        active = srv.metric("headroom_server_connections_active{transport=\"tcp\"}");
        if active == Some(0.0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(active, Some(0.0));
}

#[test]
fn refuses_beyond_max_connections_with_one_line_each() {
    let srv = Server::start(&["--max-connections", "40", "--metrics", "127.0.0.1:0"]);
    assert_eq!(srv.max_connections, 40);
    let mut held: Vec<Client> = (0..40).map(|_| srv.connect()).collect();
    for c in &mut held {
        assert_eq!(
            c.initialize("2025-11-25")["result"]["protocolVersion"],
            "2025-11-25"
        );
    }
    for _ in 0..25 {
        let mut c = srv.connect();
        let r = c.recv().expect("the refusal line");
        assert_eq!(r["error"]["code"], -32000);
        assert_eq!(
            r["error"]["data"],
            json!({"limit": "max-connections", "max": 40})
        );
        assert!(r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max-connections 40"));
        assert!(c.closed(), "refused connections are closed at once");
    }
    for (i, c) in held.iter_mut().enumerate() {
        let r = c.request(json!(i), "ping", json!({}));
        assert_eq!(r["id"], i);
    }
    let refused =
        "headroom_server_connections_refused_total{reason=\"max-connections\",transport=\"tcp\"}";
    assert_eq!(srv.metric(refused), Some(25.0));
    assert_eq!(
        srv.metric("headroom_server_connections_active{transport=\"tcp\"}"),
        Some(40.0)
    );
    assert_eq!(
        srv.metric("headroom_server_connections_accepted_total{transport=\"tcp\"}"),
        Some(40.0)
    );
    // A freed slot is usable again.
    drop(held.pop());
    std::thread::sleep(Duration::from_millis(100));
    let mut c = srv.connect();
    assert_eq!(
        c.initialize("2025-11-25")["result"]["protocolVersion"],
        "2025-11-25"
    );
}

#[test]
fn defer_accept_takes_a_connection_with_its_first_message() {
    // One slot. Under --defer-accept a connection that says nothing is not
    // accepted (it holds no slot), so a second client that initializes is
    // served; the silent one, once it speaks, finds the slot taken.
    let srv = Server::start(&[
        "--max-connections",
        "1",
        "--defer-accept",
        "30",
        "--metrics",
        "127.0.0.1:0",
    ]);
    let mut silent = srv.connect();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        srv.metric("headroom_server_connections_accepted_total{transport=\"tcp\"}"),
        Some(0.0)
    );
    let mut speaker = srv.connect();
    assert_eq!(
        speaker.initialize("2025-11-25")["result"]["protocolVersion"],
        "2025-11-25"
    );
    silent.send(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}));
    let r = silent.recv().expect("the refusal line");
    assert_eq!(
        r["error"]["data"],
        json!({"limit": "max-connections", "max": 1})
    );
    assert_eq!(speaker.request(json!(2), "ping", json!({}))["id"], 2);
    assert_eq!(
        srv.metric("headroom_server_connections_accepted_total{transport=\"tcp\"}"),
        Some(1.0)
    );
}

#[test]
fn the_fd_ceiling_is_the_models_prediction() {
    // Under a nofile of 128 the ceiling is 128 - fds open at start - 32: the
    // server says so, holds exactly that many, and refuses the next ones.
    let mut cmd = Command::new("prlimit");
    cmd.args(["--nofile=128:128", "--"])
        .arg(util::headroom_bin());
    let srv = Server::start_with(cmd, &["--metrics", "127.0.0.1:0"]);
    let ceiling = srv.max_connections;
    assert!(ceiling > 50 && ceiling < 96, "ceiling {ceiling}");
    let mut held: Vec<Client> = (0..ceiling).map(|_| srv.connect()).collect();
    for c in held.iter_mut().step_by(7) {
        c.initialize("2025-11-25");
    }
    for _ in 0..5 {
        let mut c = srv.connect();
        let r = c.recv().expect("refusal");
        assert_eq!(
            r["error"]["data"],
            json!({"limit": "nofile", "max": ceiling})
        );
    }
    assert_eq!(
        srv.metric(
            "headroom_server_connections_refused_total{reason=\"nofile\",transport=\"tcp\"}"
        ),
        Some(5.0)
    );
    // host_capacity predicts the same maximum while the server is full.
    let r = held[0].request(json!(1), "tools/call", json!({"name": "host_capacity"}));
    let p = &r["result"]["structuredContent"]["prediction"];
    assert_eq!(p["binding"], "nofile");
    let predicted = p["predicted_max_connections"].as_u64().unwrap();
    assert!(
        predicted.abs_diff(ceiling) <= 2,
        "predicted {predicted} vs ceiling {ceiling}"
    );
}

#[test]
fn token_is_required_and_never_echoed() {
    let dir = std::env::temp_dir().join(format!("hr-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("token");
    std::fs::write(&file, "correct-horse\n").unwrap();
    let srv = Server::start(&["--token-file", file.to_str().unwrap()]);
    let mut c = srv.connect();
    // A bare request, not `initialize()`: its trailing notification could meet
    // the server's close and fail with EPIPE.
    let r = c.request(
        json!(0),
        "initialize",
        json!({"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}),
    );
    assert_eq!(r["error"]["code"], -32004);
    assert!(!r.to_string().contains("correct-horse"));
    assert!(c.closed());
    let mut c = srv.connect();
    let r = c.request(
        json!(1),
        "initialize",
        json!({"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"},
               "_meta": {"headroom/token": "correct-horse"}}),
    );
    assert_eq!(r["result"]["protocolVersion"], "2025-11-25");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn stateless_requests_over_tcp() {
    let srv = Server::start(&[]);
    let mut c = srv.connect();
    let meta = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}});
    let r = c.request(json!(1), "server/discover", json!({"_meta": meta}));
    assert_eq!(r["result"]["supportedVersions"], json!(["2026-07-28"]));
    assert_eq!(r["result"]["resultType"], "complete");
    let r = c.request(
        json!(2),
        "tools/call",
        json!({"name": "echo", "arguments": {"message": "s"}, "_meta": meta}),
    );
    assert_eq!(r["result"]["content"][0]["text"], "s");
    assert_eq!(r["result"]["resultType"], "complete");
    let r = c.request(
        json!(3),
        "resources/read",
        json!({"uri": "headroom://nope", "_meta": meta}),
    );
    assert_eq!(r["error"]["code"], -32602);
    let r = c.request(
        json!(4),
        "resources/read",
        json!({"uri": "headroom://capacity", "_meta": meta}),
    );
    let doc: serde_json::Value =
        serde_json::from_str(r["result"]["contents"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(doc["prediction"]["binding"], "nofile");
}

#[test]
fn sigterm_drains_in_flight_requests() {
    let mut srv = Server::start(&["--drain-timeout", "5"]);
    let mut clients: Vec<Client> = (0..5).map(|_| srv.connect()).collect();
    for c in &mut clients {
        c.initialize("2025-11-25");
        for i in 0..3 {
            c.send(&json!({"jsonrpc": "2.0", "id": i, "method": "tools/call",
                "params": {"name": "echo", "arguments": {"message": format!("m{i}"), "delay_ms": 700}}}));
        }
    }
    std::thread::sleep(Duration::from_millis(150));
    srv.signal(libc::SIGTERM);
    for c in &mut clients {
        let mut ids: Vec<i64> = (0..3)
            .map(|_| {
                c.recv().expect("reply after SIGTERM")["id"]
                    .as_i64()
                    .unwrap()
            })
            .collect();
        ids.sort();
        assert_eq!(ids, [0, 1, 2]);
        assert!(c.closed(), "drained connections are closed");
    }
    assert_eq!(srv.wait(Duration::from_secs(10)), Some(0));
    assert!(
        std::net::TcpStream::connect(srv.addr).is_err(),
        "no longer accepting"
    );
}

#[test]
fn the_listeners_tool_shows_the_servers_own_port() {
    let srv = Server::start(&["--threads", "3"]);
    let mut c = srv.connect();
    c.initialize("2025-11-25");
    let port = srv.addr.port();
    let r = c.request(
        json!(1),
        "tools/call",
        json!({"name": "listeners", "arguments": {"port": port}}),
    );
    let ls = r["result"]["structuredContent"]["listeners"]
        .as_array()
        .unwrap_or_else(|| panic!("{r}"));
    // One listener per serving thread (SO_REUSEPORT), all on this address.
    assert_eq!(ls.len(), 3, "{r}");
    for l in ls {
        assert_eq!(l["address"], srv.addr.to_string(), "{r}");
        assert_eq!(l["port"], port);
    }
    let r = c.request(
        json!(2),
        "tools/call",
        json!({"name": "listeners", "arguments": {"port": 0}}),
    );
    assert_eq!(r["result"]["isError"], true, "{r}");
}
