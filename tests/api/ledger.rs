//! Money is never lost, never overspent, never served to the wrong tenant:
//! a provider that ignores `max_tokens` or over-reports its prompt, a usage
//! row the database refuses, a process killed mid-answer, a free plan naming
//! a paid model.

use std::time::Duration;

use serde_json::{Value, json};
use switchboard::{
    actors::persistence::{UsageEvent, UsageMsg},
    config::{Config, Secret},
    providers::{PromptMessage, Usage, tokenizer},
};
use uuid::Uuid;

use crate::{
    helpers::{TestApp, TestUser, eventually, spawn_app_with},
    mock_llm::{Behavior, MockLlm},
};

/// OpenAI through the mock; free plans reach only the simulator, paid ones OpenAI too.
fn through(c: &mut Config, mock: &MockLlm) {
    c.providers.openai_base_url = Some(mock.openai_base());
    c.providers.openai_api_key = Some(Secret::new("sk-upstream"));
    c.providers.free_tier = "simulated".into();
    c.providers.paid_tier = "openai,simulated".into();
    c.routing.max_retries = 0;
}

async fn key_for(app: &TestApp, user: &TestUser) -> (String, Uuid) {
    let v = app.create_key(user, json!({"name": "ledger"})).await;
    (
        v["key"].as_str().unwrap().to_owned(),
        v["id"].as_str().unwrap().parse().unwrap(),
    )
}

/// The key's one usage row: (input, output, cost).
async fn billed(app: &TestApp, key_id: Uuid) -> (i32, i32, i64) {
    eventually(Duration::from_secs(5), "the usage row", || async {
        sqlx::query_as(
            "select input_tokens, output_tokens, cost_micros from usage_events where api_key_id = $1",
        )
        .bind(key_id)
        .fetch_optional(&app.db)
        .await
        .unwrap()
    })
    .await
}

