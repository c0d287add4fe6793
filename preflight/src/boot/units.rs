//! RLIMIT_NOFILE a systemd service gets at its next start: `LimitNOFILE=` in
//! its unit file and drop-ins (systemd.unit(5), systemd.exec(5)), else
//! `DefaultLimitNOFILE=` in system.conf and system.conf.d
//! (systemd-system.conf(5)), else systemd's built-in 1024:524288 (since
//! v240). pam_limits and limits.d do not apply to services.
//!
//! Unit file: the first of the search path that has `NAME.service` (a
//! symlink to /dev/null masks it); an instance `a@b.service` falls back to
//! its template `a@.service`. Drop-ins: `*.conf` in `NAME.service.d/`, the
//! template's `a@.service.d/`, the prefix directories of a dashed name
//! (`a-b-c.service` reads `a-b-.service.d/` and `a-.service.d/`) and the
//! top-level `service.d/`, in every directory of the search path; a drop-in
//! in a higher directory hides one of the same name lower down, and all are
//! read in file-name order after the unit file: the last `LimitNOFILE=` wins,
//! an empty one resets it to the default.

use super::{list, load};
use crate::Root;
use serde::Serialize;

/// The system unit search path, highest precedence first (systemd.unit(5)),
/// less the generator directories, which hold no files at rest.
pub const UNIT_DIRS: &[&str] = &[
    "/etc/systemd/system.control",
    "/run/systemd/system.control",
    "/run/systemd/transient",
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];
const SYSTEM_CONF: &str = "/etc/systemd/system.conf";
const SYSTEM_CONF_DIRS: &[&str] = &[
    "/etc/systemd/system.conf.d",
    "/run/systemd/system.conf.d",
    "/usr/local/lib/systemd/system.conf.d",
    "/usr/lib/systemd/system.conf.d",
];
/// systemd >= 240: soft 1024 (select() safe), hard 512K.
pub const BUILTIN: (u64, u64) = (1024, 524288);

/// One `LimitNOFILE=`/`DefaultLimitNOFILE=` line; `None` values: reset (empty).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Assignment {
    pub file: String,
    pub line: usize,
    /// (soft, hard); `u64::MAX` is infinity; `None`: an empty assignment.
    pub limit: Option<(u64, u64)>,
}

impl Assignment {
    pub fn at(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }
}

/// What the service gets at its next start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnitNofile {
    pub unit: String,
    /// The unit file used; `None`: not found (or masked).
    pub unit_file: Option<String>,
    pub soft: u64,
    pub hard: u64,
    /// The line that decided; `None`: systemd's built-in default.
    pub from: Option<Assignment>,
    /// Every LimitNOFILE= of the unit and its drop-ins, in reading order.
    pub assignments: Vec<Assignment>,
}

/// `nginx` or `nginx.service` -> `nginx.service`.
pub fn service_name(unit: &str) -> String {
    if unit.ends_with(".service") {
        unit.to_string()
    } else {
        format!("{unit}.service")
    }
}

/// Drop-in directory names for a unit, most specific first.
fn dropin_names(unit: &str) -> Vec<String> {
    let mut names = vec![format!("{unit}.d")];
    let stem = unit.trim_end_matches(".service");
    if let Some((tmpl, inst)) = stem.split_once('@') {
        if !inst.is_empty() {
            names.push(format!("{tmpl}@.service.d"));
        }
    }
    let base = stem.split('@').next().unwrap_or(stem);
    let dashes: Vec<usize> = base.match_indices('-').map(|(i, _)| i).collect();
    for &i in dashes.iter().rev() {
        names.push(format!("{}-.service.d", &base[..i]));
    }
    names.push("service.d".into());
    names
}

