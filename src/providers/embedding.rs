//! Embedding providers behind one trait: the built-in local embedder (the
//! default), OpenAI-compatible `/embeddings`, and Cloudflare Workers AI.
//!
//! The local embedder is feature hashing: word unigrams and character
//! trigrams, each hashed to one of 384 dimensions with a hashed sign, then
//! L2-normalised. It needs no model download, is deterministic, and gives
//! texts sharing words and spellings a high cosine similarity; it knows
//! nothing of synonyms. Every embedder answers 384 dimensions, the width of
//! `document_chunks.embedding`.

use futures::future::BoxFuture;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{ProviderError, http};
use crate::config::Secret;

/// Width of every embedding Switchboard stores and serves.
pub const DIMENSIONS: usize = 384;

pub trait Embedder: Send + Sync + 'static {
    fn name(&self) -> &str;
    fn model(&self) -> &str;
    /// One vector per input, in order.
    fn embed(
        &self,
        inputs: Vec<String>,
    ) -> BoxFuture<'static, Result<Vec<Vec<f32>>, ProviderError>>;
}

pub struct LocalEmbedder;

pub const LOCAL_MODEL: &str = "local-hash-384";

impl LocalEmbedder {
    pub fn vector(text: &str) -> Vec<f32> {
        let mut v = vec![0f32; DIMENSIONS];
        let lower = text.to_lowercase();
        let mut add = |feature: &[u8], weight: f32| {
            let h = Sha256::digest(feature);
            let idx = u16::from_le_bytes([h[0], h[1]]) as usize % DIMENSIONS;
            let sign = if h[2] & 1 == 0 { 1.0 } else { -1.0 };
            v[idx] += sign * weight;
        };
        for word in lower
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
        {
            add(word.as_bytes(), 1.0);
            let chars: Vec<char> = format!(" {word} ").chars().collect();
            for tri in chars.windows(3) {
                add(tri.iter().collect::<String>().as_bytes(), 0.5);
            }
        }
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            v.iter_mut().for_each(|x| *x /= norm);
        }
        v
    }
}

impl Embedder for LocalEmbedder {
    fn name(&self) -> &str {
        "local"
    }
    fn model(&self) -> &str {
        LOCAL_MODEL
    }
    fn embed(
        &self,
        inputs: Vec<String>,
    ) -> BoxFuture<'static, Result<Vec<Vec<f32>>, ProviderError>> {
        Box::pin(async move { Ok(inputs.iter().map(|t| Self::vector(t)).collect()) })
    }
}

/// OpenAI-compatible `POST {base}/embeddings`, asking for 384 dimensions.
pub struct OpenAiEmbedder {
    base_url: String,
    api_key: Option<Secret>,
    model: String,
    client: reqwest::Client,
}

impl OpenAiEmbedder {
    pub fn new(base_url: Option<String>, api_key: Option<Secret>, model: String) -> Self {
        Self {
            base_url: http::trim_base(base_url.as_deref().unwrap_or("https://api.openai.com/v1")),
            api_key,
            model,
            client: http::json_client(),
        }
    }
}

impl Embedder for OpenAiEmbedder {
    fn name(&self) -> &str {
        "openai"
    }
    fn model(&self) -> &str {
        &self.model
    }
    fn embed(
        &self,
        inputs: Vec<String>,
    ) -> BoxFuture<'static, Result<Vec<Vec<f32>>, ProviderError>> {
        let mut req = self
            .client
            .post(format!("{}/embeddings", self.base_url))
            .json(&json!({ "model": self.model, "input": inputs, "dimensions": DIMENSIONS }));
        if let Some(k) = &self.api_key {
            req = req.bearer_auth(k.expose());
        }
        Box::pin(async move {
            let body = send(req).await?;
            let data = body["data"]
                .as_array()
                .ok_or_else(|| ProviderError::Malformed("no data".into()))?;
            data.iter().map(|d| vector_of(&d["embedding"])).collect()
        })
    }
}

/// Cloudflare Workers AI, e.g. `@cf/baai/bge-small-en-v1.5` (384 dimensions).
pub struct CloudflareEmbedder {
    url: String,
    token: Secret,
    model: String,
    client: reqwest::Client,
}

