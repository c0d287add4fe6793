//! What a server offers: tools, resources and prompts, with their handlers.
//! One [`Registry`] serves both protocol eras and every transport; the
//! engine shapes results per revision, handlers never see the era unless
//! they ask ([`ToolCtx::protocol_version`]).

use futures_util::future::BoxFuture;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Arguments of a tool call: the JSON object the client sent (empty if none).
pub type Args = Map<String, Value>;

/// The result of a tool: `Ok` is a `CallToolResult`, `Err` a JSON-RPC error.
pub use crate::jsonrpc::RpcError;

/// Whether a tool may run as a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TaskSupport {
    /// Never a task (the default).
    #[default]
    Forbidden,
    /// A task when the client declared the extension and the call runs long.
    Optional,
    /// Only as a task: a client without the extension gets -32021.
    Required,
}

pub type ToolResult = Result<ToolOutput, RpcError>;

/// What a tool returns: content blocks, optional structured content, and
/// whether it is a tool-level error (`isError: true`, not a JSON-RPC error).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ToolOutput {
    pub content: Vec<Value>,
    pub structured: Option<Value>,
    pub is_error: bool,
    /// Extra result members (e.g. `resultType: "input_required"` and its
    /// fields for the 2026-07-28 input-required flow); merged as given.
    pub extra: Map<String, Value>,
}

impl ToolOutput {
    pub fn text(text: impl Into<String>) -> ToolOutput {
        ToolOutput {
            content: vec![json!({"type": "text", "text": text.into()})],
            ..Default::default()
        }
    }
    /// Structured content plus its JSON text as the content block, as the
    /// spec recommends for clients that do not read structuredContent.
    pub fn structured(value: Value) -> ToolOutput {
        ToolOutput {
            content: vec![json!({"type": "text", "text": value.to_string()})],
            structured: Some(value),
            ..Default::default()
        }
    }
    pub fn error(text: impl Into<String>) -> ToolOutput {
        ToolOutput {
            is_error: true,
            ..ToolOutput::text(text)
        }
    }
}

/// A tool's answer: at once (no task, no allocation beyond the result), or
/// later (the transport drives the future; progress, logs and
/// server-to-client requests go through the [`ToolCtx`]).
pub enum ToolFuture {
    Ready(ToolResult),
    Pending(BoxFuture<'static, ToolResult>),
}

/// Messages a running tool sends back to its session.
#[derive(Debug)]
pub(crate) enum ToolEvent {
    Progress {
        key: u64,
        progress: f64,
        total: Option<f64>,
        message: Option<String>,
    },
    Log {
        key: u64,
        level: LogLevel,
        data: Value,
    },
    Request {
        key: u64,
        method: String,
        params: Value,
        reply: oneshot::Sender<Result<Value, RpcError>>,
    },
    /// The tool asks the transport to end this call's response stream now.
    CloseStream { key: u64 },
}

/// Syslog severities as MCP names them, least severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Debug,
    Info,
    Notice,
    Warning,
    Error,
    Critical,
    Alert,
    Emergency,
}

impl LogLevel {
    pub const ALL: [LogLevel; 8] = [
        LogLevel::Debug,
        LogLevel::Info,
        LogLevel::Notice,
        LogLevel::Warning,
        LogLevel::Error,
        LogLevel::Critical,
        LogLevel::Alert,
        LogLevel::Emergency,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Notice => "notice",
            LogLevel::Warning => "warning",
            LogLevel::Error => "error",
            LogLevel::Critical => "critical",
            LogLevel::Alert => "alert",
            LogLevel::Emergency => "emergency",
        }
    }
    pub fn parse(s: &str) -> Option<LogLevel> {
        LogLevel::ALL.into_iter().find(|l| l.as_str() == s)
    }
}

/// What a tool handler knows about the call and can do while it runs.
#[derive(Clone)]
pub struct ToolCtx {
    pub(crate) key: u64,
    pub(crate) protocol_version: &'static str,
    pub(crate) client_capabilities: Arc<Value>,
    pub(crate) has_progress_token: bool,
    pub(crate) events: Option<mpsc::UnboundedSender<ToolEvent>>,
    pub(crate) stateless: bool,
    /// 2026-07-28 input-required continuation: the request's
    /// `inputResponses` and `requestState`, when it carried either.
    pub(crate) continuation: Option<Arc<Args>>,
    /// The call runs as a task (tasks extension): server-to-client requests
    /// become the task's `inputRequests`, in either era.
    pub(crate) task: bool,
}

