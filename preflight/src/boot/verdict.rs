//! The `boot` part of a check row: what the next boot (restart, login) sets,
//! the file that sets it, other writers, and the verdict. A persisted value
//! that does not meet the rule fails the row at the rule's level, naming the
//! file to edit: "persisted value loses at boot: FILE sets K=V after OURS".

use super::limits::{self, Who};
use super::sysctl_d::{Outcome, Reader, SysctlD};
use super::units::{self, UnitNofile};
use super::writers::{Writer, Writers};
use crate::check::{summarize, target, Check, Report, Status};
use crate::profile::{NofileRule, Profile, SysctlRule};
use crate::readings::parse_numbers;
use crate::Root;
use serde::Serialize;

/// Everything the next boot reads, read once.
#[derive(Debug, Clone)]
pub struct BootView {
    pub tree: SysctlD,
    /// What applies sysctl.d at boot on this root.
    pub reader: Reader,
    pub writers: Writers,
    pub nofile: NofileView,
    /// fs.nr_open, what `unlimited` means to pam_limits.
    pub nr_open: u64,
}

/// Where the checked process gets RLIMIT_NOFILE from at its next start.
#[derive(Debug, Clone)]
pub enum NofileView {
    /// A systemd service: its unit and drop-ins.
    Unit(UnitNofile),
    /// A login session: pam_limits for this user.
    Login { who: Who, limits: limits::Nofile },
}

/// systemd-sysctl where systemd is installed, else procps (/etc/init.d/procps);
/// systemd-sysctl when neither is found (a fixture, a container image).
pub fn boot_reader(root: &Root) -> Reader {
    let has = |p: &str| root.file(p).exists();
    if has("/usr/lib/systemd/systemd-sysctl") || has("/lib/systemd/systemd-sysctl") {
        Reader::SystemdSysctl
    } else if has("/etc/init.d/procps") {
        Reader::SysctlSystem
    } else {
        Reader::SystemdSysctl
    }
}

/// Reads the boot view for a process (`pid`, else this one) or a unit.
pub fn read(root: &Root, pid: Option<u32>, unit: Option<&str>) -> BootView {
    let proc_dir = pid.map_or("self".to_string(), |p| p.to_string());
    let unit = unit
        .map(str::to_string)
        .or_else(|| pid.and_then(|p| units::unit_of_pid(root, p)));
    let nofile = match unit {
        Some(u) => NofileView::Unit(units::nofile(root, &u, None, None)),
        None => {
            let uid = std::fs::read_to_string(root.proc(&format!("{proc_dir}/status")))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("Uid:"))?
                        .split_whitespace()
                        .next()?
                        .parse()
                        .ok()
                })
                .unwrap_or(0);
            let who = Who::by_uid(root, uid);
            let limits = limits::nofile(&limits::files(root, None), &who);
            NofileView::Login { who, limits }
        }
    };
    BootView {
        tree: SysctlD::read(root),
        reader: boot_reader(root),
        writers: Writers::read(root),
        nofile,
        nr_open: root
            .read_sysctl("fs.nr_open")
            .ok()
            .flatten()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1 << 20),
    }
}

/// Another reader's result where it differs from the boot's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Elsewhere {
    pub by: String,
    pub value: Option<String>,
    pub file: Option<String>,
}

/// The `boot` object of a check row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BootRow {
    /// `holds` (meets the rule), `loses` (does not: the row fails),
    /// `not-persisted` (nothing sets it: the kernel default, or inherited).
    pub verdict: &'static str,
    /// What the next boot sets; `None`: nothing persisted.
    pub value: Option<String>,
    /// `FILE:LINE` that sets it (a symlink as `LINK -> TARGET:LINE`).
    pub file: Option<String>,
    /// The file to edit (a symlink's target).
    pub edit: Option<String>,
    /// Who applies it: `systemd-sysctl`, `sysctl --system`, `tuned`,
    /// `tuned reapply_sysctl`, `systemd unit NAME`, `pam_limits for USER`.
    pub by: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub elsewhere: Vec<Elsewhere>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub writers: Vec<Writer>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

pub fn satisfies(rule: &SysctlRule, value: &str) -> bool {
    parse_numbers(value).is_some_and(|v| target(rule, &v).is_none())
}

