//! The ledger's books kept in this process while Redis is unreachable: the
//! same buckets, seeded from Postgres, so a node keeps refusing overspend on
//! its own until Redis returns.

use std::collections::HashMap;

use super::{Bucket, BudgetError, BudgetLedger, Reservation, now_ms};

#[derive(Default)]
pub(super) struct LocalBook {
    pub(super) spent: HashMap<String, i64>,
    /// bucket → reservation id → (amount, expiry ms)
    pub(super) reserved: HashMap<String, HashMap<String, (i64, u64)>>,
}

impl BudgetLedger {
    /// The same books kept in this process while Redis is unreachable.
    pub(super) async fn reserve_local(
        &self,
        res: &mut Reservation,
        cause: Option<redis::RedisError>,
    ) -> Result<Reservation, BudgetError> {
        // Logged once per transition by the shared flag; `None` when the
        // breaker skipped Redis.
        if let Some(cause) = &cause {
            self.counters.mark_degraded(cause);
        }
        // Redis's counters miss what is spent here: rebuilt once it is back.
        self.mark_buckets_dirty(res);
        // Seed missing buckets from Postgres outside the lock.
        let missing: Vec<Bucket> = {
            let book = self.local.lock().map_err(|_| BudgetError::Unavailable)?;
            res.buckets
                .iter()
                .filter(|b| !book.spent.contains_key(&b.key))
                .cloned()
                .collect()
        };
        let mut seeds = Vec::new();
        for b in missing {
            seeds.push((b.key.clone(), self.spent_in_postgres(&b.limit).await?));
        }
        let mut book = self.local.lock().map_err(|_| BudgetError::Unavailable)?;
        for (k, v) in seeds {
            book.spent.entry(k).or_insert(v);
        }
        let now = now_ms();
        for b in &res.buckets {
            let spent = book.spent.get(&b.key).copied().unwrap_or(0);
            let held = book.reserved.entry(b.key.clone()).or_default();
            held.retain(|_, (_, exp)| *exp > now);
            let reserved: i64 = held.values().map(|(a, _)| a).sum();
            if spent + reserved + res.amount > b.limit.limit_micros {
                return Err(self.exceeded(b));
            }
        }
        let exp = now + self.ttl.as_millis() as u64;
        for b in &res.buckets {
            book.reserved
                .entry(b.key.clone())
                .or_default()
                .insert(res.id.clone(), (res.amount, exp));
        }
        res.local = true;
        Ok(res.clone())
    }

    pub(super) fn settle_local(&self, res: &Reservation, actual: i64) -> Vec<i64> {
        let Ok(mut book) = self.local.lock() else {
            return vec![];
        };
        res.buckets
            .iter()
            .map(|b| {
                if let Some(held) = book.reserved.get_mut(&b.key) {
                    held.remove(&res.id);
                }
                match book.spent.get_mut(&b.key) {
                    Some(s) => {
                        *s += actual;
                        *s
                    }
                    None => -1,
                }
            })
            .collect()
    }
}
