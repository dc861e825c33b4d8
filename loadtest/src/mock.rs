//! `mock-openai`: a tiny OpenAI-compatible server on 127.0.0.1 with a known
//! time to first token, so the gateway's own overhead over a real HTTP
//! provider can be measured. `POST /v1/chat/completions` streams
//! `data: {chat.completion.chunk}` events (role, content tokens, the
//! `finish_reason` chunk, a usage chunk when asked) and `data: [DONE]`;
//! without `stream` it answers one `chat.completion`. It stops by itself after
//! `--max-secs`.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::State,
    response::{
        IntoResponse, Response,
        sse::{Event, Sse},
    },
    routing::{get, post},
    serve::ListenerExt,
};
use clap::Args;
use futures::stream;
use serde_json::{Value, json};

#[derive(Debug, Clone, Args)]
pub struct MockArgs {
    /// Port on 127.0.0.1.
    #[arg(long, default_value_t = 18090)]
    pub port: u16,
    /// Delay before the first token.
    #[arg(long, default_value_t = 50)]
    pub ttft_ms: u64,
    /// Tokens per answer (fewer when the request's max_tokens is lower).
    #[arg(long, default_value_t = 20)]
    pub tokens: u32,
    /// Delay between tokens.
    #[arg(long, default_value_t = 0)]
    pub token_delay_ms: u64,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 3600)]
    pub max_secs: u64,
}

struct Mock {
    ttft: Duration,
    tokens: u32,
    token_delay: Duration,
}

pub async fn serve(args: MockArgs) -> Result<(), String> {
    let mock = Arc::new(Mock {
        ttft: Duration::from_millis(args.ttft_ms),
        tokens: args.tokens.max(1),
        token_delay: Duration::from_millis(args.token_delay_ms),
    });
    let app = Router::new()
        .route("/v1/chat/completions", post(completions))
        .route("/v1/models", get(models))
        .with_state(mock);
    let addr = SocketAddr::from(([127, 0, 0, 1], args.port));
    // TCP_NODELAY: without it Nagle's algorithm holds a small chunk written
    // right after another until the peer's (delayed) ACK, adding up to 40 ms
    // to the "known" TTFT.
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?
        .tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
    eprintln!(
        "[mock-openai] http://{addr}/v1: TTFT {} ms, {} tokens, {} ms between tokens; stops after {} s",
        args.ttft_ms, args.tokens, args.token_delay_ms, args.max_secs
    );
    // Stops hard at the limit: a graceful shutdown would wait for the
    // gateway's pooled keep-alive connections, which never close by themselves.
    let limit = Duration::from_secs(args.max_secs);
    tokio::select! {
        r = axum::serve(listener, app) => r.map_err(|e| e.to_string()),
        () = tokio::time::sleep(limit) => {
            eprintln!("[mock-openai] {} s are up; stopping", args.max_secs);
            Ok(())
        }
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

async fn models() -> Json<Value> {
    Json(
        json!({"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model", "owned_by": "mock"}]}),
    )
}

fn prompt_tokens(body: &Value) -> u64 {
    body.get("messages")
        .and_then(Value::as_array)
        .map_or(0, |ms| {
            ms.iter()
                .filter_map(|m| m.get("content").and_then(Value::as_str))
                .map(|c| c.split_whitespace().count() as u64 + 3)
                .sum()
        })
}

fn token_text(i: u32) -> String {
    const WORDS: [&str; 8] = [
        "load", "test", "tokens", "stream", "mock", "answer", "fast", "steady",
    ];
    format!("{} ", WORDS[i as usize % WORDS.len()])
}

async fn completions(State(mock): State<Arc<Mock>>, Json(body): Json<Value>) -> Response {
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("gpt-4o-mini")
        .to_owned();
    let cap = body
        .get("max_tokens")
        .or_else(|| body.get("max_completion_tokens"))
        .and_then(Value::as_u64)
        .map_or(u32::MAX, |m| m.min(u64::from(u32::MAX)) as u32);
    let n = mock.tokens.min(cap).max(1);
    let prompt = prompt_tokens(&body);
    let created = chrono::Utc::now().timestamp();
    let id = format!("chatcmpl-mock{}", uuid::Uuid::new_v4().simple());
    let include_usage = body
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let finish = if n < mock.tokens { "length" } else { "stop" };

    if !body.get("stream").and_then(Value::as_bool).unwrap_or(false) {
        tokio::time::sleep(mock.ttft + mock.token_delay * n.saturating_sub(1)).await;
        let text: String = (0..n).map(token_text).collect();
        return Json(json!({
            "id": id, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": n, "total_tokens": prompt + u64::from(n)},
        }))
        .into_response();
    }

    let chunk = move |delta: Value, finish: Option<&str>| {
        json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })
    };
    // Steps: 0..n tokens, then the finish chunk, the usage chunk, [DONE].
    let events = stream::unfold(0u32, move |step| {
        let mock = mock.clone();
        let chunk = chunk.clone();
        async move {
            let data = if step < n {
                tokio::time::sleep(if step == 0 {
                    mock.ttft
                } else {
                    mock.token_delay
                })
                .await;
                let delta = if step == 0 {
                    json!({"role": "assistant", "content": token_text(step)})
                } else {
                    json!({"content": token_text(step)})
                };
                chunk(delta, None).to_string()
            } else if step == n {
                chunk(json!({}), Some(finish)).to_string()
            } else if step == n + 1 && include_usage {
                let mut c = chunk(json!({}), None);
                c["choices"] = json!([]);
                c["usage"] = json!({"prompt_tokens": prompt, "completion_tokens": n, "total_tokens": prompt + u64::from(n)});
                c.to_string()
            } else if step <= n + 2 {
                return Some((Ok::<_, Infallible>(Event::default().data("[DONE]")), n + 3));
            } else {
                return None;
            };
            Some((Ok(Event::default().data(data)), step + 1))
        }
    });
    Sse::new(events).into_response()
}
