//! Billing against a fake Stripe: checkout, the portal, signed webhooks (and
//! every hostile variant of them), exactly-once application, order from the
//! objects' own times, the grace period, and revenue next to cost.

use chrono::Utc;
use futures::future::join_all;
use serde_json::{Value, json};
use switchboard::{
    billing::config::PriceConfig,
    config::{Config, Secret},
};
use uuid::Uuid;

use crate::{
    helpers::{TestApp, TestUser, error_code, spawn_app, spawn_app_with},
    mock_stripe::{
        MockStripe, PREVIOUS_WEBHOOK_SECRET, PRICE_PRO, PRICE_TEAM, SECRET_KEY, WEBHOOK_SECRET,
        checkout_session_json, event_json, invoice_json, signature, subscription_json,
    },
};

fn configure(cfg: &mut Config, stripe: &MockStripe) {
    cfg.stripe.secret_key = Some(Secret::new(SECRET_KEY));
    cfg.stripe.webhook_secret = Some(Secret::new(WEBHOOK_SECRET));
    cfg.billing.previous_webhook_secrets = vec![Secret::new(PREVIOUS_WEBHOOK_SECRET)];
    cfg.billing.api_base = stripe.url.clone();
    cfg.billing.prices = vec![
        PriceConfig {
            id: PRICE_PRO.into(),
            plan: "pro".into(),
            per_seat: false,
        },
        PriceConfig {
            id: PRICE_TEAM.into(),
            plan: "team".into(),
            per_seat: true,
        },
    ];
}

async fn billing_app(tweak: impl FnOnce(&mut Config)) -> (TestApp, MockStripe) {
    let stripe = MockStripe::start().await;
    let s = stripe.clone();
    let app = spawn_app_with(move |cfg| {
        configure(cfg, &s);
        tweak(cfg);
    })
    .await;
    assert!(
        switchboard::billing::config::problems(&app.config).is_empty(),
        "{:?}",
        switchboard::billing::config::problems(&app.config)
    );
    (app, stripe)
}

