//! The dashboard's state and how it changes: fed samples and key presses,
//! never touching a terminal, so every rule here is unit-tested.

use crate::history::History;
use crate::source::{Sample, SourceError};
use crate::{format, Level};
use headroom_core::{time_to_limit, Prediction, Snapshot};
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use std::collections::{BTreeMap, VecDeque};

/// Tunables of the state (not of the model).
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Samples kept per sparkline (300 at 1 refresh/s: the last five minutes).
    pub history: usize,
    /// The connection growth rate is measured over this many milliseconds.
    pub rate_window_ms: u64,
    /// Lines kept in the event log.
    pub max_events: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            history: 300,
            rate_window_ms: 10_000,
            max_events: 200,
        }
    }
}

/// The panels, in the order Tab walks them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Panel {
    Constraints,
    Queues,
    Sockets,
    Errors,
    History,
    Events,
}

impl Panel {
    pub const ALL: [Panel; 6] = [
        Panel::Constraints,
        Panel::Queues,
        Panel::Sockets,
        Panel::Errors,
        Panel::History,
        Panel::Events,
    ];

    fn index(self) -> usize {
        Panel::ALL.iter().position(|p| *p == self).unwrap_or(0)
    }

    pub fn next(self) -> Panel {
        Panel::ALL[(self.index() + 1) % Panel::ALL.len()]
    }

    pub fn prev(self) -> Panel {
        Panel::ALL[(self.index() + Panel::ALL.len() - 1) % Panel::ALL.len()]
    }
}

/// What an event-log line is about (it picks the colour).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Info,
    FdError,
    Binding,
    QueueFull,
    Threshold,
    Source,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Milliseconds since the first sample.
    pub at_ms: u64,
    pub kind: EventKind,
    pub text: String,
}

/// Where the connection count is heading.
#[derive(Debug, Clone, PartialEq)]
pub enum Outlook {
    /// Fewer than two samples in the rate window.
    Measuring,
    /// Not growing.
    Stable { rate: f64 },
    /// The binding constraint admits no more connections now.
    Reached { constraint: String },
    /// Growing: the binding constraint runs out in `seconds`.
    Limit {
        constraint: String,
        seconds: f64,
        rate: f64,
    },
}

impl Outlook {
    /// One line: `nofile in 42 s at +310 conn/s`, or `stable`.
    pub fn text(&self) -> String {
        match self {
            Outlook::Measuring => "measuring rate…".to_string(),
            Outlook::Stable { .. } => "stable".to_string(),
            Outlook::Reached { constraint } => format!("{constraint} reached"),
            Outlook::Limit {
                constraint,
                seconds,
                rate,
            } => format!(
                "{constraint} in {} at {}",
                format::duration(*seconds),
                format::rate(*rate)
            ),
        }
    }
}

/// What the runner should do after a key press.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Nothing,
    Redraw,
    Quit,
}

/// All the dashboard knows.
#[derive(Debug)]
pub struct App {
    pub config: Config,
    /// Data source, for the title bar.
    pub source: String,
    pub latest: Option<Sample>,
    /// Connections held by the target, one value per sample.
    pub connections: History,
    /// Deepest accept queue over the listeners (the peak, when the probe keeps one).
    pub queue_depth: History,
    pub fds: History,
    pub events: VecDeque<Event>,
    /// Last error from the source, while it lasts.
    pub error: Option<String>,
    pub paused: bool,
    pub focus: Panel,
    pub show_help: bool,
    /// Constraint shown in the detail lines (index into the prediction's list).
    pub selected: usize,
    /// First visible event (scrolling the log).
    pub event_scroll: usize,
    pub samples: u64,
    started_ms: Option<u64>,
    now_ms: u64,
    rate_window: VecDeque<(u64, u64)>,
    fd_error_counts: BTreeMap<(u32, String, String), u64>,
    queue_full: BTreeMap<String, u64>,
    levels: BTreeMap<String, Level>,
}

