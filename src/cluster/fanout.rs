//! Chat events across nodes over Redis pub/sub.
//!
//! Every event a chat actor publishes goes to the node's local subscribers
//! and, through one ordered publisher task, to the channel
//! `{prefix}:chatev:{chat_id}`. A node subscribes to a chat's channel only
//! while one of its own clients follows that chat (the hub says when that
//! begins and ends) and hands what other nodes publish to its local
//! subscribers, skipping its own echo and what a subscriber's replay already
//! covered. One connection publishes and one task delivers, so the events of
//! one producing node reach every subscriber in the order it published them.
//!
//! Why pub/sub and not streams: an event is worth delivering only to clients
//! connected now; whoever was away resumes from Postgres (`since_seq`,
//! `Last-Event-ID`), which is the durable order. Streams would add a second
//! durable log to trim and a read cursor per node for no client-visible gain.
//! What is published while Redis is down (or while the subscriber
//! reconnects) is lost to other nodes' clients; they get it on resume.
//! `switchboard_cluster_fanout_lag_seconds` is the time from publish to
//! delivery on the receiving node (clocks of one machine, or NTP-close ones).

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures::StreamExt;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use uuid::Uuid;

use crate::actors::hub::{ChatHub, FollowChange, Frame, HubLinks, Mark, Outbound};

/// Events waiting to be relayed; past this they are dropped (and counted).
const RELAY_QUEUE: usize = 65_536;
/// Most events sent in one pipeline.
const BATCH: usize = 256;

pub struct FanoutConfig {
    pub redis_url: String,
    pub prefix: String,
    pub node_id: Arc<str>,
    /// Where cancels other nodes send this one go.
    pub cancels: mpsc::UnboundedSender<Cancel>,
}

/// Another node's client asked to cancel an answer this node streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cancel {
    pub chat_id: Uuid,
    pub message_id: Uuid,
}

/// The channel on which `node` hears cancels for the answers it streams.
pub fn cancel_channel(prefix: &str, node: &str) -> String {
    format!("{prefix}:cancel:{node}")
}

/// `"<chat_id> <message_id>"`, as `Cluster::request_cancel` publishes it.
fn parse_cancel(payload: &str) -> Option<Cancel> {
    let (chat, message) = payload.split_once(' ')?;
    Some(Cancel {
        chat_id: chat.parse().ok()?,
        message_id: message.parse().ok()?,
    })
}

/// One event on the wire.
#[derive(Serialize, Deserialize)]
struct Wire {
    /// The producing node.
    node: String,
    /// Unix milliseconds at publish, for the lag histogram.
    at_ms: i64,
    kind: String,
    json: String,
    event_id: Option<String>,
    ends: Option<Uuid>,
    mark: Option<Mark>,
}

fn channel(prefix: &str, chat_id: Uuid) -> String {
    format!("{prefix}:chatev:{chat_id}")
}

/// Links the hub to Redis and starts the publisher and the subscriber.
pub fn start(
    tasks: &TaskTracker,
    stop: CancellationToken,
    cfg: FanoutConfig,
    redis: ConnectionManager,
    counters: crate::limits::WindowCounter,
    hub: ChatHub,
) {
    let (relay, relay_rx) = mpsc::channel(RELAY_QUEUE);
    let (follow, follow_rx) = mpsc::unbounded_channel();
    let connected = Arc::new(AtomicBool::new(false));
    hub.link(HubLinks {
        relay,
        follow,
        connected: connected.clone(),
    });
    let cfg = Arc::new(cfg);
    tasks.spawn(publish_loop(
        cfg.clone(),
        redis,
        counters,
        relay_rx,
        stop.clone(),
    ));
    tasks.spawn(subscribe_loop(cfg, hub, follow_rx, stop, connected));
}

async fn publish_loop(
    cfg: Arc<FanoutConfig>,
    redis: ConnectionManager,
    counters: crate::limits::WindowCounter,
    mut rx: mpsc::Receiver<(Uuid, Outbound)>,
    stop: CancellationToken,
) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let n = tokio::select! {
            // Drain what is queued before stopping: the last events still go out.
            n = rx.recv_many(&mut batch, BATCH) => n,
            () = stop.cancelled(), if rx.is_empty() => return,
        };
        if n == 0 {
            return;
        }
        // A hung Redis must not hold events back behind one timeout per
        // batch: while its breaker is open they are dropped here, and other
        // nodes' clients recover them from Postgres when they resume.
        if !counters.redis_allowed() {
            batch.clear();
            metrics::counter!("switchboard_cluster_fanout_dropped_total").increment(n as u64);
            continue;
        }
        let at_ms = chrono::Utc::now().timestamp_millis();
        let mut pipe = redis::pipe();
        for (chat_id, out) in batch.drain(..) {
            let wire = Wire {
                node: cfg.node_id.to_string(),
                at_ms,
                kind: out.kind.to_owned(),
                json: out.json.to_string(),
                event_id: out.event_id.as_deref().map(str::to_owned),
                ends: out.ends,
                mark: out.mark.clone(),
            };
            let Ok(payload) = serde_json::to_string(&wire) else {
                continue;
            };
            pipe.publish(channel(&cfg.prefix, chat_id), payload)
                .ignore();
        }
        let mut conn = redis.clone();
        if let Err(e) = pipe.query_async::<()>(&mut conn).await {
            counters.mark_degraded(&e);
            tracing::warn!(error = %e, events = n, "cannot relay chat events to other nodes");
            metrics::counter!("switchboard_cluster_fanout_dropped_total").increment(n as u64);
        }
    }
}

