//! RLIMIT_NOFILE as pam_limits sets it at the next login (Linux-PAM
//! modules/pam_limits/pam_limits.c, limits.conf(5)): /etc/security/limits.conf
//! first, then /etc/security/limits.d/*.conf sorted by name. Per limit
//! (soft, hard) an entry for the user (by name or uid range) beats an
//! `@group` entry, which beats `*`; among entries of the same kind the later
//! line wins (`process_limit`: a source ranked below the current one is
//! skipped). `-` sets soft then hard (a skipped soft skips the hard too);
//! `unlimited`/`infinity`/`-1` means fs.nr_open; a `<domain> -` line that
//! matches stops all limits. A soft above the hard is lowered to the hard.
//! pam_limits.c applies `*` to root as well, although limits.conf(5) says
//! otherwise: headroom's own file has explicit `root` lines, so both agree.
//! Services started by systemd never go through pam_limits: see [`super::units`].

use super::{list, load};
use crate::Root;
use serde::Serialize;

pub const LIMITS_CONF: &str = "/etc/security/limits.conf";
pub const LIMITS_D: &str = "/etc/security/limits.d";

/// Whose limits: a user name, uid, and the names of its groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Who {
    pub name: String,
    pub uid: u32,
    pub groups: Vec<String>,
}

impl Who {
    /// A user that no name, group or uid range names: only `*` lines apply.
    pub fn anyone() -> Who {
        Who {
            name: String::new(),
            uid: u32::MAX - 1,
            groups: vec![],
        }
    }

    pub fn root() -> Who {
        Who {
            name: "root".into(),
            uid: 0,
            groups: vec!["root".into()],
        }
    }

    pub fn label(&self) -> String {
        if self.name.is_empty() {
            "other users (*)".into()
        } else {
            self.name.clone()
        }
    }

    /// The user with this uid, from the root's /etc/passwd and /etc/group.
    pub fn by_uid(root: &Root, uid: u32) -> Who {
        let passwd = load(root, "/etc/passwd").text;
        let (name, gid) = passwd
            .lines()
            .find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 3 && f[2].parse() == Ok(uid))
                    .then(|| (f[0].to_string(), f[3].parse::<u32>().ok()))
            })
            .unwrap_or((
                if uid == 0 {
                    "root".into()
                } else {
                    String::new()
                },
                None,
            ));
        let mut groups = Vec::new();
        for l in load(root, "/etc/group").text.lines() {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 {
                continue;
            }
            let primary = gid.is_some() && f[2].parse().ok() == gid;
            if primary || (!name.is_empty() && f[3].split(',').any(|m| m == name)) {
                groups.push(f[0].to_string());
            }
        }
        Who { name, uid, groups }
    }
}

/// Where one limit came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Setting {
    /// `None`: unlimited (pam_limits uses fs.nr_open).
    pub value: Option<u64>,
    pub file: String,
    pub line: usize,
    /// The domain column: `*`, `root`, `@group`, `1000:`.
    pub domain: String,
}

impl Setting {
    pub fn at(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }
}

/// What the next login gets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Nofile {
    pub soft: Option<Setting>,
    pub hard: Option<Setting>,
    /// Every nofile line that applied, in order (to name the one that lost).
    pub applied: Vec<Setting>,
    /// A `<domain> -` line that switched limits off for this user.
    pub no_limits: Option<String>,
}

