//! How clients reach the system: HTTP (REST, SSE) and WebSocket, sharing one protocol.

pub mod http;
pub mod server;
pub mod ws;