impl CloudflareEmbedder {
    pub fn new(base_url: Option<String>, account_id: &str, token: Secret, model: String) -> Self {
        let base = http::trim_base(
            base_url
                .as_deref()
                .unwrap_or("https://api.cloudflare.com/client/v4"),
        );
        Self {
            url: format!("{base}/accounts/{account_id}/ai/run/{model}"),
            token,
            model,
            client: http::json_client(),
        }
    }
}

impl Embedder for CloudflareEmbedder {
    fn name(&self) -> &str {
        "cloudflare"
    }
    fn model(&self) -> &str {
        &self.model
    }
    fn embed(
        &self,
        inputs: Vec<String>,
    ) -> BoxFuture<'static, Result<Vec<Vec<f32>>, ProviderError>> {
        let req = self
            .client
            .post(&self.url)
            .bearer_auth(self.token.expose())
            .json(&json!({ "text": inputs }));
        Box::pin(async move {
            let body = send(req).await?;
            let data = body["result"]["data"]
                .as_array()
                .ok_or_else(|| ProviderError::Malformed("no result.data".into()))?;
            data.iter().map(vector_of).collect()
        })
    }
}

async fn send(req: reqwest::RequestBuilder) -> Result<Value, ProviderError> {
    let res = req.send().await.map_err(|e| http::send_error(&e))?;
    if !res.status().is_success() {
        return Err(http::status_error(res.status(), res.headers()));
    }
    let text = res.text().await.map_err(|_| ProviderError::Disconnected)?;
    http::parse_json(&text)
}

fn vector_of(v: &Value) -> Result<Vec<f32>, ProviderError> {
    let arr = v
        .as_array()
        .ok_or_else(|| ProviderError::Malformed("embedding is not an array".into()))?;
    let out: Option<Vec<f32>> = arr.iter().map(|x| x.as_f64().map(|f| f as f32)).collect();
    let out = out.ok_or_else(|| ProviderError::Malformed("embedding holds a non-number".into()))?;
    if out.len() != DIMENSIONS {
        return Err(ProviderError::Malformed(format!(
            "embedding has {} dimensions, expected {DIMENSIONS}",
            out.len()
        )));
    }
    Ok(out)
}

/// The embedder `EMBEDDING_PROVIDER` names (validated at start).
pub fn configured(config: &crate::config::Config) -> std::sync::Arc<dyn Embedder> {
    let pc = &config.providers;
    match pc.embedding.as_str() {
        "openai" => std::sync::Arc::new(OpenAiEmbedder::new(
            pc.openai_base_url.clone(),
            pc.openai_api_key.clone(),
            pc.embedding_model
                .clone()
                .unwrap_or_else(|| "text-embedding-3-small".into()),
        )),
        "cloudflare" => match (&pc.cloudflare_account_id, &pc.cloudflare_api_token) {
            (Some(account), Some(token)) => std::sync::Arc::new(CloudflareEmbedder::new(
                pc.cloudflare_base_url.clone(),
                account,
                token.clone(),
                pc.embedding_model
                    .clone()
                    .unwrap_or_else(|| "@cf/baai/bge-small-en-v1.5".into()),
            )),
            _ => std::sync::Arc::new(LocalEmbedder),
        },
        _ => std::sync::Arc::new(LocalEmbedder),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cos(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn local_vectors_are_normalised_deterministic_and_similar_for_similar_text() {
        let a = LocalEmbedder::vector("The cat sat on the mat");
        assert_eq!(a.len(), DIMENSIONS);
        assert!((cos(&a, &a) - 1.0).abs() < 1e-4);
        assert_eq!(a, LocalEmbedder::vector("The cat sat on the mat"));
        let near = LocalEmbedder::vector("a cat sat on a mat");
        let far = LocalEmbedder::vector("quarterly revenue projections");
        assert!(
            cos(&a, &near) > cos(&a, &far) + 0.3,
            "{} vs {}",
            cos(&a, &near),
            cos(&a, &far)
        );
        assert!(LocalEmbedder::vector("").iter().all(|x| *x == 0.0));
    }
}
