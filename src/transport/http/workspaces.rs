//! `/api/workspaces`: team workspaces: create, list, members, invitations,
//! roles, removal, leaving.
//!
//! Roles: an owner may do anything; an admin may invite and manage members
//! but not owners, and cannot make anyone an owner; a member may look and
//! leave. A workspace always keeps an owner: the last one cannot leave, be
//! removed or be demoted. Membership is read from Postgres on every request,
//! so a removed member loses access at their next request on every node. A
//! workspace the caller does not belong to is "not found", never "forbidden".

use std::time::Duration;

use axum::{
    Json, Router,
    extract::State,
    http::StatusCode,
    routing::{delete, get, post},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::extract::{ApiJson, ApiPath, AuthUser};
use crate::{
    accounts::{self, Invitation},
    auth::{
        credentials::Email,
        one_time::{OneTimeTokens, Purpose},
    },
    error::{ApiError, ApiResult, ErrorCode},
    state::AppState,
    store::{
        email_tokens::{self, EmailToken},
        members::{self, Member, WorkspaceSummary},
        users,
    },
};

/// The OpenAPI part for accounts (verification, reset) and workspaces, merged
/// into `/api/openapi.json`.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        super::accounts::verify_email,
        super::accounts::resend_verification,
        super::accounts::request_reset,
        super::accounts::confirm_reset,
        create_workspace,
        list_workspaces,
        get_workspace,
        list_members,
        invite,
        list_invitations,
        revoke_invitation,
        accept_invitation,
        change_role,
        remove_member,
        leave
    ),
    components(schemas(
        super::accounts::TokenRequest,
        super::accounts::ResetRequest,
        super::accounts::ResetConfirm,
        super::accounts::Accepted,
        CreateWorkspace,
        WorkspaceList,
        MemberList,
        InviteRequest,
        InvitationView,
        InvitationList,
        AcceptInvitation,
        RoleChange,
        WorkspaceSummary,
        Member
    ))
)]
pub struct AccountsApiDoc;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(list_workspaces).post(create_workspace))
        .route("/invitations/accept", post(accept_invitation))
        .route("/{id}", get(get_workspace))
        .route("/{id}/members", get(list_members))
        .route(
            "/{id}/members/{user_id}",
            delete(remove_member).patch(change_role),
        )
        .route("/{id}/invitations", get(list_invitations).post(invite))
        .route(
            "/{id}/invitations/{invitation_id}",
            delete(revoke_invitation),
        )
        .route("/{id}/leave", post(leave))
}

#[derive(Deserialize, ToSchema)]
pub struct CreateWorkspace {
    pub name: String,
}

#[derive(Serialize, ToSchema)]
pub struct WorkspaceList {
    pub workspaces: Vec<WorkspaceSummary>,
}

#[derive(Serialize, ToSchema)]
pub struct MemberList {
    pub members: Vec<Member>,
}

