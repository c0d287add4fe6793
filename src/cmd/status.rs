//! `headroom status`: how many more connections a process (or every process
//! on a port) can take, and which limit stops it first. One polled snapshot,
//! the capacity model over it, a table or stable JSON (docs/json.md).

use super::CmdResult;
use anyhow::Context;
use headroom_core::{predict, Constraint, ModelConfig, Prediction, Snapshot, SCHEMA_VERSION};
use headroom_probe::{KernelMemory, PollSource, Probe, Target};
use serde::Serialize;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// The process to look at (default: this headroom process itself);
    /// several (`--pid 1,2` or repeated) are taken as one service.
    #[arg(long, conflicts_with = "port", value_delimiter = ',')]
    pub pid: Vec<u32>,
    /// Look at every process listening on this TCP port (this network namespace).
    #[arg(long)]
    pub port: Option<u16>,
    /// Print stable JSON (schema: docs/json.md) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// File descriptors each process keeps back from connections.
    #[arg(long, value_name = "FDS", default_value_t = ModelConfig::default().fd_reserve)]
    pub reserve: u64,
    /// File descriptors one connection costs (2 for a proxy).
    #[arg(long, value_name = "FDS", default_value_t = ModelConfig::default().fds_per_connection)]
    pub fds_per_connection: u64,
    /// Process memory (RSS) one connection costs; polling cannot measure it.
    #[arg(long, value_name = "BYTES")]
    pub bytes_per_connection: Option<u64>,
    #[command(flatten)]
    pub app: super::AppArgs,
}

/// `status --json`: see docs/json.md. Field order is the documented order.
#[derive(Serialize)]
pub struct StatusJson<'a> {
    pub schema_version: u32,
    pub target: TargetJson,
    pub source: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_note: Option<&'a str>,
    pub pids: Vec<u32>,
    pub connections: u64,
    pub predicted_max_connections: u64,
    pub binding: &'a str,
    /// The server behind the target and its own caps (`kind` `unknown`:
    /// kernel limits only); `application` says it in one line.
    pub app: Option<&'a headroom_core::AppInfo>,
    pub application: Option<String>,
    pub constraints: &'a [Constraint],
    pub next_wall: Option<&'a headroom_core::NextWall>,
    pub listeners: &'a [headroom_core::Listener],
    pub memory_per_connection: MemoryJson<'a>,
    pub model: &'a ModelConfig,
    pub snapshot: &'a Snapshot,
}

#[derive(Serialize)]
pub struct TargetJson {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids: Option<Vec<u32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

#[derive(Serialize)]
pub struct MemoryJson<'a> {
    /// Bytes the model used per connection (process + kernel).
    pub bytes: u64,
    pub process_bytes: u64,
    /// `configured` (--bytes-per-connection) or `default`.
    pub process_bytes_source: &'static str,
    pub kernel_bytes: u64,
    /// `measured` (slabinfo + sockstat) or `default` (not readable).
    pub kernel_bytes_source: &'static str,
    pub kernel: Option<&'a KernelMemory>,
    /// RSS of the target's processes now, summed: the process side of the
    /// memory budget, beside the kernel side below.
    pub rss_bytes: u64,
    /// `kernel_bytes` times the connections held now.
    pub kernel_bytes_for_connections: u64,
}

