//! `serve --workers`: what the supervisor and its worker processes share.
//!
//! Each worker is a full `headroom serve` process with its own fd table and
//! runtime and its own SO_REUSEPORT listener on the service's port: the
//! kernel spreads new connections over the workers, nothing sits in between.
//! What keeps the service one service:
//!
//! - a [`Table`] in shared memory (a memfd both sides map): per worker its
//!   ceiling (fd capacity) and the connections it holds, and the
//!   service-wide count that `--max-connections` is checked against with one
//!   atomic add, so the limit holds exactly across processes;
//! - a channel per worker (a SOCK_SEQPACKET socketpair): a worker that is at
//!   its own ceiling passes a new connection up (SCM_RIGHTS), and the
//!   supervisor hands it to the sibling with the most room. Only when no
//!   worker has room does the client get the refusal line. The supervisor
//!   also asks for each worker's metrics over it.
//!
//! Why not an SO_REUSEPORT eBPF selector: loading a BPF_PROG_TYPE_SK_REUSEPORT
//! program needs CAP_BPF and CAP_NET_ADMIN, which a server should not need,
//! and it picks a socket at SYN time, so a worker filling up still receives
//! the handshakes already steered to it. Passing the rare overflow connection
//! costs one sendmsg and is exact.

use headroom_core::{fd_capacity, ModelConfig};
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

/// Most workers one service can have.
pub const MAX_WORKERS: usize = 64;

/// Worker states in [`Slot::state`].
pub const EMPTY: u32 = 0;
pub const STARTING: u32 = 1;
pub const READY: u32 = 2;

/// One worker's counters. Written by that worker (except `state` and the
/// reset on restart, done by the supervisor while no worker owns the slot).
#[repr(C, align(64))]
#[derive(Default)]
pub struct Slot {
    pub pid: AtomicU32,
    pub state: AtomicU32,
    /// Connections the worker holds (admitted, not yet closed).
    pub active: AtomicU64,
    /// Connections it can hold: fd capacity at start.
    pub ceiling: AtomicU64,
    /// Connections adopted from the supervisor (monotonic).
    pub adopted: AtomicU64,
    /// Connections passed up because it was full (monotonic).
    pub overflowed: AtomicU64,
}

/// The shared table. Zeroed memory is a valid table.
#[repr(C)]
pub struct Table {
    /// Connections held by the whole service.
    pub service_active: AtomicU64,
    /// `--max-connections` for the whole service (0: none, fds decide).
    pub service_max: AtomicU64,
    /// Connections refused because the service was at `service_max`.
    pub refused_max: AtomicU64,
    pub slots: [Slot; MAX_WORKERS],
}

/// A mapping of the [`Table`] (memfd, MAP_SHARED).
pub struct Shm {
    ptr: NonNull<Table>,
    fd: OwnedFd,
}

// SAFETY: the table holds only atomics; the mapping lives as long as Shm.
unsafe impl Send for Shm {}
unsafe impl Sync for Shm {}

impl Shm {
    /// A new zeroed table (supervisor side).
    pub fn create() -> io::Result<Shm> {
        // SAFETY: a valid C string and flags.
        let fd = unsafe { libc::memfd_create(c"headroom-workers".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: memfd_create returned a new descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: plain syscall on our descriptor.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), std::mem::size_of::<Table>() as libc::off_t) }
            != 0
        {
            return Err(io::Error::last_os_error());
        }
        Self::map(fd)
    }

    /// Maps the table a supervisor passed down as descriptor `fd` (worker side).
    ///
    /// # Safety
    /// `fd` must be an open descriptor this process owns from now on.
    pub unsafe fn from_raw_fd(fd: RawFd) -> io::Result<Shm> {
        let fd = OwnedFd::from_raw_fd(fd);
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(fd.as_raw_fd(), &mut st) != 0 {
            return Err(io::Error::last_os_error());
        }
        if (st.st_size as usize) < std::mem::size_of::<Table>() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "worker table descriptor is not a headroom table",
            ));
        }
        Self::map(fd)
    }

    fn map(fd: OwnedFd) -> io::Result<Shm> {
        // SAFETY: mapping a descriptor we own, length of the table; the
        // kernel zero-fills, and all-zero is a valid Table.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                std::mem::size_of::<Table>(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Shm {
            ptr: NonNull::new(p.cast()).expect("mmap never returns null on success"),
            fd,
        })
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl std::ops::Deref for Shm {
    type Target = Table;
    fn deref(&self) -> &Table {
        // SAFETY: mapped for our lifetime; only atomics inside.
        unsafe { self.ptr.as_ref() }
    }
}

impl Drop for Shm {
    fn drop(&mut self) {
        // SAFETY: unmapping what map() mapped.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), std::mem::size_of::<Table>()) };
    }
}

