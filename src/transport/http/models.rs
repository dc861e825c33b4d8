//! `GET /api/models`: the models and route aliases a signed-in user may pick for
//! a chat, the same list `/v1/models` gives API keys (route aliases the user's
//! plan can route, then priced models whose provider is running), with prices.
//! Read-only; it owns no routing logic, it asks the router and price table.

use axum::{Json, Router, extract::State, routing::get};
use serde::Serialize;
use utoipa::ToSchema;

use super::extract::AuthUser;
use crate::{
    error::{ApiError, ApiResult},
    state::AppState,
    store,
};

pub fn router() -> Router<AppState> {
    Router::new().route("/", get(list_models))
}

#[derive(Serialize, ToSchema)]
pub struct ModelChoice {
    /// What to pass as `model` when sending.
    pub id: String,
    /// `route` (an alias the router resolves with fallback) or `model`.
    pub kind: &'static str,
    /// The provider of a priced model; null for a route.
    pub provider: Option<String>,
    /// Micro-dollars per million input tokens; null for a route.
    pub input_micros_per_mtok: Option<u64>,
    /// Micro-dollars per million output tokens; null for a route.
    pub output_micros_per_mtok: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct ModelList {
    /// The plan of the user's own workspace, which decides the routes.
    pub plan: String,
    pub models: Vec<ModelChoice>,
}

#[utoipa::path(get, path = "/api/models", tag = "chats", security(("bearer" = [])),
    responses((status = 200, body = ModelList), (status = 401, description = "missing or invalid token")))]
pub async fn list_models(
    State(state): State<AppState>,
    user: AuthUser,
) -> ApiResult<Json<ModelList>> {
    let workspace_id = store::chats::default_workspace(&state.db, user.id)
        .await?
        .ok_or_else(|| ApiError::not_found("workspace"))?;
    let plan = store::workspaces::plan(&state.db, workspace_id).await?;
    let offer = state.actors.gens.offer(&plan);
    let routes = offer.routes.iter().map(|alias| ModelChoice {
        id: (*alias).to_owned(),
        kind: "route",
        provider: None,
        input_micros_per_mtok: None,
        output_micros_per_mtok: None,
    });
    let priced = offer.models.iter().map(|(id, p)| ModelChoice {
        id: (*id).to_owned(),
        kind: "model",
        provider: Some(p.provider.clone()),
        input_micros_per_mtok: Some(p.input),
        output_micros_per_mtok: Some(p.output),
    });
    let models = routes.chain(priced).collect();
    Ok(Json(ModelList { plan, models }))
}
