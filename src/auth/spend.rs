//! "May this user spend?": the one rule deciding whether an account may start
//! generations (and create API keys that would), whatever the entry point.
//!
//! Today the rule is email verification: unless `accounts.unverified_may_spend`
//! is on (development and test), an account spends nothing until its address is
//! verified, so throwaway sign-ups cannot burn budget. Read from Postgres on
//! every call, so verifying takes effect at once on every node.

use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    config::AccountsConfig,
    error::{ApiError, ErrorCode},
};

/// `Ok` when the user may start a generation; a `forbidden` error saying why not.
pub async fn may_spend(
    db: &PgPool,
    accounts: &AccountsConfig,
    user_id: Uuid,
) -> Result<(), ApiError> {
    if accounts.unverified_may_spend {
        return Ok(());
    }
    match crate::store::users::email_verified(db, user_id).await? {
        Some(true) => Ok(()),
        Some(false) => Err(ApiError::new(
            ErrorCode::Forbidden,
            "verify your email address first: follow the link we sent you \
             (POST /api/auth/verify-email/resend sends another)",
        )),
        None => Err(ApiError::unauthorized("invalid or expired token")),
    }
}
