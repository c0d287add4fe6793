//! Lab helpers: listeners created inside a throwaway namespace, `headroom
//! flood` run inside it, kernel counters read from it. Every child is
//! bounded in time and killed on drop.
#![allow(dead_code)]

use crate::util::{headroom_bin, Netns};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A TCP listener on 127.0.0.1:0 inside `ns`, with exactly this `backlog`
/// passed to listen(). Created from a short-lived thread that joined the
/// namespace (setns is per thread for network namespaces); the socket stays
/// in the namespace it was created in.
pub fn listener_in(ns: &Netns, backlog: i32) -> TcpListener {
    let path = format!("/var/run/netns/{}", ns.name);
    std::thread::spawn(move || {
        let f = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        // SAFETY: plain syscalls on fds we own; the sockaddr is a local value.
        unsafe {
            assert_eq!(
                libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET),
                0,
                "setns {path}"
            );
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            assert!(fd >= 0, "socket");
            let mut sa: libc::sockaddr_in = std::mem::zeroed();
            sa.sin_family = libc::AF_INET as libc::sa_family_t;
            sa.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
            let rc = libc::bind(
                fd,
                &sa as *const libc::sockaddr_in as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            );
            assert_eq!(rc, 0, "bind");
            assert_eq!(libc::listen(fd, backlog), 0, "listen");
            TcpListener::from_raw_fd(fd)
        }
    })
    .join()
    .expect("listener thread")
}

/// Accepts every connection on a listener and holds it until dropped.
pub struct Acceptor {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<usize>>,
}

impl Acceptor {
    pub fn spawn(listener: TcpListener) -> Acceptor {
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((c, _)) => held.push(c),
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
            held.len()
        });
        Acceptor {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops accepting; returns how many connections were accepted.
    pub fn finish(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A child process killed (and reaped) on drop.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `cmd` to completion, killing it after `limit`.
pub fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = Guard(
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}")),
    );
    let mut out = child.0.stdout.take().unwrap();
    let mut err = child.0.stderr.take().unwrap();
    let o = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let e = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "{cmd:?} still running after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: o.join().unwrap(),
        stderr: e.join().unwrap(),
    }
}

/// `headroom flood ... --json` inside `ns` (or on the host), parsed.
pub fn flood(ns: Option<&Netns>, args: &[&str]) -> serde_json::Value {
    let bin = headroom_bin();
    let bin = bin.to_str().unwrap();
    let mut argv = vec![bin, "flood"];
    argv.extend_from_slice(args);
    argv.push("--json");
    let mut cmd = match ns {
        Some(ns) => ns.command(&argv),
        None => {
            let mut c = Command::new(bin);
            c.args(&argv[1..]);
            c
        }
    };
    let out = output_within(&mut cmd, Duration::from_secs(180));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "flood {args:?}: no JSON ({e}); status {}; stderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// A TcpExt counter of /proc/net/netstat inside `ns`.
pub fn tcpext(ns: &Netns, name: &str) -> u64 {
    let out = ns.exec(&["cat", "/proc/net/netstat"]);
    assert!(out.status.success(), "read netstat in {}", ns.name);
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("TcpExt:")).collect();
    assert_eq!(lines.len(), 2, "TcpExt header and values");
    let keys = lines[0].split_whitespace().skip(1);
    let vals = lines[1].split_whitespace().skip(1);
    keys.zip(vals)
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.parse().unwrap())
        .unwrap_or_else(|| panic!("no TcpExt {name}"))
}

/// Reads lines from a child's stdout until one satisfies `pick`, within `limit`.
pub fn wait_for_line(child: &mut Child, limit: Duration, pick: impl Fn(&str) -> bool) -> String {
    let out = child.stdout.take().expect("stdout piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Keep draining after the caller stopped listening: a child writing
        // into a closed pipe would die of SIGPIPE.
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if pick(&l) => return l,
            Ok(_) => {}
            Err(_) => panic!("no matching line within {limit:?}"),
        }
    }
}

/// What `headroom status --port PORT --json`, run inside `ns`, reports
/// for the listener on `port`: (accept_queue_limit, accept_queue_peak).
pub fn probe_listener(ns: &Netns, port: u16) -> (u64, u64) {
    let bin = headroom_bin();
    let out = ns.exec(&[
        bin.to_str().unwrap(),
        "status",
        "--port",
        &port.to_string(),
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "status --port {port} --json: {e}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let l = v["listeners"]
        .as_array()
        .and_then(|ls| ls.iter().find(|l| l["port"] == port))
        .unwrap_or_else(|| panic!("no listener on {port} in {v:#}"));
    (
        l["accept_queue_limit"].as_u64().unwrap(),
        l["accept_queue_peak"].as_u64().unwrap(),
    )
}

/// Runs `f` on a short-lived thread that joined `ns` (setns is per thread
/// for network namespaces): sockets it creates live in the namespace.
pub fn in_netns<T: Send + 'static>(ns: &Netns, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{}", ns.name);
    std::thread::spawn(move || {
        let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        // SAFETY: setns on an fd we own, for this thread only.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}");
        f()
    })
    .join()
    .expect("namespace thread")
}

/// Waits until something accepts on 127.0.0.1:`port` inside `ns`.
pub fn wait_listening_in(ns: &Netns, port: u16, within: Duration) -> bool {
    in_netns(ns, move || {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let end = Instant::now() + within;
        while Instant::now() < end {
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    })
}

/// A server started inside `ns` (`ip netns exec`), in its own process group,
/// killed with that group on drop, once it accepts on 127.0.0.1:`port`.
pub struct ServerIn(pub Child);

impl ServerIn {
    pub fn start(ns: &Netns, argv: &[&str], port: u16) -> ServerIn {
        use std::os::unix::process::CommandExt;
        let mut cmd = ns.command(argv);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let s = ServerIn(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("start {argv:?} in {}: {e}", ns.name)),
        );
        assert!(
            wait_listening_in(ns, port, Duration::from_secs(20)),
            "{argv:?} did not listen on 127.0.0.1:{port} in {} within 20 s",
            ns.name
        );
        s
    }
}

impl Drop for ServerIn {
    fn drop(&mut self) {
        // SAFETY: a signal to the process group this helper created.
        unsafe {
            libc::kill(-(self.0.id() as i32), libc::SIGKILL);
        }
        let _ = self.0.wait();
    }
}
