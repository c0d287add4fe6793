//! The limits.d file apply writes: pam_limits' nofile for every user and
//! for root, never below what the session already has.

use super::{header, Kept, Plan};
use crate::boot::persist;
use crate::boot::verdict::BootView;
use crate::profile::{NofileRule, Profile};
use crate::readings::Readings;
use crate::Root;

/// The file's text: soft and hard nofile for `*` and for root.
pub(super) fn render(profile: &str, soft: u64, hard: u64) -> String {
    let mut s = header(profile);
    s.push_str("# pam_limits: `*` does not cover root, hence the root lines.\n");
    for who in ["*", "root"] {
        s.push_str(&format!(
            "{who:<5} soft nofile {soft}\n{who:<5} hard nofile {hard}\n"
        ));
    }
    s
}

/// The file (path, content) when this session's nofile is below `n`, else
/// a kept row; adds its boot conflicts and notes to `p`. `file`: its name
/// in limits.d and its path.
pub(super) fn plan(
    p: &mut Plan,
    profile: &Profile,
    root: &Root,
    r: &Readings,
    view: &BootView,
    n: &NofileRule,
    (name, path): (&str, &str),
) -> Option<(String, String)> {
    let proc = &r.snapshot.processes[0];
    let (soft, hard) = (proc.nofile_soft, proc.nofile_hard);
    let session_ok = soft.is_none_or(|s| s >= n.soft) && hard.is_none_or(|h| h >= n.hard);
    // Never lower: keep whatever is already above the profile.
    let want_soft = soft.map_or(n.soft, |s| s.max(n.soft));
    let want_hard = hard.map_or(n.hard, |h| h.max(n.hard)).max(want_soft);
    let cur = format!(
        "soft {}, hard {}",
        soft.map_or("unlimited".into(), |v| v.to_string()),
        hard.map_or("unlimited".into(), |v| v.to_string())
    );
    if session_ok {
        p.kept.push(Kept {
            name: "nofile".into(),
            current: Some(cur),
            reason: format!("satisfies soft >= {}, hard >= {}", n.soft, n.hard),
        });
        return None;
    }
    let s = render(&profile.name, want_soft, want_hard);
    p.conflicts
        .extend(persist::limits_conflicts(root, view, n, name, &s));
    if hard.is_some_and(|h| h < n.hard) && !r.cap_sys_resource {
        p.notes.push(format!(
            "nofile: this session's hard limit {} cannot be raised without CAP_SYS_RESOURCE; the new limit applies to new logins and restarted services",
            hard.unwrap_or(0)
        ));
    }
    Some((path.to_string(), s))
}
