//! Language-model providers behind one trait, and their prices.
//!
//! A provider turns a [`ChatRequest`] into a stream of [`StreamEvent`]s. It does
//! no retries, limits or routing: those belong to the provider actor and router.

pub mod pricing;
pub mod simulated;

use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

/// One turn of the conversation sent to a model.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PromptMessage {
    pub role: String,
    pub content: String,
}

#[derive(Debug, Clone)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<PromptMessage>,
    pub max_tokens: u32,
}

/// Tokens in and out of one generation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Usage {
    pub input_tokens: u32,
    pub output_tokens: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// A piece of the answer, in order.
    Token(String),
    /// The provider's own count, usually last.
    Usage(Usage),
    /// The answer ended; the reason is the provider's (`stop`, `length`, ...).
    Finish(String),
}

/// Everything that can go wrong with a provider, in one shape, so routing can
/// decide what is worth a fallback.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ProviderError {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("timed out")]
    Timeout,
    #[error("rejected credentials")]
    Unauthorized,
    #[error("rate limited by the provider")]
    RateLimited { retry_after_secs: Option<u64> },
    #[error("provider error (status {status})")]
    Upstream { status: u16 },
    #[error("malformed stream data: {0}")]
    Malformed(String),
    #[error("stream ended before the answer was complete")]
    Disconnected,
}

pub type EventStream = BoxStream<'static, Result<StreamEvent, ProviderError>>;

/// A chat-completion backend.
pub trait ChatProvider: Send + Sync + 'static {
    /// The configured name (`simulated`, `openai`, ...).
    fn name(&self) -> &str;
    /// The model used when a request names none.
    fn default_model(&self) -> &str;
    /// Starts a streamed generation. Dropping the stream cancels it upstream.
    fn stream(&self, request: ChatRequest) -> EventStream;
}

/// A rough token count (about four characters a token), for prompts whose
/// provider reports no usage.
pub fn estimate_tokens(text: &str) -> u32 {
    let chars = text.chars().count() as u32;
    chars.div_ceil(4).max(u32::from(!text.is_empty()))
}
