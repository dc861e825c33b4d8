//! ProviderSupervisor → one ProviderActor per configured provider.
//!
//! A provider actor owns what protects an upstream account: a concurrency
//! limit, requests- and tokens-per-minute windows, and a circuit breaker
//! (closed → open after `breaker_failures` consecutive failures → half-open
//! after `breaker_cooldown` with one probe → closed on its success). It hands
//! out leases; the stream itself runs in the caller's generation task, never
//! in the actor, so one slow answer never holds up another. Callers report how
//! each lease went, which is what moves the breaker.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::registry::{Handle, Pending, Registry, RegistryError};
use crate::providers::{ChatProvider, ProviderError};

/// Limits of one provider, from `[providers.limits.<name>]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProviderLimits {
    pub concurrency: usize,
    /// Requests per minute; 0 = unlimited.
    pub rpm: u32,
    /// Tokens per minute; 0 = unlimited.
    pub tpm: u32,
    pub breaker_failures: u32,
    pub breaker_cooldown: Duration,
}

/// A right to run one generation on a provider; the slot is held until dropped.
pub struct Lease {
    pub provider: Arc<dyn ChatProvider>,
    actor: ActorRef<ProviderMsg>,
    _permit: OwnedSemaphorePermit,
    probe: bool,
}

/// How a lease went, for the breaker and the token window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success {
        tokens: u32,
    },
    Failure,
    /// Neither: cancelled by the client, or throttled upstream (429 is not an outage).
    Neutral {
        tokens: u32,
    },
}

impl Lease {
    pub fn report(&self, outcome: Outcome) {
        let _ = self.actor.cast(ProviderMsg::Report {
            outcome,
            probe: self.probe,
        });
    }
}

pub enum ProviderMsg {
    /// Admission: breaker and windows. Answers the slots to wait on and whether this is a half-open probe.
    Admit {
        est_tokens: u32,
        reply: RpcReplyPort<Result<(Arc<Semaphore>, bool), ProviderError>>,
    },
    Report {
        outcome: Outcome,
        probe: bool,
    },
    /// Breaker state, for `/ready`-style views and tests.
    State {
        reply: RpcReplyPort<BreakerState>,
    },
    /// Requests and tokens counted in the last minute.
    Windows {
        reply: RpcReplyPort<(usize, u32)>,
    },
    /// Slots in use and the concurrency limit (operations views).
    Slots {
        reply: RpcReplyPort<(usize, usize)>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

pub struct ProviderActor;

pub struct ProviderArgs {
    pub name: String,
    pub limits: ProviderLimits,
}

pub struct ProviderState {
    name: String,
    limits: ProviderLimits,
    slots: Arc<Semaphore>,
    failures: u32,
    open_until: Option<Instant>,
    probe_in_flight: bool,
    requests: VecDeque<Instant>,
    tokens: VecDeque<(Instant, u32)>,
}

const MINUTE: Duration = Duration::from_secs(60);

impl ProviderState {
    fn breaker(&self) -> BreakerState {
        match self.open_until {
            None => BreakerState::Closed,
            Some(t) if Instant::now() < t => BreakerState::Open,
            Some(_) => BreakerState::HalfOpen,
        }
    }

    fn admit(&mut self, est_tokens: u32) -> Result<bool, ProviderError> {
        let now = Instant::now();
        let probe = match self.breaker() {
            BreakerState::Closed => false,
            BreakerState::Open => return Err(ProviderError::CircuitOpen),
            BreakerState::HalfOpen if self.probe_in_flight => {
                return Err(ProviderError::CircuitOpen);
            }
            BreakerState::HalfOpen => true,
        };
        while self
            .requests
            .front()
            .is_some_and(|t| now.duration_since(*t) >= MINUTE)
        {
            self.requests.pop_front();
        }
        while self
            .tokens
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) >= MINUTE)
        {
            self.tokens.pop_front();
        }
        let retry = |oldest: Option<Instant>| ProviderError::RateLimited {
            retry_after_secs: Some(oldest.map_or(1, |t| {
                MINUTE
                    .saturating_sub(now.duration_since(t))
                    .as_secs()
                    .max(1)
            })),
        };
        if self.limits.rpm > 0 && self.requests.len() >= self.limits.rpm as usize {
            return Err(retry(self.requests.front().copied()));
        }
        let used: u32 = self.tokens.iter().map(|(_, n)| n).sum();
        if self.limits.tpm > 0 && used.saturating_add(est_tokens) > self.limits.tpm {
            return Err(retry(self.tokens.front().map(|(t, _)| *t)));
        }
        self.requests.push_back(now);
        if probe {
            self.probe_in_flight = true;
            tracing::info!(provider = %self.name, "circuit half-open: sending a probe");
        }
        Ok(probe)
    }

