//! Providers, routing with fallback, the breaker, rate limits and budgets,
//! against mock LLM servers speaking the real wire formats.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use serde_json::{Value, json};
use switchboard::{
    actors::provider::BreakerState,
    budget::{Limit, Period, ScopeKind},
    config::{Config, ProviderLimitsConfig, Secret},
};
use tokio::net::{TcpListener, TcpStream};
use uuid::Uuid;

use crate::{
    helpers::{TestApp, TestUser, eventually, spawn_app_with},
    mock_llm::{Behavior, MockLlm},
};

/// Paid-tier routing over two mocks: openai first, then anthropic, then simulated.
fn with_mocks(c: &mut Config, openai: &MockLlm, anthropic: &MockLlm) {
    c.providers.openai_base_url = Some(openai.openai_base());
    c.providers.openai_api_key = Some(Secret::new("sk-test-key"));
    c.providers.anthropic_base_url = Some(anthropic.url());
    c.providers.anthropic_api_key = Some(Secret::new("sk-ant-test"));
    c.providers.paid_tier = "openai,anthropic,simulated".into();
    c.routing.prefer_cheapest = false;
    // Generous, so a loaded CI machine never times out a healthy mock by mistake.
    c.routing.ttft_timeout_ms = 1500;
    c.routing.max_retries = 1;
    c.routing.retry_base_ms = 10;
    for name in ["openai", "anthropic"] {
        c.providers.limits.insert(
            name.into(),
            ProviderLimitsConfig {
                concurrency: 64,
                rpm: 0,
                tpm: 0,
                breaker_failures: 3,
                breaker_cooldown_secs: 1,
            },
        );
    }
}

