//! Liveness (`/health` and per-area health), readiness (`/ready`) and `/metrics`.

use std::time::Duration;

use axum::{
    Json, Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use crate::{config::Secret, state::AppState, telemetry};

pub fn router() -> Router<AppState> {
    let mut r = Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics));
    for area in ["auth", "chats", "billing", "analytics"] {
        r = r.route(&format!("/api/{area}/health"), get(health));
    }
    r
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// Always "healthy" when the process answers.
    pub status: &'static str,
    pub timestamp: chrono::DateTime<chrono::Utc>,
}

#[utoipa::path(get, path = "/health", tag = "ops", responses((status = 200, body = Health)))]
pub async fn health() -> Json<Health> {
    Json(Health {
        status: "healthy",
        timestamp: chrono::Utc::now(),
    })
}

/// How long one dependency may take to answer a readiness probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

#[utoipa::path(get, path = "/ready", tag = "ops",
    responses((status = 200, description = "serving: `status` is `ready`, or `degraded` when Redis or RabbitMQ is down (requests still work: limits count per node, email waits in the outbox)"),
              (status = 503, description = "not serving: Postgres is down, or the node is draining for shutdown")))]
pub async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let (pg, redis, amqp) = tokio::join!(
        probe(async {
            sqlx::query("select 1")
                .execute(&state.db)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        }),
        probe(async {
            let mut conn = state.redis.clone();
            redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        }),
        probe(amqp_check(&state.amqp_url)),
    );
    let checks = [("postgres", pg), ("redis", redis), ("rabbitmq", amqp)];
    for (name, r) in &checks {
        metrics::gauge!("switchboard_dependency_up", "dependency" => *name).set(if r.is_ok() {
            1.0
        } else {
            0.0
        });
        if let Err(e) = r {
            tracing::warn!(dependency = name, error = %e, "readiness check failed");
        }
    }
    let status_of = |r: &Result<(), String>| if r.is_ok() { "up" } else { "down" };
    let draining = state.actors.gens.draining.is_cancelled();
    let detail = json!({
        "postgres": status_of(&checks[0].1),
        "redis": status_of(&checks[1].1),
        "rabbitmq": status_of(&checks[2].1),
        // Rate limits and throttles count per node while Redis is unreachable.
        "limits": if state.counters.is_degraded() || checks[1].1.is_err() { "local" } else { "shared" },
        // Informative: email waits in the outbox or queue, so it never takes a node out.
        "email": state.email.status.readiness(),
        "draining": draining,
        // Which node answered (several share one load balancer).
        "node_id": state.actors.cluster.node_id.as_ref(),
    });
    // Only what stops this node serving takes it out of a load balancer:
    // Redis or RabbitMQ down is the same for every node, and failing them all
    // at once would turn a degradation into an outage.
    let stopping = if draining {
        Some("draining for shutdown".to_owned())
    } else {
        checks[0].1.is_err().then(|| "postgres down".to_owned())
    };
    let degraded: Vec<&str> = checks[1..]
        .iter()
        .filter(|(_, r)| r.is_err())
        .map(|(n, _)| *n)
        .collect();
    match stopping {
        None => {
            let status = if degraded.is_empty() {
                "ready"
            } else {
                "degraded"
            };
            let mut body = json!({ "status": status, "checks": detail });
            if !degraded.is_empty() {
                body["degraded"] = json!(degraded);
            }
            (StatusCode::OK, Json(body))
        }
        Some(why) => {
            let message = format!("not ready: {why}");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(
                    json!({ "error": { "code": "unavailable", "message": message }, "checks": detail }),
                ),
            )
        }
    }
}

async fn probe(check: impl Future<Output = Result<(), String>>) -> Result<(), String> {
    tokio::time::timeout(PROBE_TIMEOUT, check)
        .await
        .map_err(|_| format!("no answer within {PROBE_TIMEOUT:?}"))?
}

async fn amqp_check(url: &Secret) -> Result<(), String> {
    let conn = crate::email::queue::open(url.expose())
        .await
        .map_err(|e| e.to_string())?;
    let _ = conn.close(200, "readiness probe".into()).await;
    Ok(())
}

pub async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        telemetry::render_metrics(),
    )
}
