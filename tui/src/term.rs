//! The terminal loop: sample once per interval, redraw only when something
//! changed (a sample, a key, a resize), and always give the terminal back.

use crate::app::{Action, App, Config};
use crate::render;
use crate::source::Source;
use anyhow::Context;
use ratatui::crossterm::event::{self, Event, KeyEventKind};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    /// Time between samples.
    pub interval: Duration,
    pub config: Config,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            interval: Duration::from_secs(1),
            config: Config::default(),
        }
    }
}

/// Runs the dashboard until the user quits. `tick` is called after every
/// sample (e.g. `headroom up` checks on its server there); returning an
/// error from it ends the dashboard with that error.
pub fn run(
    source: &mut dyn Source,
    options: RunOptions,
    mut tick: impl FnMut(&mut App) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    if !std::io::stdout().is_terminal() {
        anyhow::bail!(
            "headroom top needs a terminal on stdout (use `headroom status --json` for scripts)"
        );
    }
    let mut terminal = ratatui::try_init().context("cannot set up the terminal")?;
    let result = event_loop(&mut terminal, source, options, &mut tick);
    ratatui::restore();
    result
}

fn event_loop(
    terminal: &mut ratatui::DefaultTerminal,
    source: &mut dyn Source,
    options: RunOptions,
    tick: &mut dyn FnMut(&mut App) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let interval = options.interval.max(Duration::from_millis(50));
    let mut app = App::new(source.describe(), options.config);
    app.apply(source.sample());
    tick(&mut app)?;
    let mut next = Instant::now() + interval;
    let mut dirty = true;
    loop {
        if dirty {
            terminal.draw(|f| render::draw(f, &app))?;
            dirty = false;
        }
        let wait = next.saturating_duration_since(Instant::now());
        if event::poll(wait)? {
            match event::read()? {
                Event::Key(k) if k.kind == KeyEventKind::Press => match app.on_key(k) {
                    Action::Quit => return Ok(()),
                    Action::Redraw => dirty = true,
                    Action::Nothing => {}
                },
                Event::Resize(..) => dirty = true,
                _ => {}
            }
        }
        let now = Instant::now();
        if now >= next {
            // Fixed cadence; after a stall (suspended, slow sample) skip ahead, don't burst.
            next += interval;
            if next <= now {
                next = now + interval;
            }
            if !app.paused {
                app.apply(source.sample());
                tick(&mut app)?;
                dirty = true;
            }
        }
    }
}
