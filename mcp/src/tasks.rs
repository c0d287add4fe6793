//! The tasks extension (`io.modelcontextprotocol/tasks`, SEP-2663): a tool
//! call may answer with a task handle (`resultType: "task"`) instead of its
//! result, and the client polls `tasks/get`, answers the task's input
//! requests with `tasks/update`, and stops it with `tasks/cancel`.
//!
//! Task creation is the server's choice, per call: a tool registered with
//! [`TaskSupport::Optional`] or [`TaskSupport::Required`] whose handler
//! returns [`ToolFuture::Pending`](crate::ToolFuture) for a request that
//! declared the extension runs as a task; a `Ready` answer (an immediate
//! result, or a 2026-07-28 input-required round) is answered inline. Tasks
//! belong to the engine, not to a session: a stateless (2026-07-28) client
//! polls them with requests that each open a fresh session.
//!
//! Bounded: at most [`TaskConfig::max_tasks`] kept at once (past it the call
//! is refused with -32000), each kept for its `ttlMs` from creation and
//! then dropped (a task still running then is stopped).

use crate::jsonrpc;
use crate::registry::{Args, RpcError, ToolEvent, ToolResult};
use futures_util::future::{AbortHandle, Abortable, BoxFuture};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, oneshot};

/// The extension's identifier, in `capabilities.extensions`.
pub const TASKS_EXTENSION: &str = "io.modelcontextprotocol/tasks";

pub use crate::registry::TaskSupport;

/// Limits of the engine's task table.
#[derive(Debug, Clone)]
pub struct TaskConfig {
    /// Tasks kept at once (running or finished, until their TTL).
    pub max_tasks: usize,
    /// `ttlMs`: how long a task is kept from its creation.
    pub ttl: Duration,
    /// `pollIntervalMs` suggested to clients.
    pub poll_interval: Duration,
}

