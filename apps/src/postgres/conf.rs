//! postgresql.conf as guc-file.l reads it: lines, quoting, `include`,
//! `include_if_exists`, `include_dir`; integers with their bases; and the
//! settings resolved from the files and the command line.

use super::cli::Args;
use crate::host::Host;
use headroom_core::CapSource;
use std::collections::BTreeMap;

/// CONF_FILE_MAX_DEPTH (guc-file.l).
pub const MAX_CONF_DEPTH: usize = 10;
/// Most configuration files read.
pub const MAX_FILES: usize = 256;
/// Most problem lines kept from the configuration.
const MAX_PROBLEMS: usize = 20;

/// One value of a setting and where it was set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub value: String,
    pub source: CapSource,
    /// `/path/postgresql.conf:64`, or `-c max_connections=10 in the
    /// postmaster's command line`.
    pub at: String,
    /// The file, for a file setting.
    pub file: Option<String>,
}

/// A configuration file set read with its includes: every `name = value`
/// in order, later ones winning.
#[derive(Debug, Default, Clone)]
pub struct Conf {
    pub settings: Vec<(String, Setting)>,
    pub files: Vec<String>,
    pub problems: Vec<String>,
    dropped: usize,
}

impl Conf {
    fn problem(&mut self, p: String) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(p);
        } else {
            self.dropped += 1;
        }
    }

    /// The last value of `name`.
    pub fn get(&self, name: &str) -> Option<&Setting> {
        self.settings
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s)
    }

    fn finish(&mut self) {
        if self.dropped > 0 {
            self.problems.push(format!(
                "... and {} more problems of the same kind",
                self.dropped
            ));
            self.dropped = 0;
        }
    }
}

/// Reads `path` into `conf` as guc-file.l does. `strict`: a missing file is
/// a problem (postgresql.conf, `include`); else it is skipped
/// (postgresql.auto.conf, `include_if_exists`).
pub fn read_conf(
    host: &Host,
    path: &str,
    strict: bool,
    depth: usize,
    chain: &mut Vec<String>,
    conf: &mut Conf,
) {
    if depth > MAX_CONF_DEPTH {
        conf.problem(format!(
            "{path}: not read, configuration files nested deeper than {MAX_CONF_DEPTH}"
        ));
        return;
    }
    if chain.iter().any(|f| f == path) {
        conf.problem(format!(
            "include loop: {} includes {path} again; not followed",
            chain.join(" -> ")
        ));
        return;
    }
    if conf.files.len() >= MAX_FILES {
        conf.problem(format!(
            "{path}: not read, more than {MAX_FILES} configuration files"
        ));
        return;
    }
    let text = match host.read(path) {
        Ok(t) => t,
        Err(e) => {
            if strict || host.path(path).exists() {
                conf.problem(format!("cannot read {e}"));
            }
            return;
        }
    };
    conf.files.push(path.to_string());
    chain.push(path.to_string());
    let dir = match path.rfind('/') {
        Some(i) => &path[..=i],
        None => "/",
    };
    for (n, line) in text.lines().enumerate() {
        let at = format!("{path}:{}", n + 1);
        let (name, value) = match parse_line(line) {
            Ok(Some(kv)) => kv,
            Ok(None) => continue,
            Err(e) => {
                conf.problem(format!("{at}: {e}"));
                continue;
            }
        };
        let full = |v: &str| {
            if v.starts_with('/') {
                v.to_string()
            } else {
                format!("{dir}{v}")
            }
        };
        match name.as_str() {
            "include" => read_conf(host, &full(&value), true, depth + 1, chain, conf),
            "include_if_exists" => read_conf(host, &full(&value), false, depth + 1, chain, conf),
            "include_dir" => {
                let d = full(&value);
                match std::fs::read_dir(host.path(&d)) {
                    Ok(rd) => {
                        // Files ending in .conf, not starting with a dot,
                        // in strcmp order (ParseConfigDirectory).
                        let mut names: Vec<String> = rd
                            .flatten()
                            .filter(|e| e.path().is_file())
                            .filter_map(|e| e.file_name().to_str().map(String::from))
                            .filter(|n| n.ends_with(".conf") && !n.starts_with('.'))
                            .collect();
                        names.sort();
                        for f in names {
                            let p = format!("{}/{f}", d.trim_end_matches('/'));
                            read_conf(host, &p, true, depth + 1, chain, conf);
                        }
                    }
                    Err(e) => conf.problem(format!("{at}: include_dir {d}: {e}")),
                }
            }
            _ => conf.settings.push((
                name,
                Setting {
                    value,
                    source: CapSource::File,
                    at: at.clone(),
                    file: Some(path.to_string()),
                },
            )),
        }
    }
    chain.pop();
}

