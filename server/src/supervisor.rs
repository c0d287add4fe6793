//! The `serve --workers N` supervisor: starts N worker processes on one port,
//! places the connections a full worker passes up, restarts a worker that
//! dies (its sessions are lost and counted; the others never notice),
//! forwards SIGTERM for a graceful drain, and serves one Prometheus endpoint
//! for the whole service (its page is made in the `scrape` module). It holds
//! no listener and no connection of its own (a bound, non-listening
//! SO_REUSEPORT socket keeps the port reserved), so `headroom status --port`
//! sees exactly the workers.

mod scrape;

use crate::workers::{self, channel, recv, send, tag, Shm, MAX_MESSAGE, READY, STARTING};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::{mpsc, oneshot};

/// What the supervisor is asked to run.
pub struct Plan {
    pub workers: usize,
    pub listen: SocketAddr,
    /// Service-wide `--max-connections`.
    pub max_connections: Option<u64>,
    pub metrics: Option<SocketAddr>,
    pub drain_timeout: Duration,
    /// Our executable and the arguments every worker gets; the supervisor
    /// appends `--listen`, `--worker-index` and `--worker-fds`.
    pub exe: PathBuf,
    pub worker_args: Vec<OsString>,
    /// Print the ready line as JSON on stdout.
    pub json: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("--workers {0}: between 1 and {max}", max = workers::MAX_WORKERS)]
    Workers(usize),
    #[error("binding {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("starting worker {index}: {source}")]
    Spawn { index: usize, source: io::Error },
    #[error("worker {index} exited during start ({status}); its error is above")]
    StartFailed { index: usize, status: ExitStatus },
    #[error("workers not ready after {0:?}")]
    StartTimeout(Duration),
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("supervisor metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

struct Proc {
    generation: u64,
    pid: u32,
    chan: Rc<OwnedFd>,
    /// ADOPT messages sent to this generation.
    sent: u64,
    started: Instant,
    waiters: VecDeque<oneshot::Sender<String>>,
    exited: bool,
}

struct Sup {
    shm: Arc<Shm>,
    procs: Vec<Option<Proc>>,
    generation: u64,
    /// Restarts, sessions lost, connections placed and refused.
    own: scrape::Own,
    stopping: bool,
    /// The service-wide capacity sampler, kept between scrapes (incremental:
    /// full passes at most once per resync).
    sampler: Arc<std::sync::Mutex<crate::capacity::Sampler>>,
}

enum Event {
    Exited {
        index: usize,
        generation: u64,
        status: ExitStatus,
    },
    Overflow {
        fd: OwnedFd,
    },
    Respawn(usize),
}

impl Sup {
    fn live(&self) -> impl Iterator<Item = (usize, &Proc)> {
        self.procs
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.as_ref().filter(|p| !p.exited).map(|p| (i, p)))
    }

    /// Room of worker `i`: its ceiling minus what it holds and what is on
    /// its way to it.
    fn room(&self, i: usize, p: &Proc) -> u64 {
        let s = &self.shm.slots[i];
        if s.state.load(Ordering::SeqCst) != READY {
            return 0;
        }
        let inflight = p.sent.saturating_sub(s.adopted.load(Ordering::SeqCst));
        s.ceiling
            .load(Ordering::SeqCst)
            .saturating_sub(s.active.load(Ordering::SeqCst))
            .saturating_sub(inflight)
    }

    fn total_ceiling(&self) -> u64 {
        self.live()
            .map(|(i, _)| self.shm.slots[i].ceiling.load(Ordering::SeqCst))
            .sum()
    }

    /// Hands a connection a full worker passed up to the worker with the
    /// most room; refuses it with the service's line when none has any.
    fn place(&mut self, fd: OwnedFd) {
        let mut order: Vec<(u64, usize)> = self
            .live()
            .map(|(i, p)| (self.room(i, p), i))
            .filter(|(r, _)| *r > 0)
            .collect();
        order.sort_by(|a, b| b.cmp(a));
        for (_, i) in order {
            let p = self.procs[i].as_mut().expect("live");
            if send(p.chan.as_raw_fd(), &[tag::ADOPT], Some(fd.as_raw_fd())).is_ok() {
                p.sent += 1;
                self.own.placed.inc();
                return;
            }
        }
        self.own.refused_full.inc();
        let total = self.total_ceiling();
        let n = self.live().count();
        let line = crate::jsonrpc::refusal_line(
            "nofile",
            total,
            &format!(
                "connection refused: nofile capacity {total} reached across {n} worker processes (RLIMIT_NOFILE soft - fds open at start - reserve, per worker)"
            ),
        );
        refuse(std::net::TcpStream::from(fd), &line);
    }
}

