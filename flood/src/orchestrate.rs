//! The flood as a whole: sizes it (workers for descriptors, source addresses
//! for ports), starts worker processes, keeps them in step over pipes, and
//! merges their reports.
//!
//! Protocol on each worker's pipes, one JSON document per line: the worker
//! writes its open-phase [`WorkerReport`], waits for `go` on stdin (sent once
//! every worker has opened and the hold time has passed), writes its final
//! report, and holds its connections until stdin closes (once the
//! orchestrator has read the server's accept queue at the end), then exits.
//!
//! Meanwhile the orchestrator, which knows the target, watches the server
//! through an [`Observer`]: the listener's accept queue every 100 ms of the
//! open phase, when it ends (the breaking point: every connection is still
//! held) and at the end, and whether a server process's descriptor table is
//! full.

use crate::report::WorkerReport;
use crate::spec::{self, Mode, ProtoOptions, TargetError, WorkerSpec};
use crate::summary::{FloodReport, QueueSample, ServerView};
use headroom_host::Host;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Descriptors a worker keeps for itself (runtime, pipes, stdio).
const WORKER_FD_RESERVE: u64 = 64;

/// A whole flood, as asked on the command line.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub target: SocketAddr,
    pub mode: Mode,
    pub connections: u64,
    /// Attempts per second over all workers; 0 = unpaced.
    pub rate: f64,
    /// Attempts in flight per worker.
    pub concurrency: u32,
    /// Loopback source addresses; 0 = as many as the port range needs.
    pub sources: u32,
    /// Worker processes; 0 = as many as the descriptor limit needs.
    pub workers: u32,
    pub duration: Duration,
    pub timeout: Duration,
    /// Connect mode: listen this long on each new connection for a refusal.
    pub settle: Duration,
    pub fail_streak: u64,
    /// Hold everything this long after the open phase.
    pub hold: Duration,
    /// Bomb phase length (mode bomb).
    pub bomb: Duration,
    /// Requests in flight per session in the bomb phase.
    pub window: u32,
    /// Ping every held session at the end (mcp, bomb).
    pub ping: bool,
    pub allow_netns_target: bool,
    /// What the protocol modes send.
    pub proto: ProtoOptions,
}

/// What the flood may see of the server from where it runs. The caller
/// implements it (sock_diag, /proc), so that this crate reads no kernel
/// tables of its own.
pub trait Observer {
    /// The target listener's accept queue now; `None`: not readable.
    fn accept_queue(&mut self) -> Option<QueueSample>;
    /// A server process whose descriptor table is full now, as one line.
    fn server_at_nofile(&mut self) -> Option<String>;
    /// Connections the server has accepted and still holds from the
    /// flood's addresses, counted on the server's side at one instant;
    /// `None`: its sockets cannot be seen from here.
    fn accepted(&mut self) -> Option<u64>;
}

/// Sees nothing: a flood without a view of the server.
pub struct NoObserver;

impl Observer for NoObserver {
    fn accept_queue(&mut self) -> Option<QueueSample> {
        None
    }
    fn server_at_nofile(&mut self) -> Option<String> {
        None
    }
    fn accepted(&mut self) -> Option<u64> {
        None
    }
}

/// How often the server is looked at during the open phase.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum FloodError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("{0}")]
    Bounds(String),
    #[error("cannot start worker process: {0}")]
    Spawn(io::Error),
    #[error("worker {0}: {1}")]
    Worker(u32, String),
}

impl Plan {
    /// Checks target and bounds; resolves `workers` and `sources` when 0.
    pub fn resolve(self) -> Result<Plan, FloodError> {
        self.resolve_with(nofile_hard, || port_range_size_at(&Host::system()))
    }

