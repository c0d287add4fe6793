//! sysctl.d as the next boot reads it: the files, in the order they are
//! read, and the assignment that wins for each key. Three readers, each
//! after its source:
//!
//! - **systemd-sysctl** (systemd src/sysctl/sysctl.c, conf-files.c;
//!   sysctl.d(5)): `*.conf` in /etc, /run, /usr/local/lib, /usr/lib (and
//!   /lib) `sysctl.d`; a name in a higher directory hides the same name lower
//!   down; all files sorted by name whatever their directory; per key the
//!   last assignment wins (an equal value keeps its earlier place). `-key = v`
//!   only ignores a failure to write; `-key` without `=` excludes the key from
//!   globs and drops an earlier assignment of it. A glob key
//!   (`net.ipv4.conf.*.rp_filter`) sets every matching key that has no
//!   explicit entry of its own. /etc/sysctl.conf is read only through
//!   /etc/sysctl.d/99-sysctl.conf where that link exists (Debian's systemd
//!   package ships it).
//! - **sysctl --system** (procps-ng sysctl.c PreloadSystem, write_setting_list):
//!   the same directories and order, then /etc/sysctl.conf again at the end
//!   when it is a regular file; every line is written in order, so the last
//!   explicit assignment wins, and `-key` only keeps globs off the key. This is
//!   the boot on hosts without systemd (/etc/init.d/procps) and what
//!   `sysctl --system` run by hand does.
//! - **tuned reapply_sysctl** (tuned plugins/plugin_sysctl.py
//!   _apply_system_sysctl): /run/sysctl.d then /etc/sysctl.d (a name in /run
//!   hides /etc), sorted, then /etc/sysctl.conf; literal keys only.
//!
//! Keys are compared in one canonical dotted form (sysctl_normalize: a key
//! whose first separator is `/` has its `/` and `.` swapped).

use super::{list, load, Loaded};
use crate::Root;
use serde::Serialize;

/// systemd-sysctl's directories, highest precedence first (CONF_PATHS("sysctl.d")).
pub const DIRS: &[&str] = &[
    "/etc/sysctl.d",
    "/run/sysctl.d",
    "/usr/local/lib/sysctl.d",
    "/usr/lib/sysctl.d",
    "/lib/sysctl.d",
];
pub const SYSCTL_CONF: &str = "/etc/sysctl.conf";
const TUNED_DIRS: &[&str] = &["/run/sysctl.d", "/etc/sysctl.d"];

/// Which program reads the files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reader {
    SystemdSysctl,
    SysctlSystem,
    TunedReapply,
}

impl Reader {
    pub fn label(self) -> &'static str {
        match self {
            Reader::SystemdSysctl => "systemd-sysctl",
            Reader::SysctlSystem => "sysctl --system",
            Reader::TunedReapply => "tuned reapply_sysctl",
        }
    }

    fn dirs(self) -> &'static [&'static str] {
        match self {
            Reader::TunedReapply => TUNED_DIRS,
            _ => DIRS,
        }
    }
}

/// One file in a reader's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfFile {
    /// The listed path, e.g. `/etc/sysctl.d/99-sysctl.conf`.
    pub path: String,
    /// A symlink's target, e.g. `/etc/sysctl.conf`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Same-named files lower down that this one hides.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shadows: Vec<String>,
}

impl ConfFile {
    /// The file an operator edits: a symlink's target, else the file.
    pub fn edit(&self) -> &str {
        match self.target.as_deref() {
            Some(t) if t != "/dev/null" => t,
            _ => &self.path,
        }
    }

    /// `/etc/sysctl.d/99-sysctl.conf -> /etc/sysctl.conf`, or the path.
    pub fn shown(&self) -> String {
        match &self.target {
            Some(t) => format!("{} -> {t}", self.path),
            None => self.path.clone(),
        }
    }
}

/// One assignment (or exclusion) as read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub file: ConfFile,
    pub line: usize,
    /// Canonical dotted key or glob, without the `-` prefix.
    pub key: String,
    /// `None`: a `-key` exclusion.
    pub value: Option<String>,
    pub ignore_failure: bool,
}

impl Entry {
    pub fn is_glob(&self) -> bool {
        is_glob(&self.key)
    }

