//! The load side of `headroom bench`: an MCP load client over TCP and
//! Streamable HTTP ([`client`]), connection churn and an accept-and-close
//! target ([`churn`]), the servers under test as child processes
//! ([`child`]), and the CPU, memory and round statistics they are compared
//! by ([`measure`]). What needs the probe or the server crates (eBPF
//! attach, slab accounting, the bare line server) stays in the binary,
//! which depends on them; this crate does not.

pub mod child;
pub mod churn;
pub mod client;
pub mod measure;

pub use child::{ChildServer, Killed};
pub use churn::{churn, connect_reset, Acceptor, Churn};
pub use client::{
    http_throughput, interleaved, open_session, open_sessions, open_sessions_subscribed,
    open_subscribed_session, throughput, throughput_samples, HttpRequest, Samples, Throughput,
    ECHO_CALL, HTTP_ECHO_CALL, INITIALIZE,
};
pub use measure::{
    cpu_seconds, cpu_seconds_with, drop_percent, median, process_cpu_seconds, rss_of,
};
