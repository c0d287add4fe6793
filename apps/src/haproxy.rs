//! HAProxy: global `maxconn` (and a frontend's own `maxconn`).
//!
//! Asked live on the `stats socket` the global section names (`show info`:
//! Maxconn, CurrConns, Ulimit-n, Version; `show stat`: each frontend's
//! scur/slim), else read from the configuration files on the command line
//! (`-f FILE|DIR`, several, `-- FILES...`; `-n N` overrides maxconn).
//!
//! What HAProxy 2.6 does: a listener stops accepting while `actconn >=
//! global.maxconn` (listener_accept; the stats socket, peers and the master
//! CLI are exempt) or while its frontend holds its own maxconn; new
//! connections wait in the listen backlog. A frontend without a maxconn
//! gets the global one (proxy_adjust_all_maxconn). When global maxconn is
//! not set, HAProxy derives it at start from its fd limit
//! ([`ideal_maxconn`], compute_ideal_maxconn in haproxy.c), then raises its
//! own RLIMIT_NOFILE to maxsock = 2 x maxconn + the fds it counts for
//! listeners, checks, the CLI and its threads; with `strict-limits` (the
//! default since 2.3) it refuses to start when it cannot. Measured on
//! 2.6.12 (2 threads, one frontend, a stats socket): nofile 1000 derived
//! 486, nofile 4000 derived 1986, nofile 1000:4000 derived 1986 (the hard
//! limit counts); `-W` 485, `-W -S sock` 480; `maxconn 1000` held 1000;
//! with `no strict-limits` under nofile 800 and no CAP_SYS_RESOURCE it held
//! 787 = 800 - 13 fds open at idle.

use crate::host::Host;
use crate::{wire, Seen};
use headroom_core::{AppCap, AppInfo, AtCap, CapSource, Scope};
use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

/// DEFAULT_MAXCONN (defaults.h): the floor of a derived maxconn.
pub const DEFAULT_MAXCONN: u64 = 100;
/// Debian's configuration path (its unit passes it with -f).
pub const DEFAULT_CONFIG: &str = "/etc/haproxy/haproxy.cfg";
/// `stats maxconn` when unset (cli_alloc_fe).
pub const DEFAULT_CLI_MAXCONN: u64 = 10;
/// global.maxsock before any listener is counted ("stdin/stdout/stderr and
/// anything else").
pub const BASE_MAXSOCK: u64 = 10;
/// Most configuration files read (a directory's included).
const MAX_FILES: usize = 256;

/// The inputs of HAProxy 2.6's compute_ideal_maxconn().
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdealInput {
    /// RLIMIT_NOFILE soft at boot.
    pub rlim_cur: u64,
    /// RLIMIT_NOFILE hard at boot.
    pub rlim_max: u64,
    /// global `fd-hard-limit`.
    pub fd_hard_limit: Option<u64>,
    /// global.maxsock so far: [`BASE_MAXSOCK`], one per listener, the CLI's
    /// maxconn, one per health check (see [`Config::maxsock`]).
    pub maxsock: u64,
    pub nbthread: u64,
    /// compute_ideal_maxpipes(): 0 without splicing, -1 for "unlimited".
    pub pipes: i64,
    /// Async SSL engines x SSL sides (0 without `ssl-engine ... async`).
    pub engine_fds: u64,
}

/// HAProxy 2.6's compute_ideal_maxconn(): the fds left once listeners,
/// checks, one poller and one wake-up pipe per thread are counted, two per
/// connection (plus pipes and async engines), never under
/// [`DEFAULT_MAXCONN`]. Computed in C `int`s, as HAProxy does.
pub fn ideal_maxconn(i: &IdealInput) -> u64 {
    let clamp = |v: u64| v.min(i32::MAX as u64) as i64;
    let mut remain = clamp(i.rlim_cur).max(clamp(i.rlim_max));
    if let Some(h) = i.fd_hard_limit {
        if h > 0 && remain > clamp(h) {
            remain = clamp(h);
        }
    }
    remain -= clamp(i.maxsock);
    remain -= clamp(i.nbthread);
    remain -= 2 * clamp(i.nbthread);
    if i.pipes >= 0 && i.pipes * 2 < remain {
        remain -= i.pipes * 2;
    }
    let engine = clamp(i.engine_fds);
    let maxconn = if i.pipes < 0 {
        2 * remain / (5 + 2 * engine)
    } else {
        remain / (2 + engine)
    };
    maxconn.max(DEFAULT_MAXCONN as i64) as u64
}

/// A number from the configuration and where it was set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub value: u64,
    /// `file:line`.
    pub at: String,
}

/// The global section, as far as connection limits go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Global {
    pub maxconn: Option<Setting>,
    pub ulimit_n: Option<Setting>,
    pub nbthread: Option<Setting>,
    pub fd_hard_limit: Option<Setting>,
    /// `stats socket` addresses, with where each is set.
    pub stats_sockets: Vec<(String, String)>,
    /// Listeners the stats sockets open (a port range opens several).
    pub stats_listeners: u64,
    pub stats_maxconn: Option<u64>,
    /// A `stats` directive created the CLI frontend.
    pub cli: bool,
    pub master_worker: bool,
    /// `strict-limits` / `no strict-limits`; unset: on (the default).
    pub strict_limits: Option<bool>,
    /// `ssl-engine ... async` seen.
    pub async_engine: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    Frontend,
    Listen,
    Backend,
}

/// One frontend, listen or backend section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxy {
    pub kind: ProxyKind,
    pub name: String,
    pub at: String,
    /// Port ranges its bind lines listen on (inclusive).
    pub ports: Vec<(u16, u16)>,
    /// Listeners its bind lines open.
    pub listeners: u64,
    /// Its own maxconn, or the one of the defaults section it inherits.
    pub maxconn: Option<Setting>,
    pub default_backend: Option<String>,
    pub use_backends: Vec<String>,
    /// Servers (`server` lines and `server-template` counts).
    pub servers: u64,
    /// Sockets its health checks count in maxsock.
    pub check_socks: u64,
    pub splice: bool,
    pub ssl: bool,
    /// `mode http` (own or inherited); HAProxy's default is tcp.
    pub http: bool,
}

impl Proxy {
    fn new(kind: ProxyKind, name: &str, at: String) -> Proxy {
        Proxy {
            kind,
            name: name.to_string(),
            at,
            ports: Vec::new(),
            listeners: 0,
            maxconn: None,
            default_backend: None,
            use_backends: Vec::new(),
            servers: 0,
            check_socks: 0,
            splice: false,
            ssl: false,
            http: false,
        }
    }

