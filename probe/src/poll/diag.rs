//! TCP sockets of the current network namespace from sock_diag netlink
//! (INET_DIAG), as `ss -tan` reads them: one dump per address family.
//!
//! For a listener the kernel reports the accept-queue depth as `rqueue` and
//! its limit (the backlog, already clamped to somaxconn) as `wqueue`.
//!
//! A [`Query`] lets the kernel filter (a state bitmask, and an
//! INET_DIAG_REQ_BYTECODE program on the local port, as `ss sport = :P`
//! does), so that a refresh asking for the listeners of one port does not
//! copy 40,000 connected sockets into userspace to throw them away.

use crate::Error;
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_sock_diag::{
    constants::{AF_INET, AF_INET6, IPPROTO_TCP},
    inet::{ExtensionFlags, InetRequest, SocketId, StateFlags},
    SockDiagMessage,
};
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket, SocketAddr as NlAddr};
use std::net::SocketAddr;

/// One TCP socket as sock_diag reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiagSocket {
    /// Kernel TCP state number (1 ESTABLISHED ... 10 LISTEN).
    pub state: u8,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// Listener: accept-queue depth. Other sockets: bytes not yet read.
    pub rqueue: u32,
    /// Listener: accept-queue limit. Other sockets: bytes not yet acked.
    pub wqueue: u32,
    /// Socket inode; 0 for sockets no process holds (TIME_WAIT, request socks).
    pub inode: u64,
}

/// Which sockets to dump; the kernel does the filtering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query {
    /// Bitmask of kernel TCP states (`1 << state`).
    pub states: u32,
    /// Only sockets bound to this local port.
    pub local_port: Option<u16>,
}

impl Query {
    /// Every TCP socket, all states.
    pub fn all() -> Query {
        Query {
            states: StateFlags::all().bits(),
            local_port: None,
        }
    }

    /// Listening sockets only (TCPF_LISTEN: the kernel then walks only its
    /// listener hash), on one port when given.
    pub fn listeners(local_port: Option<u16>) -> Query {
        Query {
            states: StateFlags::LISTEN.bits(),
            local_port,
        }
    }
}

/// Dumps every TCP socket (IPv4 and IPv6, all states) of the calling
/// thread's network namespace.
pub fn dump_tcp() -> Result<Vec<DiagSocket>, Error> {
    dump(Query::all())
}

/// Dumps the TCP sockets (IPv4 and IPv6) of the calling thread's network
/// namespace that `query` selects.
pub fn dump(query: Query) -> Result<Vec<DiagSocket>, Error> {
    let mut out = Vec::new();
    dump_family(AF_INET, query, &mut out)?;
    dump_family(AF_INET6, query, &mut out)?;
    Ok(out)
}

/// INET_DIAG_REQ_BYTECODE, the request attribute carrying a filter program.
const INET_DIAG_REQ_BYTECODE: u16 = 1;
/// `inet_diag_bc_op` code: local port equals the next op's `no` field.
const INET_DIAG_BC_S_EQ: u8 = 11;

/// The filter program "local port == `port`", as an rtattr to append to an
/// inet_diag_req_v2: two 4-byte `inet_diag_bc_op`s. `yes` jumps to the end
/// of the program (accept), `no` jumps 4 bytes past it (reject); the port
/// rides in the second op's `no`, in host order.
pub fn port_filter_attr(port: u16) -> Vec<u8> {
    let mut ops = Vec::with_capacity(8);
    ops.extend_from_slice(&[INET_DIAG_BC_S_EQ, 8]);
    ops.extend_from_slice(&12u16.to_ne_bytes());
    ops.extend_from_slice(&[0, 0]);
    ops.extend_from_slice(&port.to_ne_bytes());
    let mut attr = Vec::with_capacity(4 + ops.len());
    attr.extend_from_slice(&((4 + ops.len()) as u16).to_ne_bytes());
    attr.extend_from_slice(&INET_DIAG_REQ_BYTECODE.to_ne_bytes());
    attr.extend_from_slice(&ops);
    attr
}

fn nl_err(what: &str, e: std::io::Error) -> Error {
    Error::Netlink(format!("{what}: {e}"))
}

