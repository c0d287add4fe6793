//! POST: one JSON-RPC message, routed to its session or served statelessly,
//! and answered with JSON or an SSE stream.

use super::guard;
use super::protocol::{Outbound, ProtocolSession, Sink};
use super::reply::{
    bytes_response, error_response, json_response, rpc_error, sse_response, unavailable, MapOk,
    SESSION_HEADER, VERSION_HEADER,
};
use super::request::{
    check_param_headers, check_stateless_headers, header_str, raw_id, read_body, reply_succeeded,
    stateless_status, Peek, PeekParams,
};
use super::session::{self, Session};
use super::shared::Shared;
use crate::{jsonrpc, version};
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

pub(super) async fn post(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let headers = req.headers().clone();
    let content_type = header_str(&headers, header::CONTENT_TYPE.as_str()).unwrap_or("");
    if !content_type
        .to_ascii_lowercase()
        .starts_with("application/json")
    {
        return error_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Value::Null,
            jsonrpc::INVALID_REQUEST,
            "Content-Type must be application/json",
        );
    }
    let body = match read_body(&shared, req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return error_response(
            StatusCode::BAD_REQUEST,
            Value::Null,
            jsonrpc::INVALID_REQUEST,
            "expected one JSON-RPC message (batches are not supported)",
        );
    }
    let peek: Peek = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) if e.is_data() => {
            return error_response(
                StatusCode::BAD_REQUEST,
                Value::Null,
                jsonrpc::INVALID_REQUEST,
                &format!("invalid request: {e}"),
            )
        }
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                Value::Null,
                jsonrpc::PARSE_ERROR,
                &format!("parse error: {e}"),
            )
        }
    };
    let is_request = peek.method.is_some() && peek.id.is_some();
    let rid = peek.id;

    let session = match header_str(&headers, SESSION_HEADER) {
        Some(sid) => match shared.sessions.get(sid) {
            Some(s) => Some(s),
            None => {
                return error_response(
                    StatusCode::NOT_FOUND,
                    raw_id(rid),
                    jsonrpc::SESSION_NOT_FOUND,
                    "session not found (expired or deleted): initialize again",
                )
            }
        },
        None => None,
    };
    let params: PeekParams = peek
        .params
        .and_then(|p| serde_json::from_str(p.get()).ok())
        .unwrap_or_default();
    let meta_version = params.meta.as_ref().and_then(|m| m.version.as_deref());
    let header_version = header_str(&headers, VERSION_HEADER);
    // A stateless-era request: `_meta` names a revision, or the header names one
    // past the initialize era. The engine answers version errors for those itself.
    let stateless = session.is_none()
        && (meta_version.is_some() || header_version.is_some_and(version::stateless_era));
    if let (Some(v), false) = (header_version, stateless) {
        let supported = shared.protocol.supported_versions();
        if !supported.contains(&v) {
            let body = json!({"jsonrpc": "2.0", "id": raw_id(rid), "error": {
                "code": jsonrpc::UNSUPPORTED_PROTOCOL_VERSION,
                "message": format!("unsupported MCP-Protocol-Version {v:?}"),
                "data": {"supported": supported, "requested": v}}});
            return json_response(StatusCode::BAD_REQUEST, &body);
        }
    }

    if let Some(session) = session {
        session.touch();
        let protocol = session.protocol.clone();
        if !is_request {
            protocol.handle(body.clone(), Sink::channel(1).0).await;
            return StatusCode::ACCEPTED.into_response();
        }
        return answer(
            &shared,
            Some(session),
            protocol,
            body.clone(),
            raw_id(rid),
            &headers,
            None,
            false,
        )
        .await;
    }

    if peek.method.as_deref() == Some("initialize") && !stateless {
        if shared.sessions.len() >= shared.sessions.max {
            shared
                .stats
                .refused_sessions
                .fetch_add(1, Ordering::Relaxed);
            shared.count_refused("max-sessions");
            return unavailable(
                shared.config.retry_after_secs,
                "session limit reached (--max-sessions)",
            );
        }
        let (unrelated, rx) = Sink::channel(session::LIVE_BUFFER);
        let protocol = shared.protocol.open(unrelated);
        let new = Session::new(session::new_session_id(), protocol.clone());
        session::spawn_unrelated_pump(&new, rx);
        return answer(
            &shared,
            None,
            protocol,
            body.clone(),
            raw_id(rid),
            &headers,
            Some(new),
            false,
        )
        .await;
    }

    // No session and not initialize: the stateless era, one protocol state per request.
    if !stateless {
        // An initialize-era client that lost its session, or never initialized.
        if !is_request {
            return StatusCode::ACCEPTED.into_response();
        }
        return error_response(
            StatusCode::BAD_REQUEST,
            raw_id(rid),
            jsonrpc::SERVER_ERROR,
            "missing Mcp-Session-Id: initialize first",
        );
    }
    if is_request {
        let method = peek.method.as_deref().unwrap_or("");
        if let Err((code, message)) = check_stateless_headers(&headers, method, &params) {
            return error_response(StatusCode::BAD_REQUEST, raw_id(rid), code, &message);
        }
        if let (Some(tool), "tools/call") = (params.name.as_deref(), method) {
            let mirrored = shared.protocol.param_headers(tool);
            if let Err(message) = check_param_headers(&headers, &params, mirrored) {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    raw_id(rid),
                    jsonrpc::HEADER_MISMATCH,
                    &message,
                );
            }
        }
    }
    let rid = raw_id(rid);
    let protocol = shared.protocol.open(Sink::channel(1).0);
    if !is_request {
        protocol.handle(body.clone(), Sink::channel(1).0).await;
        return StatusCode::ACCEPTED.into_response();
    }
    answer(
        &shared,
        None,
        protocol,
        body.clone(),
        rid,
        &headers,
        None,
        true,
    )
    .await
}

