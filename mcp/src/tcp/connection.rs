//! One connection: reads through a per-thread scratch buffer, framing,
//! the session, writes with backpressure, and the idle, slow-line and
//! stalled-write timeouts.

use crate::framing::{Framer, Oversize};
use crate::jsonrpc;
use crate::protocol::{Flow, Session, Transport};
use serde_json::json;
use std::cell::RefCell;
use std::io;
use std::sync::atomic::Ordering;
use std::time::Instant;
use tokio::net::TcpStream;

use super::shared::{Local, Shared};

thread_local! {
    /// Reads land here first; only a partial line is copied per connection.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; 64 * 1024]);
}

enum ReadOutcome {
    Progress,
    Eof,
    Close,
    Oversize,
    Error,
}

/// One read. A short read (fewer bytes than asked) drained the socket, so
/// its readiness is cleared at once: the next wait goes to epoll instead of
/// costing a recv that can only say EAGAIN (tokio's `poll_read` does the
/// same; `try_read` clears readiness only on EAGAIN). Edge-triggered epoll
/// reports data that arrives after the recv, so nothing is missed.
fn read_once(stream: &TcpStream, buf: &mut [u8]) -> io::Result<(usize, bool)> {
    use std::os::fd::AsRawFd;
    let fd = stream.as_raw_fd();
    let mut short = None;
    let r = stream.try_io(tokio::io::Interest::READABLE, || {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes; `fd` is
        // the stream's open socket for the duration of the call.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        if n > 0 && n < buf.len() {
            short = Some(n);
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    });
    match (r, short) {
        (_, Some(n)) => Ok((n, true)),
        (Ok(n), None) => Ok((n, false)),
        (Err(e), None) => Err(e),
    }
}

