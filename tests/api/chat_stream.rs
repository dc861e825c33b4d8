use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use switchboard::providers::simulated::reply_tokens;
use uuid::Uuid;

use crate::helpers::{TestApp, error_code, spawn_app, spawn_app_with};

/// One parsed SSE event.
#[derive(Debug, Clone)]
pub(crate) struct SseEvent {
    pub id: Option<String>,
    pub event: String,
    pub data: Value,
}

/// Reads SSE events from a response until `stop` says so (or the stream ends).
pub(crate) async fn read_sse(
    res: reqwest::Response,
    mut stop: impl FnMut(&SseEvent) -> bool,
) -> Vec<SseEvent> {
    let mut body = res.bytes_stream();
    let mut buf = String::new();
    let mut events = Vec::new();
    loop {
        while let Some(pos) = buf.find("\n\n") {
            let block: String = buf.drain(..pos + 2).collect();
            let (mut id, mut event, mut data) = (None, String::new(), String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = Some(v.trim().to_owned());
                } else if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                }
            }
            if data.is_empty() {
                continue; // keep-alive comment
            }
            let ev = SseEvent {
                id,
                event,
                data: serde_json::from_str(&data).unwrap(),
            };
            let done = stop(&ev);
            events.push(ev);
            if done {
                return events;
            }
        }
        match tokio::time::timeout(Duration::from_secs(15), body.next())
            .await
            .expect("sse chunk in time")
        {
            Some(chunk) => buf.push_str(&String::from_utf8_lossy(&chunk.unwrap())),
            None => return events,
        }
    }
}

async fn post_message(
    app: &TestApp,
    token: &str,
    chat: Uuid,
    body: Value,
    sse: bool,
) -> reqwest::Response {
    let mut req = app
        .client
        .post(app.url(&format!("/api/chats/{chat}/messages")))
        .bearer_auth(token)
        .json(&body);
    if sse {
        req = req.header("accept", "text/event-stream");
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn rest_send_answers_with_the_finished_message() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let chat = app.create_chat(&user.access_token).await;
    let res = post_message(
        &app,
        &user.access_token,
        chat,
        json!({"content": "plain json"}),
        false,
    )
    .await;
    assert_eq!(res.status(), 200);
    let m: Value = res.json().await.unwrap();
    assert_eq!(m["role"], "assistant");
    assert_eq!(m["status"], "complete");
    assert_eq!(m["content"], reply_tokens("plain json", 20).concat());
    assert_eq!(m["seq"], 2);
    assert!(m["cost_micros"].as_i64().unwrap() > 0);

    // Idempotent on client_msg_id: the same answer, no new rows.
    let body = json!({"content": "again", "client_msg_id": "rest-1"});
    let first: Value = post_message(&app, &user.access_token, chat, body.clone(), false)
        .await
        .json()
        .await
        .unwrap();
    let second: Value = post_message(&app, &user.access_token, chat, body, false)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(first["id"], second["id"]);
    let (n,): (i64,) = sqlx::query_as("select count(*) from messages where chat_id = $1")
        .bind(chat)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(n, 4);
}

#[tokio::test]
async fn rest_send_streams_sse_with_resumable_ids() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let chat = app.create_chat(&user.access_token).await;
    let res = post_message(
        &app,
        &user.access_token,
        chat,
        json!({"content": "stream it"}),
        true,
    )
    .await;
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let events = read_sse(res, |_| false).await; // the stream ends by itself after done
    let kinds: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"ack"));
    assert_eq!(kinds.last(), Some(&"done"));
    assert!(events.iter().all(|e| e.event == e.data["type"]));
    assert!(
        events.iter().all(|e| e.id.is_some()),
        "every event carries an id"
    );
    let text: String = events
        .iter()
        .filter(|e| e.event == "delta")
        .map(|e| e.data["text"].as_str().unwrap())
        .collect();
    assert_eq!(text, reply_tokens("stream it", 20).concat());
    // Delta ids are seq:index of the answer (seq 2).
    let first_delta = events.iter().find(|e| e.event == "delta").unwrap();
    assert_eq!(first_delta.id.as_deref(), Some("2:0"));
}

