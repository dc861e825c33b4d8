//! Password hashing: argon2id with OWASP's parameters (19 MiB, 2 passes, 1 lane).
//!
//! Hashing is deliberately slow, so it runs on the blocking pool and semaphores
//! cap how many run at once: a flood queues instead of exhausting memory.
//! Sign-in (verify) and sign-up (hash) queue separately, so a sign-up flood
//! never makes a returning user wait behind it.

use std::sync::{LazyLock, OnceLock};

use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};
use tokio::sync::Semaphore;

#[expect(
    clippy::expect_used,
    reason = "constant parameters, checked by every test that hashes"
)]
fn argon2() -> Argon2<'static> {
    // OWASP Password Storage Cheat Sheet: m=19456 KiB, t=2, p=1.
    let params = Params::new(19_456, 2, 1, None).expect("valid argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Verifications (sign-in) in flight.
static VERIFYING: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(cpus() * 2));
/// New hashes (sign-up, password reset) in flight: fewer, and apart from sign-in.
static HASHING: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(cpus()));

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("password hashing task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

async fn on_blocking_pool<T: Send + 'static>(
    gate: &Semaphore,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, PasswordError> {
    let _permit = gate
        .acquire()
        .await
        .map_err(|e| PasswordError::Hash(e.to_string()))?;
    Ok(tokio::task::spawn_blocking(f).await?)
}

pub async fn hash(password: String) -> Result<String, PasswordError> {
    on_blocking_pool(&HASHING, move || {
        argon2()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| PasswordError::Hash(e.to_string()))
    })
    .await?
}

/// Checks `password` against a stored hash. With no stored hash (unknown user)
/// it verifies against a dummy, so the answer takes as long either way.
pub async fn verify(password: String, stored: Option<String>) -> Result<bool, PasswordError> {
    on_blocking_pool(&VERIFYING, move || -> Result<bool, PasswordError> {
        let known = stored.is_some();
        let phc = stored.unwrap_or_else(|| dummy_hash().to_owned());
        let ok = argon2()
            .verify_password(password.as_bytes(), phc.as_str())
            .is_ok();
        Ok(known && ok)
    })
    .await?
}

#[expect(
    clippy::expect_used,
    reason = "hashing a constant with constant parameters cannot fail"
)]
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        argon2()
            .hash_password(b"switchboard-timing-equaliser")
            .expect("argon2 hash")
            .to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_then_verify() {
        let h = hash("correct horse battery".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(
            verify("correct horse battery".into(), Some(h.clone()))
                .await
                .unwrap()
        );
        assert!(!verify("wrong horse battery".into(), Some(h)).await.unwrap());
        assert!(!verify("anything at all".into(), None).await.unwrap());
    }
}
