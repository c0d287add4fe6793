//! Programs other than sysctl.d that write these keys after boot, found
//! under the root:
//!
//! - **tuned**: the active profile (/etc/tuned/active_profile; its
//!   tuned.conf in /etc/tuned[/profiles] or /usr/lib/tuned[/profiles],
//!   `include=` followed) sets its `[sysctl]` keys when tuned starts, after
//!   systemd-sysctl; with `reapply_sysctl = 1` (the default, in
//!   /etc/tuned/tuned-main.conf) it then re-applies /run/sysctl.d,
//!   /etc/sysctl.d and /etc/sysctl.conf over them.
//! - **bpftune**: a running `bpftune` retunes, while it runs, the keys its
//!   tuners own (tcp_buffer, net_buffer, ip_frag, neigh_table, route_table,
//!   tcp_conn tuners).
//! - **Cilium**: /etc/sysctl.d/99-zzz-override_cilium.conf, written by the
//!   agent, which then restarts systemd-sysctl.
//! - **kube-proxy**: a running kube-proxy (or its config) sets
//!   net.netfilter.nf_conntrack_max when it starts:
//!   max(conntrack.maxPerCore x CPUs, conntrack.min), 32768 x CPUs and 131072
//!   by default; maxPerCore 0 leaves it alone.

use super::{load, sysctl_d};
use crate::Root;
use serde::Serialize;

pub const CILIUM_FILE: &str = "/etc/sysctl.d/99-zzz-override_cilium.conf";
const TUNED_MAIN: &str = "/etc/tuned/tuned-main.conf";
const TUNED_ACTIVE: &str = "/etc/tuned/active_profile";
const TUNED_DIRS: &[&str] = &[
    "/etc/tuned/profiles",
    "/etc/tuned",
    "/usr/lib/tuned/profiles",
    "/usr/lib/tuned",
];
/// Sysctls bpftune's tuners write (their `bpftunable_desc` tables).
pub const BPFTUNE_KEYS: &[&str] = &[
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
    "net.ipv4.tcp_mem",
    "net.ipv4.tcp_max_orphans",
    "net.core.netdev_max_backlog",
    "net.core.flow_limit_cpu_bitmap",
    "net.core.netdev_budget",
    "net.core.netdev_budget_usecs",
    "net.ipv4.ipfrag_high_thresh",
    "net.ipv6.ip6frag_high_thresh",
    "net.ipv4.tcp_allowed_congestion_control",
    "net.ipv4.neigh.default.gc_thresh3",
    "net.ipv6.neigh.default.gc_thresh3",
    "net.ipv6.route.max_size",
];
const KUBE_PROXY_CONFIGS: &[&str] = &[
    "/var/lib/kube-proxy/config.conf",
    "/var/lib/kube-proxy/kubeconfig.conf",
    "/etc/kubernetes/kube-proxy-config.yaml",
    "/etc/kubernetes/manifests/kube-proxy.yaml",
];

/// One other writer of one key, for a check row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Writer {
    /// `tuned`, `bpftune`, `cilium`, `kube-proxy`.
    pub name: &'static str,
    /// What it sets, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Where it was found (file:line, or `pid N`).
    pub source: String,
    pub detail: String,
}

/// tuned's active profile, as far as sysctls go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tuned {
    pub profiles: Vec<String>,
    /// key -> (value, file:line), includes resolved, later profiles last.
    pub sysctls: Vec<(String, String, String)>,
    pub reapply_sysctl: bool,
    pub running: Option<u32>,
}

impl Tuned {
    /// The value tuned sets for `key` and where.
    pub fn get(&self, key: &str) -> Option<(&str, &str)> {
        let key = sysctl_d::normalize(key);
        self.sysctls
            .iter()
            .rev()
            .find(|(k, _, _)| *k == key)
            .map(|(_, v, at)| (v.as_str(), at.as_str()))
    }
}

/// Everything found, read once.
#[derive(Debug, Clone, Default)]
pub struct Writers {
    pub tuned: Option<Tuned>,
    pub bpftune: Option<u32>,
    pub cilium: Option<String>,
    /// (where found, maxPerCore, min) when configured.
    pub kube_proxy: Option<(String, Option<u64>, Option<u64>)>,
}

