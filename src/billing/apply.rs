//! Applying one verified event: in one transaction, record its id in
//! `stripe_events` (a second delivery finds it and changes nothing), write its
//! effect, and set the workspace's plan from its subscriptions.
//!
//! Order never comes from arrival: a subscription row holds Stripe's object as
//! of `state_at` (the event's `created`), and an older object is dropped;
//! payments and failures compare their own times (see `store::billing`).

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{
    event::{CheckoutSession, Effect, Envelope, Invoice, Subscription},
    plans::Prices,
};
use crate::store::billing::{self as store, Revenue, SubscriptionState};

/// What became of an event; stored in `stripe_events.outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    /// Older than the state already held.
    Stale,
    /// Seen before: nothing done.
    Duplicate,
    /// No workspace could be found for it.
    Unmatched,
    /// A type we record and do not act on.
    Ignored,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Stale => "stale",
            Self::Duplicate => "duplicate",
            Self::Unmatched => "unmatched",
            Self::Ignored => "ignored",
        }
    }
}

/// What the event application needs to know.
pub struct Applier<'a> {
    pub db: &'a PgPool,
    pub prices: &'a Prices,
    pub grace_secs: f64,
}

/// A subscription read from the Stripe API, and when it was read.
pub struct Fetched {
    pub subscription: Subscription,
    pub at: DateTime<Utc>,
}

fn at(unix: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(unix, 0).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

impl Applier<'_> {
    /// Applies the event exactly once.
    pub async fn apply(
        &self,
        env: &Envelope,
        effect: &Effect,
        fetched: Option<&Fetched>,
    ) -> Result<Outcome, sqlx::Error> {
        let mut tx = self.db.begin().await?;
        if !store::record_event(&mut tx, &env.id, &env.kind, at(env.created)).await? {
            return Ok(Outcome::Duplicate);
        }
        let created = at(env.created);
        let (outcome, workspace) = match effect {
            Effect::Ignored => (Outcome::Ignored, None),
            Effect::Subscription(s) => self.subscription(&mut tx, s, created, None).await?,
            Effect::CheckoutCompleted(c) => self.checkout(&mut tx, c, fetched).await?,
            Effect::InvoicePaid(i) => self.invoice_paid(&mut tx, i, created).await?,
            Effect::InvoicePaymentFailed(i) => match i.subscription_id() {
                Some(sub) => match store::mark_failed(&mut tx, sub, created).await? {
                    Some(ws) => (Outcome::Applied, Some(ws)),
                    None => (Outcome::Unmatched, None),
                },
                None => (Outcome::Ignored, None),
            },
        };
        if let Some(ws) = workspace {
            let plan = store::apply_effective_plan(&mut tx, ws, self.grace_secs).await?;
            tracing::info!(event = %env.id, kind = %env.kind, workspace = %ws, plan = ?plan, "billing event applied");
        }
        store::finish_event(&mut tx, &env.id, outcome.as_str()).await?;
        tx.commit().await?;
        Ok(outcome)
    }

    /// The workspace a subscription belongs to: its customer's, else the one
    /// we named in its metadata at checkout (then the customer is linked to it).
    async fn workspace_for(
        &self,
        tx: &mut PgConnection,
        customer: &str,
        hint: Option<&str>,
    ) -> Result<Option<Uuid>, sqlx::Error> {
        if let Some(ws) = store::workspace_of_customer(tx, customer).await? {
            return Ok(Some(ws));
        }
        let Some(ws) = hint.and_then(|h| h.parse::<Uuid>().ok()) else {
            return Ok(None);
        };
        if !store::workspace_exists(tx, ws).await? {
            return Ok(None);
        }
        // A workspace already linked to another customer keeps it.
        match store::link_customer(tx, ws, customer).await? {
            Some(linked) if linked == customer => Ok(Some(ws)),
            _ => Ok(None),
        }
    }

    async fn subscription(
        &self,
        tx: &mut PgConnection,
        s: &Subscription,
        state_at: DateTime<Utc>,
        hint: Option<&str>,
    ) -> Result<(Outcome, Option<Uuid>), sqlx::Error> {
        let hint = hint.or(s.metadata.get("workspace_id").map(String::as_str));
        let Some(ws) = self.workspace_for(tx, s.customer.id(), hint).await? else {
            tracing::warn!(subscription = %s.id, "subscription of no known workspace");
            return Ok((Outcome::Unmatched, None));
        };
        let plan = match s.price_id().and_then(|p| self.prices.plan_of(p)) {
            Some(plan) => plan,
            None => {
                tracing::warn!(subscription = %s.id, price = ?s.price_id(), "subscription to a price no plan maps to");
                "free"
            }
        };
        let state = SubscriptionState {
            workspace_id: ws,
            stripe_subscription_id: &s.id,
            stripe_customer_id: s.customer.id(),
            stripe_price_id: s.price_id(),
            plan,
            status: &s.status,
            seats: s.seats(),
            cancel_at_period_end: s.cancel_at_period_end,
            current_period_end: s.period_end().map(at),
            state_at,
        };
        let outcome = if store::upsert_subscription(tx, &state).await? {
            Outcome::Applied
        } else {
            Outcome::Stale
        };
        Ok((outcome, Some(ws)))
    }

    async fn checkout(
        &self,
        tx: &mut PgConnection,
        c: &CheckoutSession,
        fetched: Option<&Fetched>,
    ) -> Result<(Outcome, Option<Uuid>), sqlx::Error> {
        let Some(customer) = c.customer.as_ref().map(|c| c.id()) else {
            return Ok((Outcome::Ignored, None));
        };
        let Some(ws) = self
            .workspace_for(tx, customer, c.client_reference_id.as_deref())
            .await?
        else {
            return Ok((Outcome::Unmatched, None));
        };
        match fetched {
            // The subscription as read from the API just now: newer than any
            // event created before this moment.
            Some(f) if f.subscription.customer.id() == customer => {
                let ws_hint = ws.to_string();
                self.subscription(tx, &f.subscription, f.at, Some(&ws_hint))
                    .await
            }
            _ => Ok((Outcome::Applied, Some(ws))),
        }
    }

    async fn invoice_paid(
        &self,
        tx: &mut PgConnection,
        i: &Invoice,
        created: DateTime<Utc>,
    ) -> Result<(Outcome, Option<Uuid>), sqlx::Error> {
        let paid_at = i
            .status_transitions
            .as_ref()
            .and_then(|t| t.paid_at)
            .map_or(created, at);
        let from_sub = match i.subscription_id() {
            Some(sub) => store::mark_paid(tx, sub, paid_at).await?,
            None => None,
        };
        let ws = match (from_sub, i.customer.as_ref()) {
            (Some(ws), _) => Some(ws),
            (None, Some(c)) => store::workspace_of_customer(tx, c.id()).await?,
            (None, None) => None,
        };
        let Some(ws) = ws else {
            return Ok((Outcome::Unmatched, None));
        };
        store::record_revenue(
            tx,
            &Revenue {
                stripe_invoice_id: &i.id,
                workspace_id: ws,
                stripe_subscription_id: i.subscription_id(),
                currency: &i.currency,
                amount_minor: i.amount_paid,
                amount_micros: i.amount_micros(),
                paid_at,
            },
        )
        .await?;
        Ok((Outcome::Applied, Some(ws)))
    }
}
