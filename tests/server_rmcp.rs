//! Interop: the official Rust SDK (rmcp) as a client of `headroom serve`
//! over a plain TcpStream, in its initialize and its Discover (2026-07-28)
//! lifecycle modes.

#[path = "util/hold.rs"]
mod hold;
#[path = "util/server.rs"]
mod server;
mod util;

use rmcp::model::{CallToolRequestParams, ProtocolVersion};
use rmcp::service::{ClientLifecycleMode, ClientServiceExt};
use rmcp::ServiceExt;
use server::Server;

fn args(v: serde_json::Value) -> rmcp::model::JsonObject {
    v.as_object().cloned().unwrap()
}

async fn exercise(client: &rmcp::service::RunningService<rmcp::RoleClient, ()>) {
    let tools = client.list_all_tools().await.expect("tools/list");
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert_eq!(
        names,
        [
            "host_capacity",
            "service_capacity",
            "advise",
            "listeners",
            "preflight_check",
            "echo"
        ]
    );

    let r = client
        .call_tool(
            CallToolRequestParams::new("echo")
                .with_arguments(args(serde_json::json!({"message": "from rmcp"}))),
        )
        .await
        .expect("tools/call echo");
    assert_eq!(r.is_error, None);
    let text = r.content[0].as_text().expect("text content").text.clone();
    assert_eq!(text, "from rmcp");

    let r = client
        .call_tool(CallToolRequestParams::new("host_capacity"))
        .await
        .expect("tools/call host_capacity");
    let s = r.structured_content.expect("structuredContent");
    assert_eq!(s["prediction"]["binding"], "nofile");
    assert!(
        s["prediction"]["predicted_max_connections"]
            .as_u64()
            .unwrap()
            > 0
    );

    let e = client
        .call_tool(CallToolRequestParams::new("no_such_tool"))
        .await;
    assert!(e.is_err(), "unknown tool must be a JSON-RPC error");
}

#[tokio::test(flavor = "current_thread")]
async fn rmcp_client_initialize_lifecycle() {
    let srv = Server::start(&[]);
    let stream = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    let client = ().serve(stream).await.expect("initialize handshake");
    let info = client.peer_info().expect("server info").clone();
    assert_eq!(
        info.server_info.as_ref().map(|i| i.name.as_str()),
        Some("headroom")
    );
    assert_eq!(info.protocol_version, ProtocolVersion::V_2025_11_25);
    exercise(&client).await;
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn rmcp_client_discover_lifecycle() {
    let srv = Server::start(&[]);
    let stream = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    let client = ()
        .serve_with_lifecycle(
            stream,
            ClientLifecycleMode::Discover {
                preferred_versions: vec![ProtocolVersion::V_2026_07_28],
            },
        )
        .await
        .expect("server/discover");
    exercise(&client).await;
    client.cancel().await.unwrap();
}

type Seen = tokio::sync::mpsc::UnboundedReceiver<(std::time::Instant, String)>;

/// What arrives on `rx` within `d`.
async fn within(rx: &mut Seen, d: std::time::Duration) -> Vec<(std::time::Instant, String)> {
    let end = tokio::time::Instant::now() + d;
    let mut got = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout_at(end, rx.recv()).await {
        got.push(m);
    }
    got
}

/// A client handler that timestamps every `notifications/resources/updated`.
struct Updates(tokio::sync::mpsc::UnboundedSender<(std::time::Instant, String)>);

impl rmcp::ClientHandler for Updates {
    async fn on_resource_updated(
        &self,
        params: rmcp::model::ResourceUpdatedNotificationParam,
        _context: rmcp::service::NotificationContext<rmcp::RoleClient>,
    ) {
        let _ = self.0.send((std::time::Instant::now(), params.uri));
    }
}

/// rmcp in the initialize era, subscribed to `headroom://port/P` of a
/// service with nofile 200: told exactly once, within a second, when one
/// connection takes it across 90%; nothing while nothing changes.
#[tokio::test(flavor = "current_thread")]
#[allow(deprecated)] // resources/subscribe: the initialize era's way
async fn rmcp_subscriber_is_told_once_when_a_service_crosses_90_percent() {
    use rmcp::model::{ReadResourceRequestParams, ResourceContents, SubscribeRequestParams};
    use std::time::{Duration, Instant};
    let mut listener = hold::HoldListener::start(200);
    let uri = listener.uri();
    let srv = Server::start(&[]);
    let stream = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let client = Updates(tx).serve(stream).await.expect("initialize");
    let used = |client: &rmcp::service::RunningService<rmcp::RoleClient, Updates>| {
        let uri = uri.clone();
        let peer = client.peer().clone();
        async move {
            let r = peer
                .read_resource(ReadResourceRequestParams::new(uri))
                .await
                .expect("resources/read");
            match &r.contents[0] {
                ResourceContents::TextResourceContents { text, .. } => hold::nofile_of(text),
                other => panic!("text expected: {other:?}"),
            }
        }
    };
    let (limit, used0, reserve) = used(&client).await;
    let at90 = hold::in_use_at(limit, 0.9) - reserve;
    client
        .subscribe(SubscribeRequestParams::new(uri.clone()))
        .await
        .expect("resources/subscribe");
    assert!(within(&mut rx, Duration::from_millis(1500))
        .await
        .is_empty());
    listener.open((at90 - used0 - 1) as usize);
    let end = Instant::now() + Duration::from_secs(10);
    while used(&client).await.1 != at90 - 1 {
        assert!(Instant::now() < end, "the listener did not accept in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // 70% was crossed on the way: wait until 2 s pass without a word.
    while !within(&mut rx, Duration::from_secs(2)).await.is_empty() {
        assert!(
            Instant::now() < end + Duration::from_secs(10),
            "never quiet"
        );
    }
    let t0 = Instant::now();
    listener.open(1);
    let got = within(&mut rx, Duration::from_secs(3)).await;
    assert_eq!(got.len(), 1, "exactly one notification: {got:?}");
    assert!(
        got[0].0.duration_since(t0) < Duration::from_secs(1),
        "{got:?}"
    );
    assert_eq!(got[0].1, uri);
    client.cancel().await.unwrap();
}
