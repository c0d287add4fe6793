//! Why a connection attempt (or a held session) failed, by kind: the
//! vocabulary of a breaking point.

use serde::{Deserialize, Serialize};
use std::io;

/// The kinds of failure a flood tells apart. Each names who gave up and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The server accepted, answered with a JSON-RPC error line and closed:
    /// its own, deliberate refusal (e.g. past `--max-connections`).
    Refused,
    /// ECONNREFUSED: nothing listens there (or the kernel reset the SYN).
    ConnRefused,
    /// EMFILE on our side: this client process ran out of descriptors.
    Emfile,
    /// ENFILE: the host ran out of file handles (fs.file-max).
    Enfile,
    /// EADDRNOTAVAIL: no free ephemeral port for this (source, destination).
    Eaddrnotavail,
    /// No answer in time: SYN dropped (accept queue full) or a stalled server.
    Timeout,
    /// ECONNRESET / EPIPE: the server (or its kernel) reset the connection.
    Reset,
    /// The server closed without a word.
    Closed,
    /// The server answered something that is not the expected JSON-RPC reply.
    Protocol,
    /// Any other error; the detail carries the errno.
    Other,
    /// Redis' own refusal: `-ERR max number of clients reached`.
    RedisMaxClients,
    /// PostgreSQL's own refusal, SQLSTATE 53300 "sorry, too many clients already".
    PostgresTooManyClients,
    /// PostgreSQL's own refusal, SQLSTATE 53300 "remaining connection slots
    /// are reserved for ...": the slots left are kept for other roles.
    PostgresReservedSlots,
    /// PostgreSQL's postmaster could not fork a backend: a kernel process
    /// limit (RLIMIT_NPROC of its user, pid_max, a cgroup's pids.max).
    PostgresForkFailed,
    /// memcached's own refusal: `ERROR Too many open connections`.
    MemcachedTooMany,
    /// The server answered with an error of its own that names no connection
    /// limit (an HTTP 5xx, a PostgreSQL error other than 53300, a Redis error).
    ServerError,
    /// The TCP handshake completed but the protocol reply never came within
    /// `--timeout`, and the listener's accept queue could not be read (or was
    /// empty: a stalled server).
    NoReply,
    /// The TCP handshake completed but no reply came within `--timeout` while
    /// the listener's accept queue held connections: the server stopped
    /// calling accept() and new connections wait in its backlog.
    BacklogFilling,
    /// The server's own processes hold as many descriptors as their
    /// RLIMIT_NOFILE allows (seen from /proc where the flood runs): its
    /// accept() fails with EMFILE.
    ServerEmfile,
    /// A connection the server had served was closed by the server while idle.
    ClosedIdle,
    /// The server closes idle connections to make room for new ones: it kept
    /// serving new connections while closing older, idle ones (nginx keep-alive).
    ClosesIdle,
}

impl FailureKind {
    pub const ALL: [FailureKind; 21] = [
        FailureKind::Refused,
        FailureKind::ConnRefused,
        FailureKind::Emfile,
        FailureKind::Enfile,
        FailureKind::Eaddrnotavail,
        FailureKind::Timeout,
        FailureKind::Reset,
        FailureKind::Closed,
        FailureKind::Protocol,
        FailureKind::Other,
        FailureKind::RedisMaxClients,
        FailureKind::PostgresTooManyClients,
        FailureKind::PostgresReservedSlots,
        FailureKind::PostgresForkFailed,
        FailureKind::MemcachedTooMany,
        FailureKind::ServerError,
        FailureKind::NoReply,
        FailureKind::BacklogFilling,
        FailureKind::ServerEmfile,
        FailureKind::ClosedIdle,
        FailureKind::ClosesIdle,
    ];

