//! The Erlang VM (`beam.smp`): its port table.
//!
//! Every socket (gen_tcp, gen_udp with the default inet driver), every port
//! program and the VM's own standard I/O take a port; the table's size is
//! `+Q N`, which `erl` (erlexec) passes to beam.smp as `-Q N` together with
//! the `+Q` of ERL_AFLAGS (before the command line), ERL_FLAGS and
//! ERL_ZFLAGS (after it): the last `-Q` before the first `--` wins. Without
//! one, beam.smp reads ERL_MAX_PORTS from its environment, else takes 65536,
//! or more when its descriptor limit is larger. The VM rounds the size up to
//! a power of two.
//!
//! Measured on OTP 25 (erts 13.1.5, Debian 12): `erlang:system_info(
//! port_limit)` was 1024 for `+Q 1024`, 2048 for 1500, 8192 for 5000, 131072
//! for 100000, 65536 by default with nofile 300, 5000 or 20000; 2048 for
//! ERL_MAX_PORTS=2000 and for ERL_FLAGS="+Q 2000", 1024 for `+Q 1024` with
//! ERL_AFLAGS="+Q 4000", 4096 with ERL_FLAGS or ERL_ZFLAGS "+Q 4000". An
//! idle `erl -noshell` (or `-noinput`, `-detached`; a shell on a terminal
//! has `tty_sl` instead of `0/1`) has 3 ports: `forker` (the unix socket to
//! erl_child_setup), `2/2` and `0/1`. A gen_tcp server started as `erl
//! -noshell +Q 1024` had port_count 4 once listening and accepted 1020
//! connections; then each `gen_tcp:accept` returned `{error, system_limit}`
//! after taking one connection off the backlog and closing it (the client
//! sees EOF); the others waited in the backlog for the next accept. Under
//! `prlimit --nofile=300:300` the same server held 20 descriptors once
//! listening and accepted 280 (300 - 20) before accept returned `{error,
//! emfile}`, those connections staying in the backlog.

use crate::host::Host;
use crate::Seen;
use headroom_core::{AppCap, AppInfo, AtCap, CapSource, Scope};

/// The port table when nothing sets it (and the descriptor limit is lower).
pub const DEFAULT_PORT_LIMIT: u64 = 65_536;
/// The range `+Q` accepts.
pub const MIN_PORTS: u64 = 1024;
pub const MAX_PORTS: u64 = 134_217_727;
/// Ports an OTP 25 VM holds besides sockets: standard_error (`2/2`) and
/// standard_io (`0/1`, or `tty_sl` with a shell on a terminal). Its third
/// own port, `forker`, is a unix socket and is counted with the sockets.
pub const STDIO_PORTS: u64 = 2;

/// The emulator's own flags: beam.smp's arguments before the first `--`.
pub fn emulator_flags(argv: &[String]) -> &[String] {
    let rest = argv.get(1..).unwrap_or_default();
    let end = rest.iter().position(|a| a == "--").unwrap_or(rest.len());
    &rest[..end]
}

/// The last `-Q N` (or `-QN`, or `+Q N` as written to erl) among the
/// emulator flags, as written.
pub fn q_flag(argv: &[String]) -> Option<String> {
    let flags = emulator_flags(argv);
    let mut found = None;
    let mut i = 0;
    while i < flags.len() {
        let a = &flags[i];
        i += 1;
        let Some(rest) = a.strip_prefix("-Q").or_else(|| a.strip_prefix("+Q")) else {
            continue;
        };
        if rest.is_empty() {
            if let Some(v) = flags.get(i) {
                found = Some(v.clone());
                i += 1;
            }
        } else {
            found = Some(rest.to_string());
        }
    }
    found
}

/// The table size the VM makes of a requested size: the next power of two.
pub fn table_size(requested: u64) -> u64 {
    requested
        .clamp(1, MAX_PORTS)
        .checked_next_power_of_two()
        .unwrap_or(MAX_PORTS + 1)
}

