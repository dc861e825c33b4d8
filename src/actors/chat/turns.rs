//! The chat's turn-taking as a pure state machine, tested without a runtime:
//! accepted messages wait in order, one answer runs at a time, and the running
//! answer's text and delta count are what a subscriber joining mid-answer sees.
//! Generic over what a queued turn carries, so the actor's types stay out.
//!
//! Which message is answered next is Postgres' decision (the oldest without an
//! answer, whichever node accepted it); the queue here only keeps what this
//! node admitted for its own messages, taken out by [`Turns::take_where`].

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{actors::hub::ConnId, store::messages::Message};

/// The answer being generated.
#[derive(Debug)]
pub struct Running {
    pub id: u64,
    /// The assistant row (status `streaming`).
    pub message: Message,
    pub origin: Option<ConnId>,
    pub text: String,
    /// Deltas published so far; the next delta's index.
    pub deltas: u32,
    pub cancel: CancellationToken,
    /// Text length at the last checkpoint.
    pub saved_len: usize,
    /// When the text was last saved: the answer's start until its first checkpoint.
    pub saved_at: Instant,
}

#[derive(Debug)]
pub struct Turns<Q> {
    queue: VecDeque<Q>,
    current: Option<Running>,
    next_gen: u64,
}

impl<Q> Default for Turns<Q> {
    fn default() -> Self {
        Self {
            queue: VecDeque::new(),
            current: None,
            next_gen: 0,
        }
    }
}

/// A delta to publish.
#[derive(Debug, PartialEq, Eq)]
pub struct Delta {
    pub message_id: Uuid,
    pub index: u32,
}

impl<Q> Turns<Q> {
    /// Nothing running and nothing waiting.
    pub fn is_idle(&self) -> bool {
        self.current.is_none() && self.queue.is_empty()
    }

    pub fn push(&mut self, turn: Q) {
        self.queue.push_back(turn);
    }

    /// The waiting turn that matches, when none is running.
    pub fn take_where(&mut self, pred: impl Fn(&Q) -> bool) -> Option<Q> {
        if self.current.is_some() {
            return None;
        }
        let i = self.queue.iter().position(pred)?;
        self.queue.remove(i)
    }

    /// The waiting turn that matches, left in place.
    pub fn find_waiting(&self, pred: impl Fn(&Q) -> bool) -> Option<&Q> {
        self.queue.iter().find(|q| pred(q))
    }

    /// Puts a turn back at the head (it could not start yet).
    pub fn push_front(&mut self, turn: Q) {
        self.queue.push_front(turn);
    }

    /// Keeps only the waiting turns that match; answers the rest.
    pub fn retain(&mut self, keep: impl Fn(&Q) -> bool) -> Vec<Q> {
        let (kept, dropped): (VecDeque<Q>, VecDeque<Q>) =
            self.queue.drain(..).partition(|q| keep(q));
        self.queue = kept;
        dropped.into()
    }

