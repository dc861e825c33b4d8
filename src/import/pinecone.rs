//! Pinecone → pgvector: vectors `{id, values, metadata}` from a JSONL export
//! or Pinecone's data-plane REST API (`GET /vectors/list` paged by
//! `pagination.next`, then `GET /vectors/fetch?ids=…`) become documents of a
//! workspace, one ready chunk each, with the Pinecone id as the document's
//! `external_id`. Re-running imports nothing twice: rows key on
//! `(workspace_id, external_id)`, ids already present are not even fetched,
//! so an interrupted import is resumed by running it again.
//!
//! The text shown in citations comes from `metadata.text` (else `content`,
//! `chunk`, `page_content`); the title from `metadata.title` (else `source`,
//! else the id). Vectors of another width than 384 are counted and skipped.

use std::{collections::HashSet, io::BufRead};

use serde::Deserialize;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::{providers::embedding::DIMENSIONS, store::documents as docs};

/// One Pinecone vector as exported or fetched.
#[derive(Debug, Clone, Deserialize)]
pub struct PineconeVector {
    pub id: String,
    pub values: Vec<f32>,
    #[serde(default)]
    pub metadata: Option<serde_json::Map<String, Value>>,
}

/// What an import did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    /// Vectors read from the source.
    pub read: u64,
    pub imported: u64,
    /// Already in the workspace (an earlier run).
    pub already_present: u64,
    /// Vectors whose width is not 384.
    pub dimension_mismatch: u64,
    /// Lines or records that were not a vector (bad JSON, no id, id too long).
    pub malformed: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("workspace {0} does not exist")]
    NoWorkspace(Uuid),
    #[error("reading the export: {0}")]
    Io(#[from] std::io::Error),
    #[error("Pinecone API: {0}")]
    Api(String),
    #[error("storage: {0}")]
    Store(#[from] sqlx::Error),
}

/// Where the vectors come from.
pub enum Source {
    Jsonl(std::path::PathBuf),
    Api {
        /// The index host, e.g. `https://my-index-abc.svc.pinecone.io`.
        base_url: String,
        api_key: crate::config::Secret,
        namespace: Option<String>,
    },
}

/// Vectors stored per transaction (and ids fetched per API call).
pub const BATCH: usize = 100;

pub async fn import(
    db: &PgPool,
    workspace_id: Uuid,
    source: Source,
    progress: &mut dyn FnMut(&Counts),
) -> Result<Counts, ImportError> {
    if !docs::workspace_exists(db, workspace_id).await? {
        return Err(ImportError::NoWorkspace(workspace_id));
    }
    let mut counts = Counts::default();
    match source {
        Source::Jsonl(path) => import_jsonl(db, workspace_id, &path, &mut counts, progress).await?,
        Source::Api {
            base_url,
            api_key,
            namespace,
        } => {
            let api = Api::new(base_url, api_key, namespace);
            import_api(db, workspace_id, &api, &mut counts, progress).await?;
        }
    }
    Ok(counts)
}

async fn import_jsonl(
    db: &PgPool,
    workspace_id: Uuid,
    path: &std::path::Path,
    counts: &mut Counts,
    progress: &mut dyn FnMut(&Counts),
) -> Result<(), ImportError> {
    let file = std::io::BufReader::new(std::fs::File::open(path)?);
    let mut batch = Vec::with_capacity(BATCH);
    for line in file.lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        counts.read += 1;
        match serde_json::from_str::<PineconeVector>(&line) {
            Ok(v) => batch.push(v),
            Err(_) => counts.malformed += 1,
        }
        if batch.len() == BATCH {
            store_batch(db, workspace_id, std::mem::take(&mut batch), counts).await?;
            progress(counts);
        }
    }
    store_batch(db, workspace_id, batch, counts).await?;
    progress(counts);
    Ok(())
}

async fn import_api(
    db: &PgPool,
    workspace_id: Uuid,
    api: &Api,
    counts: &mut Counts,
    progress: &mut dyn FnMut(&Counts),
) -> Result<(), ImportError> {
    let mut token: Option<String> = None;
    loop {
        let (ids, next) = api.list(token.as_deref()).await?;
        // Resuming: ids stored by an earlier run are not fetched again.
        let present = docs::present_external_ids(db, workspace_id, &ids).await?;
        counts.read += ids.len() as u64;
        counts.already_present += present.len() as u64;
        let missing: Vec<String> = ids.into_iter().filter(|id| !present.contains(id)).collect();
        for chunk in missing.chunks(BATCH) {
            let vectors = api.fetch(chunk).await?;
            store_batch(db, workspace_id, vectors, counts).await?;
        }
        progress(counts);
        match next {
            Some(t) if !t.is_empty() => token = Some(t),
            _ => return Ok(()),
        }
    }
}

