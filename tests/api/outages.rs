//! Redis in trouble: a hung Redis is skipped by the breaker instead of being
//! waited on by every call, and once it is back the budget counters are
//! reconciled with `usage_events` so what was spent meanwhile still counts.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use serde_json::json;
use switchboard::{
    config::Secret,
    providers::{PromptMessage, Usage, tokenizer},
};
use tokio::{io::AsyncReadExt, net::TcpListener};
use uuid::Uuid;

use crate::{
    cut_proxy::CutProxy,
    helpers::{TestApp, eventually, spawn_app_with},
    mock_llm::MockLlm,
};

/// A Redis that accepts connections and reads commands but never answers;
/// counts the commands it was sent (RESP arrays).
async fn hung_redis() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let commands = Arc::new(AtomicUsize::new(0));
    let seen = commands.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let mut at_line_start = true;
                while let Ok(n) = sock.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    for &b in &buf[..n] {
                        if at_line_start && b == b'*' {
                            seen.fetch_add(1, Ordering::SeqCst);
                        }
                        at_line_start = b == b'\n';
                    }
                }
            });
        }
    });
    (format!("redis://{addr}"), commands)
}

async fn send_json(app: &TestApp, token: &str, chat: Uuid, content: &str) -> reqwest::StatusCode {
    app.client
        .post(app.url(&format!("/api/chats/{chat}/messages")))
        .bearer_auth(token)
        .json(&json!({ "content": content }))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn a_hung_redis_is_skipped_not_waited_on_by_every_call() {
    let (url, commands) = hung_redis().await;
    let app = spawn_app_with(|c| {
        c.redis.url = Some(Secret::new(url));
        // No probe during the test: every call after the first failure skips.
        c.redis.breaker_cooldown_ms = 600_000;
        // The liveness heartbeat keeps trying in the background (it is what
        // keeps other nodes from taking this one over); one beat at start.
        c.cluster.heartbeat_ms = 600_000;
        c.cluster.node_ttl_ms = 1_200_000;
    })
    .await;
    let user = app.new_user().await;
    let chat = app.create_chat(&user.access_token).await;
    // Sign-up met the hung Redis first and opened the breaker.
    let before = commands.load(Ordering::SeqCst);
    for i in 0..8 {
        assert_eq!(
            send_json(&app, &user.access_token, chat, &format!("message {i}")).await,
            200,
            "served with Redis hung"
        );
    }
    // Each message makes some six Redis calls (limits, budget reserve and
    // settle, alerts, the chat's lease), each a connection handshake and its
    // command: without the breaker these eight would send over a hundred.
    // Only background work (the fan-out's reconnects) may still knock.
    let sent = commands.load(Ordering::SeqCst) - before;
    assert!(
        sent <= 6,
        "{sent} commands reached the hung Redis during the messages"
    );
    let metrics = app.metrics_text().await;
    let skipped: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("switchboard_redis_skipped_total "))
        .expect("the skip counter")
        .trim()
        .parse()
        .unwrap();
    assert!(skipped >= 30.0, "{skipped} calls skipped");
    let ready: serde_json::Value = app
        .client
        .get(app.url("/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "degraded");
    assert_eq!(ready["checks"]["limits"], "local");
}

/// What the key has been billed so far, once the usage writer caught up with `n` rows.
async fn key_spend(app: &TestApp, key_id: Uuid, n: i64) -> i64 {
    eventually(Duration::from_secs(10), "usage rows", || async {
        let (rows, sum): (i64, i64) = sqlx::query_as(
            "select count(*), coalesce(sum(cost_micros), 0)::bigint from usage_events where api_key_id = $1",
        )
        .bind(key_id)
        .fetch_one(&app.db)
        .await
        .unwrap();
        (rows >= n).then_some(sum)
    })
    .await
}

#[tokio::test]
async fn spend_on_local_books_still_counts_once_redis_is_back() {
    let mock = MockLlm::start().await;
    let redis = CutProxy::start("127.0.0.1:6379".parse().unwrap()).await;
    let app = spawn_app_with(|c| {
        c.redis.url = Some(Secret::new(format!("redis://{}", redis.addr)));
        c.redis.breaker_cooldown_ms = 200;
        c.providers.openai_base_url = Some(mock.openai_base());
        c.providers.openai_api_key = Some(Secret::new("sk-upstream"));
        c.providers.paid_tier = "openai".into();
        c.routing.max_retries = 0;
    })
    .await;
    let user = app.new_user().await;
    app.set_plan(&user, "pro").await;
    let body = json!({"model": "gpt-4o-mini", "max_tokens": 8,
                      "messages": [{"role": "user", "content": "spend a little"}]});
    let complete = |key: String| {
        let (app, body) = (&app, body.clone());
        async move {
            app.client
                .post(app.url("/v1/chat/completions"))
                .bearer_auth(key)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    // One answer's real cost, and what each request reserves.
    let probe = app.create_key(&user, json!({"name": "probe"})).await;
    assert_eq!(complete(probe["key"].as_str().unwrap().into()).await, 200);
    let one = key_spend(&app, probe["id"].as_str().unwrap().parse().unwrap(), 1).await;
    let counted = tokenizer::count_prompt(&[PromptMessage {
        role: "user".into(),
        content: "spend a little".into(),
        ..PromptMessage::default()
    }]);
    let worst = app
        .state
        .actors
        .gens
        .pricing
        .cost_micros(
            "gpt-4o-mini",
            Usage {
                input_tokens: counted,
                output_tokens: 8,
            },
        )
        .unwrap();
    assert!(one > 0 && worst >= one);

    // A key whose budget fits about six answers.
    let budget = 5 * one + worst;
    let k = app
        .create_key(&user, json!({"name": "budgeted", "budget_micros": budget}))
        .await;
    let (key, key_id) = (
        k["key"].as_str().unwrap().to_owned(),
        k["id"].as_str().unwrap().parse::<Uuid>().unwrap(),
    );
    // Two answers on the shared books.
    for n in 1..=2 {
        assert_eq!(complete(key.clone()).await, 200);
        key_spend(&app, key_id, n).await;
    }
    // Redis hangs: scripts arrive but their answers never come back. Two
    // answers are served on the node's own books.
    redis.mute_down();
    for n in 3..=4 {
        assert_eq!(complete(key.clone()).await, 200);
        key_spend(&app, key_id, n).await;
    }
    // Redis is back (connections reset, as after a partition heals).
    redis.cut();
    redis.restore();
    // Spend until refused: the shared counter must have learnt the two
    // answers served while it was away, so the budget holds.
    let mut refused = false;
    for _ in 0..10 {
        let status = complete(key.clone()).await;
        if status == 429 {
            refused = true;
            break;
        }
        assert_eq!(status, 200);
    }
    assert!(refused, "the budget is enforced again");
    let rows: i64 = sqlx::query_scalar("select count(*) from usage_events where api_key_id = $1")
        .bind(key_id)
        .fetch_one(&app.db)
        .await
        .unwrap();
    let spent = key_spend(&app, key_id, rows).await;
    assert!(spent <= budget, "spent {spent} of a budget of {budget}");
    // No reservation is left holding budget in Redis.
    let mut conn = redis::Client::open("redis://127.0.0.1:6379")
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let pattern = format!(
        "{}:budget:api_key:{key_id}:*:held",
        app.config.redis.key_prefix
    );
    let held_keys: Vec<String> = redis::cmd("KEYS")
        .arg(&pattern)
        .query_async(&mut conn)
        .await
        .unwrap();
    for k in held_keys {
        let held: i64 = redis::cmd("GET")
            .arg(&k)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(held, 0, "{k} still holds {held}");
    }
}

#[tokio::test]
async fn a_postgres_outage_mid_answer_ends_with_the_row_final_and_sends_retryable() {
    let pg = CutProxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let app = spawn_app_with(|c| {
        let direct = c.database.url.as_ref().unwrap().expose().to_owned();
        c.database.url = Some(Secret::new(
            direct.replace("127.0.0.1:5432", &pg.addr.to_string()),
        ));
        c.database.acquire_timeout_secs = 1;
        c.simulated.token_delay_ms = 20;
        c.simulated.reply_tokens = 100;
    })
    .await;
    let direct = sqlx::PgPool::connect(&format!(
        "postgres://postgres@127.0.0.1:5432/{}",
        app.db_name
    ))
    .await
    .unwrap();
    let user = app.new_user().await;
    let chat = app.create_chat(&user.access_token).await;
    let mut ws = app.ws(&user.access_token).await;
    ws.send_message(chat, "p1", "outlive the outage").await;
    ws.next_of("delta").await;

    // Postgres goes away while the answer streams, and stays away past its end.
    pg.cut();
    // A send now cannot be stored: a retryable error naming the message, not a refusal.
    ws.send_message(chat, "p2", "during the outage").await;
    let refused = loop {
        let f = ws.next().await;
        if f["type"] == "error" && f["client_msg_id"] == "p2" {
            break f;
        }
    };
    assert_eq!(refused["code"], "unavailable", "{refused}");
    // The answer's end is not announced while its row cannot be written.
    tokio::time::sleep(Duration::from_secs(3)).await;
    pg.restore();
    let done = ws.next_of("done").await;
    let status: String = sqlx::query_scalar("select status from messages where id = $1")
        .bind(Uuid::parse_str(done["message_id"].as_str().unwrap()).unwrap())
        .fetch_one(&direct)
        .await
        .unwrap();
    assert_eq!(status, "complete", "`done` only once the row is final");

    // The same client_msg_id again is stored once and answered.
    ws.send_message(chat, "p2", "during the outage").await;
    let again = ws.answer().await;
    assert_eq!(again.ack["client_msg_id"], "p2");
    let (p2_rows, streaming): (i64, i64) = sqlx::query_as(
        "select count(*) filter (where client_msg_id = 'p2'), count(*) filter (where status = 'streaming')
         from messages where chat_id = $1",
    )
    .bind(chat)
    .fetch_one(&direct)
    .await
    .unwrap();
    assert_eq!(p2_rows, 1, "stored once");
    assert_eq!(streaming, 0, "no row left streaming");
}
