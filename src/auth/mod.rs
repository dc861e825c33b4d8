//! Identity: validated credentials, password hashing, and tokens.
//! HTTP handlers live in `transport::http::auth`; rows in `store`.

pub mod credentials;
pub mod key_cache;
pub mod one_time;
pub mod password;
pub mod spend;
pub mod tokens;
