//! Engine tests, per revision and per era: messages in, lines out, no I/O.

use super::*;
use crate::registry::{Registry, ToolOutput};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

const META: &str = r#""_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}"#;

fn registry() -> Registry {
    let mut r = Registry::default();
    for name in ["a", "b", "c"] {
        r.tool(
            json!({"name": name, "title": name, "description": "d", "inputSchema": {"type": "object"},
                   "outputSchema": {"type": "object"}, "annotations": {"readOnlyHint": true}}),
            move |args, _| {
                if args.contains_key("fail") {
                    return Ok(ToolOutput::error("it failed"));
                }
                Ok(ToolOutput::structured(json!({"tool": name})))
            },
        );
    }
    r.async_tool(
        json!({"name": "slow", "inputSchema": {"type": "object"}}),
        |_, ctx| async move {
            for i in 1..=2 {
                tokio::time::sleep(Duration::from_millis(10)).await;
                ctx.progress(i as f64, Some(2.0), None);
            }
            Ok(ToolOutput::text("done"))
        },
    );
    r.async_tool(
        json!({"name": "ask", "inputSchema": {"type": "object"}}),
        |_, ctx| async move {
            let answer = ctx
                .request("sampling/createMessage", json!({"messages": []}))
                .await?;
            Ok(ToolOutput::text(
                answer["content"]["text"]
                    .as_str()
                    .unwrap_or("?")
                    .to_string(),
            ))
        },
    )
    .requires = Some("sampling");
    r.resource(json!({"uri": "test://x", "name": "x"}), |uri| {
        Ok(vec![json!({"uri": uri, "text": "X"})])
    });
    r.prompt(json!({"name": "p", "arguments": [{"name": "arg"}]}), |_| {
        Ok(json!({"messages": [{"role": "user", "content": {"type": "text", "text": "hi"}}]}))
    })
    .complete = Some(Box::new(|arg, prefix| {
        if arg == "arg" {
            ["alpha", "beta", "alps"]
                .iter()
                .filter(|v| v.starts_with(prefix))
                .map(|v| v.to_string())
                .collect()
        } else {
            vec![]
        }
    }));
    r
}

fn engine_with(f: impl FnOnce(&mut EngineConfig)) -> Arc<Engine> {
    let mut cfg = EngineConfig {
        page_size: 2,
        max_in_flight: 2,
        ..Default::default()
    };
    f(&mut cfg);
    Engine::new(registry(), cfg, None)
}

fn session() -> Session {
    Session::new(engine_with(|_| {}), Transport::Tcp)
}

/// Sends one line; returns every output line parsed.
fn send(s: &mut Session, line: &str) -> Vec<Value> {
    let mut out = Vec::new();
    s.handle(line.as_bytes(), &mut out);
    parse(&out)
}

fn parse(out: &[u8]) -> Vec<Value> {
    out.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).expect("every output line is JSON"))
        .collect()
}

fn one(s: &mut Session, line: &str) -> Value {
    let v = send(s, line);
    assert_eq!(v.len(), 1, "{line} -> {v:?}");
    v.into_iter().next().unwrap()
}

fn init(s: &mut Session, version: &str) -> Value {
    one(
        s,
        &format!(
            r#"{{"jsonrpc":"2.0","id":0,"method":"initialize","params":{{"protocolVersion":"{version}","capabilities":{{"sampling":{{}}}},"clientInfo":{{"name":"t","version":"1"}}}}}}"#
        ),
    )
}

#[test]
fn initialize_echoes_each_supported_revision() {
    for v in LEGACY_VERSIONS {
        let mut s = session();
        let r = init(&mut s, v);
        assert_eq!(r["result"]["protocolVersion"], v);
        assert_eq!(r["id"], 0);
        assert_eq!(s.protocol_version(), Some(v));
        let caps = &r["result"]["capabilities"];
        assert_eq!(caps["tools"], json!({"listChanged": false}));
        assert_eq!(caps["resources"]["subscribe"], true);
        assert_eq!(caps.get("completions").is_some(), v != "2024-11-05", "{v}");
        assert_eq!(
            r["result"]["serverInfo"].get("title").is_some(),
            v >= "2025-06-18",
            "{v}"
        );
    }
}

