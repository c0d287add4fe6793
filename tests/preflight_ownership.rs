//! Ownership: the value the next boot (restart, login) sets for each key and
//! the file that sets it, on fixture trees, with the exact (value, file)
//! asserted; then `check` failing a persisted value that loses, `apply`
//! refusing (and `--sysctl-file` winning), and, as root, one end-to-end case
//! in a network namespace with a simulated boot.

mod util;

use headroom_preflight::boot::limits::{self, Who};
use headroom_preflight::boot::sysctl_d::{Outcome, Reader, SysctlD};
use headroom_preflight::boot::{units, verdict};
use headroom_preflight::{self as pf, ApplyOptions, Loader, Root, Status};
use std::fs;
use std::path::Path;
use std::process::Output;
use util::{headroom_bin, require_root, Netns};

const SD: Reader = Reader::SystemdSysctl;
const PS: Reader = Reader::SysctlSystem;
const KEY: &str = "net.core.somaxconn";

fn put(root: &Path, path: &str, text: &str) {
    let f = root.join(path.trim_start_matches('/'));
    fs::create_dir_all(f.parent().unwrap()).unwrap();
    fs::write(f, text).unwrap();
}

fn link(root: &Path, path: &str, target: &str) {
    let f = root.join(path.trim_start_matches('/'));
    fs::create_dir_all(f.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(target, f).unwrap();
}

/// (value, FILE:LINE) a reader leaves KEY at; `None` value for an exclusion.
fn winner(t: &Path, reader: Reader, key: &str) -> (Option<String>, Option<String>) {
    match SysctlD::read(&Root::at(t)).outcome(reader, key) {
        Outcome::Set(e) => (e.value.clone(), Some(e.at())),
        Outcome::Excluded(e) => (None, Some(e.at())),
        Outcome::Unset => (None, None),
    }
}

fn set(v: &str, at: &str) -> (Option<String>, Option<String>) {
    (Some(v.into()), Some(at.into()))
}

/// Debian: /etc/sysctl.d/99-sysctl.conf -> ../sysctl.conf sorts after
/// 90-headroom.conf, so /etc/sysctl.conf wins (the measurement).
fn debian(t: &Path) {
    put(
        t,
        "/etc/sysctl.conf",
        "# local\nnet.core.somaxconn = 1024\n",
    );
    link(t, "/etc/sysctl.d/99-sysctl.conf", "../sysctl.conf");
    put(
        t,
        "/etc/sysctl.d/90-headroom.conf",
        "# ours\nnet.core.somaxconn = 65535\n",
    );
}

#[test]
fn case01_sysctl_conf_through_99_sysctl_conf_beats_90_headroom() {
    let t = tempfile::tempdir().unwrap();
    debian(t.path());
    assert_eq!(
        winner(t.path(), SD, KEY),
        set("1024", "/etc/sysctl.d/99-sysctl.conf -> /etc/sysctl.conf:2")
    );
    let tree = SysctlD::read(&Root::at(t.path()));
    let Outcome::Set(e) = tree.outcome(SD, KEY) else {
        panic!()
    };
    assert_eq!(e.file.edit(), "/etc/sysctl.conf");
    // procps reads /etc/sysctl.conf once more, last.
    assert_eq!(winner(t.path(), PS, KEY), set("1024", "/etc/sysctl.conf:2"));
}

#[test]
fn case02_without_the_link_systemd_ignores_sysctl_conf_procps_does_not() {
    let t = tempfile::tempdir().unwrap();
    put(t.path(), "/etc/sysctl.conf", "net.core.somaxconn = 1024\n");
    put(
        t.path(),
        "/etc/sysctl.d/90-headroom.conf",
        "net.core.somaxconn = 65535\n",
    );
    assert_eq!(
        winner(t.path(), SD, KEY),
        set("65535", "/etc/sysctl.d/90-headroom.conf:1")
    );
    assert_eq!(winner(t.path(), PS, KEY), set("1024", "/etc/sysctl.conf:1"));
}

#[test]
fn case03_etc_shadows_usr_lib_of_the_same_name() {
    let t = tempfile::tempdir().unwrap();
    put(
        t.path(),
        "/usr/lib/sysctl.d/50-default.conf",
        "net.core.somaxconn = 100\n",
    );
    put(
        t.path(),
        "/etc/sysctl.d/50-default.conf",
        "# admin\n\nnet.core.somaxconn = 200\n",
    );
    assert_eq!(
        winner(t.path(), SD, KEY),
        set("200", "/etc/sysctl.d/50-default.conf:3")
    );
    let files = SysctlD::read(&Root::at(t.path())).files(SD);
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].shadows, ["/usr/lib/sysctl.d/50-default.conf"]);
}

