//! Error reports: with `SENTRY_DSN` set, a 5xx answer reaches Sentry with
//! its request id and route, and without the credentials or personal data
//! that were in the request. The server runs as a process of its own (the
//! Sentry client is process-wide), against a fake ingest endpoint started here.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, body::Bytes, extract::State, http::StatusCode, routing::post};
use serde_json::{Value, json};
use sqlx::{Connection, Executor, PgConnection};
use uuid::Uuid;

use crate::{
    helpers::{PASSWORD, eventually, spawn_app},
    server_process::ServerProcess,
};

/// Envelopes received by the fake Sentry, raw.
#[derive(Clone, Default)]
struct FakeSentry {
    envelopes: Arc<Mutex<Vec<String>>>,
}

impl FakeSentry {
    async fn start() -> (Self, SocketAddr) {
        let me = Self::default();
        let app = Router::new()
            .route("/api/{project}/envelope/", post(receive))
            .with_state(me.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (me, addr)
    }

    /// The events (envelope items of type `event`) received so far.
    fn events(&self) -> Vec<Value> {
        let mut events = Vec::new();
        for envelope in self.envelopes.lock().unwrap().iter() {
            // Envelope: a header line, then (item header, payload) line pairs.
            let lines: Vec<&str> = envelope.lines().collect();
            for pair in lines[1.min(lines.len())..].chunks(2) {
                let header: Value = serde_json::from_str(pair[0]).unwrap_or_default();
                if header["type"] == "event"
                    && let Some(payload) = pair.get(1)
                {
                    events.push(serde_json::from_str(payload).unwrap());
                }
            }
        }
        events
    }

    fn raw(&self) -> String {
        self.envelopes.lock().unwrap().join("\n")
    }
}

async fn receive(State(s): State<FakeSentry>, body: Bytes) -> StatusCode {
    s.envelopes
        .lock()
        .unwrap()
        .push(String::from_utf8_lossy(&body).into_owned());
    StatusCode::OK
}

#[tokio::test]
async fn a_server_error_is_reported_with_its_request_id_and_no_secrets() {
    let db = spawn_app().await;
    let url = db.config.database.url.as_ref().unwrap().expose().to_owned();
    let (sentry, addr) = FakeSentry::start().await;
    let dsn = format!("http://0123456789abcdef0123456789abcdef@{addr}/42");
    let server = ServerProcess::start(&url, &[("SENTRY_DSN", dsn.as_str())]).await;
    let client = reqwest::Client::new();
    let token = crate::traces::sign_up(&client, &server.base).await;

    // Postgres refuses this database from now on: requests that need it fail with a 5xx.
    let (server_url, _) = url.rsplit_once('/').unwrap();
    let mut admin = PgConnection::connect(&format!("{server_url}/postgres"))
        .await
        .unwrap();
    let refuse = |allow: bool| {
        format!(
            r#"alter database "{}" allow_connections {allow}"#,
            db.db_name
        )
    };
    admin
        .execute(sqlx::AssertSqlSafe(refuse(false)))
        .await
        .unwrap();
    sqlx::query("select pg_terminate_backend(pid) from pg_stat_activity where datname = $1")
        .bind(&db.db_name)
        .execute(&mut admin)
        .await
        .unwrap();

    let request_id = format!("req-{}", Uuid::new_v4().simple());
    let email = format!(
        "victim-{}@example.com",
        &Uuid::new_v4().simple().to_string()[..8]
    );
    let password = "hunter2-the-secret-in-the-body";
    let res = client
        .post(server.url("/api/auth/signin"))
        .header("x-request-id", &request_id)
        .bearer_auth(&token)
        .json(&json!({ "email": email, "password": password }))
        .send()
        .await
        .unwrap();
    let status = res.status();
    admin
        .execute(sqlx::AssertSqlSafe(refuse(true)))
        .await
        .unwrap();
    assert!(status.is_server_error(), "got {status}");

    let event = eventually(Duration::from_secs(10), "the report of the 5xx", || {
        let found = sentry
            .events()
            .into_iter()
            .find(|e| e["tags"]["request_id"] == request_id.as_str());
        async move { found }
    })
    .await;
    // `error` is the default level, which Sentry leaves out.
    assert!(
        event["level"].is_null() || event["level"] == "error",
        "{event}"
    );
    assert_eq!(event["tags"]["route"], "/api/auth/signin");
    assert_eq!(event["tags"]["status"], status.as_u16().to_string());
    let message = event["message"]
        .as_str()
        .or(event["logentry"]["message"].as_str());
    assert!(
        message.is_some_and(|m| m.contains(&status.as_u16().to_string())),
        "{event}"
    );
    let raw = sentry.raw();
    for secret in [password, token.as_str(), email.as_str(), PASSWORD] {
        assert!(!raw.contains(secret), "{secret:?} was reported:\n{raw}");
    }

    let (status, logs) = server.stop().await;
    assert!(status.success(), "exit {status}:\n{logs}");
}