impl App {
    pub fn new(source: impl Into<String>, config: Config) -> App {
        App {
            config,
            source: source.into(),
            latest: None,
            connections: History::new(config.history),
            queue_depth: History::new(config.history),
            fds: History::new(config.history),
            events: VecDeque::new(),
            error: None,
            paused: false,
            focus: Panel::Constraints,
            show_help: false,
            selected: 0,
            event_scroll: 0,
            samples: 0,
            started_ms: None,
            now_ms: 0,
            rate_window: VecDeque::new(),
            fd_error_counts: BTreeMap::new(),
            queue_full: BTreeMap::new(),
            levels: BTreeMap::new(),
        }
    }

    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.latest.as_ref().map(|s| &s.snapshot)
    }

    pub fn prediction(&self) -> Option<&Prediction> {
        self.latest.as_ref().map(|s| &s.prediction)
    }

    /// Milliseconds since the first sample, as of the latest one.
    pub fn elapsed_ms(&self) -> u64 {
        self.now_ms
            .saturating_sub(self.started_ms.unwrap_or(self.now_ms))
    }

    /// Feeds the result of one refresh.
    pub fn apply(&mut self, result: Result<Sample, SourceError>) {
        match result {
            Ok(sample) => self.update(sample),
            Err(e) => self.source_error(e.to_string()),
        }
    }

    /// A source failure: logged once (not once per refresh), shown until data returns.
    pub fn source_error(&mut self, message: String) {
        if self.error.as_deref() != Some(message.as_str()) {
            self.log(EventKind::Source, message.clone());
            self.error = Some(message);
        }
    }

    /// Takes in one sample: histories, rate, and events for what changed.
    pub fn update(&mut self, sample: Sample) {
        let snap = &sample.snapshot;
        let pred = &sample.prediction;
        let t = snap.taken_at_ms;
        // Clocks can step back; time in the log never does.
        self.now_ms = t.max(self.now_ms);
        if self.started_ms.is_none() {
            self.started_ms = Some(self.now_ms);
        }
        if self.error.take().is_some() {
            self.log(EventKind::Source, "source back".to_string());
        }

        let conns = pred.connections;
        self.connections.push(conns);
        self.fds.push(snap.open_fds());
        let depth = snap
            .listeners
            .iter()
            .map(|l| l.accept_queue_peak.max(l.accept_queue_depth))
            .max()
            .unwrap_or(0);
        self.queue_depth.push(depth);

        self.rate_window.push_back((self.now_ms, conns));
        let horizon = self.now_ms.saturating_sub(self.config.rate_window_ms);
        while self
            .rate_window
            .front()
            .is_some_and(|(at, _)| *at < horizon)
        {
            self.rate_window.pop_front();
        }

        let previous = self.latest.take();
        self.detect_events(previous.as_ref(), &sample);
        if self.selected >= pred.constraints.len() {
            self.selected = 0;
        }
        self.latest = Some(sample);
        self.samples += 1;
    }

    fn detect_events(&mut self, previous: Option<&Sample>, now: &Sample) {
        let snap = &now.snapshot;
        let pred = &now.prediction;
        match previous {
            None => {
                if !pred.binding.is_empty() {
                    self.log(
                        EventKind::Info,
                        format!(
                            "binding limit {}, predicted max {} connections",
                            pred.binding,
                            format::count(pred.predicted_max_connections)
                        ),
                    );
                }
            }
            Some(prev) => {
                let was = &prev.prediction.binding;
                if *was != pred.binding && !pred.binding.is_empty() {
                    self.log(
                        EventKind::Binding,
                        format!("binding limit {was} → {}", pred.binding),
                    );
                }
                let before = prev.snapshot.netstat.listen_overflows;
                let after = snap.netstat.listen_overflows;
                if after > before {
                    self.log(
                        EventKind::QueueFull,
                        format!("ListenOverflows +{} (namespace)", after - before),
                    );
                }
            }
        }

        for e in &snap.fd_errors {
            let key = (e.pid, e.syscall.clone(), e.errno.clone());
            let old = self.fd_error_counts.insert(key, e.count).unwrap_or(0);
            if e.count > old {
                self.log(
                    EventKind::FdError,
                    format!(
                        "{} ×{} in {} (pid {})",
                        e.errno,
                        e.count - old,
                        e.syscall,
                        e.pid
                    ),
                );
            }
        }

        for l in &snap.listeners {
            match l.queue_full_events {
                Some(n) => {
                    let old = self.queue_full.insert(l.address.clone(), n);
                    // The first reading of a counter is history, not news.
                    if let Some(old) = old.filter(|old| n > *old) {
                        self.log(
                            EventKind::QueueFull,
                            format!("accept queue full ×{} on {}", n - old, l.address),
                        );
                    }
                }
                None => {
                    // Polling sees no counter: report a queue found at its limit.
                    if l.accept_queue_limit > 0 && l.accept_queue_depth >= l.accept_queue_limit {
                        self.log(
                            EventKind::QueueFull,
                            format!(
                                "accept queue full on {} ({}/{})",
                                l.address, l.accept_queue_depth, l.accept_queue_limit
                            ),
                        );
                    }
                }
            }
        }

        for c in &pred.constraints {
            let level = Level::of(c.utilisation());
            let old = self.levels.insert(c.name.clone(), level);
            if level > old.unwrap_or(Level::Ok) && level != Level::Ok {
                self.log(
                    EventKind::Threshold,
                    format!(
                        "{} at {:.0}% ({}/{} {})",
                        c.name,
                        (c.utilisation() * 100.0).floor(),
                        format::amount(c.limit - c.headroom, &c.unit),
                        format::amount(c.limit, &c.unit),
                        c.unit
                    ),
                );
            }
        }
    }

    fn log(&mut self, kind: EventKind, text: String) {
        let at_ms = self.elapsed_ms();
        self.events.push_front(Event { at_ms, kind, text });
        self.events.truncate(self.config.max_events);
    }

    /// Connections per second over the rate window; `None` below two samples.
    pub fn rate(&self) -> Option<f64> {
        let (t0, c0) = *self.rate_window.front()?;
        let (t1, c1) = *self.rate_window.back()?;
        if t1 <= t0 {
            return None;
        }
        Some((c1 as f64 - c0 as f64) * 1000.0 / (t1 - t0) as f64)
    }

    /// Time to the binding limit at the current rate.
    pub fn outlook(&self) -> Outlook {
        let Some(binding) = self.prediction().and_then(|p| p.binding_constraint()) else {
            return Outlook::Measuring;
        };
        if binding.headroom_connections == 0 {
            return Outlook::Reached {
                constraint: binding.name.clone(),
            };
        }
        let Some(rate) = self.rate() else {
            return Outlook::Measuring;
        };
        match time_to_limit(binding.headroom_connections, rate) {
            Some(seconds) => Outlook::Limit {
                constraint: binding.name.clone(),
                seconds,
                rate,
            },
            None => Outlook::Stable { rate },
        }
    }

    /// Handles one key; the runner redraws or quits on the answer.
    pub fn on_key(&mut self, key: KeyEvent) -> Action {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        match key.code {
            KeyCode::Char('c') if ctrl => return Action::Quit,
            KeyCode::Char('q') => return Action::Quit,
            KeyCode::Esc if self.show_help => self.show_help = false,
            KeyCode::Esc => return Action::Quit,
            KeyCode::Char('?') | KeyCode::Char('h') | KeyCode::F(1) => {
                self.show_help = !self.show_help
            }
            KeyCode::Char('p') | KeyCode::Char(' ') => self.paused = !self.paused,
            KeyCode::Tab | KeyCode::Right => self.focus = self.focus.next(),
            KeyCode::BackTab | KeyCode::Left => self.focus = self.focus.prev(),
            KeyCode::Down => self.down(),
            KeyCode::Up => self.up(),
            _ => return Action::Nothing,
        }
        Action::Redraw
    }

    /// Down moves within the constraints (which one the detail lines explain)
    /// and the event log; elsewhere it moves to the next panel.
    fn down(&mut self) {
        let n = self.prediction().map_or(0, |p| p.constraints.len());
        match self.focus {
            Panel::Constraints if self.selected + 1 < n => self.selected += 1,
            Panel::Events if self.event_scroll + 1 < self.events.len() => self.event_scroll += 1,
            Panel::Constraints | Panel::Events => {}
            _ => self.focus = self.focus.next(),
        }
    }

    fn up(&mut self) {
        match self.focus {
            Panel::Constraints => self.selected = self.selected.saturating_sub(1),
            Panel::Events => self.event_scroll = self.event_scroll.saturating_sub(1),
            _ => self.focus = self.focus.prev(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::{sample, sample_of, snapshot};
    use headroom_core::FdError;

    fn key(c: KeyCode) -> KeyEvent {
        KeyEvent::new(c, KeyModifiers::NONE)
    }

    #[test]
    fn rate_and_time_to_limit_from_growth() {
        let mut app = App::new("test", Config::default());
        assert_eq!(app.outlook(), Outlook::Measuring);
        // +310 connections per second for 5 s.
        for i in 0..=5u64 {
            app.update(sample(1_000_000 + i * 1000, 1000 + 310 * i));
        }
        assert_eq!(app.rate(), Some(310.0));
        let p = app.prediction().unwrap();
        assert_eq!(p.binding, "nofile");
        // 2550 held, 2560 fds open: 20000 - 2560 - 32 = 17408 more.
        let left = p.binding_constraint().unwrap().headroom_connections;
        assert_eq!(left, 17408);
        match app.outlook() {
            Outlook::Limit {
                constraint,
                seconds,
                rate,
            } => {
                assert_eq!(constraint, "nofile");
                assert_eq!(rate, 310.0);
                assert!((seconds - 17408.0 / 310.0).abs() < 1e-9);
            }
            o => panic!("expected a limit, got {o:?}"),
        }
        assert_eq!(app.outlook().text(), "nofile in 56 s at +310 conn/s");
        assert_eq!(app.connections.tail(3), vec![1930, 2240, 2550]);
        assert_eq!(app.fds.last(), Some(2560));
    }

    #[test]
    fn rate_window_forgets_old_growth() {
        let mut app = App::new(
            "test",
            Config {
                rate_window_ms: 3000,
                ..Config::default()
            },
        );
        app.update(sample(0, 100));
        app.update(sample(1000, 5000));
        for t in 2..=6u64 {
            app.update(sample(t * 1000, 5000));
        }
        // The jump at t=1 s left the 3 s window: flat since.
        assert_eq!(app.rate(), Some(0.0));
        assert_eq!(app.outlook(), Outlook::Stable { rate: 0.0 });
        assert_eq!(app.outlook().text(), "stable");
        app.update(sample(7000, 4700));
        assert_eq!(app.rate(), Some(-100.0));
        assert_eq!(app.outlook().text(), "stable");
    }

    #[test]
    fn logs_fd_errors_as_deltas() {
        let mut app = App::new("test", Config::default());
        let err = |count| FdError {
            pid: 4242,
            syscall: "accept4".into(),
            errno: "EMFILE".into(),
            count,
        };
        let mut s = snapshot(0, 10);
        s.fd_errors = vec![err(3)];
        app.update(sample_of(s.clone()));
        s.taken_at_ms = 2000;
        s.fd_errors = vec![err(10)];
        app.update(sample_of(s.clone()));
        s.taken_at_ms = 3000;
        app.update(sample_of(s));
        let fd: Vec<_> = app
            .events
            .iter()
            .filter(|e| e.kind == EventKind::FdError)
            .map(|e| (e.at_ms, e.text.as_str()))
            .collect();
        // Newest first; the unchanged third sample logs nothing.
        assert_eq!(
            fd,
            vec![
                (2000, "EMFILE ×7 in accept4 (pid 4242)"),
                (0, "EMFILE ×3 in accept4 (pid 4242)")
            ]
        );
    }

    #[test]
    fn logs_binding_change_thresholds_and_queue_full() {
        let mut app = App::new("test", Config::default());
        app.update(sample(0, 100));
        assert_eq!(app.events.len(), 1);
        assert_eq!(
            app.events[0].text,
            "binding limit nofile, predicted max 19958 connections"
        );

        // 14,500 fds of 20,000: past 70%.
        app.update(sample(1000, 14_490));
        assert_eq!(app.events[0].kind, EventKind::Threshold);
        assert_eq!(app.events[0].text, "nofile at 72% (14532/20000 fds)");
        // Past 90%: logged again; staying there is not news.
        app.update(sample(2000, 18_500));
        app.update(sample(3000, 18_600));
        let thresholds = app
            .events
            .iter()
            .filter(|e| e.kind == EventKind::Threshold)
            .count();
        assert_eq!(thresholds, 2);

        // Memory runs short: the binding limit moves.
        let mut s = snapshot(4000, 18_600);
        s.system.mem_available_bytes = 1 << 20;
        app.update(sample_of(s));
        assert!(app
            .events
            .iter()
            .any(|e| e.kind == EventKind::Binding && e.text == "binding limit nofile → memory"));

        // eBPF queue-full counter: the first reading is history, growth is news.
        let mut s = snapshot(5000, 100);
        s.listeners[0].queue_full_events = Some(4);
        app.update(sample_of(s.clone()));
        assert!(!app.events.iter().any(|e| e.kind == EventKind::QueueFull));
        s.taken_at_ms = 6000;
        s.listeners[0].queue_full_events = Some(9);
        s.netstat.listen_overflows = 5;
        app.update(sample_of(s));
        let q: Vec<_> = app
            .events
            .iter()
            .filter(|e| e.kind == EventKind::QueueFull)
            .map(|e| e.text.as_str())
            .collect();
        assert_eq!(
            q,
            vec![
                "accept queue full ×5 on 127.0.0.1:7878",
                "ListenOverflows +5 (namespace)"
            ]
        );
    }

    #[test]
    fn source_errors_are_logged_once_and_cleared() {
        let mut app = App::new("test", Config::default());
        app.update(sample(0, 10));
        for _ in 0..3 {
            app.apply(Err(SourceError::TargetGone("pid 4242 exited".into())));
        }
        assert_eq!(app.error.as_deref(), Some("target gone: pid 4242 exited"));
        assert_eq!(
            app.events
                .iter()
                .filter(|e| e.kind == EventKind::Source)
                .count(),
            1
        );
        // The last good numbers stay on screen.
        assert_eq!(app.prediction().unwrap().connections, 10);
        app.update(sample(1000, 10));
        assert_eq!(app.error, None);
        assert_eq!(app.events[0].text, "source back");
    }

    #[test]
    fn keys_quit_pause_help_and_move_focus() {
        let mut app = App::new("test", Config::default());
        app.update(sample(0, 10));
        assert_eq!(app.on_key(key(KeyCode::Char('p'))), Action::Redraw);
        assert!(app.paused);
        app.on_key(key(KeyCode::Char('p')));
        assert!(!app.paused);

        assert_eq!(app.focus, Panel::Constraints);
        app.on_key(key(KeyCode::Tab));
        assert_eq!(app.focus, Panel::Queues);
        app.on_key(key(KeyCode::Right));
        assert_eq!(app.focus, Panel::Sockets);
        app.on_key(key(KeyCode::Down));
        assert_eq!(app.focus, Panel::Errors);
        app.on_key(key(KeyCode::BackTab));
        app.on_key(key(KeyCode::Left));
        app.on_key(key(KeyCode::Left));
        assert_eq!(app.focus, Panel::Constraints);
        // Wraps around.
        app.on_key(key(KeyCode::Left));
        assert_eq!(app.focus, Panel::Events);

        // In the constraints panel, down picks the next constraint.
        app.on_key(key(KeyCode::Tab));
        assert_eq!(app.focus, Panel::Constraints);
        app.on_key(key(KeyCode::Down));
        assert_eq!(app.selected, 1);
        for _ in 0..10 {
            app.on_key(key(KeyCode::Down));
        }
        assert_eq!(
            app.selected,
            app.prediction().unwrap().constraints.len() - 1
        );

        app.on_key(key(KeyCode::Char('?')));
        assert!(app.show_help);
        // Esc closes help first, then quits.
        assert_eq!(app.on_key(key(KeyCode::Esc)), Action::Redraw);
        assert!(!app.show_help);
        assert_eq!(app.on_key(key(KeyCode::Esc)), Action::Quit);
        assert_eq!(app.on_key(key(KeyCode::Char('x'))), Action::Nothing);
        assert_eq!(app.on_key(key(KeyCode::Char('q'))), Action::Quit);
        assert_eq!(
            app.on_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Action::Quit
        );
    }
}
