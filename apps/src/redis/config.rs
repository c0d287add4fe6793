//! redis.conf: `maxclients` through `include`s, and what the command line
//! names (the file, `--maxclients`).

use crate::host::Host;

/// Deepest `include` chain followed.
const MAX_INCLUDE_DEPTH: usize = 8;
/// Most files read for one configuration (includes counted).
const MAX_FILES: usize = 64;

/// `maxclients` as a configuration file (and its includes) sets it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileCap {
    /// The last `maxclients` and where: `path:line`.
    pub maxclients: Option<(u64, String)>,
    /// Lines that could not be read, one each.
    pub problems: Vec<String>,
    /// Files read.
    pub files: Vec<String>,
}

/// Splits one redis.conf line into arguments as Redis does (sdssplitargs):
/// blanks separate, `"..."` takes `\n \r \t \b \a \\ \" \xHH`, `'...'` takes
/// `\'`; a closing quote must be followed by a blank. `Err` for unbalanced
/// quotes (Redis refuses to start on such a line).
pub fn split_args(line: &str) -> Result<Vec<String>, String> {
    let b = line.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= b.len() {
            return Ok(out);
        }
        let mut cur: Vec<u8> = Vec::new();
        let (mut inq, mut insq) = (false, false);
        loop {
            if inq {
                if i >= b.len() {
                    return Err("unbalanced quotes".into());
                }
                if b[i] == b'\\'
                    && i + 3 < b.len()
                    && b[i + 1] == b'x'
                    && is_hex(b[i + 2])
                    && is_hex(b[i + 3])
                {
                    cur.push(hex(b[i + 2]) * 16 + hex(b[i + 3]));
                    i += 3;
                } else if b[i] == b'\\' && i + 1 < b.len() {
                    i += 1;
                    cur.push(match b[i] {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 8,
                        b'a' => 7,
                        c => c,
                    });
                } else if b[i] == b'"' {
                    if i + 1 < b.len() && !b[i + 1].is_ascii_whitespace() {
                        return Err("closing quote must be followed by a space".into());
                    }
                    i += 1;
                    break;
                } else {
                    cur.push(b[i]);
                }
            } else if insq {
                if i >= b.len() {
                    return Err("unbalanced quotes".into());
                }
                if b[i] == b'\\' && i + 1 < b.len() && b[i + 1] == b'\'' {
                    i += 1;
                    cur.push(b'\'');
                } else if b[i] == b'\'' {
                    if i + 1 < b.len() && !b[i + 1].is_ascii_whitespace() {
                        return Err("closing quote must be followed by a space".into());
                    }
                    i += 1;
                    break;
                } else {
                    cur.push(b[i]);
                }
            } else {
                if i >= b.len() || b[i].is_ascii_whitespace() {
                    break;
                }
                match b[i] {
                    b'"' => inq = true,
                    b'\'' => insq = true,
                    c => cur.push(c),
                }
            }
            i += 1;
        }
        out.push(String::from_utf8_lossy(&cur).into_owned());
    }
}

fn is_hex(c: u8) -> bool {
    c.is_ascii_hexdigit()
}

fn hex(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => c - b'A' + 10,
    }
}

/// Reads `maxclients` from `path` and the files it includes, in order (the
/// last one wins, as Redis applies them).
pub fn read_config(host: &Host, path: &str) -> FileCap {
    let mut fc = FileCap::default();
    load(host, path, 0, &mut fc);
    fc
}

fn load(host: &Host, path: &str, depth: usize, fc: &mut FileCap) {
    if depth > MAX_INCLUDE_DEPTH {
        fc.problems.push(format!(
            "{path}: includes nested deeper than {MAX_INCLUDE_DEPTH}, not read"
        ));
        return;
    }
    if fc.files.len() >= MAX_FILES {
        fc.problems.push(format!(
            "{path}: more than {MAX_FILES} files included, not read"
        ));
        return;
    }
    let text = match host.read(path) {
        Ok(t) => t,
        Err(e) => {
            fc.problems.push(format!("Redis configuration {e}"));
            return;
        }
    };
    fc.files.push(path.to_string());
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let args = match split_args(line) {
            Ok(a) => a,
            Err(e) => {
                fc.problems
                    .push(format!("{path}:{}: {e} (Redis refuses such a line)", n + 1));
                continue;
            }
        };
        let Some(key) = args.first() else { continue };
        if key.eq_ignore_ascii_case("maxclients") {
            match args.get(1).map(|v| v.parse::<u64>()) {
                Some(Ok(v)) if v >= 1 && args.len() == 2 => {
                    fc.maxclients = Some((v, format!("{path}:{}", n + 1)));
                }
                _ => fc.problems.push(format!(
                    "{path}:{}: maxclients {:?} is not a number of at least 1",
                    n + 1,
                    args[1..].join(" ")
                )),
            }
        } else if key.eq_ignore_ascii_case("include") {
            for inc in &args[1..] {
                if inc.contains(['*', '?', '[']) {
                    fc.problems.push(format!(
                        "{path}:{}: include {inc}: patterns are not expanded, a maxclients there is not seen",
                        n + 1
                    ));
                } else if inc.starts_with('/') {
                    load(host, inc, depth + 1, fc);
                } else {
                    fc.problems.push(format!(
                        "{path}:{}: include {inc}: a relative path depends on Redis's working directory, not read",
                        n + 1
                    ));
                }
            }
        }
    }
}

