//! The calls Switchboard makes to Stripe, through async-stripe: create a
//! customer, a Checkout session and a customer-portal session, and read a
//! subscription. The base URL is configurable so tests can run a fake.

use std::collections::HashMap;

use stripe::{Client, ClientBuilder, IdempotencyKey, RequestStrategy, StripeError, StripeRequest};
use stripe_billing::{
    billing_portal_session::CreateBillingPortalSession, subscription::RetrieveSubscription,
};
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionLineItems, CreateCheckoutSessionSubscriptionData,
};
use stripe_core::customer::CreateCustomer;
use uuid::Uuid;

use super::{
    Redirect,
    event::{Expandable, List, PriceRef, Subscription, SubscriptionItem},
};
use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum StripeCallError {
    #[error("billing is not configured (STRIPE_SECRET_KEY)")]
    NotConfigured,
    #[error("stripe: {0}")]
    Api(String),
}

impl From<StripeError> for StripeCallError {
    fn from(e: StripeError) -> Self {
        Self::Api(e.to_string())
    }
}

/// A Stripe client for one deployment.
pub struct StripeApi {
    client: Client,
    timeout: std::time::Duration,
}

impl StripeApi {
    /// None when no secret key is configured or the client cannot be built
    /// (logged; billing calls then answer 503).
    pub fn new(config: &Config) -> Option<Self> {
        let key = config.stripe.secret_key.as_ref()?;
        let base = config.billing.api_base.trim_end_matches('/');
        match ClientBuilder::new(key.expose())
            .url(format!("{base}/"))
            .build()
        {
            Ok(client) => Some(Self {
                client,
                timeout: std::time::Duration::from_secs(config.billing.api_timeout_secs),
            }),
            Err(e) => {
                tracing::error!(error = %e, "cannot build the Stripe client: billing disabled");
                None
            }
        }
    }

    async fn timed<T>(
        &self,
        call: impl Future<Output = Result<T, StripeError>>,
    ) -> Result<T, StripeCallError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(res) => Ok(res?),
            Err(_) => Err(StripeCallError::Api("timed out".into())),
        }
    }

    /// A customer for the workspace. The idempotency key makes a retried or
    /// racing creation for the same workspace return the same customer.
    pub async fn create_customer(
        &self,
        workspace_id: Uuid,
        email: &str,
    ) -> Result<String, StripeCallError> {
        let metadata = HashMap::from([("workspace_id".to_owned(), workspace_id.to_string())]);
        let key = IdempotencyKey::new(format!("switchboard-customer-{workspace_id}"))
            .map_err(|e| StripeCallError::Api(e.to_string()))?;
        let customer = self
            .timed(
                CreateCustomer::new()
                    .email(email)
                    .metadata(metadata)
                    .customize()
                    .request_strategy(RequestStrategy::Idempotent(key))
                    .send(&self.client),
            )
            .await?;
        Ok(customer.id.as_str().to_owned())
    }

    pub async fn create_checkout_session(
        &self,
        workspace_id: Uuid,
        customer: &str,
        price_id: &str,
        seats: u32,
        success_url: &str,
        cancel_url: &str,
    ) -> Result<Redirect, StripeCallError> {
        let metadata = HashMap::from([("workspace_id".to_owned(), workspace_id.to_string())]);
        let line = CreateCheckoutSessionLineItems {
            price: Some(price_id.to_owned()),
            quantity: Some(u64::from(seats)),
            ..Default::default()
        };
        let subscription_data = CreateCheckoutSessionSubscriptionData {
            metadata: Some(metadata.clone()),
            ..Default::default()
        };
        let session = self
            .timed(
                CreateCheckoutSession::new()
                    .mode(stripe_checkout::CheckoutSessionMode::Subscription)
                    .customer(customer)
                    .client_reference_id(workspace_id.to_string())
                    .line_items(vec![line])
                    .subscription_data(subscription_data)
                    .metadata(metadata)
                    .success_url(success_url)
                    .cancel_url(cancel_url)
                    .send(&self.client),
            )
            .await?;
        let url = session
            .url
            .ok_or_else(|| StripeCallError::Api("checkout session without a url".into()))?;
        Ok(Redirect {
            url,
            id: session.id.as_str().to_owned(),
        })
    }

    pub async fn create_portal_session(
        &self,
        customer: &str,
        return_url: &str,
    ) -> Result<Redirect, StripeCallError> {
        let session = self
            .timed(
                CreateBillingPortalSession::new()
                    .customer(customer)
                    .return_url(return_url)
                    .send(&self.client),
            )
            .await?;
        Ok(Redirect {
            url: session.url,
            id: session.id.as_str().to_owned(),
        })
    }

    /// The subscription as Stripe holds it now, in the shape webhooks give.
    pub async fn retrieve_subscription(&self, id: &str) -> Result<Subscription, StripeCallError> {
        let s = self
            .timed(RetrieveSubscription::new(id).send(&self.client))
            .await?;
        Ok(Subscription {
            id: s.id.as_str().to_owned(),
            customer: Expandable::Id(s.customer.id().as_str().to_owned()),
            status: s.status.as_str().to_owned(),
            cancel_at_period_end: s.cancel_at_period_end,
            current_period_end: None,
            items: List {
                data: s
                    .items
                    .data
                    .iter()
                    .map(|i| SubscriptionItem {
                        price: PriceRef {
                            id: i.price.id.as_str().to_owned(),
                        },
                        quantity: i.quantity,
                        current_period_end: Some(i.current_period_end),
                    })
                    .collect(),
            },
            metadata: s.metadata,
        })
    }
}
