//! The HTTP providers, driven directly against `MockLlm`: each test runs the
//! same script through OpenAI, Anthropic and Cloudflare.

use std::time::Duration;

use futures::StreamExt;
use switchboard::{
    config::Secret,
    providers::{
        ChatProvider, ChatRequest, EventStream, PromptMessage, ProviderError, StreamEvent, Usage,
        anthropic::AnthropicProvider,
        cloudflare::CloudflareProvider,
        openai::OpenAiProvider,
        tokenizer::{count_prompt, count_tokens},
    },
};

use crate::mock_llm::{Behavior, DEFAULT_TOKENS, MockLlm};

const KEY: &str = "sk-test-key";
const ACCOUNT: &str = "acc-1";
const CF_MODEL: &str = "@cf/meta/llama-3.1-8b-instruct";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    OpenAi,
    Anthropic,
    Cloudflare,
}

const KINDS: [Kind; 3] = [Kind::OpenAi, Kind::Anthropic, Kind::Cloudflare];

fn provider_at(kind: Kind, base: String, key: &str) -> Box<dyn ChatProvider> {
    match kind {
        Kind::OpenAi => Box::new(OpenAiProvider::new(
            Some(base),
            Some(Secret::new(key)),
            "gpt-mock".into(),
        )),
        Kind::Anthropic => Box::new(AnthropicProvider::new(
            Some(base),
            Secret::new(key),
            "claude-mock".into(),
        )),
        Kind::Cloudflare => Box::new(CloudflareProvider::new(
            Some(base),
            ACCOUNT.into(),
            Secret::new(key),
            CF_MODEL.into(),
        )),
    }
}

/// The provider of `kind`, pointed at the mock, with the right key.
fn provider(kind: Kind, mock: &MockLlm) -> Box<dyn ChatProvider> {
    provider_with_key(kind, mock, KEY)
}

fn provider_with_key(kind: Kind, mock: &MockLlm, key: &str) -> Box<dyn ChatProvider> {
    let base = match kind {
        Kind::OpenAi => mock.openai_base(),
        Kind::Anthropic | Kind::Cloudflare => mock.url(),
    };
    provider_at(kind, base, key)
}

fn messages() -> Vec<PromptMessage> {
    vec![
        PromptMessage {
            role: "system".into(),
            content: "You are terse.".into(),
            ..PromptMessage::default()
        },
        PromptMessage {
            role: "user".into(),
            content: "Say hello to the world".into(),
            ..PromptMessage::default()
        },
    ]
}

/// The mock's reported input: words in the messages.
const PROMPT_WORDS: u32 = 3 + 5;

fn request(p: &dyn ChatProvider, max_tokens: u32) -> ChatRequest {
    ChatRequest {
        model: p.default_model().to_owned(),
        messages: messages(),
        max_tokens,
        temperature: Some(0.2),
        top_p: None,
        stop: vec![],
        ..ChatRequest::default()
    }
}

type Item = Result<StreamEvent, ProviderError>;

/// Every item of the stream (which must end within five seconds).
async fn collect(stream: EventStream) -> Vec<Item> {
    tokio::time::timeout(Duration::from_secs(5), stream.collect::<Vec<_>>())
        .await
        .expect("the stream ends")
}

async fn run(kind: Kind, mock: &MockLlm, max_tokens: u32) -> Vec<Item> {
    let p = provider(kind, mock);
    collect(p.stream(request(p.as_ref(), max_tokens))).await
}

fn tokens(items: &[Item]) -> Vec<String> {
    items
        .iter()
        .filter_map(|i| match i {
            Ok(StreamEvent::Token(t)) => Some(t.clone()),
            _ => None,
        })
        .collect()
}

/// The last two items: usage, then finish.
fn tail(items: &[Item]) -> (Usage, String) {
    match &items[items.len().saturating_sub(2)..] {
        [Ok(StreamEvent::Usage(u)), Ok(StreamEvent::Finish(f))] => (*u, f.clone()),
        other => panic!("expected usage then finish at the end, got {other:?}"),
    }
}

fn t(i: usize) -> String {
    format!("t{i} ")
}

