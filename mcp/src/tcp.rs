//! The TCP transport: newline-delimited JSON-RPC, one [`Session`] per
//! connection, with every limit of the server issue enforced here.
//!
//! Layout (measured, see `headroom bench`): one current-thread tokio runtime
//! per core, each with its own listening socket on the same port
//! (SO_REUSEPORT), so an accept never waits for a sleeping multi-thread
//! scheduler. `--runtime multi` keeps the one-listener multi-thread layout
//! for comparison.
//!
//! Per-connection memory is kept small: reads go through a per-thread
//! scratch buffer and only a partial line is kept per connection; the
//! output buffer is freed when it grows large and empties.

use crate::framing::{Framer, Oversize};
use crate::jsonrpc;
use crate::metrics::{Metrics, TransportMetrics};
use crate::protocol::{Engine, Flow, Session, Transport};
use serde_json::json;
use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::sync::Notify;

/// Limits every connection lives under.
#[derive(Debug, Clone)]
pub struct Limits {
    /// `--max-connections`; the fd capacity caps it in any case.
    pub max_connections: Option<u64>,
    pub max_message_bytes: usize,
    /// No complete message for this long: closed.
    pub idle_timeout: Duration,
    /// Output not drained for this long (client not reading): closed.
    pub write_timeout: Duration,
    /// A line started but not finished for this long (slow loris): closed.
    pub line_timeout: Duration,
    /// Stop reading while this much output waits to be written.
    pub out_high_water: usize,
    /// Listen backlog (the kernel caps it at net.core.somaxconn).
    pub backlog: i32,
    /// TCP_DEFER_ACCEPT, seconds (0: off): the kernel hands a connection
    /// to accept() with its first message, one wakeup instead of two (every
    /// MCP client speaks first). A client that connects and stays silent is
    /// accepted (or refused) only after about this long.
    pub defer_accept_secs: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: None,
            max_message_bytes: 1 << 20,
            idle_timeout: Duration::from_secs(300),
            write_timeout: Duration::from_secs(10),
            line_timeout: Duration::from_secs(10),
            out_high_water: 1 << 20,
            backlog: 4096,
            defer_accept_secs: 0,
        }
    }
}

/// How the accept loops and connections are spread over threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// N current-thread runtimes, N SO_REUSEPORT listeners (the default).
    PerCore(usize),
    /// One multi-thread runtime with N workers and one listener.
    MultiThread(usize),
}

/// What the transport needs of the server around it: where it counts its
/// connections (the server reports them) and the descriptor capacity its
/// connection ceiling is held to.
pub trait Host: Send + Sync {
    /// Connections open now (the count the ceiling is checked against).
    fn active(&self) -> &AtomicU64;
    /// Where the ceiling fixed at start is published.
    fn ceiling(&self) -> &AtomicU64;
    /// Connections refused since start.
    fn refused(&self) -> &AtomicU64;
    /// Connections the descriptors left now admit, read when serving starts.
    fn fd_capacity(&self) -> FdCapacity;
}

/// Connections the process's descriptor table admits, and what that was
/// computed from (named in the refusal line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdCapacity {
    /// `u64::MAX` when the limit is unknown.
    pub connections: u64,
    /// RLIMIT_NOFILE's soft limit, when known.
    pub soft: Option<u64>,
    /// Descriptors open at start.
    pub open: u64,
    /// Descriptors kept back for everything else.
    pub reserve: u64,
}

