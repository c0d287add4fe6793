//! headroom-advise: from the live signals of one target (ListenOverflows
//! and accept-queue peaks, EMFILE/ENFILE/EADDRNOTAVAIL per process, TIME_WAIT
//! against the port range, memory, the application's own caps) to ranked
//! advice: what was seen, the remedy in the owner's own terms (a sysctl, a
//! LimitNOFILE drop-in, the server's own directive), the capacity it buys
//! (the model's numbers now and after), where it must be written to stick,
//! and the exact command or edit.
//!
//! Everything here is pure: snapshots in (two, a short interval apart, so
//! that counters have deltas), advice out. "After" is always the same model
//! run on a copy of the snapshot with the change made: no second formula.
//! Where a setting is owned at boot comes through the [`Owners`] trait, read
//! by preflight's boot module under an injectable root ([`PreflightOwners`]).

pub mod app_caps;
pub mod apply;
pub mod backlog;
pub mod fds;
pub mod kernel;
pub mod memory;
pub mod owners;
pub mod ports;
pub mod render;
pub mod watch;

use headroom_core::{predict, ModelConfig, Prediction, Snapshot};
use serde::Serialize;
use std::collections::BTreeMap;

pub use owners::{BootValue, NoOwners, NofileOwner, Owners, PreflightOwners};

/// The file advise (and `preflight apply`) writes persisted sysctls to.
pub const SYSCTL_FILE: &str = "/etc/sysctl.d/90-headroom.conf";
/// The pam_limits file for a login session's nofile.
pub const LIMITS_FILE: &str = "/etc/security/limits.d/90-headroom.conf";

/// `/etc/systemd/system/NAME.service.d/90-headroom.conf` (NAME with or without `.service`).
pub fn dropin_path(unit: &str) -> String {
    let name = unit.strip_suffix(".service").unwrap_or(unit);
    format!("/etc/systemd/system/{name}.service.d/90-headroom.conf")
}

/// How urgent a piece of advice is; the order is the ranking's first key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The limit was hit: overflows, fd errors, a cap reached.
    Hit,
    /// Close to the limit (utilisation at or above [`Config::near`]).
    Near,
    /// Nothing hit yet, but this is the wall the model predicts first.
    Binding,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Hit => "hit",
            Severity::Near => "near",
            Severity::Binding => "binding",
        }
    }
}

/// What kind of change a remedy is, in its owner's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RemedyKind {
    /// A kernel sysctl (`sysctl -w`, persisted in sysctl.d).
    Sysctl,
    /// RLIMIT_NOFILE: a unit's LimitNOFILE= drop-in, or limits.d for a session.
    LimitNofile,
    /// A setting of the server's own configuration (never edited by headroom).
    AppDirective,
    /// More source addresses for a client's connections to one destination.
    SourceAddresses,
    /// A cgroup's memory.max (MemoryMax= of its unit).
    MemoryMax,
    /// More memory, or a lower cost per connection.
    Memory,
}

/// What was seen: a name, one line with the numbers, and the numbers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Signal {
    /// `listen-overflows`, `accept-queue-full`, `emfile`, `eaddrnotavail`, ...
    pub name: String,
    pub summary: String,
    pub numbers: BTreeMap<String, u64>,
}

/// One change: the key in its owner's terms, the value, where it must be
/// written to stick, and the exact command or edit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Remedy {
    pub kind: RemedyKind,
    /// `net.core.somaxconn`, `LimitNOFILE`, `nofile`, `maxclients`, `tcp-backlog`, ...
    pub key: String,
    /// The value now, when known.
    pub current: Option<String>,
    pub value: String,
    /// The file (or place) that must hold the value for it to survive a
    /// reboot, restart or reload: the one that wins.
    #[serde(rename = "where")]
    pub place: String,
    /// Why there: who sets it at boot now.
    pub why_there: String,
    /// The exact command, or the edit to make.
    pub command: String,
    /// Other writers of this key (tuned, bpftune, kube-proxy): advise backs
    /// off a key they manage.
    pub owner_conflicts: Vec<String>,
}

