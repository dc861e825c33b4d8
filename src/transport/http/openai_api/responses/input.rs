//! `POST /v1/responses` input: the request body, its input items turned into
//! a prompt, and every parameter checked before anything is planned.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::super::{OaiError, request};
use crate::providers::{ChatRequest, GenOptions, PromptMessage, ToolCall};

#[derive(Deserialize)]
pub(super) struct ResponsesRequest {
    pub(super) model: String,
    pub(super) input: Value,
    pub(super) instructions: Option<String>,
    pub(super) max_output_tokens: Option<u32>,
    #[serde(default)]
    pub(super) stream: bool,
    pub(super) temperature: Option<f32>,
    pub(super) top_p: Option<f32>,
    pub(super) tools: Option<Value>,
    pub(super) tool_choice: Option<Value>,
    pub(super) parallel_tool_calls: Option<bool>,
    pub(super) text: Option<Value>,
    pub(super) user: Option<String>,
    pub(super) top_logprobs: Option<u32>,
    pub(super) include: Option<Vec<String>>,
    pub(super) truncation: Option<String>,
    #[serde(flatten)]
    pub(super) extra: Map<String, Value>,
}

/// Largest `max_output_tokens` accepted (as `max_tokens` on completions).
const MAX_TOKENS_LIMIT: u32 = 32_768;

fn bad(param: &'static str, why: impl std::fmt::Display) -> OaiError {
    OaiError::invalid(format!("{param}: {why}"), Some(param))
}

/// The text of a message's `content`: a string or text parts.
fn content_text(content: &Value) -> Result<String, OaiError> {
    match content {
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut text = String::new();
            for p in parts {
                match p.get("type").and_then(Value::as_str) {
                    Some("input_text" | "output_text" | "text") => {
                        text.push_str(p.get("text").and_then(Value::as_str).unwrap_or_default());
                    }
                    other => {
                        return Err(bad(
                            "input",
                            format!("content part type {other:?} is not supported (text only)"),
                        ));
                    }
                }
            }
            Ok(text)
        }
        Value::Null => Ok(String::new()),
        _ => Err(bad(
            "input",
            "content must be a string or an array of parts",
        )),
    }
}

/// Input items as prompt turns.
#[expect(
    clippy::too_many_lines,
    reason = "request translation field by field, in the API's order"
)]
fn prompt(input: &Value, instructions: Option<&str>) -> Result<Vec<PromptMessage>, OaiError> {
    let mut out = Vec::new();
    if let Some(i) = instructions.filter(|i| !i.is_empty()) {
        out.push(PromptMessage {
            role: "system".into(),
            content: i.to_owned(),
            ..PromptMessage::default()
        });
    }
    let items = match input {
        Value::String(s) => {
            out.push(PromptMessage {
                role: "user".into(),
                content: s.clone(),
                ..PromptMessage::default()
            });
            return Ok(out);
        }
        Value::Array(items) => items,
        _ => return Err(bad("input", "must be a string or an array of input items")),
    };
    for item in items {
        let kind = item
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("message");
        let text = |k: &str| item.get(k).and_then(Value::as_str).map(str::to_owned);
        match kind {
            "message" => {
                let role = match item.get("role").and_then(Value::as_str) {
                    Some("developer" | "system") => "system",
                    Some("user") => "user",
                    Some("assistant") => "assistant",
                    other => return Err(bad("input", format!("unknown role {other:?}"))),
                };
                out.push(PromptMessage {
                    role: role.into(),
                    content: content_text(item.get("content").unwrap_or(&Value::Null))?,
                    ..PromptMessage::default()
                });
            }
            "function_call" => {
                let call = ToolCall {
                    id: text("call_id")
                        .ok_or_else(|| bad("input", "a function_call needs its call_id"))?,
                    name: text("name")
                        .ok_or_else(|| bad("input", "a function_call needs its name"))?,
                    arguments: text("arguments").unwrap_or_default(),
                };
                // Calls made in one turn belong to one assistant message.
                match out.last_mut() {
                    Some(last) if last.role == "assistant" => last.tool_calls.push(call),
                    _ => out.push(PromptMessage {
                        role: "assistant".into(),
                        tool_calls: vec![call],
                        ..PromptMessage::default()
                    }),
                }
            }
            "function_call_output" => {
                let output = match item.get("output") {
                    Some(Value::String(s)) => s.clone(),
                    Some(other) => content_text(other)?,
                    None => String::new(),
                };
                out.push(PromptMessage {
                    role: "tool".into(),
                    content: output,
                    tool_call_id: Some(
                        text("call_id").ok_or_else(|| {
                            bad("input", "a function_call_output needs its call_id")
                        })?,
                    ),
                    ..PromptMessage::default()
                });
            }
            other => {
                return Err(bad(
                    "input",
                    format!(
                        "input item type {other:?} is not supported (nothing is stored here, so item references cannot be resolved)"
                    ),
                ));
            }
        }
    }
    if out.iter().all(|m| m.role == "system") {
        return Err(bad("input", "must hold at least one message"));
    }
    Ok(out)
}

