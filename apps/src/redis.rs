//! Redis and Valkey: `maxclients`.
//!
//! Asked live over RESP on the server's own port (`AUTH` first when a
//! password is given, then `CONFIG GET maxclients` and `INFO`), else read from
//! the configuration file (the one the command line names, else the
//! distribution's default path) and the documented default 10000.
//!
//! What Redis does (7.0, `acceptCommonHandler` in networking.c): a new
//! connection is refused with `-ERR max number of clients reached` when
//! `listLength(server.clients) + cluster bus connections >= maxclients`.
//! `server.clients` holds every connected client, replicas and the link to
//! its own master included; INFO's `connected_clients` leaves the replicas
//! out (`connected_slaves`) and `cluster_connections` gives the bus links.
//! At start (`adjustOpenFilesLimit` in server.c) Redis raises RLIMIT_NOFILE
//! to maxclients + 32; when it cannot, it lowers maxclients to the limit it
//! got less 32 and logs it. Measured on 7.0.15: `maxclients 500` held 500
//! clients; under `prlimit --nofile=300:300` without CAP_SYS_RESOURCE it
//! reported maxclients 268 and held 268.

use crate::host::Host;
use crate::{wire, Seen};
use headroom_core::{AppCap, AppInfo, AtCap, CapSource, Scope};
use std::net::SocketAddr;
use std::time::Duration;

/// `maxclients` when nothing sets it.
pub const DEFAULT_MAXCLIENTS: u64 = 10_000;
/// CONFIG_MIN_RESERVED_FDS (server.h): the descriptors Redis keeps beside
/// maxclients when it sizes its fd limit.
pub const RESERVED_FDS: u64 = 32;
/// Deepest `include` chain followed.
const MAX_INCLUDE_DEPTH: usize = 8;
/// Most files read for one configuration (includes counted).
const MAX_FILES: usize = 64;
/// Deepest nesting of RESP arrays accepted in a reply.
const MAX_RESP_DEPTH: usize = 8;
/// Most elements accepted in one RESP array.
const MAX_RESP_ELEMENTS: i64 = 1 << 16;

/// One RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    /// `None`: the null bulk string (`$-1`).
    Bulk(Option<Vec<u8>>),
    /// `None`: the null array (`*-1`).
    Array(Option<Vec<Resp>>),
}

/// The outcome of parsing the front of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// More bytes are needed.
    Incomplete,
    /// Not RESP: what is wrong.
    Bad(String),
    /// A whole reply and the bytes it took.
    Done(Resp, usize),
}

/// Parses one RESP2 reply from the front of `buf`. Bounded: no recursion
/// past [`MAX_RESP_DEPTH`], no array past [`MAX_RESP_ELEMENTS`], lengths
/// checked against [`wire::MAX_REPLY_BYTES`].
pub fn parse_resp(buf: &[u8]) -> Parsed {
    parse_at(buf, 0)
}

fn parse_at(buf: &[u8], depth: usize) -> Parsed {
    if depth > MAX_RESP_DEPTH {
        return Parsed::Bad(format!("arrays nested deeper than {MAX_RESP_DEPTH}"));
    }
    let Some(&kind) = buf.first() else {
        return Parsed::Incomplete;
    };
    let Some(end) = find_crlf(buf) else {
        if buf.len() > 4096 || (buf.len() > 1 && !b"+-:$*".contains(&kind)) {
            return Parsed::Bad(bad_start(buf));
        }
        return Parsed::Incomplete;
    };
    let line = &buf[1..end];
    let after = end + 2;
    match kind {
        b'+' => Parsed::Done(Resp::Simple(lossy(line)), after),
        b'-' => Parsed::Done(Resp::Error(lossy(line)), after),
        b':' => match number(line) {
            Some(n) => Parsed::Done(Resp::Int(n), after),
            None => Parsed::Bad(format!("bad integer {:?}", lossy(line))),
        },
        b'$' => {
            let Some(n) = number(line) else {
                return Parsed::Bad(format!("bad bulk length {:?}", lossy(line)));
            };
            if n == -1 {
                return Parsed::Done(Resp::Bulk(None), after);
            }
            if n < 0 || n as u64 > wire::MAX_REPLY_BYTES as u64 {
                return Parsed::Bad(format!("bulk length {n} out of range"));
            }
            let n = n as usize;
            if buf.len() < after + n + 2 {
                return Parsed::Incomplete;
            }
            if &buf[after + n..after + n + 2] != b"\r\n" {
                return Parsed::Bad("bulk string not terminated by CRLF".into());
            }
            Parsed::Done(
                Resp::Bulk(Some(buf[after..after + n].to_vec())),
                after + n + 2,
            )
        }
        b'*' => {
            let Some(n) = number(line) else {
                return Parsed::Bad(format!("bad array length {:?}", lossy(line)));
            };
            if n == -1 {
                return Parsed::Done(Resp::Array(None), after);
            }
            if !(0..=MAX_RESP_ELEMENTS).contains(&n) {
                return Parsed::Bad(format!("array length {n} out of range"));
            }
            let mut items = Vec::new();
            let mut at = after;
            for _ in 0..n {
                match parse_at(&buf[at..], depth + 1) {
                    Parsed::Done(v, used) => {
                        items.push(v);
                        at += used;
                    }
                    other => return other,
                }
            }
            Parsed::Done(Resp::Array(Some(items)), at)
        }
        _ => Parsed::Bad(bad_start(buf)),
    }
}

