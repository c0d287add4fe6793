//! `headroom preflight check` exit codes (0 pass, 1 fail, 2 only warnings,
//! 3 error), --json, --ignore and --pid, against profile fixtures whose
//! outcome does not depend on the host's values.

mod util;

use std::process::{Child, Command, Output};
use util::headroom_bin;

fn check(args: &[&str]) -> Output {
    util::run(
        Command::new(headroom_bin())
            .args(["preflight", "check"])
            .args(args),
    )
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A profile file `NAME.yaml` in `dir`, returning its path.
fn profile(dir: &std::path::Path, name: &str, body: &str) -> String {
    let p = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &p,
        format!("name: {name}\ndescription: fixture\ntarget_connections: 1\n{body}"),
    )
    .unwrap();
    p.to_str().unwrap().to_string()
}

// somaxconn is an int: >= 1 always holds, >= 2^31 never does.
const PASS: &str = "sysctls:\n  net.core.somaxconn: {min: 1}\n";
const WARN: &str = "sysctls:\n  net.core.somaxconn: {min: 1}\n  net.ipv4.tcp_max_syn_backlog: {min: 4294967296, level: warn}\n";
const FAIL: &str = "sysctls:\n  net.core.somaxconn: {min: 4294967296}\n  net.ipv4.tcp_max_syn_backlog: {min: 4294967296, level: warn}\n";

#[test]
fn exit_codes_are_0_pass_1_fail_2_warn_3_error() {
    let t = tempfile::tempdir().unwrap();
    let pass = profile(t.path(), "pass", PASS);
    let warn = profile(t.path(), "warn", WARN);
    let fail = profile(t.path(), "fail", FAIL);
    let o = check(&["--profile", &pass]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("2 ok, 0 warn, 0 fail, 0 ignored"),
        "{}",
        text(&o)
    );
    let o = check(&["--profile", &warn]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let o = check(&["--profile", &fail]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout)
            .contains("fix: sysctl -w net.core.somaxconn='4294967296'"),
        "{}",
        text(&o)
    );
    // Ignoring the failure leaves the warning: 2; ignoring both: 0.
    let o = check(&["--profile", &fail, "--ignore", "net.core.somaxconn"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let o = check(&["--profile", &fail, "--ignore", "net"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = check(&["--profile", &fail, "--ignore", "net.core.somaxcon"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--ignore net.core.somaxcon: no such check"),
        "{}",
        text(&o)
    );
}

#[test]
fn bad_profiles_exit_3_naming_file_line_and_key() {
    let t = tempfile::tempdir().unwrap();
    let bad = profile(
        t.path(),
        "bad",
        "sysctls:\n  net.ipv4.ip_local_port_range: {range: [60000, 1024]}\n",
    );
    let o = check(&["--profile", &bad]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!(
            "{bad}:5:3: sysctls.net.ipv4.ip_local_port_range: range low 60000 >= high 1024"
        )),
        "{}",
        text(&o)
    );
    let o = check(&["--profile", "no-such-profile"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("profile \"no-such-profile\" not found"));
}

#[test]
fn json_report_has_rows_capacity_and_namespace() {
    let t = tempfile::tempdir().unwrap();
    let warn = profile(t.path(), "warn", WARN);
    let o = check(&["--profile", &warn, "--json"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["schema_version"], 2);
    assert_eq!(v["profile"], "warn");
    let ns = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_eq!(v["netns"], ns.to_str().unwrap());
    let names: Vec<&str> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "net.core.somaxconn",
            "net.ipv4.tcp_max_syn_backlog",
            "capacity"
        ]
    );
    assert_eq!(v["checks"][1]["status"], "warn");
    assert_eq!(v["checks"][1]["scope"], "net-namespace");
    assert_eq!(v["summary"]["warn"], 1);
    assert!(v["now"]["predicted_max_connections"].as_u64().unwrap() > 0);
    assert_eq!(v["now"]["binding"], v["checks"][2]["constraint"]);
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn pid_checks_that_process_nofile() {
    // Lowering one's own limits needs no privilege: a child with 512:1024.
    let child = Command::new("sh")
        .args(["-c", "ulimit -Sn 512 && ulimit -Hn 1024 && exec sleep 30"])
        .spawn()
        .unwrap();
    let child = Kill(child);
    let pid = child.0.id().to_string();
    let t = tempfile::tempdir().unwrap();
    let p = profile(
        t.path(),
        "fd",
        "rlimits:\n  nofile: {soft: 1000, hard: 1000}\n",
    );
    // Wait (bounded) until the shell has exec'd sleep with its new limits.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Max open files") && l.contains(" 512 "))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "child never set its limits"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let o = check(&["--profile", &p, "--pid", &pid]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(&format!("soft 512, hard 1024 (pid {pid})")),
        "{}",
        text(&o)
    );
    assert!(
        out.contains("why: soft limit 512 < 1000: the process can raise it itself"),
        "{}",
        text(&o)
    );
    let o = check(&["--profile", &p, "--pid", "4294967294"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no process with pid 4294967294"));
}