    /// Turns wait here for their answer.
    pub fn has_waiting(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Makes `message` the running answer; answers its generation id.
    pub fn start(
        &mut self,
        message: Message,
        origin: Option<ConnId>,
        cancel: CancellationToken,
    ) -> u64 {
        self.next_gen += 1;
        self.current = Some(Running {
            id: self.next_gen,
            message,
            origin,
            text: String::new(),
            deltas: 0,
            cancel,
            saved_len: 0,
            saved_at: Instant::now(),
        });
        self.next_gen
    }

    pub fn current(&self) -> Option<&Running> {
        self.current.as_ref()
    }

    /// The running answer if `gen_id` is still it (late events of an ended one are ignored).
    pub fn running(&mut self, gen_id: u64) -> Option<&mut Running> {
        self.current.as_mut().filter(|r| r.id == gen_id)
    }

    /// Appends text to the running answer; the delta to publish.
    pub fn append(&mut self, gen_id: u64, text: &str) -> Option<Delta> {
        let r = self.running(gen_id)?;
        r.text.push_str(text);
        let index = r.deltas;
        r.deltas += 1;
        Some(Delta {
            message_id: r.message.id,
            index,
        })
    }

    /// Ends the running answer if it is `gen_id`.
    pub fn end(&mut self, gen_id: u64) -> Option<Running> {
        if self.current.as_ref().is_some_and(|r| r.id == gen_id) {
            self.current.take()
        } else {
            None
        }
    }

    /// Cancels the running answer if it is `message_id`.
    pub fn cancel(&self, message_id: Uuid) -> bool {
        match &self.current {
            Some(r) if r.message.id == message_id => {
                r.cancel.cancel();
                true
            }
            _ => false,
        }
    }

    /// Cancels the running answer if `conn` asked for it.
    pub fn cancel_if_origin(&self, conn: ConnId) {
        if let Some(r) = &self.current
            && r.origin == Some(conn)
        {
            r.cancel.cancel();
        }
    }

    /// The running answer's text and delta count, if `message_id` is it.
    pub fn progress(&self, message_id: Uuid) -> Option<(&str, u32)> {
        self.current
            .as_ref()
            .filter(|r| r.message.id == message_id)
            .map(|r| (r.text.as_str(), r.deltas))
    }

    /// The running answer's id, text and delta count when it grew since the
    /// last checkpoint, which (or the answer's start) was at least half of
    /// `every` before `now`. Called on a tick of `every`: an answer shorter
    /// than half of it is never checkpointed (its final write is its only
    /// write), a longer one at most 1.5 × `every` after it began and then on
    /// every tick (half, not all of it, so a tick that fires a little early
    /// still saves).
    pub fn checkpoint_due(&mut self, now: Instant, every: Duration) -> Option<(Uuid, String, u32)> {
        let r = self.current.as_mut()?;
        if r.text.len() == r.saved_len || now.saturating_duration_since(r.saved_at) < every / 2 {
            return None;
        }
        r.saved_len = r.text.len();
        r.saved_at = now;
        Some((r.message.id, r.text.clone(), r.deltas))
    }

    /// Everything still waiting (the chat is stopping).
    pub fn drain(&mut self) -> Vec<Q> {
        self.queue.drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(seq: i64) -> Message {
        Message {
            id: Uuid::now_v7(),
            chat_id: Uuid::nil(),
            seq,
            role: "assistant".into(),
            author_id: None,
            reply_to: None,
            client_msg_id: None,
            content: String::new(),
            status: "streaming".into(),
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

    #[test]
    fn one_answer_at_a_time_taken_by_what_postgres_names_next() {
        let mut t = Turns::default();
        assert!(t.is_idle());
        t.push("a");
        t.push("b");
        t.push("c");
        assert_eq!(t.take_where(|q| *q == "a"), Some("a"));
        let g = t.start(answer(2), None, CancellationToken::new());
        assert_eq!(
            t.take_where(|q| *q == "b"),
            None,
            "b waits while a's answer runs"
        );
        assert!(!t.is_idle());
        assert!(t.end(g + 1).is_none(), "a stale generation ends nothing");
        assert!(t.end(g).is_some());
        assert_eq!(
            t.retain(|q| *q != "b"),
            vec!["b"],
            "b was answered elsewhere"
        );
        assert_eq!(t.take_where(|q| *q == "c"), Some("c"));
        t.push_front("c");
        assert!(t.has_waiting());
        assert_eq!(t.take_where(|_| true), Some("c"));
        assert!(t.is_idle());
    }

    #[test]
    fn deltas_are_numbered_and_late_events_ignored() {
        let mut t: Turns<()> = Turns::default();
        let m = answer(2);
        let id = m.id;
        let g = t.start(m, Some(7), CancellationToken::new());
        assert_eq!(
            t.append(g, "Hel"),
            Some(Delta {
                message_id: id,
                index: 0
            })
        );
        assert_eq!(t.append(g, "lo").map(|d| d.index), Some(1));
        assert_eq!(t.append(g + 1, "x"), None);
        assert_eq!(t.progress(id), Some(("Hello", 2)));
    }

    #[test]
    fn a_checkpoint_waits_for_half_the_interval_and_new_text() {
        let mut t: Turns<()> = Turns::default();
        let every = Duration::from_millis(500);
        let m = answer(2);
        let id = m.id;
        let g = t.start(m, None, CancellationToken::new());
        let started = t.current().map(|r| r.saved_at).unwrap();
        t.append(g, "Hello");
        let early = started + Duration::from_millis(200);
        assert_eq!(
            t.checkpoint_due(early, every),
            None,
            "a short answer is not saved"
        );
        let later = started + Duration::from_millis(250);
        assert_eq!(
            t.checkpoint_due(later, every),
            Some((id, "Hello".to_owned(), 1))
        );
        assert_eq!(
            t.checkpoint_due(later + every, every),
            None,
            "nothing new since"
        );
        t.append(g, " world");
        assert_eq!(
            t.checkpoint_due(later + Duration::from_millis(100), every),
            None,
            "saved too recently"
        );
        assert_eq!(
            t.checkpoint_due(later + every, every).map(|c| c.1),
            Some("Hello world".to_owned())
        );
    }

    #[test]
    fn cancel_hits_only_the_running_answer_or_its_origin() {
        let mut t: Turns<()> = Turns::default();
        let token = CancellationToken::new();
        let m = answer(2);
        let id = m.id;
        t.start(m, Some(7), token.clone());
        assert!(!t.cancel(Uuid::now_v7()));
        t.cancel_if_origin(8);
        assert!(!token.is_cancelled());
        t.cancel_if_origin(7);
        assert!(token.is_cancelled());
        assert!(t.cancel(id));
    }
}
