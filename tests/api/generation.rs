//! The one generation lifecycle: both doors reserve, bill and feed the
//! provider windows alike; the paying workspace's plan governs, read fresh;
//! errors carry `retry_after` on every door; stopping a chat bills its answer.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use switchboard::budget::{Limit, Period, ScopeKind};
use uuid::Uuid;

use crate::helpers::{TestApp, eventually, spawn_app_with};

/// What the workspace's daily budget holds in reservations right now.
async fn held(app: &TestApp, workspace: Uuid) -> i64 {
    let limit = Limit {
        kind: ScopeKind::Workspace,
        id: workspace,
        period: Period::Daily,
        limit_micros: i64::MAX,
    };
    let ledger = app.state.actors.gens.admission.ledger();
    ledger.standing(&limit).await.unwrap().1
}

async fn provider_tokens(app: &TestApp) -> u32 {
    let providers = &app.state.actors.gens.providers;
    providers.windows("simulated").await.unwrap().1
}

async fn usage_rows(app: &TestApp, workspace: Uuid) -> Vec<(Option<Uuid>, i32, i32, i64)> {
    sqlx::query_as(
        "select api_key_id, input_tokens, output_tokens, cost_micros from usage_events
         where workspace_id = $1 order by created_at",
    )
    .bind(workspace)
    .fetch_all(&app.db)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_chat_and_v1_run_the_same_lifecycle() {
    // A slow first token leaves time to see the reservation held.
    let app = spawn_app_with(|c| c.simulated.ttft_ms = 600).await;
    let user = app.new_user().await;
    let ws_id = app.workspace_of(&user).await;
    let key = app.create_key(&user, json!({"name": "lifecycle"})).await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let prompt = "Tell me about the one lifecycle";

    let chat = app.create_chat(&user.access_token).await;
    let mut ws = app.ws(&user.access_token).await;
    ws.send_message(chat, "c1", prompt).await;
    let chat_held = eventually(
        Duration::from_secs(10),
        "the chat's reservation",
        || async { Some(held(&app, ws_id).await).filter(|h| *h > 0) },
    )
    .await;
    let answer = ws.answer().await;
    assert_eq!(answer.end["type"], "done", "{}", answer.end);
    eventually(
        Duration::from_secs(10),
        "the chat's reservation settled",
        || async { (held(&app, ws_id).await == 0).then_some(()) },
    )
    .await;
    let chat_window = provider_tokens(&app).await;
    assert!(chat_window > 0, "the chat fed the provider's token window");

    let client = app.client.clone();
    let url = app.url("/v1/chat/completions");
    let body = json!({"model": "sim-1", "messages": [{"role": "user", "content": prompt}]});
    let request = tokio::spawn(async move {
        client
            .post(url)
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .unwrap()
    });
    let v1_held = eventually(Duration::from_secs(10), "the /v1 reservation", || async {
        Some(held(&app, ws_id).await).filter(|h| *h > 0)
    })
    .await;
    let res = request.await.unwrap();
    assert_eq!(res.status(), 200);
    let completion: Value = res.json().await.unwrap();
    assert_eq!(
        v1_held, chat_held,
        "the same prompt reserves the same worst case"
    );

    let rows = eventually(Duration::from_secs(10), "two usage rows", || async {
        Some(usage_rows(&app, ws_id).await).filter(|r| r.len() == 2)
    })
    .await;
    let (chat_row, v1_row) = (&rows[0], &rows[1]);
    assert_eq!(chat_row.0, None);
    assert!(v1_row.0.is_some(), "the /v1 row names its key");
    assert_eq!(
        (chat_row.1, chat_row.2, chat_row.3),
        (v1_row.1, v1_row.2, v1_row.3),
        "the same tokens and cost through both doors"
    );
    assert_eq!(
        completion["usage"]["completion_tokens"].as_i64(),
        Some(i64::from(v1_row.2))
    );
    assert_eq!(
        answer.end["cost_micros"].as_i64(),
        Some(chat_row.3),
        "done reports what was billed"
    );
    assert_eq!(
        provider_tokens(&app).await,
        2 * chat_window,
        "both doors feed the provider's tokens-per-minute window alike"
    );
}

#[tokio::test]
async fn the_paying_workspaces_plan_is_read_fresh_and_errors_carry_retry_after() {
    let app = spawn_app_with(|c| {
        if let Some(free) = c.plans.get_mut("free") {
            free.messages_per_minute = 2;
        }
    })
    .await;
    let user = app.new_user().await;
    let ws_id = app.workspace_of(&user).await;
    let chat = app.create_chat(&user.access_token).await;
    let mut ws = app.ws(&user.access_token).await;
    for i in 0..2 {
        ws.send_message(chat, &format!("m{i}"), "hello").await;
        assert_eq!(ws.answer().await.end["type"], "done");
    }
    // The WebSocket door: the error frame carries retry_after.
    ws.send_message(chat, "m2", "one too many").await;
    let refused = ws.next_of("error").await;
    assert_eq!(refused["code"], "rate_limited", "{refused}");
    let after = refused["retry_after"]
        .as_u64()
        .expect("retry_after on the frame");
    assert!((1..=60).contains(&after));

    // The REST door, JSON and SSE: Retry-After on the refusal.
    for accept in ["application/json", "text/event-stream"] {
        let res = app
            .client
            .post(app.url(&format!("/api/chats/{chat}/messages")))
            .bearer_auth(&user.access_token)
            .header("accept", accept)
            .json(&json!({"content": "still too many"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 429, "{accept}");
        let secs: u64 = res.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&secs));
    }

    // An upgrade holds on the next message of the socket already open.
    sqlx::query("update workspaces set plan = 'pro' where id = $1")
        .bind(ws_id)
        .execute(&app.db)
        .await
        .unwrap();
    ws.send_message(chat, "m3", "now on pro").await;
    assert_eq!(ws.answer().await.end["type"], "done");
    // And a downgrade too.
    sqlx::query("update workspaces set plan = 'free' where id = $1")
        .bind(ws_id)
        .execute(&app.db)
        .await
        .unwrap();
    ws.send_message(chat, "m4", "back on free").await;
    assert_eq!(ws.next_of("error").await["code"], "rate_limited");
}

#[tokio::test]
async fn deleting_a_chat_mid_answer_bills_what_was_produced() {
    let app = spawn_app_with(|c| {
        c.simulated.token_delay_ms = 100;
        c.simulated.reply_tokens = 60;
    })
    .await;
    let user = app.new_user().await;
    let ws_id = app.workspace_of(&user).await;
    let chat = app.create_chat(&user.access_token).await;
    let mut ws = app.ws(&user.access_token).await;
    ws.send_message(chat, "d1", "a long answer, please").await;
    let mut deltas = 0;
    while deltas < 3 {
        if ws.next().await["type"] == "delta" {
            deltas += 1;
        }
    }
    let res = app
        .client
        .delete(app.url(&format!("/api/chats/{chat}")))
        .bearer_auth(&user.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let rows = eventually(
        Duration::from_secs(10),
        "the usage of the cut answer",
        || async { Some(usage_rows(&app, ws_id).await).filter(|r| !r.is_empty()) },
    )
    .await;
    assert_eq!(rows.len(), 1, "billed once");
    let (_, input, output, cost) = rows[0];
    assert!(input > 0 && cost > 0);
    assert!(
        (3..60).contains(&output),
        "billed the {output} tokens produced before the delete, not the whole answer"
    );
    eventually(
        Duration::from_secs(10),
        "the reservation released",
        || async { (held(&app, ws_id).await == 0).then_some(()) },
    )
    .await;
}

/// Reads until the third delta; answers the answer's message id.
async fn three_deltas(ws: &mut crate::ws_client::WsClient) -> String {
    let mut n = 0;
    let mut answer = None;
    while n < 3 {
        let f = ws.next().await;
        if f["type"] == "delta" {
            n += 1;
            answer = f["message_id"].as_str().map(str::to_owned);
        }
    }
    answer.unwrap()
}

/// Every way an answer can be cut short, in one workspace: each ends billed
/// exactly once, for what the provider produced, and the books balance.
#[tokio::test]
async fn cancel_delete_disconnect_and_v1_drop_each_bill_once_and_balance() {
    let app = spawn_app_with(|c| {
        c.simulated.token_delay_ms = 50;
        c.simulated.reply_tokens = 200;
    })
    .await;
    let user = app.new_user().await;
    let ws_id = app.workspace_of(&user).await;
    let mut ws = app.ws(&user.access_token).await;
    // 1. Cancelled by its sender.
    let cancelled = app.create_chat(&user.access_token).await;
    ws.send_message(cancelled, "c1", "cancel me").await;
    let id = three_deltas(&mut ws).await;
    ws.send(json!({"type": "cancel", "chat_id": cancelled, "message_id": id}))
        .await;
    ws.next_of("done").await;

    // 2. Its chat deleted mid-answer.
    let deleted = app.create_chat(&user.access_token).await;
    ws.send_message(deleted, "d1", "delete me").await;
    three_deltas(&mut ws).await;
    let res = app
        .client
        .delete(app.url(&format!("/api/chats/{deleted}")))
        .bearer_auth(&user.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);

    // 3. A REST (SSE) client that disconnects mid-answer.
    let left = app.create_chat(&user.access_token).await;
    let res = app
        .client
        .post(app.url(&format!("/api/chats/{left}/messages")))
        .bearer_auth(&user.access_token)
        .header("accept", "text/event-stream")
        .json(&json!({"content": "leave me"}))
        .send()
        .await
        .unwrap();
    let mut body = res.bytes_stream();
    let mut seen = String::new();
    while seen.matches("event: delta").count() < 3 {
        seen.push_str(&String::from_utf8_lossy(
            &body.next().await.unwrap().unwrap(),
        ));
    }
    drop(body);

    // 4. A `/v1` client that drops its stream.
    let key = app.create_key(&user, json!({"name": "ledger"})).await;
    let res = app
        .client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(key["key"].as_str().unwrap())
        .json(&json!({"model": "sim-1", "stream": true,
                      "messages": [{"role": "user", "content": "drop me"}]}))
        .send()
        .await
        .unwrap();
    let mut body = res.bytes_stream();
    let mut seen = String::new();
    while seen.matches("\"content\"").count() < 4 {
        seen.push_str(&String::from_utf8_lossy(
            &body.next().await.unwrap().unwrap(),
        ));
    }
    drop(body);

    // Four answers, four usage rows, nothing reserved, and the provider's
    // token window (what it produced, in and out) equals what was billed.
    let rows = eventually(Duration::from_secs(15), "four usage rows", || async {
        let rows = usage_rows(&app, ws_id).await;
        (rows.len() >= 4 && held(&app, ws_id).await == 0).then_some(rows)
    })
    .await;
    assert_eq!(rows.len(), 4, "each answer billed once: {rows:?}");
    for (_, input, output, cost) in &rows {
        assert!(*input > 0 && *cost >= 0);
        assert!(
            (3..200).contains(output),
            "billed {output}: what was produced before the cut, not the whole answer"
        );
    }
    let billed: i64 = rows.iter().map(|r| i64::from(r.1 + r.2)).sum();
    assert_eq!(i64::from(provider_tokens(&app).await), billed);
    let per_answer: Vec<(i32, i64)> = sqlx::query_as(
        "select m.output_tokens, (select count(*) from usage_events u where u.message_id = m.id)
         from messages m where m.role = 'assistant' and m.chat_id = any($1)",
    )
    .bind([cancelled, left])
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(per_answer.len(), 2);
    for (output, n) in per_answer {
        assert_eq!(n, 1, "one usage row per stored answer");
        assert!(
            rows.iter().any(|r| r.2 == output),
            "the row bills what was stored"
        );
    }
}

#[tokio::test]
async fn a_v1_client_gone_before_the_first_token_leaves_nothing_held() {
    let app = spawn_app_with(|c| c.simulated.ttft_ms = 1_500).await;
    let user = app.new_user().await;
    let ws_id = app.workspace_of(&user).await;
    let key = app.create_key(&user, json!({"name": "gone early"})).await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let (client, url) = (app.client.clone(), app.url("/v1/chat/completions"));
    let request = tokio::spawn(async move {
        client
            .post(url)
            .bearer_auth(key)
            .timeout(Duration::from_millis(700))
            .json(&json!({"model": "sim-1", "stream": true,
                          "messages": [{"role": "user", "content": "too slow for me"}]}))
            .send()
            .await
    });
    eventually(
        Duration::from_secs(5),
        "the request's reservation",
        || async { (held(&app, ws_id).await > 0).then_some(()) },
    )
    .await;
    let sent = request.await.unwrap();
    assert!(
        sent.as_ref().is_err_and(reqwest::Error::is_timeout),
        "the client gave up before the first token: {sent:?}"
    );
    // The request's task is gone; the generation it was running goes on in a
    // task of its own, sees the cancel and releases the reservation.
    eventually(
        Duration::from_secs(10),
        "the reservation released",
        || async { (held(&app, ws_id).await == 0).then_some(()) },
    )
    .await;
    let rows = usage_rows(&app, ws_id).await;
    assert!(rows.len() <= 1, "billed at most once: {rows:?}");
    assert!(
        rows.iter().all(|r| r.2 == 0),
        "nothing was produced: {rows:?}"
    );
}
