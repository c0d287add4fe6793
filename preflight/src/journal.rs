//! The journal: `apply` saves every previous value and file atomically
//! BEFORE any write, then writes runtime sysctls and persisted files, undoing
//! what it already wrote if one write fails; `rollback` restores exactly
//! what the journal recorded (the files under the names apply used, e.g.
//! `--sysctl-file`), then removes it.

use crate::apply::{FileChange, Plan, SysctlChange, STATE_FILE};
use crate::readings::parse_numbers;
use crate::root::{read_optional, remove_if_exists, write_atomic};
use crate::{Error, Root};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The rollback state file: everything needed to undo one apply.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    schema_version: u32,
    profile: String,
    netns: String,
    applied_at_ms: u64,
    sysctls: Vec<SysctlChange>,
    files: Vec<FileChange>,
    created_dirs: Vec<String>,
}

/// What one `apply --yes` did.
#[derive(Debug, Clone, Serialize)]
pub struct Applied {
    pub sysctls: usize,
    pub files: Vec<String>,
    /// `None` when there was nothing to change (no state written).
    pub state_file: Option<String>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn same_value(a: &str, b: &str) -> bool {
    parse_numbers(a).is_some() && parse_numbers(a) == parse_numbers(b)
}

/// Applies a plan. The rollback state is on disk before the first write; if
/// any write fails, the ones before it are undone and the error names the key.
pub fn apply(p: &Plan, root: &Root) -> Result<Applied, Error> {
    if !p.conflicts.is_empty() {
        return Err(Error::Overridden(
            p.conflicts
                .iter()
                .map(|c| format!("{}: {}", c.name, c.message))
                .collect(),
        ));
    }
    let state_path = root.file(STATE_FILE);
    if state_path.exists() {
        return Err(Error::Usage(format!(
            "an earlier apply is recorded in {}: run `headroom preflight rollback` first",
            state_path.display()
        )));
    }
    if p.is_empty() {
        return Ok(Applied {
            sysctls: 0,
            files: vec![],
            state_file: None,
        });
    }
    let state = State {
        schema_version: headroom_core::SCHEMA_VERSION,
        profile: p.profile.clone(),
        netns: p.netns.clone(),
        applied_at_ms: now_ms(),
        sysctls: p.sysctls.clone(),
        files: p.files.clone(),
        created_dirs: p.created_dirs.clone(),
    };
    let json = serde_json::to_string_pretty(&state).expect("state serializes");
    if let Some(dir) = state_path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    write_atomic(&state_path, &json).map_err(|e| Error::io(&state_path, e))?;

    let mut done = Undo::default();
    for c in &p.sysctls {
        let path = root.sysctl_path(&c.key);
        let result = root.write_sysctl(&c.key, &c.applied).and_then(|()| {
            // The kernel may clamp or ignore a value without an error: read back.
            let now = root.read_sysctl(&c.key)?.unwrap_or_default();
            if same_value(&now, &c.applied) {
                Ok(())
            } else {
                Err(std::io::Error::other(format!("the kernel kept {now:?}")))
            }
        });
        match result {
            Ok(()) => done.sysctls.push(c),
            Err(e) => {
                return Err(failed(
                    root,
                    &state_path,
                    done,
                    &c.key,
                    &c.applied,
                    &path,
                    e,
                ));
            }
        }
    }
    for d in &p.created_dirs {
        let full = root.file(d);
        if let Err(e) = std::fs::create_dir(&full) {
            if e.kind() != std::io::ErrorKind::AlreadyExists {
                return Err(failed(root, &state_path, done, d, "(directory)", &full, e));
            }
        }
        done.dirs.push(d);
    }
    for f in &p.files {
        let full = root.file(&f.path);
        match write_atomic(&full, &f.content) {
            Ok(()) => done.files.push(f),
            Err(e) => return Err(failed(root, &state_path, done, &f.path, "(file)", &full, e)),
        }
    }
    Ok(Applied {
        sysctls: p.sysctls.len(),
        files: p.files.iter().map(|f| f.path.clone()).collect(),
        state_file: Some(state_path.display().to_string()),
    })
}

#[derive(Default)]
struct Undo<'a> {
    sysctls: Vec<&'a SysctlChange>,
    dirs: Vec<&'a String>,
    files: Vec<&'a FileChange>,
}

