//! OpenAI's Chat Completions API, and every server that speaks it: vLLM,
//! Ollama, OpenRouter, Cloudflare's OpenAI-compatible endpoint.
//!
//! # Why not `async_openai::Client`
//! The wire format is async-openai's own types ([`CreateChatCompletionRequest`]
//! out, `CreateChatCompletionStreamResponse` in, read by `chunk.rs`), but the
//! request is sent with reqwest and the stream read with [`super::sse`],
//! because async-openai 0.43's client breaks this module's contract in three
//! ways:
//! - it retries 429 and 5xx itself (three times, with backoff), so a fallback
//!   comes seconds late, and the provider actor's own policy is second-guessed;
//! - its errors drop the response headers, so `Retry-After` is lost;
//! - its stream ends the same way on `data: [DONE]` and on a connection that
//!   closed early, so a truncated answer would look complete.
//!
//! # Wire details
//! - `stream_options.include_usage` is always asked for: the usage chunk (empty
//!   `choices`) comes after the chunk with `finish_reason` and before `[DONE]`.
//!   A server that sends none gets its usage counted with the tokenizer.
//! - The answer's length is capped with `max_completion_tokens` on OpenAI itself
//!   (reasoning models reject `max_tokens`) and with `max_tokens` on any other
//!   base URL, which is what compatible servers understand.
//! - A chunk that does not fit async-openai's strict types (a compatible server
//!   leaving out `created`, or inventing a `finish_reason`) is read leniently
//!   for its content, finish reason and usage; only a chunk that is not JSON, or
//!   has neither `choices` nor `usage`, is [`ProviderError::Malformed`].
//! - Tools, tool choice, `response_format`, `seed`, the penalties and `user`
//!   go out as OpenAI's own fields; assistant turns with `tool_calls` and
//!   `tool` turns are written as OpenAI's messages; streamed `tool_calls`
//!   pieces come back as [`StreamEvent::ToolCall`]. `logprobs` is refused
//!   (the stream engine does not carry them back).
//! - `data: {"error": {...}}` in the middle of a stream (OpenAI and OpenRouter
//!   send it) ends the stream with the error's status code as
//!   [`ProviderError::Upstream`] (502 when it names none).

use std::collections::VecDeque;

use async_openai::types::chat::{
    ChatCompletionRequestAssistantMessage, ChatCompletionRequestDeveloperMessage,
    ChatCompletionRequestMessage, ChatCompletionRequestSystemMessage,
    ChatCompletionRequestUserMessage, ChatCompletionStreamOptions, CreateChatCompletionRequest,
    StopConfiguration,
};
use serde_json::{Value, json};

use super::{
    ChatProvider, ChatRequest, EventStream, PromptMessage, ProviderError, StreamEvent, Usage,
    http::{self, SseDecoder},
    sse::Event,
    tokenizer,
};
use crate::config::Secret;

mod chunk;

use chunk::parse_chunk;

/// OpenAI's own API, used when no base URL is configured.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

pub struct OpenAiProvider {
    /// Without the trailing slash; `/chat/completions` is appended.
    base_url: String,
    api_key: Option<Secret>,
    default_model: String,
    client: reqwest::Client,
}

impl OpenAiProvider {
    /// `base_url` is the API root including its version (`…/v1`); `None` means
    /// OpenAI. `api_key` goes out as `Authorization: Bearer`; a local server
    /// such as Ollama or vLLM may need none.
    pub fn new(base_url: Option<String>, api_key: Option<Secret>, default_model: String) -> Self {
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

    fn is_openai(&self) -> bool {
        self.base_url == DEFAULT_BASE_URL
    }

    /// The request body, in async-openai's types.
    // `max_tokens` is deprecated by OpenAI, and still what compatible servers read.
    #[allow(
        deprecated,
        reason = "max_tokens is what OpenAI-compatible servers read"
    )]
    fn typed_body(&self, request: &ChatRequest) -> CreateChatCompletionRequest {
        let max_tokens = (request.max_tokens > 0).then_some(request.max_tokens);
        let (max_completion_tokens, max_tokens) = if self.is_openai() {
            (max_tokens, None)
        } else {
            (None, max_tokens)
        };
        let model = if request.model.is_empty() {
            self.default_model.clone()
        } else {
            request.model.clone()
        };
        CreateChatCompletionRequest {
            model,
            messages: request.messages.iter().map(message).collect(),
            stream: Some(true),
            stream_options: Some(ChatCompletionStreamOptions {
                include_usage: Some(true),
                ..Default::default()
            }),
            max_completion_tokens,
            max_tokens,
            temperature: request.temperature,
            top_p: request.top_p,
            stop: (!request.stop.is_empty())
                .then(|| StopConfiguration::StringArray(request.stop.clone())),
            ..Default::default()
        }
    }
}