/// One line of postgresql.conf: `name [=] value [# comment]`; `None` for a
/// blank or comment line.
pub fn parse_line(line: &str) -> Result<Option<(String, String)>, String> {
    let b = line.as_bytes();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && matches!(b[*i], b' ' | b'\t' | b'\r' | b'\x0c') {
            *i += 1;
        }
    };
    skip_ws(&mut i);
    if i >= b.len() || b[i] == b'#' {
        return Ok(None);
    }
    let is_letter = |c: u8| c.is_ascii_alphabetic() || c == b'_' || c >= 0x80;
    let start = i;
    if !is_letter(b[i]) {
        return Err(format!("syntax error near {:?}", token_at(line, i)));
    }
    while i < b.len() && (is_letter(b[i]) || b[i].is_ascii_digit() || b[i] == b'$' || b[i] == b'.')
    {
        i += 1;
    }
    let name = line[start..i].to_ascii_lowercase();
    skip_ws(&mut i);
    if i < b.len() && b[i] == b'=' {
        i += 1;
        skip_ws(&mut i);
    }
    if i >= b.len() || b[i] == b'#' {
        return Err(format!("syntax error: {name} without a value"));
    }
    let value = if b[i] == b'\'' {
        let (v, end) =
            scan_quoted(b, i).ok_or_else(|| format!("unterminated quoted string for {name}"))?;
        i = end;
        v
    } else {
        let s = i;
        while i < b.len() && !matches!(b[i], b' ' | b'\t' | b'\r' | b'#') {
            i += 1;
        }
        line[s..i].to_string()
    };
    skip_ws(&mut i);
    if i < b.len() && b[i] != b'#' {
        return Err(format!("syntax error near {:?}", token_at(line, i)));
    }
    Ok(Some((name, value)))
}

fn token_at(line: &str, i: usize) -> String {
    line.get(i..).unwrap_or("").chars().take(20).collect()
}

/// A single-quoted string at `b[i]`: `''` and backslash escapes (`\n`,
/// `\t`, octal, any other character itself), as GUC_scanstr. Returns the
/// value and the index after the closing quote.
fn scan_quoted(b: &[u8], i: usize) -> Option<(String, usize)> {
    let mut out = Vec::new();
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'\'' if b.get(j + 1) == Some(&b'\'') => {
                out.push(b'\'');
                j += 2;
            }
            b'\'' => return Some((String::from_utf8_lossy(&out).into_owned(), j + 1)),
            b'\\' if j + 1 < b.len() => {
                let c = b[j + 1];
                j += 2;
                match c {
                    b'b' => out.push(8),
                    b'f' => out.push(12),
                    b'n' => out.push(b'\n'),
                    b'r' => out.push(b'\r'),
                    b't' => out.push(b'\t'),
                    b'0'..=b'7' => {
                        let mut v = u32::from(c - b'0');
                        let mut k = 0;
                        while k < 2 && j < b.len() && (b'0'..=b'7').contains(&b[j]) {
                            v = v * 8 + u32::from(b[j] - b'0');
                            j += 1;
                            k += 1;
                        }
                        out.push((v & 0xff) as u8);
                    }
                    c => out.push(c),
                }
            }
            c => {
                out.push(c);
                j += 1;
            }
        }
    }
    None
}

/// An integer GUC as parse_int reads it: strtol with base 0 (`0x` hex,
/// leading-zero octal), else a real number rounded.
pub fn parse_int(v: &str) -> Option<i64> {
    let t = v.trim();
    let (neg, body) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let n = if let Some(h) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        i64::from_str_radix(h, 16).ok()
    } else if body.len() > 1
        && body.starts_with('0')
        && body.bytes().all(|c| (b'0'..=b'7').contains(&c))
    {
        i64::from_str_radix(&body[1..], 8).ok()
    } else {
        body.parse::<i64>().ok()
    };
    let n = match n {
        Some(n) => n,
        None => {
            let f: f64 = body.parse().ok()?;
            if !f.is_finite() || f.abs() > 9e18 {
                return None;
            }
            f.round() as i64
        }
    };
    Some(if neg { -n } else { n })
}

