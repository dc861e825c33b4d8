//! `/api/documents`: upload (multipart or JSON text), list, read, delete and
//! re-index a workspace's documents, and search their chunks (docs/RAG.md).
//!
//! A document is visible to the members of its workspace; one that does not
//! exist and one in another workspace get the same 404. Ingestion runs in the
//! background (`crate::documents`); clients poll `GET /api/documents/{id}`.

use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, FromRequest, Multipart, Request, State},
    http::{StatusCode, header},
    response::IntoResponse,
    routing::{get, post},
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::extract::{ApiJson, ApiPath, ApiQuery, AuthUser};
use crate::{
    actors::chat::ChatError,
    admission::Payer,
    documents::{
        extract::{self, ExtractError, Format},
        retrieval::{Scope, SearchError},
    },
    error::{ApiError, ApiResult, ErrorCode},
    generation::EmbedError,
    state::AppState,
    store::{
        self,
        documents::{self as docs, Document, Hit},
    },
};

pub fn router(max_upload_bytes: usize) -> Router<AppState> {
    Router::new()
        .route(
            "/",
            get(list_documents)
                .post(upload_document)
                // Room for the multipart framing around the largest file.
                .layer(DefaultBodyLimit::max(
                    max_upload_bytes.saturating_add(64 * 1024),
                )),
        )
        .route("/search", post(search_documents))
        .route("/{id}", get(get_document).delete(delete_document))
        .route("/{id}/reindex", post(reindex_document))
}

#[derive(Deserialize, ToSchema)]
pub struct TextUpload {
    /// The document's text.
    pub content: String,
    /// Shown in citations; default: the filename.
    pub title: Option<String>,
    /// Default `document.md` (or `.txt`/`.html` after `content_type`).
    pub filename: Option<String>,
    /// `text/markdown` (default), `text/plain` or `text/html`.
    pub content_type: Option<String>,
    /// A workspace the caller belongs to; default: their own.
    pub workspace_id: Option<Uuid>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WorkspaceQuery {
    /// A workspace the caller belongs to; default: their own.
    pub workspace_id: Option<Uuid>,
}

#[derive(Deserialize, ToSchema)]
pub struct SearchRequest {
    /// 1–2000 characters.
    pub query: String,
    /// Search only these documents (each must be in the workspace).
    pub documents: Option<Vec<Uuid>>,
    /// 1–`documents.max_results` (default 10).
    pub limit: Option<u32>,
    pub workspace_id: Option<Uuid>,
}

#[derive(Serialize, ToSchema)]
pub struct SearchResults {
    pub results: Vec<Hit>,
}

const TITLE_MAX: usize = 200;
const QUERY_MAX: usize = 2_000;

/// One file, however it came.
struct Upload {
    bytes: Vec<u8>,
    filename: String,
    content_type: Option<String>,
    title: Option<String>,
    workspace_id: Option<Uuid>,
}

async fn workspace_for(state: &AppState, user_id: Uuid, asked: Option<Uuid>) -> ApiResult<Uuid> {
    let not_found = || ApiError::not_found("workspace");
    match asked {
        Some(id) if store::chats::is_member(&state.db, user_id, id).await? => Ok(id),
        Some(_) => Err(not_found()),
        None => store::chats::default_workspace(&state.db, user_id)
            .await?
            .ok_or_else(not_found),
    }
}

#[utoipa::path(post, path = "/api/documents", tag = "documents", security(("bearer" = [])),
    request_body(content = TextUpload, description = "JSON text, or multipart/form-data with a `file` part (and optional `title`, `workspace_id` parts)"),
    responses((status = 202, body = Document, description = "stored; indexing in the background"),
              (status = 400, description = "malformed body, unreadable file or no text"), (status = 404, description = "no such workspace"),
              (status = 413, description = "over `documents.max_upload_bytes`"), (status = 415, description = "not text, Markdown, HTML or PDF")))]
