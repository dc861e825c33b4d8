//! The built-in simulated provider: the default when no key is set, and the
//! engine of the load tests. Its answer is a pure function of the prompt, so
//! tests can predict it; its timing and failures come from config.
//!
//! Tools and structured output, deterministically, so SDK tests can drive them:
//! - with tools enabled and the last turn not a tool result, it calls the tools
//!   whose names (or names with `_` as spaces) the last message mentions, all of
//!   them unless `parallel_tool_calls` is false (`tool_choice: required` calls
//!   the first tool when none is mentioned; a named function is always called);
//!   arguments are an instance of the tool's JSON schema ([`sample_json`]);
//! - after a tool result it answers `Tool <name> returned: <result>`;
//! - `response_format` `json_schema` answers an instance of the schema,
//!   `json_object` answers `{"answer": "<the usual words>"}`.
//!
//! It refuses `logprobs`, which it cannot produce.

use std::{collections::VecDeque, time::Duration};

use futures::StreamExt;
use rand::{Rng, SeedableRng, rngs::StdRng};
use sha2::{Digest, Sha256};

use serde_json::{Map, Value, json};

use super::{
    ChatProvider, ChatRequest, EventStream, PromptMessage, ProviderError, ResponseFormat,
    StreamEvent, ToolCallDelta, ToolChoice, ToolDef, Usage, estimate_tokens, tokenizer,
};
pub use crate::config::SimulatedConfig;

const WORDS: &[&str] = &[
    "switchboard",
    "routes",
    "every",
    "token",
    "through",
    "a",
    "small",
    "actor",
    "that",
    "keeps",
    "order",
    "and",
    "the",
    "answer",
    "arrives",
    "in",
    "pieces",
    "while",
    "budgets",
    "hold",
    "steady",
    "so",
    "nothing",
    "is",
    "lost",
    "when",
    "providers",
    "fail",
    "or",
    "clients",
    "reconnect",
    "later",
    "with",
    "their",
    "last",
    "seq",
];

pub struct SimulatedProvider {
    config: SimulatedConfig,
}

/// The deterministic answer to a prompt: `n` tokens, each a word and a space.
pub fn reply_tokens(prompt: &str, n: u32) -> Vec<String> {
    let seed: [u8; 32] = Sha256::digest(prompt.as_bytes()).into();
    let mut rng = StdRng::from_seed(seed);
    (0..n)
        .map(|i| {
            let w = WORDS[rng.random_range(0..WORDS.len())];
            if i + 1 == n {
                format!("{w}.")
            } else {
                format!("{w} ")
            }
        })
        .collect()
}

impl SimulatedProvider {
    pub fn new(config: SimulatedConfig) -> Self {
        Self { config }
    }
}

impl ChatProvider for SimulatedProvider {
    fn name(&self) -> &str {
        "simulated"
    }

    fn default_model(&self) -> &str {
        "sim-1"
    }

    fn supports(&self, param: &str) -> bool {
        !matches!(param, "logprobs" | "top_logprobs")
    }

    fn stream(&self, request: ChatRequest) -> EventStream {
        let prompt = request
            .messages
            .last()
            .map(|m| m.content.clone())
            .unwrap_or_default();
        let input_tokens: u32 = request
            .messages
            .iter()
            .map(|m| estimate_tokens(&m.content))
            .sum();
        let planned = planned_reply(&request, &prompt, self.config.reply_tokens);
        // A plain answer cut by max_tokens is a shorter answer (it still ends
        // with its full stop), as before tools existed; others are cut as a prefix.
        let (tokens, calls, n, full) = match planned {
            Reply::Text(all, full) => {
                let n = full.min(request.max_tokens).max(1);
                let tokens: Vec<String> = all.into_iter().take(n as usize).collect();
                (tokens, Vec::new(), n, full)
            }
            Reply::Calls(calls) => {
                let n: u32 = calls
                    .iter()
                    .map(|c| {
                        tokenizer::count_tokens(&c.name) + tokenizer::count_tokens(&c.arguments)
                    })
                    .sum();
                (Vec::new(), calls, n.max(1), n.max(1))
            }
        };
        let cfg = self.config.clone();
        let fail_roll: f64 = rand::rng().random();
        // Half the failures come before the first token (a fallback can still
        // help), half in the middle (it cannot).
        let fail_before = fail_roll < cfg.failure_rate / 2.0;
        let fail_midway = !fail_before && fail_roll < cfg.failure_rate;
        let finish = if !calls.is_empty() {
            "tool_calls"
        } else if n < full {
            "length"
        } else {
            "stop"
        };
        // The whole answer as a script of events and when each is due, from
        // now: like a real provider, the model keeps its pace however late the
        // consumer reads (what is overdue comes at once), and the stream is
        // polled by its consumer's own task, with no task or channel of its
        // own per answer.
        let ttft = Duration::from_millis(cfg.ttft_ms);
        let gap = Duration::from_millis(cfg.token_delay_ms);
        let mut script = Script::new();
        if fail_before {
            script.push_back((ttft, Err(ProviderError::Upstream { status: 503 })));
        } else {
            let mut at = ttft;
            let mut failed = false;
            for (i, t) in tokens.into_iter().enumerate() {
                at = ttft + gap.saturating_mul(u32::try_from(i).unwrap_or(u32::MAX));
                if fail_midway && i == (n as usize) / 2 {
                    script.push_back((at, Err(ProviderError::Disconnected)));
                    failed = true;
                    break;
                }
                script.push_back((at, Ok(StreamEvent::Token(t))));
            }
            if !failed {
                let usage = Usage {
                    input_tokens,
                    output_tokens: n,
                };
                let ending = [
                    StreamEvent::Usage(usage),
                    StreamEvent::Finish(finish.to_owned()),
                ];
                let events = call_deltas(&calls)
                    .into_iter()
                    .map(StreamEvent::ToolCall)
                    .chain(ending);
                script.extend(events.map(|e| (at, Ok(e))));
            }
        }
        play(script)
    }
}