/// One piece of advice.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Advice {
    /// 1 = do this first.
    pub rank: usize,
    /// Stable identity: `listen-backlog 127.0.0.1:8080`, `nofile pid 42`.
    pub id: String,
    /// The rule that gave it: `listen-backlog`, `nofile`, `file-max`,
    /// `ephemeral-ports`, `source-addresses`, `app-cap`, `memory`,
    /// `cgroup-memory`, `conntrack`, `tcp-mem`.
    pub rule: String,
    pub severity: Severity,
    pub signal: Signal,
    /// Every change this advice needs (all of them buy `capacity_after`).
    pub remedies: Vec<Remedy>,
    /// What the capacity counts: `connections` (the model's predicted
    /// maximum), `accept queue of ADDR`, `connections to one destination`.
    pub capacity_of: String,
    pub capacity_now: u64,
    /// `None` when no number can be given (more memory: how much is yours).
    pub capacity_after: Option<u64>,
    /// The wall after this one, once the remedies are made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_wall: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Fraction of the limit in use (the ranking's key within a severity).
    pub utilisation: f64,
}

/// The values advice raises limits to: at least these, more when the
/// signal shows more is needed. From a preflight profile (`--profile`) or
/// the c10k defaults.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Targets {
    /// net.core.somaxconn and the application's listen backlog.
    pub somaxconn: u64,
    /// RLIMIT_NOFILE soft and hard.
    pub nofile: u64,
    /// net.ipv4.ip_local_port_range.
    pub port_range: (u16, u16),
    /// fs.file-max.
    pub file_max: u64,
    /// The profile these came from, when one was named.
    pub profile: Option<String>,
}

impl Default for Targets {
    /// profiles/c10k.yaml (somaxconn 4096, nofile 65535, file-max 262144)
    /// and c100k's full port range.
    fn default() -> Self {
        Targets {
            somaxconn: 4096,
            nofile: 65535,
            port_range: (1024, 65535),
            file_max: 262_144,
            profile: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub model: ModelConfig,
    pub targets: Targets,
    /// Utilisation from which a limit is "near" (0.8).
    pub near: f64,
    /// Seconds between the two samples; `None`: one sample (no deltas).
    pub interval_s: Option<f64>,
    /// Whether fd errors and accept-queue peaks between samples were
    /// observable (the eBPF probe ran).
    pub ebpf: bool,
    /// Whether the snapshot's network namespace is the initial one (where
    /// /etc/sysctl.d is applied at boot); `None`: not known.
    pub initial_netns: Option<bool>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            model: ModelConfig::default(),
            targets: Targets::default(),
            near: 0.8,
            interval_s: Some(1.0),
            ebpf: true,
            initial_netns: Some(true),
        }
    }
}

/// What every rule reads.
pub struct Ctx<'a> {
    pub now: &'a Snapshot,
    pub before: Option<&'a Snapshot>,
    pub prediction: Prediction,
    pub owners: &'a dyn Owners,
    pub cfg: &'a Config,
}

impl Ctx<'_> {
    /// The model on a changed copy of the snapshot: the capacity "after".
    pub fn predict_with(&self, change: impl FnOnce(&mut Snapshot)) -> Prediction {
        let mut s = self.now.clone();
        change(&mut s);
        predict(&s, &self.cfg.model)
    }

    /// "in 1.0 s" for deltas over the interval.
    pub fn over(&self) -> String {
        match self.cfg.interval_s {
            Some(s) => format!("in {s:.1} s"),
            None => "since the namespace started".into(),
        }
    }

    /// A sysctl remedy with where it must be written to stick and who else
    /// writes it.
    pub fn sysctl(&self, key: &str, current: Option<String>, value: String) -> Remedy {
        let (place, mut why) = match self.owners.sysctl_boot(key) {
            Some(b) if b.file != SYSCTL_FILE => (
                b.file.clone(),
                format!(
                    "{} sets {key} = {} at boot and wins: change it there",
                    b.file, b.value
                ),
            ),
            Some(b) => (
                SYSCTL_FILE.to_string(),
                format!("{SYSCTL_FILE} sets {key} = {} at boot and wins", b.value),
            ),
            None => (
                SYSCTL_FILE.to_string(),
                format!("nothing sets {key} at boot (kernel default): without a file it is lost at reboot"),
            ),
        };
        if key.starts_with("net.") && self.cfg.initial_netns == Some(false) {
            why.push_str(&format!(
                "; net.* is per network namespace and this is {}, not the initial one: set it where that namespace is made (`ip netns exec NAME sysctl -w`, the container's sysctls)",
                self.now.netns
            ));
        }
        let quoted = if value.contains(' ') {
            format!("\"{value}\"")
        } else {
            value.clone()
        };
        let persist = if place == SYSCTL_FILE {
            format!("echo '{key} = {value}' >> {SYSCTL_FILE}")
        } else {
            format!(
                "sed -i 's/^[[:space:]]*{}[[:space:]]*=.*/{key} = {value}/' {place}",
                key.replace('.', "\\.")
            )
        };
        Remedy {
            kind: RemedyKind::Sysctl,
            key: key.to_string(),
            current,
            value,
            place,
            why_there: why,
            command: format!("sysctl -w {key}={quoted} && {persist}"),
            owner_conflicts: self.owners.other_writers(key),
        }
    }
}

