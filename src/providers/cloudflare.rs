//! Cloudflare Workers AI: `POST {base}/accounts/{account_id}/ai/run/{model}`
//! with a Bearer token and `{"messages": [...], "stream": true, "max_tokens": N}`.
//!
//! - The model name is put in the path as it is: `@cf/meta/llama-3.1-8b-instruct`
//!   keeps its slashes, which is what the endpoint expects.
//! - The stream is `data: {"response": "..."}` events, then `data: [DONE]`. The
//!   last chunks may carry `usage: {prompt_tokens, completion_tokens}`; without
//!   it, usage is counted with the tokenizer. Newer models may stream
//!   OpenAI-shaped chunks (`choices[0].delta.content`) on the same endpoint:
//!   those are read too.
//! - Workers AI names no finish reason, so the answer ends with `length` when
//!   the output reached `max_tokens` and `stop` otherwise (or the chunk's own
//!   `finish_reason`, if a model sends one).
//! - `stop` sequences are not part of the Workers AI schema and are not sent.
//! - For Cloudflare's OpenAI-compatible endpoint use
//!   [`OpenAiProvider`](super::openai::OpenAiProvider) with base
//!   `{base}/accounts/{account_id}/ai/v1`.

use std::collections::VecDeque;

use serde::Serialize;
use serde_json::Value;

use super::{
    ChatProvider, ChatRequest, EventStream, PromptMessage, ProviderError, StreamEvent, Usage,
    http::{self, SseDecoder},
    sse::Event,
    tokenizer,
};
use crate::config::Secret;

pub const DEFAULT_BASE_URL: &str = "https://api.cloudflare.com/client/v4";

pub struct CloudflareProvider {
    base_url: String,
    account_id: String,
    api_token: Secret,
    default_model: String,
    client: reqwest::Client,
}

#[derive(Debug, Serialize)]
struct RunRequest<'a> {
    messages: &'a [PromptMessage],
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence_penalty: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frequency_penalty: Option<f32>,
}

impl CloudflareProvider {
    /// `base_url` is the API root (`…/client/v4`); `None` means Cloudflare's.
    pub fn new(
        base_url: Option<String>,
        account_id: String,
        api_token: Secret,
        default_model: String,
    ) -> Self {
        Self {
            base_url: http::trim_base(base_url.as_deref().unwrap_or(DEFAULT_BASE_URL)),
            account_id,
            api_token,
            default_model,
            client: http::stream_client(),
        }
    }

    /// Uses `client` (its timeouts, proxy, pool) instead of the default one.
    pub fn with_http_client(mut self, client: reqwest::Client) -> Self {
        self.client = client;
        self
    }

    fn url(&self, model: &str) -> String {
        format!(
            "{}/accounts/{}/ai/run/{}",
            self.base_url,
            self.account_id,
            model.trim_start_matches('/')
        )
    }
}

impl ChatProvider for CloudflareProvider {
    fn name(&self) -> &str {
        "cloudflare"
    }

    fn default_model(&self) -> &str {
        &self.default_model
    }

    /// Workers AI's run API takes these three as OpenAI does; its tool and
    /// JSON modes differ per model, so tools and `response_format` are refused.
    fn supports(&self, param: &str) -> bool {
        matches!(param, "seed" | "presence_penalty" | "frequency_penalty")
    }

    fn stream(&self, request: ChatRequest) -> EventStream {
        let model = if request.model.is_empty() {
            &self.default_model
        } else {
            &request.model
        };
        let body = RunRequest {
            messages: &request.messages,
            stream: true,
            max_tokens: (request.max_tokens > 0).then_some(request.max_tokens),
            temperature: request.temperature,
            top_p: request.top_p,
            seed: request.options.seed,
            presence_penalty: request.options.presence_penalty,
            frequency_penalty: request.options.frequency_penalty,
        };
        let builder = self
            .client
            .post(self.url(model))
            .bearer_auth(self.api_token.expose())
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .json(&body);
        let decoder = CloudflareDecoder::new(request.messages, request.max_tokens);
        http::sse_stream("cloudflare", builder, Some(&self.api_token), decoder)
    }
}

struct CloudflareDecoder {
    prompt: Vec<PromptMessage>,
    max_tokens: u32,
    text: String,
    usage: Option<Usage>,
    finish: Option<String>,
}

impl CloudflareDecoder {
    fn new(prompt: Vec<PromptMessage>, max_tokens: u32) -> Self {
        Self {
            prompt,
            max_tokens,
            text: String::new(),
            usage: None,
            finish: None,
        }
    }
}