/// Events and when each is due, counted from when the answer was asked for.
type Script = VecDeque<(Duration, Result<StreamEvent, ProviderError>)>;

/// Plays `script` from now: each event when it is due, or at once if it is overdue.
fn play(script: Script) -> EventStream {
    let start = tokio::time::Instant::now();
    futures::stream::unfold(script, move |mut script| async move {
        let (at, event) = script.pop_front()?;
        let due = start + at;
        if due > tokio::time::Instant::now() {
            tokio::time::sleep_until(due).await;
        }
        Some((event, script))
    })
    .boxed()
}

/// What the simulated model answers: text tokens, or tool calls.
enum Reply {
    /// The tokens, and how many a whole answer has (more than given when the
    /// plain answer was already made to fit `max_tokens`).
    Text(Vec<String>, u32),
    Calls(Vec<super::ToolCall>),
}

fn planned_reply(request: &ChatRequest, prompt: &str, reply_len: u32) -> Reply {
    let opts = &request.options;
    let last = request.messages.last();
    if let Some(last) = last.filter(|m| m.role == "tool") {
        let name = tool_name_of(&request.messages, last.tool_call_id.as_deref());
        return text(words(&format!("Tool {name} returned: {}", last.content)));
    }
    if opts.tools_enabled() {
        let chosen = chosen_tools(&opts.tools, opts.tool_choice.as_ref(), prompt);
        let chosen: Vec<&ToolDef> = if opts.parallel_tool_calls == Some(false) {
            chosen.into_iter().take(1).collect()
        } else {
            chosen
        };
        if !chosen.is_empty() {
            let calls = chosen
                .into_iter()
                .enumerate()
                .map(|(i, t)| super::ToolCall {
                    id: call_id(prompt, &t.name, i),
                    name: t.name.clone(),
                    arguments: sample_json(&t.parameters, &t.parameters, prompt).to_string(),
                })
                .collect();
            return Reply::Calls(calls);
        }
    }
    match &opts.response_format {
        Some(ResponseFormat::JsonSchema { schema, .. }) => {
            text(pieces(&sample_json(schema, schema, prompt).to_string()))
        }
        Some(ResponseFormat::JsonObject) => {
            let answer = reply_tokens(prompt, reply_len.clamp(1, 8)).concat();
            text(pieces(&json!({ "answer": answer }).to_string()))
        }
        _ => Reply::Text(
            reply_tokens(prompt, reply_len.min(request.max_tokens).max(1)),
            reply_len,
        ),
    }
}

fn text(tokens: Vec<String>) -> Reply {
    let n = tokens.len() as u32;
    Reply::Text(tokens, n)
}

