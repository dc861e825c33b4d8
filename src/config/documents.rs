//! Settings of documents and retrieval (`[documents]`, docs/RAG.md).

use serde::Deserialize;

use super::Config;

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct DocumentsConfig {
    /// Largest upload (the raw file), in bytes.
    pub max_upload_bytes: usize,
    /// Largest chunk, in tokens of the tokenizer (cl100k); below the embedder's input limit.
    pub chunk_tokens: usize,
    /// Tokens shared by neighbouring chunks.
    pub chunk_overlap_tokens: usize,
    /// Chunks per embedding call.
    pub embed_batch: usize,
    /// Chunks per insert statement.
    pub insert_batch: usize,
    /// HNSW candidate list per search (`hnsw.ef_search`); at least `max_results`.
    pub ef_search: u32,
    /// Chunks a search may return (`POST /api/documents/search` `limit` at most this).
    pub max_results: u32,
    /// Chunks put into a chat prompt, at most.
    pub context_chunks: u32,
    /// Tokens of document text put into a chat prompt, at most.
    pub context_tokens: u32,
    /// How long a cached embedding is kept.
    pub cache_ttl_secs: u64,
}

impl Default for DocumentsConfig {
    fn default() -> Self {
        Self {
            max_upload_bytes: 10 * 1024 * 1024,
            chunk_tokens: 256,
            chunk_overlap_tokens: 32,
            embed_batch: 64,
            insert_batch: 500,
            ef_search: 200,
            max_results: 50,
            context_chunks: 5,
            context_tokens: 1_500,
            cache_ttl_secs: 7 * 86_400,
        }
    }
}

impl Config {
    pub(super) fn check_documents(&self, p: &mut Vec<String>) {
        let d = &self.documents;
        for (name, value) in [
            ("documents.max_upload_bytes", d.max_upload_bytes),
            ("documents.chunk_tokens", d.chunk_tokens),
            ("documents.embed_batch", d.embed_batch),
            ("documents.insert_batch", d.insert_batch),
        ] {
            if value == 0 {
                p.push(format!("{name} must be greater than 0"));
            }
        }
        if d.chunk_overlap_tokens >= d.chunk_tokens {
            p.push(
                "documents.chunk_overlap_tokens must be less than documents.chunk_tokens".into(),
            );
        }
        if d.chunk_tokens > 8_000 {
            p.push(
                "documents.chunk_tokens must be at most 8000 (embedding models' input limit)"
                    .into(),
            );
        }
        if d.insert_batch > 5_000 {
            p.push(
                "documents.insert_batch must be at most 5000 (bind parameters per statement)"
                    .into(),
            );
        }
        if d.max_results == 0 || d.context_chunks == 0 {
            p.push(
                "documents.max_results and documents.context_chunks must be greater than 0".into(),
            );
        }
        if d.ef_search < d.max_results || d.ef_search > 1_000 {
            p.push("documents.ef_search must be between documents.max_results and 1000".into());
        }
        if d.cache_ttl_secs == 0 {
            p.push("documents.cache_ttl_secs must be greater than 0".into());
        }
    }
}