impl Default for TaskConfig {
    fn default() -> Self {
        TaskConfig {
            max_tasks: 1024,
            ttl: Duration::from_secs(600),
            poll_interval: Duration::from_millis(250),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Working,
    InputRequired,
    Completed,
    Failed,
    Cancelled,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Working => "working",
            Status::InputRequired => "input_required",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }
    fn terminal(self) -> bool {
        matches!(self, Status::Completed | Status::Failed | Status::Cancelled)
    }
}

type Reply = oneshot::Sender<Result<Value, RpcError>>;

struct Task {
    status: Status,
    created_ms: u64,
    updated_ms: u64,
    created: Instant,
    result: Option<Value>,
    error: Option<Value>,
    /// Outstanding input requests: (key, request, where the answer goes).
    inputs: Vec<(String, Value, Reply)>,
    next_key: u64,
    abort: AbortHandle,
}

/// Every task of an engine.
pub struct TaskStore {
    config: TaskConfig,
    tasks: Mutex<HashMap<String, Task>>,
}

/// How a tool call's result is shaped for the client (the engine's own
/// shaping of a `CallToolResult`).
pub(crate) type Shape = Box<dyn Fn(ToolResult) -> Result<Map<String, Value>, RpcError> + Send>;

impl TaskStore {
    pub fn new(config: TaskConfig) -> TaskStore {
        TaskStore {
            config,
            tasks: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Task>> {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tasks kept now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Starts `fut` as a task and returns the `CreateTaskResult`. Its
    /// server-to-client requests arrive on `events` and become the task's
    /// `inputRequests`; `shape` turns its outcome into the inlined result.
    pub(crate) fn create(
        self: &Arc<Self>,
        fut: BoxFuture<'static, ToolResult>,
        mut events: mpsc::UnboundedReceiver<ToolEvent>,
        shape: Shape,
    ) -> Result<Map<String, Value>, RpcError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| RpcError::new(jsonrpc::INTERNAL_ERROR, "tasks need an async runtime"))?;
        let (abort, reg) = AbortHandle::new_pair();
        let id = new_task_id();
        let now = now_ms();
        let created;
        {
            let mut tasks = self.lock();
            self.expire(&mut tasks);
            if tasks.len() >= self.config.max_tasks {
                let max = self.config.max_tasks;
                return Err(RpcError::new(
                    jsonrpc::LIMIT_REACHED,
                    format!("too many tasks on this server (max {max}); try again later"),
                )
                .with_data(json!({"limit": "max-tasks", "max": max})));
            }
            let task = Task {
                status: Status::Working,
                created_ms: now,
                updated_ms: now,
                created: Instant::now(),
                result: None,
                error: None,
                inputs: Vec::new(),
                next_key: 1,
                abort,
            };
            created = self.describe(&id, &task, false);
            // Durable before the CreateTaskResult leaves: a tasks/get right
            // after it resolves.
            tasks.insert(id.clone(), task);
        }
        let store = Arc::clone(self);
        let tid = id.clone();
        let driven = async move {
            let mut fut = fut;
            loop {
                tokio::select! {
                    biased;
                    Some(ev) = events.recv() => store.on_event(&tid, ev),
                    r = &mut fut => {
                        // Requests sent just before returning are moot now.
                        store.finish(&tid, shape(r));
                        break;
                    }
                }
            }
        };
        runtime.spawn(Abortable::new(driven, reg));
        Ok(created)
    }

    /// A running task's server-to-client request: it waits in
    /// `inputRequests` under a fresh key until `tasks/update` answers it.
    fn on_event(&self, id: &str, ev: ToolEvent) {
        let ToolEvent::Request {
            method,
            params,
            reply,
            ..
        } = ev
        else {
            // Progress and logs are not carried by tasks (SEP-2663).
            return;
        };
        let mut tasks = self.lock();
        let Some(t) = tasks.get_mut(id).filter(|t| !t.status.terminal()) else {
            return;
        };
        let key = format!("input-{}", t.next_key);
        t.next_key += 1;
        t.inputs
            .push((key, json!({"method": method, "params": params}), reply));
        t.status = Status::InputRequired;
        t.updated_ms = now_ms();
    }

    fn finish(&self, id: &str, outcome: Result<Map<String, Value>, RpcError>) {
        let mut tasks = self.lock();
        let Some(t) = tasks.get_mut(id).filter(|t| !t.status.terminal()) else {
            return;
        };
        match outcome {
            Ok(r) => {
                t.status = Status::Completed;
                t.result = Some(Value::Object(r));
            }
            Err(e) => {
                t.status = Status::Failed;
                let mut err = json!({"code": e.code, "message": e.message});
                if let Some(d) = e.data {
                    err["data"] = d;
                }
                t.error = Some(err);
            }
        }
        t.inputs.clear();
        t.updated_ms = now_ms();
    }

    /// Drops tasks past their TTL, stopping any still running.
    fn expire(&self, tasks: &mut HashMap<String, Task>) {
        let ttl = self.config.ttl;
        tasks.retain(|_, t| {
            let keep = t.created.elapsed() < ttl;
            if !keep {
                t.abort.abort();
            }
            keep
        });
    }

    fn describe(&self, id: &str, t: &Task, detailed: bool) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("taskId".into(), json!(id));
        m.insert("status".into(), json!(t.status.as_str()));
        m.insert("createdAt".into(), json!(iso8601(t.created_ms)));
        m.insert("lastUpdatedAt".into(), json!(iso8601(t.updated_ms)));
        m.insert("ttlMs".into(), json!(self.config.ttl.as_millis() as u64));
        m.insert(
            "pollIntervalMs".into(),
            json!(self.config.poll_interval.as_millis().max(1) as u64),
        );
        if !detailed {
            m.insert("resultType".into(), json!("task"));
            return m;
        }
        match t.status {
            Status::InputRequired => {
                let reqs: Map<String, Value> = t
                    .inputs
                    .iter()
                    .map(|(k, r, _)| (k.clone(), r.clone()))
                    .collect();
                m.insert("inputRequests".into(), Value::Object(reqs));
            }
            Status::Completed => {
                m.insert("result".into(), t.result.clone().unwrap_or(json!({})));
            }
            Status::Failed => {
                m.insert("error".into(), t.error.clone().unwrap_or(json!({})));
            }
            Status::Working | Status::Cancelled => {}
        }
        m.insert("resultType".into(), json!("complete"));
        m
    }

