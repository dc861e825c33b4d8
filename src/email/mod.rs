//! Email delivery: the transactional outbox → RabbitMQ → SMTP.
//!
//! ```text
//! handler ──(same tx as its cause)──▶ email_outbox
//!   OutboxRelay (in `serve`, every node) ──publish + confirm──▶ {queue}
//!   EmailWorker (`switchboard worker email`, or inside `serve`) ──▶ SMTP
//!        failure ──▶ {queue}.retry.N ──(ttl)──▶ {queue}      give up ──▶ {queue}.dead
//! ```
//! Owns the relay and the worker as tracked tasks with one cancellation token
//! (clean shutdown), their readiness and their `switchboard_email_*` metrics.
//! Templates are in [`templates`]; what goes into the outbox is decided by the
//! callers (`crate::accounts`, `crate::admission`). docs/EMAIL.md tells the story.

pub mod mailer;
pub mod queue;
pub mod relay;
pub mod templates;
pub mod worker;

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use lapin::Channel;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::config::{Config, Secret};
use mailer::Mailer;
use queue::Topology;

/// What the email tasks last saw, for readiness.
#[derive(Debug, Default)]
pub struct EmailStatus {
    relay_running: AtomicBool,
    relay_connected: AtomicBool,
    worker_running: AtomicBool,
    worker_connected: AtomicBool,
    /// False after a transient SMTP failure, true again after a send.
    smtp_failing: AtomicBool,
}

impl EmailStatus {
    fn set_relay_connected(&self, up: bool) {
        self.relay_connected.store(up, Ordering::Relaxed);
        metrics::gauge!("switchboard_email_rabbitmq_connected", "task" => "relay")
            .set(f64::from(u8::from(up)));
    }
    fn set_worker_connected(&self, up: bool) {
        self.worker_connected.store(up, Ordering::Relaxed);
        metrics::gauge!("switchboard_email_rabbitmq_connected", "task" => "worker")
            .set(f64::from(u8::from(up)));
    }
    fn set_smtp_ok(&self, ok: bool) {
        self.smtp_failing.store(!ok, Ordering::Relaxed);
    }
    pub fn worker_connected(&self) -> bool {
        self.worker_connected.load(Ordering::Relaxed)
    }

    /// The `email` entry of `/ready`: informative; email trouble never takes a node out.
    pub fn readiness(&self) -> Value {
        let state = |running: &AtomicBool, connected: &AtomicBool| match (
            running.load(Ordering::Relaxed),
            connected.load(Ordering::Relaxed),
        ) {
            (false, _) => "off",
            (true, true) => "up",
            (true, false) => "down",
        };
        json!({
            "relay": state(&self.relay_running, &self.relay_connected),
            "worker": state(&self.worker_running, &self.worker_connected),
            "smtp": if self.smtp_failing.load(Ordering::Relaxed) { "failing" } else { "ok" },
        })
    }
}

/// The relay and (optionally) the worker running inside `serve`.
pub struct EmailTasks {
    cancel: CancellationToken,
    tracker: TaskTracker,
    pub status: Arc<EmailStatus>,
}

#[derive(Debug, thiserror::Error)]
pub enum EmailStartError {
    #[error("email: {0}")]
    Config(String),
}

impl EmailTasks {
    /// Starts what `[email]` asks for: the relay (`email.relay`) and the worker
    /// (`email.worker_in_serve`).
    pub fn start(config: &Config, db: &PgPool) -> Result<Self, EmailStartError> {
        let tasks = Self {
            cancel: CancellationToken::new(),
            tracker: TaskTracker::new(),
            status: Arc::new(EmailStatus::default()),
        };
        let url = config.amqp.url.clone().unwrap_or_else(|| Secret::new(""));
        if config.email.relay {
            tasks.status.relay_running.store(true, Ordering::Relaxed);
            let relay = relay::OutboxRelay {
                db: db.clone(),
                amqp_url: url.clone(),
                topology: Topology::new(&config.email),
                interval: Duration::from_millis(config.email.relay_interval_ms.max(1)),
                batch: config.email.relay_batch.max(1),
                status: tasks.status.clone(),
            };
            tasks.tracker.spawn(relay.run(tasks.cancel.clone()));
        }
        if config.email.worker_in_serve {
            let worker = build_worker(config, db.clone(), tasks.status.clone())?;
            tasks.tracker.spawn(worker.run(tasks.cancel.clone()));
        }
        tasks.tracker.close();
        Ok(tasks)
    }

