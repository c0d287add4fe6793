//! The stdio transport: one session over stdin/stdout, as MCP clients launch
//! servers. Nothing but protocol messages is written to stdout.

use crate::framing::{Framer, Oversize};
use crate::jsonrpc;
use crate::protocol::{Engine, Flow, Session, Transport};
use serde_json::json;
use std::future::Future;
use std::io;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Serves one session over `input`/`output` until EOF (or `stop` resolves),
/// then finishes in-flight requests and flushes.
pub async fn serve<R, W>(
    engine: Arc<Engine>,
    mut input: R,
    mut output: W,
    max_message_bytes: usize,
    stop: impl Future<Output = ()>,
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let tm = engine
        .metrics
        .as_ref()
        .map(|m| m.transport(Transport::Stdio));
    if let Some(tm) = &tm {
        tm.accepted.inc();
        tm.active.inc();
    }
    let mut session = Session::new(engine, Transport::Stdio);
    let mut framer = Framer::default();
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut eof = false;
    let mut closing = false;
    tokio::pin!(stop);
    let result = loop {
        if (eof || closing) && session.in_flight() == 0 && out.is_empty() {
            break Ok(());
        }
        let want_read = !eof && !closing && session.can_accept();
        tokio::select! {
            biased;
            _ = &mut stop, if !eof => eof = true,
            ev = session.next_event(), if session.has_pending() => session.on_event(ev, &mut out),
            r = input.read(&mut buf), if want_read => match r {
                Ok(0) => eof = true,
                Ok(n) => {
                    if let Some(tm) = &tm {
                        tm.received.inc_by(n as u64);
                    }
                    let r = framer.push(&buf[..n], max_message_bytes, |line| {
                        if session.handle(line, &mut out) == Flow::Close {
                            closing = true;
                        }
                        !closing
                    });
                    if r == Err(Oversize) {
                        jsonrpc::write_error(&mut out, None, jsonrpc::LIMIT_REACHED,
                            &format!("message exceeds max-message-bytes ({max_message_bytes}); closing"),
                            Some(&json!({"limit": "max-message-bytes", "max": max_message_bytes})));
                        closing = true;
                    }
                }
                Err(e) => break Err(e),
            },
        }
        if !out.is_empty() {
            if let Err(e) = output.write_all(&out).await {
                break Err(e);
            }
            if let Err(e) = output.flush().await {
                break Err(e);
            }
            if let Some(tm) = &tm {
                tm.sent.inc_by(out.len() as u64);
            }
            out.clear();
        }
    };
    session.abort_all();
    if let Some(tm) = &tm {
        tm.active.dec();
    }
    result
}

/// [`serve`] over the process's own stdin and stdout.
pub async fn serve_process_stdio(
    engine: Arc<Engine>,
    max_message_bytes: usize,
    stop: impl Future<Output = ()>,
) -> io::Result<()> {
    serve(
        engine,
        tokio::io::stdin(),
        tokio::io::stdout(),
        max_message_bytes,
        stop,
    )
    .await
}
