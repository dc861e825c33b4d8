//! SIGTERM (the app's shutdown signal) drains every door: new sends refused,
//! running answers cancelled at the deadline and billed once, rows final, then
//! a terminal event on every stream (WebSocket `error` + close 1001, SSE
//! `error`, `/v1` error chunk) before the app returns within its grace.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    chat_stream::read_sse,
    helpers::{TestApp, eventually, spawn_app_with},
};

/// The chat's (only) answer once it is stored as streaming.
async fn streaming_answer(app: &TestApp, chat: Uuid) -> Uuid {
    eventually(Duration::from_secs(10), "the answer streaming", || async {
        sqlx::query_scalar(
            "select id from messages where chat_id = $1 and role = 'assistant' and status = 'streaming'",
        )
        .bind(chat)
        .fetch_optional(&app.db)
        .await
        .unwrap()
    })
    .await
}

#[tokio::test]
async fn shutdown_drains_every_door_bills_once_and_ends_each_stream() {
    let mut app = spawn_app_with(|c| {
        c.server.shutdown_grace_secs = 2;
        // Answers of about six seconds: still running when the grace's
        // finishing phase (60 %) ends.
        c.simulated.token_delay_ms = 20;
        c.simulated.reply_tokens = 300;
    })
    .await;
    let user = app.new_user().await;
    let key = app.create_key(&user, json!({"name": "drain"})).await;
    let key_id: Uuid = key["id"].as_str().unwrap().parse().unwrap();
    let key = key["key"].as_str().unwrap().to_owned();

    // The WebSocket door, mid-answer.
    let ws_chat = app.create_chat(&user.access_token).await;
    let mut ws = app.ws(&user.access_token).await;
    ws.send_message(ws_chat, "w1", "a long answer please").await;
    let mut ws_text = String::new();
    let first = ws.next_of("delta").await;
    ws_text.push_str(first["text"].as_str().unwrap());

    // The SSE door, mid-answer.
    let sse_chat = app.create_chat(&user.access_token).await;
    let res = app
        .client
        .post(app.url(&format!("/api/chats/{sse_chat}/messages")))
        .bearer_auth(&user.access_token)
        .header("accept", "text/event-stream")
        .json(&json!({"content": "another long one"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let sse = tokio::spawn(read_sse(res, |_| false));
    let sse_answer = streaming_answer(&app, sse_chat).await;
    // And a follower of that chat (the SSE events endpoint).
    let res = app
        .client
        .get(app.url(&format!("/api/chats/{sse_chat}/events")))
        .bearer_auth(&user.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let follower = tokio::spawn(read_sse(res, |_| false));

    // The `/v1` door, mid-answer.
    let res = app
        .client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({"model": "sim-1", "stream": true,
                      "messages": [{"role": "user", "content": "and a third"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut v1_body = res.bytes_stream();
    let mut v1_text = String::from_utf8_lossy(&v1_body.next().await.unwrap().unwrap()).into_owned();
    let v1 = tokio::spawn(async move {
        while let Some(chunk) = v1_body.next().await {
            match chunk {
                Ok(c) => v1_text.push_str(&String::from_utf8_lossy(&c)),
                Err(_) => break,
            }
        }
        v1_text
    });

    // SIGTERM. While the node drains, a new send is refused as retryable,
    // naming the message (it was not stored).
    let state = app.state.clone();
    let stopping = tokio::spawn(async move {
        app.shut_down().await;
        app
    });
    eventually(Duration::from_secs(5), "draining", || async {
        state.actors.gens.draining.is_cancelled().then_some(())
    })
    .await;
    ws.send_message(ws_chat, "w2", "too late").await;
    let app = stopping.await.unwrap();

    // The WebSocket: the rest of its answer, `done` (cancelled), the refusal,
    // then the shutdown `error` and close 1001.
    let mut frames = Vec::new();
    let close = loop {
        match ws.next_or_close().await {
            Ok(f) => frames.push(f),
            Err(code) => break code,
        }
    };
    assert_eq!(close, Some(1001), "close 1001 after {frames:?}");
    for f in frames.iter().filter(|f| f["type"] == "delta") {
        ws_text.push_str(f["text"].as_str().unwrap());
    }
    let done = frames.iter().find(|f| f["type"] == "done").expect("done");
    assert_eq!(done["finish_reason"], "cancelled");
    let refused = frames
        .iter()
        .find(|f| f["type"] == "error" && f["client_msg_id"] == "w2")
        .expect("the late send is refused");
    assert_eq!(refused["code"], "unavailable");
    assert_eq!(refused["chat_id"], json!(ws_chat));
    let last = frames.last().unwrap();
    assert_eq!(last["type"], "error");
    assert_eq!(last["code"], "unavailable");
    assert!(last["message"].as_str().unwrap().contains("shutting down"));

    // SSE: the stream of one answer ends with that answer's `done`
    // (cancelled); a follower of the chat gets the same `done`, then the
    // shutdown `error`, then the end.
    let events = sse.await.unwrap();
    let last = events.last().unwrap();
    assert_eq!(last.event, "done", "{events:?}");
    assert_eq!(last.data["message_id"], json!(sse_answer));
    assert_eq!(last.data["finish_reason"], "cancelled");
    let events = follower.await.unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(kinds.last(), Some(&"error"), "{kinds:?}");
    assert_eq!(events.last().unwrap().data["code"], "unavailable");
    assert!(
        events
            .iter()
            .any(|e| e.event == "done" && e.data["message_id"] == json!(sse_answer)),
        "{kinds:?}"
    );

    // `/v1`: an error chunk and no `[DONE]`, so the cut answer never looks whole.
    let v1_text = v1.await.unwrap();
    assert!(v1_text.contains("shutting down"), "{v1_text}");
    assert!(!v1_text.contains("[DONE]"), "{v1_text}");

    // The books: both chat answers final as cancelled with the text the
    // clients saw, and every answer billed exactly once.
    let rows: Vec<(Uuid, Uuid, String, String, i32, i64)> = sqlx::query_as(
        "select id, chat_id, status, content, output_tokens, cost_micros from messages
         where role = 'assistant' and chat_id = any($1)",
    )
    .bind([ws_chat, sse_chat])
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(rows.len(), 2, "no answer for the refused send");
    for (id, chat, status, content, output, cost) in &rows {
        assert_eq!(status, "cancelled");
        assert!(*output > 0);
        if *chat == ws_chat {
            assert_eq!(content, &ws_text, "stored what the socket saw");
        }
        let billed: Vec<(i32, i64)> = sqlx::query_as(
            "select output_tokens, cost_micros from usage_events where message_id = $1",
        )
        .bind(id)
        .fetch_all(&app.db)
        .await
        .unwrap();
        assert_eq!(billed, vec![(*output, *cost)], "billed once, as stored");
    }
    let v1_rows: i64 = sqlx::query_scalar(
        "select count(*) from usage_events where api_key_id = $1 and output_tokens > 0",
    )
    .bind(key_id)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(v1_rows, 1, "the /v1 answer billed once");
    let stored: Vec<Value> = sqlx::query_scalar(
        "select to_jsonb(m) from messages m where chat_id = $1 and client_msg_id = 'w2'",
    )
    .bind(ws_chat)
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert!(stored.is_empty(), "the refused send was not stored");
}