    /// One line for people: what this kind means.
    pub fn describe(self) -> &'static str {
        match self {
            FailureKind::Refused => "refused by the server (JSON-RPC error line)",
            FailureKind::ConnRefused => "connection refused (ECONNREFUSED: nothing listening)",
            FailureKind::Emfile => "EMFILE on the client: per-process descriptor limit",
            FailureKind::Enfile => "ENFILE: host-wide file handle limit",
            FailureKind::Eaddrnotavail => {
                "EADDRNOTAVAIL: ephemeral ports to this destination used up"
            }
            FailureKind::Timeout => {
                "timeout (SYN dropped by a full accept queue, or a stalled server)"
            }
            FailureKind::Reset => "connection reset",
            FailureKind::Closed => "accepted and closed: closed by the server without a reply",
            FailureKind::Protocol => "unexpected reply",
            FailureKind::Other => "other error",
            FailureKind::RedisMaxClients => {
                "Redis' own refusal: max number of clients reached (maxclients)"
            }
            FailureKind::PostgresTooManyClients => {
                "PostgreSQL's own refusal: 53300 too many clients (max_connections)"
            }
            FailureKind::PostgresReservedSlots => {
                "PostgreSQL's own refusal: 53300 remaining slots reserved for other roles"
            }
            FailureKind::PostgresForkFailed => {
                "PostgreSQL could not fork a backend: a kernel process limit"
            }
            FailureKind::MemcachedTooMany => {
                "memcached's own refusal: too many open connections (-c)"
            }
            FailureKind::ServerError => "the server answered with an error of its own",
            FailureKind::NoReply => {
                "no reply within --timeout after the TCP handshake (a stalled server, or one that speaks another protocol)"
            }
            FailureKind::BacklogFilling => {
                "stopped accepting: backlog filling (handshake done, no reply while the accept queue held connections)"
            }
            FailureKind::ServerEmfile => {
                "EMFILE in the server: its descriptor table is full, accept() fails"
            }
            FailureKind::ClosedIdle => "closed by the server while idle, after serving it",
            FailureKind::ClosesIdle => "closes idle connections to make room for new ones",
        }
    }

    /// The server's own, deliberate refusal of a connection (as opposed to
    /// a kernel wall or a failure on the client's side).
    pub fn is_server_refusal(self) -> bool {
        matches!(
            self,
            FailureKind::Refused
                | FailureKind::RedisMaxClients
                | FailureKind::PostgresTooManyClients
                | FailureKind::PostgresReservedSlots
                | FailureKind::MemcachedTooMany
        )
    }
}

/// A JSON-RPC error object as the server sent it. A refusal names the
/// limit it hit in `data` (`{"limit": "nofile", "max": 470}`) when the
/// server is headroom's own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u64>,
}

/// A failure and its detail (the server's message, or the OS error text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    pub detail: String,
    /// The server's error object, for `Refused`.
    pub refusal: Option<RpcError>,
}

impl Failure {
    pub fn new(kind: FailureKind, detail: impl Into<String>) -> Failure {
        Failure {
            kind,
            detail: detail.into(),
            refusal: None,
        }
    }

    /// The server's refusal: kind `Refused`, detail "code: message".
    pub fn refused(e: RpcError) -> Failure {
        Failure {
            kind: FailureKind::Refused,
            detail: format!("{}: {}", e.code, e.message),
            refusal: Some(e),
        }
    }

    /// Classifies an OS error by errno; the detail keeps the OS text.
    pub fn from_io(e: &io::Error) -> Failure {
        let kind = match e.raw_os_error() {
            Some(libc::EMFILE) => FailureKind::Emfile,
            Some(libc::ENFILE) => FailureKind::Enfile,
            Some(libc::EADDRNOTAVAIL) => FailureKind::Eaddrnotavail,
            Some(libc::ECONNREFUSED) => FailureKind::ConnRefused,
            Some(libc::ECONNRESET) | Some(libc::EPIPE) | Some(libc::ECONNABORTED) => {
                FailureKind::Reset
            }
            Some(libc::ETIMEDOUT) => FailureKind::Timeout,
            _ => match e.kind() {
                io::ErrorKind::UnexpectedEof => FailureKind::Closed,
                io::ErrorKind::TimedOut => FailureKind::Timeout,
                _ => FailureKind::Other,
            },
        };
        Failure::new(kind, e.to_string())
    }
}

/// What one line from the server says about the request it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A JSON-RPC result (for `tools/call`, `is_error` is the tool's isError).
    Result { id: Option<u64>, is_error: bool },
    /// A JSON-RPC error object.
    Error { id: Option<u64>, error: RpcError },
}

