//! `--apply`: which remedies may be written, and which are left alone and
//! why. Only a sysctl the named profile bounds (or nofile, when the profile
//! has a nofile rule) is written, and only through preflight's
//! transactional apply; a key another writer manages, or one whose value
//! changed since advise read it, is backed off (as bpftune does when an
//! operator touches a tunable it manages). Application configuration is
//! advised, never edited.

use crate::{Advice, RemedyKind, Severity};
use headroom_core::Snapshot;
use serde::Serialize;
use std::collections::BTreeMap;

/// The value a snapshot holds for a sysctl advice may write, as the kernel
/// prints it; `None` for keys the snapshot does not carry.
pub fn snapshot_value(s: &Snapshot, key: &str) -> Option<String> {
    let sys = &s.system;
    Some(match key {
        "net.core.somaxconn" => sys.somaxconn.to_string(),
        "net.ipv4.tcp_max_syn_backlog" => sys.tcp_max_syn_backlog.to_string(),
        "net.ipv4.ip_local_port_range" => {
            format!(
                "{} {}",
                sys.ip_local_port_range.0, sys.ip_local_port_range.1
            )
        }
        "fs.file-max" => sys.file_max.to_string(),
        "fs.nr_open" => sys.nr_open.to_string(),
        "net.netfilter.nf_conntrack_max" => sys.conntrack_max?.to_string(),
        "net.ipv4.tcp_mem" => {
            let (a, b, c) = sys.tcp_mem_pages?;
            format!("{a} {b} {c}")
        }
        _ => return None,
    })
}

/// A remedy `--apply` does not write, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skip {
    pub key: String,
    pub reason: String,
}

/// What `--apply` hands to preflight.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Selection {
    /// Sysctl keys to apply, within the profile's bounds.
    pub sysctls: Vec<String>,
    /// Apply the profile's nofile rule (limits.d, and the unit's drop-in).
    pub nofile: bool,
    /// The systemd unit of the target, for its LimitNOFILE= drop-in.
    pub unit: Option<String>,
    pub skipped: Vec<Skip>,
}

impl Selection {
    pub fn is_empty(&self) -> bool {
        self.sysctls.is_empty() && !self.nofile
    }

    /// The names for preflight's `--only` selector.
    pub fn only(&self) -> Vec<String> {
        let mut v = self.sysctls.clone();
        if self.nofile {
            v.push("nofile".into());
        }
        v
    }
}

fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The remedies of hit and near advice that `--apply` may write.
///
/// `profile_sysctls` are the keys the profile bounds; `observed` the values
/// advise read (its snapshot), `now` the values read again just before the
/// write: a difference means another writer set the key since.
pub fn select(
    advice: &[Advice],
    profile: &str,
    profile_sysctls: &[String],
    profile_nofile: bool,
    observed: &BTreeMap<String, String>,
    now: &BTreeMap<String, String>,
) -> Selection {
    let mut sel = Selection::default();
    let skip = |key: &str, reason: String| (key.to_string(), reason);
    let mut skipped: Vec<(String, String)> = Vec::new();
    for a in advice.iter().filter(|a| a.severity != Severity::Binding) {
        for r in &a.remedies {
            match r.kind {
                RemedyKind::Sysctl => {
                    let k = &r.key;
                    if sel.sysctls.contains(k) {
                        continue;
                    }
                    if !profile_sysctls.contains(k) {
                        skipped.push(skip(
                            k,
                            format!("not bounded by profile {profile}: advised only"),
                        ));
                    } else if !r.owner_conflicts.is_empty() {
                        skipped.push(skip(
                            k,
                            format!(
                                "another writer manages it ({}): backing off",
                                r.owner_conflicts.join("; ")
                            ),
                        ));
                    } else if let Some((o, n)) = observed
                        .get(k)
                        .zip(now.get(k))
                        .filter(|(o, n)| squash(o) != squash(n))
                    {
                        skipped.push(skip(
                            k,
                            format!(
                                "changed since advise read it ({} -> {}): another writer set it, backing off",
                                squash(o),
                                squash(n)
                            ),
                        ));
                    } else {
                        sel.sysctls.push(k.clone());
                    }
                }
                RemedyKind::LimitNofile => {
                    if !profile_nofile {
                        skipped.push(skip(
                            &r.key,
                            format!("profile {profile} has no nofile rule: advised only"),
                        ));
                    } else {
                        sel.nofile = true;
                        if r.key == "LimitNOFILE" {
                            sel.unit = r
                                .place
                                .strip_prefix("/etc/systemd/system/")
                                .and_then(|p| p.split_once(".service.d/"))
                                .map(|(u, _)| u.to_string());
                        }
                    }
                }
                RemedyKind::AppDirective => skipped.push(skip(
                    &r.key,
                    format!(
                        "application configuration ({}) is advised, never edited",
                        r.place
                    ),
                )),
                _ => skipped.push(skip(
                    &r.key,
                    "not a setting headroom writes: advised only".into(),
                )),
            }
        }
    }
    for (key, reason) in skipped {
        if !sel.skipped.iter().any(|s| s.key == key) {
            sel.skipped.push(Skip { key, reason });
        }
    }
    sel
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::{self, listener, Owned};
    use crate::{advise, Config};

    fn backlog_advice(owners: &Owned) -> Vec<Advice> {
        let mut s = fixture::host();
        s.system.somaxconn = 64;
        s.listeners = vec![listener(7878, 9, 9, 8)];
        advise(&s, None, owners, &Config::default())
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn applies_bounded_sysctls_and_advises_the_rest() {
        let a = backlog_advice(&Owned::default());
        let keys = vec!["net.core.somaxconn".to_string()];
        let seen = map(&[("net.core.somaxconn", "64")]);
        let sel = select(&a, "c10k", &keys, true, &seen, &seen);
        assert_eq!(sel.sysctls, vec!["net.core.somaxconn"]);
        assert!(!sel.nofile, "binding advice is not applied");
        assert_eq!(sel.skipped.len(), 1);
        assert_eq!(sel.skipped[0].key, "listen() backlog");
        assert!(sel.skipped[0].reason.contains("advised, never edited"));
        let sel = select(&a, "custom", &[], true, &seen, &seen);
        assert!(sel.is_empty());
        assert_eq!(
            sel.skipped[1].reason,
            "not bounded by profile custom: advised only"
        );
    }

    #[test]
    fn backs_off_a_key_changed_since_or_managed_by_another_writer() {
        let a = backlog_advice(&Owned::default());
        let keys = vec!["net.core.somaxconn".to_string()];
        let sel = select(
            &a,
            "c10k",
            &keys,
            true,
            &map(&[("net.core.somaxconn", "64")]),
            &map(&[("net.core.somaxconn", "1024")]),
        );
        assert!(sel.sysctls.is_empty());
        assert_eq!(
            sel.skipped[1].reason,
            "changed since advise read it (64 -> 1024): another writer set it, backing off"
        );
        let mut owners = Owned::default();
        owners
            .writers
            .insert("net.core.somaxconn".into(), vec!["tuned (pid 9, profile web) sets net.core.somaxconn = 64 from /etc/tuned/web/tuned.conf and reapplies it".into()]);
        let a = backlog_advice(&owners);
        let seen = map(&[("net.core.somaxconn", "64")]);
        let sel = select(&a, "c10k", &keys, true, &seen, &seen);
        assert!(sel.sysctls.is_empty());
        assert!(sel.skipped[1]
            .reason
            .starts_with("another writer manages it (tuned (pid 9"));
    }

    #[test]
    fn snapshot_values_print_as_the_kernel_does() {
        let s = fixture::host();
        assert_eq!(
            snapshot_value(&s, "net.core.somaxconn").as_deref(),
            Some("4096")
        );
        assert_eq!(
            snapshot_value(&s, "net.ipv4.ip_local_port_range").as_deref(),
            Some("32768 60999")
        );
        assert_eq!(snapshot_value(&s, "net.ipv4.tcp_mem"), None);
        assert_eq!(snapshot_value(&s, "vm.swappiness"), None);
    }

    #[test]
    fn emfile_in_a_unit_selects_nofile_with_the_unit() {
        let mut s = fixture::host();
        s.processes[0].nofile_soft = Some(64);
        s.processes[0].open_fds = 64;
        s.fd_errors = vec![headroom_core::FdError {
            pid: 42,
            syscall: "accept4".into(),
            errno: "EMFILE".into(),
            count: 1,
        }];
        let mut owners = Owned::default();
        owners.nofile.insert(
            42,
            crate::NofileOwner::Unit {
                unit: "api.service".into(),
                limit_nofile: None,
            },
        );
        let a = advise(&s, None, &owners, &Config::default());
        let sel = select(&a, "c10k", &[], true, &BTreeMap::new(), &BTreeMap::new());
        assert!(sel.nofile);
        assert_eq!(sel.unit.as_deref(), Some("api"));
        assert_eq!(sel.only(), vec!["nofile"]);
    }
}