#[tokio::test]
async fn streams_tokens_then_usage_then_finish() {
    let mock = MockLlm::start().await;
    mock.set(Behavior::tokens(["Hel", "lo", ", world"]).delay(Duration::from_millis(5)));
    for kind in KINDS {
        let items = run(kind, &mock, 100).await;
        assert_eq!(items.len(), 5, "{kind:?}: {items:?}");
        assert_eq!(tokens(&items), ["Hel", "lo", ", world"], "{kind:?}");
        assert_eq!(
            tail(&items),
            (
                Usage {
                    input_tokens: PROMPT_WORDS,
                    output_tokens: 3
                },
                "stop".to_owned()
            ),
            "{kind:?}"
        );
    }
    assert_eq!(mock.dropped(), 0);
    assert_eq!(mock.completed(), 3);

    let [openai, anthropic, cloudflare] = mock.requests().try_into().unwrap();
    assert_eq!(openai.path, "/v1/chat/completions");
    assert_eq!(openai.header("authorization"), Some("Bearer sk-test-key"));
    assert_eq!(openai.body["model"], "gpt-mock");
    assert_eq!(openai.body["stream"], true);
    assert_eq!(openai.body["stream_options"]["include_usage"], true);
    assert_eq!(
        openai.body["max_tokens"], 100,
        "a custom base gets max_tokens"
    );
    assert_eq!(openai.body["messages"][0]["role"], "system");
    assert_eq!(
        openai.body["messages"][1]["content"],
        "Say hello to the world"
    );
    assert_eq!(
        openai.body["temperature"].as_f64().map(|t| t as f32),
        Some(0.2)
    );

    assert_eq!(anthropic.path, "/v1/messages");
    assert_eq!(anthropic.header("x-api-key"), Some(KEY));
    assert_eq!(anthropic.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(anthropic.header("authorization"), None);
    assert_eq!(anthropic.body["model"], "claude-mock");
    assert_eq!(anthropic.body["stream"], true);
    assert_eq!(anthropic.body["max_tokens"], 100);
    assert_eq!(anthropic.body["system"], "You are terse.");
    assert_eq!(anthropic.body["messages"].as_array().unwrap().len(), 1);
    assert_eq!(anthropic.body["messages"][0]["role"], "user");

    assert_eq!(
        cloudflare.path,
        format!("/accounts/{ACCOUNT}/ai/run/{CF_MODEL}")
    );
    assert_eq!(
        cloudflare.header("authorization"),
        Some("Bearer sk-test-key")
    );
    assert_eq!(cloudflare.body["stream"], true);
    assert_eq!(cloudflare.body["max_tokens"], 100);
    assert_eq!(cloudflare.body["messages"][0]["role"], "system");
}

#[tokio::test]
async fn without_reported_usage_the_tokenizer_counts() {
    let mock = MockLlm::start().await;
    mock.set(Behavior::tokens(["The answer", " is", " forty-two."]).without_usage());
    let expected = Usage {
        input_tokens: count_prompt(&messages()),
        output_tokens: count_tokens("The answer is forty-two."),
    };
    assert_ne!(expected.input_tokens, PROMPT_WORDS, "tell the two apart");
    for kind in KINDS {
        let items = run(kind, &mock, 100).await;
        assert_eq!(tokens(&items).concat(), "The answer is forty-two.");
        assert_eq!(tail(&items), (expected, "stop".to_owned()), "{kind:?}");
    }
}

#[tokio::test]
async fn max_tokens_reached_finishes_with_length() {
    let mock = MockLlm::start().await;
    for kind in KINDS {
        let items = run(kind, &mock, 2).await;
        assert_eq!(tokens(&items), DEFAULT_TOKENS[..2], "{kind:?}");
        assert_eq!(tail(&items).1, "length", "{kind:?}");
    }
}

#[tokio::test]
async fn stream_connects_only_when_polled_and_outlives_the_provider() {
    for kind in KINDS {
        let mock = MockLlm::start().await;
        let p = provider(kind, &mock);
        let mut stream = p.stream(request(p.as_ref(), 10));
        drop(p);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            mock.request_count(),
            0,
            "{kind:?}: nothing sent before polling"
        );
        assert_eq!(
            stream.next().await,
            Some(Ok(StreamEvent::Token(DEFAULT_TOKENS[0].into()))),
            "{kind:?}"
        );
        assert_eq!(mock.request_count(), 1);
    }
}