pub fn run(args: Args) -> CmdResult {
    let target = match (args.pid.as_slice(), args.port) {
        (_, Some(port)) => Target::Port(port),
        ([], None) => Target::Pid(std::process::id()),
        ([pid], None) => Target::Pid(*pid),
        (pids, None) => Target::Pids(pids.to_vec()),
    };
    let cfg = ModelConfig {
        fd_reserve: args.reserve,
        fds_per_connection: args.fds_per_connection.max(1),
        ..ModelConfig::default()
    };
    let mut poll = PollSource::new();
    if let Some(b) = args.bytes_per_connection {
        poll = poll.with_process_bytes_per_connection(b);
    }
    let mut probe = Probe::new(target.clone())
        .with_poll(poll)
        .with_apps(args.app.options()?);
    let snap = probe
        .snapshot()
        .with_context(|| format!("status of {target}"))?;
    let pred = predict(&snap, &cfg);
    let mem = memory_json(
        &snap,
        &cfg,
        args.bytes_per_connection.is_some(),
        probe.kernel_memory(),
    );

    let mut out = std::io::stdout().lock();
    if args.json {
        let doc = StatusJson {
            schema_version: SCHEMA_VERSION,
            target: TargetJson {
                pid: match &target {
                    Target::Pid(p) => Some(*p),
                    _ => None,
                },
                pids: match &target {
                    Target::Pids(ps) => Some(ps.clone()),
                    _ => None,
                },
                port: args.port,
            },
            source: snap.source.as_str(),
            source_note: snap.source_note.as_deref(),
            pids: snap.processes.iter().map(|p| p.pid).collect(),
            connections: pred.connections,
            predicted_max_connections: pred.predicted_max_connections,
            binding: &pred.binding,
            app: snap.app.as_ref(),
            application: snap.app.as_ref().map(|a| a.summary()),
            constraints: &pred.constraints,
            next_wall: pred.next_wall.as_ref(),
            listeners: &snap.listeners,
            memory_per_connection: mem,
            model: &cfg,
            snapshot: &snap,
        };
        serde_json::to_writer_pretty(&mut out, &doc)?;
        writeln!(out)?;
    } else {
        let bold = std::io::stdout().is_terminal();
        write!(out, "{}", render(&target, &snap, &pred, &mem, bold))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn memory_json<'a>(
    snap: &Snapshot,
    cfg: &ModelConfig,
    configured: bool,
    kernel: Option<&'a KernelMemory>,
) -> MemoryJson<'a> {
    let m = snap
        .memory_per_connection
        .unwrap_or(cfg.default_memory_per_connection);
    MemoryJson {
        bytes: m.total(),
        process_bytes: m.process_bytes,
        process_bytes_source: if configured { "configured" } else { "default" },
        kernel_bytes: m.kernel_bytes,
        kernel_bytes_source: if kernel.is_some() {
            "measured"
        } else {
            "default"
        },
        kernel,
        rss_bytes: snap.processes.iter().map(|p| p.rss_bytes).sum(),
        kernel_bytes_for_connections: m.kernel_bytes * snap.connections(),
    }
}