    /// Stops the tasks and waits for them: the worker finishes the email in hand.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        if tokio::time::timeout(Duration::from_secs(15), self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("email tasks did not stop within 15 s");
        }
    }
}

fn build_worker(
    config: &Config,
    db: PgPool,
    status: Arc<EmailStatus>,
) -> Result<worker::EmailWorker, EmailStartError> {
    status.worker_running.store(true, Ordering::Relaxed);
    let from = config
        .email
        .from
        .parse()
        .map_err(|e| EmailStartError::Config(format!("EMAIL_FROM: {e}")))?;
    Ok(worker::EmailWorker {
        db,
        amqp_url: config.amqp.url.clone().unwrap_or_else(|| Secret::new("")),
        topology: Topology::new(&config.email),
        mailer: Arc::new(Mailer::from_config(config).map_err(EmailStartError::Config)?),
        from,
        prefetch: config.email.prefetch.max(1),
        lease_secs: i64::try_from(config.email.send_lease_secs).unwrap_or(120),
        status,
    })
}

/// Publishes the work and dead-letter queue depths as gauges.
async fn report_queue_depth(topology: &Topology, ch: &Channel) {
    match topology.depths(ch).await {
        Ok((work, dead)) => {
            metrics::gauge!("switchboard_email_queue_depth", "queue" => "work")
                .set(f64::from(work));
            metrics::gauge!("switchboard_email_queue_depth", "queue" => "dead")
                .set(f64::from(dead));
        }
        Err(e) => tracing::debug!(error = %e, "cannot read email queue depth"),
    }
}

/// `switchboard worker email`: the worker alone, with `/ready` and `/metrics`
/// on `email.worker_addr`, until `shutdown` resolves.
pub async fn run_worker(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    crate::telemetry::install_metrics();
    let db = crate::store::pool(&config)
        .ok_or("DATABASE_URL is required")?
        .map_err(|e| e.to_string())?;
    let status = Arc::new(EmailStatus::default());
    // Settings first (SMTP_HOST, EMAIL_FROM), so a misconfigured worker touches nothing.
    let worker = build_worker(&config, db.clone(), status.clone()).map_err(|e| e.to_string())?;
    crate::store::migrate(&db)
        .await
        .map_err(|e| e.to_string())?;
    let mailer = worker.mailer.clone();
    let listener = tokio::net::TcpListener::bind(&config.email.worker_addr)
        .await
        .map_err(|e| format!("cannot bind {}: {e}", config.email.worker_addr))?;
    tracing::info!(addr = %config.email.worker_addr, "email worker: /ready and /metrics");
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    tracker.spawn(worker.run(cancel.clone()));
    let router = worker_router(status, mailer);
    let stop = cancel.clone();
    tracker.spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "email worker HTTP server failed");
        }
    });
    tracker.close();
    shutdown.await;
    tracing::info!("email worker shutting down");
    cancel.cancel();
    tracker.wait().await;
    Ok(())
}

fn worker_router(status: Arc<EmailStatus>, mailer: Arc<Mailer>) -> axum::Router {
    use axum::{http::StatusCode, routing::get};
    let ready = move || {
        let (status, mailer) = (status.clone(), mailer.clone());
        async move {
            let smtp = tokio::time::timeout(Duration::from_secs(5), mailer.probe())
                .await
                .unwrap_or_else(|_| Err("no answer within 5 s".into()));
            let amqp = status.worker_connected();
            let body = json!({
                "status": if amqp && smtp.is_ok() { "ready" } else { "not ready" },
                "checks": {
                    "rabbitmq": if amqp { "up" } else { "down" },
                    "smtp": if smtp.is_ok() { "up" } else { "down" },
                    "mailer": mailer.describe(),
                },
            });
            if let Err(e) = &smtp {
                tracing::warn!(error = %e, "SMTP readiness check failed");
            }
            let code = if amqp && smtp.is_ok() {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            (code, axum::Json(body))
        }
    };
    axum::Router::new()
        .route("/ready", get(ready))
        .route("/health", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(|| async { crate::telemetry::render_metrics() }),
        )
}