fn bad_start(buf: &[u8]) -> String {
    let head: String = String::from_utf8_lossy(&buf[..buf.len().min(24)])
        .chars()
        .map(|c| if c.is_control() { '.' } else { c })
        .collect();
    format!("not a RESP reply: {head:?}")
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

fn number(line: &[u8]) -> Option<i64> {
    std::str::from_utf8(line).ok()?.parse().ok()
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Up to `n` replies from the front of `buf`: `Ok` with fewer than `n` when
/// the buffer ends early (the server closed), `Err` for bytes that are not
/// RESP.
pub fn parse_replies(buf: &[u8], n: usize) -> Result<Vec<Resp>, String> {
    let mut out = Vec::new();
    let mut at = 0;
    while out.len() < n {
        match parse_resp(&buf[at..]) {
            Parsed::Done(v, used) => {
                out.push(v);
                at += used;
            }
            Parsed::Incomplete => break,
            Parsed::Bad(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Whether `buf` holds `n` whole replies, or something that will never
/// become them (garbage, or a refusal the server sends before closing).
fn replies_complete(buf: &[u8], n: usize) -> bool {
    match parse_replies(buf, n) {
        Ok(v) => {
            v.len() >= n
                || v.first()
                    .is_some_and(|r| matches!(r, Resp::Error(e) if is_max_clients(e)))
        }
        Err(_) => true,
    }
}

fn is_max_clients(e: &str) -> bool {
    e.contains("max number of clients")
}

/// A command as a RESP array of bulk strings (safe for any bytes, passwords
/// included).
pub fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut v = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        v.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        v.extend_from_slice(a);
        v.extend_from_slice(b"\r\n");
    }
    v
}

/// The fields of INFO headroom uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Info {
    pub redis_version: Option<String>,
    pub valkey_version: Option<String>,
    pub config_file: Option<String>,
    pub connected_clients: Option<u64>,
    pub connected_slaves: Option<u64>,
    pub cluster_connections: Option<u64>,
    pub maxclients: Option<u64>,
}

/// Parses INFO's `field:value` lines (sections and comments skipped).
pub fn parse_info(text: &str) -> Info {
    let mut i = Info::default();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        let num = || v.parse::<u64>().ok();
        match k {
            "redis_version" => i.redis_version = Some(v.to_string()),
            "valkey_version" => i.valkey_version = Some(v.to_string()),
            "config_file" => i.config_file = (!v.is_empty()).then(|| v.to_string()),
            "connected_clients" => i.connected_clients = num(),
            "connected_slaves" => i.connected_slaves = num(),
            "cluster_connections" => i.cluster_connections = num(),
            "maxclients" => i.maxclients = num(),
            _ => {}
        }
    }
    i
}

/// What the live query gave.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Live {
    /// `CONFIG GET maxclients`, when that command answered.
    pub config_maxclients: Option<u64>,
    pub info: Option<Info>,
    /// Why CONFIG GET gave nothing (renamed, an ACL), when it did not.
    pub config_error: Option<String>,
    /// A password was given but the server has none (AUTH failed, the rest answered).
    pub auth_unneeded: bool,
}

/// Why the live query gave nothing usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveError {
    /// The server wants a password and none was given.
    NoAuth,
    /// The password was refused (the server's words; never the password).
    AuthRefused(String),
    /// The server is at its cap: it refused this very query.
    AtCap(String),
    /// Anything else: unreachable, timed out, not Redis.
    Failed(String),
}

/// Interprets the replies to [AUTH,] CONFIG GET maxclients, INFO.
pub fn interpret(raw: &[u8], with_auth: bool) -> Result<Live, LiveError> {
    let want = if with_auth { 3 } else { 2 };
    let replies = parse_replies(raw, want).map_err(LiveError::Failed)?;
    if let Some(Resp::Error(e)) = replies.first() {
        if is_max_clients(e) {
            return Err(LiveError::AtCap(e.clone()));
        }
    }
    if replies.len() < want {
        return Err(LiveError::Failed(format!(
            "{} of {want} replies before the connection ended",
            replies.len()
        )));
    }
    let mut live = Live::default();
    let mut rest = &replies[..];
    if with_auth {
        if let Resp::Error(e) = &rest[0] {
            if e.contains("without any password configured") || e.contains("no password is set") {
                live.auth_unneeded = true;
            } else {
                return Err(LiveError::AuthRefused(first_word_line(e)));
            }
        }
        rest = &rest[1..];
    }
    let (cfg, info) = (&rest[0], &rest[1]);
    for r in [cfg, info] {
        if let Resp::Error(e) = r {
            if e.starts_with("NOAUTH") {
                return Err(LiveError::NoAuth);
            }
        }
    }
    match cfg {
        Resp::Array(Some(items)) => {
            // [name, value] pairs; only maxclients was asked for.
            let mut it = items.iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                if let (Resp::Bulk(Some(k)), Resp::Bulk(Some(v))) = (k, v) {
                    if k.eq_ignore_ascii_case(b"maxclients") {
                        live.config_maxclients = std::str::from_utf8(v)
                            .ok()
                            .and_then(|s| s.trim().parse().ok());
                    }
                }
            }
            if live.config_maxclients.is_none() {
                live.config_error = Some("CONFIG GET maxclients gave no number".into());
            }
        }
        Resp::Error(e) => {
            live.config_error = Some(format!("CONFIG GET maxclients: {}", first_word_line(e)))
        }
        other => {
            live.config_error = Some(format!(
                "CONFIG GET maxclients: unexpected reply {}",
                kind_of(other)
            ))
        }
    }
    match info {
        Resp::Bulk(Some(text)) => live.info = Some(parse_info(&String::from_utf8_lossy(text))),
        Resp::Error(e) => {
            if live.config_maxclients.is_none() {
                return Err(LiveError::Failed(format!(
                    "INFO: {}; {}",
                    first_word_line(e),
                    live.config_error.clone().unwrap_or_default()
                )));
            }
        }
        other => {
            if live.config_maxclients.is_none() {
                return Err(LiveError::Failed(format!(
                    "INFO: unexpected reply {}",
                    kind_of(other)
                )));
            }
        }
    }
    if live.config_maxclients.is_none() && live.info.as_ref().is_none_or(|i| i.maxclients.is_none())
    {
        return Err(LiveError::Failed(
            "neither CONFIG GET nor INFO gave maxclients".into(),
        ));
    }
    Ok(live)
}

