//! `/api/auth`: sign-up, sign-in, refresh, sign-out, me (verification and
//! password reset are in `accounts`).
//!
//! Sign-in answers the same message, after the same argon2 work, for an unknown
//! email and a wrong password, so neither the text nor the timing tells which.

use std::time::Duration;

use axum::{
    Json, Router,
    extract::State,
    http::StatusCode,
    response::IntoResponse,
    routing::{get, post},
};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::extract::{ApiJson, AuthUser, ClientIp};
use crate::{
    auth::{
        credentials::{Email, Password, Username},
        password,
    },
    error::{ApiError, ApiResult},
    state::AppState,
    store::{
        self,
        refresh_tokens::{self, Redeemed},
        users::{self, User},
    },
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/signup", post(signup))
        .route("/signin", post(signin))
        .route("/refresh", post(refresh))
        .route("/signout", post(signout))
        .route("/me", get(me))
        .merge(super::accounts::router())
}

#[derive(Deserialize, ToSchema)]
pub struct SignupRequest {
    pub email: String,
    pub username: String,
    pub password: String,
}

#[derive(Deserialize, ToSchema)]
pub struct SigninRequest {
    pub email: String,
    pub password: String,
}

#[derive(Deserialize, ToSchema)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

#[derive(Serialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    pub refresh_token: String,
    pub user: User,
}

/// Longest refresh token we look up; ours are 64 hex characters.
const REFRESH_TOKEN_MAX: usize = 128;

#[utoipa::path(post, path = "/api/auth/signup", tag = "auth", request_body = SignupRequest,
    responses((status = 201, body = User), (status = 400, description = "a field is invalid; the message names it"),
              (status = 409, description = "email or username taken")))]
pub async fn signup(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(req): ApiJson<SignupRequest>,
) -> ApiResult<impl IntoResponse> {
    // Each account comes with a fresh free budget: cap how fast one address,
    // and everyone together, can make them, before any hashing is spent.
    let cfg = &state.config.auth;
    let counts = state
        .counters
        .incr(
            &[format!("signup:ip:{ip}"), "signup:all".to_owned()],
            Duration::from_secs(cfg.signup_window_secs),
        )
        .await;
    if counts[0].count > u64::from(cfg.signup_max_per_ip)
        || counts[1].count > u64::from(cfg.signup_max_global)
    {
        metrics::counter!("switchboard_auth_signup_throttled_total").increment(1);
        let after = if counts[0].count > u64::from(cfg.signup_max_per_ip) {
            counts[0].resets_in
        } else {
            counts[1].resets_in
        };
        return Err(ApiError::rate_limited(after));
    }
    let invalid = |e: crate::auth::credentials::CredentialError| ApiError::invalid(e.to_string());
    let email = Email::parse(&req.email).map_err(invalid)?;
    let username = Username::parse(&req.username).map_err(invalid)?;
    let pw = Password::parse(&req.password, &email, &username).map_err(invalid)?;
    let hash = password::hash(pw.expose().to_owned())
        .await
        .map_err(ApiError::internal)?;
    match super::accounts::create_user(&state, &email, &username, &hash).await {
        Ok(user) => {
            tracing::info!(user_id = %user.id, "user signed up");
            metrics::counter!("switchboard_auth_signups_total").increment(1);
            Ok((StatusCode::CREATED, Json(user)))
        }
        Err(e) if store::is_unique_violation(&e, "users_email_lower_key") => {
            Err(ApiError::conflict("email: already registered"))
        }
        Err(e) if store::is_unique_violation(&e, "users_username_lower_key") => {
            Err(ApiError::conflict("username: already taken"))
        }
        Err(e) => Err(e.into()),
    }
}

#[utoipa::path(post, path = "/api/auth/signin", tag = "auth", request_body = SigninRequest,
    responses((status = 200, body = TokenResponse), (status = 401, description = "invalid email or password"),
              (status = 429, description = "too many attempts; see Retry-After")))]
