//! headroom-probe-ebpf: the kernel side of `headroom probe`. Tracepoint
//! programs only (kprobes and fentry are not available everywhere), each
//! doing a bounded amount of work per event and counting into bounded maps:
//!
//! - `sock:sk_data_ready` on LISTEN sockets: accept queue depth, peak, full events;
//! - `sock:inet_sock_set_state` + TIME_WAIT timers: TCP sockets per state per port;
//! - `syscalls:sys_exit_*`: EMFILE/ENFILE/EADDRNOTAVAIL per process and syscall,
//!   fds opened/closed by watched processes.
//!
//! Kernel struct offsets come from the loader (BTF) through `CONFIG`.
#![no_std]
#![no_main]
// Atomic adds need inline asm: the bpf target exposes no atomic RMW in core.
#![feature(asm_experimental_arch)]

use aya_ebpf::{
    bindings::{BPF_ANY, BPF_NOEXIST},
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel},
    macros::{map, tracepoint},
    maps::{Array, HashMap},
    programs::TracePointContext,
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

#[tracepoint]
pub fn sk_data_ready(ctx: TracePointContext) -> u32 {
    unsafe { try_sk_data_ready(&ctx) };
    0
}

#[inline(always)]
unsafe fn try_sk_data_ready(ctx: &TracePointContext) -> Option<()> {
    let c = config();
    let sk: u64 = ctx.read_at(8).ok()?;
    let family: u16 = ctx.read_at(16).ok()?;
    let protocol: u16 = ctx.read_at(18).ok()?;
    if protocol != 6 || sk == 0 {
        return None;
    }
    let state: u8 = read(sk, c.off_state)?;
    if state as u32 != TCP_LISTEN {
        return None;
    }
    let depth: u32 = read(sk, c.off_ack_backlog)?;
    let limit: u32 = read(sk, c.off_max_ack_backlog)?;
    let mut key = ListenerKey {
        netns: netns_of(sk, &c),
        family,
        port: read(sk, c.off_num)?,
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

#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    unsafe { try_set_state(&ctx) };
    0
}

#[inline(always)]
unsafe fn try_set_state(ctx: &TracePointContext) -> Option<()> {
    let c = config();
    let sk: u64 = ctx.read_at(8).ok()?;
    let old: i32 = ctx.read_at(16).ok()?;
    let new: i32 = ctx.read_at(20).ok()?;
    let sport: u16 = ctx.read_at(24).ok()?;
    let protocol: u16 = ctx.read_at(30).ok()?;
    if protocol != 6 || sport == 0 {
        // sport 0: a connect() before its port is picked; the port is not known yet.
        return None;
    }
    let key = PortKey {
        netns: netns_of(sk, &c),
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
    // An accepted connection is cloned from the listener and "leaves" LISTEN
    // for SYN_RECV: the listener itself stays, so do not count it down.
    let clone = old == TCP_LISTEN as usize && new == 3;
    if !clone && old > 0 && old < STATE_SLOTS {
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

#[tracepoint]
pub fn tw_timer_start(ctx: TracePointContext) -> u32 {
    unsafe { try_tw_start(&ctx) };
    0
}

#[inline(always)]
unsafe fn try_tw_start(ctx: &TracePointContext) -> Option<()> {
    let c = config();
    let function: u64 = ctx.read_at(16).ok()?;
    if c.tw_timer_fn == 0 || function != c.tw_timer_fn {
        return None;
    }
    let timer: u64 = ctx.read_at(8).ok()?;
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

#[tracepoint]
pub fn tw_timer_expire(ctx: TracePointContext) -> u32 {
    // timer_expire_entry: timer at 8, function at 24.
    unsafe {
        let c = config();
        if let (Ok(timer), Ok(function)) = (ctx.read_at::<u64>(8), ctx.read_at::<u64>(24)) {
            if c.tw_timer_fn != 0 && function == c.tw_timer_fn {
                tw_gone(timer);
            }
        }
    }
    0
}

#[tracepoint]
pub fn tw_timer_cancel(ctx: TracePointContext) -> u32 {
    // timer_cancel carries no function, and fires for every timer on the
    // host (hundreds of thousands a second under load): read the callback
    // from the timer itself (still set here; a shutdown clears it after the
    // tracepoint) and look in the map only for TIME_WAIT timers. The
    // lookup for every timer was the probe's largest cost (bench probe).
    unsafe {
        let c = config();
        if c.tw_timer_fn == 0 {
            return 0;
        }
        if let Ok(timer) = ctx.read_at::<u64>(8) {
            if read::<u64>(timer, c.off_timer_function) == Some(c.tw_timer_fn) {
                tw_gone(timer);
            }
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
    let nr: i32 = ctx.read_at(8).ok()?;
    let ret: i64 = ctx.read_at(16).ok()?;
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