/// `NAME=value` pairs of an environ block.
fn environ(raw: &[u8]) -> Vec<(String, String)> {
    raw.split(|b| *b == 0)
        .filter_map(|kv| {
            let s = String::from_utf8_lossy(kv);
            let (k, v) = s.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect()
}

/// The `+Q` value in an ERL_*FLAGS string, if any.
fn q_in_flags(flags: &str) -> Option<String> {
    let w: Vec<&str> = flags.split_whitespace().collect();
    let mut found = None;
    for (i, a) in w.iter().enumerate() {
        if let Some(rest) = a.strip_prefix("+Q") {
            if rest.is_empty() {
                found = w.get(i + 1).map(|s| s.to_string());
            } else {
                found = Some(rest.to_string());
            }
        }
    }
    found
}

/// The port table: (size, requested, source, where).
fn port_limit(
    seen: &Seen,
    host: &Host,
    env: &[(String, String)],
    info: &mut AppInfo,
) -> (u64, Option<u64>, CapSource, String) {
    let pid = seen.main.pid;
    let parse = |v: &str, at: &str, info: &mut AppInfo| -> Option<u64> {
        match v.trim().parse::<u64>() {
            Ok(n) if (MIN_PORTS..=MAX_PORTS).contains(&n) => Some(n),
            _ => {
                info.problems.push(format!(
                    "{at}: {v:?} is not a port count in {MIN_PORTS}..{MAX_PORTS} (the VM would not have started with it)"
                ));
                None
            }
        }
    };
    if let Some(q) = q_flag(&seen.cmdline) {
        let at = format!("-Q {q} in beam.smp's command line (pid {pid})");
        if let Some(n) = parse(&q, &at, info) {
            return (table_size(n), Some(n), CapSource::CommandLine, at);
        }
    }
    if let Some((_, v)) = env.iter().find(|(k, _)| k == "ERL_MAX_PORTS") {
        let at = format!("ERL_MAX_PORTS={v} in beam.smp's environment (pid {pid})");
        if let Some(n) = parse(v, &at, info) {
            return (table_size(n), Some(n), CapSource::CommandLine, at);
        }
    }
    let nofile = seen
        .main
        .nofile_soft
        .or_else(|| host.soft_limit(pid, "Max open files").flatten());
    match nofile {
        Some(n) if n > DEFAULT_PORT_LIMIT => (
            table_size(n),
            None,
            CapSource::Derived,
            format!("no +Q in beam.smp's command line (pid {pid}); its descriptor limit {n} is above {DEFAULT_PORT_LIMIT}"),
        ),
        _ => (
            DEFAULT_PORT_LIMIT,
            None,
            CapSource::Default,
            format!("no +Q in beam.smp's command line (pid {pid})"),
        ),
    }
}

/// OTP release and erts version: `-root DIR` from the command line, its
/// releases/*/OTP_VERSION, and the erts directory of the executable.
fn version(seen: &Seen, host: &Host) -> Option<String> {
    let exe = host.exe(seen.main.pid).unwrap_or_default();
    let erts = exe
        .split('/')
        .find(|p| p.starts_with("erts-"))
        .map(String::from);
    let root = seen
        .cmdline
        .iter()
        .position(|a| a == "-root")
        .and_then(|i| seen.cmdline.get(i + 1));
    let otp = root.and_then(|r| {
        let rd = std::fs::read_dir(host.path(&format!("{r}/releases"))).ok()?;
        rd.flatten().take(64).find_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            if !name.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let v = host
                .read(&format!("{r}/releases/{name}/OTP_VERSION"))
                .ok()?;
            let v = v.trim();
            (!v.is_empty() && v.len() < 32).then(|| v.to_string())
        })
    });
    match (otp, erts) {
        (Some(o), Some(e)) => Some(format!("OTP {o} ({e})")),
        (Some(o), None) => Some(format!("OTP {o}")),
        (None, Some(e)) => Some(e),
        (None, None) => None,
    }
}

