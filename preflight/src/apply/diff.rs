//! What an apply changes against the host: the runtime sysctls a profile
//! moves (and those it keeps, with why), and the files whose contents would
//! change, with the directories writing them creates.

use super::{selected, ApplyOptions, FileChange, Kept, Plan, SysctlChange};
use crate::boot::verdict::{self, BootView};
use crate::check::{join, required_text, target};
use crate::profile::Profile;
use crate::readings::{parse_numbers, Readings};
use crate::root::read_optional;
use crate::{Error, Root};
use std::path::Path;

/// Adds the runtime changes and the kept settings of the selected sysctls
/// to `p`. Returns the runtime values that already satisfy their rule but
/// that a persisted file would take back at boot: they are written to our
/// file, not to /proc/sys.
pub(super) fn sysctls(
    p: &mut Plan,
    profile: &Profile,
    r: &Readings,
    opts: &ApplyOptions,
    view: &BootView,
) -> Vec<(String, String)> {
    let netns = &r.snapshot.netns;
    let mut persist_only: Vec<(String, String)> = Vec::new();
    for (key, rule) in &profile.sysctls {
        if !selected(opts, key) {
            continue;
        }
        let raw = r.sysctls.get(key).cloned().flatten();
        let current = raw
            .as_deref()
            .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "));
        let kept = |reason: String| Kept {
            name: key.clone(),
            current: current.clone(),
            reason,
        };
        match raw.as_deref().map(parse_numbers) {
            None => p.kept.push(kept(if key.starts_with("net.") {
                format!(
                    "absent in net namespace {netns}: host-wide, set it from the initial namespace"
                )
            } else {
                "absent on this kernel".into()
            })),
            Some(None) => p.kept.push(kept("not a number".into())),
            Some(Some(c)) => match target(rule, &c) {
                None => {
                    let (row, failure) = verdict::sysctl_row(view, key, rule);
                    let mut reason = format!("satisfies {}", required_text(rule));
                    if failure.is_some() && row.value.is_some() {
                        reason.push_str(&format!(
                            " now; persisted for boot: {} sets {}",
                            row.file.as_deref().unwrap_or("?"),
                            row.value.as_deref().unwrap_or("?")
                        ));
                        persist_only.push((key.clone(), join(&c)));
                    }
                    p.kept.push(kept(reason));
                }
                Some(t) => p.sysctls.push(SysctlChange {
                    key: key.clone(),
                    previous: current.clone().unwrap_or_default(),
                    applied: join(&t),
                }),
            },
        }
    }
    persist_only
}

/// Adds to `p` each of `files` (path, content) whose content differs from
/// what is there now, and the directories writing it would create.
pub(super) fn files(p: &mut Plan, root: &Root, files: Vec<(String, String)>) -> Result<(), Error> {
    for (path, content) in files {
        let full = root.file(&path);
        let previous = read_optional(&full).map_err(|e| Error::io(&full, e))?;
        if previous.as_deref() == Some(content.as_str()) {
            continue;
        }
        // Directories we create, outermost first, so rollback can remove them.
        let mut missing = Vec::new();
        let mut d = Path::new(&path).parent();
        while let Some(dir) = d.filter(|d| !root.file(&d.to_string_lossy()).exists()) {
            missing.push(dir.to_string_lossy().into_owned());
            d = dir.parent();
        }
        for dir in missing.into_iter().rev() {
            if !p.created_dirs.contains(&dir) {
                p.created_dirs.push(dir);
            }
        }
        p.files.push(FileChange {
            path,
            previous,
            content,
        });
    }
    Ok(())
}
