//! The boundary between the Streamable HTTP transport and the protocol engine.
//!
//! The transport knows HTTP (sessions, SSE streams, headers, limits); the engine
//! knows MCP. Everything the transport needs from the engine is here, so the
//! transport can be tested with a stand-in engine and the engine with no HTTP.

use bytes::Bytes;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;

/// A message the engine sends towards the client outside a plain reply.
#[derive(Debug)]
pub enum Outbound {
    /// A JSON-RPC notification or server-to-client request, serialized.
    Message(Bytes),
    /// The handler asks the transport to end the request's SSE stream now
    /// (SEP-1699 polling); later messages wait in the session's event log until
    /// the client reconnects with `Last-Event-ID`.
    CloseStream,
}

/// Where an engine sends [`Outbound`] messages. Bounded: a client that does not
/// read makes the engine wait instead of growing memory.
#[derive(Clone, Debug)]
pub struct Sink(pub(crate) mpsc::Sender<Outbound>);

impl Sink {
    /// A sink and the receiving end the transport drains.
    pub fn channel(capacity: usize) -> (Sink, mpsc::Receiver<Outbound>) {
        let (tx, rx) = mpsc::channel(capacity);
        (Sink(tx), rx)
    }

    /// Sends one message; false once the receiving side is gone (the stream
    /// was dropped and nothing will deliver it).
    pub async fn send(&self, out: Outbound) -> bool {
        self.0.send(out).await.is_ok()
    }
}

/// A boxed future, so engines can be used behind `dyn`.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The protocol engine as the HTTP transport sees it.
pub trait Protocol: Send + Sync + 'static {
    /// Protocol state for one initialize-era session, or for one stateless request.
    fn open(&self, unrelated: Sink) -> Arc<dyn ProtocolSession>;

    /// The protocol revisions this engine serves (for `MCP-Protocol-Version`).
    fn supported_versions(&self) -> &[&'static str];

    /// The arguments of `tool` its schema marks `x-mcp-header` (SEP-2243), as
    /// (argument, header suffix): the transport checks `Mcp-Param-{suffix}`.
    fn param_headers(&self, _tool: &str) -> &[(String, String)] {
        &[]
    }
}

/// One session's protocol state.
pub trait ProtocolSession: Send + Sync + 'static {
    /// Handles one inbound JSON-RPC message, as received (request, notification or a response
    /// to a server-to-client request). Returns the reply to a request, `None`
    /// otherwise. Progress, logging and server-to-client requests that belong
    /// to this request go to `related`.
    fn handle(self: Arc<Self>, message: Bytes, related: Sink) -> BoxFuture<Option<Bytes>>;
}
