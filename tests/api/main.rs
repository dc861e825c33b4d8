//! One test binary: every test starts the real app on a random port with its
//! own freshly migrated database and its own Redis key prefix.

mod auth;
mod config;
mod health;
mod helpers;
mod http_basics;
