//! Reading a verified webhook body: the event envelope and, for the types we
//! act on, the few fields of the object we need.
//!
//! Parsed leniently on purpose (our own small structs, not `stripe_webhook`'s
//! full types): Stripe adds fields and moves some between API versions (e.g.
//! `current_period_end` from the subscription to its items, `subscription`
//! from the invoice to `parent.subscription_details`), and a webhook we cannot
//! read because of a field we never use would be refused forever.

use std::collections::HashMap;

use serde::Deserialize;

/// The envelope every event shares.
#[derive(Debug, Clone, Deserialize)]
pub struct Envelope {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// Unix seconds when Stripe created the event: the order of events.
    pub created: i64,
    pub data: EventData,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EventData {
    pub object: serde_json::Value,
}

/// An id, or the object it names when expanded.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Expandable {
    Id(String),
    Object { id: String },
}

impl Expandable {
    pub fn id(&self) -> &str {
        match self {
            Self::Id(id) | Self::Object { id } => id,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Subscription {
    pub id: String,
    pub customer: Expandable,
    pub status: String,
    #[serde(default)]
    pub cancel_at_period_end: bool,
    /// Before API version 2025-03-31 only; later it is on each item.
    #[serde(default)]
    pub current_period_end: Option<i64>,
    pub items: List<SubscriptionItem>,
    #[serde(default)]
    pub metadata: HashMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct List<T> {
    pub data: Vec<T>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SubscriptionItem {
    pub price: PriceRef,
    #[serde(default)]
    pub quantity: Option<u64>,
    #[serde(default)]
    pub current_period_end: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PriceRef {
    pub id: String,
}

impl Subscription {
    /// The first item's price: a Switchboard subscription has one line.
    pub fn price_id(&self) -> Option<&str> {
        self.items.data.first().map(|i| i.price.id.as_str())
    }
    pub fn seats(&self) -> i32 {
        let q = self
            .items
            .data
            .first()
            .and_then(|i| i.quantity)
            .unwrap_or(1);
        i32::try_from(q).unwrap_or(i32::MAX).max(1)
    }
    pub fn period_end(&self) -> Option<i64> {
        self.current_period_end.or_else(|| {
            self.items
                .data
                .iter()
                .filter_map(|i| i.current_period_end)
                .max()
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct CheckoutSession {
    pub id: String,
    pub mode: String,
    #[serde(default)]
    pub customer: Option<Expandable>,
    #[serde(default)]
    pub subscription: Option<Expandable>,
    /// We set it to the workspace id when creating the session.
    #[serde(default)]
    pub client_reference_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Invoice {
    pub id: String,
    #[serde(default)]
    pub customer: Option<Expandable>,
    /// Before API version 2025-03-31.
    #[serde(default)]
    pub subscription: Option<Expandable>,
    #[serde(default)]
    pub parent: Option<InvoiceParent>,
    pub amount_paid: i64,
    pub currency: String,
    #[serde(default)]
    pub status_transitions: Option<StatusTransitions>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct InvoiceParent {
    #[serde(default)]
    pub subscription_details: Option<SubscriptionDetails>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SubscriptionDetails {
    pub subscription: Expandable,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StatusTransitions {
    #[serde(default)]
    pub paid_at: Option<i64>,
}

impl Invoice {
    pub fn subscription_id(&self) -> Option<&str> {
        self.subscription
            .as_ref()
            .or_else(|| {
                self.parent
                    .as_ref()?
                    .subscription_details
                    .as_ref()
                    .map(|d| &d.subscription)
            })
            .map(Expandable::id)
    }
    /// The amount in micro-dollars; 0 for other currencies (not converted).
    pub fn amount_micros(&self) -> i64 {
        if self.currency.eq_ignore_ascii_case("usd") {
            // Cents to micro-dollars.
            self.amount_paid.max(0).saturating_mul(10_000)
        } else {
            0
        }
    }
}

/// What an event asks of us.
#[derive(Debug, Clone)]
pub enum Effect {
    CheckoutCompleted(CheckoutSession),
    /// `customer.subscription.created|updated|deleted`: the object's state.
    Subscription(Subscription),
    InvoicePaid(Invoice),
    InvoicePaymentFailed(Invoice),
    /// A type we record and do not act on.
    Ignored,
}

#[derive(Debug, thiserror::Error)]
#[error("malformed event: {0}")]
pub struct MalformedEvent(String);

/// Parses a verified body into its envelope and effect.
pub fn parse(body: &[u8]) -> Result<(Envelope, Effect), MalformedEvent> {
    let env: Envelope = serde_json::from_slice(body).map_err(|e| MalformedEvent(e.to_string()))?;
    if env.id.is_empty() || env.id.len() > 255 || env.kind.len() > 255 {
        return Err(MalformedEvent("id or type out of range".into()));
    }
    let object = env.data.object.clone();
    let bad = |e: serde_json::Error| MalformedEvent(format!("{}: {e}", env.kind));
    let effect = match env.kind.as_str() {
        "checkout.session.completed" => {
            Effect::CheckoutCompleted(serde_json::from_value(object).map_err(bad)?)
        }
        "customer.subscription.created"
        | "customer.subscription.updated"
        | "customer.subscription.deleted" => {
            Effect::Subscription(serde_json::from_value(object).map_err(bad)?)
        }
        "invoice.paid" => Effect::InvoicePaid(serde_json::from_value(object).map_err(bad)?),
        "invoice.payment_failed" => {
            Effect::InvoicePaymentFailed(serde_json::from_value(object).map_err(bad)?)
        }
        _ => Effect::Ignored,
    };
    Ok((env, effect))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(kind: &str, object: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&json!({"id": "evt_1", "object": "event", "type": kind,
            "created": 1_800_000_000, "data": {"object": object}}))
        .unwrap()
    }

    #[test]
    fn reads_a_subscription_of_either_api_version() {
        let old = json!({"id": "sub_1", "customer": "cus_1", "status": "active",
            "current_period_end": 1_900_000_000,
            "items": {"object": "list", "data": [{"price": {"id": "price_pro"}, "quantity": 3}]}});
        let (_, Effect::Subscription(s)) =
            parse(&event("customer.subscription.updated", old)).unwrap()
        else {
            panic!("not a subscription")
        };
        assert_eq!(
            (s.price_id(), s.seats(), s.period_end()),
            (Some("price_pro"), 3, Some(1_900_000_000))
        );
        let new = json!({"id": "sub_1", "customer": {"id": "cus_1"}, "status": "past_due",
            "items": {"data": [{"price": {"id": "price_team"}, "current_period_end": 1_900_000_001}]}});
        let (_, Effect::Subscription(s)) =
            parse(&event("customer.subscription.created", new)).unwrap()
        else {
            panic!("not a subscription")
        };
        assert_eq!(s.customer.id(), "cus_1");
        assert_eq!((s.seats(), s.period_end()), (1, Some(1_900_000_001)));
    }

    #[test]
    fn reads_invoice_subscription_from_either_place() {
        let old =
            json!({"id": "in_1", "subscription": "sub_1", "amount_paid": 1500, "currency": "usd"});
        let (_, Effect::InvoicePaid(i)) = parse(&event("invoice.paid", old)).unwrap() else {
            panic!()
        };
        assert_eq!(
            (i.subscription_id(), i.amount_micros()),
            (Some("sub_1"), 15_000_000)
        );
        let new = json!({"id": "in_2", "amount_paid": 900, "currency": "eur",
            "parent": {"subscription_details": {"subscription": "sub_2"}}});
        let (_, Effect::InvoicePaymentFailed(i)) =
            parse(&event("invoice.payment_failed", new)).unwrap()
        else {
            panic!()
        };
        assert_eq!((i.subscription_id(), i.amount_micros()), (Some("sub_2"), 0));
    }

    #[test]
    fn unknown_types_are_ignored_and_bad_objects_refused() {
        assert!(matches!(
            parse(&event("charge.refunded", json!({"anything": 1})))
                .unwrap()
                .1,
            Effect::Ignored
        ));
        assert!(
            parse(&event(
                "customer.subscription.updated",
                json!({"id": "sub_1"})
            ))
            .is_err()
        );
        assert!(parse(b"{not json").is_err());
        assert!(parse(br#"{"id":"evt_1","type":"x"}"#).is_err());
    }
}
