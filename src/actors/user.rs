//! UserSupervisor → UserActor per connected user: their open connections,
//! held to `ws.max_connections_per_user`. Spawned on first connection,
//! stopped when idle with none open. (The plan that governs a message is the
//! paying workspace's, read per message; a user actor holds none.)

use std::{
    collections::HashSet,
    sync::Arc,
    time::{Duration, Instant},
};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{
    RestartLimiter,
    hub::ConnId,
    registry::{Handle, Pending, Registry, RegistryError, SpawnRequest},
};

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum UserError {
    #[error("too many open connections for this user (limit {0})")]
    TooManyConnections(usize),
    #[error("user actor unavailable")]
    Unavailable,
}

impl RegistryError for UserError {
    fn busy() -> Self {
        Self::Unavailable
    }
    fn unavailable() -> Self {
        Self::Unavailable
    }
}

pub enum UserMsg {
    Connect {
        conn: ConnId,
        reply: RpcReplyPort<Result<(), UserError>>,
    },
    Disconnect {
        conn: ConnId,
    },
    Tick,
}

pub type UserSupervisorMsg = SpawnRequest<Uuid, UserMsg, UserError>;

#[derive(Clone)]
pub struct UserRegistry {
    actors: Registry<Uuid, UserMsg, UserError>,
    /// Sockets per connected user as this registry admitted them (operations views).
    sockets: Arc<dashmap::DashMap<Uuid, usize>>,
    /// Each open socket's cut token: cancelled when its user is disabled.
    cuts: Arc<dashmap::DashMap<Uuid, Vec<(ConnId, CancellationToken)>>>,
}

impl Default for UserRegistry {
    fn default() -> Self {
        Self {
            actors: Registry::new("user", None),
            sockets: Arc::default(),
            cuts: Arc::default(),
        }
    }
}

impl UserRegistry {
    pub(super) fn set_supervisor(&self, sup: ActorRef<UserSupervisorMsg>) {
        self.actors.set_supervisor(sup);
    }

    /// Registers a connection of the user, refused past the per-user cap.
    pub async fn connect(&self, user_id: Uuid, conn: ConnId) -> Result<(), UserError> {
        self.actors
            .call(user_id, |reply| UserMsg::Connect { conn, reply })
            .await?;
        *self.sockets.entry(user_id).or_default() += 1;
        Ok(())
    }

    /// A token the socket `conn` watches: cancelled by [`UserRegistry::cut`].
    /// Forgotten at [`UserRegistry::disconnect`].
    pub fn cut_token(&self, user_id: Uuid, conn: ConnId) -> CancellationToken {
        let token = CancellationToken::new();
        self.cuts
            .entry(user_id)
            .or_default()
            .push((conn, token.clone()));
        token
    }

    /// Closes every socket the user has open on this node (the account was
    /// disabled); answers how many were told to close.
    pub fn cut(&self, user_id: Uuid) -> usize {
        let Some((_, conns)) = self.cuts.remove(&user_id) else {
            return 0;
        };
        for (_, token) in &conns {
            token.cancel();
        }
        conns.len()
    }

    pub fn disconnect(&self, user_id: Uuid, conn: ConnId) {
        if let Some(mut conns) = self.cuts.get_mut(&user_id) {
            conns.retain(|(c, _)| *c != conn);
        }
        self.cuts.remove_if(&user_id, |_, conns| conns.is_empty());
        if let Some(mut n) = self.sockets.get_mut(&user_id) {
            *n = n.saturating_sub(1);
        }
        self.sockets.remove_if(&user_id, |_, n| *n == 0);
        if let Some(h) = self.actors.get(&user_id) {
            let _ = h.actor.cast(UserMsg::Disconnect { conn });
        }
    }

    pub fn live_count(&self) -> usize {
        self.actors.len()
    }

    /// Crash restarts of user actors since start.
    pub fn restarts(&self) -> u64 {
        self.actors.restarts()
    }

    /// Sockets per user (users with none are left out); a point-in-time copy.
    pub fn sockets(&self) -> Vec<(Uuid, usize)> {
        self.sockets
            .iter()
            .map(|e| (*e.key(), *e.value()))
            .collect()
    }
}