    pub fn listens_on(&self, port: u16) -> bool {
        self.ports.iter().any(|(a, b)| (*a..=*b).contains(&port))
    }
}

/// A parsed configuration (one or more files, in load order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    pub global: Global,
    pub proxies: Vec<Proxy>,
    /// Files read.
    pub files: Vec<String>,
    /// What could not be read, one line each.
    pub problems: Vec<String>,
    pub notes: Vec<String>,
}

/// What a defaults section passes on.
#[derive(Debug, Clone, Default)]
struct Defaults {
    maxconn: Option<Setting>,
    check: bool,
    splice: bool,
    http: bool,
}

impl Config {
    /// global.maxsock as HAProxy has counted it when it derives maxconn:
    /// [`BASE_MAXSOCK`], a listener per bound address, the stats sockets and
    /// the CLI's maxconn, health-check sockets, and in master-worker mode the
    /// worker's socketpair to the master (which creates the CLI frontend) and
    /// each `-S` master socket with its own 10.
    pub fn maxsock(&self, master_worker: bool, master_sockets: u64) -> u64 {
        let g = &self.global;
        let mut m = BASE_MAXSOCK;
        m += self
            .proxies
            .iter()
            .map(|p| p.listeners + p.check_socks)
            .sum::<u64>();
        m += g.stats_listeners;
        if master_worker {
            m += 1;
        }
        if g.cli || master_worker {
            m += g.stats_maxconn.unwrap_or(DEFAULT_CLI_MAXCONN);
        }
        m += master_sockets * (1 + DEFAULT_CLI_MAXCONN);
        m
    }

    /// The frontend (or listen section) bound to `port`.
    pub fn frontend_on(&self, port: u16) -> Option<&Proxy> {
        self.proxies
            .iter()
            .find(|p| p.kind != ProxyKind::Backend && p.listens_on(port))
    }

    fn backend(&self, name: &str) -> Option<&Proxy> {
        self.proxies
            .iter()
            .find(|p| p.kind != ProxyKind::Frontend && p.name == name)
    }

    /// Descriptors one client connection of `fe` costs: 2 in `mode tcp`
    /// when it forwards to servers (the upstream connection lives as long
    /// as the client's), else 1: a frontend that answers itself, or `mode
    /// http`, where an upstream connection is held only while a request is
    /// in flight and then pooled (measured on 2.6.12: 300 idle keep-alive
    /// clients of an HTTP proxy held 315 fds and 2 upstream connections; in
    /// mode tcp 613 fds and 300).
    pub fn fds_per_connection(&self, fe: &Proxy) -> (u64, String) {
        let mode = |n: u64, why: String| {
            if fe.http && n == 2 {
                (
                    1,
                    format!("{why} in mode http: upstream connections are held per request in flight and pooled, idle client connections hold none"),
                )
            } else {
                (n, why)
            }
        };
        if fe.servers > 0 {
            return mode(2, format!("listen {} forwards to its servers", fe.name));
        }
        let mut names: Vec<&String> = fe.use_backends.iter().collect();
        names.extend(fe.default_backend.iter());
        for n in names {
            if n.contains("%[") {
                if self
                    .proxies
                    .iter()
                    .any(|p| p.kind == ProxyKind::Backend && p.servers > 0)
                {
                    return mode(
                        2,
                        format!("frontend {} picks its backend at run time ({n})", fe.name),
                    );
                }
                continue;
            }
            if let Some(b) = self.backend(n) {
                if b.servers > 0 {
                    return mode(
                        2,
                        format!("frontend {} forwards to backend {n}'s servers", fe.name),
                    );
                }
            }
        }
        (
            1,
            format!(
                "frontend {} has no backend with servers: it answers itself",
                fe.name
            ),
        )
    }

    /// compute_ideal_maxpipes() as it is called for a derived maxconn
    /// (global maxconn still 0): -1 when a splicing frontend (or backend)
    /// has no maxconn of its own.
    fn pipes(&self) -> i64 {
        let mut nbfe = 0i64;
        for p in self.proxies.iter().filter(|p| p.splice) {
            if p.kind != ProxyKind::Backend {
                match &p.maxconn {
                    Some(m) => nbfe = nbfe.saturating_add(m.value.min(i32::MAX as u64) as i64),
                    None => return -1,
                }
            }
            if p.kind != ProxyKind::Frontend {
                // A backend counts its fullconn, else global maxconn, which
                // is still 0 here: unlimited.
                return -1;
            }
        }
        if nbfe >= 4 {
            nbfe / 4
        } else {
            nbfe
        }
    }
}

/// Splits one configuration line into words as HAProxy's parse_line() does:
/// blanks separate; `#` starts a comment; `\` escapes the next character
/// (`\t \r \n \xHH` too) except in single quotes; `'...'` is literal;
/// `"..."` expands `$NAME` and `${NAME}` from `env`. `Err` for an
/// unterminated quote.
pub fn split_words(
    line: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<String>, String> {
    let b = line.as_bytes();
    let mut out: Vec<String> = Vec::new();
    let mut cur: Vec<u8> = Vec::new();
    let mut started = false;
    let mut quote: u8 = 0;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if quote == b'\'' {
            if c == b'\'' {
                quote = 0;
            } else {
                cur.push(c);
            }
            i += 1;
            continue;
        }
        if c == b'\\' && i + 1 < b.len() {
            let n = b[i + 1];
            if n == b'x'
                && i + 3 < b.len()
                && b[i + 2].is_ascii_hexdigit()
                && b[i + 3].is_ascii_hexdigit()
            {
                let h = std::str::from_utf8(&b[i + 2..i + 4])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                cur.push(h.unwrap_or(b'?'));
                i += 4;
            } else {
                cur.push(match n {
                    b't' => b'\t',
                    b'r' => b'\r',
                    b'n' => b'\n',
                    other => other,
                });
                i += 2;
            }
            started = true;
            continue;
        }
        if quote == b'"' {
            if c == b'"' {
                quote = 0;
                i += 1;
            } else if c == b'$' {
                let (name, used) = var_name(&b[i + 1..]);
                if name.is_empty() {
                    cur.push(c);
                    i += 1;
                } else {
                    if let Some(v) = env(&name) {
                        cur.extend_from_slice(v.as_bytes());
                    }
                    i += 1 + used;
                }
            } else {
                cur.push(c);
                i += 1;
            }
            continue;
        }
        match c {
            b'#' => break,
            b' ' | b'\t' | b'\r' | b'\n' => {
                if started {
                    out.push(String::from_utf8_lossy(&cur).into_owned());
                    cur.clear();
                    started = false;
                }
            }
            b'"' | b'\'' => {
                quote = c;
                started = true;
            }
            _ => {
                cur.push(c);
                started = true;
            }
        }
        i += 1;
    }
    if quote != 0 {
        return Err(format!("unterminated {} quote", quote as char));
    }
    if started {
        out.push(String::from_utf8_lossy(&cur).into_owned());
    }
    Ok(out)
}