#[derive(Deserialize, ToSchema)]
pub struct InviteRequest {
    pub email: String,
    /// `admin` or `member` (default).
    pub role: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct InvitationView {
    pub id: Uuid,
    pub email: String,
    pub role: String,
    pub expires_at: DateTime<Utc>,
}

impl From<EmailToken> for InvitationView {
    fn from(t: EmailToken) -> Self {
        Self {
            id: t.id,
            email: t.email,
            role: t.role.unwrap_or_else(|| "member".into()),
            expires_at: t.expires_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct InvitationList {
    pub invitations: Vec<InvitationView>,
}

#[derive(Deserialize, ToSchema)]
pub struct AcceptInvitation {
    pub token: String,
}

#[derive(Deserialize, ToSchema)]
pub struct RoleChange {
    /// `owner`, `admin` or `member`.
    pub role: String,
}

fn forbidden(message: &str) -> ApiError {
    ApiError::new(ErrorCode::Forbidden, message)
}

fn workspace_name(raw: &str) -> ApiResult<&str> {
    crate::text::DisplayText::parse(raw, "name", 100)
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    Ok(raw.trim())
}

/// The caller's view of the workspace, or 404 when they are not a member.
async fn membership(state: &AppState, user: Uuid, workspace: Uuid) -> ApiResult<WorkspaceSummary> {
    members::workspace_for_user(&state.db, user, workspace)
        .await?
        .ok_or_else(|| ApiError::not_found("workspace"))
}

fn can_manage(role: &str) -> bool {
    matches!(role, "owner" | "admin")
}

#[utoipa::path(post, path = "/api/workspaces", tag = "workspaces", request_body = CreateWorkspace, security(("bearer" = [])),
    responses((status = 201, body = WorkspaceSummary), (status = 400, description = "bad name")))]
pub async fn create_workspace(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(req): ApiJson<CreateWorkspace>,
) -> ApiResult<(StatusCode, Json<WorkspaceSummary>)> {
    let name = workspace_name(&req.name)?;
    let ws = members::create_workspace(&state.db, user.id, name).await?;
    tracing::info!(workspace_id = %ws.id, "workspace created");
    Ok((StatusCode::CREATED, Json(ws)))
}

#[utoipa::path(get, path = "/api/workspaces", tag = "workspaces", security(("bearer" = [])),
    responses((status = 200, body = WorkspaceList)))]
pub async fn list_workspaces(
    State(state): State<AppState>,
    user: AuthUser,
) -> ApiResult<Json<WorkspaceList>> {
    Ok(Json(WorkspaceList {
        workspaces: members::list_for_user(&state.db, user.id).await?,
    }))
}

#[utoipa::path(get, path = "/api/workspaces/{id}", tag = "workspaces", security(("bearer" = [])),
    params(("id" = Uuid, Path)), responses((status = 200, body = WorkspaceSummary), (status = 404)))]
pub async fn get_workspace(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<WorkspaceSummary>> {
    Ok(Json(membership(&state, user.id, id).await?))
}

#[utoipa::path(get, path = "/api/workspaces/{id}/members", tag = "workspaces", security(("bearer" = [])),
    params(("id" = Uuid, Path)), responses((status = 200, body = MemberList), (status = 404)))]
pub async fn list_members(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<MemberList>> {
    membership(&state, user.id, id).await?;
    Ok(Json(MemberList {
        members: members::list_members(&state.db, id).await?,
    }))
}

#[utoipa::path(post, path = "/api/workspaces/{id}/invitations", tag = "workspaces", request_body = InviteRequest,
    security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses((status = 201, body = InvitationView, description = "stored; the email is on its way"),
              (status = 400, description = "bad email or role"), (status = 403, description = "members cannot invite"),
              (status = 409, description = "already a member"), (status = 429, description = "too many invitations")))]
pub async fn invite(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(req): ApiJson<InviteRequest>,
) -> ApiResult<(StatusCode, Json<InvitationView>)> {
    let ws = membership(&state, user.id, id).await?;
    if !can_manage(&ws.role) {
        return Err(forbidden("only owners and admins can invite"));
    }
    let email = Email::parse(&req.email).map_err(|e| ApiError::invalid(e.to_string()))?;
    let role = req.role.as_deref().unwrap_or("member");
    if !matches!(role, "admin" | "member") {
        return Err(ApiError::invalid("role: must be admin or member"));
    }
    if members::email_is_member(&state.db, id, email.as_str()).await? {
        return Err(ApiError::conflict("email: already a member"));
    }
    let count = state
        .counters
        .incr(&[format!("invites:ws:{id}")], Duration::from_secs(3_600))
        .await[0];
    if count.count > u64::from(state.config.accounts.invites_per_hour) {
        return Err(ApiError::rate_limited(count.resets_in));
    }
    let inviter = users::by_id(&state.db, user.id)
        .await?
        .ok_or_else(|| ApiError::unauthorized("invalid or expired token"))?;
    let mut tx = state.db.begin().await?;
    let stored = accounts::queue_invitation(
        &mut tx,
        &state.config,
        &Invitation {
            workspace_id: id,
            workspace_name: &ws.name,
            email: email.as_str(),
            role,
            inviter_id: user.id,
            inviter_name: &inviter.username,
        },
    )
    .await?;
    tx.commit().await?;
    tracing::info!(workspace_id = %id, invitation_id = %stored.id, "invitation queued");
    Ok((StatusCode::CREATED, Json(stored.into())))
}

