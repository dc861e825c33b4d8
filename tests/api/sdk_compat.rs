//! `/v1` as real clients use it: the official OpenAI SDKs (Python, Node),
//! LangChain and the Vercel AI SDK, each run once against a real server, with
//! many checks inside (tests/sdk/openai_features.py, tests/sdk/node/sdk_check.mjs);
//! plus direct HTTP checks of the wire details the SDKs hide (base64 bytes,
//! streamed tool-call deltas, Responses events, refusals naming parameters).

use std::path::PathBuf;

use base64::Engine as _;
use serde_json::{Value, json};
use switchboard::providers::{embedding::LocalEmbedder, simulated::reply_tokens, tokenizer};

use crate::helpers::{TestApp, spawn_app};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// An app with a team-plan key (its per-minute limits leave room for a script's many calls).
async fn app_and_key() -> (TestApp, String) {
    let app = spawn_app().await;
    let user = app.new_user().await;
    app.set_plan(&user, "team").await;
    let key = app.create_key(&user, json!({"name": "sdk"})).await;
    let key = key["key"].as_str().unwrap().to_owned();
    (app, key)
}

async fn post(app: &TestApp, key: &str, path: &str, body: Value) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// The `data:` payloads of an SSE body (and their `event:` names), in order.
async fn sse(res: reqwest::Response) -> Vec<(Option<String>, String)> {
    let text = res.text().await.unwrap();
    let mut out = Vec::new();
    let mut event = None;
    for line in text.lines() {
        if let Some(e) = line
            .strip_prefix("event: ")
            .or_else(|| line.strip_prefix("event:"))
        {
            event = Some(e.trim().to_owned());
        } else if let Some(d) = line
            .strip_prefix("data: ")
            .or_else(|| line.strip_prefix("data:"))
        {
            out.push((event.take(), d.to_owned()));
        }
    }
    out
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn close(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6)
}

const WEATHER: &str = r#"{"type": "function", "function": {"name": "get_weather",
    "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"},
    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    "required": ["location", "unit"], "additionalProperties": false}}}"#;
const ASK: &str = "What is the weather in Paris? Use get_weather.";

