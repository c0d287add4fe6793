//! Starting HAProxy for the tests: `haproxy -db` in the foreground with a
//! configuration in a scratch directory. Its HTTP frontend on
//! 127.0.0.1:free_port either answers itself (`http-request return`: one fd
//! per client connection) or forwards to an origin, a second HAProxy that
//! answers itself. Forwarding in `mode tcp` costs the proxy two fds per
//! client connection for its whole life; in `mode http` the upstream
//! connection is held only while a request is in flight and then pooled
//! (idle keep-alive clients cost one fd). Clients must send a request
//! (`GET / HTTP/1.1`) to be answered; connections stay open (keep-alive) for
//! 60 s.
#![allow(dead_code)]

use super::{free_port, Running, Scratch};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

pub const BIN: &str = "/usr/sbin/haproxy";

/// How to start one HAProxy.
#[derive(Debug, Clone, Default)]
pub struct Haproxy {
    /// Global `maxconn`; `None`: HAProxy derives it from its fd limit.
    pub maxconn: Option<u64>,
    /// A `stats socket` (at [`stats_socket`]) in the global section.
    pub stats_socket: bool,
    /// Run under `prlimit --nofile=N:N` without CAP_SYS_RESOURCE.
    pub nofile: Option<u64>,
    /// `no strict-limits`: start even when the fd limit cannot be raised to
    /// what maxconn needs (else HAProxy refuses to start).
    pub no_strict_limits: bool,
    /// Forward to this origin instead of answering itself.
    pub origin: Option<SocketAddr>,
    /// Forward in `mode tcp` (else `mode http`).
    pub tcp: bool,
}

impl Haproxy {
    pub fn start(&self) -> Running {
        let scratch = Scratch::new("haproxy");
        let port = free_port();
        let mut global = String::from("global\n");
        if let Some(m) = self.maxconn {
            global += &format!("    maxconn {m}\n");
        }
        if self.stats_socket {
            global += &format!(
                "    stats socket {} mode 600 level admin\n",
                scratch.path("stats.sock").display()
            );
        }
        if self.no_strict_limits {
            global += "    no strict-limits\n";
        }
        let frontend = match self.origin {
            Some(o) => {
                let mode = if self.tcp { "tcp" } else { "http" };
                format!(
                    "frontend fe\n    mode {mode}\n    bind 127.0.0.1:{port}\n    default_backend origin\n\
                     backend origin\n    mode {mode}\n    server o1 {o}\n"
                )
            }
            None => format!(
                "frontend fe\n    bind 127.0.0.1:{port}\n    \
                 http-request return status 200 content-type text/plain string \"ok\"\n"
            ),
        };
        let cfg = format!(
            "{global}defaults\n    mode http\n    timeout connect 5s\n    timeout client 60s\n    \
             timeout server 60s\n    timeout http-keep-alive 60s\n    timeout http-request 60s\n{frontend}"
        );
        let path = scratch.file("haproxy.cfg", &cfg);
        let log = std::fs::File::create(scratch.path("haproxy.log")).expect("haproxy log");
        let mut cmd: Command = super::redis::limited(self.nofile, BIN);
        cmd.arg("-db")
            .arg("-f")
            .arg(&path)
            .current_dir(&scratch.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        Running::start(cmd, addr, scratch)
    }
}

/// HAProxy answering itself, with global `maxconn` (or derived) and a stats
/// socket when asked, optionally under an fd limit.
pub fn haproxy(maxconn: Option<u64>, stats_socket: bool, nofile: Option<u64>) -> Running {
    Haproxy {
        maxconn,
        stats_socket,
        nofile,
        ..Default::default()
    }
    .start()
}

/// A proxy and the origin it forwards to (both HAProxy).
pub struct Proxied {
    pub proxy: Running,
    pub origin: Running,
}

/// HAProxy forwarding every connection to an origin in `mode tcp`: two fds
/// per client connection in the proxy. `no strict-limits` when `nofile` is
/// given, so that the fd limit (not a refusal to start) is what binds.
pub fn haproxy_proxy(maxconn: Option<u64>, stats_socket: bool, nofile: Option<u64>) -> Proxied {
    let origin = haproxy(None, false, None);
    let proxy = Haproxy {
        maxconn,
        stats_socket,
        nofile,
        no_strict_limits: nofile.is_some(),
        origin: Some(origin.addr),
        tcp: true,
    }
    .start();
    Proxied { proxy, origin }
}

/// Where [`Haproxy::stats_socket`] puts the stats socket.
pub fn stats_socket(r: &Running) -> PathBuf {
    r.scratch.path("stats.sock")
}

/// `show info` on a stats socket: its `Name: value` lines.
pub fn show_info(sock: &Path) -> Vec<(String, String)> {
    let mut s = UnixStream::connect(sock).unwrap_or_else(|e| panic!("{}: {e}", sock.display()));
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"show info\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read show info");
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

fn info_field(sock: &Path, name: &str) -> u64 {
    show_info(sock)
        .into_iter()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in show info on {}", sock.display()))
}

/// HAProxy's own count of client connections (`CurrConns`; the stats
/// socket's own connection is not counted).
pub fn curr_conns(sock: &Path) -> u64 {
    info_field(sock, "CurrConns")
}

/// HAProxy's maxconn as it runs (`Maxconn`: set, or derived at start).
pub fn maxconn(sock: &Path) -> u64 {
    info_field(sock, "Maxconn")
}
