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
mod admin;
mod auth;
mod auth_races;
mod backup;
mod billing;
mod billing_margin;
mod billing_webhooks;
mod browser;
mod browser_pages;
mod browser_session;
mod browser_shots;
mod chat_stream;
mod chats;
mod client_edges;
mod cluster;
mod config;
mod cut_proxy;
mod deploy_files;
mod disabled_sockets;
mod documents;
mod documents_index;
mod edge;
mod email;
mod error_reports;
mod generation;
mod group_writes;
mod health;
mod helpers;
mod http_basics;
mod ledger;
mod mock_llm;
mod mock_stripe;
mod openai_api;
mod openapi_fuzz;
mod ops;
mod ops_browser;
mod outages;
mod pinecone;
mod process;
mod providers;
mod routing;
mod sdk_compat;
mod server_process;
mod shutdown;
mod smtp_sink;
mod traces;
mod web;
mod webdriver;
mod workspaces;
mod ws;
mod ws_client;
