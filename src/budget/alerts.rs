//! Budget alerts: once per bucket and threshold (50/80/100 %) as spend
//! crosses it, and the operator's global thresholds (daily cost, monthly
//! projection), each as a log line, a metric and an [`Alert`] for the caller
//! to email.

use chrono::Utc;
use uuid::Uuid;

use super::{Alert, BudgetLedger, Period};

impl BudgetLedger {
    /// Sends an alert once per bucket and threshold when spend crosses 50/80/100 %.
    #[allow(
        clippy::too_many_arguments,
        reason = "a bucket's identity and its spend before and after, as the caller has them"
    )]
    pub(super) async fn threshold_crossed(
        &self,
        key: &str,
        scope: &str,
        scope_id: Option<Uuid>,
        period: Period,
        before: i64,
        after: i64,
        limit: i64,
    ) -> Option<Alert> {
        if limit <= 0 {
            return None;
        }
        let pct = |v: i64| (v.saturating_mul(100) / limit).clamp(0, 1000);
        let crossed = [100u8, 80, 50]
            .into_iter()
            .find(|t| pct(before) < i64::from(*t) && pct(after) >= i64::from(*t))?;
        let once_key = format!("{key}:alert:{crossed}");
        let mut conn = self.redis.clone();
        let first: redis::RedisResult<Option<String>> = if !self.counters.redis_allowed() {
            Ok(Some("skipped".into()))
        } else {
            redis::cmd("SET")
                .arg(&once_key)
                .arg(1)
                .arg("NX")
                .arg("EX")
                .arg(40 * 86_400)
                .query_async(&mut conn)
                .await
        };
        // With Redis down an alert may repeat on another node; better twice than never.
        if matches!(first, Ok(None)) {
            return None;
        }
        metrics::counter!("switchboard_budget_alerts_total", "scope" => scope.to_owned(), "period" => period.as_str(), "threshold" => crossed.to_string())
            .increment(1);
        tracing::warn!(scope, scope_id = ?scope_id, period = period.as_str(), threshold_pct = crossed, spent_micros = after, limit_micros = limit, "budget alert");
        Some(Alert {
            scope: scope.to_owned(),
            scope_id,
            period,
            threshold_pct: crossed,
            spent_micros: after,
            limit_micros: limit,
        })
    }

    /// The operator's whole-deployment thresholds: daily cost, and the month's projection.
    pub(super) async fn global(&self, actual: i64) -> Vec<Alert> {
        if actual == 0 {
            return vec![];
        }
        if !self.counters.redis_allowed() {
            return vec![];
        }
        let now = Utc::now();
        let day_key = format!("{}:budget:global:{}", self.prefix, Period::Daily.tag(now));
        let month_key = format!("{}:budget:global:{}", self.prefix, Period::Monthly.tag(now));
        let mut conn = self.redis.clone();
        let res: redis::RedisResult<(i64, i64)> = redis::pipe()
            .incr(&day_key, actual)
            .expire(&day_key, 3 * 86_400)
            .ignore()
            .incr(&month_key, actual)
            .expire(&month_key, 40 * 86_400)
            .ignore()
            .query_async(&mut conn)
            .await;
        let Ok((day, month)) = res else { return vec![] };
        let mut out = Vec::new();
        if let Some(a) = self
            .threshold_crossed(
                &day_key,
                "global",
                None,
                Period::Daily,
                day - actual,
                day,
                self.global_daily_micros,
            )
            .await
        {
            out.push(a);
        }
        // Projection: this month's spend so far, scaled to the whole month.
        let (start, end) = Period::Monthly.bounds(now);
        let elapsed = (now - start).num_seconds().max(3600) as i128;
        let total = (end - start).num_seconds() as i128;
        let project = |v: i64| i64::try_from(i128::from(v) * total / elapsed).unwrap_or(i64::MAX);
        if let Some(a) = self
            .threshold_crossed(
                &month_key,
                "global_projection",
                None,
                Period::Monthly,
                project(month - actual),
                project(month),
                self.global_monthly_micros,
            )
            .await
        {
            out.push(a);
        }
        out
    }
}
