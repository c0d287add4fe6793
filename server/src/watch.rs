//! What headroom counts as news about a capacity resource (this server's,
//! or a service's on a port): the change rules a subscribed resource's
//! sampler applies before the MCP library notifies its subscribers. The
//! binding constraint changed, the predicted maximum moved by more than a
//! fraction, the binding limit's utilisation crossed 70% or 90% (either
//! way), the time to the limit dropped below a threshold, or the service's
//! processes changed. Anything else is not news.

use headroom_core::Prediction;
use headroom_mcp::subscriptions::Observe;
use std::time::{Duration, Instant};

/// What counts as a change worth a notification.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeRules {
    /// The predicted maximum moved by more than this fraction of its value
    /// at the last notification.
    pub max_moved_fraction: f64,
    /// Utilisation thresholds of the binding limit, crossed either way.
    pub thresholds: Vec<f64>,
    /// Going back under a threshold counts once utilisation is this far below it.
    pub hysteresis: f64,
    /// The time to the limit (at the connection growth rate over the last
    /// `rate_window`) dropped below this.
    pub time_to_limit_below: Duration,
    /// The growth rate is measured over this much sampling (at least half
    /// of it), so one connection between two quick samples is not a rate.
    pub rate_window: Duration,
}

impl Default for ChangeRules {
    fn default() -> Self {
        ChangeRules {
            max_moved_fraction: 0.10,
            thresholds: vec![0.70, 0.90],
            hysteresis: 0.02,
            time_to_limit_below: Duration::from_secs(60),
            rate_window: Duration::from_secs(5),
        }
    }
}

/// What a sampler reads of a resource, the input of the [`ChangeRules`].
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub binding: String,
    pub predicted_max: u64,
    pub connections: u64,
    /// Connections the binding constraint still admits.
    pub headroom_connections: u64,
    /// Fraction of the binding limit in use (0.0..=1.0).
    pub utilisation: f64,
    /// The processes of the service, sorted.
    pub processes: Vec<u32>,
}

impl Observation {
    pub fn from_prediction(p: &Prediction, mut processes: Vec<u32>) -> Observation {
        processes.sort_unstable();
        processes.dedup();
        let c = p.binding_constraint();
        Observation {
            binding: p.binding.clone(),
            predicted_max: p.predicted_max_connections,
            connections: p.connections,
            headroom_connections: c.map_or(0, |c| c.headroom_connections),
            utilisation: c.map_or(0.0, |c| c.utilisation()),
            processes,
        }
    }
}

/// Why a sample is news.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Binding,
    PredictedMax,
    /// Utilisation crossed a threshold (either way).
    Crossed,
    TimeToLimit,
    Processes,
}

/// The [`ChangeRules`] applied to a resource's successive samples; `None`
/// is a sample that found nothing (the service is gone).
#[derive(Debug)]
pub struct Detector {
    rules: ChangeRules,
    /// The state last notified (or the first sample): what changes are measured from.
    reference: Option<Option<Observation>>,
    band: usize,
    /// (when, connections) of the samples within the rate window.
    history: std::collections::VecDeque<(Instant, u64)>,
    ttl_below: bool,
}

impl Detector {
    pub fn new(rules: ChangeRules) -> Detector {
        Detector {
            rules,
            reference: None,
            band: 0,
            history: Default::default(),
            ttl_below: false,
        }
    }

    /// Threshold band of `u`, moving down only past the hysteresis.
    fn band_of(&self, u: f64) -> usize {
        let up = self.rules.thresholds.iter().filter(|t| u >= **t).count();
        if up >= self.band {
            return up;
        }
        let h = self.rules.hysteresis;
        self.rules
            .thresholds
            .iter()
            .filter(|t| u >= **t - h)
            .count()
    }

    /// Feeds one sample taken at `at`; the change, when it is news.
    pub fn observe_at(&mut self, obs: Option<Observation>, at: Instant) -> Option<Change> {
        let Some(reference) = self.reference.clone() else {
            self.band = obs.as_ref().map_or(0, |o| self.band_of(o.utilisation));
            self.history
                .extend(obs.as_ref().map(|o| (at, o.connections)));
            self.reference = Some(obs);
            return None;
        };
        let Some(o) = obs else {
            self.history.clear();
            self.ttl_below = false;
            if reference.is_some() {
                self.reference = Some(None);
                return Some(Change::Processes);
            }
            return None;
        };
        // Time to the limit at the growth rate over the window.
        let window = self.rules.rate_window;
        self.history.push_back((at, o.connections));
        while self.history.len() > 1 && at.saturating_duration_since(self.history[0].0) > window {
            self.history.pop_front();
        }
        let (t0, c0) = self.history[0];
        let dt = at.saturating_duration_since(t0);
        let ttl_below = dt >= window / 2 && o.connections > c0 && {
            let rate = (o.connections - c0) as f64 / dt.as_secs_f64();
            (o.headroom_connections as f64 / rate) < self.rules.time_to_limit_below.as_secs_f64()
        };
        let ttl_dropped = ttl_below && !self.ttl_below;
        self.ttl_below = ttl_below;
        let band = self.band_of(o.utilisation);
        let change = match &reference {
            None => Some(Change::Processes),
            Some(r) if r.processes != o.processes => Some(Change::Processes),
            Some(r) if r.binding != o.binding => Some(Change::Binding),
            _ if band != self.band => Some(Change::Crossed),
            Some(r)
                if (o.predicted_max as f64 - r.predicted_max as f64).abs()
                    > self.rules.max_moved_fraction * r.predicted_max.max(1) as f64 =>
            {
                Some(Change::PredictedMax)
            }
            _ if ttl_dropped => Some(Change::TimeToLimit),
            _ => None,
        };
        if change.is_some() {
            self.band = band;
            self.reference = Some(Some(o));
        }
        change
    }
}

/// A sampler for the MCP library: `sample` reads the resource (`None`:
/// nothing there now), the default [`ChangeRules`] decide what is news.
pub fn sampler(mut sample: impl FnMut() -> Option<Observation> + Send + 'static) -> Observe {
    let mut detector = Detector::new(ChangeRules::default());
    Box::new(move || {
        let obs = sample();
        detector.observe_at(obs, Instant::now()).is_some()
    })
}

#[cfg(test)]
#[path = "watch_tests.rs"]
mod tests;
