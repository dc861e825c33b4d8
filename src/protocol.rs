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
#[expect(
    clippy::large_enum_variant,
    reason = "a frame lives only until it is serialised, once per event"
)]
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
        /// Which message the error is about: a failed `send`, or an
        /// acknowledged message that will get no answer (it could not be
        /// admitted after a crash took its node).
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

    /// The last frame of every stream when the server shuts down: the client
    /// reconnects (elsewhere) and resumes from the last seq or event id it saw.
    pub fn shutting_down() -> Self {
        Self::Error {
            code: ErrorCode::Unavailable,
            message: "the server is shutting down: reconnect and resume".into(),
            retry_after: Some(1),
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

    /// The error answers the `send` of `client_msg_id` to `chat`.
    pub fn answering(mut self, chat: Uuid, id: &str) -> Self {
        if let Self::Error {
            chat_id,
            client_msg_id,
            ..
        } = &mut self
        {
            *chat_id = Some(chat);
            *client_msg_id = Some(id.to_owned());
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

/// Where a client resumes: every message after `after`, and the message at
/// `after` itself again, as it stands, when it is an answer whose end the
/// client has not seen (answers change after they are first published: a
/// client that left mid-answer cannot know how it went on or ended).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    pub after: i64,
    pub saw_end: bool,
}

impl Resume {
    /// A WebSocket `since_seq` (or REST `?since_seq=`): the client cannot say
    /// whether it saw the end of the answer at that seq, so it gets it again.
    pub fn since_seq(seq: i64) -> Self {
        Self {
            after: seq,
            saw_end: false,
        }
    }
}

/// An SSE `Last-Event-ID`: `seq` (a message), `seq:index` (a delta) or
/// `seq:done`. Only ids this API hands out parse: digits only (`parse` would
/// take a `+`), seqs within i64 and indexes within u32, so nothing wraps;
/// anything else is `None`, i.e. a 400.
pub fn parse_last_event_id(id: &str) -> Option<Resume> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let seq = |s: &str| digits(s).then(|| s.parse::<i64>().ok()).flatten();
    match id.split_once(':') {
        None => seq(id).map(Resume::since_seq),
        Some((s, "done")) => seq(s).map(|after| Resume {
            after,
            saw_end: true,
        }),
        Some((s, index)) => {
            if !digits(index) {
                return None;
            }
            index.parse::<u32>().ok()?;
            seq(s).map(Resume::since_seq)
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
        let resume = |after, saw_end| Some(Resume { after, saw_end });
        assert_eq!(parse_last_event_id("7"), resume(7, false));
        assert_eq!(parse_last_event_id("7:done"), resume(7, true));
        assert_eq!(parse_last_event_id("7:12"), resume(7, false));
        assert_eq!(parse_last_event_id("x"), None);
        assert_eq!(parse_last_event_id("7:x"), None);
        // Nothing wraps: out of range or negative is not an id of ours.
        assert_eq!(parse_last_event_id("9223372036854775808"), None);
        assert_eq!(parse_last_event_id("-9223372036854775808:0"), None);
        assert_eq!(parse_last_event_id("-1"), None);
        assert_eq!(parse_last_event_id("7:4294967296"), None);
        assert_eq!(parse_last_event_id("+7"), None);
        assert_eq!(parse_last_event_id("0:0"), resume(0, false));
    }
}
