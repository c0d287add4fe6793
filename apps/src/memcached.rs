//! memcached: `-c` (maxconns).
//!
//! Asked live with `stats settings` and `stats` on its own port, else read
//! from its command line (`-c N`, `--conn-limit=N`), else the default 1024.
//!
//! What memcached 1.6.18 does (`drive_machine`, conn_listening, memcached.c):
//! with maxconns_fast (the default) it closes a new connection, after
//! writing `ERROR Too many open connections`, when the descriptor accept()
//! gave it is >= maxconns - 1. The kernel hands out the lowest free
//! descriptor, so every descriptor memcached holds for itself (stdio, its
//! listeners, each worker thread's event base and notify pipe, the logger's)
//! comes off the cap: clients held = maxconns - 1 - fds open at idle.
//! Without maxconns_fast it accepts until EMFILE and then stops accepting.
//! At start it sets its own RLIMIT_NOFILE (soft and hard) to maxconns, and
//! exits when it cannot. (`stats` prints curr_connections as its count of
//! connections, listeners included, less one; the refusal does not use it.)
//!
//! Measured on 1.6.18 (`-l 127.0.0.1 -U 0`, 4 threads, 25 fds open idle):
//! `-c 1024` held 998, `-c 300` held 274; `-c 300 -o no_maxconns_fast` held
//! 275 and then left the rest in the listen backlog.

use crate::host::{self, Host};
use crate::{wire, Seen};
use headroom_core::{AppCap, AppInfo, AtCap, CapSource, Scope};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// maxconns when `-c` is not given.
pub const DEFAULT_MAXCONNS: u64 = 1024;

/// `STAT name value` lines of one or more `stats` replies, by name (a later
/// reply's value wins). Lines that are not `STAT` lines are skipped.
pub fn parse_stats(text: &str) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for line in text.lines() {
        let mut w = line.trim_end_matches('\r').splitn(3, ' ');
        if w.next() != Some("STAT") {
            continue;
        }
        if let (Some(k), Some(v)) = (w.next(), w.next()) {
            m.insert(k.to_string(), v.trim().to_string());
        }
    }
    m
}

/// Whether `buf` holds `n` `END` lines, or an error line (the server will
/// send nothing more that helps).
fn stats_complete(buf: &[u8], n: usize) -> bool {
    let text = String::from_utf8_lossy(buf);
    let mut ends = 0;
    for line in text.split("\r\n") {
        if line == "END" {
            ends += 1;
        } else if error_line(line) {
            return true;
        }
    }
    ends >= n
}

fn error_line(line: &str) -> bool {
    line.starts_with("ERROR")
        || line.starts_with("CLIENT_ERROR")
        || line.starts_with("SERVER_ERROR")
}

/// What the live query gave.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Live {
    pub maxconns: u64,
    /// `maxconns_fast` from `stats settings` (absent in old versions).
    pub maxconns_fast: Option<bool>,
    pub version: Option<String>,
    pub curr_connections: Option<u64>,
    pub rejected_connections: Option<u64>,
    pub reserved_fds: Option<u64>,
    pub threads: Option<u64>,
}

/// Interprets the reply to `stats settings` + `stats`.
pub fn interpret(raw: &[u8]) -> Result<Live, String> {
    let text = String::from_utf8_lossy(raw);
    if let Some(l) = text.split("\r\n").find(|l| error_line(l)) {
        let l: String = l.chars().filter(|c| !c.is_control()).take(120).collect();
        return Err(format!("the server answered {l:?}"));
    }
    let m = parse_stats(&text);
    let num = |k: &str| m.get(k).and_then(|v| v.parse::<u64>().ok());
    let maxconns = num("maxconns")
        .or_else(|| num("max_connections"))
        .ok_or_else(|| {
            if m.is_empty() {
                "no STAT lines in the reply (not memcached's text protocol)".to_string()
            } else {
                "no maxconns in stats settings".to_string()
            }
        })?;
    Ok(Live {
        maxconns,
        maxconns_fast: m.get("maxconns_fast").map(|v| v == "yes"),
        version: m.get("version").cloned(),
        curr_connections: num("curr_connections"),
        rejected_connections: num("rejected_connections"),
        reserved_fds: num("reserved_fds"),
        threads: num("threads"),
    })
}

