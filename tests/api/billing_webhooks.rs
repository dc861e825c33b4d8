//! Stripe's webhook against the real server: hostile deliveries refused with
//! nothing changed, secret rotation, exactly-once application under replay and
//! concurrency, order taken from the objects' own times, unknown types, and a
//! failed payment's grace period running out.

use chrono::Utc;
use futures::future::join_all;
use serde_json::json;

use crate::{
    billing::{billing_app, body, count, deliver, deliver_signed, get, plan_of},
    helpers::error_code,
    mock_stripe::{
        PREVIOUS_WEBHOOK_SECRET, PRICE_PRO, PRICE_TEAM, WEBHOOK_SECRET, event_json, invoice_json,
        signature, subscription_json,
    },
};

#[tokio::test]
async fn hostile_webhooks_are_refused_and_change_nothing() {
    let (app, _stripe) = billing_app(|_| {}).await;
    let user = app.new_user().await;
    let ws = app.workspace_of(&user).await;
    let now = Utc::now().timestamp();
    let sub = subscription_json("sub_h", "cus_h", PRICE_PRO, "active", 1, &ws.to_string());
    let ev = event_json("evt_hostile", "customer.subscription.created", now, sub);
    let signed = |body: &str, t: i64, secret: &str| Some(signature(body, t, &[secret]));
    let forged = format!("t={now},v1={}", hex::encode(rand::random::<[u8; 32]>()));
    let tampered = ev.replace("\"active\"", "\"trialing\"");
    let malformed = "{\"id\": \"evt_bad\", \"type\": ";
    let partial = event_json(
        "evt_part",
        "customer.subscription.updated",
        now,
        json!({"id": "sub_h"}),
    );
    let attacker = "whsec_attacker_0123456789abcdefghijklmnop";
    let cases: Vec<(&str, &str, Option<String>)> = vec![
        ("no signature", &ev, None),
        ("forged", &ev, Some(forged)),
        ("wrong secret", &ev, signed(&ev, now, attacker)),
        ("stale", &ev, signed(&ev, now - 301, WEBHOOK_SECRET)),
        (
            "from the future",
            &ev,
            signed(&ev, now + 3600, WEBHOOK_SECRET),
        ),
        ("tampered body", &tampered, signed(&ev, now, WEBHOOK_SECRET)),
        ("garbage header", &ev, Some("t=abc,v1=xyz".into())),
        (
            "malformed json",
            malformed,
            signed(malformed, now, WEBHOOK_SECRET),
        ),
        (
            "missing fields",
            &partial,
            signed(&partial, now, WEBHOOK_SECRET),
        ),
    ];
    for (what, payload, sig) in cases {
        let res = deliver(&app, payload, sig).await;
        assert_eq!(res.status(), 400, "{what}");
        assert_eq!(error_code(res).await, "invalid_request", "{what}");
    }
    let huge = "x".repeat(app.config.server.body_limit_bytes + 1);
    let res = deliver(&app, &huge, signed(&huge, now, WEBHOOK_SECRET)).await;
    assert_eq!(res.status(), 413);
    assert_eq!(count(&app, "select count(*) from stripe_events").await, 0);
    assert_eq!(count(&app, "select count(*) from subscriptions").await, 0);
    assert_eq!(plan_of(&app, ws).await, "free");
}

