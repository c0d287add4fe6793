//! One flood worker process: opens its share of connections on a
//! single-threaded runtime, holds them, bombs and pings them on cue.
//!
//! Single-threaded on purpose: several worker processes give both more
//! descriptors (one fd table each) and more cores, and inside a worker
//! nothing needs a lock.

use crate::outcome::{classify_unsolicited, parse_reply, Failure, FailureKind, Reply};
use crate::report::{
    histogram, BombStats, Failures, PingStats, Recorded, StopReason, WorkerReport,
};
use crate::spec::{Mode, WorkerSpec};
use hdrhistogram::Histogram;
use std::cell::RefCell;
use std::collections::{BTreeSet, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::{sleep_until, timeout, Instant};

/// MCP protocol version the flood speaks.
pub const PROTOCOL_VERSION: &str = "2025-11-25";

/// The `initialize` request every MCP-mode session sends (protocol
/// [`PROTOCOL_VERSION`]).
const INITIALIZE: &str = concat!(
    r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","#,
    r#""capabilities":{},"clientInfo":{"name":"headroom-flood","version":""#,
    env!("CARGO_PKG_VERSION"),
    r#""}}}"#,
    "\n"
);

/// What held sessions should do now.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Hold,
    Bomb { until: Instant },
    Ping,
    Close,
}

#[derive(Default)]
struct State {
    opened: u64,
    dropped: u64,
    /// Highest attempt index that succeeded, and the failed attempts after it.
    /// Attempts complete out of order (a refusal is quicker than a
    /// handshake), so the streak is counted in attempt order, not completion order.
    last_success: Option<u64>,
    streak: BTreeSet<u64>,
    stop: bool,
    first_failure_after: Option<u64>,
    failures: Failures,
    latency: Option<Histogram<u64>>,
    bomb: BombStats,
    bomb_latency: Option<Histogram<u64>>,
    ping: PingStats,
    ping_latency: Option<Histogram<u64>>,
}

type Shared = Rc<RefCell<State>>;

