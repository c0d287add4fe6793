//! `--mode memcached`: `version`, expecting `VERSION x.y.z`.
//!
//! memcached past `-c` (with `maxconns_fast`, its default) accepts, writes
//! `ERROR Too many open connections` and closes.

use super::{first_line, garbled, refusal_line, Parsed, Served, MAX_LINE};
use crate::outcome::{Failure, FailureKind};

pub const VERSION: &[u8] = b"version\r\n";

const TOO_MANY: &[u8] = b"ERROR Too many open connections";

/// memcached's own refusal line, when `bytes` start with it.
pub fn refusal(bytes: &[u8]) -> Option<Failure> {
    refusal_line(bytes, TOO_MANY, FailureKind::MemcachedTooMany)
}

/// The reply to `version`.
pub fn parse(buf: &[u8]) -> Parsed {
    match buf.first() {
        None => return Parsed::More,
        // Every memcached text reply starts with an upper-case word.
        Some(b'A'..=b'Z') => {}
        Some(_) => return garbled("not a memcached reply", buf),
    }
    if let Some(f) = refusal(buf) {
        return Parsed::Failed(f);
    }
    let Some(line) = first_line(buf) else {
        return if buf.len() > MAX_LINE {
            garbled("memcached reply line without an end", &buf[..64])
        } else {
            Parsed::More
        };
    };
    let consumed = buf.iter().position(|&b| b == b'\n').unwrap_or(0) + 1;
    let text = || String::from_utf8_lossy(line).into_owned();
    if line.starts_with(b"VERSION ") {
        Parsed::Served(Served::ready(consumed))
    } else if line.starts_with(b"SERVER_ERROR") {
        Parsed::Failed(Failure::new(FailureKind::ServerError, text()))
    } else if line == b"ERROR" {
        // memcached's answer to a command it does not know: not memcached's
        // text protocol on this port (or a proxy that speaks another one).
        garbled("`version` unknown to the server", line)
    } else {
        garbled("memcached answered version with", line)
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
    fn version_is_served() {
        assert_eq!(
            parse(b"VERSION 1.6.18\r\n"),
            Parsed::Served(Served::ready(16))
        );
        assert_eq!(parse(b"VERSION 1.6"), Parsed::More);
        assert_eq!(parse(b""), Parsed::More);
    }

    #[test]
    fn too_many_is_the_servers_refusal() {
        assert_eq!(
            failed(parse(b"ERROR Too many open connections\r\n")),
            (
                FailureKind::MemcachedTooMany,
                "ERROR Too many open connections".into()
            )
        );
        // Known before the line ends.
        assert_eq!(
            failed(parse(b"ERROR Too many open connections")).0,
            FailureKind::MemcachedTooMany
        );
        assert_eq!(
            failed(parse(b"SERVER_ERROR out of memory\r\n")),
            (
                FailureKind::ServerError,
                "SERVER_ERROR out of memory".into()
            )
        );
    }

    #[test]
    fn foreign_and_garbled_replies() {
        assert_eq!(
            failed(parse(b"ERROR\r\n")),
            (
                FailureKind::Protocol,
                "`version` unknown to the server: ERROR".into()
            )
        );
        assert_eq!(failed(parse(b"+PONG\r\n")).0, FailureKind::Protocol);
        assert_eq!(failed(parse(b"\x16\x03\x01")).0, FailureKind::Protocol);
        assert_eq!(
            failed(parse(b"HELLO there\r\n")),
            (
                FailureKind::Protocol,
                "memcached answered version with: HELLO there".into()
            )
        );
    }
}
