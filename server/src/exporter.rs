//! `GET /metrics` in the Prometheus text format: headroom's one metrics
//! responder, for `headroom serve --metrics` (a single process and the
//! `--workers` supervisor) and `headroom probe --listen`; what differs is
//! only how the page is made. A one-route HTTP/1.0-style responder (read the
//! request head, answer, close): no keep-alive, no body, bounded head size,
//! time and number of scrapes answered at once.

use futures_util::stream::{FuturesUnordered, StreamExt};
use std::future::Future;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Scrapes answered at once; more wait in the listen queue.
const MAX_OPEN: usize = 16;
/// Longest request head read.
const MAX_HEAD: usize = 8192;
/// Time a client has to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves until the future is dropped; `render` makes the page of one scrape.
/// Connections are driven inside this future, not spawned, so it runs on a
/// multi-thread runtime (when `render`'s future is `Send`) and in a
/// `LocalSet` (when it is not) alike.
pub async fn serve<F, Fut>(listener: TcpListener, render: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = String>,
{
    let mut open = FuturesUnordered::new();
    loop {
        tokio::select! {
            accepted = listener.accept(), if open.len() < MAX_OPEN => match accepted {
                Ok((s, _)) => open.push(respond(s, &render)),
                // EMFILE and friends: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(()) = open.next(), if !open.is_empty() => {}
        }
    }
}

async fn respond<F, Fut>(mut s: TcpStream, render: &F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = String>,
{
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(HEAD_TIMEOUT, async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        true
    })
    .await;
    if read != Ok(true) {
        return;
    }
    let ok = head.starts_with(b"GET /metrics ") || head.starts_with(b"GET /metrics?");
    let (status, ctype, body) = if ok {
        (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            render().await,
        )
    } else {
        (
            "404 Not Found",
            "text/plain",
            "not found: try /metrics\n".to_string(),
        )
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = s.write_all(resp.as_bytes()).await;
    let _ = s.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    /// A page made by a `!Send` future, as the supervisor's is, served from a
    /// `LocalSet`; a silent client does not hold up the next scrape.
    #[test]
    fn serves_a_local_render_and_404s_other_paths() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            let page = Rc::new("x 1\n".to_string());
            tokio::task::spawn_local(serve(l, move || {
                let page = page.clone();
                async move { page.to_string() }
            }));
            let _silent = TcpStream::connect(addr).await.unwrap();
            assert_eq!(
                get(addr, "/metrics").await,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: 4\r\nConnection: close\r\n\r\nx 1\n"
            );
            assert_eq!(
                get(addr, "/").await,
                "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 24\r\nConnection: close\r\n\r\nnot found: try /metrics\n"
            );
        });
    }
}
