//! Documents and their chunks (docs/RAG.md). Every read and delete takes the
//! workspace, so a document of another workspace is simply not found.

use chrono::{DateTime, Utc};
use pgvector::Vector;
use serde::Serialize;
use sqlx::{PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

/// A document as clients see it (its text stays in the database).
#[derive(Debug, Clone, sqlx::FromRow, Serialize, utoipa::ToSchema)]
pub struct Document {
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub uploaded_by: Option<Uuid>,
    pub title: String,
    pub filename: String,
    pub content_type: String,
    pub size_bytes: i64,
    /// `pending`, `indexing`, `ready` or `failed`.
    pub status: String,
    /// Why ingestion failed.
    pub error: Option<String>,
    pub chunk_count: i32,
    /// Chunks embedded so far in the current run.
    pub chunks_done: i32,
    /// Tokens embedded (billed) by the last run.
    pub tokens: i64,
    pub cost_micros: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

macro_rules! document_columns {
    () => {
        "id, workspace_id, uploaded_by, title, filename, content_type, size_bytes, status, error,
         chunk_count, chunks_done, tokens, cost_micros, created_at, updated_at"
    };
}

pub struct NewDocument<'a> {
    pub workspace_id: Uuid,
    pub uploaded_by: Uuid,
    pub title: &'a str,
    pub filename: &'a str,
    pub content_type: &'a str,
    pub size_bytes: i64,
    pub body: &'a str,
}

pub async fn insert(db: &PgPool, d: &NewDocument<'_>) -> Result<Document, sqlx::Error> {
    sqlx::query_as(concat!(
        "insert into documents (id, workspace_id, uploaded_by, title, filename, content_type, size_bytes, body)
         values ($1, $2, $3, $4, $5, $6, $7, $8) returning ",
        document_columns!()
    ))
    .bind(Uuid::now_v7())
    .bind(d.workspace_id)
    .bind(d.uploaded_by)
    .bind(d.title)
    .bind(d.filename)
    .bind(d.content_type)
    .bind(d.size_bytes)
    .bind(d.body)
    .fetch_one(db)
    .await
}

/// The workspace's documents, newest first.
pub async fn list(db: &PgPool, workspace_id: Uuid) -> Result<Vec<Document>, sqlx::Error> {
    sqlx::query_as(concat!(
        "select ",
        document_columns!(),
        " from documents where workspace_id = $1 order by created_at desc, id desc"
    ))
    .bind(workspace_id)
    .fetch_all(db)
    .await
}

/// The document, if `user_id` is a member of its workspace.
pub async fn get_for_member(
    db: &PgPool,
    user_id: Uuid,
    id: Uuid,
) -> Result<Option<Document>, sqlx::Error> {
    sqlx::query_as(concat!(
        "select ",
        document_columns!(),
        " from documents where id = $2 and exists (select 1 from workspace_members m where m.workspace_id = documents.workspace_id and m.user_id = $1)"
    ))
    .bind(user_id)
    .bind(id)
    .fetch_optional(db)
    .await
}

/// Deletes the document; its chunks go with it (on delete cascade).
pub async fn delete_for_member(db: &PgPool, user_id: Uuid, id: Uuid) -> Result<bool, sqlx::Error> {
    let r = sqlx::query("delete from documents where id = $2 and exists (select 1 from workspace_members m where m.workspace_id = documents.workspace_id and m.user_id = $1)")
        .bind(user_id)
        .bind(id)
        .execute(db)
        .await?;
    Ok(r.rows_affected() == 1)
}

/// Queues a document for (re-)indexing unless it is queued or being indexed now.
pub async fn requeue_for_member(
    db: &PgPool,
    user_id: Uuid,
    id: Uuid,
) -> Result<Option<Document>, sqlx::Error> {
    sqlx::query_as(concat!(
        "update documents set status = 'pending', error = null, chunks_done = 0, updated_at = now()
         where id = $2 and status in ('ready', 'failed') and exists (select 1 from workspace_members m where m.workspace_id = documents.workspace_id and m.user_id = $1) returning ",
        document_columns!()
    ))
    .bind(user_id)
    .bind(id)
    .fetch_optional(db)
    .await
}

/// What ingestion needs to run.
#[derive(Debug, sqlx::FromRow)]
pub struct Claimed {
    pub workspace_id: Uuid,
    pub uploaded_by: Option<Uuid>,
    pub body: String,
}

/// Marks a pending document `indexing` and hands out its text; `None` when it
/// is gone or not pending (another run has it).
pub async fn claim(db: &PgPool, id: Uuid) -> Result<Option<Claimed>, sqlx::Error> {
    sqlx::query_as(
        "update documents set status = 'indexing', chunks_done = 0, updated_at = now()
         where id = $1 and status = 'pending' returning workspace_id, uploaded_by, body",
    )
    .bind(id)
    .fetch_optional(db)
    .await
}

pub async fn set_chunk_count(db: &PgPool, id: Uuid, count: i32) -> Result<(), sqlx::Error> {
    sqlx::query("update documents set chunk_count = $2, updated_at = now() where id = $1")
        .bind(id)
        .bind(count)
        .execute(db)
        .await
        .map(drop)
}

pub async fn set_progress(db: &PgPool, id: Uuid, done: i32) -> Result<(), sqlx::Error> {
    sqlx::query("update documents set chunks_done = $2, updated_at = now() where id = $1")
        .bind(id)
        .bind(done)
        .execute(db)
        .await
        .map(drop)
}

pub async fn mark_ready(
    db: &PgPool,
    id: Uuid,
    tokens: i64,
    cost_micros: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update documents set status = 'ready', error = null, tokens = $2, cost_micros = $3, updated_at = now()
         where id = $1 and status = 'indexing'",
    )
    .bind(id)
    .bind(tokens)
    .bind(cost_micros)
    .execute(db)
    .await
    .map(drop)
}

