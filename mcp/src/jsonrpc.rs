//! JSON-RPC 2.0 framing: classify one inbound message, and write responses,
//! errors and notifications as single lines. Ids are kept as the raw JSON
//! text the peer sent, so they are echoed exactly (string or number, `1.0`
//! stays `1.0`).

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

pub const PARSE_ERROR: i32 = -32700;
pub const INVALID_REQUEST: i32 = -32600;
pub const METHOD_NOT_FOUND: i32 = -32601;
pub const INVALID_PARAMS: i32 = -32602;
pub const INTERNAL_ERROR: i32 = -32603;
/// The generic server error (Streamable HTTP: forbidden, no session).
pub const SERVER_ERROR: i32 = -32000;
/// Server-defined: a limit was reached (connections, message size, idle,
/// in-flight). `data.limit` names it.
pub const LIMIT_REACHED: i32 = SERVER_ERROR;
/// Streamable HTTP: the `Mcp-Session-Id` names no live session.
pub const SESSION_NOT_FOUND: i32 = -32001;
/// MCP 2026-07-28: a transport header disagrees with the body.
pub const HEADER_MISMATCH: i32 = -32020;
/// Server-defined: the shared token (`--token-file`) is missing or wrong.
pub const UNAUTHORIZED: i32 = -32004;
/// MCP (2025-11-25): resource not found, initialize era.
pub const RESOURCE_NOT_FOUND: i32 = -32002;
/// MCP 2026-07-28: the request needs a client capability it did not declare.
pub const MISSING_CLIENT_CAPABILITY: i32 = -32021;
/// MCP 2026-07-28: the `_meta` protocol version is not one we serve.
pub const UNSUPPORTED_PROTOCOL_VERSION: i32 = -32022;

/// One inbound message, borrowed from the line it came from.
#[derive(Debug, Default, Deserialize)]
pub struct Inbound<'a> {
    #[serde(default, borrow)]
    pub jsonrpc: Option<&'a RawValue>,
    /// `Some("null")` for an explicit null, `None` when absent.
    #[serde(default, borrow, deserialize_with = "present")]
    pub id: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub method: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "present")]
    pub params: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    pub result: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    pub error: Option<&'a RawValue>,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// What an inbound message is, after validation.
#[derive(Debug)]
pub enum Kind<'a> {
    Request {
        id: &'a RawValue,
        method: std::borrow::Cow<'a, str>,
        params: Option<&'a RawValue>,
    },
    Notification {
        method: std::borrow::Cow<'a, str>,
        params: Option<&'a RawValue>,
    },
    /// A reply to a request this server sent (server-to-client request).
    Response {
        id: &'a RawValue,
        result: Result<&'a RawValue, &'a RawValue>,
    },
}

/// Why a message could not be classified; `id` is what to answer with
/// (`None`: answer with `null`).
#[derive(Debug)]
pub struct Invalid<'a> {
    pub id: Option<&'a RawValue>,
    pub code: i32,
    pub message: &'static str,
}

