//! The workspace's documents in a chat answer: when a send asks for them,
//! retrieval runs in the caller's task before planning, so the prompt that is
//! counted and reserved already holds the sources; the citations travel with
//! the queued turn to the answer row and the `done` frame.

use crate::{
    admission::Payer,
    documents::{
        Library,
        retrieval::{Context, Scope, SearchError},
    },
    generation::EmbedError,
};

use super::{ChatError, SendRequest};
use crate::{providers::PromptMessage, store::messages::Message};

/// The sources for this send, if it asked for documents and any matched.
pub(super) async fn retrieve(
    library: &Library,
    payer: &Payer,
    req: &SendRequest,
) -> Result<Option<Context>, ChatError> {
    let Some(scope) = &req.documents else {
        return Ok(None);
    };
    if let Scope::Only(ids) = scope
        && (ids.is_empty() || ids.len() > MAX_DOCUMENT_IDS)
    {
        return Err(ChatError::Invalid(format!(
            "documents: true, or a list of 1 to {MAX_DOCUMENT_IDS} document ids"
        )));
    }
    library
        .context(payer.clone(), &req.content, scope)
        .await
        .map_err(|e| match e {
            SearchError::UnknownDocument => {
                ChatError::Invalid("documents: no such document in this chat's workspace".into())
            }
            SearchError::Embed(EmbedError::Plan(e)) => ChatError::from(e),
            SearchError::Embed(EmbedError::Provider(e)) => {
                tracing::warn!(error = %e, "embedding the question failed");
                ChatError::NoProvider
            }
            SearchError::Store(e) => {
                tracing::error!(error = %e, "document search failed");
                ChatError::Unavailable
            }
        })
}

/// Document ids one send may name.
pub const MAX_DOCUMENT_IDS: usize = 100;

/// A prompt re-read from history, with the sources put back before the question.
pub(super) fn with_context(
    mut prompt: Vec<PromptMessage>,
    context: Option<&Context>,
) -> Vec<PromptMessage> {
    if let Some(c) = context {
        prompt.insert(prompt.len().saturating_sub(1), c.message.clone());
    }
    prompt
}

/// Stores the answer's citations on its row (and on `answer`, for the `done` frame).
pub(super) async fn record(db: &sqlx::PgPool, answer: &mut Message, context: Option<&Context>) {
    let Some(c) = context else { return };
    let Ok(citations) = serde_json::to_value(&c.citations) else {
        return;
    };
    if let Err(e) = crate::store::documents::set_citations(db, answer.id, &citations).await {
        // The answer still goes out with them in `done`; only the stored copy lacks them.
        tracing::warn!(message_id = %answer.id, error = %e, "cannot store citations");
    }
    answer.citations = Some(citations);
}
