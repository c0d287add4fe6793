//! Reading HAProxy configuration files: sections, what defaults sections
//! pass on, and the directives that count for connection limits.

use super::config::{Config, Proxy, ProxyKind, Setting};
use super::words::{bind_ports, split_words};
use crate::host::Host;
use std::collections::BTreeMap;

/// Most configuration files read (a directory's included).
const MAX_FILES: usize = 256;

/// What a defaults section passes on.
#[derive(Debug, Clone, Default)]
struct Defaults {
    maxconn: Option<Setting>,
    check: bool,
    splice: bool,
    http: bool,
}

/// Reads the configuration `files` (each a file or a directory of `*.cfg`),
/// in order, under `host`'s root; `env` expands `"$VAR"`; `cwd` resolves
/// relative paths.
pub fn read_config(
    host: &Host,
    files: &[String],
    cwd: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Config {
    let mut texts = Vec::new();
    let mut problems = Vec::new();
    for f in files {
        let path = if f.starts_with('/') {
            f.clone()
        } else {
            format!("{}/{}", cwd.trim_end_matches('/'), f)
        };
        let full = host.path(&path);
        if full.is_dir() {
            match std::fs::read_dir(&full) {
                Ok(rd) => {
                    let mut names: Vec<String> = rd
                        .filter_map(|e| {
                            let e = e.ok()?;
                            let n = e.file_name().to_str()?.to_string();
                            (n.ends_with(".cfg") && !n.starts_with('.') && e.path().is_file())
                                .then_some(n)
                        })
                        .collect();
                    names.sort();
                    for n in names {
                        texts.push(format!("{}/{n}", path.trim_end_matches('/')));
                    }
                }
                Err(e) => problems.push(format!("HAProxy configuration {path}: {e}")),
            }
        } else {
            texts.push(path);
        }
    }
    let mut cfg = Config {
        problems,
        ..Default::default()
    };
    let mut parser = Parser::default();
    for path in texts.into_iter().take(MAX_FILES) {
        match host.read(&path) {
            Ok(text) => {
                cfg.files.push(path.clone());
                parser.feed(&mut cfg, &path, &text, env);
            }
            Err(e) => cfg.problems.push(format!("HAProxy configuration {e}")),
        }
    }
    parser.finish(&mut cfg);
    cfg
}

/// Parses configuration text (one file) into a [`Config`].
pub fn parse_config(path: &str, text: &str, env: &dyn Fn(&str) -> Option<String>) -> Config {
    let mut cfg = Config {
        files: vec![path.to_string()],
        ..Default::default()
    };
    let mut p = Parser::default();
    p.feed(&mut cfg, path, text, env);
    p.finish(&mut cfg);
    cfg
}

#[derive(Default)]
struct Parser {
    section: Section,
    cur: Option<Proxy>,
    /// Inherited by the proxy being parsed.
    cur_defaults: Defaults,
    /// `default-server ... check` of the proxy being parsed.
    cur_check: Option<bool>,
    last_defaults: Defaults,
    named: BTreeMap<String, Defaults>,
    conditional: bool,
}

#[derive(Default, Clone, PartialEq, Eq)]
enum Section {
    #[default]
    None,
    Global,
    Defaults(Option<String>),
    Proxy,
    Other,
}

impl Parser {
    fn close_proxy(&mut self, cfg: &mut Config) {
        if let Some(p) = self.cur.take() {
            cfg.proxies.push(p);
        }
        if let Section::Defaults(name) = &self.section {
            let d = self.cur_defaults.clone();
            if let Some(n) = name {
                self.named.insert(n.clone(), d.clone());
            }
            self.last_defaults = d;
        }
        self.cur_check = None;
    }

    fn finish(&mut self, cfg: &mut Config) {
        self.close_proxy(cfg);
        self.section = Section::None;
        if self.conditional {
            cfg.notes.push(
                "the configuration has .if blocks: both branches were read, the last value wins"
                    .into(),
            );
        }
    }

    fn feed(
        &mut self,
        cfg: &mut Config,
        path: &str,
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) {
        // A new file does not continue the previous file's section in
        // HAProxy either; it starts outside any section.
        self.close_proxy(cfg);
        self.section = Section::None;
        for (n, raw) in text.lines().enumerate() {
            let at = format!("{path}:{}", n + 1);
            let words = match split_words(raw, env) {
                Ok(w) => w,
                Err(e) => {
                    cfg.problems.push(format!("{at}: {e}: line skipped"));
                    continue;
                }
            };
            let Some(kw) = words.first() else { continue };
            if kw.starts_with('.') {
                if kw == ".if" {
                    self.conditional = true;
                }
                continue;
            }
            let arg = |i: usize| words.get(i).map(String::as_str).unwrap_or("");
            match kw.as_str() {
                "global" => {
                    self.close_proxy(cfg);
                    self.section = Section::Global;
                    continue;
                }
                "defaults" => {
                    self.close_proxy(cfg);
                    let name = (!arg(1).is_empty() && arg(1) != "from").then(|| arg(1).to_string());
                    self.cur_defaults = self.inherit(&words);
                    self.section = Section::Defaults(name);
                    continue;
                }
                "frontend" | "listen" | "backend" => {
                    self.close_proxy(cfg);
                    let kind = match kw.as_str() {
                        "frontend" => ProxyKind::Frontend,
                        "listen" => ProxyKind::Listen,
                        _ => ProxyKind::Backend,
                    };
                    self.cur_defaults = self.inherit(&words);
                    let mut p = Proxy::new(kind, arg(1), at.clone());
                    p.maxconn = self.cur_defaults.maxconn.clone();
                    p.splice = self.cur_defaults.splice;
                    p.http = self.cur_defaults.http;
                    self.cur = Some(p);
                    self.section = Section::Proxy;
                    continue;
                }
                "peers" | "resolvers" | "userlist" | "mailers" | "program" | "http-errors"
                | "ring" | "cache" | "log-forward" | "fcgi-app" | "crt-store" | "traces" => {
                    self.close_proxy(cfg);
                    self.section = Section::Other;
                    if kw == "peers" {
                        cfg.notes.push(format!(
                            "{at}: a peers section: its listener and connections are not counted in the derived maxconn"
                        ));
                    }
                    continue;
                }
                _ => {}
            }
            match self.section.clone() {
                Section::Global => global_line(cfg, &at, &words),
                Section::Defaults(_) => match kw.as_str() {
                    "maxconn" => match number(arg(1)) {
                        Some(v) => self.cur_defaults.maxconn = Some(Setting { value: v, at }),
                        None => cfg
                            .problems
                            .push(format!("{at}: maxconn {:?} is not a number", arg(1))),
                    },
                    "default-server" => self.cur_defaults.check = has_check(&words, false),
                    "option" if arg(1).starts_with("splice-") => self.cur_defaults.splice = true,
                    "mode" => self.cur_defaults.http = arg(1) == "http",
                    "no" if arg(1) == "option" && arg(2).starts_with("splice-") => {
                        self.cur_defaults.splice = false
                    }
                    _ => {}
                },
                Section::Proxy => self.proxy_line(cfg, &at, &words),
                Section::None | Section::Other => {}
            }
        }
    }

    /// The defaults a `frontend NAME [from DEFAULTS]` line inherits.
    fn inherit(&self, words: &[String]) -> Defaults {
        match words.iter().position(|w| w == "from") {
            Some(i) => words
                .get(i + 1)
                .and_then(|n| self.named.get(n))
                .cloned()
                .unwrap_or_default(),
            None => self.last_defaults.clone(),
        }
    }

    fn proxy_line(&mut self, cfg: &mut Config, at: &str, words: &[String]) {
        let default_check = self.cur_check.unwrap_or(self.cur_defaults.check);
        let Some(p) = self.cur.as_mut() else { return };
        let arg = |i: usize| words.get(i).map(String::as_str).unwrap_or("");
        match words[0].as_str() {
            "bind" if p.kind != ProxyKind::Backend => match bind_ports(arg(1)) {
                Ok((ports, n)) => {
                    p.ports.extend(ports);
                    p.listeners += n;
                    if words.iter().skip(2).any(|w| w == "ssl") {
                        p.ssl = true;
                    }
                }
                Err(e) => cfg.problems.push(format!("{at}: {e}")),
            },
            "maxconn" if p.kind != ProxyKind::Backend => match number(arg(1)) {
                Some(v) => {
                    p.maxconn = Some(Setting {
                        value: v,
                        at: at.to_string(),
                    })
                }
                None => cfg
                    .problems
                    .push(format!("{at}: maxconn {:?} is not a number", arg(1))),
            },
            "default_backend" => p.default_backend = Some(arg(1).to_string()),
            "use_backend" => p.use_backends.push(arg(1).to_string()),
            "default-server" => self.cur_check = Some(has_check(words, default_check)),
            "server" if p.kind != ProxyKind::Frontend => {
                p.servers += 1;
                p.check_socks += check_socks(words, default_check);
            }
            "server-template" if p.kind != ProxyKind::Frontend => {
                let n = template_count(arg(2));
                match n {
                    Some(n) => {
                        p.servers += n;
                        if has_check(words, default_check) {
                            p.check_socks += n;
                        }
                    }
                    None => cfg.problems.push(format!(
                        "{at}: server-template count {:?} not understood",
                        arg(2)
                    )),
                }
            }
            "option" if arg(1).starts_with("splice-") => p.splice = true,
            "mode" => p.http = arg(1) == "http",
            "no" if arg(1) == "option" && arg(2).starts_with("splice-") => p.splice = false,
            _ => {}
        }
    }
}

fn number(s: &str) -> Option<u64> {
    s.parse::<u64>().ok()
}

/// Whether a server (or default-server) line enables health checks.
fn has_check(words: &[String], default: bool) -> bool {
    let mut on = default;
    for w in words.iter().skip(2) {
        match w.as_str() {
            "check" => on = true,
            "no-check" => on = false,
            _ => {}
        }
    }
    on
}

/// Sockets a `server` line adds to maxsock: one for a check, one for an
/// agent check, one per `port` / `agent-port` keyword (check.c).
fn check_socks(words: &[String], default_check: bool) -> u64 {
    let mut n = u64::from(has_check(words, default_check));
    for w in words.iter().skip(3) {
        match w.as_str() {
            "agent-check" | "port" | "agent-port" => n += 1,
            _ => {}
        }
    }
    n
}

/// `server-template`'s count: `N` or `A-B`.
fn template_count(s: &str) -> Option<u64> {
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (a.parse::<u64>().ok()?, b.parse::<u64>().ok()?);
            (b >= a).then(|| b - a + 1)
        }
        None => s.parse().ok(),
    }
}

