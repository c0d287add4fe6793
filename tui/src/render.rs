//! Drawing: a pure function of the [`App`] state onto a ratatui frame. No
//! state lives here, so a TestBackend buffer is the whole story.

use crate::app::{App, EventKind, Outlook, Panel};
use crate::view::listener_rows;
use crate::{format, Level};
use headroom_core::{Constraint, Source as DataSource, TcpState};
use ratatui::layout::{Constraint as Size, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Row, Sparkline, Table, Wrap};
use ratatui::Frame;

/// Below this the dashboard says the terminal is too small instead of drawing.
pub const MIN_WIDTH: u16 = 80;
pub const MIN_HEIGHT: u16 = 24;

/// Colour of a level: green below 70%, yellow to 90%, red above.
pub fn level_color(level: Level) -> Color {
    match level {
        Level::Ok => Color::Green,
        Level::Warn => Color::Yellow,
        Level::Critical => Color::Red,
    }
}

pub fn draw(frame: &mut Frame, app: &App) {
    let area = frame.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        too_small(frame, area);
        return;
    }
    let n_constraints = app.prediction().map_or(1, |p| p.constraints.len().max(1)) as u16;
    let n_listeners = app
        .snapshot()
        .map_or(1, |s| listener_rows(&s.listeners).len().max(1)) as u16;
    let [title, summary, constraints, middle, bottom] = Layout::vertical([
        Size::Length(1),
        Size::Length(1),
        Size::Length(n_constraints + 4),
        Size::Length((n_listeners + 4).clamp(7, 10)),
        Size::Min(5),
    ])
    .areas(area);
    title_bar(frame, title, app);
    summary_line(frame, summary, app);
    constraints_panel(frame, constraints, app);
    let [queues, sockets, errors] = Layout::horizontal([
        Size::Percentage(50),
        Size::Percentage(22),
        Size::Percentage(28),
    ])
    .areas(middle);
    queues_panel(frame, queues, app);
    sockets_panel(frame, sockets, app);
    errors_panel(frame, errors, app);
    let [history, events] =
        Layout::horizontal([Size::Percentage(55), Size::Percentage(45)]).areas(bottom);
    history_panel(frame, history, app);
    events_panel(frame, events, app);
    if app.show_help {
        help(frame, area);
    }
}

fn too_small(frame: &mut Frame, area: Rect) {
    let text = vec![
        Line::from("Terminal too small".bold()),
        Line::from(format!(
            "{}x{}, headroom top needs {MIN_WIDTH}x{MIN_HEIGHT}",
            area.width, area.height
        )),
        Line::from("enlarge it, or press q to quit"),
    ];
    let y = area.y + area.height.saturating_sub(3) / 2;
    let rect = Rect::new(area.x, y, area.width, area.height.min(3));
    frame.render_widget(
        Paragraph::new(text).centered().wrap(Wrap { trim: true }),
        rect,
    );
}

fn panel<'a>(title: &'a str, app: &App, me: Panel) -> Block<'a> {
    let block = Block::bordered().title(Span::styled(format!(" {title} "), Style::new().bold()));
    if app.focus == me {
        block.border_style(Style::new().fg(Color::Cyan))
    } else {
        block.border_style(Style::new().fg(Color::DarkGray))
    }
}

/// Where the numbers come from, as the title bar says it.
pub fn source_label(app: &App) -> String {
    match app.snapshot().map(|s| s.source) {
        Some(DataSource::Ebpf) => "eBPF probe".to_string(),
        Some(DataSource::Poll) => "/proc polling".to_string(),
        Some(DataSource::Remote) | None => app.source.clone(),
    }
}

/// What is watched, as the title bar says it; `None` before the first sample.
pub fn target_label(app: &App) -> Option<String> {
    let s = app.snapshot()?;
    Some(match s.processes.as_slice() {
        [] => "no process".to_string(),
        [p] => format!("pid {} {}", p.pid, p.comm),
        ps => format!("{} processes", ps.len()),
    })
}

