use std::time::Duration;

use serde_json::{Value, json};
use switchboard::providers::simulated::reply_tokens;
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};
use uuid::Uuid;

use crate::{
    helpers::{TestApp, eventually, spawn_app, spawn_app_with},
    ws_client::WsClient,
};

/// The simulated answer to `prompt` under the test config (20 tokens).
fn expected(prompt: &str) -> String {
    reply_tokens(prompt, 20).concat()
}

async fn history(app: &TestApp, token: &str, chat_id: Uuid) -> Vec<Value> {
    let res = app
        .client
        .get(app.url(&format!("/api/chats/{chat_id}/messages")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.json::<Value>().await.unwrap()["messages"]
        .as_array()
        .unwrap()
        .clone()
}

/// Adds `user` to the workspace of `chat_id` so they can share it.
async fn share_chat(app: &TestApp, chat_id: Uuid, user: Uuid) {
    sqlx::query(
        "insert into workspace_members (workspace_id, user_id, role) select workspace_id, $2, 'member' from chats where id = $1",
    )
    .bind(chat_id)
    .bind(user)
    .execute(&app.db)
    .await
    .unwrap();
}

#[tokio::test]
async fn send_streams_ordered_deltas_and_history_matches() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let chat = app.create_chat(&user.access_token).await;
    let mut ws = app.ws(&user.access_token).await;
    ws.send(json!({"type": "subscribe", "chat_id": chat})).await;
    ws.send_message(chat, "m1", "hello there").await;
    let a = ws.answer().await;

    assert_eq!(a.ack["client_msg_id"], "m1");
    assert_eq!(a.ack["seq"], 1);
    for (i, d) in a.deltas.iter().enumerate() {
        assert_eq!(d["index"], i as u64, "deltas in order");
        assert_eq!(d["message_id"], a.assistant_id.to_string());
    }
    assert_eq!(a.text, expected("hello there"));
    assert_eq!(a.end["type"], "done");
    assert_eq!(a.end["finish_reason"], "stop");
    assert_eq!(a.end["provider"], "simulated");
    assert_eq!(a.end["model"], "sim-1");
    assert_eq!(a.end["usage"]["output_tokens"], 20);
    // sim-1: $0.10 / $0.40 per million tokens, rounded up per direction.
    let input = a.end["usage"]["input_tokens"].as_u64().unwrap();
    let cost = (input * 100_000).div_ceil(1_000_000) + (20u64 * 400_000).div_ceil(1_000_000);
    assert_eq!(a.end["cost_micros"], cost);
    assert_eq!(a.end["cost_usd"], format!("0.{cost:06}"));

    let msgs = history(&app, &user.access_token, chat).await;
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0]["role"], "user");
    assert_eq!(msgs[0]["content"], "hello there");
    assert_eq!(msgs[1]["role"], "assistant");
    assert_eq!(msgs[1]["status"], "complete");
    assert_eq!(
        msgs[1]["content"], a.text,
        "REST history equals what was streamed"
    );
    assert_eq!(msgs[1]["seq"], 2);
    assert_eq!(msgs[1]["cost_micros"], cost);
    assert_eq!(msgs[1]["reply_to"], msgs[0]["id"]);

    // Usage lands in usage_events through the batching writer.
    let mut n = 0i64;
    for _ in 0..50 {
        (n,) = sqlx::query_as("select count(*) from usage_events where message_id = $1")
            .bind(a.assistant_id)
            .fetch_one(&app.db)
            .await
            .unwrap();
        if n > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(n, 1);
    let (cost_row,): (i64,) =
        sqlx::query_as("select cost_micros from usage_events where message_id = $1")
            .bind(a.assistant_id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(cost_row as u64, cost);

    // The socket stays usable.
    ws.send(json!({"type": "ping"})).await;
    assert_eq!(ws.next_of("pong").await["type"], "pong");
}

#[tokio::test]
async fn auth_frame_works_without_a_header() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let chat = app.create_chat(&user.access_token).await;
    let mut ws = app.ws_anonymous().await;
    ws.send(json!({"type": "auth", "token": user.access_token}))
        .await;
    ws.send_message(chat, "a1", "hi").await;
    let a = ws.answer().await;
    assert_eq!(a.text, expected("hi"));
}

