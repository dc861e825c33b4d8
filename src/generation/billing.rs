//! Billing one generation, exactly once: the usage (the provider's count, or
//! the prompt as counted plus the tokens produced when it gave none), its price,
//! the usage event, the settled reservation and the provider lease's outcome.
//!
//! A [`Bill`] is closed by the generation at its end; if the task dies first
//! (a panic, an abort), dropping the bill still bills what was produced.
//!
//! What one generation is charged is capped at what it reserved, so the books
//! never run past a budget because a provider reported more than its request
//! could cost (more prompt tokens than counted, or output past `max_tokens`).
//! The excess is the operator's: logged, and counted in
//! `switchboard_cost_over_reservation_micros_total`.

use uuid::Uuid;

use super::{Ending, Generations, Planned, Status};
use crate::{
    actors::{
        persistence::{UsageEvent, UsageMsg},
        provider::{Lease, Outcome},
    },
    admission::Payer,
    budget::Reservation,
    providers::{ProviderError, Usage},
};

/// Ids a usage event carries besides the payer's workspace and key.
#[derive(Debug, Clone, Copy, Default)]
pub struct BillTo {
    pub user_id: Option<Uuid>,
    pub chat_id: Option<Uuid>,
    pub message_id: Option<Uuid>,
}

pub(super) struct Bill {
    gens: Generations,
    payer: Payer,
    to: BillTo,
    reservation: Option<Reservation>,
    /// The most this generation may be charged: what it reserved.
    cap_micros: i64,
    pub provider: String,
    pub model: String,
    pub fell_back: bool,
    prompt_tokens: u32,
    /// Tokens delivered so far.
    pub produced: u32,
    /// The provider's own count, when it sent one.
    pub reported: Option<Usage>,
}

impl Bill {
    pub fn open(gens: Generations, planned: &mut Planned, to: BillTo) -> Self {
        let first = planned.first().clone();
        Self {
            gens,
            payer: planned.payer.clone(),
            to,
            reservation: planned.take_reservation(),
            cap_micros: planned.worst_micros,
            provider: first.provider,
            model: first.model,
            fell_back: false,
            prompt_tokens: planned.prompt_tokens,
            produced: 0,
            reported: None,
        }
    }

    /// What is billed: the provider's count, else what we counted; nothing
    /// when no token was produced and the provider reported nothing.
    fn usage(&self) -> Usage {
        match self.reported {
            Some(u) => u,
            None if self.produced == 0 => Usage::default(),
            None => Usage {
                input_tokens: self.prompt_tokens,
                output_tokens: self.produced,
            },
        }
    }

    /// Prices the usage and records the usage event; hands back the
    /// reservation to settle. Does nothing the second time.
    fn charge(&mut self) -> (Usage, i64, Option<Reservation>) {
        let usage = self.usage();
        let cost = self
            .gens
            .pricing
            .cost_micros(&self.model, usage)
            .unwrap_or_else(|| {
                tracing::warn!(model = %self.model, "no price for model: billed at 0");
                0
            });
        if cost > self.cap_micros {
            tracing::warn!(provider = %self.provider, model = %self.model, cost_micros = cost, cap_micros = self.cap_micros,
                input_tokens = usage.input_tokens, output_tokens = usage.output_tokens,
                "usage past the reservation: charged the reservation");
            metrics::counter!("switchboard_cost_over_reservation_micros_total", "provider" => self.provider.clone())
                .increment(u64::try_from(cost - self.cap_micros).unwrap_or(0));
        }
        let cost = cost.min(self.cap_micros);
        let Some(res) = self.reservation.take() else {
            return (usage, cost, None);
        };
        if usage.input_tokens > 0 || usage.output_tokens > 0 {
            let _ = self.gens.usage.cast(UsageMsg::Record(UsageEvent {
                workspace_id: self.payer.workspace_id,
                user_id: self.to.user_id,
                api_key_id: self.payer.api_key.map(|k| k.id),
                chat_id: self.to.chat_id,
                message_id: self.to.message_id,
                provider: self.provider.clone(),
                model: self.model.clone(),
                input_tokens: i32::try_from(usage.input_tokens).unwrap_or(i32::MAX),
                output_tokens: i32::try_from(usage.output_tokens).unwrap_or(i32::MAX),
                cost_micros: cost,
            }));
        }
        // The cost dashboards and the daily/monthly cost alerts (docs/OPERATIONS.md).
        metrics::counter!("switchboard_cost_micros_total", "provider" => self.provider.clone())
            .increment(cost.max(0) as u64);
        if self.fell_back {
            metrics::counter!("switchboard_fallback_cost_micros_total", "provider" => self.provider.clone())
                .increment(cost.max(0) as u64);
        }
        (usage, cost, Some(res))
    }

    /// Bills the generation and reports the lease; the one normal way out.
    pub async fn close(
        mut self,
        lease: Option<&Lease>,
        status: Status,
        finish_reason: &str,
        error: Option<ProviderError>,
    ) -> Ending {
        let (usage, cost, res) = self.charge();
        let tokens = usage.input_tokens + usage.output_tokens;
        if let Some(lease) = lease {
            lease.report(match status {
                Status::Complete => Outcome::Success { tokens },
                Status::Failed => Outcome::Failure,
                Status::Cancelled => Outcome::Neutral { tokens },
            });
        }
        if let Some(res) = res {
            self.gens
                .admission
                .settle(&self.payer, res, cost, tokens)
                .await;
        }
        metrics::counter!("switchboard_answers_total", "status" => status.as_str(), "provider" => self.provider.clone())
            .increment(1);
        Ending {
            status,
            finish_reason: finish_reason.to_owned(),
            error,
            provider: std::mem::take(&mut self.provider),
            model: std::mem::take(&mut self.model),
            usage,
            cost_micros: cost,
            fell_back: self.fell_back,
        }
    }
}

impl Drop for Bill {
    fn drop(&mut self) {
        if self.reservation.is_none() {
            return;
        }
        tracing::warn!(
            produced = self.produced,
            "generation ended without closing its bill: billed what was produced"
        );
        let (usage, cost, res) = self.charge();
        if let Some(res) = res
            && tokio::runtime::Handle::try_current().is_ok()
        {
            let (admission, payer) = (self.gens.admission.clone(), self.payer.clone());
            let tokens = usage.input_tokens + usage.output_tokens;
            self.gens
                .tasks
                .spawn(async move { admission.settle(&payer, res, cost, tokens).await });
        }
    }
}
