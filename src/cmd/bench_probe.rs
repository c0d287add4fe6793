//! `headroom bench probe`: what attaching the eBPF probe costs a server at
//! full load, and whether the probe loses events at 20,000 new connections
//! per second (issue 4, performance).
//!
//! The probe runs in this process the way `headroom probe --port P` runs:
//! programs loaded and attached, and once per interval a poll snapshot of
//! the target with the eBPF maps read over it. "Off" rounds have no program
//! attached at all (the probe is dropped, which detaches every link).

use anyhow::{bail, Context};
use headroom_core::{Snapshot, TcpState};
use headroom_probe::ebpf::{filter_for, EbpfExtras, EbpfProbe, Options, ProgramStats, RunStats};
use headroom_probe::{PollSource, Target};
use headroom_server::bench;
use serde_json::{json, Value};
use socket2::{Domain, Socket, Type};
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What `headroom bench probe` is asked to do.
#[derive(Debug, Clone)]
pub struct Opts {
    /// Rounds per condition (off and on alternate: off, on, off, on, ...).
    pub rounds: usize,
    /// Length of each steady-load round.
    pub seconds: f64,
    pub sessions: usize,
    pub in_flight: usize,
    /// Length of each churn round (connect + reset, as fast as possible); 0 skips churn.
    pub churn_seconds: f64,
    /// Connections opened in the no-drop run.
    pub connections: u64,
    /// Their target rate, per second over all client threads (0: as fast as possible).
    pub rate: f64,
    /// Client threads opening connections (churn and no-drop).
    pub threads: usize,
    /// The probe's refresh interval (`headroom probe --interval`).
    pub interval: Duration,
    /// What is attached beyond the default set (`headroom probe --time-wait-events`).
    pub options: Options,
}

/// How the probe is attached, for the report.
const ATTACH: &str = "in-process: the headroom-probe crate's EbpfProbe loaded and attached, \
and every interval a PollSource snapshot of the target port with the eBPF maps read over it, \
as `headroom probe --port P` does";

/// The probe as `headroom probe --port P` runs it.
struct Watcher {
    poll: PollSource,
    ebpf: EbpfProbe,
    target: Target,
    port: u16,
    reads: u64,
}

impl Watcher {
    fn read(&mut self) -> anyhow::Result<(Snapshot, EbpfExtras)> {
        let mut snap = self.poll.snapshot(&self.target)?;
        for p in &snap.processes {
            self.ebpf.watch_pid(p.pid, p.open_fds)?;
        }
        let filter = filter_for(&snap, Some(self.port));
        let extras = self.ebpf.overlay(&mut snap, &filter)?;
        self.reads += 1;
        Ok((snap, extras))
    }
}

/// An attached probe refreshing in its own thread until [`Attached::finish`].
struct Attached {
    watcher: Arc<Mutex<Watcher>>,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<Option<String>>>,
    tracepoints: Vec<String>,
}

impl Attached {
    /// Run count and time of each program so far.
    fn program_stats(&self) -> anyhow::Result<Vec<ProgramStats>> {
        Ok(self
            .watcher
            .lock()
            .expect("watcher lock")
            .ebpf
            .program_stats()?)
    }