fn kind_of(r: &Resp) -> &'static str {
    match r {
        Resp::Simple(_) => "simple string",
        Resp::Error(_) => "error",
        Resp::Int(_) => "integer",
        Resp::Bulk(_) => "bulk string",
        Resp::Array(_) => "array",
    }
}

/// An error line cut to something printable and short.
fn first_word_line(e: &str) -> String {
    let s: String = e.chars().filter(|c| !c.is_control()).take(120).collect();
    s
}

/// Asks the server: [AUTH password,] CONFIG GET maxclients, INFO, pipelined
/// on one connection, bounded by `timeout`.
pub fn query(
    addr: SocketAddr,
    password: Option<&str>,
    timeout: Duration,
) -> Result<Live, LiveError> {
    let mut req = Vec::new();
    if let Some(p) = password {
        req.extend(command(&[b"AUTH", p.as_bytes()]));
    }
    req.extend(command(&[b"CONFIG", b"GET", b"maxclients"]));
    req.extend(command(&[b"INFO"]));
    let want = if password.is_some() { 3 } else { 2 };
    let raw = wire::exchange(addr, &req, timeout, |b| replies_complete(b, want))
        .map_err(LiveError::Failed)?;
    interpret(&raw, password.is_some())
}

/// `maxclients` as a configuration file (and its includes) sets it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileCap {
    /// The last `maxclients` and where: `path:line`.
    pub maxclients: Option<(u64, String)>,
    /// Lines that could not be read, one each.
    pub problems: Vec<String>,
    /// Files read.
    pub files: Vec<String>,
}

/// Splits one redis.conf line into arguments as Redis does (sdssplitargs):
/// blanks separate, `"..."` takes `\n \r \t \b \a \\ \" \xHH`, `'...'` takes
/// `\'`; a closing quote must be followed by a blank. `Err` for unbalanced
/// quotes (Redis refuses to start on such a line).
pub fn split_args(line: &str) -> Result<Vec<String>, String> {
    let b = line.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= b.len() {
            return Ok(out);
        }
        let mut cur: Vec<u8> = Vec::new();
        let (mut inq, mut insq) = (false, false);
        loop {
            if inq {
                if i >= b.len() {
                    return Err("unbalanced quotes".into());
                }
                if b[i] == b'\\'
                    && i + 3 < b.len()
                    && b[i + 1] == b'x'
                    && is_hex(b[i + 2])
                    && is_hex(b[i + 3])
                {
                    cur.push(hex(b[i + 2]) * 16 + hex(b[i + 3]));
                    i += 3;
                } else if b[i] == b'\\' && i + 1 < b.len() {
                    i += 1;
                    cur.push(match b[i] {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 8,
                        b'a' => 7,
                        c => c,
                    });
                } else if b[i] == b'"' {
                    if i + 1 < b.len() && !b[i + 1].is_ascii_whitespace() {
                        return Err("closing quote must be followed by a space".into());
                    }
                    i += 1;
                    break;
                } else {
                    cur.push(b[i]);
                }
            } else if insq {
                if i >= b.len() {
                    return Err("unbalanced quotes".into());
                }
                if b[i] == b'\\' && i + 1 < b.len() && b[i + 1] == b'\'' {
                    i += 1;
                    cur.push(b'\'');
                } else if b[i] == b'\'' {
                    if i + 1 < b.len() && !b[i + 1].is_ascii_whitespace() {
                        return Err("closing quote must be followed by a space".into());
                    }
                    i += 1;
                    break;
                } else {
                    cur.push(b[i]);
                }
            } else {
                if i >= b.len() || b[i].is_ascii_whitespace() {
                    break;
                }
                match b[i] {
                    b'"' => inq = true,
                    b'\'' => insq = true,
                    c => cur.push(c),
                }
            }
            i += 1;
        }
        out.push(String::from_utf8_lossy(&cur).into_owned());
    }
}

fn is_hex(c: u8) -> bool {
    c.is_ascii_hexdigit()
}

fn hex(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => c - b'A' + 10,
    }
}

/// Reads `maxclients` from `path` and the files it includes, in order (the
/// last one wins, as Redis applies them).
pub fn read_config(host: &Host, path: &str) -> FileCap {
    let mut fc = FileCap::default();
    load(host, path, 0, &mut fc);
    fc
}

fn load(host: &Host, path: &str, depth: usize, fc: &mut FileCap) {
    if depth > MAX_INCLUDE_DEPTH {
        fc.problems.push(format!(
            "{path}: includes nested deeper than {MAX_INCLUDE_DEPTH}, not read"
        ));
        return;
    }
    if fc.files.len() >= MAX_FILES {
        fc.problems.push(format!(
            "{path}: more than {MAX_FILES} files included, not read"
        ));
        return;
    }
    let text = match host.read(path) {
        Ok(t) => t,
        Err(e) => {
            fc.problems.push(format!("Redis configuration {e}"));
            return;
        }
    };
    fc.files.push(path.to_string());
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let args = match split_args(line) {
            Ok(a) => a,
            Err(e) => {
                fc.problems
                    .push(format!("{path}:{}: {e} (Redis refuses such a line)", n + 1));
                continue;
            }
        };
        let Some(key) = args.first() else { continue };
        if key.eq_ignore_ascii_case("maxclients") {
            match args.get(1).map(|v| v.parse::<u64>()) {
                Some(Ok(v)) if v >= 1 && args.len() == 2 => {
                    fc.maxclients = Some((v, format!("{path}:{}", n + 1)));
                }
                _ => fc.problems.push(format!(
                    "{path}:{}: maxclients {:?} is not a number of at least 1",
                    n + 1,
                    args[1..].join(" ")
                )),
            }
        } else if key.eq_ignore_ascii_case("include") {
            for inc in &args[1..] {
                if inc.contains(['*', '?', '[']) {
                    fc.problems.push(format!(
                        "{path}:{}: include {inc}: patterns are not expanded, a maxclients there is not seen",
                        n + 1
                    ));
                } else if inc.starts_with('/') {
                    load(host, inc, depth + 1, fc);
                } else {
                    fc.problems.push(format!(
                        "{path}:{}: include {inc}: a relative path depends on Redis's working directory, not read",
                        n + 1
                    ));
                }
            }
        }
    }
}

