//! Asking HAProxy on its stats socket: `show info;show stat`.

use crate::host::Host;
use crate::wire;
use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

/// `show info` fields (`Name: value`).
pub fn parse_show_info(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            let k = k.trim();
            (!k.is_empty() && !k.contains(' ')).then(|| (k.to_string(), v.trim().to_string()))
        })
        .collect()
}

/// Each frontend's (scur, slim) from `show stat` CSV, by proxy name.
pub fn parse_show_stat(text: &str) -> BTreeMap<String, (Option<u64>, Option<u64>)> {
    let mut out = BTreeMap::new();
    let mut header: Option<Vec<String>> = None;
    for line in text.lines() {
        if let Some(h) = line.strip_prefix("# ") {
            header = Some(h.split(',').map(String::from).collect());
            continue;
        }
        let Some(h) = &header else { continue };
        let col = |name: &str| h.iter().position(|c| c == name);
        let cells: Vec<&str> = line.split(',').collect();
        let get = |name: &str| col(name).and_then(|i| cells.get(i)).copied();
        if get("svname") == Some("FRONTEND") {
            if let Some(px) = get("pxname") {
                out.insert(
                    px.to_string(),
                    (
                        get("scur").and_then(|v| v.parse().ok()),
                        get("slim").and_then(|v| v.parse().ok()),
                    ),
                );
            }
        }
    }
    out
}

/// What `show info` (and `show stat`) gave.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Live {
    pub maxconn: u64,
    pub hard_maxconn: Option<u64>,
    pub curr_conns: u64,
    pub ulimit_n: Option<u64>,
    pub maxsock: Option<u64>,
    pub nbthread: Option<u64>,
    pub version: Option<String>,
    pub frontends: BTreeMap<String, (Option<u64>, Option<u64>)>,
}

/// Interprets the reply to `show info;show stat`.
pub fn interpret(raw: &[u8]) -> Result<Live, String> {
    let text = String::from_utf8_lossy(raw);
    let info = parse_show_info(&text);
    let num = |k: &str| info.get(k).and_then(|v| v.parse::<u64>().ok());
    let (Some(maxconn), Some(curr)) = (num("Maxconn"), num("CurrConns")) else {
        let head: String = text
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .filter(|c| !c.is_control())
            .take(80)
            .collect();
        return Err(format!(
            "no Maxconn/CurrConns in the reply (it began {head:?})"
        ));
    };
    Ok(Live {
        maxconn,
        hard_maxconn: num("Hard_maxconn"),
        curr_conns: curr,
        ulimit_n: num("Ulimit-n"),
        maxsock: num("Maxsock"),
        nbthread: num("Nbthread"),
        version: info.get("Version").cloned(),
        frontends: parse_show_stat(&text),
    })
}

/// Sends `show info;show stat` to the stats socket `addr` (as the
/// configuration spells it) and reads until HAProxy closes, within `timeout`.
pub fn query(host: &Host, addr: &str, timeout: Duration) -> Result<Live, String> {
    const REQ: &[u8] = b"show info;show stat\n";
    let (proto, rest) = addr.split_once('@').unwrap_or(("", addr));
    let raw = match proto {
        "ipv4" | "ipv6" | "tcp" | "tcp4" | "tcp6" => tcp_query(rest, REQ, timeout)?,
        "" if !rest.starts_with('/') && rest.contains(':') => tcp_query(rest, REQ, timeout)?,
        "" | "unix" => {
            let path = host.path(rest);
            unix_query(
                move || std::os::unix::net::UnixStream::connect(&path),
                REQ,
                timeout,
            )?
        }
        "abns" => {
            let name = rest.to_string();
            unix_query(
                move || {
                    use std::os::linux::net::SocketAddrExt;
                    let a = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
                    std::os::unix::net::UnixStream::connect_addr(&a)
                },
                REQ,
                timeout,
            )?
        }
        other => {
            return Err(format!(
                "stats socket {addr}: {other}@ addresses are not asked"
            ))
        }
    };
    interpret(&raw)
}

