//! Subscriptions to a service's capacity, end to end over TCP: a plain
//! listener with RLIMIT_NOFILE 200 (tests/python/hold_listener.py) whose
//! connections the test opens one batch at a time; `headroom serve` must
//! tell a subscriber to `headroom://port/P` exactly once, within a second,
//! when one more connection takes the binding limit (nofile) across 90%,
//! in the initialize era (`resources/subscribe`) and in 2026-07-28
//! (`subscriptions/listen`, notifications tagged with its id).

#[path = "util/hold.rs"]
mod hold;
#[path = "util/server.rs"]
mod server;
mod util;

use hold::{in_use_at, nofile_of, HoldListener};
use serde_json::{json, Value};
use server::Server;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::{Duration, Instant};

const ENVELOPE: &str = "io.modelcontextprotocol/protocolVersion";

/// A line client whose reader thread timestamps every message.
struct Line {
    stream: TcpStream,
    rx: mpsc::Receiver<(Instant, Value)>,
    /// Notifications seen while waiting for responses.
    notes: Vec<(Instant, Value)>,
    stateless: bool,
    next_id: u64,
}

impl Line {
    fn connect(srv: &Server, stateless: bool) -> Line {
        let stream = TcpStream::connect(srv.addr).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in reader.lines() {
                let Ok(line) = line else { return };
                let v: Value = serde_json::from_str(&line).unwrap();
                if tx.send((Instant::now(), v)).is_err() {
                    return;
                }
            }
        });
        let mut l = Line {
            stream,
            rx,
            notes: Vec::new(),
            stateless,
            next_id: 1,
        };
        if !stateless {
            let r = l.request(
                "initialize",
                json!({"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "t", "version": "1"}}),
            );
            assert_eq!(r["result"]["protocolVersion"], "2025-11-25");
            l.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        }
        l
    }

    fn send(&mut self, v: &Value) {
        let mut b = serde_json::to_vec(v).unwrap();
        b.push(b'\n');
        self.stream.write_all(&b).unwrap();
    }

    fn params(&self, mut p: Value) -> Value {
        if self.stateless {
            p["_meta"] = json!({ENVELOPE: "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {}});
        }
        p
    }

    /// Sends a request; its response (notifications meanwhile are kept).
    fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let params = self.params(params);
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        loop {
            let (at, v) = self
                .rx
                .recv_timeout(Duration::from_secs(20))
                .expect("a response");
            if v.get("id") == Some(&json!(id)) && v.get("method").is_none() {
                return v;
            }
            self.notes.push((at, v));
        }
    }

    /// Notifications arriving within `window`.
    fn notifications(&mut self, window: Duration) -> Vec<(Instant, Value)> {
        let end = Instant::now() + window;
        let mut got = std::mem::take(&mut self.notes);
        while let Ok(m) = self
            .rx
            .recv_timeout(end.saturating_duration_since(Instant::now()))
        {
            got.push(m);
        }
        got
    }

    /// Waits until `quiet` passes without a notification (at most 15 s).
    fn settle(&mut self, quiet: Duration) {
        let end = Instant::now() + Duration::from_secs(15);
        self.notes.clear();
        while Instant::now() < end {
            if self.rx.recv_timeout(quiet).is_err() {
                return;
            }
        }
        panic!("notifications kept coming for 15 s");
    }

    /// (limit, used, reserve) of the service's binding constraint.
    fn nofile(&mut self, uri: &str) -> (u64, u64, u64) {
        let r = self.request("resources/read", json!({"uri": uri}));
        nofile_of(r["result"]["contents"][0]["text"].as_str().expect("text"))
    }

    /// Waits until the service's nofile `used` reaches `want`.
    fn wait_used(&mut self, uri: &str, want: u64) {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let (_, used, _) = self.nofile(uri);
            if used == want {
                return;
            }
            assert!(Instant::now() < end, "used {used}, want {want}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Subscribes `c` to the listener's URI (either era), crosses 70% in a
/// batch, settles, then crosses 90% with one connection; returns the
/// notifications of the 3 s after that connection, and when it was opened.
fn cross_90(c: &mut Line, listener: &mut HoldListener) -> (Instant, Vec<(Instant, Value)>) {
    let uri = listener.uri();
    let (limit, used0, reserve) = c.nofile(&uri);
    assert_eq!(limit, 200);
    let at90 = in_use_at(limit, 0.9) - reserve;
    assert!(
        used0 + 40 < at90,
        "the listener starts well below 90%: {used0} of {limit}"
    );
    if c.stateless {
        let id = "listen-port";
        c.send(
            &json!({"jsonrpc": "2.0", "id": id, "method": "subscriptions/listen",
            "params": c.params(json!({"notifications": {"resourceSubscriptions": [uri]}}))}),
        );
        let (_, ack) = c.rx.recv_timeout(Duration::from_secs(10)).expect("an ack");
        assert_eq!(ack["method"], "notifications/subscriptions/acknowledged");
        assert_eq!(
            ack["params"],
            json!({"notifications": {"resourceSubscriptions": [uri]},
                   "_meta": {"io.modelcontextprotocol/subscriptionId": id}})
        );
    } else {
        let r = c.request("resources/subscribe", json!({"uri": uri}));
        assert_eq!(r["result"], json!({}), "{r}");
    }
    // Nothing changes: nothing is said.
    assert!(c.notifications(Duration::from_millis(1500)).is_empty());
    // One short of 90% (70% crossed on the way), then quiet.
    listener.open((at90 - used0 - 1) as usize);
    c.wait_used(&uri, at90 - 1);
    c.settle(Duration::from_millis(2000));
    // The one connection that crosses 90%.
    let t0 = Instant::now();
    listener.open(1);
    (t0, c.notifications(Duration::from_secs(3)))
}

fn assert_one_within_a_second(t0: Instant, got: &[(Instant, Value)], uri: &str) -> Value {
    assert_eq!(
        got.len(),
        1,
        "exactly one notification for the crossing: {got:?}"
    );
    let (at, n) = &got[0];
    assert!(
        at.duration_since(t0) < Duration::from_secs(1),
        "told after {:?}",
        at.duration_since(t0)
    );
    assert_eq!(n["method"], "notifications/resources/updated");
    assert_eq!(n["params"]["uri"], uri);
    n.clone()
}

#[test]
fn initialize_era_subscriber_is_told_once_when_90_percent_is_crossed() {
    let mut listener = HoldListener::start(200);
    let srv = Server::start(&[]);
    let mut c = Line::connect(&srv, false);
    let (t0, got) = cross_90(&mut c, &mut listener);
    let n = assert_one_within_a_second(t0, &got, &listener.uri());
    assert!(n["params"].get("_meta").is_none());
    // Unsubscribed: the sampler stops, more connections say nothing.
    let r = c.request("resources/unsubscribe", json!({"uri": listener.uri()}));
    assert_eq!(r["result"], json!({}));
    listener.open(10);
    assert!(c.notifications(Duration::from_millis(1500)).is_empty());
}

#[test]
fn listen_subscriber_is_told_once_when_90_percent_is_crossed() {
    let mut listener = HoldListener::start(200);
    let srv = Server::start(&[]);
    let mut c = Line::connect(&srv, true);
    let (t0, got) = cross_90(&mut c, &mut listener);
    let n = assert_one_within_a_second(t0, &got, &listener.uri());
    assert_eq!(
        n["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
        "listen-port"
    );
    // Cancelled: no response, and nothing more.
    c.send(
        &json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
        "params": {"requestId": "listen-port"}}),
    );
    listener.open(10);
    assert!(c.notifications(Duration::from_millis(1500)).is_empty());
}

#[test]
fn a_port_nothing_listens_on_cannot_be_subscribed() {
    let srv = Server::start(&[]);
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let mut c = Line::connect(&srv, false);
    let r = c.request(
        "resources/subscribe",
        json!({"uri": format!("headroom://port/{port}")}),
    );
    assert_eq!(r["error"]["code"], -32002, "{r}");
    let r = c.request("resources/subscribe", json!({"uri": "headroom://port/0"}));
    assert_eq!(r["error"]["code"], -32602, "{r}");
}
