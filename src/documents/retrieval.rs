//! Search over a workspace's chunks, and the context a chat answer draws on:
//! the best chunks within a token budget, as one system message of numbered
//! sources, with the citations that go out with the answer.

use pgvector::Vector;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Library;
use crate::{
    admission::Payer,
    generation::EmbedError,
    providers::{PromptMessage, tokenizer},
    store::documents::{self as docs, Hit, SearchParams},
};

/// Which documents a search may draw on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every document of the workspace.
    All,
    /// Only these (each must be in the workspace).
    Only(Vec<Uuid>),
}

impl Scope {
    /// What a send's `documents` asks for; `None` for `false`.
    pub fn from_choice(choice: crate::protocol::DocumentsChoice) -> Option<Self> {
        use crate::protocol::DocumentsChoice;
        match choice {
            DocumentsChoice::All(true) => Some(Self::All),
            DocumentsChoice::All(false) => None,
            DocumentsChoice::Only(ids) => Some(Self::Only(ids)),
        }
    }
}

/// One source an answer used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Citation {
    /// The `[n]` the prompt numbered it with.
    pub n: u32,
    pub document_id: Uuid,
    pub title: String,
    /// The chunk's position in its document, from 0.
    pub chunk: i32,
    /// Byte offsets of the chunk in the document's extracted text.
    pub start: i32,
    pub end: i32,
    pub heading: Option<String>,
    /// Cosine similarity to the question.
    pub score: f64,
}

/// What retrieval adds to a prompt.
#[derive(Debug, Clone)]
pub struct Context {
    pub message: PromptMessage,
    pub citations: Vec<Citation>,
}

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("document not found")]
    UnknownDocument,
    #[error(transparent)]
    Embed(#[from] EmbedError),
    #[error(transparent)]
    Store(#[from] sqlx::Error),
}

impl Library {
    /// The `limit` chunks nearest to `query` (embedded and billed to `payer`).
    pub async fn search(
        &self,
        payer: Payer,
        query: &str,
        scope: &Scope,
        limit: u32,
    ) -> Result<Vec<Hit>, SearchError> {
        let workspace_id = payer.workspace_id;
        let only = match scope {
            Scope::All => None,
            Scope::Only(ids) => {
                let owned = docs::owned(&self.db, workspace_id, ids).await?;
                if ids.iter().any(|id| !owned.contains(id)) {
                    return Err(SearchError::UnknownDocument);
                }
                Some(owned)
            }
        };
        let user_id = payer.user_id;
        let mut embedded = self
            .gens
            .embed(payer, user_id, &*self.embedder, vec![query.to_owned()])
            .await?;
        let Some(vector) = embedded.vectors.pop() else {
            return Ok(Vec::new());
        };
        let started = std::time::Instant::now();
        let params = SearchParams {
            limit: i64::from(limit.min(self.config.max_results)),
            ef_search: self.config.ef_search,
            exact: false,
        };
        let hits = docs::search(
            &self.db,
            workspace_id,
            only.as_deref(),
            Vector::from(vector),
            params,
        )
        .await?;
        metrics::histogram!("switchboard_documents_search_seconds")
            .record(started.elapsed().as_secs_f64());
        Ok(hits)
    }

    /// The sources for answering `question`, or `None` when nothing was found.
    pub async fn context(
        &self,
        payer: Payer,
        question: &str,
        scope: &Scope,
    ) -> Result<Option<Context>, SearchError> {
        let hits = self
            .search(payer, question, scope, self.config.context_chunks)
            .await?;
        Ok(build_context(hits, self.config.context_tokens))
    }
}

const PREAMBLE: &str = "Answer using the numbered sources below from the user's documents when they are relevant, \
and cite them by number like [1]. If they do not contain the answer, say so.";

/// Best hits first, as many as fit in `budget` tokens (at least the first, cut to fit).
pub fn build_context(hits: Vec<Hit>, budget: u32) -> Option<Context> {
    let mut text = String::from(PREAMBLE);
    let mut used = tokenizer::count_tokens(&text);
    let mut citations = Vec::new();
    for hit in hits {
        let n = u32::try_from(citations.len() + 1).unwrap_or(u32::MAX);
        let block = format!(
            "\n\n[{n}] {} (part {})\n{}",
            hit.title,
            hit.chunk + 1,
            hit.content.trim()
        );
        let cost = tokenizer::count_tokens(&block);
        if used + cost > budget {
            break;
        }
        used += cost;
        text.push_str(&block);
        citations.push(Citation {
            n,
            document_id: hit.document_id,
            title: hit.title,
            chunk: hit.chunk,
            start: hit.start,
            end: hit.end,
            heading: hit.heading,
            score: hit.score,
        });
    }
    if citations.is_empty() {
        return None;
    }
    Some(Context {
        message: PromptMessage {
            role: "system".to_owned(),
            content: text,
            ..PromptMessage::default()
        },
        citations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(chunk: i32, content: &str, score: f64) -> Hit {
        Hit {
            document_id: Uuid::nil(),
            title: "Guide".into(),
            chunk,
            start: 0,
            end: 1,
            heading: None,
            content: content.into(),
            score,
        }
    }

    #[test]
    fn sources_are_numbered_in_order_and_kept_within_the_budget() {
        let long = "word ".repeat(400);
        let ctx = build_context(
            vec![
                hit(0, "alpha", 0.9),
                hit(3, "beta", 0.8),
                hit(4, &long, 0.7),
            ],
            200,
        )
        .unwrap();
        assert_eq!(ctx.citations.len(), 2, "the long chunk does not fit");
        assert_eq!(ctx.citations[1].n, 2);
        assert_eq!(ctx.message.role, "system");
        assert!(ctx.message.content.contains("[1] Guide (part 1)\nalpha"));
        assert!(ctx.message.content.contains("[2] Guide (part 4)\nbeta"));
        assert!(tokenizer::count_tokens(&ctx.message.content) <= 200);
        assert!(build_context(Vec::new(), 200).is_none());
    }
}