fn title_bar(frame: &mut Frame, area: Rect, app: &App) {
    let bar = Style::new().bg(Color::Blue).fg(Color::White);
    let mut left = vec![Span::styled(" headroom top ", bar.bold())];
    if let Some(target) = target_label(app) {
        left.push(Span::styled(format!("│ {target} "), bar));
    }
    left.push(Span::styled(
        format!("│ source: {} ", source_label(app)),
        bar,
    ));
    if let Some(note) = app.snapshot().and_then(|s| s.source_note.as_deref()) {
        left.push(Span::styled(format!("({note}) "), bar.italic()));
    }
    left.push(Span::styled(
        format!("│ {} ", format::clock(app.elapsed_ms())),
        bar,
    ));
    let right = if app.paused {
        Span::styled(
            " PAUSED (p) │ ? help ",
            bar.bg(Color::Yellow).fg(Color::Black).bold(),
        )
    } else {
        Span::styled(" ? help ", bar)
    };
    let [l, r] = Layout::horizontal([Size::Min(0), Size::Length(right.width() as u16)]).areas(area);
    frame.render_widget(Paragraph::new(Line::from(left)).style(bar), l);
    frame.render_widget(Paragraph::new(Line::from(right)).style(bar), r);
}

fn summary_line(frame: &mut Frame, area: Rect, app: &App) {
    let Some(p) = app.prediction() else {
        let text = match &app.error {
            Some(e) => Span::styled(format!(" {e}"), Style::new().fg(Color::Red).bold()),
            None => Span::raw(" waiting for the first sample…"),
        };
        frame.render_widget(Paragraph::new(Line::from(text)), area);
        return;
    };
    let outlook = app.outlook();
    let outlook_style = match &outlook {
        Outlook::Reached { .. } => Style::new().fg(Color::Red).bold(),
        Outlook::Limit { seconds, .. } if *seconds < 60.0 => Style::new().fg(Color::Red).bold(),
        Outlook::Limit { seconds, .. } if *seconds < 600.0 => Style::new().fg(Color::Yellow).bold(),
        Outlook::Limit { .. } => Style::new().bold(),
        _ => Style::new().fg(Color::Green),
    };
    let mut spans = vec![
        Span::raw(" connections "),
        Span::styled(format::count(p.connections), Style::new().bold()),
        Span::raw("  predicted max "),
        Span::styled(
            format::count(p.predicted_max_connections),
            Style::new().bold(),
        ),
        Span::raw(if p.binding.is_empty() {
            String::new()
        } else {
            format!(" ({})", p.binding)
        }),
        Span::raw("  time to limit: "),
        Span::styled(outlook.text(), outlook_style),
    ];
    if let Some(a) = app.snapshot().and_then(|s| s.app.as_ref()) {
        spans.push(Span::styled(
            format!("  │ {}", a.summary()),
            Style::new().fg(Color::Gray),
        ));
    }
    if let Some(e) = &app.error {
        spans.push(Span::styled(
            format!("  ⚠ {e}"),
            Style::new().fg(Color::Red).bold(),
        ));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

/// The gauge bar: filled cells in the level's colour.
fn bar(ratio: f64, width: u16, color: Color) -> Vec<Span<'static>> {
    let width = width as usize;
    let filled = ((ratio.clamp(0.0, 1.0) * width as f64).round() as usize).min(width);
    // A sliver in use still shows one cell, so "in use" never looks like "empty".
    let filled = if ratio > 0.0 && filled == 0 {
        1
    } else {
        filled
    };
    vec![
        Span::styled("█".repeat(filled), Style::new().fg(color)),
        Span::styled("░".repeat(width - filled), Style::new().fg(Color::DarkGray)),
    ]
}

/// The figures of one constraint row, so that columns can be aligned.
struct RowText {
    pct: String,
    amount: String,
    headroom: String,
    max: String,
}

fn row_text(c: &Constraint) -> RowText {
    let unit = if c.unit == "bytes" {
        String::new()
    } else {
        format!(" {}", c.unit)
    };
    RowText {
        // Floor, so that the number shown agrees with the colour (69.7% is still green).
        pct: format!("{:.0}%", (c.utilisation() * 100.0).floor()),
        amount: format!(
            "{}/{}{unit}",
            format::amount(c.used, &c.unit),
            format::amount(c.limit, &c.unit)
        ),
        headroom: format::amount(c.headroom, &c.unit),
        max: format::count(c.max_connections),
    }
}

struct Widths {
    amount: usize,
    headroom: usize,
    max: usize,
    /// Full labels ("used", "headroom", "conn") or the compact ones.
    wide: bool,
}

fn constraint_row(
    c: &Constraint,
    t: &RowText,
    w: &Widths,
    binding: bool,
    selected: bool,
    gauge_width: u16,
) -> Line<'static> {
    let color = level_color(Level::of(c.utilisation()));
    let marker = if binding { "▶ " } else { "  " };
    let name_style = if binding {
        Style::new()
            .fg(color)
            .add_modifier(Modifier::BOLD | Modifier::REVERSED)
    } else {
        Style::new().fg(color)
    };
    let mut spans = vec![
        Span::styled(marker, Style::new().fg(color).bold()),
        Span::styled(format!("{:<13}", c.name), name_style),
        Span::raw(" "),
    ];
    spans.extend(bar(c.utilisation(), gauge_width, color));
    spans.push(Span::styled(
        format!(" {:>4}", t.pct),
        Style::new().fg(color).bold(),
    ));
    let (used, headroom, conn) = if w.wide {
        ("used ", "headroom ", " conn")
    } else {
        ("", "free ", "")
    };
    spans.push(Span::raw(format!(
        "  {used}{:<aw$}  {headroom}{:>hw$}  max {:>mw$}{conn}",
        t.amount,
        t.headroom,
        t.max,
        aw = w.amount,
        hw = w.headroom,
        mw = w.max,
    )));
    if binding {
        spans.push(Span::styled(" binding", Style::new().fg(color).bold()));
    }
    let line = Line::from(spans);
    if selected {
        line.patch_style(Style::new().add_modifier(Modifier::UNDERLINED))
    } else {
        line
    }
}

