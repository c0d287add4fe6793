//! The shapes of a reply: JSON-RPC error bodies, JSON and SSE responses,
//! the 503 with `Retry-After`.

use crate::jsonrpc;
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio_stream::wrappers::ReceiverStream;

pub(super) const SESSION_HEADER: &str = "mcp-session-id";
pub(super) const VERSION_HEADER: &str = "mcp-protocol-version";

pub(super) fn rpc_error(id: Value, code: i32, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

pub(super) fn json_response(status: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        bytes,
    )
        .into_response()
}

pub(super) fn error_response(status: StatusCode, id: Value, code: i32, message: &str) -> Response {
    json_response(status, &rpc_error(id, code, message))
}

pub(super) fn unavailable(retry_after: u32, message: &str) -> Response {
    let mut r = error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        Value::Null,
        jsonrpc::SERVER_ERROR,
        message,
    );
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    r
}

pub(super) fn bytes_response(status: StatusCode, body: Bytes) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

pub(super) trait MapOk: Sized {
    fn map_ok(self) -> OkStream<Self>;
}
impl MapOk for ReceiverStream<Bytes> {
    fn map_ok(self) -> OkStream<Self> {
        OkStream(self)
    }
}
/// A stream of frames as the `Result` items a body stream wants.
pub(super) struct OkStream<S>(S);
impl<S: tokio_stream::Stream<Item = Bytes> + Unpin> tokio_stream::Stream for OkStream<S> {
    type Item = Result<Bytes, std::convert::Infallible>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        std::pin::Pin::new(&mut self.0)
            .poll_next(cx)
            .map(|o| o.map(Ok))
    }
}

pub(super) fn sse_response(body: Body) -> Response {
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}