    /// `FILE:LINE`, with a symlink's target: `/etc/sysctl.d/99-sysctl.conf -> /etc/sysctl.conf:3`.
    pub fn at(&self) -> String {
        format!("{}:{}", self.file.shown(), self.line)
    }
}

/// What a reader leaves a key at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Set by this entry (possibly a glob).
    Set(Entry),
    /// Kept off by this `-key` entry: the kernel's default stays.
    Excluded(Entry),
    /// No file names the key.
    Unset,
}

impl Outcome {
    pub fn value(&self) -> Option<&str> {
        match self {
            Outcome::Set(e) => e.value.as_deref(),
            _ => None,
        }
    }

    pub fn entry(&self) -> Option<&Entry> {
        match self {
            Outcome::Set(e) | Outcome::Excluded(e) => Some(e),
            Outcome::Unset => None,
        }
    }
}

/// Every sysctl.d directory and /etc/sysctl.conf, as read once.
#[derive(Debug, Clone, Default)]
pub struct SysctlD {
    /// (directory, name, contents) for every `*.conf` found.
    listing: Vec<(String, String, Loaded)>,
    conf: Loaded,
}

impl SysctlD {
    pub fn read(root: &Root) -> SysctlD {
        let mut listing = Vec::new();
        for dir in DIRS {
            for name in list(root, dir, ".conf") {
                let loaded = load(root, &format!("{dir}/{name}"));
                if !loaded.dir {
                    listing.push((dir.to_string(), name, loaded));
                }
            }
        }
        SysctlD {
            listing,
            conf: load(root, SYSCTL_CONF),
        }
    }

    /// This tree with `/etc/sysctl.d/NAME` holding `content` (what `apply`
    /// would write), replacing whatever was there.
    pub fn with_file(&self, name: &str, content: &str) -> SysctlD {
        let mut t = self.clone();
        t.listing
            .retain(|(d, n, _)| !(d == "/etc/sysctl.d" && n == name));
        t.listing.push((
            "/etc/sysctl.d".into(),
            name.into(),
            Loaded {
                text: content.into(),
                regular: true,
                ..Default::default()
            },
        ));
        t
    }

    /// The files a reader reads, in its order, with their text.
    fn ordered(&self, reader: Reader) -> Vec<(ConfFile, &str)> {
        let mut by_name: Vec<(String, ConfFile, &str)> = Vec::new();
        for dir in reader.dirs() {
            for (d, name, l) in self.listing.iter().filter(|(d, _, _)| d == dir) {
                let path = format!("{d}/{name}");
                if let Some((_, f, _)) = by_name.iter_mut().find(|(n, _, _)| n == name) {
                    f.shadows.push(path);
                    continue;
                }
                let file = ConfFile {
                    path,
                    target: l.target.clone(),
                    shadows: vec![],
                };
                by_name.push((name.clone(), file, &l.text));
            }
        }
        // Byte order, as strcmp in conf-files.c, procps and Python's sorted().
        by_name.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let mut out: Vec<(ConfFile, &str)> = by_name.into_iter().map(|(_, f, t)| (f, t)).collect();
        if reader != Reader::SystemdSysctl && self.conf.regular {
            let file = ConfFile {
                path: SYSCTL_CONF.into(),
                target: self.conf.target.clone(),
                shadows: vec![],
            };
            out.push((file, &self.conf.text));
        }
        out
    }

    /// The files a reader reads, in order.
    pub fn files(&self, reader: Reader) -> Vec<ConfFile> {
        self.ordered(reader).into_iter().map(|(f, _)| f).collect()
    }

    /// Every assignment and exclusion, in reading order.
    pub fn entries(&self, reader: Reader) -> Vec<Entry> {
        let mut out = Vec::new();
        for (file, text) in self.ordered(reader) {
            for (i, raw) in text.lines().enumerate() {
                if let Some((key, value, ignore_failure)) = parse_line(raw, reader) {
                    out.push(Entry {
                        file: file.clone(),
                        line: i + 1,
                        key,
                        value,
                        ignore_failure,
                    });
                }
            }
        }
        out
    }

    /// What `reader` leaves `key` at.
    pub fn outcome(&self, reader: Reader, key: &str) -> Outcome {
        let key = normalize(key);
        let entries = self.entries(reader);
        match reader {
            Reader::SystemdSysctl => systemd_outcome(entries, &key),
            _ => procps_outcome(&entries, &key),
        }
    }