/// Parses and classifies one message (one line, without the newline).
pub fn classify(line: &[u8]) -> Result<Kind<'_>, Invalid<'_>> {
    let bad = |code, message| Invalid {
        id: None,
        code,
        message,
    };
    let text = std::str::from_utf8(line).map_err(|_| bad(PARSE_ERROR, "invalid UTF-8"))?;
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        // Batches were removed from MCP in 2025-06-18; we never supported them.
        return Err(bad(INVALID_REQUEST, "JSON-RPC batches are not supported"));
    }
    if !trimmed.starts_with('{') {
        return Err(match serde_json::from_str::<serde::de::IgnoredAny>(text) {
            Ok(_) => bad(INVALID_REQUEST, "a JSON-RPC message must be an object"),
            Err(_) => bad(PARSE_ERROR, "parse error: not valid JSON"),
        });
    }
    let msg: Inbound = match serde_json::from_str(text) {
        Ok(m) => m,
        Err(e) if e.is_data() => return Err(bad(INVALID_REQUEST, "invalid JSON-RPC message")),
        Err(_) => return Err(bad(PARSE_ERROR, "parse error: not valid JSON")),
    };
    let id = msg.id.filter(|id| is_valid_id(id));
    if msg.jsonrpc.map(RawValue::get) != Some("\"2.0\"") {
        return Err(Invalid {
            id,
            code: INVALID_REQUEST,
            message: "jsonrpc must be \"2.0\"",
        });
    }
    if msg.id.is_some() && id.is_none() {
        return Err(bad(INVALID_REQUEST, "id must be a string or a number"));
    }
    match (msg.method, id) {
        (Some(method), Some(id)) => {
            if msg.params.is_some_and(|p| !is_object(p)) {
                return Err(Invalid {
                    id: Some(id),
                    code: INVALID_REQUEST,
                    message: "params must be an object",
                });
            }
            Ok(Kind::Request {
                id,
                method,
                params: msg.params,
            })
        }
        (Some(method), None) => Ok(Kind::Notification {
            method,
            params: msg.params,
        }),
        (None, Some(id)) => match (msg.result, msg.error) {
            (Some(r), None) => Ok(Kind::Response { id, result: Ok(r) }),
            (None, Some(e)) => Ok(Kind::Response { id, result: Err(e) }),
            _ => Err(Invalid {
                id: Some(id),
                code: INVALID_REQUEST,
                message: "a message needs a method, or exactly one of result and error",
            }),
        },
        (None, None) => Err(bad(INVALID_REQUEST, "a message needs a method or an id")),
    }
}

fn is_valid_id(id: &RawValue) -> bool {
    let s = id.get().as_bytes();
    matches!(s.first(), Some(b'"' | b'-' | b'0'..=b'9'))
}

fn is_object(v: &RawValue) -> bool {
    v.get().starts_with('{')
}

/// Appends `{"jsonrpc":"2.0","id":<id>,"result":<result>}\n`.
pub fn write_result<T: Serialize + ?Sized>(out: &mut Vec<u8>, id: &RawValue, result: &T) {
    out.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"id\":");
    out.extend_from_slice(id.get().as_bytes());
    out.extend_from_slice(b",\"result\":");
    // Serialising a serde_json::Value or a derived struct into a Vec cannot fail.
    serde_json::to_writer(&mut *out, result).expect("serialise result");
    out.extend_from_slice(b"}\n");
}

/// Appends an error response; `id: None` writes `"id":null`.
pub fn write_error(
    out: &mut Vec<u8>,
    id: Option<&RawValue>,
    code: i32,
    message: &str,
    data: Option<&serde_json::Value>,
) {
    out.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"id\":");
    out.extend_from_slice(id.map_or("null", RawValue::get).as_bytes());
    out.extend_from_slice(b",\"error\":{\"code\":");
    out.extend_from_slice(code.to_string().as_bytes());
    out.extend_from_slice(b",\"message\":");
    serde_json::to_writer(&mut *out, message).expect("serialise message");
    if let Some(d) = data {
        out.extend_from_slice(b",\"data\":");
        serde_json::to_writer(&mut *out, d).expect("serialise data");
    }
    out.extend_from_slice(b"}}\n");
}

/// Appends a notification line.
pub fn write_notification<T: Serialize + ?Sized>(out: &mut Vec<u8>, method: &str, params: &T) {
    out.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"method\":");
    serde_json::to_writer(&mut *out, method).expect("serialise method");
    out.extend_from_slice(b",\"params\":");
    serde_json::to_writer(&mut *out, params).expect("serialise params");
    out.extend_from_slice(b"}\n");
}

/// Appends a server-to-client request line with a numeric id.
pub fn write_request<T: Serialize + ?Sized>(out: &mut Vec<u8>, id: u64, method: &str, params: &T) {
    out.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"id\":");
    out.extend_from_slice(id.to_string().as_bytes());
    out.extend_from_slice(b",\"method\":");
    serde_json::to_writer(&mut *out, method).expect("serialise method");
    out.extend_from_slice(b",\"params\":");
    serde_json::to_writer(&mut *out, params).expect("serialise params");
    out.extend_from_slice(b"}\n");
}

