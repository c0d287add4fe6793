//! `--mode postgres`: the protocol 3.0 startup message, then the server's
//! answer.
//!
//! PostgreSQL forks a backend for every connection and checks its limits in
//! that backend only after reading the startup message: `max_connections`
//! refuses with SQLSTATE 53300 "sorry, too many clients already", the slots
//! kept for superusers (or `pg_use_reserved_connections`) with 53300
//! "remaining connection slots are reserved for ...". A postmaster that
//! cannot fork writes a protocol-2 error packet ("E" and text) itself.
//! AuthenticationOk, then ParameterStatus/BackendKeyData up to ReadyForQuery
//! = served and queryable; an authentication request (password, SASL) = a
//! backend took it: held, not queryable.

use super::{garbled, Parsed, Served};
use crate::outcome::{Failure, FailureKind};

/// Longest message accepted.
const MAX_MESSAGE: usize = 1024 * 1024;
/// Protocol version 3.0.
const PROTOCOL_3_0: u32 = 196_608;

/// `Query("SELECT 1")`.
pub const SELECT_1: &[u8] = b"Q\x00\x00\x00\x0dSELECT 1\x00";

/// The startup message for `user` on `database`.
pub fn startup(user: &str, database: &str) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&PROTOCOL_3_0.to_be_bytes());
    for (k, v) in [
        ("user", user),
        ("database", database),
        ("application_name", "headroom-flood"),
    ] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut msg = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    msg.extend_from_slice(&body);
    msg
}

/// One backend message at the start of `buf`: (type, payload, total length).
enum Message<'a> {
    Whole(u8, &'a [u8], usize),
    More,
    /// A protocol-2 error packet: 'E', text, NUL (the text, trimmed).
    V2Error(String),
    Bad(Parsed),
}

fn message<'a>(buf: &'a [u8], expected: &[u8]) -> Message<'a> {
    let Some(&t) = buf.first() else {
        return Message::More;
    };
    if !expected.contains(&t) {
        return Message::Bad(garbled("not a PostgreSQL message", buf));
    }
    if buf.len() < 5 {
        return Message::More;
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if !(4..=MAX_MESSAGE).contains(&len) {
        if t == b'E' {
            // The postmaster's own error packet: no length, text to a NUL.
            return match buf.iter().position(|&b| b == 0) {
                Some(nul) => {
                    Message::V2Error(String::from_utf8_lossy(&buf[1..nul]).trim().to_string())
                }
                None if buf.len() > 4096 => {
                    Message::Bad(garbled("PostgreSQL error without an end", &buf[..64]))
                }
                None => Message::More,
            };
        }
        return Message::Bad(garbled("bad PostgreSQL message length", &buf[..5]));
    }
    if buf.len() < 1 + len {
        return Message::More;
    }
    Message::Whole(t, &buf[5..1 + len], 1 + len)
}

/// An ErrorResponse's fields, classified.
fn error_response(payload: &[u8]) -> Failure {
    let (mut severity, mut code, mut text) = (String::new(), String::new(), String::new());
    for field in payload.split(|&b| b == 0) {
        let Some((&k, v)) = field.split_first() else {
            continue;
        };
        let v = String::from_utf8_lossy(v).into_owned();
        match k {
            // V is the severity never translated; S may be.
            b'V' => severity = v,
            b'S' if severity.is_empty() => severity = v,
            b'C' => code = v,
            b'M' => text = v,
            _ => {}
        }
    }
    let kind = match code.as_str() {
        "53300" if text.contains("reserved") => FailureKind::PostgresReservedSlots,
        "53300" => FailureKind::PostgresTooManyClients,
        _ if text.contains("could not fork") => FailureKind::PostgresForkFailed,
        _ => FailureKind::ServerError,
    };
    Failure::new(kind, format!("{severity} {code}: {text}"))
}

fn v2_error(text: String) -> Failure {
    let kind = if text.contains("could not fork") {
        FailureKind::PostgresForkFailed
    } else if text.contains("too many clients") {
        FailureKind::PostgresTooManyClients
    } else {
        FailureKind::ServerError
    };
    Failure::new(kind, text)
}