/// limits.conf then limits.d, with `/etc/security/limits.d/NAME` replaced
/// by `content` when given (what `apply` would write).
pub fn files(root: &Root, replace: Option<(&str, &str)>) -> Vec<(String, String)> {
    let mut out = vec![(LIMITS_CONF.to_string(), load(root, LIMITS_CONF).text)];
    let mut names = list(root, LIMITS_D, ".conf");
    if let Some((n, _)) = replace {
        if !names.iter().any(|x| x == n) {
            names.push(n.to_string());
        }
    }
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    for n in names {
        let path = format!("{LIMITS_D}/{n}");
        let text = match replace {
            Some((r, c)) if r == n => c.to_string(),
            _ => load(root, &path).text,
        };
        out.push((path, text));
    }
    out
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Rank {
    User = 0,
    Group = 1,
    All = 4,
    None = 6,
}

fn rank(who: &Who, domain: &str) -> Option<Rank> {
    if domain == who.name && !who.name.is_empty() {
        return Some(Rank::User);
    }
    if let Some(g) = domain.strip_prefix('@') {
        if g.contains(':') {
            return None; // gid ranges need the primary gid: not modelled
        }
        return who.groups.iter().any(|x| x == g).then_some(Rank::Group);
    }
    if domain == "*" {
        return Some(Rank::All);
    }
    let (lo, hi) = domain.split_once(':')?;
    let lo: u32 = if lo.is_empty() { 0 } else { lo.parse().ok()? };
    let hi: u32 = if hi.is_empty() {
        u32::MAX
    } else {
        hi.parse().ok()?
    };
    let lo = if domain.starts_with(':') { hi } else { lo };
    (lo <= who.uid && who.uid <= hi).then_some(Rank::User)
}

/// What pam_limits gives `who` for nofile from these files.
pub fn nofile(files: &[(String, String)], who: &Who) -> Nofile {
    let mut out = Nofile::default();
    let (mut soft_rank, mut hard_rank) = (Rank::None, Rank::None);
    for (file, text) in files {
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() == 2 && f[1] == "-" {
                if rank(who, f[0]).is_some_and(|r| r != Rank::All) {
                    out.no_limits = Some(format!("{file}:{}", i + 1));
                    return out;
                }
                continue;
            }
            if f.len() < 4 || !f[2].eq_ignore_ascii_case("nofile") {
                continue;
            }
            let Some(r) = rank(who, f[0]) else { continue };
            let v = f[3..].join(" ").to_ascii_lowercase();
            let value = match v.as_str() {
                "-1" | "-" | "unlimited" | "infinity" => None,
                n => match n.parse::<u64>() {
                    Ok(n) => Some(n),
                    Err(_) => continue,
                },
            };
            let set = Setting {
                value,
                file: file.clone(),
                line: i + 1,
                domain: f[0].to_string(),
            };
            let ty = f[1].to_ascii_lowercase();
            let (soft, hard) = match ty.as_str() {
                "soft" => (true, false),
                "hard" => (false, true),
                "-" => (true, true),
                _ => continue,
            };
            if soft {
                if soft_rank < r {
                    continue;
                }
                soft_rank = r;
                out.soft = Some(set.clone());
            }
            if hard {
                if hard_rank < r {
                    continue;
                }
                hard_rank = r;
                out.hard = Some(set.clone());
            }
            out.applied.push(set);
        }
    }
    out
}

impl Nofile {
    /// (soft, hard) as the session gets them; `None` where nothing sets one
    /// (inherited). Unlimited is `nr_open`; a soft above the hard is lowered.
    pub fn values(&self, nr_open: u64) -> (Option<u64>, Option<u64>) {
        let v = |s: &Option<Setting>| s.as_ref().map(|s| s.value.unwrap_or(nr_open));
        let (soft, hard) = (v(&self.soft), v(&self.hard));
        match (soft, hard) {
            (Some(s), Some(h)) => (Some(s.min(h)), Some(h)),
            x => x,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(path: &str, text: &str) -> (String, String) {
        (path.into(), text.into())
    }

    #[test]
    fn later_lines_win_among_equals_and_user_beats_star() {
        let files = [
            f(
                LIMITS_CONF,
                "*  soft nofile 1024\nroot hard nofile 9000 # root\n",
            ),
            f(
                "/etc/security/limits.d/90-headroom.conf",
                "* soft nofile 262144\n* hard nofile 262144\nroot - nofile 262144\n",
            ),
            f(
                "/etc/security/limits.d/95-app.conf",
                "* hard nofile 4096\n@web soft nofile 5000\n",
            ),
        ];
        let anyone = nofile(&files, &Who::anyone());
        assert_eq!(
            anyone.soft.as_ref().unwrap().at(),
            "/etc/security/limits.d/90-headroom.conf:1"
        );
        assert_eq!(
            anyone.hard.as_ref().unwrap().at(),
            "/etc/security/limits.d/95-app.conf:1"
        );
        // The soft is lowered to the hard, as setup_limits does.
        assert_eq!(anyone.values(1 << 20), (Some(4096), Some(4096)));
        // root: its own lines beat `*` wherever they are.
        let root = nofile(&files, &Who::root());
        assert_eq!(root.values(1 << 20), (Some(262144), Some(262144)));
        assert_eq!(root.hard.as_ref().unwrap().line, 3);
        // A group entry beats `*` even when `*` comes later.
        let web = Who {
            name: "www".into(),
            uid: 33,
            groups: vec!["web".into()],
        };
        let files2 = [
            files[2].clone(),
            f("/etc/security/limits.d/99-z.conf", "* soft nofile 100\n"),
        ];
        assert_eq!(nofile(&files2, &web).soft.unwrap().value, Some(5000));
    }

    #[test]
    fn ranges_unlimited_and_no_limit_lines() {
        let files = [f(
            LIMITS_CONF,
            "1000: - nofile unlimited\n:33 soft nofile 77\n",
        )];
        let u = Who {
            name: "u".into(),
            uid: 1000,
            groups: vec![],
        };
        assert_eq!(nofile(&files, &u).values(5000), (Some(5000), Some(5000)));
        let www = Who {
            name: "www".into(),
            uid: 33,
            groups: vec![],
        };
        assert_eq!(nofile(&files, &www).values(5000), (Some(77), None));
        let off = [f(LIMITS_CONF, "u -\nu - nofile 10\n")];
        assert_eq!(
            nofile(&off, &u).no_limits.as_deref(),
            Some("/etc/security/limits.conf:1")
        );
    }
}
