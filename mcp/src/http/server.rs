//! Binding, the accept loop with its connection limit, hyper's connection
//! loop with its timeouts, and routing to the methods of `/mcp`.

use super::config::{HttpConfig, HttpStats};
use super::guard;
use super::post::post;
use super::protocol::Protocol;
use super::reply::{error_response, unavailable};
use super::session::Sessions;
use super::shared::Shared;
use super::streams::{delete, get};
use crate::jsonrpc;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// A bound Streamable HTTP server, not yet serving.
pub struct HttpServer {
    listener: TcpListener,
    shared: Arc<Shared>,
}

impl HttpServer {
    /// Binds `addr`. DNS-rebinding protection is switched on when the address
    /// is loopback (whatever the config says), since that is the case it exists for.
    pub async fn bind(
        addr: SocketAddr,
        mut config: HttpConfig,
        protocol: Arc<dyn Protocol>,
    ) -> std::io::Result<HttpServer> {
        let listener = TcpListener::bind(addr).await?;
        if addr.ip().is_loopback() {
            config.check_origin = true;
        }
        Ok(HttpServer::from_listener(listener, config, protocol))
    }

    /// Serves on a listener the caller bound.
    pub fn from_listener(
        listener: TcpListener,
        config: HttpConfig,
        protocol: Arc<dyn Protocol>,
    ) -> HttpServer {
        let shared = Arc::new(Shared {
            protocol,
            sessions: Sessions::new(config.max_sessions),
            config,
            stats: Arc::new(HttpStats::default()),
            metrics: None,
        });
        HttpServer { listener, shared }
    }

    /// Also counts connections, refusals and bytes in the server's Prometheus
    /// metrics, labelled transport="http" (the engine labels its messages the same way).
    pub fn with_metrics(mut self, metrics: &crate::Metrics) -> HttpServer {
        let tm = metrics.transport(crate::Transport::Http);
        Arc::get_mut(&mut self.shared)
            .expect("not serving yet: the only handle")
            .metrics = Some(tm);
        self
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn stats(&self) -> Arc<HttpStats> {
        self.shared.stats.clone()
    }

    /// Serves until `shutdown` resolves; then stops accepting and returns.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> std::io::Result<()> {
        let shared = self.shared;
        let reaper = {
            let shared = shared.clone();
            tokio::spawn(async move {
                let every = (shared.config.session_idle / 4).max(Duration::from_secs(1));
                loop {
                    tokio::time::sleep(every).await;
                    shared.sessions.reap(shared.config.session_idle);
                }
            })
        };
        tokio::pin!(shutdown);
        let result = loop {
            let (stream, _peer) = tokio::select! {
                _ = &mut shutdown => break Ok(()),
                accepted = self.listener.accept() => match accepted {
                    Ok(a) => a,
                    // Out of fds or similar: back off instead of spinning.
                    Err(e) if is_transient(&e) => { tokio::time::sleep(Duration::from_millis(20)).await; continue }
                    Err(e) => break Err(e),
                },
            };
            let _ = stream.set_nodelay(true);
            shared
                .stats
                .connections_accepted
                .fetch_add(1, Ordering::Relaxed);
            let over = shared
                .stats
                .connections_active
                .fetch_add(1, Ordering::AcqRel)
                >= shared.config.max_connections;
            if let (Some(tm), false) = (&shared.metrics, over) {
                tm.accepted.inc();
                tm.active.inc();
            }
            let shared = shared.clone();
            tokio::spawn(async move {
                serve_connection(stream, shared.clone(), over).await;
                shared
                    .stats
                    .connections_active
                    .fetch_sub(1, Ordering::AcqRel);
                if let (Some(tm), false) = (&shared.metrics, over) {
                    tm.active.dec();
                }
            });
        };
        reaper.abort();
        result
    }
}

fn is_transient(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::ECONNABORTED)
    )
}

async fn serve_connection(stream: tokio::net::TcpStream, shared: Arc<Shared>, over_limit: bool) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(shared.config.read_timeout);
    // hyper has no write timeout: a client that stops reading (an SSE
    // subscriber gone quiet) would hold its connection and buffers forever.
    let mut stream = tokio_io_timeout::TimeoutStream::new(stream);
    stream.set_write_timeout(Some(shared.config.write_timeout));
    let io = TokioIo::new(Box::pin(stream));
    if over_limit {
        // One answer naming the limit, then the connection closes.
        shared
            .stats
            .refused_connections
            .fetch_add(1, Ordering::Relaxed);
        shared.count_refused("max-connections");
        let retry = shared.config.retry_after_secs;
        let svc = hyper::service::service_fn(move |_req| async move {
            let mut r = unavailable(retry, "connection limit reached (--max-connections)");
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            Ok::<_, std::convert::Infallible>(r)
        });
        let _ = builder.keep_alive(false).serve_connection(io, svc).await;
        return;
    }
    let (stats, metrics) = (shared.stats.clone(), shared.metrics.clone());
    let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        let shared = shared.clone();
        async move { Ok::<_, std::convert::Infallible>(route(shared, req.map(Body::new)).await) }
    });
    if let Err(e) = builder.serve_connection(io, svc).await {
        if is_write_timeout(&e) {
            stats.write_timeouts.fetch_add(1, Ordering::Relaxed);
            if let Some(tm) = &metrics {
                tm.refused("write-timeout");
            }
        }
    }
}

/// The connection ended because a write waited past the write timeout.
fn is_write_timeout(e: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::TimedOut;
        }
        source = err.source();
    }
    false
}

async fn route(shared: Arc<Shared>, req: Request) -> Response {
    shared.stats.requests.fetch_add(1, Ordering::Relaxed);
    if req.uri().path() != "/mcp" {
        return (
            StatusCode::NOT_FOUND,
            "not found: the MCP endpoint is /mcp\n",
        )
            .into_response();
    }
    if shared.config.check_origin {
        if let Err(why) = guard::check_rebinding(req.headers()) {
            shared
                .stats
                .refused_forbidden
                .fetch_add(1, Ordering::Relaxed);
            shared.count_refused("forbidden");
            return error_response(
                StatusCode::FORBIDDEN,
                Value::Null,
                jsonrpc::SERVER_ERROR,
                why,
            );
        }
    }
    if let Some(token) = &shared.config.token {
        if !guard::check_bearer(req.headers(), token) {
            shared
                .stats
                .refused_forbidden
                .fetch_add(1, Ordering::Relaxed);
            shared.count_refused("forbidden");
            let mut r = error_response(
                StatusCode::UNAUTHORIZED,
                Value::Null,
                jsonrpc::SERVER_ERROR,
                "missing or wrong bearer token",
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    }
    match *req.method() {
        Method::POST => post(State(shared), req).await,
        Method::GET => get(State(shared), req).await,
        Method::DELETE => delete(State(shared), req.headers()).await,
        _ => {
            let mut r = StatusCode::METHOD_NOT_ALLOWED.into_response();
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, POST, DELETE"));
            r
        }
    }
}
