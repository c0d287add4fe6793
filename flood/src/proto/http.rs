//! `--mode http`: `GET` with keep-alive, reading the status line, the
//! headers and the body (`Content-Length` or chunked), bounded.
//!
//! A `Connection: close` (or HTTP/1.0 without keep-alive) means the server
//! will not hold the connection: the reply is served, with `close` set. A
//! 5xx or 429 is the server's refusal (nginx's `limit_conn` answers 503).

use super::{garbled, Parsed, Served};
use crate::outcome::{Failure, FailureKind};

/// Longest status line plus headers waited for.
pub const MAX_HEAD: usize = 16 * 1024;
/// Longest body read (the flood wants an answer, not a download).
pub const MAX_BODY: usize = 1024 * 1024;

/// The request: `GET path` for `host`, keep-alive.
pub fn request(host: &str, path: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: keep-alive\r\nUser-Agent: headroom-flood/{}\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    )
    .into_bytes()
}

/// The response head: status, and what the headers say about the body and
/// the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Head {
    len: usize,
    version_minor: u8,
    status: u16,
    reason: String,
    content_length: Option<usize>,
    chunked: bool,
    close: bool,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse_head(buf: &[u8]) -> Result<Option<Head>, Parsed> {
    let prefix = b"HTTP/1.";
    let n = buf.len().min(prefix.len());
    if buf[..n] != prefix[..n] {
        return Err(garbled("not an HTTP/1 response", buf));
    }
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return if buf.len() > MAX_HEAD {
            Err(garbled("HTTP response head over 16 KiB", &buf[..64]))
        } else {
            Ok(None)
        };
    };
    let text = String::from_utf8_lossy(&buf[..end]);
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    let status = parts.next().and_then(|s| s.parse::<u16>().ok());
    let (Some(status), Some(minor)) = (status, version.strip_prefix("HTTP/1.")) else {
        return Err(garbled("bad HTTP status line", status_line.as_bytes()));
    };
    let version_minor = if minor == "1" { 1 } else { 0 };
    let mut head = Head {
        len: end + 4,
        version_minor,
        status,
        reason: parts.next().unwrap_or("").to_string(),
        content_length: None,
        chunked: false,
        close: version_minor == 0,
    };
    for h in lines {
        let Some((name, value)) = h.split_once(':') else {
            return Err(garbled("bad HTTP header", h.as_bytes()));
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => match value.parse::<usize>() {
                Ok(n) => head.content_length = Some(n),
                Err(_) => return Err(garbled("bad Content-Length", value.as_bytes())),
            },
            "transfer-encoding" => {
                head.chunked = value.to_ascii_lowercase().contains("chunked");
            }
            "connection" => {
                let v = value.to_ascii_lowercase();
                if v.split(',').any(|t| t.trim() == "close") {
                    head.close = true;
                } else if v.split(',').any(|t| t.trim() == "keep-alive") {
                    head.close = false;
                }
            }
            _ => {}
        }
    }
    Ok(Some(head))
}

/// Length of a chunked body at the start of `buf`, when complete.
fn chunked_len(buf: &[u8]) -> Result<Option<usize>, Parsed> {
    let mut at = 0;
    loop {
        let Some(eol) = find(&buf[at..], b"\r\n") else {
            return Ok(None);
        };
        let size_text = String::from_utf8_lossy(&buf[at..at + eol]);
        let size_hex = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| garbled("bad chunk size", size_hex.as_bytes()))?;
        at += eol + 2;
        if at + size > MAX_BODY {
            return Err(garbled("HTTP body over 1 MiB", &buf[..0]));
        }
        if size == 0 {
            // Trailers, then an empty line.
            loop {
                let Some(eol) = find(&buf[at..], b"\r\n") else {
                    return Ok(None);
                };
                at += eol + 2;
                if eol == 0 {
                    return Ok(Some(at));
                }
            }
        }
        if buf.len() < at + size + 2 {
            return Ok(None);
        }
        if &buf[at + size..at + size + 2] != b"\r\n" {
            return Err(garbled("chunk without its CRLF", &buf[at + size..]));
        }
        at += size + 2;
    }
}