pub async fn mark_failed(db: &PgPool, id: Uuid, reason: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update documents set status = 'failed', error = $2, updated_at = now() where id = $1",
    )
    .bind(id)
    .bind(reason)
    .execute(db)
    .await
    .map(drop)
}

/// At start-up: documents left `indexing` by a stopped node go back to
/// `pending`; answers every pending document's id, oldest first.
pub async fn unfinished(db: &PgPool) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query(
        "update documents set status = 'pending', chunks_done = 0 where status = 'indexing'",
    )
    .execute(db)
    .await?;
    sqlx::query_scalar("select id from documents where status = 'pending' order by created_at")
        .fetch_all(db)
        .await
}

/// One chunk to store.
pub struct NewChunk {
    pub ordinal: i32,
    pub content: String,
    pub start: i32,
    pub end: i32,
    pub heading: Option<String>,
    pub tokens: i32,
    pub embedding: Vector,
}

/// Drops the document's chunks (a re-index starts over).
pub async fn clear_chunks(db: &PgPool, document_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("delete from document_chunks where document_id = $1")
        .bind(document_id)
        .execute(db)
        .await
        .map(drop)
}

/// Inserts chunks in one statement (callers batch: 8 binds a row).
pub async fn insert_chunks(
    db: &PgPool,
    workspace_id: Uuid,
    document_id: Uuid,
    chunks: Vec<NewChunk>,
) -> Result<(), sqlx::Error> {
    if chunks.is_empty() {
        return Ok(());
    }
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new(
        "insert into document_chunks (id, workspace_id, document_id, ordinal, content, start_offset, end_offset, heading, tokens, embedding) ",
    );
    q.push_values(chunks, |mut b, c| {
        b.push_bind(Uuid::now_v7())
            .push_bind(workspace_id)
            .push_bind(document_id)
            .push_bind(c.ordinal)
            .push_bind(c.content)
            .push_bind(c.start)
            .push_bind(c.end)
            .push_bind(c.heading)
            .push_bind(c.tokens)
            .push_bind(c.embedding);
    });
    q.push(" on conflict (document_id, ordinal) do nothing");
    q.build().execute(db).await.map(drop)
}

/// A chunk found by a search, with its document's title.
#[derive(Debug, Clone, sqlx::FromRow, Serialize, utoipa::ToSchema)]
pub struct Hit {
    pub document_id: Uuid,
    pub title: String,
    /// The chunk's position in its document, from 0.
    pub chunk: i32,
    /// Character offsets of the chunk in the document's extracted text.
    pub start: i32,
    pub end: i32,
    pub heading: Option<String>,
    pub content: String,
    /// Cosine similarity, 1 = same direction.
    pub score: f64,
}

/// How a search runs.
#[derive(Debug, Clone, Copy)]
pub struct SearchParams {
    pub limit: i64,
    pub ef_search: u32,
    /// Exact (sequential) search: the reference for measuring recall.
    pub exact: bool,
}

