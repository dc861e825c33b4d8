//! The live view of the tree for operators (`/ops`, `GET /api/ops/snapshot`):
//! aggregates of every kind plus the busiest few actors, so its size stays
//! bounded with thousands of actors live. Computed only when asked (a request,
//! or a viewer's timer): nothing runs while nobody watches. Read-only: it
//! never starts, stops or waits long on an actor (each call has a timeout).

use std::{cmp::Reverse, time::Duration};

use serde::Serialize;
use uuid::Uuid;

use super::{Actors, provider::BreakerState};

/// The most chats and users listed one by one.
pub const MAX_TOP: usize = 100;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OpsSnapshot {
    /// The node that took it (each node shows its own tree).
    pub node_id: String,
    /// Unix milliseconds when taken.
    pub taken_at_ms: i64,
    pub chats: ChatsView,
    pub users: UsersView,
    pub providers: Vec<ProviderView>,
    /// Crash restarts of provider actors since start.
    pub provider_restarts: u64,
    pub usage_writer: UsageWriterView,
    /// Generations, final writes and checkpoints running on the task tracker.
    pub tasks_in_flight: usize,
    /// `redis` when limits are shared through Redis, `local` when degraded.
    pub limits_mode: &'static str,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChatsView {
    pub live: usize,
    pub streaming: usize,
    pub queued_calls: usize,
    pub subscribers: usize,
    pub restarts: u64,
    /// The busiest chats: streaming first, then by queue depth and subscribers.
    pub top: Vec<ChatRow>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChatRow {
    pub chat_id: Uuid,
    pub streaming: bool,
    pub queue_depth: usize,
    pub subscribers: usize,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UsersView {
    pub live: usize,
    pub sockets: usize,
    pub restarts: u64,
    /// The users with the most sockets.
    pub top: Vec<UserRow>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserRow {
    pub user_id: Uuid,
    pub sockets: usize,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProviderView {
    pub name: String,
    /// closed, open, half_open; `unknown` when the actor did not answer in time.
    pub circuit: &'static str,
    pub slots_in_use: Option<usize>,
    pub concurrency: Option<usize>,
    pub requests_last_minute: Option<usize>,
    pub tokens_last_minute: Option<u32>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UsageWriterView {
    /// Usage events held, not yet written; `None` when the writer did not answer in time.
    pub backlog: Option<usize>,
}

const CALL_TIMEOUT: Duration = Duration::from_secs(1);

impl Actors {
    /// A point-in-time view; `top` bounds the per-actor lists (at most [`MAX_TOP`]).
    pub async fn ops_snapshot(&self, top: usize, limits_degraded: bool) -> OpsSnapshot {
        let top = top.min(MAX_TOP);
        let mut chats: Vec<ChatRow> = self
            .chats
            .live()
            .into_iter()
            .map(|(chat_id, queue_depth, streaming)| ChatRow {
                chat_id,
                streaming,
                queue_depth,
                subscribers: self.hub.subscriber_count(chat_id),
            })
            .collect();
        let chats_view = ChatsView {
            live: chats.len(),
            streaming: chats.iter().filter(|c| c.streaming).count(),
            queued_calls: chats.iter().map(|c| c.queue_depth).sum(),
            subscribers: chats.iter().map(|c| c.subscribers).sum(),
            restarts: self.chats.restarts(),
            top: {
                chats
                    .sort_unstable_by_key(|c| Reverse((c.streaming, c.queue_depth, c.subscribers)));
                chats.truncate(top);
                chats
            },
        };
        let mut users = self.users.sockets();
        let users_view = UsersView {
            live: self.users.live_count(),
            sockets: users.iter().map(|u| u.1).sum(),
            restarts: self.users.restarts(),
            top: {
                users.sort_unstable_by_key(|u| Reverse(u.1));
                users.truncate(top);
                users
                    .into_iter()
                    .map(|(user_id, sockets)| UserRow { user_id, sockets })
                    .collect()
            },
        };
        let backlog = ractor::call_t!(
            self.gens.usage,
            super::persistence::UsageMsg::Backlog,
            CALL_TIMEOUT.as_millis() as u64
        )
        .ok();
        OpsSnapshot {
            node_id: self.cluster.node_id.to_string(),
            taken_at_ms: chrono::Utc::now().timestamp_millis(),
            chats: chats_view,
            users: users_view,
            providers: self.provider_views().await,
            usage_writer: UsageWriterView { backlog },
            provider_restarts: self.gens.providers.restarts(),
            tasks_in_flight: self.gens.tasks.len(),
            limits_mode: if limits_degraded { "local" } else { "redis" },
        }
    }

    async fn provider_views(&self) -> Vec<ProviderView> {
        let reg = &self.gens.providers;
        let mut names = reg.names();
        names.sort();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let breaker = tokio::time::timeout(CALL_TIMEOUT, reg.breaker(&name)).await;
            let circuit = match breaker.ok().flatten() {
                Some(BreakerState::Closed) => "closed",
                Some(BreakerState::Open) => "open",
                Some(BreakerState::HalfOpen) => "half_open",
                None => "unknown",
            };
            let slots = tokio::time::timeout(CALL_TIMEOUT, reg.slots(&name))
                .await
                .ok()
                .flatten();
            let windows = tokio::time::timeout(CALL_TIMEOUT, reg.windows(&name))
                .await
                .ok()
                .flatten();
            out.push(ProviderView {
                name,
                circuit,
                slots_in_use: slots.map(|s| s.0),
                concurrency: slots.map(|s| s.1),
                requests_last_minute: windows.map(|w| w.0),
                tokens_last_minute: windows.map(|w| w.1),
            });
        }
        out
    }
}