/// The fields a successful reply is classified by, borrowed: the common
/// case (a result) is read without building the result's JSON tree, which
/// for an `initialize` result was most of the client's allocations.
#[derive(serde::Deserialize)]
struct Peek<'a> {
    #[serde(borrow, default)]
    id: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default)]
    result: Option<&'a serde_json::value::RawValue>,
    #[serde(default)]
    error: Option<serde::de::IgnoredAny>,
}

#[derive(serde::Deserialize)]
struct ToolResultPeek {
    #[serde(rename = "isError", default)]
    is_error: Option<serde_json::Value>,
}

/// Parses one newline-delimited JSON-RPC message from the server.
pub fn parse_reply(line: &str) -> Result<Reply, Failure> {
    if let Ok(Peek {
        id,
        result: Some(result),
        error: None,
    }) = serde_json::from_str::<Peek>(line.trim())
    {
        let is_error = result.get().contains("\"isError\"")
            && serde_json::from_str::<ToolResultPeek>(result.get())
                .ok()
                .and_then(|r| r.is_error)
                .and_then(|e| e.as_bool())
                .unwrap_or(false);
        return Ok(Reply::Result {
            id: id.and_then(|i| i.get().parse().ok()),
            is_error,
        });
    }
    parse_reply_tree(line)
}

/// [`parse_reply`] for errors and anything unusual, from the whole tree.
fn parse_reply_tree(line: &str) -> Result<Reply, Failure> {
    let v: serde_json::Value = serde_json::from_str(line.trim())
        .map_err(|_| Failure::new(FailureKind::Protocol, snippet(line)))?;
    let id = v.get("id").and_then(|i| i.as_u64());
    if let Some(err) = v.get("error") {
        let data = err.get("data");
        return Ok(Reply::Error {
            id,
            error: RpcError {
                code: err.get("code").and_then(|c| c.as_i64()).unwrap_or(0),
                message: err
                    .get("message")
                    .and_then(|m| m.as_str())
                    .unwrap_or("")
                    .to_string(),
                limit: data
                    .and_then(|d| d.get("limit"))
                    .and_then(|l| l.as_str())
                    .map(str::to_string),
                max: data.and_then(|d| d.get("max")).and_then(|m| m.as_u64()),
            },
        });
    }
    match v.get("result") {
        Some(r) => Ok(Reply::Result {
            id,
            is_error: r.get("isError").and_then(|e| e.as_bool()).unwrap_or(false),
        }),
        None => Err(Failure::new(FailureKind::Protocol, snippet(line))),
    }
}

/// A line the server sent on its own (or instead of a reply): a JSON-RPC
/// error is its refusal, and so is the refusal line of a server the flood
/// knows (Redis, memcached); anything else is a protocol failure.
pub fn classify_unsolicited(line: &str) -> Failure {
    match parse_reply(line) {
        Ok(Reply::Error { error, .. }) => Failure::refused(error),
        Ok(Reply::Result { .. }) => Failure::new(FailureKind::Protocol, snippet(line)),
        Err(f) => crate::proto::known_refusal(line.as_bytes()).unwrap_or(f),
    }
}

