//! `headroom probe`: watch a target's fds, sockets and accept queues with
//! eBPF (or /proc + sock_diag polling when eBPF is off), print snapshots and
//! serve them as Prometheus metrics.

use super::CmdResult;
use anyhow::Context;
use headroom_core::{predict, ModelConfig, Snapshot, SCHEMA_VERSION};
use headroom_probe::ebpf::{EbpfExtras, EbpfProbe, Filter, Options};
use headroom_probe::export::{self, Reading};
use headroom_probe::{PollSource, Target};
use serde_json::json;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// The process to watch (default: this headroom process; listeners and
    /// fd errors are then shown for the whole network namespace).
    #[arg(long, conflicts_with = "port")]
    pub pid: Option<u32>,
    /// Watch every process listening on this TCP port (this network namespace).
    #[arg(long)]
    pub port: Option<u16>,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Watch for one interval, print one snapshot and exit.
    #[arg(long)]
    pub once: bool,
    /// Print JSON (one object per interval) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Do not load eBPF programs: poll /proc and sock_diag only.
    #[arg(long)]
    pub no_ebpf: bool,
    /// Also follow TIME_WAIT sockets through the kernel's timer events, for
    /// exact TIME_WAIT transitions. Costs a loaded server 4-6% of its throughput
    /// (every kernel timer fires them); by default TIME_WAIT is counted by
    /// sock_diag at each sample (a TIME_WAIT socket lives 60 s: none is missed).
    #[arg(long, conflicts_with = "no_ebpf")]
    pub time_wait_events: bool,
    /// Seconds between samples (peaks are "since the previous sample").
    #[arg(long, value_name = "S", default_value_t = 1.0)]
    pub interval: f64,
    #[command(flatten)]
    pub app: super::AppArgs,
}

struct Watch {
    target: Target,
    port: Option<u16>,
    all: bool,
    poll: PollSource,
    ebpf: Option<EbpfProbe>,
    off_reason: Option<String>,
    /// How the server behind the target is read (its own cap), when the
    /// target is a server and not this probe itself.
    apps: Option<headroom_apps::Options>,
}

impl Watch {
    /// One reading: poll, then overlay what eBPF saw since the last one.
    fn read(&mut self) -> anyhow::Result<Reading> {
        let mut snap: Snapshot = self
            .poll
            .snapshot(&self.target)
            .with_context(|| format!("cannot read {}", self.target))?;
        let mut extras: Option<EbpfExtras> = None;
        if let Some(ebpf) = self.ebpf.as_mut() {
            let mut filter = Filter::default();
            if !self.all {
                filter.pids = snap.processes.iter().map(|p| p.pid).collect();
                filter.ports = match self.port {
                    Some(p) => vec![p],
                    None => snap.listeners.iter().map(|l| l.port).collect(),
                };
                if filter.ports.is_empty() {
                    filter.ports.push(0); // a process without listeners: no port of its own
                }
            }
            for p in &snap.processes {
                if let Err(e) = ebpf.watch_pid(p.pid, p.open_fds) {
                    snap.source_note = Some(format!("fd peaks unavailable: {e}"));
                }
            }
            match ebpf.overlay(&mut snap, &filter) {
                Ok(x) => extras = Some(x),
                Err(e) => {
                    snap.source_note = Some(format!("eBPF read failed: {e}"));
                    self.off_reason = Some(e.to_string());
                }
            }
        } else if let Some(why) = &self.off_reason {
            snap.source_note = Some(format!("eBPF off: {why}"));
        }
        if let Some(opts) = &self.apps {
            snap.app = Some(headroom_apps::inspect(&snap, opts));
        }
        let prediction = predict(&snap, &ModelConfig::default());
        Ok(Reading {
            snapshot: snap,
            prediction,
            ebpf: extras,
            ebpf_off_reason: self.off_reason.clone(),
            target_up: true,
        })
    }
}

