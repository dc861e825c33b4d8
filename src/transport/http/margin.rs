//! `/api/analytics/margin`: revenue (paid Stripe invoices) next to provider
//! cost (`usage_events.cost_micros`) and their difference, per day or month for
//! the caller's workspace; and, for admins, the workspaces with the worst margin.
//! Routes carry their full path so this router merges at the top level.

use axum::{Json, Router, extract::State, routing::get};
use chrono::{Duration, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::extract::{ApiQuery, AuthUser};
use crate::{
    error::{ApiError, ApiResult, ErrorCode},
    state::AppState,
    store::{
        self,
        billing::{MarginRow, WorkspaceMargin},
    },
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/analytics/margin", get(margin))
        .route("/api/analytics/margin/workspaces", get(worst_workspaces))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MarginQuery {
    /// `day` (default) or `month`.
    pub period: Option<String>,
    /// Days back from now, 1 to 731 (default 30 for `day`, 365 for `month`).
    pub days: Option<i64>,
    /// A workspace the caller belongs to; their own by default.
    pub workspace_id: Option<Uuid>,
}

#[derive(Serialize, ToSchema)]
pub struct MarginView {
    pub workspace_id: Uuid,
    pub period: &'static str,
    pub revenue_micros: i64,
    pub cost_micros: i64,
    pub margin_micros: i64,
    /// Newest period first; periods with neither revenue nor cost are left out.
    pub periods: Vec<MarginRow>,
}

#[utoipa::path(get, path = "/api/analytics/margin", tag = "analytics", security(("bearer" = [])),
    params(MarginQuery),
    responses((status = 200, body = MarginView), (status = 400, description = "bad period or days"),
              (status = 404, description = "not a member of that workspace")))]
pub async fn margin(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<MarginQuery>,
) -> ApiResult<Json<MarginView>> {
    let period: &'static str = match q.period.as_deref() {
        None | Some("day") => "day",
        Some("month") => "month",
        Some(_) => return Err(ApiError::invalid("period: must be day or month")),
    };
    let days = q.days.unwrap_or(if period == "day" { 30 } else { 365 });
    if !(1..=731).contains(&days) {
        return Err(ApiError::invalid("days: must be 1 to 731"));
    }
    let workspace_id = match q.workspace_id {
        Some(w) if store::chats::is_member(&state.db, user.id, w).await? => w,
        Some(_) => return Err(ApiError::not_found("workspace")),
        None => store::chats::default_workspace(&state.db, user.id)
            .await?
            .ok_or_else(|| ApiError::not_found("workspace"))?,
    };
    let since = Utc::now() - Duration::days(days);
    let periods = store::billing::margin_by_period(&state.db, workspace_id, period, since).await?;
    let revenue = periods.iter().map(|p| p.revenue_micros).sum::<i64>();
    let cost = periods.iter().map(|p| p.cost_micros).sum::<i64>();
    Ok(Json(MarginView {
        workspace_id,
        period,
        revenue_micros: revenue,
        cost_micros: cost,
        margin_micros: revenue - cost,
        periods,
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WorstQuery {
    /// Days back from now, 1 to 731 (default 30).
    pub days: Option<i64>,
    /// At most this many workspaces, 1 to 500 (default 50).
    pub limit: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct WorstMargins {
    pub days: i64,
    /// Worst margin first.
    pub workspaces: Vec<WorkspaceMargin>,
}

#[utoipa::path(get, path = "/api/analytics/margin/workspaces", tag = "analytics", security(("bearer" = [])),
    params(WorstQuery),
    responses((status = 200, body = WorstMargins), (status = 403, description = "admins only")))]
pub async fn worst_workspaces(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<WorstQuery>,
) -> ApiResult<Json<WorstMargins>> {
    let me = store::users::by_id(&state.db, user.id)
        .await?
        .ok_or_else(|| ApiError::unauthorized("invalid or expired token"))?;
    if !me.is_admin {
        return Err(ApiError::new(ErrorCode::Forbidden, "admins only"));
    }
    let days = q.days.unwrap_or(30);
    if !(1..=731).contains(&days) {
        return Err(ApiError::invalid("days: must be 1 to 731"));
    }
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid("limit: must be 1 to 500"));
    }
    let since = Utc::now() - Duration::days(days);
    Ok(Json(WorstMargins {
        days,
        workspaces: store::billing::worst_margins(&state.db, since, limit).await?,
    }))
}