    /// [`Plan::resolve`] with the hard RLIMIT_NOFILE and the port range
    /// size given, read only when needed.
    fn resolve_with(
        mut self,
        nofile_hard: impl FnOnce() -> u64,
        port_range_size: impl FnOnce() -> u64,
    ) -> Result<Plan, FloodError> {
        spec::check_target(
            &self.target,
            self.allow_netns_target,
            spec::in_network_namespace(),
        )?;
        if self.connections == 0 || self.connections > spec::MAX_CONNECTIONS {
            return Err(FloodError::Bounds(format!(
                "--connections must be 1..={}",
                spec::MAX_CONNECTIONS
            )));
        }
        for (name, d) in [
            ("--duration", self.duration),
            ("--hold", self.hold),
            ("--bomb-duration", self.bomb),
        ] {
            if d > spec::MAX_PHASE {
                return Err(FloodError::Bounds(format!(
                    "{name} must be at most {:?}",
                    spec::MAX_PHASE
                )));
            }
        }
        if self.duration.is_zero() || self.timeout.is_zero() {
            return Err(FloodError::Bounds(
                "--duration and --timeout must be positive".into(),
            ));
        }
        self.proto.check().map_err(FloodError::Bounds)?;
        if self.settle >= self.timeout {
            return Err(FloodError::Bounds(
                "--settle must be shorter than --timeout".into(),
            ));
        }
        if !(self.rate >= 0.0 && self.rate.is_finite()) {
            return Err(FloodError::Bounds(
                "--rate must be a non-negative number".into(),
            ));
        }
        if self.workers > spec::MAX_WORKERS || self.sources > spec::MAX_SOURCES {
            return Err(FloodError::Bounds(format!(
                "--workers at most {}, --sources at most {}",
                spec::MAX_WORKERS,
                spec::MAX_SOURCES
            )));
        }
        if self.workers == 0 {
            let hard = nofile_hard();
            self.workers =
                spec::workers_needed(self.connections, hard.saturating_sub(WORKER_FD_RESERVE));
        }
        if self.sources == 0 {
            self.sources = if matches!(self.target.ip(), std::net::IpAddr::V4(v) if v.octets()[0] == 127)
            {
                spec::sources_needed(self.connections, port_range_size())
            } else {
                1
            };
        }
        Ok(self)
    }

    /// The specs of the workers, sharing connections and rate evenly.
    pub fn worker_specs(&self) -> Result<Vec<WorkerSpec>, FloodError> {
        let sources = spec::source_addresses(&self.target, self.sources)?;
        Ok(spec::split(self.connections, self.workers)
            .into_iter()
            .enumerate()
            .map(|(i, n)| WorkerSpec {
                index: i as u32,
                target: self.target,
                mode: self.mode,
                connections: n,
                rate: self.rate / self.workers.max(1) as f64,
                concurrency: self.concurrency.max(1),
                sources: sources.clone(),
                duration_ms: self.duration.as_millis() as u64,
                timeout_ms: self.timeout.as_millis() as u64,
                settle_ms: self.settle.as_millis() as u64,
                fail_streak: self.fail_streak.max(1),
                bomb_ms: self.bomb.as_millis() as u64,
                window: self.window.max(1),
                ping: self.ping,
                total_connections: self.connections,
                raise_nofile: true,
                proto: self.proto.clone(),
            })
            .collect())
    }
}

/// Kills workers still running when the flood ends early (error, panic).
struct Workers(Vec<Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            if matches!(c.try_wait(), Ok(None)) {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
    }
}

/// Runs the flood: `worker_cmd(spec_json)` must start a process that calls
/// [`worker_main`] with that JSON. `on_opened` sees the open-phase report
/// while every session is still held (to read the server's state at peak).
pub fn run(
    plan: &Plan,
    worker_cmd: impl Fn(&str) -> Command,
    on_opened: impl FnOnce(&FloodReport),
) -> Result<FloodReport, FloodError> {
    run_observed(plan, worker_cmd, &mut NoObserver, on_opened)
}

