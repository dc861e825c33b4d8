-- accounts and email: one-time links (verification, password reset, invitations)
-- and the email worker's record of what it has sent.

-- a one-time token sent by email. only a keyed hash of the token is stored;
-- redeeming sets used_at in one conditional update, so a token works once.
create table email_tokens (
    id            uuid primary key,
    purpose       text not null check (purpose in ('verify_email', 'password_reset', 'invite')),
    token_hash    text not null unique,
    -- the account it is for; null for an invitation to an address with no account yet.
    user_id       uuid references users (id) on delete cascade,
    email         text not null check (length(email) between 3 and 254),
    -- invitations only: where to, as what, from whom.
    workspace_id  uuid references workspaces (id) on delete cascade,
    role          text check (role in ('admin', 'member')),
    invited_by    uuid references users (id) on delete set null,
    expires_at    timestamptz not null,
    used_at       timestamptz,
    created_at    timestamptz not null default now(),
    check ((purpose = 'invite') = (workspace_id is not null and role is not null))
);
create index email_tokens_user_idx on email_tokens (user_id, purpose) where used_at is null;
create index email_tokens_workspace_idx on email_tokens (workspace_id) where purpose = 'invite';

-- the email worker's idempotency record, keyed by the outbox id: a message
-- delivered twice by rabbitmq is sent once. 'sending' is a lease that a worker
-- which died mid-send leaves behind; it is taken over after it lapses.
create table email_deliveries (
    outbox_id   uuid primary key,
    status      text not null check (status in ('sending', 'sent')),
    claimed_at  timestamptz not null default now(),
    sent_at     timestamptz
);
