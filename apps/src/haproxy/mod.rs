//! HAProxy: global `maxconn` (and a frontend's own `maxconn`).
//!
//! Asked live on the `stats socket` the global section names (`show info`:
//! Maxconn, CurrConns, Ulimit-n, Version; `show stat`: each frontend's
//! scur/slim), else read from the configuration files on the command line
//! (`-f FILE|DIR`, several, `-- FILES...`; `-n N` overrides maxconn).
//!
//! What HAProxy 2.6 does: a listener stops accepting while `actconn >=
//! global.maxconn` (listener_accept; the stats socket, peers and the master
//! CLI are exempt) or while its frontend holds its own maxconn; new
//! connections wait in the listen backlog. A frontend without a maxconn
//! gets the global one (proxy_adjust_all_maxconn). When global maxconn is
//! not set, HAProxy derives it at start from its fd limit
//! ([`ideal_maxconn`], compute_ideal_maxconn in haproxy.c), then raises its
//! own RLIMIT_NOFILE to maxsock = 2 x maxconn + the fds it counts for
//! listeners, checks, the CLI and its threads; with `strict-limits` (the
//! default since 2.3) it refuses to start when it cannot. Measured on
//! 2.6.12 (2 threads, one frontend, a stats socket): nofile 1000 derived
//! 486, nofile 4000 derived 1986, nofile 1000:4000 derived 1986 (the hard
//! limit counts); `-W` 485, `-W -S sock` 480; `maxconn 1000` held 1000;
//! with `no strict-limits` under nofile 800 and no CAP_SYS_RESOURCE it held
//! 787 = 800 - 13 fds open at idle.

// One file per job: cli reads the command line, words splits a
// configuration line, parse reads the files into a config (what it says),
// maxconn reproduces the maxconn HAProxy derives, live asks the stats socket;
// inspect, here, puts them together.
mod cli;
mod config;
mod live;
mod maxconn;
mod parse;
mod words;

pub use cli::{parse_args, Args};
pub use config::{Config, Global, Proxy, ProxyKind, Setting};
pub use live::{interpret, parse_show_info, parse_show_stat, query, Live};
pub use maxconn::{ideal_maxconn, IdealInput, BASE_MAXSOCK, DEFAULT_CLI_MAXCONN, DEFAULT_MAXCONN};
pub use parse::{parse_config, read_config};
pub use words::{bind_ports, split_words};

use crate::host::Host;
use crate::Seen;
use headroom_core::{AppCap, AppInfo, AtCap, CapSource, Scope};
use std::collections::BTreeMap;

/// Debian's configuration path (its unit passes it with -f).
pub const DEFAULT_CONFIG: &str = "/etc/haproxy/haproxy.cfg";

