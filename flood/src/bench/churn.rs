//! Connection churn: blocking connect-and-reset loops from rotating
//! loopback sources, paced to a rate, and a listener that accepts and
//! closes as fast as it can (the target that keeps up with them).

use socket2::{Domain, Socket, Type};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What a connect-and-reset run did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Churn {
    pub made: u64,
    pub failed: u64,
    pub seconds: f64,
}

/// One connection: bind a loopback source (port picked at connect), connect,
/// close with SO_LINGER 0 so neither end keeps TIME_WAIT or a port.
pub fn connect_reset(src: IpAddr, target: SocketAddr) -> io::Result<()> {
    let s = Socket::new(Domain::for_address(target), Type::STREAM, None)?;
    let one: libc::c_int = 1;
    // SAFETY: setsockopt on a socket we own, with a c_int option value.
    unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&s),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            &one as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    s.set_linger(Some(Duration::ZERO))?;
    // A blocking connect() gives up after SO_SNDTIMEO: no poll loop needed.
    s.set_write_timeout(Some(Duration::from_secs(3)))?;
    s.bind(&SocketAddr::new(src, 0).into())?;
    s.connect(&target.into())
}

/// `threads` threads connecting and resetting against `target` from
/// 127.0.0.1.. (one source address per thread: each has its own port
/// range), until `total` connections were attempted or `duration` passed,
/// paced to `rate` per second overall (0: as fast as they go).
pub fn churn(
    target: SocketAddr,
    threads: usize,
    total: u64,
    rate: f64,
    duration: Duration,
) -> Churn {
    let made = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let handles: Vec<_> = (0..threads.max(1))
        .map(|t| {
            let (made, failed, next) = (made.clone(), failed.clone(), next.clone());
            let src = if target.is_ipv4() {
                IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (t % 250) as u8))
            } else {
                IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
            };
            std::thread::spawn(move || loop {
                // One shared ticket sequence: attempt i is due at start + i/rate.
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return;
                }
                if rate > 0.0 {
                    let due = start + Duration::from_secs_f64(i as f64 / rate);
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                }
                if Instant::now() >= deadline {
                    return;
                }
                match connect_reset(src, target) {
                    Ok(()) => made.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
    Churn {
        made: made.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        seconds: start.elapsed().as_secs_f64(),
    }
}

/// A listener accepting and closing as fast as it can, in this process.
pub struct Acceptor {
    listener: Arc<Socket>,
    pub addr: SocketAddr,
    accepted: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Acceptor {
    pub fn start(threads: usize) -> io::Result<Acceptor> {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
        s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
        // Capped by net.core.somaxconn (4096 by default).
        s.listen(4096)?;
        let addr = s
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("listener address"))?;
        let listener = Arc::new(s);
        let accepted = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..threads.max(1))
            .map(|_| {
                let (l, n, stop) = (listener.clone(), accepted.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        if l.accept().is_ok() {
                            n.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        Ok(Acceptor {
            listener,
            addr,
            accepted,
            stop,
            threads,
        })
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // shutdown() on a listening socket wakes every blocked accept().
        let _ = self.listener.shutdown(std::net::Shutdown::Both);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
