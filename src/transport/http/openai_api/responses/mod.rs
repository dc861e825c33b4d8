//! `POST /v1/responses`: OpenAI's Responses API (what the Vercel AI SDK's
//! `openai("model")` and the Python SDK's `client.responses` call), over the
//! same generation lifecycle as `/v1/chat/completions` (`plan_request`,
//! `spawn`, one bill), so routing, limits and budgets hold the same.
//!
//! Input is a string or input items (messages with text parts,
//! `function_call`, `function_call_output`); `instructions` is a system turn.
//! Nothing is stored: `previous_response_id`, `item_reference` and
//! `conversation` are refused, and `store` is accepted but means nothing.
//!
//! Streaming sends OpenAI's typed events, each with its `sequence_number`:
//! `response.created`, `response.in_progress`, then per output item
//! `response.output_item.added`, for a message `response.content_part.added`,
//! `response.output_text.delta`…, `response.output_text.done`,
//! `response.content_part.done`, for a function call
//! `response.function_call_arguments.delta`…, `…arguments.done`, then
//! `response.output_item.done`; last `response.completed` (or
//! `response.incomplete` when cut at `max_output_tokens`) with usage. A
//! failure after the start ends with `response.failed` (no `completed`).

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
use serde_json::{Value, json};
use uuid::Uuid;

mod input;

use input::{ResponsesRequest, parse};

use super::{
    OaiError, Opening, authenticate, open, payer, plan_error, provider_error, unexpected_end,
};
use crate::{
    generation::{Ending, GenEvent, PlanError, Status},
    providers::{ChatRequest, ResponseFormat, ToolCall, ToolCallDelta, Usage},
    state::AppState,
};