#[expect(
    clippy::too_many_lines,
    reason = "the Responses event sequence, in the order it is sent"
)]
pub(super) fn parse(
    body: &[u8],
    default_max: u32,
) -> Result<(ResponsesRequest, ChatRequest), OaiError> {
    let req: ResponsesRequest = serde_json::from_slice(body).map_err(|e| {
        let text = e.to_string();
        let param = [
            "model",
            "input",
            "instructions",
            "max_output_tokens",
            "stream",
            "temperature",
            "top_p",
            "parallel_tool_calls",
            "user",
            "include",
            "truncation",
            "top_logprobs",
        ]
        .into_iter()
        .find(|p| text.contains(&format!("`{p}`")));
        OaiError::invalid(format!("Invalid request body: {e}"), param)
    })?;
    request::refuse_unknown(&req.extra)?;
    if req.model.trim().is_empty() {
        return Err(bad("model", "must not be empty"));
    }
    if req.include.as_ref().is_some_and(|i| !i.is_empty()) {
        return Err(bad("include", "no extra output can be included here"));
    }
    if req.truncation.as_deref().is_some_and(|t| t != "disabled") {
        return Err(bad("truncation", "only \"disabled\" is supported"));
    }
    if req.temperature.is_some_and(|t| !(0.0..=2.0).contains(&t)) {
        return Err(bad("temperature", "must be between 0 and 2"));
    }
    if req.top_p.is_some_and(|t| !(0.0..=1.0).contains(&t)) {
        return Err(bad("top_p", "must be between 0 and 1"));
    }
    let max_tokens = req.max_output_tokens.unwrap_or(default_max);
    if max_tokens == 0 || max_tokens > MAX_TOKENS_LIMIT {
        return Err(bad(
            "max_output_tokens",
            format!("must be between 1 and {MAX_TOKENS_LIMIT}"),
        ));
    }
    let messages = prompt(&req.input, req.instructions.as_deref())?;
    let tools = match &req.tools {
        Some(v) if !v.is_null() => request::responses_tools(v)?,
        _ => Vec::new(),
    };
    let tool_choice = match &req.tool_choice {
        Some(v) if !v.is_null() => Some(request::tool_choice(v, &tools)?),
        _ => None,
    };
    let response_format = match req.text.as_ref().and_then(|t| t.get("format")) {
        Some(f) if !f.is_null() => Some(request::responses_text_format(f)?),
        _ => None,
    };
    if let Some(v) = req
        .text
        .as_ref()
        .and_then(|t| t.get("verbosity"))
        .filter(|v| !v.is_null() && v.as_str() != Some("medium"))
    {
        return Err(bad("text", format!("verbosity {v} is not supported")));
    }
    let chat = ChatRequest {
        model: req.model.clone(),
        messages,
        max_tokens,
        temperature: req.temperature,
        top_p: req.top_p,
        stop: Vec::new(),
        options: GenOptions {
            tools,
            tool_choice,
            parallel_tool_calls: req.parallel_tool_calls,
            response_format,
            user: req.user.clone(),
            top_logprobs: req.top_logprobs,
            ..GenOptions::default()
        },
    };
    Ok((req, chat))
}
