//! One `chat.completion.chunk` as this provider reads it: into async-openai's
//! type straight from its text when it fits, otherwise parsed as JSON and read
//! leniently for its content, finish reason, usage and tool-call pieces; an
//! `error` object inside the stream becomes the matching [`ProviderError`].

use async_openai::types::chat::CreateChatCompletionStreamResponse;
use serde::Deserialize;
use serde_json::Value;

use crate::providers::{ProviderError, ToolCallDelta, Usage, http};

/// What this module needs from one chunk, however it was parsed.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Chunk {
    pub(super) content: Option<String>,
    pub(super) finish: Option<String>,
    pub(super) usage: Option<Usage>,
    pub(super) tool_calls: Vec<ToolCallDelta>,
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

/// One `data:` payload: async-openai's type first, then a lenient reading.
pub(super) fn parse_chunk(data: &str) -> Result<Chunk, ProviderError> {
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
