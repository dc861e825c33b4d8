//! Revenue (paid invoices) next to provider cost: the caller's workspace per
//! day or month, and the operator's worst-margin list.

use chrono::Utc;
use uuid::Uuid;

use crate::{
    billing::{billing_app, body, deliver_signed, get},
    helpers::{TestApp, TestUser},
    mock_stripe::{PRICE_PRO, event_json, invoice_json, subscription_json},
};

async fn spend(app: &TestApp, ws: Uuid, user: &TestUser, cost_micros: i64) {
    sqlx::query(
        "insert into usage_events (id, workspace_id, user_id, provider, model, input_tokens, output_tokens, cost_micros)
         values ($1, $2, $3, 'simulated', 'sim-1', 10, 10, $4)",
    )
    .bind(Uuid::now_v7())
    .bind(ws)
    .bind(user.id)
    .bind(cost_micros)
    .execute(&app.db)
    .await
    .unwrap();
}

/// Two users: the first pays $20 and spends $2.50, the second spends $1.
async fn payer_and_spender(app: &TestApp) -> (TestUser, Uuid, TestUser, Uuid) {
    let (user, other) = (app.new_user().await, app.new_user().await);
    let (ws, other_ws) = (
        app.workspace_of(&user).await,
        app.workspace_of(&other).await,
    );
    spend(app, ws, &user, 2_500_000).await;
    spend(app, other_ws, &other, 1_000_000).await;
    let now = Utc::now().timestamp();
    let sub = subscription_json("sub_m", "cus_m", PRICE_PRO, "active", 1, &ws.to_string());
    deliver_signed(
        app,
        &event_json("evt_m1", "customer.subscription.created", now, sub),
    )
    .await;
    let paid = invoice_json("in_m", "cus_m", "sub_m", 2000, Some(now));
    deliver_signed(app, &event_json("evt_m2", "invoice.paid", now, paid)).await;
    (user, ws, other, other_ws)
}

#[tokio::test]
async fn margin_shows_revenue_minus_cost() {
    let (app, _stripe) = billing_app(|_| {}).await;
    let (user, ws, other, _) = payer_and_spender(&app).await;
    for period in ["day", "month"] {
        let m = body(
            get(
                &app,
                &user,
                &format!("/api/analytics/margin?period={period}"),
            )
            .await,
        )
        .await;
        let totals = (
            m["revenue_micros"].as_i64(),
            m["cost_micros"].as_i64(),
            m["margin_micros"].as_i64(),
        );
        assert_eq!(
            totals,
            (Some(20_000_000), Some(2_500_000), Some(17_500_000)),
            "{m}"
        );
        assert_eq!(m["periods"][0]["margin_micros"], 17_500_000);
        assert_eq!(m["workspace_id"], ws.to_string());
    }
    let theirs = body(get(&app, &other, "/api/analytics/margin").await).await;
    let totals = (
        theirs["revenue_micros"].as_i64(),
        theirs["cost_micros"].as_i64(),
    );
    assert_eq!(totals, (Some(0), Some(1_000_000)));
    for bad in [
        "period=week",
        "days=0",
        "days=800",
        "days=x",
        "workspace_id=nope",
    ] {
        let res = get(&app, &user, &format!("/api/analytics/margin?{bad}")).await;
        assert_eq!(res.status(), 400, "{bad}");
    }
    let path = format!("/api/analytics/margin?workspace_id={ws}");
    assert_eq!(get(&app, &other, &path).await.status(), 404);
    let res = app
        .client
        .get(app.url("/api/analytics/margin"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn worst_margins_are_for_admins_worst_first() {
    let (app, _stripe) = billing_app(|_| {}).await;
    let (user, ws, _other, other_ws) = payer_and_spender(&app).await;
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
    let worst = body(get(&app, &user, "/api/analytics/margin/workspaces").await).await;
    let rows = worst["workspaces"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["workspace_id"], other_ws.to_string());
    assert_eq!(rows[0]["margin_micros"], -1_000_000);
    assert_eq!(rows[1]["workspace_id"], ws.to_string());
    assert_eq!(
        (
            rows[1]["revenue_micros"].as_i64(),
            rows[1]["margin_micros"].as_i64()
        ),
        (Some(20_000_000), Some(17_500_000))
    );
    assert_eq!(rows[1]["plan"], "pro");
    let one = body(get(&app, &user, "/api/analytics/margin/workspaces?limit=1").await).await;
    assert_eq!(one["workspaces"].as_array().unwrap().len(), 1);
    for bad in ["limit=0", "limit=501", "days=0"] {
        let res = get(
            &app,
            &user,
            &format!("/api/analytics/margin/workspaces?{bad}"),
        )
        .await;
        assert_eq!(res.status(), 400, "{bad}");
    }
}
