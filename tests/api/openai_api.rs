//! API keys and the OpenAI-compatible `/v1` API, with a real HTTP client and
//! the official OpenAI Python SDK.

use std::{path::Path, time::Duration};

use futures::StreamExt;
use serde_json::{Value, json};
use switchboard::config::Secret;
use uuid::Uuid;

use crate::{
    helpers::{TestApp, eventually, spawn_app, spawn_app_with},
    mock_llm::{Behavior, MockLlm},
};

async fn complete(app: &TestApp, key: &str, body: Value) -> reqwest::Response {
    app.client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// The `data:` payloads of an SSE body, in order.
async fn sse_data(res: reqwest::Response) -> Vec<String> {
    let text = res.text().await.unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn keys_are_shown_once_listed_by_prefix_and_revocable() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let created = app
        .create_key(
            &user,
            json!({"name": "my app", "budget_micros": 5000, "rate_limit_rpm": 60}),
        )
        .await;
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("sk-sb-") && key.len() > 60);
    assert!(key.starts_with(created["prefix"].as_str().unwrap()));
    assert_eq!(created["budget_micros"], 5000);

    let list: Value = app
        .client
        .get(app.url("/api/keys"))
        .bearer_auth(&user.access_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let keys = list["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert!(keys[0].get("key").is_none(), "the key is never shown again");
    assert!(!list.to_string().contains(&key));
    // Stored hashed.
    let (n,): (i64,) =
        sqlx::query_as("select count(*) from api_keys where key_hash = $1 or prefix = $1")
            .bind(&key)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(n, 0);

    // Works (and records when it was last used), then is revoked and stops at once.
    let res = app
        .client
        .get(app.url("/v1/models"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut used = false;
    for _ in 0..20 {
        let (at,): (Option<chrono::DateTime<chrono::Utc>>,) =
            sqlx::query_as("select last_used_at from api_keys")
                .fetch_one(&app.db)
                .await
                .unwrap();
        if at.is_some() {
            used = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(used, "last_used_at recorded");
    let id = created["id"].as_str().unwrap();
    let res = app
        .client
        .delete(app.url(&format!("/api/keys/{id}")))
        .bearer_auth(&user.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let res = app
        .client
        .get(app.url("/v1/models"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_api_key");
    assert_eq!(body["error"]["type"], "invalid_request_error");

    // Another user cannot revoke or see it; bad input is named.
    let other = app.new_user().await;
    let res = app
        .client
        .delete(app.url(&format!("/api/keys/{id}")))
        .bearer_auth(&other.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    for (body, field) in [
        (json!({"name": ""}), "name"),
        (json!({"name": "x", "budget_micros": -1}), "budget_micros"),
        (json!({"name": "x", "rate_limit_rpm": 0}), "rate_limit_rpm"),
        (
            json!({"name": "x", "workspace_id": Uuid::now_v7()}),
            "workspace",
        ),
    ] {
        let res = app
            .client
            .post(app.url("/api/keys"))
            .bearer_auth(&other.access_token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(res.status() == 400 || res.status() == 404, "{body}");
        assert!(res.text().await.unwrap().contains(field), "{body}");
    }
    let res = app
        .client
        .post(app.url("/api/keys"))
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn a_revocation_holds_at_once_here_and_within_a_second_on_another_node() {
    let first = spawn_app().await;
    let db = first.config.database.url.clone();
    let second = spawn_app_with(move |c| c.database.url = db).await;
    let user = first.new_user().await;
    let key = first.create_key(&user, json!({"name": "shared"})).await;
    let secret = key["key"].as_str().unwrap().to_owned();
    let models = |app: &TestApp| {
        app.client
            .get(app.url("/v1/models"))
            .bearer_auth(&secret)
            .send()
    };
    // Both nodes have the key cached now.
    assert_eq!(models(&first).await.unwrap().status(), 200);
    assert_eq!(models(&second).await.unwrap().status(), 200);
    first
        .client
        .delete(first.url(&format!("/api/keys/{}", key["id"].as_str().unwrap())))
        .bearer_auth(&user.access_token)
        .send()
        .await
        .unwrap();
    // The node that revoked it forgets it at once.
    assert_eq!(models(&first).await.unwrap().status(), 401);
    // The other node within `auth.key_cache_ms` (1 s), with a margin for a busy machine.
    let bound = Duration::from_millis(second.config.auth.key_cache_ms + 1500);
    eventually(bound, "the revocation on the other node", || async {
        (models(&second).await.unwrap().status() == 401).then_some(())
    })
    .await;
}

#[tokio::test]
async fn completions_stream_and_not_and_land_in_usage() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let key = app.create_key(&user, json!({"name": "k"})).await;
    let secret = key["key"].as_str().unwrap();

    let res = complete(
        &app,
        secret,
        json!({"model": "sim-1", "messages": [{"role": "user", "content": "hi there"}]}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "sim-1");
    let text = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(
        text,
        switchboard::providers::simulated::reply_tokens("hi there", 20).concat()
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(body["usage"]["completion_tokens"], 20);

    let res = complete(
        &app,
        secret,
        json!({"model": "fast", "stream": true, "stream_options": {"include_usage": true}, "temperature": 0.5,
               "max_tokens": 10, "messages": [{"role": "user", "content": "stream please"}]}),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let data = sse_data(res).await;
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0)?["delta"]["content"].as_str())
        .collect();
    assert_eq!(
        streamed,
        switchboard::providers::simulated::reply_tokens("stream please", 10).concat()
    );
    let finish = chunks
        .iter()
        .find_map(|c| c["choices"].get(0)?["finish_reason"].as_str())
        .unwrap();
    assert_eq!(finish, "length", "max_tokens passed through");
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["completion_tokens"], 10);
    assert_eq!(chunks.last().unwrap()["choices"], json!([]));

    // Both calls are billed to the key and its workspace.
    let (n, out): (i64, i64) = eventually(Duration::from_secs(5), "both usage rows", || async {
        let row: (i64, Option<i64>) = sqlx::query_as(
            "select count(*), sum(output_tokens)::bigint from usage_events where api_key_id = $1 and workspace_id = $2",
        )
        .bind(Uuid::parse_str(key["id"].as_str().unwrap()).unwrap())
        .bind(Uuid::parse_str(key["workspace_id"].as_str().unwrap()).unwrap())
        .fetch_one(&app.db)
        .await
        .unwrap();
        (row.0 == 2).then_some((row.0, row.1.unwrap_or(0)))
    })
    .await;
    assert_eq!((n, out), (2, 30));
}

#[tokio::test]
async fn bad_requests_get_openai_errors_naming_the_parameter() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let key = app.create_key(&user, json!({"name": "k"})).await;
    let secret = key["key"].as_str().unwrap();
    let msgs = json!([{"role": "user", "content": "x"}]);
    let cases = [
        (json!({"messages": msgs}), "model"),
        (json!({"model": "sim-1"}), "messages"),
        (json!({"model": "sim-1", "messages": []}), "messages"),
        (
            json!({"model": "sim-1", "messages": [{"role": "wizard", "content": "x"}]}),
            "messages",
        ),
        (
            json!({"model": "sim-1", "messages": msgs, "temperature": 3}),
            "temperature",
        ),
        (
            json!({"model": "sim-1", "messages": msgs, "top_p": 2}),
            "top_p",
        ),
        (json!({"model": "sim-1", "messages": msgs, "n": 2}), "n"),
        (
            json!({"model": "sim-1", "messages": msgs, "max_tokens": 0}),
            "max_tokens",
        ),
        (
            json!({"model": "sim-1", "messages": msgs, "stop": ["a", "b", "c", "d", "e"]}),
            "stop",
        ),
        (json!({"model": "gpt-99", "messages": msgs}), "model"),
    ];
    for (body, param) in cases {
        let res = complete(&app, secret, body.clone()).await;
        assert_eq!(res.status(), 400, "{body}");
        let err: Value = res.json().await.unwrap();
        assert_eq!(err["error"]["type"], "invalid_request_error", "{body}");
        assert_eq!(err["error"]["param"], param, "{body}: {err}");
        assert!(!err["error"]["message"].as_str().unwrap().is_empty());
    }
    let res = app
        .client
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(secret)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["type"],
        "invalid_request_error"
    );
    for auth in ["", "Bearer sk-sb-nope", "Bearer "] {
        let res = app
            .client
            .post(app.url("/v1/chat/completions"))
            .header("authorization", auth)
            .json(&json!({"model": "sim-1", "messages": msgs}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "{auth:?}");
        assert_eq!(
            res.json::<Value>().await.unwrap()["error"]["code"],
            "invalid_api_key"
        );
    }
    // A user's access token is not an API key.
    let res = complete(
        &app,
        &user.access_token,
        json!({"model": "sim-1", "messages": msgs}),
    )
    .await;
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn a_keys_budget_and_rate_limit_hold() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    // The team plan's per-minute limits, so the key's own limits are what stop it.
    sqlx::query("update workspaces set plan = 'team' where id in (select workspace_id from workspace_members where user_id = $1)")
        .bind(user.id)
        .execute(&app.db)
        .await
        .unwrap();
    // sim-1 reserves about 400 µ$ (1024 output tokens) and costs about 9 µ$.
    let tight = app
        .create_key(&user, json!({"name": "tight", "budget_micros": 300}))
        .await;
    let res = complete(
        &app,
        tight["key"].as_str().unwrap(),
        json!({"model": "sim-1", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
    let err: Value = res.json().await.unwrap();
    assert_eq!(err["error"]["code"], "insufficient_quota");
    // With max_tokens small enough the worst case fits, until the spend is used up.
    let body =
        json!({"model": "sim-1", "max_tokens": 20, "messages": [{"role": "user", "content": "x"}]});
    let mut ok = 0;
    for _ in 0..40 {
        let res = complete(&app, tight["key"].as_str().unwrap(), body.clone()).await;
        match res.status().as_u16() {
            200 => ok += 1,
            429 => {
                assert_eq!(
                    res.json::<Value>().await.unwrap()["error"]["code"],
                    "insufficient_quota"
                );
                break;
            }
            s => panic!("{s}"),
        }
    }
    assert!((10..40).contains(&ok), "{ok}");
    let (spent,): (i64,) = eventually(Duration::from_secs(5), "the answers' usage", || async {
        let (n, spent): (i64, i64) = sqlx::query_as(
            "select count(*), coalesce(sum(cost_micros), 0)::bigint from usage_events where api_key_id = $1",
        )
        .bind(Uuid::parse_str(tight["id"].as_str().unwrap()).unwrap())
        .fetch_one(&app.db)
        .await
        .unwrap();
        (n == ok as i64).then_some((spent,))
    })
    .await;
    assert!(spent <= 300, "{spent}");

    let limited = app
        .create_key(&user, json!({"name": "slow", "rate_limit_rpm": 2}))
        .await;
    let key = limited["key"].as_str().unwrap();
    assert_eq!(complete(&app, key, body.clone()).await.status(), 200);
    assert_eq!(complete(&app, key, body.clone()).await.status(), 200);
    let res = complete(&app, key, body).await;
    assert_eq!(res.status(), 429);
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry));
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "rate_limit_exceeded"
    );
}

fn through_mock(c: &mut switchboard::config::Config, mock: &MockLlm) {
    c.providers.openai_base_url = Some(mock.openai_base());
    c.providers.openai_api_key = Some(Secret::new("sk-upstream"));
    c.routing.max_retries = 0;
    // The tests name OpenAI's models on a free plan: let the free tier reach them.
    c.providers.free_tier = "simulated,openai".into();
}

#[tokio::test]
async fn a_client_that_disconnects_cancels_upstream_and_is_billed_for_what_was_produced() {
    let mock = MockLlm::start().await;
    let app = spawn_app_with(|c| through_mock(c, &mock)).await;
    let user = app.new_user().await;
    let key = app.create_key(&user, json!({"name": "k"})).await;
    mock.set(Behavior::slow(300, Duration::from_millis(15)));
    let res = complete(
        &app,
        key["key"].as_str().unwrap(),
        json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "long please"}]}),
    )
    .await;
    let mut body = res.bytes_stream();
    let mut seen = String::new();
    while seen.matches("chat.completion.chunk").count() < 5 {
        seen.push_str(&String::from_utf8_lossy(
            &body.next().await.unwrap().unwrap(),
        ));
    }
    drop(body);
    assert!(
        mock.wait_dropped(1, Duration::from_secs(5)).await,
        "upstream request cancelled"
    );
    let mut row = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        row = sqlx::query_as::<_, (i32, i64)>(
            "select output_tokens, cost_micros from usage_events where api_key_id = $1",
        )
        .bind(Uuid::parse_str(key["id"].as_str().unwrap()).unwrap())
        .fetch_optional(&app.db)
        .await
        .unwrap();
        if row.is_some() {
            break;
        }
    }
    let (produced, cost) = row.expect("billed");
    assert!((4..300).contains(&produced), "{produced}");
    assert!(cost > 0);
}

#[tokio::test]
async fn a_mid_stream_failure_ends_with_an_error_never_done() {
    let mock = MockLlm::start().await;
    let app = spawn_app_with(|c| through_mock(c, &mock)).await;
    let user = app.new_user().await;
    let key = app.create_key(&user, json!({"name": "k"})).await;
    mock.push(Behavior::DropAfter(3));
    let res = complete(
        &app,
        key["key"].as_str().unwrap(),
        json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "break"}]}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let data = sse_data(res).await;
    assert!(!data.iter().any(|d| d == "[DONE]"), "{data:?}");
    let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert_eq!(last["error"]["type"], "server_error");
    // Non-streaming: a 502, not a truncated 200.
    mock.push(Behavior::DropAfter(2));
    let res = complete(
        &app,
        key["key"].as_str().unwrap(),
        json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "break"}]}),
    )
    .await;
    assert_eq!(res.status(), 502);
    // Upstream failing before any token with no fallback left: an OpenAI-shaped 502.
    mock.push(Behavior::Status {
        code: 500,
        retry_after: None,
    });
    let res = complete(
        &app,
        key["key"].as_str().unwrap(),
        json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    // gpt-4o-mini falls back to the free tier (simulated) when openai fails.
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["model"], "sim-1");
}

