//! Ownership: where a value must be written to stick. For a sysctl, the
//! file whose assignment wins at boot and the other programs that write it
//! at run time; for RLIMIT_NOFILE, the systemd unit that starts the process
//! (a LimitNOFILE= drop-in) or the login session (pam_limits' limits.d).
//!
//! Advice reads this through the [`Owners`] trait; [`PreflightOwners`] is
//! the adapter over preflight's boot module (systemd-sysctl's order,
//! limits.d, unit drop-ins, tuned/bpftune/Cilium/kube-proxy), read once
//! through a [`Root`].

use headroom_preflight::boot::sysctl_d::{Outcome, Reader, SysctlD};
use headroom_preflight::boot::writers::Writers;
use headroom_preflight::boot::{limits::Who, units, verdict};
use headroom_preflight::Root;

/// A value set at boot (or at a unit's start) and the file that sets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootValue {
    pub value: String,
    pub file: String,
}

/// Who gives a process its RLIMIT_NOFILE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NofileOwner {
    /// A systemd service (`nginx.service`): LimitNOFILE= in a drop-in.
    Unit {
        unit: String,
        /// The LimitNOFILE= (or DefaultLimitNOFILE=) that decides now, and
        /// its file; `None`: systemd's built-in default.
        limit_nofile: Option<BootValue>,
    },
    /// A login session or a process started from one: pam_limits.
    Session { user: String },
    /// Not knowable (the process's files unreadable); the reason.
    Unknown { why: String },
}

pub trait Owners {
    /// The value the next boot sets for `key` and the file an operator
    /// edits to change it; `None` when nothing sets it (the kernel default).
    fn sysctl_boot(&self, key: &str) -> Option<BootValue>;
    /// Programs that write `key` besides the operator, one line each.
    fn other_writers(&self, key: &str) -> Vec<String>;
    /// Who gives `pid` its RLIMIT_NOFILE.
    fn nofile_owner(&self, pid: u32) -> NofileOwner;
}

/// Knows nothing: every sysctl at its kernel default, nobody else writes.
pub struct NoOwners;

impl Owners for NoOwners {
    fn sysctl_boot(&self, _key: &str) -> Option<BootValue> {
        None
    }
    fn other_writers(&self, _key: &str) -> Vec<String> {
        Vec::new()
    }
    fn nofile_owner(&self, _pid: u32) -> NofileOwner {
        NofileOwner::Unknown {
            why: "ownership not read".into(),
        }
    }
}

/// Preflight's view of the next boot, read once.
pub struct PreflightOwners {
    root: Root,
    tree: SysctlD,
    reader: Reader,
    writers: Writers,
}

impl PreflightOwners {
    pub fn read(root: &Root) -> PreflightOwners {
        PreflightOwners {
            root: root.clone(),
            tree: SysctlD::read(root),
            reader: verdict::boot_reader(root),
            writers: Writers::read(root),
        }
    }
}

fn limit_text(limit: (u64, u64)) -> String {
    let one = |v: u64| {
        if v == u64::MAX {
            "infinity".to_string()
        } else {
            v.to_string()
        }
    };
    if limit.0 == limit.1 {
        one(limit.0)
    } else {
        format!("{}:{}", one(limit.0), one(limit.1))
    }
}

