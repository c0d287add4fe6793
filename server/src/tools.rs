//! headroom's own tools, resources and prompt: what `headroom serve` offers
//! an agent. Test fixtures for the conformance suite live elsewhere
//! (`headroom-conformance`), never here.

use crate::capacity;
pub use crate::state::ServerState;
use headroom_core::SCHEMA_VERSION;
use headroom_mcp::{Args, Registry, RpcError, ToolFuture, ToolOutput};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// A preflight profile offered as a resource and to `preflight_check`.
#[derive(Debug, Clone)]
pub struct Profile {
    pub name: String,
    pub profile: headroom_preflight::Profile,
}

/// Every profile `loader` finds (files, then the ones built in), resolved.
/// A profile that does not load is skipped with a line on stderr.
pub fn load_profiles(loader: &headroom_preflight::Loader) -> Vec<Profile> {
    let mut v = Vec::new();
    for name in loader.available() {
        match loader.load(&name) {
            Ok(profile) => v.push(Profile { name, profile }),
            Err(e) => eprintln!("headroom serve: profile {name} skipped: {e}"),
        }
    }
    v
}

/// `preflight check` against this process and host, read-only.
fn preflight_report(
    profile: &headroom_preflight::Profile,
    connections: u64,
) -> Result<headroom_preflight::Report, String> {
    use headroom_preflight as pf;
    let root = pf::Root::system();
    let mut readings = pf::read(&root, None, profile.sysctls.keys().map(String::as_str))
        .map_err(|e| e.to_string())?;
    if let Ok(mut snap) = headroom_probe::snapshot(&headroom_probe::Target::Pid(std::process::id()))
    {
        if let Some(p) = snap.processes.first_mut() {
            p.connections = connections;
        }
        readings.snapshot = snap;
    }
    let mut report = pf::check(profile, &readings);
    // What the next boot sets, and who else writes these keys.
    pf::boot::annotate(
        &mut report,
        profile,
        &pf::boot::verdict::read(&root, None, None),
    );
    Ok(report)
}

pub const CAPACITY_URI: &str = "headroom://capacity";

/// The capacity document (tool result and resource body).
pub fn capacity_document(state: &ServerState) -> Value {
    let active = state.connections();
    let (snap, prediction) = capacity::capacity(active);
    json!({
        "schema_version": SCHEMA_VERSION,
        "server": {
            "connections": active,
            "max_connections": state.ceiling.load(Ordering::Relaxed),
            "refused": state.refused.load(Ordering::Relaxed),
        },
        "prediction": prediction,
        "snapshot": snap,
    })
}