    fn report(&mut self, outcome: Outcome, probe: bool) {
        if probe {
            self.probe_in_flight = false;
        }
        match outcome {
            Outcome::Success { tokens } => {
                if self.open_until.is_some() {
                    tracing::info!(provider = %self.name, "circuit closed: provider recovered");
                    metrics::gauge!("switchboard_provider_circuit_open", "provider" => self.name.clone()).set(0.0);
                }
                self.failures = 0;
                self.open_until = None;
                self.tokens.push_back((Instant::now(), tokens));
            }
            Outcome::Neutral { tokens } => self.tokens.push_back((Instant::now(), tokens)),
            Outcome::Failure => {
                self.failures += 1;
                metrics::counter!("switchboard_provider_failures_total", "provider" => self.name.clone()).increment(1);
                if probe || self.failures >= self.limits.breaker_failures.max(1) {
                    if self.breaker() == BreakerState::Closed || probe {
                        tracing::warn!(provider = %self.name, failures = self.failures, "circuit open");
                    }
                    self.open_until = Some(Instant::now() + self.limits.breaker_cooldown);
                    metrics::gauge!("switchboard_provider_circuit_open", "provider" => self.name.clone()).set(1.0);
                }
            }
        }
    }
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
            slots: Arc::new(Semaphore::new(args.limits.concurrency.max(1))),
            name: args.name,
            limits: args.limits,
            failures: 0,
            open_until: None,
            probe_in_flight: false,
            requests: VecDeque::new(),
            tokens: VecDeque::new(),
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
            ProviderMsg::Admit { est_tokens, reply } => {
                let _ = reply.send(s.admit(est_tokens).map(|probe| (s.slots.clone(), probe)));
            }
            ProviderMsg::Report { outcome, probe } => s.report(outcome, probe),
            ProviderMsg::State { reply } => {
                let _ = reply.send(s.breaker());
            }
            ProviderMsg::Slots { reply } => {
                let in_use = s
                    .limits
                    .concurrency
                    .saturating_sub(s.slots.available_permits());
                let _ = reply.send((in_use, s.limits.concurrency));
            }
            ProviderMsg::Windows { reply } => {
                let now = Instant::now();
                let recent = |t: &Instant| now.duration_since(*t) < MINUTE;
                let requests = s.requests.iter().filter(|t| recent(t)).count();
                let tokens = s
                    .tokens
                    .iter()
                    .filter(|(t, _)| recent(t))
                    .map(|(_, n)| n)
                    .sum();
                let _ = reply.send((requests, tokens));
            }
        }
        Ok(())
    }
}

/// The providers by name (each actor with the client it serves with), kept
/// current by the supervisor across restarts.
#[derive(Clone)]
pub struct ProviderRegistry {
    actors: Registry<String, ProviderMsg, ProviderError, Arc<dyn ChatProvider>>,
}

impl Default for ProviderRegistry {
    fn default() -> Self {
        Self {
            actors: Registry::new("provider", None),
        }
    }
}

impl RegistryError for ProviderError {
    fn busy() -> Self {
        Self::Timeout
    }
    fn unavailable() -> Self {
        Self::Connect("provider is not running".into())
    }
}

/// How long a generation waits for a provider slot before trying the next candidate.
const SLOT_WAIT: Duration = Duration::from_secs(30);

impl ProviderRegistry {
    /// A lease on the named provider: admitted by its breaker and windows, holding a slot.
    pub async fn lease(&self, name: &str, est_tokens: u32) -> Result<Lease, ProviderError> {
        let Handle {
            actor,
            extra: provider,
            ..
        } = self
            .actors
            .get(name)
            .ok_or_else(|| ProviderError::Connect(format!("provider {name} is not running")))?;
        let (slots, probe) = ractor::call_t!(
            actor,
            |reply| ProviderMsg::Admit { est_tokens, reply },
            5_000
        )
        .map_err(|e| ProviderError::Connect(format!("provider actor: {e}")))??;
        let permit = match tokio::time::timeout(SLOT_WAIT, slots.acquire_owned()).await {
            Ok(Ok(p)) => p,
            _ => {
                // Give back the probe right we were handed.
                let _ = actor.cast(ProviderMsg::Report {
                    outcome: Outcome::Neutral { tokens: 0 },
                    probe,
                });
                return Err(ProviderError::Timeout);
            }
        };
        Ok(Lease {
            provider,
            actor,
            _permit: permit,
            probe,
        })
    }

    /// Crash restarts of provider actors since start.
    pub fn restarts(&self) -> u64 {
        self.actors.restarts()
    }

    pub fn names(&self) -> Vec<String> {
        self.actors.snapshot().into_iter().map(|(k, _)| k).collect()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.actors.get(name).is_some()
    }

    /// The running provider's client, to ask what it supports.
    pub fn provider(&self, name: &str) -> Option<Arc<dyn ChatProvider>> {
        self.actors.get(name).map(|h| h.extra)
    }

