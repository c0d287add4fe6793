//! What every transport shares with the engine and the server around it:
//! which transport a session runs on, and how a transport reports the
//! connections it holds.

/// Which transport a session runs on (the `transport` metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Stdio,
    Http,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Stdio => "stdio",
            Transport::Http => "http",
        }
    }
}

/// A transport's count of the connections it holds open now, for a server
/// that reports its connections over every transport (they hold
/// descriptors of the same table).
pub trait OpenConnections: Send + Sync {
    fn open_connections(&self) -> u64;
}
