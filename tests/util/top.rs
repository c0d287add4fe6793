//! Helpers for the dashboard's end-to-end tests: a real terminal (tmux on a
//! private socket, killed on drop) and a `headroom serve` child (killed on drop).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A tmux server of our own (`tmux -L`), so parallel tests and the user's
/// sessions never meet. Drop kills the server and whatever runs in it.
pub struct Tmux {
    socket: String,
}

impl Tmux {
    /// Runs `command` (a shell command line) in a detached session of the given size.
    pub fn start(command: &str, width: u16, height: u16) -> Tmux {
        let socket = format!(
            "headroom-e2e-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let t = Tmux { socket };
        let out = t
            .tmux(&[
                "new-session",
                "-d",
                "-s",
                "main",
                "-x",
                &width.to_string(),
                "-y",
                &height.to_string(),
            ])
            .arg(command)
            .env("TERM", "xterm-256color")
            .output()
            .expect("tmux runs");
        assert!(
            out.status.success(),
            "tmux new-session: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        t
    }

    fn tmux(&self, args: &[&str]) -> Command {
        let mut c = Command::new("tmux");
        c.arg("-L")
            .arg(&self.socket)
            .arg("-f")
            .arg("/dev/null")
            .args(args);
        c
    }

    /// The visible screen, as text.
    pub fn screen(&self) -> String {
        let out = self
            .tmux(&["capture-pane", "-p", "-t", "main"])
            .output()
            .expect("tmux runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `tmux send-keys` (key names like `q`, `Tab`, `?`).
    pub fn send(&self, keys: &str) {
        let out = self
            .tmux(&["send-keys", "-t", "main", keys])
            .output()
            .expect("tmux runs");
        assert!(out.status.success());
    }

    pub fn resize(&self, width: u16, height: u16) {
        let out = self
            .tmux(&[
                "resize-window",
                "-t",
                "main",
                "-x",
                &width.to_string(),
                "-y",
                &height.to_string(),
            ])
            .output()
            .expect("tmux runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The pid of the process running in the pane.
    pub fn pane_pid(&self) -> u32 {
        let out = self
            .tmux(&["display-message", "-p", "-t", "main", "#{pane_pid}"])
            .output()
            .expect("tmux runs");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("a pid")
    }

    /// Waits until the screen satisfies `ok`; panics with the last screen after `timeout`.
    pub fn wait_for(&self, what: &str, timeout: Duration, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.screen();
            if ok(&s) {
                return s;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}; screen:\n{s}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]).stderr(Stdio::null()).status();
    }
}

/// What `headroom serve --json` says once it listens.
pub struct Serve {
    pub child: Child,
    pub listen: SocketAddr,
    pub metrics: Option<SocketAddr>,
    pub pid: u32,
}

impl Serve {
    /// Starts `headroom serve --listen 127.0.0.1:0 --json` with RLIMIT_NOFILE
    /// set to `nofile` (lowering needs no privilege) plus `extra` arguments.
    pub fn start(bin: &Path, nofile: u64, extra: &[&str]) -> Serve {
        Serve::start_at(bin, nofile, "127.0.0.1:0", extra)
    }

    /// The same on a given address (several servers may share a port: SO_REUSEPORT).
    pub fn start_at(bin: &Path, nofile: u64, listen: &str, extra: &[&str]) -> Serve {
        let mut cmd = Command::new(bin);
        cmd.args(["serve", "--listen", listen, "--json"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        // SAFETY: setrlimit is async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                let lim = libc::rlimit {
                    rlim_cur: nofile,
                    rlim_max: nofile,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("headroom serve starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("serve prints its address");
        let v: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("serve --json printed {line:?}: {e}"));
        Serve {
            pid: child.id(),
            listen: v["listen"].as_str().unwrap().parse().unwrap(),
            metrics: v["metrics"].as_str().map(|a| a.parse().unwrap()),
            child,
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Opens `n` idle TCP connections to `addr`.
pub fn connect(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|i| {
            TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("connection {i}: {e}"))
        })
        .collect()
}

/// File descriptors `pid` holds now.
pub fn open_fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count() as u64
}

/// The number that follows `label` on the first screen line that holds it
/// (its leading digits: `310/4096` gives 310).
pub fn number_after(screen: &str, label: &str) -> Option<u64> {
    screen.lines().find_map(|l| {
        let rest = &l[l.find(label)? + label.len()..];
        let digits: String = rest
            .trim_start()
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        digits.parse().ok()
    })
}
