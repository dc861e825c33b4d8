//! Several nodes on one Postgres and one Redis behaving as one server
//! (docs/ARCHITECTURE.md, "Cluster").
//!
//! | file | owns |
//! |---|---|
//! | `nodes.rs` | this node's liveness key and the list of nodes that ever ran |
//! | `lease.rs` | the per-chat generation lease with its fencing token: the Redis side and a pure state machine |
//! | `fanout.rs` | chat events over Redis pub/sub: one channel per chat, followed only while a local client follows it; each node's cancel channel |
//! | `takeover.rs` | the watch for dead peers and the takeover of their answers, reservations and queues |
//!
//! `nodes`, `lease` and `fanout` sit in layer 1 (they know Redis and the hub,
//! nothing above); `takeover` sits in layer 3 beside the chat actors, since it
//! fails and bills answers (`crate::generation`) and restarts chat queues.

pub mod fanout;
pub mod lease;
pub mod nodes;
pub mod takeover;

use std::{sync::Arc, time::Duration};

use redis::aio::ConnectionManager;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use uuid::Uuid;

use crate::{actors::hub::ChatHub, config::Config};

/// This node's name: `routing.node_id` if set, else `<hostname>:<port>`, so a
/// node restarted on the same host and port finds its own rows and
/// reservations; a random suffix when the port is chosen by the OS (tests).
pub fn node_id(config: &Config) -> String {
    if let Some(id) = config.routing.node_id.as_ref().filter(|s| !s.is_empty()) {
        return id.clone();
    }
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".to_owned());
    if config.server.port == 0 {
        format!("{host}:{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
    } else {
        format!("{host}:{}", config.server.port)
    }
}

/// What the rest of the node shares of the cluster. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    pub node_id: Arc<str>,
    pub nodes: nodes::NodeRegistry,
    pub leases: lease::ChatLeases,
    pub config: crate::config::ClusterConfig,
    redis: ConnectionManager,
    prefix: Arc<str>,
    /// The cluster's own loops (heartbeat, watch, fan-out): stopped after the
    /// generations drained, so their last events still reach other nodes.
    tasks: TaskTracker,
    stop: CancellationToken,
}

impl Cluster {
    /// Names this node, starts the fan-out of `hub` and its heartbeat. Also
    /// answers the cancels other nodes send this one, for the chat registry
    /// to carry out.
    /// `counters` carries the Redis breaker: the lease and the fan-out skip
    /// Redis while it is open, as limits and budgets do.
    pub fn start(
        config: &Config,
        redis: ConnectionManager,
        counters: &crate::limits::WindowCounter,
        hub: &ChatHub,
    ) -> (Self, tokio::sync::mpsc::UnboundedReceiver<fanout::Cancel>) {
        let node_id: Arc<str> = node_id(config).into();
        let prefix = config.redis.key_prefix.clone();
        let c = &config.cluster;
        let (cancel_tx, cancel_rx) = tokio::sync::mpsc::unbounded_channel();
        let cluster = Self {
            redis: redis.clone(),
            prefix: prefix.as_str().into(),
            nodes: nodes::NodeRegistry::new(
                redis.clone(),
                &prefix,
                node_id.clone(),
                Duration::from_millis(c.node_ttl_ms),
            ),
            leases: lease::ChatLeases::new(
                redis.clone(),
                counters.clone(),
                &prefix,
                node_id.clone(),
                Duration::from_millis(c.lease_ttl_ms),
            ),
            config: c.clone(),
            node_id,
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
        };
        metrics::gauge!("switchboard_node_info", "node_id" => cluster.node_id.to_string()).set(1.0);
        let url = config
            .redis
            .url
            .as_ref()
            .map(|u| u.expose().to_owned())
            .unwrap_or_default();
        fanout::start(
            &cluster.tasks,
            cluster.stop.clone(),
            fanout::FanoutConfig {
                redis_url: url,
                prefix,
                node_id: cluster.node_id.clone(),
                cancels: cancel_tx,
            },
            redis,
            counters.clone(),
            hub.clone(),
        );
        (cluster, cancel_rx)
    }

    /// Asks `node`, which streams the answer, to cancel it (a client of this
    /// node sent the cancel). False when the request reached no one: Redis
    /// did not take it, or `node` is not listening (it died, and the takeover
    /// will fail the answer within `node_ttl_ms + heartbeat_ms`).
    pub async fn request_cancel(&self, node: &str, chat_id: Uuid, message_id: Uuid) -> bool {
        let mut conn = self.redis.clone();
        let channel = fanout::cancel_channel(&self.prefix, node);
        let listeners = redis::cmd("PUBLISH")
            .arg(channel)
            .arg(format!("{chat_id} {message_id}"))
            .query_async::<i64>(&mut conn)
            .await;
        matches!(listeners, Ok(n) if n > 0)
    }

    pub(crate) fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    pub(crate) fn stopping(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Stops the cluster's loops and leaves the node list, so survivors take
    /// over at once what this node leaves queued.
    pub async fn stop(&self) {
        self.stop.cancel();
        self.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.tasks.wait()).await;
        self.nodes.leave().await;
    }
}