/// The registry `headroom serve` offers.
pub fn registry(state: Arc<ServerState>, profiles: Vec<Profile>) -> Registry {
    let mut reg = Registry::default();
    let profiles = Arc::new(profiles);

    let st = state.clone();
    reg.tool(
        json!({
            "name": "host_capacity",
            "title": "Host capacity",
            "description": "Capacity snapshot and prediction for this server process: every limit (nofile, file-max, memory, ...), which one binds first, and how many more connections fit.",
            "inputSchema": {"type": "object", "properties": {}},
            "outputSchema": {
                "type": "object",
                "properties": {
                    "schema_version": {"type": "integer"},
                    "server": {"type": "object"},
                    "prediction": {"type": "object"},
                    "snapshot": {"type": "object"}
                },
                "required": ["schema_version", "server", "prediction", "snapshot"]
            },
            "annotations": {"readOnlyHint": true, "openWorldHint": false}
        }),
        move |_args, _ctx| Ok(ToolOutput::structured(capacity_document(&st))),
    );

    reg.async_tool(
        json!({
            "name": "service_capacity",
            "title": "Capacity of a service on this host",
            "description": "Capacity of any service on this host, by TCP port or pid: the server is recognised (nginx, HAProxy, Redis, PostgreSQL, memcached, the Erlang VM, headroom) and its own connection cap read where it keeps it, beside the kernel limits; which one binds first and how many connections fit.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                    "pid": {"type": "integer", "minimum": 1}
                }
            },
            "outputSchema": {
                "type": "object",
                "properties": {
                    "schema_version": {"type": "integer"},
                    "target": {"type": "string"},
                    "application": {"type": ["string", "null"]},
                    "prediction": {"type": "object"},
                    "snapshot": {"type": "object"}
                },
                "required": ["schema_version", "target", "prediction", "snapshot"]
            },
            "annotations": {"readOnlyHint": true, "openWorldHint": false}
        }),
        |args, _ctx| async move {
            let target = match crate::service::target_of(&args) {
                Ok(t) => t,
                Err(e) => return Ok(ToolOutput::error(e)),
            };
            // /proc reads and the server's own port: off the session's runtime.
            let doc = tokio::task::spawn_blocking(move || crate::service::service_document(&target))
                .await
                .unwrap_or_else(|e| Err(format!("reading the service failed: {e}")));
            Ok(match doc {
                Ok(doc) => ToolOutput::structured(doc),
                Err(e) => ToolOutput::error(e),
            })
        },
    );

    crate::advise_tool::register(&mut reg);

    reg.tool(
        json!({
            "name": "listeners",
            "title": "Listening sockets",
            "description": "Listening TCP sockets in this network namespace with their accept queue depth and limit; optionally one port.",
            "inputSchema": {
                "type": "object",
                "properties": {"port": {"type": "integer", "minimum": 1, "maximum": 65535}}
            },
            "outputSchema": {
                "type": "object",
                "properties": {"listeners": {"type": "array"}},
                "required": ["listeners"]
            },
            "annotations": {"readOnlyHint": true, "openWorldHint": false}
        }),
        |args, _ctx| {
            let port = match args.get("port") {
                None | Some(Value::Null) => None,
                Some(v) => match v.as_u64().and_then(|p| u16::try_from(p).ok()).filter(|p| *p > 0) {
                    Some(p) => Some(p),
                    None => return Ok(ToolOutput::error("port must be an integer between 1 and 65535")),
                },
            };
            match headroom_probe::poll::listening(port) {
                Ok(ls) => Ok(ToolOutput::structured(json!({"listeners": ls}))),
                Err(e) => Ok(ToolOutput::error(format!("listeners not read: {e}"))),
            }
        },
    );

    let names: Vec<String> = profiles.iter().map(|p| p.name.clone()).collect();
    let mut profile_schema = json!({"type": "string", "description": "profile name"});
    if !names.is_empty() {
        profile_schema["enum"] = json!(names);
    }
    reg.tool(
        json!({
            "name": "preflight_check",
            "title": "Preflight check",
            "description": "Read-only check of this host against a named limits profile (never changes anything).",
            "inputSchema": {
                "type": "object",
                "properties": {"profile": profile_schema},
                "required": ["profile"]
            },
            "annotations": {"readOnlyHint": true, "openWorldHint": false}
        }),
        {
            let profiles = profiles.clone();
            let st = state.clone();
            move |args, _ctx| {
                if profiles.is_empty() {
                    return Ok(ToolOutput::error("no profiles available"));
                }
                let Some(name) = args.get("profile").and_then(Value::as_str) else {
                    return Ok(ToolOutput::error("profile (a string) is required"));
                };
                let Some(p) = profiles.iter().find(|p| p.name == name) else {
                    let names: Vec<&str> = profiles.iter().map(|p| p.name.as_str()).collect();
                    return Ok(ToolOutput::error(format!("unknown profile {name}; available: {}", names.join(", "))));
                };
                match preflight_report(&p.profile, st.active.load(Ordering::Relaxed)) {
                    Ok(report) => {
                        let mut out = ToolOutput::structured(serde_json::to_value(&report).unwrap_or_default());
                        out.content = vec![json!({"type": "text", "text": headroom_preflight::check::render(&report)})];
                        Ok(out)
                    }
                    Err(e) => Ok(ToolOutput::error(format!("preflight check failed: {e}"))),
                }
            }
        },
    );

    reg.tool_with(
        json!({
            "name": "echo",
            "title": "Echo",
            "description": "Returns its message. With delay_ms it answers later and, when the request has a progressToken, reports progress in `steps` steps (for load and cancellation tests).",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "message": {"type": "string"},
                    "delay_ms": {"type": "integer", "minimum": 0, "maximum": 60000},
                    "steps": {"type": "integer", "minimum": 1, "maximum": 100}
                },
                "required": ["message"]
            },
            "annotations": {"readOnlyHint": true, "openWorldHint": false}
        }),
        |args: Args, ctx| {
            let message = match args.get("message") {
                Some(Value::String(s)) => s.clone(),
                _ => return ToolFuture::Ready(Ok(ToolOutput::error("message (a string) is required"))),
            };
            let delay = args.get("delay_ms").and_then(Value::as_u64).unwrap_or(0).min(60_000);
            if delay == 0 {
                return ToolFuture::Ready(Ok(ToolOutput::text(message)));
            }
            let steps = args.get("steps").and_then(Value::as_u64).unwrap_or(1).clamp(1, 100);
            ToolFuture::Pending(Box::pin(async move {
                for i in 1..=steps {
                    tokio::time::sleep(Duration::from_millis(delay / steps)).await;
                    ctx.progress(i as f64, Some(steps as f64), Some(format!("step {i} of {steps}")));
                }
                Ok(ToolOutput::text(message))
            }))
        },
    );

    let st = state.clone();
    reg.resource(
        json!({
            "uri": CAPACITY_URI,
            "name": "capacity",
            "title": "Capacity of this server",
            "description": "Snapshot and prediction for this server process (JSON); subscribe to hear when the binding limit or the predicted maximum changes.",
            "mimeType": "application/json"
        }),
        move |uri| {
            Ok(vec![json!({
                "uri": uri,
                "mimeType": "application/json",
                "text": capacity_document(&st).to_string(),
            })])
        },
    );
    reg.resource_templates.push(json!({
        "uriTemplate": crate::service::PORT_TEMPLATE,
        "name": "service on a port",
        "title": "Capacity of the service on a TCP port of this host",
        "description": "The server behind a port of this host (its own cap read where it keeps it), its limits and predicted maximum (JSON).",
        "mimeType": "application/json"
    }));
    reg.resource_fallback = Some(Box::new(crate::service::read_port_resource));
    // Subscriptions: one shared sampler per subscribed resource, whose
    // change rules decide what is news (crate::watch).
    let st = state.clone();
    reg.watch(move |uri| {
        if uri == CAPACITY_URI {
            let st = st.clone();
            let mut sampler = capacity::Sampler::new();
            return Some(crate::watch::sampler(move || {
                let (_, p) = sampler.capacity(st.connections());
                let pid = std::process::id();
                Some(crate::watch::Observation::from_prediction(&p, vec![pid]))
            }));
        }
        crate::service::port_of(uri).map(crate::service::port_sampler)
    });
    for p in profiles.iter() {
        // The profile with its `extends` chain resolved, as JSON.
        let text = serde_json::to_string_pretty(&p.profile).unwrap_or_default();
        reg.resource(
            json!({
                "uri": format!("headroom://profile/{}", p.name),
                "name": format!("profile {}", p.name),
                "description": format!("Preflight profile {}: {}", p.name, p.profile.description),
                "mimeType": "application/json"
            }),
            move |uri| {
                Ok(vec![
                    json!({"uri": uri, "mimeType": "application/json", "text": text}),
                ])
            },
        );
    }

    let st = state;
    let prompt_profiles = profiles.clone();
    let prompt = reg.prompt(
        json!({
            "name": "diagnose_capacity",
            "title": "Diagnose capacity",
            "description": "Ask the model which limit will stop this server first and how to push it back.",
            "arguments": [{"name": "profile", "description": "a profile to compare against", "required": false}]
        }),
        move |args| {
            let doc = capacity_document(&st);
            let mut text = format!(
                "Here is the capacity snapshot and prediction of an MCP server process (JSON):\n{doc}\n\nWhich limit binds first, how many more connections fit, and what should the operator change?"
            );
            if let Some(p) = args.get("profile").and_then(Value::as_str) {
                if !prompt_profiles.iter().any(|x| x.name == p) {
                    return Err(RpcError::invalid_params(format!("unknown profile: {p}")));
                }
                text.push_str(&format!(" Compare with the preflight profile {p} (resource headroom://profile/{p})."));
            }
            Ok(json!({
                "description": "Diagnose the capacity of this server",
                "messages": [{"role": "user", "content": {"type": "text", "text": text}}]
            }))
        },
    );
    prompt.complete = Some(Box::new(move |arg, prefix| {
        if arg != "profile" {
            return Vec::new();
        }
        profiles
            .iter()
            .filter(|p| p.name.starts_with(prefix))
            .map(|p| p.name.clone())
            .collect()
    }));
    reg
}
