//! A fake Stripe API on 127.0.0.1:0, speaking Stripe's wire format: form-encoded
//! requests with a Bearer secret key, JSON objects with every field async-stripe
//! requires. It creates customers, Checkout and portal sessions, serves the
//! subscriptions a test puts in it, and records every request. Also builds
//! webhook events and signs them as Stripe does.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

pub const SECRET_KEY: &str = "sk_test_fake_0123456789abcdefghijklmnop";
pub const WEBHOOK_SECRET: &str = "whsec_test_current_0123456789abcdefghijkl";
pub const PREVIOUS_WEBHOOK_SECRET: &str = "whsec_test_previous_0123456789abcdefghijk";
pub const PRICE_PRO: &str = "price_pro_monthly";
pub const PRICE_TEAM: &str = "price_team_seat_monthly";

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub form: Vec<(String, String)>,
    pub idempotency_key: Option<String>,
}

impl Recorded {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Inner {
    requests: Vec<Recorded>,
    subscriptions: HashMap<String, Value>,
    /// Customers by idempotency key, as Stripe replays a keyed request.
    customers_by_key: HashMap<String, String>,
    next: u64,
}

#[derive(Clone)]
pub struct MockStripe {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
}

impl MockStripe {
    pub async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new()
            .route("/v1/customers", post(create_customer))
            .route("/v1/checkout/sessions", post(create_checkout))
            .route("/v1/billing_portal/sessions", post(create_portal))
            .route("/v1/subscriptions/{id}", get(get_subscription))
            .fallback(|| async { stripe_error(StatusCode::NOT_FOUND, "Unrecognized request URL") })
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            url: format!("http://{addr}"),
            inner,
        }
    }

    /// Requests to `path`, oldest first.
    pub fn requests(&self, path: &str) -> Vec<Recorded> {
        let inner = self.inner.lock().unwrap();
        inner
            .requests
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// Makes a subscription retrievable (as Stripe would after a checkout).
    pub fn put_subscription(&self, sub: Value) {
        let id = sub["id"].as_str().unwrap().to_owned();
        self.inner.lock().unwrap().subscriptions.insert(id, sub);
    }
}

fn stripe_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"type": "invalid_request_error", "message": message}})),
    )
        .into_response()
}

fn unauthorized() -> Response {
    stripe_error(StatusCode::UNAUTHORIZED, "Invalid API Key provided")
}

/// Checks the key and records the form body; None when the key is wrong.
fn accept(inner: &Mutex<Inner>, path: &str, headers: &HeaderMap, body: &[u8]) -> Option<Recorded> {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if auth != format!("Bearer {SECRET_KEY}") {
        return None;
    }
    let form: Vec<(String, String)> = url::form_urlencoded::parse(body).into_owned().collect();
    let rec = Recorded {
        path: path.to_owned(),
        form,
        idempotency_key: headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    };
    inner.lock().unwrap().requests.push(rec.clone());
    Some(rec)
}

fn next_id(inner: &Mutex<Inner>, prefix: &str) -> String {
    let mut i = inner.lock().unwrap();
    i.next += 1;
    format!("{prefix}_{:014}", i.next)
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

async fn create_customer(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(rec) = accept(&inner, "/v1/customers", &headers, &body) else {
        return unauthorized();
    };
    let key = rec.idempotency_key.clone();
    let existing = key
        .as_ref()
        .and_then(|k| inner.lock().unwrap().customers_by_key.get(k).cloned());
    let id = existing.unwrap_or_else(|| next_id(&inner, "cus"));
    if let Some(k) = key {
        inner.lock().unwrap().customers_by_key.insert(k, id.clone());
    }
    let metadata: HashMap<String, String> = rec
        .form
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("metadata[")
                .and_then(|k| k.strip_suffix(']'))
                .map(|k| (k.to_owned(), v.clone()))
        })
        .collect();
    Json(customer_json(&id, rec.field("email"), &metadata)).into_response()
}

async fn create_checkout(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(rec) = accept(&inner, "/v1/checkout/sessions", &headers, &body) else {
        return unauthorized();
    };
    let id = next_id(&inner, "cs_test");
    Json(checkout_session_json(
        &id,
        rec.field("customer"),
        rec.field("client_reference_id"),
        None,
        "open",
    ))
    .into_response()
}

