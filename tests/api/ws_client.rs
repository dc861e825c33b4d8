//! A small WebSocket client over tokio-tungstenite for the protocol tests.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, connect_async,
    tungstenite::{Message, client::IntoClientRequest},
};
use uuid::Uuid;

use crate::helpers::TestApp;

pub struct WsClient {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// How long a test waits for one frame before failing.
const FRAME_WAIT: Duration = Duration::from_secs(15);

impl TestApp {
    pub fn ws_url(&self) -> String {
        format!("{}/ws", self.base.replace("http://", "ws://"))
    }

    /// A socket authenticated by a Bearer header on the upgrade.
    pub async fn ws(&self, token: &str) -> WsClient {
        let mut req = self.ws_url().into_client_request().unwrap();
        req.headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        let (ws, _) = connect_async(req).await.expect("ws connects");
        WsClient { ws }
    }

    /// A socket with no credentials yet.
    pub async fn ws_anonymous(&self) -> WsClient {
        let (ws, _) = connect_async(self.ws_url()).await.expect("ws connects");
        WsClient { ws }
    }

    /// Creates a chat over REST and answers its id.
    pub async fn create_chat(&self, token: &str) -> Uuid {
        let res = self
            .client
            .post(self.url("/api/chats"))
            .bearer_auth(token)
            .json(&json!({ "title": "test chat" }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        res.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    }
}

/// What a socket saw of one answer.
#[derive(Debug)]
pub struct Answer {
    pub ack: Value,
    pub assistant_id: Uuid,
    pub text: String,
    pub deltas: Vec<Value>,
    pub end: Value,
    pub frames: Vec<Value>,
}

impl WsClient {
    pub async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::Text(v.to_string().into()))
            .await
            .unwrap();
    }

    pub async fn send_raw(&mut self, m: Message) {
        self.ws.send(m).await.unwrap();
    }

    /// The next JSON frame; panics on close or timeout.
    pub async fn next(&mut self) -> Value {
        match self.next_or_close().await {
            Ok(v) => v,
            Err(close) => panic!("socket closed: {close:?}"),
        }
    }

    /// The next JSON frame, or the close code the server sent.
    pub async fn next_or_close(&mut self) -> Result<Value, Option<u16>> {
        loop {
            let msg = tokio::time::timeout(FRAME_WAIT, self.ws.next())
                .await
                .expect("a frame in time");
            match msg {
                Some(Ok(Message::Text(t))) => return Ok(serde_json::from_str(&t).unwrap()),
                Some(Ok(Message::Close(c))) => return Err(c.map(|c| u16::from(c.code))),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Err(None),
            }
        }
    }

    /// Frames until the socket closes; answers the close code.
    pub async fn close_code(&mut self) -> Option<u16> {
        loop {
            if let Err(code) = self.next_or_close().await {
                return code;
            }
        }
    }

    pub async fn next_of(&mut self, kind: &str) -> Value {
        loop {
            let f = self.next().await;
            if f["type"] == kind {
                return f;
            }
        }
    }

    pub async fn send_message(&mut self, chat_id: Uuid, client_msg_id: &str, content: &str) {
        self.send(json!({"type": "send", "chat_id": chat_id, "client_msg_id": client_msg_id, "content": content}))
            .await;
    }

    /// Reads one whole answer after a send: ack, messages, deltas, and done (or error).
    pub async fn answer(&mut self) -> Answer {
        let mut frames = Vec::new();
        let mut ack = Value::Null;
        let mut assistant_id = None;
        let mut deltas = Vec::new();
        loop {
            let f = self.next().await;
            frames.push(f.clone());
            match f["type"].as_str().unwrap() {
                "ack" => ack = f,
                "message" if f["message"]["role"] == "assistant" && assistant_id.is_none() => {
                    assistant_id = Some(f["message"]["id"].as_str().unwrap().parse().unwrap());
                }
                "delta" => deltas.push(f),
                "done" | "error" if f.get("message_id").is_some() => {
                    let text = deltas.iter().map(|d| d["text"].as_str().unwrap()).collect();
                    return Answer {
                        ack,
                        assistant_id: assistant_id.expect("assistant message before the end"),
                        text,
                        deltas,
                        end: f,
                        frames,
                    };
                }
                "error" => panic!("unexpected error frame: {f}"),
                _ => {}
            }
        }
    }
}