impl ToolCtx {
    /// A context for calling a handler outside a session (tests, benches).
    pub fn detached() -> ToolCtx {
        ToolCtx {
            key: 0,
            protocol_version: crate::version::LATEST_LEGACY,
            client_capabilities: Arc::new(Value::Object(Map::new())),
            has_progress_token: false,
            events: None,
            stateless: false,
            continuation: None,
            task: false,
        }
    }
    /// The `inputResponses` of a request retried after an input-required
    /// result (2026-07-28), keyed as the server's `inputRequests` were.
    pub fn input_responses(&self) -> Option<&Map<String, Value>> {
        self.continuation
            .as_ref()?
            .get("inputResponses")?
            .as_object()
    }
    /// The `requestState` the client echoed back with its input responses.
    pub fn request_state(&self) -> Option<&str> {
        self.continuation.as_ref()?.get("requestState")?.as_str()
    }
    /// Asks the transport to end this call's response stream now (SEP-1699
    /// polling on Streamable HTTP); later messages wait until the client
    /// resumes with `Last-Event-ID`. A no-op on TCP and stdio.
    pub fn close_stream(&self) {
        if let Some(tx) = &self.events {
            let _ = tx.send(ToolEvent::CloseStream { key: self.key });
        }
    }
    /// The revision this call is served under.
    pub fn protocol_version(&self) -> &'static str {
        self.protocol_version
    }
    /// True when the call runs as a task (tasks extension).
    pub fn is_task(&self) -> bool {
        self.task
    }
    /// True for a 2026-07-28 (stateless) request.
    pub fn stateless(&self) -> bool {
        self.stateless
    }
    /// The client's declared capabilities (initialize params, or the
    /// request's `_meta` in the stateless era).
    pub fn client_capabilities(&self) -> &Value {
        &self.client_capabilities
    }
    /// Whether the client declared `name` (e.g. "sampling", "elicitation").
    pub fn client_has(&self, name: &str) -> bool {
        self.client_capabilities.get(name).is_some()
    }
    /// Sends `notifications/progress` when the request carried a
    /// progressToken; a no-op otherwise, and after the call completed.
    pub fn progress(&self, progress: f64, total: Option<f64>, message: Option<String>) {
        if let (true, Some(tx)) = (self.has_progress_token, &self.events) {
            let _ = tx.send(ToolEvent::Progress {
                key: self.key,
                progress,
                total,
                message,
            });
        }
    }
    /// Sends `notifications/message` if the session's level admits it.
    pub fn log(&self, level: LogLevel, data: Value) {
        if let Some(tx) = &self.events {
            let _ = tx.send(ToolEvent::Log {
                key: self.key,
                level,
                data,
            });
        }
    }
    /// A server-to-client request (sampling/createMessage, elicitation/create,
    /// roots/list). Initialize era only: the stateless era has none, except
    /// in a task, where the request waits in the task's `inputRequests`
    /// until `tasks/update` answers it.
    pub async fn request(&self, method: &str, params: Value) -> Result<Value, RpcError> {
        let Some(tx) = self
            .events
            .as_ref()
            .filter(|_| !self.stateless || self.task)
        else {
            return Err(RpcError::new(
                crate::jsonrpc::INTERNAL_ERROR,
                "server-to-client requests need an initialize-era session",
            ));
        };
        let (reply, rx) = oneshot::channel();
        tx.send(ToolEvent::Request {
            key: self.key,
            method: method.to_string(),
            params,
            reply,
        })
        .map_err(|_| RpcError::new(crate::jsonrpc::INTERNAL_ERROR, "session closed"))?;
        rx.await
            .map_err(|_| RpcError::new(crate::jsonrpc::INTERNAL_ERROR, "session closed"))?
    }
}

type ToolFn = dyn Fn(Args, ToolCtx) -> ToolFuture + Send + Sync;
type ReadFn = dyn Fn(&str) -> Result<Vec<Value>, RpcError> + Send + Sync;
type PromptFn = dyn Fn(&Args) -> Result<Value, RpcError> + Send + Sync;
/// A prompt that also reads the request's other params (arguments, params).
type PromptParamsFn = dyn Fn(&Args, &Args) -> Result<Value, RpcError> + Send + Sync;
type CompleteFn = dyn Fn(&str, &str) -> Vec<String> + Send + Sync;
type FallbackFn = dyn Fn(&str) -> Option<Result<Vec<Value>, RpcError>> + Send + Sync;
type TemplateCompleteFn = dyn Fn(&str, &str, &str) -> Vec<String> + Send + Sync;
/// A watcher: for a URI it covers, a fresh sampler of that resource.
type WatchFn = dyn Fn(&str) -> Option<crate::subscriptions::Observe> + Send + Sync;

/// A tool: its `tools/list` entry and its handler.
pub struct Tool {
    pub name: String,
    /// The full `tools/list` entry (name, description, inputSchema, ...).
    pub definition: Value,
    /// Runs on a task of its own with a live context (progress, logs,
    /// requests); synchronous tools are answered inline.
    pub is_async: bool,
    /// Client capability the tool needs (2026-07-28: -32021 when undeclared).
    pub requires: Option<&'static str>,
    /// Whether a call may run as a task (tasks extension); see [`crate::tasks`].
    pub task_support: TaskSupport,
    pub handler: Box<ToolFn>,
}

/// A resource: its `resources/list` entry and a reader returning `contents`.
pub struct Resource {
    pub uri: String,
    pub definition: Value,
    pub read: Box<ReadFn>,
}

