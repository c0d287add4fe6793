//! Checks: each rule of a profile against the current readings, one row per
//! rule with what it is, what it should be, a remedy, and the connection
//! capacity fixing it buys (from `headroom_core::predict`). One module per
//! area of rows (sysctls, nofile, the advisory rows); what a rule asks of a
//! value and what the profile does to the model's snapshot apart; the table
//! in `render`.

mod advisory;
mod model;
mod nofile;
mod render;
mod rule;
mod sysctl;

pub use model::applied_snapshot;
pub use render::render;
pub use rule::{join, required_text, target};

use crate::profile::{Level, Profile};
use crate::readings::Readings;
use crate::Error;
use headroom_core::{predict, ModelConfig, Prediction, SCHEMA_VERSION};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

impl From<Level> for Status {
    fn from(l: Level) -> Status {
        match l {
            Level::Fail => Status::Fail,
            Level::Warn => Status::Warn,
        }
    }
}

/// One row of `preflight check`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    /// The sysctl name, `nofile`, `memory`, `conntrack` or `capacity`.
    pub name: String,
    /// `sysctl`, `rlimit` or `advisory`.
    pub kind: &'static str,
    /// `net-namespace` (net.*: per namespace), `host` or `process`.
    pub scope: &'static str,
    /// The value now; `None` when the setting does not exist here.
    pub current: Option<String>,
    pub required: String,
    pub status: Status,
    /// Listed in `--ignore`: shown, but not counted in the exit code.
    pub ignored: bool,
    /// Why it is not ok, when that is more than "too low".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remedy: Option<String>,
    /// The capacity-model constraint this setting feeds, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub constraint: Option<String>,
    /// Predicted max connections now, and with only this check fixed. For
    /// `ephemeral-ports`: outbound connections per destination.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity_now: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity_fixed: Option<u64>,
    /// What the next boot (restart, login) sets and who sets it; filled by
    /// [`crate::boot::annotate`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot: Option<crate::boot::BootRow>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub ok: usize,
    pub warn: usize,
    pub fail: usize,
    pub ignored: usize,
}

/// The whole answer of `preflight check`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema_version: u32,
    pub profile: String,
    pub profile_chain: Vec<String>,
    pub target_connections: u64,
    /// The net namespace the net.* values were read in.
    pub netns: String,
    pub pid: u32,
    pub checks: Vec<Check>,
    /// The model on the snapshot as it is.
    pub now: Prediction,
    /// The model with every setting of the profile applied.
    pub applied: Prediction,
    pub summary: Summary,
}

impl Report {
    /// 0: every check passes; 1: a check fails; 2: only warnings.
    pub fn exit_code(&self) -> u8 {
        match (self.summary.fail, self.summary.warn) {
            (0, 0) => 0,
            (0, _) => 2,
            _ => 1,
        }
    }

    /// Marks the rows `patterns` select as ignored. A pattern that selects no
    /// row is an error: a typo must not silently ignore nothing.
    pub fn ignore(&mut self, patterns: &[String]) -> Result<(), Error> {
        let sel = Selector::new(patterns);
        for p in patterns {
            if !self.checks.iter().any(|c| Selector::one(p, &c.name)) {
                let names: Vec<&str> = self.checks.iter().map(|c| c.name.as_str()).collect();
                return Err(Error::Usage(format!(
                    "--ignore {p}: no such check (checks: {})",
                    names.join(", ")
                )));
            }
        }
        for c in &mut self.checks {
            c.ignored = sel.matches(&c.name);
        }
        self.summary = summarize(&self.checks);
        Ok(())
    }
}

pub(crate) fn summarize(checks: &[Check]) -> Summary {
    let mut s = Summary::default();
    for c in checks {
        if c.ignored {
            s.ignored += 1;
            continue;
        }
        match c.status {
            Status::Ok => s.ok += 1,
            Status::Warn => s.warn += 1,
            Status::Fail => s.fail += 1,
        }
    }
    s
}

/// A list of names or prefixes: `net` selects every `net.*` check, `nofile`
/// selects `nofile`, `net.core.somaxconn` selects itself.
#[derive(Debug, Clone, Default)]
pub struct Selector(Vec<String>);