    /// `tasks/get`, `tasks/update` or `tasks/cancel` (the caller checked
    /// that the request declared the extension).
    pub(crate) fn request(&self, method: &str, p: &Args) -> Result<Map<String, Value>, RpcError> {
        let id = p
            .get("taskId")
            .and_then(Value::as_str)
            .ok_or_else(|| RpcError::invalid_params(format!("{method} needs params.taskId")))?;
        let mut tasks = self.lock();
        self.expire(&mut tasks);
        let unknown = || {
            RpcError::invalid_params(format!("unknown task: {id}")).with_data(json!({"taskId": id}))
        };
        let t = tasks.get_mut(id).ok_or_else(unknown)?;
        let ack = || {
            let mut m = Map::new();
            m.insert("resultType".into(), json!("complete"));
            m
        };
        match method {
            "tasks/get" => Ok(self.describe(id, t, true)),
            "tasks/update" => {
                let responses = match p.get("inputResponses") {
                    Some(Value::Object(r)) => r,
                    _ => {
                        return Err(RpcError::invalid_params(
                            "tasks/update needs params.inputResponses (an object keyed like inputRequests)",
                        ))
                    }
                };
                // Keys not outstanding (never issued, answered, superseded) are ignored.
                for (key, answer) in responses {
                    if let Some(i) = t.inputs.iter().position(|(k, _, _)| k == key) {
                        let (_, _, reply) = t.inputs.swap_remove(i);
                        let _ = reply.send(Ok(answer.clone()));
                        t.updated_ms = now_ms();
                    }
                }
                // Keep issue order for what is still pending.
                t.inputs.sort_by_key(|(k, _, _)| key_number(k));
                if t.status == Status::InputRequired && t.inputs.is_empty() {
                    t.status = Status::Working;
                }
                Ok(ack())
            }
            "tasks/cancel" => {
                // Idempotent: a finished task is acknowledged the same way.
                if !t.status.terminal() {
                    t.abort.abort();
                    t.inputs.clear();
                    t.status = Status::Cancelled;
                    t.updated_ms = now_ms();
                }
                Ok(ack())
            }
            _ => Err(RpcError::new(
                jsonrpc::METHOD_NOT_FOUND,
                format!("method not found: {method}"),
            )),
        }
    }
}

fn key_number(k: &str) -> u64 {
    k.strip_prefix("input-")
        .and_then(|n| n.parse().ok())
        .unwrap_or(u64::MAX)
}

/// True when `caps` (a request's client capabilities) declare the extension.
pub fn declared(caps: &Value) -> bool {
    caps.get("extensions")
        .and_then(|e| e.get(TASKS_EXTENSION))
        .is_some()
}

/// The -32021 a task method or a required-task tool answers a client that
/// did not declare the extension.
pub fn missing_extension(what: &str) -> RpcError {
    RpcError::new(
        jsonrpc::MISSING_CLIENT_CAPABILITY,
        format!("{what} needs the client capability extensions[\"{TASKS_EXTENSION}\"], which this request did not declare"),
    )
    .with_data(json!({"requiredCapabilities": {"extensions": {TASKS_EXTENSION: {}}}}))
}

/// True for the methods of the extension this engine serves.
pub fn is_task_method(method: &str) -> bool {
    matches!(method, "tasks/get" | "tasks/update" | "tasks/cancel")
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `2026-07-28T10:30:00.123Z` for milliseconds since the epoch (UTC).
pub fn iso8601(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// An unguessable task id: 128 random bits from the kernel, in hex.
fn new_task_id() -> String {
    let mut buf = [0u8; 16];
    // SAFETY: getrandom writes at most buf.len() bytes into buf.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n != buf.len() as isize {
        use std::sync::atomic::{AtomicU64, Ordering};
        static FALLBACK: AtomicU64 = AtomicU64::new(0);
        let t = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        return format!("{t:x}{:x}", FALLBACK.fetch_add(1, Ordering::Relaxed));
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_timestamps() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(iso8601(1_785_234_645_000), "2026-07-28T10:30:45.000Z");
    }

    #[test]
    fn extension_is_declared_under_extensions() {
        assert!(declared(&json!({"extensions": {TASKS_EXTENSION: {}}})));
        assert!(!declared(&json!({"tasks": {}})));
        assert!(!declared(&json!({})));
        let e = missing_extension("tools/call");
        assert_eq!(e.code, -32021);
        assert!(e.data.unwrap()["requiredCapabilities"]["extensions"][TASKS_EXTENSION].is_object());
    }

    fn store() -> Arc<TaskStore> {
        Arc::new(TaskStore::new(TaskConfig::default()))
    }

    fn shape() -> Shape {
        Box::new(|r: ToolResult| {
            r.map(|o| {
                let mut m = Map::new();
                m.insert("content".into(), Value::Array(o.content));
                if o.is_error {
                    m.insert("isError".into(), json!(true));
                }
                m
            })
        })
    }

    fn args(v: Value) -> Args {
        v.as_object().unwrap().clone()
    }

    #[tokio::test]
    async fn a_task_parks_for_input_and_resumes_on_update() {
        let s = store();
        let (tx, rx) = mpsc::unbounded_channel();
        let fut: BoxFuture<'static, ToolResult> = Box::pin(async move {
            let (reply, answer) = oneshot::channel();
            tx.send(ToolEvent::Request {
                key: 0,
                method: "elicitation/create".into(),
                params: json!({"message": "sure?"}),
                reply,
            })
            .unwrap();
            let a = answer.await.unwrap()?;
            Ok(crate::ToolOutput::text(format!(
                "answer {}",
                a["content"]["ok"]
            )))
        });
        let created = s.create(fut, rx, shape()).unwrap();
        assert_eq!(created["resultType"], "task");
        assert_eq!(created["status"], "working");
        let id = created["taskId"].as_str().unwrap().to_string();
        let get = || {
            s.request("tasks/get", &args(json!({"taskId": id})))
                .unwrap()
        };
        let mut t = get();
        for _ in 0..100 {
            if t["status"] == "input_required" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
            t = get();
        }
        assert_eq!(t["status"], "input_required");
        assert_eq!(
            t["inputRequests"]["input-1"]["method"],
            "elicitation/create"
        );
        let ack = s
            .request(
                "tasks/update",
                &args(json!({"taskId": id, "inputResponses": {"nope": {}, "input-1": {"action": "accept", "content": {"ok": true}}}})),
            )
            .unwrap();
        assert_eq!(Value::Object(ack), json!({"resultType": "complete"}));
        assert_eq!(get()["status"], "working");
        for _ in 0..100 {
            if get()["status"] == "completed" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let t = get();
        assert_eq!(t["result"]["content"][0]["text"], "answer true");
        assert!(t.get("inputRequests").is_none());
    }

    #[tokio::test]
    async fn cancel_stops_a_task_and_is_idempotent_and_unknown_ids_are_32602() {
        let s = store();
        let (_tx, rx) = mpsc::unbounded_channel();
        let fut: BoxFuture<'static, ToolResult> = Box::pin(async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(crate::ToolOutput::text("late"))
        });
        let id = s.create(fut, rx, shape()).unwrap()["taskId"]
            .as_str()
            .unwrap()
            .to_string();
        let p = args(json!({"taskId": id}));
        for _ in 0..2 {
            let ack = s.request("tasks/cancel", &p).unwrap();
            assert_eq!(Value::Object(ack), json!({"resultType": "complete"}));
        }
        assert_eq!(s.request("tasks/get", &p).unwrap()["status"], "cancelled");
        let e = s
            .request("tasks/get", &args(json!({"taskId": "nope"})))
            .unwrap_err();
        assert_eq!(e.code, jsonrpc::INVALID_PARAMS);
    }

    #[tokio::test]
    async fn the_table_is_bounded_and_protocol_errors_fail_the_task() {
        let s = Arc::new(TaskStore::new(TaskConfig {
            max_tasks: 1,
            ..Default::default()
        }));
        let (_tx, rx) = mpsc::unbounded_channel();
        let fut: BoxFuture<'static, ToolResult> =
            Box::pin(async { Err(RpcError::new(-32603, "boom")) });
        let id = s.create(fut, rx, shape()).unwrap()["taskId"]
            .as_str()
            .unwrap()
            .to_string();
        let (_tx2, rx2) = mpsc::unbounded_channel();
        let again: BoxFuture<'static, ToolResult> = Box::pin(async { Ok(Default::default()) });
        assert_eq!(s.create(again, rx2, shape()).unwrap_err().code, -32000);
        let p = args(json!({"taskId": id}));
        for _ in 0..100 {
            if s.request("tasks/get", &p).unwrap()["status"] == "failed" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let t = s.request("tasks/get", &p).unwrap();
        assert_eq!(t["status"], "failed");
        assert_eq!(t["error"]["code"], -32603);
        assert!(t.get("result").is_none());
    }
}