    /// Requests and tokens in the provider's one-minute windows.
    pub async fn windows(&self, name: &str) -> Option<(usize, u32)> {
        let actor = self.actors.get(name)?.actor;
        ractor::call_t!(actor, |reply| ProviderMsg::Windows { reply }, 5_000).ok()
    }

    /// Slots in use and the concurrency limit.
    pub async fn slots(&self, name: &str) -> Option<(usize, usize)> {
        let actor = self.actors.get(name)?.actor;
        ractor::call_t!(actor, |reply| ProviderMsg::Slots { reply }, 5_000).ok()
    }

    pub async fn breaker(&self, name: &str) -> Option<BreakerState> {
        let actor = self.actors.get(name)?.actor;
        ractor::call_t!(actor, |reply| ProviderMsg::State { reply }, 5_000).ok()
    }
}

pub struct ProviderSupervisor;

/// What the supervisor needs to start (and restart) one provider.
#[derive(Clone)]
pub struct ProviderSpec {
    pub provider: Arc<dyn ChatProvider>,
    pub limits: ProviderLimits,
}

pub struct ProviderSupervisorState {
    registry: ProviderRegistry,
    specs: HashMap<String, ProviderSpec>,
    restarts: super::RestartLimiter,
}

impl Actor for ProviderSupervisor {
    type Msg = ();
    type State = ProviderSupervisorState;
    type Arguments = (ProviderRegistry, Vec<ProviderSpec>, super::RestartLimiter);

    async fn pre_start(
        &self,
        me: ActorRef<()>,
        (registry, providers, restarts): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut specs = HashMap::new();
        for spec in providers {
            spawn_provider(&me, &registry, &spec).await?;
            specs.insert(spec.provider.name().to_owned(), spec);
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
        let Some((cell, Some(reason))) = super::child_exit(evt) else {
            return Ok(());
        };
        let Some(name) = s.registry.actors.exited(cell.get_id()) else {
            return Ok(());
        };
        if !s.restarts.allow(&name) {
            tracing::error!(provider = %name, %reason, "provider actor keeps failing: given up");
            return Ok(());
        }
        tracing::warn!(provider = %name, %reason, "provider actor died: restarting");
        metrics::counter!("switchboard_actor_restarts_total", "kind" => "provider").increment(1);
        s.registry.actors.note_restart();
        if let Some(spec) = s.specs.get(&name) {
            spawn_provider(&me, &s.registry, spec).await?;
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
    spec: &ProviderSpec,
) -> Result<(), ActorProcessingErr> {
    let name = spec.provider.name().to_owned();
    let (actor, _) = Actor::spawn_linked(
        None,
        ProviderActor,
        ProviderArgs {
            name: name.clone(),
            limits: spec.limits,
        },
        sup.get_cell(),
    )
    .await?;
    registry.actors.insert(
        name,
        Handle::new(actor, Pending::default(), spec.provider.clone()),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(failures: u32, cooldown_ms: u64, rpm: u32) -> ProviderState {
        ProviderState {
            name: "t".into(),
            limits: ProviderLimits {
                concurrency: 1,
                rpm,
                tpm: 0,
                breaker_failures: failures,
                breaker_cooldown: Duration::from_millis(cooldown_ms),
            },
            slots: Arc::new(Semaphore::new(1)),
            failures: 0,
            open_until: None,
            probe_in_flight: false,
            requests: VecDeque::new(),
            tokens: VecDeque::new(),
        }
    }

    #[test]
    fn breaker_opens_probes_and_closes() {
        let mut s = state(3, 50, 0);
        for _ in 0..2 {
            assert_eq!(s.admit(0), Ok(false));
            s.report(Outcome::Failure, false);
        }
        assert_eq!(s.breaker(), BreakerState::Closed);
        s.report(Outcome::Failure, false);
        assert_eq!(s.breaker(), BreakerState::Open);
        assert_eq!(s.admit(0), Err(ProviderError::CircuitOpen));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(s.breaker(), BreakerState::HalfOpen);
        assert_eq!(s.admit(0), Ok(true), "one probe");
        assert_eq!(
            s.admit(0),
            Err(ProviderError::CircuitOpen),
            "only one probe at a time"
        );
        // A failed probe opens again at once.
        s.report(Outcome::Failure, true);
        assert_eq!(s.breaker(), BreakerState::Open);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(s.admit(0), Ok(true));
        s.report(Outcome::Success { tokens: 1 }, true);
        assert_eq!(s.breaker(), BreakerState::Closed);
        assert_eq!(s.admit(0), Ok(false));
    }

    #[test]
    fn rpm_window_refuses_with_retry_after() {
        let mut s = state(5, 1000, 2);
        assert!(s.admit(0).is_ok());
        assert!(s.admit(0).is_ok());
        match s.admit(0) {
            Err(ProviderError::RateLimited {
                retry_after_secs: Some(n),
            }) => assert!((1..=60).contains(&n)),
            other => panic!("{other:?}"),
        }
    }
}