/// Reads HAProxy's caps.
pub fn inspect(seen: &Seen, host: &Host) -> AppInfo {
    let mut info = AppInfo {
        kind: "haproxy".into(),
        comm: seen.main.comm.clone(),
        fds_per_connection: 1,
        // accept() meets EMFILE at the soft limit; HAProxy keeps no fds back.
        fd_reserve: Some(0),
        at_cap: Some(AtCap::StopsAccepting),
        ..Default::default()
    };
    let args = parse_args(&seen.cmdline);
    let pid = seen.main.pid;
    let environ = host
        .read(&format!("/proc/{pid}/environ"))
        .unwrap_or_default();
    let env_map: BTreeMap<String, String> = environ
        .split('\0')
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    let env = |k: &str| env_map.get(k).cloned();
    let mut files = args.files.clone();
    if files.is_empty() {
        info.notes.push(format!(
            "no -f on HAProxy's command line: read {DEFAULT_CONFIG}"
        ));
        files.push(DEFAULT_CONFIG.to_string());
    }
    let cwd = args.chdir.clone().unwrap_or_else(|| {
        std::fs::read_link(host.path(&format!("/proc/{pid}/cwd")))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "/".into())
    });
    let cfg = read_config(host, &files, &cwd, &env);
    // The files as read (relative ones resolved), else as named.
    let files_desc = if cfg.files.is_empty() {
        files.join(", ")
    } else {
        cfg.files.join(", ")
    };
    info.notes.extend(cfg.notes.iter().cloned());
    info.problems.extend(cfg.problems.iter().cloned());
    let read_any = !cfg.files.is_empty();
    let master_worker = args.master_worker || cfg.global.master_worker;

    // Workers hold the connections in master-worker mode.
    if master_worker {
        let kids = host.children(pid);
        info.connection_pids = seen
            .snap
            .processes
            .iter()
            .filter(|p| kids.contains(&p.pid))
            .map(|p| p.pid)
            .collect();
    }

    // Descriptors per client connection, from the frontend on the port.
    let port = seen.address.map(|a| a.port());
    let fe = port.and_then(|p| cfg.frontend_on(p));
    match fe {
        Some(fe) => {
            let (n, why) = cfg.fds_per_connection(fe);
            info.fds_per_connection = n;
            info.notes
                .push(format!("{n} fd(s) per client connection: {why}"));
        }
        None if read_any => {
            let proxied = cfg
                .proxies
                .iter()
                .any(|p| p.kind != ProxyKind::Frontend && p.servers > 0 && !p.http);
            info.fds_per_connection = if proxied { 2 } else { 1 };
            info.notes.push(format!(
                "no frontend of {files_desc} binds port {}: {} fd(s) per connection assumed",
                port.map_or("?".into(), |p| p.to_string()),
                info.fds_per_connection
            ));
        }
        None => {}
    }

    // Live, on the stats socket.
    let mut live = None;
    if seen.opts.live {
        // The first stats socket that answers (at most four tried).
        let mut errors = Vec::new();
        for (sock, _) in cfg.global.stats_sockets.iter().take(4) {
            match query(host, sock, seen.opts.timeout) {
                Ok(l) => {
                    live = Some((sock.clone(), l));
                    break;
                }
                Err(e) => errors.push(format!("{sock}: {e}")),
            }
        }
        if live.is_none() && !errors.is_empty() {
            info.problems.push(format!(
                "HAProxy stats socket not read ({}): maxconn taken from the configuration",
                errors.join("; ")
            ));
        }
    }
    if !read_any && live.is_none() {
        // Kernel limits only: the problem line is already there.
        info.caps.clear();
        return info;
    }

    let strict = cfg.global.strict_limits.unwrap_or(true);
    let explicit = args
        .maxconn
        .map(|v| {
            (
                v,
                "-n in HAProxy's command line".to_string(),
                CapSource::CommandLine,
            )
        })
        .or_else(|| {
            cfg.global
                .maxconn
                .as_ref()
                .map(|s| (s.value, s.at.clone(), CapSource::File))
        });

    // What HAProxy derived, reproduced from the process's fd limits.
    let nbthread = cfg
        .global
        .nbthread
        .as_ref()
        .map(|s| s.value)
        .or_else(|| live.as_ref().and_then(|(_, l)| l.nbthread))
        .or_else(|| worker_threads(seen, host, &info.connection_pids))
        .or_else(|| cpus_allowed(host, pid))
        .unwrap_or(1)
        .max(1);
    let rlim_max = seen.main.nofile_hard.unwrap_or(seen.snap.system.nr_open);
    let rlim_cur = seen.main.nofile_soft.unwrap_or(seen.snap.system.nr_open);
    let maxsock = cfg.maxsock(master_worker, args.master_sockets);
    let ssl_sides = u64::from(cfg.proxies.iter().any(|p| p.ssl));
    let input = IdealInput {
        rlim_cur,
        rlim_max,
        fd_hard_limit: cfg.global.fd_hard_limit.as_ref().map(|s| s.value),
        maxsock,
        nbthread,
        pipes: cfg.pipes(),
        engine_fds: if cfg.global.async_engine {
            ssl_sides
        } else {
            0
        },
    };
    let derived = ideal_maxconn(&input);
    let derivation = format!(
        "derived by HAProxy at start from its fd limit: (max(soft, hard) {} - {maxsock} fds for listeners, checks and the CLI - 3 x {nbthread} threads) / 2",
        rlim_cur.max(rlim_max)
    );
    let global_remedy = format!(
        "set maxconn N in the global section of {} and reload (each connection needs 2 fds: HAProxy raises its own fd limit as root)",
        explicit
            .as_ref()
            .map(|(_, at, _)| at.rsplit_once(':').map_or(at.clone(), |(f, _)| f.to_string()))
            .unwrap_or_else(|| files_desc.clone())
    );

    let (limit, used, source, read_from, explanation) = match &live {
        Some((sock, l)) => {
            info.version = l.version.clone();
            info.connections = Some(l.curr_conns);
            if let Some(h) = l.hard_maxconn.filter(|h| *h != l.maxconn) {
                info.notes.push(format!(
                    "maxconn {} was set at run time (set maxconn global); {h} at start",
                    l.maxconn
                ));
            }
            let how = if explicit.is_some() {
                format!("maxconn {}", l.maxconn)
            } else {
                if derived != l.maxconn {
                    info.notes.push(format!(
                        "headroom's reproduction of HAProxy's derived maxconn gives {derived}, the server says {}",
                        l.maxconn
                    ));
                }
                format!("maxconn {}, {derivation}", l.maxconn)
            };
            (
                l.maxconn,
                Some(l.curr_conns),
                CapSource::Live,
                format!("show info on {sock}"),
                how,
            )
        }
        None => match &explicit {
            Some((v, at, src)) => (*v, None, *src, at.clone(), format!("maxconn {v}")),
            None => {
                if let Some(m) = args.memmax {
                    info.problems.push(format!(
                        "-m {m} caps HAProxy's memory: its derived maxconn also depends on it, not reproduced here"
                    ));
                }
                if cfg
                    .global
                    .ulimit_n
                    .as_ref()
                    .is_some_and(|u| u.value >= rlim_max)
                {
                    info.notes.push(
                        "ulimit-n at or above the hard limit: the hard limit HAProxy started with is not known, the derivation may differ"
                            .into(),
                    );
                }
                (
                    derived,
                    None,
                    CapSource::Derived,
                    format!("RLIMIT_NOFILE of pid {pid} and {files_desc}"),
                    format!("maxconn {derived}, {derivation}"),
                )
            }
        },
    };
    let remedy = if explicit.is_none() {
        format!("{global_remedy}; or raise the fd hard limit HAProxy starts with (LimitNOFILE=)")
    } else {
        global_remedy
    };
    info.caps.push(AppCap {
        name: "haproxy-maxconn".into(),
        scope: Scope::System,
        setting: "maxconn".into(),
        limit,
        used,
        reserve: 0,
        per_connection: 1,
        source,
        read_from,
        explanation: format!(
            "{explanation}: HAProxy stops accepting while it holds this many client connections over all its frontends (the stats socket excluded)"
        ),
        remedy,
    });

    // The frontend's own maxconn, where it is lower.
    if let Some(fe) = fe {
        let live_fe = live
            .as_ref()
            .and_then(|(sock, l)| Some((sock, *l.frontends.get(&fe.name)?)));
        let own = fe.maxconn.clone().or_else(|| {
            args.maxpconn.filter(|v| *v > 0).map(|v| Setting {
                value: v,
                at: "-N in HAProxy's command line".into(),
            })
        });
        let cap = match (live_fe, &own) {
            (Some((sock, (scur, Some(slim)))), _) if slim < limit => Some((
                slim,
                scur,
                CapSource::Live,
                format!("show stat on {sock} (slim of {})", fe.name),
            )),
            (Some(_), _) => None,
            (None, Some(s)) if s.value < limit => Some((
                s.value,
                None,
                if s.at.starts_with("-N") {
                    CapSource::CommandLine
                } else {
                    CapSource::File
                },
                s.at.clone(),
            )),
            _ => None,
        };
        if let Some((v, used, source, read_from)) = cap {
            let file = own
                .as_ref()
                .map(|s| {
                    s.at.rsplit_once(':')
                        .map_or(s.at.clone(), |(f, _)| f.to_string())
                })
                .unwrap_or_else(|| files_desc.clone());
            info.caps.push(AppCap {
                name: "haproxy-frontend-maxconn".into(),
                scope: Scope::System,
                setting: format!("maxconn (frontend {})", fe.name),
                limit: v,
                used,
                reserve: 0,
                per_connection: 1,
                source,
                read_from,
                explanation: format!(
                    "maxconn {v} of frontend {}: it stops accepting while it holds this many connections",
                    fe.name
                ),
                remedy: format!("raise maxconn in frontend {} ({file}), or remove it to use the global one", fe.name),
            });
        }
    }

    // HAProxy sizes its fd limit itself.
    match (strict, &cfg.global.ulimit_n) {
        (true, None) => info.notes.push(
            "HAProxy raised its RLIMIT_NOFILE to maxsock (2 per connection + listeners) at start; strict-limits (the default) stops it from starting when it cannot"
                .into(),
        ),
        (true, Some(u)) => info.notes.push(format!(
            "ulimit-n {} ({}) sets HAProxy's RLIMIT_NOFILE; strict-limits stops it from starting below maxsock",
            u.value, u.at
        )),
        (false, _) => info.notes.push(
            "no strict-limits: HAProxy runs even when it could not raise its fd limit to maxsock; then accept() meets EMFILE first"
                .into(),
        ),
    }
    info
}

