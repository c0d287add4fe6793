//! The protocol modes: what a flood sends on a fresh connection so that the
//! server proves it serves it, and how the reply is read.
//!
//! One file per protocol, each a pure parser over the bytes received so far
//! (no I/O, tested on byte fixtures): it answers [`Parsed::More`] until a
//! whole reply is there, then [`Parsed::Served`] or [`Parsed::Failed`] with
//! the failure classified (the server's own refusal by kind, a garbled or
//! foreign reply as `protocol`). Every parser bounds what it waits for, so a
//! server that sends an endless line fails fast instead of growing a buffer.

pub mod http;
pub mod line;
pub mod memcached;
pub mod postgres;
pub mod redis;

use crate::outcome::{snippet, Failure, FailureKind};
use crate::spec::{Mode, ProtoOptions};
use std::net::SocketAddr;

/// Longest reply line any parser waits for.
pub const MAX_LINE: usize = 64 * 1024;

/// What the bytes received so far say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// Not a whole reply yet.
    More,
    /// A whole reply proving the connection is served.
    Served(Served),
    /// The reply is a refusal, an error, or not this protocol.
    Failed(Failure),
}

/// A good reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Served {
    /// Bytes of the buffer the reply took.
    pub consumed: usize,
    /// The server said it closes the connection after this reply (HTTP
    /// `Connection: close`, HTTP/1.0 without keep-alive).
    pub close: bool,
    /// Queries may follow (PostgreSQL: ReadyForQuery seen). False for a
    /// PostgreSQL backend that asked for a password: held, not queryable.
    pub ready: bool,
}

impl Served {
    pub fn ready(consumed: usize) -> Served {
        Served {
            consumed,
            close: false,
            ready: true,
        }
    }
}

/// A protocol failure with a detail, the reply quoted.
pub fn garbled(what: &str, bytes: &[u8]) -> Parsed {
    Parsed::Failed(Failure::new(
        FailureKind::Protocol,
        format!("{what}: {}", quote(bytes)),
    ))
}

/// Up to 120 characters of `bytes`, as text with non-printable bytes escaped.
pub fn quote(bytes: &[u8]) -> String {
    let text: String = bytes
        .iter()
        .take(160)
        .flat_map(|&b| std::ascii::escape_default(b))
        .map(char::from)
        .collect();
    let s = snippet(&text);
    if s.is_empty() {
        "(nothing)".into()
    } else {
        s
    }
}

/// The first line of `buf` without its `\r\n` / `\n`, when complete.
/// A server's own refusal when `bytes` start with its refusal `line`
/// (Redis' max-clients error, memcached's too-many-connections line).
pub fn refusal_line(bytes: &[u8], line: &[u8], kind: FailureKind) -> Option<Failure> {
    bytes
        .starts_with(line)
        .then(|| Failure::new(kind, String::from_utf8_lossy(line)))
}

pub fn first_line(buf: &[u8]) -> Option<&[u8]> {
    let end = buf.iter().position(|&b| b == b'\n')?;
    let line = &buf[..end];
    Some(line.strip_suffix(b"\r").unwrap_or(line))
}

/// The refusal lines of servers the flood knows, wherever they turn up (on
/// an idle connection in `connect` mode, instead of a `line` reply):
/// Redis' and memcached's, and a PostgreSQL error.
pub fn known_refusal(bytes: &[u8]) -> Option<Failure> {
    if let Some(f) = redis::refusal(bytes) {
        return Some(f);
    }
    if let Some(f) = memcached::refusal(bytes) {
        return Some(f);
    }
    match postgres::parse_startup(bytes) {
        Parsed::Failed(f) if f.kind != FailureKind::Protocol => Some(f),
        _ => None,
    }
}

/// A protocol mode, ready to speak.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proto {
    Redis,
    Memcached,
    Http {
        request: Vec<u8>,
    },
    Postgres {
        startup: Vec<u8>,
    },
    Line {
        send: Vec<u8>,
        expect: Option<String>,
    },
}

impl Proto {
    /// The protocol of `mode`; `None` for `connect`, `mcp` and `bomb`.
    pub fn new(mode: Mode, opts: &ProtoOptions, target: SocketAddr) -> Option<Proto> {
        Some(match mode {
            Mode::Connect | Mode::Mcp | Mode::Bomb => return None,
            Mode::Redis => Proto::Redis,
            Mode::Memcached => Proto::Memcached,
            Mode::Http => Proto::Http {
                request: http::request(&target.to_string(), opts.http_path()),
            },
            Mode::Postgres => Proto::Postgres {
                startup: postgres::startup(opts.pg_user(), opts.pg_database()),
            },
            Mode::Line => Proto::Line {
                send: line::request(opts.send()),
                expect: opts.expect.clone().filter(|e| !e.is_empty()),
            },
        })
    }