fn constraints_panel(frame: &mut Frame, area: Rect, app: &App) {
    let block = panel("Constraints", app, Panel::Constraints);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let Some(p) = app.prediction() else {
        return;
    };
    if p.constraints.is_empty() {
        frame.render_widget(
            Paragraph::new("  this source exports no constraints, only the predicted maximum")
                .fg(Color::Gray),
            inner,
        );
        return;
    }
    let texts: Vec<RowText> = p.constraints.iter().map(row_text).collect();
    let col = |f: fn(&RowText) -> &String| {
        texts
            .iter()
            .map(|t| f(t).chars().count())
            .max()
            .unwrap_or(0)
    };
    let mut widths = Widths {
        amount: col(|t| &t.amount),
        headroom: col(|t| &t.headroom),
        max: col(|t| &t.max),
        wide: true,
    };
    // marker + name + space (16), percentage (5), separators (10), " binding" (8).
    let fixed = 16 + 5 + 10 + 8;
    let text = |w: &Widths| {
        let labels = if w.wide { 5 + 9 + 5 } else { 5 };
        fixed + w.amount + w.headroom + w.max + labels
    };
    if (inner.width as usize) < text(&widths) + 12 {
        widths.wide = false;
    }
    let gauge_width = (inner.width as usize)
        .saturating_sub(text(&widths))
        .clamp(10, 40) as u16;
    let focused = app.focus == Panel::Constraints;
    let mut lines: Vec<Line> = p
        .constraints
        .iter()
        .zip(&texts)
        .enumerate()
        .map(|(i, (c, t))| {
            constraint_row(
                c,
                t,
                &widths,
                c.name == p.binding,
                focused && i == app.selected,
                gauge_width,
            )
        })
        .collect();
    if let Some(c) = p.constraints.get(app.selected) {
        lines.push(Line::from(vec![
            Span::styled(format!("  {}: ", c.name), Style::new().bold()),
            Span::raw(c.explanation.clone()),
        ]));
        let mut fix = vec![
            Span::styled("  fix: ", Style::new().bold()),
            Span::raw(c.remedy.clone()),
        ];
        if let Some(w) = p.next_wall.as_ref().filter(|_| c.name == p.binding) {
            fix.push(Span::styled(
                format!("  (next wall: {})", w.describe()),
                Style::new().italic(),
            ));
        }
        lines.push(Line::from(fix).fg(Color::Gray));
    }
    frame.render_widget(Paragraph::new(lines), inner);
}