#[tokio::test]
async fn embeddings_in_both_encodings_with_dimensions_and_token_ids() {
    let (app, key) = app_and_key().await;
    let text = "the cat sat";
    let expected = LocalEmbedder::vector(text);
    let res = post(
        &app,
        &key,
        "/v1/embeddings",
        json!({"model": "local-hash-384", "input": text, "encoding_format": "base64"}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let b64 = body["data"][0]["embedding"]
        .as_str()
        .expect("base64 is a string");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    assert_eq!(bytes.len(), 384 * 4);
    let decoded: Vec<f32> = bytes
        .chunks(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(decoded, expected, "little-endian f32, exactly");

    let res = post(
        &app,
        &key,
        "/v1/embeddings",
        json!({"model": "local-hash-384", "input": [text], "encoding_format": "float"}),
    )
    .await;
    let body: Value = res.json().await.unwrap();
    assert!(close(&floats(&body["data"][0]["embedding"]), &expected));

    // Token ids (one list, and a list of lists) embed their text.
    let ids: Vec<u32> = tiktoken_rs::cl100k_base().unwrap().encode_ordinary(text);
    for input in [json!(ids), json!([ids, ids])] {
        let res = post(
            &app,
            &key,
            "/v1/embeddings",
            json!({"model": "local-hash-384", "input": input}),
        )
        .await;
        assert_eq!(res.status(), 200, "{input}");
        let body: Value = res.json().await.unwrap();
        assert!(
            close(&floats(&body["data"][0]["embedding"]), &expected),
            "{input}"
        );
    }

    for (body, param, code) in [
        (
            json!({"model": "local-hash-384", "input": "x", "dimensions": 64}),
            "dimensions",
            Value::Null,
        ),
        (
            json!({"model": "local-hash-384", "input": "x", "encoding_format": "hex"}),
            "encoding_format",
            Value::Null,
        ),
        (
            json!({"model": "nope", "input": "x"}),
            "model",
            json!("model_not_found"),
        ),
        (
            json!({"model": "local-hash-384", "input": [[4294967295u32]]}),
            "input",
            Value::Null,
        ),
        (
            json!({"model": "local-hash-384", "input": []}),
            "input",
            Value::Null,
        ),
    ] {
        let res = post(&app, &key, "/v1/embeddings", body.clone()).await;
        assert_eq!(res.status(), 400, "{body}");
        let err: Value = res.json().await.unwrap();
        assert_eq!(err["error"]["param"], param, "{body}: {err}");
        assert_eq!(err["error"]["type"], "invalid_request_error");
        if !code.is_null() {
            assert_eq!(err["error"]["code"], code, "{err}");
        }
    }
}

#[tokio::test]
async fn tool_calls_stream_exactly_as_openai_and_are_billed() {
    let (app, key) = app_and_key().await;
    let tool: Value = serde_json::from_str(WEATHER).unwrap();
    let res = post(
        &app,
        &key,
        "/v1/chat/completions",
        json!({"model": "sim-1", "stream": true,
        "stream_options": {"include_usage": true}, "tools": [tool],
        "messages": [{"role": "user", "content": ASK}]}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let data = sse(res).await;
    assert_eq!(data.last().unwrap().1, "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    let deltas: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array())
        .flatten()
        .collect();
    assert!(deltas.len() > 2, "arguments come in fragments: {deltas:?}");
    let head = deltas[0];
    assert_eq!(head["index"], 0);
    assert!(head["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(head["type"], "function");
    assert_eq!(head["function"]["name"], "get_weather");
    assert_eq!(head["function"]["arguments"], "");
    for d in &deltas[1..] {
        assert_eq!(d["index"], 0);
        assert!(
            d.get("id").is_none() && d["function"].get("name").is_none(),
            "{d}"
        );
    }
    let args: String = deltas
        .iter()
        .map(|d| d["function"]["arguments"].as_str().unwrap())
        .collect();
    let args: Value = serde_json::from_str(&args).unwrap();
    assert_eq!(args, json!({"location": "Paris", "unit": "celsius"}));
    let finish: Vec<&Value> = chunks
        .iter()
        .filter(|c| {
            !c["choices"][0]["finish_reason"].is_null()
                && c["choices"].as_array().is_some_and(|a| !a.is_empty())
        })
        .map(|c| &c["choices"][0]["finish_reason"])
        .collect();
    assert_eq!(finish, [&json!("tool_calls")]);
    let usage = &chunks.last().unwrap()["usage"];
    let out_tokens = usage["completion_tokens"].as_u64().unwrap();
    let expected = u64::from(tokenizer::count_tokens("get_weather"))
        + u64::from(tokenizer::count_tokens(
            r#"{"location":"Paris","unit":"celsius"}"#,
        ));
    assert_eq!(out_tokens, expected, "tool-call tokens are the output");
    let billed: (i64,) =
        crate::helpers::eventually(std::time::Duration::from_secs(5), "usage row", || async {
            sqlx::query_as::<_, (i32,)>("select output_tokens from usage_events")
                .fetch_optional(&app.db)
                .await
                .unwrap()
                .map(|(n,)| (i64::from(n),))
        })
        .await;
    assert_eq!(billed.0 as u64, expected);

    // tool_choice naming a tool that was not given; a tool message without its id.
    for (body, param) in [
        (
            json!({"model": "sim-1", "tools": [tool], "tool_choice": {"type": "function", "function": {"name": "nope"}},
                "messages": [{"role": "user", "content": "x"}]}),
            "tool_choice",
        ),
        (
            json!({"model": "sim-1", "tools": [{"type": "code_interpreter"}], "messages": [{"role": "user", "content": "x"}]}),
            "tools",
        ),
        (
            json!({"model": "sim-1", "messages": [{"role": "tool", "content": "x"}]}),
            "messages",
        ),
        (
            json!({"model": "sim-1", "response_format": {"type": "xml"}, "messages": [{"role": "user", "content": "x"}]}),
            "response_format",
        ),
        (
            json!({"model": "sim-1", "presence_penalty": 3, "messages": [{"role": "user", "content": "x"}]}),
            "presence_penalty",
        ),
        (
            json!({"model": "sim-1", "logprobs": true, "messages": [{"role": "user", "content": "x"}]}),
            "logprobs",
        ),
        (
            json!({"model": "sim-1", "logit_bias": {"1": 1}, "messages": [{"role": "user", "content": "x"}]}),
            "logit_bias",
        ),
        (
            json!({"model": "sim-1", "audio": {"voice": "x"}, "messages": [{"role": "user", "content": "x"}]}),
            "audio",
        ),
    ] {
        let res = post(&app, &key, "/v1/chat/completions", body.clone()).await;
        assert_eq!(res.status(), 400, "{body}");
        let err: Value = res.json().await.unwrap();
        assert_eq!(err["error"]["param"], param, "{body}: {err}");
    }
}

#[tokio::test]
async fn responses_stream_the_responses_events_in_order() {
    let (app, key) = app_and_key().await;
    let res = post(
        &app,
        &key,
        "/v1/responses",
        json!({"model": "sim-1", "stream": true,
        "instructions": "Be brief.", "input": [{"role": "user", "content": "Say hello"}]}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let events = sse(res).await;
    let kinds: Vec<&str> = events.iter().map(|(e, _)| e.as_deref().unwrap()).collect();
    let data: Vec<Value> = events
        .iter()
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    for (i, d) in data.iter().enumerate() {
        assert_eq!(d["sequence_number"], i as u64);
        assert_eq!(d["type"], kinds[i]);
    }
    let deltas = kinds
        .iter()
        .filter(|k| **k == "response.output_text.delta")
        .count();
    let mut expected_kinds = vec![
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ];
    expected_kinds.extend(std::iter::repeat_n("response.output_text.delta", deltas));
    expected_kinds.extend([
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]);
    assert_eq!(kinds, expected_kinds);
    let text: String = data
        .iter()
        .filter(|d| d["type"] == "response.output_text.delta")
        .map(|d| d["delta"].as_str().unwrap())
        .collect();
    let expected = reply_tokens("Say hello", 20).concat();
    assert_eq!(text, expected);
    let last = &data.last().unwrap()["response"];
    assert_eq!(last["status"], "completed");
    assert_eq!(last["output"][0]["content"][0]["text"], expected);
    assert_eq!(last["usage"]["output_tokens"], 20);
    assert_eq!(last["instructions"], "Be brief.");
    assert!(last["usage"]["input_tokens"].as_u64().unwrap() > 0);
    // The same books as completions: one usage event.
    let (n,): (i64,) =
        crate::helpers::eventually(std::time::Duration::from_secs(5), "usage row", || async {
            let row: (i64,) = sqlx::query_as("select count(*) from usage_events")
                .fetch_one(&app.db)
                .await
                .unwrap();
            (row.0 == 1).then_some(row)
        })
        .await;
    assert_eq!(n, 1);

    // Unknown /v1 routes and models answer in OpenAI's shape.
    let res = app
        .client
        .get(app.url("/v1/nope"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let err: Value = res.json().await.unwrap();
    assert_eq!(err["error"]["type"], "invalid_request_error", "{err}");
    let res = app
        .client
        .get(app.url("/v1/models/sim-1"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["id"], "sim-1");
    let res = app
        .client
        .get(app.url("/v1/models/gpt-4o"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "model_not_found"
    );
    // A named model whose provider is not configured is not served by another.
    let res = post(
        &app,
        &key,
        "/v1/chat/completions",
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(res.status(), 400);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "model_not_found"
    );
}

/// Seeds a tiktoken cache with cl100k_base (rebuilt from the tables compiled
/// into tiktoken-rs), so LangChain tokenizes offline as it would online.
fn tiktoken_cache() -> PathBuf {
    let dir = std::env::temp_dir().join("switchboard-tiktoken-cache");
    std::fs::create_dir_all(&dir).unwrap();
    // tiktoken's cache key: the SHA-1 of the encoding's URL.
    let file = dir.join("9b5ad71b2ce5302211f9c61530b329a4922fc6a4");
    if !file.exists() {
        let bpe = tiktoken_rs::cl100k_base().unwrap();
        let mut text = String::new();
        for rank in 0..100_256u32 {
            let bytes = bpe.decode_bytes(&[rank]).unwrap();
            text.push_str(&base64::engine::general_purpose::STANDARD.encode(bytes));
            text.push(' ');
            text.push_str(&rank.to_string());
            text.push('\n');
        }
        let tmp = dir.join(format!("cl100k.{}", std::process::id()));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(tmp, &file).unwrap();
    }
    dir
}

#[tokio::test]
async fn the_python_sdk_and_langchain_use_tools_structured_output_responses_and_embeddings() {
    let python = root().join(".venv-tests/bin/python");
    assert!(
        python.exists(),
        "the SDK venv is missing: run scripts/setup.sh (make test does)"
    );
    let (app, key) = app_and_key().await;
    let out = tokio::process::Command::new(&python)
        .arg(root().join("tests/sdk/openai_features.py"))
        .args([app.url("/v1"), key, "sim-1".into()])
        .env("TIKTOKEN_CACHE_DIR", tiktoken_cache())
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    let e = &seen["embeddings"];
    let cat = LocalEmbedder::vector("the cat sat");
    let stocks = LocalEmbedder::vector("stock prices");
    assert!(
        close(&floats(&e["default"][0]), &cat),
        "base64 by default, decoded right: {e}"
    );
    assert!(close(&floats(&e["default"][1]), &stocks));
    assert!(close(&floats(&e["float"][0]), &cat));
    assert_eq!(e["base64_is_string"], true);
    assert_eq!(floats(&e["base64_decoded"]), cat);
    let from_tokens = LocalEmbedder::vector(&tokenizer::decode(&[1820, 8415, 7731]).unwrap());
    assert!(close(&floats(&e["tokens"]), &from_tokens));
    assert_eq!(e["dimensions_refused"]["param"], "dimensions");
    assert_eq!(e["unknown_model"]["code"], "model_not_found");
    assert_eq!(e["bad_encoding"]["param"], "encoding_format");

    let t = &seen["tools"];
    assert_eq!(t["finish_reason"], "tool_calls", "{t}");
    assert_eq!(t["name"], "get_weather");
    assert_eq!(
        t["arguments"],
        json!({"location": "Paris", "unit": "celsius"})
    );
    assert!(t["usage"].as_u64().unwrap() > 0);
    assert_eq!(t["answer"], "Tool get_weather returned: 22C and sunny");
    assert_eq!(t["answer_finish"], "stop");
    assert_eq!(t["stream_finish"], "tool_calls");
    assert_eq!(t["stream_first_delta"]["type"], "function");
    assert_eq!(t["stream_first_delta"]["function"]["name"], "get_weather");
    let streamed = &t["stream_calls"]["0"];
    assert_eq!(streamed["id"], t["id"], "the same call, streamed or not");
    assert_eq!(streamed["name"], "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(streamed["arguments"].as_str().unwrap()).unwrap(),
        t["arguments"]
    );
    assert!(streamed["fragments"].as_u64().unwrap() > 1);
    assert_eq!(t["none"], "stop", "tool_choice none answers in text");

    let p = &seen["parse"];
    assert_eq!(
        p["parsed"],
        json!({"name": "Paris", "population": 42, "capital": true}),
        "{p}"
    );
    assert!(
        p["json_object"]["answer"]
            .as_str()
            .is_some_and(|a| !a.is_empty()),
        "{p}"
    );

    let r = &seen["responses"];
    let hello = reply_tokens("Say hello", 20).concat();
    assert_eq!(r["text"], hello, "{r}");
    assert_eq!(r["status"], "completed");
    assert_eq!(r["usage"]["output"], 20);
    assert_eq!(r["stream_text"], hello);
    assert_eq!(r["final_text"], hello);
    assert_eq!(r["first"], "response.created");
    assert_eq!(r["last"], "response.completed");
    assert_eq!(r["seq_ok"], true);
    assert_eq!(r["cut_status"], "incomplete");
    assert_eq!(r["cut_reason"], "max_output_tokens");
    assert_eq!(r["tool_name"], "get_weather");
    assert_eq!(
        r["tool_args"],
        json!({"location": "Paris", "unit": "celsius"})
    );

    let m = &seen["models"];
    assert_eq!(m["retrieved"], "sim-1", "{m}");
    assert_eq!(
        m["missing"],
        json!({"status": 404, "code": "model_not_found"})
    );
    assert_eq!(
        m["route"],
        json!({"status": 404, "type": "invalid_request_error"})
    );

    let refused = &seen["refused"];
    for (what, param) in [
        ("logprobs", "logprobs"),
        ("top_logprobs", "top_logprobs"),
        ("logit_bias", "logit_bias"),
        ("functions", "functions"),
        ("previous_response_id", "previous_response_id"),
        ("reasoning", "reasoning"),
        ("web_search", "tools"),
        ("named_unconfigured", "model"),
    ] {
        assert_eq!(refused[what]["status"], 400, "{what}: {refused}");
        assert_eq!(refused[what]["param"], param, "{what}: {refused}");
    }
    assert_eq!(refused["named_unconfigured"]["code"], "model_not_found");

    let lc = &seen["langchain"];
    assert_eq!(
        lc["tool_calls"],
        json!([{"name": "get_weather", "args": {"location": "Paris"}}]),
        "{lc}"
    );
    assert_eq!(
        lc["structured"],
        json!({"name": "Paris", "population": 42, "capital": true})
    );
    assert!(
        close(&floats(&lc["embed_query"]), &cat),
        "token ids from tiktoken embed the text"
    );
}

#[tokio::test]
async fn the_node_openai_sdk_and_the_vercel_ai_sdk_work_unmodified() {
    let dir = root().join("tests/sdk/node");
    assert!(
        dir.join("node_modules/openai").exists(),
        "the Node SDKs are missing: run scripts/setup.sh (make test does)"
    );
    let (app, key) = app_and_key().await;
    let out = tokio::process::Command::new("node")
        .arg(dir.join("sdk_check.mjs"))
        .args([app.url("/v1"), key, "sim-1".into()])
        .current_dir(&dir)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));

    let e = &seen["embeddings"];
    let cat = LocalEmbedder::vector("the cat sat");
    assert_eq!(e["vectors"][0].as_array().map(Vec::len), Some(384), "{e}");
    assert_eq!(
        floats(&e["vectors"][0]),
        cat,
        "base64 by default, decoded to the exact f32s"
    );
    assert_eq!(
        floats(&e["vectors"][1]),
        LocalEmbedder::vector("stock prices")
    );
    assert!(close(&floats(&e["float"]), &cat));

    let t = &seen["tools"];
    assert_eq!(t["finish_reason"], "tool_calls", "{t}");
    assert_eq!(t["name"], "get_weather");
    assert_eq!(
        t["arguments"],
        json!({"location": "Paris", "unit": "celsius"})
    );
    assert_eq!(t["answer"], "Tool get_weather returned: 22C and sunny");
    assert_eq!(t["stream_finish"], "tool_calls");
    assert_eq!(t["stream_name"], "get_weather");
    assert_eq!(t["stream_arguments"], t["arguments"]);
    assert_eq!(t["stream_id_matches"], true);
    assert!(t["stream_deltas"].as_u64().unwrap() > 2);

    assert_eq!(
        seen["parse"],
        json!({"name": "Paris", "population": 42, "capital": true}),
        "{seen}"
    );
    assert_eq!(
        seen["refused"],
        json!({"status": 400, "param": "logprobs", "code": "unsupported_parameter"})
    );

    let s = &seen["ai_stream"];
    assert_eq!(s["text"], reply_tokens("Say hello", 20).concat(), "{s}");
    assert!(s["parts"].as_u64().unwrap() > 1, "streamed, not one piece");
    assert_eq!(s["finish"], "stop");
    assert_eq!(s["usage"]["outputTokens"], 20);
    assert_eq!(
        seen["ai_object"],
        json!({"name": "Paris", "population": 42, "capital": true}),
        "{seen}"
    );
}

#[tokio::test]
async fn tools_pass_through_to_openai_translate_to_anthropic_and_refusals_name_the_parameter() {
    use crate::mock_llm::MockLlm;
    use switchboard::config::Secret;
    let mock = MockLlm::start().await;
    let app = crate::helpers::spawn_app_with(|c| {
        c.providers.openai_base_url = Some(mock.openai_base());
        c.providers.openai_api_key = Some(Secret::new("sk-upstream"));
        c.providers.anthropic_base_url = Some(mock.url());
        c.providers.anthropic_api_key = Some(Secret::new("sk-ant-upstream"));
        c.routing.max_retries = 0;
        c.providers.paid_tier = "openai,anthropic,simulated".into();
    })
    .await;
    let user = app.new_user().await;
    app.set_plan(&user, "team").await;
    let key = app.create_key(&user, json!({"name": "k"})).await;
    let key = key["key"].as_str().unwrap();
    let tool: Value = serde_json::from_str(WEATHER).unwrap();
    let history = json!([
        {"role": "user", "content": ASK},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris\",\"unit\":\"celsius\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "22C"},
    ]);
    let schema = json!({"type": "json_schema", "json_schema": {"name": "city", "strict": true,
        "schema": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}}});

    // OpenAI-compatible: every parameter goes out as the client sent it.
    let res = post(&app, key, "/v1/chat/completions", json!({"model": "gpt-4o-mini", "messages": history,
        "tools": [tool], "tool_choice": "auto", "parallel_tool_calls": false, "response_format": schema,
        "seed": 7, "presence_penalty": 0.5, "frequency_penalty": -0.5, "user": "end-user-1"})).await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let sent = mock.last_request().unwrap().body;
    assert_eq!(sent["tools"], json!([tool]));
    assert_eq!(sent["tool_choice"], "auto");
    assert_eq!(sent["parallel_tool_calls"], false);
    assert_eq!(sent["response_format"], schema);
    assert_eq!(sent["seed"], 7);
    assert_eq!(sent["presence_penalty"], 0.5);
    assert_eq!(sent["frequency_penalty"], -0.5);
    assert_eq!(sent["user"], "end-user-1");
    assert_eq!(sent["messages"][1]["tool_calls"], history[1]["tool_calls"]);
    assert_eq!(
        sent["messages"][2],
        json!({"role": "tool", "tool_call_id": "call_1", "content": "22C"})
    );

    // Anthropic: tools and tool turns translated to its blocks.
    let res = post(&app, key, "/v1/chat/completions", json!({"model": "claude-3-5-haiku-latest",
        "messages": history, "tools": [tool], "tool_choice": "required", "parallel_tool_calls": false,
        "user": "end-user-1"})).await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let sent = mock.last_request().unwrap().body;
    assert_eq!(
        sent["tools"],
        json!([{"name": "get_weather", "description": "Current weather for a city",
        "input_schema": tool["function"]["parameters"]}])
    );
    assert_eq!(
        sent["tool_choice"],
        json!({"type": "any", "disable_parallel_tool_use": true})
    );
    assert_eq!(sent["metadata"], json!({"user_id": "end-user-1"}));
    assert_eq!(
        sent["messages"][1],
        json!({"role": "assistant", "content": [{"type": "tool_use",
        "id": "call_1", "name": "get_weather", "input": {"location": "Paris", "unit": "celsius"}}]})
    );
    assert_eq!(
        sent["messages"][2],
        json!({"role": "user", "content": [{"type": "tool_result",
        "tool_use_id": "call_1", "content": "22C"}]})
    );

    // What Anthropic cannot honour is refused by name, before anything is sent.
    let before = mock.request_count();
    for (param, value) in [
        ("response_format", schema.clone()),
        ("seed", json!(1)),
        ("presence_penalty", json!(0.1)),
        ("frequency_penalty", json!(0.1)),
        ("logprobs", json!(true)),
    ] {
        let mut body = json!({"model": "claude-3-5-haiku-latest", "messages": [{"role": "user", "content": "x"}]});
        body[param] = value;
        let res = post(&app, key, "/v1/chat/completions", body).await;
        assert_eq!(res.status(), 400, "{param}");
        let err: Value = res.json().await.unwrap();
        assert_eq!(err["error"]["param"], param, "{err}");
        assert_eq!(err["error"]["code"], "unsupported_parameter");
        assert!(
            err["error"]["message"]
                .as_str()
                .unwrap()
                .contains("anthropic"),
            "{err}"
        );
    }
    // The Responses API goes through the same check.
    let res = post(
        &app,
        key,
        "/v1/responses",
        json!({"model": "claude-3-5-haiku-latest", "input": "x",
        "text": {"format": {"type": "json_object"}}}),
    )
    .await;
    assert_eq!(res.status(), 400);
    assert_eq!(res.json::<Value>().await.unwrap()["error"]["param"], "text");
    assert_eq!(mock.request_count(), before, "nothing reached the provider");
}
