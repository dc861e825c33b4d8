//! One test binary: every test starts the real app on a random port with its
//! own freshly migrated database and its own Redis key prefix.

mod auth;
mod browser;
mod browser_pages;
mod browser_session;
mod browser_shots;
mod chat_stream;
mod chats;
mod config;
mod cut_proxy;
mod health;
mod helpers;
mod http_basics;
mod mock_llm;
mod openai_api;
mod providers;
mod routing;
mod web;
mod webdriver;
mod ws;
mod ws_client;
