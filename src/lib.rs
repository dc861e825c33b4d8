//! # Switchboard
//!
//! A real-time AI chat server: users chat with language models, tokens streamed
//! over WebSockets and SSE; every request is routed to the cheapest adequate
//! provider and held to rate limits and budgets. See docs/ARCHITECTURE.md.
//!
//! ## A tour, bottom layer first (docs/ARCHITECTURE.md draws the layers)
//! - [`config`]: layered settings, the price table, validation (every problem at once).
//! - [`error`]: the error-code table behind every REST error and WS/SSE error frame.
//! - [`protocol`]: the chat event vocabulary, the frames both streaming doors speak.
//! - [`auth`]: credentials, argon2id hashing, JWT access and rotating refresh tokens.
//! - [`billing`]: Stripe plans, checkout, verified webhooks applied once, revenue.
//! - [`store`]: thin SQL over Postgres; the schema is in `migrations/`.
//! - [`edge`]: counters that bound the edge: connections per node and address, SSE streams, unauthenticated sockets.
//! - [`text`]: names and titles as a validated newtype; NUL kept out of JSON strings.
//! - [`limits`]: fixed-window counters shared through Redis, per node when it is down.
//! - [`budget`]: cost budgets: reserve the worst case, settle the real cost, alert at thresholds.
//! - [`admission`]: per-minute limits and the budget reservation for each generation.
//! - [`admin`]: operator actions (admin rights, plans, disabling) with their audit log.
//! - [`accounts`]: verification, password-reset and invitation emails, queued in the caller's transaction.
//! - [`email`]: the outbox relay to RabbitMQ and the worker that renders and sends over SMTP.
//! - [`providers`]: one trait for chat providers (simulated, OpenAI-compatible,
//!   Anthropic, Cloudflare), embedders, the router, the tokenizer.
//! - [`actors`] (lower half): provider actors, the usage writer, the chat hub, the registry.
//! - [`embedding_cache`]: embeddings cached in Redis by model and text hash.
//! - [`generation`]: one generation's life — plan, attempts, stream, bill — for every door.
//! - [`documents`]: documents and retrieval — extract, chunk, ingest, search, cite (docs/RAG.md).
//! - [`import`]: `switchboard import pinecone`, vectors from another store into documents.
//! - [`cluster`]: several nodes as one: node liveness, per-chat leases, fan-out over Redis, takeovers.
//! - [`actors`] (upper half): chat and user actors and the supervision tree.
//! - [`state`]: `AppState`, what every handler gets.
//! - [`transport`]: the HTTP surface (one router per resource) and the WebSocket protocol.
//! - [`app`]: `App::build(config)` → `local_addr()` → `run_until(signal)`.
//! - [`telemetry`]: tracing logs and the Prometheus recorder.
//! - [`traces`]: OTLP trace export and the `traceparent` of provider requests (when configured).
//! - [`error_reports`]: panics and 5xx reported to Sentry, scrubbed (when configured).

pub mod accounts;
pub mod actors;
pub mod admin;
pub mod admission;
pub mod app;
pub mod auth;
pub mod billing;
pub mod breaker;
pub mod budget;
pub mod cluster;
pub mod config;
pub mod documents;
pub mod edge;
pub mod email;
pub mod embedding_cache;
pub mod error;
pub mod error_reports;
pub mod generation;
pub mod import;
pub mod limits;
pub mod metric_docs;
pub mod protocol;
pub mod providers;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod text;
pub mod traces;
pub mod transport;
