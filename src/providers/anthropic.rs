//! Anthropic's Messages API (`POST {base}/v1/messages`, `stream: true`).
//!
//! - Headers: `x-api-key` and `anthropic-version: 2023-06-01`.
//! - System messages are joined (blank line between) into the top-level
//!   `system` field; every other role but `assistant` is sent as `user`.
//!   `max_tokens` is required by the API, so a request without one gets
//!   [`DEFAULT_MAX_TOKENS`]; `stop` becomes `stop_sequences`.
//! - The event stream: `message_start` (its `usage.input_tokens`, plus cache
//!   reads and writes, are the input), `content_block_delta` with a
//!   `text_delta` (a token; other deltas, like thinking, are skipped),
//!   `message_delta` (`stop_reason`, cumulative `usage.output_tokens`),
//!   `message_stop` (the end marker). `ping`, block starts and stops, and event
//!   types this module does not know are ignored, as Anthropic's versioning
//!   policy asks.
//! - Tools: OpenAI's function tools become `tools` with `input_schema`;
//!   `tool_choice` auto/required/none/a function becomes auto/any/none/tool,
//!   `parallel_tool_calls: false` sets `disable_parallel_tool_use`; assistant
//!   tool calls go out as `tool_use` blocks and `tool` turns as `tool_result`
//!   blocks of one user turn. A streamed `tool_use` block comes back as
//!   OpenAI-style tool-call pieces (its start: id and name; each
//!   `input_json_delta`: arguments). `user` goes to `metadata.user_id`.
//!   `response_format`, `seed`, the penalties and logprobs have no Anthropic
//!   equivalent and are refused.
//! - An `error` event maps by its type: `overloaded_error` → `Upstream{529}`,
//!   `api_error` → `Upstream{500}`, `rate_limit_error` → `RateLimited`,
//!   authentication and permission errors → `Unauthorized`, anything else →
//!   `Upstream{502}`; an error event that is not JSON is `Malformed`.
//! - Stop reasons: `end_turn` and `stop_sequence` → `stop`, `max_tokens` →
//!   `length`, `tool_use` → `tool_calls`, `refusal` → `content_filter`; others
//!   pass through.

use std::collections::VecDeque;

use serde_json::{Value, json};

use super::{
    ChatProvider, ChatRequest, EventStream, PromptMessage, ProviderError, StreamEvent,
    ToolCallDelta, ToolChoice, Usage,
    http::{self, SseDecoder},
    sse::Event,
    tokenizer,
};
use crate::config::Secret;

pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
pub const API_VERSION: &str = "2023-06-01";
/// The answer's cap when the request sets none (the API requires one).
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

pub struct AnthropicProvider {
    base_url: String,
    api_key: Secret,
    default_model: String,
    client: reqwest::Client,
}

impl AnthropicProvider {
    /// `base_url` is the host root (`/v1/messages` is appended); `None` means Anthropic's.
    pub fn new(base_url: Option<String>, api_key: Secret, default_model: String) -> Self {
        Self {
            base_url: http::trim_base(base_url.as_deref().unwrap_or(DEFAULT_BASE_URL)),
            api_key,
            default_model,
            client: http::stream_client(),
        }
    }

    /// Uses `client` (its timeouts, proxy, pool) instead of the default one.
    pub fn with_http_client(mut self, client: reqwest::Client) -> Self {
        self.client = client;
        self
    }

    fn body(&self, request: &ChatRequest) -> Value {
        let system: Vec<&str> = request
            .messages
            .iter()
            .filter(|m| m.role == "system")
            .map(|m| m.content.as_str())
            .collect();
        let mut body = json!({
            "model": if request.model.is_empty() { &self.default_model } else { &request.model },
            "max_tokens": if request.max_tokens == 0 { DEFAULT_MAX_TOKENS } else { request.max_tokens },
            "messages": messages(&request.messages),
            "stream": true,
        });
        if !system.is_empty() {
            body["system"] = json!(system.join("\n\n"));
        }
        if let Some(t) = request.temperature {
            body["temperature"] = json!(t);
        }
        if let Some(p) = request.top_p {
            body["top_p"] = json!(p);
        }
        if !request.stop.is_empty() {
            body["stop_sequences"] = json!(request.stop);
        }
        let o = &request.options;
        if !o.tools.is_empty() {
            let tools: Vec<Value> = o
                .tools
                .iter()
                .map(|t| {
                    let mut tool = json!({"name": t.name, "input_schema": t.parameters});
                    if let Some(d) = &t.description {
                        tool["description"] = json!(d);
                    }
                    tool
                })
                .collect();
            body["tools"] = json!(tools);
        }
        let mut choice = o.tool_choice.as_ref().map(|c| match c {
            ToolChoice::None => json!({"type": "none"}),
            ToolChoice::Auto => json!({"type": "auto"}),
            ToolChoice::Required => json!({"type": "any"}),
            ToolChoice::Function(name) => json!({"type": "tool", "name": name}),
        });
        if o.parallel_tool_calls == Some(false) && !o.tools.is_empty() {
            choice
                .get_or_insert_with(|| json!({"type": "auto"}))
                .as_object_mut()
                .map(|c| c.insert("disable_parallel_tool_use".into(), json!(true)));
        }
        if let Some(c) = choice {
            body["tool_choice"] = c;
        }
        if let Some(u) = &o.user {
            body["metadata"] = json!({"user_id": u});
        }
        body
    }
}

