use serde_json::Value;
use sqlx::{Connection, Executor, PgConnection};
use switchboard::config::Secret;

use crate::helpers::{spawn_app, spawn_app_with};

#[tokio::test]
async fn health_endpoints_answer() {
    let app = spawn_app().await;
    for path in [
        "/health",
        "/api/auth/health",
        "/api/chats/health",
        "/api/billing/health",
        "/api/analytics/health",
    ] {
        let res = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["status"], "healthy");
        let ts = body["timestamp"].as_str().unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok(), "{ts}");
    }
}

#[tokio::test]
async fn ready_when_everything_is_up() {
    let app = spawn_app().await;
    let res = app.client.get(app.url("/ready")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    for dep in ["postgres", "redis", "rabbitmq"] {
        assert_eq!(body["checks"][dep], "up", "{dep}");
    }
    assert_eq!(body["checks"]["limits"], "shared");
}

#[tokio::test]
async fn redis_and_rabbitmq_down_is_degraded_not_unready() {
    let app = spawn_app_with(|c| {
        c.redis.url = Some(Secret::new("redis://127.0.0.1:1"));
        c.amqp.url = Some(Secret::new("amqp://guest:guest@127.0.0.1:1/%2f"));
    })
    .await;
    // Requests still work (limits count per node; email waits in the outbox),
    // so the node stays in the load balancer and says what is degraded.
    let res = app.client.get(app.url("/ready")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["degraded"], serde_json::json!(["redis", "rabbitmq"]));
    assert_eq!(body["checks"]["postgres"], "up");
    assert_eq!(body["checks"]["redis"], "down");
    assert_eq!(body["checks"]["rabbitmq"], "down");
    assert_eq!(body["checks"]["limits"], "local");
    let user = app.new_user().await;
    let chat = app.create_chat(&user.access_token).await;
    let res = app
        .client
        .post(app.url(&format!("/api/chats/{chat}/messages")))
        .bearer_auth(&user.access_token)
        .json(&serde_json::json!({"content": "still served"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "a send works with Redis down");
    let metrics = app.metrics_text().await;
    assert!(metrics.contains(r#"switchboard_dependency_up{dependency="redis"} 0"#));
    assert!(metrics.contains(r#"switchboard_dependency_up{dependency="postgres"} 1"#));
}

#[tokio::test]
async fn not_ready_names_postgres_when_its_database_is_gone() {
    let app = spawn_app().await;
    let mut admin = PgConnection::connect("postgres://postgres@127.0.0.1:5432/postgres")
        .await
        .unwrap();
    admin
        .execute(sqlx::AssertSqlSafe(format!(
            r#"drop database "{}" with (force)"#,
            app.db_name
        )))
        .await
        .unwrap();
    let res = app.client.get(app.url("/ready")).send().await.unwrap();
    assert_eq!(res.status(), 503);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["checks"]["postgres"], "down");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("postgres")
    );
    // A request that needs the database gets a clean error, not a hang or a dropped socket.
    let res = app.signin("a@example.com", "whatever password").await;
    assert!(res.status().is_server_error(), "{}", res.status());
    let body: Value = res.json().await.unwrap();
    assert!(body["error"]["code"].is_string());
}

#[tokio::test]
async fn metrics_count_requests_by_route_template() {
    let app = spawn_app().await;
    app.client.get(app.url("/health")).send().await.unwrap();
    app.client
        .get(app.url("/no/such/route"))
        .send()
        .await
        .unwrap();
    let text = app.metrics_text().await;
    assert!(
        text.contains(r#"http_requests_total{method="GET",route="/health",status="200"}"#),
        "{text}"
    );
    assert!(text.contains("response_time_seconds_bucket"), "{text}");
    // Unknown paths are counted under one label, never their raw path.
    assert!(!text.contains("/no/such/route"));
}
