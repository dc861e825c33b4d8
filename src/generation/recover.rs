//! Answers a dead process left `streaming` (kill -9, a power cut): at this
//! node's start-up (its own rows) or when a survivor takes a dead node over
//! (that node's rows, `crate::cluster`), each is failed as `interrupted` and
//! billed for what it had saved — its prompt as counted when it started, and
//! its checkpointed text counted with the tokenizer — in the same transaction,
//! so it is billed exactly once (an answer the dead node had already billed
//! is not billed again). The budget counters then learn the spend as a
//! settled reservation would. Another live node's rows are never touched.

use sqlx::PgPool;

use super::Generations;
use crate::{
    admission::Payer,
    providers::{Usage, tokenizer},
    store::{
        messages::{self, Interrupted},
        usage::{self, UsageEvent},
        workspaces,
    },
};

impl Generations {
    /// Fails and bills every answer the nodes `node_ids` left streaming (with
    /// `with_unowned`, also rows from before answers had a node); answers the
    /// failed rows.
    pub async fn recover_interrupted(
        &self,
        db: &PgPool,
        node_ids: &[String],
        with_unowned: bool,
    ) -> Result<Vec<messages::Message>, sqlx::Error> {
        let mut tx = db.begin().await?;
        let rows = messages::fail_all_interrupted(&mut tx, node_ids, with_unowned).await?;
        let ids: Vec<uuid::Uuid> = rows.iter().map(|r| r.message.id).collect();
        let already = usage::billed_messages(&mut *tx, &ids).await?;
        let mut billed = Vec::new();
        for r in &rows {
            if already.contains(&r.message.id) {
                continue;
            }
            let Some(event) = self.usage_of(r) else {
                continue;
            };
            messages::set_billed(
                &mut tx,
                r.message.id,
                event.input_tokens,
                event.output_tokens,
                event.cost_micros,
            )
            .await?;
            billed.push(event);
        }
        if !billed.is_empty() {
            usage::insert(&mut *tx, &billed).await?;
        }
        tx.commit().await?;
        for event in &billed {
            self.count_spend(db, event).await;
        }
        Ok(rows.into_iter().map(|r| r.message).collect())
    }

    /// What an interrupted answer costs; nothing when it had produced nothing.
    fn usage_of(&self, r: &Interrupted) -> Option<UsageEvent> {
        let m = &r.message;
        let output = tokenizer::count_tokens(&m.content);
        if output == 0 {
            return None;
        }
        let usage = Usage {
            input_tokens: m
                .input_tokens
                .and_then(|t| u32::try_from(t).ok())
                .unwrap_or(0),
            output_tokens: output,
        };
        let model = m.model.clone().unwrap_or_default();
        let cost = self.pricing.cost_micros(&model, usage).unwrap_or(0);
        Some(UsageEvent {
            workspace_id: r.workspace_id,
            user_id: r.user_id,
            api_key_id: None,
            chat_id: Some(m.chat_id),
            message_id: Some(m.id),
            provider: m.provider.clone().unwrap_or_default(),
            model,
            input_tokens: i32::try_from(usage.input_tokens).unwrap_or(i32::MAX),
            output_tokens: i32::try_from(usage.output_tokens).unwrap_or(i32::MAX),
            cost_micros: cost,
        })
    }

    /// Adds recovered spend to the shared counters, as a settled reservation of nothing.
    async fn count_spend(&self, db: &PgPool, e: &UsageEvent) {
        let plan = workspaces::plan(db, e.workspace_id)
            .await
            .unwrap_or_else(|_| "free".to_owned());
        let payer = Payer {
            workspace_id: e.workspace_id,
            user_id: e.user_id,
            api_key: None,
            plan,
        };
        let budgets = self.admission.budgets(&payer);
        match self.admission.ledger().reserve(&budgets, 0).await {
            Ok(res) => {
                let tokens = u32::try_from(e.input_tokens + e.output_tokens).unwrap_or(0);
                self.admission
                    .settle(&payer, res, e.cost_micros, tokens)
                    .await;
            }
            // Over budget already: usage_events has it, and a rebuilt counter will.
            Err(err) => {
                tracing::warn!(workspace_id = %e.workspace_id, error = %err, "recovered spend not added to the counters");
            }
        }
    }
}