/// Same close as the transport's: the line, read away what arrived, FIN.
fn refuse(mut s: std::net::TcpStream, line: &[u8]) {
    let _ = s.set_nonblocking(true);
    let _ = s.write(line);
    let mut sink = [0u8; 512];
    while let Ok(n) = s.read(&mut sink) {
        if n == 0 {
            break;
        }
    }
}

fn reserve_port(addr: SocketAddr) -> io::Result<socket2::Socket> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_cloexec(true)?;
    s.bind(&addr.into())?;
    Ok(s)
}

/// Runs the service until SIGTERM/SIGINT; true when every worker drained
/// and exited cleanly.
pub fn run(plan: Plan) -> Result<bool, Error> {
    if plan.workers == 0 || plan.workers > workers::MAX_WORKERS {
        return Err(Error::Workers(plan.workers));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, supervise(plan))
}

async fn supervise(plan: Plan) -> Result<bool, Error> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;

    // Port 0 resolves here, once: every worker binds the same port.
    let reservation = reserve_port(plan.listen).map_err(|source| Error::Bind {
        addr: plan.listen,
        source,
    })?;
    let addr = reservation
        .local_addr()?
        .as_socket()
        .expect("an inet socket has an inet address");
    let metrics_listener = match plan.metrics {
        Some(a) => Some(
            tokio::net::TcpListener::bind(a)
                .await
                .map_err(|source| Error::Bind { addr: a, source })?,
        ),
        None => None,
    };
    let metrics_addr = metrics_listener
        .as_ref()
        .map(|l| l.local_addr())
        .transpose()?;

    let shm = Arc::new(Shm::create()?);
    shm.service_max
        .store(plan.max_connections.unwrap_or(0), Ordering::SeqCst);
    let sup = Rc::new(RefCell::new(Sup {
        shm: shm.clone(),
        procs: (0..plan.workers).map(|_| None).collect(),
        generation: 0,
        own: scrape::Own::new()?,
        stopping: false,
        sampler: Default::default(),
    }));
    let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
    let plan = Rc::new(plan);
    for i in 0..plan.workers {
        spawn_worker(&sup, i, addr, &plan, &tx)?;
    }

    // Wait until every worker published its ceiling.
    let limit = Duration::from_secs(20);
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let ready = (0..plan.workers).all(|i| shm.slots[i].state.load(Ordering::SeqCst) == READY);
        if ready {
            break;
        }
        tokio::select! {
            Some(ev) = rx.recv() => match ev {
                Event::Exited { index, status, .. } => {
                    stop_all(&sup);
                    return Err(Error::StartFailed { index, status });
                }
                Event::Overflow { fd } => sup.borrow_mut().place(fd),
                Event::Respawn(_) => {}
            },
            _ = tokio::time::sleep(Duration::from_millis(5)) => {}
            _ = tokio::time::sleep_until(deadline) => {
                stop_all(&sup);
                return Err(Error::StartTimeout(limit));
            }
        }
    }

    if let Some(l) = metrics_listener {
        let sup = sup.clone();
        tokio::task::spawn_local(crate::exporter::serve(l, move || {
            let sup = sup.clone();
            async move { scrape::scrape(&sup).await }
        }));
    }
    {
        let s = sup.borrow();
        let total = s.total_ceiling();
        let max = plan.max_connections.map_or(total, |m| m.min(total));
        let pids: Vec<u32> = s.live().map(|(_, p)| p.pid).collect();
        eprintln!(
            "headroom serve: {} worker processes on {addr} (pids {pids:?}), at most {max} connections service-wide{}",
            plan.workers,
            metrics_addr
                .map(|a| format!(", metrics on http://{a}/metrics"))
                .unwrap_or_default()
        );
        if plan.json {
            println!(
                "{}",
                serde_json::json!({
                    "listen": addr.to_string(),
                    "metrics": metrics_addr.map(|a| a.to_string()),
                    "max_connections": max,
                    "workers": plan.workers,
                    "worker_pids": pids,
                    "pid": std::process::id(),
                })
            );
        }
    }

    // Serve: place overflow, restart the dead, until a signal.
    loop {
        tokio::select! {
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
            Some(ev) = rx.recv() => match ev {
                Event::Overflow { fd } => sup.borrow_mut().place(fd),
                Event::Exited { index, generation, status } => {
                    let delay = on_exit(&sup, index, generation, status);
                    if let Some(d) = delay {
                        let tx = tx.clone();
                        tokio::task::spawn_local(async move {
                            tokio::time::sleep(d).await;
                            let _ = tx.send(Event::Respawn(index));
                        });
                    }
                }
                Event::Respawn(index) => {
                    if let Err(e) = spawn_worker(&sup, index, addr, &plan, &tx) {
                        eprintln!("headroom serve: {e}; retrying in 1s");
                        let tx = tx.clone();
                        tokio::task::spawn_local(async move {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            let _ = tx.send(Event::Respawn(index));
                        });
                    }
                }
            },
        }
    }

    // Drain: every worker stops accepting, finishes and exits.
    let started = Instant::now();
    sup.borrow_mut().stopping = true;
    let open: u64 = shm.service_active.load(Ordering::SeqCst);
    eprintln!(
        "headroom serve: SIGTERM: draining {open} connection(s) over {} workers",
        plan.workers
    );
    stop_all(&sup);
    let deadline = tokio::time::Instant::now() + plan.drain_timeout + Duration::from_secs(2);
    let mut clean = true;
    while sup.borrow().live().count() > 0 {
        tokio::select! {
            Some(ev) = rx.recv() => match ev {
                Event::Exited { index, generation, status } => {
                    let mut s = sup.borrow_mut();
                    if let Some(p) = s.procs[index].as_mut().filter(|p| p.generation == generation) {
                        p.exited = true;
                        clean &= status.success();
                    }
                }
                // Listeners are closing; what still comes up is refused.
                Event::Overflow { fd } => sup.borrow_mut().place(fd),
                Event::Respawn(_) => {}
            },
            _ = tokio::time::sleep_until(deadline) => {
                for (_, p) in sup.borrow().live() {
                    // SAFETY: signalling our own child.
                    unsafe { libc::kill(p.pid as i32, libc::SIGKILL) };
                }
                clean = false;
                break;
            }
        }
    }
    eprintln!(
        "headroom serve: {} in {:.3}s",
        if clean { "drained" } else { "drain incomplete" },
        started.elapsed().as_secs_f64()
    );
    drop(reservation);
    Ok(clean)
}

