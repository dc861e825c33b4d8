//! The catalogue of every metric the server exports: its `# HELP` text (so
//! `promtool check metrics` passes) and, for series without labels, a zero
//! registered at start, so dashboards and alert rules find every documented
//! series before its first event. A new metric gets its line here.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

const COUNTERS: &[(&str, &str)] = &[
    (
        "switchboard_budget_reconciles_total",
        "Budget counters reconciled with usage_events after a degraded Redis period",
    ),
    (
        "switchboard_redis_skipped_total",
        "Redis calls skipped while its breaker was open (per-node fallback used)",
    ),
    (
        "switchboard_cluster_fanout_dropped_total",
        "Chat events from other nodes dropped (a subscriber's queue was full)",
    ),
    (
        "switchboard_cluster_fanout_reconnects_total",
        "Reconnections of the cross-node fan-out subscriber to Redis",
    ),
    (
        "switchboard_cluster_takeovers_total",
        "Dead nodes taken over by this node",
    ),
    (
        "switchboard_http_connections_refused_total",
        "TCP connections refused at a connection cap, by reason (node, per_ip)",
    ),
    (
        "http_requests_total",
        "HTTP requests by method, route template and status",
    ),
    (
        "switchboard_actor_messages_total",
        "Messages handled by actors, by kind",
    ),
    (
        "switchboard_actor_restarts_total",
        "Actor crash restarts, by kind",
    ),
    (
        "switchboard_answers_total",
        "Generations ended, by status and provider",
    ),
    (
        "switchboard_auth_disabled_rejections_total",
        "Requests refused because the account is disabled",
    ),
    (
        "switchboard_auth_email_verified_total",
        "Email addresses verified",
    ),
    ("switchboard_auth_password_resets_total", "Passwords reset"),
    (
        "switchboard_auth_refresh_reuse_total",
        "Refresh tokens reused (their family revoked)",
    ),
    (
        "switchboard_auth_reset_throttled_total",
        "Password-reset requests refused by the throttle",
    ),
    ("switchboard_auth_signin_failures_total", "Failed sign-ins"),
    (
        "switchboard_auth_signin_throttled_total",
        "Sign-ins refused by the throttle",
    ),
    (
        "switchboard_auth_signup_throttled_total",
        "Sign-ups refused by the throttle",
    ),
    ("switchboard_auth_signups_total", "Accounts created"),
    (
        "switchboard_billing_webhooks_refused_total",
        "Stripe webhooks refused (bad signature or body)",
    ),
    (
        "switchboard_billing_webhooks_total",
        "Stripe webhooks handled, by outcome",
    ),
    ("switchboard_budget_alerts_total", "Budget alerts fired"),
    (
        "switchboard_budget_rejections_total",
        "Requests refused for an exhausted budget",
    ),
    (
        "switchboard_cost_micros_total",
        "Cost of generations in micro-dollars, by provider",
    ),
    (
        "switchboard_cost_over_reservation_micros_total",
        "Cost past a generation's reservation, borne by the operator",
    ),
    (
        "switchboard_db_unavailable_total",
        "Requests that found the database unavailable",
    ),
    (
        "switchboard_documents_indexed_total",
        "Documents indexed, by status",
    ),
    (
        "switchboard_email_duplicates_total",
        "Emails skipped as already sent",
    ),
    (
        "switchboard_email_failed_total",
        "Emails that failed for good",
    ),
    (
        "switchboard_email_published_total",
        "Outbox emails published to the queue",
    ),
    ("switchboard_email_retried_total", "Email sends retried"),
    ("switchboard_email_sent_total", "Emails sent over SMTP"),
    (
        "switchboard_embedding_cache_hits_total",
        "Embeddings answered from the cache",
    ),
    (
        "switchboard_embedding_cache_misses_total",
        "Embeddings computed (not in the cache)",
    ),
    (
        "switchboard_group_commit_batches_total",
        "Group-committed statements by kind (send_reads, turns, messages, finals): each writes one or more chats' rows",
    ),
    (
        "switchboard_group_commit_jobs_total",
        "Reads and writes that went through group commit, by kind",
    ),
    (
        "switchboard_fallback_cost_micros_total",
        "Cost of answers served after a fallback, by provider",
    ),
    (
        "switchboard_provider_failures_total",
        "Provider failures, by provider and reason",
    ),
    (
        "switchboard_provider_fallbacks_total",
        "Fallbacks to the next candidate, by provider left and reason",
    ),
    (
        "switchboard_rate_limited_total",
        "Requests refused by a per-minute limit",
    ),
    (
        "switchboard_tokens_streamed_total",
        "Output tokens streamed to clients",
    ),
    (
        "switchboard_usage_events_dropped_total",
        "Usage events dropped (the writer's queue was full)",
    ),
    (
        "switchboard_usage_events_rejected_total",
        "Usage events the database refused",
    ),
    (
        "switchboard_usage_events_written_total",
        "Usage events written to Postgres",
    ),
    (
        "switchboard_ws_frames_total",
        "WebSocket frames, by direction",
    ),
    (
        "switchboard_ws_slow_consumers_total",
        "WebSocket connections closed for reading too slowly",
    ),
];