/// [`run`], watching the server through `observer` (see the module doc).
pub fn run_observed(
    plan: &Plan,
    worker_cmd: impl Fn(&str) -> Command,
    observer: &mut dyn Observer,
    on_opened: impl FnOnce(&FloodReport),
) -> Result<FloodReport, FloodError> {
    let specs = plan.worker_specs()?;
    let (tx, rx) = mpsc::channel::<(u32, Option<String>)>();
    let mut workers = Workers(Vec::new());
    for s in &specs {
        let json = serde_json::to_string(s).expect("spec serialises");
        let mut child = worker_cmd(&json)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(FloodError::Spawn)?;
        let out = child.stdout.take().expect("piped");
        let tx = tx.clone();
        let idx = s.index;
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                match line {
                    Ok(l) => {
                        if tx.send((idx, Some(l))).is_err() {
                            return;
                        }
                    }
                    Err(_) => break,
                }
            }
            let _ = tx.send((idx, None));
        });
        workers.0.push(child);
    }
    drop(tx);

    let mut view = ServerView::default();
    let slack = plan.timeout + Duration::from_secs(10);
    let opened = {
        let mut look = || {
            if let Some(q) = observer.accept_queue() {
                view.queue_peak = Some(view.queue_peak.unwrap_or(0).max(q.depth));
            }
            if view.server_at_nofile.is_none() {
                view.server_at_nofile = observer.server_at_nofile();
            }
        };
        collect(
            &rx,
            specs.len(),
            Instant::now() + plan.duration + slack,
            &mut workers,
            &mut look,
        )?
    };
    // Every connection is still held: this is the server at the breaking point.
    view.queue_at_break = observer.accept_queue();
    // Only connect mode needs the server's side counted (the other modes
    // hear from every connection); at a million it is a dump of a million.
    let connect = plan.mode == Mode::Connect;
    if connect {
        view.accepted_at_break = observer.accepted();
    }
    if view.server_at_nofile.is_none() {
        view.server_at_nofile = observer.server_at_nofile();
    }
    let merge = |finals: &[WorkerReport], view: &ServerView| {
        let mut r = FloodReport::merge(
            plan.target,
            plan.mode,
            plan.sources,
            plan.connections,
            &opened,
            finals,
        );
        r.observe(view);
        r
    };
    let mut open_view = view.clone();
    open_view.queue_end = view.queue_at_break;
    open_view.accepted_end = view.accepted_at_break;
    on_opened(&merge(&[], &open_view));
    std::thread::sleep(plan.hold);
    for c in &mut workers.0 {
        if let Some(stdin) = c.stdin.as_mut() {
            let _ = stdin.write_all(b"go\n").and_then(|_| stdin.flush());
        }
    }
    let finals = collect(
        &rx,
        specs.len(),
        Instant::now() + plan.bomb + slack * 3,
        &mut workers,
        &mut || {},
    )?;
    // The workers hold everything until released: the backlog as it stays.
    view.queue_end = observer.accept_queue();
    if connect {
        view.accepted_end = observer.accepted();
    }
    for c in &mut workers.0 {
        drop(c.stdin.take());
    }
    // Released, they close everything and exit; the ones that do not in
    // time are killed when `workers` drops.
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end
        && workers
            .0
            .iter_mut()
            .any(|c| matches!(c.try_wait(), Ok(None)))
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(merge(&finals, &view))
}

/// One report from each worker, in index order, before `deadline`.
/// `tick` runs every [`SAMPLE_EVERY`] while waiting.
fn collect(
    rx: &mpsc::Receiver<(u32, Option<String>)>,
    n: usize,
    deadline: Instant,
    workers: &mut Workers,
    tick: &mut dyn FnMut(),
) -> Result<Vec<WorkerReport>, FloodError> {
    let mut got: Vec<Option<WorkerReport>> = vec![None; n];
    let mut next_tick = Instant::now();
    while got.iter().any(Option::is_none) {
        if Instant::now() >= next_tick {
            tick();
            next_tick = Instant::now() + SAMPLE_EVERY;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let wait = left.min(next_tick.saturating_duration_since(Instant::now()));
        let (idx, line) = match rx.recv_timeout(wait) {
            Ok(m) => m,
            Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => continue,
            Err(_) => {
                let missing = got.iter().position(Option::is_none).unwrap_or(0) as u32;
                return Err(FloodError::Worker(
                    missing,
                    "no report before the deadline".into(),
                ));
            }
        };
        let Some(line) = line else {
            // A worker that already reported in this phase may end (and
            // close its pipe) while others are still at work.
            if got[idx as usize].is_some() {
                continue;
            }
            let status = workers.0[idx as usize]
                .wait()
                .map(|s| s.to_string())
                .unwrap_or_default();
            return Err(FloodError::Worker(
                idx,
                format!("exited without a report ({status})"),
            ));
        };
        let r: WorkerReport = serde_json::from_str(&line)
            .map_err(|e| FloodError::Worker(idx, format!("unreadable report: {e}")))?;
        got[idx as usize] = Some(r);
    }
    Ok(got.into_iter().map(|r| r.expect("all present")).collect())
}

/// Entry point of a worker process: the spec as JSON, reports to stdout,
/// `go` from stdin.
pub fn worker_main(spec_json: &str) -> io::Result<()> {
    let spec: WorkerSpec = serde_json::from_str(spec_json).map_err(|e| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("bad worker spec: {e}"))
    })?;
    crate::worker::run(
        spec,
        |r| {
            let mut out = io::stdout().lock();
            serde_json::to_writer(&mut out, r)?;
            out.write_all(b"\n")?;
            out.flush()
        },
        || {
            let mut line = String::new();
            io::stdin().lock().read_line(&mut line)?;
            match line.trim() {
                "go" => Ok(()),
                other => Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("expected go, got {other:?}"),
                )),
            }
        },
        || {
            // Released when the orchestrator closes our stdin (or dies).
            let mut rest = Vec::new();
            let _ = io::stdin().lock().read_to_end(&mut rest);
        },
    )
}