#[tokio::test]
async fn rotated_secrets_verify() {
    let (app, _stripe) = billing_app(|_| {}).await;
    let user = app.new_user().await;
    let ws = app.workspace_of(&user).await;
    let now = Utc::now().timestamp();
    let sub = subscription_json("sub_r", "cus_r", PRICE_PRO, "active", 1, &ws.to_string());
    // Our previous secret, still listed, verifies.
    let ev = event_json("evt_r1", "customer.subscription.created", now, sub.clone());
    let res = deliver(
        &app,
        &ev,
        Some(signature(&ev, now, &[PREVIOUS_WEBHOOK_SECRET])),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(plan_of(&app, ws).await, "pro");
    // Stripe rolling its secret sends one v1 per secret; one of ours is enough.
    let ev = event_json("evt_r2", "customer.subscription.updated", now + 1, sub);
    let other = "whsec_some_other_secret_0123456789abcdefgh";
    let res = deliver(
        &app,
        &ev,
        Some(signature(&ev, now, &[other, WEBHOOK_SECRET])),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(body(res).await["outcome"], "applied");
}

#[tokio::test]
async fn duplicate_replayed_and_concurrent_deliveries_apply_once() {
    let (app, _stripe) = billing_app(|_| {}).await;
    let user = app.new_user().await;
    let ws = app.workspace_of(&user).await;
    let now = Utc::now().timestamp();
    let sub = subscription_json("sub_d", "cus_d", PRICE_PRO, "active", 1, &ws.to_string());
    deliver_signed(
        &app,
        &event_json("evt_d_sub", "customer.subscription.created", now, sub),
    )
    .await;

    let invoice = || invoice_json("in_d", "cus_d", "sub_d", 2000, Some(now));
    let paid = event_json("evt_d_paid", "invoice.paid", now, invoice());
    let sig = signature(&paid, now, &[WEBHOOK_SECRET]);
    let outcomes = join_all((0..10).map(|_| async {
        let res = deliver(&app, &paid, Some(sig.clone())).await;
        assert_eq!(res.status(), 200);
        body(res).await["outcome"].as_str().unwrap().to_owned()
    }))
    .await;
    let n = |o: &str| outcomes.iter().filter(|x| *x == o).count();
    assert_eq!((n("applied"), n("duplicate")), (1, 9), "{outcomes:?}");

    // Replayed later with a fresh signature: still once.
    assert_eq!(deliver_signed(&app, &paid).await, "duplicate");
    // The same invoice under another event id counts once too.
    deliver_signed(
        &app,
        &event_json("evt_d_paid_2", "invoice.paid", now, invoice()),
    )
    .await;
    assert_eq!(count(&app, "select count(*) from billing_revenue").await, 1);
    let total = "select sum(amount_micros)::bigint from billing_revenue";
    assert_eq!(count(&app, total).await, 20_000_000);
    let rows = "select count(*) from stripe_events where id = 'evt_d_paid'";
    assert_eq!(count(&app, rows).await, 1);
}

#[tokio::test]
async fn subscription_events_out_of_order_leave_the_newest_state() {
    let (app, _stripe) = billing_app(|_| {}).await;
    let t0 = Utc::now().timestamp();
    // A: cancelled, and the deletion arrives first.
    let a = app.new_user().await;
    let ws_a = app.workspace_of(&a).await.to_string();
    let ev = |id: &str, kind: &str, t: i64, status: &str| {
        event_json(
            id,
            kind,
            t,
            subscription_json("sub_a", "cus_a", PRICE_PRO, status, 1, &ws_a),
        )
    };
    let deleted = ev(
        "evt_a3",
        "customer.subscription.deleted",
        t0 + 20,
        "canceled",
    );
    assert_eq!(deliver_signed(&app, &deleted).await, "applied");
    let updated = ev("evt_a2", "customer.subscription.updated", t0 + 10, "active");
    assert_eq!(deliver_signed(&app, &updated).await, "stale");
    let created = ev("evt_a1", "customer.subscription.created", t0, "incomplete");
    assert_eq!(deliver_signed(&app, &created).await, "stale");
    assert_eq!(plan_of(&app, app.workspace_of(&a).await).await, "free");

    // B: active, with the older `incomplete` arriving last.
    let b = app.new_user().await;
    let ws_b = app.workspace_of(&b).await;
    let sub_b = |status: &str| {
        subscription_json("sub_b", "cus_b", PRICE_TEAM, status, 4, &ws_b.to_string())
    };
    let updated = event_json(
        "evt_b2",
        "customer.subscription.updated",
        t0 + 10,
        sub_b("active"),
    );
    assert_eq!(deliver_signed(&app, &updated).await, "applied");
    let created = event_json(
        "evt_b1",
        "customer.subscription.created",
        t0,
        sub_b("incomplete"),
    );
    assert_eq!(deliver_signed(&app, &created).await, "stale");
    assert_eq!(plan_of(&app, ws_b).await, "team");
    let view = body(get(&app, &b, "/api/billing/subscription").await).await;
    assert_eq!(
        (view["status"].as_str(), view["seats"].as_i64()),
        (Some("active"), Some(4))
    );
    // Neither touched the other's workspace.
    assert_eq!(plan_of(&app, app.workspace_of(&a).await).await, "free");
}

#[tokio::test]
async fn a_payment_delivered_before_an_older_failure_wins() {
    let (app, _stripe) = billing_app(|_| {}).await;
    let user = app.new_user().await;
    let ws = app.workspace_of(&user).await;
    let t0 = Utc::now().timestamp();
    let sub = subscription_json("sub_p", "cus_p", PRICE_PRO, "active", 1, &ws.to_string());
    deliver_signed(
        &app,
        &event_json("evt_p0", "customer.subscription.created", t0, sub),
    )
    .await;
    let paid = invoice_json("in_p1", "cus_p", "sub_p", 2000, Some(t0 + 10));
    deliver_signed(
        &app,
        &event_json("evt_p_paid", "invoice.paid", t0 + 10, paid),
    )
    .await;
    let failed = invoice_json("in_p0", "cus_p", "sub_p", 2000, None);
    deliver_signed(
        &app,
        &event_json("evt_p_failed", "invoice.payment_failed", t0 + 5, failed),
    )
    .await;
    let failing = "select count(*) from subscriptions where payment_failed_at is not null";
    assert_eq!(count(&app, failing).await, 0);
    assert_eq!(plan_of(&app, ws).await, "pro");
}

#[tokio::test]
async fn a_subscription_active_after_a_failure_clears_it() {
    let (app, _stripe) = billing_app(|_| {}).await;
    let user = app.new_user().await;
    let ws = app.workspace_of(&user).await.to_string();
    let t0 = Utc::now().timestamp();
    let sub = |status: &str| subscription_json("sub_f", "cus_f", PRICE_PRO, status, 1, &ws);
    let failing = "select count(*) from subscriptions where payment_failed_at is not null";
    deliver_signed(
        &app,
        &event_json("evt_f0", "customer.subscription.created", t0, sub("active")),
    )
    .await;
    let failed = invoice_json("in_f", "cus_f", "sub_f", 2000, None);
    deliver_signed(
        &app,
        &event_json("evt_f1", "invoice.payment_failed", t0 + 5, failed),
    )
    .await;
    // Past due in the same second as the failure: the clock keeps running.
    let due = event_json(
        "evt_f2",
        "customer.subscription.updated",
        t0 + 5,
        sub("past_due"),
    );
    deliver_signed(&app, &due).await;
    assert_eq!(count(&app, failing).await, 1);
    // Active again later: recovered, even with no invoice.paid.
    let ok = event_json(
        "evt_f3",
        "customer.subscription.updated",
        t0 + 9,
        sub("active"),
    );
    assert_eq!(deliver_signed(&app, &ok).await, "applied");
    assert_eq!(count(&app, failing).await, 0);
}

#[tokio::test]
async fn unknown_types_are_recorded_and_orphans_are_not_applied() {
    let (app, _stripe) = billing_app(|_| {}).await;
    let now = Utc::now().timestamp();
    let ev = event_json("evt_unknown", "charge.refunded", now, json!({"id": "ch_1"}));
    assert_eq!(deliver_signed(&app, &ev).await, "ignored");
    let recorded = "select count(*) from stripe_events
                    where id = 'evt_unknown' and outcome = 'ignored' and processed_at is not null";
    assert_eq!(count(&app, recorded).await, 1);
    assert_eq!(deliver_signed(&app, &ev).await, "duplicate");
    // A subscription of no known workspace is recorded, not applied.
    let orphan = subscription_json("sub_o", "cus_nobody", PRICE_PRO, "active", 1, "not-a-uuid");
    let ev = event_json("evt_orphan", "customer.subscription.created", now, orphan);
    assert_eq!(deliver_signed(&app, &ev).await, "unmatched");
    assert_eq!(count(&app, "select count(*) from subscriptions").await, 0);
}

#[tokio::test]
async fn a_failed_payment_drops_to_free_after_the_grace_period() {
    let (app, _stripe) = billing_app(|cfg| {
        cfg.billing.grace_period_secs = 2;
        cfg.billing.sweep_interval_secs = 1;
    })
    .await;
    let user = app.new_user().await;
    let ws = app.workspace_of(&user).await;
    let now = Utc::now().timestamp();
    let sub = subscription_json("sub_g", "cus_g", PRICE_PRO, "active", 1, &ws.to_string());
    deliver_signed(
        &app,
        &event_json("evt_g1", "customer.subscription.created", now, sub),
    )
    .await;
    assert_eq!(plan_of(&app, ws).await, "pro");

    let failed = invoice_json("in_g1", "cus_g", "sub_g", 2000, None);
    let ev = event_json("evt_g2", "invoice.payment_failed", now, failed);
    assert_eq!(deliver_signed(&app, &ev).await, "applied");
    // Within the grace period the plan holds; then the sweep resets it.
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
    let ev = event_json("evt_g3", "invoice.paid", later, paid);
    assert_eq!(deliver_signed(&app, &ev).await, "applied");
    assert_eq!(plan_of(&app, ws).await, "pro");
    let view = body(get(&app, &user, "/api/billing/subscription").await).await;
    assert!(view["payment_failed_at"].is_null(), "{view}");
}
