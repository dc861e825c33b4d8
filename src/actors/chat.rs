//! ChatSupervisor → ChatActor per active chat.
//!
//! A chat actor is the one place a chat's events are ordered: it commits user
//! messages (seq from Postgres), acks them, runs one generation at a time (the
//! rest queue), and publishes every event to the chat's subscribers through the
//! [`ChatHub`]. Generations run in their own tasks and report back as
//! [`ChatMsg::Gen`]; handlers await only short Postgres statements.
//!
//! Transports must check that the caller may see the chat before calling the
//! registry: the actor trusts its callers.

use std::{
    collections::VecDeque,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use dashmap::DashMap;
use futures::{FutureExt, StreamExt};
use ractor::{
    Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent, rpc::CallResult,
};
use sqlx::PgPool;
use tokio_util::sync::{CancellationToken, DropGuard};
use uuid::Uuid;

use super::{
    RestartLimiter,
    hub::{ChatHub, ConnId, Outbound, Subscriber},
    persistence::{UsageEvent, UsageMsg},
    provider::{Outcome, ProviderRegistry},
};
use crate::{
    admission::{Admission, AdmitError, Payer},
    budget::Reservation,
    config::{ChatConfig, RoutingConfig},
    error::ErrorCode,
    providers::{
        ChatRequest, PromptMessage, ProviderError, StreamEvent, Usage,
        attempt::{Attempts, OpenError, Opened, log_served, open_first},
        pricing::{PriceTable, micros_to_usd},
        router::{Candidate, RouteError, Router, worst_case_micros},
        tokenizer,
    },
    store::{
        self,
        messages::{self, Message},
    },
    transport::protocol::ServerFrame,
};

/// Most messages replayed on one subscribe; older history is paged over REST.
const REPLAY_LIMIT: i64 = 1000;
/// How long a caller waits for a chat actor to answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ChatError {
    #[error("chat not found")]
    NotFound,
    #[error("{0}")]
    Invalid(String),
    #[error("chat is busy, try again shortly")]
    Busy,
    #[error("no answer in progress with that id")]
    NoSuchGeneration,
    #[error("storage unavailable: the message was not saved, retry")]
    Unavailable,
    #[error("subscriber too slow for the replay")]
    SlowConsumer,
    #[error("rate limit reached, retry later")]
    RateLimited(Duration),
    #[error("{0}")]
    BudgetExceeded(String, Duration),
    #[error("no provider is available for this request")]
    NoProvider,
}

impl ChatError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::NotFound | Self::NoSuchGeneration => ErrorCode::NotFound,
            Self::Invalid(_) => ErrorCode::InvalidRequest,
            Self::Busy => ErrorCode::RateLimited,
            Self::Unavailable => ErrorCode::Unavailable,
            Self::SlowConsumer => ErrorCode::SlowConsumer,
            Self::RateLimited(_) => ErrorCode::RateLimited,
            Self::BudgetExceeded(..) => ErrorCode::BudgetExceeded,
            Self::NoProvider => ErrorCode::ProviderUnavailable,
        }
    }

    /// When a retry can succeed, for `Retry-After` and `retry_after`.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Busy => Some(Duration::from_secs(1)),
            Self::RateLimited(d) | Self::BudgetExceeded(_, d) => Some(*d),
            _ => None,
        }
    }
}

impl From<AdmitError> for ChatError {
    fn from(e: AdmitError) -> Self {
        match e {
            AdmitError::RateLimited { retry_after } => Self::RateLimited(retry_after),
            AdmitError::BudgetExceeded(why, after) => Self::BudgetExceeded(why, after),
            AdmitError::Unavailable => Self::Unavailable,
        }
    }
}

impl From<ChatError> for crate::error::ApiError {
    fn from(e: ChatError) -> Self {
        let mut err = Self::new(e.code(), e.to_string());
        err.retry_after = e.retry_after();
        err
    }
}

/// The answer to `send`: where the user's message landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub client_msg_id: String,
    pub message_id: Uuid,
    pub seq: i64,
    /// The `client_msg_id` had been seen: nothing new was stored or generated.
    pub duplicate: bool,
}

#[derive(Debug, Clone)]
pub struct SendRequest {
    pub author: Uuid,
    pub plan: String,
    pub client_msg_id: String,
    pub content: String,
    pub model: Option<String>,
    /// The connection that asked, for cancel-on-disconnect.
    pub origin: Option<ConnId>,
}

pub enum ChatMsg {
    Subscribe {
        sub: Subscriber,
        since_seq: Option<i64>,
        reply: RpcReplyPort<Result<(), ChatError>>,
    },
    Unsubscribe {
        conn: ConnId,
        /// Cancel the running answer if this connection asked for it.
        cancel_if_origin: bool,
    },
    Send {
        req: SendRequest,
        reply: RpcReplyPort<Result<Ack, ChatError>>,
    },
    Cancel {
        message_id: Uuid,
        reply: RpcReplyPort<Result<(), ChatError>>,
    },
    /// From a generation task.
    Gen {
        gen_id: u64,
        event: GenEvent,
    },
    Tick,
}

