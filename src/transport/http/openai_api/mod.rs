//! `/v1`: the OpenAI-compatible API for third-party apps, authenticated by API
//! keys, with Switchboard's routing, fallback, limits and budgets applied.
//!
//! Errors use OpenAI's shape (`{"error":{"message","type","param","code"}}`)
//! so the official SDKs raise their usual exceptions. A stream that fails after
//! its first token ends with an `error` data line and no `[DONE]`, never a
//! clean end on a truncated answer. A client that goes away cancels the
//! upstream request and pays for the tokens produced.

use std::time::Duration;

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde_json::{Value, json};

use super::{extract::bearer_from_headers, keys::hash_key};
use crate::{
    admission::{AdmitError, KeyLimits, Payer},
    generation::PlanError,
    providers::{ProviderError, Usage, router::RouteError},
    state::AppState,
    store::api_keys::{self, KeyAuth},
};

mod chunks;
mod completions;
mod embeddings;
mod request;
mod responses;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/chat/completions", post(completions::chat_completions))
        .route("/responses", post(responses::responses))
        .route("/models", get(models))
        .route("/models/{*id}", get(model))
        .route("/embeddings", post(embeddings::embeddings))
        .fallback(unknown_route)
        .method_not_allowed_fallback(unknown_route)
}

/// Any other `/v1` path, in OpenAI's shape (the SDKs read `error.message`).
async fn unknown_route(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    OaiError {
        status: StatusCode::NOT_FOUND,
        code: Some("unknown_url"),
        ..OaiError::invalid(
            format!(
                "Unrecognized request URL ({method}: {}). Switchboard serves /v1/chat/completions, \
                 /v1/responses, /v1/embeddings and /v1/models.",
                uri.path()
            ),
            None,
        )
    }
    .into_response()
}

/// An error in OpenAI's shape.
#[derive(Debug)]
pub struct OaiError {
    status: StatusCode,
    message: String,
    kind: &'static str,
    param: Option<&'static str>,
    /// A parameter named by the client (an unknown field), when not one of ours.
    param_name: Option<String>,
    code: Option<&'static str>,
    retry_after: Option<Duration>,
}

impl OaiError {
    fn invalid(message: impl Into<String>, param: Option<&'static str>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param,
            param_name: None,
            code: None,
            retry_after: None,
        }
    }

    /// A field of the request this server does not act on: refused, named,
    /// rather than silently dropped.
    fn unsupported(name: &str) -> Self {
        Self {
            code: Some("unsupported_parameter"),
            param_name: Some(name.to_owned()),
            ..Self::invalid(
                format!("{name}: this parameter is not supported by Switchboard (see docs/API.md)"),
                None,
            )
        }
    }

    fn server(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            kind: "server_error",
            param: None,
            param_name: None,
            code: None,
            retry_after: None,
        }
    }

    fn body(&self) -> Value {
        let param = self.param_name.as_deref().or(self.param);
        json!({"error": {"message": self.message, "type": self.kind, "param": param, "code": self.code}})
    }
}

