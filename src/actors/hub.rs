//! Subscribers of each chat and their bounded outbound queues.
//!
//! The hub outlives chat actors: when a chat actor is restarted, its
//! subscribers are still here and keep receiving. Only the chat actor
//! publishes to a chat, which is what keeps each chat's events in one order.
//!
//! Across nodes (`crate::cluster::fanout`): once linked, what is published
//! here is also relayed to the other nodes, the hub says which chats gain
//! their first or lose their last local subscriber (so the node follows only
//! those), and events from other nodes come in through [`ChatHub::deliver_remote`],
//! which drops what a subscriber already got from its replay.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use dashmap::DashMap;
use std::collections::HashSet;
use std::sync::OnceLock;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::protocol::ServerFrame;

pub type ConnId = u64;

/// A frame serialised once for every subscriber, with its SSE event id.
/// One pointer: every socket's queue holds a block of 32 of them from its
/// first frame on, so its size is part of each idle socket's memory, and a
/// frame fanned out to many subscribers is shared, not copied.
#[derive(Debug, Clone)]
pub struct Outbound(Arc<Frame>);

impl std::ops::Deref for Outbound {
    type Target = Frame;
    fn deref(&self) -> &Frame {
        &self.0
    }
}

/// What an [`Outbound`] carries.
#[derive(Debug)]
pub struct Frame {
    pub kind: &'static str,
    pub json: Arc<str>,
    pub event_id: Option<Arc<str>>,
    /// The chat and assistant message a `done` or per-chat `error` belongs to.
    pub ends: Option<Uuid>,
    /// What the frame says about the chat's state, to drop remote duplicates of a replay.
    pub mark: Option<Mark>,
}

/// The part of a chat frame a replay can already have covered.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Mark {
    Message { seq: i64, status: String },
    Delta { message_id: Uuid, index: u32 },
}

/// What one subscriber's replay covered: remote events it already has are
/// not delivered again (local ones cannot overlap: replay and registration
/// happen in one chat-actor handler).
#[derive(Debug, Default)]
pub struct ReplaySeen {
    /// Seq → status as replayed.
    messages: HashMap<i64, String>,
    /// Answers replayed in a final state: their deltas and end are old news.
    ended: HashSet<Uuid>,
    /// Answers replayed mid-stream, covering deltas `0..n`.
    progress: HashMap<Uuid, u32>,
}

impl ReplaySeen {
    /// Records a replayed message frame.
    pub fn saw(&mut self, frame: &ServerFrame) {
        if let ServerFrame::Message {
            seq,
            message,
            deltas_included,
            ..
        } = frame
        {
            self.messages.insert(*seq, message.status.clone());
            if message.status == "streaming" {
                if let Some(n) = deltas_included {
                    self.progress.insert(message.id, *n);
                }
            } else if message.role == "assistant" {
                self.ended.insert(message.id);
            }
        }
    }

    fn covers(&self, out: &Outbound) -> bool {
        if let Some(id) = out.ends
            && self.ended.contains(&id)
        {
            return true;
        }
        match &out.mark {
            Some(Mark::Message { seq, status }) => self.messages.get(seq) == Some(status),
            Some(Mark::Delta { message_id, index }) => {
                self.ended.contains(message_id)
                    || self.progress.get(message_id).is_some_and(|n| index < n)
            }
            None => false,
        }
    }
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
        let mark = match frame {
            ServerFrame::Message { seq, message, .. } => Some(Mark::Message {
                seq: *seq,
                status: message.status.clone(),
            }),
            ServerFrame::Delta {
                message_id, index, ..
            } => Some(Mark::Delta {
                message_id: *message_id,
                index: *index,
            }),
            _ => None,
        };
        Self::from(Frame {
            kind: frame.kind(),
            json: serde_json::to_string(frame).unwrap_or_default().into(),
            event_id: event_id.map(Into::into),
            ends,
            mark,
        })
    }
}

