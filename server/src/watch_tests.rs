//! The change rules on fixture samples (exact: which sample is news, and
//! why), coalescing per subscription, the shared sampler, the bounds, and
//! both eras' wire shapes through an engine session.

use super::*;
use headroom_mcp::subscriptions::{SubscriptionConfig, SUBSCRIPTION_ID_KEY};
use headroom_mcp::{Engine, EngineConfig, Registry, Session, ToolOutput, Transport};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};

fn obs(utilisation: f64) -> Observation {
    Observation {
        binding: "nofile".into(),
        predicted_max: 1000,
        connections: 0,
        headroom_connections: 1000,
        utilisation,
        processes: vec![42],
    }
}

/// Samples one second apart; the change each one produced.
fn run(samples: &[Option<Observation>]) -> Vec<Option<Change>> {
    let mut d = Detector::new(ChangeRules::default());
    let t0 = Instant::now();
    samples
        .iter()
        .enumerate()
        .map(|(i, o)| d.observe_at(o.clone(), t0 + Duration::from_secs(i as u64)))
        .collect()
}

#[test]
fn one_crossing_is_exactly_one_change() {
    // 0.80 -> 0.95 in steps of 0.005: the 90% line is crossed once.
    let samples: Vec<_> = (0..31)
        .map(|i| Some(obs(0.80 + 0.005 * i as f64)))
        .collect();
    let changes = run(&samples);
    let fired: Vec<usize> = (0..changes.len())
        .filter(|i| changes[*i].is_some())
        .collect();
    assert_eq!(fired, vec![20], "{changes:?}");
    assert_eq!(changes[20], Some(Change::Crossed));
}

#[test]
fn thresholds_count_either_way_with_hysteresis() {
    let u = [0.5, 0.69, 0.71, 0.8, 0.91, 0.895, 0.88, 0.87, 0.6, 0.6];
    let changes = run(&u.iter().map(|u| Some(obs(*u))).collect::<Vec<_>>());
    use Change::Crossed as C;
    assert_eq!(
        changes,
        vec![
            None,
            None,
            Some(C),
            None,
            Some(C),
            None,
            None,
            Some(C),
            Some(C),
            None
        ]
    );
}

#[test]
fn binding_max_and_processes_are_news_noise_is_not() {
    let base = obs(0.1);
    let mut moved = base.clone();
    moved.predicted_max = 1050; // 5%: not news
    let mut drifted = base.clone();
    drifted.predicted_max = 1120; // 12% from the last notified value
    let mut binding = drifted.clone();
    binding.binding = "file-max".into();
    let mut forked = binding.clone();
    forked.processes = vec![42, 43];
    let changes = run(&[
        Some(base.clone()),
        Some(base.clone()),
        Some(moved),
        Some(drifted.clone()),
        Some(drifted),
        Some(binding),
        Some(forked.clone()),
        None,
        None,
        Some(forked),
    ]);
    use Change::*;
    assert_eq!(
        changes,
        vec![
            None,
            None,
            None,
            Some(PredictedMax),
            None,
            Some(Binding),
            Some(Processes),
            Some(Processes),
            None,
            Some(Processes)
        ]
    );
}

#[test]
fn time_to_limit_dropping_below_the_threshold_is_news_once() {
    let at = |conns: u64| Observation {
        connections: conns,
        headroom_connections: 2000,
        ..obs(0.1)
    };
    // One sample a second; the rate is taken over the last 5 s. +10 a
    // second: 200 s to go, not news; then +100 a second: under 60 s (at
    // 46 a second over the window) once, then steady, then nothing again.
    let conns = [0, 10, 20, 30, 130, 230, 330, 330, 330, 330, 330, 330];
    let changes = run(&conns.iter().map(|c| Some(at(*c))).collect::<Vec<_>>());
    let mut want = vec![None; conns.len()];
    want[5] = Some(Change::TimeToLimit);
    assert_eq!(changes, want);
    // One connection between two quick samples is no rate.
    let mut d = Detector::new(ChangeRules::default());
    let t0 = Instant::now();
    d.observe_at(Some(at(0)), t0);
    assert_eq!(
        d.observe_at(Some(at(1)), t0 + Duration::from_millis(250)),
        None
    );
}

