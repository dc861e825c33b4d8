//! One test binary: every test starts the real app on a random port with its
//! own freshly migrated database and its own Redis key prefix.

mod accounts;
mod auth;
mod chat_stream;
mod chats;
mod config;
mod email;
mod health;
mod helpers;
mod http_basics;
mod mock_llm;
mod openai_api;
mod providers;
mod routing;
mod smtp_sink;
mod workspaces;
mod ws;
mod ws_client;
