//! `headroom bench`: the load client and the bare reference server. The
//! servers under test run as child processes; the client runs here, in
//! another process, on its own runtime.

use crate::framing::Framer;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};

/// A line server that does no protocol work: every line is written back as
/// it came. Same runtime layout as `headroom serve` (per-core, SO_REUSEPORT).
pub fn bare_line_server(
    listen: SocketAddr,
    threads: usize,
    ready: impl FnOnce(SocketAddr),
) -> io::Result<()> {
    let server = crate::tcp::TcpServer::bind(
        listen,
        crate::tcp::Layout::PerCore(threads),
        &crate::tcp::Limits::default(),
    )?;
    ready(server.local_addr());
    let (listeners, runtimes) = server.into_parts();
    let mut handles = Vec::new();
    for (l, rt) in listeners.into_iter().zip(runtimes) {
        handles.push(std::thread::spawn(move || {
            rt.block_on(async move {
                let l = tokio::net::TcpListener::from_std(l).expect("register listener");
                loop {
                    let Ok((mut s, _)) = l.accept().await else {
                        continue;
                    };
                    let _ = s.set_nodelay(true);
                    tokio::spawn(async move {
                        let mut framer = Framer::default();
                        let mut buf = vec![0u8; 16 * 1024];
                        let mut out = Vec::new();
                        loop {
                            let n = match s.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            let _ = framer.push(&buf[..n], 1 << 20, |line| {
                                out.extend_from_slice(line);
                                out.push(b'\n');
                                true
                            });
                            if s.write_all(&out).await.is_err() {
                                return;
                            }
                            out.clear();
                        }
                    });
                }
            })
        }));
    }
    for h in handles {
        let _ = h.join();
    }
    Ok(())
}

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

/// Opens `n` sessions with `concurrency` openers; returns them and the
/// elapsed time.
pub async fn open_sessions(
    addr: SocketAddr,
    n: usize,
    concurrency: usize,
) -> io::Result<(Vec<BufReader<TcpStream>>, Duration)> {
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= n {
                    return Ok::<_, io::Error>(mine);
                }
                mine.push(open_session(addr, i).await?);
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
    pub seconds: f64,
    pub calls_per_second: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

/// `sessions` connections, each keeping `in_flight` requests outstanding
/// for `duration`; the request line is sent as is and one line is expected
/// back per request, in order. `initialize` first when `mcp`.
pub async fn throughput(
    addr: SocketAddr,
    sessions: usize,
    in_flight: usize,
    duration: Duration,
    request: &'static [u8],
    mcp: bool,
) -> io::Result<Throughput> {
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
            let mut sent = std::collections::VecDeque::with_capacity(in_flight);
            let burst = request.repeat(in_flight);
            w.write_all(&burst).await?;
            for _ in 0..in_flight {
                sent.push_back(Instant::now());
            }
            let mut line = Vec::with_capacity(256);
            let mut done = 0u64;
            loop {
                line.clear();
                if r.read_until(b'\n', &mut line).await? == 0 {
                    return Err(io::Error::other("server closed the connection"));
                }
                let t = sent.pop_front().expect("a reply per request");
                let now = Instant::now();
                lat.push(now.duration_since(t).as_nanos() as u64);
                done += 1;
                if now < stop_at {
                    w.write_all(request).await?;
                    sent.push_back(Instant::now());
                } else if sent.is_empty() {
                    return Ok::<_, io::Error>((done, lat));
                }
            }
        }));
    }
    let mut calls = 0;
    let mut lat = Vec::new();
    for t in tasks {
        let (d, l) = t.await.map_err(io::Error::other)??;
        calls += d;
        lat.extend(l);
    }
    let seconds = start.elapsed().as_secs_f64();
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    Ok(Throughput {
        calls,
        seconds,
        calls_per_second: calls as f64 / seconds,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
    })
}

pub const ECHO_CALL: &[u8] = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"echo\",\"arguments\":{\"message\":\"hello\"}}}\n";

/// Bytes held host-wide by the slab caches a TCP connection allocates from
/// (socket, inode, file, dentry, epoll item, bind bucket): the difference
/// across opening N connections is their kernel memory, measured. Socket
/// buffers of idle connections are near zero and /proc/net/sockstat `mem`
/// counts them in whole pages per CPU, so it is not used here.
pub fn tcp_slab_bytes() -> u64 {
    const CACHES: [&str; 7] = [
        "TCP",
        "TCPv6",
        "sock_inode_cache",
        "filp",
        "dentry",
        "eventpoll_epi",
        "tcp_bind_bucket",
    ];
    let text = std::fs::read_to_string("/proc/slabinfo").unwrap_or_default();
    headroom_probe::poll::kmem::parse_slabinfo(&text)
        .map(|m| {
            CACHES
                .iter()
                .filter_map(|c| m.get(*c))
                .map(|s| s.active_objs * s.objsize)
                .sum()
        })
        .unwrap_or(0)
}
