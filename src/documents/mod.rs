//! Documents and retrieval (docs/RAG.md): a workspace's uploaded documents,
//! turned into embedded chunks in pgvector, searched by meaning and put into
//! chat prompts with citations.
//!
//! | file | owns |
//! |---|---|
//! | `extract.rs` | text out of plain text, Markdown, HTML and PDF uploads |
//! | `chunking.rs` | structure-aware chunks sized in tokens, with positions |
//! | `ingest.rs` | the background run: pending → indexing → ready / failed, resume at start |
//! | `retrieval.rs` | search, and the numbered-sources prompt message with its citations |
//!
//! Embeddings go through `Generations::embed`, so they are admitted, billed
//! to the workspace and cached like every other embedding. This module sits
//! above `generation` and `store` and below the chat actors and transports;
//! it never imports either.

pub mod chunking;
pub mod extract;
mod ingest;
pub mod retrieval;

use std::sync::Arc;

use sqlx::PgPool;
use tokio::sync::Semaphore;

use crate::{config::DocumentsConfig, generation::Generations, providers::embedding::Embedder};

/// Ingestion and retrieval over one pool, embedder and lifecycle. Cheap to clone.
#[derive(Clone)]
pub struct Library(Arc<LibraryInner>);

pub struct LibraryInner {
    pub db: PgPool,
    pub gens: Generations,
    pub embedder: Arc<dyn Embedder>,
    pub config: DocumentsConfig,
    /// Documents indexed at once on this node; the rest wait their turn.
    ingest_slots: Semaphore,
}

/// Documents indexed concurrently per node: embedding is CPU or provider bound.
const INGEST_CONCURRENCY: usize = 2;

impl Library {
    pub fn new(
        db: PgPool,
        gens: Generations,
        embedder: Arc<dyn Embedder>,
        config: DocumentsConfig,
    ) -> Self {
        Self(Arc::new(LibraryInner {
            db,
            gens,
            embedder,
            config,
            ingest_slots: Semaphore::new(INGEST_CONCURRENCY),
        }))
    }
}

impl std::ops::Deref for Library {
    type Target = LibraryInner;
    fn deref(&self) -> &LibraryInner {
        &self.0
    }
}