/// The conversation in Anthropic's turns: assistant tool calls become
/// `tool_use` blocks, tool results `tool_result` blocks of one user turn.
fn messages(prompt: &[PromptMessage]) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    let mut results: Vec<Value> = Vec::new();
    for m in prompt.iter().filter(|m| m.role != "system") {
        if m.role == "tool" {
            results.push(json!({"type": "tool_result",
                                "tool_use_id": m.tool_call_id.as_deref().unwrap_or_default(),
                                "content": m.content}));
            continue;
        }
        if !results.is_empty() {
            out.push(json!({"role": "user", "content": std::mem::take(&mut results)}));
        }
        if m.role == "assistant" && !m.tool_calls.is_empty() {
            let mut blocks = Vec::new();
            if !m.content.is_empty() {
                blocks.push(json!({"type": "text", "text": m.content}));
            }
            for c in &m.tool_calls {
                let input: Value = serde_json::from_str(&c.arguments).unwrap_or_else(|_| json!({}));
                blocks
                    .push(json!({"type": "tool_use", "id": c.id, "name": c.name, "input": input}));
            }
            out.push(json!({"role": "assistant", "content": blocks}));
        } else {
            let role = if m.role == "assistant" {
                "assistant"
            } else {
                "user"
            };
            out.push(json!({"role": role, "content": m.content}));
        }
    }
    if !results.is_empty() {
        out.push(json!({"role": "user", "content": results}));
    }
    out
}

impl ChatProvider for AnthropicProvider {
    fn name(&self) -> &str {
        "anthropic"
    }

    fn default_model(&self) -> &str {
        &self.default_model
    }

    /// Tools translate; Anthropic has no `response_format`, `seed`,
    /// penalties or logprobs, so those are refused.
    fn supports(&self, param: &str) -> bool {
        matches!(
            param,
            "tools" | "tool_choice" | "parallel_tool_calls" | "user"
        )
    }

    fn stream(&self, request: ChatRequest) -> EventStream {
        let builder = self
            .client
            .post(format!("{}/v1/messages", self.base_url))
            .header("x-api-key", self.api_key.expose())
            .header("anthropic-version", API_VERSION)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .json(&self.body(&request));
        http::sse_stream(
            "anthropic",
            builder,
            Some(&self.api_key),
            AnthropicDecoder::new(request.messages),
        )
    }
}

struct AnthropicDecoder {
    prompt: Vec<PromptMessage>,
    text: String,
    /// Content block index → tool call index, for `tool_use` blocks.
    tool_blocks: Vec<(u64, u32)>,
    input_tokens: Option<u32>,
    output_tokens: Option<u32>,
    stop_reason: Option<String>,
}

impl AnthropicDecoder {
    fn new(prompt: Vec<PromptMessage>) -> Self {
        Self {
            prompt,
            text: String::new(),
            tool_blocks: Vec::new(),
            input_tokens: None,
            output_tokens: None,
            stop_reason: None,
        }
    }

    /// Takes what a `usage` object reports; later reports replace earlier ones.
    fn read_usage(&mut self, usage: Option<&Value>) {
        let Some(usage) = usage else { return };
        let n = |name: &str| {
            usage
                .get(name)
                .and_then(Value::as_u64)
                .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
        };
        if let Some(input) = n("input_tokens") {
            let cached = n("cache_creation_input_tokens")
                .unwrap_or(0)
                .saturating_add(n("cache_read_input_tokens").unwrap_or(0));
            self.input_tokens = Some(input.saturating_add(cached));
        }
        if let Some(output) = n("output_tokens") {
            self.output_tokens = Some(output);
        }
    }