/// `NAME` or `{NAME}` after a `$`: the name and the bytes it took.
fn var_name(b: &[u8]) -> (String, usize) {
    if b.first() == Some(&b'{') {
        if let Some(end) = b.iter().position(|c| *c == b'}') {
            let inner = String::from_utf8_lossy(&b[1..end]).into_owned();
            // ${NAME[,]} and similar suffixes: the name is what precedes '['.
            let name = inner.split('[').next().unwrap_or("").to_string();
            return (name, end + 1);
        }
        return (String::new(), 0);
    }
    let n = b
        .iter()
        .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
        .count();
    (String::from_utf8_lossy(&b[..n]).into_owned(), n)
}

/// Port ranges and listener count of one bind address list
/// (`:80,127.0.0.1:8000-8002,unix@/run/x.sock`).
pub fn bind_ports(list: &str) -> Result<(Vec<(u16, u16)>, u64), String> {
    let mut ports = Vec::new();
    let mut listeners = 0u64;
    for addr in list.split(',').filter(|a| !a.is_empty()) {
        let (proto, rest) = match addr.split_once('@') {
            Some((p, r)) => (p, r),
            None => ("", addr),
        };
        if matches!(proto, "unix" | "abns" | "fd" | "sockpair" | "uxst" | "uxdg")
            || rest.starts_with('/')
            || rest.starts_with("./")
        {
            listeners += 1;
            continue;
        }
        let Some((_, p)) = rest.rsplit_once(':') else {
            return Err(format!("bind address {addr:?} has no port"));
        };
        let (a, b) = match p.split_once('-') {
            Some((a, b)) => (a, b),
            None => (p, p),
        };
        let (Ok(a), Ok(b)) = (a.parse::<u16>(), b.parse::<u16>()) else {
            return Err(format!("bind address {addr:?}: bad port {p:?}"));
        };
        if a == 0 || b < a {
            return Err(format!("bind address {addr:?}: bad port range {p:?}"));
        }
        listeners += (b - a) as u64 + 1;
        ports.push((a, b));
    }
    Ok((ports, listeners))
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

/// What HAProxy's command line says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Args {
    /// `-f` files or directories and those after `--`, in order.
    pub files: Vec<String>,
    /// `-n N`: overrides global maxconn.
    pub maxconn: Option<u64>,
    /// `-N N`: the default maxconn of proxies.
    pub maxpconn: Option<u64>,
    /// `-W` / `-Ws`.
    pub master_worker: bool,
    /// `-S` master CLI sockets.
    pub master_sockets: u64,
    /// `-C DIR`: where relative paths start.
    pub chdir: Option<String>,
    /// `-m MB`: a memory cap that also sizes a derived maxconn.
    pub memmax: Option<u64>,
}

/// Parses HAProxy 2.6's command line (haproxy.c init_args()).
pub fn parse_args(cmdline: &[String]) -> Args {
    let mut a = Args::default();
    let mut i = 1;
    while i < cmdline.len() {
        let w = cmdline[i].as_str();
        let next = cmdline.get(i + 1).cloned();
        let Some(flag) = w.strip_prefix('-') else {
            i += 1;
            continue;
        };
        match flag {
            "-" => {
                a.files.extend(cmdline[i + 1..].iter().cloned());
                break;
            }
            "W" | "Ws" => a.master_worker = true,
            "sf" | "st" => {
                while cmdline.get(i + 1).is_some_and(|n| !n.starts_with('-')) {
                    i += 1;
                }
            }
            "x" | "cc" | "L" | "p" => i += 1,
            "S" => {
                a.master_sockets += 1;
                i += 1;
            }
            "f" => {
                if let Some(n) = next {
                    a.files.push(n);
                }
                i += 1;
            }
            "n" => {
                a.maxconn = next.and_then(|n| n.parse().ok());
                i += 1;
            }
            "N" => {
                a.maxpconn = next.and_then(|n| n.parse().ok());
                i += 1;
            }
            "m" => {
                a.memmax = next.and_then(|n| n.parse().ok());
                i += 1;
            }
            "C" => {
                a.chdir = next;
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    a
}

/// `show info` fields (`Name: value`).
pub fn parse_show_info(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            let k = k.trim();
            (!k.is_empty() && !k.contains(' ')).then(|| (k.to_string(), v.trim().to_string()))
        })
        .collect()
}

/// Each frontend's (scur, slim) from `show stat` CSV, by proxy name.
pub fn parse_show_stat(text: &str) -> BTreeMap<String, (Option<u64>, Option<u64>)> {
    let mut out = BTreeMap::new();
    let mut header: Option<Vec<String>> = None;
    for line in text.lines() {
        if let Some(h) = line.strip_prefix("# ") {
            header = Some(h.split(',').map(String::from).collect());
            continue;
        }
        let Some(h) = &header else { continue };
        let col = |name: &str| h.iter().position(|c| c == name);
        let cells: Vec<&str> = line.split(',').collect();
        let get = |name: &str| col(name).and_then(|i| cells.get(i)).copied();
        if get("svname") == Some("FRONTEND") {
            if let Some(px) = get("pxname") {
                out.insert(
                    px.to_string(),
                    (
                        get("scur").and_then(|v| v.parse().ok()),
                        get("slim").and_then(|v| v.parse().ok()),
                    ),
                );
            }
        }
    }
    out
}

/// What `show info` (and `show stat`) gave.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Live {
    pub maxconn: u64,
    pub hard_maxconn: Option<u64>,
    pub curr_conns: u64,
    pub ulimit_n: Option<u64>,
    pub maxsock: Option<u64>,
    pub nbthread: Option<u64>,
    pub version: Option<String>,
    pub frontends: BTreeMap<String, (Option<u64>, Option<u64>)>,
}

