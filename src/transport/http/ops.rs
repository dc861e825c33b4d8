//! `/ops`: the live actor dashboard for admins. The page and its script are
//! static files compiled into the binary (`ops/`), served under a strict CSP
//! (no inline script); the data comes from `GET /api/ops/snapshot` (one JSON
//! snapshot) and `GET /api/ops/stream` (the same snapshot pushed as SSE every
//! `interval_ms`). The snapshot is computed only while a viewer is connected,
//! and at most [`MAX_VIEWERS`] streams run at once.

use std::{
    convert::Infallible,
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use axum::{
    Json, Router,
    extract::State,
    http::header,
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
    routing::get,
};
use serde::Deserialize;

use super::{admin::AdminUser, extract::ApiQuery};
use crate::{
    actors::ops::{MAX_TOP, OpsSnapshot},
    error::{ApiError, ApiResult},
    state::AppState,
};

const PAGE: &str = include_str!("../../../ops/ops.html");
const SCRIPT: &str = include_str!("../../../ops/ops.js");
const STYLE: &str = include_str!("../../../ops/ops.css");
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
/// Streams running at once, across all admins on this node.
pub const MAX_VIEWERS: usize = 16;

static VIEWERS: AtomicUsize = AtomicUsize::new(0);

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/ops",
            get(|| async { asset(PAGE, "text/html; charset=utf-8") }),
        )
        .route(
            "/ops/ops.js",
            get(|| async { asset(SCRIPT, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/ops/ops.css",
            get(|| async { asset(STYLE, "text/css; charset=utf-8") }),
        )
        .route("/api/ops/snapshot", get(snapshot))
        .route("/api/ops/stream", get(stream))
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ViewQuery {
    /// Chats and users listed one by one, 0 to 100 (default 20).
    pub top: Option<usize>,
    /// Stream only: milliseconds between snapshots, 250 to 60000 (default 1000).
    pub interval_ms: Option<u64>,
}

impl ViewQuery {
    fn top(&self) -> ApiResult<usize> {
        match self.top {
            None => Ok(20),
            Some(n) if n <= MAX_TOP => Ok(n),
            Some(_) => Err(ApiError::invalid(format!("top: must be 0 to {MAX_TOP}"))),
        }
    }

    fn interval(&self) -> ApiResult<Duration> {
        match self.interval_ms {
            None => Ok(Duration::from_secs(1)),
            Some(ms) if (250..=60_000).contains(&ms) => Ok(Duration::from_millis(ms)),
            Some(_) => Err(ApiError::invalid("interval_ms: must be 250 to 60000")),
        }
    }
}

async fn take(state: &AppState, top: usize) -> OpsSnapshot {
    state
        .actors
        .ops_snapshot(top, state.counters.is_degraded())
        .await
}

#[utoipa::path(get, path = "/api/ops/snapshot", tag = "ops", security(("bearer" = [])),
    params(ViewQuery), responses((status = 200, body = OpsSnapshot), (status = 403, description = "admins only")))]
pub async fn snapshot(
    State(state): State<AppState>,
    _admin: AdminUser,
    ApiQuery(q): ApiQuery<ViewQuery>,
) -> ApiResult<Json<OpsSnapshot>> {
    let top = q.top()?;
    Ok(Json(take(&state, top).await))
}

/// Whether the user is still an enabled admin (a failed lookup counts as no).
async fn still_admin(state: &AppState, user_id: uuid::Uuid) -> bool {
    matches!(
        crate::store::admin::is_active(&state.db, user_id).await,
        Ok(true)
    ) && matches!(
        crate::store::users::by_id(&state.db, user_id).await,
        Ok(Some(u)) if u.is_admin
    )
}

/// One viewer's place among [`MAX_VIEWERS`]; given back when the stream drops.
struct ViewerSlot;

impl ViewerSlot {
    fn take() -> Option<Self> {
        VIEWERS
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_VIEWERS).then_some(n + 1)
            })
            .ok()
            .map(|_| Self)
    }
}

impl Drop for ViewerSlot {
    fn drop(&mut self) {
        VIEWERS.fetch_sub(1, Ordering::AcqRel);
    }
}

#[utoipa::path(get, path = "/api/ops/stream", tag = "ops", security(("bearer" = [])),
    params(ViewQuery), responses((status = 200, description = "text/event-stream of `snapshot` events"), (status = 403), (status = 429, description = "too many viewers")))]
pub async fn stream(
    State(state): State<AppState>,
    admin: AdminUser,
    ApiQuery(q): ApiQuery<ViewQuery>,
) -> ApiResult<Sse<impl futures::Stream<Item = Result<Event, Infallible>>>> {
    let (top, every) = (q.top()?, q.interval()?);
    let slot = ViewerSlot::take().ok_or_else(|| ApiError::rate_limited(Duration::from_secs(5)))?;
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let viewer = admin.id;
    // `None` once the stream has said why it ends.
    let events = futures::stream::unfold(Some((state, ticks, slot)), move |open| async move {
        let (state, mut ticks, slot) = open?;
        ticks.tick().await;
        // Rights are checked on every tick, not only when the stream
        // opened: a viewer who was disabled or demoted stops seeing data.
        if !still_admin(&state, viewer).await {
            let end = Event::default().event("error").data("admins only");
            return Some((Ok(end), None));
        }
        let snap = take(&state, top).await;
        let event = Event::default()
            .event("snapshot")
            .json_data(&snap)
            .unwrap_or_else(|_| Event::default().event("error").data("serialize"));
        Some((Ok(event), Some((state, ticks, slot))))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}