/// Undoes `done` in reverse and builds the error for the write that failed.
fn failed(
    root: &Root,
    state_path: &Path,
    done: Undo,
    key: &str,
    value: &str,
    path: &Path,
    e: std::io::Error,
) -> Error {
    let mut errors = Vec::new();
    for f in done.files.iter().rev() {
        let full = root.file(&f.path);
        let r = match &f.previous {
            Some(prev) => write_atomic(&full, prev),
            None => remove_if_exists(&full),
        };
        if let Err(e) = r {
            errors.push(format!("{}: {e}", f.path));
        }
    }
    for d in done.dirs.iter().rev() {
        let _ = std::fs::remove_dir(root.file(d));
    }
    for c in done.sysctls.iter().rev() {
        if let Err(e) = root.write_sysctl(&c.key, &c.previous) {
            errors.push(format!("{} back to {}: {e}", c.key, c.previous));
        }
    }
    let n = done.sysctls.len() + done.files.len();
    let undo = if errors.is_empty() {
        let _ = remove_if_exists(state_path);
        format!("undid the {n} write(s) made before it; nothing changed")
    } else {
        format!(
            "undo incomplete ({}); state kept in {} for `headroom preflight rollback`",
            errors.join("; "),
            state_path.display()
        )
    };
    Error::Write {
        key: key.to_string(),
        value: value.to_string(),
        path: path.display().to_string(),
        reason: e.to_string(),
        undo,
    }
}

/// What a rollback did.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum RollbackOutcome {
    /// No state file: nothing applied, or already rolled back.
    Nothing,
    Restored {
        profile: String,
        /// (key, value restored).
        sysctls: Vec<(String, String)>,
        files_removed: Vec<String>,
        files_restored: Vec<String>,
        notes: Vec<String>,
    },
}

/// Restores what the recorded apply changed, then removes the state file.
/// Safe to run twice: the second run finds no state and does nothing.
pub fn rollback(root: &Root) -> Result<RollbackOutcome, Error> {
    let state_path = root.file(STATE_FILE);
    let text = match read_optional(&state_path).map_err(|e| Error::io(&state_path, e))? {
        None => return Ok(RollbackOutcome::Nothing),
        Some(t) => t,
    };
    let st_err = |message: String| Error::State {
        path: state_path.display().to_string(),
        message,
    };
    let state: State = serde_json::from_str(&text).map_err(|e| st_err(e.to_string()))?;
    let here = root.netns();
    if state.sysctls.iter().any(|c| c.key.starts_with("net.")) && state.netns != here {
        return Err(st_err(format!(
            "net.* values were applied in {}, this is {here}: run rollback in that namespace (ip netns exec ...)",
            state.netns
        )));
    }
    let mut errors = Vec::new();
    let mut notes = Vec::new();
    let mut restored = Vec::new();
    for c in state.sysctls.iter().rev() {
        let now = root.read_sysctl(&c.key).ok().flatten().unwrap_or_default();
        if !same_value(&now, &c.applied) && !same_value(&now, &c.previous) {
            notes.push(format!(
                "{} was changed since apply ({} -> {}); restored to {} anyway",
                c.key,
                c.applied,
                now.split_whitespace().collect::<Vec<_>>().join(" "),
                c.previous
            ));
        }
        match root.write_sysctl(&c.key, &c.previous) {
            Ok(()) => restored.push((c.key.clone(), c.previous.clone())),
            Err(e) => errors.push(format!("{} back to {}: {e}", c.key, c.previous)),
        }
    }
    let (mut removed, mut rewritten) = (Vec::new(), Vec::new());
    for f in state.files.iter().rev() {
        let full = root.file(&f.path);
        let r = match &f.previous {
            Some(prev) => write_atomic(&full, prev).map(|()| rewritten.push(f.path.clone())),
            None => remove_if_exists(&full).map(|()| removed.push(f.path.clone())),
        };
        if let Err(e) = r {
            errors.push(format!("{}: {e}", f.path));
        }
    }
    for d in state.created_dirs.iter().rev() {
        // Only if empty: something else may have been put there since.
        let _ = std::fs::remove_dir(root.file(d));
    }
    if !errors.is_empty() {
        return Err(st_err(format!(
            "could not restore {}; state kept, fix and run rollback again",
            errors.join("; ")
        )));
    }
    remove_if_exists(&state_path).map_err(|e| Error::io(&state_path, e))?;
    Ok(RollbackOutcome::Restored {
        profile: state.profile,
        sysctls: restored,
        files_removed: removed,
        files_restored: rewritten,
        notes,
    })
}