fn text_of(meta: Option<&serde_json::Map<String, Value>>, keys: &[&str]) -> Option<String> {
    let meta = meta?;
    keys.iter()
        .find_map(|k| meta.get(*k).and_then(Value::as_str))
        .map(|s| s.replace('\0', ""))
}

/// The vectors worth storing; the rest are counted.
fn storable(vectors: Vec<PineconeVector>, counts: &mut Counts) -> Vec<PineconeVector> {
    let mut rows = Vec::with_capacity(vectors.len());
    let mut seen = HashSet::new();
    for v in vectors {
        if v.id.is_empty() || v.id.chars().count() > 255 || v.id.chars().any(char::is_control) {
            counts.malformed += 1;
        } else if v.values.len() != DIMENSIONS {
            counts.dimension_mismatch += 1;
        } else if !seen.insert(v.id.clone()) {
            counts.already_present += 1;
        } else {
            rows.push(v);
        }
    }
    rows
}

/// Stores one batch; ids already present are counted, not stored again.
async fn store_batch(
    db: &PgPool,
    workspace_id: Uuid,
    vectors: Vec<PineconeVector>,
    counts: &mut Counts,
) -> Result<(), ImportError> {
    let rows: Vec<docs::Imported> = storable(vectors, counts)
        .into_iter()
        .map(|v| {
            let meta = v.metadata.as_ref();
            docs::Imported {
                text: text_of(meta, &["text", "content", "chunk", "page_content"])
                    .unwrap_or_default(),
                title: text_of(meta, &["title", "source"])
                    .unwrap_or_else(|| v.id.clone())
                    .chars()
                    .take(200)
                    .collect(),
                external_id: v.id,
                embedding: pgvector::Vector::from(v.values),
            }
        })
        .collect();
    let inserted = docs::insert_imported(db, workspace_id, &rows).await?;
    counts.imported += inserted;
    counts.already_present += rows.len() as u64 - inserted;
    Ok(())
}

/// Pinecone's data-plane API.
struct Api {
    base: String,
    key: crate::config::Secret,
    namespace: Option<String>,
    client: reqwest::Client,
}

#[derive(Deserialize)]
struct ListPage {
    #[serde(default)]
    vectors: Vec<ListedId>,
    pagination: Option<Pagination>,
}

#[derive(Deserialize)]
struct ListedId {
    id: String,
}

#[derive(Deserialize)]
struct Pagination {
    next: Option<String>,
}

#[derive(Deserialize)]
struct Fetched {
    #[serde(default)]
    vectors: std::collections::HashMap<String, PineconeVector>,
}

impl Api {
    fn new(base: String, key: crate::config::Secret, namespace: Option<String>) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            key,
            namespace,
            client: reqwest::Client::new(),
        }
    }

    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<T, ImportError> {
        let mut q: Vec<(&str, &str)> = query.to_vec();
        if let Some(ns) = &self.namespace {
            q.push(("namespace", ns));
        }
        let res = self
            .client
            .get(format!("{}{path}", self.base))
            .header("Api-Key", self.key.expose())
            .query(&q)
            .send()
            .await
            .map_err(|e| ImportError::Api(e.without_url().to_string()))?;
        if !res.status().is_success() {
            return Err(ImportError::Api(format!(
                "{path} answered {}",
                res.status()
            )));
        }
        res.json()
            .await
            .map_err(|e| ImportError::Api(format!("{path}: {}", e.without_url())))
    }

    async fn list(
        &self,
        token: Option<&str>,
    ) -> Result<(Vec<String>, Option<String>), ImportError> {
        let limit = BATCH.to_string();
        let mut q = vec![("limit", limit.as_str())];
        if let Some(t) = token {
            q.push(("paginationToken", t));
        }
        let page: ListPage = self.get("/vectors/list", &q).await?;
        Ok((
            page.vectors.into_iter().map(|v| v.id).collect(),
            page.pagination.and_then(|p| p.next),
        ))
    }

    async fn fetch(&self, ids: &[String]) -> Result<Vec<PineconeVector>, ImportError> {
        let q: Vec<(&str, &str)> = ids.iter().map(|id| ("ids", id.as_str())).collect();
        let fetched: Fetched = self.get("/vectors/fetch", &q).await?;
        Ok(fetched.vectors.into_values().collect())
    }
}