#[test]
fn case04_run_shadows_usr_lib_and_etc_shadows_run() {
    let t = tempfile::tempdir().unwrap();
    put(
        t.path(),
        "/usr/lib/sysctl.d/60-x.conf",
        "net.core.somaxconn = 100\n",
    );
    put(
        t.path(),
        "/run/sysctl.d/60-x.conf",
        "net.core.somaxconn = 300\n",
    );
    assert_eq!(
        winner(t.path(), SD, KEY),
        set("300", "/run/sysctl.d/60-x.conf:1")
    );
    put(
        t.path(),
        "/etc/sysctl.d/60-x.conf",
        "net.core.somaxconn = 400\n",
    );
    assert_eq!(
        winner(t.path(), SD, KEY),
        set("400", "/etc/sysctl.d/60-x.conf:1")
    );
}

#[test]
fn case05_a_later_name_in_usr_lib_beats_an_earlier_name_in_etc() {
    let t = tempfile::tempdir().unwrap();
    put(
        t.path(),
        "/etc/sysctl.d/10-admin.conf",
        "net.core.somaxconn = 65535\n",
    );
    put(
        t.path(),
        "/usr/lib/sysctl.d/20-vendor.conf",
        "net.core.somaxconn = 4096\n",
    );
    put(
        t.path(),
        "/usr/local/lib/sysctl.d/15-local.conf",
        "net.core.somaxconn = 8192\n",
    );
    assert_eq!(
        winner(t.path(), SD, KEY),
        set("4096", "/usr/lib/sysctl.d/20-vendor.conf:1")
    );
    let names: Vec<String> = SysctlD::read(&Root::at(t.path()))
        .files(SD)
        .into_iter()
        .map(|f| f.path)
        .collect();
    assert_eq!(
        names,
        [
            "/etc/sysctl.d/10-admin.conf",
            "/usr/local/lib/sysctl.d/15-local.conf",
            "/usr/lib/sysctl.d/20-vendor.conf"
        ]
    );
}

#[test]
fn case06_a_glob_sets_keys_without_an_explicit_entry() {
    let t = tempfile::tempdir().unwrap();
    put(
        t.path(),
        "/etc/sysctl.d/10-eth0.conf",
        "net.ipv4.conf.eth0.rp_filter = 1\n",
    );
    put(
        t.path(),
        "/usr/lib/sysctl.d/50-rp.conf",
        "net.ipv4.conf.default.rp_filter = 2\nnet.ipv4.conf.*.rp_filter = 2\n",
    );
    // The glob sorts later, but eth0 has an explicit entry: the glob skips it.
    assert_eq!(
        winner(t.path(), SD, "net.ipv4.conf.eth0.rp_filter"),
        set("1", "/etc/sysctl.d/10-eth0.conf:1")
    );
    assert_eq!(
        winner(t.path(), SD, "net.ipv4.conf.eth1.rp_filter"),
        set("2", "/usr/lib/sysctl.d/50-rp.conf:2")
    );
    assert_eq!(
        winner(t.path(), PS, "net.ipv4.conf.eth1.rp_filter"),
        set("2", "/usr/lib/sysctl.d/50-rp.conf:2")
    );
    // `*` never crosses a separator.
    assert_eq!(
        winner(t.path(), SD, "net.ipv4.conf.eth1.x.rp_filter"),
        (None, None)
    );
}

