//! `/api/admin`: the operator's actions over REST, admins only
//! (`users.is_admin`). Each change goes through `crate::admin::apply`, which
//! writes the audit row in the same transaction; this file only parses,
//! checks the caller and renders.

use axum::{
    Json, Router,
    extract::{FromRequestParts, State},
    http::request::Parts,
    routing::{get, post, put},
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::extract::{ApiJson, ApiPath, ApiQuery, AuthUser};
use crate::{
    admin::{self, Action, AdminError, Outcome},
    error::{ApiError, ApiResult, ErrorCode},
    state::AppState,
    store::{self, admin::AuditEntry},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/users", get(list_users))
        .route("/workspaces", get(list_workspaces))
        .route("/audit", get(audit))
        .route("/users/{id}/admin", put(set_admin))
        .route("/users/{id}/disabled", put(set_disabled))
        .route("/users/{id}/revoke-sessions", post(revoke_sessions))
        .route("/workspaces/{id}/plan", put(set_plan))
}

/// A signed-in, enabled user with `is_admin`; 401 without a token, 403 otherwise.
#[derive(Debug, Clone)]
pub struct AdminUser {
    pub id: Uuid,
    pub email: String,
}

impl FromRequestParts<AppState> for AdminUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let user = AuthUser::from_request_parts(parts, state).await?;
        let me = store::users::by_id(&state.db, user.id)
            .await?
            .ok_or_else(|| ApiError::unauthorized("invalid or expired token"))?;
        if !me.is_admin {
            return Err(ApiError::new(ErrorCode::Forbidden, "admins only"));
        }
        Ok(Self {
            id: me.id,
            email: me.email,
        })
    }
}

impl AdminUser {
    fn actor(&self) -> admin::Actor {
        admin::Actor {
            user_id: Some(self.id),
            label: self.email.clone(),
        }
    }
}

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        match e {
            AdminError::NoSuchUser => ApiError::not_found("user"),
            AdminError::NoSuchWorkspace => ApiError::not_found("workspace"),
            AdminError::Invalid(m) => ApiError::invalid(m),
            AdminError::Store(e) => e.into(),
        }
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct Page {
    /// 1 to 1000, default 100.
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

fn page(p: &Page) -> ApiResult<(i64, i64)> {
    let limit = p.limit.unwrap_or(100);
    let offset = p.offset.unwrap_or(0);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit: must be 1 to 1000"));
    }
    if !(0..=10_000_000).contains(&offset) {
        return Err(ApiError::invalid("offset: must be 0 to 10000000"));
    }
    Ok((limit, offset))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct UserList {
    pub users: Vec<store::admin::AdminUser>,
}

#[utoipa::path(get, path = "/api/admin/users", tag = "admin", security(("bearer" = [])),
    params(Page), responses((status = 200, body = UserList), (status = 403, description = "admins only")))]
pub async fn list_users(
    State(state): State<AppState>,
    _admin: AdminUser,
    ApiQuery(p): ApiQuery<Page>,
) -> ApiResult<Json<UserList>> {
    let (limit, offset) = page(&p)?;
    let users = store::admin::list_users(&state.db, limit, offset).await?;
    Ok(Json(UserList { users }))
}

#[derive(Serialize, utoipa::ToSchema)]
// Named apart from `/api/workspaces`' own list in the merged OpenAPI document.
#[schema(as = AdminWorkspaceList)]
pub struct WorkspaceList {
    pub workspaces: Vec<store::admin::AdminWorkspace>,
}

#[utoipa::path(get, path = "/api/admin/workspaces", tag = "admin", security(("bearer" = [])),
    params(Page), responses((status = 200, body = WorkspaceList), (status = 403, description = "admins only")))]
pub async fn list_workspaces(
    State(state): State<AppState>,
    _admin: AdminUser,
    ApiQuery(p): ApiQuery<Page>,
) -> ApiResult<Json<WorkspaceList>> {
    let (limit, offset) = page(&p)?;
    let workspaces = store::admin::list_workspaces(&state.db, limit, offset).await?;
    Ok(Json(WorkspaceList { workspaces }))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AuditList {
    pub entries: Vec<AuditEntry>,
}

#[utoipa::path(get, path = "/api/admin/audit", tag = "admin", security(("bearer" = [])),
    params(Page), responses((status = 200, body = AuditList), (status = 403, description = "admins only")))]
pub async fn audit(
    State(state): State<AppState>,
    _admin: AdminUser,
    ApiQuery(p): ApiQuery<Page>,
) -> ApiResult<Json<AuditList>> {
    let (limit, _) = page(&p)?;
    let entries = store::admin::audit_log(&state.db, limit).await?;
    Ok(Json(AuditList { entries }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetAdmin {
    pub is_admin: bool,
}

#[utoipa::path(put, path = "/api/admin/users/{id}/admin", tag = "admin", security(("bearer" = [])),
    request_body = SetAdmin, responses((status = 200, body = Outcome), (status = 404), (status = 409, description = "your own rights")))]
pub async fn set_admin(
    State(state): State<AppState>,
    admin: AdminUser,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<SetAdmin>,
) -> ApiResult<Json<Outcome>> {
    if id == admin.id && !req.is_admin {
        // The last admin locking everyone out is one request away otherwise;
        // the command line can still do it deliberately.
        return Err(ApiError::new(
            ErrorCode::Conflict,
            "you cannot revoke your own admin rights",
        ));
    }
    let action = Action::SetAdmin {
        user_id: id,
        on: req.is_admin,
    };
    Ok(Json(admin::apply(&state.db, &admin.actor(), action).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetDisabled {
    pub disabled: bool,
}

#[utoipa::path(put, path = "/api/admin/users/{id}/disabled", tag = "admin", security(("bearer" = [])),
    request_body = SetDisabled, responses((status = 200, body = Outcome), (status = 404), (status = 409, description = "yourself")))]
pub async fn set_disabled(
    State(state): State<AppState>,
    admin: AdminUser,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<SetDisabled>,
) -> ApiResult<Json<Outcome>> {
    if id == admin.id {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            "you cannot disable your own account",
        ));
    }
    let action = Action::SetDisabled {
        user_id: id,
        disabled: req.disabled,
    };
    let outcome = admin::apply(&state.db, &admin.actor(), action).await?;
    state.key_cache.forget_created_by(id);
    Ok(Json(outcome))
}

#[utoipa::path(post, path = "/api/admin/users/{id}/revoke-sessions", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = Outcome), (status = 404)))]
pub async fn revoke_sessions(
    State(state): State<AppState>,
    admin: AdminUser,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<Outcome>> {
    let action = Action::RevokeSessions { user_id: id };
    let outcome = admin::apply(&state.db, &admin.actor(), action).await?;
    state.key_cache.forget_created_by(id);
    Ok(Json(outcome))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPlan {
    pub plan: String,
}

#[utoipa::path(put, path = "/api/admin/workspaces/{id}/plan", tag = "admin", security(("bearer" = [])),
    request_body = SetPlan, responses((status = 200, body = Outcome), (status = 400), (status = 404)))]
pub async fn set_plan(
    State(state): State<AppState>,
    admin: AdminUser,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<SetPlan>,
) -> ApiResult<Json<Outcome>> {
    let action = Action::SetPlan {
        workspace_id: id,
        plan: req.plan,
    };
    let outcome = admin::apply(&state.db, &admin.actor(), action).await?;
    state.key_cache.forget_workspace(id);
    Ok(Json(outcome))
}
