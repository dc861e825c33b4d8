//! One generation per chat in the whole cluster: the node that opens a
//! chat's answers holds `{prefix}:chat:{id}:lease` (`<node>|<token>`, expiring
//! after `cluster.lease_ttl_ms` unless renewed). Each acquisition takes a new
//! fencing token from `{prefix}:chat:{id}:fence`, and Postgres opens an answer
//! only under a token at least as high as the chat's last (`chats.gen_fence`),
//! so a holder whose lease lapsed (a long pause, a partition) cannot open an
//! answer after another node took the chat.
//!
//! The fence counter is seeded from Redis' clock in milliseconds when missing
//! (a Redis restart without persistence), so tokens keep growing past every
//! token Postgres has seen.
//!
//! [`LeaseState`] is the holder's side as a pure state machine (tested
//! without a runtime): whether the lease is held, when to renew, what to release.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use redis::{Script, aio::ConnectionManager};
use uuid::Uuid;

/// KEYS lease, fence; ARGV node, ttl ms. Answers the token, or -1 when
/// another node holds the lease.
const ACQUIRE: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur then
  local node, tok = string.match(cur, '^(.*)|(%d+)$')
  if node == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return tonumber(tok)
  end
  return -1
end
if redis.call('EXISTS', KEYS[2]) == 0 then
  local t = redis.call('TIME')
  redis.call('SET', KEYS[2], string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)))
end
local tok = redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], 604800000)
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. tok, 'PX', ARGV[2])
return tok
";

/// KEYS lease; ARGV `<node>|<token>`, ttl ms (0 to release). 1 when it was ours.
const RENEW_OR_RELEASE: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(ARGV[2]) == 0 then redis.call('DEL', KEYS[1]) else redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
";

/// KEYS lease; ARGV node. Deletes the lease if that node holds it.
const BREAK: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur and string.sub(cur, 1, #ARGV[1] + 1) == ARGV[1] .. '|' then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
";

/// The answer to an acquisition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquired {
    /// Ours, under this fencing token.
    Held(i64),
    /// Another node generates for this chat now.
    Elsewhere,
    /// Redis did not answer: the node carries on alone (docs/ARCHITECTURE.md).
    Unavailable,
}

#[derive(Clone)]
pub struct ChatLeases {
    redis: ConnectionManager,
    /// The Redis breaker (`crate::breaker`), shared with limits and budgets.
    counters: crate::limits::WindowCounter,
    prefix: Arc<str>,
    node_id: Arc<str>,
    pub ttl: Duration,
    acquire: Arc<Script>,
    renew: Arc<Script>,
    breaker: Arc<Script>,
}

impl ChatLeases {
    pub fn new(
        redis: ConnectionManager,
        counters: crate::limits::WindowCounter,
        prefix: &str,
        node_id: Arc<str>,
        ttl: Duration,
    ) -> Self {
        Self {
            redis,
            counters,
            prefix: prefix.into(),
            node_id,
            ttl,
            acquire: Arc::new(Script::new(ACQUIRE)),
            renew: Arc::new(Script::new(RENEW_OR_RELEASE)),
            breaker: Arc::new(Script::new(BREAK)),
        }
    }

    fn key(&self, chat_id: Uuid) -> String {
        format!("{}:chat:{chat_id}:lease", self.prefix)
    }

    pub async fn acquire(&self, chat_id: Uuid) -> Acquired {
        if !self.counters.redis_allowed() {
            return Acquired::Unavailable;
        }
        let mut conn = self.redis.clone();
        let r: redis::RedisResult<i64> = self
            .acquire
            .key(self.key(chat_id))
            .key(format!("{}:chat:{chat_id}:fence", self.prefix))
            .arg(self.node_id.as_ref())
            .arg(self.ttl.as_millis() as u64)
            .invoke_async(&mut conn)
            .await;
        match r {
            Ok(t) if t > 0 => Acquired::Held(t),
            Ok(_) => Acquired::Elsewhere,
            Err(e) => {
                tracing::warn!(%chat_id, error = %e, "chat lease unavailable: generating without it");
                self.counters.mark_degraded(&e);
                Acquired::Unavailable
            }
        }
    }

    /// Extends the lease; false when it is no longer ours (it lapsed and another took it).
    pub async fn renew(&self, chat_id: Uuid, token: i64) -> bool {
        self.renew_or_release(chat_id, token, self.ttl.as_millis() as u64)
            .await
            .unwrap_or(true)
    }