async fn create_portal(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(rec) = accept(&inner, "/v1/billing_portal/sessions", &headers, &body) else {
        return unauthorized();
    };
    let id = next_id(&inner, "bps");
    Json(json!({
        "id": id, "object": "billing_portal.session", "configuration": "bpc_test_1",
        "created": now(), "customer": rec.field("customer").unwrap_or_default(),
        "flow": null, "livemode": false, "locale": null, "on_behalf_of": null,
        "return_url": rec.field("return_url"),
        "url": format!("https://billing.stripe.test/p/session/{id}"),
    }))
    .into_response()
}

async fn get_subscription(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let path = format!("/v1/subscriptions/{id}");
    if accept(&inner, &path, &headers, b"").is_none() {
        return unauthorized();
    }
    match inner.lock().unwrap().subscriptions.get(&id) {
        Some(sub) => Json(sub.clone()).into_response(),
        None => stripe_error(
            StatusCode::NOT_FOUND,
            &format!("No such subscription: '{id}'"),
        ),
    }
}

pub fn customer_json(id: &str, email: Option<&str>, metadata: &HashMap<String, String>) -> Value {
    json!({
        "id": id, "object": "customer", "address": null, "balance": 0, "created": now(),
        "currency": null, "default_source": null, "delinquent": false, "description": null,
        "discount": null, "email": email, "invoice_prefix": "ABCD1234",
        "invoice_settings": {"custom_fields": null, "default_payment_method": null,
                             "footer": null, "rendering_options": null},
        "livemode": false, "metadata": metadata, "name": null, "next_invoice_sequence": 1,
        "phone": null, "preferred_locales": [], "shipping": null, "tax_exempt": "none",
        "test_clock": null,
    })
}

pub fn checkout_session_json(
    id: &str,
    customer: Option<&str>,
    client_reference_id: Option<&str>,
    subscription: Option<&str>,
    status: &str,
) -> Value {
    // Two halves: one json! this long would pass the macro recursion limit.
    let session = json!({
        "id": id, "object": "checkout.session",
        "adaptive_pricing": null, "after_expiration": null, "allow_promotion_codes": null,
        "amount_subtotal": 2000, "amount_total": 2000,
        "automatic_tax": {"enabled": false, "liability": null, "provider": null, "status": null},
        "billing_address_collection": null, "cancel_url": "http://127.0.0.1/cancel",
        "client_reference_id": client_reference_id, "client_secret": null,
        "collected_information": null, "consent": null, "consent_collection": null,
        "created": now(), "currency": "usd", "currency_conversion": null,
        "custom_fields": [], "custom_text": {"after_submit": null, "shipping_address": null,
                                             "submit": null, "terms_of_service_acceptance": null},
        "customer": customer, "customer_creation": null, "customer_details": null,
        "customer_email": null, "discounts": [], "expires_at": now() + 86_400,
    });
    let rest = json!({
        "invoice": null, "invoice_creation": null, "livemode": false, "locale": null,
        "metadata": {}, "mode": "subscription", "payment_intent": null, "payment_link": null,
        "payment_method_collection": "always", "payment_method_configuration_details": null,
        "payment_method_options": null, "payment_method_types": ["card"],
        "payment_status": if status == "complete" { "paid" } else { "unpaid" },
        "permissions": null, "phone_number_collection": {"enabled": false},
        "recovered_from": null, "redirect_on_completion": null, "return_url": null,
        "saved_payment_method_options": null, "setup_intent": null,
        "shipping_address_collection": null, "shipping_cost": null, "shipping_options": [],
        "status": status, "submit_type": null, "subscription": subscription,
        "success_url": "http://127.0.0.1/success", "total_details": null,
        "ui_mode": "hosted_page", "wallet_options": null,
        "url": if status == "open" { json!(format!("https://checkout.stripe.test/c/pay/{id}")) } else { Value::Null },
    });
    merge(session, rest)
}

