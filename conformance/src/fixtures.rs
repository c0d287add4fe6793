//! The fixtures, named and shaped as the suite's reference "everything"
//! server names them (examples/servers/typescript/everything-server.ts in
//! the suite's repository).

use headroom_mcp::{LogLevel, Registry, RpcError, ToolCtx, ToolOutput, ToolResult};
use serde_json::{json, Map, Value};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A 1x1 red PNG.
const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==";
/// A minimal WAV file.
const WAV: &str = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA=";

fn empty_schema() -> Value {
    json!({"type": "object", "properties": {}})
}

fn tool_def(name: &str, description: &str) -> Value {
    json!({"name": name, "description": description, "inputSchema": empty_schema()})
}

fn text(t: impl Into<String>) -> ToolResult {
    Ok(ToolOutput::text(t))
}

fn content(blocks: Vec<Value>) -> ToolResult {
    Ok(ToolOutput {
        content: blocks,
        ..Default::default()
    })
}

/// A 2026-07-28 input-required result: what the client must ask its user
/// (or model) before calling again with `inputResponses`.
fn input_required(requests: Value, state: Option<String>) -> ToolResult {
    let mut extra = Map::new();
    extra.insert("resultType".into(), json!("input_required"));
    extra.insert("inputRequests".into(), requests);
    if let Some(s) = state {
        extra.insert("requestState".into(), json!(s));
    }
    Ok(ToolOutput {
        extra,
        ..Default::default()
    })
}

fn elicit(message: &str, field: &str, ty: &str) -> Value {
    json!({"method": "elicitation/create", "params": {
        "message": message,
        "requestedSchema": {"type": "object", "properties": {field: {"type": ty}}, "required": [field]}
    }})
}

fn sample(prompt: &str, max_tokens: u32) -> Value {
    json!({"method": "sampling/createMessage", "params": {
        "messages": [{"role": "user", "content": {"type": "text", "text": prompt}}],
        "maxTokens": max_tokens
    }})
}

/// `inputResponses[key].content[field]` as text.
fn response_text(ctx: &ToolCtx, key: &str, field: &str) -> Option<String> {
    let v = ctx.input_responses()?.get(key)?;
    Some(
        v["content"][field]
            .as_str()
            .unwrap_or("unknown")
            .to_string(),
    )
}

/// Request states this process issued: a retry must echo one of them
/// verbatim, so a state the client made up or altered is refused.
#[derive(Default)]
struct IssuedStates(Mutex<HashSet<String>>);

impl IssuedStates {
    /// An opaque state carrying `payload` (an object) and a serial number.
    fn issue(&self, mut payload: Value) -> String {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(1);
        payload["n"] = json!(NEXT.fetch_add(1, Ordering::Relaxed));
        let s = payload.to_string();
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(s.clone());
        s
    }
    fn verify(&self, s: &str) -> Option<Value> {
        let known = self.0.lock().unwrap_or_else(|e| e.into_inner()).contains(s);
        known.then(|| serde_json::from_str(s).ok()).flatten()
    }
}

/// The suite's elicitation tools share one shape: ask, then report the answer.
async fn elicit_and_report(ctx: ToolCtx, prefix: &str, params: Value) -> ToolResult {
    match ctx.request("elicitation/create", params).await {
        Ok(r) => text(format!(
            "{prefix}: action={}, content={}",
            r["action"].as_str().unwrap_or(""),
            r.get("content").cloned().unwrap_or(json!({}))
        )),
        Err(e) => text(format!("Elicitation not supported or error: {}", e.message)),
    }
}

pub fn registry() -> Registry {
    let mut reg = Registry::default();
    tools(&mut reg);
    stateless_tools(&mut reg);
    resources(&mut reg);
    prompts(&mut reg);
    crate::tasks::register(&mut reg);
    reg
}