fn global_line(cfg: &mut Config, at: &str, words: &[String]) {
    let g = &mut cfg.global;
    let arg = |i: usize| words.get(i).map(String::as_str).unwrap_or("");
    let setting = |problems: &mut Vec<String>, name: &str, v: &str| match number(v) {
        Some(value) => Some(Setting {
            value,
            at: at.to_string(),
        }),
        None => {
            problems.push(format!("{at}: {name} {v:?} is not a number"));
            None
        }
    };
    match words[0].as_str() {
        "maxconn" => {
            if let Some(s) = setting(&mut cfg.problems, "maxconn", arg(1)) {
                g.maxconn = Some(s);
            }
        }
        "ulimit-n" => {
            if let Some(s) = setting(&mut cfg.problems, "ulimit-n", arg(1)) {
                g.ulimit_n = Some(s);
            }
        }
        "nbthread" => {
            if let Some(s) = setting(&mut cfg.problems, "nbthread", arg(1)) {
                g.nbthread = Some(s);
            }
        }
        "fd-hard-limit" => {
            if let Some(s) = setting(&mut cfg.problems, "fd-hard-limit", arg(1)) {
                g.fd_hard_limit = Some(s);
            }
        }
        "master-worker" => g.master_worker = true,
        "strict-limits" => g.strict_limits = Some(true),
        "no" if arg(1) == "strict-limits" => g.strict_limits = Some(false),
        "ssl-engine" if words.iter().any(|w| w == "async") => g.async_engine = true,
        "stats" => {
            g.cli = true;
            match arg(1) {
                "socket" => {
                    let addr = arg(2);
                    if addr.is_empty() {
                        cfg.problems
                            .push(format!("{at}: stats socket without an address"));
                        return;
                    }
                    let n = bind_ports(addr).map(|(_, n)| n).unwrap_or(1);
                    g.stats_listeners += n;
                    g.stats_sockets.push((addr.to_string(), at.to_string()));
                }
                "maxconn" => match number(arg(2)) {
                    Some(v) => g.stats_maxconn = Some(v),
                    None => cfg
                        .problems
                        .push(format!("{at}: stats maxconn {:?} is not a number", arg(2))),
                },
                _ => {}
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::haproxy::ideal_maxconn;
    use crate::haproxy::tests::input;

    const LIVE_CFG: &str = include_str!("../../tests/fixtures/haproxy/live-2.6.12.cfg");
    const DEBIAN_CFG: &str = include_str!("../../tests/fixtures/haproxy/debian-2.6.cfg");

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn sections_defaults_and_frontends_of_the_live_fixture() {
        let c = parse_config("/t/live.cfg", LIVE_CFG, &no_env);
        assert!(c.problems.is_empty(), "{:?}", c.problems);
        assert_eq!(c.global.maxconn, None);
        assert_eq!(c.global.stats_sockets.len(), 1);
        assert_eq!(c.global.stats_sockets[0].0, "/tmp/hx/hf.sock");
        assert_eq!(c.proxies.len(), 3);
        let fe = &c.proxies[0];
        assert_eq!(
            (fe.name.as_str(), fe.kind, fe.listeners),
            ("fe", ProxyKind::Frontend, 1)
        );
        assert_eq!(fe.maxconn.as_ref().map(|m| m.value), Some(300));
        assert_eq!(c.fds_per_connection(fe).0, 1);
        // `other` forwards to backend be, in mode http: idle clients hold no
        // upstream connection.
        assert_eq!(c.fds_per_connection(&c.proxies[1]).0, 1);
        let tcp = parse_config(
            "/t/tcp.cfg",
            &LIVE_CFG.replace("mode http", "mode tcp"),
            &no_env,
        );
        let (n, why) = tcp.fds_per_connection(&tcp.proxies[1]);
        assert_eq!(
            (n, why.as_str()),
            (2, "frontend other forwards to backend be's servers")
        );
        assert_eq!(tcp.fds_per_connection(&tcp.proxies[0]).0, 1);
        // 10 + 2 listeners + 1 stats socket + 10 CLI = 23, as Maxsock - 2*485 - 6 = 23.
        assert_eq!(c.maxsock(false, 0), 23);
        assert_eq!(ideal_maxconn(&input(1000, c.maxsock(false, 0))), 485);
    }

    #[test]
    fn debian_style_config_with_checks_templates_named_defaults_and_ulimit() {
        let env = |k: &str| (k == "MAXCONN").then(|| "4000".to_string());
        let c = parse_config("/etc/haproxy/haproxy.cfg", DEBIAN_CFG, &env);
        assert!(c.problems.is_empty(), "{:?}", c.problems);
        let g = &c.global;
        assert_eq!(
            g.maxconn.as_ref().map(|m| (m.value, m.at.as_str())),
            Some((4000, "/etc/haproxy/haproxy.cfg:6"))
        );
        assert_eq!(g.ulimit_n.as_ref().map(|m| m.value), Some(9000));
        assert_eq!(g.nbthread.as_ref().map(|m| m.value), Some(4));
        assert_eq!(g.stats_sockets.len(), 2);
        assert_eq!(g.stats_maxconn, Some(5));
        assert_eq!(g.strict_limits, Some(false));
        let web = c.proxies.iter().find(|p| p.name == "web").unwrap();
        // maxconn 2000 from the anonymous defaults section.
        assert_eq!(web.maxconn.as_ref().map(|m| m.value), Some(2000));
        assert!(web.listens_on(443) && web.listens_on(80));
        assert!(web.http);
        assert_eq!(c.fds_per_connection(web).0, 1);
        let api = c.proxies.iter().find(|p| p.name == "api").unwrap();
        // `from tight`: the named defaults' maxconn.
        assert_eq!(api.maxconn.as_ref().map(|m| m.value), Some(50));
        assert_eq!(c.fds_per_connection(api).0, 1);
        let be = c.proxies.iter().find(|p| p.name == "app").unwrap();
        assert_eq!(be.servers, 2 + 3);
        // s1: check + port; s2: no-check; template: 3 checks (default-server check).
        assert_eq!(be.check_socks, 2 + 3);
        // 10 + (2 web + 1 api) listeners + 5 checks + 2 stats sockets + stats maxconn 5.
        assert_eq!(c.maxsock(false, 0), 10 + 3 + 5 + 2 + 5);
        assert!(c.notes.iter().any(|n| n.contains(".if")));
    }

    #[test]
    fn hostile_configs_do_not_panic() {
        let mut junk = String::new();
        for i in 0..2000u32 {
            junk.push(char::from_u32(i % 0x7f).unwrap_or('x'));
            if i % 37 == 0 {
                junk.push_str("\nfrontend \"x\n  bind :\n maxconn 99999999999999999999999\n");
            }
        }
        let c = parse_config("/j", &junk, &no_env);
        assert!(!c.problems.is_empty());
        let c = parse_config(
            "/j",
            "backend b\n server-template s 9-1 x:1\nserver\nbind\n",
            &no_env,
        );
        assert_eq!(c.problems.len(), 1);
        let c = parse_config("/j", &"\"".repeat(100_001), &no_env);
        assert_eq!(c.problems.len(), 1);
    }
}