/// First pid whose comm is `name`, from the root's /proc.
fn running(root: &Root, name: &str) -> Option<u32> {
    let rd = std::fs::read_dir(root.proc("")).ok()?;
    let mut pids: Vec<u32> = rd
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    pids.into_iter().find(|p| {
        std::fs::read_to_string(root.proc(&format!("{p}/comm"))).is_ok_and(|c| c.trim() == name)
    })
}

fn ini_get<'a>(text: &'a str, section: &str, key: &str) -> Vec<(usize, &'a str)> {
    let mut cur = "";
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        let l = l.trim();
        if l.starts_with('#') || l.starts_with(';') {
            continue;
        }
        if let Some(s) = l.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            cur = s;
        } else if let Some((k, v)) = l.split_once('=') {
            if cur == section && (key.is_empty() || k.trim() == key) {
                out.push((i + 1, if key.is_empty() { l } else { v.trim() }));
            }
        }
    }
    out
}

fn tuned_profile(root: &Root, name: &str, depth: u32, out: &mut Vec<(String, String, String)>) {
    if depth > 8 {
        return;
    }
    let Some((path, text)) = TUNED_DIRS.iter().find_map(|d| {
        let p = format!("{d}/{name}/tuned.conf");
        let l = load(root, &p);
        l.regular.then_some((p, l.text))
    }) else {
        return;
    };
    for (_, inc) in ini_get(&text, "main", "include") {
        for p in inc.split([',', ';', ' ']).filter(|s| !s.is_empty()) {
            tuned_profile(root, p.trim(), depth + 1, out);
        }
    }
    for (line, kv) in ini_get(&text, "sysctl", "") {
        if let Some((k, v)) = kv.split_once('=') {
            out.push((
                sysctl_d::normalize(k),
                v.trim().to_string(),
                format!("{path}:{line}"),
            ));
        }
    }
}

impl Writers {
    pub fn read(root: &Root) -> Writers {
        let active = load(root, TUNED_ACTIVE).text;
        let profiles: Vec<String> = active.split_whitespace().map(str::to_string).collect();
        let tuned = (!profiles.is_empty()).then(|| {
            let mut sysctls = Vec::new();
            for p in &profiles {
                tuned_profile(root, p, 0, &mut sysctls);
            }
            let main = load(root, TUNED_MAIN).text;
            let reapply = main
                .lines()
                .filter_map(|l| l.split('#').next()?.split_once('='))
                .filter(|(k, _)| k.trim() == "reapply_sysctl")
                .map(|(_, v)| !matches!(v.trim(), "0" | "false" | "False" | "no"))
                .next_back()
                .unwrap_or(true);
            Tuned {
                profiles,
                sysctls,
                reapply_sysctl: reapply,
                running: running(root, "tuned"),
            }
        });
        let cilium = load(root, CILIUM_FILE)
            .regular
            .then(|| CILIUM_FILE.to_string());
        let kube_proxy = running(root, "kube-proxy")
            .map(|p| format!("pid {p}"))
            .or_else(|| {
                KUBE_PROXY_CONFIGS
                    .iter()
                    .find(|c| load(root, c).regular)
                    .map(|c| c.to_string())
            })
            .map(|src| {
                let text = KUBE_PROXY_CONFIGS
                    .iter()
                    .map(|c| load(root, c).text)
                    .find(|t| t.contains("conntrack"))
                    .unwrap_or_default();
                let num = |k: &str| {
                    text.lines()
                        .find_map(|l| l.trim().strip_prefix(k)?.trim().parse().ok())
                };
                (src, num("maxPerCore:"), num("min:"))
            });
        Writers {
            tuned,
            bpftune: running(root, "bpftune"),
            cilium,
            kube_proxy,
        }
    }

