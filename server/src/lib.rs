//! headroom-server: The bundled MCP server: a pure protocol engine and its TCP, stdio and Streamable HTTP transports.
pub mod http;