#[test]
fn initialize_with_unknown_or_stateless_version_offers_latest() {
    for v in ["1999-01-01", "2026-07-28"] {
        let mut s = session();
        assert_eq!(init(&mut s, v)["result"]["protocolVersion"], LATEST_LEGACY);
    }
    let mut s = session();
    init(&mut s, "2025-11-25");
    let r = init(&mut s, "2025-11-25");
    assert_eq!(r["error"]["code"], -32600);
    let r = one(
        &mut s,
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#,
    );
    assert_eq!(r["error"]["code"], -32600);
    let mut s = session();
    let r = one(
        &mut s,
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#,
    );
    assert_eq!(r["error"]["code"], -32602);
}

#[test]
fn before_initialize_only_ping() {
    let mut s = session();
    let r = one(&mut s, r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#);
    assert_eq!(r["error"]["code"], -32602);
    assert!(r["error"]["message"]
        .as_str()
        .unwrap()
        .contains("initialize"));
    let r = one(&mut s, r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#);
    assert_eq!(r["result"], json!({}));
}

#[test]
fn notifications_never_get_a_reply() {
    let mut s = session();
    for n in [
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        r#"{"jsonrpc":"2.0","method":"tools/list"}"#,
        r#"{"jsonrpc":"2.0","method":"nope","params":{"x":1}}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":9}}"#,
    ] {
        assert!(send(&mut s, n).is_empty(), "{n}");
    }
}

#[test]
fn ids_echo_with_their_type() {
    let mut s = session();
    init(&mut s, "2025-11-25");
    assert_eq!(
        one(&mut s, r#"{"jsonrpc":"2.0","id":"abc","method":"ping"}"#)["id"],
        "abc"
    );
    assert_eq!(
        one(&mut s, r#"{"jsonrpc":"2.0","id":42,"method":"ping"}"#)["id"],
        42
    );
    let mut out = Vec::new();
    s.handle(br#"{"jsonrpc":"2.0","id":4.50,"method":"ping"}"#, &mut out);
    assert!(String::from_utf8(out).unwrap().contains("\"id\":4.50,"));
}

#[test]
fn standard_errors() {
    let mut s = session();
    init(&mut s, "2025-11-25");
    assert_eq!(one(&mut s, "{oops")["error"]["code"], -32700);
    assert_eq!(
        one(&mut s, r#"{"jsonrpc":"2.0","id":1}"#)["error"]["code"],
        -32600
    );
    assert_eq!(
        one(&mut s, r#"{"jsonrpc":"2.0","id":1,"method":"nope"}"#)["error"]["code"],
        -32601
    );
    let r = one(
        &mut s,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"zzz"}}"#,
    );
    assert_eq!(r["error"]["code"], -32602);
    assert!(r["error"]["message"].as_str().unwrap().contains("zzz"));
    // The session survives all of it.
    assert_eq!(
        one(&mut s, r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#)["result"],
        json!({})
    );
}

#[test]
fn tools_list_paginates_with_an_opaque_cursor() {
    let mut s = session();
    init(&mut s, "2025-11-25");
    let mut names = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let params = cursor
            .as_ref()
            .map_or("{}".to_string(), |c| format!(r#"{{"cursor":"{c}"}}"#));
        let r = one(
            &mut s,
            &format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{params}}}"#),
        );
        pages += 1;
        for t in r["result"]["tools"].as_array().unwrap() {
            names.push(t["name"].as_str().unwrap().to_string());
        }
        match r["result"]["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(names, ["a", "b", "c", "slow", "ask"]);
    assert_eq!(pages, 3);
    let r = one(
        &mut s,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"cursor":"bogus"}}"#,
    );
    assert_eq!(r["error"]["code"], -32602);
}

#[test]
fn tool_fields_follow_the_revision() {
    let fields = |v: &str| {
        let mut s = session();
        init(&mut s, v);
        let t = one(&mut s, r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)["result"]["tools"]
            [0]
        .clone();
        let c = one(
            &mut s,
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"a","arguments":{}}}"#,
        );
        (
            t.get("outputSchema").is_some(),
            t.get("annotations").is_some(),
            c["result"].get("structuredContent").is_some(),
        )
    };
    assert_eq!(fields("2025-11-25"), (true, true, true));
    assert_eq!(fields("2025-06-18"), (true, true, true));
    assert_eq!(fields("2025-03-26"), (false, true, false));
    assert_eq!(fields("2024-11-05"), (false, false, false));
}

#[test]
fn tool_errors_are_results_with_is_error() {
    let mut s = session();
    init(&mut s, "2025-11-25");
    let r = one(
        &mut s,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{"fail":1}}}"#,
    );
    assert_eq!(r["result"]["isError"], true);
    assert_eq!(r["result"]["content"][0]["text"], "it failed");
    let r = one(
        &mut s,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","arguments":{}}}"#,
    );
    assert_eq!(r["result"]["structuredContent"], json!({"tool": "a"}));
    assert!(r["result"].get("isError").is_none());
}

#[test]
fn resources_prompts_completion_logging() {
    let mut s = session();
    init(&mut s, "2025-11-25");
    let r = one(
        &mut s,
        r#"{"jsonrpc":"2.0","id":1,"method":"resources/list"}"#,
    );
    assert_eq!(r["result"]["resources"][0]["uri"], "test://x");
    let r = one(
        &mut s,
        r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"test://x"}}"#,
    );
    assert_eq!(r["result"]["contents"][0]["text"], "X");
    let r = one(
        &mut s,
        r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"test://nope"}}"#,
    );
    assert_eq!(r["error"]["code"], -32002);
    let r = one(
        &mut s,
        r#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"p"}}"#,
    );
    assert_eq!(r["result"]["messages"][0]["role"], "user");
    let r = one(
        &mut s,
        r#"{"jsonrpc":"2.0","id":1,"method":"prompts/get","params":{"name":"q"}}"#,
    );
    assert_eq!(r["error"]["code"], -32602);
    let r = one(
        &mut s,
        r#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/prompt","name":"p"},"argument":{"name":"arg","value":"al"}}}"#,
    );
    assert_eq!(
        r["result"]["completion"]["values"],
        json!(["alpha", "alps"])
    );
    assert_eq!(r["result"]["completion"]["total"], 2);
    let r = one(
        &mut s,
        r#"{"jsonrpc":"2.0","id":1,"method":"logging/setLevel","params":{"level":"warning"}}"#,
    );
    assert_eq!(r["result"], json!({}));
    let r = one(
        &mut s,
        r#"{"jsonrpc":"2.0","id":1,"method":"logging/setLevel","params":{"level":"loud"}}"#,
    );
    assert_eq!(r["error"]["code"], -32602);
}

