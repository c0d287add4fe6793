//! Redis and Valkey: `maxclients`.
//!
//! Asked live over RESP on the server's own port (`AUTH` first when a
//! password is given, then `CONFIG GET maxclients` and `INFO`), else read from
//! the configuration file (the one the command line names, else the
//! distribution's default path) and the documented default 10000.
//!
//! What Redis does (7.0, `acceptCommonHandler` in networking.c): a new
//! connection is refused with `-ERR max number of clients reached` when
//! `listLength(server.clients) + cluster bus connections >= maxclients`.
//! `server.clients` holds every connected client, replicas and the link to
//! its own master included; INFO's `connected_clients` leaves the replicas
//! out (`connected_slaves`) and `cluster_connections` gives the bus links.
//! At start (`adjustOpenFilesLimit` in server.c) Redis raises RLIMIT_NOFILE
//! to maxclients + 32; when it cannot, it lowers maxclients to the limit it
//! got less 32 and logs it. Measured on 7.0.15: `maxclients 500` held 500
//! clients; under `prlimit --nofile=300:300` without CAP_SYS_RESOURCE it
//! reported maxclients 268 and held 268.

// One file per job: resp reads and writes RESP, live asks the server on its
// port, config reads redis.conf (includes followed) and the command line;
// inspect, here, puts them together.
mod config;
mod live;
mod resp;

pub use config::{config_from_cmdline, maxclients_from_cmdline, read_config, split_args, FileCap};
pub use live::{interpret, parse_info, query, Info, Live, LiveError};
pub use resp::{command, parse_replies, parse_resp, Parsed, Resp};

use crate::host::Host;
use crate::Seen;
use headroom_core::{AppCap, AppInfo, AtCap, CapSource, Scope};
use std::net::SocketAddr;

/// `maxclients` when nothing sets it.
pub const DEFAULT_MAXCLIENTS: u64 = 10_000;
/// CONFIG_MIN_RESERVED_FDS (server.h): the descriptors Redis keeps beside
/// maxclients when it sizes its fd limit.
pub const RESERVED_FDS: u64 = 32;

/// The maxclients Redis runs with when it was configured with `configured`
/// and its process now has RLIMIT_NOFILE soft `soft`: Redis sets its limit to
/// maxclients + 32 when it can, else lowers maxclients to (the limit it got)
/// - 32. Returns (effective, lowered).
pub fn effective_maxclients(configured: u64, soft: Option<u64>) -> (u64, bool) {
    match soft {
        Some(s) if s < configured.saturating_add(RESERVED_FDS) => {
            (s.saturating_sub(RESERVED_FDS).max(1), true)
        }
        _ => (configured, false),
    }
}

