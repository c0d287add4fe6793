//! The MCP load client of `headroom bench`: sessions opened over TCP,
//! pipelined `tools/call` with every reply matched to its request by id, and
//! keep-alive Streamable HTTP clients; raw samples merged across rounds
//! before percentiles are taken.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};

/// Source addresses 127.0.0.1.. so that one destination never runs out of
/// ephemeral ports (each source address has its own range).
fn source(i: usize) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (i % 8) as u8)), 0)
}

/// Connects from a rotating loopback source address; SO_LINGER 0 so a bench
/// never leaves TIME_WAIT ports behind.
pub async fn connect(addr: SocketAddr, i: usize) -> io::Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    let s2 = socket2::SockRef::from(&sock);
    // Let connect() pick the port per 4-tuple, not bind() per address.
    let one: libc::c_int = 1;
    // SAFETY: setsockopt on a socket we own, with a c_int option value.
    unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&sock),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            &one as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    s2.set_linger(Some(Duration::ZERO))?;
    sock.bind(source(i))?;
    let s = sock.connect(addr).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

pub const INITIALIZE: &[u8] = b"{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"initialize\",\"params\":{\"protocolVersion\":\"2025-11-25\",\"capabilities\":{},\"clientInfo\":{\"name\":\"headroom-bench\",\"version\":\"1\"}}}\n{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n";

/// Opens one initialized session: connect, initialize, read the result.
pub async fn open_session(addr: SocketAddr, i: usize) -> io::Result<BufReader<TcpStream>> {
    let mut s = BufReader::new(connect(addr, i).await?);
    s.get_mut().write_all(INITIALIZE).await?;
    let mut line = String::new();
    s.read_line(&mut line).await?;
    if !line.contains("\"protocolVersion\"") {
        return Err(io::Error::other(format!(
            "initialize failed: {}",
            line.trim()
        )));
    }
    Ok(s)
}

/// [`open_session`], then `resources/subscribe` to `uri`, waiting for its
/// result (an update that comes first is read past).
pub async fn open_subscribed_session(
    addr: SocketAddr,
    i: usize,
    uri: &str,
) -> io::Result<BufReader<TcpStream>> {
    let mut s = open_session(addr, i).await?;
    let subscribe = serde_json::json!({
        "jsonrpc": "2.0", "id": 1, "method": "resources/subscribe", "params": {"uri": uri}
    });
    let mut req = subscribe.to_string();
    req.push('\n');
    s.get_mut().write_all(req.as_bytes()).await?;
    let mut line = String::new();
    loop {
        line.clear();
        if s.read_line(&mut line).await? == 0 {
            return Err(io::Error::other("closed before the subscribe result"));
        }
        let reply: serde_json::Value =
            serde_json::from_str(line.trim()).map_err(io::Error::other)?;
        if reply["id"] != 1 {
            continue;
        }
        if reply.get("result").is_none() {
            return Err(io::Error::other(format!(
                "subscribe failed: {}",
                line.trim()
            )));
        }
        return Ok(s);
    }
}

/// Opens `n` sessions with `concurrency` openers; returns them and the
/// elapsed time.
pub async fn open_sessions(
    addr: SocketAddr,
    n: usize,
    concurrency: usize,
) -> io::Result<(Vec<BufReader<TcpStream>>, Duration)> {
    open_sessions_subscribed(addr, n, concurrency, None).await
}

/// [`open_sessions`], each session subscribed to `uri` when one is given.
pub async fn open_sessions_subscribed(
    addr: SocketAddr,
    n: usize,
    concurrency: usize,
    uri: Option<&str>,
) -> io::Result<(Vec<BufReader<TcpStream>>, Duration)> {
    let uri: Option<Arc<str>> = uri.map(Arc::from);
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let next = next.clone();
        let uri = uri.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= n {
                    return Ok::<_, io::Error>(mine);
                }
                mine.push(match &uri {
                    Some(uri) => open_subscribed_session(addr, i, uri).await?,
                    None => open_session(addr, i).await?,
                });
            }
        }));
    }
    let mut all = Vec::with_capacity(n);
    for t in tasks {
        all.extend(t.await.map_err(io::Error::other)??);
    }
    Ok((all, start.elapsed()))
}

/// Result of a throughput run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Throughput {
    pub calls: u64,
    /// Replies that were not a JSON-RPC result (HTTP: also a status other
    /// than 200 or a body that is not the echo result).
    pub errors: u64,
    pub seconds: f64,
    pub calls_per_second: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

/// Raw samples of one or more load runs against one server: rounds of an
/// interleaved benchmark are merged here before the percentiles are taken.
#[derive(Debug, Default)]
pub struct Samples {
    pub calls: u64,
    pub errors: u64,
    pub seconds: f64,
    latencies_ns: Vec<u64>,
}

