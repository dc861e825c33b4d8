//! The browser client (web/) in a real headless Chromium: sign up, chat with a
//! streamed answer, stop it, reload, lose the network mid-answer, and model
//! output that tries to run script. The page is loaded through `CutProxy`, a
//! TCP proxy the test can cut, so "the network drops" is real sockets closing.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchboard::providers::simulated::reply_tokens;
use uuid::Uuid;

use switchboard::config::Secret;

use crate::{
    cut_proxy::CutProxy,
    helpers::{PASSWORD, TestApp, spawn_app_with},
    mock_llm::{Behavior, MockLlm},
    webdriver::{Browser, ENTER, ESCAPE, WAIT},
};

/// An app whose simulated answers take a few seconds, so a test can act mid-answer.
pub async fn slow_app() -> TestApp {
    spawn_app_with(|c| {
        c.simulated.ttft_ms = 200;
        c.simulated.token_delay_ms = 50;
        c.simulated.reply_tokens = 100;
    })
    .await
}

/// The answer the simulated provider gives to `prompt` (deterministic).
pub fn expected_answer(prompt: &str) -> String {
    reply_tokens(prompt, 100).concat()
}

const ASSISTANT_STATE: &str = "const a = [...document.querySelectorAll('article.msg.assistant')]; \
    const m = a[arguments[0]]; if (!m) return null; \
    return {id: m.dataset.id, status: m.dataset.status, text: m.querySelector('.body').textContent.trim(), \
            count: a.length, meta: m.querySelector('.meta').textContent};";

async fn assistant(b: &Browser, i: usize) -> Value {
    b.js(ASSISTANT_STATE, json!([i])).await
}

