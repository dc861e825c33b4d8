//! `AppState`: the shared, read-mostly state every transport handler gets.
//! Built once by `app::App::build`; it sits below the transports and above
//! the actors, so neither the app nor the transports import each other for it.

use std::sync::Arc;

use redis::aio::ConnectionManager;
use sqlx::PgPool;

use crate::{
    actors::Actors,
    auth::tokens::TokenKeys,
    config::{Config, Secret},
    limits::WindowCounter,
};

/// Shared, read-mostly state handed to every handler.
#[derive(Clone)]
pub struct AppState(Arc<AppInner>);

pub struct AppInner {
    pub config: Config,
    pub db: PgPool,
    pub redis: ConnectionManager,
    pub counters: WindowCounter,
    pub tokens: TokenKeys,
    pub amqp_url: Secret,
    pub actors: Actors,
    pub embedder: Arc<dyn crate::providers::embedding::Embedder>,
    /// API keys looked up recently (`auth.key_cache_ms`).
    pub key_cache: crate::auth::key_cache::KeyCache,
    /// When each API key's `last_used_at` was last written by this node.
    pub key_touches: dashmap::DashMap<uuid::Uuid, std::time::Instant>,
    /// The Stripe client and price map.
    pub billing: crate::billing::Billing,
    /// The outbox relay and, when configured, the email worker.
    pub email: crate::email::EmailTasks,
    /// Where shutdown stands, for the doors that hold long-lived streams.
    pub lifecycle: Lifecycle,
    /// Open connections, SSE streams and unauthenticated sockets (`[edge]` caps).
    pub edge: std::sync::Arc<crate::edge::EdgeCounters>,
}

/// Shutdown as the doors see it. Draining (refusing new generations) is the
/// lifecycle's own `Generations::draining`; once the generations have ended,
/// `closing` fires and every stream sends its terminal event and ends.
#[derive(Default)]
pub struct Lifecycle {
    pub closing: tokio_util::sync::CancellationToken,
    /// Every WebSocket connection: the server's graceful stop ends with the
    /// HTTP connections, and an upgraded one is no longer one of them, so
    /// the app waits for these itself.
    pub sockets: tokio_util::task::TaskTracker,
}

impl AppState {
    pub fn new(inner: AppInner) -> Self {
        Self(Arc::new(inner))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}