#[test]
fn case07_minus_key_excludes_from_globs_and_drops_an_earlier_assignment() {
    let t = tempfile::tempdir().unwrap();
    put(
        t.path(),
        "/etc/sysctl.d/10-a.conf",
        "net.ipv4.conf.*.rp_filter = 2\nnet.core.somaxconn = 65535\n",
    );
    put(
        t.path(),
        "/etc/sysctl.d/20-b.conf",
        "-net.ipv4.conf.all.rp_filter\n-net.core.somaxconn\n",
    );
    assert_eq!(
        winner(t.path(), SD, "net.ipv4.conf.all.rp_filter"),
        (None, Some("/etc/sysctl.d/20-b.conf:1".into()))
    );
    // systemd drops the earlier assignment; procps still writes it.
    assert_eq!(
        winner(t.path(), SD, KEY),
        (None, Some("/etc/sysctl.d/20-b.conf:2".into()))
    );
    assert_eq!(
        winner(t.path(), PS, KEY),
        set("65535", "/etc/sysctl.d/10-a.conf:2")
    );
}

#[test]
fn case08_minus_key_with_a_value_only_ignores_failure() {
    let t = tempfile::tempdir().unwrap();
    put(
        t.path(),
        "/etc/sysctl.d/10-a.conf",
        "net.core.somaxconn = 4096\n",
    );
    put(
        t.path(),
        "/etc/sysctl.d/20-b.conf",
        "-net.core.somaxconn = 8192\n",
    );
    assert_eq!(
        winner(t.path(), SD, KEY),
        set("8192", "/etc/sysctl.d/20-b.conf:1")
    );
    let Outcome::Set(e) = SysctlD::read(&Root::at(t.path())).outcome(SD, KEY) else {
        panic!()
    };
    assert!(e.ignore_failure);
}

#[test]
fn case09_masked_with_dev_null_and_slash_keys() {
    let t = tempfile::tempdir().unwrap();
    put(
        t.path(),
        "/usr/lib/sysctl.d/50-vendor.conf",
        "net.core.somaxconn = 4096\n",
    );
    link(t.path(), "/etc/sysctl.d/50-vendor.conf", "/dev/null");
    assert_eq!(winner(t.path(), SD, KEY), (None, None));
    put(
        t.path(),
        "/etc/sysctl.d/60-slash.conf",
        "net/core/somaxconn = 7777\n",
    );
    assert_eq!(
        winner(t.path(), SD, KEY),
        set("7777", "/etc/sysctl.d/60-slash.conf:1")
    );
}

#[test]
fn case10_an_equal_value_later_keeps_the_first_place() {
    let t = tempfile::tempdir().unwrap();
    put(
        t.path(),
        "/etc/sysctl.d/90-headroom.conf",
        "net.core.somaxconn = 65535\n",
    );
    put(
        t.path(),
        "/etc/sysctl.d/99-zzz-override_cilium.conf",
        "net.core.somaxconn = 65535\n",
    );
    assert_eq!(
        winner(t.path(), SD, KEY),
        set("65535", "/etc/sysctl.d/90-headroom.conf:1")
    );
    // procps writes both: the last line is the one that sets it.
    assert_eq!(
        winner(t.path(), PS, KEY),
        set("65535", "/etc/sysctl.d/99-zzz-override_cilium.conf:1")
    );
}

