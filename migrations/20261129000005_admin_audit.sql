-- administration: disabling accounts and the audit log of every admin action.

-- a disabled user cannot sign in, refresh, or use an access token; disabling
-- also revokes their sessions and keys (src/admin.rs).
alter table users add column disabled_at timestamptz;

-- one row per admin action, whoever made it: an admin over rest (actor_id set)
-- or an operator at the command line (actor_id null, actor = 'cli:<os user>').
-- targets are kept as plain ids so the log outlives what it names.
create table admin_audit (
    id            uuid primary key,
    actor_id      uuid references users (id) on delete set null,
    actor         text not null check (length(actor) between 1 and 300),
    action        text not null check (action in ('grant_admin', 'revoke_admin', 'set_plan',
                                                  'disable_user', 'enable_user', 'revoke_sessions')),
    target_user   uuid,
    target_workspace uuid,
    detail        jsonb not null default '{}',
    created_at    timestamptz not null default now()
);
create index admin_audit_created_idx on admin_audit (created_at desc);
