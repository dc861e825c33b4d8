//! ProviderSupervisor → one ProviderActor per configured provider.
//!
//! A provider actor owns its provider client and concurrency limit and hands
//! out leases; the stream itself runs in the caller's generation task, never in
//! the actor, so one slow answer never holds up another.

use std::{collections::HashMap, sync::Arc, time::Duration};

use dashmap::DashMap;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::providers::{ChatProvider, ProviderError};

/// A right to run one generation on a provider; the permit is held until dropped.
pub struct Lease {
    pub provider: Arc<dyn ChatProvider>,
    pub permit: OwnedSemaphorePermit,
}

pub enum ProviderMsg {
    /// Waits (up to the timeout) for a free slot and answers with a lease.
    Acquire {
        reply: RpcReplyPort<Result<Arc<Semaphore>, ProviderError>>,
    },
}

pub struct ProviderActor;

pub struct ProviderArgs {
    pub provider: Arc<dyn ChatProvider>,
    pub concurrency: usize,
}

pub struct ProviderState {
    slots: Arc<Semaphore>,
}

impl Actor for ProviderActor {
    type Msg = ProviderMsg;
    type State = ProviderState;
    type Arguments = ProviderArgs;

    async fn pre_start(
        &self,
        _me: ActorRef<ProviderMsg>,
        args: ProviderArgs,
    ) -> Result<ProviderState, ActorProcessingErr> {
        super::live("provider", 1.0);
        Ok(ProviderState {
            slots: Arc::new(Semaphore::new(args.concurrency)),
        })
    }

    async fn post_stop(
        &self,
        _me: ActorRef<ProviderMsg>,
        _s: &mut ProviderState,
    ) -> Result<(), ActorProcessingErr> {
        super::live("provider", -1.0);
        Ok(())
    }

    async fn handle(
        &self,
        _me: ActorRef<ProviderMsg>,
        msg: ProviderMsg,
        s: &mut ProviderState,
    ) -> Result<(), ActorProcessingErr> {
        super::handled("provider");
        match msg {
            ProviderMsg::Acquire { reply } => {
                let _ = reply.send(Ok(s.slots.clone()));
            }
        }
        Ok(())
    }
}

/// A running provider: its actor and the client it serves with.
type Running = (ActorRef<ProviderMsg>, Arc<dyn ChatProvider>);

/// The providers by name, kept current by the supervisor across restarts.
#[derive(Clone, Default)]
pub struct ProviderRegistry {
    actors: Arc<DashMap<String, Running>>,
}

/// How long a generation waits for a provider slot before giving up.
const SLOT_WAIT: Duration = Duration::from_secs(30);

impl ProviderRegistry {
    /// A lease on the named provider, waiting for a free slot.
    pub async fn lease(&self, name: &str) -> Result<Lease, ProviderError> {
        let (actor, provider) = self
            .actors
            .get(name)
            .map(|e| e.value().clone())
            .ok_or_else(|| ProviderError::Connect(format!("provider {name} is not running")))?;
        let slots = ractor::call_t!(actor, |reply| ProviderMsg::Acquire { reply }, 5_000)
            .map_err(|e| ProviderError::Connect(format!("provider actor: {e}")))??;
        let permit = tokio::time::timeout(SLOT_WAIT, slots.acquire_owned())
            .await
            .map_err(|_| ProviderError::Timeout)?
            .map_err(|_| ProviderError::Connect("provider closed".into()))?;
        Ok(Lease { provider, permit })
    }

    pub fn names(&self) -> Vec<String> {
        self.actors.iter().map(|e| e.key().clone()).collect()
    }
}

pub struct ProviderSupervisor;

pub struct ProviderSupervisorState {
    registry: ProviderRegistry,
    specs: HashMap<String, (Arc<dyn ChatProvider>, usize)>,
    restarts: super::RestartLimiter,
}

impl Actor for ProviderSupervisor {
    type Msg = ();
    type State = ProviderSupervisorState;
    type Arguments = (
        ProviderRegistry,
        Vec<(Arc<dyn ChatProvider>, usize)>,
        super::RestartLimiter,
    );

    async fn pre_start(
        &self,
        me: ActorRef<()>,
        (registry, providers, restarts): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut specs = HashMap::new();
        for (provider, concurrency) in providers {
            let name = provider.name().to_owned();
            spawn_provider(&me, &registry, provider.clone(), concurrency).await?;
            specs.insert(name, (provider, concurrency));
        }
        Ok(ProviderSupervisorState {
            registry,
            specs,
            restarts,
        })
    }

    async fn handle_supervisor_evt(
        &self,
        me: ActorRef<()>,
        evt: SupervisionEvent,
        s: &mut ProviderSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, reason) = match evt {
            SupervisionEvent::ActorFailed(cell, e) => (cell, e.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, Some(r)) if r == "killed" => (cell, r),
            _ => return Ok(()),
        };
        let Some(name) = s
            .registry
            .actors
            .iter()
            .find(|e| e.value().0.get_id() == cell.get_id())
            .map(|e| e.key().clone())
        else {
            return Ok(());
        };
        s.registry.actors.remove(&name);
        if !s.restarts.allow(&name) {
            tracing::error!(provider = %name, %reason, "provider actor keeps failing: given up");
            return Ok(());
        }
        tracing::warn!(provider = %name, %reason, "provider actor died: restarting");
        metrics::counter!("switchboard_actor_restarts_total", "kind" => "provider").increment(1);
        if let Some((provider, concurrency)) = s.specs.get(&name).cloned() {
            spawn_provider(&me, &s.registry, provider, concurrency).await?;
        }
        Ok(())
    }

    async fn handle(
        &self,
        _me: ActorRef<()>,
        _msg: (),
        _s: &mut ProviderSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
}

async fn spawn_provider(
    sup: &ActorRef<()>,
    registry: &ProviderRegistry,
    provider: Arc<dyn ChatProvider>,
    concurrency: usize,
) -> Result<(), ActorProcessingErr> {
    let name = provider.name().to_owned();
    let (actor, _) = Actor::spawn_linked(
        None,
        ProviderActor,
        ProviderArgs {
            provider: provider.clone(),
            concurrency,
        },
        sup.get_cell(),
    )
    .await?;
    registry.actors.insert(name, (actor, provider));
    Ok(())
}
