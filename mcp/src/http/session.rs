//! Initialize-era sessions: the session table, and per session the SSE streams
//! with the short event log that lets a client resume one with `Last-Event-ID`.

use super::protocol::{Outbound, ProtocolSession, Sink};
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Events kept per stream for replay; older ones are forgotten.
const EVENTS_PER_STREAM: usize = 256;
/// Finished streams kept per session for replay.
const FINISHED_STREAMS: usize = 16;
/// Frames buffered towards one live SSE response before the reader counts as slow.
pub(crate) const LIVE_BUFFER: usize = 64;

/// Stream 0 of every session is the standalone GET stream.
pub(crate) const STANDALONE: u64 = 0;

struct StreamLog {
    events: VecDeque<(u64, Bytes)>,
    next_seq: u64,
    live: Option<mpsc::Sender<Bytes>>,
    finished: bool,
}

impl StreamLog {
    fn new() -> Self {
        StreamLog {
            events: VecDeque::new(),
            next_seq: 1,
            live: None,
            finished: false,
        }
    }
}

/// One initialize-era session.
pub(crate) struct Session {
    pub(crate) id: String,
    pub(crate) protocol: Arc<dyn ProtocolSession>,
    streams: Mutex<Streams>,
    next_stream: AtomicU64,
    last_used: Mutex<Instant>,
}

struct Streams {
    open: HashMap<u64, StreamLog>,
    finished: VecDeque<u64>,
}

/// The SSE frame for one event: `id:` for resumption and the JSON message.
pub(crate) fn sse_event(id: &str, data: &[u8]) -> Bytes {
    let mut v = Vec::with_capacity(data.len() + id.len() + 32);
    v.extend_from_slice(b"id: ");
    v.extend_from_slice(id.as_bytes());
    v.extend_from_slice(b"\nevent: message\ndata: ");
    v.extend_from_slice(data);
    v.extend_from_slice(b"\n\n");
    Bytes::from(v)
}

/// The priming frame that opens every session stream: an id and empty data, so
/// the client can resume even before the first real event, and the reconnect delay.
pub(crate) fn sse_priming(id: &str, retry: Duration) -> Bytes {
    Bytes::from(format!(
        "id: {id}\nretry: {}\ndata: \n\n",
        retry.as_millis()
    ))
}

impl Session {
    pub(crate) fn new(id: String, protocol: Arc<dyn ProtocolSession>) -> Arc<Session> {
        let mut open = HashMap::new();
        open.insert(STANDALONE, StreamLog::new());
        Arc::new(Session {
            id,
            protocol,
            streams: Mutex::new(Streams {
                open,
                finished: VecDeque::new(),
            }),
            next_stream: AtomicU64::new(1),
            last_used: Mutex::new(Instant::now()),
        })
    }

    pub(crate) fn touch(&self) {
        *self.last_used.lock().unwrap() = Instant::now();
    }

    pub(crate) fn idle_for(&self) -> Duration {
        self.last_used.lock().unwrap().elapsed()
    }

    /// Opens a stream for one POSTed request; returns its number.
    pub(crate) fn new_stream(&self, live: mpsc::Sender<Bytes>) -> u64 {
        let n = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let mut log = StreamLog::new();
        log.live = Some(live);
        self.streams.lock().unwrap().open.insert(n, log);
        n
    }

    /// Appends an event (its frame gets the next id) and delivers it live when a
    /// reader is attached. A reader that cannot keep up is detached: it can
    /// resume from the log.
    pub(crate) fn push(&self, stream: u64, data: &[u8]) {
        let mut streams = self.streams.lock().unwrap();
        let Some(log) = streams.open.get_mut(&stream) else {
            return;
        };
        let seq = log.next_seq;
        log.next_seq += 1;
        let frame = sse_event(&format!("{stream}-{seq}"), data);
        log.events.push_back((seq, frame.clone()));
        if log.events.len() > EVENTS_PER_STREAM {
            log.events.pop_front();
        }
        if let Some(live) = &log.live {
            if live.try_send(frame).is_err() {
                log.live = None;
            }
        }
    }

    /// The priming frame for a stream (id `<stream>-0`, before any event).
    pub(crate) fn priming(&self, stream: u64, retry: Duration) -> Bytes {
        sse_priming(&format!("{stream}-0"), retry)
    }

    /// Ends live delivery on a stream without finishing it (SEP-1699 polling).
    pub(crate) fn detach(&self, stream: u64) {
        if let Some(log) = self.streams.lock().unwrap().open.get_mut(&stream) {
            log.live = None;
        }
    }