/// The drop-ins of `unit` in reading order, as (path, text); `replace` puts
/// `content` at `/etc/systemd/system/UNIT.d/NAME` (what `apply` would write),
/// `skip` leaves that path out (to read the unit without our own drop-in).
pub fn dropins(
    root: &Root,
    unit: &str,
    replace: Option<(&str, &str)>,
    skip: Option<&str>,
) -> Vec<(String, String)> {
    let mut chosen: Vec<(String, String)> = Vec::new(); // (name, path)
    for dir in UNIT_DIRS {
        for d in dropin_names(unit) {
            let dpath = format!("{dir}/{d}");
            let mut names = list(root, &dpath, ".conf");
            if let Some((n, _)) =
                replace.filter(|_| *dir == "/etc/systemd/system" && d == format!("{unit}.d"))
            {
                if !names.iter().any(|x| x == n) {
                    names.push(n.to_string());
                }
            }
            for n in names {
                let path = format!("{dpath}/{n}");
                if skip == Some(path.as_str()) || chosen.iter().any(|(c, _)| *c == n) {
                    continue;
                }
                chosen.push((n, path));
            }
        }
    }
    chosen.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let ours = replace.map(|(n, _)| format!("/etc/systemd/system/{unit}.d/{n}"));
    chosen
        .into_iter()
        .map(|(_, p)| {
            let text = match (&ours, replace) {
                (Some(o), Some((_, c))) if *o == p => c.to_string(),
                _ => load(root, &p).text,
            };
            (p, text)
        })
        .collect()
}

/// `LimitNOFILE=` (or `key`) lines of `[section]` in one file.
fn assignments(path: &str, text: &str, section: &str, key: &str) -> Vec<Assignment> {
    let mut out = Vec::new();
    let mut current = String::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = s.to_string();
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        if current != section || k.trim() != key {
            continue;
        }
        let v = v.trim();
        let limit = if v.is_empty() {
            None
        } else {
            let one = |s: &str| match s.trim() {
                "infinity" => Some(u64::MAX),
                n => n.parse().ok(),
            };
            match v.split_once(':') {
                Some((s, h)) => match (one(s), one(h)) {
                    (Some(s), Some(h)) => Some((s, h)),
                    _ => continue,
                },
                None => match one(v) {
                    Some(n) => Some((n, n)),
                    None => continue,
                },
            }
        };
        out.push(Assignment {
            file: path.to_string(),
            line: i + 1,
            limit,
        });
    }
    out
}

/// DefaultLimitNOFILE= from system.conf and system.conf.d, last wins.
pub fn default_limit(root: &Root) -> Option<Assignment> {
    let mut files = vec![(SYSTEM_CONF.to_string(), load(root, SYSTEM_CONF).text)];
    let mut by_name: Vec<(String, String)> = Vec::new();
    for dir in SYSTEM_CONF_DIRS {
        for n in list(root, dir, ".conf") {
            if !by_name.iter().any(|(x, _)| *x == n) {
                by_name.push((n.clone(), format!("{dir}/{n}")));
            }
        }
    }
    by_name.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    files.extend(by_name.into_iter().map(|(_, p)| {
        let t = load(root, &p).text;
        (p, t)
    }));
    files
        .iter()
        .flat_map(|(p, t)| assignments(p, t, "Manager", "DefaultLimitNOFILE"))
        .rfind(|a| a.limit.is_some())
}

/// The unit's nofile at its next start. `replace`/`skip` as in [`dropins`].
pub fn nofile(
    root: &Root,
    unit: &str,
    replace: Option<(&str, &str)>,
    skip: Option<&str>,
) -> UnitNofile {
    let unit = service_name(unit);
    let mut candidates = vec![unit.clone()];
    if let Some((tmpl, inst)) = unit.trim_end_matches(".service").split_once('@') {
        if !inst.is_empty() {
            candidates.push(format!("{tmpl}@.service"));
        }
    }
    let unit_file = candidates.iter().find_map(|name| {
        UNIT_DIRS.iter().find_map(|dir| {
            let p = format!("{dir}/{name}");
            let l = load(root, &p);
            (l.regular || l.target.as_deref() == Some("/dev/null")).then_some((p, l))
        })
    });
    let masked = unit_file
        .as_ref()
        .is_some_and(|(_, l)| l.target.as_deref() == Some("/dev/null"));
    let mut all = Vec::new();
    if let Some((p, l)) = unit_file.as_ref().filter(|_| !masked) {
        all.extend(assignments(p, &l.text, "Service", "LimitNOFILE"));
    }
    for (p, t) in dropins(root, &unit, replace, skip) {
        all.extend(assignments(&p, &t, "Service", "LimitNOFILE"));
    }
    let last = all.last().filter(|a| a.limit.is_some()).cloned();
    let (from, (soft, hard)) = match last {
        Some(a) => (Some(a.clone()), a.limit.unwrap_or(BUILTIN)),
        None => match default_limit(root) {
            Some(d) => (Some(d.clone()), d.limit.unwrap_or(BUILTIN)),
            None => (None, BUILTIN),
        },
    };
    UnitNofile {
        unit,
        unit_file: unit_file.filter(|_| !masked).map(|(p, _)| p),
        soft,
        hard,
        from,
        assignments: all,
    }
}

