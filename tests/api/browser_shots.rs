//! Screenshots of the browser client's main screens, light and dark, for the
//! README and docs/WEB.md. Ignored by default (they rewrite committed files):
//! `cargo test --test api browser_screenshots -- --ignored`.

use std::path::Path;

use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    browser::{insert_answer, send, sign_up, slow_app, wait_answer},
    webdriver::Browser,
};

const SAMPLE: &str = "Routing picks the **cheapest adequate** provider and falls back when one fails:\n\n\
```rust\nlet candidates = router.candidates(plan, tokens, requested)?;\nfor c in candidates {\n    match open(c).await {\n        Ok(stream) => return Ok(stream),\n        Err(e) if e.retryable() => continue,\n        Err(e) => return Err(e),\n    }\n}\n```\n\n\
- budgets are reserved before a generation\n- the real cost settles afterwards\n";

async fn shoot(b: &Browser, name: &str) {
    let png = b.screenshot_png().await;
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

async fn theme(b: &Browser, t: &str) {
    b.js(
        "localStorage.setItem('sb.theme', arguments[0]); location.reload();",
        json!([t]),
    )
    .await;
}

#[tokio::test]
#[ignore = "rewrites docs/screenshots/*.png"]
async fn browser_screenshots() {
    let app = slow_app().await;
    let b = Browser::launch().await;
    b.resize(1200, 800).await;
    for t in ["light", "dark"] {
        b.goto(&format!("{}/#/signin", app.base)).await;
        theme(&b, t).await;
        b.wait_for("#signin-form").await;
        shoot(&b, &format!("signin-{t}")).await;
    }
    sign_up(&b, &app.base).await;
    let token: Value = b
        .js(
            "return JSON.parse(localStorage.getItem('sb.session'));",
            json!([]),
        )
        .await;
    let user_id = Uuid::parse_str(token["user"]["id"].as_str().unwrap()).unwrap();
    let chat_id: Uuid = sqlx::query_scalar(
        "insert into chats (id, workspace_id, created_by, title) \
         select $1, workspace_id, $2, 'How routing works' from workspace_members where user_id = $2 limit 1 returning id",
    )
    .bind(Uuid::now_v7())
    .bind(user_id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    insert_answer(
        &app,
        chat_id,
        user_id,
        "How does Switchboard pick a provider?",
        SAMPLE,
    )
    .await;
    for (i, t) in ["light", "dark"].into_iter().enumerate() {
        b.goto(&format!("{}/#/chat/{chat_id}", app.base)).await;
        theme(&b, t).await;
        b.wait_for("article.msg.assistant pre .copy-btn").await;
        send(&b, &format!("And when every provider fails? ({t})")).await;
        wait_answer(&b, i + 1, "streaming", |v| {
            v["status"] == "streaming" && v["text"].as_str().unwrap().len() > 120
        })
        .await;
        shoot(&b, &format!("chat-{t}")).await;
        wait_answer(&b, i + 1, "complete", |v| v["status"] == "complete").await;
    }
    b.resize(1200, 1100).await;
    for t in ["light", "dark"] {
        b.goto(&format!("{}/#/usage", app.base)).await;
        theme(&b, t).await;
        b.wait_for("#budgets").await;
        if t == "light" {
            b.type_into("#key-name", "my app").await;
            b.type_into("#key-budget", "5").await;
            b.click("#key-form button[type=submit]").await;
            b.wait_for("#new-key-value").await;
        }
        b.wait_for("#key-rows code").await;
        b.js("document.querySelector('#main').scrollTop = 0;", json!([]))
            .await;
        shoot(&b, &format!("usage-{t}")).await;
    }
    b.resize(390, 844).await;
    b.goto(&format!("{}/#/chat/{chat_id}", app.base)).await;
    theme(&b, "light").await;
    b.wait_for("article.msg.assistant pre .copy-btn").await;
    shoot(&b, "chat-phone").await;
}
