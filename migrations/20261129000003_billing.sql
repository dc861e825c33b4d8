-- billing with stripe (docs/BILLING.md): the state of each subscription as of
-- the newest stripe object seen, paid invoices as revenue, and the one rule that
-- turns subscriptions into a workspace's plan.

-- the subscription row is stripe's object as of `state_at` (the `created` of the
-- event that carried it, or when it was fetched). an older object never
-- overwrites a newer one, so the arrival order of webhooks does not matter.
alter table subscriptions
    add column stripe_customer_id    text,
    add column stripe_price_id       text,
    add column seats                 integer not null default 1 check (seats >= 1),
    add column cancel_at_period_end  boolean not null default false,
    add column state_at              timestamptz not null default '-infinity',
    -- the oldest unpaid failure of an invoice of this subscription; cleared by a
    -- later payment. the grace period runs from here.
    add column payment_failed_at     timestamptz,
    add column last_paid_at          timestamptz;

-- what became of each event: applied, stale (an older object than the one held),
-- duplicate is never stored (the primary key refuses it), unmatched (no
-- workspace), ignored (a type we do not act on).
alter table stripe_events
    add column created_at  timestamptz,
    add column outcome     text;

-- paid invoices: revenue on the same ledger as provider cost (usage_events).
-- keyed by stripe's invoice id, so a replayed invoice.paid counts once.
create table billing_revenue (
    stripe_invoice_id       text primary key,
    workspace_id            uuid not null references workspaces (id) on delete cascade,
    stripe_subscription_id  text,
    currency                text not null,
    -- in the currency's minor unit, as stripe reports it.
    amount_minor            bigint not null check (amount_minor >= 0),
    -- micro-dollars; zero for a currency other than usd (not converted).
    amount_micros           bigint not null check (amount_micros >= 0),
    paid_at                 timestamptz not null,
    created_at              timestamptz not null default now()
);
create index billing_revenue_workspace_time_idx on billing_revenue (workspace_id, paid_at);

-- the plan a workspace's subscriptions grant now: the best plan of a
-- subscription that is active or trialing, or past due / unpaid / failing for
-- less than `grace`; free otherwise. the webhook and the periodic sweep both
-- call this, so the rule lives in one place.
create function billing_effective_plan(ws uuid, grace interval) returns text
language sql stable as $$
    select coalesce(
        (select s.plan
         from subscriptions s
         cross join lateral (
             select coalesce(
                 s.payment_failed_at,
                 case when s.status in ('past_due', 'unpaid') then s.state_at end
             ) as failing_since
         ) f
         where s.workspace_id = ws
           and s.plan in ('pro', 'team')
           and s.status in ('active', 'trialing', 'past_due', 'unpaid')
           and (f.failing_since is null or f.failing_since > now() - grace)
         order by case s.plan when 'team' then 2 else 1 end desc
         limit 1),
        'free')
$$;
