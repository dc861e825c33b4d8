//! A document's ingestion, in a tracked task: claim it (pending → indexing),
//! chunk, embed in batches (billed to the workspace), insert chunks in
//! batches, record progress, then ready, or failed with the reason. At start
//! the node picks up documents a stopped node left pending or indexing, so
//! none stays indexing forever.

use pgvector::Vector;
use uuid::Uuid;

use super::{Library, chunking};
use crate::{
    admission::Payer,
    generation::EmbedError,
    store::{self, documents as docs},
};

/// Why a run failed; the message is shown on the document.
#[derive(Debug, thiserror::Error)]
enum IngestError {
    #[error("the document holds no text to index")]
    NoText,
    #[error("embedding failed: {0}")]
    Embed(#[from] EmbedError),
    #[error("the embedder answered {got} vectors for {sent} chunks")]
    Mismatch { got: usize, sent: usize },
    #[error("storage failed")]
    Store(#[from] sqlx::Error),
    #[error("chunking stopped unexpectedly")]
    Chunking,
}

impl Library {
    /// Indexes the document in the background (it must be `pending`).
    pub fn queue(&self, id: Uuid) {
        let lib = self.clone();
        self.gens.tasks.spawn(async move { lib.run(id).await });
    }

    /// Queues every document left unfinished; answers how many.
    pub async fn resume(&self) -> Result<usize, sqlx::Error> {
        let ids = docs::unfinished(&self.db).await?;
        for id in &ids {
            self.queue(*id);
        }
        Ok(ids.len())
    }

    async fn run(self, id: Uuid) {
        let Ok(_slot) = self.ingest_slots.acquire().await else {
            return;
        };
        let started = std::time::Instant::now();
        match self.index(id).await {
            Ok(Some(chunks)) => {
                metrics::counter!("switchboard_documents_indexed_total", "status" => "ready")
                    .increment(1);
                tracing::info!(document_id = %id, chunks, ms = started.elapsed().as_millis() as u64, "document indexed");
            }
            Ok(None) => {}
            Err(e) => {
                metrics::counter!("switchboard_documents_indexed_total", "status" => "failed")
                    .increment(1);
                tracing::warn!(document_id = %id, error = %e, "document indexing failed");
                if let Err(e) = docs::mark_failed(&self.db, id, &e.to_string()).await {
                    tracing::error!(document_id = %id, error = %e, "cannot mark document failed");
                }
            }
        }
    }

    /// The chunks stored, or `None` when the document was not pending (gone, or taken).
    async fn index(&self, id: Uuid) -> Result<Option<usize>, IngestError> {
        let Some(claimed) = docs::claim(&self.db, id).await? else {
            return Ok(None);
        };
        let (max, overlap) = (self.config.chunk_tokens, self.config.chunk_overlap_tokens);
        let body = claimed.body;
        let chunks = tokio::task::spawn_blocking(move || chunking::split(&body, max, overlap))
            .await
            .map_err(|_| IngestError::Chunking)?;
        if chunks.is_empty() {
            return Err(IngestError::NoText);
        }
        docs::set_chunk_count(&self.db, id, to_i32(chunks.len())).await?;
        docs::clear_chunks(&self.db, id).await?;
        let payer = Payer {
            workspace_id: claimed.workspace_id,
            user_id: claimed.uploaded_by,
            api_key: None,
            plan: store::workspaces::plan(&self.db, claimed.workspace_id).await?,
        };
        let (mut tokens, mut cost, mut done) = (0i64, 0i64, 0usize);
        for batch in chunks.chunks(self.config.embed_batch.max(1)) {
            let texts: Vec<String> = batch.iter().map(|c| c.content.clone()).collect();
            let embedded = self
                .gens
                .embed(payer.clone(), claimed.uploaded_by, &*self.embedder, texts)
                .await?;
            if embedded.vectors.len() != batch.len() {
                return Err(IngestError::Mismatch {
                    got: embedded.vectors.len(),
                    sent: batch.len(),
                });
            }
            tokens += i64::from(embedded.tokens);
            cost += embedded.cost_micros;
            let rows: Vec<docs::NewChunk> = batch
                .iter()
                .zip(embedded.vectors)
                .enumerate()
                .map(|(i, (c, v))| docs::NewChunk {
                    ordinal: to_i32(done + i),
                    content: c.content.clone(),
                    start: to_i32(c.start),
                    end: to_i32(c.end),
                    heading: c.heading.clone(),
                    tokens: to_i32(c.tokens),
                    embedding: Vector::from(v),
                })
                .collect();
            self.insert_batched(claimed.workspace_id, id, rows).await?;
            done += batch.len();
            docs::set_progress(&self.db, id, to_i32(done)).await?;
        }
        docs::mark_ready(&self.db, id, tokens, cost).await?;
        Ok(Some(done))
    }

    async fn insert_batched(
        &self,
        workspace_id: Uuid,
        id: Uuid,
        mut rows: Vec<docs::NewChunk>,
    ) -> Result<(), sqlx::Error> {
        let size = self.config.insert_batch.max(1);
        while !rows.is_empty() {
            let rest = rows.split_off(rows.len().min(size));
            docs::insert_chunks(&self.db, workspace_id, id, rows).await?;
            rows = rest;
        }
        Ok(())
    }
}

fn to_i32(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}
