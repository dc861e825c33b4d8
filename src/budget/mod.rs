//! Cost budgets: reserve the worst case before a generation, settle the real
//! cost after, across every scope (workspace, user, API key) at once.
//!
//! Counters live in Redis so every node sees one spend: per scope and period
//! ("bucket") a `spent` counter and a sorted set of live reservations whose
//! score is their expiry. One Lua script checks every bucket and reserves in
//! all of them, or none, so concurrent requests cannot overspend by more than
//! one reservation's error. Reservations expire on their own (a crash never
//! holds one forever) and a restarting node releases its own at once.
//!
//! Postgres `usage_events` is the durable truth: a missing `spent` counter is
//! rebuilt from it. With Redis down the ledger keeps the same books per node
//! and says so (logs, `switchboard_redis_degraded`, `/ready`), skipping Redis
//! while the breaker (`crate::breaker`) is open; once Redis answers again the
//! counters are reconciled with Postgres before they are trusted (reconcile.rs).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use redis::{Script, aio::ConnectionManager};
use sqlx::PgPool;
use uuid::Uuid;

use crate::limits::WindowCounter;

mod alerts;
mod local;
mod reconcile;

use local::LocalBook;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScopeKind {
    Workspace,
    User,
    ApiKey,
}

impl ScopeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Workspace => "workspace",
            Self::User => "user",
            Self::ApiKey => "api_key",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Period {
    Daily,
    Monthly,
}

impl Period {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Daily => "daily",
            Self::Monthly => "monthly",
        }
    }

    /// Start and end (exclusive) of the period containing `now`, UTC.
    pub fn bounds(self, now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
        let day = now.date_naive();
        let (start, end) = match self {
            Self::Daily => (day, day.succ_opt().unwrap_or(day)),
            Self::Monthly => {
                let first = NaiveDate::from_ymd_opt(day.year(), day.month(), 1).unwrap_or(day);
                let next = if day.month() == 12 {
                    NaiveDate::from_ymd_opt(day.year() + 1, 1, 1)
                } else {
                    NaiveDate::from_ymd_opt(day.year(), day.month() + 1, 1)
                }
                .unwrap_or(day);
                (first, next)
            }
        };
        let at = |d: NaiveDate| Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).unwrap_or_default());
        (at(start), at(end))
    }

    fn tag(self, now: DateTime<Utc>) -> String {
        match self {
            Self::Daily => now.format("d%Y%m%d").to_string(),
            Self::Monthly => now.format("m%Y%m").to_string(),
        }
    }
}

/// One budget to hold a generation to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    pub kind: ScopeKind,
    pub id: Uuid,
    pub period: Period,
    pub limit_micros: i64,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum BudgetError {
    #[error("{} {} budget exhausted", .kind.as_str(), .period.as_str())]
    Exceeded {
        kind: ScopeKind,
        period: Period,
        /// Until the period resets.
        retry_after: Duration,
    },
    #[error("budget store unavailable")]
    Unavailable,
}

/// A held worst-case amount; settle it (or drop it into `release`) exactly once.
#[derive(Debug, Clone)]
pub struct Reservation {
    id: String,
    buckets: Vec<Bucket>,
    pub amount: i64,
    /// Kept locally because Redis was down when it was made.
    local: bool,
}

#[derive(Debug, Clone)]
struct Bucket {
    key: String,
    limit: Limit,
    ends: DateTime<Utc>,
}

/// A budget reaching a threshold (50, 80, 100 %), reported once per period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub scope: String,
    pub scope_id: Option<Uuid>,
    pub period: Period,
    pub threshold_pct: u8,
    pub spent_micros: i64,
    pub limit_micros: i64,
}

