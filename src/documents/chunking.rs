//! Splitting a document's text into chunks that fit the embedding model:
//! `text-splitter`'s Markdown splitter (headings, then paragraphs, then
//! sentences) sized in tokens of our own tokenizer, with overlap. Each chunk
//! keeps its byte range in the text and the heading it falls under, for citations.

use text_splitter::{ChunkConfig, ChunkSizer, MarkdownSplitter};

use crate::providers::tokenizer;

/// One piece of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub content: String,
    /// Byte offsets of the chunk in the document's text.
    pub start: usize,
    pub end: usize,
    /// The nearest Markdown heading at or before the chunk's start.
    pub heading: Option<String>,
    pub tokens: usize,
}

/// Sizes chunks in cl100k tokens (text-splitter's own tiktoken feature pins an older tiktoken-rs).
struct Tokens;

impl ChunkSizer for Tokens {
    fn size(&self, chunk: &str) -> usize {
        tokenizer::count_tokens(chunk) as usize
    }
}

/// Chunks of at most `max_tokens`, sharing up to `overlap` tokens with the previous one.
pub fn split(text: &str, max_tokens: usize, overlap: usize) -> Vec<Chunk> {
    let config = match ChunkConfig::new(max_tokens).with_overlap(overlap) {
        Ok(c) => c,
        // Validation keeps overlap below the size; fall back to none rather than fail.
        Err(_) => ChunkConfig::new(max_tokens),
    };
    let splitter = MarkdownSplitter::new(config.with_sizer(Tokens));
    let headings = headings(text);
    splitter
        .chunk_indices(text)
        .map(|(start, content)| {
            let heading = headings
                .iter()
                .rev()
                .find(|(at, _)| *at <= start)
                .map(|(_, h)| h.clone());
            Chunk {
                tokens: tokenizer::count_tokens(content) as usize,
                content: content.to_owned(),
                start,
                end: start + content.len(),
                heading,
            }
        })
        .collect()
}

/// Byte offset and text of every ATX heading (`# ...`).
fn headings(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        let t = line.trim();
        let level = t.chars().take_while(|c| *c == '#').count();
        if (1..=6).contains(&level) && t[level..].starts_with(' ') {
            out.push((at, t[level..].trim().to_owned()));
        }
        at += line.len();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_fit_the_budget_keep_positions_and_headings() {
        let mut doc = String::from("# Intro\n\nShort opening paragraph.\n\n## Billing\n\n");
        for i in 0..60 {
            doc.push_str(&format!(
                "Invoices are issued monthly, sentence number {i}. "
            ));
        }
        doc.push_str("\n\n## Support\n\nEmail us any time.\n");
        let chunks = split(&doc, 64, 8);
        assert!(chunks.len() > 3, "{}", chunks.len());
        for c in &chunks {
            assert!(c.tokens <= 64, "{} tokens", c.tokens);
            assert_eq!(&doc[c.start..c.end], c.content);
        }
        assert_eq!(chunks[0].heading.as_deref(), Some("Intro"));
        // The heading is the section the chunk starts in.
        let last = chunks.last().unwrap();
        assert!(last.content.contains("Email us"));
        let expect = if last.content.starts_with("## Support") {
            "Support"
        } else {
            "Billing"
        };
        assert_eq!(last.heading.as_deref(), Some(expect));
        assert!(
            chunks
                .iter()
                .any(|c| c.heading.as_deref() == Some("Billing"))
        );
        assert!(split("", 64, 8).is_empty());
    }
}
