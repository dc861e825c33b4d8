//! The grace-period sweep: every `billing.sweep_interval_secs` each node sets
//! the plan of workspaces whose failed payment has outlived the grace period
//! (the one statement is idempotent, so several nodes may run it at once).
//! Webhooks set plans themselves; this only catches time running out.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// The running sweep; `stop` ends it and waits.
pub struct Sweeper {
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl Sweeper {
    pub fn start(db: PgPool, config: &crate::config::Config) -> Self {
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let every = Duration::from_secs(config.billing.sweep_interval_secs.max(1));
        let grace = config.billing.grace_period_secs as f64;
        let token = cancel.clone();
        tracker.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = token.cancelled() => break,
                    _ = tick.tick() => {}
                }
                match sweep_once(&db, grace).await {
                    Ok(0) => {}
                    Ok(n) => {
                        tracing::info!(workspaces = n, "billing grace periods ended: plans reset")
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "billing sweep failed; retrying next tick")
                    }
                }
            }
        });
        tracker.close();
        Self { cancel, tracker }
    }

    pub async fn stop(&self) {
        self.cancel.cancel();
        self.tracker.wait().await;
    }
}

/// One pass; returns how many workspaces changed plan.
pub async fn sweep_once(db: &PgPool, grace_secs: f64) -> Result<usize, sqlx::Error> {
    let changed = crate::store::billing::sweep_plans(db, grace_secs).await?;
    for (workspace, plan) in &changed {
        tracing::info!(%workspace, %plan, "plan set by the billing sweep");
    }
    Ok(changed.len())
}
