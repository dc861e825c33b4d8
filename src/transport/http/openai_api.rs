//! `/v1`: the OpenAI-compatible API for third-party apps, authenticated by API
//! keys, with Switchboard's routing, fallback, limits and budgets applied.
//!
//! Errors use OpenAI's shape (`{"error":{"message","type","param","code"}}`)
//! so the official SDKs raise their usual exceptions. A stream that fails after
//! its first token ends with an `error` data line and no `[DONE]`, never a
//! clean end on a truncated answer. A client that goes away cancels the
//! upstream request and pays for the tokens produced.

use std::{convert::Infallible, sync::Arc, time::Duration};

use axum::{
    Json, Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{
        IntoResponse, Response,
        sse::{Event, Sse},
    },
    routing::{get, post},
};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::{extract::bearer_from_headers, keys::hash_key};
use crate::{
    admission::{AdmitError, KeyLimits, Payer},
    generation::{BillTo, EmbedError, Embedded, Ending, GenEvent, PlanError, Status},
    providers::{ChatRequest, PromptMessage, ProviderError, Usage, router::RouteError},
    state::AppState,
    store::api_keys::{self, KeyAuth},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/chat/completions", post(chat_completions))
        .route("/models", get(models))
        .route("/embeddings", post(embeddings))
}

/// An error in OpenAI's shape.
#[derive(Debug)]
pub struct OaiError {
    status: StatusCode,
    message: String,
    kind: &'static str,
    param: Option<&'static str>,
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
            code: None,
            retry_after: None,
        }
    }

    fn server(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            kind: "server_error",
            param: None,
            code: None,
            retry_after: None,
        }
    }

    fn body(&self) -> Value {
        json!({"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}})
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
                code: Some("rate_limit_exceeded"),
                retry_after: Some(retry_after),
            },
            // OpenAI's own convention for an exhausted quota: 429 insufficient_quota.
            AdmitError::BudgetExceeded(why, retry_after) => Self {
                status: StatusCode::TOO_MANY_REQUESTS,
                message: format!("You exceeded your budget: {why}."),
                kind: "insufficient_quota",
                param: None,
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
            code: Some("rate_limit_exceeded"),
            retry_after: Some(Duration::from_secs(retry_after_secs.unwrap_or(1))),
        },
        other => OaiError::server(
            StatusCode::BAD_GATEWAY,
            format!("No provider could answer: {}", other.public()),
        ),
    }
}

