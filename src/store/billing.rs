//! Billing rows: Stripe customers of workspaces, subscriptions, processed
//! webhook events, paid invoices (revenue), and the margin queries that put
//! revenue next to provider cost. The plan rule itself is the SQL function
//! `billing_effective_plan` (migrations/20261129000003_billing.sql).

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use utoipa::ToSchema;
use uuid::Uuid;

/// The caller's role in the workspace, if a member.
pub async fn member_role(
    db: &PgPool,
    user_id: Uuid,
    workspace_id: Uuid,
) -> Result<Option<String>, sqlx::Error> {
    let row: Option<(String,)> = sqlx::query_as(
        "select role from workspace_members where user_id = $1 and workspace_id = $2",
    )
    .bind(user_id)
    .bind(workspace_id)
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| r.0))
}

/// The workspace's Stripe customer, if it has one.
pub async fn customer_of(db: &PgPool, workspace_id: Uuid) -> Result<Option<String>, sqlx::Error> {
    let row: Option<(Option<String>,)> =
        sqlx::query_as("select stripe_customer_id from workspaces where id = $1")
            .bind(workspace_id)
            .fetch_optional(db)
            .await?;
    Ok(row.and_then(|r| r.0))
}

/// Links `customer` to the workspace unless one is linked already; returns the
/// one that stays linked (a concurrent checkout may have won).
pub async fn link_customer(
    db: &mut PgConnection,
    workspace_id: Uuid,
    customer: &str,
) -> Result<Option<String>, sqlx::Error> {
    let row: Option<(Option<String>,)> = sqlx::query_as(
        "update workspaces set stripe_customer_id = coalesce(stripe_customer_id, $2)
         where id = $1 returning stripe_customer_id",
    )
    .bind(workspace_id)
    .bind(customer)
    .fetch_optional(db)
    .await?;
    Ok(row.and_then(|r| r.0))
}

pub async fn workspace_of_customer(
    db: &mut PgConnection,
    customer: &str,
) -> Result<Option<Uuid>, sqlx::Error> {
    let row: Option<(Uuid,)> =
        sqlx::query_as("select id from workspaces where stripe_customer_id = $1")
            .bind(customer)
            .fetch_optional(db)
            .await?;
    Ok(row.map(|r| r.0))
}

pub async fn workspace_exists(db: &mut PgConnection, id: Uuid) -> Result<bool, sqlx::Error> {
    let (exists,): (bool,) =
        sqlx::query_as("select exists (select 1 from workspaces where id = $1)")
            .bind(id)
            .fetch_one(db)
            .await?;
    Ok(exists)
}

pub async fn event_seen(db: &PgPool, id: &str) -> Result<bool, sqlx::Error> {
    let (seen,): (bool,) =
        sqlx::query_as("select exists (select 1 from stripe_events where id = $1)")
            .bind(id)
            .fetch_one(db)
            .await?;
    Ok(seen)
}

/// Records the event; false when it was recorded before (a duplicate). A
/// concurrent delivery of the same id waits here for the first transaction and
/// then sees the conflict, so only one of them applies it.
pub async fn record_event(
    db: &mut PgConnection,
    id: &str,
    kind: &str,
    created: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "insert into stripe_events (id, type, created_at) values ($1, $2, $3)
         on conflict (id) do nothing",
    )
    .bind(id)
    .bind(kind)
    .bind(created)
    .execute(db)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

pub async fn finish_event(
    db: &mut PgConnection,
    id: &str,
    outcome: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("update stripe_events set outcome = $2, processed_at = now() where id = $1")
        .bind(id)
        .bind(outcome)
        .execute(db)
        .await?;
    Ok(())
}

/// A subscription as Stripe last described it.
#[derive(Debug, Clone)]
pub struct SubscriptionState<'a> {
    pub workspace_id: Uuid,
    pub stripe_subscription_id: &'a str,
    pub stripe_customer_id: &'a str,
    pub stripe_price_id: Option<&'a str>,
    pub plan: &'a str,
    pub status: &'a str,
    pub seats: i32,
    pub cancel_at_period_end: bool,
    pub current_period_end: Option<DateTime<Utc>>,
    /// How new this description is; an older one never replaces a newer one.
    pub state_at: DateTime<Utc>,
}

