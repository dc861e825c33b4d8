//! One registry for every kind of keyed actor (chats, users, providers): find a
//! live actor by key, start it through its supervisor on first use (the
//! supervisor spawns serially, so a key never has two actors), call it with
//! one retry when it stopped between lookup and call, and bound what callers
//! may queue on it. An `ActorId → key` index lets a supervisor find an exited
//! child's key without scanning every live actor.

use std::{
    hash::Hash,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use dashmap::DashMap;
use ractor::{ActorId, ActorRef, Message, RpcReplyPort, rpc::CallResult};

/// How long a caller waits for an actor (or its supervisor) to answer.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The errors a registry call can end in besides the actor's own.
pub trait RegistryError: Sized + Send + 'static {
    /// The actor's bounded queue is full.
    fn busy() -> Self;
    /// No actor could be reached or started.
    fn unavailable() -> Self;
    /// The actor took the call but did not answer in time: unlike `busy`, it
    /// may still act on it (a message may be stored), so callers must not
    /// read it as a refusal.
    fn timed_out() -> Self {
        Self::unavailable()
    }
}

/// A live actor and what callers share with it.
pub struct Handle<M: Message, X = ()> {
    pub actor: ActorRef<M>,
    /// Calls queued on the actor; the actor counts each one off as it starts it.
    pending: Arc<AtomicUsize>,
    pub extra: X,
}

impl<M: Message, X: Clone> Clone for Handle<M, X> {
    fn clone(&self) -> Self {
        Self {
            actor: self.actor.clone(),
            pending: self.pending.clone(),
            extra: self.extra.clone(),
        }
    }
}

impl<M: Message, X> Handle<M, X> {
    /// Calls queued on the actor now (operations views).
    pub fn depth(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// `pending` is the counter the actor itself decrements (see [`Pending`]).
    pub fn new(actor: ActorRef<M>, pending: Pending, extra: X) -> Self {
        Self {
            actor,
            pending: pending.0,
            extra,
        }
    }
}

/// The actor's side of its queue bound: count one call off as it is handled.
#[derive(Clone, Default)]
pub struct Pending(Arc<AtomicUsize>);

impl Pending {
    pub fn dequeued(&self, kind: &'static str) {
        self.0.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("switchboard_actor_queue_depth", "kind" => kind).decrement(1.0);
    }

