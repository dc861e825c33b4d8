//! Settings of the language-model providers (`[providers]`, their limits),
//! of routing between them (`[routing]`), and of the built-in simulated
//! provider (`[simulated]`) (docs/CONFIGURATION.md, docs/PROVIDERS.md).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{Secret, csv};

#[derive(Debug, Clone, Deserialize)]
pub struct ProvidersConfig {
    pub free_tier: String,
    pub paid_tier: String,
    pub embedding: String,
    pub openai_api_key: Option<Secret>,
    pub openai_base_url: Option<String>,
    pub anthropic_api_key: Option<Secret>,
    pub anthropic_base_url: Option<String>,
    pub cloudflare_api_token: Option<Secret>,
    pub cloudflare_account_id: Option<String>,
    /// Base URL of the Cloudflare API (tests point it at a mock).
    pub cloudflare_base_url: Option<String>,
    /// Model of the OpenAI or Cloudflare embedder (each has a default).
    pub embedding_model: Option<String>,
    /// Default model per provider, used when a request names none.
    pub models: BTreeMap<String, String>,
    /// Per-provider limits; `default` applies to providers without their own.
    pub limits: BTreeMap<String, ProviderLimitsConfig>,
}

impl ProvidersConfig {
    pub fn limits_for(&self, name: &str) -> ProviderLimitsConfig {
        self.limits
            .get(name)
            .or_else(|| self.limits.get("default"))
            .copied()
            .unwrap_or(ProviderLimitsConfig {
                concurrency: 64,
                rpm: 0,
                tpm: 0,
                breaker_failures: 5,
                breaker_cooldown_secs: 30,
            })
    }

    pub fn free_tier_list(&self) -> Vec<String> {
        csv(&self.free_tier)
    }
    pub fn paid_tier_list(&self) -> Vec<String> {
        csv(&self.paid_tier)
    }
}

/// How requests are routed and how providers are protected.
#[derive(Debug, Clone, Deserialize)]
pub struct RoutingConfig {
    /// Order a tier's providers by price (cheapest first) instead of as listed.
    pub prefer_cheapest: bool,
    /// Paid prompts above this many tokens use the `complex` route, when one is defined.
    pub complex_prompt_tokens: u32,
    /// Time allowed for a provider's first token before retrying or falling back.
    pub ttft_timeout_ms: u64,
    /// Retries on one provider before its first token (connect errors, timeouts, 5xx).
    pub max_retries: u32,
    /// Silence allowed between two tokens once an answer has started; past
    /// it the answer fails with the mid-stream error (`stalled`).
    #[serde(default = "inter_token_timeout_default")]
    pub inter_token_timeout_ms: u64,
    /// Base of the jittered exponential backoff between those retries.
    pub retry_base_ms: u64,
    /// Held reservations expire after this, so a crash never holds budget forever.
    pub reservation_ttl_secs: u64,
    /// Identifies this node's reservations, to release them when it restarts.
    pub node_id: Option<String>,
}

fn inter_token_timeout_default() -> u64 {
    30_000
}

/// Limits of one provider (`[providers.limits.<name>]`).
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct ProviderLimitsConfig {
    pub concurrency: usize,
    /// Requests per minute, 0 for no limit.
    #[serde(default)]
    pub rpm: u32,
    /// Tokens per minute, 0 for no limit.
    #[serde(default)]
    pub tpm: u32,
    /// Consecutive failures that open the circuit.
    pub breaker_failures: u32,
    /// How long it stays open before one probe is let through.
    pub breaker_cooldown_secs: u64,
}

/// `[simulated]`: the built-in provider's timing and failure rate.
#[derive(Debug, Clone, Deserialize)]
pub struct SimulatedConfig {
    /// Delay before the first token.
    pub ttft_ms: u64,
    /// Delay between tokens.
    pub token_delay_ms: u64,
    /// Tokens in an answer (capped by the request's `max_tokens`).
    pub reply_tokens: u32,
    /// Share of generations that fail, 0.0 to 1.0: half before the first token, half midway.
    pub failure_rate: f64,
}

impl Default for SimulatedConfig {
    fn default() -> Self {
        Self {
            ttft_ms: 150,
            token_delay_ms: 20,
            reply_tokens: 60,
            failure_rate: 0.0,
        }
    }
}
