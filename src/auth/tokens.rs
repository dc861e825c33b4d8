//! Access tokens (short-lived JWTs) and refresh tokens (opaque, stored hashed).
//!
//! The JWT algorithm is pinned to HS256 and every registered claim we rely on
//! (`exp`, `iat`, `sub`, `aud`, `iss`) is required, so `alg: none`, a token
//! signed with another key, or one minted for another audience is refused.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use uuid::Uuid;

use crate::config::{AuthConfig, Secret};

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: Uuid,
    pub iat: u64,
    pub exp: u64,
    pub iss: String,
    pub aud: String,
}

/// Everything needed to mint and check tokens; built once at startup.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    refresh_secret: Secret,
    issuer: String,
    audience: String,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("invalid or expired token")]
    Invalid,
    #[error("token signing failed: {0}")]
    Sign(jsonwebtoken::errors::Error),
}

impl TokenKeys {
    /// Panics only if called with missing secrets, which config validation rules out first.
    #[expect(
        clippy::expect_used,
        reason = "startup: App::build refuses to start without these secrets"
    )]
    pub fn new(cfg: &AuthConfig) -> Self {
        let jwt = cfg
            .jwt_secret
            .as_ref()
            .expect("JWT_SECRET validated before startup");
        let refresh = cfg
            .refresh_token_secret
            .clone()
            .expect("REFRESH_TOKEN_SECRET validated before startup");
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[&cfg.audience]);
        validation.set_issuer(&[&cfg.issuer]);
        validation.set_required_spec_claims(&["exp", "iat", "sub", "aud", "iss"]);
        validation.leeway = 5;
        Self {
            encoding: EncodingKey::from_secret(jwt.expose().as_bytes()),
            decoding: DecodingKey::from_secret(jwt.expose().as_bytes()),
            validation,
            refresh_secret: refresh,
            issuer: cfg.issuer.clone(),
            audience: cfg.audience.clone(),
            access_ttl: Duration::from_secs(cfg.access_token_ttl_secs),
            refresh_ttl: Duration::from_secs(cfg.refresh_token_ttl_secs),
        }
    }

    pub fn issue_access(&self, user_id: Uuid) -> Result<String, TokenError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let claims = Claims {
            sub: user_id,
            iat: now,
            exp: now + self.access_ttl.as_secs(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(TokenError::Sign)
    }

    /// A short-lived token good for one `scope` only (its audience is
    /// `<audience>#<scope>`, so it is never an access token, and an access
    /// token is never one of these): for clients that cannot send a header,
    /// like the browser's `EventSource`.
    pub fn issue_scoped(
        &self,
        user_id: Uuid,
        scope: &str,
        ttl: Duration,
    ) -> Result<String, TokenError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let claims = Claims {
            sub: user_id,
            iat: now,
            exp: now + ttl.as_secs(),
            iss: self.issuer.clone(),
            aud: format!("{}#{scope}", self.audience),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(TokenError::Sign)
    }

    pub fn verify_scoped(&self, token: &str, scope: &str) -> Result<Claims, TokenError> {
        let mut validation = self.validation.clone();
        validation.set_audience(&[format!("{}#{scope}", self.audience)]);
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|_| TokenError::Invalid)
    }

    pub fn verify_access(&self, token: &str) -> Result<Claims, TokenError> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|_| TokenError::Invalid)
    }

    /// A fresh opaque refresh token: 256 random bits, hex-encoded.
    pub fn new_refresh_token(&self) -> String {
        hex::encode(rand::random::<[u8; 32]>())
    }

    /// Keyed hash under which a refresh token is stored; a leaked table cannot be replayed.
    pub fn hash_refresh_token(&self, token: &str) -> String {
        #[expect(clippy::expect_used, reason = "HMAC accepts keys of any length")]
        let mut mac = Hmac::<Sha256>::new_from_slice(self.refresh_secret.expose().as_bytes())
            .expect("hmac accepts any key length");
        mac.update(token.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}
