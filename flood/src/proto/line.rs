//! `--mode line`: send a line (`--send`, default `ping`), expect a line
//! back (`--expect`: a prefix it must start with; default any line).

use super::{first_line, garbled, known_refusal, Parsed, Served, MAX_LINE};

/// `send` with its newline.
pub fn request(send: &str) -> Vec<u8> {
    let mut v = send.as_bytes().to_vec();
    if !v.ends_with(b"\n") {
        v.push(b'\n');
    }
    v
}

/// The reply line.
pub fn parse(buf: &[u8], expect: Option<&str>) -> Parsed {
    let Some(line) = first_line(buf) else {
        return if buf.len() > MAX_LINE {
            garbled("reply line without an end", &buf[..64])
        } else {
            Parsed::More
        };
    };
    let consumed = buf.iter().position(|&b| b == b'\n').unwrap_or(0) + 1;
    // A known server's refusal line is its refusal, whatever was expected.
    if let Some(f) = known_refusal(buf) {
        return Parsed::Failed(f);
    }
    match expect {
        Some(e) if !line.starts_with(e.as_bytes()) => {
            garbled(&format!("expected a line starting with `{e}`, got"), line)
        }
        _ => Parsed::Served(Served::ready(consumed)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::FailureKind;

    fn failed(p: Parsed) -> (FailureKind, String) {
        match p {
            Parsed::Failed(f) => (f.kind, f.detail),
            other => panic!("not a failure: {other:?}"),
        }
    }

    #[test]
    fn requests_end_in_one_newline() {
        assert_eq!(request("ping"), b"ping\n");
        assert_eq!(request("ping\n"), b"ping\n");
        assert_eq!(request(""), b"\n");
    }

    #[test]
    fn any_line_or_the_expected_prefix() {
        assert_eq!(parse(b"pong\r\n", None), Parsed::Served(Served::ready(6)));
        assert_eq!(parse(b"pon", None), Parsed::More);
        assert_eq!(
            parse(b"ping\nmore", Some("ping")),
            Parsed::Served(Served::ready(5))
        );
        assert_eq!(
            failed(parse(b"220 mail ready\r\n", Some("ping"))),
            (
                FailureKind::Protocol,
                "expected a line starting with `ping`, got: 220 mail ready".into()
            )
        );
    }

    #[test]
    fn known_refusals_and_endless_lines() {
        assert_eq!(
            failed(parse(b"-ERR max number of clients reached\r\n", None)).0,
            FailureKind::RedisMaxClients
        );
        assert_eq!(
            failed(parse(&vec![b'x'; MAX_LINE + 1], None)).0,
            FailureKind::Protocol
        );
    }
}