    /// Every entry that assigns `key` (by name or glob), in reading order.
    pub fn assignments(&self, reader: Reader, key: &str) -> Vec<Entry> {
        let key = normalize(key);
        self.entries(reader)
            .into_iter()
            .filter(|e| {
                e.value.is_some() && (e.key == key || (e.is_glob() && glob_match(&e.key, &key)))
            })
            .collect()
    }
}

/// One line: (canonical key, value or `None` for an exclusion, ignore-failure).
fn parse_line(raw: &str, reader: Reader) -> Option<(String, Option<String>, bool)> {
    let line = raw.trim();
    if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
        return None;
    }
    let literal = reader == Reader::TunedReapply;
    match line.split_once('=') {
        Some((k, v)) => {
            let (k, ignore) = match k.strip_prefix('-') {
                Some(rest) if !literal => (rest, true),
                _ => (k, false),
            };
            let k = k.trim();
            (!k.is_empty()).then(|| (normalize(k), Some(v.trim().to_string()), ignore))
        }
        None if !literal => {
            let k = line.strip_prefix('-')?.trim();
            (!k.is_empty()).then(|| (normalize(k), None, false))
        }
        None => None,
    }
}

/// sysctl_normalize, kept in dotted form: `net/ipv4/conf/eth0.100/x` ->
/// `net.ipv4.conf.eth0/100.x`; a leading `/` is dropped.
pub fn normalize(key: &str) -> String {
    let k = key.trim().trim_start_matches('/');
    match k.find(['/', '.']) {
        Some(i) if k.as_bytes()[i] == b'/' => k
            .chars()
            .map(|c| match c {
                '/' => '.',
                '.' => '/',
                c => c,
            })
            .collect(),
        _ => k.to_string(),
    }
}

pub fn is_glob(key: &str) -> bool {
    key.contains(['*', '?', '['])
}

/// glob(7) on a canonical key: `*`, `?` and `[...]` never match the `.`
/// between components (glob(3) never matches `/` in a path).
pub fn glob_match(pattern: &str, key: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let k: Vec<char> = key.chars().collect();
    glob_at(&p, &k)
}

fn glob_at(p: &[char], k: &[char]) -> bool {
    match p.first() {
        None => k.is_empty(),
        Some('*') => (0..=k.len())
            .take_while(|&i| i == 0 || k[i - 1] != '.')
            .any(|i| glob_at(&p[1..], &k[i..])),
        Some('?') => k.first().is_some_and(|&c| c != '.') && glob_at(&p[1..], &k[1..]),
        Some('[') => match (class_end(p), k.first()) {
            (Some(end), Some(&c)) if c != '.' => {
                class_matches(&p[1..end], c) && glob_at(&p[end + 1..], &k[1..])
            }
            (Some(_), _) => false,
            (None, _) => k.first() == Some(&'[') && glob_at(&p[1..], &k[1..]),
        },
        Some(&c) => k.first() == Some(&c) && glob_at(&p[1..], &k[1..]),
    }
}

/// Index of the `]` closing the class that starts at `p[0] == '['`.
fn class_end(p: &[char]) -> Option<usize> {
    let mut i = 1;
    if matches!(p.get(i), Some('!' | '^')) {
        i += 1;
    }
    if p.get(i) == Some(&']') {
        i += 1;
    }
    (i..p.len()).find(|&j| p[j] == ']')
}

fn class_matches(class: &[char], c: char) -> bool {
    let (neg, class) = match class.first() {
        Some('!' | '^') => (true, &class[1..]),
        _ => (false, class),
    };
    let mut hit = false;
    let mut i = 0;
    while i < class.len() {
        if i + 2 < class.len() && class[i + 1] == '-' {
            hit |= class[i] <= c && c <= class[i + 2];
            i += 3;
        } else {
            hit |= class[i] == c;
            i += 1;
        }
    }
    hit != neg
}

