//! The built-in simulated provider: the default when no key is set, and the
//! engine of the load tests. Its answer is a pure function of the prompt, so
//! tests can predict it; its timing and failures come from config.

use std::time::Duration;

use futures::StreamExt;
use rand::{Rng, SeedableRng, rngs::StdRng};
use sha2::{Digest, Sha256};

use super::{
    ChatProvider, ChatRequest, EventStream, ProviderError, StreamEvent, Usage, estimate_tokens,
};
pub use crate::config::SimulatedConfig;

const WORDS: &[&str] = &[
    "switchboard",
    "routes",
    "every",
    "token",
    "through",
    "a",
    "small",
    "actor",
    "that",
    "keeps",
    "order",
    "and",
    "the",
    "answer",
    "arrives",
    "in",
    "pieces",
    "while",
    "budgets",
    "hold",
    "steady",
    "so",
    "nothing",
    "is",
    "lost",
    "when",
    "providers",
    "fail",
    "or",
    "clients",
    "reconnect",
    "later",
    "with",
    "their",
    "last",
    "seq",
];

pub struct SimulatedProvider {
    config: SimulatedConfig,
}

/// The deterministic answer to a prompt: `n` tokens, each a word and a space.
pub fn reply_tokens(prompt: &str, n: u32) -> Vec<String> {
    let seed: [u8; 32] = Sha256::digest(prompt.as_bytes()).into();
    let mut rng = StdRng::from_seed(seed);
    (0..n)
        .map(|i| {
            let w = WORDS[rng.random_range(0..WORDS.len())];
            if i + 1 == n {
                format!("{w}.")
            } else {
                format!("{w} ")
            }
        })
        .collect()
}

impl SimulatedProvider {
    pub fn new(config: SimulatedConfig) -> Self {
        Self { config }
    }
}

impl ChatProvider for SimulatedProvider {
    fn name(&self) -> &str {
        "simulated"
    }

    fn default_model(&self) -> &str {
        "sim-1"
    }

    fn stream(&self, request: ChatRequest) -> EventStream {
        let prompt = request
            .messages
            .last()
            .map(|m| m.content.clone())
            .unwrap_or_default();
        let input_tokens: u32 = request
            .messages
            .iter()
            .map(|m| estimate_tokens(&m.content))
            .sum();
        let n = self.config.reply_tokens.min(request.max_tokens).max(1);
        let tokens = reply_tokens(&prompt, n);
        let cfg = self.config.clone();
        let fail_roll: f64 = rand::rng().random();
        // Half the failures come before the first token (a fallback can still
        // help), half in the middle (it cannot).
        let fail_before = fail_roll < cfg.failure_rate / 2.0;
        let fail_midway = !fail_before && fail_roll < cfg.failure_rate;
        let finish = if n < self.config.reply_tokens {
            "length"
        } else {
            "stop"
        };
        let stream = async_stream(move |tx| async move {
            tokio::time::sleep(Duration::from_millis(cfg.ttft_ms)).await;
            if fail_before {
                let _ = tx.send(Err(ProviderError::Upstream { status: 503 })).await;
                return;
            }
            for (i, t) in tokens.into_iter().enumerate() {
                if i > 0 && cfg.token_delay_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(cfg.token_delay_ms)).await;
                }
                if fail_midway && i == (n as usize) / 2 {
                    let _ = tx.send(Err(ProviderError::Disconnected)).await;
                    return;
                }
                if tx.send(Ok(StreamEvent::Token(t))).await.is_err() {
                    return; // the consumer went away: stop generating
                }
            }
            let usage = Usage {
                input_tokens,
                output_tokens: n,
            };
            let _ = tx.send(Ok(StreamEvent::Usage(usage))).await;
            let _ = tx.send(Ok(StreamEvent::Finish(finish.to_owned()))).await;
        });
        stream.boxed()
    }
}

/// A stream fed by a task; dropping the stream aborts the task, even mid-sleep.
fn async_stream<F, Fut>(f: F) -> impl futures::Stream<Item = Result<StreamEvent, ProviderError>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<StreamEvent, ProviderError>>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    #[expect(
        clippy::disallowed_methods,
        reason = "the task belongs to the stream: aborted when the stream is dropped"
    )]
    let guard = AbortOnDrop(tokio::spawn(f(tx)).abort_handle());
    futures::stream::unfold((rx, guard), |(mut rx, guard)| async move {
        rx.recv().await.map(|item| (item, (rx, guard)))
    })
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::PromptMessage;

    fn req(prompt: &str, max_tokens: u32) -> ChatRequest {
        ChatRequest {
            model: "sim-1".into(),
            messages: vec![PromptMessage {
                role: "user".into(),
                content: prompt.into(),
            }],
            max_tokens,
            ..ChatRequest::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn answer_is_deterministic_and_complete() {
        let p = SimulatedProvider::new(SimulatedConfig {
            reply_tokens: 5,
            ..Default::default()
        });
        let events: Vec<_> = p.stream(req("hello", 100)).collect().await;
        let text: String = events
            .iter()
            .filter_map(|e| match e {
                Ok(StreamEvent::Token(t)) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(text, reply_tokens("hello", 5).concat());
        assert!(text.ends_with('.'));
        assert_eq!(
            events[events.len() - 2],
            Ok(StreamEvent::Usage(Usage {
                input_tokens: 2,
                output_tokens: 5
            }))
        );
        assert_eq!(
            events.last().unwrap(),
            &Ok(StreamEvent::Finish("stop".into()))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn max_tokens_truncates_with_length() {
        let p = SimulatedProvider::new(SimulatedConfig {
            reply_tokens: 50,
            ..Default::default()
        });
        let events: Vec<_> = p.stream(req("hello", 3)).collect().await;
        assert_eq!(
            events
                .iter()
                .filter(|e| matches!(e, Ok(StreamEvent::Token(_))))
                .count(),
            3
        );
        assert_eq!(
            events.last().unwrap(),
            &Ok(StreamEvent::Finish("length".into()))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failure_rate_one_always_fails() {
        let p = SimulatedProvider::new(SimulatedConfig {
            failure_rate: 1.0,
            ..Default::default()
        });
        for _ in 0..10 {
            let events: Vec<_> = p.stream(req("x", 10)).collect().await;
            assert!(events.last().unwrap().is_err());
        }
    }
}