/// The request body: async-openai's typed request, with what it cannot say
/// simply (tool calls in the history, tool results, the options) written in
/// OpenAI's JSON as the client sent it.
impl OpenAiProvider {
    fn body(&self, request: &ChatRequest) -> Value {
        let mut body = serde_json::to_value(self.typed_body(request)).unwrap_or_default();
        if let Some(messages) = body.get_mut("messages").and_then(Value::as_array_mut) {
            for (out, m) in messages.iter_mut().zip(&request.messages) {
                if m.role == "tool" {
                    *out = json!({"role": "tool", "content": m.content,
                                  "tool_call_id": m.tool_call_id});
                } else if !m.tool_calls.is_empty() {
                    let calls: Vec<Value> = m
                        .tool_calls
                        .iter()
                        .map(|c| {
                            json!({"id": c.id, "type": "function",
                                        "function": {"name": c.name, "arguments": c.arguments}})
                        })
                        .collect();
                    out["tool_calls"] = json!(calls);
                    if m.content.is_empty() {
                        out["content"] = Value::Null;
                    }
                }
            }
        }
        let o = &request.options;
        let mut set = |k: &str, v: Value| {
            body[k] = v;
        };
        if !o.tools.is_empty() {
            set("tools", o.tools.iter().map(|t| t.to_openai()).collect());
        }
        if let Some(c) = &o.tool_choice {
            set("tool_choice", c.to_openai());
        }
        if let Some(p) = o.parallel_tool_calls {
            set("parallel_tool_calls", json!(p));
        }
        if let Some(f) = &o.response_format {
            set("response_format", f.to_openai());
        }
        if let Some(seed) = o.seed {
            set("seed", json!(seed));
        }
        if let Some(p) = o.presence_penalty {
            set("presence_penalty", json!(p));
        }
        if let Some(p) = o.frequency_penalty {
            set("frequency_penalty", json!(p));
        }
        if let Some(u) = &o.user {
            set("user", json!(u));
        }
        body
    }
}

/// One prompt message in OpenAI's shape; unknown roles are sent as the user's.
fn message(m: &PromptMessage) -> ChatCompletionRequestMessage {
    let content = m.content.clone();
    match m.role.as_str() {
        "system" => ChatCompletionRequestSystemMessage::from(content).into(),
        "developer" => ChatCompletionRequestDeveloperMessage::from(content).into(),
        "assistant" => ChatCompletionRequestAssistantMessage::from(content).into(),
        _ => ChatCompletionRequestUserMessage::from(content).into(),
    }
}

impl ChatProvider for OpenAiProvider {
    fn name(&self) -> &str {
        "openai"
    }

    fn default_model(&self) -> &str {
        &self.default_model
    }

    /// Everything but logprobs, which the stream engine does not carry back.
    fn supports(&self, param: &str) -> bool {
        !matches!(param, "logprobs" | "top_logprobs")
    }

    fn stream(&self, request: ChatRequest) -> EventStream {
        let mut builder = self
            .client
            .post(format!("{}/chat/completions", self.base_url))
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .json(&self.body(&request));
        if let Some(key) = &self.api_key {
            builder = builder.bearer_auth(key.expose());
        }
        http::sse_stream(
            "openai",
            builder,
            self.api_key.as_ref(),
            OpenAiDecoder::new(request.messages),
        )
    }
}

/// Reads `chat.completion.chunk` events until `[DONE]`.
struct OpenAiDecoder {
    /// Kept to count the prompt if the server reports no usage.
    prompt: Vec<PromptMessage>,
    text: String,
    finish: Option<String>,
    usage: Option<Usage>,
}

impl OpenAiDecoder {
    fn new(prompt: Vec<PromptMessage>) -> Self {
        Self {
            prompt,
            text: String::new(),
            finish: None,
            usage: None,
        }
    }

