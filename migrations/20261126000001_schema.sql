-- the whole data model of docs/ARCHITECTURE.md. money is bigint micro-dollars.
-- every timestamp is timestamptz. on delete rules are chosen per reference:
-- ownership cascades, history (usage, messages' authors) is kept with a null.

create extension if not exists vector;

-- emails are unique case-insensitively; the index on lower(email) is the lookup path.
create table users (
    id              uuid primary key,
    email           text not null check (length(email) between 3 and 254),
    username        text not null check (username ~ '^[A-Za-z0-9_-]{3,32}$'),
    password_hash   text not null,
    email_verified  boolean not null default false,
    is_admin        boolean not null default false,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now()
);
create unique index users_email_lower_key on users (lower(email));
create unique index users_username_lower_key on users (lower(username));

create table workspaces (
    id                  uuid primary key,
    name                text not null check (length(name) between 1 and 100),
    plan                text not null default 'free' check (plan in ('free', 'pro', 'team')),
    stripe_customer_id  text unique,
    created_at          timestamptz not null default now()
);

create table workspace_members (
    workspace_id  uuid not null references workspaces (id) on delete cascade,
    user_id       uuid not null references users (id) on delete cascade,
    role          text not null default 'member' check (role in ('owner', 'admin', 'member')),
    created_at    timestamptz not null default now(),
    primary key (workspace_id, user_id)
);
create index workspace_members_user_idx on workspace_members (user_id);

-- refresh tokens are stored as keyed hashes. a token is used once; presenting a
-- used one revokes its whole family (every token descended from one sign-in).
create table refresh_tokens (
    id          uuid primary key,
    user_id     uuid not null references users (id) on delete cascade,
    family_id   uuid not null,
    token_hash  text not null unique,
    expires_at  timestamptz not null,
    used_at     timestamptz,
    revoked_at  timestamptz,
    created_at  timestamptz not null default now()
);
create index refresh_tokens_family_idx on refresh_tokens (family_id);
create index refresh_tokens_user_idx on refresh_tokens (user_id);

create table api_keys (
    id               uuid primary key,
    workspace_id     uuid not null references workspaces (id) on delete cascade,
    created_by       uuid references users (id) on delete set null,
    name             text not null check (length(name) between 1 and 100),
    prefix           text not null,
    key_hash         text not null unique,
    budget_micros    bigint check (budget_micros >= 0),
    rate_limit_rpm   integer check (rate_limit_rpm > 0),
    last_used_at     timestamptz,
    revoked_at       timestamptz,
    created_at       timestamptz not null default now()
);
create index api_keys_workspace_idx on api_keys (workspace_id);

create table chats (
    id            uuid primary key,
    workspace_id  uuid not null references workspaces (id) on delete cascade,
    created_by    uuid references users (id) on delete set null,
    title         text not null check (length(title) between 1 and 200),
    -- the last seq handed out; the chat actor reserves the next under a row lock.
    last_seq      bigint not null default 0,
    created_at    timestamptz not null default now(),
    updated_at    timestamptz not null default now()
);
-- chats are listed newest first; ids are uuidv7, so id order is creation order.
create index chats_workspace_id_idx on chats (workspace_id, id desc);

create table messages (
    id             uuid primary key,
    chat_id        uuid not null references chats (id) on delete cascade,
    seq            bigint not null check (seq > 0),
    role           text not null check (role in ('user', 'assistant', 'system')),
    author_id      uuid references users (id) on delete set null,
    -- for an answer: the user message it answers.
    reply_to       uuid references messages (id) on delete set null,
    client_msg_id  text check (length(client_msg_id) between 1 and 128),
    content        text not null default '',
    status         text not null check (status in ('streaming', 'complete', 'cancelled', 'failed')),
    provider       text,
    model          text,
    finish_reason  text,
    input_tokens   integer check (input_tokens >= 0),
    output_tokens  integer check (output_tokens >= 0),
    cost_micros    bigint check (cost_micros >= 0),
    created_at     timestamptz not null default now(),
    completed_at   timestamptz,
    unique (chat_id, seq),
    unique (chat_id, client_msg_id)
);
-- recovery after a crash looks for answers left streaming.
create index messages_streaming_idx on messages (chat_id) where status = 'streaming';

-- the durable truth of spend. a row per billed call; counters in redis are a cache of these.
create table usage_events (
    id             uuid primary key,
    workspace_id   uuid not null references workspaces (id) on delete cascade,
    user_id        uuid references users (id) on delete set null,
    api_key_id     uuid references api_keys (id) on delete set null,
    chat_id        uuid references chats (id) on delete set null,
    message_id     uuid references messages (id) on delete set null,
    provider       text not null,
    model          text not null,
    input_tokens   integer not null check (input_tokens >= 0),
    output_tokens  integer not null check (output_tokens >= 0),
    cost_micros    bigint not null check (cost_micros >= 0),
    created_at     timestamptz not null default now()
);
create index usage_events_workspace_time_idx on usage_events (workspace_id, created_at);
create index usage_events_user_time_idx on usage_events (user_id, created_at);
create index usage_events_key_time_idx on usage_events (api_key_id, created_at);

-- a budget per scope (workspace, user or api key) and period.
create table budgets (
    id              uuid primary key,
    scope           text not null check (scope in ('workspace', 'user', 'api_key')),
    scope_id        uuid not null,
    period          text not null check (period in ('daily', 'monthly')),
    limit_micros    bigint not null check (limit_micros >= 0),
    -- the highest alert threshold (50, 80, 100) already sent for the current period.
    alerted_pct     integer not null default 0,
    period_start    timestamptz not null default now(),
    created_at      timestamptz not null default now(),
    unique (scope, scope_id, period)
);

create table subscriptions (
    id                      uuid primary key,
    workspace_id            uuid not null references workspaces (id) on delete cascade,
    stripe_subscription_id  text not null unique,
    plan                    text not null check (plan in ('free', 'pro', 'team')),
    status                  text not null,
    current_period_end      timestamptz,
    created_at              timestamptz not null default now(),
    updated_at              timestamptz not null default now()
);
create index subscriptions_workspace_idx on subscriptions (workspace_id);

-- stripe delivers webhooks at least once; the event id makes handling idempotent.
create table stripe_events (
    id            text primary key,
    type          text not null,
    received_at   timestamptz not null default now(),
    processed_at  timestamptz
);

-- transactional outbox: written in the same transaction as the change it reports,
-- relayed to rabbitmq by the notifier.
create table email_outbox (
    id            uuid primary key,
    to_address    text not null,
    template      text not null,
    payload       jsonb not null default '{}'::jsonb,
    attempts      integer not null default 0,
    created_at    timestamptz not null default now(),
    published_at  timestamptz
);
create index email_outbox_unpublished_idx on email_outbox (created_at) where published_at is null;

create table documents (
    id            uuid primary key,
    workspace_id  uuid not null references workspaces (id) on delete cascade,
    uploaded_by   uuid references users (id) on delete set null,
    filename      text not null check (length(filename) between 1 and 255),
    content_type  text not null,
    size_bytes    bigint not null check (size_bytes >= 0),
    status        text not null default 'pending' check (status in ('pending', 'ready', 'failed')),
    created_at    timestamptz not null default now()
);
create index documents_workspace_idx on documents (workspace_id, created_at desc);

-- 384 dimensions: the built-in local embedder's size (docs/CONFIGURATION.md).
create table document_chunks (
    id           uuid primary key,
    document_id  uuid not null references documents (id) on delete cascade,
    ordinal      integer not null check (ordinal >= 0),
    content      text not null,
    embedding    vector(384) not null,
    unique (document_id, ordinal)
);
create index document_chunks_embedding_idx on document_chunks
    using hnsw (embedding vector_cosine_ops) with (m = 16, ef_construction = 64);