#[tokio::test]
async fn two_users_on_one_chat_see_the_same_ordered_events() {
    let app = spawn_app().await;
    let alice = app.new_user().await;
    let bob = app.new_user().await;
    let chat = app.create_chat(&alice.access_token).await;
    share_chat(&app, chat, bob.id).await;
    let mut a1 = app.ws(&alice.access_token).await;
    let mut a2 = app.ws(&alice.access_token).await; // a second socket of the same user
    let mut b = app.ws(&bob.access_token).await;
    for ws in [&mut a1, &mut a2, &mut b] {
        ws.send(json!({"type": "subscribe", "chat_id": chat})).await;
    }
    // Subscriptions are acknowledged implicitly; a ping round-trip makes sure they are registered.
    for ws in [&mut a1, &mut a2, &mut b] {
        ws.send(json!({"type": "ping"})).await;
        ws.next_of("pong").await;
    }
    a1.send_message(chat, "x1", "shared question").await;
    let sent = a1.answer().await;
    let without_ack = |frames: &[Value]| -> Vec<Value> {
        frames
            .iter()
            .filter(|f| f["type"] != "ack")
            .cloned()
            .collect()
    };
    let seen_by_sender = without_ack(&sent.frames);
    for ws in [&mut a2, &mut b] {
        let other = ws.answer().await;
        assert_eq!(without_ack(&other.frames), seen_by_sender);
    }
}

/// A message on an idle chat is stored together with its opened answer; one
/// sent while another waits or streams is stored alone and queued. Either
/// way: every message answered once, right after the one before it is done.
#[tokio::test]
async fn back_to_back_sends_from_two_users_are_each_answered_once_in_seq_order() {
    let app = spawn_app().await;
    let alice = app.new_user().await;
    let bob = app.new_user().await;
    let chat = app.create_chat(&alice.access_token).await;
    share_chat(&app, chat, bob.id).await;
    let mut a = app.ws(&alice.access_token).await;
    let mut b = app.ws(&bob.access_token).await;
    for i in 0..3 {
        a.send_message(chat, &format!("a{i}"), &format!("alice {i}"))
            .await;
        b.send_message(chat, &format!("b{i}"), &format!("bob {i}"))
            .await;
    }
    for _ in 0..3 {
        a.next_of("ack").await;
        b.next_of("ack").await;
    }
    eventually(Duration::from_secs(20), "six answers complete", || async {
        let done: i64 = sqlx::query_scalar(
            "select count(*) from messages where chat_id = $1 and role = 'assistant' and status = 'complete'",
        )
        .bind(chat)
        .fetch_one(&app.db)
        .await
        .unwrap();
        (done == 6).then_some(())
    })
    .await;
    let rows: Vec<(i64, String, Option<Uuid>, Uuid, bool)> = sqlx::query_as(
        "select seq, role, reply_to, id, awaiting_answer from messages where chat_id = $1 order by seq",
    )
    .bind(chat)
    .fetch_all(&app.db)
    .await
    .unwrap();
    assert_eq!(rows.len(), 12, "six messages, six answers: {rows:?}");
    assert!(rows.iter().all(|r| !r.4), "nothing left waiting");
    let users: Vec<&(i64, String, Option<Uuid>, Uuid, bool)> =
        rows.iter().filter(|r| r.1 == "user").collect();
    let answered: Vec<Uuid> = rows.iter().filter_map(|r| r.2).collect();
    assert_eq!(
        answered,
        users.iter().map(|u| u.3).collect::<Vec<_>>(),
        "one answer per message, in the messages' seq order"
    );
    let seqs: Vec<i64> = rows.iter().map(|r| r.0).collect();
    assert_eq!(seqs, (1..=12).collect::<Vec<_>>(), "no gaps");
    // One answer at a time: each opens after the one before it ended.
    let spans: Vec<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)> =
        sqlx::query_as(
            "select created_at, completed_at from messages
             where chat_id = $1 and role = 'assistant' order by seq",
        )
        .bind(chat)
        .fetch_all(&app.db)
        .await
        .unwrap();
    for w in spans.windows(2) {
        assert!(w[1].0 >= w[0].1, "answers overlapped: {spans:?}");
    }
}