/// Asks `stats settings` and `stats` on one connection.
pub fn query(addr: SocketAddr, timeout: Duration) -> Result<Live, String> {
    let raw = wire::exchange(addr, b"stats settings\r\nstats\r\n", timeout, |b| {
        stats_complete(b, 2)
    })?;
    interpret(&raw).map_err(|e| format!("{addr}: {e}"))
}

/// What the command line sets: `-c`/`--conn-limit`, and maxconns_fast from
/// every `-o`/`--extended` list (`no_maxconns_fast` turns it off).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CmdLine {
    pub maxconns: Option<Result<u64, String>>,
    pub maxconns_fast: Option<bool>,
}

pub fn parse_cmdline(cmdline: &[String]) -> CmdLine {
    let mut c = CmdLine {
        maxconns: host::flag_value(cmdline, "-c", Some("--conn-limit")).map(|v| {
            v.trim()
                .parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("-c {v:?} is not a positive number"))
        }),
        maxconns_fast: None,
    };
    let mut it = cmdline.iter().skip(1);
    while let Some(a) = it.next() {
        let list = if a == "-o" || a == "--extended" {
            it.next().cloned()
        } else if let Some(v) = a.strip_prefix("--extended=") {
            Some(v.to_string())
        } else if a.len() > 2 && a.starts_with("-o") {
            Some(a[2..].to_string())
        } else {
            None
        };
        for opt in list.iter().flat_map(|l| l.split(',')) {
            match opt.trim() {
                "maxconns_fast" | "modern" => c.maxconns_fast = Some(true),
                "no_maxconns_fast" => c.maxconns_fast = Some(false),
                _ => {}
            }
        }
    }
    c
}

/// Open descriptors of `pid` whose number is `>= from` (they take no slot
/// under the cap), from /proc/PID/fd; 0 when it cannot be listed.
fn fds_at_or_above(host: &Host, pid: u32, from: u64) -> u64 {
    let Ok(rd) = std::fs::read_dir(host.path(&format!("/proc/{pid}/fd"))) else {
        return 0;
    };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .filter(|n| *n >= from)
        .count() as u64
}

