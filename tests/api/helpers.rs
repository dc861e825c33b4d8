//! `spawn_app()`: the real server on 127.0.0.1:0 against the machine's
//! Postgres, Redis and RabbitMQ, with a database of its own.

use std::{path::Path, time::Duration};

use reqwest::{Client, Response};
use serde_json::{Value, json};
use sqlx::{Connection, Executor, PgConnection, PgPool};
use switchboard::{
    app::App,
    config::{AppEnv, Config, Secret},
};
use tokio::sync::oneshot;
use uuid::Uuid;

pub const PASSWORD: &str = "correct horse battery staple";

pub struct TestApp {
    pub base: String,
    pub client: Client,
    pub db: PgPool,
    pub db_name: String,
    pub config: Config,
    pub state: switchboard::state::AppState,
    stop: Option<oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// The Postgres server tests use: `TEST_DATABASE_URL` or the local default, without a database name.
fn pg_server() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

pub fn test_config() -> Config {
    Config::load_from(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("config"),
        AppEnv::Test,
        std::iter::empty(),
    )
    .expect("test config loads")
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    // Captured per test by the harness; shown only for failing tests.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn,switchboard=info"))
        .with_test_writer()
        .try_init();
    let db_name = format!("sb_test_{}", Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&format!("{}/postgres", pg_server()))
        .await
        .expect("connect to postgres");
    admin
        .execute(sqlx::AssertSqlSafe(format!(
            r#"create database "{db_name}""#
        )))
        .await
        .expect("create test database");

    let mut config = test_config();
    config.server.port = 0;
    config.database.url = Some(Secret::new(format!("{}/{db_name}", pg_server())));
    config.database.max_connections = 5;
    config.redis.key_prefix = format!("sbtest:{}", Uuid::new_v4().simple());
    tweak(&mut config);

    start(config, db_name).await
}

/// Builds and serves the app on `config` (its database `db_name`).
async fn start(config: Config, db_name: String) -> TestApp {
    let app = App::build(config.clone()).await.expect("app builds");
    let addr = app.local_addr();
    let db = app.state().db.clone();
    let state = app.state().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    TestApp {
        base: format!("http://{addr}"),
        client: Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        db,
        db_name,
        config,
        state,
        stop: Some(stop),
        served: Some(served),
    }
}

/// A signed-in user of a test app.
pub struct TestUser {
    pub id: Uuid,
    pub email: String,
    pub access_token: String,
    pub refresh_token: String,
}

impl TestApp {
    /// What SIGTERM does to `serve`: signals shutdown and waits for the app
    /// to finish draining (failing the test if it never does).
    pub async fn shut_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(served) = self.served.take() {
            let grace = Duration::from_secs(self.config.server.shutdown_grace_secs);
            tokio::time::timeout(grace + Duration::from_secs(10), served)
                .await
                .expect("the app stops after its grace period")
                .unwrap()
                .unwrap();
        }
    }

    /// `/metrics` as text.
    pub async fn metrics_text(&self) -> String {
        let res = self.client.get(self.url("/metrics")).send().await.unwrap();
        res.text().await.unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn signup(&self, email: &str, username: &str, password: &str) -> Response {
        self.post_json(
            "/api/auth/signup",
            &json!({ "email": email, "username": username, "password": password }),
        )
        .await
    }

    pub async fn signin(&self, email: &str, password: &str) -> Response {
        self.post_json(
            "/api/auth/signin",
            &json!({ "email": email, "password": password }),
        )
        .await
    }

    /// Signs up a fresh user and signs in.
    pub async fn new_user(&self) -> TestUser {
        let tag = &Uuid::new_v4().simple().to_string()[..12];
        let email = format!("user-{tag}@example.com");
        let res = self.signup(&email, &format!("u{tag}"), PASSWORD).await;
        assert_eq!(res.status(), 201, "signup: {}", res.text().await.unwrap());
        let res = self.signin(&email, PASSWORD).await;
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        TestUser {
            id: body["user"]["id"].as_str().unwrap().parse().unwrap(),
            email,
            access_token: body["access_token"].as_str().unwrap().to_owned(),
            refresh_token: body["refresh_token"].as_str().unwrap().to_owned(),
        }
    }
}

impl TestApp {
    /// The workspace the user owns (the one made at sign-up).
    pub async fn workspace_of(&self, user: &TestUser) -> Uuid {
        sqlx::query_scalar(
            "select workspace_id from workspace_members where user_id = $1 and role = 'owner'",
        )
        .bind(user.id)
        .fetch_one(&self.db)
        .await
        .unwrap()
    }

    /// Puts every workspace the user belongs to on `plan`, and drops this
    /// node's cached API keys of those workspaces, as the admin API's plan
    /// change does (other changes hold within `auth.key_cache_ms`).
    pub async fn set_plan(&self, user: &TestUser, plan: &str) {
        let changed: Vec<Uuid> = sqlx::query_scalar(
            "update workspaces set plan = $2 where id in (select workspace_id from workspace_members where user_id = $1) returning id",
        )
        .bind(user.id)
        .bind(plan)
        .fetch_all(&self.db)
        .await
        .unwrap();
        for ws in changed {
            self.state.key_cache.forget_workspace(ws);
        }
    }

    /// Creates an API key (`body` as `POST /api/keys` takes it) and answers the 201 body.
    pub async fn create_key(&self, user: &TestUser, body: Value) -> Value {
        let res = self
            .client
            .post(self.url("/api/keys"))
            .bearer_auth(&user.access_token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
        res.json().await.unwrap()
    }
}

/// Asserts the error envelope and returns its code.
pub async fn error_code(res: Response) -> String {
    let body: Value = res.json().await.expect("error body is JSON");
    let msg = body["error"]["message"].as_str().expect("error.message");
    assert!(!msg.is_empty());
    body["error"]["code"]
        .as_str()
        .expect("error.code")
        .to_owned()
}

/// Polls `check` every 20 ms until it answers `Some`, failing the test after
/// `within`: for state that settles asynchronously, instead of a fixed sleep.
pub async fn eventually<T, F, Fut>(within: std::time::Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Another node of `first`'s cluster: the same database and Redis prefix,
/// its own port, actors and node id (tests/api/cluster.rs).
pub async fn spawn_node(first: &TestApp, tweak: impl FnOnce(&mut Config)) -> TestApp {
    let mut config = first.config.clone();
    config.server.port = 0;
    config.routing.node_id = None;
    tweak(&mut config);
    start(config, first.db_name.clone()).await
}
