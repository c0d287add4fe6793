//! The transport against a stand-in engine, over real sockets with raw HTTP/1.1.

use super::protocol::{Outbound, Protocol};
use super::*;
use bytes::Bytes;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Echoes requests; "initialize" succeeds; "slow" sends a notification first.
struct Stub;
struct StubSession;

impl Protocol for Stub {
    fn open(&self, _unrelated: Sink) -> Arc<dyn ProtocolSession> {
        Arc::new(StubSession)
    }
    fn supported_versions(&self) -> &[&'static str] {
        &["2025-11-25", "2026-07-28"]
    }
}

impl ProtocolSession for StubSession {
    fn handle(self: Arc<Self>, message: Bytes, related: Sink) -> BoxFuture<Option<Bytes>> {
        Box::pin(async move {
            let v: Value = serde_json::from_slice(&message).ok()?;
            let id = v.get("id")?.clone();
            let method = v["method"].as_str().unwrap_or("").to_string();
            if method == "slow" {
                related
                    .send(Outbound::Message(Bytes::from_static(
                        b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}",
                    )))
                    .await;
            }
            if method == "flood" {
                // 64 MiB of notifications: more than any socket buffers.
                let big = json!({"jsonrpc":"2.0","method":"notifications/message",
                    "params":{"data":"x".repeat(1 << 20)}})
                .to_string();
                for _ in 0..64 {
                    related
                        .send(Outbound::Message(Bytes::from(big.clone())))
                        .await;
                }
            }
            if method == "nope" {
                return Some(Bytes::from(
                    json!({"jsonrpc":"2.0","id":id,"error":{"code":-32601,"message":"no"}})
                        .to_string(),
                ));
            }
            Some(Bytes::from(
                json!({"jsonrpc":"2.0","id":id,"result":{"method":method}}).to_string(),
            ))
        })
    }
}

fn start(config: HttpConfig) -> SocketAddr {
    start_with_stats(config).0
}

fn start_with_stats(config: HttpConfig) -> (SocketAddr, Arc<HttpStats>) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let server = HttpServer::bind("127.0.0.1:0".parse().unwrap(), config, Arc::new(Stub))
                .await
                .unwrap();
            tx.send((server.local_addr().unwrap(), server.stats()))
                .unwrap();
            server.serve(std::future::pending()).await.unwrap();
        });
    });
    rx.recv().unwrap()
}

