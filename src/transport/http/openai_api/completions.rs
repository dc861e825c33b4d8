//! `POST /v1/chat/completions`: parse OpenAI's request, run the generation
//! lifecycle, answer as one JSON completion or as `chat.completion.chunk`
//! events ending in `[DONE]` (or an error and no `[DONE]`).

use std::convert::Infallible;

use axum::{
    Json,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{
        IntoResponse, Response,
        sse::{Event, Sse},
    },
};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::DropGuard;
use uuid::Uuid;

use super::{OaiError, authenticate, payer, plan_error, provider_error, usage_json};
use crate::{
    generation::{BillTo, Ending, GenEvent, Status},
    providers::{ChatRequest, PromptMessage},
    state::AppState,
};

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

/// OpenAI's messages as prompt turns: known roles (`developer` is `system`), text only.
fn prompt_messages(input: &[InMessage]) -> Result<Vec<PromptMessage>, OaiError> {
    let mut messages = Vec::with_capacity(input.len());
    for m in input {
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
    Ok(messages)
}

fn parse_request(
    body: &[u8],
    default_max: u32,
) -> Result<(CompletionRequest, ChatRequest), OaiError> {
    if crate::text::json_has_nul(body) {
        return Err(OaiError::invalid(
            "Invalid request body: strings must not contain NUL (\\u0000)",
            None,
        ));
    }
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
    let messages = prompt_messages(&req.messages)?;
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
    if req.stream {
        let include_usage = req.stream_options.as_ref().is_some_and(|o| o.include_usage);
        Ok(stream_chunks(rx, head, cancel_on_drop, include_usage))
    } else {
        one_completion(rx, head).await
    }
}

/// Waits for the whole answer and answers one `chat.completion`.
async fn one_completion(
    mut rx: mpsc::Receiver<GenEvent>,
    head: ChunkHead,
) -> Result<Response, OaiError> {
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
    Err(OaiError::server(
        StatusCode::BAD_GATEWAY,
        "The generation ended unexpectedly.",
    ))
}

/// Streams the answer as `chat.completion.chunk` events; dropping the
/// response (the client left) drops `cancel_on_drop` and so the generation.
fn stream_chunks(
    rx: mpsc::Receiver<GenEvent>,
    head: ChunkHead,
    cancel_on_drop: DropGuard,
    include_usage: bool,
) -> Response {
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
    Sse::new(stream).into_response()
}
