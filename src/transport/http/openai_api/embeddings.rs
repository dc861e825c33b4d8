//! `POST /v1/embeddings`: the configured embedder, on the same books as completions.
//!
//! As OpenAI: `encoding_format` `float` (default) or `base64` (little-endian
//! `f32`s, which the Node SDK asks for by default); `dimensions` shortens
//! text-embedding-3 vectors (cut, then renormalised) and is refused for models
//! that cannot be shortened; inputs may be token ids (cl100k), decoded to text
//! before embedding, so the same text gives the same vector either way.

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
use base64::Engine as _;

use crate::{
    generation::{EmbedError, Embedded, PlanError},
    providers::{embedding::DIMENSIONS, router::RouteError, tokenizer},
    state::AppState,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmbeddingRequest {
    model: String,
    input: EmbeddingInput,
    encoding_format: Option<String>,
    dimensions: Option<u32>,
    /// The end user, for the caller's own abuse tracking; it changes no vector.
    #[serde(rename = "user")]
    _user: Option<String>,
}

/// A string, strings, token ids, or lists of token ids (what LangChain sends).
#[derive(Deserialize)]
#[serde(untagged)]
enum EmbeddingInput {
    One(String),
    Many(Vec<String>),
    Tokens(Vec<u32>),
    TokenLists(Vec<Vec<u32>>),
}

/// Most inputs in one embeddings request.
const MAX_EMBEDDING_INPUTS: usize = 2048;

/// Models whose vectors may be shortened (OpenAI's `text-embedding-3-*` are
/// trained so that a prefix, renormalised, is itself a good embedding).
fn shortenable(model: &str) -> bool {
    model.starts_with("text-embedding-3")
}

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

/// The texts to embed; token ids are decoded with the cl100k tokenizer.
fn texts(input: EmbeddingInput) -> Result<Vec<String>, OaiError> {
    let decode = |ids: &[u32]| {
        tokenizer::decode(ids).ok_or_else(|| {
            OaiError::invalid("input: a token id is outside the vocabulary", Some("input"))
        })
    };
    let inputs = match input {
        EmbeddingInput::One(s) => vec![s],
        EmbeddingInput::Many(v) => v,
        EmbeddingInput::Tokens(ids) if ids.is_empty() => vec![],
        EmbeddingInput::Tokens(ids) => vec![decode(&ids)?],
        EmbeddingInput::TokenLists(lists) => lists
            .iter()
            .map(|ids| {
                if ids.is_empty() {
                    Ok(String::new())
                } else {
                    decode(ids)
                }
            })
            .collect::<Result<_, _>>()?,
    };
    if inputs.is_empty()
        || inputs.len() > MAX_EMBEDDING_INPUTS
        || inputs.iter().any(|s| s.is_empty() || s.len() > 32_000)
    {
        return Err(OaiError::invalid(
            format!(
                "input: 1 to {MAX_EMBEDDING_INPUTS} non-empty strings (or token arrays) of at most 32,000 bytes"
            ),
            Some("input"),
        ));
    }
    Ok(inputs)
}

/// `v` cut to its first `dims` numbers and scaled back to unit length.
fn shorten(mut v: Vec<f32>, dims: usize) -> Vec<f32> {
    v.truncate(dims);
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

/// OpenAI's base64 encoding: the little-endian bytes of each `f32`.
fn base64_of(v: &[f32]) -> String {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[expect(
    clippy::too_many_lines,
    reason = "request validation field by field, in the API's order"
)]
async fn embed(state: AppState, headers: HeaderMap, body: Bytes) -> Result<Response, OaiError> {
    let auth = authenticate(&state, &headers).await?;
    if crate::text::json_has_nul(&body) {
        return Err(OaiError::invalid(
            "Invalid request body: strings must not contain NUL (\\u0000)",
            Some("input"),
        ));
    }
    let req: EmbeddingRequest = serde_json::from_slice(&body).map_err(|e| {
        let text = e.to_string();
        let param = ["model", "encoding_format", "dimensions", "user"]
            .into_iter()
            .find(|p| text.contains(&format!("`{p}`")))
            .unwrap_or("input");
        OaiError::invalid(
            format!(
                "Invalid request body: {e} (input must be a string, an array of strings, or token ids)"
            ),
            Some(param),
        )
    })?;
    let embedder = Arc::clone(&state.embedder);
    // Vectors from another model than the one asked for would be silently wrong.
    if req.model != embedder.model() {
        return Err(plan_error(PlanError::Route(RouteError::UnknownModel(
            req.model,
        ))));
    }
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(OaiError::invalid(
                format!("encoding_format: {other:?} is not one of \"float\", \"base64\""),
                Some("encoding_format"),
            ));
        }
    };
    let dims = match req.dimensions {
        None => DIMENSIONS,
        Some(d) if d as usize == DIMENSIONS => DIMENSIONS,
        Some(d) if shortenable(embedder.model()) && (1..DIMENSIONS as u32).contains(&d) => {
            d as usize
        }
        Some(d) => {
            let why = if shortenable(embedder.model()) {
                format!("must be between 1 and {DIMENSIONS}")
            } else {
                format!(
                    "model {} only gives {DIMENSIONS} dimensions (only text-embedding-3 models can be shortened)",
                    embedder.model()
                )
            };
            return Err(OaiError::invalid(
                format!("dimensions: {d} is not supported: {why}"),
                Some("dimensions"),
            ));
        }
    };
    let inputs = texts(req.input)?;
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
        .map(|v| {
            if dims < DIMENSIONS {
                shorten(v, dims)
            } else {
                v
            }
        })
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                json!(base64_of(&v))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    Ok(Json(
        json!({"object": "list", "data": data, "model": embedder.model(),
                   "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}),
    )
    .into_response())
}
