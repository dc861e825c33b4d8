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
//! Beside the tree, `group_commit` tasks batch many chats' reads and writes
//! into one statement each (the reads before sends: `chat/send_reads.rs`;
//! messages stored and answers ended: `chat/group_writes.rs`).
//!
//! Supervisors restart a child that panics or is killed, at most
//! `chat.max_restarts` times per `chat.restart_window_secs`; a restarted chat
//! actor rebuilds its state from Postgres. Handlers never await a provider:
//! generations (`crate::generation`) run in their own tasks and report back as
//! messages. Keyed actors are found through one [`registry::Registry`].
//!
//! Layering: `hub`, `registry`, `provider` and `persistence` sit below
//! `crate::generation`; `chat` and `user` sit above it. No actor imports a
//! transport.

pub mod chat;
pub mod disabled;
pub mod group_commit;
pub mod hub;
pub mod ops;
pub mod persistence;
pub mod provider;
pub mod registry;
pub mod user;

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use sqlx::PgPool;

use crate::{
    admission::Admission,
    budget::{BudgetLedger, LedgerConfig},
    config::{Config, pricing::PriceTable},
    generation::{self, Generations},
    limits::WindowCounter,
    providers::{self, router::Router},
};

pub(crate) fn live(kind: &'static str, delta: f64) {
    metrics::gauge!("switchboard_actors_live", "kind" => kind).increment(delta);
}

pub(crate) fn handled(kind: &'static str) {
    metrics::counter!("switchboard_actor_messages_total", "kind" => kind).increment(1);
}

/// A child's exit as a supervisor sees it: the child, and why it crashed
/// (`None` for a clean stop such as idleness). Killed counts as a crash.
pub(crate) fn child_exit(evt: SupervisionEvent) -> Option<(ractor::ActorCell, Option<String>)> {
    match evt {
        SupervisionEvent::ActorFailed(cell, e) => Some((cell, Some(e.to_string()))),
        SupervisionEvent::ActorTerminated(cell, _, reason) => {
            let crash = (reason.as_deref() == Some("killed")).then(|| "killed".to_owned());
            Some((cell, crash))
        }
        _ => None,
    }
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
    pub hub: hub::ChatHub,
    /// The generation lifecycle: providers, router, prices, admission, usage writer.
    pub gens: Generations,
    /// Documents: ingestion and retrieval (crate::documents).
    pub documents: crate::documents::Library,
    /// This node among the others: its name, chat leases, fan-out, takeovers.
    pub cluster: crate::cluster::Cluster,
    takeover: crate::cluster::takeover::Takeover,
    root: ActorRef<()>,
}