    /// The other writers of `key`; `sysctl_d` finds what Cilium's file sets.
    pub fn for_key(&self, key: &str, tree: &sysctl_d::SysctlD) -> Vec<Writer> {
        let mut out = Vec::new();
        if let Some(t) = &self.tuned {
            if let Some((v, at)) = t.get(key) {
                let state = match t.running {
                    Some(p) => format!("running as pid {p}"),
                    None => "not running now".into(),
                };
                let order = if t.reapply_sysctl {
                    "reapply_sysctl=1: it re-applies /run/sysctl.d, /etc/sysctl.d and /etc/sysctl.conf over it"
                } else {
                    "reapply_sysctl=0: its value stands over sysctl.d"
                };
                out.push(Writer {
                    name: "tuned",
                    value: Some(v.to_string()),
                    source: at.to_string(),
                    detail: format!("profile {} ({state}); {order}", t.profiles.join(" ")),
                });
            }
        }
        if let Some(pid) = self.bpftune.filter(|_| BPFTUNE_KEYS.contains(&key)) {
            out.push(Writer {
                name: "bpftune",
                value: None,
                source: format!("pid {pid}"),
                detail: "retunes this key while it runs (it stops once an operator sets the key by hand)".into(),
            });
        }
        if let Some(f) = &self.cilium {
            if let Some(e) = tree
                .assignments(sysctl_d::Reader::SystemdSysctl, key)
                .into_iter()
                .rfind(|e| e.file.path == *f)
            {
                out.push(Writer {
                    name: "cilium",
                    value: e.value.clone(),
                    source: e.at(),
                    detail: "the Cilium agent rewrites this file and restarts systemd-sysctl"
                        .into(),
                });
            }
        }
        if let Some((src, per_core, min)) = self
            .kube_proxy
            .as_ref()
            .filter(|_| key == "net.netfilter.nf_conntrack_max")
        {
            let fmt =
                |v: &Option<u64>, d: u64| v.map_or(format!("{d} (default)"), |v| v.to_string());
            out.push(Writer {
                name: "kube-proxy",
                value: None,
                source: src.clone(),
                detail: format!(
                    "sets it when it starts: max(maxPerCore {} x CPUs, min {}); maxPerCore 0 leaves it alone",
                    fmt(per_core, 32768),
                    fmt(min, 131072)
                ),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn put(t: &std::path::Path, p: &str, s: &str) {
        let f = t.join(p.trim_start_matches('/'));
        fs::create_dir_all(f.parent().unwrap()).unwrap();
        fs::write(f, s).unwrap();
    }

    #[test]
    fn finds_each_writer_under_the_root() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path();
        put(p, "/etc/tuned/active_profile", "web\n");
        put(
            p,
            "/usr/lib/tuned/base/tuned.conf",
            "[sysctl]\nnet.core.somaxconn=2048\nnet.ipv4.tcp_fin_timeout=30\n",
        );
        put(
            p,
            "/etc/tuned/web/tuned.conf",
            "[main]\ninclude=base\n[sysctl]\nnet.core.somaxconn = 4096\n",
        );
        put(p, "/etc/tuned/tuned-main.conf", "# x\nreapply_sysctl = 0\n");
        put(p, "/proc/41/comm", "bpftune\n");
        put(p, "/proc/42/comm", "kube-proxy\n");
        put(
            p,
            "/var/lib/kube-proxy/config.conf",
            "conntrack:\n  maxPerCore: 0\n  min: null\n",
        );
        put(p, CILIUM_FILE, "net.core.somaxconn = 8192\n");
        let root = Root::at(p);
        let w = Writers::read(&root);
        let tuned = w.tuned.as_ref().unwrap();
        assert!(!tuned.reapply_sysctl);
        assert_eq!(
            tuned.get("net.core.somaxconn"),
            Some(("4096", "/etc/tuned/web/tuned.conf:4"))
        );
        assert_eq!(tuned.get("net.ipv4.tcp_fin_timeout").unwrap().0, "30");
        assert_eq!(w.bpftune, Some(41));
        let tree = sysctl_d::SysctlD::read(&root);
        let names: Vec<&str> = w
            .for_key("net.core.somaxconn", &tree)
            .iter()
            .map(|w| w.name)
            .collect();
        assert_eq!(names, ["tuned", "cilium"]);
        assert_eq!(
            w.for_key("net.core.netdev_max_backlog", &tree)[0].name,
            "bpftune"
        );
        let kp = w.for_key("net.netfilter.nf_conntrack_max", &tree);
        assert_eq!(kp[0].source, "pid 42");
        assert!(
            kp[0].detail.contains("maxPerCore 0 x CPUs"),
            "{}",
            kp[0].detail
        );
        assert!(Writers::read(&Root::at(p.join("empty"))).tuned.is_none());
    }
}