#[test]
fn stateless_envelope_rules() {
    let mut s = session();
    // Missing capabilities key.
    let r = one(
        &mut s,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#,
    );
    assert_eq!(r["error"]["code"], -32602);
    // Unsupported version: -32022 with supported and requested.
    let r = one(
        &mut s,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2025-11-25","io.modelcontextprotocol/clientCapabilities":{}}}}"#,
    );
    assert_eq!(r["error"]["code"], -32022);
    assert_eq!(
        r["error"]["data"],
        json!({"supported": ["2026-07-28"], "requested": "2025-11-25"})
    );
    // _meta without the version key, before initialize: -32602.
    let r = one(
        &mut s,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"progressToken":1}}}"#,
    );
    assert_eq!(r["error"]["code"], -32602);
}

#[test]
fn stateless_results_carry_result_type_and_cache_hints() {
    let mut s = session();
    let r = one(
        &mut s,
        &format!(r#"{{"jsonrpc":"2.0","id":1,"method":"server/discover","params":{{{META}}}}}"#),
    );
    let d = &r["result"];
    assert_eq!(d["supportedVersions"], json!(["2026-07-28"]));
    assert_eq!(d["resultType"], "complete");
    assert_eq!(d["cacheScope"], "private");
    assert!(d["ttlMs"].is_u64());
    assert_eq!(d["serverInfo"]["name"], "headroom");
    assert_eq!(
        d["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
        "headroom"
    );
    assert!(d["capabilities"].get("logging").is_none());
    let r = one(
        &mut s,
        &format!(r#"{{"jsonrpc":"2.0","id":2,"method":"tools/list","params":{{{META}}}}}"#),
    );
    assert_eq!(r["result"]["resultType"], "complete");
    assert!(r["result"]["ttlMs"].is_u64());
    let r = one(
        &mut s,
        &format!(
            r#"{{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{{"name":"a",{META}}}}}"#
        ),
    );
    assert_eq!(r["result"]["resultType"], "complete");
    assert!(r["result"].get("ttlMs").is_none());
    assert_eq!(r["result"]["structuredContent"], json!({"tool": "a"}));
    // Not found is -32602 in this era.
    let r = one(
        &mut s,
        &format!(
            r#"{{"jsonrpc":"2.0","id":4,"method":"resources/read","params":{{"uri":"test://nope",{META}}}}}"#
        ),
    );
    assert_eq!(r["error"]["code"], -32602);
    // Initialize-era-only methods are not found.
    for m in ["logging/setLevel", "resources/subscribe"] {
        let r = one(
            &mut s,
            &format!(r#"{{"jsonrpc":"2.0","id":5,"method":"{m}","params":{{{META}}}}}"#),
        );
        assert_eq!(r["error"]["code"], -32601, "{m}");
    }
    // The session stayed unselected: an initialize still works.
    assert_eq!(s.protocol_version(), None);
    assert_eq!(
        init(&mut s, "2025-06-18")["result"]["protocolVersion"],
        "2025-06-18"
    );
}

#[test]
fn stateless_missing_client_capability_is_32021() {
    let mut s = session();
    let r = one(
        &mut s,
        &format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"ask",{META}}}}}"#
        ),
    );
    assert_eq!(r["error"]["code"], -32021);
    assert_eq!(
        r["error"]["data"]["requiredCapabilities"],
        json!({"sampling": {}})
    );
}