fn tools(reg: &mut Registry) {
    reg.tool(
        tool_def("test_simple_text", "Tests simple text content response"),
        |_, _| text("This is a simple text response for testing."),
    );
    reg.tool(
        tool_def("test_image_content", "Tests image content response"),
        |_, _| {
            content(vec![
                json!({"type": "image", "data": PNG, "mimeType": "image/png"}),
            ])
        },
    );
    reg.tool(
        tool_def("test_audio_content", "Tests audio content response"),
        |_, _| {
            content(vec![
                json!({"type": "audio", "data": WAV, "mimeType": "audio/wav"}),
            ])
        },
    );
    reg.tool(
        tool_def(
            "test_embedded_resource",
            "Tests embedded resource content response",
        ),
        |_, _| {
            content(vec![json!({"type": "resource", "resource": {
                "uri": "test://embedded-resource", "mimeType": "text/plain",
                "text": "This is an embedded resource content."}})])
        },
    );
    reg.tool(
        tool_def(
            "test_multiple_content_types",
            "Tests response with multiple content types (text, image, resource)",
        ),
        |_, _| {
            content(vec![
                json!({"type": "text", "text": "Multiple content types test:"}),
                json!({"type": "image", "data": PNG, "mimeType": "image/png"}),
                json!({"type": "resource", "resource": {
                    "uri": "test://mixed-content-resource", "mimeType": "application/json",
                    "text": json!({"test": "data", "value": 123}).to_string()}}),
            ])
        },
    );
    reg.async_tool(
        tool_def(
            "test_tool_with_logging",
            "Tests tool that emits log messages during execution",
        ),
        |_, ctx| async move {
            ctx.log(LogLevel::Info, json!("Tool execution started"));
            tokio::time::sleep(Duration::from_millis(50)).await;
            ctx.log(LogLevel::Info, json!("Tool processing data"));
            tokio::time::sleep(Duration::from_millis(50)).await;
            ctx.log(LogLevel::Info, json!("Tool execution completed"));
            text("Tool with logging executed successfully")
        },
    );
    reg.async_tool(
        tool_def(
            "test_tool_with_progress",
            "Tests tool that reports progress notifications",
        ),
        |_, ctx| async move {
            for step in [0.0, 50.0, 100.0] {
                ctx.progress(
                    step,
                    Some(100.0),
                    Some(format!("Completed step {step} of 100")),
                );
                if step < 100.0 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            text("Progress reported: 0, 50, 100 of 100")
        },
    );
    reg.tool(
        tool_def("test_error_handling", "Tests error response handling"),
        |_, _| {
            Ok(ToolOutput::error(
                "This tool intentionally returns an error for testing",
            ))
        },
    );
    reg.async_tool(
        tool_def(
            "test_reconnection",
            "Tests SSE stream disconnection and client reconnection (SEP-1699): the server closes the stream mid-call and sends the result after the client reconnects.",
        ),
        |_, ctx| async move {
            ctx.close_stream();
            tokio::time::sleep(Duration::from_millis(100)).await;
            text("Reconnection test completed successfully. If you received this, the client properly reconnected after stream closure.")
        },
    );
    reg.async_tool(
        json!({"name": "test_sampling",
            "description": "Tests server-initiated sampling (LLM completion request)",
            "inputSchema": {"type": "object",
                "properties": {"prompt": {"type": "string", "description": "The prompt to send to the LLM"}},
                "required": ["prompt"]}}),
        |args, ctx| async move {
            let prompt = args.get("prompt").and_then(Value::as_str).unwrap_or("");
            let params = json!({"messages": [{"role": "user", "content": {"type": "text", "text": prompt}}], "maxTokens": 100});
            match ctx.request("sampling/createMessage", params).await {
                Ok(r) => {
                    let said = r["content"]["text"].as_str().unwrap_or("No response");
                    text(format!("LLM response: {said}"))
                }
                Err(e) => text(format!("Sampling not supported or error: {}", e.message)),
            }
        },
    );
    reg.async_tool(
        json!({"name": "test_elicitation",
            "description": "Tests server-initiated elicitation (user input request)",
            "inputSchema": {"type": "object",
                "properties": {"message": {"type": "string", "description": "The message to show the user"}},
                "required": ["message"]}}),
        |args, ctx| async move {
            let message = args.get("message").and_then(Value::as_str).unwrap_or("");
            let params = json!({"message": message, "requestedSchema": {"type": "object",
                "properties": {"response": {"type": "string", "description": "User's response"}},
                "required": ["response"]}});
            elicit_and_report(ctx, "User response", params).await
        },
    );
    reg.async_tool(
        tool_def(
            "test_elicitation_sep1034_defaults",
            "Tests elicitation with default values per SEP-1034",
        ),
        |_, ctx| async move {
            let params = json!({"message": "Please review and update the form fields with defaults",
                "requestedSchema": {"type": "object", "properties": {
                    "name": {"type": "string", "description": "User name", "default": "John Doe"},
                    "age": {"type": "integer", "description": "User age", "default": 30},
                    "score": {"type": "number", "description": "User score", "default": 95.5},
                    "status": {"type": "string", "description": "User status",
                        "enum": ["active", "inactive", "pending"], "default": "active"},
                    "verified": {"type": "boolean", "description": "Verification status", "default": true}
                }, "required": []}});
            elicit_and_report(ctx, "Elicitation completed", params).await
        },
    );
    reg.async_tool(
        tool_def(
            "test_elicitation_sep1330_enums",
            "Tests elicitation with enum schema improvements per SEP-1330",
        ),
        |_, ctx| async move {
            let params = json!({"message": "Please select options from the enum fields",
                "requestedSchema": {"type": "object", "properties": {
                    "untitledSingle": {"type": "string", "description": "Select one option",
                        "enum": ["option1", "option2", "option3"]},
                    "titledSingle": {"type": "string", "description": "Select one option with titles",
                        "oneOf": [{"const": "value1", "title": "First Option"},
                                  {"const": "value2", "title": "Second Option"},
                                  {"const": "value3", "title": "Third Option"}]},
                    "legacyEnum": {"type": "string", "description": "Select one option (legacy)",
                        "enum": ["opt1", "opt2", "opt3"],
                        "enumNames": ["Option One", "Option Two", "Option Three"]},
                    "untitledMulti": {"type": "array", "description": "Select multiple options",
                        "minItems": 1, "maxItems": 3,
                        "items": {"type": "string", "enum": ["option1", "option2", "option3"]}},
                    "titledMulti": {"type": "array", "description": "Select multiple options with titles",
                        "minItems": 1, "maxItems": 3,
                        "items": {"anyOf": [{"const": "value1", "title": "First Choice"},
                                            {"const": "value2", "title": "Second Choice"},
                                            {"const": "value3", "title": "Third Choice"}]}}
                }, "required": []}});
            elicit_and_report(ctx, "Elicitation completed", params).await
        },
    );
    reg.tool(
        json!({"name": "json_schema_2020_12_tool",
            "description": "Tool with JSON Schema 2020-12 features for conformance testing (SEP-1613)",
            "inputSchema": {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "$defs": {"address": {"$anchor": "addressDef", "type": "object",
                    "properties": {"street": {"type": "string"}, "city": {"type": "string"}}}},
                "properties": {
                    "name": {"type": "string"},
                    "address": {"$ref": "#/$defs/address"},
                    "contactMethod": {"type": "string", "enum": ["phone", "email"]},
                    "phone": {"type": "string"},
                    "email": {"type": "string"}
                },
                "allOf": [{"anyOf": [{"required": ["phone"]}, {"required": ["email"]}]}],
                "if": {"properties": {"contactMethod": {"const": "phone"}}, "required": ["contactMethod"]},
                "then": {"required": ["phone"]},
                "else": {"required": ["email"]},
                "additionalProperties": false
            }}),
        |args, _| {
            text(format!(
                "JSON Schema 2020-12 tool called with: {}",
                Value::Object(args)
            ))
        },
    );
    reg.tool(
        json!({"name": "test_custom_headers",
            "description": "Mirrors x-mcp-header parameters into Mcp-Param-* headers (SEP-2243)",
            "inputSchema": {"type": "object", "properties": {
                "region": {"type": "string", "description": "Plain ASCII string value", "x-mcp-header": "Region"},
                "query": {"type": "string", "description": "No x-mcp-header annotation"}
            }, "required": ["region", "query"]}}),
        |args, _| {
            text(format!(
                "region={}",
                args.get("region").and_then(Value::as_str).unwrap_or("")
            ))
        },
    );
}

/// Tools the 2026-07-28 (stateless) scenarios call.
fn stateless_tools(reg: &mut Registry) {
    reg.tool(
        tool_def("test_missing_capability", "Test tool requiring sampling"),
        |_, _| text("Success"),
    )
    .requires = Some("sampling");
    reg.tool(
        tool_def(
            "test_input_required_result_elicitation",
            "MRTR: returns InputRequiredResult with elicitation request",
        ),
        |_, ctx| match response_text(&ctx, "user_name", "name") {
            Some(name) => text(format!("Hello, {name}!")),
            None => input_required(
                json!({"user_name": elicit("What is your name?", "name", "string")}),
                None,
            ),
        },
    );
    reg.tool(
        tool_def(
            "test_input_required_result_sampling",
            "MRTR: returns InputRequiredResult with sampling request",
        ),
        |_, ctx| match ctx.input_responses().and_then(|r| r.get("sample_request")) {
            Some(r) => text(format!(
                "Sampling result: {}",
                r["content"]["text"].as_str().unwrap_or("no response")
            )),
            None => input_required(
                json!({"sample_request": sample("What is the capital of France?", 100)}),
                None,
            ),
        },
    );
    reg.tool(
        tool_def(
            "test_input_required_result_list_roots",
            "MRTR: returns InputRequiredResult with roots/list request",
        ),
        |_, ctx| match ctx.input_responses().and_then(|r| r.get("roots_request")) {
            Some(r) => text(format!(
                "Found {} root(s)",
                r["roots"].as_array().map_or(0, Vec::len)
            )),
            None => input_required(
                json!({"roots_request": {"method": "roots/list", "params": {}}}),
                None,
            ),
        },
    );
    let issued = Arc::new(IssuedStates::default());
    let st = issued.clone();
    reg.tool(
        tool_def(
            "test_input_required_result_request_state",
            "MRTR: returns InputRequiredResult with requestState",
        ),
        move |_, ctx| {
            let state = ctx.request_state().and_then(|s| st.verify(s));
            let ok = ctx
                .input_responses()
                .and_then(|r| r.get("confirm"))
                .is_some_and(|c| c["content"]["ok"] == json!(true));
            if state.is_some_and(|s| s["kind"] == "request-state") && ok {
                return text("state-ok: requestState validated");
            }
            input_required(
                json!({"confirm": elicit("Please confirm", "ok", "boolean")}),
                Some(st.issue(json!({"kind": "request-state"}))),
            )
        },
    );
    let st = issued.clone();
    reg.tool(
        tool_def(
            "test_input_required_result_multiple_inputs",
            "MRTR: returns InputRequiredResult with multiple input requests",
        ),
        move |_, ctx| {
            let state = ctx.request_state().and_then(|s| st.verify(s));
            if let (Some(s), Some(r)) = (state, ctx.input_responses()) {
                if s["kind"] == "multiple-inputs"
                    && ["user_name", "greeting", "client_roots"]
                        .iter()
                        .all(|k| r.contains_key(*k))
                {
                    let name = response_text(&ctx, "user_name", "name").unwrap_or_default();
                    let greeting = r["greeting"]["content"]["text"]
                        .as_str()
                        .unwrap_or("Hello there!");
                    let roots = r["client_roots"]["roots"].as_array().map_or(0, Vec::len);
                    return text(format!(
                        "Name: {name}; Greeting: {greeting}; Roots: {roots}"
                    ));
                }
            }
            input_required(
                json!({
                    "user_name": elicit("What is your name?", "name", "string"),
                    "greeting": sample("Generate a greeting", 50),
                    "client_roots": {"method": "roots/list", "params": {}}
                }),
                Some(st.issue(json!({"kind": "multiple-inputs"}))),
            )
        },
    );
    let st = issued.clone();
    reg.tool(
        tool_def(
            "test_input_required_result_multi_round",
            "MRTR: multi-round InputRequiredResult workflow",
        ),
        move |_, ctx| {
            let state = ctx.request_state().and_then(|s| st.verify(s));
            let step1 = || {
                input_required(
                    json!({"step1": elicit("Step 1: What is your name?", "name", "string")}),
                    Some(st.issue(json!({"kind": "round-1"}))),
                )
            };
            let Some(state) = state else { return step1() };
            if state["kind"] == "round-1" {
                if let Some(name) = response_text(&ctx, "step1", "name") {
                    return input_required(
                        json!({"step2": elicit("Step 2: What is your favorite color?", "color", "string")}),
                        Some(st.issue(json!({"kind": "round-2", "name": name}))),
                    );
                }
            }
            if state["kind"] == "round-2" {
                if let Some(color) = response_text(&ctx, "step2", "color") {
                    let name = state["name"].as_str().unwrap_or("friend");
                    return text(format!("Multi-round complete for {name} who likes {color}"));
                }
            }
            step1()
        },
    );
    let st = issued.clone();
    reg.tool(
        tool_def(
            "test_input_required_result_tampered_state",
            "MRTR: requestState integrity test",
        ),
        move |_, ctx| {
            if let Some(raw) = ctx.request_state() {
                let Some(state) = st.verify(raw) else {
                    return Err(RpcError::invalid_params(
                        "requestState integrity check failed",
                    ));
                };
                if state["kind"] == "tamper-test"
                    && ctx
                        .input_responses()
                        .is_some_and(|r| r.contains_key("confirm"))
                {
                    return text("integrity-ok: state verified");
                }
            }
            input_required(
                json!({"confirm": elicit("Please confirm", "ok", "boolean")}),
                Some(st.issue(json!({"kind": "tamper-test"}))),
            )
        },
    );
    let st = issued;
    reg.tool(
        tool_def(
            "test_input_required_result_capabilities",
            "MRTR: respects client capabilities in inputRequests",
        ),
        move |_, ctx| {
            if let Some(r) = ctx.input_responses().filter(|r| !r.is_empty()) {
                let keys: Vec<&str> = r.keys().map(String::as_str).collect();
                return text(format!("capabilities-ok: received {}", keys.join(",")));
            }
            let mut requests = Map::new();
            if ctx.client_has("elicitation") {
                requests.insert(
                    "elicit_input".into(),
                    elicit("Elicitation input", "value", "string"),
                );
            }
            if ctx.client_has("sampling") {
                requests.insert("sample_input".into(), sample("Sample request", 50));
            }
            if requests.is_empty() {
                return text("No supported capabilities declared");
            }
            input_required(
                Value::Object(requests),
                Some(st.issue(json!({"kind": "capabilities-test"}))),
            )
        },
    );
    reg.tool(
        tool_def(
            "test_streaming_elicitation",
            "Diagnostic tool validating response progress streams",
        ),
        |_, _| text("Streaming complete"),
    );
    reg.async_tool(
        tool_def("test_logging_tool", "Diagnostic logging validator tool"),
        |_, ctx| async move {
            // The engine drops it unless the request's _meta set a logLevel.
            ctx.log(LogLevel::Info, json!("Diagnostic trace logging activated"));
            text("Logging evaluated")
        },
    );
}

fn resources(reg: &mut Registry) {
    reg.resource(
        json!({"uri": "test://static-text", "name": "static-text", "title": "Static Text Resource",
            "description": "A static text resource for testing", "mimeType": "text/plain"}),
        |uri| {
            Ok(vec![json!({"uri": uri, "mimeType": "text/plain",
                "text": "This is the content of the static text resource."})])
        },
    );
    reg.resource(
        json!({"uri": "test://static-binary", "name": "static-binary", "title": "Static Binary Resource",
            "description": "A static binary resource (image) for testing", "mimeType": "image/png"}),
        |uri| Ok(vec![json!({"uri": uri, "mimeType": "image/png", "blob": PNG})]),
    );
    reg.resource(
        json!({"uri": "test://watched-resource", "name": "watched-resource", "title": "Watched Resource",
            "description": "A resource clients may subscribe to", "mimeType": "text/plain"}),
        |uri| {
            Ok(vec![
                json!({"uri": uri, "mimeType": "text/plain", "text": "Watched resource content"}),
            ])
        },
    );
    reg.resource_templates.push(json!({
        "uriTemplate": "test://template/{id}/data", "name": "template", "title": "Resource Template",
        "description": "A resource template with parameter substitution", "mimeType": "application/json"}));
    reg.resource_fallback = Some(Box::new(|uri: &str| {
        let id = uri
            .strip_prefix("test://template/")?
            .strip_suffix("/data")
            .filter(|id| !id.is_empty() && !id.contains('/'))?;
        Some(Ok(vec![json!({"uri": uri, "mimeType": "application/json",
            "text": json!({"id": id, "templateTest": true, "data": format!("Data for ID: {id}")}).to_string()})]))
    }));
}

fn prompts(reg: &mut Registry) {
    let user_text = |t: String| json!({"role": "user", "content": {"type": "text", "text": t}});
    reg.prompt(
        json!({"name": "test_simple_prompt", "title": "Simple Test Prompt",
            "description": "A simple prompt without arguments"}),
        move |_| {
            Ok(json!({"messages": [user_text("This is a simple prompt for testing.".into())]}))
        },
    );
    reg.prompt(
        json!({"name": "test_prompt_with_arguments", "title": "Prompt With Arguments",
            "description": "A prompt with required arguments",
            "arguments": [
                {"name": "arg1", "description": "First test argument", "required": true},
                {"name": "arg2", "description": "Second test argument", "required": true}]}),
        move |a| {
            let arg = |k: &str| a.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            Ok(json!({"messages": [user_text(format!(
                "Prompt with arguments: arg1='{}', arg2='{}'", arg("arg1"), arg("arg2")))]}))
        },
    );
    reg.prompt(
        json!({"name": "test_prompt_with_embedded_resource", "title": "Prompt With Embedded Resource",
            "description": "A prompt that includes an embedded resource",
            "arguments": [{"name": "resourceUri", "description": "URI of the resource to embed", "required": true}]}),
        move |a| {
            let uri = a.get("resourceUri").and_then(Value::as_str).unwrap_or("test://example");
            Ok(json!({"messages": [
                {"role": "user", "content": {"type": "resource", "resource": {
                    "uri": uri, "mimeType": "text/plain", "text": "Embedded resource content for testing."}}},
                user_text("Please process the embedded resource above.".into())]}))
        },
    );
    reg.prompt(
        json!({"name": "test_prompt_with_image", "title": "Prompt With Image",
            "description": "A prompt that includes image content"}),
        move |_| {
            Ok(json!({"messages": [
                {"role": "user", "content": {"type": "image", "data": PNG, "mimeType": "image/png"}},
                user_text("Please analyze the image above.".into())]}))
        },
    );
    reg.prompt(
        json!({"name": "test_input_required_result_prompt",
            "description": "MRTR: prompt that requires elicitation input"}),
        |_| Err(RpcError::invalid_params("needs params")),
    )
    .get_with_params = Some(Box::new(move |_args, params| {
        let context = params
            .get("inputResponses")
            .and_then(|r| r.get("user_context"))
            .map(|r| {
                r["content"]["context"]
                    .as_str()
                    .unwrap_or("unknown")
                    .to_string()
            });
        Ok(match context {
            Some(c) => json!({"messages": [user_text(format!("Prompt with context: {c}"))]}),
            None => json!({"resultType": "input_required", "inputRequests": {
                "user_context": elicit("What context should the prompt use?", "context", "string")}}),
        })
    }));
}