pub async fn upload_document(
    State(state): State<AppState>,
    user: AuthUser,
    req: Request,
) -> ApiResult<impl IntoResponse> {
    crate::auth::spend::may_spend(&state.db, &state.config.accounts, user.id).await?;
    let media = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let upload = if media.starts_with("multipart/form-data") {
        let form = Multipart::from_request(req, &state)
            .await
            .map_err(|e| multipart_error(e.status(), e.body_text()))?;
        read_multipart(form).await?
    } else if media.starts_with("application/json") {
        let ApiJson(body) = ApiJson::<TextUpload>::from_request(req, &state).await?;
        from_json(body)?
    } else {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "expected multipart/form-data or application/json",
        ));
    };
    let max = state.config.documents.max_upload_bytes;
    if upload.bytes.len() > max {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("the file is over {max} bytes"),
        ));
    }
    let format =
        Format::detect(upload.content_type.as_deref(), &upload.filename).ok_or_else(|| {
            ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "unsupported file type: plain text, Markdown, HTML or PDF",
            )
        })?;
    let workspace_id = workspace_for(&state, user.id, upload.workspace_id).await?;
    let title = parse_title(upload.title.as_deref().unwrap_or(&upload.filename))?;
    let size = i64::try_from(upload.bytes.len()).unwrap_or(i64::MAX);
    let bytes = upload.bytes;
    let text = tokio::task::spawn_blocking(move || extract::extract(format, &bytes))
        .await
        // A PDF that panics the parser is as unreadable as one it rejects.
        .unwrap_or_else(|_| Err(ExtractError::Pdf("the parser gave up".into())))
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    let doc = docs::insert(
        &state.db,
        &docs::NewDocument {
            workspace_id,
            uploaded_by: user.id,
            title: &title,
            filename: &upload.filename,
            content_type: format.media_type(),
            size_bytes: size,
            body: &text,
        },
    )
    .await?;
    tracing::info!(document_id = %doc.id, %workspace_id, bytes = size, "document uploaded");
    state.actors.documents.queue(doc.id);
    Ok((StatusCode::ACCEPTED, Json(doc)))
}

fn multipart_error(status: StatusCode, text: String) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(ErrorCode::PayloadTooLarge, "the file is too large")
    } else {
        ApiError::invalid(format!("malformed multipart body: {text}"))
    }
}

async fn read_multipart(mut form: Multipart) -> ApiResult<Upload> {
    let mut upload = Upload {
        bytes: Vec::new(),
        filename: String::new(),
        content_type: None,
        title: None,
        workspace_id: None,
    };
    let mut has_file = false;
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| multipart_error(e.status(), e.body_text()))?
    {
        match field.name().unwrap_or("") {
            "file" => {
                upload.filename = field.file_name().unwrap_or("").trim().to_owned();
                upload.content_type = field.content_type().map(str::to_owned);
                upload.bytes = field
                    .bytes()
                    .await
                    .map_err(|e| multipart_error(e.status(), e.body_text()))?
                    .to_vec();
                has_file = true;
            }
            "title" => {
                upload.title = Some(
                    field
                        .text()
                        .await
                        .map_err(|e| multipart_error(e.status(), e.body_text()))?,
                )
            }
            "workspace_id" => {
                let raw = field
                    .text()
                    .await
                    .map_err(|e| multipart_error(e.status(), e.body_text()))?;
                upload.workspace_id = Some(
                    raw.trim()
                        .parse()
                        .map_err(|_| ApiError::invalid("workspace_id: not a uuid"))?,
                );
            }
            other => {
                return Err(ApiError::invalid(format!(
                    "unexpected form field `{other}`"
                )));
            }
        }
    }
    if !has_file {
        return Err(ApiError::invalid("missing the `file` part"));
    }
    check_filename(&upload.filename)?;
    Ok(upload)
}

fn from_json(body: TextUpload) -> ApiResult<Upload> {
    let content_type = body.content_type.unwrap_or_else(|| "text/markdown".into());
    let format = Format::detect(Some(&content_type), "")
        .filter(|f| *f != Format::Pdf)
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "content_type: text/markdown, text/plain or text/html (upload PDFs as multipart)",
            )
        })?;
    let ext = match format {
        Format::Text => "txt",
        Format::Html => "html",
        _ => "md",
    };
    let filename = body.filename.unwrap_or_else(|| format!("document.{ext}"));
    check_filename(&filename)?;
    Ok(Upload {
        bytes: body.content.into_bytes(),
        filename,
        content_type: Some(content_type),
        title: body.title,
        workspace_id: body.workspace_id,
    })
}

fn check_filename(name: &str) -> ApiResult<()> {
    if name.is_empty() || name.chars().count() > 255 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "filename: 1 to 255 characters, no control characters",
        ));
    }
    if let Some(c) = crate::text::hidden_char(name) {
        return Err(ApiError::invalid(format!(
            "filename: must not contain invisible or text-direction characters (U+{:04X})",
            u32::from(c)
        )));
    }
    Ok(())
}

fn parse_title(raw: &str) -> ApiResult<String> {
    crate::text::DisplayText::parse(raw, "title", TITLE_MAX)
        .map(crate::text::DisplayText::into_string)
        .map_err(|e| ApiError::invalid(e.to_string()))
}