#[tokio::test]
async fn sse_resume_with_last_event_id_loses_nothing() {
    let app = spawn_app_with(|c| c.simulated.token_delay_ms = 30).await;
    let user = app.new_user().await;
    let chat = app.create_chat(&user.access_token).await;
    let res = post_message(
        &app,
        &user.access_token,
        chat,
        json!({"content": "resume me"}),
        true,
    )
    .await;
    // Read a few deltas, then drop the connection.
    let mut deltas = 0;
    let seen = read_sse(res, |e| {
        deltas += usize::from(e.event == "delta");
        deltas == 3
    })
    .await;
    let last_id = seen.last().unwrap().id.clone().unwrap();
    assert_eq!(last_id, "2:2");

    // Resume: the message in progress is replayed whole, then its remaining deltas, then done.
    let res = app
        .client
        .get(app.url(&format!("/api/chats/{chat}/events")))
        .bearer_auth(&user.access_token)
        .header("last-event-id", &last_id)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // A REST client that leaves cancels its answer: depending on timing the
    // replay shows it already cancelled, or streaming and then its `done`.
    let resumed = read_sse(res, |e| {
        e.event == "done"
            || e.event == "error"
            || (e.event == "message" && e.data["message"]["status"] != "streaming")
    })
    .await;
    let end = resumed.last().unwrap();
    if end.event == "done" {
        assert_eq!(end.data["finish_reason"], "cancelled");
    } else {
        assert_eq!(end.data["message"]["status"], "cancelled");
    }
    let snapshot = &resumed[0];
    assert_eq!(snapshot.event, "message");
    assert_eq!(snapshot.data["seq"], 2);
    let mut text = snapshot.data["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    for e in resumed.iter().filter(|e| e.event == "delta") {
        text.push_str(e.data["text"].as_str().unwrap());
    }
    let stored: (String, String) =
        sqlx::query_as("select content, status from messages where chat_id = $1 and seq = 2")
            .bind(chat)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(stored.1, "cancelled");
    assert_eq!(text, stored.0, "resumed text equals the stored answer");
}