    /// Frees a chat's lease held by a dead node (a takeover), without waiting for it to lapse.
    pub async fn break_dead(&self, chat_id: Uuid, dead: &str) {
        let mut conn = self.redis.clone();
        let _: redis::RedisResult<i64> = self
            .breaker
            .key(self.key(chat_id))
            .arg(dead)
            .invoke_async(&mut conn)
            .await;
    }

    pub async fn release(&self, chat_id: Uuid, token: i64) {
        let _ = self.renew_or_release(chat_id, token, 0).await;
    }

    async fn renew_or_release(
        &self,
        chat_id: Uuid,
        token: i64,
        ttl_ms: u64,
    ) -> redis::RedisResult<bool> {
        // With Redis skipped the lease is kept as held (it lapses by itself).
        if !self.counters.redis_allowed() {
            return Ok(true);
        }
        let mut conn = self.redis.clone();
        let r: i64 = self
            .renew
            .key(self.key(chat_id))
            .arg(format!("{}|{token}", self.node_id))
            .arg(ttl_ms)
            .invoke_async(&mut conn)
            .await?;
        Ok(r == 1)
    }
}

/// The holder's view of one chat's lease.
#[derive(Debug, Default)]
pub struct LeaseState {
    held: Option<(i64, Instant)>,
}

impl LeaseState {
    /// The token, while the lease is held and not past `ttl` since its last renewal.
    pub fn token(&self, now: Instant, ttl: Duration) -> Option<i64> {
        self.held
            .filter(|(_, at)| now.duration_since(*at) < ttl)
            .map(|(t, _)| t)
    }

    pub fn acquired(&mut self, token: i64, now: Instant) {
        self.held = Some((token, now));
    }

    /// The token to renew, once a third of the ttl has passed since the last renewal.
    pub fn renew_due(&self, now: Instant, ttl: Duration) -> Option<i64> {
        self.held
            .filter(|(_, at)| now.duration_since(*at) >= ttl / 3)
            .map(|(t, _)| t)
    }

    /// A renewal landed (it was started at `at`).
    pub fn renewed(&mut self, token: i64, at: Instant) {
        if let Some((t, last)) = &mut self.held
            && *t == token
            && at > *last
        {
            *last = at;
        }
    }

    /// The lease turned out not to be ours any more.
    pub fn lost(&mut self, token: i64) {
        if self.held.is_some_and(|(t, _)| t == token) {
            self.held = None;
        }
    }

    /// Gives the lease up; answers the token to release in Redis.
    pub fn release(&mut self) -> Option<i64> {
        self.held.take().map(|(t, _)| t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_until_the_ttl_passes_without_renewal() {
        let ttl = Duration::from_secs(9);
        let t0 = Instant::now();
        let mut s = LeaseState::default();
        assert_eq!(s.token(t0, ttl), None);
        s.acquired(42, t0);
        assert_eq!(s.token(t0 + Duration::from_secs(8), ttl), Some(42));
        assert_eq!(s.token(t0 + ttl, ttl), None, "lapsed");
        assert_eq!(s.renew_due(t0 + Duration::from_secs(2), ttl), None);
        assert_eq!(s.renew_due(t0 + Duration::from_secs(3), ttl), Some(42));
        s.renewed(42, t0 + Duration::from_secs(3));
        assert_eq!(s.token(t0 + Duration::from_secs(11), ttl), Some(42));
        assert_eq!(s.renew_due(t0 + Duration::from_secs(4), ttl), None);
    }

    #[test]
    fn stale_renewals_and_losses_of_an_older_token_change_nothing() {
        let ttl = Duration::from_secs(9);
        let t0 = Instant::now();
        let mut s = LeaseState::default();
        s.acquired(7, t0);
        s.renewed(6, t0 + Duration::from_secs(5));
        assert_eq!(
            s.token(t0 + ttl, ttl),
            None,
            "a renewal of token 6 does not extend 7"
        );
        s.acquired(8, t0);
        s.lost(7);
        assert_eq!(s.token(t0, ttl), Some(8));
        s.lost(8);
        assert_eq!(s.token(t0, ttl), None);
        s.acquired(9, t0);
        assert_eq!(s.release(), Some(9));
        assert_eq!(s.release(), None);
    }
}
