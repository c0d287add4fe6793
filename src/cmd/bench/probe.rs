//! `headroom bench probe`: what attaching the eBPF probe costs a server at
//! full load, and whether the probe loses events at 20,000 new connections
//! per second.
//!
//! The probe runs in this process the way `headroom probe --port P` runs:
//! programs loaded and attached, and once per interval a poll snapshot of
//! the target with the eBPF maps read over it. "Off" rounds have no program
//! attached at all (the probe is dropped, which detaches every link).

use anyhow::{bail, Context};
use headroom_core::{Snapshot, TcpState};
use headroom_flood::bench::{
    self, churn, cpu_seconds_with, drop_percent, median, Acceptor, ChildServer, Churn,
};
use headroom_probe::ebpf::{filter_for, EbpfExtras, EbpfProbe, Options, ProgramStats, RunStats};
use headroom_probe::{PollSource, Target};
use serde_json::{json, Value};
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
            poll: PollSource::new().incremental(headroom_probe::DEFAULT_RESYNC),
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

fn listen_overflows() -> u64 {
    std::fs::read_to_string("/proc/net/netstat")
        .ok()
        .and_then(|t| headroom_probe::poll::netstat::parse_netstat(&t).ok())
        .map_or(0, |n| n.listen_overflows)
}

/// Off/on rounds against one `headroom serve`: steady echo load, then churn.
fn overhead(o: &Opts) -> anyhow::Result<(Value, Value, Value)> {
    let srv = ChildServer::serve(&[])?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut steady: [Vec<bench::Throughput>; 2] = [Vec::new(), Vec::new()];
    let mut churns: [Vec<Churn>; 2] = [Vec::new(), Vec::new()];
    // CPU microseconds per call and per connection, per round.
    let mut cpu_call: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut cpu_conn: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let pid = srv.pid();
    let mut reads = 0;
    for round in 0..o.rounds * 2 {
        let on = round % 2 == 1;
        let probe = if on {
            Some(Attached::start(srv.addr.port(), o.interval, o.options)?)
        } else {
            None
        };
        let c0 = cpu_seconds_with(pid);
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
        let c1 = cpu_seconds_with(pid);
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
            cpu_conn[on as usize].push((cpu_seconds_with(pid) - c1) * 1e6 / c.made.max(1) as f64);
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
fn attribute(o: &Opts, srv: &ChildServer, rt: &tokio::runtime::Runtime) -> anyhow::Result<Value> {
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
    while acc.accepted() < c.made && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let (snap, x, reads) = probe.finish()?;
    let accepted = acc.accepted();
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
