//! `headroom up`: the first command of the README. Starts the bundled server
//! (`headroom serve`, as a child process) on its defaults and opens the
//! dashboard on it; quitting the dashboard stops the server cleanly
//! (SIGTERM, then it drains).

use super::CmdResult;
use crate::dashboard::{run_options, LocalSource};
use anyhow::{bail, Context};
use headroom_probe::Target;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// Address for the server (default: `headroom serve`'s own, 127.0.0.1:8707).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Also serve the server's Prometheus metrics on this address.
    #[arg(long)]
    pub metrics: Option<SocketAddr>,
    /// Seconds between dashboard refreshes.
    #[arg(long, short = 'd', value_name = "SECONDS", default_value_t = 1.0)]
    pub interval: f64,
    /// Seconds the connection growth rate is measured over.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    pub rate_window: f64,
    /// The server's log (its stderr); default: headroom-up-PID.log in the temp directory.
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// Seconds the server gets to drain its connections when the dashboard quits.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub drain_timeout: u64,
    /// Poll /proc and sock_diag only; do not load the eBPF probe.
    #[arg(long)]
    pub no_ebpf: bool,
}

/// The server child; stopped (SIGTERM, then SIGKILL after the drain) when
/// dropped, so no error path leaves it running.
struct Server {
    child: Child,
    drain: Duration,
    status: Option<ExitStatus>,
}

impl Server {
    fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// SIGTERM, wait for the drain, then SIGKILL. Returns how it ended and
    /// whether it had to be killed.
    fn stop(&mut self) -> (Option<ExitStatus>, bool) {
        if let Some(s) = self.exited() {
            return (Some(s), false);
        }
        // SAFETY: kill(2) on our own child's pid; it has not been reaped, so
        // the pid cannot have been reused.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + self.drain + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Some(s) = self.exited() {
                return (Some(s), false);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        self.status = self.child.wait().ok();
        (self.status, true)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last lines of the server's log, for an error message.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join("\n")
}

pub fn run(args: Args) -> CmdResult {
    let options = run_options(args.interval, args.rate_window)?;
    let exe = std::env::current_exe().context("finding the headroom binary")?;
    let log_path = args.log.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("headroom-up-{}.log", std::process::id()))
    });
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating the server log {}", log_path.display()))?;

    let mut cmd = Command::new(exe);
    cmd.arg("serve")
        .arg("--json")
        .arg("--drain-timeout")
        .arg(args.drain_timeout.to_string());
    if let Some(a) = args.listen {
        cmd.arg("--listen").arg(a.to_string());
    }
    if let Some(a) = args.metrics {
        cmd.arg("--metrics").arg(a.to_string());
    }
    // Own process group: a Ctrl-C meant for the dashboard is not the server's.
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .process_group(0);
    // If the dashboard dies without stopping it (SIGHUP when the terminal
    // closes, SIGKILL), the kernel sends the server SIGTERM, so it drains
    // instead of lingering.
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("starting `headroom serve`")?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut server = Server {
        child,
        drain: Duration::from_secs(args.drain_timeout),
        status: None,
    };

    // `serve --json` prints one line once it listens. The reader keeps the
    // pipe drained afterwards so the server never blocks on stdout.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let _ = tx.send(lines.next());
        for _ in lines {}
    });
    let ready = match rx.recv_timeout(Duration::from_secs(15)) {
        Ok(Some(Ok(line))) => line,
        Ok(_) => {
            let (status, _) = server.stop();
            bail!(
                "`headroom serve` exited before serving ({}); its log {}:\n{}",
                status.map_or("unknown status".to_string(), |s| s.to_string()),
                log_path.display(),
                log_tail(&log_path)
            );
        }
        Err(_) => bail!(
            "`headroom serve` did not start within 15 s; its log {}:\n{}",
            log_path.display(),
            log_tail(&log_path)
        ),
    };
    let info: serde_json::Value =
        serde_json::from_str(&ready).context("reading `headroom serve --json`")?;
    let listen = info["listen"].as_str().unwrap_or("?").to_string();

    // The same source as `headroom top`: eBPF when it loads, polling (and
    // the reason in the title bar) when it does not.
    let mut source = LocalSource::open(
        Target::Pid(server.child.id()),
        headroom_probe::DEFAULT_RESYNC,
        args.no_ebpf,
        headroom_apps::Options::default(),
    )?;
    let result = headroom_tui::run(&mut source, options, |app| {
        if let Some(status) = server.exited() {
            app.source_error(format!(
                "server exited ({status}); log: {}",
                log_path.display()
            ));
        }
        Ok(())
    });
    let (status, killed) = server.stop();
    // As in `top`: the kernel's detach of the eBPF programs takes seconds,
    // so a child that outlives us closes them and the shell has its prompt.
    super::detach_after_exit(source);
    result?;
    let how = match (status, killed) {
        (_, true) => "did not drain in time and was killed".to_string(),
        (Some(s), false) if s.success() => "stopped cleanly".to_string(),
        (Some(s), false) => format!("stopped ({s})"),
        (None, false) => "stopped".to_string(),
    };
    eprintln!(
        "headroom up: server on {listen} {how}; its log: {}",
        log_path.display()
    );
    Ok(match status {
        Some(s) if s.success() && !killed => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    })
}
