//! Which nodes are alive, in Redis: each node renews `{prefix}:node:{id}`
//! (expiring after `cluster.node_ttl_ms`) every `cluster.heartbeat_ms`, and
//! adds its id to the set `{prefix}:nodes`. A member of the set whose key has
//! expired is dead; one survivor claims it (`SET NX` on
//! `{prefix}:takeover:{id}`), takes it over and removes it from the set.
//!
//! Why Redis and not a Postgres `nodes` table: key expiry is the failure
//! detector, with no clock comparison between machines and no heartbeat
//! writes on the database every node already depends on most. While Redis is
//! unreachable nobody is declared dead, which errs on the safe side: a live
//! node's answers are never failed because the detector went blind.

use std::{sync::Arc, time::Duration};

use redis::aio::ConnectionManager;

#[derive(Clone)]
pub struct NodeRegistry {
    redis: ConnectionManager,
    prefix: Arc<str>,
    node_id: Arc<str>,
    ttl: Duration,
}

impl NodeRegistry {
    pub fn new(redis: ConnectionManager, prefix: &str, node_id: Arc<str>, ttl: Duration) -> Self {
        Self {
            redis,
            prefix: prefix.into(),
            node_id,
            ttl,
        }
    }

    fn key(&self, id: &str) -> String {
        format!("{}:node:{id}", self.prefix)
    }

    fn set(&self) -> String {
        format!("{}:nodes", self.prefix)
    }

    /// Renews this node's liveness.
    pub async fn beat(&self) -> redis::RedisResult<()> {
        let mut conn = self.redis.clone();
        redis::pipe()
            .cmd("SET")
            .arg(self.key(&self.node_id))
            .arg(chrono::Utc::now().timestamp_millis())
            .arg("PX")
            .arg(self.ttl.as_millis() as u64)
            .ignore()
            .sadd(self.set(), self.node_id.as_ref())
            .ignore()
            .query_async(&mut conn)
            .await
    }

    /// Every node that ran and has not been taken over, with whether it is alive.
    pub async fn members(&self) -> redis::RedisResult<Vec<(String, bool)>> {
        let mut conn = self.redis.clone();
        let ids: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.set())
            .query_async(&mut conn)
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.exists(self.key(id));
        }
        let alive: Vec<bool> = pipe.query_async(&mut conn).await?;
        Ok(ids.into_iter().zip(alive).collect())
    }

    /// Claims the takeover of a dead node; only one survivor gets it. The
    /// node's key is checked again after the claim: a node that restarted
    /// under the same id in between is alive and is left alone.
    pub async fn claim(&self, dead: &str) -> redis::RedisResult<bool> {
        let mut conn = self.redis.clone();
        let got: Option<String> = redis::cmd("SET")
            .arg(format!("{}:takeover:{dead}", self.prefix))
            .arg(self.node_id.as_ref())
            .arg("NX")
            .arg("PX")
            .arg(30_000)
            .query_async(&mut conn)
            .await?;
        if got.is_none() {
            return Ok(false);
        }
        let back: bool = redis::cmd("EXISTS")
            .arg(self.key(dead))
            .query_async(&mut conn)
            .await?;
        Ok(!back)
    }

    /// A dead node fully taken over leaves the list.
    pub async fn forget(&self, dead: &str) -> redis::RedisResult<()> {
        let mut conn = self.redis.clone();
        redis::cmd("SREM")
            .arg(self.set())
            .arg(dead)
            .query_async(&mut conn)
            .await
    }

    /// Clean shutdown: this node's key goes at once, so a survivor takes over
    /// whatever it leaves queued without waiting for the key to expire.
    pub async fn leave(&self) {
        let mut conn = self.redis.clone();
        let _: redis::RedisResult<()> = redis::cmd("DEL")
            .arg(self.key(&self.node_id))
            .query_async(&mut conn)
            .await;
    }
}