/// Reads Redis's (or Valkey's) cap.
pub fn inspect(seen: &Seen, host: &Host) -> AppInfo {
    let valkey = is_valkey(seen);
    let product = if valkey { "Valkey" } else { "Redis" };
    let default_conf = if valkey {
        "/etc/valkey/valkey.conf"
    } else {
        "/etc/redis/redis.conf"
    };
    let mut info = AppInfo {
        kind: if valkey { "valkey" } else { "redis" }.into(),
        comm: seen.main.comm.clone(),
        fds_per_connection: 1,
        // Past maxclients Redis refuses; below it, accept() meets EMFILE at
        // the soft limit itself (the 32 Redis keeps are only how it sizes
        // maxclients against the limit, and those fds, when open, are in
        // the process's open count already).
        fd_reserve: Some(0),
        at_cap: Some(AtCap::RefusesWithError),
        ..Default::default()
    };
    let soft = seen.main.nofile_soft;
    let cmd_conf = config_from_cmdline(&seen.cmdline);
    let cmd_max = maxclients_from_cmdline(&seen.cmdline);

    let mut live_err = None;
    if seen.opts.live {
        match seen.address {
            Some(addr) => match query(addr, seen.opts.redis_password.as_deref(), seen.opts.timeout)
            {
                Ok(live) => {
                    live_cap(
                        &mut info,
                        seen,
                        host,
                        addr,
                        &live,
                        cmd_conf.as_deref(),
                        default_conf,
                        product,
                    );
                    return info;
                }
                Err(e) => live_err = Some((addr, e)),
            },
            None => info.problems.push(format!(
                "{product} not asked live: no listening TCP port in the snapshot"
            )),
        }
    }

    // From the configuration file.
    let path = cmd_conf.clone().unwrap_or_else(|| default_conf.to_string());
    let path_said = match &cmd_conf {
        Some(_) => path.clone(),
        None => format!("{path}, the packaged default"),
    };
    match &live_err {
        Some((addr, LiveError::NoAuth)) => info.problems.push(format!(
            "{product} on {addr} wants a password (NOAUTH): INFO and CONFIG GET not available; maxclients read from {path_said} (headroom takes it from HEADROOM_REDIS_PASSWORD or --redis-password-file)"
        )),
        Some((addr, LiveError::AuthRefused(e))) => info.problems.push(format!(
            "{product} on {addr} refused the password ({e}); maxclients read from {path_said}"
        )),
        Some((addr, LiveError::AtCap(e))) => info.problems.push(format!(
            "{product} on {addr} refused this query with \"{e}\": it is at its cap now, and INFO and CONFIG GET wait until a client leaves"
        )),
        Some((addr, LiveError::Failed(e))) => info.problems.push(format!(
            "{product} on {addr} not read live ({e}); maxclients read from {path_said}"
        )),
        None => {}
    }
    if cmd_conf.is_none() {
        info.notes.push(format!(
            "the command line names no configuration file ({product} rewrites its process title): read {default_conf}, the packaged default"
        ));
    }
    let fc = read_config(host, &path);
    info.problems.extend(fc.problems.iter().cloned());
    let (configured, source, read_from) = if let Some(m) = cmd_max {
        (
            m,
            CapSource::CommandLine,
            "--maxclients in the command line".to_string(),
        )
    } else if let Some((m, at)) = &fc.maxclients {
        (*m, CapSource::File, at.clone())
    } else if fc.files.is_empty() {
        (
            DEFAULT_MAXCLIENTS,
            CapSource::Default,
            format!("{path} not read"),
        )
    } else {
        (
            DEFAULT_MAXCLIENTS,
            CapSource::Default,
            format!("no maxclients in {path}"),
        )
    };
    let (limit, lowered) = effective_maxclients(configured, soft);
    let (source, explanation) = if lowered {
        (
            CapSource::Derived,
            format!(
                "maxclients {limit}: set to {configured} but lowered by {product} at start to RLIMIT_NOFILE {} - {RESERVED_FDS} (it could not raise the limit to {}); it refuses a new client once its clients plus cluster bus links reach it",
                soft.unwrap_or(0),
                configured + RESERVED_FDS
            ),
        )
    } else {
        (
            source,
            format!(
                "maxclients {limit}: {product} refuses a new client once its clients (replicas and its master link included) plus cluster bus links reach it"
            ),
        )
    };
    let remedy = if lowered {
        fd_remedy(product, configured)
    } else if cmd_conf.is_none() {
        // The packaged file is a guess here: naming it as the place to edit
        // would send an operator to a file this server may never have read.
        format!(
            "raise maxclients in the configuration file {product} was started with (its command line, which {product} rewrites, does not name it; the packaged service's is {default_conf}), or CONFIG SET maxclients N then CONFIG REWRITE"
        )
    } else {
        format!("raise maxclients in {path} (CONFIG SET maxclients N lasts until restart)")
    };
    // Refused at its cap, the server has told the one number that matters:
    // it holds exactly maxclients clients now. That beats a file, which may
    // not be the one it loaded (`--maxclients` on a command line Redis then
    // rewrote).
    let held = seen.snap.connections();
    if let (Some((addr, LiveError::AtCap(_))), true) = (&live_err, held > 0) {
        if held != limit {
            info.notes.push(format!(
                "{read_from} says maxclients {limit}, but {product} refused headroom's query while holding {held} clients: {held} is what it runs with"
            ));
        }
        info.caps.push(AppCap {
            name: cap_name(valkey),
            scope: Scope::System,
            setting: "maxclients".into(),
            limit: held,
            used: None,
            reserve: 0,
            per_connection: 1,
            // Seen live: the server's own refusal, not a file.
            source: CapSource::Live,
            read_from: format!("{product} on {addr} refused a query at its cap while holding {held} clients"),
            explanation: format!(
                "maxclients {held}: {product} is at its cap, refusing new clients (-ERR max number of clients reached)"
            ),
            remedy,
        });
        return info;
    }
    info.caps.push(AppCap {
        name: cap_name(valkey),
        scope: Scope::System,
        setting: "maxclients".into(),
        limit,
        used: None,
        reserve: 0,
        per_connection: 1,
        source,
        read_from,
        explanation,
        remedy,
    });
    info
}

fn cap_name(valkey: bool) -> String {
    if valkey {
        "valkey-maxclients"
    } else {
        "redis-maxclients"
    }
    .into()
}

