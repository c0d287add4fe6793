//! nginx: `worker_connections` per worker process.
//!
//! Read from the configuration the master was started with: `-c FILE` on its
//! command line (relative to the prefix, `-p` or the compiled-in one), else
//! the compiled-in `--conf-path` (found in the binary's configure arguments;
//! `/etc/nginx/nginx.conf` for Debian's build), with `-g` directives and every
//! `include` (globs, relative to the configuration file's directory). The
//! worker processes are counted live: children of the master titled
//! `nginx: worker process`. Each worker's listening sockets are counted from
//! its descriptor table.
//!
//! How 1.22 spends a worker's `worker_connections` slots (`ngx_get_connection`
//! in src/core/ngx_connection.c, `ngx_event_process_init` in
//! src/event/ngx_event.c): one slot per listening socket (a `reuseport`
//! listener: only the worker's own copy), one for the channel to the master,
//! the rest for client (and upstream) connections. Before every new
//! connection, when no more than `worker_connections / 16` slots are free,
//! `ngx_drain_connections` closes `max(1, min(32, idle / 8))` idle
//! connections (keep-alive ones, and ones still waiting for their first
//! request) and logs "worker_connections are not enough, reusing
//! connections". So a worker holds at most `wc - wc/16 - listeners - 1` idle
//! clients before it starts closing them. Connections with a request in
//! progress are never drained; with none idle, a worker accepts and closes
//! ("worker_connections are not enough") once every slot is taken.
//!
//! Measured on 1.22.1 (Debian 12, 2 cores, `worker_processes 2;
//! worker_connections 512;`, one `listen 127.0.0.1:PORT`, keep-alive HTTP
//! clients opened one by one): the first idle connection was closed when the
//! 957th arrived (956 = 2 x (512 - 32 - 1 - 1)); right after, 925 were held
//! (one worker drained 32), and past that each worker holds between 447 and
//! 478: 1100 clients left 908 open (454 + 454), the 912 of the issue is one
//! such state. Workers shared the connections evenly (EPOLLEXCLUSIVE, no
//! accept mutex): 478/478 at the first closure. Clients that sent half a
//! request (not idle) were refused only at 1019 (510 + 508). With
//! `reuseport` the kernel hashes connections to workers: the first closure
//! came at 943 of 2 x 476 (three listeners). With `worker_rlimit_nofile
//! 300` a worker holding 11 descriptors at idle took 289 clients, then
//! accept4() failed with EMFILE and new connections waited in the backlog:
//! 578 in all, the descriptor limit with no reserve.

// One file per job: cli reads the master's command line, build the
// binary's compiled-in paths, lexer splits the configuration into tokens,
// config reads it (includes followed, globs expanded by glob), settings
// says what it sets, workers finds the running workers and their sockets;
// inspect, here, puts them together.
mod build;
mod cli;
mod config;
mod glob;
mod lexer;
mod settings;
mod workers;

pub use build::{compiled, Compiled};
pub use cli::{parse_cmdline, Args};
pub use config::{load, Config, Directive, MAX_DIRECTIVES, MAX_FILES, MAX_INCLUDE_DEPTH};
pub use glob::{fnmatch, glob};
pub use settings::{settings, Set, Settings, WorkerProcesses};
pub use workers::live_workers;
pub(crate) use workers::{listening_endpoints, socket_fds};

use build::compiled_cached;
use workers::online_cpus;

use crate::host::Host;
use crate::Seen;
use headroom_core::{AppCap, AppInfo, AtCap, CapSource, Scope};
use std::collections::BTreeSet;

/// `worker_connections` when the events block does not set it.
pub const DEFAULT_WORKER_CONNECTIONS: u64 = 512;
/// Where Debian's (and nginx.org's) builds look when `-c` is not given.
pub const DEFAULT_CONF_PATH: &str = "/etc/nginx/nginx.conf";
/// Most idle connections one drain closes.
const DRAIN_BATCH: u64 = 32;

/// The configuration file the master reads: `-c` (relative to the
/// prefix), else the compiled-in path.
fn conf_path(args: &Args, compiled: Option<&Compiled>, info: &mut AppInfo) -> String {
    let with_slash = |p: &str| {
        if p.ends_with('/') {
            p.to_string()
        } else {
            format!("{p}/")
        }
    };
    let prefix = args
        .prefix
        .as_deref()
        .map(with_slash)
        .or_else(|| compiled.map(|c| c.prefix.clone()));
    match (&args.conf, prefix, compiled) {
        (Some(c), _, _) if c.starts_with('/') => c.clone(),
        (Some(c), Some(p), _) => format!("{p}{c}"),
        (None, _, Some(comp)) => comp.conf.clone(),
        (c, _, _) => {
            info.notes.push(format!(
                "the binary's compiled-in paths could not be read: assumed Debian's ({DEFAULT_CONF_PATH}, prefix /usr/share/nginx/)"
            ));
            match c {
                Some(c) => format!("/usr/share/nginx/{c}"),
                None => DEFAULT_CONF_PATH.to_string(),
            }
        }
    }
}

