//! `headroom top` and `headroom up` in a real terminal (tmux): the numbers on
//! screen against a running server, the keys, resize, and a clean exit.

#[path = "util/top.rs"]
mod top;
mod util;

use std::time::Duration;
use top::{connect, number_after, open_fds, Serve, Tmux};

const WAIT: Duration = Duration::from_secs(30);

fn bin() -> String {
    util::headroom_bin().display().to_string()
}

#[test]
fn top_shows_exact_numbers_of_a_running_server() {
    // nofile 4096 for the server, so the binding limit and its numbers are ours.
    let server = Serve::start(&util::headroom_bin(), 4096, &[]);
    let port = server.listen.port();
    let _clients = connect(server.listen, 300);
    let tmux = Tmux::start(
        &format!(
            // Polling, matched in full every refresh: this test checks exact
            // numbers while the server opens and closes /proc files, which
            // the quick passes' connection estimate does not follow.
            "'{}' top --port {port} --interval 0.5 --no-ebpf --resync 0; echo \"top exited: $?\"; sleep 60",
            bin()
        ),
        160,
        50,
    );
    // The server samples its own capacity every 2 s, holding a few /proc
    // files open meanwhile: wait for a refresh whose fd count is the one
    // /proc shows at that moment.
    let screen = tmux.wait_for("300 connections and the server's fd count", WAIT, |s| {
        let now = open_fds(server.pid);
        s.contains("connections 300 ") && s.contains(&format!("used {now}/4096 fds"))
    });
    let fds = number_after(&screen, "used ").expect("fds on screen");
    assert!(
        screen.contains(&format!("pid {} headroom", server.pid)),
        "{screen}"
    );
    assert!(screen.contains("source: /proc polling"), "{screen}");
    // 300 held + (4096 - fds - 32 reserved).
    let max = 300 + 4096 - fds - 32;
    assert!(
        screen.contains(&format!("predicted max {max} (nofile)")),
        "max {max}:\n{screen}"
    );
    assert!(screen.contains("▶ nofile"), "{screen}");
    assert_eq!(number_after(&screen, "established"), Some(300), "{screen}");
    assert!(screen.contains(&format!("127.0.0.1:{port}")), "{screen}");

    // Keys: pause shows in the title bar, help opens and closes, q quits with 0.
    tmux.send("p");
    tmux.wait_for("PAUSED", WAIT, |s| s.contains("PAUSED"));
    tmux.send("?");
    tmux.wait_for("help", WAIT, |s| s.contains("pause / resume refreshing"));
    tmux.send("Escape");
    tmux.wait_for("help closed", WAIT, |s| {
        !s.contains("pause / resume refreshing")
    });
    tmux.send("q");
    tmux.wait_for("top to exit", WAIT, |s| s.contains("top exited: 0"));
}

#[test]
fn top_follows_connections_as_they_come_and_go() {
    let server = Serve::start(&util::headroom_bin(), 4096, &[]);
    let tmux = Tmux::start(
        &format!(
            "'{}' top --pid {} --interval 0.3; echo \"top exited: $?\"; sleep 60",
            bin(),
            server.pid
        ),
        160,
        50,
    );
    tmux.wait_for("0 connections", WAIT, |s| s.contains("connections 0 "));
    let mut clients = connect(server.listen, 250);
    tmux.wait_for("250 connections", WAIT, |s| s.contains("connections 250 "));
    clients.truncate(100);
    let screen = tmux.wait_for("100 connections", WAIT, |s| s.contains("connections 100 "));
    // The sparkline's label keeps the maximum seen.
    assert!(screen.contains("max 250"), "{screen}");
    tmux.send("q");
    tmux.wait_for("top to exit", WAIT, |s| s.contains("top exited: 0"));
}

#[test]
fn top_reads_a_remote_metrics_endpoint() {
    let server = Serve::start(&util::headroom_bin(), 4096, &["--metrics", "127.0.0.1:0"]);
    let metrics = server
        .metrics
        .expect("serve --json names its metrics address");
    let _clients = connect(server.listen, 40);
    let url = format!("http://{metrics}/metrics");
    let tmux = Tmux::start(
        &format!(
            "'{}' top --source {url} --interval 0.5; echo \"top exited: $?\"; sleep 60",
            bin()
        ),
        160,
        50,
    );
    let screen = tmux.wait_for("40 connections", WAIT, |s| s.contains("connections 40 "));
    assert!(
        screen.contains(&format!("source: remote {url}")),
        "{screen}"
    );
    tmux.send("q");
    tmux.wait_for("top to exit", WAIT, |s| s.contains("top exited: 0"));
}

#[test]
fn top_survives_a_small_terminal_and_resizes() {
    let tmux = Tmux::start(
        &format!("'{}' top --demo; echo \"top exited: $?\"; sleep 60", bin()),
        60,
        15,
    );
    tmux.wait_for("too small", WAIT, |s| {
        s.contains("Terminal too small") && s.contains("60x15")
    });
    tmux.resize(160, 50);
    let screen = tmux.wait_for("the dashboard", WAIT, |s| s.contains("Constraints"));
    assert!(screen.contains("source: demo (fixture data)"), "{screen}");
    tmux.resize(70, 20);
    tmux.wait_for("too small again", WAIT, |s| {
        s.contains("70x20, headroom top needs 80x24")
    });
    tmux.send("q");
    tmux.wait_for("top to exit", WAIT, |s| s.contains("top exited: 0"));
}

#[test]
fn up_starts_the_server_and_quitting_stops_it() {
    let dir = std::env::temp_dir().join(format!("headroom-up-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("serve.log");
    let tmux = Tmux::start(
        &format!(
            "'{}' up --listen 127.0.0.1:0 --interval 0.5 --log '{}'; echo \"up exited: $?\"; sleep 60",
            bin(),
            log.display()
        ),
        160,
        50,
    );
    let screen = tmux.wait_for("the dashboard", WAIT, |s| s.contains("connections 0 "));
    // `up` uses the same source as `top`: the eBPF probe when it loads
    // (as root here), polling otherwise.
    let source = if util::is_root() {
        "source: eBPF probe"
    } else {
        "source: /proc polling"
    };
    assert!(screen.contains(source), "{screen}");
    let pid = number_after(&screen, "│ pid").expect("the title names the server's pid") as u32;
    let text = std::fs::read_to_string(&log).unwrap();
    let addr: std::net::SocketAddr = text
        .split("MCP over TCP on ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in the server log:\n{text}"))
        .parse()
        .unwrap();
    let _clients = connect(addr, 120);
    tmux.wait_for("120 connections", WAIT, |s| s.contains("connections 120 "));

    tmux.send("q");
    tmux.wait_for("up to exit", WAIT, |s| s.contains("up exited: 0"));
    // The server drained and is gone.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("draining 120 connection(s)"), "{text}");
    assert!(text.contains("drained, exiting"), "{text}");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "server pid {pid} still there"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
