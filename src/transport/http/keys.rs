//! `/api/keys`: API keys for third-party apps. A key belongs to a workspace,
//! is shown once at creation, and is stored only as a hash.

use axum::{
    Json, Router,
    extract::State,
    http::StatusCode,
    routing::{delete, get},
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

use super::extract::{ApiJson, ApiPath, AuthUser};
use crate::{
    error::{ApiError, ApiResult},
    state::AppState,
    store::{
        self,
        api_keys::{self, ApiKey},
    },
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(list_keys).post(create_key))
        .route("/{id}", delete(revoke_key))
}

/// Every key starts with this, so scanners and people can tell what it is.
pub const KEY_PREFIX: &str = "sk-sb-";

/// The stored form of a key.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

#[derive(Deserialize, ToSchema)]
pub struct CreateKey {
    pub name: String,
    /// Spend allowed per calendar month, micro-dollars.
    pub budget_micros: Option<i64>,
    /// Requests per minute.
    pub rate_limit_rpm: Option<i32>,
    /// A workspace the caller belongs to; their own by default.
    pub workspace_id: Option<Uuid>,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub meta: ApiKey,
    /// The key itself: shown this once, never again.
    pub key: String,
}

#[derive(Serialize, ToSchema)]
pub struct KeyList {
    pub keys: Vec<ApiKey>,
}

#[utoipa::path(post, path = "/api/keys", tag = "keys", request_body = CreateKey, security(("bearer" = [])),
    responses((status = 201, body = CreatedKey), (status = 400, description = "bad name, budget or rate limit"),
              (status = 404, description = "workspace not found")))]
pub async fn create_key(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(req): ApiJson<CreateKey>,
) -> ApiResult<(StatusCode, Json<CreatedKey>)> {
    crate::auth::spend::may_spend(&state.db, &state.config.accounts, user.id).await?;
    let name = crate::text::DisplayText::parse(&req.name, "name", 100)
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    let name = name.as_str();
    if req.budget_micros.is_some_and(|b| b < 0) {
        return Err(ApiError::invalid("budget_micros: must not be negative"));
    }
    if req.rate_limit_rpm.is_some_and(|r| r <= 0) {
        return Err(ApiError::invalid("rate_limit_rpm: must be greater than 0"));
    }
    let workspace_id = match req.workspace_id {
        Some(w) if store::chats::is_member(&state.db, user.id, w).await? => w,
        Some(_) => return Err(ApiError::not_found("workspace")),
        None => store::chats::default_workspace(&state.db, user.id)
            .await?
            .ok_or_else(|| ApiError::not_found("workspace"))?,
    };
    // 32 random bytes, hex: 256 bits.
    let key = format!("{KEY_PREFIX}{}", hex::encode(rand::random::<[u8; 32]>()));
    let meta = api_keys::create(
        &state.db,
        workspace_id,
        user.id,
        name,
        &key[..KEY_PREFIX.len() + 6],
        &hash_key(&key),
        req.budget_micros,
        req.rate_limit_rpm,
    )
    .await?;
    tracing::info!(key_id = %meta.id, prefix = %meta.prefix, "api key created");
    Ok((StatusCode::CREATED, Json(CreatedKey { meta, key })))
}

#[utoipa::path(get, path = "/api/keys", tag = "keys", security(("bearer" = [])), responses((status = 200, body = KeyList)))]
pub async fn list_keys(State(state): State<AppState>, user: AuthUser) -> ApiResult<Json<KeyList>> {
    Ok(Json(KeyList {
        keys: api_keys::list_for_user(&state.db, user.id).await?,
    }))
}

#[utoipa::path(delete, path = "/api/keys/{id}", tag = "keys", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "key id")),
    responses((status = 204, description = "revoked; stops working at once on this node, within `auth.key_cache_ms` on the others"), (status = 404, description = "no such key")))]
pub async fn revoke_key(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<StatusCode> {
    if api_keys::revoke(&state.db, user.id, id).await? {
        state.key_cache.forget_key(id);
        tracing::info!(key_id = %id, "api key revoked");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("key"))
    }
}
