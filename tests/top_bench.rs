//! Cost of the dashboard (a benchmark, not a timed test; run it on purpose):
//!
//!     cargo test --release --test top_bench -- --ignored --nocapture
//!
//! Two `headroom serve` processes share one port (SO_REUSEPORT) so that
//! together they hold 20,000 connections under this host's nofile limit of
//! 20,000; four python3 client processes hold 5,000 connections each.
//! `headroom top --port P` refreshes once a second in tmux, and its CPU time
//! is read from /proc/PID/stat over HEADROOM_BENCH_SECS (default 30) seconds.

#[path = "util/top.rs"]
mod top;
mod util;

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use top::{Serve, Tmux};

/// (utime, stime) of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised comm: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    (f[11].parse().unwrap(), f[12].parse().unwrap())
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// Opens argv[2] connections to 127.0.0.1:argv[1] and holds them until stdin closes.
const HOLD: &str = r#"
import resource, socket, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (20000, 20000))
port, n = int(sys.argv[1]), int(sys.argv[2])
held = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(n)]
sys.stdin.read()
"#;

struct Clients(std::process::Child);

impl Drop for Clients {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn top_cpu_at_20000_connections() {
    let secs: u64 = std::env::var("HEADROOM_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let total = 20_000;
    let bin = util::headroom_bin();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let a = Serve::start_at(&bin, 20_000, &listen, &[]);
    let b = Serve::start_at(&bin, 20_000, &listen, &[]);

    // Four client processes of 5,000 connections each (one process could
    // not hold 20,000 under the same nofile limit).
    let clients: Vec<Clients> = (0..4)
        .map(|_| {
            Clients(
                Command::new("python3")
                    .arg("-c")
                    .arg(HOLD)
                    .arg(port.to_string())
                    .arg((total / 4).to_string())
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .spawn()
                    .expect("python3 runs"),
            )
        })
        .collect();
    let held = || top::open_fds(a.pid) + top::open_fds(b.pid);
    let deadline = Instant::now() + Duration::from_secs(160);
    while held() < total + 20 {
        assert!(Instant::now() < deadline, "only {} fds held", held());
        std::thread::sleep(Duration::from_millis(500));
    }

    let tmux = Tmux::start(
        &format!("exec '{}' top --port {port} --interval 1", bin.display()),
        160,
        50,
    );
    let screen = tmux.wait_for("20000 connections", Duration::from_secs(60), |s| {
        s.contains(&format!("connections {total} "))
    });
    assert!(screen.contains("2 processes"), "{screen}");
    let pid = tmux.pane_pid();
    let clk = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let t0 = Instant::now();
    let c0 = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(secs));
    let c1 = cpu_ticks(pid);
    let wall = t0.elapsed().as_secs_f64();
    let (user, sys) = (c1.0 - c0.0, c1.1 - c0.1);
    let cpu = (user + sys) as f64 / clk / wall * 100.0;
    let screen = tmux.screen();
    assert!(
        screen.contains(&format!("connections {total} ")),
        "{screen}"
    );
    println!(
        "headroom top at {total} connections, 1 refresh/s: {cpu:.2}% of one core over {wall:.0} s \
         (user {user} + system {sys} ticks), RSS {} KiB",
        rss_kib(pid)
    );
    tmux.send("q");
    drop(clients);
}
