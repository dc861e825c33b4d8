//! The HTTP surface: one router per resource, merged here, wrapped in the
//! layers every request passes (request id, tracing, metrics, CORS, body limit,
//! and the error envelope).

mod accounts;
mod admin;
mod analytics;
mod auth;
mod billing;
mod chat_stream;
mod chats;
mod documents;
mod edge;
pub mod extract;
mod health;
mod keys;
mod margin;
mod models;
mod openai_api;
mod openapi;
mod openapi_extra;
mod ops;
mod web;
mod workspaces;

use std::time::{Duration, Instant};

use axum::{
    Router,
    body::Body,
    extract::{DefaultBodyLimit, MatchedPath, Request},
    http::{HeaderName, HeaderValue, Method, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
};
use tower::ServiceBuilder;
use tower_http::{
    cors::{AllowOrigin, CorsLayer},
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer},
    trace::TraceLayer,
};

use crate::{
    error::{ApiError, ErrorCode},
    state::AppState,
};

pub use openapi::ApiDoc;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub fn router(state: AppState) -> Router {
    let body_limit = state.config.server.body_limit_bytes;
    let cors = cors_layer(&state.config.server.cors_origins);
    let node_id = state.actors.cluster.node_id.clone();
    Router::new()
        .merge(health::router())
        .merge(openapi::router())
        .route("/ws", axum::routing::get(super::ws::upgrade))
        .nest("/api/auth", auth::router())
        .nest("/api/analytics", analytics::router())
        .nest("/api/keys", keys::router())
        .nest("/api/workspaces", workspaces::router())
        .nest("/api/billing", billing::router())
        .merge(margin::router())
        .nest("/api/models", models::router())
        .merge(web::router(&state.config.web))
        .nest("/api/admin", admin::router())
        .merge(ops::router())
        .nest("/v1", openai_api::router())
        .nest("/api/chats", chats::router().merge(chat_stream::router()))
        .nest(
            "/api/documents",
            documents::router(state.config.documents.max_upload_bytes),
        )
        .fallback(|| async { ApiError::not_found("route") })
        .layer(
            ServiceBuilder::new()
                .layer(middleware::from_fn(edge::sanitize_request_id))
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http().make_span_with(move |req: &Request| {
                        let id = req
                            .extensions()
                            .get::<RequestId>()
                            .and_then(|id| id.header_value().to_str().ok())
                            .unwrap_or("-");
                        tracing::info_span!("http", node_id = %node_id, method = %req.method(), path = %req.uri().path(), request_id = %id)
                    }),
                )
                .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                .layer(middleware::from_fn(crate::error_reports::report_server_errors))
                .layer(middleware::from_fn(error_envelope))
                .layer(middleware::from_fn(record_metrics))
                .layer(cors)
                .layer(DefaultBodyLimit::max(body_limit))
                .layer(middleware::from_fn_with_state(state.clone(), edge::guard_body))
        )
        .with_state(state)
}

fn cors_layer(origins: &[String]) -> CorsLayer {
    let origins: Vec<HeaderValue> = origins.iter().filter_map(|o| o.parse().ok()).collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PATCH,
            Method::PUT,
            Method::DELETE,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::ACCEPT,
            REQUEST_ID,
        ])
        .expose_headers([REQUEST_ID, header::RETRY_AFTER])
        .max_age(Duration::from_secs(600))
}

/// Gives every error response the one JSON envelope, including those no handler
/// shaped (404/405 from routing, 413 from the body limit, framework rejections).
async fn error_envelope(req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    let status = res.status();
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !status.is_client_error() && !status.is_server_error() || is_json {
        return res;
    }
    let code = ErrorCode::from_status(status);
    let message = match code {
        ErrorCode::NotFound => "route not found".to_owned(),
        ErrorCode::MethodNotAllowed => "method not allowed on this route".to_owned(),
        ErrorCode::PayloadTooLarge => "request body is too large".to_owned(),
        ErrorCode::UnsupportedMediaType => "expected Content-Type: application/json".to_owned(),
        _ => status.canonical_reason().unwrap_or("error").to_lowercase(),
    };
    let (parts, _) = res.into_parts();
    let mut shaped = ApiError::new(code, message).into_response();
    *shaped.status_mut() = status;
    for name in [header::ALLOW, header::RETRY_AFTER, REQUEST_ID] {
        if let Some(v) = parts.headers.get(&name) {
            shaped.headers_mut().insert(name, v.clone());
        }
    }
    shaped
}

/// `http_requests_total` and `response_time_seconds` by route template, never by raw path.
async fn record_metrics(req: Request<Body>, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().as_str().to_owned();
    let res = next.run(req).await;
    let status = res.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("response_time_seconds", &labels).record(started.elapsed().as_secs_f64());
    res
}