/// Sends over REST and answers (status, body).
async fn ask(app: &TestApp, user: &TestUser, chat: Uuid, content: &str) -> (u16, Value) {
    let res = app
        .client
        .post(app.url(&format!("/api/chats/{chat}/messages")))
        .bearer_auth(&user.access_token)
        .json(&json!({ "content": content }))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn pro_user(app: &TestApp) -> (TestUser, Uuid) {
    let user = app.new_user().await;
    app.set_plan(&user, "pro").await;
    let chat = app.create_chat(&user.access_token).await;
    (user, chat)
}

#[tokio::test]
async fn falls_back_in_order_and_retries_only_retryable_errors() {
    let (a, b) = (MockLlm::start().await, MockLlm::start().await);
    let app = spawn_app_with(|c| with_mocks(c, &a, &b)).await;
    let (user, chat) = pro_user(&app).await;

    // Healthy: the first candidate answers.
    let (status, m) = ask(&app, &user, chat, "hello one").await;
    assert_eq!(status, 200, "{m}");
    assert_eq!(m["provider"], "openai");
    assert_eq!(m["model"], "gpt-4o-mini");
    assert_eq!(m["content"], "Hello, world!");
    let sent = a.last_request().unwrap();
    assert_eq!(sent.body["stream_options"]["include_usage"], true);
    assert_eq!(sent.api_key(), Some("sk-test-key"));

    // 500 twice (first try and its retry), then the next provider.
    a.push(Behavior::Status {
        code: 500,
        retry_after: None,
    });
    a.push(Behavior::Status {
        code: 500,
        retry_after: None,
    });
    let before = a.request_count();
    let (status, m) = ask(&app, &user, chat, "hello two").await;
    assert_eq!(status, 200, "{m}");
    assert_eq!(m["provider"], "anthropic");
    assert_eq!(m["model"], "claude-3-5-haiku-latest");
    assert_eq!(a.request_count() - before, 2, "one retry on a 5xx");

    // 429 is not retried on the same provider: straight to the next.
    a.push(Behavior::Status {
        code: 429,
        retry_after: Some(7),
    });
    let before = a.request_count();
    let (status, m) = ask(&app, &user, chat, "hello three").await;
    assert_eq!(status, 200);
    assert_eq!(m["provider"], "anthropic");
    assert_eq!(a.request_count() - before, 1);

    // A wrong key is a fallback too.
    a.push(Behavior::CheckKey("another-key".into()));
    let (status, m) = ask(&app, &user, chat, "hello four").await;
    assert_eq!(status, 200);
    assert_eq!(m["provider"], "anthropic");

    // Both real providers down: the simulated one, last in the tier, answers.
    a.push(Behavior::Status {
        code: 503,
        retry_after: None,
    });
    a.push(Behavior::Status {
        code: 503,
        retry_after: None,
    });
    b.push(Behavior::Status {
        code: 529,
        retry_after: None,
    });
    b.push(Behavior::Status {
        code: 529,
        retry_after: None,
    });
    let (status, m) = ask(&app, &user, chat, "hello five").await;
    assert_eq!(status, 200);
    assert_eq!(m["provider"], "simulated");
}

#[tokio::test]
async fn a_hang_before_the_first_token_times_out_and_falls_back() {
    let (a, b) = (MockLlm::start().await, MockLlm::start().await);
    let app = spawn_app_with(|c| {
        with_mocks(c, &a, &b);
        c.routing.max_retries = 0;
    })
    .await;
    let (user, chat) = pro_user(&app).await;
    a.push(Behavior::HangBeforeFirstToken);
    let (status, m) = ask(&app, &user, chat, "are you there").await;
    assert_eq!(status, 200, "{m}");
    assert_eq!(m["provider"], "anthropic");
    assert!(
        a.wait_dropped(1, Duration::from_secs(3)).await,
        "the hung upstream request was closed"
    );
}

#[tokio::test]
async fn after_the_first_token_there_is_no_silent_switch() {
    let (a, b) = (MockLlm::start().await, MockLlm::start().await);
    let app = spawn_app_with(|c| with_mocks(c, &a, &b)).await;
    let (user, chat) = pro_user(&app).await;
    a.push(Behavior::DropAfter(2));
    let (status, body) = ask(&app, &user, chat, "break midway").await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "provider_unavailable");
    assert_eq!(a.request_count(), 1, "no retry after tokens");
    assert_eq!(b.request_count(), 0, "no fallback after tokens");
    let (content, status, out, cost): (String, String, i32, i64) = sqlx::query_as(
        "select content, status, output_tokens, cost_micros from messages where chat_id = $1 and role = 'assistant'",
    )
    .bind(chat)
    .fetch_one(&app.db)
    .await
    .unwrap();
    assert_eq!(status, "failed");
    assert_eq!(content, "t0 t1 ", "the partial answer is kept");
    assert_eq!(out, 2, "the tokens produced are billed");
    assert!(cost > 0);

    // A malformed chunk after a token: the same explicit failure.
    a.push(Behavior::Malformed);
    let (status, _) = ask(&app, &user, chat, "garbled").await;
    assert_eq!(status, 502);
    assert_eq!(b.request_count(), 0);
}

#[tokio::test]
async fn the_breaker_opens_probes_half_open_and_closes() {
    let (a, b) = (MockLlm::start().await, MockLlm::start().await);
    let app = spawn_app_with(|c| {
        with_mocks(c, &a, &b);
        c.routing.max_retries = 0;
    })
    .await;
    let (user, chat) = pro_user(&app).await;
    let providers = &app.state.actors.gens.providers;
    a.set(Behavior::Status {
        code: 500,
        retry_after: None,
    });
    for i in 0..3 {
        let (status, m) = ask(&app, &user, chat, &format!("q{i}")).await;
        assert_eq!((status, m["provider"].as_str()), (200, Some("anthropic")));
    }
    assert_eq!(providers.breaker("openai").await, Some(BreakerState::Open));
    // Open: openai is not even asked.
    let before = a.request_count();
    let (_, m) = ask(&app, &user, chat, "while open").await;
    assert_eq!(m["provider"], "anthropic");
    assert_eq!(a.request_count(), before);

    // After the cooldown one probe goes through; it fails, so open again.
    let half_open = || async {
        (providers.breaker("openai").await == Some(BreakerState::HalfOpen)).then_some(())
    };
    eventually(Duration::from_secs(5), "the breaker half-open", half_open).await;
    let (_, m) = ask(&app, &user, chat, "probe fails").await;
    assert_eq!(m["provider"], "anthropic");
    assert_eq!(a.request_count(), before + 1);
    assert_eq!(providers.breaker("openai").await, Some(BreakerState::Open));

    // Recovered: the next probe succeeds and the circuit closes.
    a.set(Behavior::default());
    eventually(Duration::from_secs(5), "the breaker half-open", half_open).await;
    let (_, m) = ask(&app, &user, chat, "probe succeeds").await;
    assert_eq!(m["provider"], "openai");
    assert_eq!(
        providers.breaker("openai").await,
        Some(BreakerState::Closed)
    );
}

