//! What a flood is asked to do, the bounds it must stay within, and the
//! safety check on its target.

use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// Hard ceilings: a flood is a lab instrument, never an open-ended attack.
/// Connections one flood opens at most: enough to hold a million sessions
/// and push past them on one host (both ends on loopback cost about 8 KB
/// of memory a connection, 12 GB at the cap).
pub const MAX_CONNECTIONS: u64 = 1_500_000;
/// Longest open, hold or bomb phase.
pub const MAX_PHASE: Duration = Duration::from_secs(600);
/// Loopback source addresses (127.0.0.1..N), each with its own port range.
pub const MAX_SOURCES: u32 = 250;
/// Client processes; each holds up to its nofile limit (20,000 here), so
/// 1,500,000 connections take 76.
pub const MAX_WORKERS: u32 = 96;

/// What each connection does once the TCP handshake is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Hold the TCP connection; anything the server sends ends it.
    Connect,
    /// Complete the MCP initialize handshake, then hold the session.
    Mcp,
    /// `mcp`, then pipelined `tools/call` (tool `echo`) on every held session.
    Bomb,
    /// Redis: `PING`, expecting `+PONG`.
    Redis,
    /// memcached: `version`, expecting `VERSION`.
    Memcached,
    /// HTTP/1.1: `GET` with keep-alive, reading the whole response.
    Http,
    /// PostgreSQL: the startup message, expecting authentication.
    Postgres,
    /// Send a line (`--send`), expect a line back (`--expect`).
    Line,
}

impl Mode {
    pub const ALL: [Mode; 8] = [
        Mode::Connect,
        Mode::Mcp,
        Mode::Bomb,
        Mode::Redis,
        Mode::Memcached,
        Mode::Http,
        Mode::Postgres,
        Mode::Line,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Connect => "connect",
            Mode::Mcp => "mcp",
            Mode::Bomb => "bomb",
            Mode::Redis => "redis",
            Mode::Memcached => "memcached",
            Mode::Http => "http",
            Mode::Postgres => "postgres",
            Mode::Line => "line",
        }
    }

    /// Whether sessions speak MCP (and so can be pinged and bombed).
    pub fn is_mcp(self) -> bool {
        matches!(self, Mode::Mcp | Mode::Bomb)
    }

    /// Whether connections speak one of the protocol modes (redis,
    /// memcached, http, postgres, line): served means answered.
    pub fn is_protocol(self) -> bool {
        !matches!(self, Mode::Connect | Mode::Mcp | Mode::Bomb)
    }
}

/// What the protocol modes send. Every field has a default; the flood checks
/// them before starting (see [`ProtoOptions::check`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProtoOptions {
    /// `line`: the line sent (default `ping`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send: Option<String>,
    /// `line`: the prefix the reply line must start with (default: any line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<String>,
    /// `postgres`: the role in the startup message (default `postgres`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pg_user: Option<String>,
    /// `postgres`: the database (default: the role's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pg_database: Option<String>,
    /// `http`: the path requested (default `/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_path: Option<String>,
}

impl ProtoOptions {
    pub fn send(&self) -> &str {
        self.send.as_deref().unwrap_or("ping")
    }

    pub fn pg_user(&self) -> &str {
        self.pg_user.as_deref().unwrap_or("postgres")
    }

    pub fn pg_database(&self) -> &str {
        self.pg_database.as_deref().unwrap_or(self.pg_user())
    }

    pub fn http_path(&self) -> &str {
        self.http_path.as_deref().unwrap_or("/")
    }

    /// Refuses values that would not make one well-formed request: a line
    /// with an inner newline, a path that would inject headers, a NUL in a
    /// PostgreSQL name, anything over 4 KiB.
    pub fn check(&self) -> Result<(), String> {
        let send = self.send();
        if send.len() > 4096 || send.trim_end_matches('\n').contains('\n') {
            return Err("--send must be one line of at most 4096 bytes".into());
        }
        if self
            .expect
            .as_ref()
            .is_some_and(|e| e.len() > 4096 || e.contains('\n'))
        {
            return Err("--expect must be one line of at most 4096 bytes".into());
        }
        let path = self.http_path();
        if !path.starts_with('/')
            || path.len() > 4096
            || path
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(
                "--http-path must start with / and hold no spaces or control characters".into(),
            );
        }
        for (name, v) in [
            ("--pg-user", self.pg_user()),
            ("--pg-database", self.pg_database()),
        ] {
            if v.is_empty() || v.len() > 1024 || v.contains('\0') {
                return Err(format!("{name} must be 1 to 1024 bytes without NUL"));
            }
        }
        Ok(())
    }
}

