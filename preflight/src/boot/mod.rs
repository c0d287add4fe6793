//! Ownership: what the next boot (or the next restart, or the next login)
//! sets for each key preflight reads or writes, and which file sets it.
//!
//! Each reader has its own file with the rules of the program it models:
//! [`sysctl_d`] (systemd-sysctl, procps `sysctl --system`, tuned's
//! reapply_sysctl), [`limits`] (pam_limits), [`units`] (a systemd service's
//! LimitNOFILE=), [`writers`] (tuned, bpftune, Cilium, kube-proxy). Everything
//! is read through a [`Root`], so every rule runs on fixture trees in tests.
//! [`verdict`] turns them into the `boot` part of a check row; [`persist`]
//! tells `apply` whether its file would win.

pub mod limits;
pub mod persist;
pub mod sysctl_d;
pub mod units;
pub mod verdict;
pub mod writers;

pub use verdict::{annotate, BootRow};

use crate::Root;
use std::path::Path;

/// A configuration file as one of these programs reads it: its text, and
/// where a symlink pointed (resolved inside the root, so that a fixture's
/// `99-sysctl.conf -> ../sysctl.conf` reads the fixture's file).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Loaded {
    /// The text; empty for a missing target or a mask (`-> /dev/null`).
    pub text: String,
    /// The system path a symlink ends at (`/etc/sysctl.conf`, `/dev/null`).
    pub target: Option<String>,
    /// True when the path (after symlinks) is a regular file.
    pub regular: bool,
    /// True when the path (after symlinks) is a directory.
    pub dir: bool,
}

/// Reads the system path `abs` under `root`, following symlinks inside the
/// root (at most 16, like the kernel's 40 but enough for configuration).
pub fn load(root: &Root, abs: &str) -> Loaded {
    let mut path = abs.to_string();
    let mut target = None;
    for _ in 0..16 {
        let full = root.file(&path);
        match std::fs::read_link(&full) {
            Ok(link) => {
                let link = link.to_string_lossy().into_owned();
                path = if link.starts_with('/') {
                    link
                } else {
                    let parent = Path::new(&path).parent().unwrap_or(Path::new("/"));
                    normalize_path(&parent.join(&link).to_string_lossy())
                };
                target = Some(path.clone());
                if path == "/dev/null" {
                    return Loaded {
                        target,
                        regular: false,
                        ..Default::default()
                    };
                }
            }
            Err(_) => {
                let meta = std::fs::metadata(&full).ok();
                let regular = meta.as_ref().is_some_and(|m| m.is_file());
                let dir = meta.as_ref().is_some_and(|m| m.is_dir());
                let text = if regular {
                    std::fs::read_to_string(&full).unwrap_or_default()
                } else {
                    String::new()
                };
                return Loaded {
                    text,
                    target,
                    regular,
                    dir,
                };
            }
        }
    }
    Loaded {
        target,
        ..Default::default()
    }
}

/// `/etc/sysctl.d/../sysctl.conf` -> `/etc/sysctl.conf`.
fn normalize_path(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    format!("/{}", parts.join("/"))
}

/// The names in a directory under the root ending in `suffix`, unsorted;
/// none when the directory does not exist.
pub fn list(root: &Root, dir: &str, suffix: &str) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(root.file(dir)) else {
        return vec![];
    };
    rd.flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.len() > suffix.len() && n.ends_with(suffix) && !n.starts_with('.'))
        .collect()
}

/// A file name `apply` may write (`--sysctl-file` and friends): a plain name
/// ending in `.conf`, nothing that could leave its directory.
pub fn valid_conf_name(flag: &str, name: &str) -> Result<(), crate::Error> {
    let ok = name.len() > 5
        && name.ends_with(".conf")
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
    if ok {
        Ok(())
    } else {
        Err(crate::Error::Usage(format!(
            "{flag} {name:?}: a file name such as 99-zz-headroom.conf (letters, digits, - _ . @, ending in .conf)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let t = tempfile::tempdir().unwrap();
        let root = Root::at(t.path());
        fs::create_dir_all(t.path().join("etc/sysctl.d")).unwrap();
        fs::write(t.path().join("etc/sysctl.conf"), "a = 1\n").unwrap();
        std::os::unix::fs::symlink(
            "../sysctl.conf",
            t.path().join("etc/sysctl.d/99-sysctl.conf"),
        )
        .unwrap();
        std::os::unix::fs::symlink("/etc/sysctl.conf", t.path().join("etc/sysctl.d/abs.conf"))
            .unwrap();
        std::os::unix::fs::symlink("/dev/null", t.path().join("etc/sysctl.d/masked.conf")).unwrap();
        let l = load(&root, "/etc/sysctl.d/99-sysctl.conf");
        assert_eq!(
            (l.text.as_str(), l.target.as_deref()),
            ("a = 1\n", Some("/etc/sysctl.conf"))
        );
        assert!(l.regular);
        assert_eq!(load(&root, "/etc/sysctl.d/abs.conf").text, "a = 1\n");
        let m = load(&root, "/etc/sysctl.d/masked.conf");
        assert_eq!(
            (m.text.as_str(), m.target.as_deref()),
            ("", Some("/dev/null"))
        );
        assert!(!load(&root, "/etc/nope.conf").regular);
        assert!(load(&root, "/etc/sysctl.d").dir);
        assert!(valid_conf_name("--sysctl-file", "99-zz-headroom.conf").is_ok());
        for bad in ["../x.conf", "x", ".conf", "a b.conf", ".hidden.conf"] {
            assert!(valid_conf_name("--sysctl-file", bad).is_err(), "{bad}");
        }
    }
}
