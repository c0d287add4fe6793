//! One request, one reply, on a server's own port: a bounded, blocking
//! exchange with a deadline, for the live queries (Redis `CONFIG GET`,
//! memcached `stats`, HAProxy `show info` on a stats socket).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Largest reply read.
pub const MAX_REPLY_BYTES: usize = 1 << 20;

/// Sends `request` and reads until `complete(reply so far)` says the reply
/// is whole, the peer closes, or `timeout` passes since the connect began.
pub fn exchange(
    addr: SocketAddr,
    request: &[u8],
    timeout: Duration,
    complete: impl Fn(&[u8]) -> bool,
) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + timeout;
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("{addr}: {e}"))?;
    s.set_nodelay(true).ok();
    s.set_write_timeout(Some(timeout)).ok();
    s.write_all(request).map_err(|e| format!("{addr}: {e}"))?;
    read_reply(&mut s, deadline, &complete).map_err(|e| format!("{addr}: {e}"))
}

/// Reads from `r` until `complete`, EOF, the size cap or the deadline.
pub fn read_reply<S: Read + SetTimeout>(
    s: &mut S,
    deadline: Instant,
    complete: &dyn Fn(&[u8]) -> bool,
) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if complete(&buf) {
            return Ok(buf);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("no complete reply before the timeout".into());
        }
        s.set_read_deadline(left);
        match s.read(&mut chunk) {
            Ok(0) => {
                return if buf.is_empty() {
                    Err("closed without a reply".into())
                } else {
                    Ok(buf)
                }
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err("no complete reply before the timeout".into())
            }
            Err(e) => return Err(e.to_string()),
        }
        if buf.len() > MAX_REPLY_BYTES {
            return Err(format!("reply larger than {MAX_REPLY_BYTES} bytes"));
        }
    }
}

/// A stream whose reads can be given a timeout.
pub trait SetTimeout {
    fn set_read_deadline(&mut self, left: Duration);
}

impl SetTimeout for TcpStream {
    fn set_read_deadline(&mut self, left: Duration) {
        self.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .ok();
    }
}

impl SetTimeout for std::os::unix::net::UnixStream {
    fn set_read_deadline(&mut self, left: Duration) {
        self.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .ok();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn reads_until_complete_and_times_out_on_silence() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let (mut a, _) = l.accept().unwrap();
            let mut b = [0u8; 4];
            a.read_exact(&mut b).unwrap();
            a.write_all(b"+PONG\r\n").unwrap();
            let (_silent, _) = l.accept().unwrap();
            std::thread::sleep(Duration::from_millis(300));
        });
        let r = exchange(addr, b"PING", Duration::from_secs(2), |b| {
            b.ends_with(b"\r\n")
        })
        .unwrap();
        assert_eq!(r, b"+PONG\r\n");
        let e = exchange(addr, b"PING", Duration::from_millis(100), |b| !b.is_empty()).unwrap_err();
        assert!(e.contains("timeout"), "{e}");
        t.join().unwrap();
    }
}
