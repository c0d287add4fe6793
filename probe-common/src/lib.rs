#![no_std]
//! headroom-probe-common: map key and value types shared by the eBPF programs
//! (probe-ebpf, built for bpfel-unknown-none) and their userspace loader
//! (headroom-probe). Everything is `#[repr(C)]` with explicit padding so both
//! sides agree on the layout byte for byte; the `user` feature adds the
//! `aya::Pod` impls the loader needs.

/// Capacity of every map. Bounded so that a flood cannot grow kernel memory;
/// what does not fit is counted in [`DROPS`] slots and exported.
pub const MAX_LISTENERS: u32 = 1024;
pub const MAX_PORTS: u32 = 4096;
pub const MAX_FD_ERRORS: u32 = 4096;
pub const MAX_WATCHED_PIDS: u32 = 1024;
pub const MAX_TIME_WAIT: u32 = 262_144;

/// Index of the drop counters in the `DROPS` array: one slot per bounded map.
pub const DROP_LISTENERS: u32 = 0;
pub const DROP_PORTS: u32 = 1;
pub const DROP_FD_ERRORS: u32 = 2;
pub const DROP_FD_USAGE: u32 = 3;
pub const DROP_TIME_WAIT: u32 = 4;
pub const DROP_SLOTS: u32 = 5;
/// Names of the drop slots, for the `map` label of the dropped counter.
pub const DROP_NAMES: [&str; DROP_SLOTS as usize] =
    ["listeners", "ports", "fd_errors", "fd_usage", "time_wait"];

/// TCP state numbers (include/net/tcp_states.h) the programs test for.
pub const TCP_TIME_WAIT: u32 = 6;
pub const TCP_CLOSE: u32 = 7;
pub const TCP_LISTEN: u32 = 10;
/// Per-port state arrays are indexed by kernel state number (1..=12).
pub const STATE_SLOTS: usize = 16;

/// Kernel structure offsets and symbol addresses the programs need, resolved
/// by the loader from /sys/kernel/btf/vmlinux and /proc/kallsyms and written
/// into the `CONFIG` global before load (CO-RE by hand: one object, any kernel).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// struct sock: sk_ack_backlog, sk_max_ack_backlog (u32 each).
    pub off_ack_backlog: u32,
    pub off_max_ack_backlog: u32,
    /// struct sock_common (at offset 0 of struct sock and of
    /// inet_timewait_sock): skc_state (u8), skc_num (u16, host order),
    /// skc_rcv_saddr (4 bytes), skc_v6_rcv_saddr (16 bytes), skc_net (pointer).
    pub off_state: u32,
    pub off_num: u32,
    pub off_rcv_saddr: u32,
    pub off_v6_rcv_saddr: u32,
    pub off_net: u32,
    /// struct net: ns.inum (u32), the netns inode number `ip netns` shows.
    pub off_net_inum: u32,
    /// struct inet_timewait_sock: tw_timer (the timer_list TIME_WAIT expiry uses).
    pub off_tw_timer: u32,
    /// 1: a socket entering LISTEN adds its (netns, port) to WATCH_PORTS.
    pub watch_new_listeners: u32,
    /// struct timer_list: function (the callback pointer).
    pub off_timer_function: u32,
    /// struct sock_common: skc_family (u16); struct sock: sk_protocol (u16).
    /// Raw tracepoints get the bare `struct sock *`, so the programs read
    /// these themselves.
    pub off_family: u32,
    pub off_protocol: u32,
    pub _pad: u32,
    /// Address of tw_timer_handler from /proc/kallsyms; 0 disables TIME_WAIT tracking.
    pub tw_timer_fn: u64,
}

/// A listening socket: netns inode, address family, local port and address
/// (IPv4 in the first 4 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ListenerKey {
    pub netns: u32,
    pub family: u16,
    pub port: u16,
    pub addr: [u8; 16],
}

/// Accept queue of one listener, updated each time a connection completes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListenerStats {
    /// sk_ack_backlog right after the last connection was queued.
    pub depth: u32,
    /// sk_max_ack_backlog: min(backlog, somaxconn) given to listen().
    pub limit: u32,
    /// Highest depth since userspace last reset it.
    pub peak: u32,
    pub _pad: u32,
    /// Connections queued (cloned from the listener, at inet_sock_set_state).
    pub enqueued: u64,
    /// Times a queued connection left the queue full (depth > limit, the
    /// kernel's sk_acceptq_is_full): from then on SYNs are dropped.
    pub full_events: u64,
}

/// A local port in a network namespace.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PortKey {
    pub netns: u32,
    pub port: u16,
    pub _pad: u16,
}

/// TCP sockets of one local port: current count per state (since attach,
/// relative; may go negative for sockets that existed before) and the
/// transitions into each state.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortStates {
    pub current: [i64; STATE_SLOTS],
    pub entered: [u64; STATE_SLOTS],
}

impl Default for PortStates {
    fn default() -> Self {
        PortStates {
            current: [0; STATE_SLOTS],
            entered: [0; STATE_SLOTS],
        }
    }
}

/// A failed syscall: process (tgid), syscall number, positive errno.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FdErrorKey {
    pub pid: u32,
    pub nr: u32,
    pub errno: u32,
    pub _pad: u32,
}

/// The errnos counted: fd exhaustion per process and system-wide, and
/// ephemeral port exhaustion.
pub const EMFILE: i64 = 24;
pub const ENFILE: i64 = 23;
pub const EADDRNOTAVAIL: i64 = 99;

/// fds opened and closed by a watched process since userspace last reset
/// `delta`/`peak_delta` (it re-reads /proc/PID/fd as the base at each reset).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FdUsage {
    pub opened: u64,
    pub closed: u64,
    /// opened - closed since the last reset.
    pub delta: i64,
    /// Highest `delta` since the last reset.
    pub peak_delta: i64,
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: all of these are repr(C), Copy, with explicit padding fields, so
    // any byte pattern of their size is a valid value.
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::ListenerKey {}
    unsafe impl aya::Pod for super::ListenerStats {}
    unsafe impl aya::Pod for super::PortKey {}
    unsafe impl aya::Pod for super::PortStates {}
    unsafe impl aya::Pod for super::FdErrorKey {}
    unsafe impl aya::Pod for super::FdUsage {}
}