    fn start(port: u16, interval: Duration, options: Options) -> anyhow::Result<Attached> {
        let mut ebpf =
            EbpfProbe::load_with(false, options).context("headroom bench probe needs eBPF")?;
        ebpf.watch_port(port)?;
        let tracepoints = ebpf.attached().to_vec();
        let mut w = Watcher {
            // As `headroom probe` polls once eBPF is on.
            poll: PollSource::new().incremental(super::top::RESYNC),
            ebpf,
            target: Target::Port(port),
            port,
            reads: 0,
        };
        // The first read registers the target's pids, as `headroom probe` does.
        w.read()?;
        let watcher = Arc::new(Mutex::new(w));
        let (tx, rx) = mpsc::channel::<()>();
        let w2 = Arc::clone(&watcher);
        let thread = std::thread::spawn(move || loop {
            match rx.recv_timeout(interval) {
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Err(e) = w2.lock().expect("watcher lock").read() {
                        return Some(format!("{e:#}"));
                    }
                }
                _ => return None,
            }
        });
        Ok(Attached {
            watcher,
            stop: Some(tx),
            thread: Some(thread),
            tracepoints,
        })
    }

    /// Stops refreshing, takes one last reading, and detaches (on drop).
    fn finish(mut self) -> anyhow::Result<(Snapshot, EbpfExtras, u64)> {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            if let Some(e) = t.join().expect("probe thread") {
                bail!("the probe failed while refreshing: {e}");
            }
        }
        let mut w = self.watcher.lock().expect("watcher lock");
        let (snap, x) = w.read()?;
        Ok((snap, x, w.reads))
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `headroom serve` as a child, killed on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start() -> anyhow::Result<Server> {
        let exe = std::env::current_exe().context("locating the headroom binary")?;
        let mut child = Command::new(exe)
            .args(["serve", "--listen", "127.0.0.1:0", "--json"])
            .args(["--idle-timeout", "3600"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting headroom serve")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line)?;
        let mut s = Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let v: Value =
            serde_json::from_str(&line).with_context(|| format!("server ready line {line:?}"))?;
        s.addr = v["listen"].as_str().context("no listen address")?.parse()?;
        Ok(s)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a connect-and-reset run did.
#[derive(Debug, Default, Clone, Copy)]
struct Churn {
    made: u64,
    failed: u64,
    seconds: f64,
}

/// One connection: bind a loopback source (port picked at connect), connect,
/// close with SO_LINGER 0 so neither end keeps TIME_WAIT or a port.
fn connect_reset(src: IpAddr, target: SocketAddr) -> std::io::Result<()> {
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
fn churn(target: SocketAddr, threads: usize, total: u64, rate: f64, duration: Duration) -> Churn {
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

/// CPU seconds (user + system) used so far by this process (load client,
/// churn threads, probe refresh) and by the server child: on a host where
/// both run flat out, throughput lost to the probe shows up as CPU per call
/// gained, and that ratio is far less disturbed by other work on the host
/// than calls per second are.
fn cpu_seconds(server: u32) -> f64 {
    let own = super::bench::cpu_seconds();
    // /proc/PID/stat fields 14 and 15, in clock ticks, after the ")" of comm.
    let child = std::fs::read_to_string(format!("/proc/{server}/stat"))
        .ok()
        .and_then(|t| {
            let rest = t.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?)
        })
        .unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    own + child / hz
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn drop_percent(off: f64, on: f64) -> f64 {
    if off > 0.0 {
        (off - on) / off * 100.0
    } else {
        0.0
    }
}

fn listen_overflows() -> u64 {
    std::fs::read_to_string("/proc/net/netstat")
        .ok()
        .and_then(|t| headroom_probe::poll::netstat::parse_netstat(&t).ok())
        .map_or(0, |n| n.listen_overflows)
}

/// Off/on rounds against one `headroom serve`: steady echo load, then churn.
fn overhead(o: &Opts) -> anyhow::Result<(Value, Value, Value)> {
    let srv = Server::start()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut steady: [Vec<bench::Throughput>; 2] = [Vec::new(), Vec::new()];
    let mut churns: [Vec<Churn>; 2] = [Vec::new(), Vec::new()];
    // CPU microseconds per call and per connection, per round.
    let mut cpu_call: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut cpu_conn: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let pid = srv.child.id();
    let mut reads = 0;
    for round in 0..o.rounds * 2 {
        let on = round % 2 == 1;
        let probe = if on {
            Some(Attached::start(srv.addr.port(), o.interval, o.options)?)
        } else {
            None
        };
        let c0 = cpu_seconds(pid);
        let t = rt
            .block_on(bench::throughput(
                srv.addr,
                o.sessions,
                o.in_flight,
                Duration::from_secs_f64(o.seconds),
                bench::ECHO_CALL,
                true,
            ))
            .context("echo load")?;
        let c1 = cpu_seconds(pid);
        cpu_call[on as usize].push((c1 - c0) * 1e6 / t.calls.max(1) as f64);
        steady[on as usize].push(t);
        if o.churn_seconds > 0.0 {
            let c = churn(
                srv.addr,
                o.threads,
                u64::MAX,
                0.0,
                Duration::from_secs_f64(o.churn_seconds),
            );
            cpu_conn[on as usize].push((cpu_seconds(pid) - c1) * 1e6 / c.made.max(1) as f64);
            churns[on as usize].push(c);
        }
        if let Some(p) = probe {
            reads += p.finish()?.2;
        }
    }
    let attributed = attribute(o, &srv, &rt)?;
    let side = |v: &[bench::Throughput], cpu: &[f64]| {
        let cps: Vec<f64> = v.iter().map(|t| t.calls_per_second).collect();
        let p99: Vec<f64> = v.iter().map(|t| t.p99_us).collect();
        json!({
            "calls_per_second": median(&cps),
            "p99_us": median(&p99),
            "cpu_us_per_call": median(cpu),
            "rounds": v.iter().zip(cpu).map(|(t, c)| {
                let mut r = serde_json::to_value(t).expect("plain struct");
                r["cpu_us_per_call"] = json!(c);
                r
            }).collect::<Vec<_>>(),
        })
    };
    let (off, on) = (
        side(&steady[0], &cpu_call[0]),
        side(&steady[1], &cpu_call[1]),
    );
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(0.0);
    let steady = json!({
        "seconds_per_round": o.seconds,
        "sessions": o.sessions,
        "in_flight": o.in_flight,
        "drop_percent": drop_percent(f(&off, "calls_per_second"), f(&on, "calls_per_second")),
        "p99_increase_percent": -drop_percent(f(&off, "p99_us"), f(&on, "p99_us")),
        "cpu_per_call_increase_percent":
            -drop_percent(f(&off, "cpu_us_per_call"), f(&on, "cpu_us_per_call")),
        "probe_reads": reads,
        "off": off,
        "on": on,
    });
    let churn_side = |v: &[Churn], cpu: &[f64]| {
        let rates: Vec<f64> = v.iter().map(|c| c.made as f64 / c.seconds).collect();
        json!({
            "connections_per_second": median(&rates),
            "cpu_us_per_connection": median(cpu),
            "rounds": v.iter().zip(cpu).map(|(c, cpu)| json!({
                "made": c.made, "failed": c.failed, "seconds": c.seconds,
                "connections_per_second": c.made as f64 / c.seconds,
                "cpu_us_per_connection": cpu,
            })).collect::<Vec<_>>(),
        })
    };
    let churn = if o.churn_seconds > 0.0 {
        let (off, on) = (
            churn_side(&churns[0], &cpu_conn[0]),
            churn_side(&churns[1], &cpu_conn[1]),
        );
        json!({
            "seconds_per_round": o.churn_seconds,
            "threads": o.threads,
            "drop_percent": drop_percent(
                f(&off, "connections_per_second"),
                f(&on, "connections_per_second"),
            ),
            "cpu_per_connection_increase_percent": -drop_percent(
                f(&off, "cpu_us_per_connection"),
                f(&on, "cpu_us_per_connection"),
            ),
            "off": off,
            "on": on,
        })
    } else {
        Value::Null
    };
    Ok((steady, churn, attributed))
}

/// Where the "on" time goes: one more attached round with the kernel's
/// per-program run statistics on (they cost two clock reads per run, so
/// this round is not one of the compared ones).
fn attribute(o: &Opts, srv: &Server, rt: &tokio::runtime::Runtime) -> anyhow::Result<Value> {
    let probe = Attached::start(srv.addr.port(), o.interval, o.options)?;
    let _stats = RunStats::enable()?;
    let mut out = serde_json::Map::new();
    let s0 = probe.program_stats()?;
    let t0 = Instant::now();
    let t = rt.block_on(bench::throughput(
        srv.addr,
        o.sessions,
        o.in_flight,
        Duration::from_secs_f64(o.seconds),
        bench::ECHO_CALL,
        true,
    ))?;
    let s1 = probe.program_stats()?;
    out.insert(
        "steady".into(),
        cost(&s0, &s1, t0.elapsed().as_secs_f64(), t.calls, "per_call"),
    );
    if o.churn_seconds > 0.0 {
        let t0 = Instant::now();
        let c = churn(
            srv.addr,
            o.threads,
            u64::MAX,
            0.0,
            Duration::from_secs_f64(o.churn_seconds),
        );
        let s2 = probe.program_stats()?;
        out.insert(
            "churn".into(),
            cost(
                &s1,
                &s2,
                t0.elapsed().as_secs_f64(),
                c.made,
                "per_connection",
            ),
        );
    }
    probe.finish()?;
    Ok(Value::Object(out))
}

/// Program runs and run time between two readings, per second of `wall`
/// and per unit of work (`units` calls or connections).
fn cost(a: &[ProgramStats], b: &[ProgramStats], wall: f64, units: u64, per: &str) -> Value {
    let mut programs = serde_json::Map::new();
    let (mut runs, mut ns) = (0u64, 0u64);
    for p in b {
        let before = a.iter().find(|q| q.program == p.program);
        let r = p.runs - before.map_or(0, |q| q.runs);
        let t = (p.run_time - before.map_or(Duration::ZERO, |q| q.run_time)).as_nanos() as u64;
        runs += r;
        ns += t;
        programs.insert(
            p.program.clone(),
            json!({
                "runs_per_second": r as f64 / wall,
                "ns_per_run": if r > 0 { t as f64 / r as f64 } else { 0.0 },
            }),
        );
    }
    let units = units.max(1) as f64;
    json!({
        "seconds": wall,
        "programs": programs,
        "runs_per_second": runs as f64 / wall,
        format!("runs_{per}"): runs as f64 / units,
        format!("program_ns_{per}"): ns as f64 / units,
        // Time inside the programs only: the tracepoint dispatch around them
        // (and the syscall-exit slow path every task takes while any
        // syscalls:* tracepoint is on) is not in it.
        "program_percent_of_one_core": ns as f64 / 1e9 / wall * 100.0,
    })
}

/// A listener accepting and closing as fast as it can, in this process.
struct Acceptor {
    listener: Arc<Socket>,
    addr: SocketAddr,
    accepted: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Acceptor {
    fn start(threads: usize) -> anyhow::Result<Acceptor> {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
        s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
        // Capped by net.core.somaxconn (4096 by default).
        s.listen(4096)?;
        let addr = s.local_addr()?.as_socket().context("listener address")?;
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

/// Opens `connections` at `rate` against an accepting listener with the
/// probe attached, then checks every connection was counted and none dropped.
fn no_drop(o: &Opts) -> anyhow::Result<(Value, Vec<String>)> {
    // Listen before the probe loads: it seeds the port's LISTEN socket.
    let acc = Acceptor::start(2)?;
    let probe = Attached::start(acc.addr.port(), o.interval, o.options)?;
    let tracepoints = probe.tracepoints.clone();
    let overflows0 = listen_overflows();
    let c = churn(
        acc.addr,
        o.threads,
        o.connections,
        o.rate,
        Duration::from_secs(600),
    );
    // Every connection made has to reach accept(); bounded wait.
    let deadline = Instant::now() + Duration::from_secs(10);
    while acc.accepted.load(Ordering::Relaxed) < c.made && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let (snap, x, reads) = probe.finish()?;
    let accepted = acc.accepted.load(Ordering::Relaxed);
    let overflows = listen_overflows() - overflows0;
    let port = acc.addr.port();
    drop(acc);
    let entered = |s: TcpState| x.transitions.get(&s).copied().unwrap_or(0);
    let dropped: serde_json::Map<String, Value> = x
        .dropped
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let dropped_total: u64 = x.dropped.iter().map(|(_, v)| v).sum();
    let listener = snap.listeners.iter().find(|l| l.port == port);
    let established = entered(TcpState::Established);
    let doc = json!({
        "target_rate": o.rate,
        "connections": o.connections,
        "threads": o.threads,
        "made": c.made,
        "failed": c.failed,
        "seconds": c.seconds,
        "connections_per_second": c.made as f64 / c.seconds,
        "accepted": accepted,
        "listen_overflows": overflows,
        "probe": {
            "reads": reads,
            "established_transitions": established,
            "syn_recv_transitions": entered(TcpState::SynRecv),
            "close_transitions": entered(TcpState::Close),
            "queue_full_events": listener.and_then(|l| l.queue_full_events),
            "accept_queue_limit": listener.map(|l| l.accept_queue_limit),
            "dropped": dropped,
            "dropped_total": dropped_total,
        },
        "target_rate_reached": o.rate > 0.0 && c.made as f64 / c.seconds >= o.rate * 0.99,
        "every_connection_counted": established == c.made && accepted == c.made,
    });
    Ok((doc, tracepoints))
}

/// Runs everything and returns the `probe` object of the report.
pub fn run(o: &Opts) -> anyhow::Result<Value> {
    let finite_at_least = |x: f64, min: f64| x.is_finite() && x >= min;
    if o.threads == 0
        || !finite_at_least(o.seconds, 0.001)
        || !finite_at_least(o.churn_seconds, 0.0)
    {
        bail!("--threads and --seconds must be above 0 (--rounds 0 skips the overhead rounds, --churn-seconds 0 the churn)");
    }
    if !finite_at_least(o.rate, 0.0) {
        bail!("--rate must be 0 (as fast as possible) or a positive number");
    }
    let (steady, churn, attributed) = if o.rounds > 0 {
        overhead(o)?
    } else {
        (Value::Null, Value::Null, Value::Null)
    };
    let (no_drop, tracepoints) = no_drop(o)?;
    Ok(json!({
        "attach": ATTACH,
        "interval_seconds": o.interval.as_secs_f64(),
        "time_wait_events": o.options.time_wait_events,
        "tracepoints": tracepoints,
        "rounds_per_condition": o.rounds,
        "order": "off,on alternating, starting with off",
        "steady": steady,
        "churn": churn,
        "program_cost": attributed,
        "no_drop": no_drop,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_drops() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
        assert_eq!(drop_percent(200.0, 194.0), 3.0);
        assert_eq!(drop_percent(0.0, 5.0), 0.0);
    }
}