/// The configuration file the command line names: the first argument after
/// the program that is a path (Redis rewrites its process title, so the
/// file is often gone from it; `proc-title-template` with `{config-file}`
/// keeps it). `-` (stdin) is not a file.
pub fn config_from_cmdline(cmdline: &[String]) -> Option<String> {
    // A rewritten title is one argument with blanks: split every argument.
    cmdline
        .iter()
        .flat_map(|a| a.split_whitespace())
        .skip(1)
        .take_while(|a| !a.starts_with("--"))
        .find(|a| a.ends_with(".conf") || (a.starts_with('/') && !a.ends_with(".sock")))
        .map(String::from)
}

/// `--maxclients N` on the command line (applied after the file).
pub fn maxclients_from_cmdline(cmdline: &[String]) -> Option<u64> {
    let words: Vec<&str> = cmdline
        .iter()
        .flat_map(|a| a.split_whitespace())
        .skip(1)
        .collect();
    words
        .windows(2)
        .find(|w| w[0].eq_ignore_ascii_case("--maxclients"))
        .and_then(|w| w[1].parse().ok())
}

/// The maxclients Redis runs with when it was configured with `configured`
/// and its process now has RLIMIT_NOFILE soft `soft`: Redis sets its limit to
/// maxclients + 32 when it can, else lowers maxclients to (the limit it got)
/// - 32. Returns (effective, lowered).
pub fn effective_maxclients(configured: u64, soft: Option<u64>) -> (u64, bool) {
    match soft {
        Some(s) if s < configured.saturating_add(RESERVED_FDS) => {
            (s.saturating_sub(RESERVED_FDS).max(1), true)
        }
        _ => (configured, false),
    }
}

/// Reads Redis's (or Valkey's) cap.
pub fn inspect(seen: &Seen, host: &Host) -> AppInfo {
    let valkey = is_valkey(seen);
    let product = if valkey { "Valkey" } else { "Redis" };
    let default_conf = if valkey {
        "/etc/valkey/valkey.conf"
    } else {
        "/etc/redis/redis.conf"
    };
    let mut info = AppInfo {
        kind: if valkey { "valkey" } else { "redis" }.into(),
        comm: seen.main.comm.clone(),
        fds_per_connection: 1,
        // Past maxclients Redis refuses; below it, accept() meets EMFILE at
        // the soft limit itself (the 32 Redis keeps are only how it sizes
        // maxclients against the limit, and those fds, when open, are in
        // the process's open count already).
        fd_reserve: Some(0),
        at_cap: Some(AtCap::RefusesWithError),
        ..Default::default()
    };
    let soft = seen.main.nofile_soft;
    let cmd_conf = config_from_cmdline(&seen.cmdline);
    let cmd_max = maxclients_from_cmdline(&seen.cmdline);

    let mut live_err = None;
    if seen.opts.live {
        match seen.address {
            Some(addr) => match query(addr, seen.opts.redis_password.as_deref(), seen.opts.timeout)
            {
                Ok(live) => {
                    live_cap(
                        &mut info,
                        seen,
                        host,
                        addr,
                        &live,
                        cmd_conf.as_deref(),
                        default_conf,
                        product,
                    );
                    return info;
                }
                Err(e) => live_err = Some((addr, e)),
            },
            None => info.problems.push(format!(
                "{product} not asked live: no listening TCP port in the snapshot"
            )),
        }
    }

    // From the configuration file.
    let path = cmd_conf.clone().unwrap_or_else(|| default_conf.to_string());
    match &live_err {
        Some((addr, LiveError::NoAuth)) => info.problems.push(format!(
            "{product} on {addr} wants a password (NOAUTH): INFO and CONFIG GET not available; maxclients read from {path} (headroom takes it from HEADROOM_REDIS_PASSWORD or --redis-password-file)"
        )),
        Some((addr, LiveError::AuthRefused(e))) => info.problems.push(format!(
            "{product} on {addr} refused the password ({e}); maxclients read from {path}"
        )),
        Some((addr, LiveError::AtCap(e))) => info.problems.push(format!(
            "{product} on {addr} refused this query with \"{e}\": it is at its cap now; maxclients read from {path}"
        )),
        Some((addr, LiveError::Failed(e))) => info.problems.push(format!(
            "{product} on {addr} not read live ({e}); maxclients read from {path}"
        )),
        None => {}
    }
    if cmd_conf.is_none() {
        info.notes.push(format!(
            "the command line names no configuration file ({product} rewrites its process title): read {default_conf}, the packaged default"
        ));
    }
    let fc = read_config(host, &path);
    info.problems.extend(fc.problems.iter().cloned());
    let (configured, source, read_from) = if let Some(m) = cmd_max {
        (
            m,
            CapSource::CommandLine,
            "--maxclients in the command line".to_string(),
        )
    } else if let Some((m, at)) = &fc.maxclients {
        (*m, CapSource::File, at.clone())
    } else if fc.files.is_empty() {
        (
            DEFAULT_MAXCLIENTS,
            CapSource::Default,
            format!("{path} not read"),
        )
    } else {
        (
            DEFAULT_MAXCLIENTS,
            CapSource::Default,
            format!("no maxclients in {path}"),
        )
    };
    let (limit, lowered) = effective_maxclients(configured, soft);
    let (source, explanation) = if lowered {
        (
            CapSource::Derived,
            format!(
                "maxclients {limit}: set to {configured} but lowered by {product} at start to RLIMIT_NOFILE {} - {RESERVED_FDS} (it could not raise the limit to {}); it refuses a new client once its clients plus cluster bus links reach it",
                soft.unwrap_or(0),
                configured + RESERVED_FDS
            ),
        )
    } else {
        (
            source,
            format!(
                "maxclients {limit}: {product} refuses a new client once its clients (replicas and its master link included) plus cluster bus links reach it"
            ),
        )
    };
    let remedy = if lowered {
        fd_remedy(product, configured)
    } else {
        format!("raise maxclients in {path} (CONFIG SET maxclients N lasts until restart)")
    };
    info.caps.push(AppCap {
        name: cap_name(valkey),
        scope: Scope::System,
        setting: "maxclients".into(),
        limit,
        used: None,
        reserve: 0,
        per_connection: 1,
        source,
        read_from,
        explanation,
        remedy,
    });
    info
}