impl Samples {
    pub fn merge(&mut self, other: Samples) {
        self.calls += other.calls;
        self.errors += other.errors;
        self.seconds += other.seconds;
        self.latencies_ns.extend(other.latencies_ns);
    }

    pub fn summary(&mut self) -> Throughput {
        let lat = &mut self.latencies_ns;
        lat.sort_unstable();
        let pct = |p: f64| {
            lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0) as f64
                / 1000.0
        };
        Throughput {
            calls: self.calls,
            errors: self.errors,
            seconds: self.seconds,
            calls_per_second: if self.seconds > 0.0 {
                self.calls as f64 / self.seconds
            } else {
                0.0
            },
            p50_us: pct(0.50),
            p99_us: pct(0.99),
        }
    }
}

/// Whether `hay` contains `needle` (reply checks; replies are short).
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// `sessions` connections, each keeping `in_flight` requests outstanding
/// for `duration`. `request` is one line holding `"id":1,`; every request
/// sent gets its own id there (JSON-RPC ids must be unique among a
/// session's requests in flight: rmcp answers only one of duplicates), and
/// each reply is matched to its request by id, so a server may answer out
/// of order. `initialize` first when `mcp`.
pub async fn throughput(
    addr: SocketAddr,
    sessions: usize,
    in_flight: usize,
    duration: Duration,
    request: &'static [u8],
    mcp: bool,
) -> io::Result<Throughput> {
    Ok(
        throughput_samples(addr, sessions, in_flight, duration, request, mcp)
            .await?
            .summary(),
    )
}

/// The id a reply line answers (the first `"id":` number in it).
fn reply_id(line: &[u8]) -> Option<u64> {
    let key = b"\"id\":";
    let at = line.windows(key.len()).position(|w| w == key)? + key.len();
    let digits = line[at..].iter().take_while(|b| b.is_ascii_digit());
    let mut n = 0u64;
    let mut any = false;
    for d in digits {
        n = n.checked_mul(10)?.checked_add((d - b'0') as u64)?;
        any = true;
    }
    any.then_some(n)
}

/// [`throughput`], returning the raw samples. A reply counts as an error
/// when `mcp` and it carries no `"result"`.
pub async fn throughput_samples(
    addr: SocketAddr,
    sessions: usize,
    in_flight: usize,
    duration: Duration,
    request: &'static [u8],
    mcp: bool,
) -> io::Result<Samples> {
    let key = b"\"id\":1,";
    let at = request
        .windows(key.len())
        .position(|w| w == key)
        .ok_or_else(|| io::Error::other("the request line has no \"id\":1,"))?;
    // Everything up to the id's digits, and everything after them.
    let (head, tail) = (
        &request[..at + key.len() - 2],
        &request[at + key.len() - 1..],
    );
    let mut conns = Vec::new();
    for i in 0..sessions {
        conns.push(if mcp {
            open_session(addr, i).await?
        } else {
            BufReader::new(connect(addr, i).await?)
        });
    }
    let start = Instant::now();
    let stop_at = start + duration;
    let mut tasks = Vec::new();
    for conn in conns {
        tasks.push(tokio::spawn(async move {
            let (r, mut w) = conn.into_inner().into_split();
            let mut r = BufReader::with_capacity(64 * 1024, r);
            let mut lat = Vec::with_capacity(1 << 16);
            let mut sent = std::collections::HashMap::with_capacity(in_flight * 2);
            let mut next_id = 1u64;
            let mut out = Vec::with_capacity(request.len() * in_flight + 16 * in_flight);
            let push = |out: &mut Vec<u8>, id: u64| {
                out.extend_from_slice(head);
                out.extend_from_slice(id.to_string().as_bytes());
                out.extend_from_slice(tail);
            };
            for _ in 0..in_flight {
                push(&mut out, next_id);
                sent.insert(next_id, Instant::now());
                next_id += 1;
            }
            w.write_all(&out).await?;
            let mut line = Vec::with_capacity(256);
            let (mut done, mut errors) = (0u64, 0u64);
            loop {
                line.clear();
                if r.read_until(b'\n', &mut line).await? == 0 {
                    return Err(io::Error::other("server closed the connection"));
                }
                let t = reply_id(&line)
                    .and_then(|id| sent.remove(&id))
                    .ok_or_else(|| {
                        io::Error::other(format!(
                            "a reply to no request in flight: {}",
                            String::from_utf8_lossy(&line).trim()
                        ))
                    })?;
                let now = Instant::now();
                lat.push(now.duration_since(t).as_nanos() as u64);
                done += 1;
                if mcp && !contains(&line, b"\"result\"") {
                    errors += 1;
                }
                if now < stop_at {
                    out.clear();
                    push(&mut out, next_id);
                    sent.insert(next_id, Instant::now());
                    next_id += 1;
                    w.write_all(&out).await?;
                } else if sent.is_empty() {
                    return Ok::<_, io::Error>((done, errors, lat));
                }
            }
        }));
    }
    gather(tasks, start).await
}