/// The key in `Authorization: Bearer`, looked up on every request so a revoked key stops at once.
async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<KeyAuth, OaiError> {
    let unauthorized = |message: &str| OaiError {
        status: StatusCode::UNAUTHORIZED,
        message: message.into(),
        kind: "invalid_request_error",
        param: None,
        code: Some("invalid_api_key"),
        retry_after: None,
    };
    let key = bearer_from_headers(headers)
        .ok_or_else(|| unauthorized("Missing API key: send Authorization: Bearer <key>."))?;
    if key.len() > 200 {
        return Err(unauthorized("Incorrect API key provided."));
    }
    let auth = api_keys::authenticate(&state.db, &hash_key(key))
        .await?
        .ok_or_else(|| unauthorized("Incorrect API key provided."))?;
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

#[derive(Deserialize)]
struct CompletionRequest {
    model: String,
    messages: Vec<InMessage>,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    stop: Option<Stop>,
    n: Option<u32>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct InMessage {
    role: String,
    #[serde(default)]
    content: Option<Content>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Deserialize)]
struct Part {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
}

/// Largest `max_tokens` accepted.
const MAX_TOKENS_LIMIT: u32 = 32_768;

fn parse_request(
    body: &[u8],
    default_max: u32,
) -> Result<(CompletionRequest, ChatRequest), OaiError> {
    let req: CompletionRequest = serde_json::from_slice(body).map_err(|e| {
        let param = [
            "model",
            "messages",
            "temperature",
            "max_tokens",
            "stream",
            "stop",
            "top_p",
            "n",
        ]
        .into_iter()
        .find(|p| e.to_string().contains(&format!("`{p}`")));
        OaiError::invalid(format!("Invalid request body: {e}"), param)
    })?;
    if req.model.trim().is_empty() {
        return Err(OaiError::invalid("model: must not be empty", Some("model")));
    }
    if req.messages.is_empty() {
        return Err(OaiError::invalid(
            "messages: must not be empty",
            Some("messages"),
        ));
    }
    let mut messages = Vec::with_capacity(req.messages.len());
    for m in &req.messages {
        if !["system", "developer", "user", "assistant", "tool"].contains(&m.role.as_str()) {
            return Err(OaiError::invalid(
                format!("messages: unknown role {:?}", m.role),
                Some("messages"),
            ));
        }
        let content = match &m.content {
            None => String::new(),
            Some(Content::Text(t)) => t.clone(),
            Some(Content::Parts(parts)) => {
                if let Some(p) = parts.iter().find(|p| p.kind != "text") {
                    return Err(OaiError::invalid(
                        format!("messages: content part type {:?} is not supported", p.kind),
                        Some("messages"),
                    ));
                }
                parts.iter().filter_map(|p| p.text.as_deref()).collect()
            }
        };
        let role = if m.role == "developer" {
            "system"
        } else {
            m.role.as_str()
        };
        messages.push(PromptMessage {
            role: role.to_owned(),
            content,
        });
    }
    if req.temperature.is_some_and(|t| !(0.0..=2.0).contains(&t)) {
        return Err(OaiError::invalid(
            "temperature: must be between 0 and 2",
            Some("temperature"),
        ));
    }
    if req.top_p.is_some_and(|t| !(0.0..=1.0).contains(&t)) {
        return Err(OaiError::invalid(
            "top_p: must be between 0 and 1",
            Some("top_p"),
        ));
    }
    if req.n.is_some_and(|n| n != 1) {
        return Err(OaiError::invalid("n: only 1 is supported", Some("n")));
    }
    let max_tokens = req
        .max_completion_tokens
        .or(req.max_tokens)
        .unwrap_or(default_max);
    if max_tokens == 0 || max_tokens > MAX_TOKENS_LIMIT {
        return Err(OaiError::invalid(
            format!("max_tokens: must be between 1 and {MAX_TOKENS_LIMIT}"),
            Some("max_tokens"),
        ));
    }
    let stop = match &req.stop {
        None => vec![],
        Some(Stop::One(s)) => vec![s.clone()],
        Some(Stop::Many(v)) if v.len() <= 4 => v.clone(),
        Some(Stop::Many(_)) => {
            return Err(OaiError::invalid("stop: at most 4 sequences", Some("stop")));
        }
    };
    let chat = ChatRequest {
        model: req.model.clone(),
        messages,
        max_tokens,
        temperature: req.temperature,
        top_p: req.top_p,
        stop,
    };
    Ok((req, chat))
}

pub async fn chat_completions(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match completions(state, headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

fn plan_error(e: PlanError) -> OaiError {
    match e {
        PlanError::Route(RouteError::UnknownModel(m) | RouteError::NotInPlan(m)) => OaiError {
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
    }
}

/// The error a generation ended with, in OpenAI's shape.
fn ending_error(e: &Ending, mid_answer: bool) -> OaiError {
    match (&e.error, mid_answer) {
        (Some(err), false) => provider_error(err),
        (Some(err), true) => OaiError::server(
            StatusCode::BAD_GATEWAY,
            format!("The provider failed mid-answer: {}", err.public()),
        ),
        (None, _) => OaiError::server(
            StatusCode::SERVICE_UNAVAILABLE,
            "The request was cancelled: the server is shutting down.",
        ),
    }
}

/// What every chunk of one completion repeats.
struct ChunkHead {
    id: String,
    created: i64,
    model: String,
}

impl ChunkHead {
    fn chunk(&self, delta: Value, finish: Option<&str>) -> Event {
        Event::default().data(
            json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                   "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
            .to_string(),
        )
    }

    /// The events that end a stream: finish, usage if asked, `[DONE]`; or an
    /// error and no `[DONE]`, so a truncated answer never looks complete.
    fn ending(&self, e: &Ending, include_usage: bool) -> Vec<Event> {
        if e.status != Status::Complete {
            return vec![Event::default().data(ending_error(e, true).body().to_string())];
        }
        let mut out = vec![self.chunk(json!({}), Some(&e.finish_reason))];
        if include_usage {
            let last = json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                              "model": self.model, "choices": [], "usage": usage_json(e.usage)});
            out.push(Event::default().data(last.to_string()));
        }
        out.push(Event::default().data("[DONE]"));
        out
    }
}

async fn completions(
    state: AppState,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OaiError> {
    let auth = authenticate(&state, &headers).await?;
    let (req, request) = parse_request(&body, state.config.chat.max_output_tokens)?;
    let gens = &state.actors.gens;
    let planned = gens
        .plan(
            payer(&auth),
            &request.messages,
            Some(&req.model),
            request.max_tokens,
        )
        .await
        .map_err(plan_error)?;
    let (tx, mut rx) = mpsc::channel::<GenEvent>(64);
    let cancel = gens.cancel_token();
    // Dropping the request (the client left) cancels the generation, which
    // then bills what was produced.
    let cancel_on_drop = cancel.clone().drop_guard();
    let bill_to = BillTo {
        user_id: auth.created_by,
        ..BillTo::default()
    };
    gens.spawn(planned, request, bill_to, cancel, tx);
    let model = match rx.recv().await {
        Some(GenEvent::Started { model, .. }) => model,
        Some(GenEvent::Ended(e)) => return Err(ending_error(&e, false)),
        _ => {
            return Err(OaiError::server(
                StatusCode::BAD_GATEWAY,
                "The generation ended unexpectedly.",
            ));
        }
    };
    let head = ChunkHead {
        id: format!("chatcmpl-{}", Uuid::now_v7().simple()),
        created: chrono::Utc::now().timestamp(),
        model,
    };
    if !req.stream {
        let mut text = String::new();
        while let Some(ev) = rx.recv().await {
            match ev {
                GenEvent::Tokens(t) => t.iter().for_each(|t| text.push_str(t)),
                GenEvent::Ended(e) if e.status == Status::Complete => {
                    return Ok(Json(json!({
                        "id": head.id, "object": "chat.completion", "created": head.created, "model": head.model,
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": null,
                                     "finish_reason": e.finish_reason}],
                        "usage": usage_json(e.usage),
                    }))
                    .into_response());
                }
                GenEvent::Ended(e) => return Err(ending_error(&e, true)),
                GenEvent::Started { .. } => {}
            }
        }
        return Err(OaiError::server(
            StatusCode::BAD_GATEWAY,
            "The generation ended unexpectedly.",
        ));
    }

    let include_usage = req.stream_options.as_ref().is_some_and(|o| o.include_usage);
    let opening = head.chunk(json!({"role": "assistant", "content": ""}), None);
    let rest = futures::stream::unfold(
        (rx, head, cancel_on_drop),
        move |(mut rx, head, guard)| async move {
            let events = match rx.recv().await? {
                GenEvent::Tokens(t) => t
                    .into_iter()
                    .map(|t| head.chunk(json!({"content": t}), None))
                    .collect(),
                GenEvent::Ended(e) => head.ending(&e, include_usage),
                GenEvent::Started { .. } => Vec::new(),
            };
            Some((futures::stream::iter(events), (rx, head, guard)))
        },
    )
    .flatten();
    let stream = futures::stream::once(futures::future::ready(opening))
        .chain(rest)
        .map(Ok::<_, Infallible>);
    Ok(Sse::new(stream).into_response())
}

fn usage_json(u: Usage) -> Value {
    json!({"prompt_tokens": u.input_tokens, "completion_tokens": u.output_tokens,
           "total_tokens": u.input_tokens + u.output_tokens})
}

pub async fn models(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let auth = match authenticate(&state, &headers).await {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    let actors = &state.actors.gens;
    let mut data: Vec<Value> = actors
        .router
        .routes
        .keys()
        .filter(|alias| {
            actors
                .router
                .candidates(&auth.plan, 0, Some(alias.as_str()), &actors.pricing, &|p| actors.providers.contains(p))
                .is_ok()
        })
        .map(|alias| json!({"id": alias, "object": "model", "created": 0, "owned_by": "switchboard"}))
        .collect();
    let mut priced: Vec<_> = actors
        .pricing
        .models
        .iter()
        .filter(|(_, p)| actors.providers.contains(&p.provider))
        .collect();
    priced.sort_by(|a, b| a.0.cmp(b.0));
    data.extend(
        priced.into_iter().map(
            |(id, p)| json!({"id": id, "object": "model", "created": 0, "owned_by": p.provider}),
        ),
    );
    Json(json!({"object": "list", "data": data})).into_response()
}

#[derive(Deserialize)]
struct EmbeddingRequest {
    model: String,
    input: EmbeddingInput,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum EmbeddingInput {
    One(String),
    Many(Vec<String>),
}

/// Most inputs in one embeddings request.
const MAX_EMBEDDING_INPUTS: usize = 2048;

pub async fn embeddings(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match embed(state, headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn embed(state: AppState, headers: HeaderMap, body: Bytes) -> Result<Response, OaiError> {
    let auth = authenticate(&state, &headers).await?;
    let req: EmbeddingRequest = serde_json::from_slice(&body).map_err(|e| {
        let param = if e.to_string().contains("`model`") {
            Some("model")
        } else {
            Some("input")
        };
        OaiError::invalid(
            format!("Invalid request body: {e} (input must be a string or an array of strings)"),
            param,
        )
    })?;
    if req.model.trim().is_empty() {
        return Err(OaiError::invalid("model: must not be empty", Some("model")));
    }
    let inputs = match req.input {
        EmbeddingInput::One(s) => vec![s],
        EmbeddingInput::Many(v) => v,
    };
    if inputs.is_empty()
        || inputs.len() > MAX_EMBEDDING_INPUTS
        || inputs.iter().any(|s| s.is_empty() || s.len() > 32_000)
    {
        return Err(OaiError::invalid(
            format!("input: 1 to {MAX_EMBEDDING_INPUTS} non-empty strings of at most 32,000 bytes"),
            Some("input"),
        ));
    }
    let embedder = Arc::clone(&state.embedder);
    let Embedded { vectors, tokens } = state
        .actors
        .gens
        .embed(payer(&auth), auth.created_by, &*embedder, inputs)
        .await
        .map_err(|e| match e {
            EmbedError::Plan(e) => plan_error(e),
            EmbedError::Provider(e) => provider_error(&e),
        })?;
    let data: Vec<Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(i, v)| json!({"object": "embedding", "index": i, "embedding": v}))
        .collect();
    Ok(Json(
        json!({"object": "list", "data": data, "model": embedder.model(),
                   "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}),
    )
    .into_response())
}
