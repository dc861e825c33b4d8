//! Password hashing: argon2id with OWASP's parameters (19 MiB, 2 passes, 1 lane).
//!
//! Hashing is deliberately slow, so it runs on a small pool of its own (one
//! thread per CPU), not tokio's blocking pool: that pool grows to hundreds of
//! threads under a flood, and with glibc's malloc each thread that hashed can
//! keep its 19 MiB in an arena of its own (docs/BENCHMARKS.md has the
//! measurement). Semaphores cap how many wait at once: a flood queues
//! instead of exhausting memory. Sign-in (verify) and sign-up (hash) queue
//! separately, so a sign-up flood never makes a returning user wait long.

use std::{
    panic::AssertUnwindSafe,
    sync::{Arc, LazyLock, Mutex, OnceLock, mpsc},
};

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

type Job = Box<dyn FnOnce() + Send>;

/// `auth.argon2_threads`, set once at start; unset: one per CPU.
static THREADS: OnceLock<usize> = OnceLock::new();

/// Sets the number of argon2 threads (0: the blocking pool); the first call wins,
/// and it must come before the first hash.
pub fn configure(threads: Option<usize>) {
    let _ = THREADS.set(threads.unwrap_or_else(cpus));
}

fn threads() -> usize {
    *THREADS.get_or_init(cpus)
}

/// The argon2 threads, fed through one queue.
static POOL: LazyLock<mpsc::Sender<Job>> = LazyLock::new(|| {
    let (tx, rx) = mpsc::channel::<Job>();
    let rx = Arc::new(Mutex::new(rx));
    for i in 0..threads() {
        let rx = rx.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("argon2-{i}"))
            .spawn(move || {
                loop {
                    // The guard is a temporary: the lock is held only while waiting.
                    let job = match rx.lock() {
                        Ok(queue) => queue.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else { return };
                    // A panicking job drops its reply (the caller sees an
                    // error); the thread lives on.
                    let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start an argon2 thread");
        }
    }
    tx
});

async fn on_argon2_pool<T: Send + 'static>(
    gate: &Semaphore,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, PasswordError> {
    let _permit = gate
        .acquire()
        .await
        .map_err(|e| PasswordError::Hash(e.to_string()))?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let _ = tx.send(f());
    });
    if threads() == 0 {
        tokio::task::spawn_blocking(job).await?;
    } else if let Err(mpsc::SendError(job)) = POOL.send(job) {
        // No argon2 thread could be started: the blocking pool it is.
        tokio::task::spawn_blocking(job).await?;
    }
    rx.await
        .map_err(|_| PasswordError::Hash("argon2 worker failed".into()))
}

pub async fn hash(password: String) -> Result<String, PasswordError> {
    on_argon2_pool(&HASHING, move || {
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
    on_argon2_pool(&VERIFYING, move || -> Result<bool, PasswordError> {
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
