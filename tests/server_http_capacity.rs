//! `host_capacity` over Streamable HTTP counts the HTTP connections: they
//! hold descriptors of the same fd table as TCP sessions, so the model must
//! see them. Two keep-alive connections are open when the tool runs: it
//! must report exactly 2.

#[path = "util/conformance.rs"]
mod conformance;

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One POST on a keep-alive connection; the JSON body of the reply.
fn post(conn: &mut BufReader<TcpStream>, host: &str, method: &str, body: &Value) -> Value {
    // The 2026-07-28 transport mirrors the method and, for tools/call, the
    // tool name in headers.
    let name = body["params"]["name"]
        .as_str()
        .map_or(String::new(), |n| format!("mcp-name: {n}\r\n"));
    let body = body.to_string();
    let req = format!(
        "POST /mcp HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n\
         accept: application/json, text/event-stream\r\nmcp-protocol-version: 2026-07-28\r\n\
         mcp-method: {method}\r\n{name}content-length: {}\r\n\r\n{body}",
        body.len()
    );
    conn.get_mut().write_all(req.as_bytes()).unwrap();
    let mut status = String::new();
    conn.read_line(&mut status).unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let mut length = None;
    loop {
        let mut h = String::new();
        conn.read_line(&mut h).unwrap();
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            length = Some(v.trim().parse::<usize>().unwrap());
        }
    }
    let mut buf = vec![0; length.expect("a JSON reply with content-length")];
    conn.read_exact(&mut buf).unwrap();
    serde_json::from_slice(&buf).unwrap()
}

fn meta() -> Value {
    json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28",
           "io.modelcontextprotocol/clientCapabilities": {}})
}

#[test]
fn host_capacity_over_http_counts_http_connections() {
    let (_srv, url) = conformance::headroom_serve_http();
    let host = url
        .trim_start_matches("http://")
        .trim_end_matches("/mcp")
        .to_string();
    let connect = || {
        let s = TcpStream::connect(&host).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        BufReader::new(s)
    };
    // The first connection is answered once, so the server has surely
    // accepted it before the second asks.
    let mut first = connect();
    let r = post(
        &mut first,
        &host,
        "server/discover",
        &json!({"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {"_meta": meta()}}),
    );
    assert_eq!(r["result"]["supportedVersions"], json!(["2026-07-28"]));
    let mut second = connect();
    let r = post(
        &mut second,
        &host,
        "tools/call",
        &json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                "params": {"name": "host_capacity", "_meta": meta()}}),
    );
    let doc = &r["result"]["structuredContent"];
    assert_eq!(doc["server"]["connections"], 2, "{doc}");
    assert_eq!(doc["prediction"]["connections"], 2);
}
