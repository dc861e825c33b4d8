//! Token counts for providers that report no usage.
//!
//! Counts use OpenAI's `cl100k_base` encoding (from `tiktoken-rs`, whose tables
//! are compiled in, so nothing is downloaded). Other providers' models tokenize
//! differently, so for them the count is an estimate — a close one for English
//! text, and far better than characters divided by four. The encoder is built
//! once, on first use (about a hundred milliseconds), and shared.
//!
//! A chat's prompt is its recent history, counted again on every send, so
//! counts of all but the shortest texts are remembered (by a keyed 64-bit hash of the
//! text, a bounded map emptied when full): a send then tokenizes only what is
//! new (docs/BENCHMARKS.md has the profile that showed it).

use std::{hash::BuildHasher, sync::LazyLock};

use dashmap::DashMap;
use tiktoken_rs::CoreBPE;

use super::PromptMessage;

#[expect(
    clippy::expect_used,
    reason = "the table is compiled in; every tokenizer test loads it"
)]
static CL100K: LazyLock<CoreBPE> =
    LazyLock::new(|| tiktoken_rs::cl100k_base().expect("the compiled-in cl100k_base table loads"));

/// The text of cl100k token ids, as `/v1/embeddings` receives them from clients
/// that tokenize first (LangChain's `OpenAIEmbeddings`); `None` for an id
/// outside the vocabulary. Bytes that are not UTF-8 (a token array cut inside
/// a character) are replaced, as OpenAI's own decoder does.
pub fn decode(tokens: &[u32]) -> Option<String> {
    let bytes = CL100K.decode_bytes(tokens).ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// Tokens every message costs beyond its role and content (OpenAI's chat format).
const PER_MESSAGE: u32 = 3;
/// Tokens that prime the reply after the last message.
const REPLY_PRIMING: u32 = 3;

/// Texts shorter than this are counted every time: cheaper than the lookup.
/// (Not 64: a chat of short messages spent 8 % of the server's time
/// tokenizing texts of 20 to 60 bytes; docs/BENCHMARKS.md.)
const REMEMBER_FROM_BYTES: usize = 16;
/// Counts remembered at most; the map starts over when it is full.
const REMEMBER_MAX: usize = 65_536;

static REMEMBERED: LazyLock<(std::collections::hash_map::RandomState, DashMap<u64, u32>)> =
    LazyLock::new(Default::default);

/// The tokens in `text`, special-token markers counted as plain text.
pub fn count_tokens(text: &str) -> u32 {
    if text.is_empty() {
        return 0;
    }
    if text.len() < REMEMBER_FROM_BYTES {
        return encode_len(text);
    }
    let (keys, counts) = &*REMEMBERED;
    let key = keys.hash_one(text);
    if let Some(n) = counts.get(&key) {
        return *n;
    }
    let n = encode_len(text);
    if counts.len() >= REMEMBER_MAX {
        counts.clear();
    }
    counts.insert(key, n);
    n
}

fn encode_len(text: &str) -> u32 {
    u32::try_from(CL100K.encode_ordinary(text).len()).unwrap_or(u32::MAX)
}

/// The tokens a chat prompt costs: each message's role and content plus the
/// chat format's per-message overhead, as OpenAI counts them. No messages, no tokens.
pub fn count_prompt(messages: &[PromptMessage]) -> u32 {
    if messages.is_empty() {
        return 0;
    }
    messages.iter().fold(REPLY_PRIMING, |sum, m| {
        sum.saturating_add(PER_MESSAGE)
            .saturating_add(count_tokens(&m.role))
            .saturating_add(count_tokens(&m.content))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remembered_count_is_the_count() {
        let long = "The quick brown fox jumps over the lazy dog. ".repeat(20);
        let fresh = encode_len(&long);
        assert_eq!(count_tokens(&long), fresh);
        assert_eq!(count_tokens(&long), fresh, "again, from the map");
        let other = format!("{long}!");
        assert_ne!(count_tokens(&other), 0);
        assert_eq!(count_tokens(&other), encode_len(&other));
    }

    fn msg(role: &str, content: &str) -> PromptMessage {
        PromptMessage {
            role: role.into(),
            content: content.into(),
            ..PromptMessage::default()
        }
    }

    #[test]
    fn counts_known_strings() {
        assert_eq!(count_tokens(""), 0);
        assert_eq!(count_tokens("hello world"), 2);
        // cl100k_base splits this into "tik", "token", " is", " great", "!"
        assert_eq!(count_tokens("tiktoken is great!"), 6);
        // special-token markers are text here, never control tokens
        assert!(count_tokens("<|endoftext|>") > 1);
    }

    #[test]
    fn prompt_adds_the_chat_overhead() {
        // The OpenAI cookbook's rule: 3 per message, 3 to prime the reply.
        let messages = [msg("system", "Be brief."), msg("user", "hello world")];
        let expected = 3 + (3 + 1 + count_tokens("Be brief.")) + (3 + 1 + 2);
        assert_eq!(count_prompt(&messages), expected);
        assert_eq!(count_prompt(&[]), 0);
    }
}