impl Selector {
    pub fn new(patterns: &[String]) -> Selector {
        Selector(patterns.to_vec())
    }

    pub fn patterns(&self) -> &[String] {
        &self.0
    }

    pub(crate) fn one(pattern: &str, name: &str) -> bool {
        let p = pattern.trim_end_matches('.');
        name == p
            || name
                .strip_prefix(p)
                .is_some_and(|rest| rest.starts_with('.'))
    }

    pub fn matches(&self, name: &str) -> bool {
        self.0.iter().any(|p| Selector::one(p, name))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Checks `r` against `profile`. Pure: everything it needs is in `r`.
pub fn check(profile: &Profile, r: &Readings) -> Report {
    let cfg = ModelConfig::default();
    let base = model::base_snapshot(profile, r, &cfg);
    let now = predict(&base, &cfg);
    let r_model = Readings {
        snapshot: base.clone(),
        ..r.clone()
    };
    let applied = predict(&applied_snapshot(profile, &r_model), &cfg);
    let mut checks: Vec<Check> = profile
        .sysctls
        .iter()
        .map(|(key, rule)| sysctl::row(key, rule, r, &base, &now, &cfg))
        .collect();
    if let Some(n) = &profile.nofile {
        checks.push(nofile::row(&profile.name, n, r, &base, &now, &cfg));
    }
    if let Some(m) = &profile.memory {
        checks.push(advisory::memory(profile, m, &base, &now));
    }
    if let Some(ct) = &profile.conntrack {
        checks.push(advisory::conntrack(ct, &base));
    }
    checks.push(advisory::capacity(profile, &now, &applied));

    let summary = summarize(&checks);
    Report {
        schema_version: SCHEMA_VERSION,
        profile: profile.name.clone(),
        profile_chain: profile.chain.clone(),
        target_connections: profile.target_connections,
        netns: base.netns.clone(),
        pid: base.processes.first().map_or(0, |p| p.pid),
        checks,
        now,
        applied,
        summary,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{ConntrackAdvice, MemoryAdvice, NofileRule, SysctlRule};
    use headroom_core::{ProcessInfo, Snapshot, SystemLimits};
    use std::collections::BTreeMap;

    fn rule(
        min: Option<u64>,
        max: Option<u64>,
        exact: Option<u64>,
        range: Option<(u64, u64)>,
    ) -> SysctlRule {
        SysctlRule {
            min,
            max,
            exact,
            range,
            level: Level::Fail,
        }
    }

    #[test]
    fn targets_never_move_a_satisfied_value() {
        let min = rule(Some(100), None, None, None);
        assert_eq!(target(&min, &[50]), Some(vec![100]));
        assert_eq!(target(&min, &[100]), None);
        assert_eq!(target(&min, &[5000]), None, "a min never lowers");
        let max = rule(None, Some(30), None, None);
        assert_eq!(target(&max, &[60]), Some(vec![30]));
        assert_eq!(target(&max, &[15]), None);
        let both = rule(Some(10), Some(20), None, None);
        assert_eq!(target(&both, &[5]), Some(vec![10]));
        assert_eq!(target(&both, &[25]), Some(vec![20]));
        assert_eq!(target(&both, &[15]), None);
        let exact = rule(None, None, Some(1), None);
        assert_eq!(target(&exact, &[2]), Some(vec![1]));
        assert_eq!(target(&exact, &[1]), None);
        let range = rule(None, None, None, Some((1024, 65535)));
        assert_eq!(target(&range, &[32768, 60999]), Some(vec![1024, 65535]));
        assert_eq!(target(&range, &[1024, 65535]), None);
        // Only widens: a wider low end is kept.
        let range = rule(None, None, None, Some((10000, 65000)));
        assert_eq!(target(&range, &[2000, 60999]), Some(vec![2000, 65000]));
        assert_eq!(required_text(&range), "covers 10000-65000");
        assert_eq!(required_text(&both), "10..=20");
    }

    fn profile() -> Profile {
        let mut s = BTreeMap::new();
        s.insert(
            "fs.file-max".into(),
            rule(Some(1_000_000), None, None, None),
        );
        s.insert(
            "net.core.somaxconn".into(),
            rule(Some(65535), None, None, None),
        );
        s.insert(
            "net.core.netdev_max_backlog".into(),
            SysctlRule {
                min: Some(16384),
                level: Level::Warn,
                ..Default::default()
            },
        );
        s.insert(
            "net.ipv4.ip_local_port_range".into(),
            rule(None, None, None, Some((1024, 65535))),
        );
        s.insert(
            "net.ipv4.tcp_fin_timeout".into(),
            SysctlRule {
                max: Some(30),
                level: Level::Warn,
                ..Default::default()
            },
        );
        Profile {
            name: "t".into(),
            description: String::new(),
            chain: vec!["t.yaml".into()],
            target_connections: 100_000,
            observe_only: false,
            sysctls: s,
            nofile: Some(NofileRule {
                soft: 262144,
                hard: 262144,
                level: Level::Fail,
            }),
            memory: Some(MemoryAdvice {
                bytes_per_connection: 10240,
            }),
            conntrack: Some(ConntrackAdvice { min: 262144 }),
        }
    }

    fn readings() -> Readings {
        let mut sysctls = BTreeMap::new();
        for (k, v) in [
            ("fs.file-max", Some("200000")),
            ("fs.file-nr", Some("2000 0 200000")),
            ("fs.nr_open", Some("1048576")),
            ("net.core.somaxconn", Some("4096")),
            ("net.core.netdev_max_backlog", None),
            ("net.ipv4.ip_local_port_range", Some("32768\t60999")),
            ("net.ipv4.tcp_fin_timeout", Some("15")),
        ] {
            sysctls.insert(k.to_string(), v.map(str::to_string));
        }
        Readings {
            sysctls,
            snapshot: Snapshot {
                netns: "net:[4026532000]".into(),
                processes: vec![ProcessInfo {
                    pid: 7,
                    nofile_soft: Some(20000),
                    nofile_hard: Some(20000),
                    open_fds: 8,
                    ..Default::default()
                }],
                system: SystemLimits {
                    nr_open: 1 << 20,
                    file_max: 200_000,
                    file_nr_allocated: 2000,
                    somaxconn: 4096,
                    ip_local_port_range: (32768, 60999),
                    mem_total_bytes: 24 << 30,
                    mem_available_bytes: 20 << 30,
                    conntrack_max: Some(65536),
                    conntrack_count: Some(0),
                    page_size: 4096,
                    ..Default::default()
                },
                ..Default::default()
            },
            cap_sys_resource: false,
            self_process: true,
        }
    }

    fn row<'a>(r: &'a Report, name: &str) -> &'a Check {
        r.checks
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no row {name}"))
    }

    #[test]
    fn every_rule_kind_gets_a_row_with_capacity() {
        let rep = check(&profile(), &readings());
        let names: Vec<&str> = rep.checks.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "fs.file-max",
                "net.core.netdev_max_backlog",
                "net.core.somaxconn",
                "net.ipv4.ip_local_port_range",
                "net.ipv4.tcp_fin_timeout",
                "nofile",
                "memory",
                "conntrack",
                "capacity"
            ]
        );
        // Now: nofile 20000 - 8 open - 32 reserve binds.
        assert_eq!(rep.now.binding, "nofile");
        assert_eq!(rep.now.predicted_max_connections, 19960);
        // Applied: nofile 262144 - 40 = 262104 vs file-max 1e6 - 2000: nofile still binds.
        assert_eq!(rep.applied.predicted_max_connections, 262104);

