//! How clients reach the system: HTTP (REST, SSE) and, with the actor core, WebSocket.

pub mod http;
