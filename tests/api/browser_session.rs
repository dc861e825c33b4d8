//! The browser client's promises about sessions and sends: a message whose ack
//! was lost is resent and stored once; a token refresh happens once even with
//! two tabs open (a refresh token spent twice would end the sign-in).

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    browser::{conn_state, expected_answer, send, sign_up, slow_app, wait_answer},
    cut_proxy::CutProxy,
    helpers::TestApp,
    webdriver::{Browser, WAIT},
};

async fn poll<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(started.elapsed() < WAIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn chat_rows(app: &TestApp, content: &str) -> (i64, i64) {
    sqlx::query_as(
        "select count(*) filter (where role = 'user'), count(*) filter (where role = 'assistant') \
         from messages where chat_id = (select chat_id from messages where content = $1 limit 1)",
    )
    .bind(content)
    .fetch_one(&app.db)
    .await
    .unwrap()
}

#[tokio::test]
async fn browser_resends_a_message_whose_ack_was_lost() {
    let app = slow_app().await;
    let proxy = CutProxy::start(app.base.trim_start_matches("http://").parse().unwrap()).await;
    let b = Browser::launch().await;
    sign_up(&b, &format!("http://{}", proxy.addr)).await;
    b.click("#new-chat").await;
    b.wait_for("#composer-input").await;
    b.wait_until(
        "online",
        "return document.querySelector('#conn').dataset.state === 'online';",
        json!([]),
    )
    .await;

    // The send reaches the server and is committed, but nothing comes back.
    proxy.mute_down();
    send(&b, "Lost ack").await;
    poll("the message stored", async || {
        (chat_rows(&app, "Lost ack").await.0 == 1).then_some(())
    })
    .await;
    let pending = b
        .js(
            "return document.querySelector('article.msg.user')?.dataset.status;",
            json!([]),
        )
        .await;
    assert_eq!(pending, "pending", "no ack yet: still sending");
    proxy.cut();
    b.wait_until(
        "offline",
        "return document.querySelector('#conn').dataset.state === 'offline';",
        json!([]),
    )
    .await;
    proxy.restore();

    // After the reconnect the same client_msg_id is sent again: one message, one answer.
    let done = wait_answer(&b, 0, "complete", |v| v["status"] == "complete").await;
    assert_eq!(done["text"], expected_answer("Lost ack"));
    assert_eq!(chat_rows(&app, "Lost ack").await, (1, 1));
    let users = b
        .js(
            "return [...document.querySelectorAll('article.msg.user')].map(e => e.dataset.status);",
            json!([]),
        )
        .await;
    assert_eq!(users, json!(["complete"]));
}

#[tokio::test]
async fn browser_refreshes_the_token_once_across_two_tabs() {
    let app = slow_app().await;
    let proxy = CutProxy::start(app.base.trim_start_matches("http://").parse().unwrap()).await;
    let b = Browser::launch().await;
    sign_up(&b, &format!("http://{}", proxy.addr)).await;
    let url = b.js("return location.href;", json!([])).await;
    let (first, second) = b.new_window().await;
    b.goto(url.as_str().unwrap()).await;
    b.wait_for("#new-chat").await;
    let before: Value = b
        .js(
            "return JSON.parse(localStorage.getItem('sb.session'));",
            json!([]),
        )
        .await;
    let user_id = Uuid::parse_str(before["user"]["id"].as_str().unwrap()).unwrap();

    // The token now "expires" in 64 s, in both tabs at once (the second tab hears of
    // it through the storage event, the first reloads): both schedule their refresh
    // for the same instant, 4 s from now. Requests then take 400 ms to arrive, so
    // both would be in flight together: without the cross-tab lock both tabs would
    // spend the same refresh token, and the second use would revoke the sign-in.
    b.switch_to(&first).await;
    b.js(
        "const s = JSON.parse(localStorage.getItem('sb.session')); s.expires_at = Date.now() + 64000; \
         localStorage.setItem('sb.session', JSON.stringify(s)); location.reload();",
        json!([]),
    )
    .await;
    b.wait_for("#new-chat").await;
    proxy.set_latency(400);
    let after = poll("a refreshed token", async || {
        let s: Value = b
            .js(
                "return JSON.parse(localStorage.getItem('sb.session'));",
                json!([]),
            )
            .await;
        (s["refresh_token"] != before["refresh_token"]).then_some(s)
    })
    .await;
    // Let any second refresh happen if there were to be one: wait until neither tab
    // holds a refresh due within the minute.
    for handle in [&first, &second] {
        b.switch_to(handle).await;
        poll("a tab on the new token", async || {
            let v = b
                .js("const s = JSON.parse(localStorage.getItem('sb.session')); return s && s.expires_at - Date.now() > 120000;", json!([]))
                .await;
            (v == json!(true)).then_some(())
        })
        .await;
    }
    proxy.set_latency(0);
    let (used, revoked, total): (i64, i64, i64) = sqlx::query_as(
        "select count(used_at), count(revoked_at), count(*) from refresh_tokens where user_id = $1",
    )
    .bind(user_id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(
        (used, revoked, total),
        (1, 0, 2),
        "one refresh, nothing revoked"
    );
    // Both tabs are still signed in and the new token works.
    for handle in [&first, &second] {
        b.switch_to(handle).await;
        b.js("location.reload();", json!([])).await;
        b.wait_for("#new-chat").await;
    }
    let res = app
        .client
        .get(app.url("/api/auth/me"))
        .bearer_auth(after["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

/// The server goes away and a new process takes over (same database and Redis):
/// the page reconnects by itself, shows the same history once, and chats on.
#[tokio::test]
async fn browser_reconnects_to_a_restarted_server() {
    let app = slow_app().await;
    let proxy = CutProxy::start(app.base.trim_start_matches("http://").parse().unwrap()).await;
    let b = Browser::launch().await;
    sign_up(&b, &format!("http://{}", proxy.addr)).await;
    b.click("#new-chat").await;
    send(&b, "Before the restart").await;
    wait_answer(&b, 0, "complete", |v| v["status"] == "complete").await;

    // Stop the server (dropping the TestApp stops it). Its process would exit and
    // the OS close its sockets; in this test process they would linger, so the
    // proxy closes them. Then another server starts on the same database.
    let (config, db) = (app.config.clone(), app.db.clone());
    drop(app);
    proxy.cut();
    conn_state(&b, "offline").await;
    let next = switchboard::app::App::build(config)
        .await
        .expect("restarted app builds");
    proxy.set_upstream(next.local_addr());
    proxy.restore();
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(next.run_until(async {
        let _ = stopped.await;
    }));
    conn_state(&b, "online").await;

    send(&b, "After the restart").await;
    let done = wait_answer(&b, 1, "complete", |v| v["status"] == "complete").await;
    assert_eq!(done["text"], expected_answer("After the restart"));
    assert_eq!(done["count"], 2, "the history is not shown twice");
    let first = wait_answer(&b, 0, "kept", |v| v["status"] == "complete").await;
    assert_eq!(first["text"], expected_answer("Before the restart"));
    let (users,): (i64,) = sqlx::query_as("select count(*) from messages where role = 'user'")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(users, 2);
}