    fn usage(&self) -> Usage {
        Usage {
            input_tokens: self
                .input_tokens
                .unwrap_or_else(|| tokenizer::count_prompt(&self.prompt)),
            output_tokens: self
                .output_tokens
                .unwrap_or_else(|| tokenizer::count_tokens(&self.text)),
        }
    }
}

impl SseDecoder for AnthropicDecoder {
    #[expect(
        clippy::too_many_lines,
        reason = "one match over Anthropic's stream event types"
    )]
    fn event(
        &mut self,
        event: Event,
        out: &mut VecDeque<StreamEvent>,
    ) -> Result<bool, ProviderError> {
        if event.data.trim().is_empty() {
            return Ok(false);
        }
        let value = http::parse_json(&event.data)?;
        // The `type` in the data is authoritative; the `event:` line repeats it.
        let kind = value
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or(&event.event);
        match kind {
            "message_start" => {
                let usage = value.get("message").and_then(|m| m.get("usage"));
                self.read_usage(usage);
            }
            "content_block_delta" => {
                let delta = value.get("delta").ok_or_else(|| {
                    ProviderError::Malformed("content_block_delta without delta".into())
                })?;
                if delta.get("type").and_then(Value::as_str) == Some("input_json_delta") {
                    let block = value.get("index").and_then(Value::as_u64).unwrap_or(0);
                    let index = self
                        .tool_blocks
                        .iter()
                        .find(|(b, _)| *b == block)
                        .map(|(_, i)| *i)
                        .ok_or_else(|| {
                            ProviderError::Malformed(
                                "input_json_delta outside a tool_use block".into(),
                            )
                        })?;
                    let part = delta
                        .get("partial_json")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    if !part.is_empty() {
                        self.text.push_str(part);
                        out.push_back(StreamEvent::ToolCall(ToolCallDelta {
                            index,
                            arguments: part.to_owned(),
                            ..ToolCallDelta::default()
                        }));
                    }
                }
                if delta.get("type").and_then(Value::as_str) == Some("text_delta") {
                    let text = delta.get("text").and_then(Value::as_str).ok_or_else(|| {
                        ProviderError::Malformed("text_delta without text".into())
                    })?;
                    if !text.is_empty() {
                        self.text.push_str(text);
                        out.push_back(StreamEvent::Token(text.to_owned()));
                    }
                }
            }
            "content_block_start" => {
                let block = value.get("content_block");
                if block.and_then(|b| b.get("type")).and_then(Value::as_str) == Some("tool_use") {
                    let text = |k: &str| {
                        block
                            .and_then(|b| b.get(k))
                            .and_then(Value::as_str)
                            .map(str::to_owned)
                    };
                    let index = self.tool_blocks.len() as u32;
                    let at = value.get("index").and_then(Value::as_u64).unwrap_or(0);
                    self.tool_blocks.push((at, index));
                    out.push_back(StreamEvent::ToolCall(ToolCallDelta {
                        index,
                        id: text("id"),
                        name: text("name"),
                        arguments: String::new(),
                    }));
                }
            }
            "message_delta" => {
                if let Some(reason) = value
                    .get("delta")
                    .and_then(|d| d.get("stop_reason"))
                    .and_then(Value::as_str)
                {
                    self.stop_reason = Some(finish_reason(reason));
                }
                self.read_usage(value.get("usage"));
            }
            "message_stop" => {
                out.push_back(StreamEvent::Usage(self.usage()));
                let finish = self.stop_reason.take().unwrap_or_else(|| "stop".into());
                out.push_back(StreamEvent::Finish(finish));
                return Ok(true);
            }
            "error" => return Err(stream_error(&value)),
            _ => {} // ping, content_block_stop, and whatever comes next
        }
        Ok(false)
    }
}

/// Anthropic's `stop_reason` in the OpenAI words the rest of the server uses.
fn finish_reason(reason: &str) -> String {
    match reason {
        "end_turn" | "stop_sequence" => "stop",
        "max_tokens" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        other => other,
    }
    .to_owned()
}