/// Message tags on a worker's channel.
pub mod tag {
    /// worker -> supervisor, with a connection: I am full, place it.
    pub const OVERFLOW: u8 = b'F';
    /// supervisor -> worker, with a connection: serve it.
    pub const ADOPT: u8 = b'A';
    /// supervisor -> worker: send your metrics.
    pub const METRICS: u8 = b'M';
    /// worker -> supervisor: the metrics text follows the tag.
    pub const METRICS_REPLY: u8 = b'm';
}

/// Largest message on a channel (a metrics page); the channel's send buffer
/// is raised to hold it.
pub const MAX_MESSAGE: usize = 256 * 1024;

/// A connected SOCK_SEQPACKET pair, both ends non-blocking and close-on-exec:
/// (supervisor end, worker end).
pub fn channel() -> io::Result<(OwnedFd, OwnedFd)> {
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
    )
    .map_err(io::Error::from)?;
    for fd in [&a, &b] {
        let sz = MAX_MESSAGE as libc::c_int * 2;
        // SAFETY: setsockopt with a c_int value on our socket.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                (&sz as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    Ok((a, b))
}

/// Sends one message, with a descriptor when `fd` is given. Never blocks:
/// a full channel is `WouldBlock`.
pub fn send(chan: RawFd, bytes: &[u8], fd: Option<RawFd>) -> io::Result<()> {
    let iov = [IoSlice::new(bytes)];
    let fds;
    let cmsgs: &[ControlMessage] = match fd {
        Some(f) => {
            fds = [f];
            &[ControlMessage::ScmRights(&fds)]
        }
        None => &[],
    };
    loop {
        match sendmsg::<()>(
            chan,
            &iov,
            cmsgs,
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Receives one message into `buf`: its length and the descriptor it carried.
/// `Ok(None)` at end of stream (the other side is gone).
pub fn recv(chan: RawFd, buf: &mut [u8]) -> io::Result<Option<(usize, Option<OwnedFd>)>> {
    let mut cmsg = nix::cmsg_space!([RawFd; 4]);
    loop {
        let mut iov = [IoSliceMut::new(buf)];
        let r = recvmsg::<()>(
            chan,
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
        );
        let msg = match r {
            Ok(m) => m,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        };
        let mut got: Option<OwnedFd> = None;
        for c in msg.cmsgs().map_err(io::Error::from)? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                for f in fds {
                    // SAFETY: SCM_RIGHTS installed these descriptors in our
                    // table; we own them now. Extra ones are closed.
                    let owned = unsafe { OwnedFd::from_raw_fd(f) };
                    if got.is_none() {
                        got = Some(owned);
                    }
                }
            }
        }
        if msg.bytes == 0 && got.is_none() {
            return Ok(None);
        }
        return Ok(Some((msg.bytes, got)));
    }
}

/// The worker's side of the service, handed to the TCP transport
/// ([`crate::tcp::Service`]): service-wide admission and overflow.
pub struct WorkerLink {
    pub shm: Arc<Shm>,
    pub index: usize,
    pub chan: Arc<OwnedFd>,
}

impl WorkerLink {
    pub fn slot(&self) -> &Slot {
        &self.shm.slots[self.index]
    }

    /// Publishes this worker's ceiling and marks it ready.
    pub fn ready(&self, ceiling: u64) {
        let s = self.slot();
        s.ceiling.store(ceiling, Ordering::SeqCst);
        s.pid.store(std::process::id(), Ordering::SeqCst);
        s.state.store(READY, Ordering::SeqCst);
    }
}

impl crate::tcp::Service for WorkerLink {
    fn admit(&self) -> Result<(), (&'static str, Vec<u8>)> {
        let t = &*self.shm;
        let max = t.service_max.load(Ordering::Relaxed);
        let before = t.service_active.fetch_add(1, Ordering::SeqCst);
        if max > 0 && before >= max {
            t.service_active.fetch_sub(1, Ordering::SeqCst);
            t.refused_max.fetch_add(1, Ordering::Relaxed);
            return Err((
                "max-connections",
                crate::jsonrpc::refusal_line(
                    "max-connections",
                    max,
                    &format!("connection refused: max-connections {max} reached (service-wide)"),
                ),
            ));
        }
        self.slot().active.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn release(&self) {
        self.slot().active.fetch_sub(1, Ordering::SeqCst);
        self.shm.service_active.fetch_sub(1, Ordering::SeqCst);
    }

    fn overflow(&self, fd: RawFd) -> bool {
        if send(self.chan.as_raw_fd(), &[tag::OVERFLOW], Some(fd)).is_ok() {
            self.slot().overflowed.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        false
    }

    fn adopted(&self) {
        self.slot().adopted.fetch_add(1, Ordering::Relaxed);
    }
}

/// The worker's end of its channel, run on the worker's control runtime
/// until the supervisor goes away: adopted connections go to the TCP
/// transport through `adopted`, metrics requests are answered with
/// `render()`. Returns when the channel closes (the supervisor died): the
/// caller drains and exits.
pub async fn worker_channel(
    chan: Arc<OwnedFd>,
    adopted: tokio::sync::mpsc::UnboundedSender<std::net::TcpStream>,
    render: impl Fn() -> String,
) -> io::Result<()> {
    // SAFETY: `chan` owns the descriptor and outlives the registration (dropped after `afd`).
    let afd = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(
            chan.as_raw_fd(),
            tokio::io::Interest::READABLE,
        )
    }?;
    let mut buf = vec![0u8; 64];
    loop {
        let mut guard = afd.readable().await?;
        loop {
            match recv(chan.as_raw_fd(), &mut buf) {
                Ok(None) => return Ok(()),
                Ok(Some((n, fd))) => match (buf[..n].first(), fd) {
                    (Some(&tag::ADOPT), Some(fd)) => {
                        let s = std::net::TcpStream::from(fd);
                        let _ = s.set_nonblocking(true);
                        if adopted.send(s).is_err() {
                            return Ok(());
                        }
                    }
                    (Some(&tag::METRICS), _) => {
                        let mut text = Vec::with_capacity(16 * 1024);
                        text.push(tag::METRICS_REPLY);
                        text.extend_from_slice(render().as_bytes());
                        text.truncate(MAX_MESSAGE);
                        // A supervisor that does not read gets no page.
                        let _ = send(chan.as_raw_fd(), &text, None);
                    }
                    _ => {} // unknown or malformed: ignored (its fd, if any, is closed)
                },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    guard.clear_ready();
                    break;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Workers `--workers auto` starts: enough that the per-process fd limit
/// does not bind `max_connections` (each worker's capacity computed with the
/// same [`fd_capacity`] the server uses, from the fds a worker opens before
/// it serves), and at least one per core.
pub fn auto_workers(max_connections: Option<u64>, nofile_soft: Option<u64>, cores: usize) -> usize {
    let per = nofile_soft.map_or(u64::MAX, |s| {
        fd_capacity(s, WORKER_BASE_FDS, &ModelConfig::default()).max(1)
    });
    let need = max_connections.map_or(1, |m| m.div_ceil(per)) as usize;
    need.max(cores).clamp(1, MAX_WORKERS)
}

/// Descriptors a worker holds before it serves (stdio, runtimes' epoll and
/// eventfds, listener, table, channel, signal pipe), measured on 6.18 at 12;
/// rounded up so `auto` errs on the side of one worker too many.
pub const WORKER_BASE_FDS: u64 = 16;

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn table_is_shared_between_mappings() {
        let a = Shm::create().unwrap();
        // SAFETY: dup gives us a descriptor of our own.
        let dup = unsafe { libc::dup(a.raw_fd()) };
        let b = unsafe { Shm::from_raw_fd(dup) }.unwrap();
        a.slots[3].active.store(7, Ordering::SeqCst);
        assert_eq!(b.slots[3].active.load(Ordering::SeqCst), 7);
        b.service_active.fetch_add(5, Ordering::SeqCst);
        assert_eq!(a.service_active.load(Ordering::SeqCst), 5);
    }

    #[test]
    fn a_connection_crosses_the_channel() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        let (x, y) = channel().unwrap();
        send(x.as_raw_fd(), &[tag::ADOPT], Some(s.as_raw_fd())).unwrap();
        drop(s);
        let mut buf = [0u8; 16];
        let (n, fd) = recv(y.as_raw_fd(), &mut buf).unwrap().unwrap();
        assert_eq!((n, buf[0]), (1, tag::ADOPT));
        let mut passed = std::net::TcpStream::from(fd.unwrap());
        use std::io::{Read, Write};
        passed.write_all(b"hi\n").unwrap();
        let mut got = [0u8; 3];
        c.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hi\n");
        drop(x);
        assert!(recv(y.as_raw_fd(), &mut buf).unwrap().is_none());
    }

    #[test]
    fn auto_takes_enough_workers_for_the_limit() {
        // 20000 soft: 20000 - 16 - 32 = 19952 per worker; 100000 needs 6.
        assert_eq!(auto_workers(Some(100_000), Some(20_000), 2), 6);
        assert_eq!(auto_workers(Some(1_000), Some(20_000), 2), 2);
        assert_eq!(auto_workers(None, Some(20_000), 4), 4);
        assert_eq!(auto_workers(Some(1_000), None, 1), 1);
    }
}
