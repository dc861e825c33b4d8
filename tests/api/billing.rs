//! Billing against a fake Stripe: plans, checkout and the portal, who may use
//! them, and a purchase changing the limits the next message runs under.
//! Webhooks are in `billing_webhooks.rs`, margin in `billing_margin.rs`; the
//! helpers here serve all three.

use chrono::Utc;
use serde_json::{Value, json};
use switchboard::config::{Config, PriceConfig, Secret};
use uuid::Uuid;

use crate::{
    helpers::{TestApp, TestUser, error_code, spawn_app, spawn_app_with},
    mock_stripe::{
        MockStripe, PREVIOUS_WEBHOOK_SECRET, PRICE_PRO, PRICE_TEAM, SECRET_KEY, WEBHOOK_SECRET,
        checkout_session_json, event_json, signature, subscription_json,
    },
};

pub(crate) fn configure(cfg: &mut Config, stripe: &MockStripe) {
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

pub(crate) async fn billing_app(tweak: impl FnOnce(&mut Config)) -> (TestApp, MockStripe) {
    let stripe = MockStripe::start().await;
    let s = stripe.clone();
    let app = spawn_app_with(move |cfg| {
        configure(cfg, &s);
        tweak(cfg);
    })
    .await;
    let problems = app.config.problems();
    assert!(
        !problems
            .iter()
            .any(|p| p.contains("billing") || p.contains("STRIPE")),
        "{problems:?}"
    );
    (app, stripe)
}

pub(crate) async fn plan_of(app: &TestApp, ws: Uuid) -> String {
    let (plan,): (String,) = sqlx::query_as("select plan from workspaces where id = $1")
        .bind(ws)
        .fetch_one(&app.db)
        .await
        .unwrap();
    plan
}

pub(crate) async fn count(app: &TestApp, sql: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(&app.db)
        .await
        .unwrap();
    n
}

/// Posts a webhook body with the given Stripe-Signature (None: no header).
pub(crate) async fn deliver(app: &TestApp, body: &str, sig: Option<String>) -> reqwest::Response {
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
pub(crate) async fn deliver_signed(app: &TestApp, body: &str) -> String {
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

pub(crate) async fn post(
    app: &TestApp,
    user: &TestUser,
    path: &str,
    body: Value,
) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .bearer_auth(&user.access_token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

pub(crate) async fn get(app: &TestApp, user: &TestUser, path: &str) -> reqwest::Response {
    app.client
        .get(app.url(path))
        .bearer_auth(&user.access_token)
        .send()
        .await
        .unwrap()
}

/// Buys `price` through checkout and returns the Stripe customer id.
pub(crate) async fn checkout(app: &TestApp, user: &TestUser, price: &str) -> String {
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
    let ws = app.workspace_of(user).await;
    let (customer,): (Option<String>,) =
        sqlx::query_as("select stripe_customer_id from workspaces where id = $1")
            .bind(ws)
            .fetch_one(&app.db)
            .await
            .unwrap();
    customer.expect("checkout links a customer")
}

/// Sends up to three chat messages; returns the statuses.
pub(crate) async fn send_three(app: &TestApp, user: &TestUser, chat: &str) -> Vec<u16> {
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

/// The JSON body of a response.
pub(crate) async fn body(res: reqwest::Response) -> Value {
    res.json().await.unwrap()
}

/// Asserts what checkout sent Stripe: a customer for the workspace, then a
/// subscription session naming the workspace three ways.
fn assert_checkout_sent(stripe: &MockStripe, user: &TestUser, ws: Uuid, customer: &str) {
    let ws = ws.to_string();
    let created = stripe.requests("/v1/customers");
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].field("email"), Some(user.email.as_str()));
    assert_eq!(
        created[0].field("metadata[workspace_id]"),
        Some(ws.as_str())
    );
    assert!(created[0].idempotency_key.is_some());
    let session = &stripe.requests("/v1/checkout/sessions")[0];
    for (field, want) in [
        ("customer", customer),
        ("mode", "subscription"),
        ("line_items[0][price]", PRICE_PRO),
        ("line_items[0][quantity]", "1"),
        ("client_reference_id", &ws),
        ("subscription_data[metadata][workspace_id]", &ws),
    ] {
        assert_eq!(session.field(field), Some(want), "{field}");
    }
}

#[tokio::test]
async fn plans_list_prices_with_their_limits() {
    let (app, _stripe) = billing_app(|_| {}).await;
    let plans = body(
        app.client
            .get(app.url("/api/billing/plans"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let plans = plans["plans"].as_array().unwrap();
    let names: Vec<&str> = plans.iter().map(|p| p["plan"].as_str().unwrap()).collect();
    assert_eq!(names, ["free", "pro", "team"]);
    assert_eq!(plans[0]["prices"], json!([]));
    assert_eq!(
        plans[1]["prices"],
        json!([{"price_id": PRICE_PRO, "per_seat": false}])
    );
    assert_eq!(plans[1]["limits"]["messages_per_minute"], 60);
    assert_eq!(plans[2]["prices"][0]["per_seat"], true);
    assert_eq!(plans[2]["limits"]["user_daily_budget_micros"], 10_000_000);
}

#[tokio::test]
async fn buying_pro_raises_limits_and_cancelling_returns_to_free() {
    let (app, stripe) = billing_app(|cfg| {
        cfg.plans.get_mut("free").unwrap().messages_per_minute = 1;
    })
    .await;
    let (user, other) = (app.new_user().await, app.new_user().await);
    let ws = app.workspace_of(&user).await;
    let chat = body(post(&app, &user, "/api/chats", json!({"title": "t"})).await).await;
    let chat = chat["id"].as_str().unwrap().to_owned();
    // Free: one message a minute, so three in a row meet a 429.
    assert!(send_three(&app, &user, &chat).await.contains(&429));

    let customer = checkout(&app, &user, PRICE_PRO).await;
    assert_checkout_sent(&stripe, &user, ws, &customer);
    // Nothing is bought until Stripe says so.
    assert_eq!(plan_of(&app, ws).await, "free");

    // The buyer pays; Stripe reports the completed session.
    let ws_id = ws.to_string();
    stripe.put_subscription(subscription_json(
        "sub_pro_1",
        &customer,
        PRICE_PRO,
        "active",
        1,
        &ws_id,
    ));
    let done = checkout_session_json(
        "cs_1",
        Some(&customer),
        Some(&ws_id),
        Some("sub_pro_1"),
        "complete",
    );
    let now = Utc::now().timestamp();
    let ev = event_json("evt_checkout_1", "checkout.session.completed", now, done);
    assert_eq!(deliver_signed(&app, &ev).await, "applied");
    assert_eq!(stripe.requests("/v1/subscriptions/sub_pro_1").len(), 1);
    assert_eq!(plan_of(&app, ws).await, "pro");
    let sub = body(get(&app, &user, "/api/billing/subscription").await).await;
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
    assert_eq!(plan_of(&app, app.workspace_of(&other).await).await, "free");
    let theirs = body(get(&app, &other, "/api/billing/subscription").await).await;
    assert_eq!(theirs["plan"], "free");
    assert!(theirs["status"].is_null() && theirs["stripe_customer_id"].is_null());

    // Cancelled in the portal: Stripe deletes the subscription.
    let gone = subscription_json("sub_pro_1", &customer, PRICE_PRO, "canceled", 1, &ws_id);
    let ev = event_json(
        "evt_cancel_1",
        "customer.subscription.deleted",
        now + 1,
        gone,
    );
    assert_eq!(deliver_signed(&app, &ev).await, "applied");
    assert_eq!(plan_of(&app, ws).await, "free");
    let sub = body(get(&app, &user, "/api/billing/subscription").await).await;
    assert_eq!(
        (sub["plan"].as_str(), sub["status"].as_str()),
        (Some("free"), Some("canceled"))
    );
    assert!(send_three(&app, &user, &chat).await.contains(&429));
}

/// An owner, a plain member of the owner's workspace, and a stranger.
async fn owner_member_stranger(app: &TestApp) -> (TestUser, TestUser, TestUser, Uuid) {
    let (owner, member, stranger) = (
        app.new_user().await,
        app.new_user().await,
        app.new_user().await,
    );
    let ws = app.workspace_of(&owner).await;
    sqlx::query(
        "insert into workspace_members (workspace_id, user_id, role) values ($1, $2, 'member')",
    )
    .bind(ws)
    .bind(member.id)
    .execute(&app.db)
    .await
    .unwrap();
    (owner, member, stranger, ws)
}

#[tokio::test]
async fn members_and_strangers_cannot_buy_for_a_workspace() {
    let (app, stripe) = billing_app(|_| {}).await;
    let (_owner, member, stranger, ws) = owner_member_stranger(&app).await;
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
    let res = post(
        &app,
        &member,
        "/api/billing/portal-session",
        json!({"workspace_id": ws}),
    )
    .await;
    assert_eq!(res.status(), 403);
    let res = post(
        &app,
        &stranger,
        "/api/billing/create-checkout-session",
        buy.clone(),
    )
    .await;
    assert_eq!(res.status(), 404);
    let path = format!("/api/billing/subscription?workspace_id={ws}");
    assert_eq!(get(&app, &stranger, &path).await.status(), 404);
    assert_eq!(get(&app, &member, &path).await.status(), 200);
    let res = app
        .client
        .post(app.url("/api/billing/create-checkout-session"))
        .json(&buy)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(
        app.client
            .get(app.url("/api/billing/subscription"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert!(stripe.requests("/v1/customers").is_empty());
    assert!(stripe.requests("/v1/checkout/sessions").is_empty());
}

#[tokio::test]
async fn checkout_refuses_bad_input_naming_it() {
    let (app, stripe) = billing_app(|_| {}).await;
    let owner = app.new_user().await;
    for (input, what) in [
        (json!({"priceId": "price_unknown"}), "priceId"),
        (json!({"priceId": PRICE_TEAM, "seats": 0}), "seats"),
        (json!({"priceId": PRICE_TEAM, "seats": 10_001}), "seats"),
        (json!({"priceId": PRICE_PRO, "surprise": 1}), "surprise"),
        (json!({}), "priceId"),
        (json!({"priceId": 7}), "priceId"),
        (
            json!({"priceId": PRICE_PRO, "workspace_id": "nope"}),
            "workspace",
        ),
    ] {
        let res = post(&app, &owner, "/api/billing/create-checkout-session", input).await;
        assert_eq!(res.status(), 400, "{what}");
        let msg = body(res).await;
        assert!(
            msg["error"]["message"].as_str().unwrap().contains(what),
            "{msg}"
        );
    }
    let res = app
        .client
        .post(app.url("/api/billing/create-checkout-session"))
        .bearer_auth(&owner.access_token)
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let res = post(&app, &owner, "/api/billing/portal-session", json!({"x": 1})).await;
    assert_eq!(res.status(), 400);
    assert!(stripe.requests("/v1/checkout/sessions").is_empty());
}

#[tokio::test]
async fn admins_buy_per_seat_reuse_the_customer_and_open_the_portal() {
    let (app, stripe) = billing_app(|_| {}).await;
    let (owner, member, stranger, ws) = owner_member_stranger(&app).await;
    // No customer yet: no portal.
    assert_eq!(
        post(&app, &owner, "/api/billing/portal-session", json!({}))
            .await
            .status(),
        404
    );
    sqlx::query(
        "update workspace_members set role = 'admin' where user_id = $1 and workspace_id = $2",
    )
    .bind(member.id)
    .bind(ws)
    .execute(&app.db)
    .await
    .unwrap();
    // A per-seat price without seats counts the members.
    let team = json!({"priceId": PRICE_TEAM, "workspace_id": ws});
    let res = post(&app, &member, "/api/billing/create-checkout-session", team).await;
    assert_eq!(res.status(), 200);
    let sessions = || stripe.requests("/v1/checkout/sessions");
    assert_eq!(sessions()[0].field("line_items[0][quantity]"), Some("2"));
    let five = json!({"priceId": PRICE_TEAM, "seats": 5});
    assert_eq!(
        post(&app, &owner, "/api/billing/create-checkout-session", five)
            .await
            .status(),
        200
    );
    assert_eq!(sessions()[1].field("line_items[0][quantity]"), Some("5"));
    // The customer was created once and reused.
    assert_eq!(stripe.requests("/v1/customers").len(), 1);
    assert_eq!(
        sessions()[0].field("customer"),
        sessions()[1].field("customer")
    );

    // The portal, with no body at all.
    let res = app
        .client
        .post(app.url("/api/billing/portal-session"))
        .bearer_auth(&owner.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let portal = body(res).await;
    assert!(
        portal["url"]
            .as_str()
            .unwrap()
            .starts_with("https://billing.stripe.test/")
    );
    let sent = &stripe.requests("/v1/billing_portal/sessions")[0];
    assert_eq!(sent.field("customer"), sessions()[0].field("customer"));
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
async fn billing_without_stripe_settings_is_unavailable() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    // No price is on sale.
    let buy = json!({"priceId": PRICE_PRO});
    assert_eq!(
        post(&app, &user, "/api/billing/create-checkout-session", buy)
            .await
            .status(),
        400
    );
    let now = Utc::now().timestamp();
    let ev = event_json("evt_x", "invoice.paid", now, json!({}));
    let res = deliver(&app, &ev, Some(signature(&ev, now, &[WEBHOOK_SECRET]))).await;
    assert_eq!(res.status(), 503);
    assert_eq!(error_code(res).await, "unavailable");
    let plans = body(
        app.client
            .get(app.url("/api/billing/plans"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(plans["plans"].as_array().unwrap().len(), 3);
    let doc = body(
        app.client
            .get(app.url("/api/openapi.json"))
            .send()
            .await
            .unwrap(),
    )
    .await;
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

#[tokio::test]
async fn stripe_down_is_503_and_links_nothing() {
    let (app, _stripe) = billing_app(|cfg| {
        // Nothing listens here.
        cfg.billing.api_base = "http://127.0.0.1:9".into();
        cfg.billing.api_timeout_secs = 2;
    })
    .await;
    let user = app.new_user().await;
    let buy = json!({"priceId": PRICE_PRO});
    let res = post(&app, &user, "/api/billing/create-checkout-session", buy).await;
    assert_eq!(res.status(), 503);
    let msg = body(res).await;
    assert_eq!(msg["error"]["code"], "unavailable");
    assert!(!msg.to_string().contains(SECRET_KEY));
    assert_eq!(
        count(
            &app,
            "select count(*) from workspaces where stripe_customer_id is not null"
        )
        .await,
        0
    );
}
