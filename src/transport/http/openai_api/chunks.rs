//! The streamed form of `POST /v1/chat/completions`: `chat.completion.chunk`
//! events ending in `[DONE]` (or an error event and no `[DONE]`, so a
//! truncated answer never looks complete). A batch of tokens is written as
//! one buffer of complete events from a prefix rendered once per stream.

use std::convert::Infallible;

use axum::{
    body::{Body, Bytes},
    http::header,
    response::{IntoResponse, Response},
};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::DropGuard;

use super::{completions::ending_error, usage_json};
use crate::{
    generation::{Ending, GenEvent, Status},
    providers::ToolCallDelta,
};

/// What every chunk of one completion repeats.
pub(super) struct ChunkHead {
    pub(super) id: String,
    pub(super) created: i64,
    pub(super) model: String,
    /// `data: {"id":…,"object":…,"created":…,"model":…,"choices":[{"index":0,"delta":`,
    /// rendered once: a token's chunk is this, its delta and [`CHUNK_TAIL`].
    prefix: String,
}

/// What follows a streamed chunk's delta while it has no finish reason yet.
const CHUNK_TAIL: &str = r#","logprobs":null,"finish_reason":null}]}"#;

impl ChunkHead {
    pub(super) fn new(id: String, created: i64, model: String) -> Self {
        let prefix = format!(
            r#"data: {{"id":{},"object":"chat.completion.chunk","created":{created},"model":{},"choices":[{{"index":0,"delta":"#,
            Value::from(id.as_str()),
            Value::from(model.as_str()),
        );
        Self {
            id,
            created,
            model,
            prefix,
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> Bytes {
        event(
            &json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                   "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]}),
        )
    }

    /// Every token's chunk as one buffer (one body frame, one write), without
    /// building a JSON value per token: this is the hot path of a stream.
    fn tokens(&self, tokens: &[String]) -> Bytes {
        let mut out = Vec::with_capacity(tokens.len() * (self.prefix.len() + 80));
        for t in tokens {
            out.extend_from_slice(self.prefix.as_bytes());
            out.extend_from_slice(br#"{"content":"#);
            // A string always serialises.
            let _ = serde_json::to_writer(&mut out, t);
            out.push(b'}');
            out.extend_from_slice(CHUNK_TAIL.as_bytes());
            out.extend_from_slice(b"\n\n");
        }
        Bytes::from(out)
    }

    /// The events that end a stream: finish, usage if asked, `[DONE]`; or an
    /// error and no `[DONE]`, so a truncated answer never looks complete.
    fn ending(&self, e: &Ending, include_usage: bool) -> Vec<Bytes> {
        if e.status != Status::Complete {
            return vec![event(&ending_error(e, true).body())];
        }
        let mut out = vec![self.chunk(json!({}), Some(&e.finish_reason))];
        if include_usage {
            let last = json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                              "model": self.model, "choices": [], "usage": usage_json(e.usage)});
            out.push(event(&last));
        }
        out.push(Bytes::from_static(b"data: [DONE]\n\n"));
        out
    }
}

/// One server-sent event carrying `v`.
fn event(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

/// One streamed tool-call piece as OpenAI sends it: the first piece of a call
/// has its id, type and name (and empty arguments), the rest only arguments.
fn delta_json(d: &ToolCallDelta) -> Value {
    match (&d.id, &d.name) {
        (Some(id), name) => json!({"index": d.index, "id": id, "type": "function",
                                   "function": {"name": name, "arguments": d.arguments}}),
        (None, Some(name)) => {
            json!({"index": d.index, "function": {"name": name, "arguments": d.arguments}})
        }
        (None, None) => json!({"index": d.index, "function": {"arguments": d.arguments}}),
    }
}

/// Streams the answer as `chat.completion.chunk` events; dropping the
/// response (the client left) drops `cancel_on_drop` and so the generation.
pub(super) fn stream_chunks(
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
                GenEvent::Tokens(t) => vec![head.tokens(&t)],
                GenEvent::ToolCalls(d) => d
                    .into_iter()
                    .map(|d| head.chunk(json!({"tool_calls": [delta_json(&d)]}), None))
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
    // What axum's `Sse` sends, without its per-event formatting: the chunks
    // are complete events already.
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The events of one SSE buffer, as JSON (`[DONE]` as a string).
    fn events(b: &[u8]) -> Vec<Value> {
        let text = std::str::from_utf8(b).unwrap();
        assert!(text.ends_with("\n\n"), "an event ends with a blank line");
        text.split_terminator("\n\n")
            .map(|e| {
                let data = e.strip_prefix("data: ").expect("one data line per event");
                serde_json::from_str(data).unwrap_or_else(|_| Value::from(data))
            })
            .collect()
    }

    #[test]
    fn token_chunks_say_what_the_generic_chunk_says() {
        let head = ChunkHead::new("chatcmpl-1".into(), 1_700_000_000, "m \"quoted\"".into());
        let tokens = vec![
            "Hello".to_owned(),
            " wörld \"\n\\ \u{1}".to_owned(),
            String::new(),
        ];
        let fast = events(&head.tokens(&tokens));
        let generic: Vec<Value> = tokens
            .iter()
            .flat_map(|t| events(&head.chunk(json!({"content": t}), None)))
            .collect();
        assert_eq!(fast, generic);
        assert_eq!(fast[1]["choices"][0]["delta"]["content"], tokens[1]);
        assert_eq!(fast[0]["model"], "m \"quoted\"");
    }

    #[test]
    fn a_complete_stream_ends_with_done_and_a_failed_one_without() {
        let head = ChunkHead::new("chatcmpl-1".into(), 1, "m".into());
        let mut e = Ending {
            status: Status::Complete,
            finish_reason: "stop".into(),
            error: None,
            provider: "p".into(),
            model: "m".into(),
            usage: crate::providers::Usage::default(),
            cost_micros: 0,
            fell_back: false,
        };
        let end: Vec<Value> = head
            .ending(&e, true)
            .iter()
            .flat_map(|b| events(b))
            .collect();
        assert_eq!(end[0]["choices"][0]["finish_reason"], "stop");
        assert!(end[1]["usage"].is_object());
        assert_eq!(end[2], "[DONE]");
        e.status = Status::Failed;
        let end: Vec<Value> = head
            .ending(&e, true)
            .iter()
            .flat_map(|b| events(b))
            .collect();
        assert_eq!(end.len(), 1);
        assert!(end[0]["error"].is_object());
    }
}