fn stream_error(value: &Value) -> ProviderError {
    let error = value.get("error");
    let kind = error
        .and_then(|e| e.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let message = error
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .unwrap_or("");
    tracing::warn!(
        provider = "anthropic",
        kind,
        message,
        "error event inside the stream"
    );
    match kind {
        "overloaded_error" => ProviderError::Upstream { status: 529 },
        "api_error" => ProviderError::Upstream { status: 500 },
        "rate_limit_error" => ProviderError::RateLimited {
            retry_after_secs: None,
        },
        "authentication_error" | "permission_error" => ProviderError::Unauthorized,
        "" => ProviderError::Malformed("error event without a type".into()),
        _ => ProviderError::Upstream { status: 502 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(data: &str) -> Event {
        Event {
            data: data.into(),
            ..Event::default()
        }
    }

    fn msg(role: &str, content: &str) -> PromptMessage {
        PromptMessage {
            role: role.into(),
            content: content.into(),
            ..PromptMessage::default()
        }
    }

    #[test]
    fn system_goes_to_the_top_level() {
        let p = AnthropicProvider::new(None, Secret::new("k"), "claude-x".into());
        let request = ChatRequest {
            messages: vec![
                msg("system", "One."),
                msg("user", "Hi"),
                msg("system", "Two."),
                msg("assistant", "Hello"),
                msg("tool", "42"),
            ],
            stop: vec!["END".into()],
            ..ChatRequest::default()
        };
        let body = serde_json::to_value(p.body(&request)).unwrap();
        assert_eq!(body["model"], "claude-x");
        assert_eq!(body["system"], "One.\n\nTwo.");
        assert_eq!(body["max_tokens"], DEFAULT_MAX_TOKENS);
        assert_eq!(body["stream"], true);
        assert_eq!(body["stop_sequences"], serde_json::json!(["END"]));
        assert!(body.get("temperature").is_none());
        let roles: Vec<_> = body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["role"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(roles, ["user", "assistant", "user"]);
    }

    #[test]
    fn decodes_a_whole_stream() {
        let mut d = AnthropicDecoder::new(vec![msg("user", "Hi")]);
        let mut out = VecDeque::new();
        let events = [
            r#"{"type":"message_start","message":{"usage":{"input_tokens":10,"cache_read_input_tokens":5,"output_tokens":1}}}"#,
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            r#"{"type":"ping"}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hel"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hmm"}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"lo"}}"#,
            r#"{"type":"content_block_stop","index":0}"#,
            r#"{"type":"message_delta","delta":{"stop_reason":"max_tokens"},"usage":{"output_tokens":2}}"#,
        ];
        for e in events {
            assert!(!d.event(ev(e), &mut out).unwrap());
        }
        assert!(d.event(ev(r#"{"type":"message_stop"}"#), &mut out).unwrap());
        let out: Vec<_> = out.into_iter().collect();
        assert_eq!(
            out,
            [
                StreamEvent::Token("Hel".into()),
                StreamEvent::Token("lo".into()),
                StreamEvent::Usage(Usage {
                    input_tokens: 15,
                    output_tokens: 2
                }),
                StreamEvent::Finish("length".into()),
            ]
        );
    }

    #[test]
    fn tool_use_blocks_stream_as_tool_call_pieces() {
        let mut d = AnthropicDecoder::new(vec![msg("user", "Hi")]);
        let mut out = VecDeque::new();
        for e in [
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Let me see."}}"#,
            r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{}}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"location\":"}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"\"Paris\"}"}}"#,
            r#"{"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":9}}"#,
        ] {
            assert!(!d.event(ev(e), &mut out).unwrap(), "{e}");
        }
        assert!(d.event(ev(r#"{"type":"message_stop"}"#), &mut out).unwrap());
        let out: Vec<_> = out.into_iter().collect();
        assert_eq!(out[0], StreamEvent::Token("Let me see.".into()));
        assert_eq!(
            out[1],
            StreamEvent::ToolCall(ToolCallDelta {
                index: 0,
                id: Some("toolu_1".into()),
                name: Some("get_weather".into()),
                arguments: String::new(),
            })
        );
        let args: String = out
            .iter()
            .filter_map(|e| match e {
                StreamEvent::ToolCall(d) => Some(d.arguments.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(args, r#"{"location":"Paris"}"#);
        assert_eq!(out.last(), Some(&StreamEvent::Finish("tool_calls".into())));
    }

    #[test]
    fn error_events_map_by_type() {
        let mut d = AnthropicDecoder::new(vec![]);
        let mut out = VecDeque::new();
        let err = |t: &str| format!(r#"{{"type":"error","error":{{"type":"{t}","message":"x"}}}}"#);
        assert_eq!(
            d.event(ev(&err("overloaded_error")), &mut out),
            Err(ProviderError::Upstream { status: 529 })
        );
        assert_eq!(
            d.event(ev(&err("api_error")), &mut out),
            Err(ProviderError::Upstream { status: 500 })
        );
        assert_eq!(
            d.event(ev(&err("rate_limit_error")), &mut out),
            Err(ProviderError::RateLimited {
                retry_after_secs: None
            })
        );
        assert!(matches!(
            d.event(ev("not json"), &mut out),
            Err(ProviderError::Malformed(_))
        ));
    }
}