/// Interprets the reply to `show info;show stat`.
pub fn interpret(raw: &[u8]) -> Result<Live, String> {
    let text = String::from_utf8_lossy(raw);
    let info = parse_show_info(&text);
    let num = |k: &str| info.get(k).and_then(|v| v.parse::<u64>().ok());
    let (Some(maxconn), Some(curr)) = (num("Maxconn"), num("CurrConns")) else {
        let head: String = text
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .filter(|c| !c.is_control())
            .take(80)
            .collect();
        return Err(format!(
            "no Maxconn/CurrConns in the reply (it began {head:?})"
        ));
    };
    Ok(Live {
        maxconn,
        hard_maxconn: num("Hard_maxconn"),
        curr_conns: curr,
        ulimit_n: num("Ulimit-n"),
        maxsock: num("Maxsock"),
        nbthread: num("Nbthread"),
        version: info.get("Version").cloned(),
        frontends: parse_show_stat(&text),
    })
}

/// Sends `show info;show stat` to the stats socket `addr` (as the
/// configuration spells it) and reads until HAProxy closes, within `timeout`.
pub fn query(host: &Host, addr: &str, timeout: Duration) -> Result<Live, String> {
    const REQ: &[u8] = b"show info;show stat\n";
    let (proto, rest) = addr.split_once('@').unwrap_or(("", addr));
    let raw = match proto {
        "ipv4" | "ipv6" | "tcp" | "tcp4" | "tcp6" => tcp_query(rest, REQ, timeout)?,
        "" if !rest.starts_with('/') && rest.contains(':') => tcp_query(rest, REQ, timeout)?,
        "" | "unix" => {
            let path = host.path(rest);
            unix_query(
                move || std::os::unix::net::UnixStream::connect(&path),
                REQ,
                timeout,
            )?
        }
        "abns" => {
            let name = rest.to_string();
            unix_query(
                move || {
                    use std::os::linux::net::SocketAddrExt;
                    let a = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
                    std::os::unix::net::UnixStream::connect_addr(&a)
                },
                REQ,
                timeout,
            )?
        }
        other => {
            return Err(format!(
                "stats socket {addr}: {other}@ addresses are not asked"
            ))
        }
    };
    interpret(&raw)
}

fn tcp_query(addr: &str, req: &[u8], timeout: Duration) -> Result<Vec<u8>, String> {
    let a = addr.replace('*', "127.0.0.1");
    let a = if a.starts_with(':') {
        format!("127.0.0.1{a}")
    } else {
        a
    };
    let sa: std::net::SocketAddr = a
        .parse()
        .map_err(|_| format!("stats socket {addr}: not an address"))?;
    wire::exchange(sa, req, timeout, |_| false)
}

/// A Unix-socket exchange bounded by `timeout` even where connect() would
/// block (a full backlog): the exchange runs on a thread of its own.
fn unix_query<F>(connect: F, req: &'static [u8], timeout: Duration) -> Result<Vec<u8>, String>
where
    F: FnOnce() -> std::io::Result<std::os::unix::net::UnixStream> + Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::channel();
    let deadline = Instant::now() + timeout;
    std::thread::spawn(move || {
        let r = (|| {
            let mut s = connect().map_err(|e| e.to_string())?;
            s.set_write_timeout(Some(timeout)).ok();
            s.write_all(req).map_err(|e| e.to_string())?;
            wire::read_reply(&mut s, deadline, &|_| false)
        })();
        let _ = tx.send(r);
    });
    rx.recv_timeout(timeout + Duration::from_millis(50))
        .map_err(|_| "no reply before the timeout".to_string())?
}

