//! `POST /v1/chat/completions`: parse OpenAI's request, run the generation
//! lifecycle, answer as one JSON completion or as `chat.completion.chunk`
//! events ending in `[DONE]` (or an error and no `[DONE]`; the events are chunks.rs).
//!
//! Tools, `tool_choice`, `response_format` and the sampling options are read
//! into [`GenOptions`]; a provider that cannot honour one is refused by name
//! at planning. Tool calls come back as OpenAI sends them: in one answer as
//! `message.tool_calls`, streamed as `tool_calls` deltas (the first piece of a
//! call with its `id`, `type` and `function.name`, then argument fragments).

use axum::{
    Json,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::{
    OaiError, Opening, authenticate,
    chunks::{ChunkHead, stream_chunks},
    open, payer, plan_error, provider_error, request, unexpected_end, usage_json,
};
use crate::{
    generation::{Ending, GenEvent, Status},
    providers::{ChatRequest, GenOptions, PromptMessage, ToolCall, ToolCallDelta},
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
    tools: Option<Value>,
    tool_choice: Option<Value>,
    parallel_tool_calls: Option<bool>,
    response_format: Option<Value>,
    seed: Option<i64>,
    presence_penalty: Option<f32>,
    frequency_penalty: Option<f32>,
    user: Option<String>,
    logprobs: Option<bool>,
    top_logprobs: Option<u32>,
    /// Everything else: refused by name unless known to change nothing.
    #[serde(flatten)]
    extra: serde_json::Map<String, Value>,
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
    #[serde(default)]
    tool_calls: Vec<InToolCall>,
    tool_call_id: Option<String>,
}

#[derive(Deserialize)]
struct InToolCall {
    id: String,
    function: InFunction,
}

#[derive(Deserialize)]
struct InFunction {
    name: String,
    #[serde(default)]
    arguments: String,
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
        if role == "tool" && m.tool_call_id.is_none() {
            return Err(OaiError::invalid(
                "messages: a tool message needs its tool_call_id",
                Some("messages"),
            ));
        }
        messages.push(PromptMessage {
            role: role.to_owned(),
            content,
            tool_calls: m
                .tool_calls
                .iter()
                .map(|c| ToolCall {
                    id: c.id.clone(),
                    name: c.function.name.clone(),
                    arguments: c.function.arguments.clone(),
                })
                .collect(),
            tool_call_id: m.tool_call_id.clone(),
        });
    }
    Ok(messages)
}

/// Tools, structured output and sampling options, checked.
fn options(req: &CompletionRequest) -> Result<GenOptions, OaiError> {
    request::refuse_unknown(&req.extra)?;
    let tools = match &req.tools {
        Some(v) if !v.is_null() => request::chat_tools(v)?,
        _ => Vec::new(),
    };
    let tool_choice = match &req.tool_choice {
        Some(v) if !v.is_null() => Some(request::tool_choice(v, &tools)?),
        _ => None,
    };
    let response_format = match &req.response_format {
        Some(v) if !v.is_null() => Some(request::chat_response_format(v)?),
        _ => None,
    };
    if req.top_logprobs.is_some_and(|n| n > 20) {
        return Err(OaiError::invalid(
            "top_logprobs: must be between 0 and 20",
            Some("top_logprobs"),
        ));
    }
    Ok(GenOptions {
        tools,
        tool_choice,
        parallel_tool_calls: req.parallel_tool_calls,
        response_format,
        seed: req.seed,
        presence_penalty: request::penalty(req.presence_penalty, "presence_penalty")?,
        frequency_penalty: request::penalty(req.frequency_penalty, "frequency_penalty")?,
        user: req.user.clone(),
        logprobs: req.logprobs,
        top_logprobs: req.top_logprobs,
    })
}

#[expect(
    clippy::too_many_lines,
    reason = "request validation field by field, in the API's order"
)]
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
            "tools",
            "tool_choice",
            "parallel_tool_calls",
            "response_format",
            "seed",
            "presence_penalty",
            "frequency_penalty",
            "user",
            "logprobs",
            "top_logprobs",
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
        options: options(&req)?,
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
pub(super) fn ending_error(e: &Ending, mid_answer: bool) -> OaiError {
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

async fn completions(
    state: AppState,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OaiError> {
    let auth = authenticate(&state, &headers).await?;
    let (req, request) = parse_request(&body, state.config.chat.max_output_tokens)?;
    let gens = &state.actors.gens;
    let planned = gens
        .plan_request(payer(&auth), &request, Some(&req.model))
        .await
        .map_err(plan_error)?;
    let (model, rx, cancel_on_drop) = match open(gens, planned, request, &auth).await {
        Opening::Started(model, rx, guard) => (model, rx, guard),
        Opening::Ended(e) => return Err(ending_error(&e, false)),
        Opening::Unexpected => return Err(unexpected_end()),
    };
    let head = ChunkHead::new(
        format!("chatcmpl-{}", Uuid::now_v7().simple()),
        chrono::Utc::now().timestamp(),
        model,
    );
    if req.stream {
        let include_usage = req.stream_options.as_ref().is_some_and(|o| o.include_usage);
        Ok(stream_chunks(rx, head, cancel_on_drop, include_usage))
    } else {
        one_completion(rx, head).await
    }
}

/// Tool calls assembled from their streamed pieces.
#[derive(Default)]
pub(super) struct ToolCalls(pub(super) Vec<ToolCall>);

impl ToolCalls {
    pub(super) fn add(&mut self, d: ToolCallDelta) {
        let i = d.index as usize;
        while self.0.len() <= i {
            self.0.push(ToolCall::default());
        }
        let call = &mut self.0[i];
        if let Some(id) = d.id {
            call.id = id;
        }
        if let Some(name) = d.name {
            call.name = name;
        }
        call.arguments.push_str(&d.arguments);
    }

    fn to_json(&self) -> Value {
        self.0
            .iter()
            .map(|c| {
                json!({"id": c.id, "type": "function",
                           "function": {"name": c.name, "arguments": c.arguments}})
            })
            .collect()
    }
}

/// Waits for the whole answer and answers one `chat.completion`.
async fn one_completion(
    mut rx: mpsc::Receiver<GenEvent>,
    head: ChunkHead,
) -> Result<Response, OaiError> {
    let mut text = String::new();
    let mut calls = ToolCalls::default();
    while let Some(ev) = rx.recv().await {
        match ev {
            GenEvent::Tokens(t) => t.iter().for_each(|t| text.push_str(t)),
            GenEvent::ToolCalls(d) => d.into_iter().for_each(|d| calls.add(d)),
            GenEvent::Ended(e) if e.status == Status::Complete => {
                let message = if calls.0.is_empty() {
                    json!({"role": "assistant", "content": text, "refusal": null})
                } else {
                    let content = (!text.is_empty()).then_some(text);
                    json!({"role": "assistant", "content": content, "refusal": null,
                           "tool_calls": calls.to_json()})
                };
                return Ok(Json(json!({
                    "id": head.id, "object": "chat.completion", "created": head.created, "model": head.model,
                    "choices": [{"index": 0, "message": message, "logprobs": null,
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
