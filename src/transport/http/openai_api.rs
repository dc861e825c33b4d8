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
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{extract::bearer_from_headers, keys::hash_key};
use crate::{
    actors::persistence::{UsageEvent, UsageMsg},
    admission::{AdmitError, KeyLimits, Payer},
    app::AppState,
    budget::Reservation,
    providers::{
        ChatRequest, PromptMessage, ProviderError, StreamEvent, Usage,
        attempt::{Attempts, OpenError, log_served, open_first},
        router::{RouteError, worst_case_micros},
        tokenizer,
    },
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
            format!("No provider could answer: {other}"),
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
        tokio::spawn(async move {
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

/// Settles a completion exactly once: at the end, or, if the client went
/// away first, when the work is dropped, for the tokens produced so far.
struct Billing {
    state: AppState,
    auth: KeyAuth,
    payer: Payer,
    reservation: Option<Reservation>,
    provider: String,
    model: String,
    prompt_tokens: u32,
    produced: u32,
    reported: Option<Usage>,
}

impl Billing {
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

    /// Settles now and answers the usage and cost billed.
    fn settle(&mut self) -> (Usage, i64) {
        let usage = self.usage();
        let cost = self
            .state
            .actors
            .pricing
            .cost_micros(&self.model, usage)
            .unwrap_or(0);
        let Some(res) = self.reservation.take() else {
            return (usage, cost);
        };
        if usage.input_tokens + usage.output_tokens > 0 {
            let _ = self.state.actors.usage.cast(UsageMsg::Record(UsageEvent {
                workspace_id: self.auth.workspace_id,
                user_id: self.auth.created_by,
                api_key_id: Some(self.auth.id),
                chat_id: None,
                message_id: None,
                provider: self.provider.clone(),
                model: self.model.clone(),
                input_tokens: i32::try_from(usage.input_tokens).unwrap_or(i32::MAX),
                output_tokens: i32::try_from(usage.output_tokens).unwrap_or(i32::MAX),
                cost_micros: cost,
            }));
        }
        let (admission, payer) = (self.state.actors.admission.clone(), self.payer.clone());
        let tokens = usage.input_tokens + usage.output_tokens;
        tokio::spawn(async move { admission.settle(&payer, res, cost, tokens).await });
        (usage, cost)
    }
}

impl Drop for Billing {
    fn drop(&mut self) {
        if self.reservation.is_some() {
            tracing::info!(key_id = %self.auth.id, produced = self.produced, "client went away: billed what was produced");
            self.settle();
        }
    }
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

async fn completions(
    state: AppState,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OaiError> {
    let auth = authenticate(&state, &headers).await?;
    let (req, request) = parse_request(&body, state.config.chat.max_output_tokens)?;
    let actors = &state.actors;
    let prompt_tokens = tokenizer::count_prompt(&request.messages);
    let candidates = actors
        .router
        .candidates(
            &auth.plan,
            prompt_tokens,
            Some(&req.model),
            &actors.pricing,
            &|p| actors.providers.contains(p),
        )
        .map_err(|e| match e {
            RouteError::UnknownModel(m) => OaiError {
                code: Some("model_not_found"),
                ..OaiError::invalid(
                    format!("The model `{m}` does not exist or you do not have access to it."),
                    Some("model"),
                )
            },
            RouteError::NoProvider => {
                OaiError::server(StatusCode::SERVICE_UNAVAILABLE, "No provider is available.")
            }
        })?;
    let payer = payer(&auth);
    let worst = worst_case_micros(
        &actors.pricing,
        &candidates,
        prompt_tokens,
        request.max_tokens,
    );
    let reservation = actors.admission.admit(&payer, worst).await?;
    let mut billing = Billing {
        state: state.clone(),
        auth,
        payer,
        reservation: Some(reservation),
        provider: candidates[0].provider.clone(),
        model: candidates[0].model.clone(),
        prompt_tokens,
        produced: 0,
        reported: None,
    };
    let routing = &state.config.routing;
    let plan = Attempts {
        candidates,
        ttft: Duration::from_millis(routing.ttft_timeout_ms),
        retries: routing.max_retries,
        retry_base: Duration::from_millis(routing.retry_base_ms),
        est_tokens: prompt_tokens + request.max_tokens,
    };
    let cancel = CancellationToken::new();
    // Dropping this future (the client left) cancels an attempt in progress.
    let _cancel_on_drop = cancel.clone().drop_guard();
    let opened = match open_first(&actors.providers, &plan, &request, &cancel).await {
        Ok(o) => o,
        Err(OpenError::Cancelled) => {
            return Err(OaiError::server(StatusCode::BAD_GATEWAY, "cancelled"));
        }
        Err(OpenError::Failed(last, _)) => {
            billing.settle();
            return Err(provider_error(&last));
        }
    };
    log_served(&opened);
    billing.provider.clone_from(&opened.candidate.provider);
    billing.model.clone_from(&opened.candidate.model);
    let id = format!("chatcmpl-{}", Uuid::now_v7().simple());
    let created = chrono::Utc::now().timestamp();
    let include_usage = req.stream_options.as_ref().is_some_and(|o| o.include_usage);
    let mut events =
        futures::stream::once(futures::future::ready(Ok(opened.first))).chain(opened.stream);
    let lease = opened.lease;

    if !req.stream {
        let mut text = String::new();
        let mut finish = None;
        while let Some(ev) = events.next().await {
            match ev {
                Ok(StreamEvent::Token(t)) => {
                    billing.produced += 1;
                    text.push_str(&t);
                }
                Ok(StreamEvent::Usage(u)) => billing.reported = Some(u),
                Ok(StreamEvent::Finish(r)) => {
                    finish = Some(r);
                    break;
                }
                Err(e) => {
                    lease.report(crate::actors::provider::Outcome::Failure);
                    billing.settle();
                    return Err(OaiError::server(
                        StatusCode::BAD_GATEWAY,
                        format!("The provider failed mid-answer: {e}"),
                    ));
                }
            }
        }
        let (usage, _) = billing.settle();
        lease.report(crate::actors::provider::Outcome::Success {
            tokens: usage.output_tokens,
        });
        return Ok(Json(json!({
            "id": id, "object": "chat.completion", "created": created, "model": billing.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": null,
                         "finish_reason": finish.unwrap_or_else(|| "stop".into())}],
            "usage": usage_json(usage),
        }))
        .into_response());
    }

    // Streaming: a task produces the chunks; the response only forwards them.
    // When the client goes away the channel closes and the task stops, which
    // drops the provider stream (closing the upstream request) and bills.
    let (tx, rx) = mpsc::channel::<Event>(64);
    let model = billing.model.clone();
    tokio::spawn(async move {
        let chunk = |delta: Value, finish: Option<&str>| {
            Event::default().data(
                json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                       "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
                .to_string(),
            )
        };
        if tx
            .send(chunk(json!({"role": "assistant", "content": ""}), None))
            .await
            .is_err()
        {
            return;
        }
        loop {
            let ev = tokio::select! {
                () = tx.closed() => {
                    lease.report(crate::actors::provider::Outcome::Neutral { tokens: billing.produced });
                    return; // Billing's drop settles for what was produced
                }
                ev = events.next() => ev,
            };
            match ev {
                Some(Ok(StreamEvent::Token(t))) => {
                    billing.produced += 1;
                    if tx.send(chunk(json!({"content": t}), None)).await.is_err() {
                        lease.report(crate::actors::provider::Outcome::Neutral {
                            tokens: billing.produced,
                        });
                        return;
                    }
                }
                Some(Ok(StreamEvent::Usage(u))) => billing.reported = Some(u),
                Some(Ok(StreamEvent::Finish(reason))) => {
                    let (usage, _) = billing.settle();
                    lease.report(crate::actors::provider::Outcome::Success {
                        tokens: usage.output_tokens,
                    });
                    let _ = tx.send(chunk(json!({}), Some(&reason))).await;
                    if include_usage {
                        let last = json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                                          "choices": [], "usage": usage_json(usage)});
                        let _ = tx.send(Event::default().data(last.to_string())).await;
                    }
                    let _ = tx.send(Event::default().data("[DONE]")).await;
                    return;
                }
                Some(Err(e)) => {
                    lease.report(crate::actors::provider::Outcome::Failure);
                    billing.settle();
                    let err = OaiError::server(
                        StatusCode::BAD_GATEWAY,
                        format!("The provider failed mid-answer: {e}"),
                    );
                    let _ = tx.send(Event::default().data(err.body().to_string())).await;
                    return; // no [DONE]: the answer is truncated
                }
                None => {
                    lease.report(crate::actors::provider::Outcome::Failure);
                    billing.settle();
                    let err = OaiError::server(
                        StatusCode::BAD_GATEWAY,
                        "The provider stream ended early.",
                    );
                    let _ = tx.send(Event::default().data(err.body().to_string())).await;
                    return;
                }
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
    });
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
    let actors = &state.actors;
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
    let payer = payer(&auth);
    let reservation = state.actors.admission.admit(&payer, 0).await?;
    let tokens: u32 = inputs.iter().map(|s| tokenizer::count_tokens(s)).sum();
    let embedder = Arc::clone(&state.embedder);
    let result = embedder.embed(inputs).await;
    let mut billing = Billing {
        state: state.clone(),
        auth,
        payer,
        reservation: Some(reservation),
        provider: embedder.name().to_owned(),
        model: embedder.model().to_owned(),
        prompt_tokens: tokens,
        produced: 0,
        reported: Some(Usage {
            input_tokens: if result.is_ok() { tokens } else { 0 },
            output_tokens: 0,
        }),
    };
    billing.settle();
    let vectors = result.map_err(|e| provider_error(&e))?;
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
