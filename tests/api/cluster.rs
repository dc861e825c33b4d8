//! Several nodes on one Postgres and one Redis (docs/ARCHITECTURE.md,
//! "Cluster"): events fan out across nodes, one chat has one generation at a
//! time cluster-wide, a killed node's answers and queue are taken over, and
//! acknowledged messages stranded by a crash are answered (issue 11, item 1).

use std::{process::Stdio, time::Duration};

use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{TestApp, eventually, spawn_app, spawn_app_with, spawn_node};

async fn redis(app: &TestApp) -> redis::aio::MultiplexedConnection {
    let url = app.config.redis.url.as_ref().unwrap().expose().to_owned();
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Waits until some node follows the chat's event channel in Redis.
async fn followed_in_redis(app: &TestApp, chat: Uuid, nodes: usize) {
    let channel = format!("{}:chatev:{chat}", app.config.redis.key_prefix);
    let mut conn = redis(app).await;
    eventually(Duration::from_secs(5), "the chat channel followed", || {
        let (mut conn, channel) = (conn.clone(), channel.clone());
        async move {
            let (_, n): (String, usize) = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(&channel)
                .query_async(&mut conn)
                .await
                .ok()?;
            (n >= nodes).then_some(())
        }
    })
    .await;
    let _ = &mut conn;
}

/// Subscribes the socket to the chat and waits until the subscription is in
/// place (the node handles a socket's frames in order).
async fn subscribe(ws: &mut crate::ws_client::WsClient, chat: Uuid) {
    ws.send(json!({"type": "subscribe", "chat_id": chat})).await;
    ws.send(json!({"type": "ping"})).await;
    ws.next_of("pong").await;
}

/// Frames of one answer as a follower sees them, up to its end.
async fn follow_answer(ws: &mut crate::ws_client::WsClient) -> Vec<Value> {
    let mut frames = Vec::new();
    loop {
        let f = ws.next().await;
        let end = matches!(f["type"].as_str(), Some("done" | "error"));
        frames.push(f);
        if end {
            return frames;
        }
    }
}

#[tokio::test]
async fn an_answer_generated_on_one_node_streams_to_sockets_on_the_others() {
    let a = spawn_app().await;
    let b = spawn_node(&a, |_| {}).await;
    let c = spawn_node(&a, |_| {}).await;
    let user = a.new_user().await;
    let chat = a.create_chat(&user.access_token).await;

    let mut on_b = b.ws(&user.access_token).await;
    let mut on_c = c.ws(&user.access_token).await;
    for ws in [&mut on_b, &mut on_c] {
        subscribe(ws, chat).await;
    }
    followed_in_redis(&a, chat, 2).await;

    let mut on_a = a.ws(&user.access_token).await;
    on_a.send_message(chat, "x-1", "hello across nodes").await;
    let sent = on_a.answer().await;
    assert_eq!(sent.end["type"], "done");

    for ws in [&mut on_b, &mut on_c] {
        let frames = follow_answer(ws).await;
        let kinds: Vec<&str> = frames.iter().map(|f| f["type"].as_str().unwrap()).collect();
        assert_eq!(kinds[0], "message", "{kinds:?}");
        assert_eq!(frames[0]["message"]["role"], "user");
        assert_eq!(frames[0]["seq"], 1);
        assert_eq!(frames[1]["message"]["role"], "assistant");
        assert_eq!(frames[1]["seq"], 2);
        let deltas: Vec<&Value> = frames.iter().filter(|f| f["type"] == "delta").collect();
        let indexes: Vec<u64> = deltas
            .iter()
            .map(|d| d["index"].as_u64().unwrap())
            .collect();
        assert_eq!(
            indexes,
            (0..deltas.len() as u64).collect::<Vec<_>>(),
            "in order, once each"
        );
        let text: String = deltas.iter().map(|d| d["text"].as_str().unwrap()).collect();
        assert_eq!(text, sent.text, "the whole answer, as the sender saw it");
        assert_eq!(frames.last().unwrap()["type"], "done");
        assert_eq!(frames.iter().filter(|f| f["type"] == "done").count(), 1);
    }

    // Every node names itself.
    let mut ids = Vec::new();
    for node in [&a, &b, &c] {
        let ready: Value = node
            .client
            .get(node.url("/ready"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.push(ready["checks"]["node_id"].as_str().unwrap().to_owned());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "three distinct node ids: {ids:?}");
}

#[tokio::test]
async fn sends_to_one_chat_on_two_nodes_are_answered_one_at_a_time_in_seq_order() {
    let a = spawn_app_with(|c| c.simulated.reply_tokens = 40).await;
    let b = spawn_node(&a, |_| {}).await;
    let user = a.new_user().await;
    let chat = a.create_chat(&user.access_token).await;
    let post = |app: &TestApp, id: &str| {
        app.client
            .post(app.url(&format!("/api/chats/{chat}/messages")))
            .bearer_auth(&user.access_token)
            .json(&json!({"content": format!("question {id}"), "client_msg_id": id}))
            .send()
    };
    for round in 0..3 {
        let (ra, rb) = tokio::join!(
            post(&a, &format!("a{round}")),
            post(&b, &format!("b{round}"))
        );
        assert_eq!(ra.unwrap().status(), 200);
        assert_eq!(rb.unwrap().status(), 200);
    }
    let rows: Vec<(i64, String, Option<Uuid>, Uuid, String)> = sqlx::query_as(
        "select seq, role, reply_to, id, status from messages where chat_id = $1 order by seq",
    )
    .bind(chat)
    .fetch_all(&a.db)
    .await
    .unwrap();
    assert_eq!(rows.len(), 12);
    let user_order: Vec<Uuid> = rows.iter().filter(|r| r.1 == "user").map(|r| r.3).collect();
    let answer_order: Vec<Uuid> = rows
        .iter()
        .filter(|r| r.1 == "assistant")
        .map(|r| r.2.unwrap())
        .collect();
    assert_eq!(
        answer_order, user_order,
        "answers follow the user messages' seq order"
    );
    assert!(rows.iter().all(|r| r.4 == "complete"), "{rows:?}");
    // One generation at a time: each answer was opened after the previous one ended.
    let overlaps: i64 = sqlx::query_scalar(
        "select count(*) from messages x join messages y
           on x.chat_id = y.chat_id and x.role = 'assistant' and y.role = 'assistant' and x.seq < y.seq
         where x.chat_id = $1 and y.created_at < x.completed_at",
    )
    .bind(chat)
    .fetch_one(&a.db)
    .await
    .unwrap();
    assert_eq!(
        overlaps, 0,
        "two answers of one chat were generating at once"
    );
}

#[tokio::test]
async fn a_cancel_sent_to_another_node_stops_the_answer_where_it_streams() {
    // Slow enough that the cancel lands mid-answer.
    let a = spawn_app_with(|c| {
        c.simulated.token_delay_ms = 100;
        c.simulated.reply_tokens = 100;
    })
    .await;
    let b = spawn_node(&a, |_| {}).await;
    let user = a.new_user().await;
    let stranger = a.new_user().await;
    let chat = a.create_chat(&user.access_token).await;
    let mut on_b = b.ws(&user.access_token).await;
    subscribe(&mut on_b, chat).await;
    followed_in_redis(&a, chat, 1).await;

    let mut on_a = a.ws(&user.access_token).await;
    on_a.send_message(chat, "c-1", "a long answer, please")
        .await;
    // The answer as node B sees it, through the fan-out.
    let answer_id = loop {
        let f = on_b.next_of("message").await;
        if f["message"]["role"] == "assistant" {
            break f["message"]["id"]
                .as_str()
                .unwrap()
                .parse::<Uuid>()
                .unwrap();
        }
    };
    on_b.next_of("delta").await;

    // Another user may not cancel it from either node.
    let mut strangers = b.ws(&stranger.access_token).await;
    strangers
        .send(json!({"type": "cancel", "chat_id": chat, "message_id": answer_id}))
        .await;
    assert_eq!(strangers.next_of("error").await["code"], "not_found");

    on_b.send(json!({"type": "cancel", "chat_id": chat, "message_id": answer_id}))
        .await;
    let done = on_b.next_of("done").await;
    assert_eq!(done["message_id"], answer_id.to_string());
    assert_eq!(done["finish_reason"], "cancelled", "{done}");
    let (status, node): (String, Option<String>) =
        sqlx::query_as("select status, node_id from messages where id = $1")
            .bind(answer_id)
            .fetch_one(&a.db)
            .await
            .unwrap();
    assert_eq!(status, "cancelled");
    assert_eq!(
        node.as_deref(),
        Some(&*a.state.actors.cluster.node_id),
        "streamed on node A"
    );
    // Billed once, for what was produced before the cancel (usage is written in batches).
    let tokens: Vec<i32> = eventually(Duration::from_secs(10), "the usage row", || async {
        let rows: Vec<i32> =
            sqlx::query_scalar("select output_tokens from usage_events where message_id = $1")
                .bind(answer_id)
                .fetch_all(&a.db)
                .await
                .unwrap();
        (!rows.is_empty()).then_some(rows)
    })
    .await;
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    assert!((1..100).contains(&tokens[0]), "{tokens:?}");
    // A cancel for an answer that is no longer streaming is `not_found`, on any node.
    on_b.send(json!({"type": "cancel", "chat_id": chat, "message_id": answer_id}))
        .await;
    assert_eq!(on_b.next_of("error").await["code"], "not_found");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real `switchboard serve` process in `app`'s cluster, slow to answer, so
/// it can be killed mid-answer.
async fn spawn_process_node(app: &TestApp, node_id: &str) -> (std::process::Child, TestAppLite) {
    let port = free_port();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("serve")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("APP_ENV", "test")
        .env(
            "DATABASE_URL",
            app.config.database.url.as_ref().unwrap().expose(),
        )
        .env("REDIS_URL", app.config.redis.url.as_ref().unwrap().expose())
        .env("PORT", port.to_string())
        .env(
            "SWITCHBOARD_REDIS__KEY_PREFIX",
            &app.config.redis.key_prefix,
        )
        .env("SWITCHBOARD_ROUTING__NODE_ID", node_id)
        .env("SWITCHBOARD_SIMULATED__TOKEN_DELAY_MS", "50")
        .env("SWITCHBOARD_SIMULATED__REPLY_TOKENS", "2000")
        .env("SWITCHBOARD_CHAT__CHECKPOINT_MS", "100")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("switchboard serve starts");
    let node = TestAppLite {
        base: format!("http://127.0.0.1:{port}"),
    };
    let client = reqwest::Client::new();
    eventually(Duration::from_secs(60), "the process node to serve", || {
        let url = format!("{}/health", node.base);
        let client = client.clone();
        async move {
            client
                .get(url)
                .send()
                .await
                .ok()
                .filter(|r| r.status() == 200)
                .map(drop)
        }
    })
    .await;
    (child, node)
}

struct TestAppLite {
    base: String,
}

#[tokio::test]
async fn a_killed_node_is_taken_over_its_answer_failed_and_billed_once_its_queue_answered() {
    let a = spawn_app_with(|c| {
        c.cluster.heartbeat_ms = 500;
        c.cluster.node_ttl_ms = 3000;
    })
    .await;
    let dead_id = format!("doomed-{}", &Uuid::new_v4().simple().to_string()[..8]);
    let (mut child, node) = spawn_process_node(&a, &dead_id).await;
    let user = a.new_user().await;
    let chat = a.create_chat(&user.access_token).await;

    let ws_url = format!("{}/ws", node.base.replace("http://", "ws://"));
    let mut req =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(ws_url)
            .unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", user.access_token).parse().unwrap(),
    );
    let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let mut on_dead = crate::ws_client::WsClient { ws };
    on_dead
        .send_message(chat, "k-1", "a long answer please")
        .await;
    let ack1 = on_dead.next_of("ack").await;
    on_dead.next_of("delta").await;
    // A second message, acknowledged while the first is answered: it waits in the queue.
    on_dead.send_message(chat, "k-2", "and then this").await;
    let ack2 = on_dead.next_of("ack").await;
    let first_answer: Uuid = eventually(Duration::from_secs(10), "text checkpointed", || {
        let db = a.db.clone();
        async move {
            sqlx::query_scalar::<_, Uuid>(
                "select id from messages where chat_id = $1 and role = 'assistant' and status = 'streaming' and content <> ''",
            )
            .bind(chat)
            .fetch_optional(&db)
            .await
            .unwrap()
        }
    })
    .await;
    let node_set = format!("{}:budget:node:{dead_id}", a.config.redis.key_prefix);
    let mut conn = redis(&a).await;
    let held: bool = redis::cmd("EXISTS")
        .arg(&node_set)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(held, "the node holds reservations while it answers");

    child.kill().unwrap(); // SIGKILL: no shutdown, no final write
    child.wait().unwrap();

    let (status, reason): (String, Option<String>) = eventually(
        Duration::from_secs(15),
        "a survivor to fail the answer",
        || {
            let db = a.db.clone();
            async move {
                let r: (String, Option<String>) =
                    sqlx::query_as("select status, finish_reason from messages where id = $1")
                        .bind(first_answer)
                        .fetch_one(&db)
                        .await
                        .unwrap();
                (r.0 != "streaming").then_some(r)
            }
        },
    )
    .await;
    assert_eq!(
        (status.as_str(), reason.as_deref()),
        ("failed", Some("interrupted"))
    );
    let billed: i64 = sqlx::query_scalar("select count(*) from usage_events where message_id = $1")
        .bind(first_answer)
        .fetch_one(&a.db)
        .await
        .unwrap();
    assert_eq!(billed, 1, "what it produced is billed exactly once");
    // Released in the same takeover, just after the answers are failed.
    eventually(
        Duration::from_secs(5),
        "the dead node's reservations released",
        || {
            let (mut conn, node_set) = (conn.clone(), node_set.clone());
            async move {
                let held: bool = redis::cmd("EXISTS")
                    .arg(&node_set)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                (!held).then_some(())
            }
        },
    )
    .await;

    // The acknowledged second message is answered by the survivor.
    let second: Uuid = ack2["message_id"].as_str().unwrap().parse().unwrap();
    let answered: String = eventually(
        Duration::from_secs(15),
        "the queued message answered",
        || {
            let db = a.db.clone();
            async move {
                sqlx::query_scalar::<_, String>(
                    "select status from messages where reply_to = $1 and status <> 'streaming'",
                )
                .bind(second)
                .fetch_optional(&db)
                .await
                .unwrap()
            }
        },
    )
    .await;
    assert_eq!(answered, "complete");

    // A client resuming on the survivor sees the interrupted answer and the new one.
    let mut on_a = a.ws(&user.access_token).await;
    on_a.send(json!({"type": "subscribe", "chat_id": chat, "since_seq": ack1["seq"]}))
        .await;
    let failed = on_a.next_of("message").await;
    assert_eq!(failed["message"]["id"], first_answer.to_string());
    assert_eq!(failed["message"]["status"], "failed");
}

/// What a kill -9 leaves for a message acknowledged but never answered: the
/// committed row, accepted by `node_id`, and no answer row.
async fn stranded(
    app: &TestApp,
    chat: Uuid,
    author: Uuid,
    client_msg_id: &str,
    node_id: &str,
) -> Uuid {
    sqlx::query_scalar(
        "with next as (update chats set last_seq = last_seq + 1 where id = $1 returning last_seq)
         insert into messages (id, chat_id, seq, role, author_id, client_msg_id, content, status, completed_at, node_id,
                               awaiting_answer)
         select $2, $1, next.last_seq, 'user', $3, $4, 'stranded question', 'complete', now(), $5, true from next
         returning id",
    )
    .bind(chat)
    .bind(Uuid::now_v7())
    .bind(author)
    .bind(client_msg_id)
    .bind(node_id)
    .fetch_one(&app.db)
    .await
    .unwrap()
}

async fn answer_of(app: &TestApp, user_message: Uuid) -> Option<(String, i64)> {
    sqlx::query_as("select status, seq from messages where reply_to = $1 and status <> 'streaming'")
        .bind(user_message)
        .fetch_optional(&app.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn messages_stranded_by_a_crash_are_answered_when_the_node_restarts() {
    let a = spawn_app().await;
    let user = a.new_user().await;
    let chat = a.create_chat(&user.access_token).await;
    let crashed = format!("crashed-{}", &Uuid::new_v4().simple().to_string()[..8]);
    let first = stranded(&a, chat, user.id, "s-1", &crashed).await;
    let second = stranded(&a, chat, user.id, "s-2", &crashed).await;

    let _restarted = spawn_node(&a, |c| c.routing.node_id = Some(crashed.clone())).await;
    let (s1, seq1) = eventually(Duration::from_secs(15), "the first answered", || {
        answer_of(&a, first)
    })
    .await;
    let (s2, seq2) = eventually(Duration::from_secs(15), "the second answered", || {
        answer_of(&a, second)
    })
    .await;
    assert_eq!((s1.as_str(), s2.as_str()), ("complete", "complete"));
    assert!(seq1 < seq2, "answered in the order they were acknowledged");
}

#[tokio::test]
async fn a_resend_of_a_stranded_client_msg_id_revives_it() {
    let a = spawn_app().await;
    let user = a.new_user().await;
    let other = a.new_user().await;
    let chat = a.create_chat(&user.access_token).await;
    let node = a.state.actors.cluster.node_id.to_string();
    // Accepted by this very node, whose queue then lost it (a crash of its actor).
    let lost = stranded(&a, chat, user.id, "lost-1", &node).await;
    assert!(answer_of(&a, lost).await.is_none());

    // Another user cannot poke it.
    let mut intruder = a.ws(&other.access_token).await;
    intruder.send_message(chat, "lost-1", "mine?").await;
    assert_eq!(intruder.next().await["code"], "not_found");

    let mut ws = a.ws(&user.access_token).await;
    ws.send_message(chat, "lost-1", "stranded question").await;
    let ack = ws.next_of("ack").await;
    assert_eq!(
        ack["message_id"],
        lost.to_string(),
        "the same message, not a new one"
    );
    let done = ws.next_of("done").await;
    let answer = eventually(Duration::from_secs(10), "the revived answer stored", || {
        answer_of(&a, lost)
    })
    .await;
    assert_eq!(answer.0, "complete");
    assert_eq!(done["chat_id"], chat.to_string());
}

/// A Redis of the test's own on `port` (never the shared one), without persistence.
fn own_redis(port: u16) -> std::process::Child {
    std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .current_dir(std::env::temp_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server starts")
}

async fn redis_up(url: &str) {
    eventually(Duration::from_secs(10), "redis to answer", || async move {
        let mut c = redis::Client::open(url)
            .ok()?
            .get_multiplexed_async_connection()
            .await
            .ok()?;
        redis::cmd("PING")
            .query_async::<String>(&mut c)
            .await
            .ok()
            .map(drop)
    })
    .await;
}

#[tokio::test]
async fn fan_out_recovers_after_a_redis_restart_and_a_resume_fills_what_it_missed() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let mut server = own_redis(port);
    redis_up(&url).await;
    let redis_url = url.clone();
    let a = spawn_app_with(move |c| {
        c.redis.url = Some(switchboard::config::Secret::new(redis_url));
        // Every call tries Redis, so fan-out resumes the moment it is back
        // (the breaker's cooldown has its own test in outages.rs).
        c.redis.breaker_cooldown_ms = 0;
    })
    .await;
    let b = spawn_node(&a, |_| {}).await;
    let user = a.new_user().await;
    let chat = a.create_chat(&user.access_token).await;
    let mut on_b = b.ws(&user.access_token).await;
    subscribe(&mut on_b, chat).await;
    followed_in_redis(&a, chat, 1).await;
    let mut on_a = a.ws(&user.access_token).await;
    on_a.send_message(chat, "r-1", "before").await;
    assert_eq!(on_a.answer().await.end["type"], "done");
    assert_eq!(
        follow_answer(&mut on_b).await.last().unwrap()["type"],
        "done"
    );

    // Redis goes away: the node still answers; the other node's client misses it live.
    server.kill().unwrap();
    server.wait().unwrap();
    on_a.send_message(chat, "r-2", "while redis is down").await;
    let missed = on_a.answer().await;
    assert_eq!(missed.end["type"], "done");

    server = own_redis(port);
    redis_up(&url).await;
    followed_in_redis(&a, chat, 1).await;
    on_a.send_message(chat, "r-3", "after").await;
    let after = on_a.answer().await;
    assert_eq!(after.end["type"], "done");
    // Live again across nodes; whatever of r-2 reached it is before r-3's frames.
    let frames = loop {
        let frames = follow_answer(&mut on_b).await;
        if frames.last().unwrap()["message_id"] == after.assistant_id.to_string() {
            break frames;
        }
    };
    assert_eq!(frames.last().unwrap()["type"], "done");

    // Resuming from what it saw before the outage fills the gap from Postgres
    // (the answer at seq 2 comes again as it stands: docs/PROTOCOL.md).
    on_b.send(json!({"type": "subscribe", "chat_id": chat, "since_seq": 2}))
        .await;
    let mut seqs = Vec::new();
    while seqs.len() < 5 {
        let f = on_b.next_of("message").await;
        seqs.push(f["seq"].as_i64().unwrap());
    }
    assert_eq!(
        seqs,
        vec![2, 3, 4, 5, 6],
        "r-2 and r-3 with their answers, once each"
    );
    let _ = server.kill();
    let _ = server.wait();
}