#[test]
fn case11_limits_d_later_star_wins_user_line_beats_star() {
    let t = tempfile::tempdir().unwrap();
    put(
        t.path(),
        "/etc/security/limits.conf",
        "root hard nofile 8192\n",
    );
    put(t.path(), "/etc/security/limits.d/90-headroom.conf", "* soft nofile 262144\n* hard nofile 262144\nroot soft nofile 262144\nroot hard nofile 262144\n");
    put(
        t.path(),
        "/etc/security/limits.d/95-app.conf",
        "* hard nofile 4096\n",
    );
    let files = limits::files(&Root::at(t.path()), None);
    let anyone = limits::nofile(&files, &Who::anyone());
    assert_eq!(
        anyone.hard.as_ref().map(|h| (h.value, h.at())),
        Some((Some(4096), "/etc/security/limits.d/95-app.conf:1".into()))
    );
    assert_eq!(anyone.values(1 << 20), (Some(4096), Some(4096)));
    let root = limits::nofile(&files, &Who::root());
    assert_eq!(
        root.hard.as_ref().map(|h| (h.value, h.at())),
        Some((
            Some(262144),
            "/etc/security/limits.d/90-headroom.conf:4".into()
        ))
    );
}

#[test]
fn case12_a_unit_drop_in_beats_limits_d_for_its_service() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path();
    put(
        p,
        "/etc/security/limits.d/90-headroom.conf",
        "* - nofile 262144\n",
    );
    put(
        p,
        "/usr/lib/systemd/system/web.service",
        "[Service]\nExecStart=/bin/web\nLimitNOFILE=65536\n",
    );
    put(
        p,
        "/etc/systemd/system/web.service.d/90-headroom.conf",
        "[Service]\nLimitNOFILE=262144:262144\n",
    );
    put(
        p,
        "/usr/lib/systemd/system/web.service.d/99-vendor.conf",
        "[Service]\nLimitNOFILE=4096:8192\n",
    );
    put(p, "/proc/77/cgroup", "0::/system.slice/web.service\n");
    let root = Root::at(p);
    let n = units::nofile(&root, "web", None, None);
    assert_eq!((n.soft, n.hard), (4096, 8192));
    assert_eq!(
        n.from.unwrap().at(),
        "/usr/lib/systemd/system/web.service.d/99-vendor.conf:2"
    );
    // The process is in web.service: the boot view is the unit's, not limits.d.
    let view = verdict::read(&root, Some(77), None);
    let rule = pf::profile::NofileRule {
        soft: 262144,
        hard: 262144,
        level: pf::Level::Fail,
    };
    let (row, failure) = verdict::nofile_row(&view, &rule);
    assert_eq!(
        (row.verdict, row.value.as_deref()),
        ("loses", Some("4096:8192"))
    );
    assert_eq!(
        failure.as_deref(),
        Some("persisted value loses at restart: /usr/lib/systemd/system/web.service.d/99-vendor.conf:2 sets LimitNOFILE=4096:8192 after /etc/systemd/system/web.service.d/90-headroom.conf:2; edit /usr/lib/systemd/system/web.service.d/99-vendor.conf")
    );
    // An /etc drop-in of the same name hides the vendor's.
    put(
        p,
        "/etc/systemd/system/web.service.d/99-vendor.conf",
        "[Service]\n# masked\n",
    );
    let n = units::nofile(&root, "web", None, None);
    assert_eq!((n.soft, n.hard), (262144, 262144));
    assert_eq!(
        n.from.unwrap().at(),
        "/etc/systemd/system/web.service.d/90-headroom.conf:2"
    );
}

