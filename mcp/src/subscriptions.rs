//! Resource subscriptions in both eras: `resources/subscribe` (initialize
//! era, `notifications/resources/updated`) and `subscriptions/listen`
//! (2026-07-28: acknowledged with `notifications/subscriptions/acknowledged`,
//! every notification tagged with the listen request's id).
//!
//! - One [`Hub`] per engine: per resource URI, the sessions subscribed and,
//!   for a resource a [`Registry`](crate::Registry) watcher covers, **one**
//!   sampler task
//!   shared by every subscriber, started by the first and stopped with the
//!   last. A quiet subscription costs its session a few dozen bytes and
//!   nothing else.
//! - The sampler ([`Observe`]) is the server's: it samples and says
//!   whether the sample is news; anything else is not notified.
//! - Per subscription, at most one notification per
//!   [`SubscriptionConfig::min_interval`]: a change inside the interval is
//!   delivered once when it ends (coalesced), none while nothing changed.
//! - Bounded: [`SubscriptionConfig::per_session`] and
//!   [`SubscriptionConfig::per_server`] subscriptions; past either, -32000
//!   naming the limit.

use crate::jsonrpc;
use crate::jsonrpc::RpcError;
use futures_util::task::AtomicWaker;
use serde_json::json;
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// `_meta` key naming the subscription a notification belongs to.
pub const SUBSCRIPTION_ID_KEY: &str = "io.modelcontextprotocol/subscriptionId";

/// Limits and pacing of subscriptions (part of [`crate::EngineConfig`]).
#[derive(Debug, Clone)]
pub struct SubscriptionConfig {
    /// Subscriptions (resource URIs) one session may hold.
    pub per_session: usize,
    /// Subscriptions held over all sessions of this server.
    pub per_server: usize,
    /// At most one notification per subscription in this interval.
    pub min_interval: Duration,
    /// A sampler samples at most this often (more rarely when a sample is
    /// costly: 25 times its cost, so at most 4% of a core).
    pub sample_every: Duration,
}

impl Default for SubscriptionConfig {
    fn default() -> Self {
        SubscriptionConfig {
            per_session: 32,
            per_server: 10_000,
            min_interval: Duration::from_secs(1),
            sample_every: Duration::from_millis(250),
        }
    }
}

/// A resource's sampler: takes one sample and says whether it is news
/// (the server's own rules decide what a change worth a notification is).
pub type Observe = Box<dyn FnMut() -> bool + Send>;

/// Where a session hears that resources it subscribed to changed.
#[derive(Default)]
pub(crate) struct Mailbox {
    waker: AtomicWaker,
    changed: Mutex<Vec<Arc<str>>>,
}

impl Mailbox {
    fn post(&self, uri: &Arc<str>) {
        let mut c = self.changed.lock().unwrap_or_else(|e| e.into_inner());
        if !c.iter().any(|u| u == uri) {
            c.push(uri.clone());
        }
        drop(c);
        self.waker.wake();
    }
    fn take(&self) -> Vec<Arc<str>> {
        std::mem::take(&mut *self.changed.lock().unwrap_or_else(|e| e.into_inner()))
    }
    fn has_news(&self) -> bool {
        !self
            .changed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }
}

struct Topic {
    subscribers: Vec<Arc<Mailbox>>,
    sampler: Option<(tokio::task::JoinHandle<()>, Arc<Notify>)>,
}

/// Every subscription of an engine, and the samplers behind them.
pub struct Hub {
    config: SubscriptionConfig,
    topics: Mutex<HashMap<Arc<str>, Topic>>,
}

fn limit(which: &str, max: usize) -> RpcError {
    RpcError::new(
        jsonrpc::LIMIT_REACHED,
        format!("too many subscriptions {which} (max {max}); unsubscribe first"),
    )
    .with_data(
        json!({"limit": format!("max-subscriptions-{}", which.replace(' ', "-")), "max": max}),
    )
}

impl Hub {
    pub fn new(config: SubscriptionConfig) -> Arc<Hub> {
        Arc::new(Hub {
            config,
            topics: Mutex::new(HashMap::new()),
        })
    }