#[utoipa::path(get, path = "/api/workspaces/{id}/invitations", tag = "workspaces", security(("bearer" = [])),
    params(("id" = Uuid, Path)), responses((status = 200, body = InvitationList), (status = 403), (status = 404)))]
pub async fn list_invitations(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<Json<InvitationList>> {
    let ws = membership(&state, user.id, id).await?;
    if !can_manage(&ws.role) {
        return Err(forbidden("only owners and admins can see invitations"));
    }
    let invitations = email_tokens::pending_invites(&state.db, id).await?;
    Ok(Json(InvitationList {
        invitations: invitations.into_iter().map(Into::into).collect(),
    }))
}

#[utoipa::path(delete, path = "/api/workspaces/{id}/invitations/{invitation_id}", tag = "workspaces",
    security(("bearer" = [])), params(("id" = Uuid, Path), ("invitation_id" = Uuid, Path)),
    responses((status = 204, description = "the link stops working"), (status = 403), (status = 404)))]
pub async fn revoke_invitation(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath((id, invitation_id)): ApiPath<(Uuid, Uuid)>,
) -> ApiResult<StatusCode> {
    let ws = membership(&state, user.id, id).await?;
    if !can_manage(&ws.role) {
        return Err(forbidden("only owners and admins can withdraw invitations"));
    }
    if email_tokens::revoke_invite(&state.db, id, invitation_id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("invitation"))
    }
}

#[utoipa::path(post, path = "/api/workspaces/invitations/accept", tag = "workspaces", request_body = AcceptInvitation,
    security(("bearer" = [])),
    responses((status = 200, body = WorkspaceSummary, description = "the caller is a member"),
              (status = 400, description = "invalid, expired or used token"),
              (status = 403, description = "the invitation is for another email address")))]
pub async fn accept_invitation(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(req): ApiJson<AcceptInvitation>,
) -> ApiResult<Json<WorkspaceSummary>> {
    const INVALID: &str = "token: invalid, expired or already used";
    let hash = OneTimeTokens::new(&state.config.auth)
        .parse(Purpose::Invite, &req.token)
        .ok_or_else(|| ApiError::invalid(INVALID))?;
    let me = users::by_id(&state.db, user.id)
        .await?
        .ok_or_else(|| ApiError::unauthorized("invalid or expired token"))?;
    let invite = email_tokens::peek(&state.db, Purpose::Invite.as_str(), &hash)
        .await?
        .ok_or_else(|| ApiError::invalid(INVALID))?;
    // A forwarded link is not a way in: the invitation names an address.
    if !invite.email.eq_ignore_ascii_case(&me.email) {
        return Err(forbidden("this invitation is for another email address"));
    }
    let mut tx = state.db.begin().await?;
    let invite = email_tokens::redeem(&mut tx, Purpose::Invite.as_str(), &hash)
        .await?
        .ok_or_else(|| ApiError::invalid(INVALID))?;
    let (Some(workspace_id), Some(role)) = (invite.workspace_id, invite.role.as_deref()) else {
        return Err(ApiError::invalid(INVALID));
    };
    members::add(&mut tx, workspace_id, user.id, role).await?;
    // The link reached this address's inbox: that proves the address too.
    users::mark_verified(&mut tx, user.id, &invite.email).await?;
    tx.commit().await?;
    tracing::info!(workspace_id = %workspace_id, user_id = %user.id, "invitation accepted");
    Ok(Json(membership(&state, user.id, workspace_id).await?))
}

