//! Traces over OTLP: one chat message is one trace from the HTTP request
//! through the chat actor and the generation to the provider call, whose
//! `traceparent` reaches the provider; flushed when the server stops; no
//! message text or credential in any span. The server runs as a process of
//! its own (the exporter is process-wide), against an OTLP/HTTP receiver and
//! a mock OpenAI started here.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, body::Bytes, extract::State, http::StatusCode, routing::post};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest, common::v1::any_value, trace::v1::Span,
};
use prost::Message as _;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    helpers::{PASSWORD, eventually, spawn_app},
    mock_llm::MockLlm,
    server_process::ServerProcess,
};

/// Spans received by the fake collector.
#[derive(Clone, Default)]
pub struct OtlpReceiver {
    spans: Arc<Mutex<Vec<Span>>>,
    pub base: String,
}

impl OtlpReceiver {
    pub async fn start() -> Self {
        let mut me = Self::default();
        let app = Router::new()
            .route("/v1/traces", post(receive))
            .with_state(me.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        me.base = format!("http://{addr}");
        me
    }

    pub fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }
}

async fn receive(State(r): State<OtlpReceiver>, body: Bytes) -> StatusCode {
    let Ok(req) = ExportTraceServiceRequest::decode(body) else {
        return StatusCode::BAD_REQUEST;
    };
    let mut spans = r.spans.lock().unwrap();
    for rs in req.resource_spans {
        for ss in rs.scope_spans {
            spans.extend(ss.spans);
        }
    }
    StatusCode::OK
}

fn attr_text(span: &Span) -> String {
    span.attributes
        .iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => s.clone(),
                Some(other) => format!("{other:?}"),
                None => String::new(),
            };
            format!("{}={v}", kv.key)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Signs a fresh user up on `base`, answers their access token.
pub async fn sign_up(client: &reqwest::Client, base: &str) -> String {
    let tag = &Uuid::new_v4().simple().to_string()[..12];
    let email = format!("user-{tag}@example.com");
    let res = client
        .post(format!("{base}/api/auth/signup"))
        .json(&json!({ "email": email, "username": format!("u{tag}"), "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    let res = client
        .post(format!("{base}/api/auth/signin"))
        .json(&json!({ "email": email, "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn one_chat_message_is_one_trace_from_request_to_provider() {
    let mock = MockLlm::start().await;
    let otlp = OtlpReceiver::start().await;
    let db = spawn_app().await;
    let url = db.config.database.url.as_ref().unwrap().expose().to_owned();
    let provider_key = "sk-trace-test-key-0123456789abcdef";
    let server = ServerProcess::start(
        &url,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.base.as_str()),
            ("OPENAI_API_KEY", provider_key),
            ("OPENAI_BASE_URL", &mock.openai_base()),
            ("LLM_PROVIDER_FREE_TIER", "openai"),
        ],
    )
    .await;
    let client = reqwest::Client::new();
    let token = sign_up(&client, &server.base).await;
    let chat: Value = client
        .post(server.url("/api/chats"))
        .bearer_auth(&token)
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let chat_id = chat["id"].as_str().unwrap().to_owned();
    let content = "tell me about purple llamas";
    let res = client
        .post(server.url(&format!("/api/chats/{chat_id}/messages")))
        .bearer_auth(&token)
        .json(&json!({ "content": content }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());

    // The provider got the trace context of the call that reached it.
    let seen = mock.last_request().expect("the provider was called");
    let traceparent = seen.header("traceparent").expect("traceparent sent");
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!(parts[0], "00");
    assert_eq!(parts[3], "01", "sampled");
    let (trace_id, call_span_id) = (
        hex::decode(parts[1]).unwrap(),
        hex::decode(parts[2]).unwrap(),
    );

    // Spans still queued in the batch are sent at shutdown.
    let (status, logs) = server.stop().await;
    assert!(status.success(), "exit {status}:\n{logs}");
    let spans = eventually(Duration::from_secs(5), "the message's spans", || {
        let spans: Vec<Span> = otlp
            .spans()
            .into_iter()
            .filter(|s| s.trace_id == trace_id)
            .collect();
        let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
        let complete = [
            "http",
            "chat.send",
            "chat.accept",
            "generation",
            "provider.call",
        ]
        .iter()
        .all(|n| names.contains(n));
        async move { complete.then_some(spans) }
    })
    .await;
    let by_name = |n: &str| spans.iter().find(|s| s.name == n).unwrap();
    // One chain: request → admission → actor → generation → provider call.
    let chain = [
        "http",
        "chat.send",
        "chat.accept",
        "generation",
        "provider.call",
    ];
    for pair in chain.windows(2) {
        assert_eq!(
            by_name(pair[1]).parent_span_id,
            by_name(pair[0]).span_id,
            "{} is not the parent of {}",
            pair[0],
            pair[1]
        );
    }
    assert!(
        by_name("http").parent_span_id.is_empty(),
        "the request is the root"
    );
    assert_eq!(by_name("provider.call").span_id, call_span_id);
    let call = attr_text(by_name("provider.call"));
    assert!(call.contains("provider=openai"), "{call}");
    assert!(call.contains("http.status_code"), "{call}");

    // Nothing a user wrote and no credential is in any span.
    let everything: String = otlp
        .spans()
        .iter()
        .map(|s| format!("{} {}", s.name, attr_text(s)))
        .collect::<Vec<_>>()
        .join("\n");
    for secret in ["purple llamas", provider_key, token.as_str(), PASSWORD] {
        assert!(
            !everything.contains(secret),
            "{secret:?} in a span:\n{everything}"
        );
    }
}

#[tokio::test]
async fn without_an_endpoint_no_traceparent_is_sent() {
    let mock = MockLlm::start().await;
    let app = crate::helpers::spawn_app_with(|c| {
        c.providers.openai_base_url = Some(mock.openai_base());
        c.providers.openai_api_key = Some(switchboard::config::Secret::new("sk-test-key"));
        c.providers.free_tier = "openai".into();
    })
    .await;
    let user = app.new_user().await;
    let chat: Value = app
        .client
        .post(app.url("/api/chats"))
        .bearer_auth(&user.access_token)
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let res = app
        .client
        .post(app.url(&format!(
            "/api/chats/{}/messages",
            chat["id"].as_str().unwrap()
        )))
        .bearer_auth(&user.access_token)
        .json(&json!({ "content": "hello" }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let seen = mock.last_request().unwrap();
    assert_eq!(seen.header("traceparent"), None);
}
