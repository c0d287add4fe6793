//! HAProxy's configuration words: a line split as parse_line() splits it,
//! and the ports of a bind address list.

/// Splits one configuration line into words as HAProxy's parse_line() does:
/// blanks separate; `#` starts a comment; `\` escapes the next character
/// (`\t \r \n \xHH` too) except in single quotes; `'...'` is literal;
/// `"..."` expands `$NAME` and `${NAME}` from `env`. `Err` for an
/// unterminated quote.
pub fn split_words(
    line: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<String>, String> {
    let b = line.as_bytes();
    let mut out: Vec<String> = Vec::new();
    let mut cur: Vec<u8> = Vec::new();
    let mut started = false;
    let mut quote: u8 = 0;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if quote == b'\'' {
            if c == b'\'' {
                quote = 0;
            } else {
                cur.push(c);
            }
            i += 1;
            continue;
        }
        if c == b'\\' && i + 1 < b.len() {
            let n = b[i + 1];
            if n == b'x'
                && i + 3 < b.len()
                && b[i + 2].is_ascii_hexdigit()
                && b[i + 3].is_ascii_hexdigit()
            {
                let h = std::str::from_utf8(&b[i + 2..i + 4])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                cur.push(h.unwrap_or(b'?'));
                i += 4;
            } else {
                cur.push(match n {
                    b't' => b'\t',
                    b'r' => b'\r',
                    b'n' => b'\n',
                    other => other,
                });
                i += 2;
            }
            started = true;
            continue;
        }
        if quote == b'"' {
            if c == b'"' {
                quote = 0;
                i += 1;
            } else if c == b'$' {
                let (name, used) = var_name(&b[i + 1..]);
                if name.is_empty() {
                    cur.push(c);
                    i += 1;
                } else {
                    if let Some(v) = env(&name) {
                        cur.extend_from_slice(v.as_bytes());
                    }
                    i += 1 + used;
                }
            } else {
                cur.push(c);
                i += 1;
            }
            continue;
        }
        match c {
            b'#' => break,
            b' ' | b'\t' | b'\r' | b'\n' => {
                if started {
                    out.push(String::from_utf8_lossy(&cur).into_owned());
                    cur.clear();
                    started = false;
                }
            }
            b'"' | b'\'' => {
                quote = c;
                started = true;
            }
            _ => {
                cur.push(c);
                started = true;
            }
        }
        i += 1;
    }
    if quote != 0 {
        return Err(format!("unterminated {} quote", quote as char));
    }
    if started {
        out.push(String::from_utf8_lossy(&cur).into_owned());
    }
    Ok(out)
}

/// `NAME` or `{NAME}` after a `$`: the name and the bytes it took.
fn var_name(b: &[u8]) -> (String, usize) {
    if b.first() == Some(&b'{') {
        if let Some(end) = b.iter().position(|c| *c == b'}') {
            let inner = String::from_utf8_lossy(&b[1..end]).into_owned();
            // ${NAME[,]} and similar suffixes: the name is what precedes '['.
            let name = inner.split('[').next().unwrap_or("").to_string();
            return (name, end + 1);
        }
        return (String::new(), 0);
    }
    let n = b
        .iter()
        .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
        .count();
    (String::from_utf8_lossy(&b[..n]).into_owned(), n)
}

/// Port ranges and listener count of one bind address list
/// (`:80,127.0.0.1:8000-8002,unix@/run/x.sock`).
pub fn bind_ports(list: &str) -> Result<(Vec<(u16, u16)>, u64), String> {
    let mut ports = Vec::new();
    let mut listeners = 0u64;
    for addr in list.split(',').filter(|a| !a.is_empty()) {
        let (proto, rest) = match addr.split_once('@') {
            Some((p, r)) => (p, r),
            None => ("", addr),
        };
        if matches!(proto, "unix" | "abns" | "fd" | "sockpair" | "uxst" | "uxdg")
            || rest.starts_with('/')
            || rest.starts_with("./")
        {
            listeners += 1;
            continue;
        }
        let Some((_, p)) = rest.rsplit_once(':') else {
            return Err(format!("bind address {addr:?} has no port"));
        };
        let (a, b) = match p.split_once('-') {
            Some((a, b)) => (a, b),
            None => (p, p),
        };
        let (Ok(a), Ok(b)) = (a.parse::<u16>(), b.parse::<u16>()) else {
            return Err(format!("bind address {addr:?}: bad port {p:?}"));
        };
        if a == 0 || b < a {
            return Err(format!("bind address {addr:?}: bad port range {p:?}"));
        }
        listeners += (b - a) as u64 + 1;
        ports.push((a, b));
    }
    Ok((ports, listeners))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_follow_haproxy_quoting_comments_and_env() {
        let env = |k: &str| (k == "PORT").then(|| "8080".to_string());
        let w = |s: &str| split_words(s, &env).unwrap();
        assert_eq!(w("  maxconn 1000 # comment"), vec!["maxconn", "1000"]);
        assert_eq!(
            w(r#"bind "127.0.0.1:${PORT}" name 'a b' c\ d"#),
            vec!["bind", "127.0.0.1:8080", "name", "a b", "c d"]
        );
        assert_eq!(
            w(r#"x "$PORT" '$PORT' \# "#),
            vec!["x", "8080", "$PORT", "#"]
        );
        assert_eq!(w(r#"x "${NOPE}" "a#b""#), vec!["x", "", "a#b"]);
        assert_eq!(w(r"x \x41\t"), vec!["x", "A\t"]);
        assert_eq!(w("#only"), Vec::<String>::new());
        assert!(split_words(r#"maxconn "10"#, &env).is_err());
        assert!(split_words("maxconn '10", &env).is_err());
    }

    #[test]
    fn bind_lists_ports_ranges_and_sockets() {
        assert_eq!(bind_ports(":80").unwrap(), (vec![(80, 80)], 1));
        assert_eq!(
            bind_ports("*:80,127.0.0.1:8000-8002").unwrap(),
            (vec![(80, 80), (8000, 8002)], 4)
        );
        assert_eq!(bind_ports(":::443").unwrap(), (vec![(443, 443)], 1));
        assert_eq!(
            bind_ports("ipv6@[::1]:9000").unwrap(),
            (vec![(9000, 9000)], 1)
        );
        assert_eq!(
            bind_ports("unix@/run/a.sock,/run/b.sock,abns@x,fd@3").unwrap(),
            (vec![], 4)
        );
        assert!(bind_ports("127.0.0.1").is_err());
        assert!(bind_ports(":0").is_err());
        assert!(bind_ports(":9-8").is_err());
        assert!(bind_ports(":99999").is_err());
    }
}
