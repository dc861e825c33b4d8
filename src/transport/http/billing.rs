//! `/api/billing`: the plans on sale, Stripe Checkout and the customer portal
//! for a workspace's owners and admins, the workspace's subscription, and
//! Stripe's webhook. Domain rules are in `crate::billing`; this file reads
//! requests and shapes answers.

use axum::{
    Json, Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::{get, post},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::extract::{ApiJson, ApiQuery, AuthUser};
use crate::{
    billing::{self, Redirect, WebhookError, plans::PlanOffer},
    error::{ApiError, ApiResult, ErrorCode},
    state::AppState,
    store::{self, billing::SubscriptionView},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/plans", get(plans))
        .route("/create-checkout-session", post(create_checkout_session))
        .route("/portal-session", post(portal_session))
        .route("/subscription", get(subscription))
        .route("/webhook", post(webhook))
}

#[derive(Serialize, ToSchema)]
pub struct PlanList {
    pub plans: Vec<PlanOffer>,
}

#[utoipa::path(get, path = "/api/billing/plans", tag = "billing",
    responses((status = 200, body = PlanList)))]
pub async fn plans(State(state): State<AppState>) -> Json<PlanList> {
    Json(PlanList {
        plans: billing::plans::catalogue(&state.config, state.billing.prices()),
    })
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CheckoutRequest {
    /// A Stripe price id from `GET /api/billing/plans`.
    #[serde(alias = "price_id")]
    pub price_id: String,
    /// Seats, for a per-seat price (default: the workspace's member count).
    pub seats: Option<u32>,
    /// A workspace the caller owns or administers; their own by default.
    #[serde(alias = "workspace_id")]
    pub workspace_id: Option<Uuid>,
}

/// Largest seat count a checkout accepts.
const MAX_SEATS: u32 = 10_000;

#[utoipa::path(post, path = "/api/billing/create-checkout-session", tag = "billing",
    request_body = CheckoutRequest, security(("bearer" = [])),
    responses((status = 200, body = Redirect), (status = 400, description = "unknown price or bad seats"),
              (status = 403, description = "not an owner or admin of the workspace"),
              (status = 503, description = "billing is not configured or Stripe is unreachable")))]
pub async fn create_checkout_session(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(req): ApiJson<CheckoutRequest>,
) -> ApiResult<Json<Redirect>> {
    let price = state
        .billing
        .prices()
        .get(req.price_id.trim())
        .cloned()
        .ok_or_else(|| {
            ApiError::invalid("priceId: not a price on sale (see /api/billing/plans)")
        })?;
    if req.seats.is_some_and(|s| s == 0 || s > MAX_SEATS) {
        return Err(ApiError::invalid(format!(
            "seats: must be 1 to {MAX_SEATS}"
        )));
    }
    let workspace_id = managed_workspace(&state, user, req.workspace_id).await?;
    let seats = match (price.per_seat, req.seats) {
        (false, _) => 1,
        (true, Some(s)) => s,
        (true, None) => store::billing::member_count(&state.db, workspace_id)
            .await?
            .clamp(1, MAX_SEATS),
    };
    let email = store::users::by_id(&state.db, user.id)
        .await?
        .map(|u| u.email)
        .ok_or_else(|| ApiError::unauthorized("invalid or expired token"))?;
    let session = state
        .billing
        .checkout(
            &state.db,
            &state.config,
            workspace_id,
            &email,
            &price,
            seats,
        )
        .await?;
    Ok(Json(session))
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct PortalRequest {
    pub workspace_id: Option<Uuid>,
}

#[utoipa::path(post, path = "/api/billing/portal-session", tag = "billing",
    request_body = PortalRequest, security(("bearer" = [])),
    responses((status = 200, body = Redirect), (status = 403, description = "not an owner or admin"),
              (status = 404, description = "the workspace has no Stripe customer yet")))]
pub async fn portal_session(
    State(state): State<AppState>,
    user: AuthUser,
    body: Bytes,
) -> ApiResult<Json<Redirect>> {
    // The body is optional: none means the caller's own workspace.
    let req: PortalRequest = if body.iter().all(u8::is_ascii_whitespace) {
        PortalRequest::default()
    } else if crate::text::json_has_nul(&body) {
        return Err(ApiError::invalid(
            "invalid request body: strings must not contain NUL (\\u0000)",
        ));
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::invalid(format!("invalid request body: {e}")))?
    };
    let workspace_id = managed_workspace(&state, user, req.workspace_id).await?;
    let customer = store::billing::customer_of(&state.db, workspace_id)
        .await?
        .ok_or_else(|| ApiError::not_found("billing account (buy a plan first)"))?;
    Ok(Json(state.billing.portal(&state.config, &customer).await?))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WorkspaceQuery {
    pub workspace_id: Option<Uuid>,
}

