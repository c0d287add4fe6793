//! One connection of a flood: opening it (socket, source address, connect,
//! then the mode's handshake), reading replies with the protocol parsers, and
//! the checks that tell whether it is still served.

use crate::mcp;
use crate::outcome::{classify_unsolicited, parse_reply, Failure, FailureKind, Reply};
use crate::proto::{quote, Parsed, Proto, Served};
use crate::spec::{Mode, WorkerSpec};
use crate::worker::Shared;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{timeout, timeout_at, Instant};

/// Largest reply buffer before the parsers must have decided.
const MAX_BUFFER: usize = 2 * 1024 * 1024;

pub(crate) struct Session {
    pub reader: BufReader<OwnedReadHalf>,
    pub writer: OwnedWriteHalf,
    /// MCP and connect modes: the line being read.
    pub line: String,
    /// Protocol modes: bytes received and not yet parsed.
    pub buf: Vec<u8>,
    /// Protocol modes: queries may be sent (PostgreSQL: ReadyForQuery seen).
    pub ready: bool,
}

/// socket, optional bind to a source address, connect, and the mode's
/// handshake: the MCP initialize, the protocol's request and its reply, or
/// in connect mode a moment of listening for a refusal.
pub(crate) async fn open_one(
    spec: &WorkerSpec,
    proto: Option<&Proto>,
    source: Option<IpAddr>,
    st: &Shared,
) -> Result<(Session, Duration), Failure> {
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_millis(spec.timeout_ms);
    let io = |e: io::Error| Failure::from_io(&e);
    let sock = match spec.target {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(io)?;
    if let Some(src) = source {
        // Defer the port choice to connect(): ports are then unique per
        // (source, destination) 4-tuple, not per source address.
        set_bind_address_no_port(&sock).map_err(io)?;
        sock.bind(SocketAddr::new(src, 0)).map_err(io)?;
    }
    let stream: TcpStream = match timeout_at(deadline, sock.connect(spec.target)).await {
        Ok(r) => r.map_err(io)?,
        Err(_) => {
            return Err(Failure::new(
                FailureKind::Timeout,
                format!("no TCP handshake within {} ms", spec.timeout_ms),
            ))
        }
    };
    // Nagle only holds a write back while earlier data is unacknowledged:
    // that happens with pipelined requests (bomb), never in a
    // request-then-reply handshake, so the other modes skip the syscall.
    if spec.mode == Mode::Bomb {
        let _ = stream.set_nodelay(true);
    }
    // RST instead of FIN on close, however the worker ends (even killed): a
    // flood must not leave its ports in FIN_WAIT/TIME_WAIT on the host.
    let _ = stream.set_zero_linger();
    let (r, w) = stream.into_split();
    let mut s = Session {
        reader: BufReader::with_capacity(if proto.is_some() { 64 } else { 512 }, r),
        writer: w,
        line: String::new(),
        buf: Vec::new(),
        ready: false,
    };
    if let Some(proto) = proto {
        let spoke_first = pending_bytes(&s);
        let served = exchange(
            &mut s,
            proto.opening(),
            |b| proto.parse_opening(b),
            deadline,
        )
        .await
        .map_err(|f| match f.kind {
            FailureKind::Protocol if spoke_first => Failure::new(
                FailureKind::Protocol,
                format!("the server spoke first, before any request: {}", f.detail),
            ),
            _ => f,
        })?;
        st.borrow_mut().served_total += 1;
        if served.close {
            return Err(Failure::new(
                FailureKind::Closed,
                "answered, then closes the connection (Connection: close)",
            ));
        }
        s.ready = served.ready;
        s.buf = Vec::new();
        return Ok((s, t0.elapsed()));
    }
    if spec.mode == Mode::Connect {
        let latency = t0.elapsed();
        // A server that refuses does so at once (a line, a close): listen
        // for a moment before calling the connection held, so that a
        // refusal breaks the failure streak's count, not a success.
        if spec.settle_ms > 0 {
            let settle = Duration::from_millis(spec.settle_ms);
            if let Ok(r) = timeout(settle, s.reader.read_line(&mut s.line)).await {
                return Err(match r {
                    Ok(0) => Failure::new(FailureKind::Closed, "server closed the connection"),
                    Ok(_) => classify_unsolicited(&s.line),
                    Err(e) => Failure::from_io(&e),
                });
            }
            s.line.clear();
        }
        return Ok((s, latency));
    }
    mcp::handshake(&mut s).await?;
    Ok((s, t0.elapsed()))
}

/// Whether the server already sent something on a connection nobody asked
/// anything yet (MSG_PEEK, non-blocking: the bytes stay for the reader).
fn pending_bytes(s: &Session) -> bool {
    let mut b = [0u8; 1];
    let fd = s.reader.get_ref().as_ref().as_raw_fd();
    // SAFETY: recv into a live 1-byte buffer on an fd the session owns.
    let n = unsafe {
        libc::recv(
            fd,
            b.as_mut_ptr() as *mut libc::c_void,
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n > 0
}

/// Sends `request` and reads until `parse` decides, by `deadline`.
///
/// No reply at all by the deadline is `no_reply` (the orchestrator names it
/// `backlog_filling` when the listener's queue held connections); part of
/// one is a protocol failure; a close before any byte is `closed`.
pub(crate) async fn exchange(
    s: &mut Session,
    request: &[u8],
    parse: impl Fn(&[u8]) -> Parsed,
    deadline: Instant,
) -> Result<Served, Failure> {
    s.buf.clear();
    match timeout_at(deadline, s.writer.write_all(request)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(Failure::from_io(&e)),
        Err(_) => {
            return Err(Failure::new(
                FailureKind::NoReply,
                "request not sent within --timeout",
            ))
        }
    }
    loop {
        match parse(&s.buf) {
            Parsed::Served(done) => {
                s.buf.drain(..done.consumed.min(s.buf.len()));
                return Ok(done);
            }
            Parsed::Failed(f) => return Err(f),
            Parsed::More if s.buf.len() > MAX_BUFFER => {
                return Err(Failure::new(
                    FailureKind::Protocol,
                    format!("reply over {MAX_BUFFER} bytes without an end"),
                ))
            }
            Parsed::More => {}
        }
        s.buf.reserve(512);
        match timeout_at(deadline, s.reader.read_buf(&mut s.buf)).await {
            Err(_) if s.buf.is_empty() => {
                return Err(Failure::new(
                    FailureKind::NoReply,
                    "no reply within --timeout after the TCP handshake",
                ))
            }
            Err(_) => {
                return Err(Failure::new(
                    FailureKind::Protocol,
                    format!("incomplete reply within --timeout: {}", quote(&s.buf)),
                ))
            }
            Ok(Ok(0)) if s.buf.is_empty() => {
                return Err(Failure::new(
                    FailureKind::Closed,
                    "accepted and closed without a reply",
                ))
            }
            Ok(Ok(0)) => {
                return Err(crate::proto::known_refusal(&s.buf).unwrap_or_else(|| {
                    Failure::new(
                        FailureKind::Protocol,
                        format!("incomplete reply, then closed: {}", quote(&s.buf)),
                    )
                }))
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(Failure::from_io(&e)),
        }
    }
}

/// Whether a connection nobody may ask anything is still open: a peek that
/// would block means open; end of stream, a reset or unasked bytes mean not.
pub(crate) fn still_open(s: &Session, proto: Option<&Proto>) -> Result<(), Failure> {
    let mut b = [0u8; 256];
    let fd = s.reader.get_ref().as_ref().as_raw_fd();
    // SAFETY: recv into a live buffer of its length on an fd the session owns.
    let n = unsafe {
        libc::recv(
            fd,
            b.as_mut_ptr() as *mut libc::c_void,
            b.len(),
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    match n {
        0 => Err(Failure::new(
            FailureKind::Closed,
            "server closed the connection",
        )),
        n if n > 0 => {
            let bytes = &b[..n as usize];
            Err(match proto {
                Some(p) => p.unsolicited(bytes),
                None => classify_unsolicited(&String::from_utf8_lossy(bytes)),
            })
        }
        _ => {
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::WouldBlock => Ok(()),
                _ => Err(Failure::from_io(&e)),
            }
        }
    }
}

/// The end check of a protocol-mode connection: the request again (or for
/// a connection that cannot be asked, a look at whether it is still open).
pub(crate) async fn check(s: &mut Session, proto: &Proto, timeout_ms: u64) -> Result<(), Failure> {
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    match proto.check(s.ready) {
        Some(req) => exchange(s, req, |b| proto.parse_check(b), deadline)
            .await
            .map(|_| ()),
        None => still_open(s, Some(proto)),
    }
}

pub(crate) async fn read_line(s: &mut Session) -> Result<Reply, Failure> {
    s.line.clear();
    match s.reader.read_line(&mut s.line).await {
        Ok(0) => Err(Failure::new(
            FailureKind::Closed,
            "server closed the connection",
        )),
        Ok(_) => parse_reply(&s.line).map_err(|f| match f.kind {
            FailureKind::Protocol => classify_unsolicited(&s.line),
            _ => f,
        }),
        Err(e) => Err(Failure::from_io(&e)),
    }
}

fn set_bind_address_no_port(sock: &TcpSocket) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: valid fd owned by `sock`; the option value is a live c_int.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            &one as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
