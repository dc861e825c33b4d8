//! The /ops page in a real browser (headless Chromium over the DevTools
//! protocol): an admin signs in on the page and watches chat actors appear
//! under load, pushed by the stream, under the page's own CSP. Chromium is
//! installed by scripts/setup.sh; without it this test fails.

use std::{process::Stdio, time::Duration};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::{connect_async, tungstenite::Message};

use crate::{
    admin::make_admin,
    helpers::{PASSWORD, spawn_app_with},
};

/// One DevTools connection to the browser, talking to one page session.
struct Cdp {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    next: u64,
    session: Option<String>,
}

impl Cdp {
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let mut msg = json!({ "id": self.next, "method": method, "params": params });
        if let Some(s) = &self.session {
            msg["sessionId"] = json!(s);
        }
        self.ws
            .send(Message::Text(msg.to_string().into()))
            .await
            .unwrap();
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(10), self.ws.next())
                .await
                .expect("devtools answers")
                .unwrap()
                .unwrap();
            if let Message::Text(t) = frame {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["id"] == self.next {
                    assert!(v["error"].is_null(), "{method}: {v}");
                    return v["result"].clone();
                }
            }
        }
    }

    /// Evaluates `js` every 50 ms until `done` accepts its value.
    async fn until(
        &mut self,
        within: Duration,
        what: &str,
        js: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let v = self.eval(js).await;
            if done(&v) {
                return v;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}: last {v}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn eval(&mut self, js: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": js, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        r["result"]["value"].clone()
    }
}

#[tokio::test]
async fn an_admin_watches_actors_come_and_go_in_a_browser() {
    let app = spawn_app_with(|c| {
        c.simulated.token_delay_ms = 50;
        c.simulated.reply_tokens = 80;
        c.chat.idle_timeout_secs = 1;
        c.chat.user_idle_timeout_secs = 1;
    })
    .await;
    let admin = app.new_user().await;
    make_admin(&app, &admin).await;

    let profile = std::env::temp_dir().join(format!("sb-chromium-{}", uuid::Uuid::new_v4()));
    let mut browser = tokio::process::Command::new("chromium")
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--remote-debugging-port=0",
            "--no-first-run",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("chromium is required for this test: run scripts/setup.sh (make test does)");
    let mut lines = BufReader::new(browser.stderr.take().unwrap()).lines();
    let ws_url = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(url) = line.split("DevTools listening on ").nth(1) {
                return url.trim().to_owned();
            }
        }
        panic!("chromium exited without a DevTools address");
    })
    .await
    .expect("chromium starts");
    // Keep draining stderr so the browser never blocks on a full pipe.
    let drain = tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let (ws, _) = connect_async(ws_url.as_str()).await.unwrap();
    let mut cdp = Cdp {
        ws,
        next: 0,
        session: None,
    };
    let target = cdp
        .call("Target.createTarget", json!({ "url": app.url("/ops") }))
        .await;
    let attached = cdp
        .call(
            "Target.attachToTarget",
            json!({ "targetId": target["targetId"], "flatten": true }),
        )
        .await;
    cdp.session = Some(attached["sessionId"].as_str().unwrap().to_owned());
    let js = "document.readyState === 'complete' && !!document.getElementById('signin')";
    cdp.until(
        Duration::from_secs(10),
        "the page and its script",
        js,
        |v| *v == json!(true),
    )
    .await;
    let fill = format!(
        "document.getElementById('email').value = {}; document.getElementById('password').value = {};
         document.getElementById('signin').requestSubmit(); true",
        json!(admin.email),
        json!(PASSWORD)
    );
    assert_eq!(cdp.eval(&fill).await, json!(true));
    let js = "document.getElementById('status').textContent";
    cdp.until(Duration::from_secs(10), "the live view", js, |v| {
        *v == json!("live")
    })
    .await;

    // Load: three users, two chats each, answers streaming.
    let mut sockets = Vec::new();
    for _ in 0..3 {
        let user = app.new_user().await;
        let mut ws = app.ws(&user.access_token).await;
        for i in 0..2 {
            let chat = app.create_chat(&user.access_token).await;
            ws.send_message(chat, &format!("b{i}"), "a long answer please")
                .await;
        }
        sockets.push(ws);
    }
    let read_chats = "(() => { const dd = [...document.querySelectorAll('#chats dd')].map(d => d.textContent);
                       return { live: dd[0], streaming: dd[1], rows: document.querySelectorAll('#chat-rows tr').length,
                                sim: [...document.querySelectorAll('#provider-rows td')].map(t => t.textContent).join(' ') }; })()";
    let seen = cdp
        .until(
            Duration::from_secs(15),
            "six chat actors on the page",
            read_chats,
            |v| v["live"] == "6" && v["streaming"] != "0",
        )
        .await;
    assert_eq!(seen["rows"], 6, "{seen}");
    assert!(
        seen["sim"].as_str().unwrap().contains("simulated closed"),
        "{seen}"
    );

    // They go when idle, and the page follows without a reload.
    drop(sockets);
    cdp.until(
        Duration::from_secs(30),
        "no chat actors on the page",
        read_chats,
        |v| v["live"] == "0" && v["rows"] == 0,
    )
    .await;
    // The page never reloaded: the same document is still signed in and live.
    assert_eq!(
        cdp.eval("document.getElementById('signin').hidden").await,
        json!(true)
    );
    drop(cdp);
    let _ = browser.kill().await;
    drop(drain);
    let _ = std::fs::remove_dir_all(profile);
}