pub fn run(args: Args) -> CmdResult {
    if !(args.interval.is_finite() && args.interval > 0.0 && args.interval <= 3600.0) {
        anyhow::bail!(
            "--interval must be between 0 and 3600 seconds, got {}",
            args.interval
        );
    }
    let (target, all) = match (args.pid, args.port) {
        (_, Some(port)) => (Target::Port(port), false),
        (Some(pid), None) => (Target::Pid(pid), false),
        (None, None) => (Target::Pid(std::process::id()), true),
    };
    let mut watch = Watch {
        target,
        port: args.port,
        all,
        poll: PollSource::new(),
        ebpf: None,
        off_reason: None,
        apps: if all { None } else { Some(args.app.options()?) },
    };
    // Resolve the target first: a wrong pid or port is an error, not a probe.
    watch.read()?;
    let options = Options {
        time_wait_events: args.time_wait_events,
    };
    let status = match EbpfProbe::load_with(args.no_ebpf, options) {
        Ok(mut p) => {
            if let Some(port) = args.port {
                p.watch_port(port).context("watch port")?;
            }
            let status = format!(
                "eBPF on ({} tracepoints attached), watching {}",
                p.attached().len(),
                watch.target
            );
            watch.ebpf = Some(p);
            // The programs keep the socket states exact between samples, so the
            // poll no longer needs to match every socket to its process at each
            // one: a full pass per resync period, cheap quick passes between.
            watch.poll = PollSource::new().incremental(headroom_probe::DEFAULT_RESYNC);
            status
        }
        Err(e) => {
            watch.off_reason = Some(e.to_string());
            format!(
                "eBPF off: {e}; polling /proc and sock_diag instead, watching {}",
                watch.target
            )
        }
    };
    // The first reading starts the interval (and registers the target's
    // pids for fd tracking) before we say we are watching.
    let shared = Arc::new(Mutex::new(watch.read()?));
    eprintln!("headroom probe: {status}");
    let interval = Duration::from_secs_f64(args.interval);
    if let Some(addr) = args.listen {
        let listener =
            TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
        eprintln!(
            "headroom probe: metrics at http://{}/metrics",
            listener.local_addr()?
        );
        let shared = Arc::clone(&shared);
        serve(listener, shared)?;
    }
    loop {
        std::thread::sleep(interval);
        let reading = match watch.read() {
            Ok(r) => r,
            Err(e) if args.once => return Err(e),
            Err(e) => {
                eprintln!("headroom probe: {e:#}");
                let mut r = shared.lock().expect("reading lock").clone();
                r.target_up = false;
                r
            }
        };
        if args.once || args.json || args.listen.is_none() {
            print(&reading, args.json)?;
        }
        *shared.lock().expect("reading lock") = reading;
        if args.once {
            super::detach_after_exit(watch);
            return Ok(ExitCode::SUCCESS);
        }
    }
}

fn print(r: &Reading, as_json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if as_json {
        let s = &r.snapshot;
        let ebpf = match &r.ebpf {
            Some(x) => json!({
                "enabled": true,
                "attached": x.attached,
                "time_wait_source": x.time_wait_source,
                "dropped": x.dropped.iter().map(|(k, v)| (k.to_string(), *v)).collect::<std::collections::BTreeMap<_, _>>(),
                "transitions": x.transitions.iter().map(|(k, v)| (k.label(), *v)).collect::<std::collections::BTreeMap<_, _>>(),
            }),
            None => json!({ "enabled": false, "reason": r.ebpf_off_reason }),
        };
        let doc = json!({
            "schema_version": SCHEMA_VERSION,
            "source": s.source.as_str(),
            "source_note": s.source_note,
            "ebpf": ebpf,
            "predicted_max_connections": r.prediction.predicted_max_connections,
            "binding": r.prediction.binding,
            "snapshot": s,
            "prediction": r.prediction,
        });
        writeln!(out, "{doc}")?;
    } else {
        let s = &r.snapshot;
        let why = match (&r.ebpf, &r.ebpf_off_reason) {
            (None, Some(why)) => format!(" (eBPF off: {why})"),
            _ => String::new(),
        };
        writeln!(out, "source: {}{why}", s.source.as_str())?;
        for p in &s.processes {
            let lim = p.nofile_soft.map_or("unlimited".into(), |n| n.to_string());
            writeln!(
                out,
                "pid {} {}: fds {} (peak {}) of {lim}",
                p.pid, p.comm, p.open_fds, p.open_fds_peak
            )?;
        }
        for l in &s.listeners {
            let full = l.queue_full_events.map_or("-".into(), |n| n.to_string());
            writeln!(
                out,
                "listener {}: accept queue {} (peak {}) of {}, full {full}",
                l.address, l.accept_queue_depth, l.accept_queue_peak, l.accept_queue_limit
            )?;
        }
        let states: Vec<String> = s
            .sockets
            .iter()
            .map(|(k, v)| format!("{}={v}", k.label()))
            .collect();
        writeln!(out, "tcp: {}", states.join(" "))?;
        for e in &s.fd_errors {
            writeln!(out, "pid {} {} {}: {}", e.pid, e.syscall, e.errno, e.count)?;
        }
        writeln!(
            out,
            "listen overflows {}, predicted max connections {} ({})",
            s.netstat.listen_overflows,
            r.prediction.predicted_max_connections,
            r.prediction.binding
        )?;
    }
    out.flush()?;
    Ok(())
}

/// Serves the latest reading at `/metrics` on a thread of its own, through
/// the same hardened responder as `headroom serve --metrics` (bounded
/// request head, head timeout, scrapes answered at once).
fn serve(listener: TcpListener, shared: Arc<Mutex<Reading>>) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("metrics runtime")?;
    listener.set_nonblocking(true)?;
    let listener = {
        let _entered = rt.enter();
        tokio::net::TcpListener::from_std(listener)?
    };
    std::thread::spawn(move || {
        rt.block_on(headroom_server::exporter::serve(listener, move || {
            let page = export::render(&shared.lock().expect("reading lock"));
            std::future::ready(page)
        }))
    });
    Ok(())
}