        let fm = row(&rep, "fs.file-max");
        assert_eq!((fm.status, fm.scope), (Status::Fail, "host"));
        assert_eq!(
            fm.remedy.as_deref(),
            Some("sysctl -w fs.file-max='1000000'")
        );
        // file-max alone buys nothing while nofile binds.
        assert_eq!(
            (fm.capacity_now, fm.capacity_fixed),
            (Some(19960), Some(19960))
        );

        let absent = row(&rep, "net.core.netdev_max_backlog");
        assert_eq!(
            (absent.status, absent.current.as_deref()),
            (Status::Warn, None)
        );
        assert!(absent.reason.as_ref().unwrap().contains("net:[4026532000]"));

        let ports = row(&rep, "net.ipv4.ip_local_port_range");
        assert_eq!(ports.current.as_deref(), Some("32768 60999"));
        assert_eq!(
            (ports.capacity_now, ports.capacity_fixed),
            (Some(28232), Some(64512))
        );
        assert_eq!(ports.scope, "net-namespace");

        assert_eq!(row(&rep, "net.ipv4.tcp_fin_timeout").status, Status::Ok);

        let nofile = row(&rep, "nofile");
        assert_eq!(nofile.status, Status::Fail);
        assert!(
            nofile
                .reason
                .as_ref()
                .unwrap()
                .contains("lacks CAP_SYS_RESOURCE"),
            "{nofile:?}"
        );
        // nofile alone moves the wall to file-max: 200000 - 2000 allocated.
        assert_eq!(nofile.capacity_fixed, Some(198000));

