//! The headroom engine behind the HTTP transport's [`Protocol`] boundary.
//!
//! An initialize-era session is a task that owns one engine [`Session`] and
//! routes what it writes: a reply to the POST waiting for it, progress to the
//! request whose progressToken it names, other call-related messages (logs,
//! server-to-client requests) to the request in flight, and the rest to the
//! session's standalone stream. A stateless request runs inline, with no task.

use super::protocol::{BoxFuture, Outbound, Protocol, ProtocolSession, Sink};
use crate::protocol::{LEGACY_VERSIONS, STATELESS_VERSIONS};
use crate::{Engine, Session, Transport};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// The engine as an HTTP [`Protocol`].
pub struct EngineProtocol {
    engine: Arc<Engine>,
    versions: Vec<&'static str>,
}

impl EngineProtocol {
    pub fn new(engine: Arc<Engine>) -> Arc<EngineProtocol> {
        let versions = LEGACY_VERSIONS.iter().chain(STATELESS_VERSIONS.iter()).copied().collect();
        Arc::new(EngineProtocol { engine, versions })
    }
}

impl Protocol for EngineProtocol {
    fn open(&self, unrelated: Sink) -> Arc<dyn ProtocolSession> {
        Arc::new(Lazy { engine: self.engine.clone(), unrelated, actor: std::sync::OnceLock::new() })
    }

    fn supported_versions(&self) -> &[&'static str] {
        &self.versions
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
            tx.send(Inbound { message, related, reply }).await.ok()?;
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
                route(&out, &mut pending, &unrelated).await;
            }
            ev = s.next_event(), if s.has_pending() => {
                out.clear();
                s.on_event(ev, &mut out);
                route(&out, &mut pending, &unrelated).await;
            }
        }
    }
    s.abort_all();
}

/// Sends each line the engine wrote where it belongs.
async fn route(out: &[u8], pending: &mut Vec<Pending>, unrelated: &Sink) {
    for line in out.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let Ok(peek) = serde_json::from_slice::<Peek>(line) else { continue };
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
                let token = peek.params.and_then(|p| p.progress_token).map(|t| t.get());
                let target = if method == "notifications/progress" {
                    pending.iter().find(|p| p.progress_token.as_deref() == token)
                } else if method == "notifications/resources/updated" || method.ends_with("/list_changed") {
                    None
                } else if pending.len() == 1 {
                    // A log or a server-to-client request comes from a running call; with
                    // one call in flight it is that one's.
                    pending.first()
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
