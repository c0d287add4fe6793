//! One flood worker process: opens its share of connections on a
//! single-threaded runtime, holds them, bombs and checks them on cue.
//!
//! Single-threaded on purpose: several worker processes give both more
//! descriptors (one fd table each) and more cores, and inside a worker
//! nothing needs a lock.

use crate::mcp;
use crate::outcome::{classify_unsolicited, Failure, FailureKind};
use crate::proto::Proto;
use crate::report::{
    histogram, BombStats, Failures, PingStats, Recorded, StopReason, WorkerReport,
};
use crate::session::{self, open_one, Session};
use crate::spec::{Mode, WorkerSpec};
use hdrhistogram::Histogram;
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::io;
use std::rc::Rc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt};
use tokio::sync::{watch, Semaphore};
use tokio::time::{sleep_until, timeout, Instant};

pub use crate::mcp::PROTOCOL_VERSION;

/// What held sessions should do now.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Hold,
    Bomb { until: Instant },
    Ping,
    Close,
}

#[derive(Default)]
pub(crate) struct State {
    pub opened: u64,
    pub dropped: u64,
    /// Highest attempt index that succeeded, and the failed attempts after it.
    /// Attempts complete out of order (a refusal is quicker than a
    /// handshake), so the streak is counted in attempt order, not completion order.
    last_success: Option<u64>,
    streak: BTreeSet<u64>,
    stop: bool,
    first_failure_after: Option<u64>,
    failures: Failures,
    latency: Option<Histogram<u64>>,
    pub bomb: BombStats,
    pub bomb_latency: Option<Histogram<u64>>,
    pub ping: PingStats,
    pub ping_latency: Option<Histogram<u64>>,
    /// Protocol modes: connections that got a good reply in the open phase
    /// (held or not: an HTTP `Connection: close` answer counts).
    pub served_total: u64,
    /// Served connections the server closed while idle in the open phase.
    closed_idle: u64,
    /// Protocol modes: the open phase as (monotonic µs, +1 served / -1
    /// closed by the server), so that the orchestrator can find how many
    /// were held at once over all workers.
    timeline: Option<Vec<(u64, i64)>>,
    open_phase_over: bool,
}

pub(crate) type Shared = Rc<RefCell<State>>;

/// Longest a worker holds its connections after its final report, waiting
/// for the orchestrator's release.
pub const RELEASE_WAIT: Duration = Duration::from_secs(30);

impl State {
    fn success(&mut self, attempt: u64, us: u64) {
        self.opened += 1;
        if self.last_success.is_none_or(|l| attempt > l) {
            self.last_success = Some(attempt);
            self.streak = self.streak.split_off(&(attempt + 1));
        }
        let _ = self.latency.get_or_insert_with(histogram).record(us.max(1));
        if let Some(t) = self.timeline.as_mut() {
            t.push((monotonic_us(), 1));
        }
    }

    /// A failed attempt (or a held connection the server dropped: then
    /// `attempt` is the attempt that opened it).
    fn failure(&mut self, attempt: u64, f: &Failure, fail_streak: u64) {
        self.failures.record(f);
        self.first_failure_after.get_or_insert(self.opened);
        if self.last_success.is_none_or(|l| attempt >= l) {
            self.streak.insert(attempt);
        }
        if self.streak.len() as u64 >= fail_streak.max(1) {
            self.stop = true;
        }
    }

    /// A held connection the server closed or broke while the flood held it.
    fn dropped(&mut self, attempt: u64, f: &Failure, fail_streak: u64) {
        self.dropped += 1;
        self.failure(attempt, f, fail_streak);
        if !self.open_phase_over {
            if f.kind == FailureKind::ClosedIdle {
                self.closed_idle += 1;
            }
            if let Some(t) = self.timeline.as_mut() {
                t.push((monotonic_us(), -1));
            }
        }
    }
}

/// CLOCK_MONOTONIC in µs: one clock for every process of the host, so that
/// the workers' timelines line up.
fn monotonic_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the struct we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

/// Whether held connections get the end check: the MCP ping, the protocol
/// request again, or in connect mode a look at whether they are still open.
fn checks(spec: &WorkerSpec) -> bool {
    spec.ping
}

