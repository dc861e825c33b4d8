//! One test binary: every test starts the real app on a random port with its
//! own freshly migrated database and its own Redis key prefix.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    clippy::too_many_lines,
    reason = "a test fails by panicking, helpers included; tests own their tasks; a scenario reads best whole"
)]

mod accounts;
mod auth;
mod chat_stream;
mod chats;
mod config;
mod documents;
mod documents_index;
mod email;
mod generation;
mod health;
mod helpers;
mod http_basics;
mod ledger;
mod mock_llm;
mod openai_api;
mod pinecone;
mod providers;
mod routing;
mod smtp_sink;
mod workspaces;
mod ws;
mod ws_client;