#[tokio::test]
async fn rate_limit_is_the_first_item_with_retry_after() {
    let mock = MockLlm::start().await;
    for kind in KINDS {
        mock.push(Behavior::Status {
            code: 429,
            retry_after: Some(7),
        });
        let items = run(kind, &mock, 10).await;
        assert_eq!(
            items,
            [Err(ProviderError::RateLimited {
                retry_after_secs: Some(7)
            })],
            "{kind:?}"
        );
        mock.push(Behavior::Status {
            code: 429,
            retry_after: None,
        });
        let items = run(kind, &mock, 10).await;
        assert_eq!(
            items,
            [Err(ProviderError::RateLimited {
                retry_after_secs: None
            })],
            "{kind:?}"
        );
    }
    assert_eq!(mock.request_count(), 6, "no retries inside a provider");
}

#[tokio::test]
async fn server_errors_are_upstream_with_their_status() {
    let mock = MockLlm::start().await;
    for kind in KINDS {
        for code in [500, 503, 529, 400] {
            mock.push(Behavior::Status {
                code,
                retry_after: None,
            });
            let items = run(kind, &mock, 10).await;
            assert_eq!(
                items,
                [Err(ProviderError::Upstream { status: code })],
                "{kind:?}"
            );
        }
    }
    assert_eq!(mock.request_count(), 12, "no retries inside a provider");
}

#[tokio::test]
async fn a_wrong_key_is_unauthorized_and_the_right_one_works() {
    let mock = MockLlm::start().await;
    mock.set(Behavior::CheckKey(KEY.into()));
    for kind in KINDS {
        let p = provider_with_key(kind, &mock, "sk-wrong");
        let items = collect(p.stream(request(p.as_ref(), 10))).await;
        assert_eq!(items, [Err(ProviderError::Unauthorized)], "{kind:?}");

        let items = run(kind, &mock, 10).await;
        assert_eq!(tokens(&items), DEFAULT_TOKENS, "{kind:?}");
    }
    for code in [401, 403] {
        mock.push(Behavior::Status {
            code,
            retry_after: None,
        });
        let items = run(Kind::OpenAi, &mock, 10).await;
        assert_eq!(items, [Err(ProviderError::Unauthorized)]);
    }
}

#[tokio::test]
async fn a_hang_before_the_first_token_yields_nothing_and_dropping_cancels_upstream() {
    let mock = MockLlm::start().await;
    mock.set(Behavior::HangBeforeFirstToken);
    for (i, kind) in KINDS.into_iter().enumerate() {
        let p = provider(kind, &mock);
        let mut stream = p.stream(request(p.as_ref(), 10));
        let first = tokio::time::timeout(Duration::from_millis(300), stream.next()).await;
        assert!(first.is_err(), "{kind:?}: expected silence, got {first:?}");
        assert_eq!(mock.open_streams(), 1, "{kind:?}");
        drop(stream);
        assert!(
            mock.wait_dropped(i + 1, Duration::from_secs(2)).await,
            "{kind:?}: the mock saw the connection close"
        );
        assert_eq!(mock.open_streams(), 0);
    }
}

#[tokio::test]
async fn dropping_mid_answer_closes_the_upstream_connection() {
    let mock = MockLlm::start().await;
    mock.set(Behavior::slow(50, Duration::from_millis(20)));
    for (i, kind) in KINDS.into_iter().enumerate() {
        let p = provider(kind, &mock);
        let mut stream = p.stream(request(p.as_ref(), 100));
        assert_eq!(stream.next().await, Some(Ok(StreamEvent::Token(t(0)))));
        assert_eq!(stream.next().await, Some(Ok(StreamEvent::Token(t(1)))));
        drop(stream);
        assert!(
            mock.wait_dropped(i + 1, Duration::from_secs(2)).await,
            "{kind:?}: the mock saw the cancel"
        );
    }
    assert_eq!(mock.completed(), 0);
}

