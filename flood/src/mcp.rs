//! The MCP modes on a held session: the initialize handshake, the bomb of
//! pipelined `tools/call` and the final `ping`.

use crate::outcome::{Failure, FailureKind, Reply};
use crate::report::histogram;
use crate::session::{read_line, Session};
use crate::spec::WorkerSpec;
use crate::worker::Shared;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::time::{timeout, Instant};

/// MCP protocol version the flood speaks.
pub const PROTOCOL_VERSION: &str = "2025-11-25";

/// The `initialize` request every MCP-mode session sends (protocol
/// [`PROTOCOL_VERSION`]).
pub(crate) const INITIALIZE: &str = concat!(
    r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","#,
    r#""capabilities":{},"clientInfo":{"name":"headroom-flood","version":""#,
    env!("CARGO_PKG_VERSION"),
    r#""}}}"#,
    "\n"
);

/// `initialize`, its reply, `notifications/initialized`.
pub(crate) async fn handshake(s: &mut Session) -> Result<(), Failure> {
    let io = |e: std::io::Error| Failure::from_io(&e);
    s.writer
        .write_all(INITIALIZE.as_bytes())
        .await
        .map_err(io)?;
    match read_line(s).await? {
        Reply::Result { .. } => {}
        Reply::Error { error, .. } => return Err(Failure::refused(error)),
    }
    s.writer
        .write_all(b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n")
        .await
        .map_err(io)?;
    s.line = String::new();
    Ok(())
}

fn tools_call(id: u64) -> String {
    format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"tools/call\",\"params\":{{\"name\":\"echo\",\"arguments\":{{\"message\":\"headroom\"}}}}}}\n"
    )
}

/// Pipelined tools/call until `until`, `window` in flight. Returns false when
/// the session broke.
pub(crate) async fn bomb(s: &mut Session, spec: &WorkerSpec, st: &Shared, until: Instant) -> bool {
    let window = spec.window.max(1) as u64;
    let mut inflight: VecDeque<(u64, Instant)> = VecDeque::new();
    let mut next_id = 1_000u64;
    let mut ok = true;
    let mut batch = String::new();
    for _ in 0..window {
        batch.push_str(&tools_call(next_id));
        inflight.push_back((next_id, Instant::now()));
        next_id += 1;
    }
    let mut result = s
        .writer
        .write_all(batch.as_bytes())
        .await
        .map_err(|e| Failure::from_io(&e));
    if result.is_ok() {
        st.borrow_mut().bomb.sent += window;
    } else {
        inflight.clear();
    }
    while result.is_ok() && !inflight.is_empty() {
        let limit = until.max(Instant::now()) + Duration::from_millis(spec.timeout_ms);
        let reply = match timeout(limit - Instant::now(), read_line(s)).await {
            Ok(r) => r,
            Err(_) => Err(Failure::new(FailureKind::Timeout, "bomb reply timed out")),
        };
        match reply {
            Ok(r) => {
                let (id, good) = match r {
                    Reply::Result { id, is_error } => (id, !is_error),
                    Reply::Error { id, .. } => (id, false),
                };
                let pos = id
                    .and_then(|id| inflight.iter().position(|(i, _)| *i == id))
                    .unwrap_or(0);
                let (_, sent_at) = inflight.remove(pos).expect("inflight not empty");
                {
                    let mut g = st.borrow_mut();
                    if good {
                        g.bomb.replies += 1;
                    } else {
                        g.bomb.errors += 1;
                    }
                    let _ = g
                        .bomb_latency
                        .get_or_insert_with(histogram)
                        .record((sent_at.elapsed().as_micros() as u64).max(1));
                }
                if Instant::now() < until {
                    result = s
                        .writer
                        .write_all(tools_call(next_id).as_bytes())
                        .await
                        .map_err(|e| Failure::from_io(&e));
                    if result.is_ok() {
                        inflight.push_back((next_id, Instant::now()));
                        next_id += 1;
                        st.borrow_mut().bomb.sent += 1;
                    }
                }
            }
            Err(f) => result = Err(f),
        }
    }
    let mut g = st.borrow_mut();
    if let Err(f) = result {
        g.bomb.lost += inflight.len() as u64;
        g.bomb.failures.record(&f);
        g.dropped += 1;
        ok = false;
    }
    g.bomb.sessions_done += 1;
    ok
}

/// One `ping`; returns false when the session broke.
pub(crate) async fn ping(s: &mut Session, spec: &WorkerSpec, st: &Shared) -> bool {
    let t0 = Instant::now();
    let r = async {
        s.writer
            .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"ping\"}\n")
            .await
            .map_err(|e| Failure::from_io(&e))?;
        read_line(s).await
    };
    let r = timeout(spec.check_timeout(), r)
        .await
        .unwrap_or_else(|_| Err(Failure::new(FailureKind::Timeout, "ping timed out")));
    let mut g = st.borrow_mut();
    match r {
        Ok(Reply::Result { id: Some(2), .. }) => {
            g.ping.replies += 1;
            let _ = g
                .ping_latency
                .get_or_insert_with(histogram)
                .record((t0.elapsed().as_micros() as u64).max(1));
            true
        }
        Ok(_) => {
            g.ping.failed += 1;
            true
        }
        Err(_) => {
            g.ping.failed += 1;
            g.dropped += 1;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initialize_line_is_one_request_in_the_protocol_version() {
        let (line, rest) = INITIALIZE.split_once('\n').unwrap();
        assert_eq!(rest, "");
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["method"], "initialize");
        assert_eq!(v["id"], 1);
        assert_eq!(v["params"]["protocolVersion"], PROTOCOL_VERSION);
        assert_eq!(
            v["params"]["clientInfo"]["version"],
            env!("CARGO_PKG_VERSION")
        );
    }
}