#[utoipa::path(patch, path = "/api/workspaces/{id}/members/{user_id}", tag = "workspaces", request_body = RoleChange,
    security(("bearer" = [])), params(("id" = Uuid, Path), ("user_id" = Uuid, Path)),
    responses((status = 200, body = MemberList), (status = 400), (status = 403), (status = 404),
              (status = 409, description = "would leave the workspace without an owner")))]
pub async fn change_role(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath((id, target)): ApiPath<(Uuid, Uuid)>,
    ApiJson(req): ApiJson<RoleChange>,
) -> ApiResult<Json<MemberList>> {
    let role = req.role.as_str();
    if !matches!(role, "owner" | "admin" | "member") {
        return Err(ApiError::invalid("role: must be owner, admin or member"));
    }
    let mut tx = state.db.begin().await?;
    let (mine, owners) = members::lock_for_change(&mut tx, id, user.id)
        .await?
        .ok_or_else(|| ApiError::not_found("workspace"))?;
    let theirs = members::role_of(&mut tx, id, target)
        .await?
        .ok_or_else(|| ApiError::not_found("member"))?;
    match mine.as_str() {
        "owner" => {}
        "admin" if theirs != "owner" && role != "owner" => {}
        "admin" => return Err(forbidden("only owners can grant or change the owner role")),
        _ => return Err(forbidden("only owners and admins can change roles")),
    }
    if theirs == "owner" && role != "owner" && owners <= 1 {
        return Err(ApiError::conflict(
            "the last owner cannot be demoted: make someone else owner first",
        ));
    }
    members::set_role(&mut tx, id, target, role).await?;
    tx.commit().await?;
    tracing::info!(workspace_id = %id, member = %target, role, "role changed");
    Ok(Json(MemberList {
        members: members::list_members(&state.db, id).await?,
    }))
}

#[utoipa::path(delete, path = "/api/workspaces/{id}/members/{user_id}", tag = "workspaces",
    security(("bearer" = [])), params(("id" = Uuid, Path), ("user_id" = Uuid, Path)),
    responses((status = 204, description = "removed; their next request is refused"), (status = 403), (status = 404),
              (status = 409, description = "the last owner")))]
pub async fn remove_member(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath((id, target)): ApiPath<(Uuid, Uuid)>,
) -> ApiResult<StatusCode> {
    depart(&state, id, user.id, target).await
}

#[utoipa::path(post, path = "/api/workspaces/{id}/leave", tag = "workspaces", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 204, description = "left"), (status = 404), (status = 409, description = "the last owner cannot leave")))]
pub async fn leave(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<Uuid>,
) -> ApiResult<StatusCode> {
    depart(&state, id, user.id, user.id).await
}

/// `actor` removes `target` (themselves when leaving), under the workspace lock.
async fn depart(state: &AppState, id: Uuid, actor: Uuid, target: Uuid) -> ApiResult<StatusCode> {
    let mut tx = state.db.begin().await?;
    let (mine, owners) = members::lock_for_change(&mut tx, id, actor)
        .await?
        .ok_or_else(|| ApiError::not_found("workspace"))?;
    let theirs = members::role_of(&mut tx, id, target)
        .await?
        .ok_or_else(|| ApiError::not_found("member"))?;
    if actor != target {
        match mine.as_str() {
            "owner" => {}
            "admin" if theirs != "owner" => {}
            "admin" => return Err(forbidden("only owners can remove an owner")),
            _ => return Err(forbidden("only owners and admins can remove members")),
        }
    }
    if theirs == "owner" && owners <= 1 {
        return Err(ApiError::conflict(
            "the last owner cannot leave or be removed: make someone else owner first",
        ));
    }
    members::remove(&mut tx, id, target).await?;
    tx.commit().await?;
    tracing::info!(workspace_id = %id, member = %target, by = %actor, "member removed");
    Ok(StatusCode::NO_CONTENT)
}
