//! Extractors that turn request parts into checked values, failing with the
//! error envelope rather than axum's plain-text rejections.

use std::net::{IpAddr, SocketAddr};

use axum::{
    extract::{
        ConnectInfo, FromRequest, FromRequestParts,
        rejection::{JsonRejection, PathRejection, QueryRejection},
    },
    http::{header, request::Parts},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use uuid::Uuid;

use crate::{
    error::{ApiError, ErrorCode},
    state::AppState,
};

/// `Json` whose rejections use our envelope: 415 without a JSON content type,
/// 413 over the limit, 400 naming what is wrong with the body.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::MissingJsonContentType(_) => ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "expected Content-Type: application/json",
            ),
            JsonRejection::JsonSyntaxError(e) => {
                ApiError::invalid(format!("malformed JSON: {}", e.body_text()))
            }
            JsonRejection::JsonDataError(e) => {
                ApiError::invalid(format!("invalid request body: {}", e.body_text()))
            }
            JsonRejection::BytesRejection(e)
                if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE =>
            {
                ApiError::new(ErrorCode::PayloadTooLarge, "request body is too large")
            }
            other => ApiError::invalid(other.body_text()),
        }
    }
}

/// `Query` whose rejection is a 400 in our envelope naming the bad parameter.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        // "Failed to deserialize query string: limit: invalid digit found in string"
        ApiError::invalid(r.body_text())
    }
}

/// `Path` whose rejection is a 400 in our envelope (e.g. a malformed UUID).
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        if r.status().is_client_error() {
            ApiError::invalid(format!("invalid path parameter: {}", r.body_text()))
        } else {
            // A route/extractor mismatch: our bug, not the client's.
            ApiError::internal(r.body_text())
        }
    }
}

/// The signed-in user, from `Authorization: Bearer <access token>`.
#[derive(Debug, Clone, Copy)]
pub struct AuthUser {
    pub id: Uuid,
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token =
            bearer_token(parts).ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
        let claims = state
            .tokens
            .verify_access(token)
            .map_err(|_| ApiError::unauthorized("invalid or expired token"))?;
        ensure_active(state, claims.sub).await?;
        Ok(Self { id: claims.sub })
    }
}

/// The one account check: a user who was deleted or disabled gets no tokens
/// and no access with the tokens they hold. Called for every bearer-token
/// request ([`AuthUser`]), every WebSocket, and wherever tokens are issued.
/// (API keys of a disabled user are revoked when it is disabled.)
pub async fn ensure_active(state: &AppState, user_id: Uuid) -> Result<(), ApiError> {
    if crate::store::admin::is_active(&state.db, user_id).await? {
        Ok(())
    } else {
        metrics::counter!("switchboard_auth_disabled_rejections_total").increment(1);
        Err(ApiError::new(ErrorCode::Forbidden, "account disabled"))
    }
}

pub fn bearer_token(parts: &Parts) -> Option<&str> {
    bearer_from_headers(&parts.headers)
}

pub fn bearer_from_headers(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()).then(|| token.trim())
}

/// The client's address: the socket peer, or the first `X-Forwarded-For` hop
/// when the operator says a trusted proxy sets it.
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if state.config.server.trust_forwarded_for
            && let Some(ip) = parts
                .headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(',').next())
                .and_then(|v| v.trim().parse().ok())
        {
            return Ok(Self(ip));
        }
        parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ci| Self(ci.0.ip()))
            .ok_or_else(|| ApiError::internal("no peer address on the request"))
    }
}
