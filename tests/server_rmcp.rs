//! Interop: the official Rust SDK (rmcp) as a client of `headroom serve`
//! over a plain TcpStream, in its initialize and its Discover (2026-07-28)
//! lifecycle modes.

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
        ["host_capacity", "service_capacity", "listeners", "preflight_check", "echo"]
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