/// The `limit` chunks of the workspace (optionally of some documents) nearest
/// to `query` by cosine distance. HNSW with `ef_search` and pgvector 0.8's
/// iterative scan, so the workspace filter does not cut results short.
pub async fn search(
    db: &PgPool,
    workspace_id: Uuid,
    documents: Option<&[Uuid]>,
    query: Vector,
    p: SearchParams,
) -> Result<Vec<Hit>, sqlx::Error> {
    let mut tx = db.begin().await?;
    sqlx::query("select set_config('hnsw.ef_search', $1, true), set_config('hnsw.iterative_scan', 'relaxed_order', true)")
        .bind(p.ef_search.to_string())
        .execute(&mut *tx)
        .await?;
    if p.exact {
        sqlx::query("select set_config('enable_indexscan', 'off', true)")
            .execute(&mut *tx)
            .await?;
    }
    // The inner query is the index scan; relaxed order is put right by the outer sort.
    let hits = sqlx::query_as(
        "select n.document_id, d.title, n.ordinal as chunk, n.start_offset as start, n.end_offset as \"end\",
                n.heading, n.content, 1 - n.distance as score
         from (select document_id, ordinal, start_offset, end_offset, heading, content,
                      embedding <=> $1 as distance
               from document_chunks
               where workspace_id = $2 and ($3::uuid[] is null or document_id = any($3))
               order by embedding <=> $1
               limit $4) n
         join documents d on d.id = n.document_id
         order by n.distance, n.document_id, n.ordinal",
    )
    .bind(query)
    .bind(workspace_id)
    .bind(documents)
    .bind(p.limit)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(hits)
}

/// The documents of `ids` that belong to the workspace.
pub async fn owned(
    db: &PgPool,
    workspace_id: Uuid,
    ids: &[Uuid],
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar("select id from documents where workspace_id = $1 and id = any($2)")
        .bind(workspace_id)
        .bind(ids)
        .fetch_all(db)
        .await
}

pub async fn chunk_count(db: &PgPool, document_id: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("select count(*) from document_chunks where document_id = $1")
        .bind(document_id)
        .fetch_one(db)
        .await
}

/// Stores an answer's citations.
pub async fn set_citations(
    db: &PgPool,
    message_id: Uuid,
    citations: &serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query("update messages set citations = $2 where id = $1")
        .bind(message_id)
        .bind(citations)
        .execute(db)
        .await
        .map(drop)
}

/// A vector from another store, as one document with one chunk.
pub struct Imported {
    pub external_id: String,
    pub title: String,
    pub text: String,
    pub embedding: Vector,
}

pub async fn workspace_exists(db: &PgPool, workspace_id: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("select exists (select 1 from workspaces where id = $1)")
        .bind(workspace_id)
        .fetch_one(db)
        .await
}

/// Which of `ids` the workspace already holds as external ids.
pub async fn present_external_ids(
    db: &PgPool,
    workspace_id: Uuid,
    ids: &[String],
) -> Result<std::collections::HashSet<String>, sqlx::Error> {
    let found: Vec<String> = sqlx::query_scalar(
        "select external_id from documents where workspace_id = $1 and external_id = any($2)",
    )
    .bind(workspace_id)
    .bind(ids)
    .fetch_all(db)
    .await?;
    Ok(found.into_iter().collect())
}

/// Stores imported vectors in one transaction: a `ready` document per vector
/// (skipping external ids the workspace has, on its unique index), then a chunk
/// for each document that was new. Answers how many were new.
pub async fn insert_imported(
    db: &PgPool,
    workspace_id: Uuid,
    rows: &[Imported],
) -> Result<u64, sqlx::Error> {
    if rows.is_empty() {
        return Ok(0);
    }
    let ids: Vec<Uuid> = rows.iter().map(|_| Uuid::now_v7()).collect();
    let mut tx = db.begin().await?;
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new(
        "insert into documents (id, workspace_id, title, filename, content_type, size_bytes, body, status, chunk_count, chunks_done, external_id) ",
    );
    q.push_values(rows.iter().zip(&ids), |mut b, (r, id)| {
        b.push_bind(*id)
            .push_bind(workspace_id)
            .push_bind(&r.title)
            .push_bind(&r.external_id)
            .push_bind("text/plain")
            .push_bind(i64::try_from(r.text.len()).unwrap_or(i64::MAX))
            .push_bind(&r.text)
            .push_bind("ready")
            .push_bind(1i32)
            .push_bind(1i32)
            .push_bind(&r.external_id);
    });
    q.push(" on conflict (workspace_id, external_id) where external_id is not null do nothing returning id");
    let inserted: std::collections::HashSet<Uuid> = q
        .build_query_scalar()
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
    let new: Vec<_> = rows
        .iter()
        .zip(&ids)
        .filter(|(_, id)| inserted.contains(id))
        .collect();
    if !new.is_empty() {
        let mut c: QueryBuilder<Postgres> = QueryBuilder::new(
            "insert into document_chunks (id, workspace_id, document_id, ordinal, content, start_offset, end_offset, tokens, embedding) ",
        );
        c.push_values(new, |mut b, (r, id)| {
            b.push_bind(Uuid::now_v7())
                .push_bind(workspace_id)
                .push_bind(*id)
                .push_bind(0i32)
                .push_bind(&r.text)
                .push_bind(0i32)
                .push_bind(i32::try_from(r.text.len()).unwrap_or(i32::MAX))
                .push_bind(0i32)
                .push_bind(&r.embedding);
        });
        c.build().execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(inserted.len() as u64)
}