fn stop_all(sup: &Rc<RefCell<Sup>>) {
    for (_, p) in sup.borrow().live() {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(p.pid as i32, libc::SIGTERM) };
    }
}

/// A worker died outside a drain: count what was lost, free its slot, and
/// say when to start its replacement (at once, or after 1 s if it died
/// young, so a crash loop does not spin).
fn on_exit(
    sup: &Rc<RefCell<Sup>>,
    index: usize,
    generation: u64,
    status: ExitStatus,
) -> Option<Duration> {
    let mut s = sup.borrow_mut();
    let shm = s.shm.clone();
    let p = s.procs[index]
        .as_mut()
        .filter(|p| p.generation == generation)?;
    p.exited = true;
    let young = p.started.elapsed() < Duration::from_secs(1);
    let slot = &shm.slots[index];
    let held = slot.active.swap(0, Ordering::SeqCst);
    let inflight = p.sent.saturating_sub(slot.adopted.load(Ordering::SeqCst));
    shm.service_active.fetch_sub(held, Ordering::SeqCst);
    let pid = p.pid;
    s.own.lost.inc_by(held + inflight);
    s.own.restarts.inc();
    eprintln!(
        "headroom serve: worker {index} (pid {pid}) exited ({status}): {} session(s) lost; restarting",
        held + inflight
    );
    Some(if young {
        Duration::from_secs(1)
    } else {
        Duration::ZERO
    })
}