/// One Streamable HTTP request, sent as is on every call: a POST to `/mcp`
/// with these extra headers and this body.
#[derive(Debug, Clone, Copy)]
pub struct HttpRequest {
    pub headers: &'static [(&'static str, &'static str)],
    pub body: &'static str,
}

/// The stateless (2026-07-28) `tools/call` echo: protocol version, method
/// and tool name mirrored in headers, the per-request `_meta` the revision
/// requires in the body. Both headroom and rmcp 3.11 accept it.
pub const HTTP_ECHO_CALL: HttpRequest = HttpRequest {
    headers: &[
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/call"),
        ("mcp-name", "echo"),
    ],
    body: "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"echo\",\"arguments\":{\"message\":\"hello\"},\"_meta\":{\"io.modelcontextprotocol/protocolVersion\":\"2026-07-28\",\"io.modelcontextprotocol/clientCapabilities\":{}}}}",
};

/// `clients` keep-alive HTTP/1.1 connections (hyper's client), each with
/// one request outstanding at a time, for `duration`. A call is an error
/// unless the answer is a 200 with a JSON body holding the echoed
/// `"hello"` in a `"result"`; a broken connection ends the run with an error.
pub async fn http_throughput(
    addr: SocketAddr,
    clients: usize,
    duration: Duration,
    request: HttpRequest,
) -> io::Result<Samples> {
    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;
    let host = addr.to_string();
    let mut senders = Vec::new();
    for i in 0..clients {
        let s = connect(addr, i).await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s))
            .await
            .map_err(io::Error::other)?;
        tokio::spawn(conn);
        senders.push(sender);
    }
    let start = Instant::now();
    let stop_at = start + duration;
    let mut tasks = Vec::new();
    for mut sender in senders {
        let host = host.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(1 << 16);
            let (mut done, mut errors) = (0u64, 0u64);
            while Instant::now() < stop_at {
                let mut b = hyper::Request::post("/mcp").header("host", &host);
                for (k, v) in request.headers {
                    b = b.header(*k, *v);
                }
                let req = b
                    .body(Full::new(Bytes::from_static(request.body.as_bytes())))
                    .map_err(io::Error::other)?;
                let t = Instant::now();
                sender.ready().await.map_err(io::Error::other)?;
                let resp = sender.send_request(req).await.map_err(io::Error::other)?;
                let ok_head = resp.status() == hyper::StatusCode::OK
                    && resp
                        .headers()
                        .get("content-type")
                        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
                let body = resp
                    .into_body()
                    .collect()
                    .await
                    .map_err(io::Error::other)?
                    .to_bytes();
                lat.push(t.elapsed().as_nanos() as u64);
                done += 1;
                if !(ok_head && contains(&body, b"\"result\"") && contains(&body, b"\"hello\"")) {
                    errors += 1;
                }
            }
            Ok::<_, io::Error>((done, errors, lat))
        }));
    }
    gather(tasks, start).await
}

/// What one load client's task reports: calls done, errors, latencies (ns).
type ClientTask = tokio::task::JoinHandle<io::Result<(u64, u64, Vec<u64>)>>;

/// Sums the load clients' reports into one sample set, timed from `start`.
async fn gather(tasks: Vec<ClientTask>, start: Instant) -> io::Result<Samples> {
    let mut out = Samples::default();
    for t in tasks {
        let (d, e, l) = t.await.map_err(io::Error::other)??;
        out.calls += d;
        out.errors += e;
        out.latencies_ns.extend(l);
    }
    out.seconds = start.elapsed().as_secs_f64();
    Ok(out)
}

pub const ECHO_CALL: &[u8] = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"echo\",\"arguments\":{\"message\":\"hello\"}}}\n";

/// Runs `rounds` rounds; in each, every server gets one run of `round(i)`
/// in turn, so noise from other work on the host hits every server alike.
/// Returns each server's merged samples, in order.
pub fn interleaved<F>(
    rt: &tokio::runtime::Runtime,
    servers: usize,
    rounds: u32,
    mut round: F,
) -> io::Result<Vec<Samples>>
where
    F: FnMut(usize) -> std::pin::Pin<Box<dyn std::future::Future<Output = io::Result<Samples>>>>,
{
    let mut all: Vec<Samples> = (0..servers).map(|_| Samples::default()).collect();
    for _ in 0..rounds {
        for (i, acc) in all.iter_mut().enumerate() {
            acc.merge(rt.block_on(round(i))?);
        }
    }
    Ok(all)
}
