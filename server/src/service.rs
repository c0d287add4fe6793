//! Any service on this host, not only this server: the `service_capacity`
//! tool and the `headroom://port/{port}` resource template. The same road
//! as `headroom status --port`: a polled snapshot of the processes behind a
//! port (or a pid), the server recognised and its own cap read, the model.

use headroom_core::{predict, ModelConfig, SCHEMA_VERSION};
use headroom_mcp::{jsonrpc, RpcError};
use headroom_probe::Target;
use serde_json::{json, Value};

pub const PORT_TEMPLATE: &str = "headroom://port/{port}";

/// The capacity document of a service: its prediction with the
/// application's own caps, the application, and the snapshot.
pub fn service_document(target: &Target) -> Result<Value, String> {
    let opts = headroom_apps::Options {
        // An agent's call must not carry a password; a Redis that
        // authenticates is read from its configuration file.
        redis_password: std::env::var("HEADROOM_REDIS_PASSWORD").ok(),
        ..Default::default()
    };
    let snap = headroom_probe::app_snapshot(target, &opts).map_err(|e| e.to_string())?;
    let prediction = predict(&snap, &ModelConfig::default());
    Ok(json!({
        "schema_version": SCHEMA_VERSION,
        "target": target.to_string(),
        "application": snap.app.as_ref().map(|a| a.summary()),
        "prediction": prediction,
        "snapshot": snap,
    }))
}

/// The target named by a tool call's arguments: exactly one of `port`, `pid`.
pub fn target_of(args: &serde_json::Map<String, Value>) -> Result<Target, String> {
    let num = |k: &str| args.get(k).filter(|v| !v.is_null());
    match (num("port"), num("pid")) {
        (Some(p), None) => p
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0)
            .map(Target::Port)
            .ok_or_else(|| "port must be an integer between 1 and 65535".to_string()),
        (None, Some(p)) => p
            .as_u64()
            .and_then(|p| u32::try_from(p).ok())
            .filter(|p| *p > 0)
            .map(Target::Pid)
            .ok_or_else(|| "pid must be a positive integer".to_string()),
        (Some(_), Some(_)) => Err("give port or pid, not both".into()),
        (None, None) => Err("give port (a TCP port on this host) or pid".into()),
    }
}

/// Reads `headroom://port/N`; `None` for URIs of other shapes.
pub fn read_port_resource(uri: &str) -> Option<Result<Vec<Value>, RpcError>> {
    let rest = uri.strip_prefix("headroom://port/")?;
    let port = match rest.parse::<u16>() {
        Ok(p) if p > 0 => p,
        _ => {
            return Some(Err(RpcError::invalid_params(format!(
                "{uri}: the port must be an integer between 1 and 65535"
            ))))
        }
    };
    Some(match service_document(&Target::Port(port)) {
        Ok(doc) => Ok(vec![json!({
            "uri": uri,
            "mimeType": "application/json",
            "text": doc.to_string(),
        })]),
        Err(e) => Err(RpcError::new(
            jsonrpc::RESOURCE_NOT_FOUND,
            format!("resource not found: {uri}: {e}"),
        )
        .with_data(json!({"uri": uri}))),
    })
}

/// The port of a `headroom://port/N` URI.
pub fn port_of(uri: &str) -> Option<u16> {
    uri.strip_prefix("headroom://port/")?
        .parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
}

/// How long a sampler reuses what it learnt of the application (its own
/// caps: maxclients, worker_connections) before asking it again.
const APP_FRESH: std::time::Duration = std::time::Duration::from_secs(60);

/// The sampler behind subscriptions to `headroom://port/N`: a polled
/// snapshot of the processes on the port (a full pass each time, the same
/// count `resources/read` gives: the incremental pass's connection count is
/// an estimate, exact only for a server that counts its own), the
/// application inspected at the first sample, when the processes change and
/// once a minute (inspecting may read its files or talk to it), the model.
/// `None` while nothing listens on the port.
pub fn port_sampler(port: u16) -> headroom_mcp::subscriptions::Observe {
    let target = Target::Port(port);
    let mut poll = headroom_probe::poll::PollSource::new();
    let mut app: Option<(headroom_core::AppInfo, Vec<u32>, std::time::Instant)> = None;
    crate::watch::sampler(move || {
        let mut snap = poll.snapshot(&target).ok()?;
        let pids: Vec<u32> = snap.processes.iter().map(|p| p.pid).collect();
        if pids.is_empty() {
            return None;
        }
        let stale = app
            .as_ref()
            .is_none_or(|(_, seen, at)| *seen != pids || at.elapsed() >= APP_FRESH);
        if stale {
            let opts = headroom_apps::Options {
                redis_password: std::env::var("HEADROOM_REDIS_PASSWORD").ok(),
                ..Default::default()
            };
            app = Some((
                headroom_apps::inspect(&snap, &opts),
                pids.clone(),
                std::time::Instant::now(),
            ));
        }
        snap.app = app.as_ref().map(|(a, _, _)| a.clone());
        let p = predict(&snap, &ModelConfig::default());
        Some(crate::watch::Observation::from_prediction(&p, pids))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: Value) -> serde_json::Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn target_is_exactly_one_of_port_or_pid() {
        assert_eq!(
            target_of(&args(json!({"port": 6379}))),
            Ok(Target::Port(6379))
        );
        assert_eq!(target_of(&args(json!({"pid": 42}))), Ok(Target::Pid(42)));
        assert!(target_of(&args(json!({"port": 0}))).is_err());
        assert!(target_of(&args(json!({"port": 70000}))).is_err());
        assert!(target_of(&args(json!({"port": "80"}))).is_err());
        assert!(target_of(&args(json!({"port": 1, "pid": 2}))).is_err());
        assert!(target_of(&args(json!({}))).is_err());
    }

    #[test]
    fn port_uri_shapes() {
        assert!(read_port_resource("headroom://capacity").is_none());
        assert!(matches!(
            read_port_resource("headroom://port/abc"),
            Some(Err(_))
        ));
        assert!(matches!(
            read_port_resource("headroom://port/0"),
            Some(Err(_))
        ));
    }
}