/// One worker's share of a flood. The orchestrator serialises it to JSON and
/// hands it to a re-executed copy of the binary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerSpec {
    pub index: u32,
    pub target: SocketAddr,
    pub mode: Mode,
    /// Connections this worker opens at most.
    pub connections: u64,
    /// Connection attempts per second for this worker; 0 = as fast as allowed.
    pub rate: f64,
    /// Connection attempts in flight at once.
    pub concurrency: u32,
    /// Source addresses to bind (round-robin); empty = let the kernel choose.
    pub sources: Vec<IpAddr>,
    /// Length of the open phase.
    pub duration_ms: u64,
    /// Per-attempt timeout (connect, then handshake).
    pub timeout_ms: u64,
    /// Connect mode: how long to listen on a fresh connection for a
    /// refusal before counting it as held.
    #[serde(default)]
    pub settle_ms: u64,
    /// Consecutive failures that count as the sustained failure that stops the flood.
    pub fail_streak: u64,
    /// Bomb phase: length and requests in flight per session.
    pub bomb_ms: u64,
    pub window: u32,
    /// Ping every held session once after the other phases.
    pub ping: bool,
    /// Connections of the whole flood (all workers): every held one is
    /// checked at once at the end, and the server answers them in turn.
    #[serde(default)]
    pub total_connections: u64,
    /// Raise RLIMIT_NOFILE soft to hard before opening anything.
    pub raise_nofile: bool,
    /// What the protocol modes send.
    #[serde(default)]
    pub proto: ProtoOptions,
}

/// Why a target was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("target {0} is not a loopback address (127.0.0.0/8 or ::1); inside a network namespace (ip netns exec) pass --allow-netns-target")]
    NotLoopback(IpAddr),
    #[error("--allow-netns-target: this process is in the host's network namespace; run it under `ip netns exec NAME`")]
    NotInNamespace,
    #[error("--sources {0}: extra source addresses are 127.0.0.x and need a 127.0.0.0/8 target")]
    SourcesNeedLoopback(u32),
}

/// The safety rule: loopback targets always; anything else only when the
/// caller opted in and we are demonstrably inside a non-host network namespace.
pub fn check_target(
    target: &SocketAddr,
    allow_netns_target: bool,
    in_netns: bool,
) -> Result<(), TargetError> {
    if target.ip().is_loopback() {
        return Ok(());
    }
    if !allow_netns_target {
        return Err(TargetError::NotLoopback(target.ip()));
    }
    if !in_netns {
        return Err(TargetError::NotInNamespace);
    }
    Ok(())
}

/// True when this process's network namespace differs from pid 1's, i.e. we
/// run under `ip netns exec` (or in a container). Unreadable = assume host.
pub fn in_network_namespace() -> bool {
    let me = std::fs::read_link("/proc/self/ns/net");
    let init = std::fs::read_link("/proc/1/ns/net");
    matches!((me, init), (Ok(a), Ok(b)) if a != b)
}

/// `count` loopback source addresses 127.0.0.1, .2, ... for a 127/8 target.
/// One source means "let the kernel choose" (it picks 127.0.0.1 anyway).
pub fn source_addresses(target: &SocketAddr, count: u32) -> Result<Vec<IpAddr>, TargetError> {
    if count <= 1 {
        return Ok(Vec::new());
    }
    match target.ip() {
        IpAddr::V4(v4) if v4.octets()[0] == 127 => Ok((1..=count)
            .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, (i >> 8) as u8, (i & 0xff) as u8)))
            .collect()),
        _ => Err(TargetError::SourcesNeedLoopback(count)),
    }
}

/// Splits `total` into `parts` shares that differ by at most one.
pub fn split(total: u64, parts: u32) -> Vec<u64> {
    let parts = parts.max(1) as u64;
    (0..parts)
        .map(|i| total / parts + u64::from(i < total % parts))
        .collect()
}

/// Worker processes needed so that no worker needs more than `per_worker`
/// descriptors for `connections` connections.
pub fn workers_needed(connections: u64, per_worker: u64) -> u32 {
    connections
        .div_ceil(per_worker.max(1))
        .clamp(1, MAX_WORKERS as u64) as u32
}

/// Source addresses needed so that no (source, destination) pair uses more
/// than a quarter of the `port_range_size` ephemeral ports.
///
/// Why a quarter and not all of them: connect() hunts for a free port from a
/// hashed offset, trying even ports first, and every try past a used port
/// costs an established-table lookup. Filled beyond half, the hunt is long
/// and the flood measures its own kernel, not the server. Measured on the
/// 2-core VM against `serve --workers 3`, 30,000 sessions: 2 sources (53%
/// of the range each) opened 1,451/s with p99 1.2 s; 8 sources (13%) opened
/// 6,062/s with p99 115 ms, side by side.
pub fn sources_needed(connections: u64, port_range_size: u64) -> u32 {
    connections
        .div_ceil((port_range_size / 4).max(1))
        .clamp(1, MAX_SOURCES as u64) as u32
}