/// The answer to the startup message.
pub fn parse_startup(buf: &[u8]) -> Parsed {
    let mut at = 0;
    let mut auth_ok = false;
    loop {
        match message(&buf[at..], b"REvNSKZ") {
            Message::More => return Parsed::More,
            Message::Bad(p) => return p,
            Message::V2Error(text) => return Parsed::Failed(v2_error(text)),
            Message::Whole(b'E', payload, _) => return Parsed::Failed(error_response(payload)),
            Message::Whole(b'R', payload, n) => {
                if payload.len() < 4 {
                    return garbled("short authentication message", &buf[at..at + n]);
                }
                let code = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
                if code != 0 {
                    // A password or SASL exchange: a backend took the
                    // connection; the flood holds it without answering.
                    return Parsed::Served(Served {
                        consumed: at + n,
                        close: false,
                        ready: false,
                    });
                }
                auth_ok = true;
                at += n;
            }
            Message::Whole(b'Z', _, n) if auth_ok => {
                return Parsed::Served(Served::ready(at + n));
            }
            Message::Whole(b'Z', _, _) => {
                return garbled("ReadyForQuery before authentication", &buf[at..]);
            }
            Message::Whole(_, _, n) => at += n,
        }
    }
}

/// The answer to `SELECT 1`, up to ReadyForQuery.
pub fn parse_query(buf: &[u8]) -> Parsed {
    let mut at = 0;
    loop {
        match message(&buf[at..], b"TDCINSEZA") {
            Message::More => return Parsed::More,
            Message::Bad(p) => return p,
            Message::V2Error(text) => return Parsed::Failed(v2_error(text)),
            Message::Whole(b'E', payload, _) => return Parsed::Failed(error_response(payload)),
            Message::Whole(b'Z', _, n) => return Parsed::Served(Served::ready(at + n)),
            Message::Whole(_, _, n) => at += n,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn msg(t: u8, payload: &[u8]) -> Vec<u8> {
        let mut m = vec![t];
        m.extend_from_slice(&((payload.len() + 4) as u32).to_be_bytes());
        m.extend_from_slice(payload);
        m
    }

    /// An ErrorResponse with these fields.
    pub(crate) fn error(fields: &[(u8, &str)]) -> Vec<u8> {
        let mut p = Vec::new();
        for (k, v) in fields {
            p.push(*k);
            p.extend_from_slice(v.as_bytes());
            p.push(0);
        }
        p.push(0);
        msg(b'E', &p)
    }

    fn failed(p: Parsed) -> (FailureKind, String) {
        match p {
            Parsed::Failed(f) => (f.kind, f.detail),
            other => panic!("not a failure: {other:?}"),
        }
    }

    /// What PostgreSQL 15 sends after a trusted startup.
    fn trusted() -> Vec<u8> {
        let mut v = msg(b'R', &0u32.to_be_bytes());
        v.extend(msg(b'S', b"server_version\x0015.18\x00"));
        v.extend(msg(b'K', &[0, 0, 0x30, 0x39, 1, 2, 3, 4]));
        v.extend(msg(b'Z', b"I"));
        v
    }

    #[test]
    fn startup_message_bytes() {
        let m = startup("postgres", "db");
        let expect = b"\x00\x00\x00\x43\x00\x03\x00\x00user\x00postgres\x00database\x00db\x00application_name\x00headroom-flood\x00\x00";
        assert_eq!(m, expect.to_vec());
        assert_eq!(m.len(), 0x43);
        assert_eq!(SELECT_1.len(), 14);
        assert_eq!(u32::from_be_bytes(SELECT_1[1..5].try_into().unwrap()), 13);
    }

    #[test]
    fn trusted_startup_is_served_and_queryable() {
        let t = trusted();
        assert_eq!(parse_startup(&t), Parsed::Served(Served::ready(t.len())));
        for n in 0..t.len() {
            assert_eq!(parse_startup(&t[..n]), Parsed::More, "prefix {n}");
        }
    }

    #[test]
    fn password_request_is_held_not_queryable() {
        // AuthenticationSASL with SCRAM-SHA-256.
        let m = msg(b'R', b"\x00\x00\x00\x0aSCRAM-SHA-256\x00\x00");
        assert_eq!(
            parse_startup(&m),
            Parsed::Served(Served {
                consumed: m.len(),
                close: false,
                ready: false
            })
        );
        // MD5, with its salt.
        let m = msg(b'R', b"\x00\x00\x00\x05abcd");
        assert!(matches!(
            parse_startup(&m),
            Parsed::Served(Served { ready: false, .. })
        ));
    }

    #[test]
    fn too_many_clients_and_reserved_slots() {
        let e = error(&[
            (b'S', "FATAL"),
            (b'V', "FATAL"),
            (b'C', "53300"),
            (b'M', "sorry, too many clients already"),
            (b'F', "proc.c"),
        ]);
        assert_eq!(
            failed(parse_startup(&e)),
            (
                FailureKind::PostgresTooManyClients,
                "FATAL 53300: sorry, too many clients already".into()
            )
        );
        // After AuthenticationOk, as PostgreSQL 15 sends it to a non-superuser.
        let mut v = msg(b'R', &0u32.to_be_bytes());
        v.extend(error(&[
            (b'S', "FATAL"),
            (b'V', "FATAL"),
            (b'C', "53300"),
            (
                b'M',
                "remaining connection slots are reserved for non-replication superuser connections",
            ),
        ]));
        assert_eq!(
            failed(parse_startup(&v)).0,
            FailureKind::PostgresReservedSlots
        );
        // A translated severity does not hide the code.
        let e = error(&[(b'S', "FATAL"), (b'C', "53300"), (b'M', "trop de clients")]);
        assert_eq!(
            failed(parse_startup(&e)),
            (
                FailureKind::PostgresTooManyClients,
                "FATAL 53300: trop de clients".into()
            )
        );
    }

    #[test]
    fn fork_failure_packet_of_the_postmaster() {
        let p =
            b"Ecould not fork new process for connection: Resource temporarily unavailable\n\x00";
        assert_eq!(
            failed(parse_startup(p)),
            (
                FailureKind::PostgresForkFailed,
                "could not fork new process for connection: Resource temporarily unavailable"
                    .into()
            )
        );
        assert_eq!(parse_startup(&p[..20]), Parsed::More);
    }

    #[test]
    fn other_errors_are_the_servers() {
        let e = error(&[
            (b'S', "FATAL"),
            (b'C', "28000"),
            (b'M', "role \"nobody\" does not exist"),
        ]);
        assert_eq!(
            failed(parse_startup(&e)),
            (
                FailureKind::ServerError,
                "FATAL 28000: role \"nobody\" does not exist".into()
            )
        );
    }

    #[test]
    fn garbled_and_foreign_replies() {
        assert_eq!(
            failed(parse_startup(b"HTTP/1.1 400 Bad Request\r\n")),
            (
                FailureKind::Protocol,
                "not a PostgreSQL message: HTTP/1.1 400 Bad Request\\r\\n".into()
            )
        );
        // An 'R' with a nonsense length.
        assert_eq!(
            failed(parse_startup(b"R\xff\xff\xff\xff")).0,
            FailureKind::Protocol
        );
        assert_eq!(
            failed(parse_startup(&msg(b'R', b"\x00"))).0,
            FailureKind::Protocol
        );
        assert_eq!(
            failed(parse_startup(&msg(b'Z', b"I"))).0,
            FailureKind::Protocol
        );
        // A redis refusal is not PostgreSQL.
        assert_eq!(
            failed(parse_startup(b"-ERR max number of clients reached\r\n")).0,
            FailureKind::Protocol
        );
    }

    #[test]
    fn select_1_reply() {
        let mut r = msg(b'T', b"\x00\x01?column?\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x17\x00\x04\xff\xff\xff\xff\x00\x00");
        r.extend(msg(b'D', b"\x00\x01\x00\x00\x00\x011"));
        r.extend(msg(b'C', b"SELECT 1\x00"));
        r.extend(msg(b'Z', b"I"));
        assert_eq!(parse_query(&r), Parsed::Served(Served::ready(r.len())));
        assert_eq!(parse_query(&r[..r.len() - 1]), Parsed::More);
        let e = error(&[
            (b'S', "FATAL"),
            (b'C', "57P01"),
            (b'M', "terminating connection due to administrator command"),
        ]);
        assert_eq!(
            failed(parse_query(&e)),
            (
                FailureKind::ServerError,
                "FATAL 57P01: terminating connection due to administrator command".into()
            )
        );
    }
}