pub async fn responses(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    match respond(state, headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn respond(state: AppState, headers: HeaderMap, body: Bytes) -> Result<Response, OaiError> {
    let auth = authenticate(&state, &headers).await?;
    let (req, request) = parse(&body, state.config.chat.max_output_tokens)?;
    let gens = &state.actors.gens;
    let planned = gens
        .plan_request(payer(&auth), &request, Some(&req.model))
        .await
        .map_err(|e| match e {
            // This API's name for structured output.
            PlanError::Unsupported {
                param: "response_format",
                provider,
            } => PlanError::Unsupported {
                param: "text",
                provider,
            },
            e => e,
        })
        .map_err(plan_error)?;
    let echo = Echo::of(&req, &request);
    let (model, mut rx, cancel_on_drop) = match open(gens, planned, request, &auth).await {
        Opening::Started(model, rx, guard) => (model, rx, guard),
        Opening::Ended(e) => return Err(ending_error(&e)),
        Opening::Unexpected => return Err(unexpected_end()),
    };
    let mut builder = Builder::new(model, echo);
    if !req.stream {
        while let Some(ev) = rx.recv().await {
            if let GenEvent::Ended(e) = &ev
                && e.status != Status::Complete
            {
                return Err(ending_error(e));
            }
            builder.on(ev);
            if builder.done {
                return Ok(Json(builder.response()).into_response());
            }
        }
        return Err(OaiError::server(
            StatusCode::BAD_GATEWAY,
            "The generation ended unexpectedly.",
        ));
    }
    let opening = builder.opening();
    let rest = futures::stream::unfold(
        (rx, builder, cancel_on_drop),
        |(mut rx, mut builder, guard)| async move {
            if builder.done {
                return None;
            }
            let events = match rx.recv().await {
                Some(ev) => builder.on(ev),
                None => {
                    builder.done = true;
                    Vec::new()
                }
            };
            Some((futures::stream::iter(events), (rx, builder, guard)))
        },
    )
    .flatten();
    let stream = futures::stream::iter(opening)
        .chain(rest)
        .map(Ok::<_, Infallible>);
    Ok(Sse::new(stream).into_response())
}

fn ending_error(e: &Ending) -> OaiError {
    match &e.error {
        Some(err) => provider_error(err),
        None => OaiError::server(
            StatusCode::SERVICE_UNAVAILABLE,
            "The request was cancelled: the server is shutting down.",
        ),
    }
}

/// The request's settings, repeated in every response object as OpenAI does.
struct Echo {
    instructions: Option<String>,
    max_output_tokens: Option<u32>,
    temperature: f32,
    top_p: f32,
    tools: Value,
    tool_choice: Value,
    parallel_tool_calls: bool,
    text_format: Value,
    user: Option<String>,
    metadata: Value,
}

impl Echo {
    fn of(req: &ResponsesRequest, request: &ChatRequest) -> Self {
        let o = &request.options;
        let tools: Vec<Value> = o
            .tools
            .iter()
            .map(|t| {
                json!({"type": "function", "name": t.name, "description": t.description,
                            "parameters": t.parameters, "strict": t.strict.unwrap_or(false)})
            })
            .collect();
        let tool_choice = match &o.tool_choice {
            None => json!("auto"),
            Some(crate::providers::ToolChoice::Function(name)) => {
                json!({"type": "function", "name": name})
            }
            Some(c) => c.to_openai(),
        };
        let text_format = match &o.response_format {
            None | Some(ResponseFormat::Text) => json!({"type": "text"}),
            Some(ResponseFormat::JsonObject) => json!({"type": "json_object"}),
            Some(ResponseFormat::JsonSchema {
                name,
                description,
                schema,
                strict,
            }) => json!({"type": "json_schema", "name": name, "description": description,
                         "schema": schema, "strict": strict.unwrap_or(false)}),
        };
        Self {
            instructions: req.instructions.clone(),
            max_output_tokens: req.max_output_tokens,
            temperature: req.temperature.unwrap_or(1.0),
            top_p: req.top_p.unwrap_or(1.0),
            tools: json!(tools),
            tool_choice,
            parallel_tool_calls: o.parallel_tool_calls.unwrap_or(true),
            text_format,
            user: o.user.clone(),
            metadata: req.extra.get("metadata").cloned().unwrap_or(json!({})),
        }
    }
}

/// One function call being streamed.
struct Call {
    output_index: usize,
    item_id: String,
    call: ToolCall,
}

/// Turns generation events into Responses API events, and keeps the output
/// so far, which the last event (and a non-streamed answer) carries whole.
struct Builder {
    id: String,
    created_at: i64,
    model: String,
    echo: Echo,
    seq: u64,
    /// Finished output items with their output index, in that order.
    output: Vec<(usize, Value)>,
    /// The message being streamed: its id, output index and text.
    message: Option<(String, usize, String)>,
    calls: Vec<Call>,
    next_index: usize,
    status: &'static str,
    usage: Option<Usage>,
    incomplete: bool,
    error: Option<Value>,
    done: bool,
}

fn short_id(prefix: &str) -> String {
    format!("{prefix}_{}", Uuid::now_v7().simple())
}

impl Builder {
    fn new(model: String, echo: Echo) -> Self {
        Self {
            id: short_id("resp"),
            created_at: chrono::Utc::now().timestamp(),
            model,
            echo,
            seq: 0,
            output: Vec::new(),
            message: None,
            calls: Vec::new(),
            next_index: 0,
            status: "in_progress",
            usage: None,
            incomplete: false,
            error: None,
            done: false,
        }
    }

    /// The response object as it stands.
    fn response(&self) -> Value {
        let usage = self.usage.map(|u| {
            json!({"input_tokens": u.input_tokens, "input_tokens_details": {"cached_tokens": 0},
                   "output_tokens": u.output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
                   "total_tokens": u.input_tokens + u.output_tokens})
        });
        let incomplete = self
            .incomplete
            .then(|| json!({"reason": "max_output_tokens"}));
        let e = &self.echo;
        json!({
            "id": self.id, "object": "response", "created_at": self.created_at,
            "status": self.status, "background": false, "error": self.error,
            "incomplete_details": incomplete, "instructions": e.instructions,
            "max_output_tokens": e.max_output_tokens, "model": self.model,
            "output": self.output.iter().map(|(_, v)| v).collect::<Vec<_>>(), "parallel_tool_calls": e.parallel_tool_calls,
            "previous_response_id": null, "reasoning": {"effort": null, "summary": null},
            "store": false, "temperature": e.temperature, "text": {"format": e.text_format},
            "tool_choice": e.tool_choice, "tools": e.tools, "top_p": e.top_p,
            "truncation": "disabled", "usage": usage, "user": e.user, "metadata": e.metadata,
        })
    }

    fn event(&mut self, kind: &str, mut data: Value) -> Event {
        data["type"] = json!(kind);
        data["sequence_number"] = json!(self.seq);
        self.seq += 1;
        Event::default().event(kind).data(data.to_string())
    }

    fn opening(&mut self) -> Vec<Event> {
        let r = self.response();
        vec![
            self.event("response.created", json!({"response": r})),
            self.event("response.in_progress", json!({"response": r})),
        ]
    }

    fn open_message(&mut self, out: &mut Vec<Event>) {
        if self.message.is_some() {
            return;
        }
        let (id, index) = (short_id("msg"), self.next_index);
        self.next_index += 1;
        let item = json!({"id": id, "type": "message", "status": "in_progress",
                          "role": "assistant", "content": []});
        out.push(self.event(
            "response.output_item.added",
            json!({"output_index": index, "item": item}),
        ));
        out.push(self.event(
            "response.content_part.added",
            json!({"item_id": id, "output_index": index, "content_index": 0,
                   "part": {"type": "output_text", "text": "", "annotations": []}}),
        ));
        self.message = Some((id, index, String::new()));
    }

    fn close_message(&mut self, out: &mut Vec<Event>) {
        let Some((id, index, text)) = self.message.take() else {
            return;
        };
        let part = json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []});
        out.push(self.event(
            "response.output_text.done",
            json!({"item_id": id, "output_index": index, "content_index": 0,
                   "text": text, "logprobs": []}),
        ));
        out.push(self.event(
            "response.content_part.done",
            json!({"item_id": id, "output_index": index, "content_index": 0, "part": part}),
        ));
        let item = json!({"id": id, "type": "message", "status": "completed",
                          "role": "assistant", "content": [part]});
        out.push(self.event(
            "response.output_item.done",
            json!({"output_index": index, "item": item}),
        ));
        self.put(index, item);
    }

    fn put(&mut self, index: usize, item: Value) {
        self.output.push((index, item));
        self.output.sort_by_key(|(i, _)| *i);
    }

    fn call_item(c: &Call, status: &str) -> Value {
        json!({"id": c.item_id, "type": "function_call", "status": status,
               "call_id": c.call.id, "name": c.call.name, "arguments": c.call.arguments})
    }

    /// Handles one generation event; answers the Responses events it makes.
    fn on(&mut self, ev: GenEvent) -> Vec<Event> {
        let mut out = Vec::new();
        match ev {
            GenEvent::Started { .. } => {}
            GenEvent::Tokens(tokens) => {
                self.open_message(&mut out);
                for t in tokens {
                    let Some((id, index, text)) = self.message.as_mut() else {
                        break;
                    };
                    text.push_str(&t);
                    let data = json!({"item_id": id, "output_index": index, "content_index": 0,
                                      "delta": t, "logprobs": []});
                    let event = self.event("response.output_text.delta", data);
                    out.push(event);
                }
            }
            GenEvent::ToolCalls(deltas) => {
                self.close_message(&mut out);
                for d in deltas {
                    self.tool_piece(d, &mut out);
                }
            }
            GenEvent::Ended(e) => {
                self.done = true;
                if e.status == Status::Complete {
                    if self.message.is_none() && self.calls.is_empty() && self.output.is_empty() {
                        self.open_message(&mut out);
                    }
                    self.close_message(&mut out);
                    self.close_calls(&mut out);
                    self.usage = Some(e.usage);
                    self.incomplete = e.finish_reason == "length";
                    self.status = if self.incomplete {
                        "incomplete"
                    } else {
                        "completed"
                    };
                    let kind = if self.incomplete {
                        "response.incomplete"
                    } else {
                        "response.completed"
                    };
                    let r = self.response();
                    out.push(self.event(kind, json!({"response": r})));
                } else {
                    let err = ending_error(&e).body()["error"].clone();
                    self.status = "failed";
                    self.usage = Some(e.usage);
                    self.error = Some(json!({"code": "server_error", "message": err["message"]}));
                    let r = self.response();
                    out.push(self.event("response.failed", json!({"response": r})));
                }
            }
        }
        out
    }

    /// One piece of a tool call: a new call opens its item, arguments stream.
    fn tool_piece(&mut self, d: ToolCallDelta, out: &mut Vec<Event>) {
        let slot = d.index as usize;
        while self.calls.len() <= slot {
            let index = self.next_index;
            self.next_index += 1;
            self.calls.push(Call {
                output_index: index,
                item_id: short_id("fc"),
                call: ToolCall::default(),
            });
        }
        let fresh = self.calls[slot].call.id.is_empty() && self.calls[slot].call.name.is_empty();
        {
            let c = &mut self.calls[slot].call;
            if let Some(id) = d.id {
                c.id = id;
            }
            if let Some(name) = d.name {
                c.name = name;
            }
        }
        if fresh {
            let c = &self.calls[slot];
            let item = Self::call_item(c, "in_progress");
            let index = c.output_index;
            out.push(self.event(
                "response.output_item.added",
                json!({"output_index": index, "item": item}),
            ));
        }
        if !d.arguments.is_empty() {
            self.calls[slot].call.arguments.push_str(&d.arguments);
            let (id, index) = (
                self.calls[slot].item_id.clone(),
                self.calls[slot].output_index,
            );
            out.push(self.event(
                "response.function_call_arguments.delta",
                json!({"item_id": id, "output_index": index, "delta": d.arguments}),
            ));
        }
    }

    fn close_calls(&mut self, out: &mut Vec<Event>) {
        for c in std::mem::take(&mut self.calls) {
            out.push(self.event(
                "response.function_call_arguments.done",
                json!({"item_id": c.item_id, "output_index": c.output_index,
                       "name": c.call.name, "arguments": c.call.arguments}),
            ));
            let item = Self::call_item(&c, "completed");
            out.push(self.event(
                "response.output_item.done",
                json!({"output_index": c.output_index, "item": item}),
            ));
            self.put(c.output_index, item);
        }
    }
}