#[test]
fn case13_tuned_without_reapply_stands_over_sysctl_d() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path();
    put(
        p,
        "/etc/sysctl.d/90-headroom.conf",
        "net.core.somaxconn = 65535\n",
    );
    put(p, "/etc/tuned/active_profile", "net\n");
    put(
        p,
        "/etc/tuned/net/tuned.conf",
        "[sysctl]\nnet.core.somaxconn=2048\n",
    );
    put(p, "/etc/tuned/tuned-main.conf", "reapply_sysctl = 0\n");
    let rule = pf::SysctlRule {
        min: Some(65535),
        ..Default::default()
    };
    let view = verdict::read(&Root::at(p), None, None);
    let (row, failure) = verdict::sysctl_row(&view, KEY, &rule);
    assert_eq!(
        (row.value.as_deref(), row.file.as_deref(), row.by.as_str()),
        (Some("2048"), Some("/etc/tuned/net/tuned.conf:2"), "tuned")
    );
    assert_eq!(
        failure.as_deref(),
        Some("persisted value loses at boot: /etc/tuned/net/tuned.conf:2 sets net.core.somaxconn=2048 after /etc/sysctl.d/90-headroom.conf:1; edit /etc/tuned/net/tuned.conf")
    );
    // With reapply_sysctl (the default) the files are written over tuned's value.
    put(p, "/etc/tuned/tuned-main.conf", "reapply_sysctl = 1\n");
    let view = verdict::read(&Root::at(p), None, None);
    let (row, failure) = verdict::sysctl_row(&view, KEY, &rule);
    assert_eq!(
        (row.value.as_deref(), row.verdict, failure),
        (Some("65535"), "holds", None)
    );
    assert_eq!(row.writers[0].name, "tuned");
}

// ---- check and apply on a whole fixture host ------------------------------

const SYSCTLS: &[(&str, &str)] = &[
    ("fs/nr_open", "1048576"),
    ("fs/file-max", "2000000"),
    ("fs/file-nr", "1000\t0\t2000000"),
    ("net/core/somaxconn", "65535"),
    ("net/ipv4/tcp_max_syn_backlog", "512"),
    ("net/ipv4/ip_local_port_range", "1024\t65535"),
];

/// A host whose runtime somaxconn already meets c100k (set by hand), with
/// Debian's sysctl.conf link setting it back to 1024 at boot.
fn host() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let p = t.path();
    for (k, v) in SYSCTLS {
        put(p, &format!("/proc/sys/{k}"), &format!("{v}\n"));
    }
    fs::create_dir_all(p.join("proc/self/fd")).unwrap();
    link(p, "/proc/self/ns/net", "net:[4026532111]");
    put(
        p,
        "/proc/self/limits",
        "Max open files            262144               262144               files\n",
    );
    put(
        p,
        "/proc/self/status",
        "Name: x\nUid:\t0\t0\t0\t0\nCapEff:\t000001ffffffffff\n",
    );
    put(
        p,
        "/proc/meminfo",
        "MemTotal: 25165824 kB\nMemAvailable: 20971520 kB\n",
    );
    put(
        p,
        "/etc/sysctl.conf",
        "net.core.somaxconn = 1024\nnet.ipv4.tcp_max_syn_backlog = 512\n",
    );
    link(p, "/etc/sysctl.d/99-sysctl.conf", "../sysctl.conf");
    t
}

fn profile() -> pf::Profile {
    let d = tempfile::tempdir().unwrap();
    fs::write(
        d.path().join("own.yaml"),
        "name: own\ndescription: d\ntarget_connections: 1000\nsysctls:\n  net.core.somaxconn: {min: 65535}\n  net.ipv4.tcp_max_syn_backlog: {min: 4096}\n",
    )
    .unwrap();
    Loader {
        dirs: vec![d.path().into()],
        builtin: false,
    }
    .load("own")
    .unwrap()
}

fn report(root: &Root, prof: &pf::Profile) -> pf::Report {
    let r = pf::read(root, None, prof.sysctls.keys().map(String::as_str)).unwrap();
    let mut rep = pf::check(prof, &r);
    pf::boot::annotate(&mut rep, prof, &verdict::read(root, None, None));
    rep
}

