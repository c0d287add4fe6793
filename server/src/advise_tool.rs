//! The `advise` tool: `headroom advise` for an agent, read-only. Two polled
//! samples of a port's (or a pid's) service an interval apart, the server
//! recognised and its own cap read, and the ranked advice: what was seen,
//! the remedy in its owner's terms, the capacity it buys, where it must be
//! written. Nothing is changed (no `--apply` here), and no eBPF program is
//! loaded by the server: the missing inputs say what that leaves out.

use headroom_advise::{self as adv, Config, PreflightOwners};
use headroom_mcp::{Registry, ToolOutput};
use headroom_preflight::Root;
use headroom_probe::{Probe, Target};
use serde_json::{json, Value};
use std::time::Duration;

/// The longest wait between the two samples an agent may ask for.
const MAX_INTERVAL_S: f64 = 10.0;

/// Adds `advise` to `reg`.
pub fn register(reg: &mut Registry) {
    reg.async_tool(
        json!({
            "name": "advise",
            "title": "Advice for a service on this host",
            "description": "Ranked advice for the service on a TCP port (or a pid) of this host, read-only: the signals seen over two samples (ListenOverflows and accept-queue peaks, TIME_WAIT against the port range, memory, the server's own caps such as Redis maxclients), the remedy in its owner's terms (a sysctl, a LimitNOFILE drop-in, the server's own directive), the capacity it buys (now and after), where it must be written to stick, and the exact command. Changes nothing.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                    "pid": {"type": "integer", "minimum": 1},
                    "interval_s": {"type": "number", "minimum": 0.05, "maximum": MAX_INTERVAL_S, "description": "seconds between the two samples (default 1)"}
                }
            },
            "outputSchema": {
                "type": "object",
                "properties": {
                    "schema_version": {"type": "integer"},
                    "target": {"type": "string"},
                    "advice": {"type": "array"},
                    "missing": {"type": "array"}
                },
                "required": ["schema_version", "target", "advice", "missing"]
            },
            "annotations": {"readOnlyHint": true, "openWorldHint": false}
        }),
        |args, _ctx| async move {
            let target = match crate::service::target_of(&args) {
                Ok(t) => t,
                Err(e) => return Ok(ToolOutput::error(e)),
            };
            let interval = match args.get("interval_s") {
                None | Some(Value::Null) => 1.0,
                Some(v) => match v.as_f64().filter(|s| (0.05..=MAX_INTERVAL_S).contains(s)) {
                    Some(s) => s,
                    None => {
                        return Ok(ToolOutput::error(format!(
                            "interval_s must be a number between 0.05 and {MAX_INTERVAL_S}"
                        )))
                    }
                },
            };
            // /proc reads, the server's own port and a sleep: off the runtime.
            let doc = tokio::task::spawn_blocking(move || document(&target, interval))
                .await
                .unwrap_or_else(|e| Err(format!("advising failed: {e}")));
            Ok(match doc {
                Ok((doc, text)) => {
                    let mut out = ToolOutput::structured(doc);
                    out.content = vec![json!({"type": "text", "text": text})];
                    out
                }
                Err(e) => ToolOutput::error(e),
            })
        },
    );
}

/// The advice document and its text for `target`.
pub fn document(target: &Target, interval_s: f64) -> Result<(Value, String), String> {
    let opts = headroom_apps::Options {
        redis_password: std::env::var("HEADROOM_REDIS_PASSWORD").ok(),
        ..Default::default()
    };
    let mut probe = Probe::new(target.clone()).with_apps(opts);
    let before = probe.snapshot().map_err(|e| e.to_string())?;
    std::thread::sleep(Duration::from_secs_f64(interval_s));
    let now = probe.snapshot().map_err(|e| e.to_string())?;
    let cfg = Config {
        interval_s: Some(interval_s),
        ebpf: false,
        initial_netns: None,
        ..Config::default()
    };
    let owners = PreflightOwners::read(&Root::system());
    let advice = adv::advise(&now, Some(&before), &owners, &cfg);
    let missing = adv::missing(
        &now,
        &cfg,
        Some("the MCP server polls; `headroom advise` loads the eBPF probe"),
    );
    let report = adv::render::Report::new(target.to_string(), &now, &advice, &missing, &cfg);
    let doc = serde_json::to_value(&report).map_err(|e| e.to_string())?;
    Ok((doc, report.text()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advises_this_process_and_names_what_polling_misses() {
        let (doc, text) = document(&Target::Pid(std::process::id()), 0.05).unwrap();
        assert_eq!(doc["target"], format!("pid {}", std::process::id()));
        assert_eq!(doc["source"], "poll");
        let missing: Vec<&str> = doc["missing"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(missing.contains(
            &"fd errors (EMFILE, ENFILE, EADDRNOTAVAIL): not seen without eBPF (the MCP server polls; `headroom advise` loads the eBPF probe)"
        ));
        assert!(text.starts_with(&format!("headroom advise: pid {}:", std::process::id())));
    }

    #[test]
    fn an_unknown_pid_is_an_error() {
        assert_eq!(
            document(&Target::Pid(u32::MAX - 1), 0.05).unwrap_err(),
            format!("no process with pid {}", u32::MAX - 1)
        );
    }
}
