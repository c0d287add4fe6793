//! The headroom engine behind the HTTP transport's [`Protocol`] boundary.
//!
//! An initialize-era session is a task that owns one engine [`Session`] and
//! routes what it writes: a reply to the POST waiting for it, a call's
//! progress, logs and server-to-client requests to that call's stream (the
//! engine names the request behind each event), and the rest (resource
//! updates) to the session's standalone stream.

use super::protocol::{BoxFuture, Outbound, Protocol, ProtocolSession, Sink};
use crate::version::{LEGACY_VERSIONS, STATELESS_VERSIONS};
use crate::{Engine, Session, Transport};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// The engine as an HTTP [`Protocol`].
pub struct EngineProtocol {
    engine: Arc<Engine>,
    versions: Vec<&'static str>,
    /// Per tool, its `x-mcp-header` arguments: (argument, header suffix).
    param_headers: HashMap<String, Vec<(String, String)>>,
}

impl EngineProtocol {
    pub fn new(engine: Arc<Engine>) -> Arc<EngineProtocol> {
        let versions = LEGACY_VERSIONS
            .iter()
            .chain(STATELESS_VERSIONS.iter())
            .copied()
            .collect();
        let param_headers = engine
            .registry
            .tools
            .iter()
            .filter_map(|t| {
                let props = t.definition["inputSchema"]["properties"].as_object()?;
                let mirrored: Vec<(String, String)> = props
                    .iter()
                    .filter_map(|(arg, schema)| {
                        let h = schema.get("x-mcp-header")?.as_str()?;
                        Some((arg.clone(), h.to_string()))
                    })
                    .collect();
                (!mirrored.is_empty()).then(|| (t.name.clone(), mirrored))
            })
            .collect();
        Arc::new(EngineProtocol {
            engine,
            versions,
            param_headers,
        })
    }
}

impl Protocol for EngineProtocol {
    fn open(&self, unrelated: Sink) -> Arc<dyn ProtocolSession> {
        Arc::new(Lazy {
            engine: self.engine.clone(),
            unrelated,
            actor: std::sync::OnceLock::new(),
        })
    }

    fn supported_versions(&self) -> &[&'static str] {
        &self.versions
    }

    fn param_headers(&self, tool: &str) -> &[(String, String)] {
        self.param_headers.get(tool).map_or(&[], Vec::as_slice)
    }
}

/// A session's protocol state: run inline for its first request when that is
/// all it ever sees (stateless), moved into a task once it must outlive one.
struct Lazy {
    engine: Arc<Engine>,
    unrelated: Sink,
    actor: std::sync::OnceLock<mpsc::Sender<Inbound>>,
}

struct Inbound {
    message: Bytes,
    related: Sink,
    reply: oneshot::Sender<Option<Bytes>>,
}

impl ProtocolSession for Lazy {
    fn handle(self: Arc<Self>, message: Bytes, related: Sink) -> BoxFuture<Option<Bytes>> {
        Box::pin(async move {
            let tx = self
                .actor
                .get_or_init(|| {
                    let (tx, rx) = mpsc::channel(16);
                    let mut s = Session::new(self.engine.clone(), Transport::Http);
                    s.set_authenticated();
                    tokio::spawn(actor(s, rx, self.unrelated.clone()));
                    tx
                })
                .clone();
            let (reply, rx) = oneshot::channel();
            tx.send(Inbound {
                message,
                related,
                reply,
            })
            .await
            .ok()?;
            rx.await.ok().flatten()
        })
    }
}

/// What routing needs from a message the engine wrote.
#[derive(Deserialize)]
struct Peek<'a> {
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    method: Option<&'a str>,
    #[serde(borrow)]
    params: Option<PeekParams<'a>>,
}

#[derive(Deserialize)]
struct PeekParams<'a> {
    #[serde(rename = "progressToken", borrow)]
    progress_token: Option<&'a RawValue>,
    #[serde(rename = "_meta", borrow)]
    meta: Option<PeekMeta<'a>>,
}