#[test]
fn case14_check_fails_a_runtime_value_the_next_boot_undoes() {
    let t = host();
    let root = Root::at(t.path());
    let prof = profile();
    let rep = report(&root, &prof);
    let row = rep.checks.iter().find(|c| c.name == KEY).unwrap();
    assert_eq!(row.current.as_deref(), Some("65535"));
    assert_eq!(row.status, Status::Fail, "{row:?}");
    let boot = row.boot.as_ref().unwrap();
    assert_eq!(
        (boot.verdict, boot.value.as_deref()),
        ("loses", Some("1024"))
    );
    assert_eq!(
        boot.file.as_deref(),
        Some("/etc/sysctl.d/99-sysctl.conf -> /etc/sysctl.conf:1")
    );
    assert_eq!(boot.edit.as_deref(), Some("/etc/sysctl.conf"));
    assert_eq!(
        row.reason.as_deref(),
        Some("the next boot sets net.core.somaxconn=1024 (/etc/sysctl.d/99-sysctl.conf -> /etc/sysctl.conf:1, systemd-sysctl); edit /etc/sysctl.conf")
    );
    let text = headroom_preflight::check::render(&rep);
    assert!(
        text.contains("boot: /etc/sysctl.d/99-sysctl.conf -> /etc/sysctl.conf:1 (systemd-sysctl)"),
        "{text}"
    );
    let v = serde_json::to_value(&rep).unwrap();
    assert_eq!(v["checks"][0]["boot"]["verdict"], "loses");
    assert_eq!(v["checks"][0]["boot"]["by"], "systemd-sysctl");
}