/// A subscription object as the API (and webhooks) carry it.
pub fn subscription_json(
    id: &str,
    customer: &str,
    price: &str,
    status: &str,
    quantity: u64,
    workspace_id: &str,
) -> Value {
    let t = now();
    let item = json!({
        "id": format!("si_{id}"), "object": "subscription_item", "billing_thresholds": null,
        "created": t, "current_period_end": t + 30 * 86_400, "current_period_start": t,
        "discounts": [], "metadata": {}, "plan": plan_json(price),
        "price": price_json(price), "quantity": quantity, "subscription": id,
        "tax_rates": [],
    });
    let head = json!({
        "id": id, "object": "subscription", "application": null,
        "application_fee_percent": null,
        "automatic_tax": {"disabled_reason": null, "enabled": false, "liability": null},
        "billing_cycle_anchor": t, "billing_cycle_anchor_config": null,
        "billing_mode": {"flexible": null, "type": "classic", "updated_at": null},
        "billing_schedules": [], "billing_thresholds": null, "cancel_at": null,
        "cancel_at_period_end": false,
        "canceled_at": if status == "canceled" { json!(t) } else { Value::Null },
        "cancellation_details": {"comment": null, "feedback": null, "reason": null},
        "collection_method": "charge_automatically", "created": t, "currency": "usd",
        "customer": customer, "customer_account": null, "days_until_due": null,
        "default_payment_method": null, "default_source": null, "default_tax_rates": [],
    });
    let tail = json!({
        "description": null, "discounts": [], "ended_at": null,
        "invoice_settings": {"account_tax_ids": null, "issuer": {"type": "self"}},
        "items": {
            "object": "list", "has_more": false, "data": [item],
            "url": format!("/v1/subscription_items?subscription={id}"),
        },
        "latest_invoice": null, "livemode": false,
        "metadata": {"workspace_id": workspace_id},
        "next_pending_invoice_item_invoice": null, "on_behalf_of": null,
        "pause_collection": null, "payment_settings": null,
        "pending_invoice_item_interval": null, "pending_setup_intent": null,
        "pending_update": null, "presentment_details": null, "schedule": null,
        "start_date": t, "status": status, "test_clock": null, "transfer_data": null,
        "trial_end": null, "trial_settings": null, "trial_start": null,
    });
    merge(head, tail)
}

/// The fields of `a` and `b` in one object.
fn merge(mut a: Value, b: Value) -> Value {
    if let (Value::Object(a), Value::Object(b)) = (&mut a, b) {
        a.extend(b);
    }
    a
}

/// The legacy `plan` every subscription item still carries.
fn plan_json(price: &str) -> Value {
    json!({
        "id": price, "object": "plan", "active": true, "amount": 2000, "amount_decimal": "2000",
        "billing_scheme": "per_unit", "created": now(), "currency": "usd", "interval": "month",
        "interval_count": 1, "livemode": false, "metadata": {}, "meter": null, "nickname": null,
        "product": "prod_switchboard", "tiers_mode": null, "transform_usage": null,
        "trial_period_days": null, "usage_type": "licensed",
    })
}

fn price_json(id: &str) -> Value {
    json!({
        "id": id, "object": "price", "active": true, "billing_scheme": "per_unit",
        "created": now(), "currency": "usd", "currency_options": null, "custom_unit_amount": null,
        "livemode": false, "lookup_key": null, "metadata": {}, "nickname": null,
        "product": "prod_switchboard", "recurring": {"interval": "month", "interval_count": 1,
            "meter": null, "trial_period_days": null, "usage_type": "licensed"},
        "tax_behavior": "unspecified", "tiers": null, "tiers_mode": null,
        "transform_quantity": null, "type": "recurring", "unit_amount": 2000,
        "unit_amount_decimal": "2000",
    })
}

/// An invoice object for `invoice.paid` / `invoice.payment_failed`.
pub fn invoice_json(
    id: &str,
    customer: &str,
    subscription: &str,
    amount_cents: i64,
    paid_at: Option<i64>,
) -> Value {
    json!({
        "id": id, "object": "invoice", "customer": customer, "currency": "usd",
        "amount_due": amount_cents, "amount_paid": if paid_at.is_some() { amount_cents } else { 0 },
        "status": if paid_at.is_some() { "paid" } else { "open" },
        "status_transitions": {"paid_at": paid_at, "finalized_at": now()},
        "parent": {"type": "subscription_details",
                   "subscription_details": {"subscription": subscription, "metadata": {}}},
        "livemode": false, "created": now(),
    })
}

/// A webhook event body as Stripe sends it.
pub fn event_json(id: &str, kind: &str, created: i64, object: Value) -> String {
    json!({
        "id": id, "object": "event", "api_version": "2026-09-30.endive", "created": created,
        "data": {"object": object}, "livemode": false, "pending_webhooks": 1,
        "request": {"id": null, "idempotency_key": null}, "type": kind,
    })
    .to_string()
}

/// `Stripe-Signature` for `payload` signed at `t` with each secret, exactly as
/// Stripe does: `t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<payload>")>`.
pub fn signature(payload: &str, t: i64, secrets: &[&str]) -> String {
    let mut header = format!("t={t}");
    for secret in secrets {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.{payload}").as_bytes());
        header.push_str(&format!(",v1={}", hex::encode(mac.finalize().into_bytes())));
    }
    header
}