fn queues_panel(frame: &mut Frame, area: Rect, app: &App) {
    let mut block = panel("Accept queues", app, Panel::Queues);
    let Some(s) = app.snapshot() else {
        frame.render_widget(block, area);
        return;
    };
    block = block.title_bottom(Line::from(format!(
        " ListenOverflows {}  ListenDrops {} ",
        s.netstat.listen_overflows, s.netstat.listen_drops
    )));
    // One row per address: SO_REUSEPORT sockets summed, their count in "socks".
    let header = Row::new(["listener", "socks", "depth", "peak", "limit", "full"])
        .style(Style::new().bold());
    let rows = listener_rows(&s.listeners).into_iter().map(|r| {
        let style = Style::new().fg(level_color(r.level()));
        Row::new([
            r.address,
            r.sockets.to_string(),
            r.depth.to_string(),
            r.peak.to_string(),
            r.limit.to_string(),
            r.full.map_or("-".to_string(), |n| n.to_string()),
        ])
        .style(style)
    });
    let table = Table::new(
        rows,
        [
            Size::Min(12),
            Size::Length(5),
            Size::Length(6),
            Size::Length(6),
            Size::Length(6),
            Size::Length(6),
        ],
    )
    .header(header)
    .block(block);
    frame.render_widget(table, area);
}

fn sockets_panel(frame: &mut Frame, area: Rect, app: &App) {
    let block = panel("TCP sockets", app, Panel::Sockets);
    let Some(s) = app.snapshot() else {
        frame.render_widget(block, area);
        return;
    };
    let mut rows: Vec<Row> = TcpState::ALL
        .iter()
        .filter_map(|st| s.sockets.get(st).filter(|n| **n > 0).map(|n| (st, n)))
        .map(|(st, n)| Row::new([st.label().to_string(), n.to_string()]))
        .collect();
    rows.push(
        Row::new(["time_wait (ns)".to_string(), s.time_wait.to_string()])
            .style(Style::new().fg(Color::Gray)),
    );
    let table = Table::new(rows, [Size::Min(12), Size::Length(7)]).block(block);
    frame.render_widget(table, area);
}

fn errors_panel(frame: &mut Frame, area: Rect, app: &App) {
    let block = panel("fd errors", app, Panel::Errors);
    let Some(s) = app.snapshot() else {
        frame.render_widget(block, area);
        return;
    };
    if s.fd_errors.is_empty() {
        let none = match s.source {
            DataSource::Poll => "none seen (polling sees no syscall failures; eBPF does)",
            _ => "none",
        };
        frame.render_widget(
            Paragraph::new(none)
                .fg(Color::Green)
                .wrap(Wrap { trim: true })
                .block(block),
            area,
        );
        return;
    }
    let header = Row::new(["errno", "syscall", "pid", "count"]).style(Style::new().bold());
    let rows = s.fd_errors.iter().map(|e| {
        Row::new([
            e.errno.clone(),
            e.syscall.clone(),
            e.pid.to_string(),
            e.count.to_string(),
        ])
        .style(Style::new().fg(Color::Red))
    });
    let table = Table::new(
        rows,
        [
            Size::Length(13),
            Size::Min(7),
            Size::Length(7),
            Size::Length(7),
        ],
    )
    .header(header)
    .block(block);
    frame.render_widget(table, area);
}

