//! `/api/analytics`: a user's own usage and remaining budgets, and the
//! operator's daily costs (admins only).

use axum::{Json, Router, extract::State, routing::get};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::extract::{ApiQuery, AuthUser};
use crate::{
    admission::Payer,
    error::{ApiError, ApiResult, ErrorCode},
    state::AppState,
    store,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/usage", get(usage))
        .route("/costs/daily", get(costs_daily))
}

#[derive(Serialize, ToSchema)]
pub struct BudgetStanding {
    /// `workspace` or `user`.
    pub scope: &'static str,
    /// `daily` or `monthly`.
    pub period: &'static str,
    pub limit_micros: i64,
    pub spent_micros: i64,
    /// Held by generations in flight (their worst case).
    pub reserved_micros: i64,
    pub remaining_micros: i64,
}

#[derive(Serialize, ToSchema)]
pub struct UsageView {
    pub workspace_id: Uuid,
    pub plan: String,
    pub budgets: Vec<BudgetStanding>,
    /// This user's spend this month, from the durable record.
    pub month_requests: i64,
    pub month_input_tokens: i64,
    pub month_output_tokens: i64,
    pub month_cost_micros: i64,
    /// The workspace's embedding cache lookups (ingestion, document search,
    /// `/v1/embeddings`); absent when the cache store does not answer.
    pub embedding_cache: Option<EmbeddingCacheView>,
}

#[derive(Serialize, ToSchema)]
pub struct EmbeddingCacheView {
    pub hits: u64,
    pub misses: u64,
    /// hits / (hits + misses); 0 before any lookup.
    pub hit_rate: f64,
}

#[utoipa::path(get, path = "/api/analytics/usage", tag = "analytics", security(("bearer" = [])),
    responses((status = 200, body = UsageView), (status = 401, description = "missing or invalid token")))]
pub async fn usage(State(state): State<AppState>, user: AuthUser) -> ApiResult<Json<UsageView>> {
    let workspace_id = store::chats::default_workspace(&state.db, user.id)
        .await?
        .ok_or_else(|| ApiError::not_found("workspace"))?;
    let plan = store::workspaces::plan(&state.db, workspace_id).await?;
    let payer = Payer {
        workspace_id,
        user_id: Some(user.id),
        api_key: None,
        plan: plan.clone(),
    };
    let admission = &state.actors.gens.admission;
    let mut budgets = Vec::new();
    for limit in admission.budgets(&payer) {
        let (spent, reserved) = admission
            .ledger()
            .standing(&limit)
            .await
            .map_err(|_| ApiError::new(ErrorCode::Unavailable, "budget store unavailable"))?;
        budgets.push(BudgetStanding {
            scope: limit.kind.as_str(),
            period: limit.period.as_str(),
            limit_micros: limit.limit_micros,
            spent_micros: spent,
            reserved_micros: reserved,
            remaining_micros: (limit.limit_micros - spent - reserved).max(0),
        });
    }
    let (requests, input, output, cost): (i64, i64, i64, i64) = sqlx::query_as(
        "select count(*), coalesce(sum(input_tokens), 0)::bigint, coalesce(sum(output_tokens), 0)::bigint,
                coalesce(sum(cost_micros), 0)::bigint
         from usage_events where user_id = $1 and created_at >= date_trunc('month', now())",
    )
    .bind(user.id)
    .fetch_one(&state.db)
    .await?;
    let embedding_cache =
        state
            .actors
            .gens
            .embed_cache
            .stats(workspace_id)
            .await
            .map(|(hits, misses)| EmbeddingCacheView {
                hits,
                misses,
                hit_rate: if hits + misses == 0 {
                    0.0
                } else {
                    hits as f64 / (hits + misses) as f64
                },
            });
    Ok(Json(UsageView {
        embedding_cache,
        workspace_id,
        plan,
        budgets,
        month_requests: requests,
        month_input_tokens: input,
        month_output_tokens: output,
        month_cost_micros: cost,
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DailyQuery {
    /// Days back from today, 1 to 366 (default 30).
    pub days: Option<i32>,
}

#[derive(Serialize, ToSchema, sqlx::FromRow)]
pub struct DailyCost {
    pub day: NaiveDate,
    pub provider: String,
    pub model: String,
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_micros: i64,
}

#[utoipa::path(get, path = "/api/analytics/costs/daily", tag = "analytics", security(("bearer" = [])),
    params(DailyQuery),
    responses((status = 200, body = [DailyCost]), (status = 403, description = "admins only")))]
pub async fn costs_daily(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<DailyQuery>,
) -> ApiResult<Json<Vec<DailyCost>>> {
    let me = store::users::by_id(&state.db, user.id)
        .await?
        .ok_or_else(|| ApiError::unauthorized("invalid or expired token"))?;
    if !me.is_admin {
        return Err(ApiError::new(ErrorCode::Forbidden, "admins only"));
    }
    let days = q.days.unwrap_or(30);
    if !(1..=366).contains(&days) {
        return Err(ApiError::invalid("days: must be 1 to 366"));
    }
    let rows: Vec<DailyCost> = sqlx::query_as(
        "select (created_at at time zone 'utc')::date as day, provider, model, count(*) as requests,
                sum(input_tokens)::bigint as input_tokens, sum(output_tokens)::bigint as output_tokens,
                sum(cost_micros)::bigint as cost_micros
         from usage_events where created_at >= now() - make_interval(days => $1)
         group by 1, 2, 3 order by 1 desc, 7 desc",
    )
    .bind(days)
    .fetch_all(&state.db)
    .await?;
    Ok(Json(rows))
}
