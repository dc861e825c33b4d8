//! Putting Redis right after a degraded period (a hang, a partition, a
//! restart), before the shared counters are trusted again.
//!
//! While Redis was skipped or failing, two things went wrong there: `spent`
//! counters missed what this node spent on its local books (usage_events has
//! it), and reservations whose script ran but whose answer never came back —
//! or that could not be settled — sit in Redis until they expire, holding
//! budget nobody uses. So every bucket touched while degraded has its counter
//! dropped (the next reservation rebuilds it from `usage_events`), and every
//! reservation left uncertain is released, before the next shared reservation.

use std::collections::HashSet;

use super::{BudgetLedger, Reservation};

/// What a degraded period left to put right.
#[derive(Default)]
pub(super) struct Dirty {
    /// Buckets whose `spent` counter may have missed spend.
    buckets: HashSet<String>,
    /// (reservation id, its buckets) that may still sit in Redis.
    reservations: Vec<(String, Vec<String>)>,
}

impl Dirty {
    fn is_empty(&self) -> bool {
        self.buckets.is_empty() && self.reservations.is_empty()
    }
}

impl BudgetLedger {
    /// This reservation's spend went (or will go) to the local books only.
    pub(super) fn mark_buckets_dirty(&self, res: &Reservation) {
        if let Ok(mut d) = self.dirty.lock() {
            d.buckets.extend(res.buckets.iter().map(|b| b.key.clone()));
        }
    }

    /// Redis may hold this reservation although this node no longer tracks it there.
    pub(super) fn mark_uncertain(&self, res: &Reservation) {
        if let Ok(mut d) = self.dirty.lock() {
            let keys: Vec<String> = res.buckets.iter().map(|b| b.key.clone()).collect();
            d.buckets.extend(keys.iter().cloned());
            d.reservations.push((res.id.clone(), keys));
        }
    }

    /// Releases uncertain reservations and drops stale counters; what fails
    /// stays for the next try. Cheap when there is nothing to do.
    pub(super) async fn reconcile(&self) -> redis::RedisResult<()> {
        let todo = match self.dirty.lock() {
            Ok(mut d) if !d.is_empty() => std::mem::take(&mut *d),
            _ => return Ok(()),
        };
        let mut conn = self.redis.clone();
        let mut left = Dirty::default();
        let mut failure = None;
        for (id, keys) in todo.reservations {
            if failure.is_some() {
                left.reservations.push((id, keys));
                continue;
            }
            // The settle script with no cost releases a reservation once, and
            // does nothing for one that never landed or already lapsed.
            let buckets = keys.iter().map(String::as_str);
            let inv = self.settle_call(&id, 0, buckets, &self.node_set());
            if let Err(e) = inv.invoke_async::<Vec<i64>>(&mut conn).await {
                failure = Some(e);
                left.reservations.push((id, keys));
            }
        }
        if failure.is_none() && !todo.buckets.is_empty() {
            let spent: Vec<String> = todo.buckets.iter().map(|k| format!("{k}:spent")).collect();
            if let Err(e) = redis::cmd("DEL")
                .arg(spent)
                .query_async::<()>(&mut conn)
                .await
            {
                failure = Some(e);
            }
        }
        match failure {
            None => {
                metrics::counter!("switchboard_budget_reconciles_total").increment(1);
                tracing::info!(
                    buckets = todo.buckets.len(),
                    "budget counters reconciled with usage_events after a degraded period"
                );
                Ok(())
            }
            Some(e) => {
                left.buckets = todo.buckets;
                if let Ok(mut d) = self.dirty.lock() {
                    d.buckets.extend(left.buckets);
                    d.reservations.extend(left.reservations);
                }
                Err(e)
            }
        }
    }
}