/// Reads HAProxy's caps.
pub fn inspect(seen: &Seen, host: &Host) -> AppInfo {
    let mut info = AppInfo {
        kind: "haproxy".into(),
        comm: seen.main.comm.clone(),
        fds_per_connection: 1,
        // accept() meets EMFILE at the soft limit; HAProxy keeps no fds back.
        fd_reserve: Some(0),
        at_cap: Some(AtCap::StopsAccepting),
        ..Default::default()
    };
    let args = parse_args(&seen.cmdline);
    let pid = seen.main.pid;
    let environ = host
        .read(&format!("/proc/{pid}/environ"))
        .unwrap_or_default();
    let env_map: BTreeMap<String, String> = environ
        .split('\0')
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    let env = |k: &str| env_map.get(k).cloned();
    let mut files = args.files.clone();
    if files.is_empty() {
        info.notes.push(format!(
            "no -f on HAProxy's command line: read {DEFAULT_CONFIG}"
        ));
        files.push(DEFAULT_CONFIG.to_string());
    }
    let cwd = args.chdir.clone().unwrap_or_else(|| {
        std::fs::read_link(host.path(&format!("/proc/{pid}/cwd")))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "/".into())
    });
    let cfg = read_config(host, &files, &cwd, &env);
    // The files as read (relative ones resolved), else as named.
    let files_desc = if cfg.files.is_empty() {
        files.join(", ")
    } else {
        cfg.files.join(", ")
    };
    info.notes.extend(cfg.notes.iter().cloned());
    info.problems.extend(cfg.problems.iter().cloned());
    let read_any = !cfg.files.is_empty();
    let master_worker = args.master_worker || cfg.global.master_worker;

    // Workers hold the connections in master-worker mode.
    if master_worker {
        let kids = host.children(pid);
        info.connection_pids = seen
            .snap
            .processes
            .iter()
            .filter(|p| kids.contains(&p.pid))
            .map(|p| p.pid)
            .collect();
    }

    // Descriptors per client connection, from the frontend on the port.
    let port = seen.address.map(|a| a.port());
    let fe = port.and_then(|p| cfg.frontend_on(p));
    match fe {
        Some(fe) => {
            let (n, why) = cfg.fds_per_connection(fe);
            info.fds_per_connection = n;
            info.notes
                .push(format!("{n} fd(s) per client connection: {why}"));
        }
        None if read_any => {
            let proxied = cfg
                .proxies
                .iter()
                .any(|p| p.kind != ProxyKind::Frontend && p.servers > 0 && !p.http);
            info.fds_per_connection = if proxied { 2 } else { 1 };
            info.notes.push(format!(
                "no frontend of {files_desc} binds port {}: {} fd(s) per connection assumed",
                port.map_or("?".into(), |p| p.to_string()),
                info.fds_per_connection
            ));
        }
        None => {}
    }

    // Live, on the stats socket.
    let mut live = None;
    if seen.opts.live {
        // The first stats socket that answers (at most four tried).
        let mut errors = Vec::new();
        for (sock, _) in cfg.global.stats_sockets.iter().take(4) {
            match query(host, sock, seen.opts.timeout) {
                Ok(l) => {
                    live = Some((sock.clone(), l));
                    break;
                }
                Err(e) => errors.push(format!("{sock}: {e}")),
            }
        }
        if live.is_none() && !errors.is_empty() {
            info.problems.push(format!(
                "HAProxy stats socket not read ({}): maxconn taken from the configuration",
                errors.join("; ")
            ));
        }
    }
    if !read_any && live.is_none() {
        // Kernel limits only: the problem line is already there.
        info.caps.clear();
        return info;
    }

    let strict = cfg.global.strict_limits.unwrap_or(true);
    let explicit = args
        .maxconn
        .map(|v| {
            (
                v,
                "-n in HAProxy's command line".to_string(),
                CapSource::CommandLine,
            )
        })
        .or_else(|| {
            cfg.global
                .maxconn
                .as_ref()
                .map(|s| (s.value, s.at.clone(), CapSource::File))
        });

    // What HAProxy derived, reproduced from the process's fd limits.
    let nbthread = cfg
        .global
        .nbthread
        .as_ref()
        .map(|s| s.value)
        .or_else(|| live.as_ref().and_then(|(_, l)| l.nbthread))
        .or_else(|| worker_threads(seen, host, &info.connection_pids))
        .or_else(|| cpus_allowed(host, pid))
        .unwrap_or(1)
        .max(1);
    let rlim_max = seen.main.nofile_hard.unwrap_or(seen.snap.system.nr_open);
    let rlim_cur = seen.main.nofile_soft.unwrap_or(seen.snap.system.nr_open);
    let maxsock = cfg.maxsock(master_worker, args.master_sockets);
    let ssl_sides = u64::from(cfg.proxies.iter().any(|p| p.ssl));
    let input = IdealInput {
        rlim_cur,
        rlim_max,
        fd_hard_limit: cfg.global.fd_hard_limit.as_ref().map(|s| s.value),
        maxsock,
        nbthread,
        pipes: cfg.pipes(),
        engine_fds: if cfg.global.async_engine {
            ssl_sides
        } else {
            0
        },
    };
    let derived = ideal_maxconn(&input);
    let derivation = format!(
        "derived by HAProxy at start from its fd limit: (max(soft, hard) {} - {maxsock} fds for listeners, checks and the CLI - 3 x {nbthread} threads) / 2",
        rlim_cur.max(rlim_max)
    );
    let global_remedy = format!(
        "set maxconn N in the global section of {} and reload (each connection needs 2 fds: HAProxy raises its own fd limit as root)",
        explicit
            .as_ref()
            .map(|(_, at, _)| at.rsplit_once(':').map_or(at.clone(), |(f, _)| f.to_string()))
            .unwrap_or_else(|| files_desc.clone())
    );

    let (limit, used, source, read_from, explanation) = match &live {
        Some((sock, l)) => {
            info.version = l.version.clone();
            info.connections = Some(l.curr_conns);
            if let Some(h) = l.hard_maxconn.filter(|h| *h != l.maxconn) {
                info.notes.push(format!(
                    "maxconn {} was set at run time (set maxconn global); {h} at start",
                    l.maxconn
                ));
            }
            let how = if explicit.is_some() {
                format!("maxconn {}", l.maxconn)
            } else {
                if derived != l.maxconn {
                    info.notes.push(format!(
                        "headroom's reproduction of HAProxy's derived maxconn gives {derived}, the server says {}",
                        l.maxconn
                    ));
                }
                format!("maxconn {}, {derivation}", l.maxconn)
            };
            (
                l.maxconn,
                Some(l.curr_conns),
                CapSource::Live,
                format!("show info on {sock}"),
                how,
            )
        }
        None => match &explicit {
            Some((v, at, src)) => (*v, None, *src, at.clone(), format!("maxconn {v}")),
            None => {
                if let Some(m) = args.memmax {
                    info.problems.push(format!(
                        "-m {m} caps HAProxy's memory: its derived maxconn also depends on it, not reproduced here"
                    ));
                }
                if cfg
                    .global
                    .ulimit_n
                    .as_ref()
                    .is_some_and(|u| u.value >= rlim_max)
                {
                    info.notes.push(
                        "ulimit-n at or above the hard limit: the hard limit HAProxy started with is not known, the derivation may differ"
                            .into(),
                    );
                }
                (
                    derived,
                    None,
                    CapSource::Derived,
                    format!("RLIMIT_NOFILE of pid {pid} and {files_desc}"),
                    format!("maxconn {derived}, {derivation}"),
                )
            }
        },
    };
    let remedy = if explicit.is_none() {
        format!("{global_remedy}; or raise the fd hard limit HAProxy starts with (LimitNOFILE=)")
    } else {
        global_remedy
    };
    info.caps.push(AppCap {
        name: "haproxy-maxconn".into(),
        scope: Scope::System,
        setting: "maxconn".into(),
        limit,
        used,
        reserve: 0,
        per_connection: 1,
        source,
        read_from,
        explanation: format!(
            "{explanation}: HAProxy stops accepting while it holds this many client connections over all its frontends (the stats socket excluded)"
        ),
        remedy,
    });

    // The frontend's own maxconn, where it is lower.
    if let Some(fe) = fe {
        let live_fe = live
            .as_ref()
            .and_then(|(sock, l)| Some((sock, *l.frontends.get(&fe.name)?)));
        let own = fe.maxconn.clone().or_else(|| {
            args.maxpconn.filter(|v| *v > 0).map(|v| Setting {
                value: v,
                at: "-N in HAProxy's command line".into(),
            })
        });
        let cap = match (live_fe, &own) {
            (Some((sock, (scur, Some(slim)))), _) if slim < limit => Some((
                slim,
                scur,
                CapSource::Live,
                format!("show stat on {sock} (slim of {})", fe.name),
            )),
            (Some(_), _) => None,
            (None, Some(s)) if s.value < limit => Some((
                s.value,
                None,
                if s.at.starts_with("-N") {
                    CapSource::CommandLine
                } else {
                    CapSource::File
                },
                s.at.clone(),
            )),
            _ => None,
        };
        if let Some((v, used, source, read_from)) = cap {
            let file = own
                .as_ref()
                .map(|s| {
                    s.at.rsplit_once(':')
                        .map_or(s.at.clone(), |(f, _)| f.to_string())
                })
                .unwrap_or_else(|| files_desc.clone());
            info.caps.push(AppCap {
                name: "haproxy-frontend-maxconn".into(),
                scope: Scope::System,
                setting: format!("maxconn (frontend {})", fe.name),
                limit: v,
                used,
                reserve: 0,
                per_connection: 1,
                source,
                read_from,
                explanation: format!(
                    "maxconn {v} of frontend {}: it stops accepting while it holds this many connections",
                    fe.name
                ),
                remedy: format!("raise maxconn in frontend {} ({file}), or remove it to use the global one", fe.name),
            });
        }
    }

    // HAProxy sizes its fd limit itself.
    match (strict, &cfg.global.ulimit_n) {
        (true, None) => info.notes.push(
            "HAProxy raised its RLIMIT_NOFILE to maxsock (2 per connection + listeners) at start; strict-limits (the default) stops it from starting when it cannot"
                .into(),
        ),
        (true, Some(u)) => info.notes.push(format!(
            "ulimit-n {} ({}) sets HAProxy's RLIMIT_NOFILE; strict-limits stops it from starting below maxsock",
            u.value, u.at
        )),
        (false, _) => info.notes.push(
            "no strict-limits: HAProxy runs even when it could not raise its fd limit to maxsock; then accept() meets EMFILE first"
                .into(),
        ),
    }
    info
}

