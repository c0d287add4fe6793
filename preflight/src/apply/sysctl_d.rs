//! The sysctl.d file apply writes: every sysctl it changes, and those a
//! persisted file would take back at boot, as `key = value` lines.

use super::{header, Plan};
use crate::boot::persist;
use crate::boot::verdict::BootView;
use crate::profile::Profile;
use crate::Root;

/// The file's text: one `key = value` line per setting, sorted by key.
pub(super) fn render(profile: &str, persisted: &[(&str, &str)]) -> String {
    let mut s = header(profile);
    for (k, v) in persisted {
        s.push_str(&format!("{k} = {v}\n"));
    }
    s
}

/// The file (path, content) for the changes already in `p` and
/// `persist_only`, if any; adds its boot conflicts and notes to `p`.
/// `file`: its name in /etc/sysctl.d and its path.
pub(super) fn plan(
    p: &mut Plan,
    profile: &Profile,
    root: &Root,
    view: &BootView,
    (name, path): (&str, &str),
    persist_only: &[(String, String)],
) -> Option<(String, String)> {
    let mut persisted: Vec<(&str, &str)> = p
        .sysctls
        .iter()
        .map(|c| (c.key.as_str(), c.applied.as_str()))
        .chain(persist_only.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .collect();
    persisted.sort();
    if persisted.is_empty() {
        return None;
    }
    let s = render(&profile.name, &persisted);
    let keys: Vec<&str> = persisted.iter().map(|(k, _)| *k).collect();
    let (conflicts, notes) = persist::sysctl_conflicts(view, profile, name, &s, &keys);
    p.conflicts.extend(conflicts);
    p.notes.extend(notes);
    if p.sysctls.iter().any(|c| c.key.starts_with("net.")) {
        let init = std::fs::read_link(root.proc("1/ns/net"))
            .map(|l| l.to_string_lossy().into_owned())
            .ok();
        // Unknown (no access to pid 1) is not "different": say nothing.
        if init.is_some_and(|i| i != p.netns) {
            p.notes.push(format!(
                "net.* values were written in {}; {path} is read at boot in the initial namespace",
                p.netns
            ));
        }
    }
    Some((path.to_string(), s))
}