#[tokio::test]
async fn models_and_embeddings() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let key = app.create_key(&user, json!({"name": "k"})).await;
    let secret = key["key"].as_str().unwrap();
    let models: Value = app
        .client
        .get(app.url("/v1/models"))
        .bearer_auth(secret)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"sim-1") && ids.contains(&"fast"), "{ids:?}");
    assert!(
        !ids.contains(&"gpt-4o"),
        "providers without credentials are not offered"
    );

    let res = app
        .client
        .post(app.url("/v1/embeddings"))
        .bearer_auth(secret)
        .json(&json!({"model": "local-hash-384", "input": ["the cat sat", "the cat sat", "stock prices"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let vecs: Vec<Vec<f64>> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            d["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect();
    assert_eq!(vecs.len(), 3);
    assert_eq!(vecs[0].len(), 384);
    assert_eq!(vecs[0], vecs[1]);
    assert_ne!(vecs[0], vecs[2]);
    assert!(body["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    for bad in [
        json!({"model": "m", "input": []}),
        json!({"model": "m", "input": [1, 2]}),
        json!({"input": "x"}),
    ] {
        let res = app
            .client
            .post(app.url("/v1/embeddings"))
            .bearer_auth(secret)
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{bad}");
        assert_eq!(
            res.json::<Value>().await.unwrap()["error"]["type"],
            "invalid_request_error"
        );
    }
}

#[tokio::test]
async fn the_official_openai_python_sdk_works_unmodified() {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-tests/bin/python");
    assert!(
        python.exists(),
        "the OpenAI SDK venv is missing: run scripts/setup.sh (make test does)"
    );
    let app = spawn_app().await;
    let user = app.new_user().await;
    let key = app.create_key(&user, json!({"name": "sdk"})).await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/openai_client.py");
    let base = app.url("/v1");
    let secret = key["key"].as_str().unwrap().to_owned();
    let out = tokio::process::Command::new(&python)
        .arg(&script)
        .arg(&base)
        .arg(&secret)
        .arg("sim-1")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    let expected = switchboard::providers::simulated::reply_tokens("Say hello", 20).concat();
    assert_eq!(seen["stream"]["text"], expected);
    assert_eq!(seen["stream"]["finish_reason"], "stop");
    assert_eq!(seen["stream"]["usage"]["completion_tokens"], 20);
    assert!(seen["stream"]["chunks"].as_u64().unwrap() >= 20);
    assert_eq!(seen["plain"]["text"], expected);
    assert_eq!(seen["plain"]["object"], "chat.completion");
    assert!(
        seen["models"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m == "sim-1")
    );
    assert_eq!(seen["embeddings"], json!({"count": 2, "dims": 384}));
    assert_eq!(seen["bad_key"], 401);
    assert_eq!(seen["bad_model"], "model");
}
