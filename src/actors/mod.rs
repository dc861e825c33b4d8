//! The actor tree.
//!
//! ```text
//! Root
//! ├── ProviderSupervisor → ProviderActor per configured provider (leases, concurrency)
//! ├── UserSupervisor     → UserActor per connected user (connections, plan); stops when idle
//! ├── ChatSupervisor     → ChatActor per active chat (seq order, generation, cancel); stops when idle
//! └── UsageWriter        → batches usage events into Postgres
//! ```
//!
//! Supervisors restart a child that panics or is killed, at most
//! `chat.max_restarts` times per `chat.restart_window_secs`; a restarted chat
//! actor rebuilds its state from Postgres. Handlers never await a provider:
//! generations run in their own tasks and report back as messages.

pub mod chat;
pub mod hub;
pub mod persistence;
pub mod provider;
pub mod user;

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use sqlx::PgPool;

use crate::{
    config::Config,
    providers::{ChatProvider, pricing::PriceTable, simulated::SimulatedProvider},
};

pub(crate) fn live(kind: &'static str, delta: f64) {
    metrics::gauge!("switchboard_actors_live", "kind" => kind).increment(delta);
}

pub(crate) fn handled(kind: &'static str) {
    metrics::counter!("switchboard_actor_messages_total", "kind" => kind).increment(1);
}

/// Counts restarts per child within a window, so a crash loop is given up on.
pub struct RestartLimiter {
    max: u32,
    window: Duration,
    seen: HashMap<String, Vec<Instant>>,
}

impl RestartLimiter {
    pub fn new(max: u32, window: Duration) -> Self {
        Self {
            max,
            window,
            seen: HashMap::new(),
        }
    }

    /// Records a restart of `key` and says whether it is still allowed.
    pub fn allow(&mut self, key: &str) -> bool {
        let now = Instant::now();
        let times = self.seen.entry(key.to_owned()).or_default();
        times.retain(|t| now.duration_since(*t) < self.window);
        times.push(now);
        if self.seen.len() > 10_000 {
            let window = self.window;
            self.seen
                .retain(|_, t| t.last().is_some_and(|l| now.duration_since(*l) < window));
        }
        self.seen
            .get(key)
            .is_some_and(|t| t.len() as u32 <= self.max)
    }
}

/// Handles to the running tree, shared by the transports.
#[derive(Clone)]
pub struct Actors {
    pub chats: chat::ChatRegistry,
    pub users: user::UserRegistry,
    pub providers: provider::ProviderRegistry,
    pub usage: ActorRef<persistence::UsageMsg>,
    pub hub: hub::ChatHub,
    root: ActorRef<()>,
}

#[derive(Debug, thiserror::Error)]
pub enum ActorStartError {
    #[error("actor spawn failed: {0}")]
    Spawn(#[from] ractor::SpawnErr),
    #[error("price table: {0}")]
    Pricing(#[from] crate::providers::pricing::PricingError),
}

impl Actors {
    /// Starts the whole tree.
    pub async fn start(config: &Config, db: PgPool) -> Result<Self, ActorStartError> {
        let pricing = Arc::new(PriceTable::load(std::path::Path::new(
            &config.chat.pricing_file,
        ))?);
        let (root, _) = Actor::spawn(None, Root, ()).await?;
        let restarts = || {
            RestartLimiter::new(
                config.chat.max_restarts,
                Duration::from_secs(config.chat.restart_window_secs),
            )
        };

        let providers = provider::ProviderRegistry::default();
        let configured: Vec<(Arc<dyn ChatProvider>, usize)> = vec![(
            Arc::new(SimulatedProvider::new(config.simulated.clone())),
            10_000,
        )];
        Actor::spawn_linked(
            None,
            provider::ProviderSupervisor,
            (providers.clone(), configured, restarts()),
            root.get_cell(),
        )
        .await?;

        let (usage, _) =
            Actor::spawn_linked(None, persistence::UsageWriter, db.clone(), root.get_cell())
                .await?;

        let users = user::UserRegistry::default();
        let (user_sup, _) = Actor::spawn_linked(
            None,
            user::UserSupervisor,
            user::UserSupervisorArgs {
                registry: users.clone(),
                db: db.clone(),
                idle: Duration::from_secs(config.chat.user_idle_timeout_secs),
                max_connections: config.ws.max_connections_per_user,
                restarts: restarts(),
            },
            root.get_cell(),
        )
        .await?;
        users.set_supervisor(user_sup);

        let hub = hub::ChatHub::default();
        let deps = Arc::new(chat::ChatDeps {
            db,
            hub: hub.clone(),
            providers: providers.clone(),
            usage: usage.clone(),
            pricing,
            config: config.chat.clone(),
            free_tier: config.providers.free_tier_list(),
            paid_tier: config.providers.paid_tier_list(),
        });
        let chats = chat::ChatRegistry::new(config.chat.mailbox_limit);
        let (chat_sup, _) = Actor::spawn_linked(
            None,
            chat::ChatSupervisor,
            (chats.clone(), deps, restarts()),
            root.get_cell(),
        )
        .await?;
        chats.set_supervisor(chat_sup);

        Ok(Self {
            chats,
            users,
            providers,
            usage,
            hub,
            root,
        })
    }

    /// Stops the tree; the usage writer flushes what it holds on the way out.
    pub async fn stop(&self) {
        let _ = self
            .usage
            .stop_and_wait(Some("shutdown".into()), Some(Duration::from_secs(5)))
            .await;
        let _ = self
            .root
            .stop_and_wait(Some("shutdown".into()), Some(Duration::from_secs(5)))
            .await;
    }
}

/// The root: owns the supervisors; a supervisor's death is logged, never fatal to the process.
struct Root;

impl Actor for Root {
    type Msg = ();
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _me: ActorRef<()>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _me: ActorRef<()>,
        evt: SupervisionEvent,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        match evt {
            SupervisionEvent::ActorFailed(cell, e) => {
                tracing::error!(actor = ?cell.get_id(), error = %e, "supervisor failed");
            }
            SupervisionEvent::ActorTerminated(cell, _, reason)
                if reason.as_deref() != Some("shutdown") =>
            {
                tracing::warn!(actor = ?cell.get_id(), ?reason, "supervisor stopped");
            }
            _ => {}
        }
        Ok(())
    }
}