/// One process of a multi-process service (`serve --workers`, see
/// `serve --workers`): service-wide admission, and somewhere to send a
/// connection this process has no room for.
pub trait Service: Send + Sync {
    /// Counts a connection this process is about to serve against the
    /// service-wide limit; `Err((reason, refusal line))` when it is full.
    fn admit(&self) -> Result<(), (&'static str, Vec<u8>)>;
    /// An admitted connection closed.
    fn release(&self);
    /// This process is at its ceiling: pass the connection (its fd) on.
    /// True when it was passed; the caller then closes its copy.
    fn overflow(&self, fd: std::os::fd::RawFd) -> bool;
    /// A connection passed in arrived (before the ceiling check).
    fn adopted(&self);
}

/// Listeners bound and runtimes built, not yet serving: the caller opens
/// whatever else it needs (metrics, signals) before [`TcpServer::start`]
/// counts the process's fds and fixes the connection ceiling.
pub struct TcpServer {
    listeners: Vec<std::net::TcpListener>,
    runtimes: Vec<Runtime>,
    layout: Layout,
    local_addr: SocketAddr,
    service: Option<(Arc<dyn Service>, AdoptedRx)>,
}

/// Connections passed in by a `--workers` supervisor, served by the first runtime.
pub type AdoptedRx = tokio::sync::mpsc::UnboundedReceiver<std::net::TcpStream>;

fn bind_one(
    addr: SocketAddr,
    reuse_port: bool,
    limits: &Limits,
) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    if reuse_port {
        s.set_reuse_port(true)?;
    }
    s.set_nonblocking(true)?;
    // Accepted sockets inherit TCP_NODELAY from the listener on Linux: one
    // setsockopt here instead of one per connection.
    s.set_tcp_nodelay(true)?;
    if limits.defer_accept_secs > 0 {
        set_defer_accept(&s, limits.defer_accept_secs)?;
    }
    s.bind(&addr.into())?;
    s.listen(limits.backlog)?;
    Ok(s.into())
}

fn set_defer_accept(s: &socket2::Socket, secs: u32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let v = libc::c_int::try_from(secs).unwrap_or(libc::c_int::MAX);
    // SAFETY: a valid socket and a c_int option value of the size given.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl TcpServer {
    /// Binds the listeners of `layout` with the listen options of `limits`
    /// (backlog, defer-accept).
    pub fn bind(addr: SocketAddr, layout: Layout, limits: &Limits) -> io::Result<TcpServer> {
        let (n, per_core) = match layout {
            Layout::PerCore(n) => (n.max(1), true),
            Layout::MultiThread(_) => (1, false),
        };
        let first = bind_one(addr, per_core, limits)?;
        let local_addr = first.local_addr()?;
        let mut listeners = vec![first];
        for _ in 1..n {
            listeners.push(bind_one(local_addr, true, limits)?);
        }
        let runtimes = match layout {
            Layout::PerCore(_) => (0..n)
                .map(|_| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                })
                .collect::<io::Result<Vec<_>>>()?,
            Layout::MultiThread(w) => vec![tokio::runtime::Builder::new_multi_thread()
                .worker_threads(w.max(1))
                .enable_all()
                .build()?],
        };
        Ok(TcpServer {
            listeners,
            runtimes,
            layout,
            local_addr,
            service: None,
        })
    }

    /// Makes this server one worker of a service (see [`Service`]).
    pub fn with_service(mut self, service: Arc<dyn Service>, adopted: AdoptedRx) -> TcpServer {
        self.service = Some((service, adopted));
        self
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The bound listeners and their runtimes, for a server of another kind
    /// on the same layout (the bench's bare line server).
    pub fn into_parts(self) -> (Vec<std::net::TcpListener>, Vec<Runtime>) {
        (self.listeners, self.runtimes)
    }

    /// Fixes the ceiling from the fds open now, then serves on threads of
    /// their own. The returned handle stops and drains.
    pub fn start(
        self,
        engine: Arc<Engine>,
        state: Arc<dyn Host>,
        limits: Limits,
    ) -> io::Result<Running> {
        let fd = state.fd_capacity();
        let (ceiling, reason) = match limits.max_connections {
            Some(m) if m <= fd.connections => (m, Reason::MaxConnections),
            _ => (
                fd.connections,
                Reason::Nofile {
                    soft: fd.soft.unwrap_or(0),
                    open: fd.open,
                    reserve: fd.reserve,
                },
            ),
        };
        state.ceiling().store(ceiling, Ordering::Relaxed);
        let tm = engine.metrics.as_ref().map(|m| m.transport(Transport::Tcp));
        let (service, mut adopted) = match self.service {
            Some((s, rx)) => (Some(s), Some(rx)),
            None => (None, None),
        };
        if let Some(m) = &engine.metrics {
            m.connections_max.set(ceiling as i64);
        }
        let shared = Arc::new(Shared {
            engine,
            state,
            limits,
            ceiling,
            reason,
            tm,
            service,
        });
        let mut threads = Vec::new();
        let mut locals = Vec::new();
        let per_core = matches!(self.layout, Layout::PerCore(_));
        let mut listeners = self.listeners.into_iter();
        for (i, rt) in self.runtimes.into_iter().enumerate() {
            let local = Arc::new(Local::default());
            locals.push(local.clone());
            let shared = shared.clone();
            let std_listener = listeners.next().expect("one listener per runtime");
            let adopted = adopted.take();
            let name = format!("headroom-tcp-{i}");
            threads.push(std::thread::Builder::new().name(name).spawn(move || {
                rt.block_on(async move {
                    let listener = match TcpListener::from_std(std_listener) {
                        Ok(l) => l,
                        Err(e) => {
                            eprintln!("headroom serve: cannot register listener: {e}");
                            return;
                        }
                    };
                    accept_loop(listener, adopted, shared, local.clone()).await;
                    local.wait_idle().await;
                });
                // Connections still open past the drain are cut here.
                drop(rt);
            })?);
        }
        let _ = per_core;
        Ok(Running {
            threads,
            locals,
            ceiling,
        })
    }
}