#[derive(Debug, thiserror::Error)]
pub enum ActorStartError {
    #[error("actor spawn failed: {0}")]
    Spawn(#[from] ractor::SpawnErr),
    #[error("price table: {0}")]
    Pricing(#[from] crate::config::pricing::PricingError),
}

impl Actors {
    /// Starts the whole tree.
    #[expect(
        clippy::too_many_lines,
        reason = "the tree is started in one place, in order"
    )]
    pub async fn start(
        config: &Config,
        db: PgPool,
        redis: redis::aio::ConnectionManager,
        counters: WindowCounter,
    ) -> Result<Self, ActorStartError> {
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
        let configured = provider_specs(config);
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
                idle: Duration::from_secs(config.chat.user_idle_timeout_secs),
                max_connections: config.ws.max_connections_per_user,
                restarts: restarts(),
            },
            root.get_cell(),
        )
        .await?;
        users.set_supervisor(user_sup);

        let embed_cache = embed_cache(config, redis.clone());
        let hub = hub::ChatHub::default();
        let (cluster, remote_cancels) =
            crate::cluster::Cluster::start(config, redis.clone(), &counters, &hub);
        let admission = admission(config, redis, db.clone(), counters, &cluster.node_id).await;
        let router = Router::from_config(config);

        let gens = Generations::new(generation::Inner {
            providers,
            admission,
            pricing,
            router,
            usage,
            routing: config.routing.clone(),
            embed_cache,
            tasks: tokio_util::task::TaskTracker::new(),
            shutdown: tokio_util::sync::CancellationToken::new(),
            draining: tokio_util::sync::CancellationToken::new(),
        });
        let documents = library(config, db.clone(), gens.clone());
        let deps = Arc::new(chat::ChatDeps {
            documents: documents.clone(),
            turns: chat::TurnWriter::start(db.clone(), cluster.node_id.clone()),
            send_reads: chat::SendReader::start(
                db.clone(),
                config.cluster.requeue_window_secs,
                config.chat.history_messages,
            ),
            finals: chat::FinalWriter::start(db.clone()),
            db,
            hub: hub.clone(),
            gens: gens.clone(),
            config: config.chat.clone(),
            streaming: dashmap::DashSet::new(),
            cluster: cluster.clone(),
            unverified_may_spend: config.accounts.unverified_may_spend,
        });
        let chats = chat::ChatRegistry::new(config.chat.mailbox_limit, deps);
        chats.serve_remote_cancels(remote_cancels);
        let (chat_sup, _) = Actor::spawn_linked(
            None,
            chat::ChatSupervisor,
            (chats.clone(), restarts()),
            root.get_cell(),
        )
        .await?;
        chats.set_supervisor(chat_sup);
        let takeover = crate::cluster::takeover::Takeover {
            cluster: cluster.clone(),
            db: chats.deps().db.clone(),
            gens: gens.clone(),
            chats: chats.clone(),
        };
        crate::cluster::takeover::start(takeover.clone());

        Ok(Self {
            chats,
            users,
            hub,
            gens,
            documents,
            cluster,
            takeover,
            root,
        })
    }

    /// What this node's previous run left: answers streaming are failed and
    /// billed once, messages never answered are queued again. Answers how
    /// many answers were failed.
    pub async fn recover_own(&self) -> Result<usize, sqlx::Error> {
        crate::cluster::takeover::recover_own(&self.takeover).await
    }

    /// Stops the tree: generations first (each bills itself), then the usage
    /// writer flushes what it holds, then the rest.
    pub async fn stop(&self, finish: Duration) {
        if !self.gens.drain(finish, Duration::from_secs(5)).await {
            tracing::warn!("some generations did not finish billing before shutdown");
        }
        let _ = self
            .gens
            .usage
            .stop_and_wait(Some("shutdown".into()), Some(Duration::from_secs(5)))
            .await;
        // After the generations: their last events still reach other nodes.
        self.cluster.stop().await;
        let _ = self
            .root
            .stop_and_wait(Some("shutdown".into()), Some(Duration::from_secs(5)))
            .await;
    }
}

/// Each configured provider with its limits, for the provider supervisor.
fn provider_specs(config: &Config) -> Vec<provider::ProviderSpec> {
    providers::configured(config)
        .into_iter()
        .map(|p| {
            let l = config.providers.limits_for(p.name());
            provider::ProviderSpec {
                provider: p,
                limits: provider::ProviderLimits {
                    concurrency: l.concurrency,
                    rpm: l.rpm,
                    tpm: l.tpm,
                    breaker_failures: l.breaker_failures,
                    breaker_cooldown: Duration::from_secs(l.breaker_cooldown_secs),
                },
            }
        })
        .collect()
}

fn embed_cache(
    config: &Config,
    redis: redis::aio::ConnectionManager,
) -> crate::embedding_cache::EmbeddingCache {
    crate::embedding_cache::EmbeddingCache::new(
        redis,
        &config.redis.key_prefix,
        Duration::from_secs(config.documents.cache_ttl_secs),
    )
}

/// Documents' ingestion and retrieval, with the configured embedder.
fn library(config: &Config, db: PgPool, gens: Generations) -> crate::documents::Library {
    crate::documents::Library::new(
        db,
        gens,
        crate::providers::embedding::configured(config),
        config.documents.clone(),
    )
}

/// Limits and the budget ledger; releases what this node reserved before it last stopped.
async fn admission(
    config: &Config,
    redis: redis::aio::ConnectionManager,
    db: PgPool,
    counters: WindowCounter,
    node_id: &str,
) -> Admission {
    let node_id = node_id.to_owned();
    let ledger = BudgetLedger::new(
        redis,
        db.clone(),
        counters.clone(),
        LedgerConfig {
            prefix: config.redis.key_prefix.clone(),
            node_id,
            reservation_ttl: Duration::from_secs(config.routing.reservation_ttl_secs),
            global_daily_micros: config.alerts.global_daily_micros,
            global_monthly_micros: config.alerts.global_monthly_micros,
        },
    );
    let released = ledger.release_node_reservations().await;
    if released > 0 {
        tracing::info!(
            released,
            "released budget reservations left by this node's last run"
        );
    }
    Admission::new(counters, ledger, config.plans.clone(), db)
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
