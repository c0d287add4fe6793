//! What a request says before the engine sees it: its body (bounded), the
//! message peeked from it, and the 2026-07-28 transport headers checked
//! against it.

use super::reply::{error_response, VERSION_HEADER};
use super::shared::Shared;
use crate::jsonrpc;
use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use std::borrow::Cow;
use std::sync::atomic::Ordering;

pub(super) fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// Reads the body within the size and time limits.
pub(super) async fn read_body(shared: &Shared, req: Request) -> Result<Bytes, Response> {
    let max = shared.config.max_body_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = || {
        shared
            .stats
            .refused_oversize
            .fetch_add(1, Ordering::Relaxed);
        shared.count_refused("max-message-bytes");
        let mut r = error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            Value::Null,
            jsonrpc::INVALID_REQUEST,
            &format!("message larger than {max} bytes (--max-message-bytes)"),
        );
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        r
    };
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let limited = http_body_util::Limited::new(req.into_body(), max);
    match tokio::time::timeout(shared.config.read_timeout, limited.collect()).await {
        Ok(Ok(collected)) => {
            let bytes = collected.to_bytes();
            shared
                .stats
                .bytes_in
                .fetch_add(bytes.len() as u64, Ordering::Relaxed);
            if let Some(tm) = &shared.metrics {
                tm.received.inc_by(bytes.len() as u64);
            }
            Ok(bytes)
        }
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(_)) => Err(error_response(
            StatusCode::BAD_REQUEST,
            Value::Null,
            jsonrpc::INVALID_REQUEST,
            "request body could not be read",
        )),
        Err(_) => {
            shared.stats.timeouts.fetch_add(1, Ordering::Relaxed);
            shared.count_refused("timeout");
            let mut r = error_response(
                StatusCode::REQUEST_TIMEOUT,
                Value::Null,
                jsonrpc::INVALID_REQUEST,
                "request body not received in time",
            );
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            Err(r)
        }
    }
}

/// The fields of an inbound message the transport routes on, borrowed from
/// the body (the engine parses the message itself).
#[derive(Deserialize)]
pub(super) struct Peek<'a> {
    #[serde(borrow)]
    pub(super) id: Option<&'a RawValue>,
    #[serde(borrow)]
    pub(super) method: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(super) params: Option<&'a RawValue>,
}

#[derive(Deserialize, Default)]
pub(super) struct PeekParams<'a> {
    #[serde(borrow)]
    pub(super) name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(super) uri: Option<Cow<'a, str>>,
    #[serde(rename = "taskId", borrow)]
    pub(super) task_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub(super) arguments: Option<&'a RawValue>,
    #[serde(rename = "_meta", borrow)]
    pub(super) meta: Option<PeekMeta<'a>>,
}

#[derive(Deserialize, Default)]
pub(super) struct PeekMeta<'a> {
    #[serde(rename = "io.modelcontextprotocol/protocolVersion", borrow)]
    pub(super) version: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