#[test]
fn token_is_required_in_both_eras() {
    let e = engine_with(|c| c.token = Some("s3cret".into()));
    let mut s = Session::new(e.clone(), Transport::Tcp);
    let mut out = Vec::new();
    let line = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{}}}"#;
    assert_eq!(s.handle(line.as_bytes(), &mut out), Flow::Close);
    let r = &parse(&out)[0];
    assert_eq!(r["error"]["code"], -32004);
    assert!(!String::from_utf8_lossy(&out).contains("s3cret"));

    let mut s = Session::new(e.clone(), Transport::Tcp);
    let line = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"_meta":{"headroom/token":"s3cret"}}}"#;
    assert_eq!(one(&mut s, line)["result"]["protocolVersion"], "2025-11-25");

    let mut s = Session::new(e.clone(), Transport::Tcp);
    let mut out = Vec::new();
    let line = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{{{META}}}}}"#);
    assert_eq!(s.handle(line.as_bytes(), &mut out), Flow::Close);
    assert_eq!(parse(&out)[0]["error"]["code"], -32004);
    let line = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{},"headroom/token":"s3cret"}}}"#;
    let mut s = Session::new(e, Transport::Tcp);
    assert_eq!(one(&mut s, line)["result"]["resultType"], "complete");
}

/// Drives the session's events until `n` more lines were produced.
async fn pump(s: &mut Session, out: &mut Vec<u8>, n: usize) {
    let want = parse(out).len() + n;
    while parse(out).len() < want {
        let ev = tokio::time::timeout(Duration::from_secs(5), s.next_event())
            .await
            .expect("event");
        s.on_event(ev, out);
    }
}

