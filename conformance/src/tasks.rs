//! Fixtures of the suite's tasks-extension scenarios (SEP-2663, `tasks-*`):
//! the tools each scenario's description names, with the behaviour it asks
//! for. Task creation is the engine's: a task-supporting tool whose handler
//! answers later runs as a task for a client that declared the extension.

use headroom_mcp::tasks::TaskSupport;
use headroom_mcp::{Registry, RpcError, ToolCtx, ToolFuture, ToolOutput};
use serde_json::{json, Value};
use std::time::Duration;

fn def(name: &str, description: &str, properties: Value) -> Value {
    json!({"name": name, "description": description,
        "inputSchema": {"type": "object", "properties": properties}})
}

fn confirm(message: String) -> Value {
    json!({"message": message, "requestedSchema": {"type": "object",
        "properties": {"confirm": {"type": "boolean"}}, "required": ["confirm"]}})
}

fn accepted(answer: &Value) -> bool {
    answer["action"] == "accept"
}

/// Asks the client (as a task: through `inputRequests`) and reports.
async fn ask(ctx: &ToolCtx, params: Value) -> Result<Value, RpcError> {
    ctx.request("elicitation/create", params).await
}

pub fn register(reg: &mut Registry) {
    reg.tool(
        def(
            "greet",
            "Sync-only: returns Hello, {name}!",
            json!({"name": {"type": "string"}}),
        ),
        |args, _| {
            let name = args.get("name").and_then(Value::as_str).unwrap_or("World");
            Ok(ToolOutput::text(format!("Hello, {name}!")))
        },
    );

    reg.tool_with(
        def(
            "slow_compute",
            "Task-supporting: sleeps `seconds` seconds, then answers (0: at once, no task)",
            json!({"seconds": {"type": "number", "minimum": 0, "maximum": 600},
                   "label": {"type": "string"}}),
        ),
        |args, _| {
            let secs = args
                .get("seconds")
                .and_then(Value::as_f64)
                .unwrap_or(1.0)
                .clamp(0.0, 600.0);
            let label = args
                .get("label")
                .and_then(Value::as_str)
                .unwrap_or("compute")
                .to_string();
            let done = move || Ok(ToolOutput::text(format!("{label}: computed after {secs}s")));
            if secs == 0.0 {
                return ToolFuture::Ready(done());
            }
            ToolFuture::Pending(Box::pin(async move {
                tokio::time::sleep(Duration::from_secs_f64(secs)).await;
                done()
            }))
        },
    )
    .task_support = TaskSupport::Optional;

    reg.async_tool(
        def(
            "failing_job",
            "Task-required: fails with a tool execution error after about a second",
            json!({}),
        ),
        |_, _| async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok(ToolOutput::error(
                "failing_job: the job failed (as designed)",
            ))
        },
    )
    .task_support = TaskSupport::Required;

    reg.async_tool(
        def(
            "protocol_error_job",
            "Task-supporting: ends in a JSON-RPC (protocol) error",
            json!({}),
        ),
        |_, _| async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Err(RpcError::new(
                -32603,
                "protocol_error_job: internal failure (as designed)",
            ))
        },
    )
    .task_support = TaskSupport::Optional;

    reg.async_tool(
        def(
            "confirm_delete",
            "Task-supporting: asks the client to confirm (elicitation), then answers",
            json!({"filename": {"type": "string"}}),
        ),
        |args, ctx| async move {
            let file = args
                .get("filename")
                .and_then(Value::as_str)
                .unwrap_or("file")
                .to_string();
            let answer = ask(&ctx, confirm(format!("Delete {file}?"))).await?;
            Ok(ToolOutput::text(if accepted(&answer) {
                format!("Deleted {file}")
            } else {
                format!("Kept {file}")
            }))
        },
    )
    .task_support = TaskSupport::Optional;

    reg.async_tool(
        def(
            "multi_input",
            "Task-supporting: asks two questions at once, answers when both are answered",
            json!({}),
        ),
        |_, ctx| async move {
            let name = json!({"message": "Your name?", "requestedSchema": {"type": "object",
                "properties": {"name": {"type": "string"}}, "required": ["name"]}});
            let (a, b) = futures_join(ask(&ctx, name), ask(&ctx, confirm("Proceed?".into()))).await;
            let (a, b) = (a?, b?);
            Ok(ToolOutput::text(format!(
                "name={}, proceed={}",
                a["content"]["name"].as_str().unwrap_or("?"),
                accepted(&b)
            )))
        },
    )
    .task_support = TaskSupport::Optional;

    reg.tool_with(
        def(
            "test_tool_with_task",
            "Task-required: asks for user_name (input-required round), then runs as a task greeting them",
            json!({}),
        ),
        |_, ctx| {
            let name = ctx
                .input_responses()
                .and_then(|r| r.get("user_name"))
                .and_then(|r| r["content"]["name"].as_str())
                .map(str::to_string);
            match name {
                None => {
                    let mut out = ToolOutput::default();
                    out.extra.insert("resultType".into(), json!("input_required"));
                    out.extra.insert(
                        "inputRequests".into(),
                        json!({"user_name": {"method": "elicitation/create", "params": {
                            "message": "What is your name?",
                            "requestedSchema": {"type": "object",
                                "properties": {"name": {"type": "string"}}, "required": ["name"]}}}}),
                    );
                    ToolFuture::Ready(Ok(out))
                }
                Some(name) => ToolFuture::Pending(Box::pin(async move {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    Ok(ToolOutput::text(format!("Hello, {name}! (from a task)")))
                })),
            }
        },
    )
    .task_support = TaskSupport::Required;
}

/// Both futures, concurrently.
async fn futures_join<A, B>(a: A, b: B) -> (A::Output, B::Output)
where
    A: std::future::Future,
    B: std::future::Future,
{
    tokio::join!(a, b)
}