impl IntoResponse for OaiError {
    fn into_response(self) -> Response {
        let mut res = (self.status, Json(self.body())).into_response();
        if let Some(after) = self.retry_after {
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        res
    }
}

impl From<sqlx::Error> for OaiError {
    fn from(e: sqlx::Error) -> Self {
        tracing::error!(error = %e, "database error on /v1");
        Self::server(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage unavailable, retry",
        )
    }
}

impl From<AdmitError> for OaiError {
    fn from(e: AdmitError) -> Self {
        match e {
            AdmitError::RateLimited { retry_after } => Self {
                status: StatusCode::TOO_MANY_REQUESTS,
                message: "Rate limit reached; retry after the Retry-After interval.".into(),
                kind: "rate_limit_exceeded",
                param: None,
                param_name: None,
                code: Some("rate_limit_exceeded"),
                retry_after: Some(retry_after),
            },
            // OpenAI's own convention for an exhausted quota: 429 insufficient_quota.
            AdmitError::BudgetExceeded(why, retry_after) => Self {
                status: StatusCode::TOO_MANY_REQUESTS,
                message: format!("You exceeded your budget: {why}."),
                kind: "insufficient_quota",
                param: None,
                param_name: None,
                code: Some("insufficient_quota"),
                retry_after: Some(retry_after),
            },
            AdmitError::Unavailable => Self::server(
                StatusCode::SERVICE_UNAVAILABLE,
                "budget store unavailable, retry",
            ),
        }
    }
}

fn provider_error(e: &ProviderError) -> OaiError {
    match e {
        ProviderError::RateLimited { retry_after_secs } => OaiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            message: "Every provider for this model is rate limited; retry later.".into(),
            kind: "rate_limit_exceeded",
            param: None,
            param_name: None,
            code: Some("rate_limit_exceeded"),
            retry_after: Some(Duration::from_secs(retry_after_secs.unwrap_or(1))),
        },
        other => OaiError::server(
            StatusCode::BAD_GATEWAY,
            format!("No provider could answer: {}", other.public()),
        ),
    }
}

/// The key in `Authorization: Bearer`: from this node's key cache when it was
/// read less than `auth.key_cache_ms` ago, else from Postgres.
async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<KeyAuth, OaiError> {
    let unauthorized = |message: &str| OaiError {
        status: StatusCode::UNAUTHORIZED,
        message: message.into(),
        kind: "invalid_request_error",
        param: None,
        param_name: None,
        code: Some("invalid_api_key"),
        retry_after: None,
    };
    let key = bearer_from_headers(headers)
        .ok_or_else(|| unauthorized("Missing API key: send Authorization: Bearer <key>."))?;
    if key.len() > 200 {
        return Err(unauthorized("Incorrect API key provided."));
    }
    let hash = hash_key(key);
    let auth = match state.key_cache.get(&hash) {
        Some(auth) => auth,
        None => {
            let read_at = std::time::Instant::now();
            let auth = api_keys::authenticate(&state.db, &hash)
                .await?
                .ok_or_else(|| unauthorized("Incorrect API key provided."))?;
            state.key_cache.put(hash, auth.clone(), read_at);
            auth
        }
    };
    // last_used_at is coarse on purpose: one write per key per minute per node,
    // not one per request.
    let now = std::time::Instant::now();
    let due = match state.key_touches.get(&auth.id) {
        Some(t) => now.duration_since(*t) >= Duration::from_secs(60),
        None => true,
    };
    if due {
        state.key_touches.insert(auth.id, now);
        let (db, id) = (state.db.clone(), auth.id);
        state.actors.gens.tasks.spawn(async move {
            let _ = api_keys::touch(&db, id).await;
        });
    }
    Ok(auth)
}

/// How a started generation turned out before its first token.
enum Opening {
    /// The first provider answered: its model, the events, and the guard whose
    /// drop (the client left) cancels the generation, which then bills what it produced.
    Started(
        String,
        tokio::sync::mpsc::Receiver<crate::generation::GenEvent>,
        tokio_util::sync::DropGuard,
    ),
    /// It ended before any token.
    Ended(crate::generation::Ending),
    Unexpected,
}

/// Starts a planned generation for an API key and waits for its first event;
/// one place for both `/v1/chat/completions` and `/v1/responses`.
async fn open(
    gens: &crate::generation::Generations,
    planned: crate::generation::Planned,
    request: crate::providers::ChatRequest,
    auth: &KeyAuth,
) -> Opening {
    use crate::generation::GenEvent;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<GenEvent>(64);
    let cancel = gens.cancel_token();
    let cancel_on_drop = cancel.clone().drop_guard();
    let bill_to = crate::generation::BillTo {
        user_id: auth.created_by,
        ..crate::generation::BillTo::default()
    };
    gens.spawn(planned, request, bill_to, cancel, tx);
    match rx.recv().await {
        Some(GenEvent::Started { model, .. }) => Opening::Started(model, rx, cancel_on_drop),
        Some(GenEvent::Ended(e)) => Opening::Ended(e),
        _ => Opening::Unexpected,
    }
}