const GAUGES: &[(&str, &str)] = &[
    (
        "switchboard_dependency_up",
        "1 while a dependency answers the readiness probe, by dependency",
    ),
    (
        "switchboard_cluster_nodes_live",
        "Nodes of the cluster alive in Redis, as this node last saw",
    ),
    (
        "switchboard_http_connections",
        "Open HTTP connections (WebSockets included)",
    ),
    ("switchboard_node_info", "1, labelled with this node's id"),
    (
        "switchboard_actor_queue_depth",
        "Requests waiting in actor mailboxes, by kind",
    ),
    ("switchboard_actors_live", "Live actors, by kind"),
    (
        "switchboard_email_outbox_pending",
        "Emails waiting in the outbox",
    ),
    (
        "switchboard_email_queue_depth",
        "Emails waiting in the RabbitMQ queue",
    ),
    (
        "switchboard_email_rabbitmq_connected",
        "1 while connected to RabbitMQ",
    ),
    (
        "switchboard_provider_circuit_open",
        "1 while a provider's circuit breaker is open, by provider",
    ),
    (
        "switchboard_redis_degraded",
        "1 while Redis is unreachable and limits are per node",
    ),
    ("switchboard_streams_active", "Generations streaming now"),
    ("switchboard_ws_connections", "Open WebSocket connections"),
];

const HISTOGRAMS: &[(&str, &str)] = &[
    (
        "switchboard_cluster_fanout_lag_seconds",
        "From publishing a chat event on one node to its delivery on another",
    ),
    (
        "response_time_seconds",
        "HTTP response time by method, route template and status",
    ),
    (
        "switchboard_documents_search_seconds",
        "Document search latency",
    ),
];

/// Series without labels: registered at zero so they exist from the start.
/// (Labelled series appear with their first labelled event: a zero without
/// labels would be a series nobody asked for.)
const UNLABELLED: &[&str] = &[
    "switchboard_auth_disabled_rejections_total",
    "switchboard_auth_email_verified_total",
    "switchboard_auth_password_resets_total",
    "switchboard_auth_refresh_reuse_total",
    "switchboard_auth_reset_throttled_total",
    "switchboard_auth_signin_failures_total",
    "switchboard_auth_signin_throttled_total",
    "switchboard_auth_signup_throttled_total",
    "switchboard_auth_signups_total",
    "switchboard_db_unavailable_total",
    "switchboard_email_duplicates_total",
    "switchboard_email_published_total",
    "switchboard_embedding_cache_hits_total",
    "switchboard_embedding_cache_misses_total",
    "switchboard_tokens_streamed_total",
    "switchboard_usage_events_dropped_total",
    "switchboard_usage_events_rejected_total",
    "switchboard_usage_events_written_total",
    "switchboard_ws_slow_consumers_total",
    "switchboard_email_outbox_pending",
    "switchboard_redis_degraded",
    "switchboard_streams_active",
    "switchboard_ws_connections",
];

/// Describes every metric and registers the unlabelled ones at zero.
pub fn register() {
    for (name, help) in COUNTERS {
        describe_counter!(*name, *help);
        if UNLABELLED.contains(name) {
            metrics::counter!(*name).increment(0);
        }
    }
    for (name, help) in GAUGES {
        describe_gauge!(*name, *help);
        if UNLABELLED.contains(name) {
            metrics::gauge!(*name).increment(0.0);
        }
    }
    for (name, help) in HISTOGRAMS {
        describe_histogram!(*name, Unit::Seconds, *help);
    }
    // Labelled series with a fixed, small label set exist from the start too.
    for direction in ["in", "out"] {
        metrics::counter!("switchboard_ws_frames_total", "direction" => direction).increment(0);
    }
}