/// Runs a worker to completion: open phase, report, wait for `go`, bomb and
/// check as the spec says, report again, wait for `release`, close
/// everything.
///
/// `report` receives each [`WorkerReport`]; `go` blocks until the
/// orchestrator says the other phases may start, `release` until it has
/// looked at the server one last time with every connection still held
/// (both run on a blocking thread, so held sessions keep being served
/// meanwhile; `release` is waited for at most [`RELEASE_WAIT`]).
pub fn run(
    spec: WorkerSpec,
    mut report: impl FnMut(&WorkerReport) -> io::Result<()>,
    go: impl FnOnce() -> io::Result<()> + Send + 'static,
    release: impl FnOnce() + Send + 'static,
) -> io::Result<()> {
    let nofile = if spec.raise_nofile {
        raise_nofile()
    } else {
        nofile_soft()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let done = local.block_on(&rt, async move {
        let st: Shared = Rc::new(RefCell::new(State::default()));
        if spec.mode.is_protocol() {
            st.borrow_mut().timeline = Some(Vec::new());
        }
        let (phase_tx, phase_rx) = watch::channel(Phase::Hold);

        let started = Instant::now();
        let cpu0 = process_cpu_us();
        let (attempted, stop) = open_phase(&spec, &st, &phase_rx).await;
        st.borrow_mut().open_phase_over = true;
        let open_ms = started.elapsed().as_millis() as u64;
        let mut opened = snapshot(&spec, &st, attempted, stop, open_ms, nofile, false);
        opened.open_cpu_us = process_cpu_us().saturating_sub(cpu0);
        report(&opened)?;

        tokio::task::spawn_blocking(go)
            .await
            .map_err(io::Error::other)??;

        if spec.mode == Mode::Bomb {
            let t0 = Instant::now();
            let until = t0 + Duration::from_millis(spec.bomb_ms);
            let sessions = st.borrow().opened - st.borrow().dropped;
            st.borrow_mut().bomb.sessions = sessions;
            let _ = phase_tx.send(Phase::Bomb { until });
            // Sessions drain their window after `until`; give them the timeout.
            wait_quiet(&st, until + Duration::from_millis(spec.timeout_ms), |s| {
                s.bomb.replies + s.bomb.errors + s.bomb.lost >= s.bomb.sent
                    && s.bomb.sessions_done >= s.bomb.sessions
            })
            .await;
            st.borrow_mut().bomb.elapsed_ms = t0.elapsed().as_millis() as u64;
        }
        if checks(&spec) {
            let sessions = st.borrow().opened - st.borrow().dropped;
            st.borrow_mut().ping.sessions = sessions;
            let _ = phase_tx.send(Phase::Ping);
            // Every session of every worker is checked at once: each check
            // waits for the server's turn through all of them
            // (`check_timeout`), and the phase a little longer for this
            // worker to write and read its own.
            let deadline = Instant::now()
                + spec.check_timeout()
                + Duration::from_millis(spec.timeout_ms.max(1000))
                + Duration::from_micros(100) * sessions as u32;
            wait_quiet(&st, deadline, |s| {
                s.ping.replies + s.ping.failed >= s.ping.sessions
            })
            .await;
            // A check still unanswered now proves nothing: it is not held.
            let mut g = st.borrow_mut();
            let silent = g
                .ping
                .sessions
                .saturating_sub(g.ping.replies + g.ping.failed);
            if silent > 0 {
                g.ping.failed += silent;
                g.dropped += silent;
                g.failures.record(&Failure::new(
                    FailureKind::Timeout,
                    format!("{silent} end checks unanswered when the check phase ended"),
                ));
            }
        }
        report(&snapshot(
            &spec, &st, attempted, stop, open_ms, nofile, true,
        ))?;
        let _ = timeout(RELEASE_WAIT, tokio::task::spawn_blocking(release)).await;
        let _ = phase_tx.send(Phase::Close);
        // Let session tasks see Close and reset their sockets.
        tokio::task::yield_now().await;
        Ok(())
    });
    // A release that never came leaves its thread blocked on stdin: do not
    // wait for it.
    rt.shutdown_background();
    done
}

async fn wait_quiet(st: &Shared, deadline: Instant, done: impl Fn(&State) -> bool) {
    while Instant::now() < deadline && !done(&st.borrow()) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn snapshot(
    spec: &WorkerSpec,
    st: &Shared,
    attempted: u64,
    stop: StopReason,
    open_ms: u64,
    nofile: u64,
    final_: bool,
) -> WorkerReport {
    let s = st.borrow();
    let rec =
        |h: &Option<Histogram<u64>>| h.as_ref().map(Recorded::from_histogram).unwrap_or_default();
    WorkerReport {
        index: spec.index,
        final_,
        attempted,
        opened: s.opened,
        held: s.opened - s.dropped,
        stop,
        open_ms,
        first_failure_after: s.first_failure_after,
        failures: s.failures.clone(),
        latency: rec(&s.latency),
        nofile,
        open_cpu_us: 0,
        bomb: (final_ && spec.mode == Mode::Bomb).then(|| BombStats {
            latency: rec(&s.bomb_latency),
            ..s.bomb.clone()
        }),
        ping: (final_ && checks(spec)).then(|| PingStats {
            latency: rec(&s.ping_latency),
            ..s.ping.clone()
        }),
        served_total: s.served_total,
        closed_idle: s.closed_idle,
        // Sent once, with the open-phase report.
        timeline: if final_ {
            Vec::new()
        } else {
            s.timeline.clone().unwrap_or_default()
        },
    }
}

/// Opens up to `spec.connections`, paced by `rate`, at most `concurrency` in
/// flight; stops on a failure streak or at the deadline.
async fn open_phase(
    spec: &WorkerSpec,
    st: &Shared,
    phase: &watch::Receiver<Phase>,
) -> (u64, StopReason) {
    let deadline = Instant::now() + Duration::from_millis(spec.duration_ms);
    let gate = std::sync::Arc::new(Semaphore::new(spec.concurrency.max(1) as usize));
    // Shared by every session task of this worker: one allocation, not a
    // copy of the spec (and its source list) per connection.
    let shared_spec = Rc::new(spec.clone());
    let proto = Rc::new(Proto::new(spec.mode, &spec.proto, spec.target));
    let interval = (spec.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / spec.rate));
    // The protocol modes time out inside (telling a dropped SYN from a
    // missing reply); this outer bound only catches what they miss.
    let outer = Duration::from_millis(spec.timeout_ms)
        + if proto.is_some() {
            Duration::from_secs(1)
        } else {
            Duration::ZERO
        };
    let start = Instant::now();
    let mut attempted = 0u64;
    let mut stop = StopReason::Target;
    for i in 0..spec.connections {
        if st.borrow().stop {
            stop = StopReason::Failure;
            break;
        }
        if let Some(iv) = interval {
            let at = start + iv.mul_f64(i as f64);
            if at >= deadline {
                stop = StopReason::Duration;
                break;
            }
            sleep_until(at).await;
        }
        let permit = tokio::select! {
            p = gate.clone().acquire_owned() => p.expect("semaphore never closed"),
            _ = sleep_until(deadline) => { stop = StopReason::Duration; break; }
        };
        if Instant::now() >= deadline {
            stop = StopReason::Duration;
            break;
        }
        if st.borrow().stop {
            stop = StopReason::Failure;
            break;
        }
        attempted += 1;
        let source = (!spec.sources.is_empty())
            .then(|| spec.sources[(i as usize + spec.index as usize) % spec.sources.len()]);
        let (st, spec2, phase, proto) = (
            st.clone(),
            shared_spec.clone(),
            phase.clone(),
            proto.clone(),
        );
        tokio::task::spawn_local(async move {
            let opened = timeout(
                outer,
                open_one(&spec2, proto.as_ref().as_ref(), source, &st),
            )
            .await;
            let opened = opened.unwrap_or_else(|_| {
                Err(Failure::new(
                    FailureKind::Timeout,
                    format!("no answer within {} ms", spec2.timeout_ms),
                ))
            });
            match opened {
                Ok((session, latency)) => {
                    st.borrow_mut().success(i, latency.as_micros() as u64);
                    drop(permit);
                    hold(session, i, &spec2, proto.as_ref().as_ref(), &st, phase).await;
                }
                Err(f) => {
                    st.borrow_mut().failure(i, &f, spec2.fail_streak);
                    drop(permit);
                }
            }
        });
    }
    // Wait for the attempts still in flight (each bounded by the timeout).
    let _all = gate.acquire_many(spec.concurrency.max(1)).await;
    if st.borrow().stop {
        stop = StopReason::Failure;
    }
    (attempted, stop)
}

/// Holds one session until Close: anything the server sends while idle ends
/// it (a refusal line, a close, a reset) and is counted.
async fn hold(
    mut s: Session,
    attempt: u64,
    spec: &WorkerSpec,
    proto: Option<&Proto>,
    st: &Shared,
    mut phase: watch::Receiver<Phase>,
) {
    // Act once per phase change; sessions only ever see Hold -> Bomb -> Ping -> Close.
    let mut current = *phase.borrow_and_update();
    loop {
        match current {
            Phase::Close => break,
            Phase::Bomb { until } => {
                if !mcp::bomb(&mut s, spec, st, until).await {
                    return;
                }
            }
            Phase::Ping if spec.mode.is_mcp() => {
                if !mcp::ping(&mut s, spec, st).await {
                    return;
                }
            }
            Phase::Ping => {
                if !check(&mut s, attempt, spec, proto, st).await {
                    return;
                }
            }
            Phase::Hold => {}
        }
        // Idle: wait for the next phase, or for the server to speak.
        s.line.clear();
        s.buf.clear();
        let idle = async {
            match proto {
                None => match s.reader.read_line(&mut s.line).await {
                    Ok(0) => Failure::new(FailureKind::Closed, "server closed the connection"),
                    Ok(_) => classify_unsolicited(&s.line),
                    Err(e) => Failure::from_io(&e),
                },
                Some(p) => match s.reader.read_buf(&mut s.buf).await {
                    Ok(0) => Failure::new(
                        FailureKind::ClosedIdle,
                        "the server closed a connection it had served, while idle",
                    ),
                    Ok(_) => p.unsolicited(&s.buf),
                    Err(e) => Failure::from_io(&e),
                },
            }
        };
        let said = tokio::select! {
            changed = phase.changed() => Err(changed.is_err()),
            f = idle => Ok(f),
        };
        let said = match said {
            Ok(f) => f,
            Err(true) => break,
            Err(false) => {
                current = *phase.borrow_and_update();
                continue;
            }
        };
        st.borrow_mut().dropped(attempt, &said, spec.fail_streak);
        return;
    }
}

/// The end check of a connect- or protocol-mode connection; false when it
/// is no longer served (and then counted as dropped).
async fn check(
    s: &mut Session,
    attempt: u64,
    spec: &WorkerSpec,
    proto: Option<&Proto>,
    st: &Shared,
) -> bool {
    let t0 = Instant::now();
    let r = match proto {
        Some(p) => session::check(s, p, spec.check_timeout().as_millis() as u64).await,
        None => session::still_open(s, None),
    };
    let mut g = st.borrow_mut();
    match r {
        Ok(()) => {
            g.ping.replies += 1;
            let _ = g
                .ping_latency
                .get_or_insert_with(histogram)
                .record((t0.elapsed().as_micros() as u64).max(1));
            true
        }
        Err(f) => {
            g.ping.failed += 1;
            g.dropped(attempt, &f, spec.fail_streak);
            false
        }
    }
}

/// User + system CPU of this process so far, µs.
fn process_cpu_us() -> u64 {
    headroom_host::process::cpu_time().map_or(0, |t| t.as_micros() as u64)
}

/// The current RLIMIT_NOFILE soft limit.
pub fn nofile_soft() -> u64 {
    headroom_host::process::nofile().map_or(0, |l| l.soft)
}

/// Raises RLIMIT_NOFILE soft to hard (no privilege needed); returns the new soft limit.
pub fn raise_nofile() -> u64 {
    // A refusal leaves the limit as it was, which is what is returned.
    let _ = headroom_host::process::raise_nofile();
    nofile_soft()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_streak_counts_in_attempt_order() {
        let f = Failure::new(FailureKind::Eaddrnotavail, "x");
        let mut s = State::default();
        s.failure(5, &f, 3);
        s.failure(6, &f, 3);
        // An older attempt's success completing late does not break the streak.
        s.success(4, 10);
        assert_eq!(s.streak.len(), 2);
        assert!(!s.stop);
        // A later attempt's success does.
        s.success(7, 10);
        assert!(s.streak.is_empty());
        // Nor does a failure older than the last success join the streak.
        s.failure(3, &f, 3);
        assert!(s.streak.is_empty());
        for i in 8..11 {
            s.failure(i, &f, 3);
        }
        assert!(s.stop);
        assert_eq!((s.opened, s.failures.total()), (2, 6));
        assert_eq!(s.first_failure_after, Some(0));
    }
}