/// A registry whose `test://w` resource is sampled from `value` (the
/// utilisation), counting its samplers in `started`.
fn watched(value: Arc<Mutex<f64>>, started: Arc<Mutex<u32>>) -> Registry {
    let mut r = Registry::default();
    r.resource(json!({"uri": "test://w", "name": "w"}), |uri| {
        Ok(vec![json!({"uri": uri, "text": "w"})])
    });
    r.resource(json!({"uri": "test://plain", "name": "plain"}), |uri| {
        Ok(vec![json!({"uri": uri, "text": "p"})])
    });
    r.tool(
        json!({"name": "t", "inputSchema": {"type": "object"}}),
        |_, _| Ok(ToolOutput::text("t")),
    );
    r.watch(move |uri| {
        if uri != "test://w" {
            return None;
        }
        *started.lock().unwrap() += 1;
        let value = value.clone();
        Some(sampler(move || Some(obs(*value.lock().unwrap()))))
    });
    r
}

fn engine(reg: Registry, per_session: usize, per_server: usize) -> Arc<Engine> {
    let cfg = EngineConfig {
        subscriptions: SubscriptionConfig {
            per_session,
            per_server,
            sample_every: Duration::from_millis(20),
            ..Default::default()
        },
        ..Default::default()
    };
    Engine::new(reg, cfg, None)
}

fn send(s: &mut Session, line: &str) -> Vec<Value> {
    let mut out = Vec::new();
    s.handle(line.as_bytes(), &mut out);
    parse(&out)
}

fn parse(out: &[u8]) -> Vec<Value> {
    out.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect()
}

/// Every message the session's events produce within `window`.
async fn collect(s: &mut Session, window: Duration) -> Vec<Value> {
    let mut out = Vec::new();
    let end = tokio::time::Instant::now() + window;
    while let Ok(ev) = tokio::time::timeout_at(end, s.next_event()).await {
        s.on_event(ev, &mut out);
    }
    parse(&out)
}

fn initialized(e: &Arc<Engine>) -> Session {
    let mut s = Session::new(e.clone(), Transport::Tcp);
    send(
        &mut s,
        r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#,
    );
    s
}

const SUB_W: &str =
    r#"{"jsonrpc":"2.0","id":1,"method":"resources/subscribe","params":{"uri":"test://w"}}"#;

#[tokio::test]
async fn one_shared_sampler_and_one_notification_per_crossing() {
    let value = Arc::new(Mutex::new(0.5));
    let started = Arc::new(Mutex::new(0));
    let e = engine(watched(value.clone(), started.clone()), 8, 100);
    let (mut a, mut b) = (initialized(&e), initialized(&e));
    for s in [&mut a, &mut b] {
        assert_eq!(send(s, SUB_W)[0]["result"], json!({}));
    }
    assert_eq!((e.hub.samplers(), e.hub.subscriptions()), (1, 2));
    assert_eq!(*started.lock().unwrap(), 1, "one sampler for both");
    // Quiet: samples every 20 ms, nothing is news.
    assert!(collect(&mut a, Duration::from_millis(300)).await.is_empty());
    *value.lock().unwrap() = 0.95;
    for s in [&mut a, &mut b] {
        let got = collect(s, Duration::from_millis(400)).await;
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0]["method"], "notifications/resources/updated");
        assert_eq!(got[0]["params"], json!({"uri": "test://w"}));
    }
    // Still above the line: nothing more.
    assert!(collect(&mut a, Duration::from_millis(300)).await.is_empty());
    drop(b);
    assert_eq!((e.hub.samplers(), e.hub.subscriptions()), (1, 1));
    send(
        &mut a,
        r#"{"jsonrpc":"2.0","id":2,"method":"resources/unsubscribe","params":{"uri":"test://w"}}"#,
    );
    assert_eq!((e.hub.samplers(), e.hub.subscriptions()), (0, 0));
    assert!(!a.has_pending());
}

