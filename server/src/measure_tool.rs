//! `measure_service`: the referee as a tool. An agent asks for a service on
//! this host to be flooded on loopback until it breaks, and gets the
//! measured breaking point beside the prediction. It runs long, so it is a
//! task for a client that declared the tasks extension.
//!
//! It loads a real service, so it is served only when the operator starts
//! the server with `--allow-measure`, and it is bounded: 127.0.0.1 only, at
//! most [`MAX_CONNECTIONS`] connections and [`MAX_SECONDS`] of opening, one
//! measurement at a time per server process, and the flood (a `headroom
//! flood` child in its own process group) is killed when the call is
//! cancelled or its task dropped.

use headroom_mcp::tasks::TaskSupport;
use headroom_mcp::{Registry, ToolFuture, ToolOutput};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Connections one measurement may open at most.
pub const MAX_CONNECTIONS: u64 = 20_000;
/// Longest opening phase, in seconds.
pub const MAX_SECONDS: u64 = 60;
/// The flood modes offered: those that need no credentials or scripts.
const MODES: [&str; 5] = ["connect", "mcp", "redis", "memcached", "http"];

/// One measurement at a time in this process: two floods at once would
/// measure each other.
static RUNNING: AtomicBool = AtomicBool::new(false);

/// Clears [`RUNNING`] however the measurement ends (done, failed, cancelled).
struct Slot;

impl Slot {
    fn take() -> Option<Slot> {
        RUNNING
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| Slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        RUNNING.store(false, Ordering::Release);
    }
}

/// Kills the flood's whole process group (it forks workers) when dropped.
struct Group(Option<u32>);

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            // SAFETY: a signal to the process group this call created.
            unsafe {
                libc::kill(-(pgid as i32), libc::SIGKILL);
            }
        }
    }
}

/// What to measure, checked against the bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub port: u16,
    pub mode: String,
    pub connections: u64,
    pub seconds: u64,
}

/// Reads and bounds the tool's arguments.
pub fn request_of(args: &serde_json::Map<String, Value>) -> Result<Request, String> {
    let port = args
        .get("port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)
        .ok_or("port (an integer between 1 and 65535) is required")?;
    let mode = match args.get("mode") {
        None | Some(Value::Null) => "connect".to_string(),
        Some(Value::String(m)) if MODES.contains(&m.as_str()) => m.clone(),
        Some(other) => {
            return Err(format!(
                "mode must be one of {}; got {other}",
                MODES.join(", ")
            ))
        }
    };
    let bounded = |key: &str, default: u64, max: u64| match args.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_u64()
            .filter(|n| (1..=max).contains(n))
            .ok_or(format!("{key} must be an integer from 1 to {max}")),
    };
    Ok(Request {
        port,
        mode,
        connections: bounded("connections", 2_000, MAX_CONNECTIONS)?,
        seconds: bounded("duration_s", 20, MAX_SECONDS)?,
    })
}

/// The `headroom flood` arguments for `r`: loopback only, and `--port` so
/// that the flood prints the prediction for the same listener.
pub fn flood_args(r: &Request) -> Vec<String> {
    vec![
        "flood".into(),
        "--target".into(),
        format!("127.0.0.1:{}", r.port),
        "--port".into(),
        r.port.to_string(),
        "-n".into(),
        r.connections.to_string(),
        "--mode".into(),
        r.mode.clone(),
        "--duration".into(),
        format!("{}s", r.seconds),
        "--json".into(),
    ]
}

/// One line for the agent: measured against predicted.
pub fn summary(doc: &Value) -> String {
    let held = &doc["held"];
    let p = &doc["prediction"];
    let bp = &doc["breaking_point"];
    let refused: u64 = doc["failures"]
        .as_object()
        .map_or(0, |f| f.values().filter_map(Value::as_u64).sum());
    let broke = match (
        bp["cause_text"].as_str(),
        doc["server_refusal"]["message"].as_str(),
    ) {
        (Some(c), _) => format!("broke at {}: {c}", bp["connections"]),
        (None, Some(m)) => format!("{refused} refused: {m}"),
        (None, None) => format!(
            "did not break ({})",
            doc["stop"].as_str().unwrap_or("stopped")
        ),
    };
    match p["predicted_max_connections"].as_u64() {
        Some(predicted) => format!(
            "held {held}, predicted {predicted} ({}); {broke}",
            p["binding"].as_str().unwrap_or("?")
        ),
        None => format!("held {held}; {broke}"),
    }
}