/// The response to the `GET`.
pub fn parse(buf: &[u8]) -> Parsed {
    if buf.is_empty() {
        return Parsed::More;
    }
    let head = match parse_head(buf) {
        Ok(Some(h)) => h,
        Ok(None) => return Parsed::More,
        Err(p) => return p,
    };
    if (100..200).contains(&head.status) {
        // An interim response (103 Early Hints): the real one follows.
        return match parse(&buf[head.len..]) {
            Parsed::Served(s) => Parsed::Served(Served {
                consumed: s.consumed + head.len,
                ..s
            }),
            other => other,
        };
    }
    let body = &buf[head.len..];
    let no_body = head.status == 204 || head.status == 304;
    let (body_len, close) = if no_body {
        (0, head.close)
    } else if head.chunked {
        match chunked_len(body) {
            Ok(Some(n)) => (n, head.close),
            Ok(None) => return Parsed::More,
            Err(p) => return p,
        }
    } else if let Some(n) = head.content_length {
        if n > MAX_BODY {
            return garbled("HTTP body over 1 MiB", format!("{n}").as_bytes());
        }
        if body.len() < n {
            return Parsed::More;
        }
        (n, head.close)
    } else {
        // No length: the body runs to the close, so the server closes.
        (0, true)
    };
    if head.status >= 500 || head.status == 429 {
        return Parsed::Failed(Failure::new(
            FailureKind::ServerError,
            format!("HTTP {} {}", head.status, head.reason)
                .trim()
                .to_string(),
        ));
    }
    Parsed::Served(Served {
        consumed: head.len + body_len,
        close,
        ready: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(p: Parsed) -> Served {
        match p {
            Parsed::Served(s) => s,
            other => panic!("not served: {other:?}"),
        }
    }

    fn failed(p: Parsed) -> (FailureKind, String) {
        match p {
            Parsed::Failed(f) => (f.kind, f.detail),
            other => panic!("not a failure: {other:?}"),
        }
    }

    const NGINX: &[u8] = b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nContent-Type: text/html\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello";

    #[test]
    fn request_line_and_headers() {
        let r = request("127.0.0.1:8080", "/x");
        let text = String::from_utf8(r).unwrap();
        assert!(text
            .starts_with("GET /x HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nConnection: keep-alive\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn content_length_body() {
        let s = served(parse(NGINX));
        assert_eq!((s.consumed, s.close), (NGINX.len(), false));
        // Every shorter prefix waits for more.
        for n in 1..NGINX.len() {
            assert_eq!(parse(&NGINX[..n]), Parsed::More, "prefix {n}");
        }
        let mut two = NGINX.to_vec();
        two.extend_from_slice(NGINX);
        assert_eq!(served(parse(&two)).consumed, NGINX.len());
    }

    #[test]
    fn connection_close_and_http_1_0() {
        let s = served(parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        ));
        assert!(s.close);
        let s = served(parse(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"));
        assert!(s.close);
        let s = served(parse(
            b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nok",
        ));
        assert!(!s.close);
        // No length at all: the body ends with the connection.
        let s = served(parse(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\npartial",
        ));
        assert!(s.close);
    }

    #[test]
    fn chunked_body() {
        let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3;x=y\r\n abc\r\n0\r\n\r\n";
        // "3" announces 3 bytes but " abc" is 4: the CRLF is missing.
        assert_eq!(failed(parse(r)).0, FailureKind::Protocol);
        let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n3;x=y\r\nabc\r\n0\r\nX-T: 1\r\n\r\n";
        assert_eq!(served(parse(r)).consumed, r.len());
        for n in 1..r.len() {
            assert_eq!(parse(&r[..n]), Parsed::More, "prefix {n}");
        }
        assert_eq!(
            failed(parse(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
            ))
            .0,
            FailureKind::Protocol
        );
    }

    #[test]
    fn no_body_statuses_and_interim_responses() {
        let r = b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n";
        assert_eq!(served(parse(r)).consumed, r.len());
        let r = b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(served(parse(r)).consumed, r.len());
    }

    #[test]
    fn refusals_and_other_statuses() {
        assert_eq!(
            failed(parse(
                b"HTTP/1.1 503 Service Temporarily Unavailable\r\nContent-Length: 0\r\n\r\n"
            )),
            (
                FailureKind::ServerError,
                "HTTP 503 Service Temporarily Unavailable".into()
            )
        );
        assert_eq!(
            failed(parse(
                b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 0\r\n\r\n"
            ))
            .0,
            FailureKind::ServerError
        );
        // A 404 is an answer: the connection is served.
        assert!(
            !served(parse(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
            ))
            .close
        );
    }

    #[test]
    fn garbled_and_foreign_responses() {
        assert_eq!(
            failed(parse(b"+PONG\r\n")),
            (
                FailureKind::Protocol,
                "not an HTTP/1 response: +PONG\\r\\n".into()
            )
        );
        // Said at the first wrong byte, not after a head that never ends.
        assert_eq!(failed(parse(b"HTX")).0, FailureKind::Protocol);
        assert_eq!(parse(b"HTT"), Parsed::More);
        assert_eq!(
            failed(parse(b"HTTP/1.1 abc OK\r\n\r\n")).1,
            "bad HTTP status line: HTTP/1.1 abc OK"
        );
        assert_eq!(
            failed(parse(b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n")).1,
            "bad HTTP header: no colon"
        );
        assert_eq!(
            failed(parse(b"HTTP/1.1 200 OK\r\nContent-Length: 2000000\r\n\r\n")).1,
            "HTTP body over 1 MiB: 2000000"
        );
        let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
        head.extend(std::iter::repeat_n(b'a', MAX_HEAD));
        assert_eq!(failed(parse(&head)).0, FailureKind::Protocol);
    }
}
