//! # Switchboard
//!
//! A real-time AI chat server: users chat with language models, tokens streamed
//! over WebSockets and SSE; every request is routed to the cheapest adequate
//! provider and held to rate limits and budgets. See docs/ARCHITECTURE.md.
//!
//! ## A tour
//! - [`config`]: layered settings and their validation (every problem at once).
//! - [`app`]: `App::build(config)` → `local_addr()` → `run_until(signal)`.
//! - [`transport`]: the HTTP surface (one router per resource) and its layers.
//! - [`auth`]: credentials, argon2id hashing, JWT access and rotating refresh tokens.
//! - [`limits`]: fixed-window counters shared through Redis, per node when it is down.
//! - [`admission`]: per-minute limits and the budget reservation for each generation.
//! - [`budget`]: cost budgets: reserve the worst case, settle the real cost, alert at thresholds.
//! - [`billing`]: Stripe plans, checkout, verified webhooks applied once, revenue.
//! - [`store`]: thin SQL over Postgres; the schema is in `migrations/`.
//! - [`error`]: the error-code table behind every REST error and WS error frame.
//! - [`telemetry`]: tracing logs and the Prometheus recorder.

pub mod actors;
pub mod admission;
pub mod app;
pub mod auth;
pub mod billing;
pub mod budget;
pub mod config;
pub mod error;
pub mod limits;
pub mod providers;
pub mod store;
pub mod telemetry;
pub mod transport;