fn cap_name(valkey: bool) -> String {
    if valkey {
        "valkey-maxclients"
    } else {
        "redis-maxclients"
    }
    .into()
}

fn fd_remedy(product: &str, configured: u64) -> String {
    format!(
        "raise the fd limit of the {} process to at least {} (LimitNOFILE= in its unit) and restart: {product} then keeps maxclients {configured}",
        product.to_lowercase(),
        configured + RESERVED_FDS
    )
}

fn is_valkey(seen: &Seen) -> bool {
    seen.main.comm.starts_with("valkey")
        || seen.cmdline.first().is_some_and(|a| {
            a.split_whitespace()
                .next()
                .unwrap_or("")
                .ends_with("valkey-server")
        })
}

#[allow(clippy::too_many_arguments)]
fn live_cap(
    info: &mut AppInfo,
    seen: &Seen,
    host: &Host,
    addr: SocketAddr,
    live: &Live,
    cmd_conf: Option<&str>,
    default_conf: &str,
    product: &str,
) {
    let valkey = info.kind == "valkey";
    let i = live.info.clone().unwrap_or_default();
    info.version = i.valkey_version.clone().or(i.redis_version.clone());
    if live.auth_unneeded {
        info.notes.push(format!(
            "a password was given but {product} on {addr} has none"
        ));
    }
    let (limit, read_from) = match (live.config_maxclients, i.maxclients) {
        (Some(m), _) => (m, format!("CONFIG GET maxclients on {addr}")),
        (None, Some(m)) => {
            if let Some(e) = &live.config_error {
                info.notes.push(format!("{e}: maxclients taken from INFO"));
            }
            (m, format!("INFO clients on {addr}"))
        }
        (None, None) => {
            info.problems.push(format!(
                "{product} on {addr} gave no maxclients: the default assumed"
            ));
            (
                DEFAULT_MAXCLIENTS,
                "the server gave no maxclients".to_string(),
            )
        }
    };
    // Our own query connection is one of connected_clients.
    match i.connected_clients {
        Some(cc) => {
            let clients = cc.saturating_sub(1) + i.connected_slaves.unwrap_or(0);
            let cluster = i.cluster_connections.unwrap_or(0);
            info.connections = Some(clients);
            info.notes.push(format!(
                "{product} counts {} against maxclients: connected_clients {cc} (this query included, not counted here), connected_slaves {}, cluster_connections {cluster}",
                clients + cluster,
                i.connected_slaves.unwrap_or(0)
            ));
        }
        None => info.problems.push(format!(
            "INFO on {addr} gave no connected_clients: the connections counted are the TCP connections of the process"
        )),
    }
    let used = i.connected_clients.map(|cc| {
        cc.saturating_sub(1) + i.connected_slaves.unwrap_or(0) + i.cluster_connections.unwrap_or(0)
    });

    // The file, to tell a maxclients Redis lowered itself.
    let path = i.config_file.clone().or(cmd_conf.map(String::from));
    let (configured, conf_desc) = match &path {
        Some(p) => {
            let fc = read_config(host, p);
            match (&fc.maxclients, fc.files.is_empty()) {
                (Some((m, _)), _) => (Some(*m), p.clone()),
                (None, false) => (Some(DEFAULT_MAXCLIENTS), p.clone()),
                (None, true) => {
                    if let Some(e) = fc.problems.first() {
                        info.notes.push(format!(
                            "{e}: whether {product} lowered maxclients is not known"
                        ));
                    }
                    (None, p.clone())
                }
            }
        }
        None => (Some(DEFAULT_MAXCLIENTS), default_conf.to_string()),
    };
    let soft = seen.main.nofile_soft;
    let lowered = match (configured, soft) {
        (Some(c), Some(s)) => limit < c && limit == s.saturating_sub(RESERVED_FDS),
        _ => false,
    };
    let (source, explanation, remedy) = if lowered {
        let c = configured.unwrap_or(limit);
        (
            CapSource::Derived,
            format!(
                "maxclients {limit}: lowered by {product} from {c} to RLIMIT_NOFILE {} - {RESERVED_FDS} at start (it could not raise the limit to {}); it refuses a new client once its clients plus cluster bus links reach it",
                soft.unwrap_or(0),
                c + RESERVED_FDS
            ),
            fd_remedy(product, c),
        )
    } else {
        (
            CapSource::Live,
            format!(
                "maxclients {limit}: {product} refuses a new client (-ERR max number of clients reached) once its clients (replicas and its master link included) plus cluster bus links reach it"
            ),
            if path.is_some() {
                format!("raise maxclients in {conf_desc} (CONFIG SET maxclients N lasts until restart)")
            } else {
                "start it with maxclients N in a configuration file or --maxclients N (CONFIG SET maxclients N lasts until restart)".to_string()
            },
        )
    };
    if path.is_none() {
        info.notes.push(format!(
            "{product} on {addr} runs without a configuration file"
        ));
    }
    info.caps.push(AppCap {
        name: cap_name(valkey),
        scope: Scope::System,
        setting: "maxclients".into(),
        limit,
        used,
        reserve: 0,
        per_connection: 1,
        source,
        read_from,
        explanation,
        remedy,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Options;
    use headroom_core::{predict, ModelConfig, ProcessInfo, Snapshot};
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::path::{Path, PathBuf};

    const LIVE_7015: &[u8] =
        include_bytes!("../tests/fixtures/redis/config-get-and-info-7.0.15.resp");
    const NOAUTH_7015: &[u8] = include_bytes!("../tests/fixtures/redis/noauth-7.0.15.resp");
    const WRONGPASS_7015: &[u8] = include_bytes!("../tests/fixtures/redis/wrongpass-7.0.15.resp");

    #[test]
    fn resp_parses_every_type_and_reports_incomplete() {
        assert_eq!(
            parse_resp(b"+OK\r\n"),
            Parsed::Done(Resp::Simple("OK".into()), 5)
        );
        assert_eq!(
            parse_resp(b"-ERR x\r\n"),
            Parsed::Done(Resp::Error("ERR x".into()), 8)
        );
        assert_eq!(parse_resp(b":-12\r\n"), Parsed::Done(Resp::Int(-12), 6));
        assert_eq!(parse_resp(b"$-1\r\n"), Parsed::Done(Resp::Bulk(None), 5));
        assert_eq!(parse_resp(b"*-1\r\n"), Parsed::Done(Resp::Array(None), 5));
        assert_eq!(
            parse_resp(b"*2\r\n$3\r\nabc\r\n:1\r\n"),
            Parsed::Done(
                Resp::Array(Some(vec![Resp::Bulk(Some(b"abc".to_vec())), Resp::Int(1)])),
                17
            )
        );
        assert_eq!(parse_resp(b"$3\r\nab"), Parsed::Incomplete);
        assert_eq!(parse_resp(b"*2\r\n$3\r\nabc\r\n"), Parsed::Incomplete);
        assert_eq!(parse_resp(b""), Parsed::Incomplete);
        assert_eq!(parse_resp(b"+OK"), Parsed::Incomplete);
    }

    #[test]
    fn resp_rejects_garbage_huge_lengths_and_deep_nesting() {
        assert!(matches!(
            parse_resp(b"HTTP/1.1 400 Bad Request\r\n"),
            Parsed::Bad(_)
        ));
        assert!(matches!(parse_resp(b"\x00\x01\x02\xff"), Parsed::Bad(_)));
        assert!(matches!(parse_resp(b"$99999999999\r\n"), Parsed::Bad(_)));
        assert!(matches!(parse_resp(b"$-5\r\n"), Parsed::Bad(_)));
        assert!(matches!(parse_resp(b"*99999999\r\n"), Parsed::Bad(_)));
        assert!(matches!(parse_resp(b"$3\r\nabcXY"), Parsed::Bad(_)));
        assert!(matches!(parse_resp(b":12a\r\n"), Parsed::Bad(_)));
        let deep = "*1\r\n".repeat(100);
        assert!(matches!(parse_resp(deep.as_bytes()), Parsed::Bad(_)));
        // An unterminated line that never ends is garbage past 4 KiB.
        let long = format!("+{}", "a".repeat(5000));
        assert!(matches!(parse_resp(long.as_bytes()), Parsed::Bad(_)));
    }

    #[test]
    fn command_encodes_any_bytes_as_bulk_strings() {
        assert_eq!(
            command(&[b"AUTH", b"p w\r\n"]),
            b"*2\r\n$4\r\nAUTH\r\n$5\r\np w\r\n\r\n".to_vec()
        );
    }

    #[test]
    fn real_7_0_15_reply_gives_maxclients_and_counts() {
        let live = interpret(LIVE_7015, false).unwrap();
        assert_eq!(live.config_maxclients, Some(500));
        let i = live.info.unwrap();
        assert_eq!(i.redis_version.as_deref(), Some("7.0.15"));
        assert_eq!(i.config_file.as_deref(), Some("/tmp/hx/r.conf"));
        assert_eq!(i.connected_clients, Some(1));
        assert_eq!(i.connected_slaves, Some(0));
        assert_eq!(i.cluster_connections, Some(0));
        assert_eq!(i.maxclients, Some(500));
    }

    #[test]
    fn real_noauth_and_wrongpass_replies_are_told_apart() {
        assert_eq!(interpret(NOAUTH_7015, false), Err(LiveError::NoAuth));
        assert_eq!(
            interpret(WRONGPASS_7015, true),
            Err(LiveError::AuthRefused(
                "WRONGPASS invalid username-password pair or user is disabled.".into()
            ))
        );
    }

    #[test]
    fn refusal_at_cap_is_recognised_from_the_first_reply() {
        let raw = b"-ERR max number of clients reached\r\n";
        assert!(replies_complete(raw, 2));
        assert_eq!(
            interpret(raw, false),
            Err(LiveError::AtCap("ERR max number of clients reached".into()))
        );
    }

    #[test]
    fn renamed_config_command_falls_back_to_info_maxclients() {
        let mut raw =
            b"-ERR unknown command 'CONFIG', with args beginning with: 'GET' 'maxclients' \r\n"
                .to_vec();
        let info = "# Clients\r\nconnected_clients:3\r\nmaxclients:77\r\n";
        raw.extend(format!("${}\r\n{info}\r\n", info.len()).as_bytes());
        let live = interpret(&raw, false).unwrap();
        assert_eq!(live.config_maxclients, None);
        assert_eq!(live.info.unwrap().maxclients, Some(77));
        assert!(live.config_error.unwrap().contains("unknown command"));
    }

    #[test]
    fn garbage_or_short_replies_are_failures_not_panics() {
        assert!(matches!(
            interpret(b"SSH-2.0-OpenSSH_9.2\r\n", false),
            Err(LiveError::Failed(_))
        ));
        assert!(matches!(
            interpret(b"+OK\r\n", false),
            Err(LiveError::Failed(_))
        ));
        assert!(matches!(interpret(b"", false), Err(LiveError::Failed(_))));
        assert!(matches!(
            interpret(b":1\r\n:2\r\n", false),
            Err(LiveError::Failed(_))
        ));
        assert!(matches!(
            interpret(&[0xffu8; 10000], false),
            Err(LiveError::Failed(_))
        ));
    }

    #[test]
    fn info_fields_parse_with_crlf_and_ignore_the_rest() {
        let i = parse_info("# Server\r\nredis_version:7.2.4\r\nvalkey_version:8.0.1\r\nconfig_file:\r\nconnected_clients:x\r\n");
        assert_eq!(i.redis_version.as_deref(), Some("7.2.4"));
        assert_eq!(i.valkey_version.as_deref(), Some("8.0.1"));
        assert_eq!(i.config_file, None);
        assert_eq!(i.connected_clients, None);
    }

    #[test]
    fn split_args_follows_redis_quoting() {
        assert_eq!(
            split_args("maxclients  500").unwrap(),
            vec!["maxclients", "500"]
        );
        assert_eq!(
            split_args(r#"a "b c\x41\n" 'd\'e'"#).unwrap(),
            vec!["a", "b cA\n", "d'e"]
        );
        assert!(split_args(r#"maxclients "500"#).is_err());
        assert!(split_args("maxclients '500").is_err());
        assert!(split_args(r#"a "b"c"#).is_err());
        assert_eq!(split_args("   ").unwrap(), Vec::<String>::new());
    }

    fn root_with(files: &[(&str, &str)]) -> PathBuf {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "headroom-apps-redis-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        for (p, text) in files {
            let full = dir.join(p.trim_start_matches('/'));
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(full, text).unwrap();
        }
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn config_file_last_maxclients_wins_through_includes() {
        let root = root_with(&[
            (
                "/etc/redis/redis.conf",
                "# maxclients 1\nMaxClients 200\ninclude /etc/redis/extra.conf\nbind 127.0.0.1 \"unbalanced\n",
            ),
            ("/etc/redis/extra.conf", "maxclients 300\ninclude relative.conf\n"),
        ]);
        let fc = read_config(&Host::new(&root), "/etc/redis/redis.conf");
        assert_eq!(fc.maxclients, Some((300, "/etc/redis/extra.conf:1".into())));
        assert_eq!(fc.files.len(), 2);
        assert_eq!(fc.problems.len(), 2, "{:?}", fc.problems);
        assert!(fc.problems[0].contains("relative"));
        assert!(fc.problems[1].contains("/etc/redis/redis.conf:4: unbalanced quotes"));
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn config_include_loop_and_bad_values_end_in_problems() {
        let root = root_with(&[(
            "/r.conf",
            "maxclients 0\nmaxclients -5\nmaxclients 12 13\nmaxclients abc\ninclude /r.conf\n",
        )]);
        let fc = read_config(&Host::new(&root), "/r.conf");
        assert_eq!(fc.maxclients, None);
        assert!(
            fc.problems.iter().any(|p| p.contains("deeper than")),
            "{:?}",
            fc.problems
        );
        assert!(
            fc.problems
                .iter()
                .filter(|p| p.contains("not a number"))
                .count()
                >= 4
        );
        let missing = read_config(&Host::new(&root), "/nope.conf");
        assert_eq!(missing.problems.len(), 1);
        assert!(missing.problems[0].starts_with("Redis configuration /nope.conf:"));
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn binary_config_file_is_read_without_panicking() {
        let mut junk: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
        junk.extend(b"\nmaxclients 42\n\"");
        let root = root_with(&[]);
        std::fs::write(root.join("j.conf"), &junk).unwrap();
        let fc = read_config(&Host::new(&root), "/j.conf");
        assert_eq!(fc.maxclients.map(|m| m.0), Some(42));
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn redis_lowers_maxclients_to_soft_limit_less_32() {
        assert_eq!(effective_maxclients(500, Some(300)), (268, true));
        assert_eq!(effective_maxclients(500, Some(532)), (500, false));
        assert_eq!(effective_maxclients(500, Some(531)), (499, true));
        assert_eq!(effective_maxclients(10_000, None), (10_000, false));
    }

    #[test]
    fn cmdline_names_config_file_and_maxclients() {
        let c = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        assert_eq!(
            config_from_cmdline(&c("redis-server /etc/redis/r.conf --port 1")),
            Some("/etc/redis/r.conf".into())
        );
        assert_eq!(
            config_from_cmdline(&c("/usr/bin/redis-server 127.0.0.1:6379")),
            None
        );
        assert_eq!(
            config_from_cmdline(&c("redis-server --port 1 /x.conf")),
            None
        );
        // proc-title-template "{title} {listen-addr} {server-mode} {config-file}":
        // the kernel shows one argument.
        assert_eq!(
            config_from_cmdline(&["redis-server 127.0.0.1:48399  /tmp/hx/r.conf".to_string()]),
            Some("/tmp/hx/r.conf".into())
        );
        assert_eq!(
            config_from_cmdline(&["/usr/bin/redis-server /run/redis/redis.sock".to_string()]),
            None
        );
        assert_eq!(
            maxclients_from_cmdline(&c("redis-server r.conf --maxclients 77")),
            Some(77)
        );
        assert_eq!(
            maxclients_from_cmdline(&c("redis-server --maxclients x")),
            None
        );
    }

    /// A fake Redis: answers whatever `reply` says to the first connection.
    fn fake(reply: &'static [u8]) -> (SocketAddr, std::thread::JoinHandle<Vec<u8>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let mut got = vec![0u8; 4096];
            let n = s.read(&mut got).unwrap_or(0);
            got.truncate(n);
            s.write_all(reply).unwrap();
            got
        });
        (addr, t)
    }

    fn snap_with(soft: u64, conns: u64, open: u64) -> Snapshot {
        Snapshot {
            processes: vec![ProcessInfo {
                pid: 4242,
                comm: "redis-server".into(),
                nofile_soft: Some(soft),
                nofile_hard: Some(soft),
                open_fds: open,
                open_fds_peak: open,
                connections: conns,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn run(
        root: &Path,
        snap: &Snapshot,
        addr: Option<SocketAddr>,
        password: Option<&str>,
    ) -> AppInfo {
        let opts = Options {
            root: root.to_path_buf(),
            redis_password: password.map(String::from),
            timeout: Duration::from_secs(2),
            live: addr.is_some(),
        };
        let seen = Seen {
            snap,
            main: &snap.processes[0],
            cmdline: vec!["/usr/bin/redis-server".into(), "127.0.0.1:6379".into()],
            address: addr,
            opts: &opts,
        };
        inspect(&seen, &Host::new(root))
    }

    #[test]
    fn live_maxclients_and_counts_make_predict_exact() {
        let root = root_with(&[("/tmp/hx/r.conf", "maxclients 500\n")]);
        let (addr, t) = fake(LIVE_7015);
        let mut snap = snap_with(20000, 0, 6);
        let info = run(&root, &snap, Some(addr), None);
        let asked = t.join().unwrap();
        assert!(asked.starts_with(
            b"*3\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n$10\r\nmaxclients\r\n*1\r\n$4\r\nINFO\r\n"
        ));
        assert_eq!(info.version.as_deref(), Some("7.0.15"));
        assert_eq!(info.connections, Some(0));
        assert_eq!(info.caps.len(), 1);
        let c = &info.caps[0];
        assert_eq!(
            (c.name.as_str(), c.limit, c.used, c.source),
            ("redis-maxclients", 500, Some(0), CapSource::Live)
        );
        assert_eq!(c.read_from, format!("CONFIG GET maxclients on {addr}"));
        assert!(c.remedy.contains("/tmp/hx/r.conf"), "{}", c.remedy);
        assert!(info.problems.is_empty(), "{:?}", info.problems);
        snap.app = Some(info);
        let p = predict(&snap, &ModelConfig::default());
        assert_eq!(
            (p.predicted_max_connections, p.binding.as_str()),
            (500, "redis-maxclients")
        );
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn live_maxclients_lowered_by_redis_is_derived_and_nofile_does_not_undercut_it() {
        // Redis started with maxclients 500 under nofile 300: it runs with 268.
        let root = root_with(&[("/tmp/hx/r.conf", "maxclients 500\n")]);
        let reply: &'static [u8] = Box::leak(
            String::from_utf8_lossy(LIVE_7015)
                .replace("$3\r\n500\r\n", "$3\r\n268\r\n")
                .replace("maxclients:500", "maxclients:268")
                .into_bytes()
                .into_boxed_slice(),
        );
        let (addr, t) = fake(reply);
        // 9 fds open when idle, as measured on 7.0.15.
        let mut snap = snap_with(300, 0, 9);
        let info = run(&root, &snap, Some(addr), None);
        t.join().unwrap();
        let c = &info.caps[0];
        assert_eq!((c.limit, c.source), (268, CapSource::Derived));
        assert!(
            c.explanation
                .contains("lowered by Redis from 500 to RLIMIT_NOFILE 300 - 32"),
            "{}",
            c.explanation
        );
        assert!(c.remedy.contains("at least 532"), "{}", c.remedy);
        snap.app = Some(info);
        let p = predict(&snap, &ModelConfig::default());
        assert_eq!(
            (p.predicted_max_connections, p.binding.as_str()),
            (268, "redis-maxclients")
        );
        assert_eq!(p.constraint("nofile").unwrap().max_connections, 291);
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn noauth_falls_back_to_the_default_config_file_and_says_so() {
        let root = root_with(&[("/etc/redis/redis.conf", "maxclients 500\n")]);
        let (addr, t) = fake(NOAUTH_7015);
        let mut snap = snap_with(20000, 7, 20);
        let info = run(&root, &snap, Some(addr), None);
        t.join().unwrap();
        let c = &info.caps[0];
        assert_eq!((c.limit, c.used, c.source), (500, None, CapSource::File));
        assert_eq!(c.read_from, "/etc/redis/redis.conf:1");
        assert_eq!(info.connections, None);
        assert!(info.problems[0].contains("NOAUTH"), "{:?}", info.problems);
        assert!(!info.problems[0].contains("s3cret"));
        snap.app = Some(info);
        assert_eq!(
            predict(&snap, &ModelConfig::default()).predicted_max_connections,
            500
        );
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn password_is_sent_with_auth_and_never_printed() {
        let root = root_with(&[]);
        let info_text = "connected_clients:4\r\nx:y\r\n";
        let reply = format!(
            "+OK\r\n*2\r\n$10\r\nmaxclients\r\n$2\r\n50\r\n${}\r\n{info_text}\r\n",
            info_text.len()
        );
        let (addr, t) = fake(Box::leak(reply.into_bytes().into_boxed_slice()));
        let snap = snap_with(20000, 3, 20);
        let info = run(&root, &snap, Some(addr), Some("s3cret"));
        let asked = t.join().unwrap();
        assert!(asked.starts_with(b"*2\r\n$4\r\nAUTH\r\n$6\r\ns3cret\r\n"));
        assert_eq!((info.caps[0].limit, info.caps[0].used), (50, Some(3)));
        assert_eq!(info.connections, Some(3));
        let all = format!("{info:?}");
        assert!(!all.contains("s3cret"));
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn no_file_no_live_gives_the_default_lowered_by_the_fd_limit() {
        let root = root_with(&[]);
        let snap = snap_with(1024, 0, 6);
        let info = run(&root, &snap, None, None);
        let c = &info.caps[0];
        assert_eq!((c.limit, c.source), (992, CapSource::Derived));
        assert!(
            info.problems
                .iter()
                .any(|p| p.contains("/etc/redis/redis.conf")),
            "{:?}",
            info.problems
        );
        std::fs::remove_dir_all(root).unwrap();
    }
}
