//! The watch for dead peers, and what a survivor (or a restarting node, for
//! itself) does about one: fail and bill the answers it left `streaming`
//! (`Generations::recover_interrupted`: billed once), tell their subscribers
//! on every node, release its budget reservations, and restart the queues of
//! the chats where it left user messages without an answer, which the chat
//! actors derive from Postgres. Detection takes at most `cluster.node_ttl_ms`
//! plus one `cluster.heartbeat_ms`.

use std::{collections::BTreeSet, time::Duration};

use sqlx::PgPool;

use super::Cluster;
use crate::{actors::chat::ChatRegistry, generation::Generations, store::messages};

/// What a takeover needs.
#[derive(Clone)]
pub struct Takeover {
    pub cluster: Cluster,
    pub db: PgPool,
    pub gens: Generations,
    pub chats: ChatRegistry,
}

/// Starts the heartbeat and the watch for dead peers.
pub fn start(t: Takeover) {
    let tasks = t.cluster.tasks().clone();
    tasks.spawn(watch(t));
}

async fn watch(t: Takeover) {
    let stop = t.cluster.stopping();
    let mut tick = tokio::time::interval(Duration::from_millis(t.cluster.config.heartbeat_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut beating = true;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        match t.cluster.nodes.beat().await {
            Ok(()) if !beating => {
                beating = true;
                tracing::info!(node_id = %t.cluster.node_id, "heartbeat back");
            }
            Ok(()) => {}
            Err(e) if beating => {
                beating = false;
                tracing::error!(node_id = %t.cluster.node_id, error = %e, "heartbeat failed: other nodes may take this node over");
            }
            Err(_) => {}
        }
        let Ok(members) = t.cluster.nodes.members().await else {
            continue;
        };
        let live = members.iter().filter(|(_, alive)| *alive).count();
        metrics::gauge!("switchboard_cluster_nodes_live").set(live as f64);
        for (id, alive) in members {
            if alive || *id == *t.cluster.node_id {
                continue;
            }
            if let Ok(true) = t.cluster.nodes.claim(&id).await
                && let Err(e) = take_over(&t, &id).await
            {
                tracing::error!(dead_node = %id, error = %e, "takeover failed; retried when the claim lapses");
            }
        }
    }
}

/// Takes a dead node over; answers how many answers it failed.
pub async fn take_over(t: &Takeover, dead: &str) -> Result<usize, sqlx::Error> {
    let ids = [dead.to_owned()];
    let failed = t.gens.recover_interrupted(&t.db, &ids, false).await?;
    t.chats.announce_interrupted(&failed);
    let released = t
        .gens
        .admission
        .ledger()
        .release_reservations_of(dead)
        .await;
    let requeued = restart_queues(t, &ids, failed.iter().map(|m| m.chat_id)).await?;
    let _ = t.cluster.nodes.forget(dead).await;
    metrics::counter!("switchboard_cluster_takeovers_total").increment(1);
    tracing::warn!(node_id = %t.cluster.node_id, dead_node = %dead, answers_failed = failed.len(),
        reservations_released = released, chats_requeued = requeued, "took over a dead node");
    Ok(failed.len())
}

/// This node's start: what its previous run left (answers streaming, also
/// those from before answers had a node; messages never answered).
pub async fn recover_own(t: &Takeover) -> Result<usize, sqlx::Error> {
    // Alive first, so no survivor takes this node over while it recovers itself.
    let _ = t.cluster.nodes.beat().await;
    let ids = [t.cluster.node_id.to_string()];
    let failed = t.gens.recover_interrupted(&t.db, &ids, true).await?;
    t.chats.announce_interrupted(&failed);
    let requeued = restart_queues(t, &ids, failed.iter().map(|m| m.chat_id)).await?;
    if requeued > 0 {
        tracing::warn!(
            chats = requeued,
            "messages left without an answer by the last run: queued again"
        );
    }
    Ok(failed.len())
}

async fn restart_queues(
    t: &Takeover,
    nodes: &[String],
    also: impl Iterator<Item = uuid::Uuid>,
) -> Result<usize, sqlx::Error> {
    let window = t.cluster.config.requeue_window_secs;
    let mut chats: BTreeSet<uuid::Uuid> = messages::stranded_chats(&t.db, nodes, window)
        .await?
        .into_iter()
        .collect();
    chats.extend(also);
    for chat_id in &chats {
        for node in nodes {
            if **node != *t.cluster.node_id {
                t.cluster.leases.break_dead(*chat_id, node).await;
            }
        }
        t.chats.kick(*chat_id).await;
    }
    Ok(chats.len())
}