#[tokio::test]
async fn a_broken_connection_after_tokens_is_disconnected() {
    let mock = MockLlm::start().await;
    for kind in KINDS {
        for behavior in [Behavior::DropAfter(2), Behavior::EndWithoutDone(2)] {
            mock.push(behavior.clone());
            let items = run(kind, &mock, 10).await;
            assert_eq!(
                items,
                [
                    Ok(StreamEvent::Token(t(0))),
                    Ok(StreamEvent::Token(t(1))),
                    Err(ProviderError::Disconnected)
                ],
                "{kind:?} {behavior:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_chunk_that_is_not_json_is_malformed() {
    let mock = MockLlm::start().await;
    mock.set(Behavior::Malformed);
    for kind in KINDS {
        let items = run(kind, &mock, 10).await;
        assert_eq!(items.len(), 2, "{kind:?}: {items:?}");
        assert_eq!(items[0], Ok(StreamEvent::Token(t(0))));
        assert!(
            matches!(items[1], Err(ProviderError::Malformed(_))),
            "{kind:?}: {items:?}"
        );
    }
}

#[tokio::test]
async fn an_error_event_inside_the_stream_ends_it() {
    let mock = MockLlm::start().await;
    mock.set(Behavior::ErrorEvent);
    for (kind, status) in [
        (Kind::OpenAi, 503),
        (Kind::Anthropic, 529),
        (Kind::Cloudflare, 502),
    ] {
        let items = run(kind, &mock, 10).await;
        assert_eq!(
            items,
            [
                Ok(StreamEvent::Token(t(0))),
                Err(ProviderError::Upstream { status })
            ],
            "{kind:?}"
        );
    }
}

#[tokio::test]
async fn nothing_listening_is_a_connect_error() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    for kind in KINDS {
        let p = provider_at(kind, format!("http://127.0.0.1:{port}/v1"), KEY);
        let items = collect(p.stream(request(p.as_ref(), 10))).await;
        assert_eq!(items.len(), 1, "{kind:?}: {items:?}");
        assert!(
            matches!(&items[0], Err(ProviderError::Connect(_))),
            "{kind:?}: {items:?}"
        );
        let text = format!("{:?}", items[0]);
        assert!(!text.contains(KEY), "the key never shows in errors");
    }
}

#[tokio::test]
async fn openai_works_under_any_base_path() {
    let mock = MockLlm::start().await;
    let p = OpenAiProvider::new(
        Some(format!("{}/proxy/openai/v1/", mock.url())),
        None,
        "llama3".into(),
    );
    let items = collect(p.stream(ChatRequest {
        model: String::new(),
        messages: messages(),
        max_tokens: 50,
        ..ChatRequest::default()
    }))
    .await;
    assert_eq!(tokens(&items), DEFAULT_TOKENS);
    assert_eq!(tail(&items).1, "stop");
    let sent = mock.last_request().unwrap();
    assert_eq!(sent.path, "/proxy/openai/v1/chat/completions");
    assert_eq!(sent.header("authorization"), None, "no key, no header");
    assert_eq!(
        sent.body["model"], "llama3",
        "an empty model means the default"
    );
}

#[test]
fn secrets_stay_out_of_debug_output() {
    let p = AnthropicProvider::new(None, Secret::new(KEY), "m".into());
    assert_eq!(p.name(), "anthropic");
    assert_eq!(format!("{:?}", Secret::new(KEY)), "[redacted]");
}

#[tokio::test]
async fn a_hang_before_the_headers_yields_nothing() {
    let mock = MockLlm::start().await;
    mock.set(Behavior::HangBeforeHeaders);
    for kind in KINDS {
        let p = provider(kind, &mock);
        let mut stream = p.stream(request(p.as_ref(), 10));
        let first = tokio::time::timeout(Duration::from_millis(300), stream.next()).await;
        assert!(first.is_err(), "{kind:?}: expected silence, got {first:?}");
    }
    assert_eq!(mock.request_count(), 3);
}

#[tokio::test]
async fn the_mock_answers_without_streaming_too() {
    let mock = MockLlm::start().await;
    let client = reqwest::Client::new();
    let body: serde_json::Value = client
        .post(format!("{}/chat/completions", mock.openai_base()))
        .json(
            &serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "a b c"}]}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        DEFAULT_TOKENS.concat()
    );
    assert_eq!(body["usage"]["prompt_tokens"], 3);
    assert_eq!(body["usage"]["completion_tokens"], DEFAULT_TOKENS.len());
}

#[tokio::test]
async fn a_finished_answer_leaves_the_connection_reusable() {
    let mock = MockLlm::start().await;
    for kind in KINDS {
        let p = provider(kind, &mock);
        let before = mock.connections();
        for _ in 0..3 {
            let items = collect(p.stream(request(p.as_ref(), 10))).await;
            assert_eq!(tail(&items).1, "stop");
            // the rest of the body is read in the background
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            mock.connections() - before,
            1,
            "{kind:?}: one connection, reused"
        );
    }
    assert_eq!(mock.dropped(), 0);
}