/// Threads of a process holding connections (nbthread when nothing sets it).
fn worker_threads(seen: &Seen, host: &Host, holders: &[u32]) -> Option<u64> {
    let pid = holders.first().copied().unwrap_or(seen.main.pid);
    host.status_field(pid, "Threads")?.parse().ok()
}

/// CPUs the process may run on (HAProxy's default nbthread).
fn cpus_allowed(host: &Host, pid: u32) -> Option<u64> {
    let list = host.status_field(pid, "Cpus_allowed_list")?;
    let mut n = 0u64;
    for part in list.split(',').filter(|p| !p.is_empty()) {
        n += match part.split_once('-') {
            Some((a, b)) => {
                b.trim()
                    .parse::<u64>()
                    .ok()?
                    .checked_sub(a.trim().parse().ok()?)?
                    + 1
            }
            None => {
                part.trim().parse::<u64>().ok()?;
                1
            }
        };
    }
    (n > 0).then_some(n.min(64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Options;
    use headroom_core::{predict, ModelConfig, ProcessInfo, Snapshot};
    use std::path::PathBuf;

    const SHOW_INFO: &str = include_str!("../tests/fixtures/haproxy/show-info-2.6.12.txt");
    const SHOW_STAT: &str = include_str!("../tests/fixtures/haproxy/show-stat-2.6.12.csv");
    const SHOW_BOTH: &[u8] =
        include_bytes!("../tests/fixtures/haproxy/show-info-and-stat-2.6.12.txt");
    const LIVE_CFG: &str = include_str!("../tests/fixtures/haproxy/live-2.6.12.cfg");
    const DEBIAN_CFG: &str = include_str!("../tests/fixtures/haproxy/debian-2.6.cfg");

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn input(rlim: u64, maxsock: u64) -> IdealInput {
        IdealInput {
            rlim_cur: rlim,
            rlim_max: rlim,
            fd_hard_limit: None,
            maxsock,
            nbthread: 2,
            pipes: 0,
            engine_fds: 0,
        }
    }

    #[test]
    fn ideal_maxconn_matches_show_info_of_real_2_6_12() {
        // One frontend, a stats socket: maxsock 10 + 1 + 1 + 10 = 22.
        assert_eq!(ideal_maxconn(&input(1000, 22)), 486);
        assert_eq!(ideal_maxconn(&input(4000, 22)), 1986);
        // Soft 1000, hard 4000: the hard limit counts.
        assert_eq!(
            ideal_maxconn(&IdealInput {
                rlim_cur: 1000,
                ..input(4000, 22)
            }),
            1986
        );
        // -W adds the worker's socketpair: 23; -S adds 1 + 10 more: 34.
        assert_eq!(ideal_maxconn(&input(1000, 23)), 485);
        assert_eq!(ideal_maxconn(&input(1000, 34)), 480);
        // Two frontends and a stats socket (the live fixture): 485.
        assert_eq!(ideal_maxconn(&input(1000, 23)), 485);
    }

    #[test]
    fn ideal_maxconn_floor_hard_limit_pipes_and_engines() {
        assert_eq!(ideal_maxconn(&input(100, 22)), DEFAULT_MAXCONN);
        assert_eq!(ideal_maxconn(&input(0, 22)), DEFAULT_MAXCONN);
        assert_eq!(
            ideal_maxconn(&IdealInput {
                fd_hard_limit: Some(1000),
                ..input(1 << 20, 22)
            }),
            486
        );
        // Unlimited pipes: 2 * remain / 5.
        assert_eq!(
            ideal_maxconn(&IdealInput {
                pipes: -1,
                ..input(1000, 22)
            }),
            388
        );
        // Fixed pipes are subtracted only when they fit.
        assert_eq!(
            ideal_maxconn(&IdealInput {
                pipes: 100,
                ..input(1000, 22)
            }),
            386
        );
        assert_eq!(
            ideal_maxconn(&IdealInput {
                pipes: 10_000,
                ..input(1000, 22)
            }),
            486
        );
        assert_eq!(
            ideal_maxconn(&IdealInput {
                engine_fds: 1,
                ..input(1000, 22)
            }),
            324
        );
        // Huge limits are C ints, not overflows.
        assert_eq!(
            ideal_maxconn(&input(u64::MAX, 22)),
            (i32::MAX as u64 - 28) / 2
        );
    }

    #[test]
    fn show_info_and_stat_of_real_2_6_12() {
        let i = parse_show_info(SHOW_INFO);
        assert_eq!(i.get("Maxconn").map(String::as_str), Some("485"));
        assert_eq!(i.get("Ulimit-n").map(String::as_str), Some("999"));
        let s = parse_show_stat(SHOW_STAT);
        assert_eq!(s.get("fe"), Some(&(Some(0), Some(300))));
        assert_eq!(s.get("other"), Some(&(Some(0), Some(485))));
        assert_eq!(s.len(), 2);
        let l = interpret(SHOW_BOTH).unwrap();
        assert_eq!(
            (l.maxconn, l.hard_maxconn, l.curr_conns),
            (485, Some(485), 0)
        );
        assert_eq!(
            (l.ulimit_n, l.maxsock, l.nbthread),
            (Some(999), Some(999), Some(2))
        );
        assert_eq!(l.version.as_deref(), Some("2.6.12-1+deb12u4"));
        assert_eq!(l.frontends.get("fe"), Some(&(Some(0), Some(300))));
    }

    #[test]
    fn cli_errors_and_garbage_are_errors() {
        assert!(interpret(b"Permission denied\n\n")
            .unwrap_err()
            .contains("Permission denied"));
        assert!(interpret(b"Unknown command: 'show'\n\n").is_err());
        assert!(interpret(&[0u8; 3000]).is_err());
        assert!(interpret(b"Maxconn: x\nCurrConns: 1\n").is_err());
        assert!(parse_show_stat("# a,b\n\x00,\u{ff}\n,,,,\n").is_empty());
    }

    #[test]
    fn words_follow_haproxy_quoting_comments_and_env() {
        let env = |k: &str| (k == "PORT").then(|| "8080".to_string());
        let w = |s: &str| split_words(s, &env).unwrap();
        assert_eq!(w("  maxconn 1000 # comment"), vec!["maxconn", "1000"]);
        assert_eq!(
            w(r#"bind "127.0.0.1:${PORT}" name 'a b' c\ d"#),
            vec!["bind", "127.0.0.1:8080", "name", "a b", "c d"]
        );
        assert_eq!(
            w(r#"x "$PORT" '$PORT' \# "#),
            vec!["x", "8080", "$PORT", "#"]
        );
        assert_eq!(w(r#"x "${NOPE}" "a#b""#), vec!["x", "", "a#b"]);
        assert_eq!(w(r"x \x41\t"), vec!["x", "A\t"]);
        assert_eq!(w("#only"), Vec::<String>::new());
        assert!(split_words(r#"maxconn "10"#, &env).is_err());
        assert!(split_words("maxconn '10", &env).is_err());
    }

    #[test]
    fn bind_lists_ports_ranges_and_sockets() {
        assert_eq!(bind_ports(":80").unwrap(), (vec![(80, 80)], 1));
        assert_eq!(
            bind_ports("*:80,127.0.0.1:8000-8002").unwrap(),
            (vec![(80, 80), (8000, 8002)], 4)
        );
        assert_eq!(bind_ports(":::443").unwrap(), (vec![(443, 443)], 1));
        assert_eq!(
            bind_ports("ipv6@[::1]:9000").unwrap(),
            (vec![(9000, 9000)], 1)
        );
        assert_eq!(
            bind_ports("unix@/run/a.sock,/run/b.sock,abns@x,fd@3").unwrap(),
            (vec![], 4)
        );
        assert!(bind_ports("127.0.0.1").is_err());
        assert!(bind_ports(":0").is_err());
        assert!(bind_ports(":9-8").is_err());
        assert!(bind_ports(":99999").is_err());
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

    #[test]
    fn command_line_files_flags_and_master_sockets() {
        let c = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        let a = parse_args(&c("/usr/sbin/haproxy -Ws -f /etc/haproxy/haproxy.cfg -p /run/haproxy.pid -S /run/haproxy-master.sock"));
        assert_eq!(a.files, vec!["/etc/haproxy/haproxy.cfg"]);
        assert!(a.master_worker);
        assert_eq!(a.master_sockets, 1);
        let a = parse_args(&c(
            "haproxy -db -n 77 -N 5 -sf 12 13 -f a.cfg -C /etc -x /s -- b.cfg conf.d",
        ));
        assert_eq!(a.files, vec!["a.cfg", "b.cfg", "conf.d"]);
        assert_eq!(
            (a.maxconn, a.maxpconn, a.chdir.as_deref()),
            (Some(77), Some(5), Some("/etc"))
        );
        assert!(!a.master_worker);
        assert_eq!(parse_args(&c("haproxy -f")).files, Vec::<String>::new());
    }

    fn root_with(files: &[(&str, &str)]) -> PathBuf {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "headroom-apps-haproxy-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        for (p, text) in files {
            let full = dir.join(p.trim_start_matches('/'));
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(full, text).unwrap();
        }
        dir
    }

    fn snap(soft: u64, hard: u64, port: u16) -> Snapshot {
        Snapshot {
            processes: vec![ProcessInfo {
                pid: u32::MAX - 11,
                comm: "haproxy".into(),
                nofile_soft: Some(soft),
                nofile_hard: Some(hard),
                open_fds: 13,
                open_fds_peak: 13,
                connections: 0,
                ..Default::default()
            }],
            listeners: vec![headroom_core::Listener {
                address: format!("127.0.0.1:{port}"),
                port,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn run(root: &std::path::Path, s: &Snapshot, cmdline: &str, live: bool) -> AppInfo {
        let opts = Options {
            root: root.to_path_buf(),
            live,
            timeout: Duration::from_secs(2),
            ..Options::default()
        };
        let seen = Seen {
            snap: s,
            main: &s.processes[0],
            cmdline: cmdline.split(' ').map(String::from).collect(),
            address: crate::host::query_address(s),
            opts: &opts,
        };
        inspect(&seen, &Host::new(root))
    }

    fn predicted(mut s: Snapshot, info: AppInfo) -> (u64, String) {
        s.app = Some(info);
        let p = predict(&s, &ModelConfig::default());
        (p.predicted_max_connections, p.binding)
    }

    const SELF_ANSWERING: &str = "global\n    stats socket /run/h.sock\n    nbthread 2\ndefaults\n    mode http\nfrontend fe\n    bind 127.0.0.1:8080\n    http-request return status 200\n";

    #[test]
    fn derived_maxconn_from_the_file_when_no_stats_socket_answers() {
        // The stats socket path does not exist under the root: one problem,
        // then the derivation from the file and the process's limits.
        let root = root_with(&[("/etc/h.cfg", SELF_ANSWERING)]);
        let s = snap(1000, 1000, 8080);
        let info = run(&root, &s, "haproxy -db -f /etc/h.cfg", true);
        assert_eq!(info.problems.len(), 1, "{:?}", info.problems);
        assert!(info.problems[0].contains("/run/h.sock"));
        let c = &info.caps[0];
        assert_eq!(
            (c.name.as_str(), c.limit, c.source),
            ("haproxy-maxconn", 486, CapSource::Derived)
        );
        assert_eq!(info.fds_per_connection, 1);
        assert_eq!(predicted(s, info), (486, "haproxy-maxconn".into()));
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn explicit_maxconn_1000_predicts_1000() {
        let root = root_with(&[(
            "/etc/h.cfg",
            &SELF_ANSWERING.replace("nbthread 2", "maxconn 1000"),
        )]);
        // HAProxy raised its own limit to maxsock 2028.
        let s = snap(2028, 20000, 8080);
        let info = run(&root, &s, "haproxy -db -f /etc/h.cfg", false);
        let c = &info.caps[0];
        assert_eq!(
            (c.limit, c.source, c.read_from.as_str()),
            (1000, CapSource::File, "/etc/h.cfg:3")
        );
        assert_eq!(predicted(s, info), (1000, "haproxy-maxconn".into()));
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn no_strict_limits_under_a_low_fd_limit_binds_on_nofile() {
        let cfg = SELF_ANSWERING.replace("nbthread 2", "maxconn 1000\n    no strict-limits");
        let root = root_with(&[("/etc/h.cfg", &cfg)]);
        // Measured: nofile 800, 13 fds open at idle, held 787.
        let s = snap(800, 800, 8080);
        let info = run(&root, &s, "haproxy -db -f /etc/h.cfg", false);
        assert!(info.notes.iter().any(|n| n.contains("no strict-limits")));
        assert_eq!(predicted(s, info), (787, "nofile".into()));
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn frontend_maxconn_lower_than_global_is_a_cap_of_its_own() {
        let cfg = SELF_ANSWERING
            .replace("nbthread 2", "maxconn 1000")
            .replace("mode http", "mode http\n    maxconn 300");
        let root = root_with(&[("/etc/h.cfg", &cfg)]);
        let s = snap(2028, 2028, 8080);
        let info = run(&root, &s, "haproxy -f /etc/h.cfg", false);
        assert_eq!(info.caps.len(), 2);
        assert_eq!(info.caps[1].setting, "maxconn (frontend fe)");
        assert_eq!(predicted(s, info), (300, "haproxy-frontend-maxconn".into()));
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn command_line_n_overrides_the_file() {
        let root = root_with(&[(
            "/etc/h.cfg",
            &SELF_ANSWERING.replace("nbthread 2", "maxconn 1000"),
        )]);
        let s = snap(20000, 20000, 8080);
        let info = run(&root, &s, "haproxy -n 600 -f /etc/h.cfg", false);
        assert_eq!(
            (info.caps[0].limit, info.caps[0].source),
            (600, CapSource::CommandLine)
        );
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn unreadable_config_is_one_problem_and_kernel_limits_only() {
        let root = root_with(&[]);
        let s = snap(1000, 1000, 8080);
        let info = run(&root, &s, "haproxy -f /etc/haproxy/missing.cfg", true);
        assert!(info.caps.is_empty());
        assert_eq!(info.problems.len(), 1, "{:?}", info.problems);
        assert!(info.problems[0].starts_with("HAProxy configuration /etc/haproxy/missing.cfg:"));
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn relative_config_is_resolved_against_chdir() {
        let root = root_with(&[("/etc/haproxy/h.cfg", "global\n  maxconn 900\n")]);
        let s = snap(20000, 20000, 8080);
        let info = run(&root, &s, "haproxy -C /etc/haproxy -f h.cfg", false);
        let c = &info.caps[0];
        assert_eq!(
            (c.limit, c.read_from.as_str()),
            (900, "/etc/haproxy/h.cfg:2")
        );
        assert!(
            c.remedy.contains("global section of /etc/haproxy/h.cfg"),
            "{}",
            c.remedy
        );
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn config_directory_is_read_in_name_order() {
        let root = root_with(&[
            (
                "/etc/h.d/20-fe.cfg",
                "frontend fe\n  bind :8080\n  http-request return status 200\n",
            ),
            ("/etc/h.d/10-global.cfg", "global\n  maxconn 700\n"),
            ("/etc/h.d/ignored.txt", "global\n  maxconn 1\n"),
        ]);
        let s = snap(20000, 20000, 8080);
        let info = run(&root, &s, "haproxy -f /etc/h.d", false);
        assert_eq!(info.caps[0].limit, 700);
        assert_eq!(info.caps[0].read_from, "/etc/h.d/10-global.cfg:2");
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn live_show_info_on_a_unix_socket_wins() {
        let root = root_with(&[("/etc/h.cfg", SELF_ANSWERING)]);
        let sock = root.join("run/h.sock");
        std::fs::create_dir_all(sock.parent().unwrap()).unwrap();
        let l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let t = std::thread::spawn(move || {
            use std::io::Read;
            let (mut c, _) = l.accept().unwrap();
            let mut b = [0u8; 64];
            let n = c.read(&mut b).unwrap();
            let reply = String::from_utf8_lossy(SHOW_BOTH)
                .replace("CurrConns: 0", "CurrConns: 40")
                .replace("fe,FRONTEND,,,0,", "fe,FRONTEND,,,40,");
            c.write_all(reply.as_bytes()).unwrap();
            b[..n].to_vec()
        });
        let mut s = snap(999, 1000, 8080);
        s.processes[0].connections = 40;
        let info = run(&root, &s, "haproxy -f /etc/h.cfg", true);
        assert_eq!(t.join().unwrap(), b"show info;show stat\n");
        assert!(info.problems.is_empty(), "{:?}", info.problems);
        let c = &info.caps[0];
        assert_eq!(
            (c.limit, c.used, c.source),
            (485, Some(40), CapSource::Live)
        );
        assert_eq!(info.connections, Some(40));
        assert_eq!(info.version.as_deref(), Some("2.6.12-1+deb12u4"));
        // The live fixture's frontend `fe` has maxconn 300 (show stat slim).
        let f = &info.caps[1];
        assert_eq!(
            (f.limit, f.used, f.source),
            (300, Some(40), CapSource::Live)
        );
        assert_eq!(predicted(s, info), (300, "haproxy-frontend-maxconn".into()));
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn silent_stats_socket_times_out_within_the_bound() {
        let root = root_with(&[("/etc/h.cfg", SELF_ANSWERING)]);
        let sock = root.join("run/h.sock");
        std::fs::create_dir_all(sock.parent().unwrap()).unwrap();
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let t0 = Instant::now();
        let r = query(&Host::new(&root), "/run/h.sock", Duration::from_millis(150));
        assert!(r.unwrap_err().contains("timeout"));
        assert!(t0.elapsed() < Duration::from_secs(1));
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn cpus_allowed_list_counts_ranges() {
        let root = root_with(&[(
            "/proc/7/status",
            "Name:\tx\nCpus_allowed_list:\t0-3,8,10-11\n",
        )]);
        assert_eq!(cpus_allowed(&Host::new(&root), 7), Some(7));
        std::fs::remove_dir_all(root).unwrap();
    }
}
