//! The parts of `/api/openapi.json` no handler annotation describes: the
//! OpenAI-compatible `/v1` routes (their bodies are OpenAI's, documented by
//! OpenAI; here only their shape), the WebSocket upgrade at `/ws`
//! (docs/PROTOCOL.md has the frames) and `/metrics`. Written as OpenAPI JSON,
//! which reads closer to the published document than utoipa's builders.

use serde_json::{Value, json};
use utoipa::openapi::{
    OpenApi, Paths,
    security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};

/// OpenAI's error body.
fn oai_error() -> Value {
    json!({
        "type": "object",
        "required": ["error"],
        "properties": {"error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]}
            }
        }}
    })
}

fn oai_errors(statuses: &[(&str, &str)]) -> serde_json::Map<String, Value> {
    statuses
        .iter()
        .map(|(status, why)| {
            (
                (*status).to_owned(),
                json!({"description": why, "content": {"application/json": {"schema": oai_error()}}}),
            )
        })
        .collect()
}

#[expect(
    clippy::too_many_lines,
    reason = "one pass over the whole document, read top to bottom"
)]
fn paths() -> Value {
    let api_key = json!([{"api_key": []}]);
    let mut completion_responses = oai_errors(&[
        ("400", "a bad body or parameter (`param` names it)"),
        ("401", "missing, unknown or revoked API key"),
        ("402", "a budget is exhausted"),
        (
            "429",
            "a per-minute limit or a budget (`insufficient_quota`); `Retry-After` in seconds",
        ),
        (
            "502",
            "no provider could answer, or the answer failed midway",
        ),
        ("503", "storage or the budget store is unavailable"),
    ]);
    completion_responses.insert(
        "200".into(),
        json!({
            "description": "a `chat.completion`, or with `stream: true` server-sent `chat.completion.chunk` events ending with `data: [DONE]`",
            "content": {
                "application/json": {"schema": {
                    "type": "object",
                    "required": ["id", "object", "created", "model", "choices"],
                    "properties": {
                        "id": {"type": "string"},
                        "object": {"type": "string"},
                        "created": {"type": "integer"},
                        "model": {"type": "string"},
                        "choices": {"type": "array", "items": {"type": "object"}},
                        "usage": {"type": "object"}
                    }
                }},
                "text/event-stream": {"schema": {"type": "string"}}
            }
        }),
    );
    let mut embedding_responses = oai_errors(&[
        ("400", "a bad body or parameter"),
        ("401", "missing, unknown or revoked API key"),
        ("402", "a budget is exhausted"),
        ("429", "a limit or budget; `Retry-After` in seconds"),
        ("502", "the embedder failed"),
        ("503", "storage or the budget store is unavailable"),
    ]);
    embedding_responses.insert(
        "200".into(),
        json!({
            "description": "one 384-dimension vector per input",
            "content": {"application/json": {"schema": {
                "type": "object",
                "required": ["object", "data", "model"],
                "properties": {
                    "object": {"type": "string"},
                    "data": {"type": "array", "items": {"type": "object"}},
                    "model": {"type": "string"},
                    "usage": {"type": "object"}
                }
            }}}
        }),
    );
    let mut model_responses = oai_errors(&[("401", "missing, unknown or revoked API key")]);
    model_responses.insert(
        "200".into(),
        json!({
            "description": "route aliases and priced models whose provider is running",
            "content": {"application/json": {"schema": {
                "type": "object",
                "required": ["object", "data"],
                "properties": {
                    "object": {"type": "string"},
                    "data": {"type": "array", "items": {"type": "object"}}
                }
            }}}
        }),
    );
    json!({
        "/v1/chat/completions": {"post": {
            "tags": ["openai"],
            "operationId": "v1_chat_completions",
            "summary": "OpenAI-compatible chat completion (docs/API.md)",
            "security": api_key,
            "requestBody": {"required": true, "content": {"application/json": {"schema": {
                "type": "object",
                "required": ["model", "messages"],
                "properties": {
                    "model": {"type": "string"},
                    "messages": {"type": "array", "items": {"type": "object"}},
                    "stream": {"type": "boolean"},
                    "max_tokens": {"type": "integer"},
                    "temperature": {"type": "number"}
                }
            }}}},
            "responses": completion_responses
        }},
        "/v1/embeddings": {"post": {
            "tags": ["openai"],
            "operationId": "v1_embeddings",
            "summary": "OpenAI-compatible embeddings",
            "security": api_key,
            "requestBody": {"required": true, "content": {"application/json": {"schema": {
                "type": "object",
                "required": ["model", "input"],
                "properties": {
                    "model": {"type": "string"},
                    "input": {"oneOf": [
                        {"type": "string"},
                        {"type": "array", "items": {"type": "string"}}
                    ]}
                }
            }}}},
            "responses": embedding_responses
        }},
        "/v1/models": {"get": {
            "tags": ["openai"],
            "operationId": "v1_models",
            "summary": "Models an API key may name",
            "security": api_key,
            "responses": model_responses
        }},
        "/ws": {"get": {
            "tags": ["chats"],
            "operationId": "websocket",
            "summary": "The chat WebSocket (docs/PROTOCOL.md): JSON text frames tagged by `type`",
            "description": "Send `Connection: Upgrade`, `Upgrade: websocket`, `Sec-WebSocket-Version: 13` and a `Sec-WebSocket-Key`; authenticate with a Bearer header here or an `auth` frame first.",
            "responses": {
                "101": {"description": "switched to the WebSocket protocol"},
                "400": {"description": "not a WebSocket upgrade", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                "401": {"description": "a Bearer header with a bad token", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                "403": {"description": "a browser origin not allowed", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                "426": {"description": "upgrade required", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                "429": {"description": "too many sockets waiting to authenticate", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
            }
        }},
        "/metrics": {"get": {
            "tags": ["health"],
            "operationId": "metrics",
            "summary": "Prometheus metrics (text exposition format)",
            "responses": {"200": {"description": "the metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}}
        }}
    })
}

/// The error envelope of every REST error (docs/API.md).
fn error_schema() -> Value {
    json!({
        "type": "object",
        "required": ["error"],
        "properties": {"error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"}
            }
        }}
    })
}

/// The document as served, made valid where annotations fall short: every
/// response has the `description` OpenAPI requires (utoipa leaves it out for
/// responses annotated with a body only; the status's reason phrase stands
/// in), every `{name}` in a path is declared as a path parameter, and
/// operation ids are unique (a repeat gets the method and path).
pub fn finish(doc: &OpenApi) -> Value {
    let mut v = serde_json::to_value(doc).unwrap_or_default();
    let mut seen_ids = std::collections::HashSet::new();
    if let Some(paths) = v.get_mut("paths").and_then(Value::as_object_mut) {
        for (path, item) in paths.iter_mut() {
            let Some(ops) = item.as_object_mut() else {
                continue;
            };
            for (method, op) in ops.iter_mut() {
                declare_path_params(path, op);
                if let Some(id) = op.get("operationId").and_then(Value::as_str)
                    && !seen_ids.insert(id.to_owned())
                {
                    let unique: String = format!("{method}{path}")
                        .chars()
                        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                        .collect();
                    seen_ids.insert(unique.clone());
                    op["operationId"] = Value::from(unique);
                }
                let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
                    continue;
                };
                for (status, res) in responses.iter_mut() {
                    let Some(res) = res.as_object_mut() else {
                        continue;
                    };
                    if res.contains_key("$ref") {
                        continue;
                    }
                    let missing = res
                        .get("description")
                        .and_then(Value::as_str)
                        .is_none_or(str::is_empty);
                    if missing {
                        let reason = status
                            .parse::<u16>()
                            .ok()
                            .and_then(|s| axum::http::StatusCode::from_u16(s).ok())
                            .and_then(|s| s.canonical_reason())
                            .unwrap_or("response");
                        res.insert("description".into(), Value::from(reason));
                    }
                }
            }
        }
    }
    v
}

/// Adds `{name}` path parameters an operation does not declare.
fn declare_path_params(path: &str, op: &mut Value) {
    let names: Vec<&str> = path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        .collect();
    if names.is_empty() || !op.is_object() {
        return;
    }
    let params = op
        .as_object_mut()
        .map(|o| o.entry("parameters").or_insert_with(|| json!([])));
    let Some(Value::Array(params)) = params else {
        return;
    };
    for name in names {
        let declared = params
            .iter()
            .any(|p| p["in"] == "path" && p["name"] == name);
        if !declared {
            let schema = if name == "id" || name.ends_with("_id") {
                json!({"type": "string", "format": "uuid"})
            } else {
                json!({"type": "string"})
            };
            params.push(json!({"name": name, "in": "path", "required": true, "schema": schema}));
        }
    }
}

/// Adds the `/v1`, `/ws` and `/metrics` operations, the `api_key` scheme and
/// the `Error` schema to `doc`.
pub fn add(doc: &mut OpenApi) {
    match serde_json::from_value::<Paths>(paths()) {
        Ok(paths) => doc.paths.paths.extend(paths.paths),
        Err(e) => tracing::error!(error = %e, "openapi: the hand-written paths do not parse"),
    }
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "api_key",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("sk-sb-…")
                .build(),
        ),
    );
    match serde_json::from_value(error_schema()) {
        Ok(schema) => {
            components.schemas.insert("Error".to_owned(), schema);
        }
        Err(e) => tracing::error!(error = %e, "openapi: the error schema does not parse"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_hand_written_parts_parse() {
        let mut doc = utoipa::openapi::OpenApi::default();
        super::add(&mut doc);
        for path in [
            "/v1/chat/completions",
            "/v1/embeddings",
            "/v1/models",
            "/ws",
            "/metrics",
        ] {
            assert!(doc.paths.paths.contains_key(path), "{path}");
        }
        assert!(doc.components.unwrap().schemas.contains_key("Error"));
    }
}