/// Per bucket: KEYS spent, res (reservations by expiry), held (their running
/// total); then the node's set of its reservations. Sweeps lapsed
/// reservations off the total, then checks every bucket before touching any.
/// The running total keeps this O(lapsed), not O(in flight); the node set is
/// written here, not in a second round trip.
const RESERVE_SCRIPT: &str = r"
local now = tonumber(ARGV[1])
local member = ARGV[2]
local amount = tonumber(ARGV[3])
local n = (#KEYS - 1) / 3
for i = 1, n do
  local res_key, held_key = KEYS[3 * i - 1], KEYS[3 * i]
  local lapsed = redis.call('ZRANGEBYSCORE', res_key, '-inf', now)
  if #lapsed > 0 then
    local sum = 0
    for _, m in ipairs(lapsed) do sum = sum + tonumber(string.match(m, '([^|]+)$')) end
    redis.call('ZREMRANGEBYSCORE', res_key, '-inf', now)
    redis.call('DECRBY', held_key, sum)
  end
  local spent = tonumber(redis.call('GET', KEYS[3 * i - 2]) or '-1')
  if spent < 0 then return {-2, i} end
  local held = tonumber(redis.call('GET', held_key) or '0')
  if spent + held + amount > tonumber(ARGV[3 + 2 * i - 1]) then return {-1, i} end
end
for i = 1, n do
  local ttl = tonumber(ARGV[3 + 2 * i])
  redis.call('ZADD', KEYS[3 * i - 1], tonumber(ARGV[4 + 2 * n]), member)
  redis.call('INCRBY', KEYS[3 * i], amount)
  redis.call('EXPIRE', KEYS[3 * i - 1], ttl)
  redis.call('EXPIRE', KEYS[3 * i], ttl)
  redis.call('SADD', KEYS[#KEYS], KEYS[3 * i - 1] .. '|' .. member)
end
return {0, 0}
";

/// Per bucket: KEYS spent, res, held; then the node's set of its
/// reservations. Releases the reservation (unless it already lapsed) and adds
/// the real cost; answers each bucket's new spend.
const SETTLE_SCRIPT: &str = r"
local out = {}
local amount = tonumber(string.match(ARGV[1], '([^|]+)$'))
for i = 1, (#KEYS - 1) / 3 do
  if redis.call('ZREM', KEYS[3 * i - 1], ARGV[1]) == 1 then
    redis.call('DECRBY', KEYS[3 * i], amount)
  end
  redis.call('SREM', KEYS[#KEYS], KEYS[3 * i - 1] .. '|' .. ARGV[1])
  local spent = -1
  if redis.call('EXISTS', KEYS[3 * i - 2]) == 1 then
    spent = redis.call('INCRBY', KEYS[3 * i - 2], ARGV[2])
  end
  out[#out + 1] = spent
end
return out
";

#[derive(Clone)]
pub struct BudgetLedger {
    redis: ConnectionManager,
    db: PgPool,
    prefix: Arc<str>,
    node_id: Arc<str>,
    ttl: Duration,
    reserve: Arc<Script>,
    settle: Arc<Script>,
    counters: WindowCounter,
    local: Arc<Mutex<LocalBook>>,
    dirty: Arc<Mutex<reconcile::Dirty>>,
    global_daily_micros: i64,
    global_monthly_micros: i64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

pub struct LedgerConfig {
    pub prefix: String,
    pub node_id: String,
    pub reservation_ttl: Duration,
    pub global_daily_micros: i64,
    pub global_monthly_micros: i64,
}

impl BudgetLedger {
    pub fn new(
        redis: ConnectionManager,
        db: PgPool,
        counters: WindowCounter,
        cfg: LedgerConfig,
    ) -> Self {
        Self {
            redis,
            db,
            prefix: cfg.prefix.into(),
            node_id: cfg.node_id.into(),
            ttl: cfg.reservation_ttl,
            reserve: Arc::new(Script::new(RESERVE_SCRIPT)),
            settle: Arc::new(Script::new(SETTLE_SCRIPT)),
            counters,
            local: Arc::default(),
            dirty: Arc::default(),
            global_daily_micros: cfg.global_daily_micros,
            global_monthly_micros: cfg.global_monthly_micros,
        }
    }

    fn buckets(&self, limits: &[Limit]) -> Vec<Bucket> {
        let now = Utc::now();
        limits
            .iter()
            .map(|l| Bucket {
                key: format!(
                    "{}:budget:{}:{}:{}",
                    self.prefix,
                    l.kind.as_str(),
                    l.id,
                    l.period.tag(now)
                ),
                ends: l.period.bounds(now).1,
                limit: l.clone(),
            })
            .collect()
    }

    /// The settle script for reservation `id` over `buckets` (their key
    /// prefixes), held in node set `set`: `actual` 0 only releases it.
    fn settle_call<'a>(
        &'a self,
        id: &str,
        actual: i64,
        buckets: impl IntoIterator<Item = &'a str>,
        set: &str,
    ) -> redis::ScriptInvocation<'a> {
        let mut inv = self.settle.prepare_invoke();
        inv.arg(id).arg(actual);
        for b in buckets {
            inv.key(format!("{b}:spent"))
                .key(format!("{b}:res"))
                .key(format!("{b}:held"));
        }
        inv.key(set);
        inv
    }

    fn node_set(&self) -> String {
        self.node_set_of(&self.node_id)
    }

    fn node_set_of(&self, node_id: &str) -> String {
        format!("{}:budget:node:{node_id}", self.prefix)
    }

    /// Reserves `amount` micro-dollars against every limit at once.
    pub async fn reserve(&self, limits: &[Limit], amount: i64) -> Result<Reservation, BudgetError> {
        let buckets = self.buckets(limits);
        let id = format!(
            "{}|{}|{}",
            self.node_id,
            Uuid::now_v7().simple(),
            amount.max(0)
        );
        let mut res = Reservation {
            id,
            buckets,
            amount: amount.max(0),
            local: false,
        };
        if res.buckets.is_empty() {
            return Ok(res);
        }
        if !self.counters.redis_allowed() {
            return self.reserve_local(&mut res, None).await;
        }
        if let Err(e) = self.reconcile().await {
            return self.reserve_local(&mut res, Some(e)).await;
        }
        // Each pass can find one bucket without a counter; seed it and go again.
        for _ in 0..=res.buckets.len() {
            match self.reserve_redis(&res).await {
                Ok((0, _)) => {
                    self.counters_ok();
                    return Ok(res);
                }
                Ok((-1, i)) => {
                    return Err(self.exceeded(&res.buckets[(i as usize).saturating_sub(1)]));
                }
                Ok((_, i)) => {
                    // A bucket without a counter: rebuild it from Postgres, then try again.
                    let b = &res.buckets[(i as usize).saturating_sub(1)];
                    let spent = self.spent_in_postgres(&b.limit).await?;
                    let mut conn = self.redis.clone();
                    let ttl = self.bucket_ttl(b);
                    let set: redis::RedisResult<()> = redis::cmd("SET")
                        .arg(format!("{}:spent", b.key))
                        .arg(spent)
                        .arg("NX")
                        .arg("EX")
                        .arg(ttl)
                        .query_async(&mut conn)
                        .await;
                    if let Err(e) = set {
                        return self.reserve_local(&mut res, Some(e)).await;
                    }
                }
                Err(e) => {
                    // The script may still run (a hung Redis): release it later.
                    self.mark_uncertain(&res);
                    return self.reserve_local(&mut res, Some(e)).await;
                }
            }
        }
        tracing::error!("budget counters could not be seeded");
        Err(BudgetError::Unavailable)
    }

    fn counters_ok(&self) {
        self.counters.mark_healthy();
        // The shared counters are reachable again; local books are no longer needed.
        if let Ok(mut book) = self.local.lock()
            && !book.spent.is_empty()
            && book.reserved.values().all(HashMap::is_empty)
        {
            book.spent.clear();
        }
    }

    fn bucket_ttl(&self, b: &Bucket) -> u64 {
        // Keep the counter a day past its period so late settles still land.
        (b.ends - Utc::now()).num_seconds().max(0) as u64 + 86_400
    }

    async fn reserve_redis(&self, res: &Reservation) -> redis::RedisResult<(i64, i64)> {
        let mut inv = self.reserve.prepare_invoke();
        let now = now_ms();
        inv.arg(now).arg(&res.id).arg(res.amount);
        for b in &res.buckets {
            inv.key(format!("{}:spent", b.key))
                .key(format!("{}:res", b.key))
                .key(format!("{}:held", b.key));
            inv.arg(b.limit.limit_micros).arg(self.bucket_ttl(b));
        }
        inv.key(self.node_set());
        inv.arg(now + self.ttl.as_millis() as u64);
        let mut conn = self.redis.clone();
        let out: Vec<i64> = inv.invoke_async(&mut conn).await?;
        Ok((
            out.first().copied().unwrap_or(-3),
            out.get(1).copied().unwrap_or(0),
        ))
    }

    fn exceeded(&self, b: &Bucket) -> BudgetError {
        metrics::counter!("switchboard_budget_rejections_total", "scope" => b.limit.kind.as_str(), "period" => b.limit.period.as_str())
            .increment(1);
        BudgetError::Exceeded {
            kind: b.limit.kind,
            period: b.limit.period,
            retry_after: (b.ends - Utc::now()).to_std().unwrap_or_default(),
        }
    }

    async fn spent_in_postgres(&self, l: &Limit) -> Result<i64, BudgetError> {
        let (start, _) = l.period.bounds(Utc::now());
        let sql = match l.kind {
            ScopeKind::Workspace => {
                "select coalesce(sum(cost_micros), 0)::bigint from usage_events where workspace_id = $1 and created_at >= $2"
            }
            ScopeKind::User => {
                "select coalesce(sum(cost_micros), 0)::bigint from usage_events where user_id = $1 and created_at >= $2"
            }
            ScopeKind::ApiKey => {
                "select coalesce(sum(cost_micros), 0)::bigint from usage_events where api_key_id = $1 and created_at >= $2"
            }
        };
        let (spent,): (i64,) = sqlx::query_as(sql)
            .bind(l.id)
            .bind(start)
            .fetch_one(&self.db)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "cannot read spend from postgres");
                BudgetError::Unavailable
            })?;
        Ok(spent)
    }

    /// Releases the reservation and records the real cost; answers the alerts it set off.
    pub async fn settle(&self, res: Reservation, actual: i64) -> Vec<Alert> {
        let actual = actual.max(0);
        let mut alerts = Vec::new();
        let spent_after: Vec<i64> = if res.local || res.buckets.is_empty() {
            self.settle_local(&res, actual)
        } else if !self.counters.redis_allowed() {
            self.mark_uncertain(&res);
            self.settle_local(&res, actual)
        } else {
            let buckets = res.buckets.iter().map(|b| b.key.as_str());
            let inv = self.settle_call(&res.id, actual, buckets, &self.node_set());
            let mut conn = self.redis.clone();
            match inv.invoke_async::<Vec<i64>>(&mut conn).await {
                Ok(v) => v,
                Err(e) => {
                    // The reservation expires by itself; the spend is in usage_events.
                    tracing::warn!(error = %e, "cannot settle in redis; released once it answers again");
                    self.counters.mark_degraded(&e);
                    self.mark_uncertain(&res);
                    self.settle_local(&res, actual)
                }
            }
        };
        for (b, spent) in res.buckets.iter().zip(spent_after) {
            if spent >= 0
                && let Some(a) = self
                    .threshold_crossed(
                        &b.key,
                        b.limit.kind.as_str(),
                        Some(b.limit.id),
                        b.limit.period,
                        spent - actual,
                        spent,
                        b.limit.limit_micros,
                    )
                    .await
            {
                alerts.push(a);
            }
        }
        alerts.extend(self.global(actual).await);
        alerts
    }

    /// Releases every reservation a previous run of this node left behind.
    pub async fn release_node_reservations(&self) -> usize {
        let own = self.node_id.clone();
        self.release_reservations_of(&own).await
    }

    /// Releases every reservation node `node_id` holds: its own previous run,
    /// or a dead node a survivor takes over (`crate::cluster::takeover`).
    pub async fn release_reservations_of(&self, node_id: &str) -> usize {
        if !self.counters.redis_allowed() {
            return 0;
        }
        let set = self.node_set_of(node_id);
        let mut conn = self.redis.clone();
        let Ok(members): redis::RedisResult<Vec<String>> = redis::cmd("SMEMBERS")
            .arg(&set)
            .query_async(&mut conn)
            .await
        else {
            return 0;
        };
        // The settle script with no cost: releases each reservation once.
        for m in &members {
            if let Some((res_key, member)) = m.split_once('|')
                && let Some(bucket) = res_key.strip_suffix(":res")
            {
                let _: redis::RedisResult<Vec<i64>> = self
                    .settle_call(member, 0, [bucket], &set)
                    .invoke_async(&mut conn)
                    .await;
            }
        }
        let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&set).query_async(&mut conn).await;
        members.len()
    }

    /// Spent and held amounts of one budget now, for the usage view.
    pub async fn standing(&self, l: &Limit) -> Result<(i64, i64), BudgetError> {
        let b = self.buckets(std::slice::from_ref(l)).remove(0);
        let mut conn = self.redis.clone();
        let res: Option<(Option<i64>, Vec<String>)> = if self.counters.redis_allowed() {
            redis::pipe()
                .get(format!("{}:spent", b.key))
                .zrangebyscore(format!("{}:res", b.key), now_ms(), "+inf")
                .query_async(&mut conn)
                .await
                .ok()
        } else {
            None
        };
        let held_sum = |m: &[String]| {
            m.iter()
                .filter_map(|m| m.rsplit('|').next()?.parse::<i64>().ok())
                .sum::<i64>()
        };
        match res {
            Some((Some(spent), held)) => Ok((spent, held_sum(&held))),
            Some((None, held)) => Ok((self.spent_in_postgres(l).await?, held_sum(&held))),
            None => {
                let spent = self.spent_in_postgres(l).await?;
                let held = self
                    .local
                    .lock()
                    .map(|book| {
                        book.reserved
                            .get(&b.key)
                            .map_or(0, |h| h.values().map(|(a, _)| a).sum())
                    })
                    .unwrap_or(0);
                Ok((spent, held))
            }
        }
    }
}
