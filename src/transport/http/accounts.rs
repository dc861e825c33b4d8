//! `/api/auth` account recovery and proof: email verification (and resending
//! it) and password reset. Every token is one-time, expiring and stored hashed
//! (`auth::one_time`); every email goes through the outbox in the same
//! transaction as its cause.
//!
//! A reset request answers the same whether or not the email has an account,
//! and is throttled per email and per client IP (`limits::WindowCounter`).

use std::time::Duration;

use axum::{Json, Router, extract::State, http::StatusCode, routing::post};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::{ApiJson, AuthUser, ClientIp};
use crate::{
    accounts::{self, Recipient},
    auth::{
        credentials::{Email, Password, Username},
        one_time::{OneTimeTokens, Purpose},
        password,
    },
    error::{ApiError, ApiResult},
    state::AppState,
    store::{
        email_tokens, refresh_tokens,
        users::{self, User},
    },
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/verify-email", post(verify_email))
        .route("/verify-email/resend", post(resend_verification))
        .route("/password-reset/request", post(request_reset))
        .route("/password-reset/confirm", post(confirm_reset))
}

#[derive(Deserialize, ToSchema)]
pub struct TokenRequest {
    pub token: String,
}

#[derive(Deserialize, ToSchema)]
pub struct ResetRequest {
    pub email: String,
}

#[derive(Deserialize, ToSchema)]
pub struct ResetConfirm {
    pub token: String,
    pub password: String,
}

#[derive(Serialize, ToSchema)]
pub struct Accepted {
    /// Always "accepted": the answer never says whether an email exists.
    pub status: &'static str,
}

const INVALID_LINK: &str = "token: invalid, expired or already used";

/// Signs up and queues the verification email in one transaction.
pub async fn create_user(
    state: &AppState,
    email: &Email,
    username: &Username,
    password_hash: &str,
) -> Result<User, sqlx::Error> {
    let mut tx = state.db.begin().await?;
    let user =
        users::create_with_workspace_in(&mut tx, email.as_str(), username.as_str(), password_hash)
            .await?;
    accounts::queue_verification(&mut tx, &state.config, &recipient(&user)).await?;
    tx.commit().await?;
    Ok(user)
}

fn recipient(user: &User) -> Recipient<'_> {
    Recipient {
        user_id: user.id,
        email: &user.email,
        username: &user.username,
    }
}

#[utoipa::path(post, path = "/api/auth/verify-email", tag = "auth", request_body = TokenRequest,
    responses((status = 200, body = User, description = "the address is verified"),
              (status = 400, description = "invalid, expired or already used token")))]
pub async fn verify_email(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<TokenRequest>,
) -> ApiResult<Json<User>> {
    let hash = OneTimeTokens::new(&state.config.auth)
        .parse(Purpose::VerifyEmail, &req.token)
        .ok_or_else(|| ApiError::invalid(INVALID_LINK))?;
    let mut tx = state.db.begin().await?;
    let token = email_tokens::redeem(&mut tx, Purpose::VerifyEmail.as_str(), &hash)
        .await?
        .ok_or_else(|| ApiError::invalid(INVALID_LINK))?;
    let user_id = token
        .user_id
        .ok_or_else(|| ApiError::invalid(INVALID_LINK))?;
    // The address must still be the account's: a changed address needs a new link.
    let user = users::mark_verified(&mut tx, user_id, &token.email)
        .await?
        .ok_or_else(|| ApiError::invalid(INVALID_LINK))?;
    tx.commit().await?;
    tracing::info!(user_id = %user.id, "email verified");
    metrics::counter!("switchboard_auth_email_verified_total").increment(1);
    Ok(Json(user))
}

#[utoipa::path(post, path = "/api/auth/verify-email/resend", tag = "auth", security(("bearer" = [])),
    responses((status = 202, body = Accepted, description = "a new link is on its way; earlier links stop working"),
              (status = 409, description = "already verified"), (status = 429, description = "too many resends; see Retry-After")))]
