//! Admission of one generation: rate limits (messages and tokens per minute,
//! per user, workspace and API key) and the budget reservation, then settling
//! the real cost afterwards. Shared by chats and the OpenAI-compatible API so
//! both are held to the same books.

use std::{collections::BTreeMap, time::Duration};

use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    budget::{Alert, BudgetError, BudgetLedger, Limit, Period, Reservation, ScopeKind},
    config::PlanConfig,
    limits::WindowCounter,
};

const MINUTE: Duration = Duration::from_secs(60);

/// Who a request is charged to.
#[derive(Debug, Clone)]
pub struct Payer {
    pub workspace_id: Uuid,
    pub user_id: Option<Uuid>,
    pub api_key: Option<KeyLimits>,
    pub plan: String,
}

/// An API key's own limits.
#[derive(Debug, Clone, Copy)]
pub struct KeyLimits {
    pub id: Uuid,
    /// Total spend allowed per month, micro-dollars.
    pub monthly_budget_micros: Option<i64>,
    pub requests_per_minute: Option<u32>,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AdmitError {
    #[error("rate limit reached, retry later")]
    RateLimited { retry_after: Duration },
    #[error("{0}")]
    BudgetExceeded(String, Duration),
    #[error("budget store unavailable")]
    Unavailable,
}

#[derive(Clone)]
pub struct Admission {
    counters: WindowCounter,
    ledger: BudgetLedger,
    plans: BTreeMap<String, PlanConfig>,
    db: PgPool,
}

impl Admission {
    pub fn new(
        counters: WindowCounter,
        ledger: BudgetLedger,
        plans: BTreeMap<String, PlanConfig>,
        db: PgPool,
    ) -> Self {
        Self {
            counters,
            ledger,
            plans,
            db,
        }
    }

    pub fn ledger(&self) -> &BudgetLedger {
        &self.ledger
    }

    fn plan(&self, name: &str) -> Option<&PlanConfig> {
        self.plans.get(name).or_else(|| self.plans.get("free"))
    }

    /// Every budget the payer is held to.
    pub fn budgets(&self, p: &Payer) -> Vec<Limit> {
        let mut out = Vec::new();
        if let Some(plan) = self.plan(&p.plan) {
            let mut add = |kind, id, period, limit_micros| {
                out.push(Limit {
                    kind,
                    id,
                    period,
                    limit_micros,
                })
            };
            add(
                ScopeKind::Workspace,
                p.workspace_id,
                Period::Daily,
                plan.daily_budget_micros,
            );
            add(
                ScopeKind::Workspace,
                p.workspace_id,
                Period::Monthly,
                plan.monthly_budget_micros,
            );
            if let Some(u) = p.user_id {
                add(ScopeKind::User, u, Period::Daily, plan.user_daily());
                add(ScopeKind::User, u, Period::Monthly, plan.user_monthly());
            }
        }
        if let Some(KeyLimits {
            id,
            monthly_budget_micros: Some(budget),
            ..
        }) = p.api_key
        {
            out.push(Limit {
                kind: ScopeKind::ApiKey,
                id,
                period: Period::Monthly,
                limit_micros: budget,
            });
        }
        out
    }

    fn scopes(p: &Payer) -> Vec<String> {
        let mut v = vec![format!("ws:{}", p.workspace_id)];
        if let Some(u) = p.user_id {
            v.push(format!("user:{u}"));
        }
        if let Some(k) = p.api_key {
            v.push(format!("key:{}", k.id));
        }
        v
    }