/// Inserts or updates the subscription unless the stored state is newer.
/// `canceled` is final in Stripe, so nothing but another `canceled` replaces it.
/// An `active` or `trialing` state newer than a payment failure clears it.
/// Returns whether the row changed.
pub async fn upsert_subscription(
    db: &mut PgConnection,
    s: &SubscriptionState<'_>,
) -> Result<bool, sqlx::Error> {
    let changed = sqlx::query(
        "insert into subscriptions (id, workspace_id, stripe_subscription_id, stripe_customer_id,
             stripe_price_id, plan, status, seats, cancel_at_period_end, current_period_end, state_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         on conflict (stripe_subscription_id) do update set
             stripe_customer_id = excluded.stripe_customer_id,
             stripe_price_id = excluded.stripe_price_id,
             plan = excluded.plan,
             status = excluded.status,
             seats = excluded.seats,
             cancel_at_period_end = excluded.cancel_at_period_end,
             current_period_end = excluded.current_period_end,
             state_at = excluded.state_at,
             -- Stripe calling it active after the failure means it was paid,
             -- even if that invoice.paid never reaches us.
             payment_failed_at = case
                 when excluded.status in ('active', 'trialing')
                      and subscriptions.payment_failed_at < excluded.state_at then null
                 else subscriptions.payment_failed_at end,
             updated_at = now()
         where excluded.state_at >= subscriptions.state_at
           and (subscriptions.status <> 'canceled' or excluded.status = 'canceled')",
    )
    .bind(Uuid::now_v7())
    .bind(s.workspace_id)
    .bind(s.stripe_subscription_id)
    .bind(s.stripe_customer_id)
    .bind(s.stripe_price_id)
    .bind(s.plan)
    .bind(s.status)
    .bind(s.seats)
    .bind(s.cancel_at_period_end)
    .bind(s.current_period_end)
    .bind(s.state_at)
    .execute(db)
    .await?
    .rows_affected();
    Ok(changed == 1)
}

/// A payment at `paid_at` clears failures from before it. Returns the
/// subscription's workspace, if the subscription is known.
pub async fn mark_paid(
    db: &mut PgConnection,
    stripe_subscription_id: &str,
    paid_at: DateTime<Utc>,
) -> Result<Option<Uuid>, sqlx::Error> {
    let row: Option<(Uuid,)> = sqlx::query_as(
        "update subscriptions set
             last_paid_at = greatest(coalesce(last_paid_at, '-infinity'), $2),
             payment_failed_at = case when payment_failed_at <= $2 then null else payment_failed_at end,
             updated_at = now()
         where stripe_subscription_id = $1 returning workspace_id",
    )
    .bind(stripe_subscription_id)
    .bind(paid_at)
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| r.0))
}

/// A failure at `failed_at` starts the grace clock unless a later payment is
/// already known; the clock keeps the oldest unpaid failure.
pub async fn mark_failed(
    db: &mut PgConnection,
    stripe_subscription_id: &str,
    failed_at: DateTime<Utc>,
) -> Result<Option<Uuid>, sqlx::Error> {
    let row: Option<(Uuid,)> = sqlx::query_as(
        "update subscriptions set
             payment_failed_at = case when coalesce(last_paid_at, '-infinity') < $2
                 then least(coalesce(payment_failed_at, 'infinity'), $2)
                 else payment_failed_at end,
             updated_at = now()
         where stripe_subscription_id = $1 returning workspace_id",
    )
    .bind(stripe_subscription_id)
    .bind(failed_at)
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| r.0))
}

/// A paid invoice; false when it was recorded before.
pub struct Revenue<'a> {
    pub stripe_invoice_id: &'a str,
    pub workspace_id: Uuid,
    pub stripe_subscription_id: Option<&'a str>,
    pub currency: &'a str,
    pub amount_minor: i64,
    pub amount_micros: i64,
    pub paid_at: DateTime<Utc>,
}

pub async fn record_revenue(db: &mut PgConnection, r: &Revenue<'_>) -> Result<bool, sqlx::Error> {
    let n = sqlx::query(
        "insert into billing_revenue (stripe_invoice_id, workspace_id, stripe_subscription_id,
             currency, amount_minor, amount_micros, paid_at)
         values ($1, $2, $3, $4, $5, $6, $7) on conflict (stripe_invoice_id) do nothing",
    )
    .bind(r.stripe_invoice_id)
    .bind(r.workspace_id)
    .bind(r.stripe_subscription_id)
    .bind(r.currency.to_ascii_lowercase())
    .bind(r.amount_minor.max(0))
    .bind(r.amount_micros.max(0))
    .bind(r.paid_at)
    .execute(db)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Sets the workspace's plan from its subscriptions and returns it; a
/// workspace without any subscription keeps the plan it has (set by hand).
pub async fn apply_effective_plan(
    db: &mut PgConnection,
    workspace_id: Uuid,
    grace_secs: f64,
) -> Result<Option<String>, sqlx::Error> {
    let row: Option<(String,)> = sqlx::query_as(
        "update workspaces set plan = billing_effective_plan(id, make_interval(secs => $2))
         where id = $1 and exists (select 1 from subscriptions s where s.workspace_id = $1)
         returning plan",
    )
    .bind(workspace_id)
    .bind(grace_secs)
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| r.0))
}

/// Every workspace with a subscription whose plan no longer matches what its
/// subscriptions grant (a grace period ran out); sets it and returns them.
pub async fn sweep_plans(db: &PgPool, grace_secs: f64) -> Result<Vec<(Uuid, String)>, sqlx::Error> {
    sqlx::query_as(
        "update workspaces w set plan = billing_effective_plan(w.id, make_interval(secs => $1))
         where exists (select 1 from subscriptions s where s.workspace_id = w.id)
           and w.plan is distinct from billing_effective_plan(w.id, make_interval(secs => $1))
         returning w.id, w.plan",
    )
    .bind(grace_secs)
    .fetch_all(db)
    .await
}

