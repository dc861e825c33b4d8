//! Account emails: what a verification, password-reset or invitation email
//! carries, and putting it in the outbox in the caller's transaction, so the
//! email goes out exactly when the change that caused it commits.
//!
//! Owns minting the one-time token, storing its hash and building the link
//! (`{public_url}/verify-email?token=…` etc.). Does not send anything: the
//! relay and worker in `crate::email` do.

use chrono::{Duration, Utc};
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    auth::one_time::{OneTimeTokens, Purpose},
    config::Config,
    store::{
        email_tokens::{self, EmailToken, NewToken},
        outbox,
    },
};

/// The web app page a link opens, with its token.
pub fn link(public_url: &str, page: &str, token: &str) -> String {
    format!("{}/{page}?token={token}", public_url.trim_end_matches('/'))
}

/// A lifetime as the email says it: "24 hours", "7 days", "30 minutes".
pub fn human(secs: u64) -> String {
    let (n, unit) = match secs {
        s if s >= 86_400 && s % 86_400 == 0 => (s / 86_400, "day"),
        s if s >= 3_600 && s % 3_600 == 0 => (s / 3_600, "hour"),
        s if s >= 60 => (s / 60, "minute"),
        s => (s, "second"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

fn ttl(secs: u64) -> Duration {
    Duration::seconds(
        i64::try_from(secs)
            .unwrap_or(i64::MAX / 1_000)
            .min(10 * 365 * 86_400),
    )
}

/// Who an account email is for.
pub struct Recipient<'a> {
    pub user_id: Uuid,
    pub email: &'a str,
    pub username: &'a str,
}

/// Queues a verification email; earlier verification links stop working.
pub async fn queue_verification(
    tx: &mut PgConnection,
    config: &Config,
    to: &Recipient<'_>,
) -> Result<(), sqlx::Error> {
    queue_user_link(tx, config, to, Purpose::VerifyEmail).await
}

/// Queues a password-reset email; earlier reset links stop working.
pub async fn queue_password_reset(
    tx: &mut PgConnection,
    config: &Config,
    to: &Recipient<'_>,
) -> Result<(), sqlx::Error> {
    queue_user_link(tx, config, to, Purpose::PasswordReset).await
}

async fn queue_user_link(
    tx: &mut PgConnection,
    config: &Config,
    to: &Recipient<'_>,
    purpose: Purpose,
) -> Result<(), sqlx::Error> {
    let (page, secs) = match purpose {
        Purpose::VerifyEmail => ("verify-email", config.accounts.verify_token_ttl_secs),
        _ => ("reset-password", config.accounts.reset_token_ttl_secs),
    };
    let (token, hash) = OneTimeTokens::new(&config.auth).mint(purpose);
    email_tokens::retire_for_user(tx, to.user_id, purpose.as_str()).await?;
    email_tokens::insert(
        tx,
        &NewToken {
            purpose: purpose.as_str(),
            token_hash: &hash,
            user_id: Some(to.user_id),
            email: to.email,
            workspace_id: None,
            role: None,
            invited_by: None,
            expires_at: Utc::now() + ttl(secs),
        },
    )
    .await?;
    let payload = json!({
        "username": to.username,
        "link": link(&config.accounts.public_url, page, &token),
        "expires_in": human(secs),
    });
    outbox::enqueue(tx, to.email, purpose.as_str(), &payload).await?;
    Ok(())
}

/// An invitation to send.
pub struct Invitation<'a> {
    pub workspace_id: Uuid,
    pub workspace_name: &'a str,
    pub email: &'a str,
    pub role: &'a str,
    pub inviter_id: Uuid,
    pub inviter_name: &'a str,
}

/// Stores an invitation and queues its email; answers the stored invitation.
pub async fn queue_invitation(
    tx: &mut PgConnection,
    config: &Config,
    inv: &Invitation<'_>,
) -> Result<EmailToken, sqlx::Error> {
    let (token, hash) = OneTimeTokens::new(&config.auth).mint(Purpose::Invite);
    let stored = email_tokens::insert(
        tx,
        &NewToken {
            purpose: Purpose::Invite.as_str(),
            token_hash: &hash,
            user_id: None,
            email: inv.email,
            workspace_id: Some(inv.workspace_id),
            role: Some(inv.role),
            invited_by: Some(inv.inviter_id),
            expires_at: Utc::now() + ttl(config.accounts.invite_token_ttl_secs),
        },
    )
    .await?;
    let payload = json!({
        "workspace_name": inv.workspace_name,
        "inviter": inv.inviter_name,
        "role": inv.role,
        "link": link(&config.accounts.public_url, "invite", &token),
        "expires_in": human(config.accounts.invite_token_ttl_secs),
    });
    outbox::enqueue(tx, inv.email, "invite", &payload).await?;
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_join_the_public_url_and_the_page() {
        assert_eq!(
            link("https://app.example.com/", "verify-email", "ab12"),
            "https://app.example.com/verify-email?token=ab12"
        );
        assert_eq!(
            link("http://127.0.0.1:8080", "invite", "ff"),
            "http://127.0.0.1:8080/invite?token=ff"
        );
    }

    #[test]
    fn lifetimes_read_as_people_say_them() {
        assert_eq!(human(86_400), "1 day");
        assert_eq!(human(604_800), "7 days");
        assert_eq!(human(3_600), "1 hour");
        assert_eq!(human(90_000), "25 hours");
        assert_eq!(human(1_800), "30 minutes");
        assert_eq!(human(5), "5 seconds");
    }
}