fn fd_remedy(product: &str, configured: u64) -> String {
    format!(
        "raise the fd limit of the {} process to at least {} (LimitNOFILE= in its unit) and restart: {product} then keeps maxclients {configured}",
        product.to_lowercase(),
        configured + RESERVED_FDS
    )
}

fn is_valkey(seen: &Seen) -> bool {
    seen.main.comm.starts_with("valkey")
        || seen.cmdline.first().is_some_and(|a| {
            a.split_whitespace()
                .next()
                .unwrap_or("")
                .ends_with("valkey-server")
        })
}

#[allow(clippy::too_many_arguments)]
fn live_cap(
    info: &mut AppInfo,
    seen: &Seen,
    host: &Host,
    addr: SocketAddr,
    live: &Live,
    cmd_conf: Option<&str>,
    default_conf: &str,
    product: &str,
) {
    let valkey = info.kind == "valkey";
    let i = live.info.clone().unwrap_or_default();
    info.version = i.valkey_version.clone().or(i.redis_version.clone());
    if live.auth_unneeded {
        info.notes.push(format!(
            "a password was given but {product} on {addr} has none"
        ));
    }
    let (limit, read_from) = match (live.config_maxclients, i.maxclients) {
        (Some(m), _) => (m, format!("CONFIG GET maxclients on {addr}")),
        (None, Some(m)) => {
            if let Some(e) = &live.config_error {
                info.notes.push(format!("{e}: maxclients taken from INFO"));
            }
            (m, format!("INFO clients on {addr}"))
        }
        (None, None) => {
            info.problems.push(format!(
                "{product} on {addr} gave no maxclients: the default assumed"
            ));
            (
                DEFAULT_MAXCLIENTS,
                "the server gave no maxclients".to_string(),
            )
        }
    };
    // Our own query connection is one of connected_clients.
    match i.connected_clients {
        Some(cc) => {
            let clients = cc.saturating_sub(1) + i.connected_slaves.unwrap_or(0);
            let cluster = i.cluster_connections.unwrap_or(0);
            info.connections = Some(clients);
            info.notes.push(format!(
                "{product} counts {} against maxclients: connected_clients {cc} (this query included, not counted here), connected_slaves {}, cluster_connections {cluster}",
                clients + cluster,
                i.connected_slaves.unwrap_or(0)
            ));
        }
        None => info.problems.push(format!(
            "INFO on {addr} gave no connected_clients: the connections counted are the TCP connections of the process"
        )),
    }
    let used = i.connected_clients.map(|cc| {
        cc.saturating_sub(1) + i.connected_slaves.unwrap_or(0) + i.cluster_connections.unwrap_or(0)
    });

    // The file, to tell a maxclients Redis lowered itself.
    let path = i.config_file.clone().or(cmd_conf.map(String::from));
    let (configured, conf_desc) = match &path {
        Some(p) => {
            let fc = read_config(host, p);
            match (&fc.maxclients, fc.files.is_empty()) {
                (Some((m, _)), _) => (Some(*m), p.clone()),
                (None, false) => (Some(DEFAULT_MAXCLIENTS), p.clone()),
                (None, true) => {
                    if let Some(e) = fc.problems.first() {
                        info.notes.push(format!(
                            "{e}: whether {product} lowered maxclients is not known"
                        ));
                    }
                    (None, p.clone())
                }
            }
        }
        None => (Some(DEFAULT_MAXCLIENTS), default_conf.to_string()),
    };
    let soft = seen.main.nofile_soft;
    let lowered = match (configured, soft) {
        (Some(c), Some(s)) => limit < c && limit == s.saturating_sub(RESERVED_FDS),
        _ => false,
    };
    let (source, explanation, remedy) = if lowered {
        let c = configured.unwrap_or(limit);
        (
            CapSource::Derived,
            format!(
                "maxclients {limit}: lowered by {product} from {c} to RLIMIT_NOFILE {} - {RESERVED_FDS} at start (it could not raise the limit to {}); it refuses a new client once its clients plus cluster bus links reach it",
                soft.unwrap_or(0),
                c + RESERVED_FDS
            ),
            fd_remedy(product, c),
        )
    } else {
        (
            CapSource::Live,
            format!(
                "maxclients {limit}: {product} refuses a new client (-ERR max number of clients reached) once its clients (replicas and its master link included) plus cluster bus links reach it"
            ),
            if path.is_some() {
                format!("raise maxclients in {conf_desc} (CONFIG SET maxclients N lasts until restart)")
            } else {
                "start it with maxclients N in a configuration file or --maxclients N (CONFIG SET maxclients N lasts until restart)".to_string()
            },
        )
    };
    if path.is_none() {
        info.notes.push(format!(
            "{product} on {addr} runs without a configuration file"
        ));
    }
    info.caps.push(AppCap {
        name: cap_name(valkey),
        scope: Scope::System,
        setting: "maxclients".into(),
        limit,
        used,
        reserve: 0,
        per_connection: 1,
        source,
        read_from,
        explanation,
        remedy,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{prediction, process, Look, Root};
    use headroom_core::Snapshot;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::time::Duration;

    const LIVE_7015: &[u8] =
        include_bytes!("../../tests/fixtures/redis/config-get-and-info-7.0.15.resp");
    const NOAUTH_7015: &[u8] = include_bytes!("../../tests/fixtures/redis/noauth-7.0.15.resp");

    /// Shared with the tests of config.
    pub(super) fn root_with(files: &[(&str, &str)]) -> Root {
        Root::with("redis", files)
    }

    #[test]
    fn redis_lowers_maxclients_to_soft_limit_less_32() {
        assert_eq!(effective_maxclients(500, Some(300)), (268, true));
        assert_eq!(effective_maxclients(500, Some(532)), (500, false));
        assert_eq!(effective_maxclients(500, Some(531)), (499, true));
        assert_eq!(effective_maxclients(10_000, None), (10_000, false));
    }

    /// A fake Redis: answers whatever `reply` says to the first connection.
    fn fake(reply: &'static [u8]) -> (SocketAddr, std::thread::JoinHandle<Vec<u8>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let mut got = vec![0u8; 4096];
            let n = s.read(&mut got).unwrap_or(0);
            got.truncate(n);
            s.write_all(reply).unwrap();
            got
        });
        (addr, t)
    }

    fn snap_with(soft: u64, conns: u64, open: u64) -> Snapshot {
        Snapshot {
            processes: vec![process(4242, "redis-server", soft, open, conns)],
            ..Default::default()
        }
    }

    fn run(
        root: &Root,
        snap: &Snapshot,
        addr: Option<SocketAddr>,
        password: Option<&str>,
    ) -> AppInfo {
        Look::at(root.dir())
            .cmdline("/usr/bin/redis-server 127.0.0.1:6379")
            .address(addr)
            .live(addr.is_some())
            .password(password)
            .inspect(inspect, snap)
    }

    #[test]
    fn live_maxclients_and_counts_make_predict_exact() {
        let root = root_with(&[("/tmp/hx/r.conf", "maxclients 500\n")]);
        let (addr, t) = fake(LIVE_7015);
        let snap = snap_with(20000, 0, 6);
        let info = run(&root, &snap, Some(addr), None);
        let asked = t.join().unwrap();
        assert!(asked.starts_with(
            b"*3\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n$10\r\nmaxclients\r\n*1\r\n$4\r\nINFO\r\n"
        ));
        assert_eq!(info.version.as_deref(), Some("7.0.15"));
        assert_eq!(info.connections, Some(0));
        assert_eq!(info.caps.len(), 1);
        let c = &info.caps[0];
        assert_eq!(
            (c.name.as_str(), c.limit, c.used, c.source),
            ("redis-maxclients", 500, Some(0), CapSource::Live)
        );
        assert_eq!(c.read_from, format!("CONFIG GET maxclients on {addr}"));
        assert!(c.remedy.contains("/tmp/hx/r.conf"), "{}", c.remedy);
        assert!(info.problems.is_empty(), "{:?}", info.problems);
        let p = prediction(snap, info);
        assert_eq!(
            (p.predicted_max_connections, p.binding.as_str()),
            (500, "redis-maxclients")
        );
    }

    #[test]
    fn live_maxclients_lowered_by_redis_is_derived_and_nofile_does_not_undercut_it() {
        // Redis started with maxclients 500 under nofile 300: it runs with 268.
        let root = root_with(&[("/tmp/hx/r.conf", "maxclients 500\n")]);
        let reply: &'static [u8] = Box::leak(
            String::from_utf8_lossy(LIVE_7015)
                .replace("$3\r\n500\r\n", "$3\r\n268\r\n")
                .replace("maxclients:500", "maxclients:268")
                .into_bytes()
                .into_boxed_slice(),
        );
        let (addr, t) = fake(reply);
        // 9 fds open when idle, as measured on 7.0.15.
        let snap = snap_with(300, 0, 9);
        let info = run(&root, &snap, Some(addr), None);
        t.join().unwrap();
        let c = &info.caps[0];
        assert_eq!((c.limit, c.source), (268, CapSource::Derived));
        assert!(
            c.explanation
                .contains("lowered by Redis from 500 to RLIMIT_NOFILE 300 - 32"),
            "{}",
            c.explanation
        );
        assert!(c.remedy.contains("at least 532"), "{}", c.remedy);
        let p = prediction(snap, info);
        assert_eq!(
            (p.predicted_max_connections, p.binding.as_str()),
            (268, "redis-maxclients")
        );
        assert_eq!(p.constraint("nofile").unwrap().max_connections, 291);
    }

    #[test]
    fn refused_at_its_cap_the_clients_it_holds_are_its_maxclients() {
        // Started with --maxclients 50 (its title no longer shows it); the
        // packaged file says 10000 by default.
        let root = root_with(&[("/etc/redis/redis.conf", "port 6379\n")]);
        let (addr, t) = fake(b"-ERR max number of clients reached\r\n");
        let snap = snap_with(20000, 50, 60);
        let info = run(&root, &snap, Some(addr), None);
        t.join().unwrap();
        let c = &info.caps[0];
        assert_eq!((c.limit, c.source), (50, CapSource::Live));
        assert!(
            c.read_from.contains("holding 50 clients"),
            "{}",
            c.read_from
        );
        assert!(
            info.notes.iter().any(|n| n.contains("maxclients 10000")),
            "{:?}",
            info.notes
        );
        // Its title names no file: the packaged one is not given as the
        // place to raise it, and the refusal is said as such.
        assert_eq!(
            c.remedy,
            "raise maxclients in the configuration file Redis was started with (its command line, which Redis rewrites, does not name it; the packaged service's is /etc/redis/redis.conf), or CONFIG SET maxclients N then CONFIG REWRITE"
        );
        assert_eq!(
            info.problems,
            vec![format!(
                "Redis on {addr} refused this query with \"ERR max number of clients reached\": it is at its cap now, and INFO and CONFIG GET wait until a client leaves"
            )]
        );
        let p = prediction(snap, info);
        assert_eq!(
            (p.predicted_max_connections, p.binding.as_str()),
            (50, "redis-maxclients")
        );
    }

    #[test]
    fn noauth_falls_back_to_the_default_config_file_and_says_so() {
        let root = root_with(&[("/etc/redis/redis.conf", "maxclients 500\n")]);
        let (addr, t) = fake(NOAUTH_7015);
        let snap = snap_with(20000, 7, 20);
        let info = run(&root, &snap, Some(addr), None);
        t.join().unwrap();
        let c = &info.caps[0];
        assert_eq!((c.limit, c.used, c.source), (500, None, CapSource::File));
        assert_eq!(c.read_from, "/etc/redis/redis.conf:1");
        assert_eq!(info.connections, None);
        assert!(info.problems[0].contains("NOAUTH"), "{:?}", info.problems);
        assert!(!info.problems[0].contains("s3cret"));
        assert_eq!(prediction(snap, info).predicted_max_connections, 500);
    }

    #[test]
    fn password_is_sent_with_auth_and_never_printed() {
        let root = root_with(&[]);
        let info_text = "connected_clients:4\r\nx:y\r\n";
        let reply = format!(
            "+OK\r\n*2\r\n$10\r\nmaxclients\r\n$2\r\n50\r\n${}\r\n{info_text}\r\n",
            info_text.len()
        );
        let (addr, t) = fake(Box::leak(reply.into_bytes().into_boxed_slice()));
        let snap = snap_with(20000, 3, 20);
        let info = run(&root, &snap, Some(addr), Some("s3cret"));
        let asked = t.join().unwrap();
        assert!(asked.starts_with(b"*2\r\n$4\r\nAUTH\r\n$6\r\ns3cret\r\n"));
        assert_eq!((info.caps[0].limit, info.caps[0].used), (50, Some(3)));
        assert_eq!(info.connections, Some(3));
        let all = format!("{info:?}");
        assert!(!all.contains("s3cret"));
    }

    #[test]
    fn no_file_no_live_gives_the_default_lowered_by_the_fd_limit() {
        let root = root_with(&[]);
        let snap = snap_with(1024, 0, 6);
        let info = run(&root, &snap, None, None);
        let c = &info.caps[0];
        assert_eq!((c.limit, c.source), (992, CapSource::Derived));
        assert!(
            info.problems
                .iter()
                .any(|p| p.contains("/etc/redis/redis.conf")),
            "{:?}",
            info.problems
        );
    }
}
