//! Subscribers of each chat and their bounded outbound queues.
//!
//! The hub outlives chat actors: when a chat actor is restarted, its
//! subscribers are still here and keep receiving. Only the chat actor
//! publishes to a chat, which is what keeps each chat's events in one order.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use dashmap::DashMap;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::protocol::ServerFrame;

pub type ConnId = u64;

/// A frame serialised once for every subscriber, with its SSE event id.
#[derive(Debug, Clone)]
pub struct Outbound {
    pub kind: &'static str,
    pub json: Arc<str>,
    pub event_id: Option<Arc<str>>,
    /// The chat and assistant message a `done` or per-chat `error` belongs to.
    pub ends: Option<Uuid>,
}

impl Outbound {
    pub fn new(frame: &ServerFrame, event_id: Option<String>) -> Self {
        let ends = match frame {
            ServerFrame::Done { message_id, .. } => Some(*message_id),
            ServerFrame::Error {
                message_id: Some(m),
                ..
            } => Some(*m),
            _ => None,
        };
        Self {
            kind: frame.kind(),
            json: serde_json::to_string(frame).unwrap_or_default().into(),
            event_id: event_id.map(Into::into),
            ends,
        }
    }
}

/// One connection's (or one SSE response's) queue.
#[derive(Debug, Clone)]
pub struct Subscriber {
    pub conn: ConnId,
    pub user_id: Uuid,
    pub tx: mpsc::Sender<Outbound>,
    /// Cancelled when the queue overflows: the connection must close as a slow consumer.
    pub overflow: CancellationToken,
}

impl Subscriber {
    /// Queues a frame; on a full queue marks the subscriber slow and answers false.
    pub fn push(&self, out: Outbound) -> bool {
        match self.tx.try_send(out) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.overflow.cancel();
                metrics::counter!("switchboard_ws_slow_consumers_total").increment(1);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

#[derive(Clone, Default)]
pub struct ChatHub {
    chats: Arc<DashMap<Uuid, HashMap<ConnId, Subscriber>>>,
    next_conn: Arc<AtomicU64>,
}

impl ChatHub {
    pub fn new_conn_id(&self) -> ConnId {
        self.next_conn.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn add(&self, chat_id: Uuid, sub: Subscriber) {
        self.chats.entry(chat_id).or_default().insert(sub.conn, sub);
    }

    pub fn remove(&self, chat_id: Uuid, conn: ConnId) {
        if let Some(mut subs) = self.chats.get_mut(&chat_id) {
            subs.remove(&conn);
        }
        self.chats.remove_if(&chat_id, |_, subs| subs.is_empty());
    }

    pub fn subscriber_count(&self, chat_id: Uuid) -> usize {
        self.chats.get(&chat_id).map_or(0, |s| s.len())
    }

    /// Sends to every subscriber of the chat; drops those that are gone or too slow.
    pub fn publish(&self, chat_id: Uuid, out: &Outbound) {
        let Some(mut subs) = self.chats.get_mut(&chat_id) else {
            return;
        };
        subs.retain(|_, s| s.push(out.clone()));
        metrics::counter!("switchboard_ws_frames_total", "direction" => "out")
            .increment(subs.len() as u64);
    }
}