#[test]
fn case15_apply_refuses_then_a_later_file_wins_and_rollback_restores_it() {
    let t = host();
    let root = Root::at(t.path());
    let prof = profile();
    let r = pf::read(&root, None, prof.sysctls.keys().map(String::as_str)).unwrap();
    let plan = pf::plan(&prof, &root, &r, &ApplyOptions::default()).unwrap();
    let msgs: Vec<(&str, &str)> = plan
        .conflicts
        .iter()
        .map(|c| (c.name.as_str(), c.message.as_str()))
        .collect();
    assert_eq!(
        msgs,
        [
            ("net.core.somaxconn", "persisted value loses at boot: /etc/sysctl.d/99-sysctl.conf -> /etc/sysctl.conf:1 sets net.core.somaxconn=1024 after /etc/sysctl.d/90-headroom.conf:2; edit /etc/sysctl.conf, or write a file that sorts after it: --sysctl-file 99-zz-headroom.conf"),
            ("net.ipv4.tcp_max_syn_backlog", "persisted value loses at boot: /etc/sysctl.d/99-sysctl.conf -> /etc/sysctl.conf:2 sets net.ipv4.tcp_max_syn_backlog=512 after /etc/sysctl.d/90-headroom.conf:3; edit /etc/sysctl.conf, or write a file that sorts after it: --sysctl-file 99-zz-headroom.conf"),
        ]
    );
    // The runtime value that already meets the rule is persisted, not rewritten.
    assert_eq!(plan.sysctls.len(), 1);
    assert!(plan.files[0]
        .content
        .contains("net.core.somaxconn = 65535\n"));
    let err = pf::apply(&plan, &root).unwrap_err().to_string();
    assert!(
        err.starts_with("refused: the next boot would undo 2"),
        "{err}"
    );
    assert!(!t.path().join("etc/sysctl.d/90-headroom.conf").exists());
    assert_eq!(
        fs::read_to_string(t.path().join("proc/sys/net/ipv4/tcp_max_syn_backlog")).unwrap(),
        "512\n"
    );

    let later = ApplyOptions {
        sysctl_file: Some("99-zz-headroom.conf".into()),
        ..Default::default()
    };
    let plan = pf::plan(&prof, &root, &r, &later).unwrap();
    assert!(plan.conflicts.is_empty(), "{:?}", plan.conflicts);
    assert_eq!(plan.files[0].path, "/etc/sysctl.d/99-zz-headroom.conf");
    pf::apply(&plan, &root).unwrap();
    let state = fs::read_to_string(t.path().join("var/lib/headroom/rollback.json")).unwrap();
    assert!(
        state.contains("/etc/sysctl.d/99-zz-headroom.conf"),
        "{state}"
    );
    assert_eq!(
        winner(t.path(), SD, KEY),
        set("65535", "/etc/sysctl.d/99-zz-headroom.conf:2")
    );
    let rep = report(&root, &prof);
    assert_eq!(
        rep.summary.fail,
        0,
        "{}",
        headroom_preflight::check::render(&rep)
    );
    pf::rollback(&root).unwrap();
    assert!(!t.path().join("etc/sysctl.d/99-zz-headroom.conf").exists());
    assert!(
        fs::symlink_metadata(t.path().join("etc/sysctl.d/99-sysctl.conf"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        fs::read_to_string(t.path().join("proc/sys/net/ipv4/tcp_max_syn_backlog")).unwrap(),
        "512\n"
    );
    // The link itself is never a target.
    let bad = ApplyOptions {
        sysctl_file: Some("99-sysctl.conf".into()),
        ..Default::default()
    };
    assert!(pf::plan(&prof, &root, &r, &bad)
        .unwrap_err()
        .to_string()
        .contains("is a symlink"));
}

// ---- end to end, as root, in a network namespace ---------------------------

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn headroom_in(ns: &Netns, args: &[&str]) -> Output {
    let bin = headroom_bin();
    let mut argv = vec![bin.to_str().unwrap()];
    argv.extend_from_slice(args);
    util::run(&mut ns.command(&argv))
}

fn ns_read(ns: &Netns, key: &str) -> String {
    let o = ns.exec(&["sysctl", "-n", key]);
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// A boot, simulated independently of headroom's code: the sysctl.d files of
/// the fixture root in systemd-sysctl's order (higher directory hides the
/// same name, all sorted by name, /etc/sysctl.conf only through its link),
/// each `key = value` in turn, the last one per key kept; only net.* keys are
/// written, into the namespace, with `sysctl -w`.
fn simulated_boot(root: &Path, ns: &Netns) -> Vec<(String, String)> {
    let mut names: Vec<(String, std::path::PathBuf)> = Vec::new();
    for dir in [
        "etc/sysctl.d",
        "run/sysctl.d",
        "usr/local/lib/sysctl.d",
        "usr/lib/sysctl.d",
    ] {
        let Ok(rd) = fs::read_dir(root.join(dir)) else {
            continue;
        };
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.ends_with(".conf") && !names.iter().any(|(x, _)| *x == n) {
                names.push((n, e.path()));
            }
        }
    }
    names.sort();
    let mut last: Vec<(String, String)> = Vec::new();
    for (_, path) in names {
        // Links are relative (../sysctl.conf): fs follows them inside the fixture.
        for line in fs::read_to_string(&path).unwrap_or_default().lines() {
            let line = line.trim();
            if line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some((k, v)) = line.split_once('=') {
                let (k, v) = (
                    k.trim().to_string(),
                    v.split_whitespace().collect::<Vec<_>>().join(" "),
                );
                last.retain(|(x, _)| *x != k);
                last.push((k, v));
            }
        }
    }
    last.retain(|(k, _)| k.starts_with("net."));
    for (k, v) in &last {
        ns.sysctl(k, v);
    }
    last
}

#[test]
#[ignore = "needs root"]
fn case16_namespace_apply_then_simulated_boot_keeps_the_profile() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let r = tmp.path();
    let root = r.to_str().unwrap();
    put(
        r,
        "/etc/sysctl.conf",
        "net.core.somaxconn = 1024\nnet.ipv4.tcp_fin_timeout = 60\n",
    );
    link(r, "/etc/sysctl.d/99-sysctl.conf", "../sysctl.conf");
    put(
        r,
        "/usr/lib/sysctl.d/50-vendor.conf",
        "net.ipv4.tcp_max_syn_backlog = 256\n",
    );
    let ns = Netns::new("pfown");
    let apply = |extra: &[&str]| {
        let mut a = vec![
            "preflight",
            "apply",
            "--profile",
            "c100k",
            "--only",
            "net",
            "--root",
            root,
            "--yes",
        ];
        a.extend_from_slice(extra);
        headroom_in(&ns, &a)
    };

    // The default file would lose to /etc/sysctl.conf: refused, nothing written.
    let before = ns_read(&ns, KEY);
    let o = apply(&[]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("apply refused: the next boot would undo 2 setting(s)"),
        "{}",
        text(&o)
    );
    assert!(err.contains("edit /etc/sysctl.conf"), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("--sysctl-file 99-zz-headroom.conf"),
        "{}",
        text(&o)
    );
    assert_eq!(ns_read(&ns, KEY), before);
    assert!(!r.join("etc/sysctl.d/90-headroom.conf").exists());
    assert!(!r.join("var/lib/headroom/rollback.json").exists());

    // A file that sorts after 99-sysctl.conf wins.
    let o = apply(&["--sysctl-file", "99-zz-headroom.conf"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = headroom_in(
        &ns,
        &[
            "preflight",
            "check",
            "--profile",
            "c100k",
            "--root",
            root,
            "--json",
            "--ignore",
            "fs,nofile,capacity,conntrack,memory,net.core.netdev_max_backlog",
        ],
    );
    let v: serde_json::Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    let row = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == KEY)
        .unwrap()
        .clone();
    assert_eq!(row["boot"]["verdict"], "holds", "{row}");
    assert_eq!(row["boot"]["value"], "65535");
    assert_eq!(row["boot"]["file"], "/etc/sysctl.d/99-zz-headroom.conf:2");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // Boot: a fresh namespace has the kernel's defaults; the files set the rest.
    let booted = Netns::new("pfboot");
    let set = simulated_boot(r, &booted);
    assert!(set.iter().any(|(k, _)| k == KEY), "{set:?}");
    assert_eq!(ns_read(&booted, KEY), "65535");
    assert_eq!(ns_read(&booted, "net.ipv4.tcp_max_syn_backlog"), "65535");
    assert_eq!(
        ns_read(&booted, "net.ipv4.ip_local_port_range"),
        "1024 65535"
    );
    assert_eq!(ns_read(&booted, "net.ipv4.tcp_fin_timeout"), "15");

    // The real systemd-sysctl, given the same files in headroom's order,
    // agrees (net.* only: --prefix keeps fs.* and the host out).
    let sd = Path::new("/usr/lib/systemd/systemd-sysctl");
    if sd.exists() {
        let fresh = Netns::new("pfsd");
        let files = SysctlD::read(&Root::at(r)).files(SD);
        let paths: Vec<String> = files
            .iter()
            .map(|f| {
                r.join(f.path.trim_start_matches('/'))
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        let mut argv = vec![sd.to_str().unwrap(), "--prefix=/net"];
        argv.extend(paths.iter().map(String::as_str));
        let o = fresh.exec(&argv);
        assert!(o.status.success(), "{}", text(&o));
        assert_eq!(ns_read(&fresh, KEY), "65535");
        assert_eq!(ns_read(&fresh, "net.ipv4.tcp_fin_timeout"), "15");
    }

    // Rollback, in the namespace apply ran in, removes exactly the file it
    // wrote and restores the runtime values; the next boot is sysctl.conf's again.
    let o = headroom_in(&ns, &["preflight", "rollback", "--root", root]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("- /etc/sysctl.d/99-zz-headroom.conf"),
        "{}",
        text(&o)
    );
    assert_eq!(ns_read(&ns, KEY), before);
    assert!(!r.join("etc/sysctl.d/99-zz-headroom.conf").exists());
    assert!(fs::symlink_metadata(r.join("etc/sysctl.d/99-sysctl.conf")).is_ok());
    let again = Netns::new("pfboot2");
    simulated_boot(r, &again);
    assert_eq!(ns_read(&again, KEY), "1024");
}
