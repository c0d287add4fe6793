//! The TCP transport: newline-delimited JSON-RPC, one [`Session`](crate::Session) per
//! connection, with every limit of the server issue enforced here.
//!
//! Layout (measured, see `headroom bench`): one current-thread tokio runtime
//! per core, each with its own listening socket on the same port
//! (SO_REUSEPORT), so an accept never waits for a sleeping multi-thread
//! scheduler. `--runtime multi` keeps the one-listener multi-thread layout
//! for comparison.
//!
//! Per-connection memory is kept small: reads go through a per-thread
//! scratch buffer and only a partial line is kept per connection; the
//! output buffer is freed when it grows large and empties.
//!
//! One file per job: configuration and what the transport needs of the
//! server (`config`), binding and the serving threads (`server`), what the
//! accept loops share (`shared`), the accept loop (`accept`), and one
//! connection (`connection`).

mod accept;
mod config;
mod connection;
mod server;
mod shared;

pub use config::{AdoptedRx, FdCapacity, Host, Layout, Limits, Service};
pub use server::{transport_metrics, Running, TcpServer};
