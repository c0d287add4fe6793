//! `--mode redis`: `PING`, expecting `+PONG`.
//!
//! Redis past `maxclients` accepts, writes `-ERR max number of clients
//! reached` and closes, before reading anything. A Redis that requires a
//! password answers `-NOAUTH ...`: it admitted the connection and serves it
//! (it answers), so that counts as served.

use super::{first_line, garbled, refusal_line, Parsed, Served, MAX_LINE};
use crate::outcome::{Failure, FailureKind};

/// `PING` as a RESP array.
pub const PING: &[u8] = b"*1\r\n$4\r\nPING\r\n";

const MAX_CLIENTS: &[u8] = b"-ERR max number of clients reached";

/// Redis' own refusal line, when `bytes` start with it.
pub fn refusal(bytes: &[u8]) -> Option<Failure> {
    refusal_line(bytes, MAX_CLIENTS, FailureKind::RedisMaxClients)
}

/// The reply to `PING`.
pub fn parse(buf: &[u8]) -> Parsed {
    // RESP replies start with a type byte; anything else is not Redis, and
    // is said at once rather than after a line that may never end.
    match buf.first() {
        None => return Parsed::More,
        Some(b'+' | b'-' | b':' | b'$' | b'*' | b'_' | b'%' | b'>' | b'|') => {}
        Some(_) => return garbled("not a Redis reply", buf),
    }
    if let Some(f) = refusal(buf) {
        // The whole line is not needed: the server closes after it.
        return Parsed::Failed(f);
    }
    let Some(line) = first_line(buf) else {
        return if buf.len() > MAX_LINE {
            garbled("Redis reply line without an end", &buf[..64])
        } else {
            Parsed::More
        };
    };
    let consumed = buf.iter().position(|&b| b == b'\n').unwrap_or(0) + 1;
    match line {
        b"+PONG" => Parsed::Served(Served::ready(consumed)),
        l if l.starts_with(b"-NOAUTH") => Parsed::Served(Served::ready(consumed)),
        l if l.starts_with(b"-") => Parsed::Failed(Failure::new(
            FailureKind::ServerError,
            String::from_utf8_lossy(l).into_owned(),
        )),
        l => garbled("Redis answered PING with", l),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(p: Parsed) -> (FailureKind, String) {
        match p {
            Parsed::Failed(f) => (f.kind, f.detail),
            other => panic!("not a failure: {other:?}"),
        }
    }

    #[test]
    fn pong_is_served() {
        assert_eq!(parse(b"+PONG\r\n"), Parsed::Served(Served::ready(7)));
        // Pipelined bytes after it are left alone.
        assert_eq!(
            parse(b"+PONG\r\n+PONG\r\n"),
            Parsed::Served(Served::ready(7))
        );
        assert_eq!(
            parse(b"-NOAUTH Authentication required.\r\n"),
            Parsed::Served(Served::ready(34))
        );
    }

    #[test]
    fn partial_replies_wait() {
        assert_eq!(parse(b""), Parsed::More);
        assert_eq!(parse(b"+PO"), Parsed::More);
        assert_eq!(parse(b"+PONG\r"), Parsed::More);
        // The refusal is known from its first bytes.
        assert_eq!(parse(b"-ERR max number of cl"), Parsed::More);
    }

    #[test]
    fn max_clients_is_the_servers_refusal() {
        assert_eq!(
            failed(parse(b"-ERR max number of clients reached\r\n")),
            (
                FailureKind::RedisMaxClients,
                "-ERR max number of clients reached".into()
            )
        );
        assert_eq!(
            refusal(b"-ERR max number of clients reached\r\n")
                .unwrap()
                .kind,
            FailureKind::RedisMaxClients
        );
        assert_eq!(refusal(b"+PONG\r\n"), None);
    }

    #[test]
    fn other_errors_and_foreign_replies() {
        assert_eq!(
            failed(parse(
                b"-LOADING Redis is loading the dataset in memory\r\n"
            )),
            (
                FailureKind::ServerError,
                "-LOADING Redis is loading the dataset in memory".into()
            )
        );
        // A server that speaks first (an SMTP banner), HTTP, garbage.
        assert_eq!(
            failed(parse(b"220 mail.example ESMTP\r\n")),
            (
                FailureKind::Protocol,
                "not a Redis reply: 220 mail.example ESMTP\\r\\n".into()
            )
        );
        assert_eq!(failed(parse(b"HTTP/1.1 400 Bad")).0, FailureKind::Protocol);
        assert_eq!(failed(parse(b"\x00\x01")).0, FailureKind::Protocol);
        assert_eq!(
            failed(parse(b"+OK\r\n")),
            (
                FailureKind::Protocol,
                "Redis answered PING with: +OK".into()
            )
        );
        assert_eq!(
            failed(parse(b":1\r\n")),
            (FailureKind::Protocol, "Redis answered PING with: :1".into())
        );
        // A line that never ends is cut off, not waited for.
        let mut long = b"+".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_LINE + 1));
        assert_eq!(failed(parse(&long)).0, FailureKind::Protocol);
    }
}