async fn complete(app: &TestApp, key: &str, body: Value) -> reqwest::Response {
    app.client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_provider_that_ignores_max_tokens_is_cut_off_at_it() {
    let mock = MockLlm::start().await;
    mock.ignore_max_tokens();
    mock.set(Behavior::tokens((0..50).map(|i| format!("t{i} "))));
    let app = spawn_app_with(|c| through(c, &mock)).await;
    let user = app.new_user().await;
    app.set_plan(&user, "pro").await;
    let (key, key_id) = key_for(&app, &user).await;
    let res = complete(
        &app,
        &key,
        json!({"model": "gpt-4o-mini", "max_tokens": 5, "messages": [{"role": "user", "content": "go on"}]}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "t0 t1 t2 t3 t4 ");
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(body["usage"]["completion_tokens"], 5);
    assert_eq!(billed(&app, key_id).await.1, 5, "billed what was delivered");
}

#[tokio::test]
async fn over_reported_usage_is_charged_at_most_the_reservation() {
    let mock = MockLlm::start().await;
    mock.over_report_input(1_000_000);
    let app = spawn_app_with(|c| through(c, &mock)).await;
    let user = app.new_user().await;
    app.set_plan(&user, "pro").await;
    let (key, key_id) = key_for(&app, &user).await;
    let prompt = "count me fairly";
    let res = complete(
        &app,
        &key,
        json!({"model": "gpt-4o-mini", "max_tokens": 10, "messages": [{"role": "user", "content": prompt}]}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let (input, output, cost) = billed(&app, key_id).await;
    assert!(
        input > 1_000_000,
        "the provider's count is recorded: {input}"
    );
    let pricing = &app.state.actors.gens.pricing;
    let counted = tokenizer::count_prompt(&[PromptMessage {
        role: "user".into(),
        content: prompt.into(),
        ..PromptMessage::default()
    }]);
    let reserved = pricing
        .cost_micros(
            "gpt-4o-mini",
            Usage {
                input_tokens: counted,
                output_tokens: 10,
            },
        )
        .unwrap();
    let reported = pricing
        .cost_micros(
            "gpt-4o-mini",
            Usage {
                input_tokens: u32::try_from(input).unwrap(),
                output_tokens: u32::try_from(output).unwrap(),
            },
        )
        .unwrap();
    assert!(reported > reserved);
    assert_eq!(cost, reserved, "charged the reservation, not the report");
}

#[tokio::test]
async fn a_plan_reaches_only_its_tiers_models_on_every_door() {
    let mock = MockLlm::start().await;
    let app = spawn_app_with(|c| through(c, &mock)).await;
    let user = app.new_user().await;
    let (key, _) = key_for(&app, &user).await;
    let ask = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]});
    let res = complete(&app, &key, ask.clone()).await;
    assert_eq!(res.status(), 400);
    let err: Value = res.json().await.unwrap();
    assert_eq!(err["error"]["code"], "model_not_found", "{err}");
    assert_eq!(
        mock.requests().len(),
        0,
        "nothing reached the paid provider"
    );

    let chat = app.create_chat(&user.access_token).await;
    let mut ws = app.ws(&user.access_token).await;
    ws.send(json!({"type": "send", "chat_id": chat, "client_msg_id": "m", "content": "hi", "model": "gpt-4o"}))
        .await;
    assert_eq!(ws.next_of("error").await["code"], "forbidden");
    let res = app
        .client
        .post(app.url(&format!("/api/chats/{chat}/messages")))
        .bearer_auth(&user.access_token)
        .json(&json!({"content": "hi", "model": "gpt-4o"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);

    app.set_plan(&user, "pro").await;
    let res = complete(&app, &key, ask).await;
    assert_eq!(res.status(), 200, "a paid plan may");
    assert_eq!(mock.requests().len(), 1);
}

#[tokio::test]
async fn a_usage_event_the_database_refuses_never_blocks_the_others() {
    let app = spawn_app_with(|_| {}).await;
    let user = app.new_user().await;
    let workspace = app.workspace_of(&user).await;
    let event = |workspace_id, tokens| UsageEvent {
        workspace_id,
        user_id: Some(user.id),
        api_key_id: None,
        chat_id: Some(Uuid::now_v7()),
        message_id: None,
        provider: "simulated".into(),
        model: "sim-1".into(),
        input_tokens: tokens,
        output_tokens: tokens,
        cost_micros: 1,
    };
    let usage = &app.state.actors.gens.usage;
    // A workspace that does not exist: refused for good. A chat that does not
    // exist (deleted): fine, usage does not depend on it.
    usage
        .cast(UsageMsg::Record(event(Uuid::now_v7(), 1)))
        .unwrap();
    usage.cast(UsageMsg::Record(event(workspace, 2))).unwrap();
    usage.cast(UsageMsg::Record(event(workspace, 3))).unwrap();
    let rows: Vec<i32> = eventually(Duration::from_secs(5), "the good rows", || async {
        let rows: Vec<i32> = sqlx::query_scalar(
            "select input_tokens from usage_events where workspace_id = $1 order by input_tokens",
        )
        .bind(workspace)
        .fetch_all(&app.db)
        .await
        .unwrap();
        (rows.len() == 2).then_some(rows)
    })
    .await;
    assert_eq!(rows, vec![2, 3]);
    let metrics = app.metrics_text().await;
    assert!(metrics.contains("switchboard_usage_events_rejected_total"));
}

#[tokio::test]
async fn answers_a_killed_process_left_streaming_are_billed_once_at_restart() {
    let first = spawn_app_with(|_| {}).await;
    let user = first.new_user().await;
    let chat = first.create_chat(&user.access_token).await;
    let res = first
        .client
        .post(first.url(&format!("/api/chats/{chat}/messages")))
        .bearer_auth(&user.access_token)
        .json(&json!({"content": "first"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let asked: Uuid = sqlx::query_scalar(
        "select id from messages where chat_id = $1 and role = 'user' order by seq limit 1",
    )
    .bind(chat)
    .fetch_one(&first.db)
    .await
    .unwrap();
    // What a process killed mid-answer leaves: a streaming row with its last checkpoint.
    let saved = "words saved by the last checkpoint";
    let interrupted = Uuid::now_v7();
    sqlx::query(
        "with next as (update chats set last_seq = last_seq + 1 where id = $1 returning last_seq)
         insert into messages (id, chat_id, seq, role, reply_to, content, status, provider, model, input_tokens)
         select $2, $1, next.last_seq, 'assistant', $3, $4, 'streaming', 'simulated', 'sim-1', 7 from next",
    )
    .bind(chat)
    .bind(interrupted)
    .bind(asked)
    .bind(saved)
    .execute(&first.db)
    .await
    .unwrap();
    let (prefix, db) = (
        first.config.redis.key_prefix.clone(),
        first.config.database.url.clone(),
    );
    drop(first);

    for _ in 0..2 {
        let restarted = spawn_app_with({
            let (prefix, db) = (prefix.clone(), db.clone());
            move |c| {
                c.redis.key_prefix = prefix;
                c.database.url = db;
            }
        })
        .await;
        let (status, reason): (String, String) =
            sqlx::query_as("select status, finish_reason from messages where id = $1")
                .bind(interrupted)
                .fetch_one(&restarted.db)
                .await
                .unwrap();
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("failed", "interrupted")
        );
        let rows: Vec<(i32, i32, i64, Option<Uuid>)> = sqlx::query_as(
            "select input_tokens, output_tokens, cost_micros, user_id from usage_events where message_id = $1",
        )
        .bind(interrupted)
        .fetch_all(&restarted.db)
        .await
        .unwrap();
        let output = i32::try_from(tokenizer::count_tokens(saved)).unwrap();
        assert_eq!(rows.len(), 1, "billed once, across two restarts");
        assert_eq!((rows[0].0, rows[0].1), (7, output));
        assert!(rows[0].2 > 0);
        assert_eq!(rows[0].3, Some(user.id), "billed to who asked");
    }
}
