//! One generation's life, written once for every door:
//!
//! ```text
//! plan      route → count the prompt → worst case → admit (limits + reservation)   plan.rs
//! open      each candidate in order, retries and fallback before the first token  attempt.rs
//! stream    tokens (coalesced) to a Sink; stop at max_tokens, on cancel, on error   run.rs
//! bill      usage (the provider's or counted) → price → usage event → settle        billing.rs
//!           the reservation → the provider lease's outcome, exactly once
//! ```
//!
//! The chat actor and the OpenAI-compatible API both call [`Generations::plan`]
//! and [`Generations::spawn`]; they differ only in their [`Sink`]: the chat's
//! forwards to its actor (and the hub), `/v1`'s to an HTTP response. Billing
//! lives in the generation's own task, so it happens whether or not anybody
//! is still listening (a deleted chat, a client that left, a shutdown).
//!
//! This module sits above the provider clients, the provider actors and the
//! usage writer, and below the chat actor and the transports.

mod attempt;
mod billing;
mod embedding;
mod plan;
mod recover;
mod run;

use std::{future::Future, sync::Arc, time::Duration};

use ractor::ActorRef;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use self::{
    attempt::{Attempts, OpenError, Opened, open_first},
    billing::BillTo,
    embedding::{EmbedError, Embedded},
    plan::{Offer, PlanError, Planned},
};
use crate::{
    actors::{persistence::UsageMsg, provider::ProviderRegistry},
    admission::Admission,
    config::{RoutingConfig, pricing::PriceTable},
    providers::{ChatRequest, ProviderError, ToolCallDelta, Usage, router::Router},
};

/// What a generation tells whoever started it.
#[derive(Debug)]
pub enum GenEvent {
    /// A provider produced its first event; `fell_back` when earlier candidates failed.
    Started {
        provider: String,
        model: String,
        fell_back: bool,
    },
    /// Pieces of the answer, in order; tokens that were already waiting come together.
    Tokens(Vec<String>),
    /// Pieces of tool calls, in order (only when the request offered tools).
    ToolCalls(Vec<ToolCallDelta>),
    /// The end, after billing: always the last event.
    Ended(Ending),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Complete,
    Cancelled,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Complete => "complete",
            Self::Cancelled => "cancelled",
            Self::Failed => "failed",
        }
    }
}

/// How a generation ended and what it was billed.
#[derive(Debug, Clone)]
pub struct Ending {
    pub status: Status,
    /// The provider's reason (`stop`, `length`, ...), `cancelled` or `error`.
    pub finish_reason: String,
    pub error: Option<ProviderError>,
    /// Who served it (after any fallback); the first candidate if none answered.
    pub provider: String,
    pub model: String,
    pub usage: Usage,
    pub cost_micros: i64,
    pub fell_back: bool,
}

/// Where a generation's events go. `deliver` answers false when nobody is
/// listening any more: the generation is then cancelled (and still billed).
pub trait Sink: Send + 'static {
    fn deliver(&mut self, event: GenEvent) -> impl Future<Output = bool> + Send;
}

/// A channel is a sink: `/v1` reads its events from the receiving end.
impl Sink for tokio::sync::mpsc::Sender<GenEvent> {
    async fn deliver(&mut self, event: GenEvent) -> bool {
        self.send(event).await.is_ok()
    }
}

/// The lifecycle's dependencies, shared by every door. Cheap to clone.
#[derive(Clone)]
pub struct Generations(Arc<Inner>);

pub struct Inner {
    pub providers: ProviderRegistry,
    pub admission: Admission,
    pub pricing: Arc<PriceTable>,
    pub router: Router,
    pub usage: ActorRef<UsageMsg>,
    pub routing: RoutingConfig,
    /// Vectors already computed, shared by every caller of `embed`.
    pub embed_cache: crate::embedding_cache::EmbeddingCache,
    /// Every generation and settle task, so shutdown can wait for them.
    pub tasks: TaskTracker,
    /// Parent of every generation's cancel token: cancelled at shutdown.
    pub shutdown: CancellationToken,
    /// Fired when shutdown begins: no new generation is planned from then on,
    /// so clients retry on another node instead of being cut off here.
    pub draining: CancellationToken,
}

impl std::ops::Deref for Generations {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl Generations {
    pub fn new(inner: Inner) -> Self {
        Self(Arc::new(inner))
    }

    /// Starts a planned generation in a tracked task of its own.
    pub fn spawn(
        &self,
        planned: Planned,
        request: ChatRequest,
        bill_to: BillTo,
        cancel: CancellationToken,
        sink: impl Sink,
    ) {
        let gens = self.clone();
        // A child of the caller's span (the chat actor's, or the `/v1` request's).
        let span = crate::trace_span!(
            "generation",
            provider = %planned.first().provider,
            model = %planned.first().model,
            max_tokens = planned.max_tokens
        );
        self.tasks.spawn(tracing::Instrument::instrument(
            run::run(gens, planned, request, bill_to, cancel, sink),
            span,
        ));
    }

    /// A cancel token for one generation: cancelled by its owner or at shutdown.
    pub fn cancel_token(&self) -> CancellationToken {
        self.shutdown.child_token()
    }

    fn attempts(&self, planned: &Planned) -> Attempts {
        Attempts {
            candidates: planned.candidates.clone(),
            ttft: Duration::from_millis(self.routing.ttft_timeout_ms),
            retries: self.routing.max_retries,
            retry_base: Duration::from_millis(self.routing.retry_base_ms),
            est_tokens: planned.prompt_tokens + planned.max_tokens,
        }
    }

    /// Shutdown: lets generations finish for up to `finish`, then cancels the
    /// rest and waits up to `bill` for them to bill and settle. Answers
    /// whether every task ended.
    pub async fn drain(&self, finish: Duration, bill: Duration) -> bool {
        self.draining.cancel();
        self.tasks.close();
        if tokio::time::timeout(finish, self.tasks.wait())
            .await
            .is_ok()
        {
            return true;
        }
        self.shutdown.cancel();
        tokio::time::timeout(bill, self.tasks.wait()).await.is_ok()
    }
}