/// Threads of a process holding connections (nbthread when nothing sets it).
fn worker_threads(seen: &Seen, host: &Host, holders: &[u32]) -> Option<u64> {
    let pid = holders.first().copied().unwrap_or(seen.main.pid);
    host.status_field(pid, "Threads")?.parse().ok()
}

/// CPUs the process may run on (HAProxy's default nbthread).
fn cpus_allowed(host: &Host, pid: u32) -> Option<u64> {
    let list = host.status_field(pid, "Cpus_allowed_list")?;
    let mut n = 0u64;
    for part in list.split(',').filter(|p| !p.is_empty()) {
        n += match part.split_once('-') {
            Some((a, b)) => {
                b.trim()
                    .parse::<u64>()
                    .ok()?
                    .checked_sub(a.trim().parse().ok()?)?
                    + 1
            }
            None => {
                part.trim().parse::<u64>().ok()?;
                1
            }
        };
    }
    (n > 0).then_some(n.min(64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{predicted, process, Look, Root};
    use headroom_core::{ProcessInfo, Snapshot};
    use std::io::Write;

    const SHOW_BOTH: &[u8] =
        include_bytes!("../../tests/fixtures/haproxy/show-info-and-stat-2.6.12.txt");

    /// Shared with the tests of maxconn and parse.
    pub(super) fn input(rlim: u64, maxsock: u64) -> IdealInput {
        IdealInput {
            rlim_cur: rlim,
            rlim_max: rlim,
            fd_hard_limit: None,
            maxsock,
            nbthread: 2,
            pipes: 0,
            engine_fds: 0,
        }
    }

    /// Shared with the tests of live.
    pub(super) fn root_with(files: &[(&str, &str)]) -> Root {
        Root::with("haproxy", files)
    }

    fn snap(soft: u64, hard: u64, port: u16) -> Snapshot {
        Snapshot {
            processes: vec![ProcessInfo {
                nofile_hard: Some(hard),
                ..process(u32::MAX - 11, "haproxy", soft, 13, 0)
            }],
            listeners: vec![headroom_core::Listener {
                address: format!("127.0.0.1:{port}"),
                port,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn run(root: &Root, s: &Snapshot, cmdline: &str, live: bool) -> AppInfo {
        Look::at(root.dir())
            .cmdline(cmdline)
            .address(crate::host::query_address(s))
            .live(live)
            .inspect(inspect, s)
    }

    /// HAProxy run as `cmdline` with `cfg` as /etc/h.cfg, under nofile
    /// (soft, hard); `live`: asked on its stats socket first.
    fn run_cfg(cfg: &str, nofile: (u64, u64), cmdline: &str, live: bool) -> (Snapshot, AppInfo) {
        let root = root_with(&[("/etc/h.cfg", cfg)]);
        let s = snap(nofile.0, nofile.1, 8080);
        let info = run(&root, &s, cmdline, live);
        (s, info)
    }

    /// [`SELF_ANSWERING`] with `setting` in its global section.
    fn global(setting: &str) -> String {
        SELF_ANSWERING.replace("nbthread 2", setting)
    }

    /// Shared with the tests of live.
    pub(super) const SELF_ANSWERING: &str = "global\n    stats socket /run/h.sock\n    nbthread 2\ndefaults\n    mode http\nfrontend fe\n    bind 127.0.0.1:8080\n    http-request return status 200\n";

    #[test]
    fn derived_maxconn_from_the_file_when_no_stats_socket_answers() {
        // The stats socket path does not exist under the root: one problem,
        // then the derivation from the file and the process's limits.
        let (s, info) = run_cfg(
            SELF_ANSWERING,
            (1000, 1000),
            "haproxy -db -f /etc/h.cfg",
            true,
        );
        assert_eq!(info.problems.len(), 1, "{:?}", info.problems);
        assert!(info.problems[0].contains("/run/h.sock"));
        let c = &info.caps[0];
        assert_eq!(
            (c.name.as_str(), c.limit, c.source),
            ("haproxy-maxconn", 486, CapSource::Derived)
        );
        assert_eq!(info.fds_per_connection, 1);
        assert_eq!(predicted(s, info), (486, "haproxy-maxconn".into()));
    }

    #[test]
    fn explicit_maxconn_1000_predicts_1000() {
        let cfg = global("maxconn 1000");
        // HAProxy raised its own limit to maxsock 2028.
        let (s, info) = run_cfg(&cfg, (2028, 20000), "haproxy -db -f /etc/h.cfg", false);
        let c = &info.caps[0];
        assert_eq!(
            (c.limit, c.source, c.read_from.as_str()),
            (1000, CapSource::File, "/etc/h.cfg:3")
        );
        assert_eq!(predicted(s, info), (1000, "haproxy-maxconn".into()));
    }

    #[test]
    fn no_strict_limits_under_a_low_fd_limit_binds_on_nofile() {
        let cfg = global("maxconn 1000\n    no strict-limits");
        // Measured: nofile 800, 13 fds open at idle, held 787.
        let (s, info) = run_cfg(&cfg, (800, 800), "haproxy -db -f /etc/h.cfg", false);
        assert!(info.notes.iter().any(|n| n.contains("no strict-limits")));
        assert_eq!(predicted(s, info), (787, "nofile".into()));
    }

    #[test]
    fn frontend_maxconn_lower_than_global_is_a_cap_of_its_own() {
        let cfg = global("maxconn 1000").replace("mode http", "mode http\n    maxconn 300");
        let (s, info) = run_cfg(&cfg, (2028, 2028), "haproxy -f /etc/h.cfg", false);
        assert_eq!(info.caps.len(), 2);
        assert_eq!(info.caps[1].setting, "maxconn (frontend fe)");
        assert_eq!(predicted(s, info), (300, "haproxy-frontend-maxconn".into()));
    }

    #[test]
    fn command_line_n_overrides_the_file() {
        let cfg = global("maxconn 1000");
        let (_, info) = run_cfg(&cfg, (20000, 20000), "haproxy -n 600 -f /etc/h.cfg", false);
        assert_eq!(
            (info.caps[0].limit, info.caps[0].source),
            (600, CapSource::CommandLine)
        );
    }

    #[test]
    fn unreadable_config_is_one_problem_and_kernel_limits_only() {
        let root = root_with(&[]);
        let s = snap(1000, 1000, 8080);
        let info = run(&root, &s, "haproxy -f /etc/haproxy/missing.cfg", true);
        assert!(info.caps.is_empty());
        assert_eq!(info.problems.len(), 1, "{:?}", info.problems);
        assert!(info.problems[0].starts_with("HAProxy configuration /etc/haproxy/missing.cfg:"));
    }

    #[test]
    fn relative_config_is_resolved_against_chdir() {
        let root = root_with(&[("/etc/haproxy/h.cfg", "global\n  maxconn 900\n")]);
        let s = snap(20000, 20000, 8080);
        let info = run(&root, &s, "haproxy -C /etc/haproxy -f h.cfg", false);
        let c = &info.caps[0];
        assert_eq!(
            (c.limit, c.read_from.as_str()),
            (900, "/etc/haproxy/h.cfg:2")
        );
        assert!(
            c.remedy.contains("global section of /etc/haproxy/h.cfg"),
            "{}",
            c.remedy
        );
    }

    #[test]
    fn config_directory_is_read_in_name_order() {
        let root = root_with(&[
            (
                "/etc/h.d/20-fe.cfg",
                "frontend fe\n  bind :8080\n  http-request return status 200\n",
            ),
            ("/etc/h.d/10-global.cfg", "global\n  maxconn 700\n"),
            ("/etc/h.d/ignored.txt", "global\n  maxconn 1\n"),
        ]);
        let s = snap(20000, 20000, 8080);
        let info = run(&root, &s, "haproxy -f /etc/h.d", false);
        assert_eq!(info.caps[0].limit, 700);
        assert_eq!(info.caps[0].read_from, "/etc/h.d/10-global.cfg:2");
    }

    #[test]
    fn live_show_info_on_a_unix_socket_wins() {
        let root = root_with(&[("/etc/h.cfg", SELF_ANSWERING)]);
        let l = root.listen_unix("/run/h.sock");
        let t = std::thread::spawn(move || {
            use std::io::Read;
            let (mut c, _) = l.accept().unwrap();
            let mut b = [0u8; 64];
            let n = c.read(&mut b).unwrap();
            let reply = String::from_utf8_lossy(SHOW_BOTH)
                .replace("CurrConns: 0", "CurrConns: 40")
                .replace("fe,FRONTEND,,,0,", "fe,FRONTEND,,,40,");
            c.write_all(reply.as_bytes()).unwrap();
            b[..n].to_vec()
        });
        let mut s = snap(999, 1000, 8080);
        s.processes[0].connections = 40;
        let info = run(&root, &s, "haproxy -f /etc/h.cfg", true);
        assert_eq!(t.join().unwrap(), b"show info;show stat\n");
        assert!(info.problems.is_empty(), "{:?}", info.problems);
        let c = &info.caps[0];
        assert_eq!(
            (c.limit, c.used, c.source),
            (485, Some(40), CapSource::Live)
        );
        assert_eq!(info.connections, Some(40));
        assert_eq!(info.version.as_deref(), Some("2.6.12-1+deb12u4"));
        // The live fixture's frontend `fe` has maxconn 300 (show stat slim).
        let f = &info.caps[1];
        assert_eq!(
            (f.limit, f.used, f.source),
            (300, Some(40), CapSource::Live)
        );
        assert_eq!(predicted(s, info), (300, "haproxy-frontend-maxconn".into()));
    }

    #[test]
    fn cpus_allowed_list_counts_ranges() {
        let root = Root::new("haproxy");
        root.process(7, "x")
            .status(&[("Cpus_allowed_list", "0-3,8,10-11")]);
        assert_eq!(cpus_allowed(&root.host(), 7), Some(7));
    }
}
