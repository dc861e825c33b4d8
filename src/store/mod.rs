//! Thin query functions over `&PgPool` or a transaction. No business rules here:
//! callers decide; these read and write rows.

pub mod api_keys;
pub mod billing;
pub mod chats;
pub mod messages;
pub mod refresh_tokens;
pub mod users;
pub mod workspaces;

/// True when `e` is a unique violation of the named constraint or index.
pub fn is_unique_violation(e: &sqlx::Error, constraint: &str) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation() && db.constraint() == Some(constraint))
}
