//! UsageWriter: batches usage events into Postgres.
//!
//! Events arrive as casts and are written together every `FLUSH_EVERY` or
//! `BATCH` events, whichever comes first, in one multi-row insert. A batch the
//! database refuses is written row by row, so one bad event can never block
//! the queue: a row refused on its own is logged with its content and counted
//! in `switchboard_usage_events_rejected_total`. When the database is
//! unreachable the batch is kept and retried on the next tick; shutdown flushes.

use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use sqlx::PgPool;

use crate::store::usage;

const BATCH: usize = 200;
const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// Held events beyond this are dropped with an error log: the alternative is unbounded memory.
const MAX_HELD: usize = 100_000;

pub use crate::store::usage::UsageEvent;

pub enum UsageMsg {
    Record(UsageEvent),
    Flush,
    /// Events held, not yet written (operations views).
    Backlog(ractor::RpcReplyPort<usize>),
}

pub struct UsageWriter;

pub struct UsageState {
    db: PgPool,
    held: Vec<UsageEvent>,
}

impl Actor for UsageWriter {
    type Msg = UsageMsg;
    type State = UsageState;
    type Arguments = PgPool;

    async fn pre_start(
        &self,
        me: ActorRef<UsageMsg>,
        db: PgPool,
    ) -> Result<UsageState, ActorProcessingErr> {
        super::live("usage_writer", 1.0);
        me.send_interval(FLUSH_EVERY, || UsageMsg::Flush);
        Ok(UsageState {
            db,
            held: Vec::new(),
        })
    }

    async fn post_stop(
        &self,
        _me: ActorRef<UsageMsg>,
        s: &mut UsageState,
    ) -> Result<(), ActorProcessingErr> {
        flush(s).await;
        super::live("usage_writer", -1.0);
        Ok(())
    }

    async fn handle(
        &self,
        _me: ActorRef<UsageMsg>,
        msg: UsageMsg,
        s: &mut UsageState,
    ) -> Result<(), ActorProcessingErr> {
        super::handled("usage_writer");
        match msg {
            UsageMsg::Record(e) => {
                if s.held.len() >= MAX_HELD {
                    tracing::error!(?e, "usage writer backlog full: event dropped");
                    metrics::counter!("switchboard_usage_events_dropped_total").increment(1);
                } else {
                    s.held.push(e);
                }
                if s.held.len() >= BATCH {
                    flush(s).await;
                }
            }
            UsageMsg::Flush => flush(s).await,
            UsageMsg::Backlog(reply) => {
                let _ = reply.send(s.held.len());
            }
        }
        metrics::gauge!("switchboard_actor_queue_depth", "kind" => "usage_writer")
            .set(s.held.len() as f64);
        Ok(())
    }
}

/// Whether an error says the database is unreachable (worth retrying the
/// same rows later) rather than refusing these rows.
fn unreachable(e: &sqlx::Error) -> bool {
    !matches!(e, sqlx::Error::Database(_))
}

async fn flush(s: &mut UsageState) {
    while !s.held.is_empty() {
        let n = s.held.len().min(BATCH);
        match usage::insert(&s.db, &s.held[..n]).await {
            Ok(()) => {
                s.held.drain(..n);
                metrics::counter!("switchboard_usage_events_written_total").increment(n as u64);
            }
            Err(e) if unreachable(&e) => {
                tracing::warn!(error = %e, held = s.held.len(), "usage write failed; will retry");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "usage batch refused; writing its rows one by one");
                let batch: Vec<UsageEvent> = s.held.drain(..n).collect();
                for (i, event) in batch.iter().enumerate() {
                    match usage::insert(&s.db, std::slice::from_ref(event)).await {
                        Ok(()) => {
                            metrics::counter!("switchboard_usage_events_written_total")
                                .increment(1);
                        }
                        Err(e) if unreachable(&e) => {
                            // Keep this row and the rest for the next tick, in order.
                            let rest = batch[i..].to_vec();
                            s.held.splice(0..0, rest);
                            return;
                        }
                        Err(e) => {
                            tracing::error!(error = %e, ?event, "usage event refused by the database: dropped");
                            metrics::counter!("switchboard_usage_events_rejected_total")
                                .increment(1);
                        }
                    }
                }
            }
        }
    }
}
