//! The embedding cache: vectors in Redis keyed by embedding model and a
//! SHA-256 of the text, shared by everything that embeds (document ingestion,
//! retrieval queries, `/v1/embeddings`) because all of them go through
//! `Generations::embed`. A hit is not billed: nothing was computed.
//!
//! The cache is an optimisation only: with Redis down every lookup is a miss
//! and every store is skipped, never an error. Hits and misses are counted in
//! `switchboard_embedding_cache_{hits,misses}_total` and per workspace in
//! Redis (for `/api/analytics/usage`).

use std::time::Duration;

use redis::aio::ConnectionManager;
use sha2::{Digest, Sha256};
use uuid::Uuid;

#[derive(Clone)]
pub struct EmbeddingCache {
    redis: ConnectionManager,
    prefix: String,
    ttl: Duration,
}

/// Bound on a Redis round trip; past it the cache counts as missing.
const REDIS_TIMEOUT: Duration = Duration::from_millis(500);

impl EmbeddingCache {
    pub fn new(redis: ConnectionManager, prefix: &str, ttl: Duration) -> Self {
        Self {
            redis,
            prefix: prefix.to_owned(),
            ttl,
        }
    }

    fn key(&self, model: &str, text: &str) -> String {
        let h = Sha256::digest(text.as_bytes());
        format!("{}:emb:{model}:{}", self.prefix, hex::encode(h))
    }

    fn stats_key(&self, workspace_id: Uuid) -> String {
        format!("{}:embstats:{workspace_id}", self.prefix)
    }

    /// One slot per input: the cached vector, or `None`.
    pub async fn get_many(&self, model: &str, inputs: &[String]) -> Vec<Option<Vec<f32>>> {
        if inputs.is_empty() {
            return Vec::new();
        }
        let keys: Vec<String> = inputs.iter().map(|t| self.key(model, t)).collect();
        let mut conn = self.redis.clone();
        let got = tokio::time::timeout(
            REDIS_TIMEOUT,
            redis::cmd("MGET")
                .arg(&keys)
                .query_async::<Vec<Option<Vec<u8>>>>(&mut conn),
        )
        .await;
        match got {
            Ok(Ok(values)) if values.len() == inputs.len() => {
                values.into_iter().map(|v| v.and_then(decode)).collect()
            }
            _ => vec![None; inputs.len()],
        }
    }

    /// Stores freshly computed vectors (best effort).
    pub async fn put_many(&self, model: &str, entries: &[(&str, &[f32])]) {
        if entries.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        let ttl = self.ttl.as_secs().max(1);
        for (text, vector) in entries {
            pipe.cmd("SET")
                .arg(self.key(model, text))
                .arg(encode(vector))
                .arg("EX")
                .arg(ttl)
                .ignore();
        }
        let mut conn = self.redis.clone();
        let _ = tokio::time::timeout(REDIS_TIMEOUT, pipe.query_async::<()>(&mut conn)).await;
    }

    /// Counts one lookup's hits and misses, in metrics and for the workspace.
    pub async fn record(&self, workspace_id: Uuid, hits: u64, misses: u64) {
        metrics::counter!("switchboard_embedding_cache_hits_total").increment(hits);
        metrics::counter!("switchboard_embedding_cache_misses_total").increment(misses);
        let mut conn = self.redis.clone();
        let _ = tokio::time::timeout(
            REDIS_TIMEOUT,
            redis::pipe()
                .cmd("HINCRBY")
                .arg(self.stats_key(workspace_id))
                .arg("hits")
                .arg(hits)
                .ignore()
                .cmd("HINCRBY")
                .arg(self.stats_key(workspace_id))
                .arg("misses")
                .arg(misses)
                .ignore()
                .query_async::<()>(&mut conn),
        )
        .await;
    }

    /// The workspace's (hits, misses) so far; `None` when Redis does not answer.
    pub async fn stats(&self, workspace_id: Uuid) -> Option<(u64, u64)> {
        let mut conn = self.redis.clone();
        let got = tokio::time::timeout(
            REDIS_TIMEOUT,
            redis::cmd("HMGET")
                .arg(self.stats_key(workspace_id))
                .arg("hits")
                .arg("misses")
                .query_async::<(Option<u64>, Option<u64>)>(&mut conn),
        )
        .await;
        match got {
            Ok(Ok((h, m))) => Some((h.unwrap_or(0), m.unwrap_or(0))),
            _ => None,
        }
    }
}

fn encode(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn decode(bytes: Vec<u8>) -> Option<Vec<f32>> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(4) {
        return None;
    }
    Some(
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_round_trip_and_garbage_is_a_miss() {
        let v = vec![0.25f32, -1.5, 3.0];
        assert_eq!(decode(encode(&v)), Some(v));
        assert_eq!(decode(vec![1, 2, 3]), None);
        assert_eq!(decode(Vec::new()), None);
    }
}