/// Everything the configuration decides, command line applied last.
#[derive(Debug, Default, Clone)]
pub struct Resolved {
    pub settings: BTreeMap<String, Setting>,
    pub config_file: String,
    pub data_dir: String,
    pub files: Vec<String>,
    pub problems: Vec<String>,
    pub notes: Vec<String>,
}

/// Resolves settings: postgresql.conf (or `config_file`), then
/// postgresql.auto.conf in the data directory, then the command line.
pub fn resolve(host: &Host, args: &Args, data_dir: &str) -> Resolved {
    let mut r = Resolved::default();
    let cmd: Vec<(String, Setting)> = args
        .settings
        .iter()
        .map(|(n, v, w)| {
            (
                n.clone(),
                Setting {
                    value: v.clone(),
                    source: CapSource::CommandLine,
                    at: format!("{w} in the postmaster's command line"),
                    file: None,
                },
            )
        })
        .collect();
    let cmd_get = |n: &str| {
        cmd.iter()
            .rev()
            .find(|(k, _)| k == n)
            .map(|(_, s)| s.value.clone())
    };
    let abs = |p: String| {
        if p.starts_with('/') {
            p
        } else {
            format!("{}/{p}", data_dir.trim_end_matches('/'))
        }
    };
    r.config_file = cmd_get("config_file")
        .map(abs)
        .unwrap_or_else(|| format!("{}/postgresql.conf", data_dir.trim_end_matches('/')));
    let mut conf = Conf::default();
    read_conf(host, &r.config_file, true, 0, &mut Vec::new(), &mut conf);
    r.data_dir = cmd_get("data_directory")
        .or_else(|| conf.get("data_directory").map(|s| s.value.clone()))
        .map(abs)
        .unwrap_or_else(|| data_dir.to_string());
    let auto = format!("{}/postgresql.auto.conf", r.data_dir.trim_end_matches('/'));
    read_conf(host, &auto, false, 0, &mut Vec::new(), &mut conf);
    conf.finish();
    for (n, s) in conf.settings.into_iter().chain(cmd) {
        r.settings.insert(n, s);
    }
    r.files = conf.files;
    r.problems = conf.problems;
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::{int_setting, parse_args};
    use crate::testkit::{fixtures, strings as s, Root};
    use headroom_core::AppInfo;

    #[test]
    fn conf_lines_quoting_equals_optional_and_comments() {
        assert_eq!(parse_line("  # just a comment").unwrap(), None);
        assert_eq!(parse_line("").unwrap(), None);
        assert_eq!(
            parse_line("Max_Connections = 50 # x").unwrap(),
            Some(("max_connections".into(), "50".into()))
        );
        assert_eq!(
            parse_line("port 5433").unwrap(),
            Some(("port".into(), "5433".into()))
        );
        assert_eq!(
            parse_line("shared_buffers='128MB'").unwrap(),
            Some(("shared_buffers".into(), "128MB".into()))
        );
        assert_eq!(
            parse_line(r"cluster_name = 'it''s \'x\' #not a comment\101'").unwrap(),
            Some(("cluster_name".into(), "it's 'x' #not a commentA".into()))
        );
        assert_eq!(
            parse_line("ext.setting = on").unwrap(),
            Some(("ext.setting".into(), "on".into()))
        );
        assert!(parse_line("max_connections = 'unterminated").is_err());
        assert!(parse_line("max_connections = 5 6").is_err());
        assert!(parse_line("= 5").is_err());
        assert!(parse_line("max_connections =").is_err());
    }

    #[test]
    fn integers_as_postgres_reads_them() {
        assert_eq!(parse_int("100"), Some(100));
        assert_eq!(parse_int(" 0x10 "), Some(16));
        assert_eq!(parse_int("010"), Some(8));
        assert_eq!(parse_int("99.6"), Some(100));
        assert_eq!(parse_int("1e2"), Some(100));
        assert_eq!(parse_int("-1"), Some(-1));
        assert_eq!(parse_int("lots"), None);
    }

    #[test]
    fn fixture_include_dir_order_auto_conf_and_command_line_precedence() {
        let host = Host::new(&fixtures("postgres"));
        let r = resolve(&host, &Args::default(), "/data");
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!(
            r.files,
            s(&[
                "/data/postgresql.conf",
                "/data/conf.d/01-first.conf",
                "/data/conf.d/10-second.conf",
                "/data/conf.d/9-last.conf",
                "/data/sub/extra.conf",
                "/data/postgresql.auto.conf",
            ])
        );
        // auto.conf sets 200 after postgresql.conf's 50 (and the included 150).
        let m = &r.settings["max_connections"];
        assert_eq!(
            (m.value.as_str(), m.at.as_str()),
            ("200", "/data/postgresql.auto.conf:3")
        );
        // include_dir files in strcmp order: 9-last.conf comes after 10-second.conf.
        assert_eq!(r.settings["superuser_reserved_connections"].value, "9");
        assert_eq!(r.settings["cluster_name"].value, "main's");
        let args = parse_args(&s(&[
            "postgres",
            "-D",
            "/data",
            "-c",
            "max_connections=300",
        ]));
        let r = resolve(&host, &args, "/data");
        let m = &r.settings["max_connections"];
        assert_eq!(
            (m.value.as_str(), m.source),
            ("300", CapSource::CommandLine)
        );
        assert_eq!(
            m.at,
            "-c max_connections=300 in the postmaster's command line"
        );
    }

    #[test]
    fn config_file_elsewhere_and_data_directory_setting_move_auto_conf() {
        let host = Host::new(&fixtures("postgres"));
        let args = parse_args(&s(&[
            "postgres",
            "-D",
            "/etc/pg",
            "-c",
            "config_file=/etc/pg/debian.conf",
        ]));
        let r = resolve(&host, &args, "/etc/pg");
        assert_eq!(r.data_dir, "/data");
        assert_eq!(
            r.files,
            s(&["/etc/pg/debian.conf", "/data/postgresql.auto.conf"])
        );
        assert_eq!(r.settings["max_connections"].value, "200");
    }

    #[test]
    fn hostile_configurations_give_problems_not_panics() {
        let r = Root::new("hostile");
        let mut garbage = Vec::new();
        let mut x: u32 = 7;
        for _ in 0..200_000 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            garbage.push((x >> 16) as u8);
        }
        r.file("/g/postgresql.conf", &garbage);
        r.file(
            "/h/postgresql.conf",
            vec![b'#'; crate::host::MAX_FILE_BYTES as usize + 1],
        );
        r.file(
            "/l/postgresql.conf",
            b"include 'postgresql.conf'\nmax_connections = 5\n",
        );
        r.file("/d/postgresql.conf", b"include 'a/postgresql.conf'\n");
        // A chain of distinct files deeper than 10.
        let mut p = String::from("/d");
        for _ in 0..15 {
            p.push_str("/a");
            r.file(
                &format!("{p}/postgresql.conf"),
                b"include 'a/postgresql.conf'\n",
            );
        }
        r.file(
            "/q/postgresql.conf",
            b"max_connections = '5\nmax_connections = 6\n",
        );
        r.file("/n/postgresql.conf", b"max_connections = many\n");
        for d in ["/g", "/h", "/l", "/d", "/q", "/missing"] {
            let res = resolve(&r.host(), &Args::default(), d);
            assert!(!res.problems.is_empty(), "{d}");
            assert!(
                res.problems.len() <= MAX_PROBLEMS + 1,
                "{d}: {}",
                res.problems.len()
            );
        }
        let res = resolve(&r.host(), &Args::default(), "/l");
        assert_eq!(res.settings["max_connections"].value, "5");
        let res = resolve(&r.host(), &Args::default(), "/q");
        assert_eq!(res.settings["max_connections"].value, "6");
        assert!(resolve(&r.host(), &Args::default(), "/d").problems[0]
            .contains("nested deeper than 10"));
        let mut info = AppInfo::default();
        let (n, _) = int_setting(
            &resolve(&r.host(), &Args::default(), "/n"),
            "max_connections",
            100,
            &mut info,
        );
        assert_eq!(n, 100);
        assert_eq!(info.problems.len(), 1);
    }
}
