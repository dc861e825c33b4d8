//! Building and running the server: `App::build(config)` connects to the
//! outside services and binds the port; `run_until(signal)` serves until the
//! signal fires, then gives in-flight requests a grace period.

use std::{future::Future, net::SocketAddr, time::Duration};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use sqlx::PgPool;
use tokio::net::TcpListener;

use crate::{
    actors::{ActorStartError, Actors},
    auth::tokens::TokenKeys,
    config::{Config, Secret},
    limits::WindowCounter,
    state::{AppInner, AppState},
    telemetry,
    transport::http,
};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("configuration has problems:\n  - {}", .0.join("\n  - "))]
    Config(Vec<String>),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("actors: {0}")]
    Actors(#[from] ActorStartError),
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

pub struct App {
    listener: TcpListener,
    state: AppState,
}

/// The pool, connected lazily: the server can start (and report itself not
/// ready) while Postgres is down.
pub fn db_pool(config: &Config) -> Result<PgPool, StartError> {
    crate::store::pool(config)
        .ok_or_else(|| StartError::Config(vec!["DATABASE_URL is required".into()]))?
        .map_err(StartError::from)
}

pub async fn migrate(db: &PgPool) -> Result<(), StartError> {
    Ok(crate::store::migrate(db).await?)
}

/// Refuses settings the server cannot run with.
fn check_config(config: &Config) -> Result<(), StartError> {
    // Problems that make serving impossible refuse start everywhere; the
    // rest (weak or default secrets) refuse start in production only.
    let problems = config.problems();
    if !problems.is_empty() {
        if config.env == crate::config::AppEnv::Production {
            return Err(StartError::Config(problems));
        }
        for p in &problems {
            tracing::warn!(problem = %p, "configuration problem (refused in production)");
        }
    }
    let missing = |o: bool, name: &str| (!o).then(|| format!("{name} is required"));
    let fatal: Vec<String> = [
        missing(config.database.url.is_some(), "DATABASE_URL"),
        missing(config.redis.url.is_some(), "REDIS_URL"),
        missing(config.amqp.url.is_some(), "AMQP_URL"),
        missing(config.auth.jwt_secret.is_some(), "JWT_SECRET"),
        missing(
            config.auth.refresh_token_secret.is_some(),
            "REFRESH_TOKEN_SECRET",
        ),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !fatal.is_empty() {
        return Err(StartError::Config(fatal));
    }
    Ok(())
}

impl App {
    /// Validates settings, migrates the database, connects Redis lazily and binds the port.
    pub async fn build(config: Config) -> Result<Self, StartError> {
        check_config(&config)?;

        telemetry::install_metrics();
        crate::auth::password::configure(config.auth.argon2_threads);
        let db = db_pool(&config)?;
        migrate(&db).await?;

        let redis_url = config
            .redis
            .url
            .as_ref()
            .map(Secret::expose)
            .unwrap_or_default();
        let redis = ConnectionManager::new_lazy_with_config(
            redis::Client::open(redis_url)?,
            ConnectionManagerConfig::new()
                .set_connection_timeout(Some(Duration::from_millis(500)))
                .set_response_timeout(Some(Duration::from_secs(1)))
                .set_number_of_retries(1),
        )?;
        let counters = WindowCounter::new(redis.clone(), &config.redis.key_prefix)
            .with_breaker_cooldown(Duration::from_millis(config.redis.breaker_cooldown_ms));
        let tokens = TokenKeys::new(&config.auth);
        let amqp_url = config.amqp.url.clone().unwrap_or_else(|| Secret::new(""));
        let actors = Actors::start(&config, db.clone(), redis.clone(), counters.clone()).await?;
        // Answers left streaming by a previous run (killed mid-answer) end as
        // failed, billed for what they had saved.
        // Only this node's rows: other nodes' are theirs (crate::cluster).
        let interrupted = actors.recover_own().await?;
        if interrupted > 0 {
            tracing::warn!(
                count = interrupted,
                "answers interrupted by the last shutdown marked failed and billed"
            );
        }

        // Documents a previous run left pending or indexing are indexed again.
        let resumed = actors.documents.resume().await?;
        if resumed > 0 {
            tracing::info!(count = resumed, "unfinished documents queued for indexing");
        }

        // One embedder for /v1/embeddings and documents.
        let embedder = actors.documents.embedder.clone();
        let addr = format!("{}:{}", config.server.host, config.server.port);
        let listener = TcpListener::bind(&addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        // Started last, so a failed start leaves no email task running.
        let email = crate::email::EmailTasks::start(&config, &db)
            .map_err(|e| StartError::Config(vec![e.to_string()]))?;
        let billing = crate::billing::Billing::new(&config);
        let key_cache = crate::auth::key_cache::KeyCache::new(std::time::Duration::from_millis(
            config.auth.key_cache_ms,
        ));
        let state = AppState::new(AppInner {
            billing,
            config,
            db,
            redis,
            counters,
            tokens,
            amqp_url,
            actors,
            embedder,
            key_cache,
            key_touches: dashmap::DashMap::new(),
            email,
            lifecycle: crate::state::Lifecycle::default(),
            edge: Default::default(),
        });
        Ok(Self { listener, state })
    }

    #[expect(
        clippy::expect_used,
        reason = "a bound TCP listener always has an address"
    )]
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then drains within the configured
    /// grace period (docs/OPERATIONS.md, "Shutdown"): new generations are
    /// refused and `/ready` fails at once; running answers get most of the
    /// grace to finish, then are cancelled and billed; then every stream gets
    /// its terminal event (WebSocket `error` + close 1001, SSE `error`, `/v1`
    /// error chunk); last the usage writer flushes.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let grace = Duration::from_secs(self.state.config.server.shutdown_grace_secs);
        let router = http::router(self.state.clone());
        let billing_sweep =
            crate::billing::sweep::Sweeper::start(self.state.db.clone(), &self.state.config);
        // Disabled accounts lose their open sockets on every node (docs/OPERATIONS.md).
        let disabled_watch = self.state.config.database.url.clone().map(|url| {
            crate::actors::disabled::DisabledWatch::start(url, self.state.actors.users.clone())
        });
        let (signalled_tx, signalled) = tokio::sync::watch::channel(false);
        // Our own accept loop (caps, header-read and keep-alive timeouts);
        // it sets TCP_NODELAY and puts the peer address on each request.
        let serve = crate::transport::server::serve(
            self.listener,
            router,
            self.state.edge.conns.clone(),
            self.state.config.edge.clone(),
            async move {
                shutdown.await;
                tracing::info!(
                    grace_secs = grace.as_secs(),
                    "shutting down: draining (no new answers; running ones finish or are cancelled)"
                );
                let _ = signalled_tx.send(true);
            },
        );
        let after_signal = |extra: Duration| {
            let mut signalled = signalled.clone();
            async move {
                // An error means serve ended without a signal: nothing to drain.
                if signalled.wait_for(|s| *s).await.is_ok() {
                    tokio::time::sleep(extra).await;
                } else {
                    std::future::pending::<()>().await;
                }
            }
        };
        let serve = async {
            tokio::select! {
                res = serve => res,
                () = after_signal(grace) => {
                    tracing::warn!("grace period over: closing the remaining connections");
                    Ok(())
                }
            }
        };
        let drain = async {
            let mut signalled = signalled.clone();
            if signalled.wait_for(|s| *s).await.is_ok() {
                drain(&self.state, grace).await;
            }
        };
        let (res, ()) = tokio::join!(serve, drain);
        billing_sweep.stop().await;
        if let Some(w) = disabled_watch {
            w.stop().await;
        }
        self.state.actors.stop(Duration::from_secs(1)).await;
        self.state.email.shutdown().await;
        res
    }
}

/// The phases of a shutdown within `grace`: 60 % for running answers to
/// finish, then cancel and up to 20 % to bill them, then the streams' terminal
/// events and up to 10 % for the sockets to close; the rest is the usage
/// writer's flush.
async fn drain(state: &AppState, grace: Duration) {
    let started = std::time::Instant::now();
    let gens = &state.actors.gens;
    if !gens.drain(grace * 6 / 10, grace * 2 / 10).await {
        tracing::warn!("some generations did not finish billing within the grace period");
    }
    // A generation's end reaches subscribers through its chat actor, just
    // after its task ended: give those `done` frames a moment to be queued
    // before each stream's terminal frame.
    let settle = std::time::Instant::now();
    while state.actors.chats.streaming_count() > 0 && settle.elapsed() < grace / 20 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    state.lifecycle.closing.cancel();
    state.lifecycle.sockets.close();
    let left = (grace * 9 / 10).saturating_sub(started.elapsed());
    if tokio::time::timeout(left, state.lifecycle.sockets.wait())
        .await
        .is_err()
    {
        tracing::warn!("some WebSockets did not close within the grace period");
    }
}
