//! Whether what `apply` writes wins at the next boot, restart or login. The
//! planned file is put into the tree as it would be and every key it sets is
//! looked up again with the rules of [`super::sysctl_d`], [`super::limits`]
//! and [`super::units`]; a key that another file (or tuned) still takes is a
//! conflict that names the file to edit, and `apply` writes nothing.

use super::limits::{self, Who};
use super::sysctl_d::Reader;
use super::units;
use super::verdict::{sysctl_row, BootView};
use crate::profile::{NofileRule, Profile};
use serde::Serialize;

/// One setting the next boot would take back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Conflict {
    /// The sysctl, `nofile (USER)` or `UNIT LimitNOFILE`.
    pub name: String,
    /// Why, with the file to edit and, where a later file name would win,
    /// the option that writes one.
    pub message: String,
    /// The file to edit.
    pub edit: String,
}

/// A file name that sorts after every name in `after` (byte order, as
/// systemd, procps and pam_limits sort): `99-zz-headroom.conf`, with more
/// `z`s when needed.
pub fn later_name(after: &[&str]) -> String {
    let mut zs = 2;
    loop {
        let name = format!("99-{}-headroom.conf", "z".repeat(zs));
        if after.iter().all(|a| name.as_bytes() > a.as_bytes()) || zs > 64 {
            return name;
        }
        zs += 1;
    }
}

fn base(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Conflicts of a planned sysctl.d file `name` holding `content`, which sets
/// `keys`; notes for same-named files it would hide.
pub fn sysctl_conflicts(
    view: &BootView,
    profile: &Profile,
    name: &str,
    content: &str,
    keys: &[&str],
) -> (Vec<Conflict>, Vec<String>) {
    let planned = BootView {
        tree: view.tree.with_file(name, content),
        ..view.clone()
    };
    let mut out = Vec::new();
    for key in keys {
        let Some(rule) = profile.sysctls.get(*key) else {
            continue;
        };
        let (row, failure) = sysctl_row(&planned, key, rule);
        let Some(failure) = failure else { continue };
        let edit = row.edit.clone().unwrap_or_default();
        // A later name helps only where systemd-sysctl decides and the
        // winner is a sysctl.d file (not /etc/sysctl.conf read last, not tuned).
        let winner = row.file.as_deref().unwrap_or("");
        let in_sysctl_d = winner.starts_with("/") && winner.contains("/sysctl.d/");
        let hint = if row.by == Reader::SystemdSysctl.label() && in_sysctl_d {
            let w = base(winner.split(" -> ").next().unwrap_or(winner));
            let w = w.rsplit_once(':').map_or(w, |(f, _)| f);
            format!(
                ", or write a file that sorts after it: --sysctl-file {}",
                later_name(&[w, name])
            )
        } else {
            String::new()
        };
        out.push(Conflict {
            name: key.to_string(),
            message: format!("{failure}{hint}"),
            edit,
        });
    }
    let notes = planned
        .tree
        .files(Reader::SystemdSysctl)
        .into_iter()
        .filter(|f| f.path == format!("/etc/sysctl.d/{name}") && !f.shadows.is_empty())
        .map(|f| {
            format!(
                "{} hides {}: its settings stop applying at boot",
                f.path,
                f.shadows.join(", ")
            )
        })
        .collect();
    (out, notes)
}

/// Conflicts of a planned limits.d file: root and other users (`*`) must
/// get at least the profile's nofile at their next login.
pub fn limits_conflicts(
    root: &crate::Root,
    view: &BootView,
    n: &NofileRule,
    name: &str,
    content: &str,
) -> Vec<Conflict> {
    let files = limits::files(root, Some((name, content)));
    let ours = format!("{}/{name}", limits::LIMITS_D);
    let mut out = Vec::new();
    for who in [Who::root(), Who::anyone()] {
        let got = limits::nofile(&files, &who);
        let (soft, hard) = got.values(view.nr_open);
        let (kind, setting) = if hard.is_some_and(|h| h < n.hard) {
            ("hard", got.hard.as_ref())
        } else if soft.is_some_and(|s| s < n.soft) {
            ("soft", got.soft.as_ref())
        } else {
            continue;
        };
        let Some(w) = setting else { continue };
        // Among lines of the same kind the later wins: a later name helps
        // against limits.d, never against a more specific line in limits.conf.
        let later = w.file.starts_with(limits::LIMITS_D);
        out.push(Conflict {
            name: format!("nofile ({})", who.label()),
            message: format!(
                "persisted value loses at login: {} sets {} {kind} nofile {} after {ours}; edit {}{}",
                w.at(),
                w.domain,
                w.value.map_or("unlimited".into(), |v| v.to_string()),
                w.file,
                if later {
                    format!(
                        ", or write a file that sorts after it: --limits-file {}",
                        later_name(&[base(&w.file), name])
                    )
                } else {
                    String::new()
                }
            ),
            edit: w.file.clone(),
        });
    }
    out
}

/// Conflicts of a planned drop-in for `unit`.
pub fn dropin_conflicts(
    root: &crate::Root,
    unit: &str,
    n: &NofileRule,
    name: &str,
    content: &str,
) -> Vec<Conflict> {
    let got = units::nofile(root, unit, Some((name, content)), None);
    if got.soft >= n.soft && got.hard >= n.hard {
        return vec![];
    }
    let Some(w) = got.from else { return vec![] };
    let ours = format!("/etc/systemd/system/{}.d/{name}", got.unit);
    vec![Conflict {
        name: format!("{} LimitNOFILE", got.unit),
        message: format!(
            "persisted value loses at restart: {} sets LimitNOFILE={}:{} after {ours}; edit {}, or write a drop-in that sorts after it: --dropin-file {}",
            w.at(),
            got.soft,
            got.hard,
            w.file,
            later_name(&[base(&w.file), name])
        ),
        edit: w.file,
    }]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_names_sort_after() {
        assert_eq!(
            later_name(&["99-sysctl.conf", "90-headroom.conf"]),
            "99-zz-headroom.conf"
        );
        let n = later_name(&["99-zzz-override_cilium.conf"]);
        assert!(
            n.as_bytes() > b"99-zzz-override_cilium.conf".as_slice(),
            "{n}"
        );
        assert_eq!(n, "99-zzzz-headroom.conf");
    }
}
