//! Identity: validated credentials, password hashing, and tokens.
//! HTTP handlers live in `transport::http::auth`; rows in `store`.

pub mod credentials;
pub mod password;
pub mod tokens;
