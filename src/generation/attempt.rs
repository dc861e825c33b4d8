//! Trying a request's candidates: each provider in the router's order, with
//! jittered-backoff retries on the same provider and fallback to the next, but
//! only until a first event arrives. The one place retries live.

use std::time::Duration;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::{
    actors::provider::{Lease, Outcome, ProviderRegistry},
    providers::{ChatRequest, EventStream, ProviderError, StreamEvent, router::Candidate},
};

/// How to try the candidates of one request.
#[derive(Debug, Clone)]
pub struct Attempts {
    pub candidates: Vec<Candidate>,
    /// Deadline for the first event of each attempt.
    pub ttft: Duration,
    pub retries: u32,
    pub retry_base: Duration,
    /// Tokens the request may use, for the providers' tokens-per-minute windows.
    pub est_tokens: u32,
}

/// A provider that answered: the rest of its stream and the first event.
pub struct Opened {
    pub candidate: Candidate,
    pub lease: Lease,
    pub stream: EventStream,
    pub first: StreamEvent,
    /// Candidates that failed before this one, and why.
    pub fell_back_from: Vec<(String, ProviderError)>,
}

pub enum OpenError {
    Cancelled,
    /// Every candidate failed; the last error first, then all of them.
    Failed(ProviderError, Vec<(String, ProviderError)>),
}

/// Opens the first candidate that produces an event before its deadline.
pub async fn open_first(
    providers: &ProviderRegistry,
    plan: &Attempts,
    request: &ChatRequest,
    cancel: &CancellationToken,
) -> Result<Opened, OpenError> {
    let mut failures: Vec<(String, ProviderError)> = Vec::new();
    for cand in &plan.candidates {
        for attempt in 0..=plan.retries {
            if attempt > 0 {
                // Exponential with jitter: base * 2^(n-1) * [0.5, 1.5).
                let jitter = 0.5 + rand::random::<f64>();
                let wait = plan
                    .retry_base
                    .mul_f64(f64::from(1u32 << (attempt - 1).min(10)) * jitter);
                tokio::select! {
                    () = cancel.cancelled() => return Err(OpenError::Cancelled),
                    () = tokio::time::sleep(wait) => {}
                }
            }
            let lease = tokio::select! {
                () = cancel.cancelled() => return Err(OpenError::Cancelled),
                l = providers.lease(&cand.provider, plan.est_tokens) => l,
            };
            let lease = match lease {
                Ok(l) => l,
                Err(e) => {
                    failures.push((cand.provider.clone(), e));
                    break;
                }
            };
            let mut stream = lease.provider.stream(ChatRequest {
                model: cand.model.clone(),
                ..request.clone()
            });
            let first = tokio::select! {
                () = cancel.cancelled() => {
                    lease.report(Outcome::Neutral { tokens: 0 });
                    return Err(OpenError::Cancelled);
                }
                r = tokio::time::timeout(plan.ttft, stream.next()) => r,
            };
            let err = match first {
                Ok(Some(Ok(first))) => {
                    for (from, why) in &failures {
                        metrics::counter!("switchboard_provider_fallbacks_total", "from" => from.clone(), "reason" => why.reason())
                            .increment(1);
                    }
                    return Ok(Opened {
                        candidate: cand.clone(),
                        lease,
                        stream,
                        first,
                        fell_back_from: failures,
                    });
                }
                Ok(Some(Err(e))) => e,
                Ok(None) => ProviderError::Disconnected,
                Err(_) => ProviderError::Timeout,
            };
            lease.report(if matches!(err, ProviderError::RateLimited { .. }) {
                Outcome::Neutral { tokens: 0 }
            } else {
                Outcome::Failure
            });
            tracing::warn!(provider = %cand.provider, model = %cand.model, attempt, error = %err, "provider failed before the first token");
            let retry = err.is_retryable() && attempt < plan.retries;
            failures.push((cand.provider.clone(), err));
            if !retry {
                break;
            }
        }
    }
    let last = failures
        .last()
        .map_or(ProviderError::CircuitOpen, |(_, e)| e.clone());
    Err(OpenError::Failed(last, failures))
}

/// A log line naming who served a request, and why earlier candidates did not.
pub fn log_served(opened: &Opened) {
    let (provider, model) = (&opened.candidate.provider, &opened.candidate.model);
    if opened.fell_back_from.is_empty() {
        tracing::info!("Using provider: {provider} (model {model})");
    } else {
        let why: Vec<String> = opened
            .fell_back_from
            .iter()
            .map(|(p, e)| format!("{p}: {e}"))
            .collect();
        tracing::warn!(fell_back_from = ?why, "Using provider: {provider} (model {model}) after fallback");
    }
}
