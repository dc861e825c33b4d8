//! The live actor view: admins only, a page that runs no inline script, and a
//! snapshot (JSON and SSE) in which actors appear under load and go when idle.

use std::time::Duration;

use futures::StreamExt;
use reqwest::header;
use serde_json::Value;

use crate::{
    admin::make_admin,
    helpers::{TestApp, error_code, eventually, spawn_app, spawn_app_with},
};

async fn snapshot(app: &TestApp, token: &str) -> Value {
    let res = app
        .client
        .get(app.url("/api/ops/snapshot?top=5"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

#[tokio::test]
async fn the_page_is_static_under_a_strict_csp_and_the_data_is_for_admins() {
    let app = spawn_app().await;
    let res = app.client.get(app.url("/ops")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let csp = res.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    let html = res.text().await.unwrap();
    assert!(html.contains(r#"<script src="/ops/ops.js" defer></script>"#));
    assert_eq!(html.matches("<script").count(), 1, "no inline script");
    assert!(!html.contains(" on"), "no inline event handlers");
    let js = app.client.get(app.url("/ops/ops.js")).send().await.unwrap();
    assert_eq!(
        js.headers()[header::CONTENT_TYPE],
        "text/javascript; charset=utf-8"
    );
    assert!(!js.text().await.unwrap().contains("innerHTML"));

    let user = app.new_user().await;
    for path in ["/api/ops/snapshot", "/api/ops/stream"] {
        let res = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 401, "{path}");
        let res = app
            .client
            .get(app.url(path))
            .bearer_auth(&user.access_token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403, "{path}");
        assert_eq!(error_code(res).await, "forbidden");
    }
    make_admin(&app, &user).await;
    for q in [
        "top=101",
        "top=-1",
        "top=x",
        "interval_ms=10",
        "interval_ms=600000",
        "bogus=1",
    ] {
        for path in ["/api/ops/snapshot", "/api/ops/stream"] {
            if q.starts_with("interval") && path.ends_with("snapshot") {
                continue;
            }
            let url = app.url(&format!("{path}?{q}"));
            let res = app
                .client
                .get(url)
                .bearer_auth(&user.access_token)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 400, "{path}?{q}");
            assert_eq!(error_code(res).await, "invalid_request");
        }
    }
    let snap = snapshot(&app, &user.access_token).await;
    assert_eq!(snap["chats"]["live"], 0);
    assert_eq!(snap["limits_mode"], "redis");
    assert_eq!(snap["usage_writer"]["backlog"], 0);
    let providers = snap["providers"].as_array().unwrap();
    assert!(
        providers
            .iter()
            .any(|p| p["name"] == "simulated" && p["circuit"] == "closed"),
        "{snap}"
    );
}

#[tokio::test]
async fn actors_come_and_go_under_load() {
    let app = spawn_app_with(|c| {
        c.simulated.token_delay_ms = 40;
        c.simulated.reply_tokens = 60;
        c.chat.idle_timeout_secs = 1;
        c.chat.user_idle_timeout_secs = 1;
    })
    .await;
    let admin = app.new_user().await;
    make_admin(&app, &admin).await;
    let mut sockets = Vec::new();
    let mut chats = Vec::new();
    for _ in 0..3 {
        let user = app.new_user().await;
        let mut ws = app.ws(&user.access_token).await;
        for i in 0..3 {
            let chat = app.create_chat(&user.access_token).await;
            ws.send_message(chat, &format!("m{i}"), "a long answer please")
                .await;
            chats.push(chat);
        }
        sockets.push(ws);
    }
    let snap = eventually(
        Duration::from_secs(10),
        "nine chats, some streaming",
        || async {
            let s = snapshot(&app, &admin.access_token).await;
            (s["chats"]["live"] == 9 && s["chats"]["streaming"].as_u64() >= Some(1)).then_some(s)
        },
    )
    .await;
    assert_eq!(snap["users"]["live"], 3);
    assert_eq!(snap["users"]["sockets"], 3);
    assert_eq!(snap["users"]["top"].as_array().unwrap().len(), 3);
    assert!(
        snap["chats"]["top"].as_array().unwrap().len() == 5,
        "top is bounded: {snap}"
    );
    assert_eq!(snap["chats"]["top"][0]["streaming"], true);
    let sim = snap["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "simulated")
        .unwrap()
        .clone();
    assert!(sim["slots_in_use"].as_u64() >= Some(1), "{sim}");
    assert!(sim["requests_last_minute"].as_u64() >= Some(1), "{sim}");

    // The push stream carries the same snapshot, live.
    let res = app
        .client
        .get(app.url("/api/ops/stream?interval_ms=250&top=3"))
        .bearer_auth(&admin.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()[header::CONTENT_TYPE], "text/event-stream");
    let mut body = res.bytes_stream();
    let mut text = String::new();
    while text.matches("event: snapshot").count() < 2 {
        let chunk = tokio::time::timeout(Duration::from_secs(5), body.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let first = text.split("data: ").nth(1).unwrap().lines().next().unwrap();
    let first: Value = serde_json::from_str(first).unwrap();
    assert!(first["chats"]["live"].as_u64() >= Some(1), "{first}");
    // Demoted mid-stream: the stream says so and ends.
    sqlx::query("update users set is_admin = false where id = $1")
        .bind(admin.id)
        .execute(&app.db)
        .await
        .unwrap();
    let mut rest = String::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(5), body.next())
        .await
        .unwrap()
    {
        rest.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    assert!(
        rest.ends_with("event: error\ndata: admins only\n\n"),
        "{rest}"
    );
    make_admin(&app, &admin).await;

    // Sockets closed and idle: every chat and user actor stops and leaves the view.
    drop(sockets);
    eventually(
        Duration::from_secs(30),
        "every chat and user actor gone",
        || async {
            let s = snapshot(&app, &admin.access_token).await;
            (s["chats"]["live"] == 0 && s["users"]["live"] == 0 && s["users"]["sockets"] == 0)
                .then_some(())
        },
    )
    .await;
}