/// `10s`, `500ms`, `2m`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Ok(Duration::from_secs_f64(secs));
        }
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("`{s}` is not a duration (10s, 500ms, 2m): {e}"))
}

/// The server's time to answer one end check when every held connection
/// is checked at once: a million MCP pings over two shared cores took 26 s
/// (25 us each), so 50 us leaves room.
pub const CHECK_PER_CONNECTION: Duration = Duration::from_micros(50);

impl WorkerSpec {
    /// How long one end check may wait for its answer: the per-attempt
    /// timeout plus the server's turn through every check sent at once.
    pub fn check_timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
            + CHECK_PER_CONNECTION * self.total_connections.min(u32::MAX as u64) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn loopback_targets_pass_others_need_a_namespace() {
        assert_eq!(check_target(&addr("127.0.0.1:1"), false, false), Ok(()));
        assert_eq!(check_target(&addr("127.9.8.7:1"), false, false), Ok(()));
        assert_eq!(check_target(&addr("[::1]:1"), false, false), Ok(()));
        let ext = addr("10.0.0.1:80");
        assert_eq!(
            check_target(&ext, false, true),
            Err(TargetError::NotLoopback(ext.ip()))
        );
        assert_eq!(
            check_target(&ext, true, false),
            Err(TargetError::NotInNamespace)
        );
        assert_eq!(check_target(&ext, true, true), Ok(()));
    }

    #[test]
    fn sources_are_consecutive_loopback_addresses() {
        let t = addr("127.0.0.1:80");
        assert!(source_addresses(&t, 1).unwrap().is_empty());
        let s = source_addresses(&t, 3).unwrap();
        assert_eq!(
            s,
            ["127.0.0.1", "127.0.0.2", "127.0.0.3"].map(|a| a.parse::<IpAddr>().unwrap())
        );
        assert_eq!(
            source_addresses(&t, 256).unwrap()[255],
            "127.0.1.0".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            source_addresses(&addr("[::1]:80"), 2),
            Err(TargetError::SourcesNeedLoopback(2))
        );
    }

    #[test]
    fn split_and_sizing() {
        assert_eq!(split(10, 3), vec![4, 3, 3]);
        assert_eq!(split(2, 4), vec![1, 1, 0, 0]);
        assert_eq!(split(7, 0), vec![7]);
        assert_eq!(workers_needed(100_000, 19_900), 6);
        assert_eq!(workers_needed(10, 19_900), 1);
        assert_eq!(sources_needed(100_000, 28_232), 15);
        assert_eq!(sources_needed(7_058, 28_232), 1);
        assert_eq!(sources_needed(7_059, 28_232), 2);
        assert_eq!(sources_needed(0, 28_232), 1);
    }

    #[test]
    fn modes_and_protocol_options() {
        for m in Mode::ALL {
            let j = serde_json::to_string(&m).unwrap();
            assert_eq!(j, format!("\"{}\"", m.as_str()));
            assert_eq!(
                m.is_protocol(),
                !matches!(m, Mode::Connect | Mode::Mcp | Mode::Bomb)
            );
        }
        assert!(Mode::Bomb.is_mcp() && !Mode::Redis.is_mcp() && !Mode::Connect.is_mcp());
        let o = ProtoOptions::default();
        assert_eq!(
            (o.send(), o.pg_user(), o.pg_database(), o.http_path()),
            ("ping", "postgres", "postgres", "/")
        );
        assert_eq!(o.check(), Ok(()));
        let bad = |f: fn(&mut ProtoOptions)| {
            let mut o = ProtoOptions::default();
            f(&mut o);
            o.check().unwrap_err()
        };
        assert!(bad(|o| o.send = Some("a\nb".into())).contains("--send"));
        assert!(bad(|o| o.http_path = Some("/ HTTP/1.1\r\nX: y".into())).contains("--http-path"));
        assert!(bad(|o| o.http_path = Some("x".into())).contains("--http-path"));
        assert!(bad(|o| o.pg_user = Some("a\0b".into())).contains("--pg-user"));
        let ok = ProtoOptions {
            send: Some("PING\n".into()),
            ..ProtoOptions::default()
        };
        assert_eq!(ok.check(), Ok(()));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1").is_err());
    }
}