async fn subscribe_loop(
    cfg: Arc<FanoutConfig>,
    hub: ChatHub,
    mut follow: mpsc::UnboundedReceiver<FollowChange>,
    stop: CancellationToken,
    connected: Arc<AtomicBool>,
) {
    let mut wait = Duration::from_millis(100);
    loop {
        if stop.is_cancelled() {
            return;
        }
        let outcome = follow_chats(&cfg, &hub, &mut follow, &stop, &connected).await;
        if connected.swap(false, Ordering::Relaxed) {
            // It had worked: try again soon.
            wait = Duration::from_millis(100);
        }
        match outcome {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, "chat fan-out subscriber lost Redis; reconnecting");
                metrics::counter!("switchboard_cluster_fanout_reconnects_total").increment(1);
            }
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stop.cancelled() => return,
        }
        wait = (wait * 2).min(Duration::from_secs(2));
    }
}

/// One connection's life: subscribes to every chat followed now, then keeps
/// the subscriptions in step with the hub and delivers what arrives.
async fn follow_chats(
    cfg: &FanoutConfig,
    hub: &ChatHub,
    follow: &mut mpsc::UnboundedReceiver<FollowChange>,
    stop: &CancellationToken,
    connected: &AtomicBool,
) -> redis::RedisResult<()> {
    let client = redis::Client::open(cfg.redis_url.as_str())?;
    let pubsub = tokio::time::timeout(Duration::from_secs(2), client.get_async_pubsub())
        .await
        .map_err(|_| {
            redis::RedisError::from((redis::ErrorKind::Io, "pub/sub connect timed out"))
        })??;
    let (mut sink, mut stream) = pubsub.split();
    let cancels = cancel_channel(&cfg.prefix, &cfg.node_id);
    sink.subscribe(&cancels).await?;
    let mut subscribed: HashSet<Uuid> = HashSet::new();
    // Changes that queued while disconnected are covered by this full pass.
    let mut waiting = Vec::new();
    while let Ok(change) = follow.try_recv() {
        waiting.extend(change.ready);
    }
    for chat_id in hub.followed() {
        sink.subscribe(channel(&cfg.prefix, chat_id)).await?;
        subscribed.insert(chat_id);
    }
    connected.store(true, Ordering::Relaxed);
    for ready in waiting {
        let _ = ready.send(());
    }
    loop {
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            changed = follow.recv() => {
                let Some(FollowChange { chat_id, ready }) = changed else { return Ok(()) };
                let want = hub.subscriber_count(chat_id) > 0;
                if want && subscribed.insert(chat_id) {
                    sink.subscribe(channel(&cfg.prefix, chat_id)).await?;
                } else if !want && subscribed.remove(&chat_id) {
                    sink.unsubscribe(channel(&cfg.prefix, chat_id)).await?;
                }
                // Subscribed (the confirmation came back), or nothing to follow.
                if let Some(ready) = ready {
                    let _ = ready.send(());
                }
            }
            msg = stream.next() => {
                let Some(msg) = msg else {
                    return Err(redis::RedisError::from((redis::ErrorKind::Io, "pub/sub connection closed")));
                };
                if msg.get_channel_name() == cancels {
                    match msg.get_payload::<String>().ok().as_deref().and_then(parse_cancel) {
                        Some(cancel) => {
                            let _ = cfg.cancels.send(cancel);
                        }
                        None => tracing::warn!("unreadable cancel request dropped"),
                    }
                    continue;
                }
                deliver(cfg, hub, &msg);
            }
        }
    }
}

fn deliver(cfg: &FanoutConfig, hub: &ChatHub, msg: &redis::Msg) {
    let Some(chat_id) = msg
        .get_channel_name()
        .rsplit(':')
        .next()
        .and_then(|id| id.parse::<Uuid>().ok())
    else {
        return;
    };
    let Ok(payload) = msg.get_payload::<String>() else {
        return;
    };
    let Ok(wire) = serde_json::from_str::<Wire>(&payload) else {
        tracing::warn!(%chat_id, "unreadable fan-out event dropped");
        return;
    };
    if wire.node == *cfg.node_id {
        return;
    }
    let lag_ms = (chrono::Utc::now().timestamp_millis() - wire.at_ms).max(0);
    metrics::histogram!("switchboard_cluster_fanout_lag_seconds").record(lag_ms as f64 / 1000.0);
    let kind = match wire.kind.as_str() {
        "message" => "message",
        "delta" => "delta",
        "done" => "done",
        "error" => "error",
        "ack" => "ack",
        _ => "event",
    };
    hub.deliver_remote(
        chat_id,
        &Outbound::from(Frame {
            kind,
            json: wire.json.into(),
            event_id: wire.event_id.map(Into::into),
            ends: wire.ends,
            mark: wire.mark,
        }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_requests_round_trip_and_garbage_is_refused() {
        let (chat_id, message_id) = (Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(
            parse_cancel(&format!("{chat_id} {message_id}")),
            Some(Cancel {
                chat_id,
                message_id
            })
        );
        for bad in [
            "",
            "x y",
            &chat_id.to_string(),
            &format!("{chat_id}{message_id}"),
        ] {
            assert_eq!(parse_cancel(bad), None, "{bad:?}");
        }
    }
}