fn tcp_query(addr: &str, req: &[u8], timeout: Duration) -> Result<Vec<u8>, String> {
    let a = addr.replace('*', "127.0.0.1");
    let a = if a.starts_with(':') {
        format!("127.0.0.1{a}")
    } else {
        a
    };
    let sa: std::net::SocketAddr = a
        .parse()
        .map_err(|_| format!("stats socket {addr}: not an address"))?;
    wire::exchange(sa, req, timeout, |_| false)
}

/// A Unix-socket exchange bounded by `timeout` even where connect() would
/// block (a full backlog): the exchange runs on a thread of its own.
fn unix_query<F>(connect: F, req: &'static [u8], timeout: Duration) -> Result<Vec<u8>, String>
where
    F: FnOnce() -> std::io::Result<std::os::unix::net::UnixStream> + Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::channel();
    let deadline = Instant::now() + timeout;
    std::thread::spawn(move || {
        let r = (|| {
            let mut s = connect().map_err(|e| e.to_string())?;
            s.set_write_timeout(Some(timeout)).ok();
            s.write_all(req).map_err(|e| e.to_string())?;
            wire::read_reply(&mut s, deadline, &|_| false)
        })();
        let _ = tx.send(r);
    });
    rx.recv_timeout(timeout + Duration::from_millis(50))
        .map_err(|_| "no reply before the timeout".to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::haproxy::tests::{root_with, SELF_ANSWERING};

    const SHOW_INFO: &str = include_str!("../../tests/fixtures/haproxy/show-info-2.6.12.txt");
    const SHOW_STAT: &str = include_str!("../../tests/fixtures/haproxy/show-stat-2.6.12.csv");
    const SHOW_BOTH: &[u8] =
        include_bytes!("../../tests/fixtures/haproxy/show-info-and-stat-2.6.12.txt");

    #[test]
    fn show_info_and_stat_of_real_2_6_12() {
        let i = parse_show_info(SHOW_INFO);
        assert_eq!(i.get("Maxconn").map(String::as_str), Some("485"));
        assert_eq!(i.get("Ulimit-n").map(String::as_str), Some("999"));
        let s = parse_show_stat(SHOW_STAT);
        assert_eq!(s.get("fe"), Some(&(Some(0), Some(300))));
        assert_eq!(s.get("other"), Some(&(Some(0), Some(485))));
        assert_eq!(s.len(), 2);
        let l = interpret(SHOW_BOTH).unwrap();
        assert_eq!(
            (l.maxconn, l.hard_maxconn, l.curr_conns),
            (485, Some(485), 0)
        );
        assert_eq!(
            (l.ulimit_n, l.maxsock, l.nbthread),
            (Some(999), Some(999), Some(2))
        );
        assert_eq!(l.version.as_deref(), Some("2.6.12-1+deb12u4"));
        assert_eq!(l.frontends.get("fe"), Some(&(Some(0), Some(300))));
    }

    #[test]
    fn cli_errors_and_garbage_are_errors() {
        assert!(interpret(b"Permission denied\n\n")
            .unwrap_err()
            .contains("Permission denied"));
        assert!(interpret(b"Unknown command: 'show'\n\n").is_err());
        assert!(interpret(&[0u8; 3000]).is_err());
        assert!(interpret(b"Maxconn: x\nCurrConns: 1\n").is_err());
        assert!(parse_show_stat("# a,b\n\x00,\u{ff}\n,,,,\n").is_empty());
    }

    #[test]
    fn silent_stats_socket_times_out_within_the_bound() {
        let root = root_with(&[("/etc/h.cfg", SELF_ANSWERING)]);
        let _l = root.listen_unix("/run/h.sock");
        let t0 = Instant::now();
        let r = query(&root.host(), "/run/h.sock", Duration::from_millis(150));
        assert!(r.unwrap_err().contains("timeout"));
        assert!(t0.elapsed() < Duration::from_secs(1));
    }
}
