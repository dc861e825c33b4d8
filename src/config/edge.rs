//! Settings of the HTTP and WebSocket edge (`[edge]`): connection caps,
//! timeouts on reading requests and writing to slow peers, and the per-user
//! caps on streams and subscriptions (docs/CONFIGURATION.md, "Edge").

use serde::Deserialize;

use super::Config;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct EdgeConfig {
    /// Time a connection has to send a complete request head, counted from
    /// when it starts waiting for one (a slowloris peer is closed after it).
    pub header_read_timeout_secs: u64,
    /// A keep-alive connection with no request in flight and no bytes moving
    /// is closed after this.
    pub keepalive_timeout_secs: u64,
    /// Time a request's body may take to arrive in full (408 after it).
    pub body_timeout_secs: u64,
    /// Open TCP connections per node (HTTP, SSE and WebSocket together).
    pub max_connections: usize,
    /// Open TCP connections per client address; keeps one address from taking them all.
    pub max_connections_per_ip: usize,
    /// With `server.trust_forwarded_for`: how many proxies of yours append to
    /// `X-Forwarded-For`; the client is that many entries from the right.
    pub trusted_proxy_hops: usize,
    /// SSE responses (`/events` and streamed sends) one user may hold open on a node.
    pub max_sse_streams_per_user: usize,
    /// WebSockets still waiting for their `auth` frame, per node.
    pub max_unauthenticated_ws: usize,
    /// `subscribe` frames (and the subscribes a `send` implies) per socket per minute.
    pub ws_subscribes_per_minute: u32,
    /// One write to a WebSocket peer may take this long before the socket is dropped.
    pub ws_write_timeout_secs: u64,
    /// After a socket is marked slow, the time its goodbye (error frame and
    /// close 4008) may take before the socket is dropped.
    pub ws_slow_grace_secs: u64,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            header_read_timeout_secs: 10,
            keepalive_timeout_secs: 75,
            body_timeout_secs: 60,
            max_connections: 8192,
            max_connections_per_ip: 512,
            trusted_proxy_hops: 1,
            max_sse_streams_per_user: 16,
            max_unauthenticated_ws: 1024,
            ws_subscribes_per_minute: 120,
            ws_write_timeout_secs: 10,
            ws_slow_grace_secs: 5,
        }
    }
}

impl Config {
    pub(super) fn check_edge(&self, p: &mut Vec<String>) {
        let e = &self.edge;
        for (name, value) in [
            ("edge.header_read_timeout_secs", e.header_read_timeout_secs),
            ("edge.keepalive_timeout_secs", e.keepalive_timeout_secs),
            ("edge.body_timeout_secs", e.body_timeout_secs),
            ("edge.ws_write_timeout_secs", e.ws_write_timeout_secs),
            ("edge.ws_slow_grace_secs", e.ws_slow_grace_secs),
        ] {
            if value == 0 {
                p.push(format!("{name} must be greater than 0"));
            }
        }
        for (name, value) in [
            ("edge.max_connections", e.max_connections),
            ("edge.max_connections_per_ip", e.max_connections_per_ip),
            ("edge.trusted_proxy_hops", e.trusted_proxy_hops),
            ("edge.max_sse_streams_per_user", e.max_sse_streams_per_user),
            ("edge.max_unauthenticated_ws", e.max_unauthenticated_ws),
        ] {
            if value == 0 {
                p.push(format!("{name} must be greater than 0"));
            }
        }
        if e.max_connections_per_ip > e.max_connections {
            p.push("edge.max_connections_per_ip must not exceed edge.max_connections".into());
        }
        if e.ws_subscribes_per_minute == 0 {
            p.push("edge.ws_subscribes_per_minute must be greater than 0".into());
        }
    }
}
