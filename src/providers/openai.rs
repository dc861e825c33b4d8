//! OpenAI's Chat Completions API, and every server that speaks it: vLLM,
//! Ollama, OpenRouter, Cloudflare's OpenAI-compatible endpoint.
//!
//! # Why not `async_openai::Client`
//! The wire format is async-openai's own types ([`CreateChatCompletionRequest`]
//! out, [`CreateChatCompletionStreamResponse`] in), but the request is sent with
//! reqwest and the stream read with [`super::sse`], because async-openai
//! 0.43's client breaks this module's contract in three ways:
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
    CreateChatCompletionStreamResponse, StopConfiguration,
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    ChatProvider, ChatRequest, EventStream, PromptMessage, ProviderError, StreamEvent,
    ToolCallDelta, Usage,
    http::{self, SseDecoder},
    sse::Event,
    tokenizer,
};
use crate::config::Secret;

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

/// What this module needs from one chunk, however it was parsed.
#[derive(Debug, Default, PartialEq)]
struct Chunk {
    content: Option<String>,
    finish: Option<String>,
    usage: Option<Usage>,
    tool_calls: Vec<ToolCallDelta>,
}

/// The `tool_calls` pieces of a chunk's first choice, read from the JSON.
fn tool_call_deltas(value: &Value) -> Vec<ToolCallDelta> {
    let calls = value
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| {
            c.iter()
                .find(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0)
        })
        .and_then(|c| c.get("delta")?.get("tool_calls")?.as_array());
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
    calls
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, c)| ToolCallDelta {
            index: c
                .get("index")
                .and_then(Value::as_u64)
                .map_or(i as u32, |n| u32::try_from(n).unwrap_or(0)),
            id: text(c.get("id")),
            name: text(c.get("function").and_then(|f| f.get("name"))),
            arguments: text(c.get("function").and_then(|f| f.get("arguments"))).unwrap_or_default(),
        })
        .collect()
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

