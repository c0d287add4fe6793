//! RESP2, the Redis protocol: one reply read from the front of a buffer,
//! bounded, and a command written as an array of bulk strings.

use crate::wire;

/// Deepest nesting of RESP arrays accepted in a reply.
const MAX_RESP_DEPTH: usize = 8;
/// Most elements accepted in one RESP array.
const MAX_RESP_ELEMENTS: i64 = 1 << 16;

/// One RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    /// `None`: the null bulk string (`$-1`).
    Bulk(Option<Vec<u8>>),
    /// `None`: the null array (`*-1`).
    Array(Option<Vec<Resp>>),
}

/// The outcome of parsing the front of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// More bytes are needed.
    Incomplete,
    /// Not RESP: what is wrong.
    Bad(String),
    /// A whole reply and the bytes it took.
    Done(Resp, usize),
}

/// Parses one RESP2 reply from the front of `buf`. Bounded: no recursion
/// past [`MAX_RESP_DEPTH`], no array past [`MAX_RESP_ELEMENTS`], lengths
/// checked against [`wire::MAX_REPLY_BYTES`].
pub fn parse_resp(buf: &[u8]) -> Parsed {
    parse_at(buf, 0)
}

fn parse_at(buf: &[u8], depth: usize) -> Parsed {
    if depth > MAX_RESP_DEPTH {
        return Parsed::Bad(format!("arrays nested deeper than {MAX_RESP_DEPTH}"));
    }
    let Some(&kind) = buf.first() else {
        return Parsed::Incomplete;
    };
    let Some(end) = find_crlf(buf) else {
        if buf.len() > 4096 || (buf.len() > 1 && !b"+-:$*".contains(&kind)) {
            return Parsed::Bad(bad_start(buf));
        }
        return Parsed::Incomplete;
    };
    let line = &buf[1..end];
    let after = end + 2;
    match kind {
        b'+' => Parsed::Done(Resp::Simple(lossy(line)), after),
        b'-' => Parsed::Done(Resp::Error(lossy(line)), after),
        b':' => match number(line) {
            Some(n) => Parsed::Done(Resp::Int(n), after),
            None => Parsed::Bad(format!("bad integer {:?}", lossy(line))),
        },
        b'$' => {
            let Some(n) = number(line) else {
                return Parsed::Bad(format!("bad bulk length {:?}", lossy(line)));
            };
            if n == -1 {
                return Parsed::Done(Resp::Bulk(None), after);
            }
            if n < 0 || n as u64 > wire::MAX_REPLY_BYTES as u64 {
                return Parsed::Bad(format!("bulk length {n} out of range"));
            }
            let n = n as usize;
            if buf.len() < after + n + 2 {
                return Parsed::Incomplete;
            }
            if &buf[after + n..after + n + 2] != b"\r\n" {
                return Parsed::Bad("bulk string not terminated by CRLF".into());
            }
            Parsed::Done(
                Resp::Bulk(Some(buf[after..after + n].to_vec())),
                after + n + 2,
            )
        }
        b'*' => {
            let Some(n) = number(line) else {
                return Parsed::Bad(format!("bad array length {:?}", lossy(line)));
            };
            if n == -1 {
                return Parsed::Done(Resp::Array(None), after);
            }
            if !(0..=MAX_RESP_ELEMENTS).contains(&n) {
                return Parsed::Bad(format!("array length {n} out of range"));
            }
            let mut items = Vec::new();
            let mut at = after;
            for _ in 0..n {
                match parse_at(&buf[at..], depth + 1) {
                    Parsed::Done(v, used) => {
                        items.push(v);
                        at += used;
                    }
                    other => return other,
                }
            }
            Parsed::Done(Resp::Array(Some(items)), at)
        }
        _ => Parsed::Bad(bad_start(buf)),
    }
}

