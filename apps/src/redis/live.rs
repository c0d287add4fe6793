//! Asking Redis on its own port: `AUTH` when a password is given, then
//! `CONFIG GET maxclients` and `INFO`, pipelined.

use super::resp::{command, parse_replies, Resp};
use crate::wire;
use std::net::SocketAddr;
use std::time::Duration;

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

#[cfg(test)]
mod tests {
    use super::*;

    const LIVE_7015: &[u8] =
        include_bytes!("../../tests/fixtures/redis/config-get-and-info-7.0.15.resp");
    const NOAUTH_7015: &[u8] = include_bytes!("../../tests/fixtures/redis/noauth-7.0.15.resp");
    const WRONGPASS_7015: &[u8] =
        include_bytes!("../../tests/fixtures/redis/wrongpass-7.0.15.resp");

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
}