/// The one line a refused connection receives before it is closed.
pub fn refusal_line(limit: &str, max: u64, message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(160);
    write_error(
        &mut out,
        None,
        LIMIT_REACHED,
        message,
        Some(&serde_json::json!({ "limit": limit, "max": max })),
    );
    out
}

/// A JSON-RPC error a handler wants on the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    pub code: i32,
    pub message: String,
    pub data: Option<Value>,
}

impl RpcError {
    pub fn new(code: i32, message: impl Into<String>) -> RpcError {
        RpcError {
            code,
            message: message.into(),
            data: None,
        }
    }
    pub fn invalid_params(message: impl Into<String>) -> RpcError {
        RpcError::new(INVALID_PARAMS, message)
    }
    pub fn with_data(mut self, data: Value) -> RpcError {
        self.data = Some(data);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(s: &str) -> Result<Kind<'_>, Invalid<'_>> {
        classify(s.as_bytes())
    }

    #[test]
    fn requests_notifications_responses() {
        match kind(r#"{"jsonrpc":"2.0","id":"a-1","method":"ping"}"#).unwrap() {
            Kind::Request { id, method, params } => {
                assert_eq!(id.get(), "\"a-1\"");
                assert_eq!(method, "ping");
                assert!(params.is_none());
            }
            k => panic!("{k:?}"),
        }
        assert!(matches!(
            kind(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap(),
            Kind::Notification { .. }
        ));
        match kind(r#"{"jsonrpc":"2.0","id":7,"result":{}}"#).unwrap() {
            Kind::Response { id, result } => {
                assert_eq!(id.get(), "7");
                assert!(result.is_ok());
            }
            k => panic!("{k:?}"),
        }
    }

    #[test]
    fn ids_are_kept_verbatim() {
        for raw in ["1.0", "-3", "123456789012345678901234567890", "\"x\\\"y\""] {
            let line = format!(r#"{{"jsonrpc":"2.0","id":{raw},"method":"ping"}}"#);
            let Kind::Request { id, .. } = classify(line.as_bytes()).unwrap() else {
                panic!()
            };
            let mut out = Vec::new();
            write_result(&mut out, id, &serde_json::json!({}));
            let text = String::from_utf8(out).unwrap();
            assert!(text.contains(&format!("\"id\":{raw},")), "{text}");
        }
    }

    #[test]
    fn invalid_messages_have_the_right_codes() {
        assert_eq!(kind("{nope").unwrap_err().code, PARSE_ERROR);
        assert_eq!(classify(b"{\"a\":\"\xff\"}").unwrap_err().code, PARSE_ERROR);
        assert_eq!(kind("42").unwrap_err().code, INVALID_REQUEST);
        assert_eq!(kind("[]").unwrap_err().code, INVALID_REQUEST);
        assert_eq!(
            kind(r#"{"id":1,"method":"ping"}"#).unwrap_err().code,
            INVALID_REQUEST
        );
        // The id is kept for the error when it is valid.
        let e = kind(r#"{"jsonrpc":"1.0","id":5,"method":"ping"}"#).unwrap_err();
        assert_eq!(e.id.map(RawValue::get), Some("5"));
        let e = kind(r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#).unwrap_err();
        assert_eq!((e.code, e.id.is_none()), (INVALID_REQUEST, true));
        let e = kind(r#"{"jsonrpc":"2.0","id":true,"method":"ping"}"#).unwrap_err();
        assert_eq!(e.code, INVALID_REQUEST);
        let e = kind(r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":[1]}"#).unwrap_err();
        assert_eq!(e.code, INVALID_REQUEST);
    }

    #[test]
    fn error_lines_are_one_line_json() {
        let mut out = Vec::new();
        write_error(&mut out, None, PARSE_ERROR, "bad \"x\"\n", None);
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["id"], serde_json::Value::Null);
        assert_eq!(v["error"]["code"], -32700);
    }
}