fn spawn_worker(
    sup: &Rc<RefCell<Sup>>,
    index: usize,
    addr: SocketAddr,
    plan: &Plan,
    tx: &mpsc::UnboundedSender<Event>,
) -> Result<(), Error> {
    let mut s = sup.borrow_mut();
    let slot = &s.shm.slots[index];
    for c in [&slot.active, &slot.ceiling, &slot.adopted, &slot.overflowed] {
        c.store(0, Ordering::SeqCst);
    }
    slot.pid.store(0, Ordering::SeqCst);
    slot.state.store(STARTING, Ordering::SeqCst);
    let (mine, theirs) = channel().map_err(|source| Error::Spawn { index, source })?;
    let shm_fd = s.shm.raw_fd();
    let chan_fd = theirs.as_raw_fd();
    let mut cmd = tokio::process::Command::new(&plan.exe);
    cmd.args(&plan.worker_args)
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--worker-index")
        .arg(index.to_string())
        .arg("--worker-fds")
        .arg(format!("{shm_fd},{chan_fd}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            for fd in [shm_fd, chan_fd] {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            // Orphaned workers drain and exit instead of serving on alone.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|source| Error::Spawn { index, source })?;
    drop(theirs);
    s.generation += 1;
    let generation = s.generation;
    let chan = Rc::new(mine);
    s.procs[index] = Some(Proc {
        generation,
        pid: child.id().unwrap_or(0),
        chan: chan.clone(),
        sent: 0,
        started: Instant::now(),
        waiters: VecDeque::new(),
        exited: false,
    });
    drop(s);
    let tx2 = tx.clone();
    tokio::task::spawn_local(async move {
        if let Ok(status) = child.wait().await {
            let _ = tx2.send(Event::Exited {
                index,
                generation,
                status,
            });
        }
    });
    let (sup, tx) = (sup.clone(), tx.clone());
    tokio::task::spawn_local(async move {
        let _ = read_channel(chan, index, generation, sup, tx).await;
    });
    Ok(())
}

async fn read_channel(
    chan: Rc<OwnedFd>,
    index: usize,
    generation: u64,
    sup: Rc<RefCell<Sup>>,
    tx: mpsc::UnboundedSender<Event>,
) -> io::Result<()> {
    // SAFETY: `chan` owns the descriptor and outlives the registration (dropped after `afd`).
    let afd = unsafe { AsyncFd::register_with_interest(chan.as_raw_fd(), Interest::READABLE) }?;
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let mut guard = afd.readable().await?;
        loop {
            match recv(chan.as_raw_fd(), &mut buf) {
                Ok(None) => return Ok(()),
                Ok(Some((n, fd))) => match (buf[..n].first(), fd) {
                    (Some(&tag::OVERFLOW), Some(fd)) => {
                        let _ = tx.send(Event::Overflow { fd });
                    }
                    (Some(&tag::METRICS_REPLY), _) => {
                        let text = String::from_utf8_lossy(&buf[1..n]).into_owned();
                        let mut s = sup.borrow_mut();
                        if let Some(p) = s.procs[index]
                            .as_mut()
                            .filter(|p| p.generation == generation)
                        {
                            if let Some(w) = p.waiters.pop_front() {
                                let _ = w.send(text);
                            }
                        }
                    }
                    _ => {}
                },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    guard.clear_ready();
                    break;
                }
                Err(e) => return Err(e),
            }
        }
    }
}
