//! Fixed-window counters shared by every node through Redis (one atomic Lua
//! script per call), with a per-node fallback when Redis cannot be reached.
//!
//! Owns counting only; what a count means (sign-in throttling, rate limits) is
//! decided by the caller. While Redis is down each node counts on its own, which
//! is stricter per node but looser across nodes; the switch is logged once per
//! transition and shown by `switchboard_redis_degraded` and `/ready`. After a
//! failure the [`Breaker`] skips Redis for a cooldown, so a hung Redis costs
//! one timeout per cooldown rather than one per call.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use dashmap::DashMap;
use redis::{Script, aio::ConnectionManager};

use crate::breaker::Breaker;

/// INCRBY the first ARGV[3] keys, starting each window on first use; only
/// read the rest; answer (count, ttl) pairs for all.
const INCR_SCRIPT: &str = r"
local out = {}
local counted = tonumber(ARGV[3])
for i, key in ipairs(KEYS) do
  if i <= counted then
    local n = redis.call('INCRBY', key, ARGV[2])
    if n == tonumber(ARGV[2]) then redis.call('EXPIRE', key, ARGV[1]) end
    local ttl = redis.call('TTL', key)
    if ttl < 0 then redis.call('EXPIRE', key, ARGV[1]); ttl = tonumber(ARGV[1]) end
    out[#out + 1] = n
    out[#out + 1] = ttl
  else
    out[#out + 1] = tonumber(redis.call('GET', key) or '0')
    out[#out + 1] = redis.call('TTL', key)
  end
end
return out
";

/// Past this many local keys, expired windows are swept so memory stays bounded.
const LOCAL_KEYS_MAX: usize = 100_000;

/// A count within a window and how long until the window resets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowCount {
    pub count: u64,
    pub resets_in: Duration,
}

#[derive(Clone)]
pub struct WindowCounter {
    redis: ConnectionManager,
    prefix: Arc<str>,
    script: Arc<Script>,
    local: Arc<DashMap<String, (u64, Instant, Duration)>>,
    breaker: Arc<Breaker>,
}

/// How long Redis is skipped after a failure unless configured.
const DEFAULT_COOLDOWN: Duration = Duration::from_secs(2);

impl WindowCounter {
    pub fn new(redis: ConnectionManager, prefix: &str) -> Self {
        Self {
            redis,
            prefix: prefix.into(),
            script: Arc::new(Script::new(INCR_SCRIPT)),
            local: Arc::new(DashMap::new()),
            breaker: Arc::new(Breaker::new(DEFAULT_COOLDOWN)),
        }
    }

    /// Skips Redis for `cooldown` after each failure (`redis.breaker_cooldown_ms`).
    pub fn with_breaker_cooldown(mut self, cooldown: Duration) -> Self {
        self.breaker = Arc::new(Breaker::new(cooldown));
        self
    }

    /// Whether a call may go to Redis now (the breaker is closed, or this
    /// caller is its probe). Every user of this Redis connection asks first.
    pub fn redis_allowed(&self) -> bool {
        let allowed = self.breaker.allow();
        if !allowed {
            metrics::counter!("switchboard_redis_skipped_total").increment(1);
        }
        allowed
    }

    fn key(&self, key: &str) -> String {
        format!("{}:{key}", self.prefix)
    }

    /// True while counts are node-local because Redis failed on the last call.
    pub fn is_degraded(&self) -> bool {
        self.breaker.is_open()
    }

    /// Another user of this Redis connection saw it fail.
    pub fn mark_degraded(&self, cause: &redis::RedisError) {
        self.set_degraded(true, Some(cause));
    }

    /// Another user of this Redis connection saw it answer.
    pub fn mark_healthy(&self) {
        self.set_degraded(false, None);
    }

    fn set_degraded(&self, now: bool, cause: Option<&redis::RedisError>) {
        let changed = if now {
            self.breaker.failed()
        } else {
            self.breaker.succeeded()
        };
        if changed {
            if now {
                tracing::warn!(error = ?cause.map(ToString::to_string), "redis unreachable: limits are now per node");
            } else {
                tracing::info!("redis reachable again: limits are shared across nodes");
            }
            metrics::gauge!("switchboard_redis_degraded").set(if now { 1.0 } else { 0.0 });
        }
    }

    /// Adds one to each key in a single atomic step and returns the new counts.
    pub async fn incr(&self, keys: &[String], window: Duration) -> Vec<WindowCount> {
        self.incr_by(keys, 1, window).await
    }

    /// Adds `amount` to each key in a single atomic step and returns the new counts.
    pub async fn incr_by(
        &self,
        keys: &[String],
        amount: u64,
        window: Duration,
    ) -> Vec<WindowCount> {
        self.incr_and_read(keys, &[], amount, window).await.0
    }

    /// Adds `amount` to each of `counted` and reads `read` unchanged, in one
    /// round trip: the new counts, then the read ones.
    pub async fn incr_and_read(
        &self,
        counted: &[String],
        read: &[String],
        amount: u64,
        window: Duration,
    ) -> (Vec<WindowCount>, Vec<WindowCount>) {
        let local = || {
            let read = read.iter().map(|k| self.get_local(k)).collect();
            (self.incr_local(counted, amount, window), read)
        };
        if !self.redis_allowed() {
            return local();
        }
        let mut inv = self.script.prepare_invoke();
        for k in counted.iter().chain(read) {
            inv.key(self.key(k));
        }
        inv.arg(window.as_secs().max(1))
            .arg(amount)
            .arg(counted.len());
        let mut conn = self.redis.clone();
        match inv.invoke_async::<Vec<i64>>(&mut conn).await {
            Ok(raw) if raw.len() == (counted.len() + read.len()) * 2 => {
                self.set_degraded(false, None);
                let mut counts: Vec<WindowCount> = raw
                    .chunks(2)
                    .map(|c| WindowCount {
                        count: c[0].max(0) as u64,
                        resets_in: Duration::from_secs(c[1].max(1) as u64),
                    })
                    .collect();
                let read = counts.split_off(counted.len());
                (counts, read)
            }
            Ok(_) => {
                tracing::error!("redis counter script answered with the wrong shape");
                local()
            }
            Err(e) => {
                self.set_degraded(true, Some(&e));
                local()
            }
        }
    }

    /// Takes one back from a key counted ahead of time (a sign-in counted as
    /// a failure until it turned out not to be one).
    pub async fn give_back(&self, key: &str) {
        if let Some(mut e) = self.local.get_mut(key) {
            e.0 = e.0.saturating_sub(1);
        }
        if !self.redis_allowed() {
            return;
        }
        let mut conn = self.redis.clone();
        // Only a live window: a DECR on an expired key would start one at -1 with no TTL.
        let res = Script::new(
            "if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('DECR', KEYS[1]) end return 0",
        )
        .key(self.key(key))
        .invoke_async::<i64>(&mut conn)
        .await;
        if let Err(e) = res {
            self.set_degraded(true, Some(&e));
        }
    }

    /// Forgets a key, in Redis and locally.
    pub async fn reset(&self, key: &str) {
        self.local.remove(key);
        if !self.redis_allowed() {
            return;
        }
        let mut conn = self.redis.clone();
        if let Err(e) = redis::cmd("DEL")
            .arg(self.key(key))
            .query_async::<()>(&mut conn)
            .await
        {
            self.set_degraded(true, Some(&e));
        }
    }

    fn incr_local(&self, keys: &[String], amount: u64, window: Duration) -> Vec<WindowCount> {
        let now = Instant::now();
        if self.local.len() > LOCAL_KEYS_MAX {
            self.local.retain(|_, e| now.duration_since(e.1) < e.2);
        }
        keys.iter()
            .map(|k| {
                let mut e = self.local.entry(k.clone()).or_insert((0, now, window));
                if now.duration_since(e.1) >= e.2 {
                    *e = (0, now, window);
                }
                e.0 += amount;
                WindowCount {
                    count: e.0,
                    resets_in: e.2.saturating_sub(now.duration_since(e.1)),
                }
            })
            .collect()
    }

    fn get_local(&self, key: &str) -> WindowCount {
        let now = Instant::now();
        match self.local.get(key) {
            Some(e) if now.duration_since(e.1) < e.2 => WindowCount {
                count: e.0,
                resets_in: e.2.saturating_sub(now.duration_since(e.1)),
            },
            _ => WindowCount {
                count: 0,
                resets_in: Duration::ZERO,
            },
        }
    }
}