pub struct UserActor;

pub struct UserArgs {
    idle: Duration,
    max_connections: usize,
}

pub struct UserState {
    conns: HashSet<ConnId>,
    idle: Duration,
    max_connections: usize,
    last_active: Instant,
}

impl Actor for UserActor {
    type Msg = UserMsg;
    type State = UserState;
    type Arguments = UserArgs;

    async fn pre_start(
        &self,
        me: ActorRef<UserMsg>,
        args: UserArgs,
    ) -> Result<UserState, ActorProcessingErr> {
        me.send_interval(args.idle.max(Duration::from_millis(100)) / 2, || {
            UserMsg::Tick
        });
        super::live("user", 1.0);
        Ok(UserState {
            conns: HashSet::new(),
            idle: args.idle,
            max_connections: args.max_connections,
            last_active: Instant::now(),
        })
    }

    async fn post_stop(
        &self,
        _me: ActorRef<UserMsg>,
        _s: &mut UserState,
    ) -> Result<(), ActorProcessingErr> {
        super::live("user", -1.0);
        Ok(())
    }

    async fn handle(
        &self,
        me: ActorRef<UserMsg>,
        msg: UserMsg,
        s: &mut UserState,
    ) -> Result<(), ActorProcessingErr> {
        super::handled("user");
        match msg {
            UserMsg::Connect { conn, reply } => {
                s.last_active = Instant::now();
                if s.conns.len() >= s.max_connections {
                    let _ = reply.send(Err(UserError::TooManyConnections(s.max_connections)));
                } else {
                    s.conns.insert(conn);
                    let _ = reply.send(Ok(()));
                }
            }
            UserMsg::Disconnect { conn } => {
                s.conns.remove(&conn);
                s.last_active = Instant::now();
            }
            UserMsg::Tick => {
                if s.conns.is_empty() && s.last_active.elapsed() >= s.idle {
                    me.stop(Some("idle".into()));
                }
            }
        }
        Ok(())
    }
}

pub struct UserSupervisor;

pub struct UserSupervisorArgs {
    pub registry: UserRegistry,
    pub idle: Duration,
    pub max_connections: usize,
    pub restarts: RestartLimiter,
}

impl Actor for UserSupervisor {
    type Msg = UserSupervisorMsg;
    type State = UserSupervisorArgs;
    type Arguments = UserSupervisorArgs;

    async fn pre_start(
        &self,
        _me: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle(
        &self,
        me: ActorRef<Self::Msg>,
        msg: Self::Msg,
        s: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let SpawnRequest { key, reply } = msg;
        let _ = reply.send(spawn_user(&me, s, key).await);
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        me: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        s: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let Some((cell, crash)) = super::child_exit(evt) else {
            return Ok(());
        };
        let Some(user_id) = s.registry.actors.exited(cell.get_id()) else {
            return Ok(());
        };
        // A user actor holds only what connections re-register and Postgres has,
        // so a restart is a fresh spawn on next use; we count it here.
        if let Some(reason) = crash {
            tracing::warn!(%user_id, %reason, "user actor died");
            metrics::counter!("switchboard_actor_restarts_total", "kind" => "user").increment(1);
            s.registry.actors.note_restart();
            if s.restarts.allow(&user_id.to_string()) {
                let _ = spawn_user(&me, s, user_id).await;
            }
        }
        Ok(())
    }
}

async fn spawn_user(
    me: &ActorRef<UserSupervisorMsg>,
    s: &UserSupervisorArgs,
    user_id: Uuid,
) -> Result<Handle<UserMsg>, UserError> {
    if let Some(h) = s.registry.actors.get(&user_id) {
        return Ok(h);
    }
    let args = UserArgs {
        idle: s.idle,
        max_connections: s.max_connections,
    };
    match Actor::spawn_linked(None, UserActor, args, me.get_cell()).await {
        Ok((actor, _)) => {
            let h = Handle::new(actor, Pending::default(), ());
            s.registry.actors.insert(user_id, h.clone());
            Ok(h)
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot start user actor");
            Err(UserError::Unavailable)
        }
    }
}