#[tokio::test]
async fn progress_comes_before_the_response_and_never_after() {
    let mut s = session();
    init(&mut s, "2025-11-25");
    let mut out = Vec::new();
    s.handle(
        br#"{"jsonrpc":"2.0","id":"s1","method":"tools/call","params":{"name":"slow","_meta":{"progressToken":"tok"}}}"#,
        &mut out,
    );
    assert!(out.is_empty());
    assert_eq!(s.in_flight(), 1);
    pump(&mut s, &mut out, 3).await;
    let v = parse(&out);
    assert_eq!(v[0]["method"], "notifications/progress");
    assert_eq!(v[0]["params"]["progressToken"], "tok");
    assert_eq!(v[1]["params"]["progress"], 2.0);
    assert_eq!(v[2]["id"], "s1");
    assert_eq!(v[2]["result"]["content"][0]["text"], "done");
    assert_eq!(s.in_flight(), 0);
    assert!(!s.has_pending());
}

#[tokio::test]
async fn cancelled_requests_get_no_reply_and_duplicates_are_refused() {
    let mut s = session();
    init(&mut s, "2025-11-25");
    let mut out = Vec::new();
    s.handle(
        br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"slow"}}"#,
        &mut out,
    );
    let r = one(
        &mut s,
        r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"slow"}}"#,
    );
    assert_eq!(r["error"]["code"], -32600);
    s.handle(
        br#"{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"slow"}}"#,
        &mut out,
    );
    // max_in_flight is 2 in these tests.
    assert!(!s.can_accept());
    let r = one(
        &mut s,
        r#"{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"slow"}}"#,
    );
    assert_eq!(
        (
            r["error"]["code"].as_i64(),
            r["error"]["data"]["limit"].as_str()
        ),
        (Some(-32000), Some("max-in-flight"))
    );
    assert!(send(
        &mut s,
        r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":7}}"#
    )
    .is_empty());
    assert_eq!(s.in_flight(), 1);
    pump(&mut s, &mut out, 1).await;
    let v = parse(&out);
    assert_eq!(v.len(), 1);
    assert_eq!(v[0]["id"], 8);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!s.has_pending());
}

#[tokio::test]
async fn server_to_client_request_round_trip() {
    let mut s = session();
    init(&mut s, "2025-11-25");
    let mut out = Vec::new();
    s.handle(
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"ask"}}"#,
        &mut out,
    );
    pump(&mut s, &mut out, 1).await;
    let req = parse(&out)[0].clone();
    assert_eq!(req["method"], "sampling/createMessage");
    let rid = req["id"].as_u64().unwrap();
    out.clear();
    let reply = format!(
        r#"{{"jsonrpc":"2.0","id":{rid},"result":{{"role":"assistant","content":{{"type":"text","text":"42"}}}}}}"#
    );
    assert!(send(&mut s, &reply).is_empty());
    pump(&mut s, &mut out, 1).await;
    let v = parse(&out);
    assert_eq!(v[0]["id"], 1);
    assert_eq!(v[0]["result"]["content"][0]["text"], "42");
}

#[tokio::test]
async fn subscribers_hear_about_updates() {
    let e = engine_with(|_| {});
    let mut s = Session::new(e.clone(), Transport::Tcp);
    init(&mut s, "2025-11-25");
    let r = one(
        &mut s,
        r#"{"jsonrpc":"2.0","id":1,"method":"resources/subscribe","params":{"uri":"test://x"}}"#,
    );
    assert_eq!(r["result"], json!({}));
    assert!(s.has_pending());
    e.resource_updated("test://other");
    e.resource_updated("test://x");
    let mut out = Vec::new();
    pump(&mut s, &mut out, 1).await;
    let v = parse(&out);
    assert_eq!(v.len(), 1);
    assert_eq!(v[0]["method"], "notifications/resources/updated");
    assert_eq!(v[0]["params"]["uri"], "test://x");
    one(
        &mut s,
        r#"{"jsonrpc":"2.0","id":2,"method":"resources/unsubscribe","params":{"uri":"test://x"}}"#,
    );
    assert!(!s.has_pending());
}