pub async fn signin(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(req): ApiJson<SigninRequest>,
) -> ApiResult<NoStore<TokenResponse>> {
    // Bound the work an attacker can make us do before anything else.
    if req.email.len() > 254 || req.password.len() > Password::MAX_BYTES {
        return Err(ApiError::unauthorized("invalid email or password"));
    }
    let cfg = &state.config.auth;
    let window = Duration::from_secs(cfg.signin_window_secs);
    let email_key = format!("signin:email:{}", req.email.trim().to_lowercase());
    let ip_key = format!("signin:ip:{ip}");
    // Every attempt counts against the email (reset on success); only failures count against the IP,
    // so a busy office behind one address is not locked out by its own successful sign-ins.
    // The IP's count takes this attempt as a failure up front (one atomic
    // step, so concurrent attempts cannot all read the same count) and is
    // given back if the attempt succeeds or is refused unprocessed.
    let counts = state
        .counters
        .incr(&[email_key.clone(), ip_key.clone()], window)
        .await;
    let (attempts, ip_failures) = (counts[0], counts[1]);
    let throttled = if attempts.count > u64::from(cfg.signin_max_per_email) {
        Some(attempts.resets_in)
    } else if ip_failures.count > u64::from(cfg.signin_max_per_ip) {
        Some(ip_failures.resets_in)
    } else {
        None
    };
    if let Some(retry_after) = throttled {
        state.counters.give_back(&ip_key).await;
        metrics::counter!("switchboard_auth_signin_throttled_total").increment(1);
        return Err(ApiError::rate_limited(retry_after));
    }

    let creds = users::credentials_by_email(&state.db, req.email.trim()).await?;
    let ok = password::verify(
        req.password,
        creds.as_ref().map(|c| c.password_hash.clone()),
    )
    .await
    .map_err(ApiError::internal)?;
    let Some(creds) = creds.filter(|_| ok) else {
        metrics::counter!("switchboard_auth_signin_failures_total").increment(1);
        return Err(ApiError::unauthorized("invalid email or password"));
    };
    state.counters.reset(&email_key).await;
    state.counters.give_back(&ip_key).await;
    let tokens = issue_tokens(&state, creds.id, Uuid::now_v7()).await?;
    Ok(NoStore(Json(tokens)))
}

#[utoipa::path(post, path = "/api/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses((status = 200, body = TokenResponse),
              (status = 401, description = "invalid, expired or reused token (reuse revokes the whole family)")))]
pub async fn refresh(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> ApiResult<NoStore<TokenResponse>> {
    if req.refresh_token.is_empty() || req.refresh_token.len() > REFRESH_TOKEN_MAX {
        return Err(ApiError::unauthorized("invalid refresh token"));
    }
    let hash = state.tokens.hash_refresh_token(&req.refresh_token);
    let successor = state.tokens.new_refresh_token();
    let expires_at = Utc::now() + state.tokens.refresh_ttl;
    let successor_hash = state.tokens.hash_refresh_token(&successor);
    match refresh_tokens::rotate(&state.db, &hash, &successor_hash, expires_at).await? {
        Redeemed::Fresh { user_id, .. } => Ok(NoStore(Json(
            token_response(&state, user_id, successor).await?,
        ))),
        Redeemed::Reused => {
            tracing::warn!("refresh token reused: its family is revoked");
            metrics::counter!("switchboard_auth_refresh_reuse_total").increment(1);
            Err(ApiError::unauthorized("invalid refresh token"))
        }
        Redeemed::Invalid => Err(ApiError::unauthorized("invalid refresh token")),
    }
}

#[utoipa::path(post, path = "/api/auth/signout", tag = "auth", request_body = RefreshRequest,
    responses((status = 204, description = "the refresh token's family is revoked")))]
pub async fn signout(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> ApiResult<StatusCode> {
    if !req.refresh_token.is_empty() && req.refresh_token.len() <= REFRESH_TOKEN_MAX {
        let hash = state.tokens.hash_refresh_token(&req.refresh_token);
        refresh_tokens::revoke_family_of(&state.db, &hash).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/auth/me", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = User), (status = 401, description = "missing or invalid token")))]
pub async fn me(State(state): State<AppState>, user: AuthUser) -> ApiResult<Json<User>> {
    users::by_id(&state.db, user.id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::unauthorized("invalid or expired token"))
}

/// A response carrying credentials: `Cache-Control: no-store`, so no cache
/// on the way keeps the tokens.
pub struct NoStore<T>(Json<T>);

impl<T: serde::Serialize> IntoResponse for NoStore<T> {
    fn into_response(self) -> axum::response::Response {
        ([(axum::http::header::CACHE_CONTROL, "no-store")], self.0).into_response()
    }
}

/// A new family (sign-in): its first refresh token stored, then the response.
async fn issue_tokens(
    state: &AppState,
    user_id: Uuid,
    family_id: Uuid,
) -> ApiResult<TokenResponse> {
    let refresh_token = state.tokens.new_refresh_token();
    let expires_at = Utc::now() + state.tokens.refresh_ttl;
    refresh_tokens::insert(
        &state.db,
        user_id,
        family_id,
        &state.tokens.hash_refresh_token(&refresh_token),
        expires_at,
    )
    .await?;
    token_response(state, user_id, refresh_token).await
}

/// An access token for the user, with the refresh token already stored; a
/// disabled account gets none.
async fn token_response(
    state: &AppState,
    user_id: Uuid,
    refresh_token: String,
) -> ApiResult<TokenResponse> {
    let user = users::by_id(&state.db, user_id)
        .await?
        .ok_or_else(|| ApiError::unauthorized("invalid refresh token"))?;
    super::extract::ensure_active(state, user_id).await?;
    let access_token = state
        .tokens
        .issue_access(user_id)
        .map_err(ApiError::internal)?;
    Ok(TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in: state.tokens.access_ttl.as_secs(),
        refresh_token,
        user,
    })
}
