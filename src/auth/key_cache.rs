//! API keys this node looked up recently, so `/v1` does not ask Postgres on
//! every request (issue 19: it was one round trip per request before the
//! provider was even called).
//!
//! An entry is trusted for `auth.key_cache_ms` (default 1 s, 0 = off). A key
//! revoked through this node, or the keys of a user disabled here, are
//! forgotten at once; a revocation, plan change or disabled user on another
//! node holds here once the entry ages out, so within that bound on every node
//! (docs/ARCHITECTURE.md, "Cluster-wide invalidation"). Only live keys are
//! cached: an unknown or revoked key is asked for every time.

use std::time::{Duration, Instant};

use dashmap::DashMap;
use uuid::Uuid;

use crate::store::api_keys::KeyAuth;

/// Past this many entries, stale ones are swept on insert.
const SWEEP_ABOVE: usize = 10_000;

pub struct KeyCache {
    max_age: Duration,
    /// By key hash: the key's row and when it was read.
    entries: DashMap<String, (KeyAuth, Instant)>,
}

impl KeyCache {
    pub fn new(max_age: Duration) -> Self {
        Self {
            max_age,
            entries: DashMap::new(),
        }
    }

    /// The key with this hash, if read less than `max_age` ago.
    pub fn get(&self, key_hash: &str) -> Option<KeyAuth> {
        if self.max_age.is_zero() {
            return None;
        }
        let entry = self.entries.get(key_hash)?;
        let (auth, read_at) = &*entry;
        (read_at.elapsed() < self.max_age).then(|| auth.clone())
    }

    /// Remembers a live key as read just now (`read_at`: before the query ran,
    /// so an entry never outlives `max_age` from the row it shows).
    pub fn put(&self, key_hash: String, auth: KeyAuth, read_at: Instant) {
        if self.max_age.is_zero() {
            return;
        }
        if self.entries.len() >= SWEEP_ABOVE {
            let max_age = self.max_age;
            self.entries.retain(|_, (_, at)| at.elapsed() < max_age);
        }
        self.entries.insert(key_hash, (auth, read_at));
    }

    /// A key was revoked through this node.
    pub fn forget_key(&self, key_id: Uuid) {
        self.entries.retain(|_, (auth, _)| auth.id != key_id);
    }

    /// A workspace's plan changed through this node.
    pub fn forget_workspace(&self, workspace_id: Uuid) {
        self.entries
            .retain(|_, (auth, _)| auth.workspace_id != workspace_id);
    }

    /// A user was disabled through this node: the keys they created go too.
    pub fn forget_created_by(&self, user_id: Uuid) {
        self.entries
            .retain(|_, (auth, _)| auth.created_by != Some(user_id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: Uuid, by: Uuid) -> KeyAuth {
        KeyAuth {
            id,
            workspace_id: Uuid::nil(),
            created_by: Some(by),
            budget_micros: None,
            rate_limit_rpm: None,
            plan: "free".into(),
        }
    }

    #[test]
    fn entries_age_out_and_are_forgotten() {
        let cache = KeyCache::new(Duration::from_secs(60));
        let (a, b, user) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        cache.put("ha".into(), key(a, user), Instant::now());
        cache.put("hb".into(), key(b, Uuid::now_v7()), Instant::now());
        assert_eq!(cache.get("ha").map(|k| k.id), Some(a));
        cache.forget_key(a);
        assert!(cache.get("ha").is_none());
        assert!(cache.get("hb").is_some());
        cache.put("ha".into(), key(a, user), Instant::now());
        cache.forget_created_by(user);
        assert!(cache.get("ha").is_none());
        assert!(cache.get("hb").is_some());

        let old = Instant::now()
            .checked_sub(Duration::from_secs(61))
            .expect("the clock is past a minute");
        cache.put("hc".into(), key(Uuid::now_v7(), user), old);
        assert!(
            cache.get("hc").is_none(),
            "an entry older than max_age is not used"
        );
    }

    #[test]
    fn zero_max_age_caches_nothing() {
        let cache = KeyCache::new(Duration::ZERO);
        cache.put(
            "h".into(),
            key(Uuid::now_v7(), Uuid::now_v7()),
            Instant::now(),
        );
        assert!(cache.get("h").is_none());
    }
}