impl SseDecoder for CloudflareDecoder {
    fn event(
        &mut self,
        event: Event,
        out: &mut VecDeque<StreamEvent>,
    ) -> Result<bool, ProviderError> {
        let data = event.data.trim();
        if data == "[DONE]" {
            let usage = self.usage.unwrap_or_else(|| Usage {
                input_tokens: tokenizer::count_prompt(&self.prompt),
                output_tokens: tokenizer::count_tokens(&self.text),
            });
            let finish = self.finish.take().unwrap_or_else(|| {
                if self.max_tokens > 0 && usage.output_tokens >= self.max_tokens {
                    "length".into()
                } else {
                    "stop".into()
                }
            });
            out.push_back(StreamEvent::Usage(usage));
            out.push_back(StreamEvent::Finish(finish));
            return Ok(true);
        }
        if data.is_empty() {
            return Ok(false);
        }
        let value = http::parse_json(data)?;
        if !value.is_object() {
            return Err(ProviderError::Malformed(format!(
                "expected an object, got {data:.80}"
            )));
        }
        if let Some(errors) = value
            .get("errors")
            .and_then(Value::as_array)
            .filter(|e| !e.is_empty())
        {
            let errors = Value::from(errors.clone());
            tracing::warn!(provider = "cloudflare", %errors, "error inside the stream");
            return Err(ProviderError::Upstream { status: 502 });
        }
        let choice = value
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|c| c.first());
        let token = match value.get("response") {
            Some(Value::String(s)) => Some(s.as_str()),
            Some(Value::Null) | None => {
                choice.and_then(|c| c.get("delta")?.get("content")?.as_str())
            }
            Some(other) => {
                return Err(ProviderError::Malformed(format!(
                    "`response` is not text: {other}"
                )));
            }
        };
        if let Some(token) = token.filter(|t| !t.is_empty()) {
            self.text.push_str(token);
            out.push_back(StreamEvent::Token(token.to_owned()));
        }
        if let Some(reason) = choice
            .and_then(|c| c.get("finish_reason"))
            .or_else(|| value.get("finish_reason"))
            .and_then(Value::as_str)
        {
            self.finish = Some(reason.to_owned());
        }
        if let Some(usage) = value.get("usage").filter(|u| u.is_object()) {
            let n = |name: &str| {
                usage
                    .get(name)
                    .and_then(Value::as_u64)
                    .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
            };
            if let (Some(input), Some(output)) = (n("prompt_tokens"), n("completion_tokens")) {
                self.usage = Some(Usage {
                    input_tokens: input,
                    output_tokens: output,
                });
            }
        }
        Ok(false)
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

    #[test]
    fn model_keeps_its_slashes() {
        let p = CloudflareProvider::new(
            Some("http://h/client/v4/".into()),
            "acc".into(),
            Secret::new("t"),
            "@cf/meta/llama-3.1-8b-instruct".into(),
        );
        assert_eq!(
            p.url(p.default_model()),
            "http://h/client/v4/accounts/acc/ai/run/@cf/meta/llama-3.1-8b-instruct"
        );
    }

    #[test]
    fn reads_responses_usage_and_done() {
        let mut d = CloudflareDecoder::new(vec![], 2);
        let mut out = VecDeque::new();
        for e in [
            r#"{"response":"Hi"}"#,
            r#"{"response":"","p":"abcdef"}"#,
            r#"{"response":" there","usage":{"prompt_tokens":7,"completion_tokens":2,"total_tokens":9}}"#,
        ] {
            assert!(!d.event(ev(e), &mut out).unwrap());
        }
        assert!(d.event(ev("[DONE]"), &mut out).unwrap());
        let out: Vec<_> = out.into_iter().collect();
        assert_eq!(
            out,
            [
                StreamEvent::Token("Hi".into()),
                StreamEvent::Token(" there".into()),
                StreamEvent::Usage(Usage {
                    input_tokens: 7,
                    output_tokens: 2
                }),
                StreamEvent::Finish("length".into()),
            ]
        );
    }

    #[test]
    fn rejects_what_is_not_a_chunk() {
        let mut d = CloudflareDecoder::new(vec![], 10);
        let mut out = VecDeque::new();
        assert!(matches!(
            d.event(ev("{oops"), &mut out),
            Err(ProviderError::Malformed(_))
        ));
        assert!(matches!(
            d.event(ev("[1,2]"), &mut out),
            Err(ProviderError::Malformed(_))
        ));
        assert!(matches!(
            d.event(ev(r#"{"response":5}"#), &mut out),
            Err(ProviderError::Malformed(_))
        ));
    }
}