fn tidy(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The result of one reader as (value, file, edit, the entry that set it).
fn from_outcome(o: &Outcome) -> (Option<String>, Option<String>, Option<String>) {
    match o {
        Outcome::Set(e) => (
            e.value.as_deref().map(tidy),
            Some(e.at()),
            Some(e.file.edit().to_string()),
        ),
        Outcome::Excluded(e) => (None, Some(e.at()), Some(e.file.edit().to_string())),
        Outcome::Unset => (None, None, None),
    }
}

/// The boot row for one sysctl, and the failure text when it loses.
pub fn sysctl_row(view: &BootView, key: &str, rule: &SysctlRule) -> (BootRow, Option<String>) {
    let tree = &view.tree;
    let mut reader = view.reader;
    let mut outcome = tree.outcome(reader, key);
    let (mut value, mut file, mut edit) = from_outcome(&outcome);
    let mut by = reader.label().to_string();
    if let Some((t, (v, at))) = view
        .writers
        .tuned
        .as_ref()
        .and_then(|t| Some((t, t.get(key)?)))
    {
        // tuned starts after systemd-sysctl: its value stands unless it
        // re-applies the files and one of them names the key.
        let re = tree.outcome(Reader::TunedReapply, key);
        if t.reapply_sysctl && matches!(re, Outcome::Set(_)) {
            reader = Reader::TunedReapply;
            (value, file, edit) = from_outcome(&re);
            outcome = re;
            by = reader.label().to_string();
        } else {
            value = Some(tidy(v));
            file = Some(at.to_string());
            edit = at.rsplit_once(':').map(|(f, _)| f.to_string());
            outcome = Outcome::Unset;
            by = "tuned".into();
        }
    }
    let mut elsewhere = Vec::new();
    for other in [Reader::SystemdSysctl, Reader::SysctlSystem] {
        if other == view.reader {
            continue;
        }
        let (v, f, _) = from_outcome(&tree.outcome(other, key));
        if v != value && (v.is_some() || f.is_some()) {
            elsewhere.push(Elsewhere {
                by: other.label().into(),
                value: v,
                file: f,
            });
        }
    }
    let mut notes = Vec::new();
    if key.starts_with("net.netfilter.") && value.is_some() {
        notes.push("applied at boot only if nf_conntrack is loaded before systemd-sysctl runs (list it in /etc/modules-load.d)".into());
    }
    // A satisfying assignment that the winner comes after: the one that loses.
    let earlier = tree.assignments(reader, key).into_iter().rfind(|e| {
        e.value.as_deref().is_some_and(|v| satisfies(rule, v)) && outcome.entry() != Some(e)
    });
    let holds = value.as_deref().is_some_and(|v| satisfies(rule, v));
    let failure = match (&value, &outcome, &earlier) {
        _ if holds => None,
        (Some(v), _, Some(s)) => Some(format!(
            "persisted value loses at boot: {} sets {key}={v} after {}; edit {}",
            file.as_deref().unwrap_or("?"),
            s.at(),
            edit.as_deref().unwrap_or("?")
        )),
        (Some(v), _, None) => Some(format!(
            "the next boot sets {key}={v} ({}, {by}); edit {}",
            file.as_deref().unwrap_or("?"),
            edit.as_deref().unwrap_or("?")
        )),
        (None, Outcome::Excluded(x), Some(s)) => Some(format!(
            "persisted value loses at boot: {} excludes {key} after {}; edit {}",
            x.at(),
            s.at(),
            x.file.edit()
        )),
        _ => None,
    };
    let verdict = match (&failure, holds) {
        (Some(_), _) => "loses",
        (None, true) => "holds",
        _ => {
            notes.push("not persisted: the next boot leaves the kernel's default".into());
            "not-persisted"
        }
    };
    let row = BootRow {
        verdict,
        value,
        file,
        edit,
        by,
        elsewhere,
        writers: view.writers.for_key(key, tree),
        notes,
    };
    (row, failure)
}

fn fmt_limit(v: u64) -> String {
    if v == u64::MAX {
        "infinity".into()
    } else {
        v.to_string()
    }
}

/// The boot row for nofile: the unit's next start, or the next login.
pub fn nofile_row(view: &BootView, n: &NofileRule) -> (BootRow, Option<String>) {
    let ok = |s: u64, h: u64| s >= n.soft && h >= n.hard;
    let mut notes = Vec::new();
    let (value, file, edit, by, failure, persisted) = match &view.nofile {
        NofileView::Unit(u) => {
            let by = format!("systemd unit {}", u.unit);
            let value = Some(format!("{}:{}", fmt_limit(u.soft), fmt_limit(u.hard)));
            let (file, edit) = match &u.from {
                Some(a) => (Some(a.at()), Some(a.file.clone())),
                None => {
                    notes.push(format!(
                        "no LimitNOFILE= for {}: systemd's default {}:{}",
                        u.unit,
                        units::BUILTIN.0,
                        units::BUILTIN.1
                    ));
                    (None, None)
                }
            };
            let earlier = u
                .assignments
                .iter()
                .rfind(|a| a.limit.is_some_and(|(s, h)| ok(s, h)) && Some(*a) != u.from.as_ref());
            let failure = match (&u.from, earlier) {
                _ if ok(u.soft, u.hard) => None,
                (Some(w), Some(s)) => Some(format!(
                    "persisted value loses at restart: {} sets LimitNOFILE={} after {}; edit {}",
                    w.at(),
                    value.as_deref().unwrap_or(""),
                    s.at(),
                    w.file
                )),
                (Some(w), None) => Some(format!(
                    "the next start of {} gets LimitNOFILE={} ({}); edit {} or `headroom preflight apply --unit {}`",
                    u.unit,
                    value.as_deref().unwrap_or(""),
                    w.at(),
                    w.file,
                    u.unit.trim_end_matches(".service")
                )),
                (None, _) => None,
            };
            (value, file, edit, by, failure, u.from.is_some())
        }
        NofileView::Login { who, limits } => {
            let by = format!("pam_limits for {}", who.label());
            if let Some(at) = &limits.no_limits {
                notes.push(format!(
                    "{at}: a `<domain> -` line switches limits off for {}",
                    who.label()
                ));
            }
            let (soft, hard) = limits.values(view.nr_open);
            let value = (soft.is_some() || hard.is_some()).then(|| {
                let f = |v: Option<u64>| v.map_or("inherited".into(), |v| v.to_string());
                format!("soft {}, hard {}", f(soft), f(hard))
            });
            // The setting that misses, else the soft's.
            let hard_short = hard.is_some_and(|h| h < n.hard);
            let soft_short = soft.is_some_and(|s| s < n.soft);
            let (kind, w, need) = if hard_short {
                ("hard", limits.hard.as_ref(), n.hard)
            } else {
                ("soft", limits.soft.as_ref(), n.soft)
            };
            let earlier = limits
                .applied
                .iter()
                .rfind(|s| s.value.is_none_or(|v| v >= need) && Some(*s) != w);
            let failure = match (w, earlier) {
                _ if !(hard_short || soft_short) => None,
                (Some(w), Some(s)) => Some(format!(
                    "persisted value loses at login: {} sets {} nofile {} {} after {}; edit {}",
                    w.at(),
                    w.domain,
                    kind,
                    w.value.map_or("unlimited".into(), |v| v.to_string()),
                    s.at(),
                    w.file
                )),
                (Some(w), None) => Some(format!(
                    "the next login of {} gets nofile {kind} {} ({}); edit {}",
                    who.label(),
                    w.value.map_or("unlimited".into(), |v| v.to_string()),
                    w.at(),
                    w.file
                )),
                (None, _) => None,
            };
            let w = w.or(limits.soft.as_ref()).or(limits.hard.as_ref());
            (
                value,
                w.map(limits::Setting::at),
                w.map(|s| s.file.clone()),
                by,
                failure,
                soft.is_some() || hard.is_some(),
            )
        }
    };
    let verdict = match (&failure, persisted) {
        (Some(_), _) => "loses",
        (None, true) => "holds",
        (None, false) => "not-persisted",
    };
    let row = BootRow {
        verdict,
        value,
        file,
        edit,
        by,
        elsewhere: vec![],
        writers: vec![],
        notes,
    };
    (row, failure)
}

fn mark(c: &mut Check, row: BootRow, failure: Option<String>, level: Status) {
    if let Some(f) = failure {
        let runtime_failed = c.status != Status::Ok;
        c.status = c.status.max(level);
        c.reason = Some(match c.reason.take() {
            Some(r) if runtime_failed => format!("{r}; {f}"),
            _ => f,
        });
        let fix = format!(
            "edit {} ({} sets {})",
            row.edit.as_deref().unwrap_or("?"),
            row.file.as_deref().unwrap_or("?"),
            row.value.as_deref().unwrap_or("nothing")
        );
        c.remedy = Some(match c.remedy.take() {
            Some(r) if runtime_failed => format!("{r}; then {fix}"),
            _ => fix,
        });
    }
    c.boot = Some(row);
}

/// Adds the boot row to every sysctl and nofile check, fails the ones whose
/// persisted value the next boot undoes, and recounts the summary.
pub fn annotate(report: &mut Report, profile: &Profile, view: &BootView) {
    for c in &mut report.checks {
        match c.kind {
            "sysctl" => {
                let Some(rule) = profile.sysctls.get(&c.name) else {
                    continue;
                };
                let (row, failure) = sysctl_row(view, &c.name, rule);
                mark(c, row, failure, rule.level.into());
            }
            "rlimit" if c.name == "nofile" => {
                let Some(n) = &profile.nofile else { continue };
                let (row, failure) = nofile_row(view, n);
                mark(c, row, failure, n.level.into());
            }
            _ => {}
        }
    }
    report.summary = summarize(&report.checks);
}