/// A generation that stopped talking before it said how it ended.
fn unexpected_end() -> OaiError {
    OaiError::server(
        StatusCode::BAD_GATEWAY,
        "The generation ended unexpectedly.",
    )
}

fn payer(auth: &KeyAuth) -> Payer {
    Payer {
        workspace_id: auth.workspace_id,
        user_id: None,
        api_key: Some(KeyLimits {
            id: auth.id,
            monthly_budget_micros: auth.budget_micros,
            requests_per_minute: auth.rate_limit_rpm.and_then(|r| u32::try_from(r).ok()),
        }),
        plan: auth.plan.clone(),
    }
}

fn plan_error(e: PlanError) -> OaiError {
    match e {
        PlanError::Route(
            RouteError::UnknownModel(m) | RouteError::NotInPlan(m) | RouteError::NotRunning(m),
        ) => OaiError {
            code: Some("model_not_found"),
            ..OaiError::invalid(
                format!("The model `{m}` does not exist or you do not have access to it."),
                Some("model"),
            )
        },
        PlanError::Route(RouteError::NoProvider) => {
            OaiError::server(StatusCode::SERVICE_UNAVAILABLE, "No provider is available.")
        }
        PlanError::Admit(e) => e.into(),
        PlanError::ShuttingDown => OaiError::server(
            StatusCode::SERVICE_UNAVAILABLE,
            "The server is shutting down: retry the request.",
        ),
        PlanError::Unsupported { param, provider } => OaiError {
            code: Some("unsupported_parameter"),
            ..OaiError::invalid(
                format!(
                    "{param}: not supported by the provider serving this model ({provider}); \
                     see docs/API.md for what each provider supports"
                ),
                Some(param),
            )
        },
    }
}

fn usage_json(u: Usage) -> Value {
    json!({"prompt_tokens": u.input_tokens, "completion_tokens": u.output_tokens,
           "total_tokens": u.input_tokens + u.output_tokens})
}

/// Every model id the key's plan may name: route aliases, priced models whose
/// provider is running, and the embedding model.
fn model_list(state: &AppState, plan: &str) -> Vec<Value> {
    let offer = state.actors.gens.offer(plan);
    let routes = offer.routes.iter().map(
        |alias| json!({"id": alias, "object": "model", "created": 0, "owned_by": "switchboard"}),
    );
    let priced = offer
        .models
        .iter()
        .map(|(id, p)| json!({"id": id, "object": "model", "created": 0, "owned_by": p.provider}));
    let embedder = &state.embedder;
    let embedding = (!offer.models.iter().any(|(id, _)| *id == embedder.model())).then(|| {
        json!({"id": embedder.model(), "object": "model", "created": 0, "owned_by": embedder.name()})
    });
    routes.chain(priced).chain(embedding).collect()
}

pub async fn models(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let auth = match authenticate(&state, &headers).await {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    let data = model_list(&state, &auth.plan);
    Json(json!({"object": "list", "data": data})).into_response()
}

/// `GET /v1/models/{id}`: one model of the list, or 404 `model_not_found`.
/// Ids may contain slashes (`@cf/meta/...`), hence the catch-all segment.
async fn model(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let auth = match authenticate(&state, &headers).await {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    match model_list(&state, &auth.plan)
        .into_iter()
        .find(|m| m["id"] == id.as_str())
    {
        Some(m) => Json(m).into_response(),
        None => OaiError {
            status: StatusCode::NOT_FOUND,
            code: Some("model_not_found"),
            ..OaiError::invalid(
                format!("The model `{id}` does not exist or you do not have access to it."),
                Some("model"),
            )
        }
        .into_response(),
    }
}