/// Reads what is available (bounded per turn) and handles every complete line.
fn read_available(
    stream: &TcpStream,
    framer: &mut Framer,
    session: &mut Session,
    out: &mut Vec<u8>,
    shared: &Shared,
) -> ReadOutcome {
    SCRATCH.with(|b| {
        let mut buf = b.borrow_mut();
        let mut total = 0usize;
        loop {
            match read_once(stream, &mut buf) {
                Ok((0, _)) => return ReadOutcome::Eof,
                Ok((n, drained)) => {
                    total += n;
                    if let Some(tm) = &shared.tm {
                        tm.received.inc_by(n as u64);
                    }
                    let mut close = false;
                    let r = framer.push(&buf[..n], shared.limits.max_message_bytes, |line| {
                        if session.handle(line, out) == Flow::Close {
                            close = true;
                        }
                        !close
                    });
                    if r == Err(Oversize) {
                        return ReadOutcome::Oversize;
                    }
                    if close {
                        return ReadOutcome::Close;
                    }
                    if drained
                        || total >= 256 * 1024
                        || !session.can_accept()
                        || out.len() >= shared.limits.out_high_water
                    {
                        return ReadOutcome::Progress;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadOutcome::Progress,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return ReadOutcome::Error,
            }
        }
    })
}

/// Writes as much of `out` as the socket takes now.
fn flush(stream: &TcpStream, out: &mut Vec<u8>, shared: &Shared) -> io::Result<()> {
    let mut off = 0;
    while off < out.len() {
        match stream.try_write(&out[off..]) {
            Ok(n) => off += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    if let Some(tm) = &shared.tm {
        tm.sent.inc_by(off as u64);
    }
    if off == out.len() {
        // Everything written: give the buffer back. Most sessions are idle
        // most of the time, and a kept buffer (its capacity set by the
        // largest reply, often the initialize result) was a fifth of an
        // idle session's memory; a busy session pays one allocation per
        // flushed batch instead.
        *out = Vec::new();
    } else {
        out.drain(..off);
    }
    Ok(())
}

fn limit_error(out: &mut Vec<u8>, shared: &Shared, limit: &str, max: u64, message: &str) {
    if let Some(tm) = &shared.tm {
        tm.error(jsonrpc::LIMIT_REACHED);
    }
    jsonrpc::write_error(
        out,
        None,
        jsonrpc::LIMIT_REACHED,
        message,
        Some(&json!({"limit": limit, "max": max})),
    );
}

pub(super) async fn connection(stream: TcpStream, shared: &Shared, local: &Local) {
    let lim = &shared.limits;
    let mut session = Session::new(shared.engine.clone(), Transport::Tcp);
    let mut framer = Framer::default();
    let mut out: Vec<u8> = Vec::new();
    let mut last_read = Instant::now();
    let mut partial_since: Option<Instant> = None;
    let mut stalled_since: Option<Instant> = None;
    let mut draining = false;
    let mut eof = false;
    let mut closing = false;
    let timer = tokio::time::sleep(lim.idle_timeout);
    tokio::pin!(timer);

    loop {
        if (closing || eof || draining) && out.is_empty() && session.in_flight() == 0 {
            break;
        }
        let stop = local.notify.notified();
        if !draining && local.stopping.load(Ordering::SeqCst) {
            draining = true;
            // Requests the client sent before the stop are served too.
            if !closing && !eof {
                match read_available(&stream, &mut framer, &mut session, &mut out, shared) {
                    ReadOutcome::Progress => {}
                    _ => closing = true,
                }
            }
            continue;
        }
        let want_read =
            !draining && !closing && !eof && session.can_accept() && out.len() < lim.out_high_water;
        tokio::select! {
            biased;
            _ = stop, if !draining => continue,
            ev = session.next_event(), if session.has_pending() && !closing => session.on_event(ev, &mut out),
            r = stream.readable(), if want_read => {
                if r.is_err() {
                    break;
                }
                match read_available(&stream, &mut framer, &mut session, &mut out, shared) {
                    ReadOutcome::Progress => {}
                    ReadOutcome::Eof => eof = true,
                    ReadOutcome::Close => closing = true,
                    ReadOutcome::Error => break,
                    ReadOutcome::Oversize => {
                        let max = lim.max_message_bytes as u64;
                        limit_error(&mut out, shared, "max-message-bytes", max,
                            &format!("message exceeds max-message-bytes ({max}); closing"));
                        closing = true;
                    }
                }
                last_read = Instant::now();
                partial_since = match (framer.has_partial(), partial_since) {
                    (true, None) => Some(last_read),
                    (true, s) => s,
                    (false, _) => None,
                };
            }
            r = stream.writable(), if !out.is_empty() => {
                if r.is_err() {
                    break;
                }
            }
            () = &mut timer => {
                let now = Instant::now();
                if stalled_since.is_some_and(|t| now - t >= lim.write_timeout) {
                    // The client does not read: no point writing an error it won't read.
                    break;
                }
                if partial_since.is_some_and(|t| now - t >= lim.line_timeout) {
                    let max = lim.line_timeout.as_secs();
                    limit_error(&mut out, shared, "line-timeout", max,
                        &format!("incomplete message for {max}s (line timeout); closing"));
                    closing = true;
                    session.abort_all();
                } else if session.in_flight() == 0 && !session.subscribed() && out.is_empty() && now - last_read >= lim.idle_timeout {
                    let max = lim.idle_timeout.as_secs();
                    limit_error(&mut out, shared, "idle-timeout", max,
                        &format!("no message for {max}s (idle timeout); closing"));
                    closing = true;
                }
            }
        }
        if !out.is_empty() && flush(&stream, &mut out, shared).is_err() {
            break;
        }
        stalled_since = match (out.is_empty(), stalled_since) {
            (true, _) => None,
            (false, None) => Some(Instant::now()),
            (false, s) => s,
        };
        // Earliest deadline among idle, slow line and stalled write; the
        // timer only moves when a new one comes first or it fired.
        let mut next = last_read + lim.idle_timeout;
        if let Some(t) = partial_since {
            next = next.min(t + lim.line_timeout);
        }
        if let Some(t) = stalled_since {
            next = next.min(t + lim.write_timeout);
        }
        let next = tokio::time::Instant::from_std(next);
        if next < timer.deadline() || timer.is_elapsed() {
            timer.as_mut().reset(next);
        }
    }
    session.abort_all();
}
