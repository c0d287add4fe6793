//! Starting nginx for the tests: a foreground master (`daemon off`) with a
//! configuration written into a scratch directory, one `listen
//! 127.0.0.1:PORT` server answering 200 with long keep-alive, and
//! `stub_status` on `/nginx_status` (Debian's nginx-light has the module).
#![allow(dead_code)]

use super::{free_port, Running, Scratch};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const NGINX: &str = "/usr/sbin/nginx";

/// nginx with `workers` worker processes of `worker_connections` each, and
/// `worker_rlimit_nofile` when given, listening on 127.0.0.1:free port.
/// Returns once every worker runs. `Running::pid` is the master.
pub fn nginx(workers: u32, worker_connections: u64, rlimit_nofile: Option<u64>) -> Running {
    let scratch = Scratch::new("nginx");
    let port = free_port();
    let dir = scratch.dir.display().to_string();
    let rlimit = rlimit_nofile
        .map(|n| format!("worker_rlimit_nofile {n};\n"))
        .unwrap_or_default();
    let conf = format!(
        "daemon off;
master_process on;
worker_processes {workers};
{rlimit}pid {dir}/nginx.pid;
error_log {dir}/error.log notice;
events {{
    worker_connections {worker_connections};
}}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_timeout 600s;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port};
        location / {{ return 200 \"ok\\n\"; }}
        location = /nginx_status {{ stub_status; }}
    }}
}}
"
    );
    let path = scratch.file("nginx.conf", &conf);
    let log = std::fs::File::create(scratch.path("stderr.log")).expect("nginx stderr log");
    let mut cmd = Command::new(NGINX);
    cmd.arg("-p")
        .arg(format!("{dir}/"))
        .arg("-c")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let r = Running::start(cmd, addr, scratch);
    let end = Instant::now() + Duration::from_secs(10);
    while nginx_workers(&r).len() < workers as usize {
        assert!(
            Instant::now() < end,
            "nginx: {workers} workers did not start: {}",
            nginx_error_log(&r)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    r
}

/// The master's running workers (`nginx: worker process`), sorted.
pub fn nginx_workers(r: &Running) -> Vec<u32> {
    let kids =
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", r.pid)).unwrap_or_default();
    let mut v: Vec<u32> = kids
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c).trim_matches('\0').trim() == "nginx: worker process"
                })
                .unwrap_or(false)
        })
        .collect();
    v.sort_unstable();
    v
}

/// Established connections on local `port` held by each worker.
pub fn nginx_established(r: &Running) -> Vec<(u32, u64)> {
    nginx_workers(r)
        .into_iter()
        .map(|w| (w, established_by(w, r.port())))
        .collect()
}

/// TCP connections in ESTABLISHED (or CLOSE_WAIT: accepted, peer gone, not
/// yet closed by the server) on local `port` whose socket `pid` holds.
pub fn established_by(pid: u32, port: u16) -> u64 {
    let mut inodes = BTreeSet::new();
    if let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for e in rd.flatten() {
            if let Ok(t) = std::fs::read_link(e.path()) {
                let t = t.to_string_lossy().into_owned();
                if let Some(n) = t
                    .strip_prefix("socket:[")
                    .and_then(|x| x.strip_suffix(']'))
                    .and_then(|x| x.parse::<u64>().ok())
                {
                    inodes.insert(n);
                }
            }
        }
    }
    let mut n = 0;
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || !(f[3] == "01" || f[3] == "08") {
                continue;
            }
            let local_port = f[1]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) && f[9].parse::<u64>().is_ok_and(|i| inodes.contains(&i)) {
                n += 1;
            }
        }
    }
    n
}

/// nginx's own counters from stub_status: (active, reading, writing,
/// waiting). The status request's own connection is one of the active and
/// of the writing; at the cap it is a new connection like any other and
/// makes its worker close idle ones first.
pub fn nginx_stub_status(r: &Running) -> Option<(u64, u64, u64, u64)> {
    let mut s = TcpStream::connect_timeout(&r.addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /nginx_status HTTP/1.0\r\nHost: x\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    let num = |key: &str| -> Option<u64> {
        let at = body.find(key)? + key.len();
        body[at..].split_whitespace().next()?.parse().ok()
    };
    Some((
        num("Active connections:")?,
        num("Reading:")?,
        num("Writing:")?,
        num("Waiting:")?,
    ))
}

/// The error log (startup messages, "worker_connections are not enough").
pub fn nginx_error_log(r: &Running) -> String {
    std::fs::read_to_string(r.scratch.path("error.log")).unwrap_or_default()
}