fn history_panel(frame: &mut Frame, area: Rect, app: &App) {
    let block = panel("History", app, Panel::History);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let series = [
        ("connections", &app.connections, Color::Cyan),
        ("accept queue", &app.queue_depth, Color::Magenta),
        ("open fds", &app.fds, Color::Blue),
    ];
    let rows = Layout::vertical([Size::Ratio(1, 3); 3]).areas::<3>(inner);
    for ((name, h, color), row) in series.into_iter().zip(rows) {
        let [label, spark] = Layout::horizontal([Size::Length(22), Size::Min(1)]).areas(row);
        let now = h.last().map_or("-".to_string(), format::count);
        frame.render_widget(
            Paragraph::new(vec![
                Line::from(vec![
                    Span::raw(format!("{name:<13}")),
                    Span::styled(now, Style::new().bold()),
                ]),
                Line::from(format!("  max {}", format::count(h.max()))).fg(Color::DarkGray),
            ]),
            label,
        );
        // Newest at the right edge: pad the front while history is short.
        let tail = h.tail(spark.width as usize);
        let pad = spark.width as usize - tail.len();
        let data: Vec<Option<u64>> = std::iter::repeat_n(None, pad)
            .chain(tail.into_iter().map(Some))
            .collect();
        frame.render_widget(
            Sparkline::default()
                .data(&data)
                .max(h.max().max(1))
                .style(Style::new().fg(color)),
            spark,
        );
    }
}

fn event_style(kind: EventKind) -> Style {
    match kind {
        EventKind::Info => Style::new(),
        EventKind::FdError | EventKind::QueueFull => Style::new().fg(Color::Red),
        EventKind::Binding | EventKind::Threshold => Style::new().fg(Color::Yellow),
        EventKind::Source => Style::new().fg(Color::Magenta),
    }
}

fn events_panel(frame: &mut Frame, area: Rect, app: &App) {
    let block = panel("Events", app, Panel::Events);
    let lines: Vec<Line> = app
        .events
        .iter()
        .skip(app.event_scroll)
        .map(|e| {
            Line::from(vec![
                Span::styled(
                    format!("{} ", format::clock(e.at_ms)),
                    Style::new().fg(Color::DarkGray),
                ),
                Span::styled(e.text.clone(), event_style(e.kind)),
            ])
        })
        .collect();
    frame.render_widget(Paragraph::new(lines).block(block), area);
}

fn help(frame: &mut Frame, area: Rect) {
    let keys = [
        ("q, Esc, Ctrl-C", "quit"),
        ("p, space", "pause / resume refreshing"),
        ("Tab, →  /  Shift-Tab, ←", "next / previous panel"),
        ("↑ ↓", "choose a constraint, scroll events"),
        ("?", "this help"),
    ];
    let mut lines: Vec<Line> = keys
        .iter()
        .map(|(k, what)| {
            Line::from(vec![
                Span::styled(format!(" {k:<26}"), Style::new().bold()),
                Span::raw(*what),
            ])
        })
        .collect();
    lines.push(Line::from(""));
    lines.push(Line::from(
        " Gauges: green < 70%, yellow < 90%, red ≥ 90% of the limit.",
    ));
    lines.push(Line::from(
        " ▶ marks the binding constraint: the one that stops the server first.",
    ));
    let rect = area.centered(Size::Length(76), Size::Length(lines.len() as u16 + 2));
    frame.render_widget(Clear, rect);
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" Help ")),
        rect,
    );
}