/// The first 120 characters of a line, trimmed, for a failure's detail.
pub fn snippet(line: &str) -> String {
    let t = line.trim();
    match t.char_indices().nth(120) {
        Some((i, _)) => format!("{}...", &t[..i]),
        None => t.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_kinds() {
        let k = |n| Failure::from_io(&io::Error::from_raw_os_error(n)).kind;
        assert_eq!(k(libc::EMFILE), FailureKind::Emfile);
        assert_eq!(k(libc::ENFILE), FailureKind::Enfile);
        assert_eq!(k(libc::EADDRNOTAVAIL), FailureKind::Eaddrnotavail);
        assert_eq!(k(libc::ECONNREFUSED), FailureKind::ConnRefused);
        assert_eq!(k(libc::ECONNRESET), FailureKind::Reset);
        assert_eq!(k(libc::EPIPE), FailureKind::Reset);
        assert_eq!(k(libc::ETIMEDOUT), FailureKind::Timeout);
        assert_eq!(k(libc::EINVAL), FailureKind::Other);
        let eof = io::Error::new(io::ErrorKind::UnexpectedEof, "eof");
        assert_eq!(Failure::from_io(&eof).kind, FailureKind::Closed);
    }

    #[test]
    fn refusal_line_is_refused_with_its_message() {
        let line = r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32000,"message":"server full: 470 connections (nofile)"}}"#;
        let f = classify_unsolicited(line);
        assert_eq!(f.kind, FailureKind::Refused);
        assert_eq!(f.detail, "-32000: server full: 470 connections (nofile)");
        assert_eq!(f.refusal.unwrap().limit, None);
        // headroom serve names the limit and its maximum in `data`.
        let line = r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32001,"message":"connection refused","data":{"limit":"nofile","max":470}}}"#;
        let r = classify_unsolicited(line).refusal.unwrap();
        assert_eq!(
            (r.code, r.limit.as_deref(), r.max),
            (-32001, Some("nofile"), Some(470))
        );
    }

    #[test]
    fn replies() {
        assert_eq!(
            parse_reply(r#"{"jsonrpc":"2.0","id":7,"result":{"content":[],"isError":true}}"#),
            Ok(Reply::Result {
                id: Some(7),
                is_error: true
            })
        );
        assert_eq!(
            parse_reply(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#),
            Ok(Reply::Result {
                id: Some(1),
                is_error: false
            })
        );
        // The fast path reads neither nested objects nor an isError that is
        // only text; a string id is no attempt number.
        assert_eq!(
            parse_reply(
                r#"{"jsonrpc":"2.0","id":3,"result":{"protocolVersion":"2025-11-25","capabilities":{"tools":{"listChanged":false}},"serverInfo":{"name":"s","version":"1"},"instructions":"say \"isError\""}}"#
            ),
            Ok(Reply::Result {
                id: Some(3),
                is_error: false
            })
        );
        assert_eq!(
            parse_reply(r#"{"jsonrpc":"2.0","id":"a","result":{"isError":false}}"#),
            Ok(Reply::Result {
                id: None,
                is_error: false
            })
        );
        // A result beside an error is not a result.
        assert!(matches!(
            parse_reply(
                r#"{"jsonrpc":"2.0","id":2,"result":{},"error":{"code":-32000,"message":"m"}}"#
            ),
            Ok(Reply::Error { id: Some(2), .. })
        ));
        assert_eq!(
            parse_reply("HTTP/1.1 400").unwrap_err().kind,
            FailureKind::Protocol
        );
        assert_eq!(
            parse_reply(r#"{"id":1}"#).unwrap_err().kind,
            FailureKind::Protocol
        );
        assert_eq!(
            classify_unsolicited(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#).kind,
            FailureKind::Protocol
        );
    }

    #[test]
    fn connect_mode_knows_real_servers_refusal_lines() {
        let f = classify_unsolicited("-ERR max number of clients reached\r\n");
        assert_eq!(f.kind, FailureKind::RedisMaxClients);
        assert_eq!(f.detail, "-ERR max number of clients reached");
        let f = classify_unsolicited("ERROR Too many open connections\r\n");
        assert_eq!(f.kind, FailureKind::MemcachedTooMany);
        assert_eq!(
            classify_unsolicited("220 mail ready").kind,
            FailureKind::Protocol
        );
    }

    #[test]
    fn every_kind_is_listed_once_and_described() {
        let set: std::collections::BTreeSet<_> = FailureKind::ALL.iter().collect();
        assert_eq!(set.len(), FailureKind::ALL.len());
        for k in FailureKind::ALL {
            assert!(!k.describe().is_empty());
            // The JSON name round-trips.
            let j = serde_json::to_string(&k).unwrap();
            assert_eq!(serde_json::from_str::<FailureKind>(&j).unwrap(), k);
        }
        assert_eq!(
            serde_json::to_string(&FailureKind::PostgresTooManyClients).unwrap(),
            "\"postgres_too_many_clients\""
        );
        assert!(FailureKind::RedisMaxClients.is_server_refusal());
        assert!(!FailureKind::BacklogFilling.is_server_refusal());
    }
}