#[derive(Debug)]
pub enum GenEvent {
    /// A provider produced its first event, after earlier candidates failed if `fell_back`.
    Started {
        provider: String,
        model: String,
        fell_back: bool,
    },
    Tokens(Vec<String>),
    Usage(Usage),
    Finished(String),
    Failed(ProviderError),
    Cancelled,
}

/// What every chat actor shares.
pub struct ChatDeps {
    pub db: PgPool,
    pub hub: ChatHub,
    pub providers: ProviderRegistry,
    pub usage: ActorRef<UsageMsg>,
    pub pricing: Arc<PriceTable>,
    pub config: ChatConfig,
    pub router: Router,
    pub routing: RoutingConfig,
    pub admission: Admission,
}

pub struct ChatActor;

pub struct ChatArgs {
    chat_id: Uuid,
    deps: Arc<ChatDeps>,
    pending: Arc<AtomicUsize>,
    /// A previous actor of this chat crashed: answers it left streaming must be failed.
    recovering: bool,
}

struct Queued {
    user_message: Message,
    req: SendRequest,
    payer: Payer,
    reservation: Reservation,
    candidates: Vec<Candidate>,
    /// The prompt read at accept time, when nothing ran or waited before this
    /// message, so it is still exact at start and need not be read again.
    prompt: Option<Vec<PromptMessage>>,
}

struct Generation {
    id: u64,
    message: Message,
    author: Uuid,
    origin: Option<ConnId>,
    provider: String,
    model: String,
    text: String,
    deltas: u32,
    output_tokens: u32,
    prompt_tokens: u32,
    usage: Option<Usage>,
    cancel: CancellationToken,
    saved_len: usize,
    payer: Payer,
    reservation: Option<Reservation>,
    /// Served by a later candidate after earlier ones failed.
    fell_back: bool,
}

pub struct ChatState {
    chat_id: Uuid,
    workspace_id: Uuid,
    deps: Arc<ChatDeps>,
    pending: Arc<AtomicUsize>,
    queue: VecDeque<Queued>,
    current: Option<Generation>,
    next_gen: u64,
    last_active: Instant,
    /// Parent of every generation's token: dropping the state (stop, kill,
    /// panic) cancels whatever is still generating.
    generations: CancellationToken,
    _cancel_on_drop: DropGuard,
}

impl ChatState {
    fn publish(&self, frame: &ServerFrame) {
        let event_id = frame.event_id(|id| {
            self.current
                .as_ref()
                .filter(|g| g.message.id == id)
                .map(|g| g.message.seq)
        });
        self.deps
            .hub
            .publish(self.chat_id, &Outbound::new(frame, event_id));
    }