impl Owners for PreflightOwners {
    fn sysctl_boot(&self, key: &str) -> Option<BootValue> {
        match self.tree.outcome(self.reader, key) {
            Outcome::Set(e) => Some(BootValue {
                value: e
                    .value
                    .as_deref()?
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" "),
                file: e.file.edit().to_string(),
            }),
            _ => None,
        }
    }

    fn other_writers(&self, key: &str) -> Vec<String> {
        self.writers
            .for_key(key, &self.tree)
            .into_iter()
            .map(|w| {
                let v = w.value.map(|v| format!(" sets {v}")).unwrap_or_default();
                format!("{}{v} ({}): {}", w.name, w.source, w.detail)
            })
            .collect()
    }

    fn nofile_owner(&self, pid: u32) -> NofileOwner {
        let status = std::fs::read_to_string(self.root.proc(&format!("{pid}/status")));
        let Ok(status) = status else {
            return NofileOwner::Unknown {
                why: format!("/proc/{pid}/status unreadable"),
            };
        };
        if let Some(unit) = units::unit_of_pid(&self.root, pid) {
            let n = units::nofile(&self.root, &unit, None, None);
            return NofileOwner::Unit {
                unit: n.unit,
                limit_nofile: n.from.and_then(|a| {
                    Some(BootValue {
                        value: limit_text(a.limit?),
                        file: a.file,
                    })
                }),
            };
        }
        let uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        let who = Who::by_uid(&self.root, uid);
        NofileOwner::Session {
            user: if who.name.is_empty() {
                format!("#{uid}")
            } else {
                who.name
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::path::Path;

    fn put(root: &Path, abs: &str, text: &str) {
        let p = root.join(abs.trim_start_matches('/'));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    #[test]
    fn sysctl_owner_is_the_winning_file_and_tuners_are_other_writers() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        put(
            r,
            "/usr/lib/sysctl.d/50-default.conf",
            "net.core.somaxconn = 128\n",
        );
        put(r, "/etc/sysctl.d/70-app.conf", "net/core/somaxconn=1024\n");
        put(
            r,
            "/etc/sysctl.conf",
            "net.ipv4.ip_local_port_range = 1024\t65000\n",
        );
        fs::create_dir_all(r.join("etc/sysctl.d")).unwrap();
        std::os::unix::fs::symlink("../sysctl.conf", r.join("etc/sysctl.d/99-sysctl.conf"))
            .unwrap();
        put(r, "/proc/812/comm", "bpftune\n");
        let o = PreflightOwners::read(&Root::at(r));
        assert_eq!(
            o.sysctl_boot("net.core.somaxconn"),
            Some(BootValue {
                value: "1024".into(),
                file: "/etc/sysctl.d/70-app.conf".into()
            })
        );
        assert_eq!(
            o.sysctl_boot("net.ipv4.ip_local_port_range"),
            Some(BootValue {
                value: "1024 65000".into(),
                file: "/etc/sysctl.conf".into()
            })
        );
        assert_eq!(o.sysctl_boot("net.ipv4.tcp_fin_timeout"), None);
        let w = o.other_writers("net.ipv4.tcp_mem");
        assert_eq!(w.len(), 1);
        assert!(w[0].starts_with("bpftune (pid 812): "), "{w:?}");
        assert!(o.other_writers("net.core.somaxconn").is_empty());
    }

    #[test]
    fn nofile_owner_is_the_unit_with_its_limit_or_the_session_user() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        put(
            r,
            "/proc/7/cgroup",
            "0::/system.slice/redis-server.service\n",
        );
        put(
            r,
            "/proc/7/status",
            "Name:\tredis-server\nUid:\t105\t105\t105\t105\n",
        );
        put(
            r,
            "/lib/systemd/system/redis-server.service",
            "[Service]\nLimitNOFILE=65535\n",
        );
        put(
            r,
            "/etc/systemd/system/redis-server.service.d/limits.conf",
            "[Service]\nLimitNOFILE=10032\n",
        );
        put(
            r,
            "/proc/8/cgroup",
            "0::/user.slice/user-1000.slice/session-2.scope\n",
        );
        put(
            r,
            "/proc/8/status",
            "Name:\tpython3\nUid:\t1000\t1000\t1000\t1000\n",
        );
        put(
            r,
            "/etc/passwd",
            "root:x:0:0::/root:/bin/bash\nann:x:1000:1000::/home/ann:/bin/sh\n",
        );
        let o = PreflightOwners::read(&Root::at(r));
        assert_eq!(
            o.nofile_owner(7),
            NofileOwner::Unit {
                unit: "redis-server.service".into(),
                limit_nofile: Some(BootValue {
                    value: "10032".into(),
                    file: "/etc/systemd/system/redis-server.service.d/limits.conf".into()
                })
            }
        );
        assert_eq!(
            o.nofile_owner(8),
            NofileOwner::Session { user: "ann".into() }
        );
        assert!(matches!(o.nofile_owner(9), NofileOwner::Unknown { .. }));
    }
}