/// Waits until answer `i` satisfies `pred`; returns its state.
pub async fn wait_answer(
    b: &Browser,
    i: usize,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let started = Instant::now();
    loop {
        let v = assistant(b, i).await;
        if !v.is_null() && pred(&v) {
            return v;
        }
        if started.elapsed() > WAIT {
            panic!(
                "timed out waiting for answer {i} {what}: {v}; {}",
                b.diagnostics().await
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn db_message(app: &TestApp, id: &str) -> (String, String) {
    sqlx::query_as("select status, content from messages where id = $1")
        .bind(Uuid::parse_str(id).unwrap())
        .fetch_one(&app.db)
        .await
        .unwrap()
}

pub async fn send(b: &Browser, text: &str) {
    b.type_into("#composer-input", &format!("{text}{ENTER}"))
        .await;
}

pub async fn sign_up(b: &Browser, origin: &str) {
    b.goto(&format!("{origin}/#/signup")).await;
    let tag = &Uuid::new_v4().simple().to_string()[..10];
    b.type_into("#email", &format!("web-{tag}@example.com"))
        .await;
    b.type_into("#username", &format!("web{tag}")).await;
    b.type_into("#password", &format!("{PASSWORD}{ENTER}"))
        .await;
    b.wait_for("#new-chat").await;
}

/// Waits until the connection badge shows `state` (`online`, `offline`, ...).
pub async fn conn_state(b: &Browser, state: &str) {
    b.wait_until(
        state,
        "return document.querySelector('#conn').dataset.state === arguments[0];",
        json!([state]),
    )
    .await;
}

#[tokio::test]
async fn browser_chat_streams_stops_reloads_and_survives_a_network_cut() {
    let app = slow_app().await;
    let proxy = CutProxy::start(app.base.trim_start_matches("http://").parse().unwrap()).await;
    let b = Browser::launch().await;
    sign_up(&b, &format!("http://{}", proxy.addr)).await;
    b.click("#new-chat").await;
    b.wait_for("#composer-input").await;
    let stopped = stream_then_stop(&app, &b).await;
    reload_shows_history(&b, &stopped).await;
    cut_mid_answer(&b, &proxy).await;
    cut_through_done(&app, &b, &proxy).await;
    // The client itself never trips its own content-security policy.
    let console = b.console().await;
    assert!(
        !console
            .iter()
            .any(|l| l.contains("Content Security Policy")),
        "{console:?}"
    );
}

/// A streamed answer is visible while it streams; Escape stops it. Returns its text.
async fn stream_then_stop(app: &TestApp, b: &Browser) -> String {
    send(b, "First question").await;
    let live = wait_answer(b, 0, "streaming with text", |v| {
        v["status"] == "streaming" && v["text"].as_str().unwrap().len() > 20
    })
    .await;
    b.wait_for("#stop-btn").await;
    b.type_into("#composer-input", ESCAPE).await;
    let stopped = wait_answer(b, 0, "cancelled", |v| v["status"] == "cancelled").await;
    let (status, content) = db_message(app, live["id"].as_str().unwrap()).await;
    assert_eq!(status, "cancelled");
    assert_eq!(stopped["text"].as_str().unwrap(), content.trim());
    assert!(
        content.len() < expected_answer("First question").len(),
        "stopped early"
    );
    b.wait_for("article.msg.assistant .retry-btn").await;
    // The chat was named after the first message.
    b.wait_until(
        "chat title",
        "return document.querySelector('#chat-list a')?.textContent === 'First question';",
        json!([]),
    )
    .await;
    content.trim().to_owned()
}

async fn reload_shows_history(b: &Browser, stopped: &str) {
    b.js("location.reload();", json!([])).await;
    let reloaded = wait_answer(b, 0, "reloaded", |v| v["status"] == "cancelled").await;
    assert_eq!(reloaded["text"], stopped);
    let user_text = b
        .wait_until(
            "user message",
            "return document.querySelector('article.msg.user .body')?.textContent;",
            json!([]),
        )
        .await;
    assert_eq!(user_text, "First question");
}

/// The network drops mid-answer and comes back while the answer still streams.
async fn cut_mid_answer(b: &Browser, proxy: &CutProxy) {
    send(b, "Second question").await;
    wait_answer(b, 1, "some text", |v| {
        v["text"].as_str().unwrap().len() > 30
    })
    .await;
    proxy.cut();
    conn_state(b, "offline").await;
    proxy.restore();
    let done = wait_answer(b, 1, "complete", |v| v["status"] == "complete").await;
    assert_eq!(
        done["text"],
        expected_answer("Second question"),
        "no token lost or doubled"
    );
    assert_eq!(done["count"], 2, "one article per answer");
    assert!(
        done["meta"].as_str().unwrap().contains("simulated · sim-1"),
        "{done}"
    );
    conn_state(b, "online").await;
}

/// The network drops and the whole rest of the answer, `done` included, is missed.
async fn cut_through_done(app: &TestApp, b: &Browser, proxy: &CutProxy) {
    send(b, "Third question").await;
    let third = wait_answer(b, 2, "some text", |v| {
        v["text"].as_str().unwrap().len() > 30
    })
    .await;
    proxy.cut();
    let id = third["id"].as_str().unwrap().to_owned();
    let started = Instant::now();
    while db_message(app, &id).await.0 != "complete" {
        assert!(
            started.elapsed() < WAIT,
            "answer did not complete on the server"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    proxy.restore();
    let done = wait_answer(b, 2, "complete after reconnect", |v| {
        v["status"] == "complete"
    })
    .await;
    assert_eq!(done["text"], expected_answer("Third question"));
    let user_messages = b
        .js(
            "return document.querySelectorAll('article.msg.user').length;",
            json!([]),
        )
        .await;
    assert_eq!(user_messages, 3, "no message sent twice");
}

#[tokio::test]
async fn browser_two_tabs_on_one_chat_stay_in_sync() {
    let app = slow_app().await;
    let origin = app.base.clone();
    let b = Browser::launch().await;
    sign_up(&b, &origin).await;
    b.click("#new-chat").await;
    b.wait_for("#composer-input").await;
    let url = b.js("return location.href;", json!([])).await;
    let (first, _second) = b.new_window().await;
    b.goto(url.as_str().unwrap()).await;
    b.wait_for("#composer-input").await;
    b.wait_until(
        "online",
        "return document.querySelector('#conn').dataset.state === 'online';",
        json!([]),
    )
    .await;
    // Sent from the second tab, seen whole in the first.
    send(&b, "From the other tab").await;
    b.switch_to(&first).await;
    let done = wait_answer(&b, 0, "complete in the first tab", |v| {
        v["status"] == "complete"
    })
    .await;
    assert_eq!(done["text"], expected_answer("From the other tab"));
    let user = b
        .wait_until(
            "user message",
            "return document.querySelector('article.msg.user .body')?.textContent;",
            json!([]),
        )
        .await;
    assert_eq!(user, "From the other tab");
}

#[tokio::test]
async fn browser_model_output_never_runs_script() {
    let app = slow_app().await;
    let user = app.new_user().await;
    let chat: Value = app
        .client
        .post(app.url("/api/chats"))
        .bearer_auth(&user.access_token)
        .json(&json!({"title": "hostile"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let chat_id = Uuid::parse_str(chat["id"].as_str().unwrap()).unwrap();
    let hostile = "Here you go <script>window.__pwned = 1</script>\n\n\
        <img src=x onerror=\"window.__pwned = 2\">\n\n\
        [click](javascript:window.__pwned=3) <a href=\"javascript:window.__pwned=4\">a</a>\n\n\
        ```rust\nfn main() { println!(\"hi\"); }\n```\n";
    insert_answer(&app, chat_id, user.id, "show me", hostile).await;

    let b = Browser::launch().await;
    b.goto(&app.base).await;
    // Signed in as that user: the client reads its session from localStorage.
    b.js(
        "localStorage.setItem('sb.session', JSON.stringify({access_token: arguments[0], \
         refresh_token: arguments[1], expires_at: Date.now() + 600000, user: {id: arguments[2]}}));",
        json!([user.access_token, user.refresh_token, user.id]),
    )
    .await;
    // A reload, so the client starts with that session.
    b.js(
        "location.hash = arguments[0]; location.reload();",
        json!([format!("#/chat/{chat_id}")]),
    )
    .await;
    b.wait_for("article.msg.assistant pre .copy-btn").await;
    let report = b
        .js(
            "const body = document.querySelector('article.msg.assistant .body'); \
             return {pwned: window.__pwned ?? null, scripts: body.querySelectorAll('script').length, \
                     imgs: body.querySelectorAll('img[onerror]').length, \
                     js_links: body.querySelectorAll('a[href^=\"javascript\"]').length, \
                     text: body.textContent, highlighted: !!body.querySelector('code.hljs .hljs-keyword')};",
            json!([]),
        )
        .await;
    assert_eq!(report["pwned"], Value::Null, "{report}");
    // Stopped by the sanitiser, not only by the CSP (which would log a refusal).
    let console = b.console().await;
    assert!(
        !console
            .iter()
            .any(|l| l.contains("Content Security Policy")),
        "{console:?}"
    );
    assert_eq!(report["scripts"], 0);
    assert_eq!(report["imgs"], 0);
    assert_eq!(report["js_links"], 0);
    assert_eq!(report["highlighted"], true, "code is highlighted: {report}");
    // Raw HTML is shown as text, not dropped silently.
    assert!(
        report["text"]
            .as_str()
            .unwrap()
            .contains("<script>window.__pwned = 1</script>")
    );
    // The user's own text is never interpreted either.
    send(
        &b,
        "<img src=x onerror=\"window.__pwned = 5\"> **not bold**",
    )
    .await;
    wait_answer(&b, 1, "answered", |v| v["status"] == "complete").await;
    let mine = b
        .js("const u = document.querySelectorAll('article.msg.user .body'); const last = u[u.length - 1]; \
             return {html: last.innerHTML.includes('<img'), text: last.textContent, pwned: window.__pwned ?? null};", json!([]))
        .await;
    assert_eq!(mine["html"], false);
    assert_eq!(mine["pwned"], Value::Null);
    assert_eq!(
        mine["text"],
        "<img src=x onerror=\"window.__pwned = 5\"> **not bold**"
    );
}

/// A finished exchange written straight to the database, as if a provider had said `answer`.
pub async fn insert_answer(
    app: &TestApp,
    chat_id: Uuid,
    user_id: Uuid,
    prompt: &str,
    answer: &str,
) {
    let q = Uuid::now_v7();
    sqlx::query(
        "insert into messages (id, chat_id, seq, role, author_id, client_msg_id, content, status) \
         values ($1, $2, 1, 'user', $3, 'seed-1', $4, 'complete')",
    )
    .bind(q)
    .bind(chat_id)
    .bind(user_id)
    .bind(prompt)
    .execute(&app.db)
    .await
    .unwrap();
    sqlx::query(
        "insert into messages (id, chat_id, seq, role, reply_to, content, status, provider, model, \
         finish_reason, input_tokens, output_tokens, cost_micros, completed_at) \
         values ($1, $2, 2, 'assistant', $3, $4, 'complete', 'simulated', 'sim-1', 'stop', 3, 40, 0, now())",
    )
    .bind(Uuid::now_v7())
    .bind(chat_id)
    .bind(q)
    .bind(answer)
    .execute(&app.db)
    .await
    .unwrap();
    sqlx::query("update chats set last_seq = 2 where id = $1")
        .bind(chat_id)
        .execute(&app.db)
        .await
        .unwrap();
}

/// Hostile markup arriving token by token from a real provider's wire format, so
/// partial tags are rendered mid-stream: nothing runs, during or after.
#[tokio::test]
async fn browser_streamed_hostile_output_never_runs_script() {
    let mock = MockLlm::start().await;
    mock.set(
        Behavior::tokens([
            "Look ",
            "<scr",
            "ipt>window.__pwned = 6</scr",
            "ipt> and ",
            "<img src=x ",
            "onerror=\"window.__pwned = 7\"",
            "> and `<b>` ",
            "[x](javascript:window.__pwned=8)",
        ])
        .delay(Duration::from_millis(60)),
    );
    let app = spawn_app_with(|c| {
        c.providers.openai_base_url = Some(mock.openai_base());
        c.providers.openai_api_key = Some(Secret::new("sk-test-key"));
        c.providers.free_tier = "openai".into();
    })
    .await;
    let b = Browser::launch().await;
    sign_up(&b, &app.base).await;
    b.click("#new-chat").await;
    send(&b, "be hostile").await;
    let seen_streaming = wait_answer(&b, 0, "streaming", |v| v["status"] == "streaming").await;
    assert_eq!(seen_streaming["status"], "streaming");
    let done = wait_answer(&b, 0, "complete", |v| v["status"] == "complete").await;
    assert!(done["meta"].as_str().unwrap().contains("openai"), "{done}");
    let report = b
        .js(
            "const body = document.querySelector('article.msg.assistant .body'); \
             return {pwned: window.__pwned ?? null, bad: body.querySelectorAll('script, img, b, a[href^=\"javascript\"]').length, \
                     text: body.textContent};",
            json!([]),
        )
        .await;
    assert_eq!(report["pwned"], Value::Null, "{report}");
    assert_eq!(report["bad"], 0, "{report}");
    assert!(
        report["text"]
            .as_str()
            .unwrap()
            .contains("<script>window.__pwned = 6</script>"),
        "{report}"
    );
}
