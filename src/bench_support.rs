//! The parts of `headroom bench` built on the server and probe crates,
//! which the load side (headroom-flood's `bench`) does not depend on: the
//! bare reference line server, on the same runtime layout as `headroom
//! serve`, and the kernel memory a TCP connection costs, from the probe's
//! slabinfo parser.

use headroom_server::framing::Framer;
use std::io;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A line server that does no protocol work: every line is written back as
/// it came. Same runtime layout as `headroom serve` (per-core, SO_REUSEPORT).
pub fn bare_line_server(
    listen: SocketAddr,
    threads: usize,
    ready: impl FnOnce(SocketAddr),
) -> io::Result<()> {
    let server = headroom_server::tcp::TcpServer::bind(
        listen,
        headroom_server::tcp::Layout::PerCore(threads),
        &headroom_server::tcp::Limits::default(),
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
