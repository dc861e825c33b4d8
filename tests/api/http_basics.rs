use std::time::Duration;

use serde_json::Value;

use crate::helpers::{error_code, spawn_app, spawn_app_with};

#[tokio::test]
async fn unknown_route_and_wrong_method_use_the_envelope() {
    let app = spawn_app().await;
    let res = app.client.get(app.url("/api/nope")).send().await.unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(error_code(res).await, "not_found");
    let res = app
        .client
        .delete(app.url("/api/auth/signin"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
    assert!(res.headers().contains_key("allow"));
    assert_eq!(error_code(res).await, "method_not_allowed");
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let app = spawn_app().await;
    let res = app.client.get(app.url("/health")).send().await.unwrap();
    let id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok());
    // A caller's id is kept, so logs join up across services.
    let res = app
        .client
        .get(app.url("/nope"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "abc-123");
}

#[tokio::test]
async fn cors_allows_configured_origins_only() {
    let app =
        spawn_app_with(|c| c.server.cors_origins = vec!["https://app.example.com".into()]).await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/api/auth/signin"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };
    let res = preflight("https://app.example.com").await.unwrap();
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let res = preflight("https://evil.example.com").await.unwrap();
    assert!(!res.headers().contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn openapi_lists_the_handlers() {
    let app = spawn_app().await;
    let doc: Value = app
        .client
        .get(app.url("/api/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with('3'));
    for path in [
        "/api/auth/signup",
        "/api/auth/signin",
        "/api/auth/refresh",
        "/api/auth/me",
        "/health",
        "/ready",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing");
    }
}

#[tokio::test]
async fn body_limit_is_configurable() {
    let app = spawn_app_with(|c| c.server.body_limit_bytes = 100).await;
    let res = app
        .client
        .post(app.url("/api/auth/signin"))
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"email":"{}","password":"x"}}"#,
            "a".repeat(200)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    assert_eq!(error_code(res).await, "payload_too_large");
}

#[tokio::test]
async fn graceful_shutdown_lets_in_flight_requests_finish() {
    use switchboard::app::App;
    let mut config = crate::helpers::test_config();
    let probe = crate::helpers::spawn_app().await; // gives us a migrated database to reuse
    config.server.port = 0;
    config.database.url = probe.config.database.url.clone();
    config.redis.key_prefix = probe.config.redis.key_prefix.clone();
    let app = App::build(config).await.unwrap();
    let base = format!("http://{}", app.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));

    // A sign-in is slow (argon2), so it is still in flight when the signal arrives.
    let client = reqwest::Client::new();
    let email = "slow@example.com";
    let res = client
        .post(format!("{base}/api/auth/signup"))
        .json(&serde_json::json!({"email": email, "username": "slow", "password": crate::helpers::PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let in_flight = tokio::spawn({
        let client = client.clone();
        let base = base.clone();
        async move {
            client
                .post(format!("{base}/api/auth/signin"))
                .json(&serde_json::json!({"email": email, "password": crate::helpers::PASSWORD}))
                .send()
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(5)).await;
    stop.send(()).unwrap();
    let res = in_flight
        .await
        .unwrap()
        .expect("in-flight request completes");
    assert_eq!(res.status(), 200);
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("server stops")
        .unwrap()
        .unwrap();
    // After shutdown nothing listens.
    assert!(client.get(format!("{base}/health")).send().await.is_err());
}