/// The workspace's plan and its newest subscription.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct SubscriptionView {
    pub workspace_id: Uuid,
    /// The plan in force (`free` without a paying subscription).
    pub plan: String,
    pub stripe_customer_id: Option<String>,
    /// Stripe's status of the newest subscription (`active`, `past_due`, `canceled`, …).
    pub status: Option<String>,
    /// The plan that subscription is for.
    pub subscription_plan: Option<String>,
    pub price_id: Option<String>,
    pub seats: Option<i32>,
    pub current_period_end: Option<DateTime<Utc>>,
    pub cancel_at_period_end: Option<bool>,
    pub payment_failed_at: Option<DateTime<Utc>>,
}

pub async fn subscription_view(
    db: &PgPool,
    workspace_id: Uuid,
) -> Result<Option<SubscriptionView>, sqlx::Error> {
    sqlx::query_as(
        "select w.id as workspace_id, w.plan, w.stripe_customer_id, s.status,
                s.plan as subscription_plan, s.stripe_price_id as price_id, s.seats,
                s.current_period_end, s.cancel_at_period_end, s.payment_failed_at
         from workspaces w
         left join lateral (
             select * from subscriptions s where s.workspace_id = w.id
             order by (s.status in ('active', 'trialing', 'past_due', 'unpaid')) desc, s.state_at desc
             limit 1
         ) s on true
         where w.id = $1",
    )
    .bind(workspace_id)
    .fetch_optional(db)
    .await
}

/// Revenue, provider cost and margin of one period (a day or a month).
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct MarginRow {
    /// First day of the period (UTC).
    pub period_start: NaiveDate,
    pub revenue_micros: i64,
    pub cost_micros: i64,
    pub margin_micros: i64,
}

/// Per period for one workspace since `since`; `unit` is `day` or `month`.
pub async fn margin_by_period(
    db: &PgPool,
    workspace_id: Uuid,
    unit: &str,
    since: DateTime<Utc>,
) -> Result<Vec<MarginRow>, sqlx::Error> {
    sqlx::query_as(
        "with revenue as (
             select date_trunc($2, paid_at at time zone 'utc')::date as p, sum(amount_micros)::bigint as v
             from billing_revenue where workspace_id = $1 and paid_at >= $3 group by 1
         ), cost as (
             select date_trunc($2, created_at at time zone 'utc')::date as p, sum(cost_micros)::bigint as v
             from usage_events where workspace_id = $1 and created_at >= $3 group by 1
         )
         select coalesce(r.p, c.p) as period_start,
                coalesce(r.v, 0) as revenue_micros, coalesce(c.v, 0) as cost_micros,
                coalesce(r.v, 0) - coalesce(c.v, 0) as margin_micros
         from revenue r full outer join cost c on c.p = r.p
         order by 1 desc",
    )
    .bind(workspace_id)
    .bind(unit)
    .bind(since)
    .fetch_all(db)
    .await
}

/// One workspace's totals over a window, for the operator's view.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct WorkspaceMargin {
    pub workspace_id: Uuid,
    pub name: String,
    pub plan: String,
    pub revenue_micros: i64,
    pub cost_micros: i64,
    pub margin_micros: i64,
}

/// Workspaces with revenue or cost since `since`, worst margin first.
pub async fn worst_margins(
    db: &PgPool,
    since: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<WorkspaceMargin>, sqlx::Error> {
    sqlx::query_as(
        "with revenue as (
             select workspace_id, sum(amount_micros)::bigint as v from billing_revenue
             where paid_at >= $1 group by 1
         ), cost as (
             select workspace_id, sum(cost_micros)::bigint as v from usage_events
             where created_at >= $1 group by 1
         ), m as (
             select coalesce(r.workspace_id, c.workspace_id) as workspace_id,
                    coalesce(r.v, 0) as revenue_micros, coalesce(c.v, 0) as cost_micros
             from revenue r full outer join cost c on c.workspace_id = r.workspace_id
         )
         select w.id as workspace_id, w.name, w.plan, m.revenue_micros, m.cost_micros,
                m.revenue_micros - m.cost_micros as margin_micros
         from m join workspaces w on w.id = m.workspace_id
         order by margin_micros asc, w.id limit $2",
    )
    .bind(since)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Members of the workspace: the default seat count of a per-seat plan.
pub async fn member_count(db: &PgPool, workspace_id: Uuid) -> Result<u32, sqlx::Error> {
    let (n,): (i64,) =
        sqlx::query_as("select count(*) from workspace_members where workspace_id = $1")
            .bind(workspace_id)
            .fetch_one(db)
            .await?;
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}
