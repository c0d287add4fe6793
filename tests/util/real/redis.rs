//! Starting Redis for the tests: `redis-server` in the foreground on
//! 127.0.0.1:free_port, its configuration and log in a scratch directory, no
//! persistence. With `nofile`, it runs under `prlimit --nofile=N:N` and
//! without CAP_SYS_RESOURCE (as a packaged, non-root Redis does), so it
//! cannot raise its fd limit: Redis then lowers maxclients to N - 32 itself.
#![allow(dead_code)]

use super::{free_port, Running, Scratch};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

pub const BIN: &str = "/usr/bin/redis-server";

/// Redis with `maxclients`, optionally under an fd limit it cannot raise.
pub fn redis(maxclients: u64, nofile: Option<u64>) -> Running {
    redis_with(maxclients, nofile, None)
}

/// [`redis`] with `requirepass password` when given.
pub fn redis_with(maxclients: u64, nofile: Option<u64>, password: Option<&str>) -> Running {
    let scratch = Scratch::new("redis");
    let port = free_port();
    let mut conf = format!(
        // The process title keeps the configuration file's path (Redis
        // rewrites its command line): how headroom finds the file when the
        // server wants a password it was not given.
        "bind 127.0.0.1\nport {port}\nprotected-mode yes\ndaemonize no\nsupervised no\n\
         proc-title-template \"{{title}} {{listen-addr}} {{server-mode}} {{config-file}}\"\n\
         save \"\"\nappendonly no\ndir {dir}\nlogfile {log}\nmaxclients {maxclients}\n",
        dir = scratch.dir.display(),
        log = scratch.path("redis.log").display(),
    );
    if let Some(p) = password {
        conf += &format!("requirepass \"{p}\"\n");
    }
    let conf = scratch.file("redis.conf", &conf);
    let mut cmd = limited(nofile, BIN);
    cmd.arg(&conf)
        .current_dir(&scratch.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    Running::start(cmd, addr, scratch)
}

/// `program` under `prlimit --nofile=N:N` and, as root, without
/// CAP_SYS_RESOURCE (so the limit holds as for an unprivileged service).
pub fn limited(nofile: Option<u64>, program: &str) -> Command {
    let Some(n) = nofile else {
        return Command::new(program);
    };
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--nofile={n}:{n}")).arg("--");
    if crate::util::is_root() {
        cmd.args([
            "setpriv",
            "--bounding-set=-sys_resource",
            "--inh-caps=-sys_resource",
            "--",
        ]);
    }
    cmd.arg(program);
    cmd
}

/// Redis's own `connected_clients` (INFO clients), this query's connection
/// included, as Redis prints it. AUTH first when `password` is given.
pub fn connected_clients(addr: SocketAddr, password: Option<&str>) -> u64 {
    let info = info(addr, password, "clients");
    field(&info, "connected_clients").unwrap_or_else(|| panic!("no connected_clients in {info:?}"))
}

/// `maxclients` as the running Redis reports it (INFO clients).
pub fn maxclients(addr: SocketAddr, password: Option<&str>) -> u64 {
    let info = info(addr, password, "clients");
    field(&info, "maxclients").unwrap_or_else(|| panic!("no maxclients in {info:?}"))
}

fn field(info: &str, name: &str) -> Option<u64> {
    info.lines()
        .find_map(|l| l.trim_end().strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.parse().ok())
}

/// One `INFO section` over a fresh connection: the bulk reply's text.
pub fn info(addr: SocketAddr, password: Option<&str>, section: &str) -> String {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect to redis");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut req = String::new();
    if let Some(p) = password {
        req += &format!("*2\r\n$4\r\nAUTH\r\n${}\r\n{p}\r\n", p.len());
    }
    req += &format!("*2\r\n$4\r\nINFO\r\n${}\r\n{section}\r\n", section.len());
    s.write_all(req.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let text = String::from_utf8_lossy(&buf).into_owned();
        // The INFO reply: `$LEN\r\n` then LEN bytes.
        if let Some(start) = text.find('$') {
            if let Some(nl) = text[start..].find("\r\n") {
                if let Ok(len) = text[start + 1..start + nl].parse::<usize>() {
                    let body = start + nl + 2;
                    if buf.len() >= body + len {
                        return String::from_utf8_lossy(&buf[body..body + len]).into_owned();
                    }
                }
            }
        }
        if text.starts_with('-') && text.contains("\r\n") {
            panic!("redis on {addr} answered {text:?}");
        }
        let n = s.read(&mut chunk).expect("read from redis");
        assert!(n > 0, "redis on {addr} closed: {text:?}");
        buf.extend_from_slice(&chunk[..n]);
    }
}
