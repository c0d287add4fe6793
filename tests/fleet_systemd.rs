//! The shipped systemd units: `systemd-analyze verify` accepts them (no
//! warning at all), they carry the hardening the issue asks for, and their
//! `systemd-analyze security` exposure stays at or under the goal.

#[path = "util/fleet.rs"]
mod fleet;

use std::path::{Path, PathBuf};
use std::process::Command;

const UNITS: [&str; 2] = ["headroom-probe.service", "headroom-serve.service"];

fn analyze() -> Command {
    // PID 1 need not be systemd: verify and --offline security only read files.
    assert!(
        Path::new("/usr/bin/systemd-analyze").exists() || which("systemd-analyze"),
        "systemd-analyze not found: ./scripts/setup.sh installs the Debian package systemd"
    );
    Command::new("systemd-analyze")
}

fn which(bin: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false)
}

/// A copy of the unit in a fresh directory whose ExecStart points at the
/// binary cargo built, so verify can check the command exists.
fn staged(unit: &str, dir: &Path, edit: impl Fn(String) -> String) -> PathBuf {
    let text = fleet::read(&fleet::deploy("systemd").join(unit))
        .replace("/usr/bin/headroom", env!("CARGO_BIN_EXE_headroom"));
    let path = dir.join(unit);
    std::fs::write(&path, edit(text)).unwrap();
    path
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("headroom-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn verify(path: &Path) -> (bool, String) {
    let out = analyze()
        .args(["verify", "--man=no"])
        .arg(path)
        .output()
        .expect("run systemd-analyze");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn units_verify_without_a_single_warning() {
    let dir = tempdir("verify");
    for unit in UNITS {
        let (ok, text) = verify(&staged(unit, &dir, |t| t));
        assert!(ok && text.trim().is_empty(), "{unit}: {text}");
    }
    // The check can fail: a misspelt directive is reported (verify still
    // exits 0 for it, hence the empty-output assertion above).
    let bad = staged(UNITS[1], &dir, |t| {
        t.replace("NoNewPrivileges=", "NoNewPrivilege=")
    });
    let (_, text) = verify(&bad);
    assert!(text.contains("Unknown key 'NoNewPrivilege'"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn units_carry_the_hardening() {
    for unit in UNITS {
        let text = fleet::read(&fleet::deploy("systemd").join(unit));
        let has = |line: &str| text.lines().any(|l| l.trim() == line);
        for want in [
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ProtectHome=yes",
            "PrivateTmp=yes",
            "PrivateDevices=yes",
            "ProtectKernelTunables=yes",
            "ProtectKernelModules=yes",
            "ProtectControlGroups=yes",
            "RestrictNamespaces=yes",
            "MemoryDenyWriteExecute=yes",
            "SystemCallArchitectures=native",
        ] {
            assert!(has(want), "{unit}: missing {want}");
        }
        assert!(
            text.lines().any(|l| l.starts_with("LimitNOFILE=")),
            "{unit}: LimitNOFILE"
        );
        assert!(
            text.contains("ExecStart=/usr/bin/headroom "),
            "{unit}: ExecStart"
        );
    }
    // Exactly these capabilities, in both sets, and nothing else anywhere.
    let probe = fleet::read(&fleet::deploy("systemd/headroom-probe.service"));
    let caps = "CAP_BPF CAP_PERFMON CAP_SYS_PTRACE CAP_DAC_READ_SEARCH";
    let directives: Vec<&str> = probe
        .lines()
        .filter(|l| {
            l.starts_with("CapabilityBoundingSet=") || l.starts_with("AmbientCapabilities=")
        })
        .collect();
    assert_eq!(
        directives,
        [
            format!("CapabilityBoundingSet={caps}"),
            format!("AmbientCapabilities={caps}")
        ]
    );
    let serve = fleet::read(&fleet::deploy("systemd/headroom-serve.service"));
    assert!(
        serve.contains("\nCapabilityBoundingSet=\n"),
        "server keeps no capability"
    );
    assert!(
        serve.contains("\nDynamicUser=yes\n"),
        "server runs as a dynamic user"
    );
}

fn exposure(unit: &str) -> f64 {
    let path = fleet::deploy("systemd").join(unit);
    let out = analyze()
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&path)
        .output()
        .expect("run systemd-analyze security");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("{unit}: no exposure line in {text}"));
    let n: f64 = line
        .split(": ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{unit}: cannot parse {line:?}"));
    eprintln!("{unit}: exposure {n}");
    n
}

#[test]
fn exposure_is_within_the_goal() {
    // Goal from the issue: 2.5 or lower for the server; as low as eBPF allows
    // for the probe (root uid, bpf() and perf_event_open, /proc of others).
    let serve = exposure("headroom-serve.service");
    assert!(serve <= 2.5, "headroom-serve exposure {serve}");
    let probe = exposure("headroom-probe.service");
    assert!(probe <= 2.6, "headroom-probe exposure {probe}");
}