#[tokio::test]
async fn plans_route_to_their_tiers_and_costs_follow_the_price_table() {
    let (a, b) = (MockLlm::start().await, MockLlm::start().await);
    let app = spawn_app_with(|c| with_mocks(c, &a, &b)).await;
    let free = app.new_user().await;
    let chat = app.create_chat(&free.access_token).await;
    let (status, m) = ask(&app, &free, chat, "free question").await;
    assert_eq!(status, 200);
    assert_eq!(
        m["provider"], "simulated",
        "free tier: LLM_PROVIDER_FREE_TIER"
    );
    assert_eq!(a.request_count(), 0);

    let (pro, chat) = pro_user(&app).await;
    let (_, m) = ask(&app, &pro, chat, "one two three four five").await;
    assert_eq!(m["provider"], "openai");
    // gpt-4o-mini: 150,000 µ$ per million input tokens, 600,000 per million output; rounded up.
    let (input, output) = (
        m["input_tokens"].as_i64().unwrap(),
        m["output_tokens"].as_i64().unwrap(),
    );
    assert_eq!(output, 4, "the provider's own usage");
    let expected =
        (input * 150_000 + 999_999) / 1_000_000 + (output * 600_000 + 999_999) / 1_000_000;
    assert_eq!(m["cost_micros"], expected);
    // The same figure lands in usage_events.
    let mut row = None;
    for _ in 0..50 {
        row = sqlx::query_as::<_, (i64, String)>(
            "select cost_micros, provider from usage_events where message_id = $1",
        )
        .bind(Uuid::parse_str(m["id"].as_str().unwrap()).unwrap())
        .fetch_optional(&app.db)
        .await
        .unwrap();
        if row.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(row, Some((expected, "openai".to_owned())));
}

#[tokio::test]
async fn parallel_requests_cannot_overspend_a_nearly_exhausted_budget() {
    const DAILY: i64 = 20_000;
    let app = spawn_app_with(|c| {
        let free = c.plans.get_mut("free").unwrap();
        free.daily_budget_micros = DAILY;
        free.messages_per_minute = 1000;
        free.tokens_per_minute = 10_000_000;
        c.chat.max_output_tokens = 1000; // worst case ≈ 400 µ$ a request on sim-1
        c.database.max_connections = 20;
    })
    .await;
    let user = app.new_user().await;
    let workspace: (Uuid,) =
        sqlx::query_as("select workspace_id from workspace_members where user_id = $1")
            .bind(user.id)
            .fetch_one(&app.db)
            .await
            .unwrap();
    // Spent so far: all but about three requests' worth.
    sqlx::query(
        "insert into usage_events (id, workspace_id, user_id, provider, model, input_tokens, output_tokens, cost_micros)
         values ($1, $2, $3, 'simulated', 'sim-1', 0, 0, $4)",
    )
    .bind(Uuid::now_v7())
    .bind(workspace.0)
    .bind(user.id)
    .bind(DAILY - 1_250)
    .execute(&app.db)
    .await
    .unwrap();
    let mut chats = Vec::new();
    for _ in 0..50 {
        chats.push(app.create_chat(&user.access_token).await);
    }
    let app = Arc::new(app);
    let user = Arc::new(user);
    let tasks: Vec<_> = chats
        .into_iter()
        .enumerate()
        .map(|(i, chat)| {
            let (app, user) = (app.clone(), user.clone());
            tokio::spawn(async move { ask(&app, &user, chat, &format!("parallel {i}")).await })
        })
        .collect();
    let mut ok = 0;
    let mut refused = 0;
    for t in tasks {
        let (status, body) = t.await.unwrap();
        match status {
            200 => ok += 1,
            402 => {
                assert_eq!(body["error"]["code"], "budget_exceeded");
                refused += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(ok >= 1 && refused >= 1, "ok {ok}, refused {refused}");
    // Every admitted answer is billed once the usage writer's batch lands.
    let (spent,): (i64,) = eventually(Duration::from_secs(5), "the answers' usage", || async {
        let (n, spent): (i64, Option<i64>) = sqlx::query_as(
            "select count(*), sum(cost_micros)::bigint from usage_events where workspace_id = $1",
        )
        .bind(workspace.0)
        .fetch_one(&app.db)
        .await
        .unwrap();
        // The row inserted above, and one per admitted answer.
        (n == ok as i64 + 1).then_some((spent.unwrap_or(0),))
    })
    .await;
    assert!(spent <= DAILY, "spent {spent} over the budget {DAILY}");
    // The usage view agrees and shows nothing held any more.
    let view: Value = app
        .client
        .get(app.url("/api/analytics/usage"))
        .bearer_auth(&user.access_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let daily = view["budgets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["scope"] == "workspace" && b["period"] == "daily")
        .unwrap()
        .clone();
    assert_eq!(daily["limit_micros"], DAILY);
    assert_eq!(daily["spent_micros"], spent);
    assert_eq!(daily["reserved_micros"], 0);
    assert_eq!(daily["remaining_micros"], DAILY - spent);
}

#[tokio::test]
async fn two_nodes_sharing_redis_share_one_rate_limit() {
    let first = spawn_app_with(|c| c.plans.get_mut("free").unwrap().messages_per_minute = 3).await;
    let (prefix, db) = (
        first.config.redis.key_prefix.clone(),
        first.config.database.url.clone(),
    );
    let second = spawn_app_with(move |c| {
        c.plans.get_mut("free").unwrap().messages_per_minute = 3;
        c.redis.key_prefix = prefix;
        c.database.url = db;
    })
    .await;
    let user = first.new_user().await;
    let chat = first.create_chat(&user.access_token).await;
    assert_eq!(ask(&first, &user, chat, "a").await.0, 200);
    assert_eq!(ask(&second, &user, chat, "b").await.0, 200);
    assert_eq!(ask(&first, &user, chat, "c").await.0, 200);
    let res = second
        .client
        .post(second.url(&format!("/api/chats/{chat}/messages")))
        .bearer_auth(&user.access_token)
        .json(&json!({"content": "d"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry));
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "rate_limited"
    );
}

/// A TCP proxy to the real Redis that a test can cut and restore.
struct RedisProxy {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    cut: Arc<tokio::sync::Notify>,
}

impl RedisProxy {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let cut = Arc::new(tokio::sync::Notify::new());
        let (up2, cut2) = (up.clone(), cut.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !up2.load(Ordering::SeqCst) {
                    continue; // dropped: connection refused in effect
                }
                let cut = cut2.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect("127.0.0.1:6379").await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        () = cut.notified() => {}
                    }
                });
            }
        });
        Self { addr, up, cut }
    }

    fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    fn stop(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cut.notify_waiters();
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn redis_down_mid_test_means_local_limits_then_recovery() {
    let proxy = RedisProxy::start().await;
    let url = proxy.url();
    let app = spawn_app_with(move |c| {
        c.redis.url = Some(Secret::new(url));
        c.plans.get_mut("free").unwrap().messages_per_minute = 2;
        // Every call tries Redis: this is about the switch to local counts
        // and back, not the breaker's cooldown (tests/api/outages.rs).
        c.redis.breaker_cooldown_ms = 0;
    })
    .await;
    let user = app.new_user().await;
    let chat = app.create_chat(&user.access_token).await;
    assert_eq!(ask(&app, &user, chat, "shared 1").await.0, 200);
    let ready: Value = app
        .client
        .get(app.url("/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["checks"]["limits"], "shared");

    proxy.stop();
    // Answers still flow, held to per-node limits and budgets.
    assert_eq!(ask(&app, &user, chat, "local 1").await.0, 200);
    assert_eq!(ask(&app, &user, chat, "local 2").await.0, 200);
    assert_eq!(
        ask(&app, &user, chat, "local 3").await.0,
        429,
        "the local limit holds"
    );
    // Still serving: degraded, not unready.
    let res = app.client.get(app.url("/ready")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let ready: Value = res.json().await.unwrap();
    assert_eq!(ready["status"], "degraded");
    assert_eq!(ready["checks"]["redis"], "down");
    assert_eq!(ready["checks"]["limits"], "local");
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("switchboard_redis_degraded 1"),
        "{metrics}"
    );

    proxy.restore();
    let mut recovered = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let res = app.client.get(app.url("/ready")).send().await.unwrap();
        if res.status() == 200 {
            let v: Value = res.json().await.unwrap();
            // A shared count again after the next request touches Redis.
            let _ = app
                .client
                .get(app.url("/api/analytics/usage"))
                .bearer_auth(&user.access_token)
                .send()
                .await;
            if v["checks"]["redis"] == "up" {
                recovered = true;
                break;
            }
        }
    }
    assert!(recovered, "redis comes back");
    // Shared counting resumes: the minute's Redis count had 1, so one more fits, then 429.
    let (status, _) = ask(&app, &user, chat, "shared 2").await;
    assert_eq!(status, 200);
    let ready: Value = app
        .client
        .get(app.url("/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["checks"]["limits"], "shared");
}

#[tokio::test]
async fn a_killed_nodes_reservations_are_released_when_it_restarts() {
    let first = spawn_app_with(|c| c.routing.node_id = Some("node-a".into())).await;
    let user = first.new_user().await;
    let workspace: (Uuid,) =
        sqlx::query_as("select workspace_id from workspace_members where user_id = $1")
            .bind(user.id)
            .fetch_one(&first.db)
            .await
            .unwrap();
    let limit = Limit {
        kind: ScopeKind::Workspace,
        id: workspace.0,
        period: Period::Daily,
        limit_micros: 100_000,
    };
    let ledger = first.state.actors.gens.admission.ledger().clone();
    // A generation in flight when the node dies: reserved, never settled.
    let _never_settled = ledger
        .reserve(std::slice::from_ref(&limit), 40_000)
        .await
        .unwrap();
    assert_eq!(ledger.standing(&limit).await.unwrap(), (0, 40_000));
    let (prefix, db) = (
        first.config.redis.key_prefix.clone(),
        first.config.database.url.clone(),
    );
    drop(first);

    let restarted = spawn_app_with(move |c| {
        c.routing.node_id = Some("node-a".into());
        c.redis.key_prefix = prefix;
        c.database.url = db;
    })
    .await;
    let ledger = restarted.state.actors.gens.admission.ledger();
    assert_eq!(
        ledger.standing(&limit).await.unwrap(),
        (0, 0),
        "released at start"
    );
}

#[tokio::test]
async fn budget_alerts_fire_once_per_threshold() {
    let app = spawn_app_with(|c| {
        let free = c.plans.get_mut("free").unwrap();
        free.daily_budget_micros = 40;
        free.monthly_budget_micros = 1_000_000;
        c.chat.max_output_tokens = 20;
        c.simulated.reply_tokens = 20; // ≈ 9 µ$ an answer on sim-1: 40 µ$ reaches 50 % in 3
    })
    .await;
    let user = app.new_user().await;
    let chat = app.create_chat(&user.access_token).await;
    let mut answered = 0;
    for i in 0..8 {
        match ask(&app, &user, chat, &format!("spend {i}")).await.0 {
            200 => answered += 1,
            402 => break,
            other => panic!("status {other}"),
        }
    }
    assert!(answered >= 2);
    let alerts: Vec<(String, Value)> =
        sqlx::query_as("select to_address, payload from email_outbox where template = 'budget_alert' order by created_at")
            .fetch_all(&app.db)
            .await
            .unwrap();
    let daily_ws: Vec<i64> = alerts
        .iter()
        .filter(|(_, p)| p["scope"] == "workspace" && p["period"] == "daily")
        .map(|(_, p)| p["threshold_pct"].as_i64().unwrap())
        .collect();
    assert!(daily_ws.contains(&50), "{alerts:?}");
    let mut dedup = daily_ws.clone();
    dedup.dedup();
    assert_eq!(daily_ws, dedup, "each threshold once");
    assert!(alerts.iter().all(|(to, _)| to == &user.email));
    let metrics = app.metrics_text().await;
    assert!(metrics.contains("switchboard_budget_alerts_total"));
}

#[tokio::test]
async fn a_rest_client_that_disconnects_cancels_upstream_and_pays_for_what_was_produced() {
    let (a, b) = (MockLlm::start().await, MockLlm::start().await);
    let app = spawn_app_with(|c| with_mocks(c, &a, &b)).await;
    let (user, chat) = pro_user(&app).await;
    a.push(Behavior::slow(200, Duration::from_millis(20)));
    let res = app
        .client
        .post(app.url(&format!("/api/chats/{chat}/messages")))
        .bearer_auth(&user.access_token)
        .header("accept", "text/event-stream")
        .json(&json!({"content": "long answer please"}))
        .send()
        .await
        .unwrap();
    let mut body = res.bytes_stream();
    let mut seen = String::new();
    while !seen.contains("event: delta") {
        use futures::StreamExt;
        seen.push_str(&String::from_utf8_lossy(
            &body.next().await.unwrap().unwrap(),
        ));
    }
    drop(body);
    assert!(
        a.wait_dropped(1, Duration::from_secs(5)).await,
        "upstream request cancelled"
    );
    let mut row = None;
    for _ in 0..50 {
        row = sqlx::query_as::<_, (String, i32)>(
            "select status, output_tokens from messages where chat_id = $1 and role = 'assistant' and status <> 'streaming'",
        )
        .bind(chat)
        .fetch_optional(&app.db)
        .await
        .unwrap();
        if row.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, produced) = row.expect("the answer was finalized");
    assert_eq!(status, "cancelled");
    assert!(produced > 0 && produced < 200, "{produced}");
}

#[tokio::test]
async fn usage_view_and_daily_costs() {
    let app = spawn_app_with(|_| {}).await;
    let user = app.new_user().await;
    let chat = app.create_chat(&user.access_token).await;
    assert_eq!(ask(&app, &user, chat, "count me").await.0, 200);
    eventually(Duration::from_secs(5), "the usage row", || async {
        let n: i64 = sqlx::query_scalar("select count(*) from usage_events")
            .fetch_one(&app.db)
            .await
            .unwrap();
        (n == 1).then_some(())
    })
    .await;
    let view: Value = app
        .client
        .get(app.url("/api/analytics/usage"))
        .bearer_auth(&user.access_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view["plan"], "free");
    assert_eq!(view["month_requests"], 1);
    assert!(view["month_cost_micros"].as_i64().unwrap() > 0);
    assert_eq!(view["budgets"].as_array().unwrap().len(), 4);
    // Daily costs are for admins.
    let res = app
        .client
        .get(app.url("/api/analytics/costs/daily"))
        .bearer_auth(&user.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    sqlx::query("update users set is_admin = true where id = $1")
        .bind(user.id)
        .execute(&app.db)
        .await
        .unwrap();
    let rows: Value = app
        .client
        .get(app.url("/api/analytics/costs/daily?days=7"))
        .bearer_auth(&user.access_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rows[0]["provider"], "simulated");
    assert_eq!(rows[0]["requests"], 1);
    let res = app
        .client
        .get(app.url("/api/analytics/costs/daily?days=0"))
        .bearer_auth(&user.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let res = app
        .client
        .get(app.url("/api/analytics/usage"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn a_lapsed_reservation_stops_holding_budget() {
    let app = spawn_app_with(|c| c.routing.reservation_ttl_secs = 1).await;
    let limit = Limit {
        kind: ScopeKind::Workspace,
        id: Uuid::now_v7(),
        period: Period::Monthly,
        limit_micros: 100_000,
    };
    let ledger = app.state.actors.gens.admission.ledger();
    let limits = std::slice::from_ref(&limit);
    let _lost = ledger.reserve(limits, 60_000).await.unwrap();
    assert!(
        ledger.reserve(limits, 60_000).await.is_err(),
        "held: no room for a second"
    );
    let second = eventually(
        Duration::from_secs(5),
        "the first reservation to lapse",
        || async { ledger.reserve(limits, 60_000).await.ok() },
    )
    .await;
    // A reservation is released once, even if settled twice (its cost is added each time).
    ledger.settle(second.clone(), 500).await;
    ledger.settle(second, 500).await;
    assert_eq!(ledger.standing(&limit).await.unwrap(), (1_000, 0));
    assert!(ledger.reserve(limits, 99_000).await.is_ok());
}
