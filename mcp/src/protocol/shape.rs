//! How one request is served (its revision and era), and what a revision
//! keeps of a tool definition and a tool result.

use crate::registry::ToolOutput;
use crate::version::at_least;
use serde_json::{Map, Value};

/// How one request is served.
#[derive(Clone, Copy)]
pub(super) struct Mode {
    pub(super) version: &'static str,
    pub(super) stateless: bool,
}

/// Methods whose stateless results carry `ttlMs` and `cacheScope`.
pub(super) const CACHEABLE: [&str; 6] = [
    "prompts/list",
    "resources/list",
    "resources/read",
    "resources/templates/list",
    "server/discover",
    "tools/list",
];

pub(super) fn into_map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => {
            let mut m = Map::new();
            m.insert("value".into(), other);
            m
        }
    }
}

/// A tools/list entry as the revision knows it.
pub(super) fn shape_tool(def: &Value, mode: Mode) -> Value {
    let mut d = def.clone();
    if !mode.stateless {
        let m = d.as_object_mut().expect("tool definitions are objects");
        if !at_least(mode.version, "2025-06-18") {
            m.remove("outputSchema");
            m.remove("title");
        }
        if !at_least(mode.version, "2025-03-26") {
            m.remove("annotations");
        }
        if !at_least(mode.version, "2025-11-25") {
            m.remove("icons");
            m.remove("execution");
        }
    }
    d
}

pub(super) fn shape_tool_output(o: ToolOutput, mode: Mode) -> Map<String, Value> {
    let mut r = Map::new();
    r.insert("content".into(), Value::Array(o.content));
    if let Some(s) = o.structured {
        if mode.stateless || at_least(mode.version, "2025-06-18") {
            r.insert("structuredContent".into(), s);
        }
    }
    if o.is_error {
        r.insert("isError".into(), Value::Bool(true));
    }
    for (k, v) in o.extra {
        r.insert(k, v);
    }
    r
}