/// Ranked advice for `now` (and the counters' deltas since `before`).
pub fn advise(
    now: &Snapshot,
    before: Option<&Snapshot>,
    owners: &dyn Owners,
    cfg: &Config,
) -> Vec<Advice> {
    let ctx = Ctx {
        now,
        before,
        prediction: predict(now, &cfg.model),
        owners,
        cfg,
    };
    let mut all = Vec::new();
    all.extend(backlog::advise(&ctx));
    all.extend(fds::advise(&ctx));
    all.extend(kernel::advise(&ctx));
    all.extend(ports::advise(&ctx));
    all.extend(app_caps::advise(&ctx));
    all.extend(memory::advise(&ctx));
    rank(all)
}

/// Order within the "hit" tier: what the issue lists first comes first.
fn rule_order(rule: &str) -> u8 {
    match rule {
        "listen-backlog" => 0,
        "nofile" => 1,
        "file-max" => 2,
        "ephemeral-ports" => 3,
        "source-addresses" => 4,
        "app-cap" => 5,
        _ => 6,
    }
}

/// Hit first (in the order overflows, fd errors, ports, application caps),
/// then near and binding by utilisation, highest first.
pub fn rank(mut all: Vec<Advice>) -> Vec<Advice> {
    all.sort_by(|a, b| {
        let order = |x: &Advice| match x.severity {
            Severity::Hit => rule_order(&x.rule),
            _ => 0,
        };
        a.severity
            .cmp(&b.severity)
            .then_with(|| order(a).cmp(&order(b)))
            .then_with(|| b.utilisation.total_cmp(&a.utilisation))
            .then_with(|| a.id.cmp(&b.id))
    });
    for (i, a) in all.iter_mut().enumerate() {
        a.rank = i + 1;
    }
    all
}

/// The inputs advice could not use, one line each: what and why.
pub fn missing(now: &Snapshot, cfg: &Config, ebpf_off: Option<&str>) -> Vec<String> {
    let mut m = Vec::new();
    if !cfg.ebpf {
        let why = ebpf_off.map(|w| format!(" ({w})")).unwrap_or_default();
        m.push(format!(
            "fd errors (EMFILE, ENFILE, EADDRNOTAVAIL): not seen without eBPF{why}"
        ));
        m.push(
            "accept-queue peaks between samples: not seen without eBPF; the depth at each sample is used"
                .into(),
        );
    }
    if cfg.interval_s.is_none() {
        m.push("counter deltas (ListenOverflows): one sample only; totals since the namespace started are shown".into());
    }
    match &now.app {
        None => m.push("application caps: not looked at".into()),
        Some(a) if !a.is_known() => m.push(a.summary()),
        Some(a) => {
            for p in &a.problems {
                m.push(format!("{}: {p}", a.kind));
            }
        }
    }
    if now.memory_per_connection.is_none() {
        let d = cfg.model.default_memory_per_connection;
        m.push(format!(
            "memory per connection: not measured, {} B assumed",
            d.total()
        ));
    }
    m
}

/// The wall once a change is made: the binding constraint of the model
/// after it when that is no longer `past`, else the model's next wall.
pub(crate) fn wall_after(after: &Prediction, past: &str) -> Option<String> {
    if after.binding != past && !after.binding.is_empty() {
        Some(format!(
            "{} at {} connections",
            after.binding, after.predicted_max_connections
        ))
    } else {
        after.next_wall.as_ref().map(|w| w.describe())
    }
}

/// Fraction in use, 0 for a zero limit.
pub(crate) fn ratio(used: u64, limit: u64) -> f64 {
    if limit == 0 {
        0.0
    } else {
        (used as f64 / limit as f64).min(1.0)
    }
}