impl State {
    fn success(&mut self, attempt: u64, us: u64) {
        self.opened += 1;
        if self.last_success.is_none_or(|l| attempt > l) {
            self.last_success = Some(attempt);
            self.streak = self.streak.split_off(&(attempt + 1));
        }
        let _ = self.latency.get_or_insert_with(histogram).record(us.max(1));
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
}

/// Runs a worker to completion: open phase, report, wait for `go`, bomb and
/// ping as the spec says, report again, close everything.
///
/// `report` receives each [`WorkerReport`]; `go` blocks until the
/// orchestrator says the other phases may start (it runs on a blocking
/// thread, so held sessions keep being served meanwhile).
pub fn run(
    spec: WorkerSpec,
    mut report: impl FnMut(&WorkerReport) -> io::Result<()>,
    go: impl FnOnce() -> io::Result<()> + Send + 'static,
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
    local.block_on(&rt, async move {
        let st: Shared = Rc::new(RefCell::new(State::default()));
        let (phase_tx, phase_rx) = watch::channel(Phase::Hold);

        let started = Instant::now();
        let cpu0 = process_cpu_us();
        let (attempted, stop) = open_phase(&spec, &st, &phase_rx).await;
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
        if spec.ping && spec.mode.is_mcp() {
            let sessions = st.borrow().opened - st.borrow().dropped;
            st.borrow_mut().ping.sessions = sessions;
            let _ = phase_tx.send(Phase::Ping);
            // Every session pings at once: beside the reply timeout, allow
            // 100 us per session for this worker (and the server) to write
            // and read them all, or a big hold reports sessions as silent
            // that were only queued behind their siblings.
            let deadline = Instant::now()
                + Duration::from_millis(spec.timeout_ms.max(1000)) * 2
                + Duration::from_micros(100) * sessions as u32;
            wait_quiet(&st, deadline, |s| {
                s.ping.replies + s.ping.failed >= s.ping.sessions
            })
            .await;
        }
        report(&snapshot(
            &spec, &st, attempted, stop, open_ms, nofile, true,
        ))?;
        let _ = phase_tx.send(Phase::Close);
        // Let session tasks see Close and reset their sockets.
        tokio::task::yield_now().await;
        Ok(())
    })
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
        ping: (final_ && spec.ping && spec.mode.is_mcp()).then(|| PingStats {
            latency: rec(&s.ping_latency),
            ..s.ping.clone()
        }),
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
    let interval = (spec.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / spec.rate));
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
        let (st, spec2, phase) = (st.clone(), shared_spec.clone(), phase.clone());
        tokio::task::spawn_local(async move {
            let opened = timeout(
                Duration::from_millis(spec2.timeout_ms),
                open_one(&spec2, source),
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
                    hold(session, i, &spec2, &st, phase).await;
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

struct Session {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    line: String,
}

/// socket, optional bind to a source address, connect, and in MCP modes the
/// initialize handshake.
async fn open_one(
    spec: &WorkerSpec,
    source: Option<IpAddr>,
) -> Result<(Session, Duration), Failure> {
    let t0 = Instant::now();
    let io = |e: io::Error| Failure::from_io(&e);
    let sock = match spec.target {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(io)?;
    if let Some(src) = source {
        // Defer the port choice to connect(): ports are then unique per
        // (source, destination) 4-tuple, not per source address.
        set_bind_address_no_port(&sock).map_err(io)?;
        sock.bind(SocketAddr::new(src, 0)).map_err(io)?;
    }
    let stream: TcpStream = sock.connect(spec.target).await.map_err(io)?;
    // Nagle only holds a write back while earlier data is unacknowledged:
    // that happens with pipelined requests (bomb), never in a
    // request-then-reply handshake, so the other modes skip the syscall.
    if spec.mode == Mode::Bomb {
        let _ = stream.set_nodelay(true);
    }
    // RST instead of FIN on close, however the worker ends (even killed): a
    // flood must not leave its ports in FIN_WAIT/TIME_WAIT on the host.
    let _ = stream.set_zero_linger();
    let (r, w) = stream.into_split();
    let mut s = Session {
        reader: BufReader::with_capacity(512, r),
        writer: w,
        line: String::new(),
    };
    if spec.mode == Mode::Connect {
        let latency = t0.elapsed();
        // A server that refuses does so at once (a line, a close): listen
        // for a moment before calling the connection held, so that a
        // refusal breaks the failure streak's count, not a success.
        if spec.settle_ms > 0 {
            let settle = Duration::from_millis(spec.settle_ms);
            if let Ok(r) = timeout(settle, s.reader.read_line(&mut s.line)).await {
                return Err(match r {
                    Ok(0) => Failure::new(FailureKind::Closed, "server closed the connection"),
                    Ok(_) => classify_unsolicited(&s.line),
                    Err(e) => Failure::from_io(&e),
                });
            }
            s.line.clear();
        }
        return Ok((s, latency));
    }
    {
        s.writer
            .write_all(INITIALIZE.as_bytes())
            .await
            .map_err(io)?;
        match read_line(&mut s).await? {
            Reply::Result { .. } => {}
            Reply::Error { error, .. } => return Err(Failure::refused(error)),
        }
        s.writer
            .write_all(b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n")
            .await
            .map_err(io)?;
    }
    s.line = String::new();
    Ok((s, t0.elapsed()))
}

async fn read_line(s: &mut Session) -> Result<Reply, Failure> {
    s.line.clear();
    match s.reader.read_line(&mut s.line).await {
        Ok(0) => Err(Failure::new(
            FailureKind::Closed,
            "server closed the connection",
        )),
        Ok(_) => parse_reply(&s.line).map_err(|f| match f.kind {
            FailureKind::Protocol => classify_unsolicited(&s.line),
            _ => f,
        }),
        Err(e) => Err(Failure::from_io(&e)),
    }
}

/// Holds one session until Close: anything the server sends while idle ends
/// it (a refusal line, a close, a reset) and is counted.
async fn hold(
    mut s: Session,
    attempt: u64,
    spec: &WorkerSpec,
    st: &Shared,
    mut phase: watch::Receiver<Phase>,
) {
    // Act once per phase change; sessions only ever see Hold -> Bomb -> Ping -> Close.
    let mut current = *phase.borrow_and_update();
    loop {
        match current {
            Phase::Close => break,
            Phase::Bomb { until } => {
                if !bomb(&mut s, spec, st, until).await {
                    return;
                }
            }
            Phase::Ping => {
                if !ping(&mut s, spec, st).await {
                    return;
                }
            }
            Phase::Hold => {}
        }
        // Idle: wait for the next phase, or for the server to speak.
        s.line.clear();
        tokio::select! {
            changed = phase.changed() => {
                if changed.is_err() {
                    break;
                }
                current = *phase.borrow_and_update();
            }
            r = s.reader.read_line(&mut s.line) => {
                let f = match r {
                    Ok(0) => Failure::new(FailureKind::Closed, "server closed the connection"),
                    Ok(_) => classify_unsolicited(&s.line),
                    Err(e) => Failure::from_io(&e),
                };
                let mut g = st.borrow_mut();
                g.dropped += 1;
                g.failure(attempt, &f, spec.fail_streak);
                return;
            }
        }
    }
}

fn tools_call(id: u64) -> String {
    format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"tools/call\",\"params\":{{\"name\":\"echo\",\"arguments\":{{\"message\":\"headroom\"}}}}}}\n"
    )
}

/// Pipelined tools/call until `until`, `window` in flight. Returns false when
/// the session broke.
async fn bomb(s: &mut Session, spec: &WorkerSpec, st: &Shared, until: Instant) -> bool {
    let window = spec.window.max(1) as u64;
    let mut inflight: VecDeque<(u64, Instant)> = VecDeque::new();
    let mut next_id = 1_000u64;
    let mut ok = true;
    let mut batch = String::new();
    for _ in 0..window {
        batch.push_str(&tools_call(next_id));
        inflight.push_back((next_id, Instant::now()));
        next_id += 1;
    }
    let mut result = s
        .writer
        .write_all(batch.as_bytes())
        .await
        .map_err(|e| Failure::from_io(&e));
    if result.is_ok() {
        st.borrow_mut().bomb.sent += window;
    } else {
        inflight.clear();
    }
    while result.is_ok() && !inflight.is_empty() {
        let limit = until.max(Instant::now()) + Duration::from_millis(spec.timeout_ms);
        let reply = match timeout(limit - Instant::now(), read_line(s)).await {
            Ok(r) => r,
            Err(_) => Err(Failure::new(FailureKind::Timeout, "bomb reply timed out")),
        };
        match reply {
            Ok(r) => {
                let (id, good) = match r {
                    Reply::Result { id, is_error } => (id, !is_error),
                    Reply::Error { id, .. } => (id, false),
                };
                let pos = id
                    .and_then(|id| inflight.iter().position(|(i, _)| *i == id))
                    .unwrap_or(0);
                let (_, sent_at) = inflight.remove(pos).expect("inflight not empty");
                {
                    let mut g = st.borrow_mut();
                    if good {
                        g.bomb.replies += 1;
                    } else {
                        g.bomb.errors += 1;
                    }
                    let _ = g
                        .bomb_latency
                        .get_or_insert_with(histogram)
                        .record((sent_at.elapsed().as_micros() as u64).max(1));
                }
                if Instant::now() < until {
                    result = s
                        .writer
                        .write_all(tools_call(next_id).as_bytes())
                        .await
                        .map_err(|e| Failure::from_io(&e));
                    if result.is_ok() {
                        inflight.push_back((next_id, Instant::now()));
                        next_id += 1;
                        st.borrow_mut().bomb.sent += 1;
                    }
                }
            }
            Err(f) => result = Err(f),
        }
    }
    let mut g = st.borrow_mut();
    if let Err(f) = result {
        g.bomb.lost += inflight.len() as u64;
        g.bomb.failures.record(&f);
        g.dropped += 1;
        ok = false;
    }
    g.bomb.sessions_done += 1;
    ok
}

/// One `ping`; returns false when the session broke.
async fn ping(s: &mut Session, spec: &WorkerSpec, st: &Shared) -> bool {
    let t0 = Instant::now();
    let r = async {
        s.writer
            .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"ping\"}\n")
            .await
            .map_err(|e| Failure::from_io(&e))?;
        read_line(s).await
    };
    let r = timeout(Duration::from_millis(spec.timeout_ms), r)
        .await
        .unwrap_or_else(|_| Err(Failure::new(FailureKind::Timeout, "ping timed out")));
    let mut g = st.borrow_mut();
    match r {
        Ok(Reply::Result { id: Some(2), .. }) => {
            g.ping.replies += 1;
            let _ = g
                .ping_latency
                .get_or_insert_with(histogram)
                .record((t0.elapsed().as_micros() as u64).max(1));
            true
        }
        Ok(_) => {
            g.ping.failed += 1;
            true
        }
        Err(_) => {
            g.ping.failed += 1;
            g.dropped += 1;
            false
        }
    }
}

fn set_bind_address_no_port(sock: &TcpSocket) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: valid fd owned by `sock`; the option value is a live c_int.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            &one as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// User + system CPU of this process so far, µs.
fn process_cpu_us() -> u64 {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0;
    }
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    us(ru.ru_utime) + us(ru.ru_stime)
}

fn getrlimit_nofile() -> libc::rlimit {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) };
    r
}

/// The current RLIMIT_NOFILE soft limit.
pub fn nofile_soft() -> u64 {
    getrlimit_nofile().rlim_cur
}

/// Raises RLIMIT_NOFILE soft to hard (no privilege needed); returns the new soft limit.
pub fn raise_nofile() -> u64 {
    let mut r = getrlimit_nofile();
    if r.rlim_cur < r.rlim_max {
        r.rlim_cur = r.rlim_max;
        // SAFETY: setrlimit reads the struct we own.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) };
    }
    nofile_soft()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initialize_line_is_one_request_in_the_protocol_version() {
        let (line, rest) = INITIALIZE.split_once('\n').unwrap();
        assert_eq!(rest, "");
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["method"], "initialize");
        assert_eq!(v["id"], 1);
        assert_eq!(v["params"]["protocolVersion"], PROTOCOL_VERSION);
        assert_eq!(
            v["params"]["clientInfo"]["version"],
            env!("CARGO_PKG_VERSION")
        );
    }

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