/// Reads the VM's port table size and counts the ports in use.
pub fn inspect(seen: &Seen, host: &Host) -> AppInfo {
    let pid = seen.main.pid;
    let mut info = AppInfo {
        comm: seen.main.comm.clone(),
        fds_per_connection: 1,
        // Measured: it accepts until its soft limit exactly.
        fd_reserve: Some(0),
        at_cap: Some(AtCap::AcceptsAndCloses),
        ..AppInfo::default()
    };
    info.version = version(seen, host);
    let env = std::fs::read(host.path(&format!("/proc/{pid}/environ")))
        .map(|raw| environ(&raw))
        .unwrap_or_default();
    let (limit, requested, source, read_from) = port_limit(seen, host, &env, &mut info);
    let argv_q = q_flag(&seen.cmdline);
    for name in ["ERL_AFLAGS", "ERL_FLAGS", "ERL_ZFLAGS"] {
        if let Some(q) = env
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| q_in_flags(v))
        {
            info.notes.push(if argv_q.is_some() {
                format!("{name} carries +Q {q}: erl put it on beam.smp's command line (ERL_AFLAGS before the command line's, ERL_FLAGS and ERL_ZFLAGS after; the last wins)")
            } else {
                format!("{name} carries +Q {q} but beam.smp's command line has no -Q: the VM was not started through erl, which alone reads it")
            });
        }
    }

    // Ports in use: the stdio ports, and every socket in its descriptor
    // table past 0-2 (the forker's unix socket, listeners, connections).
    let listeners = seen.snap.listeners.len() as u64;
    let sockets = crate::nginx::socket_fds(host, pid)
        .map(|fds| fds.iter().filter(|f| f.0 > 2).count() as u64);
    let (used, reserve, how) = match sockets {
        Some(n) => (
            Some(STDIO_PORTS + n),
            0,
            format!("{} in use: {STDIO_PORTS} standard I/O ports and {n} sockets (the forker's, listeners, connections)", STDIO_PORTS + n),
        ),
        None => {
            info.problems.push(format!(
                "/proc/{pid}/fd not readable: ports in use taken as connections + {STDIO_PORTS} stdio + forker + {listeners} listeners"
            ));
            (None, STDIO_PORTS + 1 + listeners, "ports in use estimated".to_string())
        }
    };
    let size = match requested {
        Some(n) if n != limit => format!("+Q {n} rounded up to {limit}"),
        Some(n) => format!("+Q {n}"),
        None => format!("{limit}"),
    };
    info.caps.push(AppCap {
        name: "beam-ports".into(),
        scope: Scope::Process,
        setting: "+Q".into(),
        limit,
        used,
        reserve,
        per_connection: 1,
        source,
        read_from,
        explanation: format!(
            "port table of {size}: every socket, port program and the VM's own I/O takes a port; {how}"
        ),
        remedy: "start the VM with a larger +Q (erl +Q N, ERL_FLAGS=\"+Q N\", or +Q N in the release's vm.args); sizes round up to a power of two".into(),
    });
    info.notes.push(
        "at the cap gen_tcp:accept returns {error, system_limit}: each call takes one connection off the backlog and closes it, the others wait for the next accept".into(),
    );
    info.notes.push(
        "at the descriptor limit accept returns {error, emfile} and connections wait in the backlog; sockets of the socket module (inet_backend socket) and pipes of port programs are not counted here".into(),
    );
    info
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{self, Look, Root};
    use headroom_core::{Listener, Snapshot};

    fn s(v: &str) -> Vec<String> {
        v.split(' ').map(String::from).collect()
    }

    const ARGV: &str = "/usr/lib/erlang/erts-13.1.5/bin/beam.smp -Q 1024 -- -root /usr/lib/erlang -bindir /usr/lib/erlang/erts-13.1.5/bin -progname erl -- -home /root -- -noshell -eval x";

    #[test]
    fn last_q_before_the_first_double_dash_wins() {
        assert_eq!(
            q_flag(&s("beam.smp -Q 1024 -Q 2000 -Q 4000 -P 5000 -- -root /r")).as_deref(),
            Some("4000")
        );
        assert_eq!(
            q_flag(&s("beam.smp -Q5000 -- -Q 7")).as_deref(),
            Some("5000")
        );
        assert_eq!(q_flag(&s("beam.smp -- -Q 7")), None);
        assert_eq!(q_flag(&s("beam.smp +Q 3000")).as_deref(), Some("3000"));
        assert_eq!(q_flag(&s(ARGV)).as_deref(), Some("1024"));
    }

    #[test]
    fn table_sizes_round_up_to_powers_of_two_as_measured() {
        assert_eq!(table_size(1024), 1024);
        assert_eq!(table_size(1500), 2048);
        assert_eq!(table_size(5000), 8192);
        assert_eq!(table_size(65536), 65536);
        assert_eq!(table_size(100_000), 131_072);
        assert_eq!(table_size(MAX_PORTS), 1 << 27);
    }

    #[test]
    fn erl_flags_in_the_environment() {
        assert_eq!(
            q_in_flags("+P 5000 +Q 2000 -noshell").as_deref(),
            Some("2000")
        );
        assert_eq!(q_in_flags("+Q4000").as_deref(), Some("4000"));
        assert_eq!(q_in_flags("+P 5000"), None);
        let e = environ(b"HOME=/root\0ERL_FLAGS=+Q 2000\0junk\0\xff\xfe=\0");
        assert_eq!(e[1], ("ERL_FLAGS".into(), "+Q 2000".into()));
    }

    /// A beam.smp (pid 500) with `argv`, its 3 idle fds 0-2, internal
    /// pipes, the forker socket, a listener and `conns` connections.
    fn proc_tree(r: &Root, argv: &str, env: &[u8], conns: u32) {
        let p = r.process(500, "beam.smp");
        p.argv(argv)
            .environ(env)
            .stat(1)
            .exe("/usr/lib/erlang/erts-13.1.5/bin/beam.smp");
        r.file("/usr/lib/erlang/releases/25/OTP_VERSION", b"25.2.3\n");
        p.fd(0, "/dev/null").fd(1, "socket:[1]").fd(2, "socket:[1]");
        for fd in 3..17 {
            p.fd(fd, &format!("pipe:[{}]", 100 + fd / 2));
        }
        p.fd(17, "socket:[900]").fd(18, "socket:[901]");
        for c in 0..conns {
            p.fd(19 + c, &format!("socket:[{}]", 1000 + c));
        }
    }

    fn run(r: &Root, nofile: u64, conns: u32) -> (AppInfo, u64, String) {
        let conns = u64::from(conns);
        let snap = Snapshot {
            processes: vec![testkit::process(500, "beam.smp", nofile, 19 + conns, conns)],
            listeners: vec![Listener {
                address: "127.0.0.1:9000".into(),
                port: 9000,
                ..Default::default()
            }],
            ..Default::default()
        };
        Look::at(r.dir()).run(inspect, snap)
    }

    #[test]
    fn q_1024_predicts_the_measured_1020_idle_and_loaded() {
        let r = Root::new("q1024");
        proc_tree(&r, ARGV, b"HOME=/root\0", 0);
        let (info, max, binding) = run(&r, 20000, 0);
        assert!(info.problems.is_empty(), "{:?}", info.problems);
        assert_eq!(info.version.as_deref(), Some("OTP 25.2.3 (erts-13.1.5)"));
        let cap = &info.caps[0];
        assert_eq!(
            (cap.limit, cap.used, cap.source),
            (1024, Some(4), CapSource::CommandLine)
        );
        assert_eq!(
            cap.read_from,
            "-Q 1024 in beam.smp's command line (pid 500)"
        );
        assert_eq!((max, binding.as_str()), (1020, "beam-ports"));
        let r = Root::new("q1024b");
        proc_tree(&r, ARGV, b"", 700);
        let (info, max, _) = run(&r, 20000, 700);
        assert_eq!(info.caps[0].used, Some(704));
        assert_eq!(max, 1020);
    }

    #[test]
    fn low_nofile_binds_at_soft_limit_less_open_descriptors() {
        let r = Root::new("nofile");
        let argv = ARGV.replace("-Q 1024 ", "");
        proc_tree(&r, &argv, b"", 0);
        let (info, max, binding) = run(&r, 300, 0);
        assert_eq!(
            (info.caps[0].limit, info.caps[0].source),
            (65536, CapSource::Default)
        );
        // The measured 280: 300 - 20 (this tree holds 19 at idle: 281).
        assert_eq!((max, binding.as_str()), (300 - 19, "nofile"));
    }

    #[test]
    fn env_max_ports_and_large_nofile_default() {
        let r = Root::new("env");
        let argv = ARGV.replace("-Q 1024 ", "");
        proc_tree(&r, &argv, b"ERL_MAX_PORTS=2000\0ERL_ZFLAGS=+Q 3000\0", 0);
        let (info, _, _) = run(&r, 20000, 0);
        assert_eq!(
            (info.caps[0].limit, info.caps[0].source),
            (2048, CapSource::CommandLine)
        );
        assert!(
            info.notes[0].contains("not started through erl"),
            "{:?}",
            info.notes
        );
        let r = Root::new("big");
        proc_tree(&r, &argv, b"", 0);
        let (info, _, _) = run(&r, 100_000, 0);
        assert_eq!(
            (info.caps[0].limit, info.caps[0].source),
            (131_072, CapSource::Derived)
        );
    }

    #[test]
    fn bad_values_and_unreadable_fds_give_problems() {
        let r = Root::new("bad");
        proc_tree(&r, &ARGV.replace("1024", "12"), b"", 0);
        let (info, _, _) = run(&r, 20000, 0);
        assert_eq!(info.caps[0].limit, 65536);
        assert_eq!(info.problems.len(), 1, "{:?}", info.problems);
        let r = Root::new("garbage");
        proc_tree(
            &r,
            "beam.smp -Q 99999999999999999999999 -Q",
            b"\xff\xfe\0=\0ERL_MAX_PORTS=\xff\0",
            0,
        );
        let (info, _, _) = run(&r, 20000, 0);
        assert_eq!(info.caps[0].limit, 65536);
        assert_eq!(info.problems.len(), 2, "{:?}", info.problems);
        let r = Root::new("nofd");
        r.process(500, "beam.smp").argv(ARGV);
        let (info, max, _) = run(&r, 20000, 0);
        assert_eq!(info.problems.len(), 1, "{:?}", info.problems);
        // stdio 2 + forker + 1 listener kept back.
        assert_eq!(max, 1020);
    }
}
