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
use sqlx::{PgPool, QueryBuilder};
use uuid::Uuid;

const BATCH: usize = 200;
const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// Held events beyond this are dropped with an error log: the alternative is unbounded memory.
const MAX_HELD: usize = 100_000;

#[derive(Debug, Clone)]
pub struct UsageEvent {
    pub workspace_id: Uuid,
    pub user_id: Option<Uuid>,
    pub api_key_id: Option<Uuid>,
    pub chat_id: Option<Uuid>,
    pub message_id: Option<Uuid>,
    pub provider: String,
    pub model: String,
    pub input_tokens: i32,
    pub output_tokens: i32,
    pub cost_micros: i64,
}

pub enum UsageMsg {
    Record(UsageEvent),
    Flush,
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

async fn insert(db: &PgPool, events: &[UsageEvent]) -> Result<(), sqlx::Error> {
    let mut qb = QueryBuilder::new(
        "insert into usage_events (id, workspace_id, user_id, api_key_id, chat_id, message_id, provider, model, input_tokens, output_tokens, cost_micros) ",
    );
    qb.push_values(events, |mut b, e| {
        b.push_bind(Uuid::now_v7())
            .push_bind(e.workspace_id)
            .push_bind(e.user_id)
            .push_bind(e.api_key_id)
            .push_bind(e.chat_id)
            .push_bind(e.message_id)
            .push_bind(&e.provider)
            .push_bind(&e.model)
            .push_bind(e.input_tokens)
            .push_bind(e.output_tokens)
            .push_bind(e.cost_micros);
    });
    qb.build().execute(db).await.map(|_| ())
}

async fn flush(s: &mut UsageState) {
    while !s.held.is_empty() {
        let n = s.held.len().min(BATCH);
        match insert(&s.db, &s.held[..n]).await {
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
                    match insert(&s.db, std::slice::from_ref(event)).await {
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