/// One request on a fresh connection; returns (status, lowercase head, body).
fn request(
    addr: SocketAddr,
    method: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut req = format!(
        "{method} /mcp HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let head = head.to_ascii_lowercase();
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, head, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

const JSON: (&str, &str) = ("Content-Type", "application/json");
const ACCEPT: (&str, &str) = ("Accept", "application/json, text/event-stream");

fn session_id(head: &str) -> String {
    head.lines()
        .find_map(|l| l.strip_prefix("mcp-session-id: "))
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn session_lifecycle() {
    let addr = start(HttpConfig::default());
    let (status, head, body) = request(
        addr,
        "POST",
        &[JSON, ACCEPT],
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""method":"initialize""#), "{body}");
    let sid = session_id(&head);
    assert_eq!(sid.len(), 32);
    let h = [JSON, ACCEPT, ("Mcp-Session-Id", sid.as_str())];
    let (status, _, body) = request(
        addr,
        "POST",
        &h,
        r#"{"jsonrpc":"2.0","id":"a","method":"tools/list"}"#,
    );
    assert_eq!(
        (status, body.as_str()),
        (
            200,
            r#"{"id":"a","jsonrpc":"2.0","result":{"method":"tools/list"}}"#
        )
    );
    let (status, _, _) = request(
        addr,
        "POST",
        &h,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    );
    assert_eq!(status, 202);
    // A related message first: the answer becomes an SSE stream, primed for resumption.
    let (status, head, body) = request(
        addr,
        "POST",
        &h,
        r#"{"jsonrpc":"2.0","id":7,"method":"slow"}"#,
    );
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    let events: Vec<&str> = body
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .collect();
    assert_eq!(events.len(), 3, "{body}");
    assert!(
        events[0].starts_with("id: 1-0\nretry: 1000\ndata: "),
        "{body}"
    );
    assert!(events[1].contains("notifications/progress"), "{body}");
    assert!(events[2].contains(r#""id":7"#), "{body}");
    // Resume after the progress event: only the reply is replayed.
    let (status, _, body) = request(
        addr,
        "GET",
        &[
            ("Accept", "text/event-stream"),
            ("Mcp-Session-Id", &sid),
            ("Last-Event-ID", "1-1"),
        ],
        "",
    );
    assert_eq!(status, 200);
    assert_eq!(body.matches("data: ").count(), 1, "{body}");
    assert!(body.contains(r#""id":7"#), "{body}");
    assert_eq!(request(addr, "DELETE", &h, "").0, 204);
    assert_eq!(
        request(
            addr,
            "POST",
            &h,
            r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#
        )
        .0,
        404
    );
    assert_eq!(request(addr, "DELETE", &h, "").0, 404);
}

#[test]
fn stateless_headers_and_statuses() {
    let addr = start(HttpConfig::default());
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;
    let v = ("MCP-Protocol-Version", "2026-07-28");
    assert_eq!(
        request(
            addr,
            "POST",
            &[JSON, ACCEPT, v, ("Mcp-Method", "tools/list")],
            body
        )
        .0,
        200
    );
    let (status, _, reply) = request(addr, "POST", &[JSON, ACCEPT, v], body);
    assert_eq!(status, 400);
    assert!(reply.contains("-32020"), "{reply}");
    let (status, _, reply) = request(
        addr,
        "POST",
        &[JSON, ACCEPT, v, ("Mcp-Method", "prompts/list")],
        body,
    );
    assert_eq!((status, reply.contains("-32020")), (400, true));
    let (status, _, reply) = request(
        addr,
        "POST",
        &[JSON, ACCEPT, ("Mcp-Method", "tools/list")],
        body,
    );
    assert_eq!((status, reply.contains("-32020")), (400, true), "{reply}");
    let (status, _, reply) = request(
        addr,
        "POST",
        &[JSON, ACCEPT, ("MCP-Protocol-Version", "1999-01-01")],
        body,
    );
    assert_eq!((status, reply.contains("-32020")), (400, true), "{reply}");
    let nope = body.replace("tools/list", "nope");
    assert_eq!(
        request(
            addr,
            "POST",
            &[JSON, ACCEPT, v, ("Mcp-Method", "nope")],
            &nope
        )
        .0,
        404
    );
    let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;
    let m = ("Mcp-Method", "tools/call");
    assert_eq!(
        request(
            addr,
            "POST",
            &[JSON, ACCEPT, v, m, ("Mcp-Name", "  echo ")],
            call
        )
        .0,
        200
    );
    assert_eq!(
        request(
            addr,
            "POST",
            &[JSON, ACCEPT, v, m, ("Mcp-Name", "other")],
            call
        )
        .0,
        400
    );
    assert_eq!(request(addr, "POST", &[JSON, ACCEPT, v, m], call).0, 400);
    // No session: nothing to GET.
    assert_eq!(
        request(addr, "GET", &[("Accept", "text/event-stream")], "").0,
        405
    );
}

#[test]
fn refusals() {
    let addr = start(HttpConfig {
        max_body_bytes: 64,
        max_sessions: 1,
        token: Some("s3cret".into()),
        ..HttpConfig::default()
    });
    let auth = ("Authorization", "Bearer s3cret");
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize"}"#;
    let (status, head, _) = request(addr, "POST", &[JSON, ACCEPT], init);
    assert_eq!(
        (status, head.contains("www-authenticate: bearer")),
        (401, true)
    );
    assert_eq!(
        request(
            addr,
            "POST",
            &[JSON, ACCEPT, auth, ("Host", "evil.example")],
            init
        )
        .0,
        403
    );
    assert_eq!(
        request(
            addr,
            "POST",
            &[JSON, ACCEPT, auth, ("Origin", "http://evil.example")],
            init
        )
        .0,
        403
    );
    assert_eq!(request(addr, "POST", &[JSON, ACCEPT, auth], init).0, 200);
    // The one session exists: the next initialize is refused with a JSON-RPC body and Retry-After.
    let (status, head, body) = request(addr, "POST", &[JSON, ACCEPT, auth], init);
    assert_eq!(status, 503);
    assert!(head.contains("retry-after: 1"), "{head}");
    assert!(body.contains(r#""code":-32000"#), "{body}");
    // Declared oversize: refused before the body is read.
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"x","params":"{}"}}"#,
        "a".repeat(100)
    );
    assert_eq!(request(addr, "POST", &[JSON, ACCEPT, auth], &big).0, 413);
    assert_eq!(
        request(addr, "POST", &[("Content-Type", "text/plain"), auth], init).0,
        415
    );
    assert_eq!(request(addr, "PUT", &[auth], "").0, 405);
}

#[test]
fn connection_limit() {
    let addr = start(HttpConfig {
        max_connections: 1,
        ..HttpConfig::default()
    });
    let held = std::net::TcpStream::connect(addr).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let (status, head, body) = request(
        addr,
        "POST",
        &[JSON, ACCEPT],
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize"}"#,
    );
    assert_eq!(status, 503, "{head}");
    assert!(head.contains("retry-after"), "{head}");
    assert!(body.contains("--max-connections"), "{body}");
    drop(held);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        request(
            addr,
            "POST",
            &[JSON, ACCEPT],
            r#"{"jsonrpc":"2.0","id":1,"method":"initialize"}"#
        )
        .0,
        200
    );
}

#[test]
fn a_client_that_stops_reading_its_stream_is_cut_after_the_write_timeout() {
    let (addr, stats) = start_with_stats(HttpConfig {
        write_timeout: Duration::from_millis(300),
        ..HttpConfig::default()
    });
    let (status, head, _) = request(
        addr,
        "POST",
        &[JSON, ACCEPT],
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25"}}"#,
    );
    assert_eq!(status, 200);
    let sid = session_id(&head);
    // A small receive window, and then nothing read: the server's writes
    // stall once the socket buffers are full.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&addr.into()).unwrap();
    let mut s: std::net::TcpStream = sock.into();
    let body = r#"{"jsonrpc":"2.0","id":2,"method":"flood"}"#;
    let req = format!(
        "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nMcp-Session-Id: {sid}\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    // Bounded wait for the server to give up on the writes.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while stats
        .write_timeouts
        .load(std::sync::atomic::Ordering::Relaxed)
        == 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the stalled stream was never cut"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        stats
            .write_timeouts
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // The other clients are served as before.
    let (status, _, _) = request(
        addr,
        "POST",
        &[JSON, ACCEPT, ("Mcp-Session-Id", &sid)],
        r#"{"jsonrpc":"2.0","id":3,"method":"ping"}"#,
    );
    assert_eq!(status, 200);
    drop(s);
}