/// Adds a session whose initialize succeeded; past `--max-sessions`, the
/// 503 to answer with instead (and the refusal counted).
fn register_session(shared: &Shared, new: &Arc<Session>) -> Option<Response> {
    if shared.sessions.insert(new.clone()).is_err() {
        shared
            .stats
            .refused_sessions
            .fetch_add(1, Ordering::Relaxed);
        shared.count_refused("max-sessions");
        return Some(unavailable(
            shared.config.retry_after_secs,
            "session limit reached (--max-sessions)",
        ));
    }
    shared.stats.sessions_opened.fetch_add(1, Ordering::Relaxed);
    None
}

/// Runs one request and answers it: JSON when the reply comes before anything
/// else, an SSE stream from the first related message on.
#[allow(clippy::too_many_arguments)]
async fn answer(
    shared: &Arc<Shared>,
    session: Option<Arc<Session>>,
    protocol: Arc<dyn ProtocolSession>,
    msg: Bytes,
    rid: Value,
    headers: &HeaderMap,
    new_session: Option<Arc<Session>>,
    stateless: bool,
) -> Response {
    let (related, mut rx) = session::request_sink();
    let mut work = protocol.handle(msg, related);
    let wants_json = guard::accepts(headers, "application/json");
    let wants_sse = guard::accepts(headers, "text/event-stream");
    let internal = |rid: &Value| {
        Bytes::from(
            serde_json::to_vec(&rpc_error(
                rid.clone(),
                jsonrpc::INTERNAL_ERROR,
                "the request's handler ended without a reply",
            ))
            .unwrap_or_default(),
        )
    };

    // Wait for either the reply or the first related message.
    let first = tokio::select! {
        biased;
        reply = &mut work => match rx.try_recv() {
            // Messages came with the reply: they go first, so this is a stream.
            Ok(out) => Err((Some(out), Some(reply))),
            Err(_) => Ok(reply),
        },
        out = rx.recv() => match out {
            Some(out) => Err((Some(out), None)),
            // The handler let go of the related channel without a word
            // (it can before its reply is handed over): nothing but the
            // reply is coming, so it is still a JSON answer, not a stream.
            None => Ok((&mut work).await),
        },
    };
    match first {
        Ok(reply) => {
            let reply = reply.unwrap_or_else(|| internal(&rid));
            let mut status = if stateless {
                stateless_status(&reply)
            } else {
                StatusCode::OK
            };
            let mut sid = None;
            if let Some(new) = new_session {
                if reply_succeeded(&reply) {
                    if let Some(full) = register_session(shared, &new) {
                        return full;
                    }
                    sid = HeaderValue::from_str(&new.id).ok();
                } else {
                    status = StatusCode::BAD_REQUEST;
                }
            }
            let mut r = if wants_json || !wants_sse {
                bytes_response(status, reply)
            } else {
                // An SSE-only client: one event, the reply.
                sse_response(Body::from(session::sse_event("0-1", &reply)))
            };
            if let Some(sid) = sid {
                r.headers_mut().insert(SESSION_HEADER, sid);
            }
            r
        }
        Err((first_out, early_reply)) => {
            // The handler has more to say than a reply: stream it.
            let session = session.or(new_session.clone());
            let (live_tx, live_rx) = mpsc::channel::<Bytes>(session::LIVE_BUFFER);
            let retry = shared.config.sse_retry;
            let stream_no = session.as_ref().map(|s| {
                let n = s.new_stream(live_tx.clone());
                let _ = live_tx.try_send(s.priming(n, retry));
                n
            });
            if let Some(new) = &new_session {
                // Initialize answered over SSE: register the session now.
                if let Some(full) = register_session(shared, new) {
                    return full;
                }
            }
            let stream_session = session.clone();
            let loose = live_tx.clone();
            let gone = live_tx.clone();
            drop(live_tx);
            // False once a stream without a session (stateless: nothing to
            // resume from) has lost its reader, or its reader fell behind:
            // the request is dropped then (a subscriptions/listen ends).
            let deliver = move |out: Option<Outbound>| match (out, &stream_session, stream_no) {
                (Some(Outbound::Message(data)), Some(s), Some(n)) => {
                    s.push(n, &data);
                    true
                }
                (Some(Outbound::Message(data)), _, _) => {
                    loose.try_send(session::sse_event("0-1", &data)).is_ok()
                }
                (Some(Outbound::CloseStream), Some(s), Some(n)) => {
                    s.detach(n);
                    true
                }
                _ => true,
            };
            let sessionless = stream_no.is_none();
            tokio::spawn(async move {
                if !deliver(first_out) && sessionless {
                    return;
                }
                let reply = match early_reply {
                    Some(reply) => reply,
                    None => loop {
                        tokio::select! {
                            reply = &mut work => break reply,
                            out = rx.recv() => if !deliver(out) && sessionless {
                                return;
                            },
                            _ = gone.closed(), if sessionless => return,
                        }
                    },
                };
                // Messages sent just before the reply come before it.
                while let Ok(out) = rx.try_recv() {
                    deliver(Some(out));
                }
                let reply = reply.unwrap_or_else(|| internal(&rid));
                deliver(Some(Outbound::Message(reply)));
                if let (Some(s), Some(n)) = (&session, stream_no) {
                    s.finish(n);
                }
            });
            let mut r = sse_response(Body::from_stream(ReceiverStream::new(live_rx).map_ok()));
            if let Some(new) = new_session {
                if let Ok(v) = HeaderValue::from_str(&new.id) {
                    r.headers_mut().insert(SESSION_HEADER, v);
                }
            }
            r
        }
    }
}
