//! Rendering against fixed buffers: the whole screen as text (insta
//! snapshots under tests/snapshots/) and the colours cell by cell.

use headroom_core::FdError;
use headroom_tui::fixture::{sample, sample_of, snapshot};
use headroom_tui::{render, App, Config};
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::style::{Color, Modifier};
use ratatui::Terminal;

fn draw(app: &App, w: u16, h: u16) -> Terminal<TestBackend> {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| render::draw(f, app)).unwrap();
    t
}

/// A server growing by 310 connections per second for 5 s.
fn growing() -> App {
    let mut app = App::new("/proc polling", Config::default());
    for i in 0..=5u64 {
        app.update(sample(i * 1000, 1000 + 310 * i));
    }
    app
}

/// The server at `conns` connections, steady for 3 samples.
fn steady(conns: u64) -> App {
    let mut app = App::new("/proc polling", Config::default());
    for i in 0..3u64 {
        app.update(sample(i * 1000, conns));
    }
    app
}

fn row_of(buf: &Buffer, needle: &str) -> u16 {
    (0..buf.area.height)
        .find(|y| {
            let line: String = (0..buf.area.width)
                .map(|x| buf[(x, *y)].symbol().to_string())
                .collect();
            line.contains(needle)
        })
        .unwrap_or_else(|| panic!("{needle:?} not on screen"))
}

/// Colour of the first filled gauge cell on the row of constraint `name`.
fn gauge_color(buf: &Buffer, name: &str) -> Color {
    let y = row_of(buf, &format!("{name:<13} "));
    let x = (0..buf.area.width)
        .find(|x| buf[(*x, y)].symbol() == "█")
        .expect("no filled gauge cell");
    buf[(x, y)].fg
}

fn screen(t: &Terminal<TestBackend>) -> String {
    t.backend().to_string()
}

#[test]
fn dashboard_with_time_to_limit() {
    let t = draw(&growing(), 120, 32);
    let s = screen(&t);
    assert!(
        s.contains("time to limit: nofile in 56 s at +310 conn/s"),
        "{s}"
    );
    insta::assert_snapshot!("growing_120x32", s);
}

#[test]
fn binding_constraint_stands_out() {
    let t = draw(&growing(), 120, 32);
    let buf = t.backend().buffer();
    let y = row_of(buf, "nofile        ");
    let x = (0..buf.area.width)
        .find(|x| buf[(*x, y)].symbol() == "n")
        .unwrap();
    // The binding name is bold and reversed, with a marker; the others are not.
    assert!(
        buf[(x, y)]
            .modifier
            .contains(Modifier::BOLD | Modifier::REVERSED),
        "{:?}",
        buf[(x, y)]
    );
    assert_eq!(buf[(x - 2, y)].symbol(), "▶");
    let y = row_of(buf, "memory        ");
    let x = (0..buf.area.width)
        .find(|x| buf[(*x, y)].symbol() == "m")
        .unwrap();
    assert!(!buf[(x, y)].modifier.contains(Modifier::REVERSED));
    assert_eq!(buf[(x - 2, y)].symbol(), " ");
}

#[test]
fn gauge_colours_change_at_70_and_90_percent() {
    // nofile use = conns + 10 open + 32 reserve, of 20000.
    for (conns, pct, color) in [
        (13_900, 69, Color::Green),
        (13_958, 70, Color::Yellow),
        (17_900, 89, Color::Yellow),
        (17_958, 90, Color::Red),
    ] {
        let t = draw(&steady(conns), 120, 32);
        let buf = t.backend().buffer();
        assert_eq!(gauge_color(buf, "nofile"), color, "{conns} connections");
        assert!(screen(&t).contains(&format!(" {pct}%  used")), "{pct}%");
    }
}

#[test]
fn near_the_wall_in_red() {
    let mut app = steady(19_500);
    let mut s = snapshot(3000, 19_900);
    s.fd_errors = vec![FdError {
        pid: 4242,
        syscall: "accept4".into(),
        errno: "EMFILE".into(),
        count: 12,
    }];
    s.listeners[0].accept_queue_depth = 4096;
    s.listeners[0].accept_queue_peak = 4096;
    s.netstat.listen_overflows = 40;
    app.update(sample_of(s));
    let t = draw(&app, 120, 32);
    insta::assert_snapshot!("critical_120x32", screen(&t));
}

#[test]
fn too_small_terminal_says_so() {
    let t = draw(&growing(), 60, 12);
    insta::assert_snapshot!("too_small_60x12", screen(&t));
    // One cell short in either direction is too small, the minimum is not.
    assert!(screen(&draw(&growing(), 79, 24)).contains("Terminal too small"));
    assert!(screen(&draw(&growing(), 80, 23)).contains("Terminal too small"));
    let s = screen(&draw(&growing(), 80, 24));
    assert!(!s.contains("Terminal too small"));
    assert!(s.contains("predicted max 19958"));
}

#[test]
fn help_and_pause_and_focus() {
    let mut app = growing();
    app.on_key(KeyEvent::new(KeyCode::Char('p'), KeyModifiers::NONE));
    app.on_key(KeyEvent::new(KeyCode::Tab, KeyModifiers::NONE));
    app.on_key(KeyEvent::new(KeyCode::Char('?'), KeyModifiers::NONE));
    let t = draw(&app, 100, 30);
    insta::assert_snapshot!("help_paused_100x30", screen(&t));
    // The focused panel's border is cyan.
    let buf = t.backend().buffer();
    let y = row_of(buf, "Accept queues");
    let x = (0..buf.area.width)
        .find(|x| buf[(*x, y)].symbol() == "┌")
        .unwrap();
    assert_eq!(buf[(x, y)].fg, Color::Cyan);
}

#[test]
fn waiting_and_source_error() {
    let mut app = App::new("eBPF probe", Config::default());
    let s = screen(&draw(&app, 80, 24));
    assert!(s.contains("waiting for the first sample"));
    assert!(s.contains("source: eBPF probe"));
    app.source_error("target gone: pid 4242 exited".into());
    let s = screen(&draw(&app, 80, 24));
    assert!(s.contains("target gone: pid 4242 exited"));
}

/// Cells of row `y` from column `x`, `n` wide, as text.
fn cells(buf: &Buffer, x: u16, y: u16, n: u16) -> String {
    (x..x + n).map(|x| buf[(x, y)].symbol()).collect()
}

#[test]
fn reuseport_listeners_render_as_one_row_and_ebpf_in_the_title() {
    let mut s = snapshot(0, 300);
    s.source = headroom_core::Source::Ebpf;
    let mut worker = s.listeners[0].clone();
    // Worker 2's queue is at 3700 of 4096 (90%): the row is red though the sum is not.
    worker.accept_queue_depth = 3700;
    worker.accept_queue_peak = 3700;
    worker.queue_full_events = Some(2);
    s.listeners[0].queue_full_events = Some(1);
    s.listeners.push(worker);
    let mut app = App::new("eBPF probe", Config::default());
    app.update(sample_of(s));
    let t = draw(&app, 120, 32);
    let buf = t.backend().buffer();
    assert!(cells(buf, 0, 0, 120).contains("│ source: eBPF probe │"));
    let y = row_of(buf, "127.0.0.1:7878");
    assert_eq!(row_of(buf, "listener ") + 1, y, "exactly one listener row");
    assert_eq!(
        cells(buf, 1, y, 57),
        "127.0.0.1:7878           2     3700   3700   8192   3    "
    );
    assert_eq!(buf[(1, y)].fg, Color::Red);
}