fn dump_family(family: u8, query: Query, out: &mut Vec<DiagSocket>) -> Result<(), Error> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG).map_err(|e| nl_err("socket", e))?;
    socket.bind_auto().map_err(|e| nl_err("bind", e))?;
    socket
        .connect(&NlAddr::new(0, 0))
        .map_err(|e| nl_err("connect", e))?;

    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let socket_id = if family == AF_INET {
        SocketId::new_v4()
    } else {
        SocketId::new_v6()
    };
    let mut packet = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::empty(),
            states: StateFlags::from_bits_retain(query.states),
            socket_id,
        })
        .into(),
    );
    packet.finalize();
    let mut req = vec![0u8; packet.buffer_len()];
    packet.serialize(&mut req);
    if let Some(port) = query.local_port {
        // The request is already 4-byte aligned; the attribute follows it
        // and the header's length (its first 4 bytes) grows to cover it.
        req.extend(port_filter_attr(port));
        let len = req.len() as u32;
        req[..4].copy_from_slice(&len.to_ne_bytes());
    }
    socket.send(&req, 0).map_err(|e| nl_err("send", e))?;

    // The kernel fills each recv with as many whole messages as fit; 64 KiB
    // holds ~600 sockets, so a 100k-socket dump is a few hundred reads.
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = socket
            .recv(&mut &mut buf[..], 0)
            .map_err(|e| nl_err("recv", e))?;
        if n == 0 || parse_reply(&buf[..n.min(buf.len())], out)? {
            return Ok(());
        }
    }
}

