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

/// A request refused before its body was read (here a 401 ahead of the JSON)
/// gets `connection: close`: hyper drops such a connection, and a client that
/// reused it would find it closed without an answer. A body read to its end
/// keeps the connection for the next request.
#[tokio::test]
async fn a_body_left_unread_closes_the_connection_and_says_so() {
    use tokio::io::AsyncWriteExt;

    use crate::edge::read_response;

    let app = spawn_app().await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    tcp.write_all(
        b"POST /api/chats HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 20\r\n\r\n",
    )
    .await
    .unwrap();
    let head = read_response(&mut tcp, Duration::from_secs(10)).await;
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    assert!(head.to_lowercase().contains("connection: close"), "{head}");

    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let body = r#"{"email":"nobody@example.com","password":"not-the-password"}"#;
    let signin = format!(
        "POST /api/auth/signin HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(signin.as_bytes()).await.unwrap();
    let head = read_response(&mut tcp, Duration::from_secs(10)).await;
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    assert!(!head.to_lowercase().contains("connection: close"), "{head}");
    tcp.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let head = read_response(&mut tcp, Duration::from_secs(10)).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}