/// The system service a process runs in, from /proc/PID/cgroup:
/// `0::/system.slice/nginx.service` -> `nginx.service`.
pub fn unit_of_pid(root: &Root, pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(root.proc(&format!("{pid}/cgroup"))).ok()?;
    text.lines().find_map(|l| {
        let path = l.splitn(3, ':').nth(2)?;
        if !path.starts_with("/system.slice/") {
            return None;
        }
        path.split('/')
            .find(|c| c.ends_with(".service"))
            .map(str::to_string)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn put(t: &std::path::Path, p: &str, s: &str) {
        let f = t.join(p.trim_start_matches('/'));
        fs::create_dir_all(f.parent().unwrap()).unwrap();
        fs::write(f, s).unwrap();
    }

    #[test]
    fn names_and_cgroups() {
        assert_eq!(
            dropin_names("a-b-c@x.service"),
            [
                "a-b-c@x.service.d",
                "a-b-c@.service.d",
                "a-b-.service.d",
                "a-.service.d",
                "service.d"
            ]
        );
        let t = tempfile::tempdir().unwrap();
        put(
            t.path(),
            "/proc/7/cgroup",
            "0::/system.slice/nginx.service\n",
        );
        put(
            t.path(),
            "/proc/8/cgroup",
            "0::/user.slice/user-0.slice/session-1.scope\n",
        );
        let root = Root::at(t.path());
        assert_eq!(unit_of_pid(&root, 7).as_deref(), Some("nginx.service"));
        assert_eq!(unit_of_pid(&root, 8), None);
    }

    #[test]
    fn default_and_infinity() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::at(t.path());
        let n = nofile(&root, "web", None, None);
        assert_eq!((n.soft, n.hard, n.from.is_none()), (1024, 524288, true));
        put(
            t.path(),
            "/etc/systemd/system.conf",
            "[Manager]\nDefaultLimitNOFILE=2048:8192\n",
        );
        put(
            t.path(),
            "/usr/lib/systemd/system/web.service",
            "[Service]\nExecStart=/bin/true\n",
        );
        let n = nofile(&root, "web", None, None);
        assert_eq!((n.soft, n.hard), (2048, 8192));
        assert_eq!(n.from.unwrap().at(), "/etc/systemd/system.conf:2");
        put(
            t.path(),
            "/usr/lib/systemd/system/web.service",
            "[Service]\nLimitNOFILE=infinity\n",
        );
        assert_eq!(nofile(&root, "web", None, None).hard, u64::MAX);
        // An empty assignment in a drop-in resets to the default.
        put(
            t.path(),
            "/etc/systemd/system/web.service.d/50-reset.conf",
            "[Service]\nLimitNOFILE=\n",
        );
        assert_eq!(nofile(&root, "web", None, None).soft, 2048);
        // A key outside [Service] is not a limit.
        put(
            t.path(),
            "/etc/systemd/system/web.service.d/60-x.conf",
            "[Unit]\nLimitNOFILE=5\n",
        );
        assert_eq!(nofile(&root, "web", None, None).soft, 2048);
    }
}
