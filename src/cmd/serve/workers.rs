//! `headroom serve --workers N|auto`: the supervisor side (start, place,
//! restart, drain, one metrics endpoint) and the worker side (a normal
//! `serve` process joined to the service), glued to `serve`'s arguments.
//! The mechanics live in `headroom_server::{supervisor, workers}`.

use super::Args;
use crate::cmd::CmdResult;
use anyhow::{bail, Context};
use headroom_server::supervisor::{self, Plan};
use headroom_server::tcp::TcpServer;
use headroom_server::workers::{self, Shm, WorkerLink};
use headroom_server::Metrics;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// `--workers`: a count, or `auto`.
fn worker_count(spec: &str, max_connections: Option<u64>) -> anyhow::Result<usize> {
    let n = if spec == "auto" {
        let (soft, _) = headroom_server::capacity::nofile();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        workers::auto_workers(max_connections, soft, cores)
    } else {
        spec.parse::<usize>()
            .ok()
            .filter(|n| (1..=workers::MAX_WORKERS).contains(n))
            .with_context(|| {
                format!(
                    "--workers {spec}: a number from 1 to {} or `auto`",
                    workers::MAX_WORKERS
                )
            })?
    };
    Ok(n)
}

/// The arguments every worker gets: this command's, minus what the
/// supervisor owns (listen, workers, metrics, json, max-connections), with
/// one runtime thread per worker unless `--threads` says otherwise.
fn worker_args(a: &Args) -> Vec<OsString> {
    let mut v: Vec<OsString> = vec!["serve".into()];
    let mut kv = |k: &str, val: String| {
        v.push(k.into());
        v.push(val.into());
    };
    kv("--max-message-bytes", a.max_message_bytes.to_string());
    kv("--max-in-flight", a.max_in_flight.to_string());
    kv("--idle-timeout", a.idle_timeout.to_string());
    kv("--write-timeout", a.write_timeout.to_string());
    kv("--line-timeout", a.line_timeout.to_string());
    kv("--drain-timeout", a.drain_timeout.to_string());
    kv("--defer-accept", a.defer_accept.to_string());
    kv("--threads", a.threads.unwrap_or(1).to_string());
    kv("--runtime", a.runtime.clone());
    kv("--page-size", a.page_size.to_string());
    if let Some(t) = &a.token_file {
        v.push("--token-file".into());
        v.push(t.into());
    }
    if let Some(p) = &a.profiles {
        v.push("--profiles".into());
        v.push(p.into());
    }
    if a.allow_measure {
        v.push("--allow-measure".into());
    }
    v
}

/// Runs the supervisor of `--workers`.
pub fn supervise(a: &Args, spec: &str) -> CmdResult {
    if a.stdio || a.http.is_some() {
        bail!("--workers serves newline-delimited JSON-RPC over TCP; it does not combine with --stdio or --http");
    }
    let n = worker_count(spec, a.max_connections)?;
    let exe = std::env::current_exe().context("cannot find our own executable for workers")?;
    let plan = Plan {
        workers: n,
        listen: a.listen.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8707))),
        max_connections: a.max_connections,
        metrics: a.metrics,
        drain_timeout: Duration::from_secs(a.drain_timeout),
        exe,
        worker_args: worker_args(a),
        json: a.json,
    };
    let clean = supervisor::run(plan)?;
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// A `serve` process started by a supervisor.
pub struct Worker {
    link: Arc<WorkerLink>,
    adopted: tokio::sync::mpsc::UnboundedSender<std::net::TcpStream>,
}

/// Joins `server` to its service when this process is a worker
/// (`--worker-index`/`--worker-fds`, set only by the supervisor).
pub fn attach(a: &Args, server: TcpServer) -> anyhow::Result<(TcpServer, Option<Worker>)> {
    let (Some(index), Some(fds)) = (a.worker_index, a.worker_fds.as_deref()) else {
        return Ok((server, None));
    };
    let (shm_fd, chan_fd) = fds
        .split_once(',')
        .and_then(|(x, y)| Some((x.parse::<i32>().ok()?, y.parse::<i32>().ok()?)))
        .context("--worker-fds: internal option, set by `serve --workers`")?;
    if index >= workers::MAX_WORKERS {
        bail!("--worker-index {index}: out of range");
    }
    // SAFETY: the supervisor passed these two descriptors to this process
    // only (cleared close-on-exec for them); nothing else here owns them.
    let shm = unsafe { Shm::from_raw_fd(shm_fd) }.context("mapping the worker table")?;
    let chan = unsafe { OwnedFd::from_raw_fd(chan_fd) };
    for fd in [shm.raw_fd(), chan_fd] {
        // SAFETY: fcntl on descriptors we own; our own children must not inherit them.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    let link = Arc::new(WorkerLink {
        shm: Arc::new(shm),
        index,
        chan: Arc::new(chan),
    });
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let server = server.with_service(link.clone(), rx);
    Ok((server, Some(Worker { link, adopted: tx })))
}

impl Worker {
    /// Publishes the ceiling; from now on the supervisor may send connections.
    pub fn ready(&self, ceiling: u64) {
        self.link.ready(ceiling);
    }

    /// Serves the channel until the supervisor is gone.
    pub async fn channel(self, metrics: Arc<Metrics>) {
        let r = workers::worker_channel(self.link.chan.clone(), self.adopted, move || {
            metrics.render()
        })
        .await;
        if let Err(e) = r {
            eprintln!("headroom serve: worker channel: {e}");
        }
    }
}
