//! The browser client's other screens: the chat list (paging, rename, delete,
//! another user's chat), usage and API keys, and the account pages that call
//! endpoints which may not exist yet.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    browser::sign_up,
    helpers::{TestApp, spawn_app},
    webdriver::Browser,
};

async fn session_user(b: &Browser) -> (Uuid, String) {
    let s: Value = b
        .js(
            "return JSON.parse(localStorage.getItem('sb.session'));",
            json!([]),
        )
        .await;
    (
        Uuid::parse_str(s["user"]["id"].as_str().unwrap()).unwrap(),
        s["access_token"].as_str().unwrap().to_owned(),
    )
}

async fn create_chat(app: &TestApp, token: &str, title: &str) -> String {
    let v: Value = app
        .client
        .post(app.url("/api/chats"))
        .bearer_auth(token)
        .json(&json!({ "title": title }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn browser_chat_list_pages_renames_deletes_and_hides_other_users_chats() {
    let app = spawn_app().await;
    let b = Browser::launch().await;
    sign_up(&b, &app.base).await;
    let (_, token) = session_user(&b).await;
    for i in 0..35 {
        create_chat(&app, &token, &format!("chat {i:02}")).await;
    }
    b.js("location.reload();", json!([])).await;
    // Newest first, 30 to a page, then the rest on demand.
    let first = b
        .wait_until("first page", "const l = [...document.querySelectorAll('#chat-list a')]; return l.length === 30 && l.map(a => a.textContent);", json!([]))
        .await;
    assert_eq!(first[0], "chat 34");
    assert_eq!(first[29], "chat 05");
    b.click("#more-chats").await;
    let all = b
        .wait_until("second page", "const l = [...document.querySelectorAll('#chat-list a')]; return l.length === 35 && l.map(a => a.textContent);", json!([]))
        .await;
    assert_eq!(all[34], "chat 00");
    b.wait_until(
        "no more",
        "return document.querySelector('#more-chats').hidden;",
        json!([]),
    )
    .await;

    // Rename and delete through the row buttons (prompt and confirm dialogs).
    b.click("button[aria-label='Rename chat 34']").await;
    b.accept_dialog(Some("Renamed <b>chat</b>")).await;
    b.wait_until(
        "renamed",
        "return document.querySelector('#chat-list a').textContent === 'Renamed <b>chat</b>';",
        json!([]),
    )
    .await;
    let stored: String = sqlx::query_scalar("select title from chats where title like 'Renamed%'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(stored, "Renamed <b>chat</b>");
    b.click("button[aria-label='Delete chat 33']").await;
    b.accept_dialog(None).await;
    b.wait_until("deleted from list", "return ![...document.querySelectorAll('#chat-list a')].some(a => a.textContent === 'chat 33');", json!([])).await;
    let left: i64 = sqlx::query_scalar("select count(*) from chats where title = 'chat 33'")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(left, 0);

    // Another user's chat is "not found", exactly like a missing one.
    let other = app.new_user().await;
    let theirs = create_chat(&app, &other.access_token, "private").await;
    b.goto(&format!("{}/#/chat/{theirs}", app.base)).await;
    b.wait_until(
        "back to the list",
        "return location.hash === '#/' && document.querySelector('#start-chat') !== null;",
        json!([]),
    )
    .await;
    let toast = b
        .js(
            "return document.querySelector('#toasts').textContent;",
            json!([]),
        )
        .await;
    assert!(
        toast.as_str().unwrap().contains("does not exist"),
        "{toast}"
    );
    assert!(
        !b.js(
            "return document.body.textContent.includes('private');",
            json!([])
        )
        .await
        .as_bool()
        .unwrap()
    );
}

#[tokio::test]
async fn browser_usage_and_keys() {
    let app = spawn_app().await;
    let b = Browser::launch().await;
    sign_up(&b, &app.base).await;
    let (user_id, _) = session_user(&b).await;
    b.click("#nav-usage").await;
    b.wait_for("#budgets").await;
    let plan = b
        .js(
            "return document.querySelector('#plan').textContent;",
            json!([]),
        )
        .await;
    assert_eq!(plan, "free");
    let rows = b
        .js(
            "return document.querySelectorAll('#budgets tbody tr').length;",
            json!([]),
        )
        .await;
    assert!(rows.as_u64().unwrap() >= 1);

    // A budget typed in dollars is sent as exact micro-dollars; the key is shown once.
    b.type_into("#key-name", "ci bot").await;
    b.type_into("#key-budget", "12.345678").await;
    b.click("#key-form button[type=submit]").await;
    b.wait_for("#new-key-value").await;
    let key = b
        .js(
            "return document.querySelector('#new-key-value').textContent;",
            json!([]),
        )
        .await;
    let key = key.as_str().unwrap().to_owned();
    assert!(key.starts_with("sk-sb-") && key.len() == 70, "{key}");
    let (budget, ws_user): (Option<i64>, Uuid) = sqlx::query_as(
        "select k.budget_micros, m.user_id from api_keys k join workspace_members m using (workspace_id) where k.name = 'ci bot'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(budget, Some(12_345_678));
    assert_eq!(ws_user, user_id);
    let res = app
        .client
        .get(app.url("/v1/models"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "the shown key works");
    b.wait_until(
        "listed",
        "return document.querySelector('#key-rows code')?.textContent.startsWith('sk-sb-');",
        json!([]),
    )
    .await;
    // A reload lists the key without the secret.
    b.js("location.reload();", json!([])).await;
    b.wait_for("#key-rows code").await;
    let page = b.js("return document.body.textContent;", json!([])).await;
    assert!(
        !page.as_str().unwrap().contains(&key[10..]),
        "the key is never shown again"
    );

    b.click("button[aria-label='Revoke ci bot']").await;
    b.accept_dialog(None).await;
    b.wait_for("#key-rows tr.revoked").await;
    let res = app
        .client
        .get(app.url("/v1/models"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401, "revoked");
}

#[tokio::test]
async fn browser_account_pages_answer_or_say_they_are_unavailable() {
    let app = spawn_app().await;
    let b = Browser::launch().await;
    // Settles on the server's answer: a clear "not available yet" while the
    // endpoint does not exist, the server's own error for a bogus token once it does.
    b.goto(&format!("{}/verify-email?token=bogus", app.base))
        .await;
    let status = b
        .wait_until("verify settled", "const s = document.querySelector('.form-status'); return !!s && s.classList.contains('error') && s.textContent;", json!([]))
        .await;
    assert!(!status.as_str().unwrap().is_empty());
    b.goto(&format!("{}/verify-email", app.base)).await;
    b.wait_until(
        "no token",
        "return document.querySelector('.form-status')?.textContent === 'This link has no token.';",
        json!([]),
    )
    .await;

    b.goto(&format!("{}/reset-password", app.base)).await;
    b.type_into("#email", "nobody@example.com\u{E007}").await;
    let status = b
        .wait_until("reset request settled", "const s = document.querySelector('.form-status'); return !!s && (s.classList.contains('error') || s.classList.contains('ok')) && s.textContent;", json!([]))
        .await;
    let status = status.as_str().unwrap();
    assert!(
        status.contains("not available") || status.contains("reset link"),
        "{status}"
    );

    b.goto(&format!("{}/reset-password?token=bogus", app.base))
        .await;
    b.type_into("#password", "a new long password 123\u{E007}")
        .await;
    b.wait_until("reset confirm settled", "const s = document.querySelector('.form-status'); return !!s && (s.classList.contains('error') || s.classList.contains('ok')) && s.textContent;", json!([])).await;
    // Sign-in errors are shown in the form.
    b.goto(&format!("{}/#/signin", app.base)).await;
    b.type_into("#email", "nobody@example.com").await;
    b.type_into("#password", "wrong password here\u{E007}")
        .await;
    let err = b
        .wait_until(
            "sign-in error",
            "const s = document.querySelector('.form-status.error'); return s && s.textContent;",
            json!([]),
        )
        .await;
    assert!(!err.as_str().unwrap().is_empty());
}
