//! The real `switchboard serve` binary under signals: SIGTERM drains it
//! (rows final, usage written, exit 0 within the grace) and `kill -9` mid-answer
//! leaves an answer the next start bills exactly once.

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::json;
use switchboard::providers::tokenizer;
use uuid::Uuid;

use crate::helpers::{TestApp, eventually, spawn_app, spawn_app_with};

/// `switchboard serve` on a free port, sharing `app`'s database and Redis prefix.
struct Served {
    child: Child,
    base: String,
}

impl Served {
    async fn start(app: &TestApp, grace_secs: u64) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .arg("serve")
            .env("APP_ENV", "test")
            .env("HOST", "127.0.0.1")
            .env("PORT", port.to_string())
            .env(
                "DATABASE_URL",
                app.config.database.url.as_ref().unwrap().expose(),
            )
            .env(
                "SWITCHBOARD_REDIS__KEY_PREFIX",
                &app.config.redis.key_prefix,
            )
            .env(
                "SWITCHBOARD_SERVER__SHUTDOWN_GRACE_SECS",
                grace_secs.to_string(),
            )
            .env("SWITCHBOARD_SIMULATED__TOKEN_DELAY_MS", "20")
            .env("SWITCHBOARD_SIMULATED__REPLY_TOKENS", "400")
            .env("SWITCHBOARD_CHAT__CHECKPOINT_MS", "100")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the server binary starts");
        let served = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let url = format!("{}/health", served.base);
        eventually(Duration::from_secs(30), "the process serving", || {
            let url = url.clone();
            async move {
                let res = reqwest::get(&url).await.ok()?;
                res.status().is_success().then_some(())
            }
        })
        .await;
        served
    }

    /// Sends a message through the process's REST door and leaves it streaming.
    async fn start_answer(&self, app: &TestApp, token: &str, chat: Uuid) -> reqwest::Response {
        let res = app
            .client
            .post(format!("{}/api/chats/{chat}/messages", self.base))
            .bearer_auth(token)
            .header("accept", "text/event-stream")
            .json(&json!({"content": "a long answer"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        res
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(sig)
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The chat's answer once its text has been checkpointed.
async fn checkpointed_answer(app: &TestApp, chat: Uuid) -> Uuid {
    eventually(Duration::from_secs(15), "a checkpoint", || async {
        sqlx::query_scalar(
            "select id from messages where chat_id = $1 and role = 'assistant' and content <> ''",
        )
        .bind(chat)
        .fetch_optional(&app.db)
        .await
        .unwrap()
    })
    .await
}

async fn usage_of(app: &TestApp, message: Uuid) -> Vec<(i32, i64)> {
    sqlx::query_as("select output_tokens, cost_micros from usage_events where message_id = $1")
        .bind(message)
        .fetch_all(&app.db)
        .await
        .unwrap()
}

#[tokio::test]
async fn sigterm_drains_the_real_process_and_exits_cleanly() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let chat = app.create_chat(&user.access_token).await;
    let mut served = Served::start(&app, 2).await;
    let _stream = served.start_answer(&app, &user.access_token, chat).await;
    let answer = checkpointed_answer(&app, chat).await;
    served.signal("-TERM");
    let status = eventually(Duration::from_secs(15), "the process exits", || {
        let s = served.child.try_wait().unwrap();
        async move { s }
    })
    .await;
    assert!(status.success(), "exit status {status}");
    let (state, output, cost): (String, i32, i64) =
        sqlx::query_as("select status, output_tokens, cost_micros from messages where id = $1")
            .bind(answer)
            .fetch_one(&app.db)
            .await
            .unwrap();
    assert_eq!(state, "cancelled", "final before exit");
    assert!(output > 0);
    assert_eq!(
        usage_of(&app, answer).await,
        vec![(output, cost)],
        "billed once"
    );
}

#[tokio::test]
async fn kill_9_mid_answer_is_billed_once_by_the_next_start() {
    let first = spawn_app().await;
    let user = first.new_user().await;
    let chat = first.create_chat(&user.access_token).await;
    let served = Served::start(&first, 10).await;
    let _stream = served.start_answer(&first, &user.access_token, chat).await;
    let answer = checkpointed_answer(&first, chat).await;
    served.signal("-KILL");
    drop(served);
    assert!(
        usage_of(&first, answer).await.is_empty(),
        "nothing billed yet"
    );

    // The next start (same database and Redis prefix) fails and bills it.
    let (prefix, db) = (
        first.config.redis.key_prefix.clone(),
        first.config.database.url.clone(),
    );
    let restarted = spawn_app_with(move |c| {
        c.redis.key_prefix = prefix;
        c.database.url = db;
    })
    .await;
    // The killed process is another node: a survivor takes it over once its
    // liveness key lapses (cluster.node_ttl_ms), failing what it left streaming.
    let (status, reason, content): (String, String, String) =
        eventually(Duration::from_secs(30), "the answer failed", || async {
            sqlx::query_as(
                "select status, finish_reason, content from messages
                 where id = $1 and status <> 'streaming'",
            )
            .bind(answer)
            .fetch_optional(&restarted.db)
            .await
            .unwrap()
        })
        .await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("failed", "interrupted")
    );
    let billed = eventually(Duration::from_secs(5), "the usage row", || async {
        let rows = usage_of(&restarted, answer).await;
        (!rows.is_empty()).then_some(rows)
    })
    .await;
    let produced = i32::try_from(tokenizer::count_tokens(&content)).unwrap();
    assert_eq!(billed.len(), 1, "billed once");
    assert_eq!(billed[0].0, produced, "for the text it had saved");
}