fn nofile_hard() -> u64 {
    headroom_host::process::nofile().map_or(0, |l| l.hard)
}

/// net.ipv4.ip_local_port_range in this namespace, `None` when unreadable.
pub fn port_range() -> Option<(u16, u16)> {
    port_range_at(&Host::system())
}

/// net.ipv4.ip_local_port_range as `host` shows it, `None` when unreadable.
pub fn port_range_at(host: &Host) -> Option<(u16, u16)> {
    let (lo, hi) = host.sysctl_pair("net.ipv4.ip_local_port_range").ok()?;
    Some((u16::try_from(lo).ok()?, u16::try_from(hi).ok()?))
}

/// Size of net.ipv4.ip_local_port_range in this namespace.
pub fn port_range_size() -> u64 {
    port_range_size_at(&Host::system())
}

/// Size of net.ipv4.ip_local_port_range as `host` shows it (the kernel's
/// default range when unreadable).
fn port_range_size_at(host: &Host) -> u64 {
    port_range_at(host).map_or(28_232, |(lo, hi)| u64::from(hi) + 1 - u64::from(lo))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan {
            target: "127.0.0.1:9".parse().unwrap(),
            mode: Mode::Mcp,
            connections: 100_000,
            rate: 20_000.0,
            concurrency: 64,
            sources: 0,
            workers: 0,
            duration: Duration::from_secs(30),
            timeout: Duration::from_secs(2),
            settle: Duration::from_millis(50),
            fail_streak: 100,
            hold: Duration::ZERO,
            bomb: Duration::from_secs(5),
            window: 16,
            ping: true,
            allow_netns_target: false,
            proto: ProtoOptions::default(),
        }
    }

    /// A fixture tree whose port range is `range`.
    fn host_with_ports(range: &str) -> (tempfile::TempDir, Host) {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("proc/sys/net/ipv4");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ip_local_port_range"), range).unwrap();
        let host = Host::at(t.path());
        (t, host)
    }

    #[test]
    fn port_range_reads_the_fixture_and_falls_back() {
        let (_t, host) = host_with_ports("32768\t60999\n");
        assert_eq!(port_range_at(&host), Some((32768, 60999)));
        assert_eq!(port_range_size_at(&host), 28_232);
        let (_t, host) = host_with_ports("20000 20999\n");
        assert_eq!(port_range_size_at(&host), 1000);
        let (_t, host) = host_with_ports("1024 70000\n");
        assert_eq!(port_range_at(&host), None);
        let (_t, host) = host_with_ports("garbage\n");
        assert_eq!(port_range_at(&host), None);
        assert_eq!(port_range_size_at(&host), 28_232);
    }

    #[test]
    fn resolve_sizes_workers_and_sources() {
        let (_t, host) = host_with_ports("32768\t60999\n");
        let p = plan()
            .resolve_with(|| 4096, || port_range_size_at(&host))
            .unwrap();
        // 100,000 connections at 4096 - 64 descriptors per worker.
        assert_eq!(p.workers, 25);
        assert_eq!(
            p.workers,
            spec::workers_needed(100_000, 4096 - WORKER_FD_RESERVE)
        );
        // 28,232 ports, a quarter of them per source address.
        assert_eq!(p.sources, 15);
        assert_eq!(p.sources, spec::sources_needed(100_000, 28_232));
        let specs = p.worker_specs().unwrap();
        assert_eq!(specs.iter().map(|s| s.connections).sum::<u64>(), 100_000);
        assert_eq!(specs[0].rate, 20_000.0 / p.workers as f64);
        let want = if p.sources > 1 { p.sources as usize } else { 0 };
        assert_eq!(specs[0].sources.len(), want);
    }

    #[test]
    fn resolve_refuses_out_of_bounds() {
        let mut p = plan();
        p.connections = spec::MAX_CONNECTIONS + 1;
        assert!(matches!(p.resolve(), Err(FloodError::Bounds(_))));
        let mut p = plan();
        p.target = "192.0.2.1:80".parse().unwrap();
        assert!(matches!(
            p.resolve(),
            Err(FloodError::Target(TargetError::NotLoopback(_)))
        ));
        let mut p = plan();
        p.duration = Duration::from_secs(3600);
        assert!(matches!(p.resolve(), Err(FloodError::Bounds(_))));
        let mut p = plan();
        p.mode = Mode::Http;
        p.proto.http_path = Some("/\r\nX-Injected: 1".into());
        assert!(matches!(p.resolve(), Err(FloodError::Bounds(m)) if m.contains("--http-path")));
    }
}