#[derive(Deserialize)]
struct PeekMeta<'a> {
    #[serde(rename = "progressToken", borrow)]
    progress_token: Option<&'a RawValue>,
    /// A `subscriptions/listen` notification names its listen request.
    #[serde(rename = "io.modelcontextprotocol/subscriptionId", borrow)]
    subscription: Option<&'a RawValue>,
}

struct Pending {
    id: String,
    progress_token: Option<String>,
    related: Sink,
    reply: oneshot::Sender<Option<Bytes>>,
}

/// Owns one engine session for as long as its HTTP session lives.
async fn actor(mut s: Session, mut rx: mpsc::Receiver<Inbound>, unrelated: Sink) {
    let mut pending: Vec<Pending> = Vec::new();
    let mut out = Vec::new();
    loop {
        tokio::select! {
            inbound = rx.recv() => {
                let Some(i) = inbound else { break };
                out.clear();
                s.handle(&i.message, &mut out);
                match serde_json::from_slice::<Peek>(&i.message) {
                    Ok(Peek { id: Some(id), method: Some(_), params }) => pending.push(Pending {
                        id: id.get().to_string(),
                        progress_token: params
                            .and_then(|p| p.meta)
                            .and_then(|m| m.progress_token)
                            .map(|t| t.get().to_string()),
                        related: i.related,
                        reply: i.reply,
                    }),
                    _ => {
                        let _ = i.reply.send(None);
                    }
                }
                route(&out, &mut pending, &unrelated, None).await;
                close_streams(&mut s, &pending).await;
            }
            ev = s.next_event(), if s.has_pending() => {
                out.clear();
                let owner = s.event_request_id(&ev).map(|id| id.get().to_string());
                s.on_event(ev, &mut out);
                route(&out, &mut pending, &unrelated, owner.as_deref()).await;
                close_streams(&mut s, &pending).await;
            }
        }
    }
    s.abort_all();
}

/// Ends the response streams of calls whose tools asked for it.
async fn close_streams(s: &mut Session, pending: &[Pending]) {
    for id in s.take_stream_closes() {
        if let Some(p) = pending.iter().find(|p| p.id == id.get()) {
            p.related.send(Outbound::CloseStream).await;
        }
    }
}

/// Sends each line the engine wrote where it belongs; `owner` is the id of
/// the request behind the event that produced them, when there is one.
async fn route(out: &[u8], pending: &mut Vec<Pending>, unrelated: &Sink, owner: Option<&str>) {
    for line in out.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let Ok(peek) = serde_json::from_slice::<Peek>(line) else {
            continue;
        };
        let bytes = Bytes::copy_from_slice(line);
        match (peek.method, peek.id) {
            // A reply: to the POST that waits for it.
            (None, Some(id)) => {
                if let Some(i) = pending.iter().position(|p| p.id == id.get()) {
                    let p = pending.swap_remove(i);
                    let _ = p.reply.send(Some(bytes));
                }
            }
            (Some(method), _) => {
                let listen = peek
                    .params
                    .as_ref()
                    .and_then(|p| p.meta.as_ref())
                    .and_then(|m| m.subscription)
                    .map(|s| s.get());
                let token = peek.params.and_then(|p| p.progress_token).map(|t| t.get());
                let target = if let Some(listen) = listen {
                    // The listen request's own stream (its SSE response).
                    pending.iter().find(|p| p.id == listen)
                } else if let Some(owner) = owner.filter(|_| {
                    method != "notifications/resources/updated"
                        && !method.ends_with("/list_changed")
                }) {
                    pending.iter().find(|p| p.id == owner)
                } else if method == "notifications/progress" {
                    pending
                        .iter()
                        .find(|p| p.progress_token.as_deref() == token)
                } else {
                    None
                };
                match target {
                    Some(p) => {
                        p.related.send(Outbound::Message(bytes)).await;
                    }
                    None => {
                        unrelated.send(Outbound::Message(bytes)).await;
                    }
                }
            }
            _ => {}
        }
    }
}