/// A prompt: its `prompts/list` entry and a handler returning the
/// `prompts/get` result (`description`, `messages`).
pub struct Prompt {
    pub name: String,
    pub definition: Value,
    pub get: Box<PromptFn>,
    /// Replaces `get` when set: also sees the whole `params` (e.g. the
    /// 2026-07-28 `inputResponses` of an input-required prompt).
    pub get_with_params: Option<Box<PromptParamsFn>>,
    /// Values for `completion/complete` on an argument: (argument, prefix).
    pub complete: Option<Box<CompleteFn>>,
}

/// Tools, resources and prompts, in registration order.
#[derive(Default)]
pub struct Registry {
    pub tools: Vec<Tool>,
    pub resources: Vec<Resource>,
    pub prompts: Vec<Prompt>,
    /// `resources/templates/list` entries (read through `resource_fallback`).
    pub resource_templates: Vec<Value>,
    /// Reader for URIs not registered one by one (templates).
    pub resource_fallback: Option<Box<FallbackFn>>,
    /// Completion for resource-template arguments: (template uri, argument, prefix).
    pub template_complete: Option<Box<TemplateCompleteFn>>,
    /// Samplers of subscribable resources whose changes the engine detects
    /// itself ([`crate::subscriptions`]): the first watcher that covers a URI.
    pub watchers: Vec<Box<WatchFn>>,
}

impl Registry {
    /// A synchronous tool: answered inline, never spawned.
    pub fn tool(
        &mut self,
        definition: Value,
        handler: impl Fn(Args, ToolCtx) -> ToolResult + Send + Sync + 'static,
    ) -> &mut Tool {
        self.push_tool(
            definition,
            false,
            Box::new(move |a, c| ToolFuture::Ready(handler(a, c))),
        )
    }

    /// An asynchronous tool: its future runs beside the session, cancellable,
    /// with progress/log/request through its [`ToolCtx`].
    pub fn async_tool<F>(
        &mut self,
        definition: Value,
        handler: impl Fn(Args, ToolCtx) -> F + Send + Sync + 'static,
    ) -> &mut Tool
    where
        F: std::future::Future<Output = ToolResult> + Send + 'static,
    {
        self.push_tool(
            definition,
            true,
            Box::new(move |a, c| ToolFuture::Pending(Box::pin(handler(a, c)))),
        )
    }

    /// A tool that decides per call: `Ready` is answered inline, `Pending`
    /// runs beside the session with a live [`ToolCtx`] (e.g. `echo` with a
    /// delay).
    pub fn tool_with(
        &mut self,
        definition: Value,
        handler: impl Fn(Args, ToolCtx) -> ToolFuture + Send + Sync + 'static,
    ) -> &mut Tool {
        self.push_tool(definition, true, Box::new(handler))
    }

    fn push_tool(&mut self, definition: Value, is_async: bool, handler: Box<ToolFn>) -> &mut Tool {
        let name = definition["name"].as_str().unwrap_or_default().to_string();
        self.tools.push(Tool {
            name,
            definition,
            is_async,
            requires: None,
            task_support: Default::default(),
            handler,
        });
        self.tools.last_mut().expect("just pushed")
    }

    pub fn resource(
        &mut self,
        definition: Value,
        read: impl Fn(&str) -> Result<Vec<Value>, RpcError> + Send + Sync + 'static,
    ) {
        let uri = definition["uri"].as_str().unwrap_or_default().to_string();
        self.resources.push(Resource {
            uri,
            definition,
            read: Box::new(read),
        });
    }

    pub fn prompt(
        &mut self,
        definition: Value,
        get: impl Fn(&Args) -> Result<Value, RpcError> + Send + Sync + 'static,
    ) -> &mut Prompt {
        let name = definition["name"].as_str().unwrap_or_default().to_string();
        self.prompts.push(Prompt {
            name,
            definition,
            get: Box::new(get),
            get_with_params: None,
            complete: None,
        });
        self.prompts.last_mut().expect("just pushed")
    }

    pub fn find_tool(&self, name: &str) -> Option<&Tool> {
        self.tools.iter().find(|t| t.name == name)
    }
    pub fn find_resource(&self, uri: &str) -> Option<&Resource> {
        self.resources.iter().find(|r| r.uri == uri)
    }
    /// Watches resources: `watch(uri)` gives a sampler for each URI it
    /// covers (`None` for the others). One sampler runs per subscribed URI,
    /// shared by all its subscribers.
    pub fn watch(
        &mut self,
        watch: impl Fn(&str) -> Option<crate::subscriptions::Observe> + Send + Sync + 'static,
    ) {
        self.watchers.push(Box::new(watch));
    }
    /// A sampler for `uri`, from the first watcher that covers it.
    pub fn watcher(&self, uri: &str) -> Option<crate::subscriptions::Observe> {
        self.watchers.iter().find_map(|w| w(uri))
    }
    pub fn find_prompt(&self, name: &str) -> Option<&Prompt> {
        self.prompts.iter().find(|p| p.name == name)
    }
}
