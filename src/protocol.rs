//! The chat event vocabulary and wire protocol (docs/PROTOCOL.md): JSON frames tagged by `type`,
//! shared by the WebSocket and the SSE streams.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    error::{ApiError, ErrorCode},
    providers::Usage,
    store::messages::Message,
};

/// Client → server.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    Auth {
        token: String,
    },
    Subscribe {
        chat_id: Uuid,
        since_seq: Option<i64>,
    },
    Unsubscribe {
        chat_id: Uuid,
    },
    Send {
        chat_id: Uuid,
        client_msg_id: String,
        content: String,
        model: Option<String>,
        /// `true` for every document of the chat's workspace, or a list of document ids.
        #[serde(default)]
        documents: Option<DocumentsChoice>,
    },
    Cancel {
        chat_id: Uuid,
        message_id: Uuid,
    },
    Ping,
}

/// A send's `documents`: `true` (all of the workspace's), `false`, or ids.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum DocumentsChoice {
    All(bool),
    Only(Vec<Uuid>),
}

/// Server → client.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    Ack {
        client_msg_id: String,
        message_id: Uuid,
        seq: i64,
    },
    /// A new message, or a message whose status changed (same seq).
    Message {
        chat_id: Uuid,
        seq: i64,
        message: Message,
        /// For an answer still streaming: its text covers deltas `0..deltas_included`.
        #[serde(skip_serializing_if = "Option::is_none")]
        deltas_included: Option<u32>,
    },
    Delta {
        chat_id: Uuid,
        message_id: Uuid,
        index: u32,
        text: String,
    },
    Done {
        chat_id: Uuid,
        message_id: Uuid,
        usage: Usage,
        cost_micros: i64,
        /// The same cost as a decimal dollar string, exact.
        cost_usd: String,
        provider: String,
        model: String,
        finish_reason: String,
        /// The document chunks the answer drew on (a send with `documents`).
        #[serde(skip_serializing_if = "Option::is_none")]
        citations: Option<serde_json::Value>,
    },
    Error {
        code: ErrorCode,
        message: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after: Option<u64>,
        /// Set when the error belongs to one chat (a failed generation).
        #[serde(skip_serializing_if = "Option::is_none")]
        chat_id: Option<Uuid>,
        #[serde(skip_serializing_if = "Option::is_none")]
        message_id: Option<Uuid>,
        /// Set when the error ends an acknowledged message that will get no
        /// answer (it could not be admitted after a crash took its node).
        #[serde(skip_serializing_if = "Option::is_none")]
        client_msg_id: Option<String>,
    },
    Pong,
}

impl ServerFrame {
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Error {
            code,
            message: message.into(),
            retry_after: None,
            chat_id: None,
            message_id: None,
            client_msg_id: None,
        }
    }

    /// The one rendering of an error as a frame (WebSocket and SSE), with its
    /// code and `retry_after`; the REST body is [`ApiError`]'s own.
    pub fn from_error(e: &ApiError) -> Self {
        Self::Error {
            code: e.code,
            message: e.message.clone(),
            retry_after: e.retry_after_secs(),
            chat_id: None,
            message_id: None,
            client_msg_id: None,
        }
    }

    /// Names the acknowledged message an error ends.
    pub fn for_client_msg(mut self, id: Option<String>) -> Self {
        if let Self::Error { client_msg_id, .. } = &mut self {
            *client_msg_id = id;
        }
        self
    }

    /// Ties an error frame to the chat and message it ends.
    pub fn about(mut self, chat: Uuid, message: Uuid) -> Self {
        if let Self::Error {
            chat_id,
            message_id,
            ..
        } = &mut self
        {
            *chat_id = Some(chat);
            *message_id = Some(message);
        }
        self
    }

    /// The SSE event id: `seq` for messages, `seq:index` for deltas, `seq:done` for done,
    /// where seq is the message's. A client resumes from it with `Last-Event-ID`.
    pub fn event_id(&self, seq_of_message: impl Fn(Uuid) -> Option<i64>) -> Option<String> {
        match self {
            Self::Message { seq, .. } => Some(seq.to_string()),
            Self::Delta {
                message_id, index, ..
            } => seq_of_message(*message_id).map(|s| format!("{s}:{index}")),
            Self::Done { message_id, .. } => {
                seq_of_message(*message_id).map(|s| format!("{s}:done"))
            }
            Self::Ack { seq, .. } => Some(seq.to_string()),
            _ => None,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Ack { .. } => "ack",
            Self::Message { .. } => "message",
            Self::Delta { .. } => "delta",
            Self::Done { .. } => "done",
            Self::Error { .. } => "error",
            Self::Pong => "pong",
        }
    }
}

/// Where a resume starts: everything after `seq`; `seq` itself is replayed
/// whole when the client had only part of it.
pub fn parse_last_event_id(id: &str) -> Option<i64> {
    match id.split_once(':') {
        None => id.parse().ok(),
        Some((seq, "done")) => seq.parse().ok(),
        Some((seq, index)) => {
            index.parse::<u32>().ok()?;
            seq.parse::<i64>().ok().map(|s| s - 1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_parse_by_type() {
        let f: ClientFrame = serde_json::from_str(r#"{"type":"ping"}"#).unwrap();
        assert!(matches!(f, ClientFrame::Ping));
        let id = Uuid::now_v7();
        let f: ClientFrame = serde_json::from_str(&format!(
            r#"{{"type":"subscribe","chat_id":"{id}","since_seq":3}}"#
        ))
        .unwrap();
        assert!(matches!(
            f,
            ClientFrame::Subscribe {
                since_seq: Some(3),
                ..
            }
        ));
        assert!(serde_json::from_str::<ClientFrame>(r#"{"type":"nope"}"#).is_err());
    }

    #[test]
    fn last_event_ids() {
        assert_eq!(parse_last_event_id("7"), Some(7));
        assert_eq!(parse_last_event_id("7:done"), Some(7));
        assert_eq!(parse_last_event_id("7:12"), Some(6));
        assert_eq!(parse_last_event_id("x"), None);
        assert_eq!(parse_last_event_id("7:x"), None);
    }
}