    /// What is sent on a fresh connection.
    pub fn opening(&self) -> &[u8] {
        match self {
            Proto::Redis => redis::PING,
            Proto::Memcached => memcached::VERSION,
            Proto::Http { request } => request,
            Proto::Postgres { startup } => startup,
            Proto::Line { send, .. } => send,
        }
    }

    /// What is sent to check a held connection at the end; `None`: the
    /// connection cannot be asked anything (a PostgreSQL backend waiting for
    /// a password), only seen to be still open.
    pub fn check(&self, ready: bool) -> Option<&[u8]> {
        match self {
            Proto::Postgres { .. } if !ready => None,
            Proto::Postgres { .. } => Some(postgres::SELECT_1),
            other => Some(other.opening()),
        }
    }

    /// The reply to [`Proto::opening`].
    pub fn parse_opening(&self, buf: &[u8]) -> Parsed {
        match self {
            Proto::Redis => redis::parse(buf),
            Proto::Memcached => memcached::parse(buf),
            Proto::Http { .. } => http::parse(buf),
            Proto::Postgres { .. } => postgres::parse_startup(buf),
            Proto::Line { expect, .. } => line::parse(buf, expect.as_deref()),
        }
    }

    /// The reply to [`Proto::check`].
    pub fn parse_check(&self, buf: &[u8]) -> Parsed {
        match self {
            Proto::Postgres { .. } => postgres::parse_query(buf),
            other => other.parse_opening(buf),
        }
    }

    /// Bytes the server sent on an idle connection, unasked: a refusal it
    /// names, or a protocol failure quoting them.
    pub fn unsolicited(&self, bytes: &[u8]) -> Failure {
        if let Some(f) = known_refusal(bytes) {
            return f;
        }
        if let Proto::Postgres { .. } = self {
            if let Parsed::Failed(f) = postgres::parse_query(bytes) {
                return f;
            }
        }
        Failure::new(
            FailureKind::Protocol,
            format!("sent while idle: {}", quote(bytes)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_escapes_and_bounds() {
        assert_eq!(quote(b"+PONG\r\n"), "+PONG\\r\\n");
        assert_eq!(quote(b"\x00\xffR"), "\\x00\\xffR");
        assert_eq!(quote(b""), "(nothing)");
        assert!(quote(&[b'a'; 500]).ends_with("..."));
    }

    #[test]
    fn first_lines() {
        assert_eq!(first_line(b"abc\r\nrest"), Some(&b"abc"[..]));
        assert_eq!(first_line(b"abc\nrest"), Some(&b"abc"[..]));
        assert_eq!(first_line(b"abc"), None);
    }

    #[test]
    fn protocols_of_modes() {
        let t: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let o = ProtoOptions::default();
        assert_eq!(Proto::new(Mode::Connect, &o, t), None);
        assert_eq!(Proto::new(Mode::Mcp, &o, t), None);
        let http = Proto::new(Mode::Http, &o, t).unwrap();
        assert!(http
            .opening()
            .starts_with(b"GET / HTTP/1.1\r\nHost: 127.0.0.1:80\r\n"));
        assert_eq!(http.check(false), Some(http.opening()));
        let pg = Proto::new(Mode::Postgres, &o, t).unwrap();
        assert_eq!(pg.check(false), None);
        assert_eq!(pg.check(true), Some(postgres::SELECT_1));
        let line = Proto::new(Mode::Line, &o, t).unwrap();
        assert_eq!(line.opening(), b"ping\n");
    }

    #[test]
    fn idle_bytes_are_classified() {
        let p = Proto::Redis;
        assert_eq!(
            p.unsolicited(b"-ERR max number of clients reached\r\n")
                .kind,
            FailureKind::RedisMaxClients
        );
        let f = p.unsolicited(b"hello\n");
        assert_eq!(
            (f.kind, f.detail.as_str()),
            (FailureKind::Protocol, "sent while idle: hello\\n")
        );
        // PostgreSQL terminating a backend: its error, not garbage.
        let pg = Proto::Postgres { startup: vec![] };
        let e = postgres::tests::error(&[
            (b'S', "FATAL"),
            (b'C', "57P01"),
            (b'M', "terminating connection due to administrator command"),
        ]);
        assert_eq!(pg.unsolicited(&e).kind, FailureKind::ServerError);
    }
}