impl From<Frame> for Outbound {
    fn from(f: Frame) -> Self {
        Self(Arc::new(f))
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

/// Where a linked hub relays what it publishes, and where it names chats
/// whose local following began or ended.
pub struct HubLinks {
    pub relay: mpsc::Sender<(Uuid, Outbound)>,
    pub follow: mpsc::UnboundedSender<FollowChange>,
    /// The fan-out receives from Redis now; when not, nobody waits for it.
    pub connected: Arc<std::sync::atomic::AtomicBool>,
}

/// A chat whose local following may have begun or ended; `ready` is told
/// once the node receives the chat's events from other nodes.
pub struct FollowChange {
    pub chat_id: Uuid,
    pub ready: Option<tokio::sync::oneshot::Sender<()>>,
}

/// Events held for a subscriber whose replay is being read; past this it is slow.
const HELD_MAX: usize = 4096;

enum Entry {
    /// Registered before its replay is read: events are held, then sent
    /// after the replay without what it covered ([`ChatHub::complete`]).
    Pending {
        sub: Subscriber,
        held: Vec<Outbound>,
    },
    Live {
        sub: Subscriber,
        seen: Option<Arc<ReplaySeen>>,
    },
}

#[derive(Clone, Default)]
pub struct ChatHub {
    chats: Arc<DashMap<Uuid, HashMap<ConnId, Entry>>>,
    next_conn: Arc<AtomicU64>,
    links: Arc<OnceLock<HubLinks>>,
}

impl ChatHub {
    pub fn new_conn_id(&self) -> ConnId {
        self.next_conn.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Links the hub to the cluster's fan-out (once, at start).
    pub fn link(&self, links: HubLinks) {
        let _ = self.links.set(links);
    }

    pub fn add(&self, chat_id: Uuid, sub: Subscriber) {
        let mut entry = self.chats.entry(chat_id).or_default();
        let first = entry.is_empty();
        entry.insert(sub.conn, Entry::Live { sub, seen: None });
        drop(entry);
        if first && let Some(l) = self.links.get() {
            let _ = l.follow.send(FollowChange {
                chat_id,
                ready: None,
            });
        }
    }

    /// Registers a subscriber before its replay is read: what is published
    /// meanwhile (here or on another node) is held for it. Answers a signal
    /// for when the node receives the chat's events from other nodes.
    pub fn begin(
        &self,
        chat_id: Uuid,
        sub: Subscriber,
    ) -> Option<tokio::sync::oneshot::Receiver<()>> {
        self.chats.entry(chat_id).or_default().insert(
            sub.conn,
            Entry::Pending {
                sub,
                held: Vec::new(),
            },
        );
        let l = self.links.get()?;
        if !l.connected.load(Ordering::Relaxed) {
            let _ = l.follow.send(FollowChange {
                chat_id,
                ready: None,
            });
            return None;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let _ = l.follow.send(FollowChange {
            chat_id,
            ready: Some(tx),
        });
        Some(rx)
    }

    /// The replay of `conn` was sent and covered `seen`: the events held
    /// since [`ChatHub::begin`] follow, without what the replay covered.
    /// False when the subscriber is gone or too slow.
    pub fn complete(&self, chat_id: Uuid, conn: ConnId, seen: ReplaySeen) -> bool {
        let Some(mut subs) = self.chats.get_mut(&chat_id) else {
            return false;
        };
        if !matches!(subs.get(&conn), Some(Entry::Pending { .. })) {
            return false;
        }
        let Some(Entry::Pending { sub, held }) = subs.remove(&conn) else {
            return false;
        };
        for out in held {
            if !seen.covers(&out) && !sub.push(out) {
                return false;
            }
        }
        subs.insert(
            conn,
            Entry::Live {
                sub,
                seen: Some(Arc::new(seen)),
            },
        );
        true
    }

    pub fn remove(&self, chat_id: Uuid, conn: ConnId) {
        if let Some(mut subs) = self.chats.get_mut(&chat_id) {
            subs.remove(&conn);
        }
        if self
            .chats
            .remove_if(&chat_id, |_, subs| subs.is_empty())
            .is_some()
            && let Some(l) = self.links.get()
        {
            let _ = l.follow.send(FollowChange {
                chat_id,
                ready: None,
            });
        }
    }

    pub fn subscriber_count(&self, chat_id: Uuid) -> usize {
        self.chats.get(&chat_id).map_or(0, |s| s.len())
    }

    /// Chats with at least one local subscriber.
    pub fn followed(&self) -> Vec<Uuid> {
        self.chats.iter().map(|e| *e.key()).collect()
    }

    /// Sends to every local subscriber of the chat (dropping those that are
    /// gone or too slow) and, when linked, to the other nodes.
    pub fn publish(&self, chat_id: Uuid, out: &Outbound) {
        if let Some(l) = self.links.get()
            && l.relay.try_send((chat_id, out.clone())).is_err()
        {
            metrics::counter!("switchboard_cluster_fanout_dropped_total").increment(1);
        }
        self.deliver(chat_id, out, false);
    }

    /// An event another node published: to local subscribers only, without
    /// what their replay already gave them.
    pub fn deliver_remote(&self, chat_id: Uuid, out: &Outbound) {
        self.deliver(chat_id, out, true);
    }

    fn deliver(&self, chat_id: Uuid, out: &Outbound, remote: bool) {
        let Some(mut subs) = self.chats.get_mut(&chat_id) else {
            return;
        };
        subs.retain(|_, entry| match entry {
            Entry::Pending { sub, held } => {
                if held.len() >= HELD_MAX {
                    sub.overflow.cancel();
                    return false;
                }
                held.push(out.clone());
                true
            }
            Entry::Live { sub, seen } => {
                if remote && seen.as_ref().is_some_and(|seen| seen.covers(out)) {
                    return true;
                }
                sub.push(out.clone())
            }
        });
        metrics::counter!("switchboard_ws_frames_total", "direction" => "out")
            .increment(subs.len() as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::messages::Message;

    fn message(seq: i64, role: &str, status: &str) -> Message {
        Message {
            id: Uuid::now_v7(),
            chat_id: Uuid::nil(),
            seq,
            role: role.into(),
            author_id: None,
            reply_to: None,
            client_msg_id: None,
            content: String::new(),
            status: status.into(),
            provider: None,
            model: None,
            finish_reason: None,
            input_tokens: None,
            output_tokens: None,
            cost_micros: None,
            created_at: chrono::Utc::now(),
            completed_at: None,
            citations: None,
            node_id: None,
            deltas_saved: None,
        }
    }

    fn frame(m: &Message, deltas_included: Option<u32>) -> ServerFrame {
        ServerFrame::Message {
            chat_id: Uuid::nil(),
            seq: m.seq,
            message: m.clone(),
            deltas_included,
        }
    }

    fn delta(id: Uuid, index: u32) -> Outbound {
        let f = ServerFrame::Delta {
            chat_id: Uuid::nil(),
            message_id: id,
            index,
            text: "x".into(),
        };
        Outbound::new(&f, None)
    }

    #[test]
    fn a_replay_covers_what_it_showed_and_nothing_newer() {
        let user = message(1, "user", "complete");
        let running = message(2, "assistant", "streaming");
        let ended = message(3, "assistant", "complete");
        let mut seen = ReplaySeen::default();
        for (m, d) in [(&user, None), (&running, Some(3)), (&ended, None)] {
            seen.saw(&frame(m, d));
        }
        assert!(seen.covers(&Outbound::new(&frame(&user, None), None)));
        assert!(
            seen.covers(&delta(running.id, 2)),
            "inside the replayed text"
        );
        assert!(!seen.covers(&delta(running.id, 3)), "the next delta is new");
        let failed = Message {
            status: "failed".into(),
            ..running.clone()
        };
        assert!(
            !seen.covers(&Outbound::new(&frame(&failed, None), None)),
            "a status change is new"
        );
        assert!(seen.covers(&delta(ended.id, 0)));
        let done = ServerFrame::from_error(&crate::error::ApiError::new(
            crate::error::ErrorCode::ProviderUnavailable,
            "x",
        ))
        .about(Uuid::nil(), ended.id);
        assert!(
            seen.covers(&Outbound::new(&done, None)),
            "the end of an answer shown final"
        );
        let later = message(4, "user", "complete");
        assert!(!seen.covers(&Outbound::new(&frame(&later, None), None)));
    }
}
