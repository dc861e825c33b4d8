//! What can go wrong talking to a chat, and the one way it reaches clients:
//! through [`ApiError`] (REST body, WebSocket and SSE error frames).

use std::time::Duration;

use crate::{
    actors::registry::RegistryError,
    admission::AdmitError,
    error::{ApiError, ErrorCode},
    generation::PlanError,
    providers::router::RouteError,
};

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ChatError {
    #[error("chat not found")]
    NotFound,
    #[error("{0}")]
    Invalid(String),
    #[error("chat is busy, try again shortly")]
    Busy,
    #[error("no answer in progress with that id")]
    NoSuchGeneration,
    #[error("storage unavailable: the message was not saved, retry")]
    Unavailable,
    #[error("subscriber too slow for the replay")]
    SlowConsumer,
    #[error("rate limit reached, retry later")]
    RateLimited(Duration),
    #[error("{0}")]
    BudgetExceeded(String, Duration),
    #[error("no provider is available for this request")]
    NoProvider,
    #[error("{0}")]
    NotInPlan(String),
    #[error("the server is shutting down: not saved; reconnect and send again")]
    ShuttingDown,
    #[error(
        "no answer in time: the message may have been saved; send it again with the same client_msg_id (it is never stored twice)"
    )]
    TimedOut,
    #[error("client_msg_id already used for a different message in this chat")]
    IdReused,
    #[error(
        "verify your email address first: follow the link we sent you (POST /api/auth/verify-email/resend sends another)"
    )]
    Unverified,
}

impl ChatError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::NotFound | Self::NoSuchGeneration => ErrorCode::NotFound,
            Self::Invalid(_) => ErrorCode::InvalidRequest,
            Self::Busy | Self::RateLimited(_) => ErrorCode::RateLimited,
            Self::Unavailable | Self::ShuttingDown | Self::TimedOut => ErrorCode::Unavailable,
            Self::SlowConsumer => ErrorCode::SlowConsumer,
            Self::BudgetExceeded(..) => ErrorCode::BudgetExceeded,
            Self::NoProvider => ErrorCode::ProviderUnavailable,
            Self::NotInPlan(_) | Self::Unverified => ErrorCode::Forbidden,
            Self::IdReused => ErrorCode::Conflict,
        }
    }

    /// When a retry can succeed, for `Retry-After` and `retry_after`.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Busy | Self::ShuttingDown | Self::TimedOut => Some(Duration::from_secs(1)),
            Self::RateLimited(d) | Self::BudgetExceeded(_, d) => Some(*d),
            _ => None,
        }
    }
}

impl RegistryError for ChatError {
    fn busy() -> Self {
        Self::Busy
    }
    fn unavailable() -> Self {
        Self::Unavailable
    }
    fn timed_out() -> Self {
        Self::TimedOut
    }
}

impl From<AdmitError> for ChatError {
    fn from(e: AdmitError) -> Self {
        match e {
            AdmitError::RateLimited { retry_after } => Self::RateLimited(retry_after),
            AdmitError::BudgetExceeded(why, after) => Self::BudgetExceeded(why, after),
            AdmitError::Unavailable => Self::Unavailable,
        }
    }
}

impl From<PlanError> for ChatError {
    fn from(e: PlanError) -> Self {
        match e {
            PlanError::Route(e @ RouteError::UnknownModel(_)) => Self::Invalid(e.to_string()),
            PlanError::Route(RouteError::NoProvider) => Self::NoProvider,
            PlanError::Route(e @ RouteError::NotInPlan(_)) => Self::NotInPlan(e.to_string()),
            PlanError::Route(e @ RouteError::NotRunning(_)) => Self::Invalid(e.to_string()),
            e @ PlanError::Unsupported { .. } => Self::Invalid(e.to_string()),
            PlanError::Admit(e) => e.into(),
            PlanError::ShuttingDown => Self::ShuttingDown,
        }
    }
}

impl From<ChatError> for ApiError {
    fn from(e: ChatError) -> Self {
        let mut err = Self::new(e.code(), e.to_string());
        err.retry_after = e.retry_after();
        err
    }
}