#[tokio::test]
async fn subscribe_since_seq_replays_then_goes_live_without_gaps() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let chat = app.create_chat(&user.access_token).await;
    let mut ws = app.ws(&user.access_token).await;
    ws.send_message(chat, "r1", "first").await;
    ws.answer().await;
    drop(ws);

    // While away, another socket holds a conversation.
    let mut other = app.ws(&user.access_token).await;
    other.send_message(chat, "r2", "second").await;
    other.answer().await;

    let mut back = app.ws(&user.access_token).await;
    back.send(json!({"type": "subscribe", "chat_id": chat, "since_seq": 2}))
        .await;
    // Seq 2 is an answer: it comes again as it stands (the client cannot say
    // whether it saw its end), then everything after it.
    let replay: Vec<Value> = vec![back.next().await, back.next().await, back.next().await];
    let seqs: Vec<i64> = replay.iter().map(|f| f["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, vec![2, 3, 4]);
    assert_eq!(replay[0]["message"]["status"], "complete");
    assert_eq!(replay[0]["message"]["content"], expected("first"));
    assert_eq!(replay[2]["message"]["content"], expected("second"));
    // Then live: the next send continues at seq 5, with nothing replayed twice.
    back.send_message(chat, "r3", "third").await;
    let a = back.answer().await;
    assert_eq!(a.ack["seq"], 5);
    let seqs: Vec<i64> = a
        .frames
        .iter()
        .filter(|f| f["type"] == "message")
        .map(|f| f["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, vec![5, 6]);
}

/// Waits until the chat's (only) answer is stored with `status`.
async fn answer_status_is(app: &TestApp, chat: Uuid, status: &str) {
    eventually(Duration::from_secs(10), status, || async {
        let now: Option<String> = sqlx::query_scalar(
            "select status from messages where chat_id = $1 and role = 'assistant'",
        )
        .bind(chat)
        .fetch_optional(&app.db)
        .await
        .unwrap();
        (now.as_deref() == Some(status)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_client_that_leaves_mid_answer_finds_it_whole_on_return() {
    let app = spawn_app_with(|c| {
        c.simulated.token_delay_ms = 30;
    })
    .await;
    let user = app.new_user().await;
    let chat = app.create_chat(&user.access_token).await;
    let mut ws = app.ws(&user.access_token).await;
    ws.send_message(chat, "d1", "long one").await;
    ws.next_of("delta").await;
    drop(ws); // gone mid-answer; generation continues by default

    answer_status_is(&app, chat, "complete").await;
    let mut back = app.ws(&user.access_token).await;
    back.send(json!({"type": "subscribe", "chat_id": chat, "since_seq": 0}))
        .await;
    let user_msg = back.next().await;
    let answer = back.next().await;
    assert_eq!(user_msg["seq"], 1);
    assert_eq!(answer["message"]["status"], "complete");
    assert_eq!(answer["message"]["content"], expected("long one"));
}

#[tokio::test]
async fn joining_mid_answer_gets_the_text_so_far_then_the_rest() {
    let app = spawn_app_with(|c| c.simulated.token_delay_ms = 30).await;
    let user = app.new_user().await;
    let chat = app.create_chat(&user.access_token).await;
    let mut first = app.ws(&user.access_token).await;
    first.send_message(chat, "j1", "join me").await;
    for _ in 0..3 {
        first.next_of("delta").await;
    }
    let mut late = app.ws(&user.access_token).await;
    late.send(json!({"type": "subscribe", "chat_id": chat, "since_seq": 1}))
        .await;
    let snap = late.next().await;
    assert_eq!(snap["type"], "message");
    assert_eq!(snap["message"]["status"], "streaming");
    let included = snap["deltas_included"].as_u64().unwrap();
    let mut text = snap["message"]["content"].as_str().unwrap().to_owned();
    loop {
        let f = late.next().await;
        match f["type"].as_str().unwrap() {
            "delta" => {
                assert!(f["index"].as_u64().unwrap() >= included, "no delta twice");
                text.push_str(f["text"].as_str().unwrap());
            }
            "done" => break,
            _ => {}
        }
    }
    assert_eq!(text, expected("join me"), "no gap, no duplicate");
}

#[tokio::test]
async fn duplicate_client_msg_id_gets_the_same_ack_and_no_second_answer() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let chat = app.create_chat(&user.access_token).await;
    let mut ws = app.ws(&user.access_token).await;
    ws.send_message(chat, "same", "once").await;
    let first = ws.answer().await;
    ws.send_message(chat, "same", "once").await;
    let again = ws.next_of("ack").await;
    assert_eq!(again, first.ack);
    // The repeat is answered before anything could be stored.
    let msgs = history(&app, &user.access_token, chat).await;
    assert_eq!(msgs.len(), 2, "one user message and one answer: {msgs:?}");
}

#[tokio::test]
async fn cancel_stops_the_answer_and_keeps_the_partial_text() {
    let app = spawn_app_with(|c| {
        c.simulated.token_delay_ms = 40;
        c.simulated.reply_tokens = 200;
    })
    .await;
    let user = app.new_user().await;
    let chat = app.create_chat(&user.access_token).await;
    let mut ws = app.ws(&user.access_token).await;
    ws.send_message(chat, "c1", "stop me").await;
    let assistant = loop {
        let f = ws.next().await;
        if f["type"] == "message" && f["message"]["role"] == "assistant" {
            break f["message"]["id"].as_str().unwrap().to_owned();
        }
    };
    let mut text = String::new();
    for _ in 0..3 {
        text.push_str(ws.next_of("delta").await["text"].as_str().unwrap());
    }
    ws.send(json!({"type": "cancel", "chat_id": chat, "message_id": assistant}))
        .await;
    let mut done = Value::Null;
    while done.is_null() {
        let f = ws.next().await;
        match f["type"].as_str().unwrap() {
            "delta" => text.push_str(f["text"].as_str().unwrap()),
            "done" => done = f,
            other => panic!("unexpected {other}: {f}"),
        }
    }
    assert_eq!(done["finish_reason"], "cancelled");
    let produced = done["usage"]["output_tokens"].as_u64().unwrap();
    assert!(produced > 0 && produced < 200, "{produced}");
    let msgs = history(&app, &user.access_token, chat).await;
    assert_eq!(msgs[1]["status"], "cancelled");
    assert_eq!(msgs[1]["content"], text);
    assert_eq!(
        msgs[1]["output_tokens"], produced,
        "billed for what was produced"
    );
    // Cancelling again: nothing is running.
    ws.send(json!({"type": "cancel", "chat_id": chat, "message_id": assistant}))
        .await;
    assert_eq!(ws.next_of("error").await["code"], "not_found");
}

#[tokio::test]
async fn a_killed_chat_actor_restarts_and_loses_nothing_acknowledged() {
    let app = spawn_app_with(|c| {
        c.simulated.token_delay_ms = 30;
        c.simulated.reply_tokens = 100;
        c.chat.checkpoint_ms = 50;
    })
    .await;
    let user = app.new_user().await;
    let chat = app.create_chat(&user.access_token).await;
    let mut ws = app.ws(&user.access_token).await;
    ws.send_message(chat, "k1", "kill me").await;
    let ack = ws.next_of("ack").await;
    for _ in 0..5 {
        ws.next_of("delta").await;
    }
    eventually(
        Duration::from_secs(5),
        "a checkpoint of the partial text",
        || async {
            let saved: String = sqlx::query_scalar(
                "select content from messages where chat_id = $1 and role = 'assistant'",
            )
            .bind(chat)
            .fetch_one(&app.db)
            .await
            .unwrap();
            (!saved.is_empty()).then_some(())
        },
    )
    .await;
    app.state
        .actors
        .chats
        .actor(chat)
        .expect("live chat actor")
        .kill();

    // The subscriber is told: the answer is now failed, with the text saved so far.
    let update = ws.next_of("message").await;
    assert_eq!(update["message"]["status"], "failed");
    assert!(!update["message"]["content"].as_str().unwrap().is_empty());
    let err = ws.next_of("error").await;
    assert_eq!(err["code"], "provider_unavailable");

    let msgs = history(&app, &user.access_token, chat).await;
    assert_eq!(
        msgs[0]["id"], ack["message_id"],
        "the acknowledged message survived"
    );
    assert_eq!(msgs[0]["content"], "kill me");
    assert_eq!(msgs[1]["status"], "failed");

    // The restarted actor serves the chat as before.
    ws.send_message(chat, "k2", "again").await;
    let a = ws.answer().await;
    assert_eq!(a.ack["seq"], 3);
    assert_eq!(a.end["type"], "done");
    let text = a.text;
    assert_eq!(text, reply_tokens("again", 100).concat());
}

#[tokio::test]
async fn bad_frames_get_error_frames_and_the_socket_stays_open() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let other = app.new_user().await;
    let theirs = app.create_chat(&other.access_token).await;
    let mine = app.create_chat(&user.access_token).await;
    let mut ws = app.ws(&user.access_token).await;
    let cases: Vec<(Message, &str)> = vec![
        (Message::Text("not json".into()), "invalid_request"),
        (Message::Text("{}".into()), "invalid_request"),
        (Message::Text(r#"{"type":"fly"}"#.into()), "invalid_request"),
        (Message::Text(r#"{"type":"send","chat_id":"nope"}"#.into()), "invalid_request"),
        (Message::Text(r#"[1,2,3]"#.into()), "invalid_request"),
        (Message::Binary(vec![1, 2, 3].into()), "invalid_request"),
        (Message::Text(json!({"type":"auth","token":"x"}).to_string().into()), "invalid_request"),
        (Message::Text(json!({"type":"subscribe","chat_id": Uuid::now_v7()}).to_string().into()), "not_found"),
        (Message::Text(json!({"type":"subscribe","chat_id": theirs}).to_string().into()), "not_found"),
        (Message::Text(json!({"type":"send","chat_id": theirs,"client_msg_id":"z","content":"hi"}).to_string().into()), "not_found"),
        (Message::Text(json!({"type":"cancel","chat_id": theirs,"message_id": Uuid::now_v7()}).to_string().into()), "not_found"),
        (Message::Text(json!({"type":"subscribe","chat_id": mine,"since_seq": -1}).to_string().into()), "invalid_request"),
        (Message::Text(json!({"type":"send","chat_id": mine,"client_msg_id":"","content":"hi"}).to_string().into()), "invalid_request"),
        (Message::Text(json!({"type":"send","chat_id": mine,"client_msg_id":"e","content":"   "}).to_string().into()), "invalid_request"),
        (Message::Text(json!({"type":"send","chat_id": mine,"client_msg_id":"f","content":"x".repeat(40_000)}).to_string().into()), "invalid_request"),
        (Message::Text(json!({"type":"send","chat_id": mine,"client_msg_id":"g","content":"hi","model":"gpt-99"}).to_string().into()), "invalid_request"),
    ];
    for (frame, code) in cases {
        let shown = format!("{frame:?}");
        ws.send_raw(frame).await;
        let f = ws.next_of("error").await;
        assert_eq!(f["code"], code, "{shown:.120}");
        assert!(!f["message"].as_str().unwrap().is_empty());
    }
    // Nothing was stored in the other user's chat.
    let (n,): (i64,) = sqlx::query_as("select count(*) from messages where chat_id = $1")
        .bind(theirs)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(n, 0);
    ws.send(json!({"type": "ping"})).await;
    assert_eq!(ws.next_of("pong").await["type"], "pong");
}

#[tokio::test]
async fn oversized_frame_closes_with_1009() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let mut ws = app.ws(&user.access_token).await;
    ws.send(json!({"type": "ping", "pad": "x".repeat(70_000)}))
        .await;
    assert_eq!(ws.close_code().await, Some(1009));
    // Far beyond the limit the codec refuses it; still 1009 or a dropped socket, never a crash.
    let mut ws = app.ws(&user.access_token).await;
    let _ = futures::SinkExt::send(&mut ws.ws, Message::Text("x".repeat(300_000).into())).await;
    let code = ws.close_code().await;
    assert!(code.is_none() || code == Some(1009), "{code:?}");
    // The server is fine.
    assert_eq!(
        app.client
            .get(app.url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn failed_auth_closes_with_4001() {
    let app = spawn_app_with(|c| c.ws.auth_timeout_secs = 1).await;
    let user = app.new_user().await;
    // A bad token in the auth frame.
    let mut ws = app.ws_anonymous().await;
    ws.send(json!({"type": "auth", "token": "garbage"})).await;
    assert_eq!(ws.next().await["code"], "unauthorized");
    assert_eq!(ws.close_code().await, Some(4001));
    // Anything but auth first.
    let mut ws = app.ws_anonymous().await;
    ws.send(json!({"type": "ping"})).await;
    assert_eq!(ws.close_code().await, Some(4001));
    // Silence past the deadline.
    let mut ws = app.ws_anonymous().await;
    assert_eq!(ws.close_code().await, Some(4001));
    // A bad bearer header is refused at the upgrade.
    let mut req = app.ws_url().into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", "Bearer nope".parse().unwrap());
    let err = tokio_tungstenite::connect_async(req).await.unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");
    // And a good one still works.
    let mut ok = app.ws(&user.access_token).await;
    ok.send(json!({"type": "ping"})).await;
    assert_eq!(ok.next().await["type"], "pong");
}

#[tokio::test]
async fn origin_not_on_the_list_is_refused() {
    let app =
        spawn_app_with(|c| c.server.cors_origins = vec!["https://app.example.com".into()]).await;
    let user = app.new_user().await;
    let connect = |origin: &'static str| {
        let mut req = app.ws_url().into_client_request().unwrap();
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {}", user.access_token).parse().unwrap(),
        );
        req.headers_mut().insert("origin", origin.parse().unwrap());
        tokio_tungstenite::connect_async(req)
    };
    let err = connect("https://evil.example.com").await.unwrap_err();
    assert!(err.to_string().contains("403"), "{err}");
    assert!(connect("https://app.example.com").await.is_ok());
}

#[tokio::test]
async fn a_silent_peer_is_closed_by_the_heartbeat() {
    let app = spawn_app_with(|c| {
        c.ws.ping_interval_secs = 1;
        c.ws.idle_timeout_secs = 2;
    })
    .await;
    let user = app.new_user().await;
    let mut ws = app.ws(&user.access_token).await;
    // Reading the raw socket, under the WebSocket layer, answers no ping: the
    // server must close with 4002 (a close frame: 0x88, length, code 0x0FA2).
    let raw = ws.ws.get_mut();
    let mut seen = Vec::new();
    let closed = |seen: &[u8]| {
        seen.windows(4)
            .any(|w| w[0] == 0x88 && w[2] == 0x0F && w[3] == 0xA2)
    };
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 1024];
        while !closed(&seen) {
            match tokio::io::AsyncReadExt::read(raw, &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server spoke up in time");
    assert!(closed(&seen), "close code 4002 in {seen:?}");
}

#[tokio::test]
async fn a_reader_too_slow_for_its_queue_is_closed_with_4008() {
    let app = spawn_app_with(|c| c.ws.outbound_queue = 4).await;
    let user = app.new_user().await;
    let chat = app.create_chat(&user.access_token).await;
    // A long history to replay: more frames than the queue holds.
    for seq in 1..=20i64 {
        sqlx::query(
            "insert into messages (id, chat_id, seq, role, content, status) values ($1, $2, $3, 'user', $4, 'complete')",
        )
        .bind(Uuid::now_v7())
        .bind(chat)
        .bind(seq)
        .bind("y".repeat(1000))
        .execute(&app.db)
        .await
        .unwrap();
    }
    sqlx::query("update chats set last_seq = 20 where id = $1")
        .bind(chat)
        .execute(&app.db)
        .await
        .unwrap();
    let mut ws = app.ws(&user.access_token).await;
    ws.send(json!({"type": "subscribe", "chat_id": chat, "since_seq": 0}))
        .await;
    assert_eq!(ws.close_code().await, Some(4008));
}

#[tokio::test]
async fn many_concurrent_chats_each_keep_their_order() {
    let app = spawn_app_with(|c| {
        c.database.max_connections = 20;
        c.simulated.ttft_ms = 5;
        c.simulated.token_delay_ms = 2;
        c.simulated.reply_tokens = 10;
    })
    .await;
    const USERS: usize = 20;
    const CHATS_EACH: usize = 10;
    let mut tasks = Vec::new();
    for u in 0..USERS {
        let user = app.new_user().await;
        let mut chats = Vec::new();
        for _ in 0..CHATS_EACH {
            chats.push(app.create_chat(&user.access_token).await);
        }
        let mut ws: WsClient = app.ws(&user.access_token).await;
        tasks.push(tokio::spawn(async move {
            for (i, chat) in chats.iter().enumerate() {
                ws.send_message(*chat, &format!("u{u}c{i}"), &format!("question {u} {i}"))
                    .await;
            }
            // Per chat: deltas numbered 0.. in order, then done; every chat finishes.
            let mut next_index = std::collections::HashMap::new();
            let mut done = 0;
            while done < CHATS_EACH {
                let f = ws.next().await;
                match f["type"].as_str().unwrap() {
                    "delta" => {
                        let idx = next_index
                            .entry(f["chat_id"].as_str().unwrap().to_owned())
                            .or_insert(0u64);
                        assert_eq!(f["index"].as_u64().unwrap(), *idx, "order within a chat");
                        *idx += 1;
                    }
                    "done" => done += 1,
                    "error" => panic!("error frame: {f}"),
                    _ => {}
                }
            }
            chats
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("user task"));
    }
    assert_eq!(all.len(), USERS * CHATS_EACH);
    let (complete,): (i64,) = sqlx::query_as(
        "select count(*) from messages where role = 'assistant' and status = 'complete'",
    )
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(complete as usize, USERS * CHATS_EACH);
}

#[tokio::test]
async fn idle_chat_actors_stop_and_come_back_on_use() {
    let app = spawn_app_with(|c| c.chat.idle_timeout_secs = 1).await;
    let user = app.new_user().await;
    let chat = app.create_chat(&user.access_token).await;
    let mut ws = app.ws(&user.access_token).await;
    ws.send_message(chat, "i1", "hello").await;
    ws.answer().await;
    ws.send(json!({"type": "unsubscribe", "chat_id": chat}))
        .await;
    let mut stopped = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if app.state.actors.chats.actor(chat).is_none() {
            stopped = true;
            break;
        }
    }
    assert!(stopped, "an idle chat actor stops");
    ws.send_message(chat, "i2", "back").await;
    let a = ws.answer().await;
    assert_eq!(
        a.ack["seq"], 3,
        "the new actor continues the chat's seq from Postgres"
    );
}

#[tokio::test]
async fn a_crash_looping_chat_actor_is_given_up() {
    let app = spawn_app_with(|c| c.chat.max_restarts = 2).await;
    let user = app.new_user().await;
    let chat = app.create_chat(&user.access_token).await;
    let mut ws = app.ws(&user.access_token).await;
    ws.send(json!({"type": "subscribe", "chat_id": chat})).await;
    ws.send(json!({"type": "ping"})).await;
    ws.next_of("pong").await;
    let mut restarts = 0;
    for _ in 0..3 {
        let actor = app
            .state
            .actors
            .chats
            .actor(chat)
            .expect("a live actor to kill");
        let old = actor.get_id();
        actor.kill();
        let mut replaced = None;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            match app.state.actors.chats.actor(chat) {
                Some(a) if a.get_id() != old => {
                    replaced = Some(a);
                    break;
                }
                _ => {}
            }
        }
        if replaced.is_none() {
            break;
        }
        restarts += 1;
    }
    assert_eq!(restarts, 2, "restarted up to the limit, then given up");
    assert!(app.state.actors.chats.actor(chat).is_none());
    // Next use starts it afresh.
    ws.send_message(chat, "after", "still works").await;
    assert_eq!(ws.answer().await.end["type"], "done");
}

#[tokio::test]
async fn postgres_down_means_a_clear_error_and_no_ack() {
    // Each query gives up on the pool after a second, so the error comes
    // well within the client's wait even on a loaded machine.
    let app = spawn_app_with(|c| c.database.acquire_timeout_secs = 1).await;
    let user = app.new_user().await;
    let chat = app.create_chat(&user.access_token).await;
    let mut ws = app.ws(&user.access_token).await;
    ws.send(json!({"type": "subscribe", "chat_id": chat})).await;
    ws.send(json!({"type": "ping"})).await;
    ws.next_of("pong").await;
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(
        "postgres://postgres@127.0.0.1:5432/postgres",
    )
    .await
    .unwrap();
    sqlx::Executor::execute(
        &mut admin,
        sqlx::AssertSqlSafe(format!(r#"drop database "{}" with (force)"#, app.db_name)),
    )
    .await
    .unwrap();
    ws.send_message(chat, "lost", "is this saved?").await;
    let f = ws.next().await;
    assert_eq!(f["type"], "error", "no ack for what was not saved: {f}");
    assert_eq!(f["code"], "unavailable");
    assert!(f["message"].as_str().unwrap().contains("not saved"));
}

#[tokio::test]
async fn answers_left_streaming_by_a_dead_server_are_failed_at_start() {
    let first = spawn_app().await;
    let user = first.new_user().await;
    let chat = first.create_chat(&user.access_token).await;
    // What a server killed mid-answer leaves behind.
    sqlx::query("update chats set last_seq = 1 where id = $1")
        .bind(chat)
        .execute(&first.db)
        .await
        .unwrap();
    sqlx::query(
        "insert into messages (id, chat_id, seq, role, content, status, provider, model)
         values ($1, $2, 1, 'assistant', 'half an ans', 'streaming', 'simulated', 'sim-1')",
    )
    .bind(Uuid::now_v7())
    .bind(chat)
    .execute(&first.db)
    .await
    .unwrap();
    let url = first.config.database.url.clone();
    let _second = spawn_app_with(move |c| c.database.url = url).await;
    let (status, content): (String, String) =
        sqlx::query_as("select status, content from messages where chat_id = $1")
            .bind(chat)
            .fetch_one(&first.db)
            .await
            .unwrap();
    assert_eq!(status, "failed");
    assert_eq!(content, "half an ans", "the partial answer is kept");
}

#[tokio::test]
async fn a_client_msg_id_reused_for_other_content_is_refused() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let chat = app.create_chat(&user.access_token).await;
    let mut ws = app.ws(&user.access_token).await;
    ws.send_message(chat, "same-id", "the first message").await;
    ws.answer().await;
    ws.send_message(chat, "same-id", "a different message")
        .await;
    let err = ws.next_of("error").await;
    assert_eq!(err["code"], "conflict", "{err}");
    assert_eq!(err["client_msg_id"], "same-id");
    assert_eq!(err["chat_id"], json!(chat));
    // The same content again is the ordinary idempotent resend.
    ws.send_message(chat, "same-id", "the first message").await;
    let ack = ws.next_of("ack").await;
    assert_eq!(ack["seq"], 1);
    let stored: i64 = sqlx::query_scalar("select count(*) from messages where chat_id = $1")
        .bind(chat)
        .fetch_one(&app.db)
        .await
        .unwrap();
    assert_eq!(stored, 2, "one message and its answer");
}

#[tokio::test]
async fn resuming_from_an_answers_own_seq_loses_nothing_and_learns_how_it_ended() {
    let app = spawn_app_with(|c| {
        c.simulated.token_delay_ms = 30;
        c.simulated.reply_tokens = 40;
    })
    .await;
    let user = app.new_user().await;
    let chat = app.create_chat(&user.access_token).await;
    let mut first = app.ws(&user.access_token).await;
    first.send_message(chat, "g1", "resume from me").await;
    let answer = loop {
        let f = first.next().await;
        if f["type"] == "message" && f["message"]["role"] == "assistant" {
            break f;
        }
    };
    let seq = answer["seq"].as_i64().unwrap();
    for _ in 0..3 {
        first.next_of("delta").await;
    }
    drop(first); // gone mid-answer, having seen the answer's own seq

    // Resuming from that seq: the answer as it stands, then the rest, live.
    let mut back = app.ws(&user.access_token).await;
    back.send(json!({"type": "subscribe", "chat_id": chat, "since_seq": seq}))
        .await;
    let snap = back.next().await;
    assert_eq!(snap["seq"], seq, "{snap}");
    let mut text = snap["message"]["content"].as_str().unwrap().to_owned();
    if snap["message"]["status"] == "streaming" {
        let included = snap["deltas_included"].as_u64().unwrap();
        loop {
            let f = back.next().await;
            match f["type"].as_str().unwrap() {
                "delta" => {
                    assert!(f["index"].as_u64().unwrap() >= included);
                    text.push_str(f["text"].as_str().unwrap());
                }
                "done" => break,
                _ => {}
            }
        }
    }
    assert_eq!(
        text,
        reply_tokens("resume from me", 40).concat(),
        "no gap, no duplicate"
    );

    // An answer a restart failed: resuming from its seq says so.
    let failed = Uuid::now_v7();
    let failed_seq: i64 = sqlx::query_scalar(
        "with next as (update chats set last_seq = last_seq + 1 where id = $1 returning last_seq)
         insert into messages (id, chat_id, seq, role, content, status, finish_reason, provider, model)
         select $2, $1, next.last_seq, 'assistant', 'cut sh', 'failed', 'interrupted', 'simulated', 'sim-1'
         from next returning seq",
    )
    .bind(chat)
    .bind(failed)
    .fetch_one(&app.db)
    .await
    .unwrap();
    let mut again = app.ws(&user.access_token).await;
    again
        .send(json!({"type": "subscribe", "chat_id": chat, "since_seq": failed_seq}))
        .await;
    let row = again.next().await;
    assert_eq!(row["message"]["status"], "failed", "{row}");
    let err = again.next().await;
    assert_eq!(err["type"], "error", "{err}");
    assert_eq!(err["message_id"], json!(failed));
}