/// The human table. Pure, so its shape is unit-tested.
pub fn render(
    target: &Target,
    snap: &Snapshot,
    pred: &Prediction,
    mem: &MemoryJson,
    bold: bool,
) -> String {
    let (b, r) = if bold {
        ("\x1b[1m", "\x1b[0m")
    } else {
        ("", "")
    };
    let mut s = String::new();
    let pids: Vec<String> = snap.processes.iter().map(|p| p.pid.to_string()).collect();
    let who = match snap.processes.len() {
        1 => format!("pid {} ({})", pids[0], snap.processes[0].comm),
        n => format!("{n} processes (pids {})", pids.join(", ")),
    };
    s += &format!(
        "headroom status of {target}: {who}\nsource {} (/proc, sysctl, sock_diag), {}\n",
        snap.source.as_str(),
        snap.netns
    );
    if let Some(note) = &snap.source_note {
        s += &format!("note: {note}\n");
    }
    if let Some(app) = &snap.app {
        s += &render_app(app);
    }
    s += "\n";
    if let Some(c) = pred.binding_constraint() {
        s += &format!(
            "{b}predicted max connections: {} (holding {}), bound by {}{r}\n  {}\n  to raise: {}\n",
            pred.predicted_max_connections, pred.connections, c.name, c.explanation, c.remedy
        );
    }
    if let Some(w) = &pred.next_wall {
        s += &format!("  next wall: {}\n", w.describe());
    }
    s += "\n";

    let header = [
        "",
        "CONSTRAINT",
        "SCOPE",
        "UNIT",
        "LIMIT",
        "USED",
        "RESERVE",
        "HEADROOM",
        "PER CONN",
        "MAX CONN",
    ];
    let rows: Vec<[String; 10]> = pred
        .constraints
        .iter()
        .map(|c| {
            [
                if c.name == pred.binding { ">" } else { "" }.to_string(),
                c.name.clone(),
                format!("{:?}", c.scope).to_lowercase(),
                c.unit.clone(),
                c.limit.to_string(),
                c.used.to_string(),
                c.reserve.to_string(),
                c.headroom.to_string(),
                c.per_connection.to_string(),
                c.max_connections.to_string(),
            ]
        })
        .collect();
    let width = |i: usize| {
        rows.iter()
            .map(|r| r[i].len())
            .chain([header[i].len()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..10).map(width).collect();
    let line = |cells: &[&str]| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i < 4 {
                l += &format!("{c:<w$}  ", w = widths[i]);
            } else {
                l += &format!("{c:>w$}  ", w = widths[i]);
            }
        }
        l.trim_end().to_string() + "\n"
    };
    s += &line(&header);
    for row in &rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        if row[0] == ">" {
            s += &format!("{b}{}{r}", line(&cells));
        } else {
            s += &line(&cells);
        }
    }

    s += "\n";
    if snap.listeners.is_empty() {
        s += "listeners: none\n";
    } else {
        let w = snap
            .listeners
            .iter()
            .map(|l| l.address.len())
            .max()
            .unwrap_or(0)
            .max(8);
        s += &format!("{:<w$}  ACCEPT QUEUE (depth / limit)\n", "LISTENER");
        for l in &snap.listeners {
            s += &format!(
                "{:<w$}  {} / {}\n",
                l.address, l.accept_queue_depth, l.accept_queue_limit
            );
        }
        s += &format!(
            "  limit = min(listen backlog, net.core.somaxconn {}); ListenOverflows {}, ListenDrops {} (namespace)\n",
            snap.system.somaxconn, snap.netstat.listen_overflows, snap.netstat.listen_drops
        );
    }
    let states: Vec<String> = snap
        .sockets
        .iter()
        .map(|(st, n)| format!("{} {n}", st.label()))
        .collect();
    s += &format!(
        "sockets: {}; time_wait in namespace {}\n",
        if states.is_empty() {
            "none".to_string()
        } else {
            states.join(", ")
        },
        snap.time_wait
    );
    for p in &snap.processes {
        s += &format!(
            "pid {} {}: {} fds open (nofile soft {}, hard {}), {} connections, rss {} KiB\n",
            p.pid,
            p.comm,
            p.open_fds,
            p.nofile_soft.map_or("unlimited".into(), |v| v.to_string()),
            p.nofile_hard.map_or("unlimited".into(), |v| v.to_string()),
            p.connections,
            p.rss_bytes / 1024
        );
    }
    s += &format!(
        "memory per connection: {} B = process {} B ({}) + kernel {} B ({})\n",
        mem.bytes,
        mem.process_bytes,
        if mem.process_bytes_source == "configured" {
            "--bytes-per-connection"
        } else {
            "default, not measured by polling; set --bytes-per-connection"
        },
        mem.kernel_bytes,
        match mem.kernel {
            Some(k) => {
                let parts: Vec<String> = k
                    .slab_objects
                    .iter()
                    .map(|(n, v)| format!("{n} {v}"))
                    .collect();
                format!("measured: slab {}; {}", parts.join(" + "), k.buffer_note)
            }
            None => "default: /proc/slabinfo not readable, run as root to measure".into(),
        }
    );
    s += &format!(
        "memory now: rss {} KiB over {} process(es); kernel ~{} KiB for {} connections\n",
        mem.rss_bytes / 1024,
        snap.processes.len(),
        mem.kernel_bytes_for_connections / 1024,
        snap.connections()
    );
    s
}

