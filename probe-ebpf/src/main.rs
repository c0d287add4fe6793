//! headroom-probe-ebpf: the kernel side of `headroom probe`. Tracepoint
//! programs only (kprobes and fentry are not available everywhere), each
//! doing a bounded amount of work per event and counting into bounded maps:
//!
//! - `inet_sock_set_state`: TCP sockets per state per port, and accept queue
//!   depth, peak and full events, read when a connection is cloned from its
//!   listener (see `connection_queued`);
//! - TIME_WAIT timers (opt-in): TIME_WAIT sockets per port;
//! - `syscalls:sys_exit_*`: EMFILE/ENFILE/EADDRNOTAVAIL per process and syscall,
//!   fds opened/closed by watched processes.
//!
//! The socket and timer events are raw tracepoints: a raw tracepoint hands
//! over the kernel's own arguments, with no trace record built first. The
//! timer events fire for every kernel timer on the host (hundreds of
//! thousands a second under load), almost all of them not ours: their
//! programs bail out after one read. The syscall events stay classic
//! tracepoints (one per syscall, only the fd ones): their record is read
//! with plain loads, not a helper call per field.
//!
//! Kernel struct offsets come from the loader (BTF) through `CONFIG`.
#![no_std]
#![no_main]
// Atomic adds need inline asm: the bpf target exposes no atomic RMW in core.
#![feature(asm_experimental_arch)]

use aya_ebpf::{
    bindings::{BPF_ANY, BPF_NOEXIST},
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel},
    macros::{map, raw_tracepoint, tracepoint},
    maps::{Array, HashMap},
    programs::{RawTracePointContext, TracePointContext},
    EbpfContext,
};
use headroom_probe_common::*;

/// Written by the loader before load (EbpfLoader::override_global).
#[no_mangle]
static CONFIG: Config = Config {
    off_ack_backlog: 0,
    off_max_ack_backlog: 0,
    off_state: 0,
    off_num: 0,
    off_rcv_saddr: 0,
    off_v6_rcv_saddr: 0,
    off_net: 0,
    off_net_inum: 0,
    off_tw_timer: 0,
    watch_new_listeners: 0,
    off_timer_function: 0,
    off_family: 0,
    off_protocol: 0,
    _pad: 0,
    tw_timer_fn: 0,
};

#[map]
static LISTENERS: HashMap<ListenerKey, ListenerStats> = HashMap::with_max_entries(MAX_LISTENERS, 0);
#[map]
static WATCH_PORTS: HashMap<PortKey, u8> = HashMap::with_max_entries(MAX_PORTS, 0);
#[map]
static PORT_STATES: HashMap<PortKey, PortStates> = HashMap::with_max_entries(MAX_PORTS, 0);
/// TIME_WAIT sockets of watched ports, by the address of their timer.
#[map]
static TIME_WAIT: HashMap<u64, PortKey> = HashMap::with_max_entries(MAX_TIME_WAIT, 0);
#[map]
static FD_ERRORS: HashMap<FdErrorKey, u64> = HashMap::with_max_entries(MAX_FD_ERRORS, 0);
#[map]
static WATCH_PIDS: HashMap<u32, FdUsage> = HashMap::with_max_entries(MAX_WATCHED_PIDS, 0);
#[map]
static DROPS: Array<u64> = Array::with_max_entries(DROP_SLOTS, 0);

#[inline(always)]
fn config() -> Config {
    // Volatile: without it the compiler folds the zero initialiser into the code.
    unsafe { core::ptr::read_volatile(&CONFIG) }
}

/// `lock *(u64 *)(p) += v`: BPF_ATOMIC add, safe against other CPUs.
#[inline(always)]
fn add_u64(p: *mut u64, v: u64) {
    unsafe {
        core::arch::asm!("lock *(u64 *)({p} + 0) += {v}", p = in(reg) p, v = in(reg) v);
    }
}

#[inline(always)]
fn add_i64(p: *mut i64, v: i64) {
    add_u64(p as *mut u64, v as u64);
}

#[inline(always)]
fn dropped(slot: u32) {
    if let Some(p) = DROPS.get_ptr_mut(slot) {
        add_u64(p, 1);
    }
}

/// A field of a classic tracepoint's record: a plain load from the context
/// (the verifier allows aligned reads of it), not a bpf_probe_read call.
#[inline(always)]
unsafe fn field<T: Copy>(ctx: &TracePointContext, off: usize) -> T {
    core::ptr::read((ctx.as_ptr() as *const u8).add(off) as *const T)
}

#[inline(always)]
unsafe fn read<T>(base: u64, off: u32) -> Option<T> {
    bpf_probe_read_kernel((base + off as u64) as *const T).ok()
}

/// Network namespace inode of a socket (sock_common), 0 when unreadable.
#[inline(always)]
unsafe fn netns_of(sk: u64, c: &Config) -> u32 {
    let net: u64 = match read(sk, c.off_net) {
        Some(n) if n != 0 => n,
        _ => return 0,
    };
    read(net, c.off_net_inum).unwrap_or(0)
}

