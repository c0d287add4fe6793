//! GET (the standalone stream, or a stream resumed with `Last-Event-ID`)
//! and DELETE (the end of a session).

use super::guard;
use super::reply::{error_response, sse_response, MapOk, SESSION_HEADER};
use super::request::header_str;
use super::session::{self, STANDALONE};
use super::shared::Shared;
use crate::jsonrpc;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

pub(super) async fn get(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let headers = req.headers();
    if !guard::accepts(headers, "text/event-stream") {
        return error_response(
            StatusCode::NOT_ACCEPTABLE,
            Value::Null,
            jsonrpc::INVALID_REQUEST,
            "GET needs Accept: text/event-stream",
        );
    }
    let Some(sid) = header_str(headers, SESSION_HEADER) else {
        // Stateless: nothing to stream outside a request.
        let mut r = StatusCode::METHOD_NOT_ALLOWED.into_response();
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return r;
    };
    let Some(session) = shared.sessions.get(sid) else {
        return error_response(
            StatusCode::NOT_FOUND,
            Value::Null,
            jsonrpc::SESSION_NOT_FOUND,
            "session not found",
        );
    };
    session.touch();
    let (live_tx, live_rx) = mpsc::channel::<Bytes>(session::LIVE_BUFFER);
    if let Some(last) = header_str(headers, "last-event-id") {
        if session.resume(last, live_tx).is_none() {
            return error_response(
                StatusCode::NOT_FOUND,
                Value::Null,
                jsonrpc::INVALID_PARAMS,
                "Last-Event-ID names no stream this session remembers",
            );
        }
    } else {
        let _ = live_tx.try_send(session.priming(STANDALONE, shared.config.sse_retry));
        if !session.attach_standalone(live_tx) {
            return error_response(
                StatusCode::CONFLICT,
                Value::Null,
                jsonrpc::SERVER_ERROR,
                "this session's GET stream is already open",
            );
        }
    }
    sse_response(Body::from_stream(ReceiverStream::new(live_rx).map_ok()))
}

pub(super) async fn delete(State(shared): State<Arc<Shared>>, headers: &HeaderMap) -> Response {
    let Some(sid) = header_str(headers, SESSION_HEADER) else {
        return error_response(
            StatusCode::BAD_REQUEST,
            Value::Null,
            jsonrpc::SERVER_ERROR,
            "DELETE needs Mcp-Session-Id",
        );
    };
    match shared.sessions.remove(sid) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => error_response(
            StatusCode::NOT_FOUND,
            Value::Null,
            jsonrpc::SESSION_NOT_FOUND,
            "session not found",
        ),
    }
}
