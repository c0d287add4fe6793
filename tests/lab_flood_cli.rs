//! `headroom flood` end to end against `headroom serve` on loopback (no root
//! needed): worker processes, source addresses, the bomb and ping phases,
//! exact counts; and the safety rules on targets and bounds.

#[path = "util/lab.rs"]
mod lab;
mod util;

use std::process::{Command, Stdio};
use std::time::Duration;

/// A `headroom serve` on 127.0.0.1:0, killed on drop; returns its address.
fn serve(extra: &[&str]) -> (lab::Guard, String) {
    let mut server = lab::Guard(
        Command::new(util::headroom_bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--json"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("headroom serve"),
    );
    let ready = lab::wait_for_line(&mut server.0, Duration::from_secs(30), |l| {
        l.starts_with('{')
    });
    let v: serde_json::Value = serde_json::from_str(&ready).unwrap();
    (server, v["listen"].as_str().unwrap().to_string())
}

#[test]
fn flood_bombs_and_pings_over_workers_and_sources() {
    let (_server, target) = serve(&[]);
    let r = lab::flood(
        None,
        &[
            "--target",
            &target,
            "--mode",
            "bomb",
            "-n",
            "300",
            "--workers",
            "3",
            "--sources",
            "2",
            "--bomb-duration",
            "1s",
            "--window",
            "4",
        ],
    );
    assert_eq!(r["workers"], 3);
    assert_eq!(r["sources"], 2);
    assert_eq!(r["opened"], 300, "{r:#}");
    assert_eq!(r["stop"], "target");
    assert!(r["breaking_point"].is_null());
    assert_eq!(r["latency"]["count"], 300);
    let b = &r["bomb"];
    assert_eq!(b["sessions"], 300);
    assert_eq!(
        (b["errors"].as_u64(), b["lost"].as_u64()),
        (Some(0), Some(0)),
        "{b:#}"
    );
    // Every request sent got a good reply, and there were plenty of them.
    assert_eq!(b["replies"], b["sent"]);
    assert!(b["replies"].as_u64().unwrap() >= 300 * 4);
    assert_eq!(r["ping"]["replies"], 300);
    assert_eq!(r["ping"]["failed"], 0);
}

#[test]
fn flood_stops_at_max_connections_with_the_refusal() {
    let (_server, target) = serve(&["--max-connections", "40"]);
    let r = lab::flood(
        None,
        &[
            "--target",
            &target,
            "--mode",
            "connect",
            "-n",
            "100",
            "--concurrency",
            "1",
            "--fail-streak",
            "5",
        ],
    );
    // Connect mode learns of the refusal from the line the server sends on
    // the idle connection: 40 held, the rest refused.
    assert_eq!(r["held"], 40, "{r:#}");
    assert_eq!(r["breaking_point"]["cause"], "refused");
    assert_eq!(r["server_refusal"]["limit"], "max-connections");
    assert_eq!(r["server_refusal"]["max"], 40);
}

#[test]
fn flood_refuses_unsafe_targets_and_bounds() {
    let run = |args: &[&str]| {
        let out = Command::new(util::headroom_bin())
            .arg("flood")
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&["--target", "192.0.2.1:80"]);
    assert_eq!(code, Some(3));
    assert!(err.contains("not a loopback address"), "{err}");
    // Outside a namespace the opt-in is not enough.
    let (code, err) = run(&["--target", "192.0.2.1:80", "--allow-netns-target"]);
    assert_eq!(code, Some(3));
    assert!(err.contains("host's network namespace"), "{err}");
    let (code, err) = run(&["--target", "127.0.0.1:9", "-n", "2000000"]);
    assert_eq!(code, Some(3));
    assert!(err.contains("--connections must be"), "{err}");
    let (code, err) = run(&["--target", "[::1]:9", "--sources", "2"]);
    assert_eq!(code, Some(3));
    assert!(err.contains("127.0.0.x"), "{err}");
}
