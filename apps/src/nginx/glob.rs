//! `include` patterns: glob(3) over the host's root, fnmatch of one path
//! component.

use crate::host::Host;

/// Expands an absolute glob pattern (`*`, `?`, `[...]` in any component)
/// under the host's root, sorted as glob(3) sorts; names starting with a dot
/// match only a pattern starting with one. At most `max` paths.
pub fn glob(host: &Host, pattern: &str, max: usize) -> Result<Vec<String>, String> {
    let mut found = vec![String::new()];
    let parts: Vec<&str> = pattern.split('/').filter(|p| !p.is_empty()).collect();
    for (n, part) in parts.iter().enumerate() {
        let last = n + 1 == parts.len();
        let mut next = Vec::new();
        for base in &found {
            if !part.contains(['*', '?', '[']) {
                next.push(format!("{base}/{part}"));
                continue;
            }
            let dir = if base.is_empty() { "/" } else { base.as_str() };
            let Ok(rd) = std::fs::read_dir(host.path(dir)) else {
                continue;
            };
            let mut names: Vec<String> = rd
                .filter_map(|e| {
                    let e = e.ok()?;
                    let name = e.file_name().to_str()?.to_string();
                    if !last && !e.path().is_dir() {
                        return None;
                    }
                    Some(name)
                })
                .filter(|name| {
                    (!name.starts_with('.') || part.starts_with('.'))
                        && fnmatch(part.as_bytes(), name.as_bytes())
                })
                .collect();
            names.sort();
            for name in names {
                next.push(format!("{base}/{name}"));
            }
            if next.len() > max {
                return Err(format!("matches more than {max} files"));
            }
        }
        found = next;
    }
    Ok(found
        .into_iter()
        .filter(|p| !p.is_empty() && host.path(p).exists())
        .collect())
}

/// Shell-style match of one path component: `*`, `?`, `[a-z]`, `[!x]`.
pub fn fnmatch(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() {
            match p[pi] {
                b'*' => {
                    star = Some((pi, si));
                    pi += 1;
                    continue;
                }
                b'?' => {
                    pi += 1;
                    si += 1;
                    continue;
                }
                b'[' => {
                    if let Some((ok, len)) = class(&p[pi..], s[si]) {
                        if ok {
                            pi += len;
                            si += 1;
                            continue;
                        }
                    } else if s[si] == b'[' {
                        pi += 1;
                        si += 1;
                        continue;
                    }
                }
                c => {
                    if c == s[si] {
                        pi += 1;
                        si += 1;
                        continue;
                    }
                }
            }
        }
        match star {
            Some((sp, ss)) => {
                pi = sp + 1;
                si = ss + 1;
                star = Some((sp, ss + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|c| *c == b'*')
}

/// A `[...]` class at the start of `p`: (matches, its length), or None when
/// it is not closed (then `[` is literal).
fn class(p: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(p.get(1), Some(b'!' | b'^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while i < p.len() {
        if p[i] == b']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if i + 2 < p.len() && p[i + 1] == b'-' && p[i + 2] != b']' {
            if p[i] <= c && c <= p[i + 2] {
                matched = true;
            }
            i += 3;
        } else {
            if p[i] == c {
                matched = true;
            }
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnmatch_classes_and_stars() {
        assert!(fnmatch(b"*.conf", b"a.conf"));
        assert!(!fnmatch(b"*.conf", b"a.conf.bak"));
        assert!(fnmatch(b"[a-c]?.c*", b"bx.conf"));
        assert!(!fnmatch(b"[!a-c]*", b"bx"));
        assert!(fnmatch(b"[", b"["));
        assert!(fnmatch(b"**x", b"x"));
    }
}
