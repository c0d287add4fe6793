//! The accept loop: the ceiling and the service-wide limit checked per
//! connection, refusal lines, and the guard that releases a connection.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

use super::config::AdoptedRx;
use super::connection::connection;
use super::shared::{Local, Shared};

pub(super) async fn accept_loop(
    listener: TcpListener,
    mut adopted: Option<AdoptedRx>,
    shared: Arc<Shared>,
    local: Arc<Local>,
) {
    loop {
        let stop = local.notify.notified();
        if local.stopping.load(Ordering::SeqCst) {
            return;
        }
        let accepted = tokio::select! {
            biased;
            _ = stop => return,
            r = listener.accept() => r.map(|(s, _)| s),
            Some(s) = async { adopted.as_mut()?.recv().await }, if adopted.is_some() => {
                if let Some(svc) = &shared.service {
                    svc.adopted();
                }
                TcpStream::from_std(s)
            }
        };
        let stream = match accepted {
            Ok(s) => s,
            Err(e) => {
                // EMFILE/ENFILE: the reserve was eaten by something else.
                // Back off instead of spinning on a full queue.
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                ) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                continue;
            }
        };
        let st = &shared.state;
        if st.active().fetch_add(1, Ordering::SeqCst) >= shared.ceiling {
            st.active().fetch_sub(1, Ordering::SeqCst);
            // A worker of a service hands what it cannot hold to a sibling.
            if let Some(svc) = &shared.service {
                use std::os::fd::AsRawFd;
                if svc.overflow(stream.as_raw_fd()) {
                    continue;
                }
            }
            st.refused().fetch_add(1, Ordering::Relaxed);
            let (reason, line) = shared.refusal();
            if let Some(tm) = &shared.tm {
                tm.refused(reason);
            }
            refuse(stream, &line);
            continue;
        }
        if let Some(Err((reason, line))) = shared.service.as_ref().map(|s| s.admit()) {
            st.active().fetch_sub(1, Ordering::SeqCst);
            st.refused().fetch_add(1, Ordering::Relaxed);
            if let Some(tm) = &shared.tm {
                tm.refused(reason);
            }
            refuse(stream, &line);
            continue;
        }
        if let Some(tm) = &shared.tm {
            tm.accepted.inc();
            tm.active.inc();
        }
        local.conns.fetch_add(1, Ordering::SeqCst);
        let (shared, local) = (shared.clone(), local.clone());
        tokio::spawn(async move {
            let _guard = ConnGuard {
                shared: &shared,
                local: &local,
            };
            connection(stream, &shared, &local).await;
        });
    }
}

/// One error line naming the limit, then close at once. The send buffer of
/// a fresh socket is empty, so the line goes out in one non-blocking write;
/// input that already arrived is read away so the close is a FIN, not a RST.
fn refuse(stream: TcpStream, line: &[u8]) {
    let _ = stream.try_write(line);
    let mut sink = [0u8; 512];
    while let Ok(n) = stream.try_read(&mut sink) {
        if n == 0 {
            break;
        }
    }
    drop(stream);
}

struct ConnGuard<'a> {
    shared: &'a Shared,
    local: &'a Local,
}

impl Drop for ConnGuard<'_> {
    fn drop(&mut self) {
        self.shared.state.active().fetch_sub(1, Ordering::SeqCst);
        if let Some(svc) = &self.shared.service {
            svc.release();
        }
        if let Some(tm) = &self.shared.tm {
            tm.active.dec();
        }
        if self.local.conns.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.local.idle.notify_waiters();
        }
    }
}