/// systemd-sysctl: an ordered map from key to its last entry (an equal
/// value keeps its place); explicit entries first, else the last glob.
fn systemd_outcome(entries: Vec<Entry>, key: &str) -> Outcome {
    let mut map: Vec<Entry> = Vec::new();
    for e in entries {
        if let Some(i) = map.iter().position(|x| x.key == e.key) {
            if map[i].value == e.value {
                map[i].ignore_failure |= e.ignore_failure;
                continue;
            }
            map.remove(i);
        }
        map.push(e);
    }
    if let Some(e) = map.iter().find(|e| e.key == key) {
        return match e.value {
            Some(_) => Outcome::Set(e.clone()),
            None => Outcome::Excluded(e.clone()),
        };
    }
    map.iter()
        .rev()
        .find(|e| e.value.is_some() && e.is_glob() && glob_match(&e.key, key))
        .map_or(Outcome::Unset, |e| Outcome::Set(e.clone()))
}

/// procps (and tuned): every explicit line is written, the last wins; a
/// glob skips keys that any entry names or any exclusion glob matches.
fn procps_outcome(entries: &[Entry], key: &str) -> Outcome {
    if let Some(e) = entries
        .iter()
        .rev()
        .find(|e| e.key == key && e.value.is_some())
    {
        return Outcome::Set(e.clone());
    }
    if let Some(e) = entries
        .iter()
        .find(|e| e.value.is_none() && (e.key == key || (e.is_glob() && glob_match(&e.key, key))))
    {
        return Outcome::Excluded(e.clone());
    }
    entries
        .iter()
        .rev()
        .find(|e| e.value.is_some() && e.is_glob() && glob_match(&e.key, key))
        .map_or(Outcome::Unset, |e| Outcome::Set(e.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_and_globs_like_systemd() {
        assert_eq!(normalize("net.core.somaxconn"), "net.core.somaxconn");
        assert_eq!(normalize("net/core/somaxconn"), "net.core.somaxconn");
        assert_eq!(
            normalize("net/ipv4/conf/enp3s0.200/forwarding"),
            "net.ipv4.conf.enp3s0/200.forwarding"
        );
        assert_eq!(normalize("/net/core/somaxconn"), "net.core.somaxconn");
        assert!(glob_match(
            "net.ipv4.conf.*.rp_filter",
            "net.ipv4.conf.eth0.rp_filter"
        ));
        assert!(!glob_match("net.ipv4.*", "net.ipv4.conf.eth0.rp_filter"));
        assert!(glob_match("net.core.*", "net.core.somaxconn"));
        assert!(glob_match("net.core.somaxcon?", "net.core.somaxconn"));
        assert!(glob_match("net.ipv[46].tcp_*", "net.ipv4.tcp_tw_reuse"));
        assert!(!glob_match("net.ipv[!4].tcp_*", "net.ipv4.tcp_tw_reuse"));
        assert!(glob_match("net.ipv[0-9].tcp_*", "net.ipv4.tcp_tw_reuse"));
        assert!(!glob_match("net.core", "net.core.somaxconn"));
    }

    #[test]
    fn parses_lines_as_each_reader_does() {
        let s = Reader::SystemdSysctl;
        assert_eq!(
            parse_line("  net.core.somaxconn = 1024 ", s),
            Some(("net.core.somaxconn".into(), Some("1024".into()), false))
        );
        assert_eq!(
            parse_line("-net.core.somaxconn=1024", s),
            Some(("net.core.somaxconn".into(), Some("1024".into()), true))
        );
        assert_eq!(
            parse_line("-net.ipv4.conf.all.rp_filter", s),
            Some(("net.ipv4.conf.all.rp_filter".into(), None, false))
        );
        assert_eq!(
            parse_line("net.ipv4.ip_local_port_range = 1024\t65535", s),
            Some((
                "net.ipv4.ip_local_port_range".into(),
                Some("1024\t65535".into()),
                false
            ))
        );
        for skip in ["# c", "; c", "", "   ", "not an assignment"] {
            assert_eq!(parse_line(skip, s), None, "{skip:?}");
        }
        // tuned writes keys literally: a `-` key names no real sysctl.
        assert_eq!(
            parse_line("-net.core.somaxconn = 5", Reader::TunedReapply).map(|x| x.0),
            Some("-net.core.somaxconn".into())
        );
        assert_eq!(
            parse_line("-net.core.somaxconn", Reader::TunedReapply),
            None
        );
    }
}