/// Parses one datagram of an INET_DIAG dump reply into `out`. Returns true
/// when it ends the dump (NLMSG_DONE).
pub fn parse_reply(mut buf: &[u8], out: &mut Vec<DiagSocket>) -> Result<bool, Error> {
    while buf.len() >= 16 {
        let msg = NetlinkMessage::<SockDiagMessage>::deserialize(buf)
            .map_err(|e| Error::Netlink(format!("malformed reply: {e}")))?;
        let len = msg.header.length as usize;
        match msg.payload {
            NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                let h = &r.header;
                out.push(DiagSocket {
                    state: h.state,
                    local: SocketAddr::new(h.socket_id.source_address, h.socket_id.source_port),
                    remote: SocketAddr::new(
                        h.socket_id.destination_address,
                        h.socket_id.destination_port,
                    ),
                    rqueue: h.recv_queue,
                    wqueue: h.send_queue,
                    inode: h.inode as u64,
                });
            }
            NetlinkPayload::Done(_) => return Ok(true),
            NetlinkPayload::Error(e) => {
                let io = e.to_io();
                return Err(Error::Netlink(format!("kernel answered: {io}")));
            }
            _ => {}
        }
        // Messages are padded to 4 bytes (NLMSG_ALIGN).
        let step = len.div_ceil(4) * 4;
        if len < 16 || step > buf.len() {
            break;
        }
        buf = &buf[step..];
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const NLMSG_DONE: u16 = 3;
    const NLMSG_ERROR: u16 = 2;
    const NLM_F_MULTI: u16 = 2;

    fn nlmsg(ty: u16, payload: &[u8]) -> Vec<u8> {
        let len = 16 + payload.len();
        let mut b = Vec::new();
        b.extend_from_slice(&(len as u32).to_ne_bytes());
        b.extend_from_slice(&ty.to_ne_bytes());
        b.extend_from_slice(&NLM_F_MULTI.to_ne_bytes());
        b.extend_from_slice(&1u32.to_ne_bytes()); // seq
        b.extend_from_slice(&4242u32.to_ne_bytes()); // port id
        b.extend_from_slice(payload);
        while b.len() % 4 != 0 {
            b.push(0);
        }
        b
    }

    /// struct inet_diag_msg, byte by byte as the kernel lays it out.
    #[allow(clippy::too_many_arguments)]
    fn inet_diag_msg(
        family: u8,
        state: u8,
        sport: u16,
        dport: u16,
        src: IpAddr,
        dst: IpAddr,
        rqueue: u32,
        wqueue: u32,
        inode: u32,
    ) -> Vec<u8> {
        let addr = |a: IpAddr| -> [u8; 16] {
            let mut b = [0u8; 16];
            match a {
                IpAddr::V4(v4) => b[..4].copy_from_slice(&v4.octets()),
                IpAddr::V6(v6) => b = v6.octets(),
            }
            b
        };
        let mut b = vec![family, state, 0 /* timer */, 0 /* retrans */];
        b.extend_from_slice(&sport.to_be_bytes());
        b.extend_from_slice(&dport.to_be_bytes());
        b.extend_from_slice(&addr(src));
        b.extend_from_slice(&addr(dst));
        b.extend_from_slice(&0u32.to_ne_bytes()); // interface
        b.extend_from_slice(&[0xab; 8]); // cookie
        b.extend_from_slice(&0u32.to_ne_bytes()); // expires
        b.extend_from_slice(&rqueue.to_ne_bytes());
        b.extend_from_slice(&wqueue.to_ne_bytes());
        b.extend_from_slice(&1000u32.to_ne_bytes()); // uid
        b.extend_from_slice(&inode.to_ne_bytes());
        assert_eq!(b.len(), 72);
        b
    }

    #[test]
    fn parses_listener_connection_and_done() {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        let mut dgram = nlmsg(
            SOCK_DIAG_BY_FAMILY,
            &inet_diag_msg(AF_INET, 10, 8080, 0, lo, any, 5, 8, 777),
        );
        dgram.extend(nlmsg(
            SOCK_DIAG_BY_FAMILY,
            &inet_diag_msg(AF_INET, 1, 8080, 40000, lo, lo, 0, 0, 778),
        ));
        let mut out = Vec::new();
        assert!(!parse_reply(&dgram, &mut out).unwrap());
        assert_eq!(out.len(), 2);
        assert_eq!(
            out[0],
            DiagSocket {
                state: 10,
                local: "127.0.0.1:8080".parse().unwrap(),
                remote: "0.0.0.0:0".parse().unwrap(),
                rqueue: 5,
                wqueue: 8,
                inode: 777,
            }
        );
        assert_eq!(out[1].state, 1);
        assert_eq!(out[1].remote, "127.0.0.1:40000".parse().unwrap());
        assert_eq!(out[1].inode, 778);

        let done = nlmsg(NLMSG_DONE, &0i32.to_ne_bytes());
        assert!(parse_reply(&done, &mut out).unwrap());
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn parses_ipv6_time_wait_without_inode() {
        let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        let dgram = nlmsg(
            SOCK_DIAG_BY_FAMILY,
            &inet_diag_msg(AF_INET6, 6, 9000, 51000, v6, v6, 0, 0, 0),
        );
        let mut out = Vec::new();
        parse_reply(&dgram, &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].local, "[::1]:9000".parse().unwrap());
        assert_eq!((out[0].state, out[0].inode), (6, 0));
    }

    #[test]
    fn kernel_error_is_an_error() {
        // struct nlmsgerr: error code, then the offending request header.
        let mut payload = (-libc::EPERM).to_ne_bytes().to_vec();
        payload.extend_from_slice(&[0u8; 16]);
        let dgram = nlmsg(NLMSG_ERROR, &payload);
        let err = parse_reply(&dgram, &mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("kernel answered"), "{err}");
    }

    #[test]
    fn truncated_reply_is_an_error_not_a_panic() {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let full = nlmsg(
            SOCK_DIAG_BY_FAMILY,
            &inet_diag_msg(AF_INET, 10, 1, 0, lo, lo, 0, 0, 1),
        );
        let r = parse_reply(&full[..40], &mut Vec::new());
        assert!(r.is_err());
    }

    #[test]
    fn port_filter_is_the_bytecode_ss_sends() {
        // ss -tn 'sport = :8080' sends exactly these 12 bytes (rtattr + 2 ops).
        let a = port_filter_attr(8080);
        assert_eq!(a.len(), 12);
        assert_eq!(u16::from_ne_bytes([a[0], a[1]]), 12);
        assert_eq!(u16::from_ne_bytes([a[2], a[3]]), 1);
        assert_eq!(&a[4..6], &[11, 8]);
        assert_eq!(u16::from_ne_bytes([a[6], a[7]]), 12);
        assert_eq!(u16::from_ne_bytes([a[10], a[11]]), 8080);
    }

    #[test]
    fn kernel_filters_listeners_by_port() {
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = a.local_addr().unwrap().port();
        let c = std::net::TcpStream::connect(a.local_addr().unwrap()).unwrap();
        let got = dump(Query::listeners(Some(port))).unwrap();
        // Only a's listener: not b, not the connection on the same port.
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(
            (got[0].state, got[0].local.port(), got[0].rqueue),
            (10, port, 1)
        );
        let all = dump(Query::listeners(None)).unwrap();
        assert!(all.iter().all(|s| s.state == 10));
        let b_port = b.local_addr().unwrap().port();
        assert!(all.iter().any(|s| s.local.port() == b_port));
        drop(c);
    }

    #[test]
    fn live_dump_sees_a_listener_with_its_backlog() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let socks = dump_tcp().unwrap();
        let me = socks
            .iter()
            .find(|s| s.state == 10 && s.local.port() == port)
            .expect("own listener in the dump");
        assert_eq!(me.rqueue, 0);
        // std listens with backlog 128, clamped to somaxconn.
        let somaxconn = headroom_host::Host::system()
            .sysctl_u64("net.core.somaxconn")
            .unwrap();
        assert_eq!(u64::from(me.wqueue), 128.min(somaxconn));
        assert!(me.inode > 0);
    }
}
