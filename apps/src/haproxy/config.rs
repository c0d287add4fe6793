//! What an HAProxy configuration says: the global section, the proxies, and
//! what one client connection of a frontend costs.

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
    pub(super) fn new(kind: ProxyKind, name: &str, at: String) -> Proxy {
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

impl Config {
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
}
