//! Billing with Stripe: which prices buy which plan, Checkout and the customer
//! portal, verified webhooks applied exactly once, and the rule that turns
//! subscriptions into a workspace's plan (`workspaces.plan`, which every door
//! reads fresh). docs/BILLING.md tells the whole story.
//!
//! - [`config`]: the `[billing]` settings and their validation.
//! - [`plans`]: prices ↔ plans, and the catalogue on sale.
//! - [`signature`]: `Stripe-Signature` verification, a pure function.
//! - [`event`]: reading a verified event's fields we act on.
//! - [`apply`]: an event's effect and its id in one transaction.
//! - [`stripe_api`]: the calls we make to Stripe (async-stripe).
//! - [`sweep`]: plans reset when a failed payment's grace period runs out.
//!
//! Must not: cache plans (every node reads `workspaces.plan` from Postgres),
//! or trust arrival order (events carry their own time).

pub mod apply;
pub mod event;
pub mod plans;
pub mod signature;
pub mod stripe_api;
pub mod sweep;

use serde::Serialize;
use sqlx::PgPool;
use utoipa::ToSchema;
use uuid::Uuid;

pub use crate::config::BillingConfig;

use crate::config::PriceConfig;
use crate::{
    config::Config,
    error::{ApiError, ErrorCode},
};
use apply::{Applier, Fetched, Outcome};
use event::Effect;
use plans::Prices;
use signature::SignatureError;
use stripe_api::{StripeApi, StripeCallError};

/// Where to send the browser (a Checkout or portal session).
#[derive(Debug, Serialize, ToSchema)]
pub struct Redirect {
    pub url: String,
    /// Stripe's id of the session.
    pub id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("webhook secret not configured")]
    NotConfigured,
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error(transparent)]
    Malformed(#[from] event::MalformedEvent),
    #[error(transparent)]
    Stripe(#[from] StripeCallError),
    #[error(transparent)]
    Store(#[from] sqlx::Error),
}

impl From<StripeCallError> for ApiError {
    fn from(e: StripeCallError) -> Self {
        match e {
            StripeCallError::NotConfigured => {
                ApiError::new(ErrorCode::Unavailable, "billing is not configured")
            }
            StripeCallError::Api(cause) => {
                tracing::error!(error = %cause, "stripe call failed");
                ApiError::new(
                    ErrorCode::Unavailable,
                    "the payment provider is unavailable, try again",
                )
            }
        }
    }
}

/// The billing side of the app state: the Stripe client and the price map.
pub struct Billing {
    api: Option<StripeApi>,
    prices: Prices,
}

impl Billing {
    /// No client without `STRIPE_SECRET_KEY`: billing calls then answer 503.
    pub fn new(config: &Config) -> Self {
        Self {
            api: StripeApi::new(config),
            prices: Prices::new(config.billing.all_prices()),
        }
    }

    pub fn prices(&self) -> &Prices {
        &self.prices
    }

    fn api(&self) -> Result<&StripeApi, StripeCallError> {
        self.api.as_ref().ok_or(StripeCallError::NotConfigured)
    }

    /// A Checkout session for the workspace, creating its Stripe customer the first time.
    pub async fn checkout(
        &self,
        db: &PgPool,
        config: &Config,
        workspace_id: Uuid,
        email: &str,
        price: &PriceConfig,
        seats: u32,
    ) -> Result<Redirect, ApiError> {
        let api = self.api()?;
        let customer = match crate::store::billing::customer_of(db, workspace_id).await? {
            Some(c) => c,
            None => {
                let created = api.create_customer(workspace_id, email).await?;
                let mut conn = db.acquire().await?;
                // Two racing checkouts: the first link wins; the other customer stays unused.
                crate::store::billing::link_customer(&mut conn, workspace_id, &created)
                    .await?
                    .unwrap_or(created)
            }
        };
        let base = config.server.frontend_url.trim_end_matches('/');
        let success = config.billing.success_url.clone().unwrap_or_else(|| {
            format!("{base}/billing?checkout=success&session_id={{CHECKOUT_SESSION_ID}}")
        });
        let cancel = config
            .billing
            .cancel_url
            .clone()
            .unwrap_or_else(|| format!("{base}/billing?checkout=cancelled"));
        Ok(api
            .create_checkout_session(workspace_id, &customer, &price.id, seats, &success, &cancel)
            .await?)
    }

    pub async fn portal(&self, config: &Config, customer: &str) -> Result<Redirect, ApiError> {
        let base = config.server.frontend_url.trim_end_matches('/');
        let back = config
            .billing
            .portal_return_url
            .clone()
            .unwrap_or_else(|| format!("{base}/billing"));
        Ok(self.api()?.create_portal_session(customer, &back).await?)
    }

    /// Verifies, parses and applies one webhook delivery.
    pub async fn handle_webhook(
        &self,
        db: &PgPool,
        config: &Config,
        body: &[u8],
        signature_header: Option<&str>,
    ) -> Result<Outcome, WebhookError> {
        let secrets: Vec<&str> = config
            .stripe
            .webhook_secret
            .iter()
            .chain(&config.billing.previous_webhook_secrets)
            .map(crate::config::Secret::expose)
            .filter(|s| !s.is_empty())
            .collect();
        if secrets.is_empty() {
            return Err(WebhookError::NotConfigured);
        }
        let now = chrono::Utc::now().timestamp();
        signature::verify(
            body,
            signature_header,
            &secrets,
            now,
            config.billing.webhook_tolerance_secs,
        )?;
        let (env, effect) = event::parse(body)?;
        if crate::store::billing::event_seen(db, &env.id).await? {
            return Ok(Outcome::Duplicate);
        }
        // Checkout completed: read the subscription it made now, so the plan
        // applies even before (or without) customer.subscription.created.
        let fetched = match &effect {
            Effect::CheckoutCompleted(c) if c.mode == "subscription" => {
                match c.subscription.as_ref() {
                    Some(sub) => Some(Fetched {
                        subscription: self.api()?.retrieve_subscription(sub.id()).await?,
                        at: chrono::Utc::now(),
                    }),
                    None => None,
                }
            }
            _ => None,
        };
        let applier = Applier {
            db,
            prices: &self.prices,
            grace_secs: config.billing.grace_period_secs as f64,
        };
        Ok(applier.apply(&env, &effect, fetched.as_ref()).await?)
    }
}