#[utoipa::path(get, path = "/api/billing/subscription", tag = "billing", security(("bearer" = [])),
    params(WorkspaceQuery),
    responses((status = 200, body = SubscriptionView), (status = 404, description = "not a member of that workspace")))]
pub async fn subscription(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<WorkspaceQuery>,
) -> ApiResult<Json<SubscriptionView>> {
    let workspace_id = member_workspace(&state, user, q.workspace_id).await?;
    store::billing::subscription_view(&state.db, workspace_id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("workspace"))
}

#[derive(Serialize, ToSchema)]
pub struct WebhookAck {
    pub received: bool,
    /// `applied`, `stale`, `duplicate`, `unmatched` or `ignored`.
    pub outcome: &'static str,
}

/// Takes the raw body: the signature is over the exact bytes Stripe sent.
#[utoipa::path(post, path = "/api/billing/webhook", tag = "billing",
    request_body(content = String, description = "Stripe's event, as sent", content_type = "application/json"),
    responses((status = 200, body = WebhookAck), (status = 400, description = "bad signature, stale timestamp or malformed event"),
              (status = 503, description = "webhook secret not configured")))]
pub async fn webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<WebhookAck>)> {
    let signature = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok());
    let outcome = state
        .billing
        .handle_webhook(&state.db, &state.config, &body, signature)
        .await
        .map_err(|e| match e {
            WebhookError::NotConfigured => {
                ApiError::new(ErrorCode::Unavailable, "billing webhooks are not configured")
            }
            WebhookError::Signature(e) => {
                metrics::counter!("switchboard_billing_webhooks_refused_total", "reason" => "signature")
                    .increment(1);
                ApiError::invalid(format!("webhook refused: {e}"))
            }
            WebhookError::Malformed(e) => {
                metrics::counter!("switchboard_billing_webhooks_refused_total", "reason" => "malformed")
                    .increment(1);
                ApiError::invalid(e.to_string())
            }
            WebhookError::Stripe(e) => e.into(),
            WebhookError::Store(e) => e.into(),
        })?;
    metrics::counter!("switchboard_billing_webhooks_total", "outcome" => outcome.as_str())
        .increment(1);
    Ok((
        StatusCode::OK,
        Json(WebhookAck {
            received: true,
            outcome: outcome.as_str(),
        }),
    ))
}

/// The workspace the caller names, or their own; they must be a member.
async fn member_workspace(
    state: &AppState,
    user: AuthUser,
    named: Option<Uuid>,
) -> ApiResult<Uuid> {
    match named {
        Some(w) if store::chats::is_member(&state.db, user.id, w).await? => Ok(w),
        Some(_) => Err(ApiError::not_found("workspace")),
        None => store::chats::default_workspace(&state.db, user.id)
            .await?
            .ok_or_else(|| ApiError::not_found("workspace")),
    }
}

/// Like [`member_workspace`], and the caller must own or administer it.
async fn managed_workspace(
    state: &AppState,
    user: AuthUser,
    named: Option<Uuid>,
) -> ApiResult<Uuid> {
    let workspace_id = member_workspace(state, user, named).await?;
    match store::billing::member_role(&state.db, user.id, workspace_id)
        .await?
        .as_deref()
    {
        Some("owner" | "admin") => Ok(workspace_id),
        _ => Err(ApiError::new(
            ErrorCode::Forbidden,
            "only the workspace's owners and admins manage its billing",
        )),
    }
}

/// The billing and margin part of `/api/openapi.json`, merged into `ApiDoc`.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        plans,
        create_checkout_session,
        portal_session,
        subscription,
        webhook,
        super::margin::margin,
        super::margin::worst_workspaces
    ),
    components(schemas(
        PlanList,
        PlanOffer,
        billing::plans::PlanLimits,
        billing::plans::PriceOffer,
        CheckoutRequest,
        PortalRequest,
        Redirect,
        SubscriptionView,
        WebhookAck,
        super::margin::MarginView,
        super::margin::WorstMargins,
        store::billing::MarginRow,
        store::billing::WorkspaceMargin
    ))
)]
pub struct BillingDoc;