    fn message_frame(&self, message: Message) -> ServerFrame {
        ServerFrame::Message {
            chat_id: self.chat_id,
            seq: message.seq,
            message,
            deltas_included: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct StartFailure(ChatError);

impl Actor for ChatActor {
    type Msg = ChatMsg;
    type State = ChatState;
    type Arguments = ChatArgs;

    async fn pre_start(
        &self,
        me: ActorRef<ChatMsg>,
        args: ChatArgs,
    ) -> Result<ChatState, ActorProcessingErr> {
        let row: Option<(Uuid,)> = sqlx::query_as("select workspace_id from chats where id = $1")
            .bind(args.chat_id)
            .fetch_optional(&args.deps.db)
            .await
            .map_err(|_| StartFailure(ChatError::Unavailable))?;
        let Some((workspace_id,)) = row else {
            return Err(StartFailure(ChatError::NotFound).into());
        };
        let generations = CancellationToken::new();
        let state = ChatState {
            chat_id: args.chat_id,
            workspace_id,
            pending: args.pending,
            queue: VecDeque::new(),
            current: None,
            next_gen: 0,
            last_active: Instant::now(),
            _cancel_on_drop: generations.clone().drop_guard(),
            generations,
            deps: args.deps,
        };
        // Answers a crashed incarnation left streaming end as failed, with the
        // text saved so far; subscribers are told. A first start has none (the
        // server's start-up sweep covered the last run), so it skips the query.
        let interrupted = if args.recovering {
            messages::fail_interrupted(&state.deps.db, Some(state.chat_id))
                .await
                .map_err(|_| StartFailure(ChatError::Unavailable))?
        } else {
            Vec::new()
        };
        for m in interrupted {
            tracing::warn!(chat_id = %state.chat_id, message_id = %m.id, "answer interrupted by a restart: marked failed");
            let id = m.id;
            state.publish(&state.message_frame(m));
            state.publish(&ServerFrame::Error {
                code: ErrorCode::ProviderUnavailable,
                message: "the answer was interrupted; send again to retry".into(),
                retry_after: None,
                chat_id: Some(state.chat_id),
                message_id: Some(id),
            });
        }
        me.send_interval(
            Duration::from_millis(state.deps.config.checkpoint_ms.max(50)),
            || ChatMsg::Tick,
        );
        super::live("chat", 1.0);
        Ok(state)
    }

    async fn post_stop(
        &self,
        _me: ActorRef<ChatMsg>,
        s: &mut ChatState,
    ) -> Result<(), ActorProcessingErr> {
        if s.current.is_some() {
            metrics::gauge!("switchboard_streams_active").decrement(1.0);
        }
        super::live("chat", -1.0);
        Ok(())
    }

    async fn handle(
        &self,
        me: ActorRef<ChatMsg>,
        msg: ChatMsg,
        s: &mut ChatState,
    ) -> Result<(), ActorProcessingErr> {
        super::handled("chat");
        match msg {
            ChatMsg::Subscribe {
                sub,
                since_seq,
                reply,
            } => {
                s.dequeued();
                s.last_active = Instant::now();
                let _ = reply.send(subscribe(s, sub, since_seq).await);
            }
            ChatMsg::Unsubscribe {
                conn,
                cancel_if_origin,
            } => {
                s.deps.hub.remove(s.chat_id, conn);
                if let Some(g) = &s.current
                    && cancel_if_origin
                    && g.origin == Some(conn)
                {
                    g.cancel.cancel();
                }
            }
            ChatMsg::Send { req, reply } => {
                s.dequeued();
                s.last_active = Instant::now();
                match accept(s, req).await {
                    Ok(Accepted::New(q)) => {
                        let _ = reply.send(Ok(Ack {
                            client_msg_id: q.req.client_msg_id.clone(),
                            message_id: q.user_message.id,
                            seq: q.user_message.seq,
                            duplicate: false,
                        }));
                        s.publish(&s.message_frame(q.user_message.clone()));
                        s.queue.push_back(*q);
                        start_next(&me, s).await;
                    }
                    Ok(Accepted::Duplicate(ack)) => {
                        let _ = reply.send(Ok(ack));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            ChatMsg::Cancel { message_id, reply } => {
                let r = match &s.current {
                    Some(g) if g.message.id == message_id => {
                        g.cancel.cancel();
                        Ok(())
                    }
                    _ => Err(ChatError::NoSuchGeneration),
                };
                let _ = reply.send(r);
            }
            ChatMsg::Gen { gen_id, event } => {
                if s.current.as_ref().is_some_and(|g| g.id == gen_id) {
                    s.last_active = Instant::now();
                    on_generation_event(&me, s, event).await;
                }
            }
            ChatMsg::Tick => {
                checkpoint(s);
                let idle = Duration::from_secs(s.deps.config.idle_timeout_secs);
                if s.current.is_none()
                    && s.queue.is_empty()
                    && s.pending.load(Ordering::Relaxed) == 0
                    && s.deps.hub.subscriber_count(s.chat_id) == 0
                    && s.last_active.elapsed() >= idle
                {
                    me.stop(Some("idle".into()));
                }
            }
        }
        Ok(())
    }
}

impl ChatState {
    fn dequeued(&self) {
        self.pending.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("switchboard_actor_queue_depth", "kind" => "chat").decrement(1.0);
    }
}

async fn subscribe(
    s: &mut ChatState,
    sub: Subscriber,
    since_seq: Option<i64>,
) -> Result<(), ChatError> {
    // Replay and registration happen in one handler: nothing is published in
    // between, so the client sees no gap and no duplicate.
    if let Some(since) = since_seq {
        let missed = messages::list_after(&s.deps.db, s.chat_id, since.max(0), REPLAY_LIMIT)
            .await
            .map_err(|_| ChatError::Unavailable)?;
        for m in missed {
            let frame = snapshot(s, m);
            if !sub.push(Outbound::new(&frame, frame.event_id(|_| None))) {
                return Err(ChatError::SlowConsumer);
            }
        }
    } else if let Some(g) = &s.current {
        // Joining mid-answer without a seq: the answer so far, then its deltas.
        let frame = snapshot(s, g.message.clone());
        if !sub.push(Outbound::new(&frame, frame.event_id(|_| None))) {
            return Err(ChatError::SlowConsumer);
        }
    }
    s.deps.hub.add(s.chat_id, sub);
    Ok(())
}

/// A message as it stands now: the running answer carries its text so far and
/// how many deltas that covers.
fn snapshot(s: &ChatState, mut m: Message) -> ServerFrame {
    let mut deltas_included = None;
    if let Some(g) = s.current.as_ref().filter(|g| g.message.id == m.id) {
        m.content.clone_from(&g.text);
        deltas_included = Some(g.deltas);
    }
    ServerFrame::Message {
        chat_id: s.chat_id,
        seq: m.seq,
        message: m,
        deltas_included,
    }
}

enum Accepted {
    New(Box<Queued>),
    /// The `client_msg_id` was seen before: the same ack, nothing new.
    Duplicate(Ack),
}

/// Validates, checks limits and budget, and stores a user message.
async fn accept(s: &mut ChatState, req: SendRequest) -> Result<Accepted, ChatError> {
    let cfg = &s.deps.config;
    if req.client_msg_id.is_empty() || req.client_msg_id.len() > 128 {
        return Err(ChatError::Invalid(
            "client_msg_id: must be 1 to 128 characters".into(),
        ));
    }
    if req.content.trim().is_empty() {
        return Err(ChatError::Invalid("content: must not be empty".into()));
    }
    if req.content.chars().count() > cfg.max_message_chars {
        return Err(ChatError::Invalid(format!(
            "content: longer than {} characters",
            cfg.max_message_chars
        )));
    }
    // A resend answers the first ack before any limit is counted.
    let db = &s.deps.db;
    if let Some(m) = messages::by_client_msg_id(db, s.chat_id, &req.client_msg_id)
        .await
        .map_err(|e| storage_error(s.chat_id, &e))?
    {
        return Ok(Accepted::Duplicate(duplicate_ack(req.client_msg_id, &m)));
    }
    let history = messages::prompt_history(db, s.chat_id, cfg.history_messages)
        .await
        .map_err(|e| storage_error(s.chat_id, &e))?;
    let mut with_message = to_prompt(history);
    with_message.push(PromptMessage {
        role: "user".to_owned(),
        content: req.content.clone(),
    });
    // Counted as /v1 and the providers count: the tokenizer, not a character estimate.
    let prompt_tokens = tokenizer::count_prompt(&with_message);
    let providers = &s.deps.providers;
    let candidates = s
        .deps
        .router
        .candidates(
            &req.plan,
            prompt_tokens,
            req.model.as_deref(),
            &s.deps.pricing,
            &|p| providers.contains(p),
        )
        .map_err(|e| match e {
            RouteError::UnknownModel(_) => ChatError::Invalid(e.to_string()),
            RouteError::NoProvider => ChatError::NoProvider,
        })?;
    let worst = worst_case_micros(
        &s.deps.pricing,
        &candidates,
        prompt_tokens,
        cfg.max_output_tokens,
    );
    let payer = Payer {
        workspace_id: s.workspace_id,
        user_id: Some(req.author),
        api_key: None,
        plan: req.plan.clone(),
    };
    let reservation = s.deps.admission.admit(&payer, worst).await?;
    let idle = s.current.is_none() && s.queue.is_empty();
    match messages::insert_user(db, s.chat_id, req.author, &req.client_msg_id, &req.content).await {
        Ok(user_message) => {
            let prompt = idle.then(|| {
                let mut p = with_message;
                let keep = usize::try_from(cfg.history_messages).unwrap_or(usize::MAX);
                p.split_off(p.len().saturating_sub(keep))
            });
            Ok(Accepted::New(Box::new(Queued {
                user_message,
                req,
                payer,
                reservation,
                candidates,
                prompt,
            })))
        }
        Err(e) => {
            s.deps.admission.settle(&payer, reservation, 0, 0).await;
            if store::is_unique_violation(&e, "messages_chat_id_client_msg_id_key") {
                // Another node stored the same message first.
                let existing = messages::by_client_msg_id(db, s.chat_id, &req.client_msg_id)
                    .await
                    .map_err(|_| ChatError::Unavailable)?
                    .ok_or(ChatError::Unavailable)?;
                return Ok(Accepted::Duplicate(duplicate_ack(
                    req.client_msg_id,
                    &existing,
                )));
            }
            if matches!(&e, sqlx::Error::Database(d) if d.is_foreign_key_violation()) {
                return Err(ChatError::NotFound);
            }
            tracing::error!(chat_id = %s.chat_id, error = %e, "cannot store user message");
            Err(ChatError::Unavailable)
        }
    }
}

fn to_prompt(rows: Vec<(String, String)>) -> Vec<PromptMessage> {
    rows.into_iter()
        .map(|(role, content)| PromptMessage { role, content })
        .collect()
}

fn storage_error(chat_id: Uuid, e: &sqlx::Error) -> ChatError {
    tracing::error!(%chat_id, error = %e, "chat storage failed");
    ChatError::Unavailable
}

fn duplicate_ack(client_msg_id: String, m: &Message) -> Ack {
    Ack {
        client_msg_id,
        message_id: m.id,
        seq: m.seq,
        duplicate: true,
    }
}

/// Starts the next queued answer if none is running.
async fn start_next(me: &ActorRef<ChatMsg>, s: &mut ChatState) {
    while s.current.is_none() {
        let Some(mut q) = s.queue.pop_front() else {
            return;
        };
        let first = q.candidates[0].clone();
        let history = match q.prompt.take() {
            Some(p) => Ok(p),
            None => messages::prompt_history(&s.deps.db, s.chat_id, s.deps.config.history_messages)
                .await
                .map(to_prompt),
        };
        let assistant = messages::insert_assistant(
            &s.deps.db,
            s.chat_id,
            q.user_message.id,
            &first.provider,
            &first.model,
        )
        .await;
        let (prompt, assistant) = match (history, assistant) {
            (Ok(h), Ok(a)) => (h, a),
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(chat_id = %s.chat_id, error = %e, "cannot open answer");
                fail_before_start(s, q, "storage unavailable; send again to retry").await;
                continue;
            }
        };
        let prompt_tokens = tokenizer::count_prompt(&prompt);
        let request = ChatRequest {
            model: first.model.clone(),
            messages: prompt,
            max_tokens: s.deps.config.max_output_tokens,
            ..ChatRequest::default()
        };
        s.next_gen += 1;
        let cancel = s.generations.child_token();
        let gen_id = s.next_gen;
        s.publish(&s.message_frame(assistant.clone()));
        s.current = Some(Generation {
            id: gen_id,
            message: assistant,
            author: q.req.author,
            origin: q.req.origin,
            provider: first.provider.clone(),
            model: first.model.clone(),
            text: String::new(),
            deltas: 0,
            output_tokens: 0,
            prompt_tokens,
            usage: None,
            cancel: cancel.clone(),
            saved_len: 0,
            payer: q.payer,
            reservation: Some(q.reservation),
            fell_back: false,
        });
        metrics::gauge!("switchboard_streams_active").increment(1.0);
        let plan = Attempts {
            candidates: q.candidates,
            ttft: Duration::from_millis(s.deps.routing.ttft_timeout_ms),
            retries: s.deps.routing.max_retries,
            retry_base: Duration::from_millis(s.deps.routing.retry_base_ms),
            est_tokens: prompt_tokens + s.deps.config.max_output_tokens,
        };
        tokio::spawn(generate(
            me.clone(),
            gen_id,
            s.deps.providers.clone(),
            plan,
            request,
            cancel,
        ));
    }
}

async fn fail_before_start(s: &ChatState, q: Queued, why: &str) {
    s.deps.admission.settle(&q.payer, q.reservation, 0, 0).await;
    s.publish(&ServerFrame::Error {
        code: ErrorCode::ProviderUnavailable,
        message: why.into(),
        retry_after: None,
        chat_id: Some(s.chat_id),
        message_id: Some(q.user_message.id),
    });
}

/// Runs one answer: opens the first candidate that answers (retries and
/// fallback happen only there, before any token reaches the client), then
/// streams and reports back. Once a token is out nothing switches: a failure
/// ends the answer as failed. Tokens already waiting are sent together, so a
/// fast provider costs fewer frames.
async fn generate(
    chat: ActorRef<ChatMsg>,
    gen_id: u64,
    providers: ProviderRegistry,
    plan: Attempts,
    request: ChatRequest,
    cancel: CancellationToken,
) {
    let report = |event| chat.cast(ChatMsg::Gen { gen_id, event }).is_ok();
    let opened = match open_first(&providers, &plan, &request, &cancel).await {
        Ok(o) => o,
        Err(OpenError::Cancelled) => {
            report(GenEvent::Cancelled);
            return;
        }
        Err(OpenError::Failed(last, _)) => {
            report(GenEvent::Failed(last));
            return;
        }
    };
    log_served(&opened);
    let Opened {
        candidate,
        lease,
        mut stream,
        first,
        fell_back_from,
    } = opened;
    if !report(GenEvent::Started {
        provider: candidate.provider,
        model: candidate.model,
        fell_back: !fell_back_from.is_empty(),
    }) {
        return;
    }
    let mut produced = 0u32;
    let mut pending = Some(Some(Ok(first)));
    loop {
        let head = match pending.take() {
            Some(ev) => ev,
            None => tokio::select! {
                biased;
                () = cancel.cancelled() => {
                    lease.report(Outcome::Neutral { tokens: produced });
                    report(GenEvent::Cancelled);
                    return;
                }
                ev = stream.next() => ev,
            },
        };
        let mut ready = vec![head];
        while ready.len() < 64 && matches!(ready.last(), Some(Some(Ok(StreamEvent::Token(_))))) {
            match stream.next().now_or_never() {
                Some(ev) => ready.push(ev),
                None => break,
            }
        }
        let mut tokens = Vec::new();
        for ev in ready {
            let terminal = match ev {
                Some(Ok(StreamEvent::Token(t))) => {
                    tokens.push(t);
                    continue;
                }
                Some(Ok(StreamEvent::Usage(u))) => GenEvent::Usage(u),
                Some(Ok(StreamEvent::Finish(r))) => GenEvent::Finished(r),
                Some(Err(e)) => GenEvent::Failed(e),
                None => GenEvent::Failed(ProviderError::Disconnected),
            };
            produced += tokens.len() as u32;
            if !tokens.is_empty() && !report(GenEvent::Tokens(std::mem::take(&mut tokens))) {
                return;
            }
            let done = !matches!(terminal, GenEvent::Usage(_));
            if done {
                lease.report(match &terminal {
                    GenEvent::Failed(_) => Outcome::Failure,
                    _ => Outcome::Success { tokens: produced },
                });
            }
            if !report(terminal) || done {
                return;
            }
        }
        produced += tokens.len() as u32;
        if !tokens.is_empty() && !report(GenEvent::Tokens(tokens)) {
            return;
        }
    }
}

async fn on_generation_event(me: &ActorRef<ChatMsg>, s: &mut ChatState, event: GenEvent) {
    let Some(g) = s.current.as_mut() else { return };
    match event {
        GenEvent::Tokens(tokens) => {
            let n = tokens.len() as u32;
            let text = tokens.concat();
            g.text.push_str(&text);
            g.output_tokens += n;
            let frame = ServerFrame::Delta {
                chat_id: s.chat_id,
                message_id: g.message.id,
                index: g.deltas,
                text,
            };
            g.deltas += 1;
            metrics::counter!("switchboard_tokens_streamed_total").increment(u64::from(n));
            s.publish(&frame);
        }
        GenEvent::Usage(u) => g.usage = Some(u),
        GenEvent::Started {
            provider,
            model,
            fell_back,
        } => {
            g.provider = provider;
            g.model = model;
            g.fell_back = fell_back;
        }
        GenEvent::Finished(reason) => finish(me, s, "complete", &reason, None).await,
        GenEvent::Cancelled => finish(me, s, "cancelled", "cancelled", None).await,
        GenEvent::Failed(e) => finish(me, s, "failed", "error", Some(e)).await,
    }
}

/// Ends the running answer: stores it, bills what was produced, tells subscribers, starts the next.
async fn finish(
    me: &ActorRef<ChatMsg>,
    s: &mut ChatState,
    status: &str,
    reason: &str,
    error: Option<ProviderError>,
) {
    let Some(g) = s.current.take() else { return };
    metrics::gauge!("switchboard_streams_active").decrement(1.0);
    // The provider's count when it gave one; otherwise what we counted. An
    // answer that never produced a token is not billed.
    let usage = match g.usage {
        Some(u) => u,
        None if g.output_tokens == 0 => Usage::default(),
        None => Usage {
            input_tokens: g.prompt_tokens,
            output_tokens: g.output_tokens,
        },
    };
    let cost = s
        .deps
        .pricing
        .cost_micros(&g.model, usage)
        .unwrap_or_else(|| {
            tracing::warn!(model = %g.model, "no price for model: billed at 0");
            0
        });
    let outcome = messages::Outcome {
        status,
        provider: &g.provider,
        model: &g.model,
        content: &g.text,
        finish_reason: reason,
        input_tokens: i32::try_from(usage.input_tokens).unwrap_or(i32::MAX),
        output_tokens: i32::try_from(usage.output_tokens).unwrap_or(i32::MAX),
        cost_micros: cost,
    };
    let mut stored = None;
    for attempt in 0..3u64 {
        match messages::finalize(&s.deps.db, g.message.id, &outcome).await {
            Ok(m) => {
                stored = Some(m);
                break;
            }
            Err(e) => {
                tracing::warn!(message_id = %g.message.id, attempt, error = %e, "cannot finalize answer");
                tokio::time::sleep(Duration::from_millis(100 * (attempt + 1))).await;
            }
        }
    }
    if usage.input_tokens > 0 || usage.output_tokens > 0 {
        let _ = s.deps.usage.cast(UsageMsg::Record(UsageEvent {
            workspace_id: s.workspace_id,
            user_id: Some(g.author),
            api_key_id: None,
            chat_id: Some(s.chat_id),
            message_id: Some(g.message.id),
            provider: g.provider.clone(),
            model: g.model.clone(),
            input_tokens: outcome.input_tokens,
            output_tokens: outcome.output_tokens,
            cost_micros: cost,
        }));
    }
    if let Some(res) = g.reservation {
        let tokens = usage.input_tokens + usage.output_tokens;
        s.deps.admission.settle(&g.payer, res, cost, tokens).await;
    }
    tracing::info!(chat_id = %s.chat_id, message_id = %g.message.id, provider = %g.provider, model = %g.model,
        status, input_tokens = usage.input_tokens, output_tokens = usage.output_tokens, cost_micros = cost, "answer finished");
    if g.fell_back {
        tracing::info!(provider = %g.provider, cost_micros = cost, "fallback cost");
        metrics::counter!("switchboard_fallback_cost_micros_total", "provider" => g.provider.clone())
            .increment(cost.max(0) as u64);
    }
    metrics::counter!("switchboard_answers_total", "status" => status.to_owned(), "provider" => g.provider.clone())
        .increment(1);

    // `done` is published while `current` is gone, so give it the seq explicitly.
    let done_or_error = match &error {
        None => ServerFrame::Done {
            chat_id: s.chat_id,
            message_id: g.message.id,
            usage,
            cost_micros: cost,
            cost_usd: micros_to_usd(cost),
            provider: g.provider.clone(),
            model: g.model.clone(),
            finish_reason: reason.to_owned(),
        },
        Some(e) => ServerFrame::Error {
            code: ErrorCode::ProviderUnavailable,
            message: format!("the answer failed: {e}"),
            retry_after: match e {
                ProviderError::RateLimited { retry_after_secs } => *retry_after_secs,
                _ => None,
            },
            chat_id: Some(s.chat_id),
            message_id: Some(g.message.id),
        },
    };
    if error.is_some()
        && let Some(m) = stored
    {
        s.publish(&s.message_frame(m));
    }
    let event_id = Some(format!("{}:done", g.message.seq));
    s.deps
        .hub
        .publish(s.chat_id, &Outbound::new(&done_or_error, event_id));
    start_next(me, s).await;
}

/// Saves the running answer's text if it grew since the last save; off the actor.
fn checkpoint(s: &mut ChatState) {
    if let Some(g) = s.current.as_mut()
        && g.text.len() != g.saved_len
    {
        g.saved_len = g.text.len();
        let (db, id, text) = (s.deps.db.clone(), g.message.id, g.text.clone());
        tokio::spawn(async move {
            if let Err(e) = messages::checkpoint(&db, id, &text).await {
                tracing::warn!(message_id = %id, error = %e, "checkpoint failed");
            }
        });
    }
}

#[derive(Clone)]
pub struct ChatHandle {
    actor: ActorRef<ChatMsg>,
    pending: Arc<AtomicUsize>,
}

pub enum ChatSupervisorMsg {
    GetOrSpawn {
        chat_id: Uuid,
        reply: RpcReplyPort<Result<ChatHandle, ChatError>>,
    },
}

/// Finds a chat's actor, starting it through the supervisor on first use, so
/// there is never more than one per chat even under concurrent first use.
#[derive(Clone)]
pub struct ChatRegistry {
    actors: Arc<DashMap<Uuid, ChatHandle>>,
    supervisor: Arc<OnceLock<ActorRef<ChatSupervisorMsg>>>,
    mailbox_limit: usize,
}

impl ChatRegistry {
    pub fn new(mailbox_limit: usize) -> Self {
        Self {
            actors: Arc::default(),
            supervisor: Arc::default(),
            mailbox_limit,
        }
    }

    pub(super) fn set_supervisor(&self, sup: ActorRef<ChatSupervisorMsg>) {
        let _ = self.supervisor.set(sup);
    }

    async fn get_or_spawn(&self, chat_id: Uuid) -> Result<ChatHandle, ChatError> {
        if let Some(h) = self.actors.get(&chat_id) {
            return Ok(h.clone());
        }
        let sup = self.supervisor.get().ok_or(ChatError::Unavailable)?;
        match sup
            .call(
                |reply| ChatSupervisorMsg::GetOrSpawn { chat_id, reply },
                Some(CALL_TIMEOUT),
            )
            .await
        {
            Ok(CallResult::Success(r)) => r,
            _ => Err(ChatError::Unavailable),
        }
    }

    /// Calls the chat's actor through its bounded queue. An actor that stopped
    /// for idleness between lookup and call is replaced once.
    async fn call<T: Send + 'static>(
        &self,
        chat_id: Uuid,
        build: impl Fn(RpcReplyPort<Result<T, ChatError>>) -> ChatMsg,
    ) -> Result<T, ChatError> {
        for _ in 0..2 {
            let h = self.get_or_spawn(chat_id).await?;
            if h.pending.fetch_add(1, Ordering::Relaxed) >= self.mailbox_limit {
                h.pending.fetch_sub(1, Ordering::Relaxed);
                return Err(ChatError::Busy);
            }
            metrics::gauge!("switchboard_actor_queue_depth", "kind" => "chat").increment(1.0);
            match h.actor.call(&build, Some(CALL_TIMEOUT)).await {
                Ok(CallResult::Success(r)) => return r,
                Ok(CallResult::Timeout) => return Err(ChatError::Busy),
                Ok(CallResult::SenderError) | Err(_) => {
                    h.pending.fetch_sub(1, Ordering::Relaxed);
                    metrics::gauge!("switchboard_actor_queue_depth", "kind" => "chat")
                        .decrement(1.0);
                    self.actors
                        .remove_if(&chat_id, |_, cur| cur.actor.get_id() == h.actor.get_id());
                }
            }
        }
        Err(ChatError::Unavailable)
    }

    pub async fn send(&self, chat_id: Uuid, req: SendRequest) -> Result<Ack, ChatError> {
        self.call(chat_id, |reply| ChatMsg::Send {
            req: req.clone(),
            reply,
        })
        .await
    }

    pub async fn subscribe(
        &self,
        chat_id: Uuid,
        sub: Subscriber,
        since_seq: Option<i64>,
    ) -> Result<(), ChatError> {
        self.call(chat_id, |reply| ChatMsg::Subscribe {
            sub: sub.clone(),
            since_seq,
            reply,
        })
        .await
    }

    pub fn unsubscribe(&self, chat_id: Uuid, conn: ConnId, cancel_if_origin: bool, hub: &ChatHub) {
        hub.remove(chat_id, conn);
        if let Some(h) = self.actors.get(&chat_id) {
            let _ = h.actor.cast(ChatMsg::Unsubscribe {
                conn,
                cancel_if_origin,
            });
        }
    }

    pub async fn cancel(&self, chat_id: Uuid, message_id: Uuid) -> Result<(), ChatError> {
        // Only a live actor can have a running answer; don't start one to say no.
        let Some(h) = self.actors.get(&chat_id).map(|h| h.clone()) else {
            return Err(ChatError::NoSuchGeneration);
        };
        match h
            .actor
            .call(
                |reply| ChatMsg::Cancel { message_id, reply },
                Some(CALL_TIMEOUT),
            )
            .await
        {
            Ok(CallResult::Success(r)) => r,
            _ => Err(ChatError::NoSuchGeneration),
        }
    }

    /// The live actor of a chat, if any (operations and tests).
    pub fn actor(&self, chat_id: Uuid) -> Option<ActorRef<ChatMsg>> {
        self.actors.get(&chat_id).map(|h| h.actor.clone())
    }

    /// Stops a chat's actor (the chat was deleted).
    pub fn stop(&self, chat_id: Uuid) {
        if let Some((_, h)) = self.actors.remove(&chat_id) {
            h.actor.stop(Some("deleted".into()));
        }
    }

    pub fn live_count(&self) -> usize {
        self.actors.len()
    }
}

pub struct ChatSupervisor;

pub struct ChatSupervisorState {
    registry: ChatRegistry,
    deps: Arc<ChatDeps>,
    restarts: RestartLimiter,
    /// Chats whose actor crashed and has not started again: that start must
    /// fail the answers it left streaming.
    crashed: std::collections::HashSet<Uuid>,
}

impl Actor for ChatSupervisor {
    type Msg = ChatSupervisorMsg;
    type State = ChatSupervisorState;
    type Arguments = (ChatRegistry, Arc<ChatDeps>, RestartLimiter);

    async fn pre_start(
        &self,
        _me: ActorRef<Self::Msg>,
        (registry, deps, restarts): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(ChatSupervisorState {
            registry,
            deps,
            restarts,
            crashed: std::collections::HashSet::new(),
        })
    }

    async fn handle(
        &self,
        me: ActorRef<Self::Msg>,
        msg: Self::Msg,
        s: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let ChatSupervisorMsg::GetOrSpawn { chat_id, reply } = msg;
        let _ = reply.send(spawn_chat(&me, s, chat_id).await);
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
        let Some(chat_id) = s
            .registry
            .actors
            .iter()
            .find(|e| e.value().actor.get_id() == cell.get_id())
            .map(|e| *e.key())
        else {
            return Ok(());
        };
        s.registry.actors.remove(&chat_id);
        let Some(reason) = crash else { return Ok(()) };
        s.crashed.insert(chat_id);
        if !s.restarts.allow(&chat_id.to_string()) {
            tracing::error!(%chat_id, %reason, "chat actor keeps failing: given up until next use");
            return Ok(());
        }
        tracing::warn!(%chat_id, %reason, "chat actor died: restarting from Postgres");
        metrics::counter!("switchboard_actor_restarts_total", "kind" => "chat").increment(1);
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
) -> Result<ChatHandle, ChatError> {
    if let Some(h) = s.registry.actors.get(&chat_id) {
        return Ok(h.clone());
    }
    let pending = Arc::new(AtomicUsize::new(0));
    let recovering = s.crashed.remove(&chat_id);
    let args = ChatArgs {
        chat_id,
        deps: s.deps.clone(),
        pending: pending.clone(),
        recovering,
    };
    let spawned = Actor::spawn_linked(None, ChatActor, args, me.get_cell()).await;
    if spawned.is_err() && recovering {
        s.crashed.insert(chat_id);
    }
    match spawned {
        Ok((actor, _)) => {
            let h = ChatHandle { actor, pending };
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