/// The tools a prompt asks for, in the order they were given.
fn chosen_tools<'a>(
    tools: &'a [ToolDef],
    choice: Option<&ToolChoice>,
    prompt: &str,
) -> Vec<&'a ToolDef> {
    let lower = prompt.to_lowercase();
    let named: Vec<&ToolDef> = tools
        .iter()
        .filter(|t| {
            let n = t.name.to_lowercase();
            lower.contains(&n) || lower.contains(&n.replace('_', " "))
        })
        .collect();
    match choice {
        Some(ToolChoice::None) => Vec::new(),
        Some(ToolChoice::Function(name)) => {
            tools.iter().filter(|t| &t.name == name).take(1).collect()
        }
        Some(ToolChoice::Required) if named.is_empty() => tools.iter().take(1).collect(),
        _ => named,
    }
}

fn tool_name_of(messages: &[PromptMessage], id: Option<&str>) -> String {
    messages
        .iter()
        .flat_map(|m| &m.tool_calls)
        .find(|c| Some(c.id.as_str()) == id)
        .map_or_else(|| "tool".to_owned(), |c| c.name.clone())
}

fn call_id(prompt: &str, name: &str, i: usize) -> String {
    let h = Sha256::digest(format!("{prompt}\u{0}{name}\u{0}{i}").as_bytes());
    format!("call_{}", &hex::encode(h)[..24])
}

/// Words with their trailing space, as the text reply is streamed.
fn words(text: &str) -> Vec<String> {
    let mut out: Vec<String> = text.split_inclusive(' ').map(str::to_owned).collect();
    if out.is_empty() {
        out.push(String::new());
    }
    out
}

/// `text` in pieces of up to eight characters, as a model streams JSON.
fn pieces(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars.chunks(8).map(|c| c.iter().collect()).collect()
}

/// OpenAI's streaming of tool calls: per call, its id and name with empty
/// arguments, then the arguments in pieces.
fn call_deltas(calls: &[super::ToolCall]) -> Vec<ToolCallDelta> {
    let mut out = Vec::new();
    for (i, c) in calls.iter().enumerate() {
        let index = i as u32;
        out.push(ToolCallDelta {
            index,
            id: Some(c.id.clone()),
            name: Some(c.name.clone()),
            arguments: String::new(),
        });
        for p in pieces(&c.arguments) {
            out.push(ToolCallDelta {
                index,
                arguments: p,
                ..ToolCallDelta::default()
            });
        }
    }
    out
}

/// A deterministic instance of a JSON schema: every property, the first enum
/// value or `const`, strings from the prompt's last capitalised word, 42 for
/// integers, 4.2 for numbers, `true`, one-item arrays; `$ref`s into
/// `$defs`/`definitions` of `root` are followed (to a depth of 16).
pub fn sample_json(schema: &Value, root: &Value, prompt: &str) -> Value {
    sample_at(schema, root, prompt, "value", 0)
}

fn sample_at(schema: &Value, root: &Value, prompt: &str, name: &str, depth: u32) -> Value {
    if depth > 16 {
        return Value::Null;
    }
    let Some(obj) = schema.as_object() else {
        return Value::Null;
    };
    if let Some(r) = obj.get("$ref").and_then(Value::as_str) {
        let target = r
            .strip_prefix("#/")
            .map(|path| path.split('/').fold(root, |v, k| &v[k]))
            .filter(|v| !v.is_null());
        return match target {
            Some(t) => sample_at(t, root, prompt, name, depth + 1),
            None => Value::Null,
        };
    }
    if let Some(c) = obj.get("const") {
        return c.clone();
    }
    if let Some(first) = obj
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return first.clone();
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(options) = obj.get(key).and_then(Value::as_array) {
            let pick = options
                .iter()
                .find(|o| o.get("type").and_then(Value::as_str) != Some("null"))
                .or_else(|| options.first());
            if let Some(p) = pick {
                return sample_at(p, root, prompt, name, depth + 1);
            }
        }
    }
    let kind = match obj.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("null"),
        _ if obj.contains_key("properties") => "object",
        _ => "string",
    };
    match kind {
        "object" => {
            let mut out = Map::new();
            if let Some(props) = obj.get("properties").and_then(Value::as_object) {
                for (k, v) in props {
                    out.insert(k.clone(), sample_at(v, root, prompt, k, depth + 1));
                }
            }
            Value::Object(out)
        }
        "array" => {
            let item = obj
                .get("items")
                .map_or(Value::Null, |i| sample_at(i, root, prompt, name, depth + 1));
            json!([item])
        }
        "integer" => json!(42),
        "number" => json!(4.2),
        "boolean" => json!(true),
        "null" => Value::Null,
        _ => json!(prompt_word(prompt).unwrap_or_else(|| name.to_owned())),
    }
}