/// One `data:` payload: async-openai's type first, then a lenient reading.
fn parse_chunk(data: &str) -> Result<Chunk, ProviderError> {
    // The common chunk, read into the typed form straight from its text: no
    // JSON value per token. Text with `"error"` in it (an error's key, now and
    // then a value) takes the path below, which looks for a stream error first.
    if !data.contains(r#""error""#)
        && let Ok(typed) = serde_json::from_str::<CreateChatCompletionStreamResponse>(data)
    {
        return Ok(from_typed(typed));
    }
    let value = http::parse_json(data)?;
    if let Some(error) = value.get("error").filter(|e| !e.is_null()) {
        return Err(stream_error(error));
    }
    // Read from the value in place, not from a clone of the whole chunk per token.
    match CreateChatCompletionStreamResponse::deserialize(&value) {
        Ok(typed) => Ok(from_typed(typed)),
        Err(strict) => {
            tracing::debug!(error = %strict, "chunk does not fit the OpenAI types; reading it leniently");
            let mut chunk = from_value(&value)?;
            chunk.tool_calls = tool_call_deltas(&value);
            Ok(chunk)
        }
    }
}

fn from_typed(chunk: CreateChatCompletionStreamResponse) -> Chunk {
    let choice = chunk.choices.into_iter().find(|c| c.index == 0);
    let (content, finish, calls) = match choice {
        Some(c) => (
            c.delta.content,
            c.finish_reason.and_then(|r| {
                serde_json::to_value(r)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
            }),
            c.delta.tool_calls.unwrap_or_default(),
        ),
        None => (None, None, Vec::new()),
    };
    Chunk {
        content,
        finish,
        tool_calls: calls
            .into_iter()
            .map(|c| {
                let (name, arguments) = c.function.map_or((None, None), |f| (f.name, f.arguments));
                ToolCallDelta {
                    index: c.index,
                    id: c.id,
                    name,
                    arguments: arguments.unwrap_or_default(),
                }
            })
            .collect(),
        usage: chunk.usage.map(|u| Usage {
            input_tokens: u.prompt_tokens,
            output_tokens: u.completion_tokens,
        }),
    }
}

/// The parts of a chunk that matter, from any JSON shaped roughly like one.
fn from_value(value: &Value) -> Result<Chunk, ProviderError> {
    let choices = value.get("choices").and_then(Value::as_array);
    let usage = value
        .get("usage")
        .filter(|u| u.is_object())
        .map(|u| -> Result<Usage, ProviderError> {
            let field = |name: &str| {
                u.get(name)
                    .and_then(Value::as_u64)
                    .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
                    .ok_or_else(|| ProviderError::Malformed(format!("usage without {name}")))
            };
            Ok(Usage {
                input_tokens: field("prompt_tokens")?,
                output_tokens: field("completion_tokens")?,
            })
        })
        .transpose()?;
    if choices.is_none() && usage.is_none() {
        return Err(ProviderError::Malformed(
            "chunk has neither choices nor usage".into(),
        ));
    }
    let choice = choices.and_then(|c| {
        c.iter()
            .find(|c| c.get("index").and_then(Value::as_u64).unwrap_or(0) == 0)
    });
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
    Ok(Chunk {
        content: text(choice.and_then(|c| c.get("delta")?.get("content"))),
        finish: text(choice.and_then(|c| c.get("finish_reason"))),
        usage,
        tool_calls: Vec::new(),
    })
}

/// An `error` object sent inside the stream.
fn stream_error(error: &Value) -> ProviderError {
    let status = error
        .get("code")
        .and_then(|c| {
            c.as_u64()
                .or_else(|| c.as_str().and_then(|s| s.parse().ok()))
        })
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| (400..600).contains(c));
    let message = error.get("message").and_then(Value::as_str).unwrap_or("");
    tracing::warn!(provider = "openai", message, "error inside the stream");
    match status {
        Some(401 | 403) => ProviderError::Unauthorized,
        Some(429) => ProviderError::RateLimited {
            retry_after_secs: None,
        },
        Some(status) => ProviderError::Upstream { status },
        None => ProviderError::Upstream { status: 502 },
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
    fn tool_call_chunks_become_tool_call_pieces() {
        let head = r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,
            "delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_1","type":"function",
            "function":{"name":"get_weather","arguments":""}}]},"finish_reason":null}]}"#;
        assert_eq!(
            parse_chunk(head).unwrap().tool_calls,
            [ToolCallDelta {
                index: 0,
                id: Some("call_1".into()),
                name: Some("get_weather".into()),
                arguments: String::new(),
            }]
        );
        let piece = r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,
            "delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"a\":1}"}}]},"finish_reason":null}]}"#;
        assert_eq!(
            parse_chunk(piece).unwrap().tool_calls,
            [ToolCallDelta {
                index: 0,
                arguments: r#"{"a":1}"#.into(),
                ..ToolCallDelta::default()
            }]
        );
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

    #[test]
    fn strict_and_lenient_chunks() {
        let strict = r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m",
            "choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}"#;
        assert_eq!(
            parse_chunk(strict).unwrap(),
            Chunk {
                content: Some("Hi".into()),
                ..Chunk::default()
            }
        );
        // no `created`, an unknown finish reason: read leniently
        let lenient = r#"{"choices":[{"index":0,"delta":{},"finish_reason":"abort"}],
            "usage":{"prompt_tokens":3,"completion_tokens":4}}"#;
        assert_eq!(
            parse_chunk(lenient).unwrap(),
            Chunk {
                content: None,
                finish: Some("abort".into()),
                usage: Some(Usage {
                    input_tokens: 3,
                    output_tokens: 4
                }),
                tool_calls: Vec::new(),
            }
        );
        assert!(matches!(
            parse_chunk(r#"{"hello":1}"#),
            Err(ProviderError::Malformed(_))
        ));
        assert!(matches!(
            parse_chunk("{oops"),
            Err(ProviderError::Malformed(_))
        ));
        assert_eq!(
            parse_chunk(r#"{"error":{"message":"boom","code":503}}"#),
            Err(ProviderError::Upstream { status: 503 })
        );
        assert_eq!(
            parse_chunk(r#"{"error":{"message":"boom","type":"server_error"}}"#),
            Err(ProviderError::Upstream { status: 502 })
        );
        // A chunk that fits the types but also carries an error is an error.
        let both = r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m",
            "choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}],"error":{"code":429}}"#;
        assert!(matches!(
            parse_chunk(both),
            Err(ProviderError::RateLimited { .. })
        ));
    }

    #[test]
    fn tool_calls_read_the_same_from_strict_and_lenient_chunks() {
        let calls = r#"[{"index":1,"id":"call_2","type":"function","function":{"name":"f","arguments":"{"}},
            {"index":2,"function":{"arguments":"}"}}]"#;
        let strict = format!(
            r#"{{"id":"c","object":"chat.completion.chunk","created":1,"model":"m",
            "choices":[{{"index":0,"delta":{{"tool_calls":{calls}}},"finish_reason":null}}]}}"#
        );
        // no `id`, `created` or `model`: not OpenAI's type
        let lenient = format!(r#"{{"choices":[{{"index":0,"delta":{{"tool_calls":{calls}}}}}]}}"#);
        let want = vec![
            ToolCallDelta {
                index: 1,
                id: Some("call_2".into()),
                name: Some("f".into()),
                arguments: "{".into(),
            },
            ToolCallDelta {
                index: 2,
                arguments: "}".into(),
                ..ToolCallDelta::default()
            },
        ];
        assert_eq!(parse_chunk(&strict).unwrap().tool_calls, want);
        assert_eq!(parse_chunk(&lenient).unwrap().tool_calls, want);
    }
}