/// Looks a key up, inserting `init` first when it is missing; a full map
/// counts a drop in `slot` and yields None.
#[inline(always)]
fn get_or_insert<K, V>(map: &HashMap<K, V>, key: &K, init: &V, slot: u32) -> Option<*mut V> {
    if let Some(p) = map.get_ptr_mut(key) {
        return Some(p);
    }
    // NOEXIST: a racing CPU may have inserted it meanwhile; then just look again.
    if map.insert(key, init, BPF_NOEXIST as u64).is_err() {
        if let Some(p) = map.get_ptr_mut(key) {
            return Some(p);
        }
        dropped(slot);
        return None;
    }
    map.get_ptr_mut(key)
}

// ---------------------------------------------------------------- accept queues

/// `sk` was just cloned from a listener and is about to join its accept
/// queue. The clone is a byte copy of the listener (sock_copy), made before
/// the kernel adds the child to the queue: its sk_ack_backlog is the depth
/// before this connection and its sk_max_ack_backlog the limit. The kernel
/// clones only while the queue is not full (sk_acceptq_is_full: depth >
/// limit), so depth after joining reaches limit + 1 at most, the "full"
/// the kernel then refuses SYNs at.
///
/// Why here and not at `sk_data_ready` on the listener: that event fires
/// for every segment delivered to every socket on the host, and returning
/// early from it still cost a loaded server several percent; this one fires
/// once per accepted connection. The price: the child carries the local
/// address the connection came in on, not the listener's (a wildcard
/// listener is reached at concrete addresses); userspace folds such entries
/// into the wildcard listener on the port (`ebpf::listener_for`).
#[inline(always)]
unsafe fn connection_queued(sk: u64, netns: u32, port: u16, c: &Config) -> Option<()> {
    let family: u16 = read(sk, c.off_family)?;
    if family != 2 && family != 10 {
        return None;
    }
    let depth: u32 = read::<u32>(sk, c.off_ack_backlog)? + 1;
    let limit: u32 = read(sk, c.off_max_ack_backlog)?;
    let mut key = ListenerKey {
        netns,
        family,
        port,
        addr: [0; 16],
    };
    if family == 2 {
        let a: [u8; 4] = read(sk, c.off_rcv_saddr)?;
        key.addr[..4].copy_from_slice(&a);
    } else {
        key.addr = read(sk, c.off_v6_rcv_saddr)?;
    }
    let init = ListenerStats::default();
    let s = get_or_insert(&LISTENERS, &key, &init, DROP_LISTENERS)?;
    let s = &mut *s;
    s.depth = depth;
    s.limit = limit;
    if depth > s.peak {
        s.peak = depth;
    }
    add_u64(&mut s.enqueued, 1);
    if depth > limit {
        add_u64(&mut s.full_events, 1);
    }
    Some(())
}

// ---------------------------------------------------------------- socket states

/// inet_sock_set_state(const struct sock *sk, const int oldstate, const int newstate)
#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: RawTracePointContext) -> i32 {
    unsafe {
        let (old, new) = (ctx.arg::<u64>(1) as i32, ctx.arg::<u64>(2) as i32);
        try_set_state(ctx.arg(0), old, new)
    };
    0
}

#[inline(always)]
unsafe fn try_set_state(sk: u64, old: i32, new: i32) -> Option<()> {
    let c = config();
    // skc_num: the local port in host order, what the classic record's sport holds.
    let sport: u16 = read(sk, c.off_num)?;
    let protocol: u16 = read(sk, c.off_protocol)?;
    if protocol != 6 || sport == 0 {
        // sport 0: a connect() before its port is picked; the port is not known yet.
        return None;
    }
    let netns = netns_of(sk, &c);
    // A connection cloned from a listener: it "leaves" LISTEN for SYN_RECV.
    let cloned = old as u32 == TCP_LISTEN && new == 3;
    if cloned {
        // Its accept queue, for every listener (not only watched ports), as
        // `headroom status` shows them.
        connection_queued(sk, netns, sport, &c);
    }
    let key = PortKey {
        netns,
        port: sport,
        _pad: 0,
    };
    if new as u32 == TCP_LISTEN && c.watch_new_listeners != 0 {
        let _ = WATCH_PORTS.insert(&key, &1, BPF_ANY as u64);
    }
    WATCH_PORTS.get_ptr(&key)?;
    let init = PortStates::default();
    let p = &mut *get_or_insert(&PORT_STATES, &key, &init, DROP_PORTS)?;
    // Masked so the verifier can see the index is within the array.
    let (old, new) = ((old as u32 & 0xf) as usize, (new as u32 & 0xf) as usize);
    // The listener a connection was cloned from stays: do not count it down.
    if !cloned && old > 0 && old < STATE_SLOTS {
        add_i64(&mut p.current[old], -1);
    }
    if new > 0 && new < STATE_SLOTS {
        add_i64(&mut p.current[new], 1);
        add_u64(&mut p.entered[new], 1);
    }
    Some(())
}

// TIME_WAIT sockets are not full sockets: the kernel moves the sock to CLOSE
// and hands the connection to an inet_timewait_sock whose timer is its life.
// Its start is TIME_WAIT entered, its expiry or cancellation is TIME_WAIT left.