/// The prompt's first capitalised word that does not start a sentence,
/// without punctuation (`Paris` in "What is the weather in Paris? Use it").
fn prompt_word(prompt: &str) -> Option<String> {
    let mut sentence_start = true;
    for w in prompt.split_whitespace() {
        let starts = sentence_start;
        sentence_start = w.ends_with(['.', '?', '!', ':']);
        let bare = w.trim_matches(|c: char| !c.is_alphanumeric());
        if !starts && bare.chars().next().is_some_and(char::is_uppercase) {
            return Some(bare.to_owned());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    use crate::providers::PromptMessage;

    fn req(prompt: &str, max_tokens: u32) -> ChatRequest {
        ChatRequest {
            model: "sim-1".into(),
            messages: vec![PromptMessage {
                role: "user".into(),
                content: prompt.into(),
                ..PromptMessage::default()
            }],
            max_tokens,
            ..ChatRequest::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn answer_is_deterministic_and_complete() {
        let p = SimulatedProvider::new(SimulatedConfig {
            reply_tokens: 5,
            ..Default::default()
        });
        let events: Vec<_> = p.stream(req("hello", 100)).collect().await;
        let text: String = events
            .iter()
            .filter_map(|e| match e {
                Ok(StreamEvent::Token(t)) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(text, reply_tokens("hello", 5).concat());
        assert!(text.ends_with('.'));
        assert_eq!(
            events[events.len() - 2],
            Ok(StreamEvent::Usage(Usage {
                input_tokens: 2,
                output_tokens: 5
            }))
        );
        assert_eq!(
            events.last().unwrap(),
            &Ok(StreamEvent::Finish("stop".into()))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_keep_the_model_s_pace_however_late_they_are_read() {
        let p = SimulatedProvider::new(SimulatedConfig {
            ttft_ms: 100,
            token_delay_ms: 10,
            reply_tokens: 5,
            failure_rate: 0.0,
        });
        let start = tokio::time::Instant::now();
        let mut stream = p.stream(req("hello", 100));
        assert!(matches!(
            stream.next().await,
            Some(Ok(StreamEvent::Token(_)))
        ));
        assert_eq!(start.elapsed(), Duration::from_millis(100));
        // Read late: the tokens due at 110 and 120 ms are there at once, the
        // one due at 130 ms is not.
        tokio::time::sleep(Duration::from_millis(25)).await;
        for _ in 0..2 {
            let overdue = stream.next().now_or_never();
            assert!(matches!(overdue, Some(Some(Ok(StreamEvent::Token(_))))));
        }
        assert!(stream.next().now_or_never().is_none());
        assert!(matches!(
            stream.next().await,
            Some(Ok(StreamEvent::Token(_)))
        ));
        assert_eq!(start.elapsed(), Duration::from_millis(130));
    }

    #[tokio::test(start_paused = true)]
    async fn max_tokens_truncates_with_length() {
        let p = SimulatedProvider::new(SimulatedConfig {
            reply_tokens: 50,
            ..Default::default()
        });
        let events: Vec<_> = p.stream(req("hello", 3)).collect().await;
        assert_eq!(
            events
                .iter()
                .filter(|e| matches!(e, Ok(StreamEvent::Token(_))))
                .count(),
            3
        );
        assert_eq!(
            events.last().unwrap(),
            &Ok(StreamEvent::Finish("length".into()))
        );
    }

    #[test]
    fn sample_json_follows_refs_enums_and_nullable_types() {
        let schema = json!({
            "type": "object",
            "properties": {
                "city": {"$ref": "#/$defs/City"},
                "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}},
                "note": {"anyOf": [{"type": "null"}, {"type": "integer"}]},
                "kind": {"type": ["null", "boolean"]},
            },
            "$defs": {"City": {"type": "object", "properties": {"name": {"type": "string"}, "pop": {"type": "number"}}}},
        });
        assert_eq!(
            sample_json(&schema, &schema, "Tell me about Lyon please"),
            json!({"city": {"name": "Lyon", "pop": 4.2}, "tags": ["a"], "note": 42, "kind": true})
        );
        assert_eq!(
            prompt_word("What is the weather in Paris? Use it."),
            Some("Paris".into())
        );
        assert_eq!(prompt_word("Hello there."), None);
    }

    #[tokio::test(start_paused = true)]
    async fn failure_rate_one_always_fails() {
        let p = SimulatedProvider::new(SimulatedConfig {
            failure_rate: 1.0,
            ..Default::default()
        });
        for _ in 0..10 {
            let events: Vec<_> = p.stream(req("x", 10)).collect().await;
            assert!(events.last().unwrap().is_err());
        }
    }
}
