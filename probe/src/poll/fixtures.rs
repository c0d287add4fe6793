//! Sockets and processes shaped as sock_diag and /proc give them, for the
//! tests of matching sockets to processes.

use super::diag::DiagSocket;
use super::process::ProcScan;
use headroom_core::{ProcessInfo, TcpState};

pub(super) fn sock(
    state: TcpState,
    local: &str,
    remote: &str,
    q: (u32, u32),
    inode: u64,
) -> DiagSocket {
    DiagSocket {
        state: state as u8,
        local: local.parse().unwrap(),
        remote: remote.parse().unwrap(),
        rqueue: q.0,
        wqueue: q.1,
        inode,
    }
}

pub(super) fn proc_with(pid: u32, inodes: &[u64]) -> ProcScan {
    ProcScan {
        info: ProcessInfo {
            pid,
            open_fds: 10,
            ..Default::default()
        },
        socket_inodes: inodes.to_vec(),
        uses_epoll: false,
    }
}

/// Two workers on :8080 (v4 and v6 listeners), their connections,
/// socket-less queue and TIME_WAIT sockets, and a stranger's sockets.
pub(super) fn dump() -> Vec<DiagSocket> {
    use TcpState::*;
    vec![
        sock(Listen, "0.0.0.0:8080", "0.0.0.0:0", (2, 128), 100),
        sock(Listen, "[::]:8080", "[::]:0", (0, 64), 200),
        sock(
            Established,
            "127.0.0.1:8080",
            "127.0.0.1:50001",
            (0, 0),
            101,
        ),
        sock(
            Established,
            "127.0.0.1:8080",
            "127.0.0.1:50002",
            (0, 0),
            102,
        ),
        sock(Established, "[::1]:8080", "[::1]:50003", (0, 0), 201),
        // In the accept queue: no inode yet.
        sock(Established, "127.0.0.1:8080", "127.0.0.1:50004", (0, 0), 0),
        sock(TimeWait, "127.0.0.1:8080", "127.0.0.1:50005", (0, 0), 0),
        // A worker's unconnected socket: no connection.
        sock(Close, "0.0.0.0:0", "0.0.0.0:0", (0, 0), 103),
        // Someone else's listener, connection and TIME_WAIT.
        sock(Listen, "127.0.0.1:9090", "0.0.0.0:0", (0, 4096), 900),
        sock(
            Established,
            "127.0.0.1:40000",
            "127.0.0.1:9090",
            (0, 0),
            901,
        ),
        sock(TimeWait, "127.0.0.1:9090", "127.0.0.1:40001", (0, 0), 0),
    ]
}