    /// Counts the request against the per-minute limits and reserves `worst_case_micros`.
    pub async fn admit(
        &self,
        p: &Payer,
        worst_case_micros: i64,
    ) -> Result<Reservation, AdmitError> {
        let plan = self.plan(&p.plan).cloned();
        let scopes = Self::scopes(p);
        let msg_keys: Vec<String> = scopes.iter().map(|s| format!("rl:msg:{s}")).collect();
        // Tokens are counted per workspace and user, not per key.
        let token_scopes: Vec<&String> = scopes.iter().filter(|s| !s.starts_with("key:")).collect();
        let token_keys: Vec<String> = match &plan {
            Some(_) => token_scopes.iter().map(|s| format!("rl:tok:{s}")).collect(),
            None => Vec::new(),
        };
        // One round trip: count the message, read the tokens used.
        let (counts, tokens_used) = self
            .counters
            .incr_and_read(&msg_keys, &token_keys, 1, MINUTE)
            .await;
        for (scope, count) in scopes.iter().zip(&counts) {
            let limit = if scope.starts_with("key:") {
                p.api_key.and_then(|k| k.requests_per_minute)
            } else {
                plan.as_ref().map(|pl| pl.messages_per_minute)
            };
            if let Some(limit) = limit
                && count.count > u64::from(limit)
            {
                metrics::counter!("switchboard_rate_limited_total", "limit" => "messages")
                    .increment(1);
                // Info, not debug: a newcomer whose SDK silently retries a 429
                // should find why in the server log.
                tracing::info!(%scope, limit, plan = %p.plan, retry_after_secs = count.resets_in.as_secs(),
                    "refused: messages-per-minute limit reached");
                return Err(AdmitError::RateLimited {
                    retry_after: count.resets_in,
                });
            }
        }
        if let Some(plan) = &plan {
            for (scope, used) in token_scopes.into_iter().zip(tokens_used) {
                if used.count >= u64::from(plan.tokens_per_minute) {
                    metrics::counter!("switchboard_rate_limited_total", "limit" => "tokens")
                        .increment(1);
                    tracing::info!(%scope, limit = plan.tokens_per_minute, plan = %p.plan,
                        "refused: tokens-per-minute limit reached");
                    return Err(AdmitError::RateLimited {
                        retry_after: used.resets_in.max(Duration::from_secs(1)),
                    });
                }
            }
        }
        self.ledger
            .reserve(&self.budgets(p), worst_case_micros)
            .await
            .map_err(|e| match e {
                BudgetError::Exceeded { retry_after, .. } => {
                    tracing::info!(workspace_id = %p.workspace_id, plan = %p.plan, why = %e,
                        "refused: budget exhausted");
                    AdmitError::BudgetExceeded(e.to_string(), retry_after)
                }
                BudgetError::Unavailable => AdmitError::Unavailable,
            })
    }

    /// Records what the generation really cost and used; emails any budget alerts.
    pub async fn settle(&self, p: &Payer, res: Reservation, cost_micros: i64, tokens: u32) {
        if tokens > 0 {
            let keys: Vec<String> = Self::scopes(p)
                .into_iter()
                .filter(|s| !s.starts_with("key:"))
                .map(|s| format!("rl:tok:{s}"))
                .collect();
            self.counters
                .incr_by(&keys, u64::from(tokens), MINUTE)
                .await;
        }
        for alert in self.ledger.settle(res, cost_micros).await {
            if let Err(e) = self.email_alert(&alert).await {
                tracing::warn!(error = %e, "cannot queue budget alert email");
            }
        }
    }

    /// Queues the alert email in the outbox; the notifier relays it.
    async fn email_alert(&self, a: &Alert) -> Result<(), sqlx::Error> {
        let recipients: Vec<(String,)> = match (a.scope.as_str(), a.scope_id) {
            ("user", Some(id)) => {
                sqlx::query_as("select email from users where id = $1")
                    .bind(id)
                    .fetch_all(&self.db)
                    .await?
            }
            ("workspace", Some(id)) => {
                sqlx::query_as(
                    "select u.email from workspace_members m join users u on u.id = m.user_id
                     where m.workspace_id = $1 and m.role in ('owner', 'admin')",
                )
                .bind(id)
                .fetch_all(&self.db)
                .await?
            }
            _ => vec![],
        };
        for (to,) in recipients {
            sqlx::query("insert into email_outbox (id, to_address, template, payload) values ($1, $2, 'budget_alert', $3)")
                .bind(Uuid::now_v7())
                .bind(to)
                .bind(json!({
                    "scope": a.scope, "scope_id": a.scope_id, "period": a.period.as_str(),
                    "threshold_pct": a.threshold_pct, "spent_micros": a.spent_micros, "limit_micros": a.limit_micros,
                }))
                .execute(&self.db)
                .await?;
        }
        Ok(())
    }
}