/// Reads memcached's cap.
pub fn inspect(seen: &Seen, host: &Host) -> AppInfo {
    let mut info = AppInfo {
        kind: "memcached".into(),
        comm: seen.main.comm.clone(),
        fds_per_connection: 1,
        // accept() meets EMFILE at the soft limit itself; the fd-number rule
        // of the cap below is stricter by one.
        fd_reserve: Some(0),
        ..Default::default()
    };
    let cmd = parse_cmdline(&seen.cmdline);
    let mut live = None;
    if seen.opts.live {
        match seen.address {
            Some(addr) => match query(addr, seen.opts.timeout) {
                Ok(l) => live = Some((addr, l)),
                Err(e) => info.problems.push(format!(
                    "memcached not read live ({e}): maxconns taken from its command line"
                )),
            },
            None => info.problems.push(
                "memcached not asked live: no listening TCP port in the snapshot; maxconns taken from its command line"
                    .into(),
            ),
        }
    }
    let (maxconns, fast, source, read_from) = match &live {
        Some((addr, l)) => {
            info.version = l.version.clone();
            let mut s = format!("stats on {addr}:");
            if let Some(c) = l.curr_connections {
                s +=
                    &format!(" curr_connections {c} (listeners and this query included, less one)");
            }
            if let Some(r) = l.rejected_connections {
                s += &format!(", rejected_connections {r}");
            }
            if let Some(r) = l.reserved_fds {
                s += &format!(", reserved_fds {r}");
            }
            info.notes.push(s);
            (
                l.maxconns,
                l.maxconns_fast.or(cmd.maxconns_fast).unwrap_or(true),
                CapSource::Live,
                format!("stats settings on {addr}"),
            )
        }
        None => {
            let fast = cmd.maxconns_fast.unwrap_or(true);
            match &cmd.maxconns {
                Some(Ok(n)) => (
                    *n,
                    fast,
                    CapSource::CommandLine,
                    "-c in memcached's command line".to_string(),
                ),
                Some(Err(e)) => {
                    info.problems.push(format!(
                        "memcached command line: {e}; the default {DEFAULT_MAXCONNS} assumed"
                    ));
                    (
                        DEFAULT_MAXCONNS,
                        fast,
                        CapSource::Default,
                        "-c unreadable in memcached's command line".to_string(),
                    )
                }
                None => (
                    DEFAULT_MAXCONNS,
                    fast,
                    CapSource::Default,
                    "no -c in memcached's command line".to_string(),
                ),
            }
        }
    };

    // Descriptors in use, by number below maxconns - 1: the snapshot's count
    // (taken before this query connected) less any numbered above.
    let high = fds_at_or_above(host, seen.main.pid, maxconns.saturating_sub(1));
    let used = seen.main.open_fds.saturating_sub(high);
    let own = used.saturating_sub(seen.main.connections);
    let (reserve, at_cap, explanation) = if fast {
        (
            1,
            AtCap::RefusesWithError,
            format!(
                "maxconns {maxconns}: memcached closes a new connection (ERROR Too many open connections) when accept() gives it a descriptor >= maxconns - 1; the {own} descriptors it holds for itself (stdio, listeners, its threads' event bases and pipes) come off the cap"
            ),
        )
    } else {
        (
            0,
            AtCap::StopsAccepting,
            format!(
                "maxconns {maxconns} (no maxconns_fast): memcached accepts until accept() fails with EMFILE at its RLIMIT_NOFILE, which it set to maxconns, then stops accepting; the {own} descriptors it holds for itself come off the cap"
            ),
        )
    };
    info.at_cap = Some(at_cap);
    info.caps.push(AppCap {
        name: "memcached-maxconns".into(),
        scope: Scope::System,
        setting: "-c".into(),
        limit: maxconns,
        used: Some(used),
        reserve,
        per_connection: 1,
        source,
        read_from,
        explanation,
        remedy: "raise -c N (--conn-limit) on memcached's command line (Debian: -c in /etc/memcached.conf) and restart; there is no runtime setting".into(),
    });
    match seen.main.nofile_soft {
        Some(s) if s == maxconns => info.notes.push(format!(
            "memcached set its own RLIMIT_NOFILE to maxconns {maxconns} at start (it exits when it cannot)"
        )),
        Some(s) => info.notes.push(format!(
            "memcached sets its RLIMIT_NOFILE to maxconns {maxconns} at start, but the process has {s} now: changed since (prlimit)"
        )),
        None => {}
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{predicted, process, Look};
    use headroom_core::Snapshot;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    const STATS_1618: &[u8] =
        include_bytes!("../tests/fixtures/memcached/stats-settings-and-stats-1.6.18.txt");

    #[test]
    fn real_1_6_18_stats_give_maxconns_and_counters() {
        assert!(stats_complete(STATS_1618, 2));
        assert!(!stats_complete(&STATS_1618[..STATS_1618.len() - 3], 2));
        let l = interpret(STATS_1618).unwrap();
        assert_eq!(l.maxconns, 1024);
        assert_eq!(l.maxconns_fast, Some(true));
        assert_eq!(l.version.as_deref(), Some("1.6.18"));
        assert_eq!(l.curr_connections, Some(1));
        assert_eq!(l.rejected_connections, Some(0));
        assert_eq!(l.reserved_fds, Some(20));
        assert_eq!(l.threads, Some(4));
    }

    #[test]
    fn stats_errors_and_garbage_are_errors_not_panics() {
        assert!(stats_complete(b"ERROR Too many open connections\r\n", 2));
        assert_eq!(
            interpret(b"ERROR Too many open connections\r\n").unwrap_err(),
            "the server answered \"ERROR Too many open connections\""
        );
        assert!(interpret(b"CLIENT_ERROR unauthenticated\r\n")
            .unwrap_err()
            .contains("CLIENT_ERROR"));
        assert!(interpret(b"HTTP/1.0 400\r\n\r\n")
            .unwrap_err()
            .contains("no STAT lines"));
        assert!(interpret(b"STAT maxconns many\r\nEND\r\n")
            .unwrap_err()
            .contains("no maxconns"));
        assert!(interpret(&[0xfe; 5000]).is_err());
        assert_eq!(
            interpret(b"STAT max_connections 77\r\nSTAT\r\nSTAT x\r\nEND\r\n")
                .unwrap()
                .maxconns,
            77
        );
    }

    #[test]
    fn cmdline_spellings_of_conn_limit_and_maxconns_fast() {
        let c = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        let p = parse_cmdline(&c("memcached -m 64 -c 300 -o modern,no_maxconns_fast"));
        assert_eq!(
            p,
            CmdLine {
                maxconns: Some(Ok(300)),
                maxconns_fast: Some(false)
            }
        );
        let p = parse_cmdline(&c("memcached --conn-limit=4096 --extended=maxconns_fast"));
        assert_eq!(
            p,
            CmdLine {
                maxconns: Some(Ok(4096)),
                maxconns_fast: Some(true)
            }
        );
        assert_eq!(
            parse_cmdline(&c("memcached -c2048")).maxconns,
            Some(Ok(2048))
        );
        assert!(matches!(
            parse_cmdline(&c("memcached -c 0")).maxconns,
            Some(Err(_))
        ));
        assert!(matches!(
            parse_cmdline(&c("memcached -c lots")).maxconns,
            Some(Err(_))
        ));
        assert_eq!(parse_cmdline(&c("memcached -p 11211")), CmdLine::default());
    }

    fn snap(soft: u64, open: u64, conns: u64) -> Snapshot {
        Snapshot {
            processes: vec![process(u32::MAX - 7, "memcached", soft, open, conns)],
            ..Default::default()
        }
    }

    fn run(s: &Snapshot, cmdline: &str, addr: Option<SocketAddr>) -> AppInfo {
        Look::nowhere()
            .cmdline(cmdline)
            .address(addr)
            .live(addr.is_some())
            .inspect(inspect, s)
    }

    #[test]
    fn measured_1024_and_300_predict_exactly_what_memcached_held() {
        // 25 fds open at idle, as measured on 1.6.18 with -l 127.0.0.1 -U 0.
        let s = snap(1024, 25, 0);
        let info = run(&s, "memcached -u memcache -l 127.0.0.1 -c 1024", None);
        assert_eq!(info.caps[0].source, CapSource::CommandLine);
        assert_eq!(info.at_cap, Some(AtCap::RefusesWithError));
        assert_eq!(predicted(s, info), (998, "memcached-maxconns".into()));
        let s = snap(300, 25, 0);
        let info = run(&s, "memcached -c 300", None);
        assert_eq!(predicted(s, info), (274, "memcached-maxconns".into()));
        // Mid-flood: 500 clients held, 525 fds open: the same ceiling.
        let s = snap(1024, 525, 500);
        let info = run(&s, "memcached -c 1024", None);
        assert_eq!(predicted(s, info), (998, "memcached-maxconns".into()));
    }

    #[test]
    fn without_maxconns_fast_it_stops_at_emfile() {
        let s = snap(300, 25, 0);
        let info = run(&s, "memcached -c 300 -o no_maxconns_fast", None);
        assert_eq!(info.at_cap, Some(AtCap::StopsAccepting));
        assert_eq!(predicted(s, info).0, 275);
    }

    #[test]
    fn no_flag_is_the_default_1024() {
        let s = snap(1024, 25, 0);
        let info = run(&s, "memcached", None);
        assert_eq!(
            (info.caps[0].limit, info.caps[0].source),
            (1024, CapSource::Default)
        );
        assert!(info.problems.is_empty());
    }

    #[test]
    fn live_stats_win_over_the_command_line() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut b = [0u8; 64];
            let n = c.read(&mut b).unwrap();
            c.write_all(STATS_1618).unwrap();
            b[..n].to_vec()
        });
        let s = snap(1024, 25, 0);
        let info = run(&s, "memcached -c 10", Some(addr));
        assert_eq!(t.join().unwrap(), b"stats settings\r\nstats\r\n");
        assert_eq!(info.version.as_deref(), Some("1.6.18"));
        let c = &info.caps[0];
        assert_eq!(
            (c.limit, c.used, c.reserve, c.source),
            (1024, Some(25), 1, CapSource::Live)
        );
        assert_eq!(predicted(s, info).0, 998);
    }

    #[test]
    fn unreachable_server_falls_back_with_one_problem() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let s = snap(300, 25, 0);
        let info = run(&s, "memcached -c 300", Some(addr));
        assert_eq!(info.problems.len(), 1, "{:?}", info.problems);
        assert_eq!(info.caps[0].limit, 300);
    }
}