    pub fn config(&self) -> &SubscriptionConfig {
        &self.config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Topic>> {
        self.topics.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Subscriptions held now, over every session.
    pub fn subscriptions(&self) -> usize {
        self.lock().values().map(|t| t.subscribers.len()).sum()
    }

    /// Samplers running now (one per watched resource with subscribers).
    pub fn samplers(&self) -> usize {
        self.lock().values().filter(|t| t.sampler.is_some()).count()
    }

    fn subscribe(
        self: &Arc<Self>,
        uri: &Arc<str>,
        mailbox: &Arc<Mailbox>,
        watch: impl FnOnce() -> Option<Observe>,
    ) -> Result<(), RpcError> {
        let mut topics = self.lock();
        let held: usize = topics.values().map(|t| t.subscribers.len()).sum();
        if held >= self.config.per_server {
            return Err(limit("on this server", self.config.per_server));
        }
        let topic = topics.entry(uri.clone()).or_insert_with(|| Topic {
            subscribers: Vec::new(),
            sampler: watch().and_then(|observe| self.start_sampler(uri.clone(), observe)),
        });
        topic.subscribers.push(mailbox.clone());
        Ok(())
    }

    fn unsubscribe(&self, uri: &Arc<str>, mailbox: &Arc<Mailbox>) {
        let mut topics = self.lock();
        let Some(topic) = topics.get_mut(uri) else {
            return;
        };
        if let Some(i) = topic
            .subscribers
            .iter()
            .position(|m| Arc::ptr_eq(m, mailbox))
        {
            topic.subscribers.swap_remove(i);
        }
        if topic.subscribers.is_empty() {
            if let Some((task, _)) = topics.remove(uri).and_then(|t| t.sampler) {
                task.abort();
            }
        }
    }

    /// `uri` changed: a watched resource samples now (its rules decide);
    /// any other is posted to its subscribers as is.
    pub fn updated(&self, uri: &str) {
        let topics = self.lock();
        let Some((key, topic)) = topics.get_key_value(uri) else {
            return;
        };
        match &topic.sampler {
            Some((_, poke)) => poke.notify_one(),
            None => topic.subscribers.iter().for_each(|m| m.post(key)),
        }
    }

    fn post(&self, uri: &Arc<str>) {
        if let Some(t) = self.lock().get(uri) {
            t.subscribers.iter().for_each(|m| m.post(uri));
        }
    }

    fn start_sampler(
        self: &Arc<Self>,
        uri: Arc<str>,
        mut observe: Observe,
    ) -> Option<(tokio::task::JoinHandle<()>, Arc<Notify>)> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let poke = Arc::new(Notify::new());
        let hub = Arc::downgrade(self);
        let every = self.config.sample_every;
        let woken = poke.clone();
        let task = runtime.spawn(async move {
            loop {
                // The cost is the sample's own time, not the wait for a
                // blocking thread (a busy runtime would stretch the period).
                let Ok((news, cost, back)) = tokio::task::spawn_blocking(move || {
                    let started = Instant::now();
                    let news = observe();
                    (news, started.elapsed(), observe)
                })
                .await
                else {
                    return;
                };
                observe = back;
                if news {
                    match hub.upgrade() {
                        Some(h) => h.post(&uri),
                        None => return,
                    }
                }
                let wait = (cost * 25).clamp(every, Duration::from_secs(30));
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = woken.notified() => {}
                }
            }
        });
        Some((task, poke))
    }
}

/// One subscription of a session: a URI, from `resources/subscribe` (no
/// id) or from the `subscriptions/listen` request with that id.
struct Entry {
    uri: Arc<str>,
    listen: Option<Box<RawValue>>,
    last_sent: Option<Instant>,
    due: bool,
}

