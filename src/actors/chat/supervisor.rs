//! ChatSupervisor: starts chat actors on first use (serially, so a chat never
//! has two) and restarts one that crashed, at most `chat.max_restarts` times
//! per window; the restarted actor fails the answers its predecessor left
//! streaming.

use std::{collections::HashSet, sync::Arc};

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use uuid::Uuid;

use super::{
    ChatDeps, ChatError, ChatMsg, ChatRegistry,
    actor::{ChatActor, ChatArgs, StartFailure},
};
use crate::actors::{
    RestartLimiter,
    registry::{Handle, Pending, SpawnRequest},
};

pub type ChatSupervisorMsg = SpawnRequest<Uuid, ChatMsg, ChatError>;

pub struct ChatSupervisor;

pub struct ChatSupervisorState {
    registry: ChatRegistry,
    restarts: RestartLimiter,
    /// Chats whose actor crashed and has not started again: that start must
    /// fail the answers it left streaming.
    crashed: HashSet<Uuid>,
}

impl Actor for ChatSupervisor {
    type Msg = ChatSupervisorMsg;
    type State = ChatSupervisorState;
    type Arguments = (ChatRegistry, RestartLimiter);

    async fn pre_start(
        &self,
        _me: ActorRef<Self::Msg>,
        (registry, restarts): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(ChatSupervisorState {
            registry,
            restarts,
            crashed: HashSet::new(),
        })
    }

    async fn handle(
        &self,
        me: ActorRef<Self::Msg>,
        SpawnRequest { key, reply }: Self::Msg,
        s: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let _ = reply.send(spawn_chat(&me, s, key).await);
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        me: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        s: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let Some((cell, crash)) = crate::actors::child_exit(evt) else {
            return Ok(());
        };
        let Some(chat_id) = s.registry.actors.exited(cell.get_id()) else {
            return Ok(());
        };
        let Some(reason) = crash else { return Ok(()) };
        s.crashed.insert(chat_id);
        if !s.restarts.allow(&chat_id.to_string()) {
            tracing::error!(%chat_id, %reason, "chat actor keeps failing: given up until next use");
            return Ok(());
        }
        tracing::warn!(%chat_id, %reason, "chat actor died: restarting from Postgres");
        metrics::counter!("switchboard_actor_restarts_total", "kind" => "chat").increment(1);
        s.registry.actors.note_restart();
        if let Err(e) = spawn_chat(&me, s, chat_id).await {
            tracing::error!(%chat_id, error = %e, "chat actor restart failed");
        }
        Ok(())
    }
}

async fn spawn_chat(
    me: &ActorRef<ChatSupervisorMsg>,
    s: &mut ChatSupervisorState,
    chat_id: Uuid,
) -> Result<Handle<ChatMsg>, ChatError> {
    if let Some(h) = s.registry.actors.get(&chat_id) {
        return Ok(h);
    }
    let pending = Pending::default();
    let recovering = s.crashed.remove(&chat_id);
    let deps: Arc<ChatDeps> = s.registry.deps().clone();
    let args = ChatArgs {
        chat_id,
        deps,
        pending: pending.clone(),
        recovering,
    };
    let spawned = Actor::spawn_linked(None, ChatActor, args, me.get_cell()).await;
    if spawned.is_err() && recovering {
        s.crashed.insert(chat_id);
    }
    match spawned {
        Ok((actor, _)) => {
            let h = Handle::new(actor, pending, ());
            s.registry.actors.insert(chat_id, h.clone());
            Ok(h)
        }
        Err(ractor::SpawnErr::StartupFailed(e)) => Err(e
            .downcast_ref::<StartFailure>()
            .map_or(ChatError::Unavailable, |f| f.0.clone())),
        Err(e) => {
            tracing::error!(%chat_id, error = %e, "cannot start chat actor");
            Err(ChatError::Unavailable)
        }
    }
}
