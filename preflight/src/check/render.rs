//! `preflight check` as an aligned table: one line per check (status, name,
//! value now, value at the next boot, requirement, capacity), then what sets
//! the boot value, other writers, why it is not ok and how to fix it.

use super::{Check, Report, Status};

/// The report as an aligned table for a terminal.
pub fn render(report: &Report) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "profile {} (target {} connections), net namespace {}, pid {}",
        report.profile, report.target_connections, report.netns, report.pid
    );
    let w_name = report
        .checks
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(4)
        .max(5);
    let cur = |c: &Check| c.current.clone().unwrap_or_else(|| "absent".into());
    let w_cur = report
        .checks
        .iter()
        .filter(|c| c.name != "capacity")
        .map(|c| cur(c).len())
        .max()
        .unwrap_or(7)
        .max(7);
    let boot = |c: &Check| match &c.boot {
        Some(b) => b.value.clone().unwrap_or_else(|| "-".into()),
        None => String::new(),
    };
    let w_boot = report
        .checks
        .iter()
        .map(|c| boot(c).len())
        .max()
        .unwrap_or(4)
        .max(4);
    let _ = writeln!(
        out,
        "{:<6} {:<w_name$} {:<w_cur$} {:<w_boot$} REQUIRED",
        "STATUS", "CHECK", "CURRENT", "BOOT"
    );
    for c in report.checks.iter().filter(|c| c.name != "capacity") {
        let status = if c.ignored {
            format!("({})", c.status.as_str())
        } else {
            c.status.as_str().to_string()
        };
        let mut line = format!(
            "{status:<6} {:<w_name$} {:<w_cur$} {:<w_boot$} {}",
            c.name,
            cur(c),
            boot(c),
            c.required
        );
        if let (Some(a), Some(b)) = (c.capacity_now, c.capacity_fixed) {
            let unit = if c.constraint.as_deref() == Some("ephemeral-ports") {
                " per destination"
            } else {
                ""
            };
            let _ = write!(
                line,
                "  [{}: {a} -> {b}{unit}]",
                c.constraint.as_deref().unwrap_or("")
            );
        }
        let _ = writeln!(out, "{}", line.trim_end());
        let pad = |out: &mut String, label: &str, text: &str| {
            let _ = writeln!(out, "{:6} {:w_name$} {label}: {text}", "", "");
        };
        if let Some(b) = &c.boot {
            // Nothing persisted shows as `-` in the BOOT column, no line.
            if let Some(f) = &b.file {
                pad(&mut out, "boot", &format!("{f} ({})", b.by));
            }
            for e in &b.elsewhere {
                let v = e.value.as_deref().unwrap_or("not set");
                let f = e
                    .file
                    .as_deref()
                    .map_or(String::new(), |f| format!(" ({f})"));
                pad(&mut out, "also", &format!("{}: {v}{f}", e.by));
            }
            for w in &b.writers {
                let v = w
                    .value
                    .as_deref()
                    .map_or(String::new(), |v| format!(" sets {v}"));
                pad(
                    &mut out,
                    "writer",
                    &format!("{}{v} ({}): {}", w.name, w.source, w.detail),
                );
            }
            for n in b.notes.iter().filter(|n| !n.starts_with("not persisted")) {
                pad(&mut out, "note", n);
            }
        }
        if c.status != Status::Ok {
            if let Some(r) = &c.reason {
                let _ = writeln!(out, "{:6} {:w_name$} why: {r}", "", "");
            }
            if let Some(r) = &c.remedy {
                let _ = writeln!(out, "{:6} {:w_name$} fix: {r}", "", "");
            }
        }
    }
    let _ = writeln!(
        out,
        "capacity: {} now (binding {}), {} with {} applied (binding {}); target {}",
        report.now.predicted_max_connections,
        report.now.binding,
        report.applied.predicted_max_connections,
        report.profile,
        report.applied.binding,
        report.target_connections
    );
    let s = report.summary;
    let _ = write!(
        out,
        "{} ok, {} warn, {} fail, {} ignored",
        s.ok, s.warn, s.fail, s.ignored
    );
    out
}
