//! The systemd drop-in apply writes for `--unit`: LimitNOFILE= for the
//! service, never below what its unit files already give it.

use super::{header, Kept, Plan};
use crate::boot::{persist, units};
use crate::profile::{NofileRule, Profile};
use crate::Root;

/// The drop-in's text: a `[Service]` section with `LimitNOFILE=soft:hard`.
pub(super) fn render(profile: &str, soft: u64, hard: u64) -> String {
    let fmt = |v: u64| {
        if v == u64::MAX {
            "infinity".to_string()
        } else {
            v.to_string()
        }
    };
    format!(
        "{}[Service]\nLimitNOFILE={}:{}\n",
        header(profile),
        fmt(soft),
        fmt(hard)
    )
}

/// The drop-in (path, content) for `unit` named `name`, unless its unit
/// files already satisfy `n` (then a kept row); adds its boot conflicts
/// and the restart note to `p`.
pub(super) fn plan(
    p: &mut Plan,
    profile: &Profile,
    root: &Root,
    unit: &str,
    n: &NofileRule,
    name: &str,
) -> Option<(String, String)> {
    let ours = format!("/etc/systemd/system/{unit}.service.d/{name}");
    let now = units::nofile(root, unit, None, Some(&ours));
    match now.from.map(|_| (now.soft, now.hard)) {
        Some((s, h)) if s >= n.soft && h >= n.hard => {
            p.kept.push(Kept {
                name: format!("{unit}.service LimitNOFILE"),
                current: Some(format!("{s}:{h}")),
                reason: format!("satisfies {}:{}", n.soft, n.hard),
            });
            None
        }
        existing => {
            let (s, h) = existing.map_or((n.soft, n.hard), |(s, h)| (s.max(n.soft), h.max(n.hard)));
            let content = render(&profile.name, s, h.max(s));
            p.conflicts
                .extend(persist::dropin_conflicts(root, unit, n, name, &content));
            p.notes.push(format!(
                "systemctl daemon-reload && systemctl restart {unit}.service to give it the new LimitNOFILE"
            ));
            Some((ours, content))
        }
    }
}