pub async fn resend_verification(
    State(state): State<AppState>,
    user: AuthUser,
) -> ApiResult<(StatusCode, Json<Accepted>)> {
    let user = users::by_id(&state.db, user.id)
        .await?
        .ok_or_else(|| ApiError::unauthorized("invalid or expired token"))?;
    if user.email_verified {
        return Err(ApiError::conflict("email: already verified"));
    }
    let cfg = &state.config.accounts;
    let key = format!("verify_resend:user:{}", user.id);
    let count = state
        .counters
        .incr(&[key], Duration::from_secs(cfg.resend_window_secs))
        .await[0];
    if count.count > u64::from(cfg.resend_max) {
        return Err(ApiError::rate_limited(count.resets_in));
    }
    let mut tx = state.db.begin().await?;
    accounts::queue_verification(&mut tx, &state.config, &recipient(&user)).await?;
    tx.commit().await?;
    Ok((StatusCode::ACCEPTED, Json(Accepted { status: "accepted" })))
}

#[utoipa::path(post, path = "/api/auth/password-reset/request", tag = "auth", request_body = ResetRequest,
    responses((status = 202, body = Accepted, description = "the same answer whether or not the email has an account"),
              (status = 429, description = "too many requests for this email or from this address; see Retry-After")))]
pub async fn request_reset(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(req): ApiJson<ResetRequest>,
) -> ApiResult<(StatusCode, Json<Accepted>)> {
    let accepted = || Ok((StatusCode::ACCEPTED, Json(Accepted { status: "accepted" })));
    // A malformed address cannot have an account; answer as for an unknown one.
    let Ok(email) = Email::parse(&req.email) else {
        return Err(ApiError::invalid("email: is not a valid address"));
    };
    let cfg = &state.config.accounts;
    let window = Duration::from_secs(cfg.reset_window_secs);
    let keys = [
        format!("reset:email:{}", email.as_str().to_lowercase()),
        format!("reset:ip:{ip}"),
    ];
    let counts = state.counters.incr(&keys, window).await;
    for (count, max) in counts
        .iter()
        .zip([cfg.reset_max_per_email, cfg.reset_max_per_ip])
    {
        if count.count > u64::from(max) {
            metrics::counter!("switchboard_auth_reset_throttled_total").increment(1);
            return Err(ApiError::rate_limited(count.resets_in));
        }
    }
    let Some(user) = users::by_email(&state.db, email.as_str()).await? else {
        tracing::info!("password reset asked for an unknown email");
        return accepted();
    };
    let mut tx = state.db.begin().await?;
    accounts::queue_password_reset(&mut tx, &state.config, &recipient(&user)).await?;
    tx.commit().await?;
    tracing::info!(user_id = %user.id, "password reset email queued");
    accepted()
}

#[utoipa::path(post, path = "/api/auth/password-reset/confirm", tag = "auth", request_body = ResetConfirm,
    responses((status = 204, description = "password changed; every refresh token of the account is revoked"),
              (status = 400, description = "invalid, expired or used token, or a password the sign-up rules refuse")))]
pub async fn confirm_reset(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<ResetConfirm>,
) -> ApiResult<StatusCode> {
    let hash = OneTimeTokens::new(&state.config.auth)
        .parse(Purpose::PasswordReset, &req.token)
        .ok_or_else(|| ApiError::invalid(INVALID_LINK))?;
    // Check the password against the account before using the token up, so a
    // refused password leaves the link working.
    let token = email_tokens::peek(&state.db, Purpose::PasswordReset.as_str(), &hash)
        .await?
        .ok_or_else(|| ApiError::invalid(INVALID_LINK))?;
    let user = match token.user_id {
        Some(id) => users::by_id(&state.db, id).await?,
        None => None,
    }
    .ok_or_else(|| ApiError::invalid(INVALID_LINK))?;
    let invalid = |e: crate::auth::credentials::CredentialError| ApiError::invalid(e.to_string());
    let email = Email::parse(&user.email).map_err(invalid)?;
    let username = Username::parse(&user.username).map_err(invalid)?;
    let pw = Password::parse(&req.password, &email, &username).map_err(invalid)?;
    let new_hash = password::hash(pw.expose().to_owned())
        .await
        .map_err(ApiError::internal)?;
    let mut tx = state.db.begin().await?;
    // Redeeming is the conditional update: of two concurrent confirms one wins.
    email_tokens::redeem(&mut tx, Purpose::PasswordReset.as_str(), &hash)
        .await?
        .ok_or_else(|| ApiError::invalid(INVALID_LINK))?;
    users::set_password(&mut tx, user.id, &new_hash).await?;
    let revoked = refresh_tokens::revoke_all_for_user(&mut tx, user.id).await?;
    tx.commit().await?;
    tracing::info!(user_id = %user.id, revoked, "password reset");
    metrics::counter!("switchboard_auth_password_resets_total").increment(1);
    Ok(StatusCode::NO_CONTENT)
}
