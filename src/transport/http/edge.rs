//! Request-level edge guards, the layers that run before any handler:
//! a caller's `X-Request-Id` is kept only when it is a short token of safe
//! characters; a declared `Content-Length` over the route's limit is answered
//! 413 before a byte of the body is read; a body that has not arrived within
//! `edge.body_timeout_secs` is answered 408. Both close the connection, since
//! the rest of the body is never read.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    body::Body,
    extract::{Request, State},
    http::{HeaderValue, Method, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use tokio::time::Sleep;

use super::REQUEST_ID;
use crate::{
    error::{ApiError, ErrorCode},
    state::AppState,
};

/// Longest caller-chosen request id we keep.
pub const MAX_REQUEST_ID_LEN: usize = 64;

/// Whether a caller's request id may be echoed and logged: 1–64 characters of
/// `A-Z a-z 0-9 - _ . :` (a UUID, a trace id). Anything else could forge log
/// lines or smuggle markup, and is replaced with a generated id.
pub fn acceptable_request_id(value: &[u8]) -> bool {
    !value.is_empty()
        && value.len() <= MAX_REQUEST_ID_LEN
        && value
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Drops a caller's `X-Request-Id` that [`acceptable_request_id`] refuses, so
/// the next layer generates one.
pub async fn sanitize_request_id(mut req: Request, next: Next) -> Response {
    let ok = req
        .headers()
        .get_all(&REQUEST_ID)
        .iter()
        .map(|v| acceptable_request_id(v.as_bytes()))
        .collect::<Vec<_>>();
    if ok.len() > 1 || ok.first() == Some(&false) {
        req.headers_mut().remove(&REQUEST_ID);
    }
    next.run(req).await
}

/// The largest body the route behind `req` accepts (the document upload has
/// its own, larger limit).
fn body_limit(state: &AppState, req: &Request) -> u64 {
    let limit = if req.method() == Method::POST && req.uri().path() == "/api/documents" {
        state
            .config
            .documents
            .max_upload_bytes
            .saturating_add(64 * 1024)
    } else {
        state.config.server.body_limit_bytes
    };
    limit as u64
}

fn closing(err: ApiError) -> Response {
    let mut res = err.into_response();
    res.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    res
}

/// 413 at once for a declared length over the limit; 408 for a body that
/// does not arrive in time.
pub async fn guard_body(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > body_limit(&state, &req)) {
        return closing(ApiError::new(
            ErrorCode::PayloadTooLarge,
            "request body is too large",
        ));
    }
    let has_body =
        declared.is_some_and(|n| n > 0) || req.headers().contains_key(header::TRANSFER_ENCODING);
    if !has_body {
        return next.run(req).await;
    }
    let timed_out = Arc::new(AtomicBool::new(false));
    let deadline = Duration::from_secs(state.config.edge.body_timeout_secs);
    let req = req.map(|inner| {
        Body::new(DeadlineBody {
            inner,
            sleep: Box::pin(tokio::time::sleep(deadline)),
            timed_out: timed_out.clone(),
        })
    });
    let res = next.run(req).await;
    if timed_out.load(Ordering::Acquire) {
        return closing(ApiError::new(
            ErrorCode::RequestTimeout,
            format!(
                "the request body did not arrive within {} s",
                deadline.as_secs()
            ),
        ));
    }
    res
}

/// A request body that fails once its deadline passes, and says so.
struct DeadlineBody {
    inner: Body,
    sleep: Pin<Box<Sleep>>,
    timed_out: Arc<AtomicBool>,
}

#[derive(Debug, thiserror::Error)]
#[error("request body timed out")]
struct BodyTimedOut;

impl http_body::Body for DeadlineBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            self.timed_out.store(true, Ordering::Release);
            return Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::acceptable_request_id;

    #[test]
    fn request_ids_are_short_safe_tokens() {
        assert!(acceptable_request_id(
            b"0b7c3c2e-9d5f-4a51-8f5e-2d1c0a9b8e7f"
        ));
        assert!(acceptable_request_id(b"trace:abc.DEF_1"));
        assert!(!acceptable_request_id(b""));
        assert!(!acceptable_request_id(&[b'a'; 65]));
        assert!(!acceptable_request_id(b"id with spaces"));
        assert!(!acceptable_request_id(b"<script>"));
        assert!(!acceptable_request_id("caf\u{e9}".as_bytes()));
    }
}
