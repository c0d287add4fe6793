//! Starting memcached for the tests: in the foreground on 127.0.0.1:free_port
//! (TCP only), `-c maxconns`. memcached sets its own RLIMIT_NOFILE (soft and
//! hard) to maxconns at start and exits when it cannot: with `nofile` below
//! maxconns (under `prlimit`, without CAP_SYS_RESOURCE) it does not start.
#![allow(dead_code)]

use super::{free_port, Running, Scratch};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Stdio;
use std::time::Duration;

pub const BIN: &str = "/usr/bin/memcached";

/// memcached with `-c maxconns`.
pub fn memcached(maxconns: u64, nofile: Option<u64>) -> Running {
    memcached_with(maxconns, nofile, &[])
}

/// [`memcached`] with more arguments (`-o no_maxconns_fast`, `-t 2`).
pub fn memcached_with(maxconns: u64, nofile: Option<u64>, extra: &[&str]) -> Running {
    let scratch = Scratch::new("memcached");
    let port = free_port();
    let mut cmd = super::redis::limited(nofile, BIN);
    // memcached refuses to run as root without -u.
    if crate::util::is_root() {
        let user = if std::fs::read_to_string("/etc/passwd")
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with("memcache:"))
        {
            "memcache"
        } else {
            "nobody"
        };
        cmd.args(["-u", user]);
    }
    let log = std::fs::File::create(scratch.path("memcached.log")).expect("memcached log");
    cmd.args(["-l", "127.0.0.1", "-U", "0"])
        .arg("-p")
        .arg(port.to_string())
        .arg("-c")
        .arg(maxconns.to_string())
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    Running::start(cmd, addr, scratch)
}

/// `stats` as memcached prints it: `STAT name value` lines by name.
pub fn stats(addr: SocketAddr) -> Vec<(String, String)> {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect to memcached");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"stats\r\n").unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    while !buf.ends_with(b"END\r\n") {
        let n = s.read(&mut chunk).expect("read from memcached");
        assert!(
            n > 0,
            "memcached on {addr} closed: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
        if buf.starts_with(b"ERROR") || buf.starts_with(b"SERVER_ERROR") {
            panic!(
                "memcached on {addr} answered {:?}",
                String::from_utf8_lossy(&buf)
            );
        }
    }
    String::from_utf8_lossy(&buf)
        .lines()
        .filter_map(|l| {
            let mut w = l.splitn(3, ' ');
            (w.next()? == "STAT").then_some(())?;
            Some((w.next()?.to_string(), w.next()?.trim().to_string()))
        })
        .collect()
}

fn stat(addr: SocketAddr, name: &str) -> u64 {
    stats(addr)
        .into_iter()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in memcached's stats"))
}

/// memcached's `curr_connections` as it prints it: its count of connections
/// (listeners and this query included) less one.
pub fn curr_connections(addr: SocketAddr) -> u64 {
    stat(addr, "curr_connections")
}

/// Connections memcached refused at its cap (`rejected_connections`).
pub fn rejected_connections(addr: SocketAddr) -> u64 {
    stat(addr, "rejected_connections")
}