/// A serving TCP transport.
pub struct Running {
    threads: Vec<std::thread::JoinHandle<()>>,
    locals: Vec<Arc<Local>>,
    pub ceiling: u64,
}

impl Running {
    /// Stops accepting (listeners closed) and lets every connection finish
    /// its in-flight requests and flush.
    pub fn stop(&self) {
        for l in &self.locals {
            l.stopping.store(true, Ordering::SeqCst);
            l.notify.notify_waiters();
        }
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.locals
            .iter()
            .map(|l| l.conns.load(Ordering::Relaxed))
            .sum()
    }

    /// Waits for the threads up to `timeout`; true when all drained.
    pub fn join(self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.threads.iter().any(|t| !t.is_finished()) {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        for t in self.threads {
            let _ = t.join();
        }
        true
    }
}

#[derive(Debug, Clone, Copy)]
enum Reason {
    MaxConnections,
    Nofile { soft: u64, open: u64, reserve: u64 },
}

struct Shared {
    engine: Arc<Engine>,
    state: Arc<dyn Host>,
    limits: Limits,
    ceiling: u64,
    reason: Reason,
    tm: Option<Arc<TransportMetrics>>,
    service: Option<Arc<dyn Service>>,
}

impl Shared {
    fn refusal(&self) -> (&'static str, Vec<u8>) {
        match self.reason {
            Reason::MaxConnections => (
                "max-connections",
                jsonrpc::refusal_line(
                    "max-connections",
                    self.ceiling,
                    &format!("connection refused: max-connections {} reached", self.ceiling),
                ),
            ),
            Reason::Nofile {
                soft,
                open,
                reserve,
            } => (
                "nofile",
                jsonrpc::refusal_line(
                    "nofile",
                    self.ceiling,
                    &format!(
                        "connection refused: nofile capacity {} reached (RLIMIT_NOFILE soft {soft} - {open} fds open at start - {reserve} reserve)",
                        self.ceiling,
                    ),
                ),
            ),
        }
    }
}

/// Per accept-loop (per thread) stop signal and connection count: nothing
/// here is touched by another thread on the hot path.
#[derive(Default)]
struct Local {
    stopping: AtomicBool,
    notify: Notify,
    conns: AtomicUsize,
    idle: Notify,
}

impl Local {
    async fn wait_idle(&self) {
        loop {
            let n = self.idle.notified();
            if self.conns.load(Ordering::SeqCst) == 0 {
                return;
            }
            n.await;
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    mut adopted: Option<AdoptedRx>,
    shared: Arc<Shared>,
    local: Arc<Local>,
) {
    loop {
        let stop = local.notify.notified();
        if local.stopping.load(Ordering::SeqCst) {
            return;
        }
        let accepted = tokio::select! {
            biased;
            _ = stop => return,
            r = listener.accept() => r.map(|(s, _)| s),
            Some(s) = async { adopted.as_mut()?.recv().await }, if adopted.is_some() => {
                if let Some(svc) = &shared.service {
                    svc.adopted();
                }
                TcpStream::from_std(s)
            }
        };
        let stream = match accepted {
            Ok(s) => s,
            Err(e) => {
                // EMFILE/ENFILE: the reserve was eaten by something else.
                // Back off instead of spinning on a full queue.
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                ) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                continue;
            }
        };
        let st = &shared.state;
        if st.active().fetch_add(1, Ordering::SeqCst) >= shared.ceiling {
            st.active().fetch_sub(1, Ordering::SeqCst);
            // A worker of a service hands what it cannot hold to a sibling.
            if let Some(svc) = &shared.service {
                use std::os::fd::AsRawFd;
                if svc.overflow(stream.as_raw_fd()) {
                    continue;
                }
            }
            st.refused().fetch_add(1, Ordering::Relaxed);
            let (reason, line) = shared.refusal();
            if let Some(tm) = &shared.tm {
                tm.refused(reason);
            }
            refuse(stream, &line);
            continue;
        }
        if let Some(Err((reason, line))) = shared.service.as_ref().map(|s| s.admit()) {
            st.active().fetch_sub(1, Ordering::SeqCst);
            st.refused().fetch_add(1, Ordering::Relaxed);
            if let Some(tm) = &shared.tm {
                tm.refused(reason);
            }
            refuse(stream, &line);
            continue;
        }
        if let Some(tm) = &shared.tm {
            tm.accepted.inc();
            tm.active.inc();
        }
        local.conns.fetch_add(1, Ordering::SeqCst);
        let (shared, local) = (shared.clone(), local.clone());
        tokio::spawn(async move {
            let _guard = ConnGuard {
                shared: &shared,
                local: &local,
            };
            connection(stream, &shared, &local).await;
        });
    }
}

/// One error line naming the limit, then close at once. The send buffer of
/// a fresh socket is empty, so the line goes out in one non-blocking write;
/// input that already arrived is read away so the close is a FIN, not a RST.
fn refuse(stream: TcpStream, line: &[u8]) {
    let _ = stream.try_write(line);
    let mut sink = [0u8; 512];
    while let Ok(n) = stream.try_read(&mut sink) {
        if n == 0 {
            break;
        }
    }
    drop(stream);
}

struct ConnGuard<'a> {
    shared: &'a Shared,
    local: &'a Local,
}

impl Drop for ConnGuard<'_> {
    fn drop(&mut self) {
        self.shared.state.active().fetch_sub(1, Ordering::SeqCst);
        if let Some(svc) = &self.shared.service {
            svc.release();
        }
        if let Some(tm) = &self.shared.tm {
            tm.active.dec();
        }
        if self.local.conns.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.local.idle.notify_waiters();
        }
    }
}

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

async fn connection(stream: TcpStream, shared: &Shared, local: &Local) {
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

/// Builds the metrics-labelled transport handle for tests and benches.
pub fn transport_metrics(m: &Metrics) -> Arc<TransportMetrics> {
    m.transport(Transport::Tcp)
}