/// timer_start(struct timer_list *timer, unsigned long bucket_expiry)
#[raw_tracepoint(tracepoint = "timer_start")]
pub fn tw_timer_start(ctx: RawTracePointContext) -> i32 {
    unsafe { try_tw_start(ctx.arg(0)) };
    0
}

#[inline(always)]
unsafe fn try_tw_start(timer: u64) -> Option<()> {
    let c = config();
    if !is_tw_timer(timer, &c) {
        return None;
    }
    if TIME_WAIT.get_ptr(&timer).is_some() {
        return None; // re-armed (a FIN retransmitted into TIME_WAIT)
    }
    let tw = timer - c.off_tw_timer as u64;
    let key = PortKey {
        netns: netns_of(tw, &c),
        port: read(tw, c.off_num)?,
        _pad: 0,
    };
    WATCH_PORTS.get_ptr(&key)?;
    if TIME_WAIT.insert(&timer, &key, BPF_NOEXIST as u64).is_err() {
        if TIME_WAIT.get_ptr(&timer).is_none() {
            dropped(DROP_TIME_WAIT);
        }
        return None;
    }
    let init = PortStates::default();
    let p = &mut *get_or_insert(&PORT_STATES, &key, &init, DROP_PORTS)?;
    let s = TCP_TIME_WAIT as usize;
    add_i64(&mut p.current[s], 1);
    add_u64(&mut p.entered[s], 1);
    Some(())
}

/// Whether a timer is a TIME_WAIT socket's: its callback, read from the
/// timer itself (still set at every event here; a shutdown clears it only
/// after timer_cancel), is tw_timer_handler. Every kernel timer passes
/// through these programs, so for most events this read is all they cost.
#[inline(always)]
unsafe fn is_tw_timer(timer: u64, c: &Config) -> bool {
    c.tw_timer_fn != 0 && read::<u64>(timer, c.off_timer_function) == Some(c.tw_timer_fn)
}

/// timer_cancel(struct timer_list *timer). The kernel detaches an expiring
/// timer through the same path (detach_timer), so this sees expiries as
/// well as cancellations: the end of every TIME_WAIT socket.
#[raw_tracepoint(tracepoint = "timer_cancel")]
pub fn tw_timer_cancel(ctx: RawTracePointContext) -> i32 {
    unsafe {
        let timer: u64 = ctx.arg(0);
        if is_tw_timer(timer, &config()) {
            tw_gone(timer);
        }
    }
    0
}

#[inline(always)]
fn tw_gone(timer: u64) {
    let key = match TIME_WAIT.get_ptr(&timer) {
        Some(k) => unsafe { *k },
        None => return,
    };
    if TIME_WAIT.remove(&timer).is_err() {
        return; // another CPU got there first
    }
    if let Some(p) = PORT_STATES.get_ptr_mut(&key) {
        unsafe { add_i64(&mut (*p).current[TCP_TIME_WAIT as usize], -1) };
    }
}

// ---------------------------------------------------------------- fd pressure
//
// One program per kind of syscall (opens one fd, opens two, closes one, other)
// so the kernel side needs no per-architecture syscall table; the loader
// attaches each to the matching syscalls:sys_exit_* tracepoints.

#[inline(always)]
unsafe fn sys_exit(ctx: &TracePointContext, fds_on_success: i64) -> Option<()> {
    let nr: i32 = field(ctx, 8);
    let ret: i64 = field(ctx, 16);
    let pid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if ret < 0 {
        let errno = -ret;
        if errno == EMFILE || errno == ENFILE || errno == EADDRNOTAVAIL {
            let key = FdErrorKey {
                pid,
                nr: nr as u32,
                errno: errno as u32,
                _pad: 0,
            };
            let p = get_or_insert(&FD_ERRORS, &key, &0, DROP_FD_ERRORS)?;
            add_u64(p, 1);
        }
        return None;
    }
    if fds_on_success == 0 {
        return None;
    }
    let u = &mut *WATCH_PIDS.get_ptr_mut(pid)?;
    if fds_on_success > 0 {
        add_u64(&mut u.opened, fds_on_success as u64);
    } else {
        add_u64(&mut u.closed, (-fds_on_success) as u64);
    }
    add_i64(&mut u.delta, fds_on_success);
    let now = core::ptr::read_volatile(&u.delta);
    if now > u.peak_delta {
        u.peak_delta = now;
    }
    Some(())
}

#[tracepoint]
pub fn sys_exit_open1(ctx: TracePointContext) -> u32 {
    unsafe { sys_exit(&ctx, 1) };
    0
}

#[tracepoint]
pub fn sys_exit_open2(ctx: TracePointContext) -> u32 {
    unsafe { sys_exit(&ctx, 2) };
    0
}

#[tracepoint]
pub fn sys_exit_close(ctx: TracePointContext) -> u32 {
    unsafe { sys_exit(&ctx, -1) };
    0
}

#[tracepoint]
pub fn sys_exit_other(ctx: TracePointContext) -> u32 {
    unsafe { sys_exit(&ctx, 0) };
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
