//! The shared half of the server: what it offers (the registry), its
//! configuration, the initialize results per revision, tasks and
//! subscriptions of every session.

use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::version::{at_least, is_stateless, LEGACY_VERSIONS};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use std::sync::Arc;

/// Engine settings that every session of a server shares.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub name: String,
    pub title: Option<String>,
    pub version: String,
    pub instructions: Option<String>,
    /// Entries per page of the list methods.
    pub page_size: usize,
    /// Asynchronous requests one session may have running.
    pub max_in_flight: usize,
    /// The shared token; `None`: no authentication.
    pub token: Option<String>,
    /// `ttlMs` on cacheable stateless results.
    pub list_ttl_ms: u64,
    /// Resource subscriptions: bounds, pacing and change rules.
    pub subscriptions: crate::subscriptions::SubscriptionConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            name: "headroom".into(),
            title: Some("headroom".into()),
            version: env!("CARGO_PKG_VERSION").into(),
            instructions: None,
            page_size: 50,
            max_in_flight: 16,
            token: None,
            list_ttl_ms: 0,
            subscriptions: Default::default(),
        }
    }
}

/// The shared half of the server: what it offers and how.
pub struct Engine {
    pub registry: Registry,
    pub config: EngineConfig,
    pub metrics: Option<Arc<Metrics>>,
    /// Tasks of every session (tasks extension).
    pub tasks: Arc<crate::tasks::TaskStore>,
    /// Resource subscriptions of every session, and their samplers.
    pub hub: Arc<crate::subscriptions::Hub>,
    /// The initialize result of each initialize-era revision (in the order
    /// of [`LEGACY_VERSIONS`]), serialized on first use: it depends only on
    /// the revision and the configuration, and building it as a JSON tree
    /// per session was the largest allocation cost of opening one.
    initialize_results: [std::sync::OnceLock<Box<RawValue>>; LEGACY_VERSIONS.len()],
}

impl Engine {
    pub fn new(
        registry: Registry,
        config: EngineConfig,
        metrics: Option<Arc<Metrics>>,
    ) -> Arc<Engine> {
        let hub = crate::subscriptions::Hub::new(config.subscriptions.clone());
        Arc::new(Engine {
            registry,
            config,
            metrics,
            tasks: Arc::new(crate::tasks::TaskStore::new(Default::default())),
            hub,
            initialize_results: Default::default(),
        })
    }

    /// Tells every session subscribed to `uri` that it changed
    /// (`notifications/resources/updated`, at most one per subscription per
    /// interval). A resource a registry watcher covers is sampled now
    /// instead, and its change rules decide.
    pub fn resource_updated(&self, uri: &str) {
        self.hub.updated(uri);
    }

    /// The `initialize` result for an initialize-era `version`.
    pub(super) fn initialize_result(&self, version: &'static str) -> &RawValue {
        let i = LEGACY_VERSIONS
            .iter()
            .position(|v| *v == version)
            .expect("an initialize-era revision");
        self.initialize_results[i].get_or_init(|| {
            let mut r = json!({
                "protocolVersion": version,
                "capabilities": self.capabilities(version),
                "serverInfo": self.server_info(),
            });
            if !at_least(version, "2025-06-18") {
                r["serverInfo"]
                    .as_object_mut()
                    .expect("object")
                    .remove("title");
            }
            if let Some(i) = &self.config.instructions {
                r["instructions"] = json!(i);
            }
            serde_json::value::to_raw_value(&r).expect("a JSON value serializes")
        })
    }

    pub(super) fn token_ok(&self, presented: Option<&Value>) -> bool {
        match &self.config.token {
            None => true,
            Some(t) => presented
                .and_then(Value::as_str)
                .is_some_and(|p| constant_time_eq(p.as_bytes(), t.as_bytes())),
        }
    }

    pub(super) fn server_info(&self) -> Value {
        let mut v = json!({"name": self.config.name, "version": self.config.version});
        if let Some(t) = &self.config.title {
            v["title"] = json!(t);
        }
        v
    }

    pub(super) fn capabilities(&self, version: &str) -> Value {
        let mut caps = json!({
            "tools": {"listChanged": false},
            "resources": {"subscribe": true, "listChanged": false},
            "prompts": {"listChanged": false},
        });
        if version != "2024-11-05" {
            caps["completions"] = json!({});
        }
        if !is_stateless(version) {
            caps["logging"] = json!({});
        } else {
            // Stateless: subscriptions/listen replaces resources/subscribe.
            caps["resources"] = json!({"subscribe": true, "listChanged": false});
            if self.offers_tasks() {
                caps["extensions"] = json!({(crate::tasks::TASKS_EXTENSION): {}});
            }
        }
        caps
    }

    /// True when some tool may run as a task.
    pub(super) fn offers_tasks(&self) -> bool {
        self.registry
            .tools
            .iter()
            .any(|t| t.task_support != crate::tasks::TaskSupport::Forbidden)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