    /// The request behind a stream has been answered: no more events will come.
    pub(crate) fn finish(&self, stream: u64) {
        let mut streams = self.streams.lock().unwrap();
        if let Some(log) = streams.open.get_mut(&stream) {
            log.finished = true;
            log.live = None;
        }
        streams.finished.push_back(stream);
        while streams.finished.len() > FINISHED_STREAMS {
            if let Some(old) = streams.finished.pop_front() {
                streams.open.remove(&old);
            }
        }
    }

    /// Attaches a reader to the standalone stream. False when one is attached already.
    pub(crate) fn attach_standalone(&self, live: mpsc::Sender<Bytes>) -> bool {
        let mut streams = self.streams.lock().unwrap();
        let log = streams
            .open
            .entry(STANDALONE)
            .or_insert_with(StreamLog::new);
        if log.live.as_ref().is_some_and(|l| !l.is_closed()) {
            return false;
        }
        log.live = Some(live);
        true
    }

    /// Resumes the stream an event id belongs to: sends every later event, then
    /// keeps the reader attached while the stream is unfinished. None when the
    /// id names no stream this session still remembers.
    pub(crate) fn resume(&self, last_event_id: &str, live: mpsc::Sender<Bytes>) -> Option<()> {
        let (stream, seq) = last_event_id.trim().split_once('-')?;
        let (stream, seq): (u64, u64) = (stream.parse().ok()?, seq.parse().ok()?);
        let mut streams = self.streams.lock().unwrap();
        let log = streams.open.get_mut(&stream)?;
        for (s, frame) in &log.events {
            if *s > seq && live.try_send(frame.clone()).is_err() {
                return Some(());
            }
        }
        if !log.finished {
            log.live = Some(live);
        }
        Some(())
    }
}

/// Drains a session's unrelated messages (list changes, resource updates) into
/// its standalone stream, for as long as the session lives.
pub(crate) fn spawn_unrelated_pump(session: &Arc<Session>, mut rx: mpsc::Receiver<Outbound>) {
    let weak = Arc::downgrade(session);
    tokio::spawn(async move {
        while let Some(out) = rx.recv().await {
            let Some(session) = weak.upgrade() else { break };
            if let Outbound::Message(data) = out {
                session.push(STANDALONE, &data);
            }
        }
    });
}

/// All live sessions, bounded.
pub(crate) struct Sessions {
    map: Mutex<HashMap<String, Arc<Session>>>,
    pub(crate) max: usize,
}

/// Why a session could not be opened.
pub(crate) struct Full;

impl Sessions {
    pub(crate) fn new(max: usize) -> Self {
        Sessions {
            map: Mutex::new(HashMap::new()),
            max,
        }
    }

    pub(crate) fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.map.lock().unwrap().get(id).cloned()
    }

    pub(crate) fn len(&self) -> usize {
        self.map.lock().unwrap().len()
    }

    pub(crate) fn insert(&self, session: Arc<Session>) -> Result<(), Full> {
        let mut map = self.map.lock().unwrap();
        if map.len() >= self.max {
            return Err(Full);
        }
        map.insert(session.id.clone(), session);
        Ok(())
    }

    pub(crate) fn remove(&self, id: &str) -> Option<Arc<Session>> {
        self.map.lock().unwrap().remove(id)
    }

    /// Drops sessions idle for longer than `limit`; returns how many.
    pub(crate) fn reap(&self, limit: Duration) -> usize {
        let mut map = self.map.lock().unwrap();
        let before = map.len();
        map.retain(|_, s| s.idle_for() < limit);
        before - map.len()
    }
}

/// A fresh unguessable session id: 128 random bits from the kernel, in hex.
pub(crate) fn new_session_id() -> String {
    let mut buf = [0u8; 16];
    // SAFETY: getrandom writes at most buf.len() bytes into buf.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n != buf.len() as isize {
        // getrandom on a 16-byte buffer does not fail short on Linux >= 3.17;
        // fall back to a time-and-counter id rather than panic.
        static FALLBACK: AtomicU64 = AtomicU64::new(0);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        return format!("{t:x}{:x}", FALLBACK.fetch_add(1, Ordering::Relaxed));
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// A sink for one request, and the receiver the POST handler drains.
pub(crate) fn request_sink() -> (Sink, mpsc::Receiver<Outbound>) {
    Sink::channel(LIVE_BUFFER)
}