    fn usage(&self) -> Usage {
        self.usage.unwrap_or_else(|| Usage {
            input_tokens: tokenizer::count_prompt(&self.prompt),
            output_tokens: tokenizer::count_tokens(&self.text),
        })
    }
}

impl SseDecoder for OpenAiDecoder {
    fn event(
        &mut self,
        event: Event,
        out: &mut VecDeque<StreamEvent>,
    ) -> Result<bool, ProviderError> {
        let data = event.data.trim();
        if data == "[DONE]" {
            out.push_back(StreamEvent::Usage(self.usage()));
            let finish = self.finish.take().unwrap_or_else(|| "stop".to_owned());
            out.push_back(StreamEvent::Finish(finish));
            return Ok(true);
        }
        if data.is_empty() || matches!(&*event.event, "keepalive" | "ping") {
            return Ok(false);
        }
        let chunk = parse_chunk(data)?;
        if let Some(content) = chunk.content.filter(|c| !c.is_empty()) {
            self.text.push_str(&content);
            out.push_back(StreamEvent::Token(content));
        }
        for call in chunk.tool_calls {
            self.text.push_str(&call.arguments);
            out.push_back(StreamEvent::ToolCall(call));
        }
        if chunk.finish.is_some() {
            self.finish = chunk.finish;
        }
        if chunk.usage.is_some() {
            self.usage = chunk.usage;
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> ChatRequest {
        ChatRequest {
            model: String::new(),
            messages: vec![
                PromptMessage {
                    role: "system".into(),
                    content: "Be brief.".into(),
                    ..PromptMessage::default()
                },
                PromptMessage {
                    role: "user".into(),
                    content: "Hi".into(),
                    ..PromptMessage::default()
                },
            ],
            max_tokens: 64,
            temperature: Some(0.5),
            top_p: None,
            stop: vec!["\n\n".into()],
            ..ChatRequest::default()
        }
    }

    #[test]
    fn body_asks_for_usage_and_uses_the_default_model() {
        let p = OpenAiProvider::new(None, None, "gpt-4o-mini".into());
        let body = serde_json::to_value(p.body(&request())).unwrap();
        assert_eq!(body["model"], "gpt-4o-mini");
        assert_eq!(body["stream"], true);
        assert_eq!(body["stream_options"]["include_usage"], true);
        assert_eq!(body["max_completion_tokens"], 64);
        assert!(body.get("max_tokens").is_none());
        assert_eq!(body["temperature"], 0.5);
        assert!(body.get("top_p").is_none());
        assert_eq!(body["stop"], serde_json::json!(["\n\n"]));
        assert_eq!(body["messages"][0]["role"], "system");
        assert_eq!(body["messages"][0]["content"], "Be brief.");
        assert_eq!(body["messages"][1]["role"], "user");
    }

    #[test]
    fn compatible_servers_get_max_tokens() {
        let p = OpenAiProvider::new(Some("http://localhost:11434/v1/".into()), None, "m".into());
        assert_eq!(p.base_url, "http://localhost:11434/v1");
        let body = serde_json::to_value(p.body(&request())).unwrap();
        assert_eq!(body["max_tokens"], 64);
        assert!(body.get("max_completion_tokens").is_none());
    }

    #[test]
    fn options_and_tool_turns_go_out_as_openai_fields() {
        let p = OpenAiProvider::new(None, None, "gpt-4o-mini".into());
        let mut r = request();
        r.messages.push(PromptMessage {
            role: "assistant".into(),
            tool_calls: vec![crate::providers::ToolCall {
                id: "call_1".into(),
                name: "f".into(),
                arguments: "{}".into(),
            }],
            ..PromptMessage::default()
        });
        r.messages.push(PromptMessage {
            role: "tool".into(),
            content: "42".into(),
            tool_call_id: Some("call_1".into()),
            ..PromptMessage::default()
        });
        r.options.seed = Some(3);
        r.options.tool_choice = Some(crate::providers::ToolChoice::Required);
        let body = p.body(&r);
        assert_eq!(body["seed"], 3);
        assert_eq!(body["tool_choice"], "required");
        assert_eq!(
            body["messages"][2]["tool_calls"][0]["function"]["name"],
            "f"
        );
        assert!(body["messages"][2]["content"].is_null());
        assert_eq!(
            body["messages"][3],
            json!({"role": "tool", "content": "42", "tool_call_id": "call_1"})
        );
        assert!(p.supports("tools") && !p.supports("logprobs"));
    }
}
