//! `headroom preflight apply --yes` and `rollback` for real, as root, inside a
//! throwaway network namespace: net.* sysctls are per namespace, so the host's
//! are never touched. `--only net` keeps the host-wide fs.* keys out, and
//! `--root` puts the persisted files and the rollback state in a temp dir.

mod util;

use std::path::Path;
use std::process::Output;
use util::{headroom_bin, repo_root, require_root, Netns};

/// The net.* keys c100k sets (netdev_max_backlog is host-wide: absent in a
/// child namespace) plus fs.* ones it must leave alone with `--only net`.
const NET_KEYS: &[&str] = &[
    "net.core.somaxconn",
    "net.ipv4.tcp_max_syn_backlog",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_tw_reuse",
    "net.ipv4.tcp_fin_timeout",
];
const HOST_KEYS: &[&str] = &[
    "fs.nr_open",
    "fs.file-max",
    "net.core.somaxconn",
    "net.core.netdev_max_backlog",
    "net.ipv4.tcp_max_syn_backlog",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_tw_reuse",
    "net.ipv4.tcp_fin_timeout",
];

fn path(key: &str) -> String {
    format!("/proc/sys/{}", key.replace('.', "/"))
}

/// Values as this (host-namespace) test process sees them.
fn host_values() -> Vec<(String, String)> {
    HOST_KEYS
        .iter()
        .map(|k| {
            let v = std::fs::read_to_string(path(k)).unwrap_or_else(|e| format!("<{e}>"));
            (k.to_string(), v)
        })
        .collect()
}