/// Reads nginx's cap from its master's command line and configuration.
pub fn inspect(seen: &Seen, host: &Host) -> AppInfo {
    let mut info = AppInfo {
        comm: seen.main.comm.clone(),
        fds_per_connection: 1,
        // Measured: a worker takes connections up to its soft limit exactly;
        // accept4() then fails with EMFILE and connections wait.
        fd_reserve: Some(0),
        at_cap: Some(AtCap::ClosesIdle),
        ..AppInfo::default()
    };
    // A worker seen first: its master is its parent.
    let mut master = seen.main.pid;
    let mut cmdline = seen.cmdline.clone();
    let title = cmdline.join(" ");
    if title.starts_with("nginx: worker process") || title.starts_with("nginx: cache") {
        if let Some(pp) = host.ppid(master) {
            master = pp;
            cmdline = host.cmdline(pp).unwrap_or_default();
        }
    }
    let args = parse_cmdline(&cmdline);
    let compiled = compiled_cached(host, master);
    info.version = compiled.as_ref().and_then(|c| c.version.clone());
    let conf = conf_path(&args, compiled.as_ref(), &mut info);
    let cfg = load(host, &conf, args.globals.as_deref());
    info.problems.extend(cfg.problems.iter().cloned());
    let s = settings(&cfg);
    info.problems.extend(s.problems.iter().cloned());

    // Workers: counted live; else the configuration.
    let workers = live_workers(host, master);
    let has_master = args.master_title || !workers.is_empty();
    let (nworkers, workers_how) = if !workers.is_empty() {
        (
            workers.len() as u64,
            format!("{} worker processes running", workers.len()),
        )
    } else if !has_master || s.master_process == Some(false) {
        (
            1,
            "no master: the process itself serves connections".to_string(),
        )
    } else {
        let n = match s.worker_processes.as_ref().map(|w| w.value) {
            Some(WorkerProcesses::Count(n)) => n,
            Some(WorkerProcesses::Auto) => online_cpus(host).unwrap_or_else(|| {
                info.problems
                    .push("worker_processes auto: online CPUs not readable, 1 assumed".into());
                1
            }),
            None => 1,
        };
        info.notes.push(format!(
            "no running worker found under the master (pid {master}): {n} from the configuration"
        ));
        (n, format!("{n} worker processes from the configuration"))
    };
    let holders: Vec<u32> = if workers.is_empty() {
        vec![master]
    } else {
        workers.clone()
    };
    info.connection_pids = holders.clone();

    // Listening sockets per worker: from a worker's descriptor table, else
    // the configuration, else the snapshot's listeners.
    let live_listens = socket_fds(host, holders[0]).map(|fds| {
        let inodes: BTreeSet<u64> = fds.iter().map(|f| f.1).collect();
        listening_endpoints(host, holders[0], &inodes)
    });
    let (listeners, listeners_how) = match live_listens {
        Some(l) if !l.is_empty() => (l.len() as u64, format!("held by worker {}", holders[0])),
        _ if !s.listens.is_empty() => (s.listens.len() as u64, "listen directives".to_string()),
        _ => {
            let n: BTreeSet<&str> = seen
                .snap
                .listeners
                .iter()
                .map(|l| l.address.as_str())
                .collect();
            (n.len().max(1) as u64, "the target's listeners".to_string())
        }
    };
    let channel = u64::from(has_master && s.master_process != Some(false));

    let (wc, wc_source, wc_from) = match &s.worker_connections {
        Some(set) if set.file == "-g" => (
            set.value,
            CapSource::CommandLine,
            "-g in the master's command line".to_string(),
        ),
        Some(set) => (
            set.value,
            CapSource::File,
            format!("{} (events block)", set.at),
        ),
        None => (
            DEFAULT_WORKER_CONNECTIONS,
            CapSource::Default,
            format!("not set in {conf}"),
        ),
    };
    // Idle connections are drained once no more than wc/16 slots are free;
    // only http connections are ever idle (reusable).
    let http = s.has_http || cfg.files.is_empty();
    if !s.has_http && http {
        info.notes.push(
            "configuration not read: http assumed (idle keep-alive connections drained at the cap)"
                .into(),
        );
    }
    let drain = if http { wc / 16 } else { 0 };
    let kept = listeners + channel + drain;
    let per_worker = wc.saturating_sub(kept);
    let active_cap = wc.saturating_sub(listeners + channel);
    let batch = (per_worker / 8).clamp(1, DRAIN_BATCH);
    let remedy_file = s
        .worker_connections
        .as_ref()
        .filter(|w| w.file != "-g")
        .map(|w| w.file.clone())
        .or_else(|| s.events_file.clone())
        .unwrap_or_else(|| conf.clone());
    info.caps.push(AppCap {
        name: "nginx-worker-connections".into(),
        scope: Scope::Process,
        setting: "worker_connections".into(),
        limit: wc.saturating_mul(nworkers),
        used: None,
        reserve: kept.saturating_mul(nworkers),
        per_connection: 1,
        source: wc_source,
        read_from: wc_from,
        explanation: format!(
            "worker_connections {wc} x {nworkers} workers ({workers_how}); each worker keeps a slot per listening socket ({listeners}, {listeners_how}){} and closes idle keep-alive connections once {drain} (worker_connections/16) or fewer slots are free: {per_worker} client connections per worker",
            if channel > 0 { " and one for its channel to the master" } else { "" },
        ),
        remedy: format!(
            "raise worker_connections in {remedy_file} (events block), or worker_processes, then reload (nginx -s reload)"
        ),
    });
    if http {
        info.notes.push(format!(
            "at the cap a worker closes its idle keep-alive connections, {batch} at a time, and keeps serving new ones: past it each worker holds between {} and {per_worker}; connections with a request in progress are refused (accepted and closed, \"worker_connections are not enough\") only when all {active_cap} client slots of a worker are taken ({} in all)",
            per_worker.saturating_sub(batch) + 1,
            active_cap.saturating_mul(nworkers),
        ));
    } else {
        info.at_cap = Some(AtCap::AcceptsAndCloses);
    }
    if s.proxies {
        info.notes.push(
            "a proxied request takes a second slot (and descriptor) for its upstream connection while it runs".into(),
        );
    }
    if s.reuseport {
        info.notes.push(
            "reuseport: the kernel hashes connections to workers, so the busiest worker reaches its cap before the total does".into(),
        );
    }
    if s.accept_mutex && nworkers > 1 {
        info.notes.push(
            "accept_mutex on: a worker with fewer than worker_connections/8 free slots leaves accepting to the others".into(),
        );
    }
    if let Some(r) = &s.worker_rlimit_nofile {
        info.notes.push(format!(
            "worker_rlimit_nofile {} ({}): each worker's descriptor limit; at it accept() fails with EMFILE and new connections wait in the backlog",
            r.value, r.at
        ));
        if r.value < wc {
            info.notes.push(format!(
                "worker_connections {wc} exceeds worker_rlimit_nofile {}: the descriptor limit binds first",
                r.value
            ));
        }
    }
    info.notes
        .push(format!("configuration: {}", cfg.files.join(", ")));
    info
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{process, Look, Root};
    use headroom_core::{ProcessInfo, Snapshot};

    /// A /proc tree for a master (100) with two workers (101, 102), each
    /// holding a listener (inode 500), a reuseport pair (501, 502 on one
    /// address), a channel socketpair and 3 client connections.
    fn proc_tree(r: &Root, conf_arg: &str) {
        r.process(100, "nginx")
            .title(&format!("nginx: master process /usr/sbin/nginx {conf_arg}"))
            .stat(1)
            .children(&[101, 102, 103]);
        for w in [101u32, 102] {
            let p = r.process(w, "nginx");
            p.title("nginx: worker process").stat(100);
            for (fd, ino) in [(4, 500), (5, 501), (6, 502), (7, 600 + w), (9, 700 + w)] {
                p.fd(fd, &format!("socket:[{ino}]"));
            }
            p.fd(0, "/dev/null");
            p.file(
                "net/tcp",
                b"  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 500 1\n   1: 00000000:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 501 1\n   2: 00000000:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 502 1\n   3: 0100007F:1F90 0100007F:D000 01 00000000:00000000 00:00000000 00000000     0        0 701 1\n",
            );
            p.file(
                "net/unix",
                format!("Num       RefCount Protocol Flags    Type St Inode Path\n0000: 00000003 00000000 00000000 0001 03 {}\n", 600 + w),
            );
        }
        r.process(103, "nginx")
            .title("nginx: cache manager process")
            .stat(100);
    }

    fn proc_info(pid: u32, nofile: u64, open: u64, conns: u64) -> ProcessInfo {
        process(pid, "nginx", nofile, open, conns)
    }

    /// The processes of [`proc_tree`] as the snapshot sees them: the master
    /// (nofile 20000, 10 fds open), then the two workers (11 fds open each).
    fn master_and_workers(nofile: u64, conns: u64) -> Vec<ProcessInfo> {
        vec![
            proc_info(100, 20000, 10, 0),
            proc_info(101, nofile, 11, conns),
            proc_info(102, nofile, 11, conns),
        ]
    }

    fn run(r: &Root, procs: Vec<ProcessInfo>) -> (AppInfo, u64, String) {
        let snap = Snapshot {
            processes: procs,
            ..Default::default()
        };
        Look::at(r.dir()).run(inspect, snap)
    }

    #[test]
    fn live_workers_and_listeners_give_the_measured_956() {
        let r = Root::new("live");
        proc_tree(&r, "-c /n/nginx.conf");
        r.file("/n/nginx.conf", b"worker_processes 2;\nevents {\n  worker_connections 512;\n}\nhttp { server { listen 127.0.0.1:8080; listen 8081 reuseport; } }\n");
        let (info, max, binding) = run(&r, master_and_workers(20000, 3));
        assert!(info.problems.is_empty(), "{:?}", info.problems);
        assert_eq!(info.connection_pids, vec![101, 102]);
        let cap = &info.caps[0];
        assert_eq!(
            (cap.limit, cap.reserve, cap.source),
            (1024, 2 * (2 + 1 + 32), CapSource::File)
        );
        assert_eq!(cap.read_from, "/n/nginx.conf:3 (events block)");
        // Two listening addresses per worker (the reuseport pair counts once).
        assert_eq!(max, 2 * (512 - 32 - 2 - 1));
        assert_eq!(binding, "nginx-worker-connections");
        assert_eq!(cap.remedy, "raise worker_connections in /n/nginx.conf (events block), or worker_processes, then reload (nginx -s reload)");
    }

    #[test]
    fn low_worker_rlimit_nofile_binds_with_no_reserve() {
        let r = Root::new("nofile");
        proc_tree(&r, "-p /n/ -c nginx.conf");
        r.file("/n/nginx.conf", b"worker_processes 2; worker_rlimit_nofile 300;\nevents { worker_connections 512; }\nhttp { server { listen 127.0.0.1:8080; } }\n");
        let (info, max, binding) = run(&r, master_and_workers(300, 0));
        assert!(info.problems.is_empty(), "{:?}", info.problems);
        // The measured 578: 2 x (300 - 11).
        assert_eq!((max, binding.as_str()), (578, "nofile"));
    }

    #[test]
    fn auto_without_live_workers_counts_online_cpus() {
        let r = Root::new("auto");
        proc_tree(&r, "-c /n/nginx.conf");
        r.file("/proc/100/task/100/children", b"");
        r.file("/sys/devices/system/cpu/online", b"0-2,5\n");
        r.file(
            "/n/nginx.conf",
            b"worker_processes auto;\nhttp { server { listen 127.0.0.1:8080; } }\n",
        );
        let (info, max, _) = run(&r, vec![proc_info(100, 20000, 10, 0)]);
        assert!(info.problems.is_empty(), "{:?}", info.problems);
        // 4 CPUs online, default 512, one listener (from the configuration:
        // the master's table is not read), channel, drain 32.
        assert_eq!(info.caps[0].limit, 4 * 512);
        assert_eq!(info.caps[0].source, CapSource::Default);
        assert_eq!(max, 4 * (512 - 32 - 1 - 1));
        assert_eq!(info.connection_pids, vec![100]);
    }

    #[test]
    fn missing_configuration_falls_back_to_default_with_a_problem() {
        let r = Root::new("missing");
        proc_tree(&r, "-c /nope.conf");
        let (info, max, _) = run(&r, master_and_workers(20000, 0));
        assert_eq!(info.caps[0].source, CapSource::Default);
        assert_eq!(info.problems.len(), 1, "{:?}", info.problems);
        assert!(info.problems[0].starts_with("cannot read /nope.conf:"));
        // Unread: http assumed (drain reserve 32); 2 listeners + channel.
        assert_eq!(max, 2 * (512 - 32 - 3));
        assert_eq!(info.at_cap, Some(AtCap::ClosesIdle));
    }
}
