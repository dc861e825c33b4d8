//! What `/v1/chat/completions` and `/v1/responses` share in reading a request:
//! tools, tool choice, structured output, and the rule that a field this
//! server does not act on is refused by name rather than dropped.

use serde_json::{Map, Value};

use super::OaiError;
use crate::providers::{ResponseFormat, ToolChoice, ToolDef};

/// Fields accepted and deliberately not acted on: they change nothing about
/// the answer (OpenAI-side storage, tracing labels, cache hints).
const IGNORED: &[&str] = &[
    "store",
    "metadata",
    "service_tier",
    "prompt_cache_key",
    "safety_identifier",
];

/// Refuses the first field of `extra` (what the door's own struct did not
/// take) that is not in [`IGNORED`], naming it.
pub fn refuse_unknown(extra: &Map<String, Value>) -> Result<(), OaiError> {
    match extra
        .iter()
        .find(|(k, v)| !v.is_null() && !IGNORED.contains(&k.as_str()))
    {
        Some((k, _)) => Err(OaiError::unsupported(k)),
        None => Ok(()),
    }
}

fn bad(param: &'static str, why: impl std::fmt::Display) -> OaiError {
    OaiError::invalid(format!("{param}: {why}"), Some(param))
}

/// One function tool from its parts (either API's shape).
fn tool_def(f: &Value) -> Result<ToolDef, OaiError> {
    let name = f
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| {
            !n.is_empty()
                && n.len() <= 64
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        })
        .ok_or_else(|| {
            bad(
                "tools",
                "each function needs a name of 1-64 of a-z A-Z 0-9 _ -",
            )
        })?;
    let parameters = match f.get("parameters") {
        None | Some(Value::Null) => serde_json::json!({"type": "object", "properties": {}}),
        Some(p) if p.is_object() => p.clone(),
        Some(_) => return Err(bad("tools", "parameters must be a JSON schema object")),
    };
    Ok(ToolDef {
        name: name.to_owned(),
        description: f
            .get("description")
            .and_then(Value::as_str)
            .map(str::to_owned),
        parameters,
        strict: f.get("strict").and_then(Value::as_bool),
    })
}

/// Chat Completions tools: `[{"type": "function", "function": {...}}]`.
pub fn chat_tools(v: &Value) -> Result<Vec<ToolDef>, OaiError> {
    let list = v
        .as_array()
        .ok_or_else(|| bad("tools", "must be an array"))?;
    list.iter()
        .map(|t| match t.get("type").and_then(Value::as_str) {
            Some("function") => tool_def(t.get("function").unwrap_or(&Value::Null)),
            other => Err(bad(
                "tools",
                format!("tool type {other:?} is not supported (only \"function\")"),
            )),
        })
        .collect()
}

/// Responses tools: `[{"type": "function", "name", "parameters", ...}]`.
pub fn responses_tools(v: &Value) -> Result<Vec<ToolDef>, OaiError> {
    let list = v
        .as_array()
        .ok_or_else(|| bad("tools", "must be an array"))?;
    list.iter()
        .map(|t| match t.get("type").and_then(Value::as_str) {
            Some("function") => tool_def(t),
            other => Err(bad(
                "tools",
                format!("tool type {other:?} is not supported (only \"function\")"),
            )),
        })
        .collect()
}

/// `tool_choice` in either API's shape; a named function must be one of `tools`.
pub fn tool_choice(v: &Value, tools: &[ToolDef]) -> Result<ToolChoice, OaiError> {
    let choice = match v {
        Value::String(s) => match s.as_str() {
            "none" => ToolChoice::None,
            "auto" => ToolChoice::Auto,
            "required" => ToolChoice::Required,
            other => return Err(bad("tool_choice", format!("unknown value {other:?}"))),
        },
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .or_else(|| o.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| bad("tool_choice", "a function choice needs its name"))?;
            ToolChoice::Function(name.to_owned())
        }
        _ => {
            return Err(bad(
                "tool_choice",
                "must be none, auto, required or a function",
            ));
        }
    };
    if choice != ToolChoice::None && tools.is_empty() {
        return Err(bad("tool_choice", "is only allowed when tools are given"));
    }
    if let ToolChoice::Function(name) = &choice
        && !tools.iter().any(|t| &t.name == name)
    {
        return Err(bad("tool_choice", format!("no tool named {name:?}")));
    }
    Ok(choice)
}

/// A `json_schema` format's parts (`schema`, `name`, ...), as either API nests them.
fn json_schema(o: &Value, param: &'static str) -> Result<ResponseFormat, OaiError> {
    let schema = o
        .get("schema")
        .filter(|s| s.is_object())
        .ok_or_else(|| bad(param, "json_schema needs a schema object"))?;
    Ok(ResponseFormat::JsonSchema {
        name: o
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("response")
            .to_owned(),
        description: o
            .get("description")
            .and_then(Value::as_str)
            .map(str::to_owned),
        schema: schema.clone(),
        strict: o.get("strict").and_then(Value::as_bool),
    })
}

/// Chat Completions `response_format`.
pub fn chat_response_format(v: &Value) -> Result<ResponseFormat, OaiError> {
    match v.get("type").and_then(Value::as_str) {
        Some("text") => Ok(ResponseFormat::Text),
        Some("json_object") => Ok(ResponseFormat::JsonObject),
        Some("json_schema") => json_schema(
            v.get("json_schema").unwrap_or(&Value::Null),
            "response_format",
        ),
        other => Err(bad(
            "response_format",
            format!("type {other:?} is not one of text, json_object, json_schema"),
        )),
    }
}

/// Responses `text.format`.
pub fn responses_text_format(v: &Value) -> Result<ResponseFormat, OaiError> {
    match v.get("type").and_then(Value::as_str) {
        Some("text") => Ok(ResponseFormat::Text),
        Some("json_object") => Ok(ResponseFormat::JsonObject),
        Some("json_schema") => json_schema(v, "text"),
        other => Err(bad(
            "text",
            format!("format type {other:?} is not one of text, json_object, json_schema"),
        )),
    }
}

/// `presence_penalty` / `frequency_penalty`: -2 to 2, as OpenAI.
pub fn penalty(v: Option<f32>, param: &'static str) -> Result<Option<f32>, OaiError> {
    match v {
        Some(p) if !(-2.0..=2.0).contains(&p) => Err(bad(param, "must be between -2 and 2")),
        other => Ok(other),
    }
}
