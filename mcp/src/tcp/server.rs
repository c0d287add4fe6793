//! Binding the listeners (SO_REUSEPORT, backlog, defer-accept), fixing the
//! connection ceiling, and the threads that serve and drain.

use crate::metrics::{Metrics, TransportMetrics};
use crate::protocol::{Engine, Transport};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;

use super::accept::accept_loop;
use super::config::{AdoptedRx, Host, Layout, Limits, Service};
use super::shared::{Local, Reason, Shared};

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

/// Builds the metrics-labelled transport handle for tests and benches.
pub fn transport_metrics(m: &Metrics) -> Arc<TransportMetrics> {
    m.transport(Transport::Tcp)
}