#[tokio::test]
async fn updates_are_coalesced_to_one_per_second_per_subscription() {
    let e = engine(watched(Default::default(), Default::default()), 8, 100);
    let mut s = initialized(&e);
    send(
        &mut s,
        r#"{"jsonrpc":"2.0","id":1,"method":"resources/subscribe","params":{"uri":"test://plain"}}"#,
    );
    let t0 = Instant::now();
    e.resource_updated("test://plain");
    assert_eq!(collect(&mut s, Duration::from_millis(100)).await.len(), 1);
    for _ in 0..5 {
        e.resource_updated("test://plain");
    }
    e.resource_updated("test://elsewhere");
    // The five within the second: one notification, at the second.
    let got = collect(&mut s, Duration::from_millis(1300)).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(t0.elapsed() >= Duration::from_secs(1));
    assert!(collect(&mut s, Duration::from_millis(300)).await.is_empty());
}

#[tokio::test]
async fn bounds_per_session_and_per_server_are_refused_clearly() {
    let e = engine(watched(Default::default(), Default::default()), 1, 2);
    let mut a = initialized(&e);
    assert_eq!(send(&mut a, SUB_W)[0]["result"], json!({}));
    let r = send(
        &mut a,
        r#"{"jsonrpc":"2.0","id":2,"method":"resources/subscribe","params":{"uri":"test://plain"}}"#,
    );
    assert_eq!(r[0]["error"]["code"], -32000);
    assert!(r[0]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("on this session (max 1)"));
    let mut b = initialized(&e);
    assert_eq!(send(&mut b, SUB_W)[0]["result"], json!({}));
    let mut c = initialized(&e);
    let r = send(&mut c, SUB_W);
    assert_eq!(r[0]["error"]["code"], -32000);
    assert!(r[0]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("on this server (max 2)"));
    // Unknown resources are refused too (-32002 in this era).
    let r = send(
        &mut c,
        r#"{"jsonrpc":"2.0","id":3,"method":"resources/subscribe","params":{"uri":"test://nope"}}"#,
    );
    assert_eq!(r[0]["error"]["code"], -32002);
}

const LISTEN: &str = r#"{"jsonrpc":"2.0","id":"L1","method":"subscriptions/listen","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}},"notifications":{"resourceSubscriptions":["test://w","test://nope"]}}}"#;

#[tokio::test]
async fn listen_acknowledges_tags_and_ends_on_cancel() {
    let value = Arc::new(Mutex::new(0.5));
    let e = engine(watched(value.clone(), Default::default()), 8, 100);
    let mut s = Session::new(e.clone(), Transport::Stdio);
    let ack = send(&mut s, LISTEN);
    assert_eq!(ack.len(), 1, "an acknowledgement, no response: {ack:?}");
    assert_eq!(ack[0]["method"], "notifications/subscriptions/acknowledged");
    assert_eq!(
        ack[0]["params"],
        json!({"notifications": {"resourceSubscriptions": ["test://w"]},
               "_meta": {SUBSCRIPTION_ID_KEY: "L1"}})
    );
    // The same id again is refused while it listens.
    assert_eq!(send(&mut s, LISTEN)[0]["error"]["code"], -32600);
    tokio::time::sleep(Duration::from_millis(100)).await;
    *value.lock().unwrap() = 0.75;
    let got = collect(&mut s, Duration::from_millis(400)).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        got[0]["params"],
        json!({"uri": "test://w", "_meta": {SUBSCRIPTION_ID_KEY: "L1"}})
    );
    let none = send(
        &mut s,
        r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"L1"}}"#,
    );
    assert!(none.is_empty());
    assert!(!s.has_pending());
    assert_eq!(e.hub.samplers(), 0);
    // taskIds without the tasks extension: -32021.
    let r = send(
        &mut s,
        r#"{"jsonrpc":"2.0","id":9,"method":"subscriptions/listen","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}},"notifications":{"taskIds":["x"]}}}"#,
    );
    assert_eq!(r[0]["error"]["code"], -32021);
}