#[utoipa::path(get, path = "/api/documents", tag = "documents", security(("bearer" = [])), params(WorkspaceQuery),
    responses((status = 200, body = [Document]), (status = 404, description = "no such workspace")))]
pub async fn list_documents(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<WorkspaceQuery>,
) -> ApiResult<Json<Vec<Document>>> {
    let workspace_id = workspace_for(&state, user.id, q.workspace_id).await?;
    Ok(Json(docs::list(&state.db, workspace_id).await?))
}

#[utoipa::path(get, path = "/api/documents/{id}", tag = "documents", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "document id")),
    responses((status = 200, body = Document, description = "status, progress (chunks_done of chunk_count), tokens and cost"), (status = 404, description = "no such document")))]
pub async fn get_document(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<Document>> {
    docs::get_for_member(&state.db, user.id, id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("document"))
}

#[utoipa::path(delete, path = "/api/documents/{id}", tag = "documents", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "document id")),
    responses((status = 204, description = "deleted with its chunks"), (status = 404, description = "no such document")))]
pub async fn delete_document(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<StatusCode> {
    if docs::delete_for_member(&state.db, user.id, id).await? {
        tracing::info!(document_id = %id, "document deleted");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("document"))
    }
}

#[utoipa::path(post, path = "/api/documents/{id}/reindex", tag = "documents", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "document id")),
    responses((status = 202, body = Document), (status = 404, description = "no such document"),
              (status = 409, description = "already pending or indexing")))]
pub async fn reindex_document(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<impl IntoResponse> {
    crate::auth::spend::may_spend(&state.db, &state.config.accounts, user.id).await?;
    match docs::requeue_for_member(&state.db, user.id, id).await? {
        Some(doc) => {
            state.actors.documents.queue(doc.id);
            Ok((StatusCode::ACCEPTED, Json(doc)))
        }
        None if docs::get_for_member(&state.db, user.id, id)
            .await?
            .is_some() =>
        {
            Err(ApiError::conflict(
                "the document is already queued or being indexed",
            ))
        }
        None => Err(ApiError::not_found("document")),
    }
}

#[utoipa::path(post, path = "/api/documents/search", tag = "documents", security(("bearer" = [])), request_body = SearchRequest,
    responses((status = 200, body = SearchResults, description = "chunks, nearest first"), (status = 400, description = "bad query or limit"),
              (status = 404, description = "no such workspace or document")))]
pub async fn search_documents(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(req): ApiJson<SearchRequest>,
) -> ApiResult<Json<SearchResults>> {
    let query = req.query.trim();
    if query.is_empty() || query.chars().count() > QUERY_MAX {
        return Err(ApiError::invalid(format!(
            "query: 1 to {QUERY_MAX} characters"
        )));
    }
    let max = state.config.documents.max_results;
    let limit = req.limit.unwrap_or(10.min(max));
    if limit == 0 || limit > max {
        return Err(ApiError::invalid(format!("limit: 1 to {max}")));
    }
    let scope = match req.documents {
        None => Scope::All,
        Some(ids) if ids.is_empty() || ids.len() > 100 => {
            return Err(ApiError::invalid("documents: 1 to 100 document ids"));
        }
        Some(ids) => Scope::Only(ids),
    };
    crate::auth::spend::may_spend(&state.db, &state.config.accounts, user.id).await?;
    let workspace_id = workspace_for(&state, user.id, req.workspace_id).await?;
    let payer = Payer {
        workspace_id,
        user_id: Some(user.id),
        api_key: None,
        plan: store::workspaces::plan(&state.db, workspace_id).await?,
    };
    let results = state
        .actors
        .documents
        .search(payer, query, &scope, limit)
        .await
        .map_err(|e| match e {
            SearchError::UnknownDocument => ApiError::not_found("document"),
            SearchError::Embed(EmbedError::Plan(e)) => ApiError::from(ChatError::from(e)),
            SearchError::Embed(EmbedError::Provider(e)) => ApiError::new(
                ErrorCode::ProviderUnavailable,
                format!("embedding failed: {e}"),
            ),
            SearchError::Store(e) => ApiError::from(e),
        })?;
    // A query with nothing to embed (a zero vector) has no direction: cosine
    // similarity is NaN, which JSON cannot carry. Its honest score is 0.
    let mut results = results;
    for hit in &mut results {
        if !hit.score.is_finite() {
            hit.score = 0.0;
        }
    }
    Ok(Json(SearchResults { results }))
}