/// The application lines of the table: what the server is, each cap with
/// where it was read, what it does at its cap, and what could not be read.
fn render_app(app: &headroom_core::AppInfo) -> String {
    if !app.is_known() {
        return format!("{}\n", app.summary());
    }
    let mut s = format!(
        "application: {}{}\n",
        app.summary(),
        app.version
            .as_deref()
            .map(|v| format!(", version {v}"))
            .unwrap_or_default()
    );
    for c in &app.caps {
        s += &format!(
            "  {} = {} ({}: {})\n",
            c.setting,
            c.limit,
            c.source.as_str(),
            c.read_from
        );
    }
    if let Some(at) = app.at_cap {
        s += &format!("  at its cap it {}\n", at.describe());
    }
    for n in &app.notes {
        s += &format!("  note: {n}\n");
    }
    for p in &app.problems {
        s += &format!("  could not read: {p}\n");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use headroom_core::{Listener, ProcessInfo, SystemLimits};

    fn snap() -> Snapshot {
        Snapshot {
            netns: "net:[1]".into(),
            processes: vec![ProcessInfo {
                pid: 7,
                comm: "srv".into(),
                nofile_soft: Some(20000),
                nofile_hard: Some(20000),
                open_fds: 10,
                connections: 5,
                ..Default::default()
            }],
            system: SystemLimits {
                nr_open: 1 << 20,
                file_max: 1 << 40,
                mem_total_bytes: 24 << 30,
                mem_available_bytes: 20 << 30,
                somaxconn: 4096,
                page_size: 4096,
                ..Default::default()
            },
            listeners: vec![Listener {
                address: "127.0.0.1:8080".into(),
                port: 8080,
                accept_queue_depth: 5,
                accept_queue_limit: 8,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn table_marks_binding_and_shows_queue() {
        let s = snap();
        let cfg = ModelConfig::default();
        let p = predict(&s, &cfg);
        let mem = memory_json(&s, &cfg, false, None);
        let t = render(&Target::Pid(7), &s, &p, &mem, false);
        assert!(
            t.contains("predicted max connections: 19963 (holding 5), bound by nofile"),
            "{t}"
        );
        let marked: Vec<&str> = t.lines().filter(|l| l.starts_with('>')).collect();
        assert_eq!(marked.len(), 1, "{t}");
        assert!(marked[0].contains("nofile"));
        assert!(t.contains("127.0.0.1:8080  5 / 8"), "{t}");
        assert!(t.contains("kernel 2048 B (default"), "{t}");
    }

    #[test]
    fn json_carries_the_contract() {
        let s = snap();
        let cfg = ModelConfig::default();
        let p = predict(&s, &cfg);
        let doc = StatusJson {
            schema_version: SCHEMA_VERSION,
            target: TargetJson {
                pid: Some(7),
                pids: None,
                port: None,
            },
            source: s.source.as_str(),
            source_note: None,
            pids: vec![7],
            connections: p.connections,
            predicted_max_connections: p.predicted_max_connections,
            binding: &p.binding,
            app: None,
            application: None,
            constraints: &p.constraints,
            next_wall: p.next_wall.as_ref(),
            listeners: &s.listeners,
            memory_per_connection: memory_json(&s, &cfg, false, None),
            model: &cfg,
            snapshot: &s,
        };
        let v = serde_json::to_value(&doc).unwrap();
        assert_eq!(v["schema_version"], 2);
        assert_eq!(v["source"], "poll");
        assert_eq!(v["target"], serde_json::json!({"pid": 7}));
        assert_eq!(v["predicted_max_connections"], 19963);
        assert_eq!(v["binding"], "nofile");
        assert_eq!(v["constraints"][0]["name"], "nofile");
        for k in [
            "limit",
            "used",
            "headroom",
            "reserve",
            "max_connections",
            "explanation",
        ] {
            assert!(v["constraints"][0].get(k).is_some(), "constraint lacks {k}");
        }
        assert_eq!(v["listeners"][0]["accept_queue_depth"], 5);
        assert_eq!(v["listeners"][0]["accept_queue_limit"], 8);
        assert_eq!(v["memory_per_connection"]["kernel_bytes_source"], "default");
        assert_eq!(
            v["memory_per_connection"]["kernel_bytes_for_connections"],
            5 * 2048
        );
        assert_eq!(v["snapshot"]["processes"][0]["pid"], 7);
    }
}
