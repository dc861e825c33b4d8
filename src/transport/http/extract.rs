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
/// 413 over the limit, 400 naming what is wrong with the body — including a
/// NUL (`\u0000`) in any string, which Postgres could not store.
pub struct ApiJson<T>(pub T);

/// `application/json` or `application/<anything>+json`, as axum's `Json` accepts.
fn is_json_content_type(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|sub| sub.ends_with("+json"))
}

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        if !is_json_content_type(req.headers()) {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "expected Content-Type: application/json",
            ));
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(ErrorCode::PayloadTooLarge, "request body is too large")
                } else {
                    ApiError::invalid(e.body_text())
                }
            })?;
        if crate::text::json_has_nul(&bytes) {
            let field = crate::text::nul_field(&bytes).unwrap_or_else(|| "request body".into());
            return Err(ApiError::invalid(format!(
                "{field}: strings must not contain NUL (\\u0000)"
            )));
        }
        axum::Json::<T>::from_bytes(&bytes)
            .map(|axum::Json(v)| Self(v))
            .map_err(ApiError::from)
    }
}

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

/// The client's address: the socket peer, or, when the operator says their
/// own proxies set `X-Forwarded-For`, the entry `edge.trusted_proxy_hops`
/// from the right. Entries further left were written by the client and are
/// never trusted.
pub struct ClientIp(pub IpAddr);

/// The client in `X-Forwarded-For` headers (all of them, in order) with
/// `hops` proxies of ours appending to it; `None` when it is absent or the
/// chosen entry is not an address.
pub fn forwarded_client(headers: &axum::http::HeaderMap, hops: usize) -> Option<IpAddr> {
    let mut entries = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        entries.extend(value.to_str().ok()?.split(',').map(str::trim));
    }
    entries.retain(|e| !e.is_empty());
    let at = entries.len().saturating_sub(hops.max(1));
    entries.get(at)?.parse().ok()
}

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if state.config.server.trust_forwarded_for
            && let Some(ip) = forwarded_client(&parts.headers, state.config.edge.trusted_proxy_hops)
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

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue};

    use super::forwarded_client;

    #[test]
    fn the_client_is_counted_from_the_right() {
        let mut h = HeaderMap::new();
        h.append(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 1.2.3.4"),
        );
        assert_eq!(forwarded_client(&h, 1), Some("1.2.3.4".parse().unwrap()));
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.2"));
        assert_eq!(forwarded_client(&h, 1), Some("10.0.0.2".parse().unwrap()));
        assert_eq!(forwarded_client(&h, 2), Some("1.2.3.4".parse().unwrap()));
        assert_eq!(forwarded_client(&h, 9), Some("6.6.6.6".parse().unwrap()));
        assert_eq!(forwarded_client(&HeaderMap::new(), 1), None);
    }
}