fn bad_start(buf: &[u8]) -> String {
    let head: String = String::from_utf8_lossy(&buf[..buf.len().min(24)])
        .chars()
        .map(|c| if c.is_control() { '.' } else { c })
        .collect();
    format!("not a RESP reply: {head:?}")
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

fn number(line: &[u8]) -> Option<i64> {
    std::str::from_utf8(line).ok()?.parse().ok()
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Up to `n` replies from the front of `buf`: `Ok` with fewer than `n` when
/// the buffer ends early (the server closed), `Err` for bytes that are not
/// RESP.
pub fn parse_replies(buf: &[u8], n: usize) -> Result<Vec<Resp>, String> {
    let mut out = Vec::new();
    let mut at = 0;
    while out.len() < n {
        match parse_resp(&buf[at..]) {
            Parsed::Done(v, used) => {
                out.push(v);
                at += used;
            }
            Parsed::Incomplete => break,
            Parsed::Bad(e) => return Err(e),
        }
    }
    Ok(out)
}

/// A command as a RESP array of bulk strings (safe for any bytes, passwords
/// included).
pub fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut v = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        v.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        v.extend_from_slice(a);
        v.extend_from_slice(b"\r\n");
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resp_parses_every_type_and_reports_incomplete() {
        assert_eq!(
            parse_resp(b"+OK\r\n"),
            Parsed::Done(Resp::Simple("OK".into()), 5)
        );
        assert_eq!(
            parse_resp(b"-ERR x\r\n"),
            Parsed::Done(Resp::Error("ERR x".into()), 8)
        );
        assert_eq!(parse_resp(b":-12\r\n"), Parsed::Done(Resp::Int(-12), 6));
        assert_eq!(parse_resp(b"$-1\r\n"), Parsed::Done(Resp::Bulk(None), 5));
        assert_eq!(parse_resp(b"*-1\r\n"), Parsed::Done(Resp::Array(None), 5));
        assert_eq!(
            parse_resp(b"*2\r\n$3\r\nabc\r\n:1\r\n"),
            Parsed::Done(
                Resp::Array(Some(vec![Resp::Bulk(Some(b"abc".to_vec())), Resp::Int(1)])),
                17
            )
        );
        assert_eq!(parse_resp(b"$3\r\nab"), Parsed::Incomplete);
        assert_eq!(parse_resp(b"*2\r\n$3\r\nabc\r\n"), Parsed::Incomplete);
        assert_eq!(parse_resp(b""), Parsed::Incomplete);
        assert_eq!(parse_resp(b"+OK"), Parsed::Incomplete);
    }

    #[test]
    fn resp_rejects_garbage_huge_lengths_and_deep_nesting() {
        assert!(matches!(
            parse_resp(b"HTTP/1.1 400 Bad Request\r\n"),
            Parsed::Bad(_)
        ));
        assert!(matches!(parse_resp(b"\x00\x01\x02\xff"), Parsed::Bad(_)));
        assert!(matches!(parse_resp(b"$99999999999\r\n"), Parsed::Bad(_)));
        assert!(matches!(parse_resp(b"$-5\r\n"), Parsed::Bad(_)));
        assert!(matches!(parse_resp(b"*99999999\r\n"), Parsed::Bad(_)));
        assert!(matches!(parse_resp(b"$3\r\nabcXY"), Parsed::Bad(_)));
        assert!(matches!(parse_resp(b":12a\r\n"), Parsed::Bad(_)));
        let deep = "*1\r\n".repeat(100);
        assert!(matches!(parse_resp(deep.as_bytes()), Parsed::Bad(_)));
        // An unterminated line that never ends is garbage past 4 KiB.
        let long = format!("+{}", "a".repeat(5000));
        assert!(matches!(parse_resp(long.as_bytes()), Parsed::Bad(_)));
    }

    #[test]
    fn command_encodes_any_bytes_as_bulk_strings() {
        assert_eq!(
            command(&[b"AUTH", b"p w\r\n"]),
            b"*2\r\n$4\r\nAUTH\r\n$5\r\np w\r\n\r\n".to_vec()
        );
    }
}
