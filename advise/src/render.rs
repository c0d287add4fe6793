//! Advice as a document (`--json`, the MCP tool) and as text: one block
//! per piece of advice, ranked, then the inputs that were missing.

use crate::{Advice, Config, Targets};
use headroom_core::{predict, Snapshot, SCHEMA_VERSION};
use serde::Serialize;
use std::fmt::Write;

/// One evaluation: `headroom advise --json` prints one (with `--watch`, one
/// per event); the MCP `advise` tool returns one. See docs/advise.md.
#[derive(Debug, Serialize)]
pub struct Report<'a> {
    pub schema_version: u32,
    /// `advice` (every evaluation printed is one).
    pub event: &'static str,
    /// `port 8080`, `pid 42`.
    pub target: String,
    pub pids: Vec<u32>,
    /// `ebpf` or `poll`.
    pub source: &'static str,
    pub source_note: Option<&'a str>,
    pub netns: &'a str,
    /// Seconds between the two samples; `null`: one sample.
    pub interval_s: Option<f64>,
    pub taken_at_ms: u64,
    pub connections: u64,
    pub predicted_max_connections: u64,
    pub binding: String,
    /// The server behind the target in one line.
    pub application: Option<String>,
    /// The values advice raises limits to (a profile's, or the defaults).
    pub targets: &'a Targets,
    pub advice: &'a [Advice],
    /// Inputs that could not be used, one line each.
    pub missing: &'a [String],
}

impl<'a> Report<'a> {
    pub fn new(
        target: String,
        now: &'a Snapshot,
        advice: &'a [Advice],
        missing: &'a [String],
        cfg: &'a Config,
    ) -> Report<'a> {
        let p = predict(now, &cfg.model);
        Report {
            schema_version: SCHEMA_VERSION,
            event: "advice",
            target,
            pids: now.processes.iter().map(|p| p.pid).collect(),
            source: now.source.as_str(),
            source_note: now.source_note.as_deref(),
            netns: &now.netns,
            interval_s: cfg.interval_s,
            taken_at_ms: now.taken_at_ms,
            connections: p.connections,
            predicted_max_connections: p.predicted_max_connections,
            binding: p.binding,
            application: now.app.as_ref().map(|a| a.summary()),
            targets: &cfg.targets,
            advice,
            missing,
        }
    }

    /// The header line and the advice, as text.
    pub fn text(&self) -> String {
        let interval = match self.interval_s {
            Some(s) => format!("two samples {s:.1} s apart"),
            None => "one sample".into(),
        };
        format!(
            "headroom advise: {}: {} connection(s), predicted maximum {} ({}); source {}, {interval}\n{}",
            self.target,
            self.connections,
            self.predicted_max_connections,
            self.binding,
            self.source,
            text(self.advice, self.missing)
        )
    }
}

pub fn text(advice: &[Advice], missing: &[String]) -> String {
    let mut out = String::new();
    if advice.is_empty() {
        out.push_str("no advice: no limit hit, none near\n");
    }
    for a in advice {
        let _ = writeln!(out, "{}. [{}] {}", a.rank, a.severity.as_str(), a.id);
        let _ = writeln!(out, "   seen:      {}", a.signal.summary);
        let after = a
            .capacity_after
            .map_or("no number (see the remedy)".to_string(), |n| n.to_string());
        let _ = writeln!(
            out,
            "   capacity:  {} {} -> {after}",
            a.capacity_of, a.capacity_now
        );
        for r in &a.remedies {
            let cur = r.current.as_deref().unwrap_or("?");
            let kind = serde_kind(r.kind);
            let _ = writeln!(out, "   remedy:    {} {cur} -> {} ({kind})", r.key, r.value);
            let _ = writeln!(out, "     where:   {}", r.place);
            let _ = writeln!(out, "     why:     {}", r.why_there);
            let _ = writeln!(out, "     do:      {}", r.command);
            for c in &r.owner_conflicts {
                let _ = writeln!(out, "     other writer: {c}");
            }
        }
        if let Some(w) = &a.next_wall {
            let _ = writeln!(out, "   next wall: {w}");
        }
        for n in &a.notes {
            let _ = writeln!(out, "   note:      {n}");
        }
    }
    if !missing.is_empty() {
        out.push_str("missing inputs:\n");
        for m in missing {
            let _ = writeln!(out, "  - {m}");
        }
    }
    out
}

fn serde_kind(k: crate::RemedyKind) -> &'static str {
    use crate::RemedyKind::*;
    match k {
        Sysctl => "sysctl",
        LimitNofile => "limit-nofile",
        AppDirective => "app-directive",
        SourceAddresses => "source-addresses",
        MemoryMax => "memory-max",
        Memory => "memory",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::{self, listener, Owned};
    use crate::{advise, Config};

    #[test]
    fn renders_a_block_per_advice_and_the_missing_inputs() {
        let mut s = fixture::host();
        s.system.somaxconn = 64;
        s.listeners = vec![listener(7878, 9, 9, 8)];
        s.processes[0].nofile_soft = Some(1 << 20);
        s.processes[0].nofile_hard = Some(1 << 20);
        let a = advise(&s, None, &Owned::default(), &Config::default());
        let t = text(&a[..1], &["fd errors: not seen without eBPF".into()]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "1. [hit] listen-backlog 127.0.0.1:7878");
        assert_eq!(
            lines[2],
            "   capacity:  connections waiting in the accept queue of 127.0.0.1:7878 9 -> 4097"
        );
        assert_eq!(
            lines[3],
            "   remedy:    listen() backlog 8 -> 4096 (app-directive)"
        );
        assert_eq!(
            lines[7],
            "   remedy:    net.core.somaxconn 64 -> 4096 (sysctl)"
        );
        assert_eq!(
            lines[lines.len() - 1],
            "  - fd errors: not seen without eBPF"
        );
        assert_eq!(text(&[], &[]), "no advice: no limit hit, none near\n");
    }
}
