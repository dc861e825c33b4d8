//! UserSupervisor → UserActor per connected user: their open connections and
//! plan. Spawned on first connection, stopped when idle with none open.

use std::{
    collections::HashSet,
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use dashmap::DashMap;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use sqlx::PgPool;
use uuid::Uuid;

use super::{RestartLimiter, hub::ConnId};

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum UserError {
    #[error("too many open connections for this user (limit {0})")]
    TooManyConnections(usize),
    #[error("user actor unavailable")]
    Unavailable,
}

pub enum UserMsg {
    Connect {
        conn: ConnId,
        reply: RpcReplyPort<Result<String, UserError>>,
    },
    Disconnect {
        conn: ConnId,
    },
    Tick,
}

pub enum UserSupervisorMsg {
    GetOrSpawn {
        user_id: Uuid,
        reply: RpcReplyPort<Option<ActorRef<UserMsg>>>,
    },
}

#[derive(Clone, Default)]
pub struct UserRegistry {
    actors: Arc<DashMap<Uuid, ActorRef<UserMsg>>>,
    supervisor: Arc<OnceLock<ActorRef<UserSupervisorMsg>>>,
}

impl UserRegistry {
    pub(super) fn set_supervisor(&self, sup: ActorRef<UserSupervisorMsg>) {
        let _ = self.supervisor.set(sup);
    }

    async fn get_or_spawn(&self, user_id: Uuid) -> Result<ActorRef<UserMsg>, UserError> {
        if let Some(a) = self.actors.get(&user_id) {
            return Ok(a.clone());
        }
        let sup = self.supervisor.get().ok_or(UserError::Unavailable)?;
        ractor::call_t!(
            sup,
            |reply| UserSupervisorMsg::GetOrSpawn { user_id, reply },
            5_000
        )
        .ok()
        .flatten()
        .ok_or(UserError::Unavailable)
    }

    /// Registers a connection of the user; answers the user's plan.
    pub async fn connect(&self, user_id: Uuid, conn: ConnId) -> Result<String, UserError> {
        // An actor that just stopped for idleness refuses the call; the second try spawns anew.
        for _ in 0..2 {
            let actor = self.get_or_spawn(user_id).await?;
            match ractor::call_t!(actor, |reply| UserMsg::Connect { conn, reply }, 5_000) {
                Ok(r) => return r,
                Err(_) => {
                    self.actors
                        .remove_if(&user_id, |_, a| a.get_id() == actor.get_id());
                }
            }
        }
        Err(UserError::Unavailable)
    }

    pub fn disconnect(&self, user_id: Uuid, conn: ConnId) {
        if let Some(a) = self.actors.get(&user_id) {
            let _ = a.cast(UserMsg::Disconnect { conn });
        }
    }

    pub fn live_count(&self) -> usize {
        self.actors.len()
    }
}

pub struct UserActor;

pub struct UserArgs {
    user_id: Uuid,
    db: PgPool,
    idle: Duration,
    max_connections: usize,
}

pub struct UserState {
    conns: HashSet<ConnId>,
    plan: String,
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
        // The plan of the user's own workspace; a user with none is on free.
        let plan: Option<(String,)> = sqlx::query_as(
            "select w.plan from workspace_members m join workspaces w on w.id = m.workspace_id
             where m.user_id = $1 order by (m.role = 'owner') desc, m.created_at limit 1",
        )
        .bind(args.user_id)
        .fetch_optional(&args.db)
        .await?;
        me.send_interval(args.idle.max(Duration::from_millis(100)) / 2, || {
            UserMsg::Tick
        });
        super::live("user", 1.0);
        Ok(UserState {
            conns: HashSet::new(),
            plan: plan.map_or_else(|| "free".to_owned(), |p| p.0),
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
                    let _ = reply.send(Ok(s.plan.clone()));
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
    pub db: PgPool,
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
        let UserSupervisorMsg::GetOrSpawn { user_id, reply } = msg;
        let _ = reply.send(spawn_user(&me, s, user_id).await);
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
        let Some(user_id) = s
            .registry
            .actors
            .iter()
            .find(|e| e.value().get_id() == cell.get_id())
            .map(|e| *e.key())
        else {
            return Ok(());
        };
        s.registry.actors.remove(&user_id);
        // A user actor holds only what connections re-register and Postgres has,
        // so a restart is a fresh spawn on next use; we count it here.
        if let Some(reason) = crash {
            tracing::warn!(%user_id, %reason, "user actor died");
            metrics::counter!("switchboard_actor_restarts_total", "kind" => "user").increment(1);
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
) -> Option<ActorRef<UserMsg>> {
    if let Some(a) = s.registry.actors.get(&user_id) {
        return Some(a.clone());
    }
    let args = UserArgs {
        user_id,
        db: s.db.clone(),
        idle: s.idle,
        max_connections: s.max_connections,
    };
    match Actor::spawn_linked(None, UserActor, args, me.get_cell()).await {
        Ok((actor, _)) => {
            s.registry.actors.insert(user_id, actor.clone());
            Some(actor)
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot start user actor");
            None
        }
    }
}