async fn measure(r: Request) -> Result<Value, String> {
    let exe = std::env::current_exe().map_err(|e| format!("finding the headroom binary: {e}"))?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.args(flood_args(&r))
        .process_group(0)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let child = cmd
        .spawn()
        .map_err(|e| format!("starting the flood: {e}"))?;
    let _group = Group(child.id());
    // The opening phase, the end check of every held connection, and slack.
    let limit = Duration::from_secs(r.seconds + 60);
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .map_err(|_| format!("the flood did not finish within {} s", limit.as_secs()))?
        .map_err(|e| format!("running the flood: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!("the flood failed: {}", err.trim()));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("reading the flood's report: {e}"))
}

/// Registers `measure_service`.
pub fn register(reg: &mut Registry) {
    reg.tool_with(
        json!({
            "name": "measure_service",
            "title": "Measure a service's breaking point",
            "description": format!("Floods a TCP service on this host (127.0.0.1:port) until it refuses, times out or the count is reached, and returns the measured breaking point beside headroom's prediction for that listener. Loads the service: at most {MAX_CONNECTIONS} connections and {MAX_SECONDS} s of opening, one measurement at a time. Runs as a task when the client supports tasks."),
            "inputSchema": {
                "type": "object",
                "properties": {
                    "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                    "mode": {"type": "string", "enum": MODES, "description": "what proves a connection is served (default connect)"},
                    "connections": {"type": "integer", "minimum": 1, "maximum": MAX_CONNECTIONS},
                    "duration_s": {"type": "integer", "minimum": 1, "maximum": MAX_SECONDS}
                },
                "required": ["port"]
            },
            "annotations": {"readOnlyHint": false, "destructiveHint": false, "openWorldHint": false}
        }),
        |args, _ctx| {
            let r = match request_of(&args) {
                Ok(r) => r,
                Err(e) => return ToolFuture::Ready(Ok(ToolOutput::error(e))),
            };
            let Some(slot) = Slot::take() else {
                return ToolFuture::Ready(Ok(ToolOutput::error(
                    "a measurement is already running in this server; try again when it ends",
                )));
            };
            ToolFuture::Pending(Box::pin(async move {
                let _slot = slot;
                Ok(match measure(r).await {
                    Ok(doc) => {
                        let mut out = ToolOutput::structured(doc.clone());
                        out.content = vec![json!({"type": "text", "text": summary(&doc)})];
                        out
                    }
                    Err(e) => ToolOutput::error(e),
                })
            }))
        },
    )
    .task_support = TaskSupport::Optional;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: Value) -> serde_json::Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn arguments_are_bounded() {
        let r = request_of(&args(json!({"port": 6379}))).unwrap();
        assert_eq!(
            r,
            Request {
                port: 6379,
                mode: "connect".into(),
                connections: 2000,
                seconds: 20
            }
        );
        let r = request_of(&args(
            json!({"port": 80, "mode": "http", "connections": 20000, "duration_s": 60}),
        ))
        .unwrap();
        assert_eq!(
            (r.connections, r.seconds, r.mode.as_str()),
            (20000, 60, "http")
        );
        for (bad, why) in [
            (json!({}), "port"),
            (json!({"port": 0}), "port"),
            (json!({"port": 70000}), "port"),
            (
                json!({"port": 80, "connections": 20001}),
                "connections must be an integer from 1 to 20000",
            ),
            (json!({"port": 80, "connections": 0}), "connections"),
            (
                json!({"port": 80, "duration_s": 61}),
                "duration_s must be an integer from 1 to 60",
            ),
            (json!({"port": 80, "mode": "bomb"}), "mode must be one of"),
            (
                json!({"port": 80, "mode": "postgres"}),
                "mode must be one of",
            ),
        ] {
            let e = request_of(&args(bad.clone())).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn the_flood_is_loopback_and_predicted_for_the_same_port() {
        let r = request_of(&args(
            json!({"port": 6379, "mode": "redis", "connections": 600}),
        ))
        .unwrap();
        assert_eq!(
            flood_args(&r).join(" "),
            "flood --target 127.0.0.1:6379 --port 6379 -n 600 --mode redis --duration 20s --json"
        );
    }

    #[test]
    fn one_measurement_at_a_time() {
        let first = Slot::take().expect("free at start");
        assert!(Slot::take().is_none());
        drop(first);
        assert!(Slot::take().is_some());
    }

    #[test]
    fn the_summary_sets_measured_beside_predicted() {
        let doc = json!({"held": 500, "stop": "failure",
            "prediction": {"predicted_max_connections": 500, "binding": "redis-maxclients"},
            "breaking_point": {"connections": 500, "cause_text": "the server's own refusal: max number of clients reached"}});
        assert_eq!(
            summary(&doc),
            "held 500, predicted 500 (redis-maxclients); broke at 500: the server's own refusal: max number of clients reached"
        );
        let doc = json!({"held": 10, "stop": "target", "prediction": null, "breaking_point": null});
        assert_eq!(summary(&doc), "held 10; did not break (target)");
        // The count was reached before a breaking point, past the cap.
        let doc = json!({"held": 150, "stop": "target", "breaking_point": null,
            "failures": {"refused": 50},
            "server_refusal": {"message": "connection refused: max-connections 150 reached"},
            "prediction": {"predicted_max_connections": 150, "binding": "headroom-max-connections"}});
        assert_eq!(
            summary(&doc),
            "held 150, predicted 150 (headroom-max-connections); 50 refused: connection refused: max-connections 150 reached"
        );
    }
}