/// A session's subscriptions, allocated on its first.
pub(crate) struct SessionSubs {
    hub: Arc<Hub>,
    mailbox: Arc<Mailbox>,
    entries: Vec<Entry>,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl SessionSubs {
    pub(crate) fn new(hub: Arc<Hub>) -> SessionSubs {
        SessionSubs {
            hub,
            mailbox: Arc::default(),
            entries: Vec::new(),
            timer: None,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Subscriptions held (one per URI and listen request).
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the `subscriptions/listen` request `id` holds subscriptions.
    pub(crate) fn has_listen(&self, id: &str) -> bool {
        self.entries
            .iter()
            .any(|e| e.listen.as_ref().is_some_and(|l| l.get() == id))
    }

    /// Adds a subscription to `uri` (`listen`: the listen request's id).
    /// A `resources/subscribe` repeated for the same URI is one subscription.
    pub(crate) fn add(
        &mut self,
        uri: &str,
        listen: Option<&RawValue>,
        watch: impl FnOnce() -> Option<Observe>,
    ) -> Result<(), RpcError> {
        if listen.is_none()
            && self
                .entries
                .iter()
                .any(|e| e.listen.is_none() && &*e.uri == uri)
        {
            return Ok(());
        }
        let max = self.hub.config.per_session;
        if self.entries.len() >= max {
            return Err(limit("on this session", max));
        }
        let uri: Arc<str> = Arc::from(uri);
        self.hub.subscribe(&uri, &self.mailbox, watch)?;
        self.entries.push(Entry {
            uri,
            listen: listen.map(ToOwned::to_owned),
            last_sent: None,
            due: false,
        });
        Ok(())
    }

    fn remove_where(&mut self, pred: impl Fn(&Entry) -> bool) -> usize {
        let (gone, kept): (Vec<Entry>, Vec<Entry>) = self.entries.drain(..).partition(pred);
        self.entries = kept;
        for e in &gone {
            self.hub.unsubscribe(&e.uri, &self.mailbox);
        }
        gone.len()
    }

    /// `resources/unsubscribe`.
    pub(crate) fn remove_uri(&mut self, uri: &str) {
        self.remove_where(|e| e.listen.is_none() && &*e.uri == uri);
    }

    /// Ends the subscriptions of the `subscriptions/listen` request `id`;
    /// false when it holds none.
    pub(crate) fn remove_listen(&mut self, id: &str) -> bool {
        self.remove_where(|e| e.listen.as_ref().is_some_and(|l| l.get() == id)) > 0
    }

    /// Ready when a subscribed resource changed or a coalesced notification is due.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.mailbox.waker.register(cx.waker());
        if self.mailbox.has_news() {
            return Poll::Ready(());
        }
        if let Some(t) = &mut self.timer {
            if t.as_mut().poll(cx).is_ready() {
                self.timer = None;
                return Poll::Ready(());
            }
        }
        Poll::Pending
    }

    /// Writes the notifications due now; the rest wait for the interval.
    pub(crate) fn deliver(&mut self, out: &mut Vec<u8>) {
        for uri in self.mailbox.take() {
            for e in self.entries.iter_mut().filter(|e| e.uri == uri) {
                e.due = true;
            }
        }
        let now = Instant::now();
        let every = self.hub.config.min_interval;
        let mut next: Option<Instant> = None;
        for e in self.entries.iter_mut().filter(|e| e.due) {
            match e.last_sent.map(|t| t + every).filter(|at| *at > now) {
                Some(at) => next = Some(next.map_or(at, |n| n.min(at))),
                None => {
                    e.due = false;
                    e.last_sent = Some(now);
                    let params = match &e.listen {
                        None => json!({"uri": &*e.uri}),
                        Some(id) => json!({"uri": &*e.uri, "_meta": {SUBSCRIPTION_ID_KEY: id}}),
                    };
                    jsonrpc::write_notification(out, "notifications/resources/updated", &params);
                }
            }
        }
        self.timer = next.map(|at| Box::pin(tokio::time::sleep_until(at.into())));
    }
}

impl Drop for SessionSubs {
    fn drop(&mut self) {
        for e in &self.entries {
            self.hub.unsubscribe(&e.uri, &self.mailbox);
        }
    }
}