/// The configuration file the command line names: the first argument after
/// the program that is a path (Redis rewrites its process title, so the
/// file is often gone from it; `proc-title-template` with `{config-file}`
/// keeps it). `-` (stdin) is not a file.
pub fn config_from_cmdline(cmdline: &[String]) -> Option<String> {
    // A rewritten title is one argument with blanks: split every argument.
    cmdline
        .iter()
        .flat_map(|a| a.split_whitespace())
        .skip(1)
        .take_while(|a| !a.starts_with("--"))
        .find(|a| a.ends_with(".conf") || (a.starts_with('/') && !a.ends_with(".sock")))
        .map(String::from)
}

/// `--maxclients N` on the command line (applied after the file).
pub fn maxclients_from_cmdline(cmdline: &[String]) -> Option<u64> {
    let words: Vec<&str> = cmdline
        .iter()
        .flat_map(|a| a.split_whitespace())
        .skip(1)
        .collect();
    words
        .windows(2)
        .find(|w| w[0].eq_ignore_ascii_case("--maxclients"))
        .and_then(|w| w[1].parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::tests::root_with;

    #[test]
    fn split_args_follows_redis_quoting() {
        assert_eq!(
            split_args("maxclients  500").unwrap(),
            vec!["maxclients", "500"]
        );
        assert_eq!(
            split_args(r#"a "b c\x41\n" 'd\'e'"#).unwrap(),
            vec!["a", "b cA\n", "d'e"]
        );
        assert!(split_args(r#"maxclients "500"#).is_err());
        assert!(split_args("maxclients '500").is_err());
        assert!(split_args(r#"a "b"c"#).is_err());
        assert_eq!(split_args("   ").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn config_file_last_maxclients_wins_through_includes() {
        let root = root_with(&[
            (
                "/etc/redis/redis.conf",
                "# maxclients 1\nMaxClients 200\ninclude /etc/redis/extra.conf\nbind 127.0.0.1 \"unbalanced\n",
            ),
            ("/etc/redis/extra.conf", "maxclients 300\ninclude relative.conf\n"),
        ]);
        let fc = read_config(&root.host(), "/etc/redis/redis.conf");
        assert_eq!(fc.maxclients, Some((300, "/etc/redis/extra.conf:1".into())));
        assert_eq!(fc.files.len(), 2);
        assert_eq!(fc.problems.len(), 2, "{:?}", fc.problems);
        assert!(fc.problems[0].contains("relative"));
        assert!(fc.problems[1].contains("/etc/redis/redis.conf:4: unbalanced quotes"));
    }

    #[test]
    fn config_include_loop_and_bad_values_end_in_problems() {
        let root = root_with(&[(
            "/r.conf",
            "maxclients 0\nmaxclients -5\nmaxclients 12 13\nmaxclients abc\ninclude /r.conf\n",
        )]);
        let fc = read_config(&root.host(), "/r.conf");
        assert_eq!(fc.maxclients, None);
        assert!(
            fc.problems.iter().any(|p| p.contains("deeper than")),
            "{:?}",
            fc.problems
        );
        assert!(
            fc.problems
                .iter()
                .filter(|p| p.contains("not a number"))
                .count()
                >= 4
        );
        let missing = read_config(&root.host(), "/nope.conf");
        assert_eq!(missing.problems.len(), 1);
        assert!(missing.problems[0].starts_with("Redis configuration /nope.conf:"));
    }

    #[test]
    fn binary_config_file_is_read_without_panicking() {
        let mut junk: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
        junk.extend(b"\nmaxclients 42\n\"");
        let root = root_with(&[]);
        root.file("/j.conf", &junk);
        let fc = read_config(&root.host(), "/j.conf");
        assert_eq!(fc.maxclients.map(|m| m.0), Some(42));
    }

    #[test]
    fn cmdline_names_config_file_and_maxclients() {
        let c = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        assert_eq!(
            config_from_cmdline(&c("redis-server /etc/redis/r.conf --port 1")),
            Some("/etc/redis/r.conf".into())
        );
        assert_eq!(
            config_from_cmdline(&c("/usr/bin/redis-server 127.0.0.1:6379")),
            None
        );
        assert_eq!(
            config_from_cmdline(&c("redis-server --port 1 /x.conf")),
            None
        );
        // proc-title-template "{title} {listen-addr} {server-mode} {config-file}":
        // the kernel shows one argument.
        assert_eq!(
            config_from_cmdline(&["redis-server 127.0.0.1:48399  /tmp/hx/r.conf".to_string()]),
            Some("/tmp/hx/r.conf".into())
        );
        assert_eq!(
            config_from_cmdline(&["/usr/bin/redis-server /run/redis/redis.sock".to_string()]),
            None
        );
        assert_eq!(
            maxclients_from_cmdline(&c("redis-server r.conf --maxclients 77")),
            Some(77)
        );
        assert_eq!(
            maxclients_from_cmdline(&c("redis-server --maxclients x")),
            None
        );
    }
}