        // 100000 x 10240 B = 977 MiB < 20 GiB.
        let mem = row(&rep, "memory");
        assert_eq!(mem.status, Status::Ok);
        assert_eq!(mem.required, ">= 977 MiB (100000 connections x 10240 B)");
        assert_eq!(row(&rep, "conntrack").status, Status::Warn);
        assert_eq!(row(&rep, "capacity").status, Status::Ok);

        assert_eq!(
            rep.summary,
            Summary {
                ok: 3,
                warn: 2,
                fail: 4,
                ignored: 0
            }
        );
        assert_eq!(rep.exit_code(), 1);
        let text = render(&rep);
        assert!(text.contains("net namespace net:[4026532000]"), "{text}");
        assert!(
            text.contains("capacity: 19960 now (binding nofile), 262104 with t applied"),
            "{text}"
        );
    }

    #[test]
    fn cap_sys_resource_and_soft_only_change_the_reason() {
        let mut r = readings();
        r.cap_sys_resource = true;
        let rep = check(&profile(), &r);
        assert!(row(&rep, "nofile")
            .reason
            .as_ref()
            .unwrap()
            .contains("prlimit --pid 7 --nofile=262144:262144"));
        r.snapshot.processes[0].nofile_hard = None;
        let rep = check(&profile(), &r);
        assert!(row(&rep, "nofile")
            .reason
            .as_ref()
            .unwrap()
            .starts_with("soft limit 20000 < 262144"));
    }

    #[test]
    fn ignore_and_exit_codes() {
        let mut rep = check(&profile(), &readings());
        let err = rep.ignore(&["nofiles".into()]).unwrap_err().to_string();
        assert!(err.contains("--ignore nofiles: no such check"), "{err}");
        rep.ignore(&[
            "fs".into(),
            "nofile".into(),
            "net.core.somaxconn".into(),
            "net.ipv4.ip_local_port_range".into(),
        ])
        .unwrap();
        assert_eq!(
            rep.summary,
            Summary {
                ok: 3,
                warn: 2,
                fail: 0,
                ignored: 4
            }
        );
        assert_eq!(rep.exit_code(), 2);
        rep.ignore(&[
            "fs".into(),
            "net".into(),
            "nofile".into(),
            "conntrack".into(),
        ])
        .unwrap();
        assert_eq!(rep.exit_code(), 0);
        let v = serde_json::to_value(&rep).unwrap();
        assert_eq!(v["schema_version"], SCHEMA_VERSION);
        assert_eq!(v["checks"][0]["ignored"], true);
        assert_eq!(v["now"]["predicted_max_connections"], 19960);
    }

    #[test]
    fn selector_matches_names_and_prefixes() {
        let s = Selector::new(&["net".into(), "nofile".into()]);
        assert!(s.matches("net.core.somaxconn"));
        assert!(s.matches("nofile"));
        assert!(!s.matches("netfoo"));
        assert!(!s.matches("fs.nr_open"));
        assert!(Selector::new(&["net.core".into()]).matches("net.core.somaxconn"));
    }
}