    pub fn depth(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// The one message a keyed supervisor answers: the actor for this key, started if need be.
pub struct SpawnRequest<K, M: Message, E, X = ()> {
    pub key: K,
    pub reply: RpcReplyPort<Result<Handle<M, X>, E>>,
}

pub struct Registry<K, M: Message, E, X = ()> {
    inner: Arc<Inner<K, M, E, X>>,
}

struct Inner<K, M: Message, E, X> {
    kind: &'static str,
    actors: DashMap<K, Handle<M, X>>,
    by_id: DashMap<ActorId, K>,
    supervisor: OnceLock<ActorRef<SpawnRequest<K, M, E, X>>>,
    /// Calls one actor may have queued; `None` for no bound.
    mailbox_limit: Option<usize>,
    /// Crash restarts of this kind since start (operations views).
    restarts: AtomicU64,
}

impl<K, M: Message, E, X> Clone for Registry<K, M, E, X> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<K, M, E, X> Registry<K, M, E, X>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    M: Message,
    E: RegistryError,
    X: Clone + Send + Sync + 'static,
{
    pub fn new(kind: &'static str, mailbox_limit: Option<usize>) -> Self {
        Self {
            inner: Arc::new(Inner {
                kind,
                actors: DashMap::new(),
                by_id: DashMap::new(),
                supervisor: OnceLock::new(),
                mailbox_limit,
                restarts: AtomicU64::new(0),
            }),
        }
    }

    pub fn set_supervisor(&self, sup: ActorRef<SpawnRequest<K, M, E, X>>) {
        let _ = self.inner.supervisor.set(sup);
    }

    pub fn get<Q: Hash + Eq + ?Sized>(&self, key: &Q) -> Option<Handle<M, X>>
    where
        K: std::borrow::Borrow<Q>,
    {
        self.inner.actors.get(key).map(|h| h.clone())
    }

    /// Registers a freshly started actor (supervisors only).
    pub fn insert(&self, key: K, handle: Handle<M, X>) {
        self.inner.by_id.insert(handle.actor.get_id(), key.clone());
        if let Some(old) = self.inner.actors.insert(key, handle) {
            self.inner.by_id.remove(&old.actor.get_id());
        }
    }

    /// Forgets an actor that exited; answers its key if it was registered.
    pub fn exited(&self, id: ActorId) -> Option<K> {
        let (_, key) = self.inner.by_id.remove(&id)?;
        self.inner
            .actors
            .remove_if(&key, |_, h| h.actor.get_id() == id);
        Some(key)
    }

    /// Forgets the key's actor (it is being stopped) and hands it back.
    pub fn remove(&self, key: &K) -> Option<Handle<M, X>> {
        let (_, h) = self.inner.actors.remove(key)?;
        self.inner.by_id.remove(&h.actor.get_id());
        Some(h)
    }

    /// Counts a crash restart of one of these actors.
    pub fn note_restart(&self) {
        self.inner.restarts.fetch_add(1, Ordering::Relaxed);
    }

    pub fn restarts(&self) -> u64 {
        self.inner.restarts.load(Ordering::Relaxed)
    }

    pub fn len(&self) -> usize {
        self.inner.actors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.actors.is_empty()
    }

    /// Every live key with its handle, for operations views.
    pub fn snapshot(&self) -> Vec<(K, Handle<M, X>)> {
        self.inner
            .actors
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect()
    }

    /// The key's actor, started through the supervisor if it is not running.
    pub async fn get_or_spawn(&self, key: K) -> Result<Handle<M, X>, E> {
        if let Some(h) = self.get(&key) {
            return Ok(h);
        }
        let sup = self.inner.supervisor.get().ok_or_else(E::unavailable)?;
        match sup
            .call(|reply| SpawnRequest { key, reply }, Some(CALL_TIMEOUT))
            .await
        {
            Ok(CallResult::Success(r)) => r,
            _ => Err(E::unavailable()),
        }
    }

    /// Calls the key's actor through its bounded queue. An actor that stopped
    /// between lookup and call (idleness) is replaced once.
    pub async fn call<T: Send + 'static>(
        &self,
        key: K,
        build: impl Fn(RpcReplyPort<Result<T, E>>) -> M,
    ) -> Result<T, E> {
        let kind = self.inner.kind;
        for _ in 0..2 {
            let h = self.get_or_spawn(key.clone()).await?;
            let counted = self.inner.mailbox_limit.is_some();
            if let Some(limit) = self.inner.mailbox_limit {
                if h.pending.fetch_add(1, Ordering::Relaxed) >= limit {
                    h.pending.fetch_sub(1, Ordering::Relaxed);
                    return Err(E::busy());
                }
                metrics::gauge!("switchboard_actor_queue_depth", "kind" => kind).increment(1.0);
            }
            match h.actor.call(&build, Some(CALL_TIMEOUT)).await {
                Ok(CallResult::Success(r)) => return r,
                Ok(CallResult::Timeout) => return Err(E::timed_out()),
                Ok(CallResult::SenderError) | Err(_) => {
                    if counted {
                        Pending(h.pending.clone()).dequeued(kind);
                    }
                    let id = h.actor.get_id();
                    if self
                        .inner
                        .actors
                        .remove_if(&key, |_, cur| cur.actor.get_id() == id)
                        .is_some()
                    {
                        self.inner.by_id.remove(&id);
                    }
                }
            }
        }
        Err(E::unavailable())
    }
}

#[cfg(test)]
mod tests {
    use ractor::{Actor, ActorProcessingErr};

    use super::*;

    #[derive(Debug, PartialEq)]
    enum TestError {
        Busy,
        Unavailable,
    }

    impl RegistryError for TestError {
        fn busy() -> Self {
            Self::Busy
        }
        fn unavailable() -> Self {
            Self::Unavailable
        }
    }

    struct Echo;

    impl Actor for Echo {
        type Msg = RpcReplyPort<Result<u32, TestError>>;
        type State = Pending;
        type Arguments = Pending;
        async fn pre_start(
            &self,
            _: ActorRef<Self::Msg>,
            p: Pending,
        ) -> Result<Pending, ActorProcessingErr> {
            Ok(p)
        }
        async fn handle(
            &self,
            _: ActorRef<Self::Msg>,
            reply: Self::Msg,
            p: &mut Pending,
        ) -> Result<(), ActorProcessingErr> {
            p.dequeued("test");
            let _ = reply.send(Ok(7));
            Ok(())
        }
    }

    #[tokio::test]
    async fn exits_are_found_by_id_and_calls_without_a_supervisor_fail_cleanly() {
        let reg: Registry<u32, RpcReplyPort<Result<u32, TestError>>, TestError> =
            Registry::new("test", Some(4));
        assert_eq!(
            reg.call(1, |r| r).await.unwrap_err(),
            TestError::Unavailable
        );
        let pending = Pending::default();
        let (actor, _) = Actor::spawn(None, Echo, pending.clone()).await.unwrap();
        let id = actor.get_id();
        reg.insert(1, Handle::new(actor.clone(), pending.clone(), ()));
        assert_eq!(reg.call(1, |r| r).await, Ok(7));
        assert_eq!(pending.depth(), 0, "the actor counted its call off");
        assert_eq!(reg.exited(id), Some(1));
        assert!(reg.get(&1).is_none());
        assert_eq!(reg.exited(id), None, "an exit is forgotten once");
        actor.stop(None);
    }
}
