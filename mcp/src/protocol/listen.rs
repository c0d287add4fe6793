//! `subscriptions/listen` (2026-07-28) and the checks shared with
//! `resources/subscribe`: which resources can be subscribed to, the listen
//! request's filter, and its acknowledgement. The subscriptions themselves
//! live in [`crate::subscriptions`].

use super::engine::Engine;
use crate::jsonrpc;
use crate::registry::{Args, Registry, RpcError};
use crate::subscriptions::SUBSCRIPTION_ID_KEY;
use serde_json::value::RawValue;
use serde_json::{json, Value};

/// Ok when `uri` names a resource this server serves: a registered one, or
/// one its templates resolve now (read once: a port nothing listens on is
/// refused). `code` is the era's not-found code.
pub fn subscribable(reg: &Registry, uri: &str, code: i32) -> Result<(), RpcError> {
    if reg.find_resource(uri).is_some() {
        return Ok(());
    }
    match reg.resource_fallback.as_ref().and_then(|f| f(uri)) {
        Some(Ok(_)) => Ok(()),
        Some(Err(e)) => Err(e),
        None => Err(RpcError::new(code, format!("resource not found: {uri}"))
            .with_data(json!({"uri": uri}))),
    }
}

/// The resources a `subscriptions/listen` will watch: those of its
/// `resourceSubscriptions` this server serves (the others are left out of
/// the acknowledgement, as the spec has it). Errors: a malformed filter,
/// `taskIds` without the tasks extension (-32021), an id already listening,
/// or more subscriptions than the session may hold (`held` it holds now).
pub(crate) fn plan(
    engine: &Engine,
    p: &Args,
    caps: &Value,
    id: &RawValue,
    held: usize,
    duplicate: bool,
) -> Result<Vec<String>, RpcError> {
    if duplicate {
        return Err(RpcError::new(
            jsonrpc::INVALID_REQUEST,
            format!(
                "a subscriptions/listen with id {} is open already",
                id.get()
            ),
        ));
    }
    let filter = p
        .get("notifications")
        .and_then(Value::as_object)
        .ok_or_else(|| {
            RpcError::invalid_params("subscriptions/listen needs params.notifications (an object)")
        })?;
    if filter.contains_key("taskIds") && !crate::tasks::declared(caps) {
        return Err(crate::tasks::missing_extension(
            "subscriptions/listen with taskIds",
        ));
    }
    let uris = match filter.get("resourceSubscriptions") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|u| u.as_str().map(str::to_string))
            .collect::<Option<Vec<String>>>()
            .ok_or_else(|| {
                RpcError::invalid_params("resourceSubscriptions must be an array of URIs")
            })?,
        Some(_) => {
            return Err(RpcError::invalid_params(
                "resourceSubscriptions must be an array of URIs",
            ))
        }
    };
    let mut accepted: Vec<String> = Vec::new();
    for uri in uris {
        if !accepted.contains(&uri)
            && subscribable(&engine.registry, &uri, jsonrpc::INVALID_PARAMS).is_ok()
        {
            accepted.push(uri);
        }
    }
    let max = engine.hub.config().per_session;
    if held + accepted.len() > max {
        return Err(RpcError::new(
            jsonrpc::LIMIT_REACHED,
            format!(
                "too many subscriptions on this session (max {max}): {held} held, {} asked",
                accepted.len()
            ),
        )
        .with_data(json!({"limit": "max-subscriptions-on-this-session", "max": max})));
    }
    Ok(accepted)
}

/// `notifications/subscriptions/acknowledged`: the first message of the
/// subscription, naming what it will carry.
pub(crate) fn acknowledge(out: &mut Vec<u8>, id: &RawValue, accepted: &[String]) {
    jsonrpc::write_notification(
        out,
        "notifications/subscriptions/acknowledged",
        &json!({
            "notifications": {"resourceSubscriptions": accepted},
            "_meta": {SUBSCRIPTION_ID_KEY: id},
        }),
    );
}