fn ns_read(ns: &Netns, key: &str) -> String {
    let out = ns.exec(&["cat", &path(key)]);
    assert!(out.status.success(), "cat {key} in {}: {out:?}", ns.name);
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn ns_values(ns: &Netns) -> Vec<String> {
    NET_KEYS.iter().map(|k| ns_read(ns, k)).collect()
}

fn headroom_in(ns: &Netns, args: &[&str]) -> Output {
    let bin = headroom_bin();
    let mut argv = vec![bin.to_str().unwrap()];
    argv.extend_from_slice(args);
    let mut c = ns.command(&argv);
    c.current_dir(repo_root());
    util::run(&mut c)
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
#[ignore = "needs root"]
fn apply_c100k_in_a_namespace_then_rollback_restores_everything() {
    require_root();
    let host_before = host_values();
    let ns = Netns::new("pfapply");
    // Already stricter than c100k's max 15: apply must keep it, not "fix" it.
    ns.sysctl("net.ipv4.tcp_fin_timeout", "10");
    let before = ns_values(&ns);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_str().unwrap();

    // Dry run: prints the diff, writes nothing.
    let dry = headroom_in(
        &ns,
        &[
            "preflight",
            "apply",
            "--profile",
            "c100k",
            "--only",
            "net",
            "--root",
            root,
        ],
    );
    assert!(dry.status.success(), "{}", text(&dry));
    let out = String::from_utf8_lossy(&dry.stdout);
    assert!(out.contains("net namespace net:["), "{}", text(&dry));
    assert!(out.contains("~ net.core.somaxconn"), "{}", text(&dry));
    assert!(out.contains("dry run: nothing written"), "{}", text(&dry));
    assert!(
        !out.contains(" fs."),
        "fs.* must not be selected: {}",
        text(&dry)
    );
    assert_eq!(ns_values(&ns), before);
    assert!(!tmp.path().join("etc").exists());

    let applied = headroom_in(
        &ns,
        &[
            "preflight",
            "apply",
            "--profile",
            "c100k",
            "--only",
            "net",
            "--root",
            root,
            "--yes",
        ],
    );
    assert!(applied.status.success(), "{}", text(&applied));
    let out = String::from_utf8_lossy(&applied.stdout);
    assert!(
        out.contains("applied 4 sysctl(s) and 1 file(s)"),
        "{}",
        text(&applied)
    );
    // Host-wide, so not visible in the namespace: kept, and said why.
    let netdev = out
        .lines()
        .find(|l| l.contains("= net.core.netdev_max_backlog"))
        .unwrap_or_default();
    assert!(
        netdev.contains("absent (kept: absent in net namespace net:["),
        "{}",
        text(&applied)
    );
    let fin = out
        .lines()
        .find(|l| l.contains("= net.ipv4.tcp_fin_timeout"))
        .unwrap_or_default();
    assert!(
        fin.ends_with(" 10 (kept: satisfies <= 15)"),
        "{}",
        text(&applied)
    );

    // Read back from /proc/sys inside the namespace.
    assert_eq!(
        ns_values(&ns),
        ["65535", "65535", "1024 65535", "1", "10"],
        "values in {} after apply",
        ns.name
    );
    let conf = std::fs::read_to_string(tmp.path().join("etc/sysctl.d/90-headroom.conf")).unwrap();
    assert_eq!(
        conf.lines().filter(|l| l.starts_with("net.")).count(),
        4,
        "{conf}"
    );
    assert!(
        conf.contains("net.ipv4.ip_local_port_range = 1024 65535\n"),
        "{conf}"
    );
    assert!(
        !tmp.path().join("etc/security").exists(),
        "nofile was not selected"
    );
    assert!(tmp.path().join("var/lib/headroom/rollback.json").exists());
    assert_eq!(host_values(), host_before, "the host's sysctls changed");

    // Rolling back from the host namespace would write the host's values: refused.
    let wrong = util::run(std::process::Command::new(headroom_bin()).args([
        "preflight",
        "rollback",
        "--root",
        root,
    ]));
    assert_eq!(wrong.status.code(), Some(3), "{}", text(&wrong));
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("run rollback in that namespace"),
        "{}",
        text(&wrong)
    );
    assert_eq!(host_values(), host_before);

    let back = headroom_in(&ns, &["preflight", "rollback", "--root", root]);
    assert!(back.status.success(), "{}", text(&back));
    assert!(
        String::from_utf8_lossy(&back.stdout).contains("rolled back c100k:"),
        "{}",
        text(&back)
    );
    assert_eq!(
        ns_values(&ns),
        before,
        "values in {} after rollback",
        ns.name
    );
    assert!(!tmp.path().join("etc/sysctl.d").exists());
    assert!(!tmp.path().join("var/lib/headroom/rollback.json").exists());

    let twice = headroom_in(&ns, &["preflight", "rollback", "--root", root]);
    assert!(twice.status.success(), "{}", text(&twice));
    assert_eq!(
        String::from_utf8_lossy(&twice.stdout).trim(),
        "nothing to roll back"
    );
    assert_eq!(ns_values(&ns), before);
    assert_eq!(host_values(), host_before, "the host's sysctls changed");
}

#[test]
#[ignore = "needs root"]
fn observe_only_and_bad_unit_are_refused_without_writes() {
    require_root();
    let ns = Netns::new("pfrefuse");
    let before = ns_values(&ns);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_str().unwrap();
    let o = headroom_in(
        &ns,
        &[
            "preflight",
            "apply",
            "--profile",
            "baseline",
            "--yes",
            "--root",
            root,
        ],
    );
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("observe-only"),
        "{}",
        text(&o)
    );
    let o = headroom_in(
        &ns,
        &[
            "preflight",
            "apply",
            "--profile",
            "c100k",
            "--yes",
            "--unit",
            "a/b",
            "--root",
            root,
        ],
    );
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert_eq!(ns_values(&ns), before);
    assert!(std::fs::read_dir(Path::new(root)).unwrap().next().is_none());
}

/// A container's read-only /proc/sys: a private mount namespace with /proc/sys
/// remounted read-only, in a fresh net namespace (`unshare --mount --net`;
/// private propagation, so nothing leaks to the host's mounts).
#[test]
#[ignore = "needs root"]
fn read_only_proc_sys_fails_cleanly_naming_the_key() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let script = format!(
        "mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys && exec {} preflight apply --profile c100k --only net --yes --root {}",
        headroom_bin().display(),
        tmp.path().display()
    );
    let host_before = host_values();
    let o = util::run(
        std::process::Command::new("unshare").args(["--mount", "--net", "sh", "-c", &script]),
    );
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("net.core.somaxconn: cannot write \"65535\" to /proc/sys/net/core/somaxconn: Read-only file system"),
        "{}",
        text(&o)
    );
    assert!(err.contains("nothing changed"), "{}", text(&o));
    // The state file was written first, then removed with the failed apply.
    assert!(!tmp.path().join("var/lib/headroom/rollback.json").exists());
    assert!(!tmp.path().join("etc").exists());
    assert_eq!(host_values(), host_before);
}