async fn workspace_of(app: &TestApp, user: &TestUser) -> Uuid {
    let (ws,): (Uuid,) = sqlx::query_as(
        "select workspace_id from workspace_members where user_id = $1 and role = 'owner'",
    )
    .bind(user.id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    ws
}

async fn plan_of(app: &TestApp, ws: Uuid) -> String {
    let (plan,): (String,) = sqlx::query_as("select plan from workspaces where id = $1")
        .bind(ws)
        .fetch_one(&app.db)
        .await
        .unwrap();
    plan
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(&app.db)
        .await
        .unwrap();
    n
}

/// Posts a webhook body with the given Stripe-Signature (None: no header).
async fn deliver(app: &TestApp, body: &str, sig: Option<String>) -> reqwest::Response {
    let mut req = app
        .client
        .post(app.url("/api/billing/webhook"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(sig) = sig {
        req = req.header("stripe-signature", sig);
    }
    req.send().await.unwrap()
}

/// Delivers as Stripe does now, and returns the outcome (asserting 200).
async fn deliver_signed(app: &TestApp, body: &str) -> String {
    let res = deliver(
        app,
        body,
        Some(signature(body, Utc::now().timestamp(), &[WEBHOOK_SECRET])),
    )
    .await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let ack: Value = res.json().await.unwrap();
    assert_eq!(ack["received"], true);
    ack["outcome"].as_str().unwrap().to_owned()
}

async fn post(app: &TestApp, user: &TestUser, path: &str, body: Value) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .bearer_auth(&user.access_token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn get(app: &TestApp, user: &TestUser, path: &str) -> reqwest::Response {
    app.client
        .get(app.url(path))
        .bearer_auth(&user.access_token)
        .send()
        .await
        .unwrap()
}

/// Buys `price` through checkout and returns the Stripe customer id.
async fn checkout(app: &TestApp, user: &TestUser, price: &str) -> String {
    let res = post(
        app,
        user,
        "/api/billing/create-checkout-session",
        json!({"priceId": price}),
    )
    .await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let body: Value = res.json().await.unwrap();
    assert!(
        body["url"]
            .as_str()
            .unwrap()
            .starts_with("https://checkout.stripe.test/")
    );
    let ws = workspace_of(app, user).await;
    let (customer,): (Option<String>,) =
        sqlx::query_as("select stripe_customer_id from workspaces where id = $1")
            .bind(ws)
            .fetch_one(&app.db)
            .await
            .unwrap();
    customer.expect("checkout links a customer")
}

/// Sends up to three chat messages; returns the statuses.
async fn send_three(app: &TestApp, user: &TestUser, chat: &str) -> Vec<u16> {
    let mut out = Vec::new();
    for i in 0..3 {
        let res = post(
            app,
            user,
            &format!("/api/chats/{chat}/messages"),
            json!({"content": format!("hello {i}")}),
        )
        .await;
        out.push(res.status().as_u16());
    }
    out
}

#[tokio::test]
async fn buying_pro_raises_limits_and_cancelling_returns_to_free() {
    let (app, stripe) = billing_app(|cfg| {
        cfg.plans.get_mut("free").unwrap().messages_per_minute = 1;
    })
    .await;
    let user = app.new_user().await;
    let other = app.new_user().await;
    let ws = workspace_of(&app, &user).await;
    let chat: Value = post(&app, &user, "/api/chats", json!({"title": "t"}))
        .await
        .json()
        .await
        .unwrap();
    let chat = chat["id"].as_str().unwrap().to_owned();

    // Free: one message a minute, so three in a row meet a 429.
    assert!(send_three(&app, &user, &chat).await.contains(&429));

    let plans: Value = app
        .client
        .get(app.url("/api/billing/plans"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let pro = plans["plans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["plan"] == "pro")
        .unwrap();
    assert_eq!(pro["prices"][0]["price_id"], PRICE_PRO);
    assert_eq!(pro["limits"]["messages_per_minute"], 60);
    assert_eq!(plans["plans"][0]["plan"], "free");

    let customer = checkout(&app, &user, PRICE_PRO).await;
    let created = stripe.requests("/v1/customers");
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].field("email"), Some(user.email.as_str()));
    assert_eq!(
        created[0].field("metadata[workspace_id]"),
        Some(ws.to_string().as_str())
    );
    assert!(created[0].idempotency_key.is_some());
    let session = &stripe.requests("/v1/checkout/sessions")[0];
    assert_eq!(session.field("customer"), Some(customer.as_str()));
    assert_eq!(session.field("mode"), Some("subscription"));
    assert_eq!(session.field("line_items[0][price]"), Some(PRICE_PRO));
    assert_eq!(session.field("line_items[0][quantity]"), Some("1"));
    assert_eq!(
        session.field("client_reference_id"),
        Some(ws.to_string().as_str())
    );
    assert_eq!(
        session.field("subscription_data[metadata][workspace_id]"),
        Some(ws.to_string().as_str())
    );
    // Nothing is bought until Stripe says so.
    assert_eq!(plan_of(&app, ws).await, "free");

    // The buyer pays; Stripe reports the completed session.
    stripe.put_subscription(subscription_json(
        "sub_pro_1",
        &customer,
        PRICE_PRO,
        "active",
        1,
        &ws.to_string(),
    ));
    let completed = checkout_session_json(
        "cs_done_1",
        Some(&customer),
        Some(&ws.to_string()),
        Some("sub_pro_1"),
        "complete",
    );
    let now = Utc::now().timestamp();
    assert_eq!(
        deliver_signed(
            &app,
            &event_json(
                "evt_checkout_1",
                "checkout.session.completed",
                now,
                completed
            )
        )
        .await,
        "applied"
    );
    assert_eq!(stripe.requests("/v1/subscriptions/sub_pro_1").len(), 1);
    assert_eq!(plan_of(&app, ws).await, "pro");

    let sub: Value = get(&app, &user, "/api/billing/subscription")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            sub["plan"].as_str(),
            sub["status"].as_str(),
            sub["seats"].as_i64()
        ),
        (Some("pro"), Some("active"), Some(1))
    );
    assert!(sub["current_period_end"].is_string());

    // The very next messages run under pro's 60 a minute.
    assert_eq!(send_three(&app, &user, &chat).await, vec![200, 200, 200]);
    // The other user's workspace is untouched.
    let other_ws = workspace_of(&app, &other).await;
    assert_eq!(plan_of(&app, other_ws).await, "free");
    let theirs: Value = get(&app, &other, "/api/billing/subscription")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(theirs["plan"], "free");
    assert!(theirs["status"].is_null() && theirs["stripe_customer_id"].is_null());

    // Cancelled in the portal: Stripe deletes the subscription.
    let cancelled = subscription_json(
        "sub_pro_1",
        &customer,
        PRICE_PRO,
        "canceled",
        1,
        &ws.to_string(),
    );
    assert_eq!(
        deliver_signed(
            &app,
            &event_json(
                "evt_cancel_1",
                "customer.subscription.deleted",
                now + 1,
                cancelled
            )
        )
        .await,
        "applied"
    );
    assert_eq!(plan_of(&app, ws).await, "free");
    let sub: Value = get(&app, &user, "/api/billing/subscription")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (sub["plan"].as_str(), sub["status"].as_str()),
        (Some("free"), Some("canceled"))
    );
    assert!(send_three(&app, &user, &chat).await.contains(&429));
}

#[tokio::test]
async fn hostile_webhooks_are_refused_and_change_nothing() {
    let (app, _stripe) = billing_app(|_| {}).await;
    let user = app.new_user().await;
    let ws = workspace_of(&app, &user).await;
    let sub = subscription_json("sub_h", "cus_h", PRICE_PRO, "active", 1, &ws.to_string());
    let body = event_json(
        "evt_hostile",
        "customer.subscription.created",
        Utc::now().timestamp(),
        sub.clone(),
    );
    let now = Utc::now().timestamp();
    let forged = format!("t={now},v1={}", hex::encode(rand::random::<[u8; 32]>()));
    let tampered = body.replace("\"active\"", "\"trialing\"");
    let malformed = "{\"id\": \"evt_bad\", \"type\": ";
    let missing_fields = event_json(
        "evt_partial",
        "customer.subscription.updated",
        now,
        json!({"id": "sub_h"}),
    );
    let cases: Vec<(&str, String, Option<String>)> = vec![
        ("no signature", body.clone(), None),
        ("forged", body.clone(), Some(forged)),
        (
            "wrong secret",
            body.clone(),
            Some(signature(
                &body,
                now,
                &["whsec_attacker_0123456789abcdefghijklmnop"],
            )),
        ),
        (
            "stale",
            body.clone(),
            Some(signature(&body, now - 301, &[WEBHOOK_SECRET])),
        ),
        (
            "from the future",
            body.clone(),
            Some(signature(&body, now + 3600, &[WEBHOOK_SECRET])),
        ),
        (
            "tampered body",
            tampered,
            Some(signature(&body, now, &[WEBHOOK_SECRET])),
        ),
        ("garbage header", body.clone(), Some("t=abc,v1=xyz".into())),
        (
            "malformed json",
            malformed.into(),
            Some(signature(malformed, now, &[WEBHOOK_SECRET])),
        ),
        (
            "missing fields",
            missing_fields.clone(),
            Some(signature(&missing_fields, now, &[WEBHOOK_SECRET])),
        ),
    ];
    for (what, body, sig) in cases {
        let res = deliver(&app, &body, sig).await;
        assert_eq!(res.status(), 400, "{what}");
        assert_eq!(error_code(res).await, "invalid_request", "{what}");
    }
    let huge = "x".repeat(app.config.server.body_limit_bytes + 1);
    let res = deliver(&app, &huge, Some(signature(&huge, now, &[WEBHOOK_SECRET]))).await;
    assert_eq!(res.status(), 413);
    assert_eq!(count(&app, "select count(*) from stripe_events").await, 0);
    assert_eq!(count(&app, "select count(*) from subscriptions").await, 0);
    assert_eq!(plan_of(&app, ws).await, "free");

    // Secret rotation: the previous secret still verifies, and a header with
    // one v1 per secret (one of them unknown to us) is accepted.
    let sig = signature(&body, now, &[PREVIOUS_WEBHOOK_SECRET]);
    let res = deliver(&app, &body, Some(sig)).await;
    assert_eq!(res.status(), 200);
    assert_eq!(plan_of(&app, ws).await, "pro");
    let next = event_json("evt_rotated", "customer.subscription.updated", now + 1, sub);
    let sig = signature(
        &next,
        now,
        &["whsec_some_other_secret_0123456789abcdefgh", WEBHOOK_SECRET],
    );
    let res = deliver(&app, &next, Some(sig)).await;
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn duplicate_replayed_and_concurrent_deliveries_apply_once() {
    let (app, _stripe) = billing_app(|_| {}).await;
    let user = app.new_user().await;
    let ws = workspace_of(&app, &user).await;
    let now = Utc::now().timestamp();
    let sub = subscription_json("sub_d", "cus_d", PRICE_PRO, "active", 1, &ws.to_string());
    deliver_signed(
        &app,
        &event_json("evt_d_sub", "customer.subscription.created", now, sub),
    )
    .await;

    let paid = event_json(
        "evt_d_paid",
        "invoice.paid",
        now,
        invoice_json("in_d", "cus_d", "sub_d", 2000, Some(now)),
    );
    let sig = signature(&paid, now, &[WEBHOOK_SECRET]);
    let outcomes = join_all((0..10).map(|_| {
        let (app, paid, sig) = (&app, paid.clone(), sig.clone());
        async move {
            let res = deliver(app, &paid, Some(sig)).await;
            assert_eq!(res.status(), 200);
            res.json::<Value>().await.unwrap()["outcome"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    }))
    .await;
    assert_eq!(
        outcomes.iter().filter(|o| *o == "applied").count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(outcomes.iter().filter(|o| *o == "duplicate").count(), 9);

    // Replayed later with a fresh signature: still once.
    assert_eq!(deliver_signed(&app, &paid).await, "duplicate");
    // The same invoice under another event id is counted once too.
    let again = event_json(
        "evt_d_paid_2",
        "invoice.paid",
        now,
        invoice_json("in_d", "cus_d", "sub_d", 2000, Some(now)),
    );
    deliver_signed(&app, &again).await;
    assert_eq!(count(&app, "select count(*) from billing_revenue").await, 1);
    assert_eq!(
        count(
            &app,
            "select sum(amount_micros)::bigint from billing_revenue"
        )
        .await,
        20_000_000
    );
    assert_eq!(
        count(
            &app,
            "select count(*) from stripe_events where id = 'evt_d_paid'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn events_out_of_order_leave_the_newest_state() {
    let (app, _stripe) = billing_app(|_| {}).await;
    let t0 = Utc::now().timestamp();

    // A: cancelled, but the deletion arrives first.
    let a = app.new_user().await;
    let ws_a = workspace_of(&app, &a).await;
    let sub =
        |status: &str| subscription_json("sub_a", "cus_a", PRICE_PRO, status, 1, &ws_a.to_string());
    let ev = |id: &str, kind: &str, t: i64, status: &str| event_json(id, kind, t, sub(status));
    assert_eq!(
        deliver_signed(
            &app,
            &ev(
                "evt_a3",
                "customer.subscription.deleted",
                t0 + 20,
                "canceled"
            )
        )
        .await,
        "applied"
    );
    assert_eq!(
        deliver_signed(
            &app,
            &ev("evt_a2", "customer.subscription.updated", t0 + 10, "active")
        )
        .await,
        "stale"
    );
    assert_eq!(
        deliver_signed(
            &app,
            &ev("evt_a1", "customer.subscription.created", t0, "incomplete")
        )
        .await,
        "stale"
    );
    assert_eq!(plan_of(&app, ws_a).await, "free");

    // B: active, with the older `incomplete` arriving last.
    let b = app.new_user().await;
    let ws_b = workspace_of(&app, &b).await;
    let sub_b = |status: &str| {
        subscription_json("sub_b", "cus_b", PRICE_TEAM, status, 4, &ws_b.to_string())
    };
    assert_eq!(
        deliver_signed(
            &app,
            &event_json(
                "evt_b2",
                "customer.subscription.updated",
                t0 + 10,
                sub_b("active")
            )
        )
        .await,
        "applied"
    );
    assert_eq!(
        deliver_signed(
            &app,
            &event_json(
                "evt_b1",
                "customer.subscription.created",
                t0,
                sub_b("incomplete")
            )
        )
        .await,
        "stale"
    );
    assert_eq!(plan_of(&app, ws_b).await, "team");
    let view: Value = get(&app, &b, "/api/billing/subscription")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (view["status"].as_str(), view["seats"].as_i64()),
        (Some("active"), Some(4))
    );

    // A payment that came after a failure, delivered before it: no grace clock runs.
    let paid = invoice_json("in_b", "cus_b", "sub_b", 4000, Some(t0 + 10));
    let failed = invoice_json("in_b0", "cus_b", "sub_b", 4000, None);
    deliver_signed(
        &app,
        &event_json("evt_b_paid", "invoice.paid", t0 + 10, paid),
    )
    .await;
    deliver_signed(
        &app,
        &event_json("evt_b_failed", "invoice.payment_failed", t0 + 5, failed),
    )
    .await;
    let (failed_at,): (Option<chrono::DateTime<Utc>>,) = sqlx::query_as(
        "select payment_failed_at from subscriptions where stripe_subscription_id = 'sub_b'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(failed_at, None);
    assert_eq!(plan_of(&app, ws_b).await, "team");
    // A's workspace was never B's business, nor B's A's.
    assert_eq!(plan_of(&app, ws_a).await, "free");
}

#[tokio::test]
async fn unknown_event_types_are_recorded_with_200() {
    let (app, _stripe) = billing_app(|_| {}).await;
    let body = event_json(
        "evt_unknown",
        "charge.refunded",
        Utc::now().timestamp(),
        json!({"id": "ch_1"}),
    );
    assert_eq!(deliver_signed(&app, &body).await, "ignored");
    assert_eq!(count(&app, "select count(*) from stripe_events where id = 'evt_unknown' and outcome = 'ignored' and processed_at is not null").await, 1);
    assert_eq!(deliver_signed(&app, &body).await, "duplicate");
    // A subscription of no known workspace is recorded, not applied.
    let orphan = subscription_json("sub_o", "cus_nobody", PRICE_PRO, "active", 1, "not-a-uuid");
    assert_eq!(
        deliver_signed(
            &app,
            &event_json(
                "evt_orphan",
                "customer.subscription.created",
                Utc::now().timestamp(),
                orphan
            )
        )
        .await,
        "unmatched"
    );
    assert_eq!(count(&app, "select count(*) from subscriptions").await, 0);
}

#[tokio::test]
async fn only_owners_and_admins_manage_billing() {
    let (app, stripe) = billing_app(|_| {}).await;
    let owner = app.new_user().await;
    let member = app.new_user().await;
    let stranger = app.new_user().await;
    let ws = workspace_of(&app, &owner).await;
    sqlx::query(
        "insert into workspace_members (workspace_id, user_id, role) values ($1, $2, 'member')",
    )
    .bind(ws)
    .bind(member.id)
    .execute(&app.db)
    .await
    .unwrap();
    let buy = json!({"priceId": PRICE_PRO, "workspace_id": ws});

    let res = post(
        &app,
        &member,
        "/api/billing/create-checkout-session",
        buy.clone(),
    )
    .await;
    assert_eq!(res.status(), 403);
    assert_eq!(error_code(res).await, "forbidden");
    assert_eq!(
        post(
            &app,
            &member,
            "/api/billing/portal-session",
            json!({"workspace_id": ws})
        )
        .await
        .status(),
        403
    );
    assert_eq!(
        post(
            &app,
            &stranger,
            "/api/billing/create-checkout-session",
            buy.clone()
        )
        .await
        .status(),
        404
    );
    assert_eq!(
        get(
            &app,
            &stranger,
            &format!("/api/billing/subscription?workspace_id={ws}")
        )
        .await
        .status(),
        404
    );
    assert_eq!(
        get(
            &app,
            &member,
            &format!("/api/billing/subscription?workspace_id={ws}")
        )
        .await
        .status(),
        200
    );
    assert!(
        stripe.requests("/v1/customers").is_empty()
            && stripe.requests("/v1/checkout/sessions").is_empty()
    );

    let res = app
        .client
        .post(app.url("/api/billing/create-checkout-session"))
        .json(&buy)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    for (body, what) in [
        (json!({"priceId": "price_unknown"}), "priceId"),
        (json!({"priceId": PRICE_TEAM, "seats": 0}), "seats"),
        (json!({"priceId": PRICE_TEAM, "seats": 10_001}), "seats"),
        (json!({"priceId": PRICE_PRO, "surprise": 1}), "surprise"),
        (json!({}), "priceId"),
        (json!({"priceId": 7}), "priceId"),
    ] {
        let res = post(&app, &owner, "/api/billing/create-checkout-session", body).await;
        assert_eq!(res.status(), 400, "{what}");
        let msg: Value = res.json().await.unwrap();
        assert!(
            msg["error"]["message"].as_str().unwrap().contains(what),
            "{msg}"
        );
    }
    let res = app
        .client
        .post(app.url("/api/billing/create-checkout-session"))
        .bearer_auth(&owner.access_token)
        .body("{")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);

    // No customer yet: no portal.
    assert_eq!(
        post(&app, &owner, "/api/billing/portal-session", json!({}))
            .await
            .status(),
        404
    );
    // Promoted to admin, the member may buy; a per-seat price counts members.
    sqlx::query(
        "update workspace_members set role = 'admin' where user_id = $1 and workspace_id = $2",
    )
    .bind(member.id)
    .bind(ws)
    .execute(&app.db)
    .await
    .unwrap();
    let res = post(
        &app,
        &member,
        "/api/billing/create-checkout-session",
        json!({"priceId": PRICE_TEAM, "workspace_id": ws}),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        stripe.requests("/v1/checkout/sessions")[0].field("line_items[0][quantity]"),
        Some("2")
    );
    let res = post(
        &app,
        &owner,
        "/api/billing/create-checkout-session",
        json!({"priceId": PRICE_TEAM, "seats": 5}),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        stripe.requests("/v1/checkout/sessions")[1].field("line_items[0][quantity]"),
        Some("5")
    );
    // The customer was created once and reused.
    assert_eq!(stripe.requests("/v1/customers").len(), 1);

    let res = app
        .client
        .post(app.url("/api/billing/portal-session"))
        .bearer_auth(&owner.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let portal: Value = res.json().await.unwrap();
    assert!(
        portal["url"]
            .as_str()
            .unwrap()
            .starts_with("https://billing.stripe.test/")
    );
    let sent = &stripe.requests("/v1/billing_portal/sessions")[0];
    assert_eq!(
        sent.field("customer"),
        stripe.requests("/v1/checkout/sessions")[0].field("customer")
    );
    assert!(
        sent.field("return_url")
            .unwrap()
            .starts_with(&app.config.server.frontend_url)
    );
    // The stranger's own workspace has no customer.
    assert_eq!(
        post(&app, &stranger, "/api/billing/portal-session", json!({}))
            .await
            .status(),
        404
    );
}

#[tokio::test]
async fn a_failed_payment_drops_to_free_after_the_grace_period() {
    let (app, _stripe) = billing_app(|cfg| {
        cfg.billing.grace_period_secs = 2;
        cfg.billing.sweep_interval_secs = 1;
    })
    .await;
    let user = app.new_user().await;
    let ws = workspace_of(&app, &user).await;
    let now = Utc::now().timestamp();
    let sub = subscription_json("sub_g", "cus_g", PRICE_PRO, "active", 1, &ws.to_string());
    deliver_signed(
        &app,
        &event_json("evt_g1", "customer.subscription.created", now, sub),
    )
    .await;
    assert_eq!(plan_of(&app, ws).await, "pro");

    let failed = invoice_json("in_g1", "cus_g", "sub_g", 2000, None);
    assert_eq!(
        deliver_signed(
            &app,
            &event_json("evt_g2", "invoice.payment_failed", now, failed)
        )
        .await,
        "applied"
    );
    // Within the grace period the plan holds.
    assert_eq!(plan_of(&app, ws).await, "pro");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while plan_of(&app, ws).await != "free" {
        assert!(
            std::time::Instant::now() < deadline,
            "the sweep never reset the plan"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Paid at last: the plan comes back at once.
    let later = Utc::now().timestamp() + 1;
    let paid = invoice_json("in_g1", "cus_g", "sub_g", 2000, Some(later));
    assert_eq!(
        deliver_signed(&app, &event_json("evt_g3", "invoice.paid", later, paid)).await,
        "applied"
    );
    assert_eq!(plan_of(&app, ws).await, "pro");
}

#[tokio::test]
async fn margin_shows_revenue_minus_cost() {
    let (app, _stripe) = billing_app(|_| {}).await;
    let user = app.new_user().await;
    let other = app.new_user().await;
    let ws = workspace_of(&app, &user).await;
    let other_ws = workspace_of(&app, &other).await;
    for (w, u, cost) in [
        (ws, user.id, 2_500_000_i64),
        (other_ws, other.id, 1_000_000),
    ] {
        sqlx::query("insert into usage_events (id, workspace_id, user_id, provider, model, input_tokens, output_tokens, cost_micros)
                     values ($1, $2, $3, 'simulated', 'sim-1', 10, 10, $4)")
            .bind(Uuid::now_v7()).bind(w).bind(u).bind(cost)
            .execute(&app.db).await.unwrap();
    }
    let now = Utc::now().timestamp();
    let sub = subscription_json("sub_m", "cus_m", PRICE_PRO, "active", 1, &ws.to_string());
    deliver_signed(
        &app,
        &event_json("evt_m1", "customer.subscription.created", now, sub),
    )
    .await;
    let paid = invoice_json("in_m", "cus_m", "sub_m", 2000, Some(now));
    deliver_signed(&app, &event_json("evt_m2", "invoice.paid", now, paid)).await;

    for period in ["day", "month"] {
        let m: Value = get(
            &app,
            &user,
            &format!("/api/analytics/margin?period={period}"),
        )
        .await
        .json()
        .await
        .unwrap();
        assert_eq!(
            (
                m["revenue_micros"].as_i64(),
                m["cost_micros"].as_i64(),
                m["margin_micros"].as_i64()
            ),
            (Some(20_000_000), Some(2_500_000), Some(17_500_000)),
            "{m}"
        );
        assert_eq!(m["periods"][0]["margin_micros"], 17_500_000);
        assert_eq!(m["workspace_id"], ws.to_string());
    }
    let theirs: Value = get(&app, &other, "/api/analytics/margin")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            theirs["revenue_micros"].as_i64(),
            theirs["cost_micros"].as_i64()
        ),
        (Some(0), Some(1_000_000))
    );
    for bad in ["period=week", "days=0", "days=800", "days=x"] {
        assert_eq!(
            get(&app, &user, &format!("/api/analytics/margin?{bad}"))
                .await
                .status(),
            400,
            "{bad}"
        );
    }
    assert_eq!(
        get(
            &app,
            &other,
            &format!("/api/analytics/margin?workspace_id={ws}")
        )
        .await
        .status(),
        404
    );

    // The operator's view: admins only, worst margin first.
    assert_eq!(
        get(&app, &user, "/api/analytics/margin/workspaces")
            .await
            .status(),
        403
    );
    sqlx::query("update users set is_admin = true where id = $1")
        .bind(user.id)
        .execute(&app.db)
        .await
        .unwrap();
    let worst: Value = get(&app, &user, "/api/analytics/margin/workspaces")
        .await
        .json()
        .await
        .unwrap();
    let rows = worst["workspaces"].as_array().unwrap();
    assert_eq!(rows[0]["workspace_id"], other_ws.to_string());
    assert_eq!(rows[0]["margin_micros"], -1_000_000);
    assert_eq!(rows[1]["workspace_id"], ws.to_string());
    assert_eq!(rows[1]["margin_micros"], 17_500_000);
    assert_eq!(
        get(&app, &user, "/api/analytics/margin/workspaces?limit=0")
            .await
            .status(),
        400
    );
    assert_eq!(
        app.client
            .get(app.url("/api/analytics/margin"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
}

#[tokio::test]
async fn billing_without_stripe_settings_answers_503() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let res = post(
        &app,
        &user,
        "/api/billing/create-checkout-session",
        json!({"priceId": PRICE_PRO}),
    )
    .await;
    // No price is on sale either.
    assert_eq!(res.status(), 400);
    let body = event_json("evt_x", "invoice.paid", Utc::now().timestamp(), json!({}));
    let res = deliver(
        &app,
        &body,
        Some(signature(&body, Utc::now().timestamp(), &[WEBHOOK_SECRET])),
    )
    .await;
    assert_eq!(res.status(), 503);
    assert_eq!(error_code(res).await, "unavailable");
    let plans: Value = app
        .client
        .get(app.url("/api/billing/plans"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(plans["plans"].as_array().unwrap().len(), 3);
    let doc: Value = app
        .client
        .get(app.url("/api/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in [
        "/api/billing/webhook",
        "/api/billing/create-checkout-session",
        "/api/analytics/margin",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from openapi"
        );
    }
}