#[tokio::test]
async fn events_since_seq_replays_history() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let chat = app.create_chat(&user.access_token).await;
    for i in 0..2 {
        let res = post_message(
            &app,
            &user.access_token,
            chat,
            json!({"content": format!("q{i}")}),
            false,
        )
        .await;
        assert_eq!(res.status(), 200);
    }
    let res = app
        .client
        .get(app.url(&format!("/api/chats/{chat}/events?since_seq=1")))
        .bearer_auth(&user.access_token)
        .send()
        .await
        .unwrap();
    let mut n = 0;
    let events = read_sse(res, |_| {
        n += 1;
        n == 3
    })
    .await;
    let seqs: Vec<i64> = events
        .iter()
        .map(|e| e.data["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, vec![2, 3, 4]);
    assert_eq!(events[0].id.as_deref(), Some("2"));
}

#[tokio::test]
async fn rest_send_rejects_bad_input_and_strangers() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let other = app.new_user().await;
    let chat = app.create_chat(&user.access_token).await;
    let cases = [
        json!({"content": ""}),
        json!({"content": "x".repeat(40_000)}),
        json!({"content": "hi", "model": "nope"}),
        json!({"content": "hi", "client_msg_id": "x".repeat(200)}),
        json!({"content": 5}),
        json!({}),
    ];
    for body in cases {
        let res = post_message(&app, &user.access_token, chat, body.clone(), false).await;
        assert_eq!(res.status(), 400, "{body:.80}");
        assert_eq!(error_code(res).await, "invalid_request");
    }
    let res = post_message(
        &app,
        &other.access_token,
        chat,
        json!({"content": "hi"}),
        false,
    )
    .await;
    assert_eq!(res.status(), 404);
    let res = post_message(
        &app,
        &user.access_token,
        Uuid::now_v7(),
        json!({"content": "hi"}),
        false,
    )
    .await;
    assert_eq!(res.status(), 404);
    let res = app
        .client
        .post(app.url(&format!("/api/chats/{chat}/messages")))
        .json(&json!({"content": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = app
        .client
        .get(app.url(&format!("/api/chats/{chat}/events")))
        .bearer_auth(&other.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let res = app
        .client
        .get(app.url(&format!("/api/chats/{chat}/events")))
        .bearer_auth(&user.access_token)
        .header("last-event-id", "garbage")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let (n,): (i64,) = sqlx::query_as("select count(*) from messages")
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(n, 0, "nothing stored for refused sends");
}

#[tokio::test]
async fn actor_metrics_are_exported() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let chat = app.create_chat(&user.access_token).await;
    let mut ws = app.ws(&user.access_token).await;
    ws.send_message(chat, "m", "metrics").await;
    ws.answer().await;
    let text = app.metrics_text().await;
    for name in [
        "switchboard_actors_live{kind=\"chat\"}",
        "switchboard_actors_live{kind=\"user\"}",
        "switchboard_actor_messages_total{kind=\"chat\"}",
        "switchboard_actor_queue_depth{kind=\"chat\"}",
        "switchboard_streams_active",
        "switchboard_ws_connections",
        "switchboard_ws_frames_total{direction=\"in\"}",
        "switchboard_ws_frames_total{direction=\"out\"}",
        "switchboard_tokens_streamed_total",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
}

#[tokio::test]
async fn an_sse_resend_of_an_answered_message_replays_its_end_and_closes() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let chat = app.create_chat(&user.access_token).await;
    let body = json!({"content": "answer me once", "client_msg_id": "sse-again"});
    let first: Value = post_message(&app, &user.access_token, chat, body.clone(), false)
        .await
        .json()
        .await
        .unwrap();
    let res = post_message(&app, &user.access_token, chat, body, true).await;
    assert_eq!(res.status(), 200);
    // The stream ends by itself: nothing more will happen to this message.
    let text = tokio::time::timeout(Duration::from_secs(10), res.text())
        .await
        .expect("the replay closes instead of waiting forever")
        .unwrap();
    let kinds: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(kinds, vec!["ack", "message", "done"], "{text}");
    assert!(text.contains(first["id"].as_str().unwrap()));
    assert!(text.contains(&format!("id: {}:done", first["seq"])));
}

#[tokio::test]
async fn an_events_ticket_lets_a_headerless_client_follow_one_chat_only() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let chat = app.create_chat(&user.access_token).await;
    let other_chat = app.create_chat(&user.access_token).await;
    let stranger = app.new_user().await;
    let ticket_for = |token: String, chat: Uuid| {
        let app = &app;
        async move {
            app.client
                .post(app.url(&format!("/api/chats/{chat}/events/ticket")))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
        }
    };
    // A stranger gets no ticket for someone else's chat.
    assert_eq!(
        ticket_for(stranger.access_token.clone(), chat)
            .await
            .status(),
        404
    );
    let res = ticket_for(user.access_token.clone(), chat).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["expires_in"], 60);
    let ticket = body["ticket"].as_str().unwrap().to_owned();
    let follow = |chat: Uuid, ticket: &str| {
        app.client
            .get(app.url(&format!(
                "/api/chats/{chat}/events?since_seq=0&ticket={ticket}"
            )))
            .send()
    };
    // It opens this chat's stream without a header, and sees the chat's events.
    let res = follow(chat, &ticket).await.unwrap();
    assert_eq!(res.status(), 200);
    post_message(
        &app,
        &user.access_token,
        chat,
        json!({"content": "hi"}),
        false,
    )
    .await;
    let seen = read_sse(res, |e| e.event == "done").await;
    assert!(seen.iter().any(|e| e.event == "done"));
    // Not another chat's, and it is no access token.
    assert_eq!(follow(other_chat, &ticket).await.unwrap().status(), 401);
    let res = app
        .client
        .get(app.url("/api/chats"))
        .bearer_auth(&ticket)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(follow(chat, "garbage").await.unwrap().status(), 401);
    // Without header or ticket: 401 naming both ways in.
    let res = app
        .client
        .get(app.url(&format!("/api/chats/{chat}/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}
