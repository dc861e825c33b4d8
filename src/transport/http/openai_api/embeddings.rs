//! `POST /v1/embeddings`: the configured embedder, on the same books as completions.

use std::sync::Arc;

use axum::{
    Json,
    body::Bytes,
    extract::State,
    http::HeaderMap,
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{OaiError, authenticate, payer, plan_error, provider_error};
use crate::{
    generation::{EmbedError, Embedded, PlanError},
    providers::router::RouteError,
    state::AppState,
};

#[derive(Deserialize)]
struct EmbeddingRequest {
    model: String,
    input: EmbeddingInput,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum EmbeddingInput {
    One(String),
    Many(Vec<String>),
}

/// Most inputs in one embeddings request.
const MAX_EMBEDDING_INPUTS: usize = 2048;

pub async fn embeddings(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match embed(state, headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn embed(state: AppState, headers: HeaderMap, body: Bytes) -> Result<Response, OaiError> {
    let auth = authenticate(&state, &headers).await?;
    if crate::text::json_has_nul(&body) {
        return Err(OaiError::invalid(
            "Invalid request body: strings must not contain NUL (\\u0000)",
            Some("input"),
        ));
    }
    let req: EmbeddingRequest = serde_json::from_slice(&body).map_err(|e| {
        let param = if e.to_string().contains("`model`") {
            Some("model")
        } else {
            Some("input")
        };
        OaiError::invalid(
            format!("Invalid request body: {e} (input must be a string or an array of strings)"),
            param,
        )
    })?;
    let embedder = Arc::clone(&state.embedder);
    // Vectors from another model than the one asked for would be silently wrong.
    if req.model != embedder.model() {
        return Err(plan_error(PlanError::Route(RouteError::UnknownModel(
            req.model,
        ))));
    }
    let inputs = match req.input {
        EmbeddingInput::One(s) => vec![s],
        EmbeddingInput::Many(v) => v,
    };
    if inputs.is_empty()
        || inputs.len() > MAX_EMBEDDING_INPUTS
        || inputs.iter().any(|s| s.is_empty() || s.len() > 32_000)
    {
        return Err(OaiError::invalid(
            format!("input: 1 to {MAX_EMBEDDING_INPUTS} non-empty strings of at most 32,000 bytes"),
            Some("input"),
        ));
    }
    let Embedded {
        vectors, tokens, ..
    } = state
        .actors
        .gens
        .embed(payer(&auth), auth.created_by, &*embedder, inputs)
        .await
        .map_err(|e| match e {
            EmbedError::Plan(e) => plan_error(e),
            EmbedError::Provider(e) => provider_error(&e),
        })?;
    let data: Vec<Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(i, v)| json!({"object": "embedding", "index": i, "embedding": v}))
        .collect();
    Ok(Json(
        json!({"object": "list", "data": data, "model": embedder.model(),
                   "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}),
    )
    .into_response())
}
