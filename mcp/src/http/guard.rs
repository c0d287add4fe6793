//! Checks every request passes before any MCP work: DNS-rebinding protection
//! (Host and Origin) for a loopback-bound server, and the bearer token.

use axum::http::{header, HeaderMap};

/// The host names a loopback-bound server answers to.
fn is_loopback_host(host: &str) -> bool {
    // Strip the port: "[::1]:8808", "localhost:8808", "127.0.0.1".
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((inner, _)) => inner,
            None => return false,
        }
    } else {
        host.rsplit_once(':').map_or(host, |(h, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                host
            }
        })
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name == "::1"
        || name
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Host and Origin must both name this machine when the server listens only on
/// loopback: a page that rebinds its own DNS name to 127.0.0.1 sends its own
/// name in both. `Err` carries the reason for the 403 body.
pub(crate) fn check_rebinding(headers: &HeaderMap) -> Result<(), &'static str> {
    match headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
        Some(host) if is_loopback_host(host) => {}
        Some(_) => return Err("Host header does not name this loopback server"),
        None => return Err("missing Host header"),
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().map_err(|_| "Origin header is not ASCII")?;
        let host = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .ok_or("Origin is not an http(s) origin of this loopback server")?;
        if !is_loopback_host(host) {
            return Err("Origin is not this loopback server");
        }
    }
    Ok(())
}

/// `Authorization: Bearer <token>`, compared in time independent of where the
/// first difference is.
pub(crate) fn check_bearer(headers: &HeaderMap, token: &str) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some((scheme, given)) = value.trim().split_once(' ') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return false;
    }
    let (a, b) = (given.trim().as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether an `Accept` header admits a media type (absent admits everything).
pub(crate) fn accepts(headers: &HeaderMap, media: &str) -> bool {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let (kind, _) = media.split_once('/').unwrap_or((media, ""));
    accept.split(',').any(|part| {
        let m = part
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        m == media || m == "*/*" || m == format!("{kind}/*")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn loopback_hosts() {
        for ok in [
            "localhost",
            "localhost:8808",
            "127.0.0.1:1",
            "[::1]:80",
            "127.1.2.3",
            "LOCALHOST.",
        ] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8808",
            "10.0.0.1",
            "[::2]:1",
            "localhost.evil.com",
            "[::1",
        ] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
    }

    #[test]
    fn rebinding() {
        assert!(check_rebinding(&headers(&[("host", "localhost:1")])).is_ok());
        assert!(check_rebinding(&headers(&[
            ("host", "127.0.0.1:1"),
            ("origin", "http://localhost:3000")
        ]))
        .is_ok());
        assert!(check_rebinding(&headers(&[("host", "evil.example")])).is_err());
        assert!(check_rebinding(&headers(&[
            ("host", "localhost"),
            ("origin", "http://evil.example")
        ]))
        .is_err());
        assert!(check_rebinding(&headers(&[("host", "localhost"), ("origin", "null")])).is_err());
        assert!(check_rebinding(&headers(&[])).is_err());
    }

    #[test]
    fn bearer() {
        assert!(check_bearer(
            &headers(&[("authorization", "Bearer s3cret")]),
            "s3cret"
        ));
        assert!(check_bearer(
            &headers(&[("authorization", "bearer s3cret")]),
            "s3cret"
        ));
        assert!(!check_bearer(
            &headers(&[("authorization", "Bearer s3cre")]),
            "s3cret"
        ));
        assert!(!check_bearer(
            &headers(&[("authorization", "Basic s3cret")]),
            "s3cret"
        ));
        assert!(!check_bearer(&headers(&[]), "s3cret"));
    }

    #[test]
    fn accept_header() {
        let h = headers(&[("accept", "application/json, text/event-stream")]);
        assert!(accepts(&h, "application/json") && accepts(&h, "text/event-stream"));
        let h = headers(&[("accept", "text/event-stream")]);
        assert!(!accepts(&h, "application/json"));
        let h = headers(&[("accept", "*/*")]);
        assert!(accepts(&h, "application/json"));
    }
}