/// `numbers` from pairs.
pub(crate) fn numbers(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

#[cfg(test)]
pub(crate) mod fixture;

#[cfg(test)]
mod tests {
    use super::*;

    fn advice(rule: &str, severity: Severity, utilisation: f64) -> Advice {
        Advice {
            rank: 0,
            id: format!("{rule} x"),
            rule: rule.into(),
            severity,
            signal: Signal {
                name: rule.into(),
                summary: String::new(),
                numbers: BTreeMap::new(),
            },
            remedies: vec![],
            capacity_of: "connections".into(),
            capacity_now: 0,
            capacity_after: None,
            next_wall: None,
            notes: vec![],
            utilisation,
        }
    }

    #[test]
    fn hit_first_in_issue_order_then_by_utilisation() {
        let ranked = rank(vec![
            advice("memory", Severity::Binding, 0.1),
            advice("app-cap", Severity::Hit, 1.0),
            advice("nofile", Severity::Near, 0.85),
            advice("ephemeral-ports", Severity::Hit, 1.0),
            advice("conntrack", Severity::Near, 0.95),
            advice("nofile", Severity::Hit, 1.0),
            advice("listen-backlog", Severity::Hit, 1.0),
        ]);
        let order: Vec<(&str, usize)> = ranked.iter().map(|a| (a.rule.as_str(), a.rank)).collect();
        assert_eq!(
            order,
            vec![
                ("listen-backlog", 1),
                ("nofile", 2),
                ("ephemeral-ports", 3),
                ("app-cap", 4),
                ("conntrack", 5),
                ("nofile", 6),
                ("memory", 7),
            ]
        );
    }

    #[test]
    fn missing_inputs_are_named() {
        let s = fixture::host();
        let cfg = Config {
            ebpf: false,
            interval_s: None,
            ..Config::default()
        };
        let m = missing(&s, &cfg, Some("disabled by --no-ebpf"));
        assert_eq!(
            m[0],
            "fd errors (EMFILE, ENFILE, EADDRNOTAVAIL): not seen without eBPF (disabled by --no-ebpf)"
        );
        assert!(m.iter().any(|l| l.starts_with("counter deltas")));
        assert!(m.iter().any(|l| l == "application caps: not looked at"));
        assert!(m
            .iter()
            .any(|l| l == "memory per connection: not measured, 6144 B assumed"));
    }

    #[test]
    fn sysctl_remedy_goes_where_it_wins() {
        let s = fixture::host();
        let cfg = Config::default();
        let mut owners = fixture::Owned::default();
        fn ctx<'a>(s: &'a Snapshot, cfg: &'a Config, o: &'a fixture::Owned) -> Ctx<'a> {
            Ctx {
                now: s,
                before: None,
                prediction: predict(s, &cfg.model),
                owners: o,
                cfg,
            }
        }
        let r =
            ctx(&s, &cfg, &owners).sysctl("net.core.somaxconn", Some("64".into()), "4096".into());
        assert_eq!(r.place, SYSCTL_FILE);
        assert_eq!(
            r.command,
            "sysctl -w net.core.somaxconn=4096 && echo 'net.core.somaxconn = 4096' >> /etc/sysctl.d/90-headroom.conf"
        );
        owners.boot.insert(
            "net.core.somaxconn".into(),
            BootValue {
                value: "128".into(),
                file: "/etc/sysctl.d/99-zz-app.conf".into(),
            },
        );
        owners.writers.insert(
            "net.core.somaxconn".into(),
            vec!["tuned (profile web)".into()],
        );
        let r =
            ctx(&s, &cfg, &owners).sysctl("net.core.somaxconn", Some("128".into()), "4096".into());
        assert_eq!(r.place, "/etc/sysctl.d/99-zz-app.conf");
        assert_eq!(
            r.why_there,
            "/etc/sysctl.d/99-zz-app.conf sets net.core.somaxconn = 128 at boot and wins: change it there"
        );
        assert_eq!(
            r.command,
            "sysctl -w net.core.somaxconn=4096 && sed -i 's/^[[:space:]]*net\\.core\\.somaxconn[[:space:]]*=.*/net.core.somaxconn = 4096/' /etc/sysctl.d/99-zz-app.conf"
        );
        assert_eq!(r.owner_conflicts, vec!["tuned (profile web)"]);
        let r = ctx(&s, &cfg, &owners).sysctl(
            "net.ipv4.ip_local_port_range",
            Some("40000 40009".into()),
            "1024 65535".into(),
        );
        assert!(r
            .command
            .starts_with("sysctl -w net.ipv4.ip_local_port_range=\"1024 65535\" && "));
    }
}