pub(super) struct PeekReply {
    pub(super) error: Option<PeekError>,
    pub(super) result: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
pub(super) struct PeekError {
    pub(super) code: i32,
}

pub(super) fn raw_id(id: Option<&RawValue>) -> Value {
    id.and_then(|r| serde_json::from_str(r.get()).ok())
        .unwrap_or(Value::Null)
}

/// HTTP status for a stateless-era error reply (2026-07-28 transport rules).
pub(super) fn stateless_status(reply: &[u8]) -> StatusCode {
    let code = serde_json::from_slice::<PeekReply>(reply)
        .ok()
        .and_then(|r| r.error)
        .map(|e| e.code);
    match code {
        None => StatusCode::OK,
        Some(-32601) => StatusCode::NOT_FOUND,
        Some(-32700 | -32600 | -32602 | -32020 | -32021 | -32022) => StatusCode::BAD_REQUEST,
        Some(_) => StatusCode::OK,
    }
}

pub(super) fn reply_succeeded(reply: &[u8]) -> bool {
    serde_json::from_slice::<PeekReply>(reply).is_ok_and(|r| r.result.is_some())
}

/// SEP-2243 custom headers: every argument a tool's schema marks with
/// `x-mcp-header` travels again in `Mcp-Param-{header}` (verbatim, or
/// `=?base64?...?=` for values a header cannot carry) and must equal the body.
pub(super) fn check_param_headers(
    headers: &HeaderMap,
    params: &PeekParams,
    mirrored: &[(String, String)],
) -> Result<(), String> {
    if mirrored.is_empty() {
        return Ok(());
    }
    let args: serde_json::Map<String, Value> = params
        .arguments
        .and_then(|a| serde_json::from_str(a.get()).ok())
        .unwrap_or_default();
    for (arg, name) in mirrored {
        let header = header_str(headers, &format!("mcp-param-{name}"));
        let body = match args.get(arg) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(Cow::Borrowed(s.as_str())),
            Some(v) => Some(Cow::Owned(v.to_string())),
        };
        match (header, body) {
            (None, None) => {}
            (None, Some(_)) => {
                return Err(format!(
                    "missing Mcp-Param-{name} header for argument {arg:?}"
                ))
            }
            (Some(_), None) => {
                return Err(format!(
                    "Mcp-Param-{name} header sent but argument {arg:?} is absent"
                ))
            }
            (Some(h), Some(b)) => {
                let decoded = decode_param(h)
                    .ok_or_else(|| format!("Mcp-Param-{name}: invalid Base64 value"))?;
                if decoded != b {
                    return Err(format!(
                        "Mcp-Param-{name} header differs from argument {arg:?}"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// A `Mcp-Param-*` value: `=?base64?...?=` decoded (strict, padded
/// standard alphabet, UTF-8), anything else literal.
pub(super) fn decode_param(v: &str) -> Option<Cow<'_, str>> {
    use base64::Engine as _;
    match v
        .strip_prefix("=?base64?")
        .and_then(|r| r.strip_suffix("?="))
    {
        Some(b64) => {
            let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
            String::from_utf8(bytes).ok().map(Cow::Owned)
        }
        None => Some(Cow::Borrowed(v)),
    }
}

/// 2026-07-28 transport checks of a stateless request (SEP-2243, SEP-2575):
/// the version header must be present and equal `_meta`'s, and `Mcp-Method` /
/// `Mcp-Name` must repeat the body.
pub(super) fn check_stateless_headers(
    headers: &HeaderMap,
    method: &str,
    params: &PeekParams,
) -> Result<(), (i32, String)> {
    let Some(header_version) = header_str(headers, VERSION_HEADER) else {
        return Err((
            jsonrpc::HEADER_MISMATCH,
            "missing MCP-Protocol-Version header".into(),
        ));
    };
    if let Some(v) = params.meta.as_ref().and_then(|m| m.version.as_deref()) {
        if v != header_version {
            return Err((
                jsonrpc::HEADER_MISMATCH,
                format!("MCP-Protocol-Version header {header_version:?} differs from _meta {v:?}"),
            ));
        }
    }
    match header_str(headers, "mcp-method") {
        Some(m) if m == method => {}
        Some(m) => {
            return Err((
                jsonrpc::HEADER_MISMATCH,
                format!("Mcp-Method header {m:?} differs from the body's method {method:?}"),
            ))
        }
        None => return Err((jsonrpc::HEADER_MISMATCH, "missing Mcp-Method header".into())),
    }
    let named = match method {
        "tools/call" | "prompts/get" => params.name.as_deref(),
        "resources/read" => params.uri.as_deref(),
        // SEP-2663: task methods route on the task id.
        "tasks/get" | "tasks/update" | "tasks/cancel" => params.task_id.as_deref(),
        _ => None,
    };
    if let Some(name) = named {
        match header_str(headers, "mcp-name") {
            Some(n) if n == name => {}
            Some(n) => {
                return Err((
                    jsonrpc::HEADER_MISMATCH,
                    format!("Mcp-Name header {n:?} differs from the body's {name:?}"),
                ))
            }
            None => return Err((jsonrpc::HEADER_MISMATCH, "missing Mcp-Name header".into())),
        }
    }
    Ok(())
}
