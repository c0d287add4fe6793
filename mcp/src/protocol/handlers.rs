//! The method handlers of a session other than `tools/call`: the stateless
//! envelope, initialize and discover, lists, reads, subscriptions, prompts
//! and completion.

use super::listen;
use super::session::{unauthorized, Flow, Session, State};
use super::shape::{into_map, shape_tool, Mode, CACHEABLE};
use crate::jsonrpc;
use crate::registry::{Args, RpcError};
use crate::version::{
    CLIENT_CAPABILITIES_KEY, LATEST_LEGACY, LEGACY_VERSIONS, PROTOCOL_VERSION_KEY, SERVER_INFO_KEY,
    STATELESS_VERSIONS, TOKEN_META_KEY,
};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use std::sync::Arc;

impl Session {
    /// Validates a stateless request's `_meta`; on error, whether to close.
    pub(super) fn stateless_envelope(
        &mut self,
        meta: &Map<String, Value>,
    ) -> Result<&'static str, (RpcError, bool)> {
        if !meta.contains_key(CLIENT_CAPABILITIES_KEY) {
            return Err((
                RpcError::invalid_params(format!(
                    "params._meta is missing the required envelope key {CLIENT_CAPABILITIES_KEY}"
                )),
                false,
            ));
        }
        let Some(requested) = meta[PROTOCOL_VERSION_KEY].as_str() else {
            return Err((
                RpcError::invalid_params("the protocol-version envelope value must be a string"),
                false,
            ));
        };
        let Some(version) = STATELESS_VERSIONS.iter().find(|v| **v == requested) else {
            return Err((
                RpcError::new(
                    jsonrpc::UNSUPPORTED_PROTOCOL_VERSION,
                    "Unsupported protocol version",
                )
                .with_data(json!({"supported": STATELESS_VERSIONS, "requested": requested})),
                false,
            ));
        };
        if !self.authed {
            if !self.engine.token_ok(meta.get(TOKEN_META_KEY)) {
                return Err((unauthorized(), true));
            }
            self.authed = true;
        }
        Ok(version)
    }

    pub(super) fn initialize(&mut self, id: &RawValue, p: &Args, out: &mut Vec<u8>) -> Flow {
        let Some(requested) = p.get("protocolVersion").and_then(Value::as_str) else {
            self.error(
                out,
                Some(id),
                jsonrpc::INVALID_PARAMS,
                "initialize needs params.protocolVersion",
                None,
            );
            return Flow::Continue;
        };
        if !self.authed {
            let token = p.get("_meta").and_then(|m| m.get(TOKEN_META_KEY));
            if !self.engine.token_ok(token) {
                self.rpc_error(out, id, &unauthorized());
                return Flow::Close;
            }
            self.authed = true;
        }
        let version = LEGACY_VERSIONS
            .iter()
            .copied()
            .find(|v| *v == requested)
            .unwrap_or(LATEST_LEGACY);
        self.state = State::Legacy { version };
        let caps = p.get("capabilities").cloned().unwrap_or_else(|| json!({}));
        self.client_caps = Some(Arc::new(caps));
        jsonrpc::write_result(out, id, self.engine.initialize_result(version));
        Flow::Continue
    }

    pub(super) fn discover(&self) -> Map<String, Value> {
        let v = STATELESS_VERSIONS[0];
        let mut r = json!({
            "supportedVersions": STATELESS_VERSIONS,
            "capabilities": self.engine.capabilities(v),
            "serverInfo": self.engine.server_info(),
            "_meta": {(SERVER_INFO_KEY): self.engine.server_info()},
        });
        if let Some(i) = &self.engine.config.instructions {
            r["instructions"] = json!(i);
        }
        into_map(r)
    }

    pub(super) fn write_ok(
        &self,
        out: &mut Vec<u8>,
        id: &RawValue,
        method: &str,
        mode: Mode,
        mut r: Map<String, Value>,
    ) {
        if mode.stateless {
            if CACHEABLE.contains(&method) {
                r.entry("ttlMs")
                    .or_insert(json!(self.engine.config.list_ttl_ms));
                r.entry("cacheScope").or_insert(json!("private"));
            }
            r.entry("resultType").or_insert(json!("complete"));
            // Every stateless result names its server (`_meta` serverInfo stamp).
            let meta = r.entry("_meta").or_insert_with(|| json!({}));
            if let Some(m) = meta.as_object_mut() {
                m.entry(SERVER_INFO_KEY)
                    .or_insert_with(|| self.engine.server_info());
            }
        }
        jsonrpc::write_result(out, id, &r);
    }

    pub(super) fn list(
        &self,
        p: &Args,
        mode: Mode,
        key: &str,
    ) -> Result<Map<String, Value>, RpcError> {
        let reg = &self.engine.registry;
        let items: Vec<Value> = match key {
            "tools" => reg
                .tools
                .iter()
                .map(|t| shape_tool(&t.definition, mode))
                .collect(),
            "resources" => reg.resources.iter().map(|r| r.definition.clone()).collect(),
            "resourceTemplates" => reg.resource_templates.clone(),
            _ => reg.prompts.iter().map(|p| p.definition.clone()).collect(),
        };
        let start = match p.get("cursor") {
            None | Some(Value::Null) => 0,
            Some(c) => c
                .as_str()
                .and_then(|c| c.strip_prefix("o:"))
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|n| *n <= items.len())
                .ok_or_else(|| RpcError::invalid_params("invalid cursor"))?,
        };
        let page = self.engine.config.page_size.max(1);
        let end = (start + page).min(items.len());
        let mut r = Map::new();
        r.insert(key.to_string(), Value::Array(items[start..end].to_vec()));
        if end < items.len() {
            r.insert("nextCursor".into(), json!(format!("o:{end}")));
        }
        Ok(r)
    }

    pub(super) fn read(&self, p: &Args, mode: Mode) -> Result<Map<String, Value>, RpcError> {
        let uri = p
            .get("uri")
            .and_then(Value::as_str)
            .ok_or_else(|| RpcError::invalid_params("resources/read needs params.uri"))?;
        let reg = &self.engine.registry;
        let contents = match reg.find_resource(uri) {
            Some(r) => (r.read)(uri)?,
            None => match reg.resource_fallback.as_ref().and_then(|f| f(uri)) {
                Some(r) => r?,
                None => {
                    // 2026-07-28 says -32602; the initialize era -32002.
                    let code = if mode.stateless {
                        jsonrpc::INVALID_PARAMS
                    } else {
                        jsonrpc::RESOURCE_NOT_FOUND
                    };
                    return Err(RpcError::new(code, format!("resource not found: {uri}"))
                        .with_data(json!({"uri": uri})));
                }
            },
        };
        let mut r = Map::new();
        r.insert("contents".into(), Value::Array(contents));
        Ok(r)
    }

    pub(super) fn subscribe(&mut self, p: &Args, on: bool) -> Result<Map<String, Value>, RpcError> {
        let uri = p
            .get("uri")
            .and_then(Value::as_str)
            .ok_or_else(|| RpcError::invalid_params("needs params.uri"))?;
        if on {
            listen::subscribable(&self.engine.registry, uri, jsonrpc::RESOURCE_NOT_FOUND)?;
            self.add_subscription(uri, None)?;
        } else if let Some(s) = &mut self.subs {
            s.remove_uri(uri);
            if s.is_empty() {
                self.subs = None;
            }
        }
        Ok(Map::new())
    }

    /// Subscribes this session to `uri` (`listen`: for that
    /// `subscriptions/listen` request).
    pub(super) fn add_subscription(
        &mut self,
        uri: &str,
        listen: Option<&RawValue>,
    ) -> Result<(), RpcError> {
        let engine = self.engine.clone();
        let s = self.subs.get_or_insert_with(|| {
            Box::new(crate::subscriptions::SessionSubs::new(engine.hub.clone()))
        });
        let r = s.add(uri, listen, || engine.registry.watcher(uri));
        if s.is_empty() {
            self.subs = None;
        }
        r
    }

    /// `subscriptions/listen` (2026-07-28): acknowledged now, answered only
    /// when the server ends it; cancelled by the client (or the transport closing).
    pub(super) fn listen(
        &mut self,
        id: &RawValue,
        p: &Args,
        mode: Mode,
        out: &mut Vec<u8>,
    ) -> Flow {
        let caps = self.request_caps(p, mode);
        let held = self.subs.as_ref().map_or(0, |s| s.len());
        let plan = listen::plan(&self.engine, p, &caps, id, held, self.has_listen(id));
        let accepted = match plan {
            Ok(a) => a,
            Err(e) => {
                self.rpc_error(out, id, &e);
                return Flow::Continue;
            }
        };
        for uri in &accepted {
            if let Err(e) = self.add_subscription(uri, Some(id)) {
                if let Some(s) = &mut self.subs {
                    s.remove_listen(id.get());
                    if s.is_empty() {
                        self.subs = None;
                    }
                }
                self.rpc_error(out, id, &e);
                return Flow::Continue;
            }
        }
        listen::acknowledge(out, id, &accepted);
        Flow::Continue
    }

    pub(super) fn has_listen(&self, id: &RawValue) -> bool {
        self.subs.as_ref().is_some_and(|s| s.has_listen(id.get()))
    }

    pub(super) fn prompt(&self, p: &Args) -> Result<Map<String, Value>, RpcError> {
        let name = p
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| RpcError::invalid_params("prompts/get needs params.name"))?;
        let prompt = self
            .engine
            .registry
            .find_prompt(name)
            .ok_or_else(|| RpcError::invalid_params(format!("unknown prompt: {name}")))?;
        let args = p
            .get("arguments")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        match &prompt.get_with_params {
            Some(get) => Ok(into_map(get(&args, p)?)),
            None => Ok(into_map((prompt.get)(&args)?)),
        }
    }

    pub(super) fn complete(&self, p: &Args) -> Result<Map<String, Value>, RpcError> {
        let r = p
            .get("ref")
            .ok_or_else(|| RpcError::invalid_params("completion/complete needs params.ref"))?;
        let arg = p
            .get("argument")
            .ok_or_else(|| RpcError::invalid_params("completion/complete needs params.argument"))?;
        let (name, value) = (
            arg["name"].as_str().unwrap_or_default(),
            arg["value"].as_str().unwrap_or_default(),
        );
        let reg = &self.engine.registry;
        let values = match r["type"].as_str() {
            Some("ref/prompt") => {
                let pname = r["name"].as_str().unwrap_or_default();
                let prompt = reg
                    .find_prompt(pname)
                    .ok_or_else(|| RpcError::invalid_params(format!("unknown prompt: {pname}")))?;
                prompt
                    .complete
                    .as_ref()
                    .map(|c| c(name, value))
                    .unwrap_or_default()
            }
            Some("ref/resource") => {
                let uri = r["uri"].as_str().unwrap_or_default();
                reg.template_complete
                    .as_ref()
                    .map(|c| c(uri, name, value))
                    .unwrap_or_default()
            }
            _ => {
                return Err(RpcError::invalid_params(
                    "ref.type must be ref/prompt or ref/resource",
                ))
            }
        };
        let total = values.len();
        let values: Vec<String> = values.into_iter().take(100).collect();
        Ok(into_map(
            json!({"completion": {"values": values, "total": total, "hasMore": total > 100}}),
        ))
    }
}
