//! [`DisabledWatch`]: closes a disabled user's open WebSockets on this node.
//!
//! Disabling (`crate::admin`, from REST or the command line) announces the
//! user's id with Postgres `NOTIFY` in its own transaction, so every node
//! hears it once it commits; each node cancels that user's sockets
//! ([`UserRegistry::cut`]), which close with 4001. A notification sent while
//! this node's listening connection is being re-established is missed: such
//! a socket is refused at its next reconnect (`ensure_active`) instead.

use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use uuid::Uuid;

use super::user::UserRegistry;
use crate::{config::Secret, store::admin::USER_DISABLED_CHANNEL};

/// Waits this long before listening again after Postgres went away.
const RETRY: Duration = Duration::from_secs(2);

/// The running watch; `stop` ends it and waits.
pub struct DisabledWatch {
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl DisabledWatch {
    /// Listens on a connection of its own (`database_url`), outside the pool.
    pub fn start(database_url: Secret, users: UserRegistry) -> Self {
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let token = cancel.clone();
        tracker.spawn(async move {
            tokio::select! {
                () = token.cancelled() => {}
                () = watch(&database_url, &users) => {}
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

async fn watch(db: &Secret, users: &UserRegistry) {
    loop {
        let mut listener = match listen(db).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for disabled accounts; retrying");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        loop {
            match listener.recv().await {
                Ok(n) => match n.payload().parse::<Uuid>() {
                    Ok(user_id) => {
                        let closed = users.cut(user_id);
                        if closed > 0 {
                            tracing::info!(%user_id, sockets = closed, "account disabled: its sockets closed");
                        }
                    }
                    Err(_) => tracing::warn!("ignored a malformed disabled-account notification"),
                },
                Err(e) => {
                    // The listener reconnects on the next `recv`; pause so a
                    // Postgres outage is not a busy loop.
                    tracing::warn!(error = %e, "disabled-account listener lost Postgres");
                    tokio::time::sleep(RETRY).await;
                    break;
                }
            }
        }
    }
}

async fn listen(db: &Secret) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect(db.expose()).await?;
    listener.listen(USER_DISABLED_CHANNEL).await?;
    Ok(listener)
}
