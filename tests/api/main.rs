//! One test binary: every test starts the real app on a random port with its
//! own freshly migrated database and its own Redis key prefix.

mod auth;
mod billing;
mod billing_margin;
mod billing_webhooks;
mod chat_stream;
mod chats;
mod config;
mod health;
mod helpers;
mod http_basics;
mod mock_llm;
mod mock_stripe;
mod openai_api;
mod providers;
mod routing;
mod ws;
mod ws_client;
