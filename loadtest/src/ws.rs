//! WebSocket clients over pre-connected (optionally source-bound) TCP streams,
//! and the few server frames the scenarios read.

use std::net::IpAddr;

use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_tungstenite::{
    WebSocketStream, client_async_with_config,
    tungstenite::{self, client::IntoClientRequest, http::HeaderValue, protocol::WebSocketConfig},
};
use uuid::Uuid;

use crate::target::{self, Target};

pub type Ws = WebSocketStream<TcpStream>;

/// Small client buffers: a load generator holding thousands of sockets should
/// not spend 256 KiB on each (tungstenite's defaults are 128 KiB in and out).
fn client_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(1 << 20)
}

/// Opens `GET /ws` authenticated with `Authorization: Bearer <token>`.
/// The error is a code to count (`connect_error`, `ws_http_401`, ...) and a message.
pub async fn connect(
    target: &Target,
    source: Option<IpAddr>,
    token: &str,
) -> Result<Ws, (String, String)> {
    let stream = target::connect(target, source)
        .await
        .map_err(|e| (io_code(&e).to_owned(), e.to_string()))?;
    let mut request = format!("{}/ws", target.ws_base)
        .into_client_request()
        .map_err(|e| ("bad_request".to_owned(), e.to_string()))?;
    let auth = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|e| ("bad_request".to_owned(), e.to_string()))?;
    request.headers_mut().insert("authorization", auth);
    match client_async_with_config(request, stream, Some(client_config())).await {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(res)) => Err((
            format!("ws_http_{}", res.status().as_u16()),
            format!("upgrade refused with HTTP {}", res.status()),
        )),
        Err(e) => Err(("ws_handshake_error".to_owned(), e.to_string())),
    }
}

fn io_code(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::AddrInUse | std::io::ErrorKind::AddrNotAvailable => {
            "local_ports_exhausted"
        }
        std::io::ErrorKind::ConnectionRefused => "connection_refused",
        _ if e.raw_os_error() == Some(24) => "too_many_open_files",
        _ => "connect_error",
    }
}

/// The fields of a server frame that the scenarios look at; the rest
/// (message text, usage, ...) is skipped without being stored.
#[derive(Debug, Deserialize)]
pub struct Frame {
    #[serde(rename = "type")]
    pub kind: String,
    pub client_msg_id: Option<String>,
    pub message_id: Option<Uuid>,
    pub chat_id: Option<Uuid>,
    pub code: Option<String>,
    pub message: Option<FrameMessage>,
    pub finish_reason: Option<String>,
}

/// `message` is an object in `message` frames and a string in `error` frames.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum FrameMessage {
    Message(MessageInfo),
    Text(String),
}

#[derive(Debug, Deserialize)]
pub struct MessageInfo {
    pub id: Uuid,
    pub role: String,
    pub reply_to: Option<Uuid>,
    pub client_msg_id: Option<String>,
}

impl Frame {
    pub fn message_info(&self) -> Option<&MessageInfo> {
        match &self.message {
            Some(FrameMessage::Message(m)) => Some(m),
            _ => None,
        }
    }

    pub fn error_text(&self) -> &str {
        match &self.message {
            Some(FrameMessage::Text(t)) => t,
            _ => "",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_parse() {
        let id = Uuid::now_v7();
        let f: Frame = serde_json::from_str(&format!(
            r#"{{"type":"message","chat_id":"{id}","seq":2,"message":{{"id":"{id}","chat_id":"{id}","seq":2,"role":"assistant","reply_to":"{id}","client_msg_id":null,"content":"a \"q\"","status":"streaming"}}}}"#
        ))
        .unwrap();
        assert_eq!(f.kind, "message");
        assert_eq!(f.message_info().unwrap().role, "assistant");
        let f: Frame = serde_json::from_str(
            r#"{"type":"error","code":"rate_limited","message":"slow down","retry_after":3}"#,
        )
        .unwrap();
        assert_eq!(f.code.as_deref(), Some("rate_limited"));
        assert_eq!(f.error_text(), "slow down");
        let f: Frame = serde_json::from_str(&format!(
            r#"{{"type":"delta","chat_id":"{id}","message_id":"{id}","index":0,"text":"hi"}}"#
        ))
        .unwrap();
        assert_eq!(f.message_id, Some(id));
    }
}
