//! One-time tokens for links sent by email: verification, password reset,
//! invitations.
//!
//! A token is 256 random bits (hex). Only a keyed hash of it is stored,
//! HMAC-SHA256 under `AUTH_SECRET` over the purpose and the token, so a leaked
//! table cannot be replayed, a guessed or altered token matches nothing, and a
//! reset token is no verification token. Expiry and single use are enforced by
//! the conditional update that redeems it (`store::email_tokens::redeem`).

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::{AuthConfig, Secret};

/// What a token may be used for; part of its hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    VerifyEmail,
    PasswordReset,
    Invite,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::VerifyEmail => "verify_email",
            Self::PasswordReset => "password_reset",
            Self::Invite => "invite",
        }
    }
}

/// Tokens are 64 hex characters; anything else is refused before any lookup.
pub const TOKEN_LEN: usize = 64;

#[derive(Clone)]
pub struct OneTimeTokens {
    secret: Secret,
}

impl OneTimeTokens {
    /// Keyed by `AUTH_SECRET`; without it (development only, validation
    /// requires it in production) by the refresh-token secret.
    pub fn new(cfg: &AuthConfig) -> Self {
        let secret = cfg
            .auth_secret
            .clone()
            .or_else(|| cfg.refresh_token_secret.clone())
            .unwrap_or_else(|| Secret::new(""));
        Self { secret }
    }

    /// A fresh token and the hash to store for it.
    pub fn mint(&self, purpose: Purpose) -> (String, String) {
        let token = hex::encode(rand::random::<[u8; 32]>());
        let hash = self.hash(purpose, &token);
        (token, hash)
    }

    /// The stored form of `token`, or `None` when it cannot be one of ours.
    pub fn parse(&self, purpose: Purpose, token: &str) -> Option<String> {
        let token = token.trim();
        (token.len() == TOKEN_LEN && token.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| self.hash(purpose, &token.to_ascii_lowercase()))
    }

    fn hash(&self, purpose: Purpose, token: &str) -> String {
        #[expect(clippy::expect_used, reason = "HMAC accepts keys of any length")]
        let mut mac = Hmac::<Sha256>::new_from_slice(self.secret.expose().as_bytes())
            .expect("hmac accepts any key length");
        mac.update(purpose.as_str().as_bytes());
        mac.update(b":");
        mac.update(token.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(secret: &str) -> OneTimeTokens {
        OneTimeTokens {
            secret: Secret::new(secret),
        }
    }

    #[test]
    fn a_token_hashes_per_purpose_and_per_secret() {
        let k = keys("a-secret-of-at-least-thirty-two-chars");
        let (token, hash) = k.mint(Purpose::VerifyEmail);
        assert_eq!(token.len(), TOKEN_LEN);
        assert_eq!(k.parse(Purpose::VerifyEmail, &token), Some(hash.clone()));
        assert_eq!(
            k.parse(Purpose::VerifyEmail, &token.to_uppercase()),
            Some(hash.clone())
        );
        assert_ne!(k.parse(Purpose::PasswordReset, &token), Some(hash.clone()));
        let other = keys("another-secret-of-thirty-two-chars!!");
        assert_ne!(other.parse(Purpose::VerifyEmail, &token), Some(hash));
    }

    #[test]
    fn malformed_tokens_are_refused_without_hashing() {
        let k = keys("a-secret-of-at-least-thirty-two-chars");
        for bad in ["", "abc", &"g".repeat(64), &"a".repeat(65), "' or 1=1 --"] {
            assert_eq!(k.parse(Purpose::Invite, bad), None, "{bad}");
        }
    }
}
