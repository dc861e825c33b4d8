//! `ws-chat`: N users, each on its own WebSocket and chat, each sending M
//! messages one after another and reading the streamed answer: send → `ack`
//! (ack latency), → first `delta` of the answer (TTFT), → `done` (total).
//!
//! Against a cluster (`--node-url`, repeatable) the users' sockets are spread
//! over the nodes; with `--watch` each user also follows its chat from a
//! second socket on the next node, which measures what a client of another
//! node sees: send → that socket's first delta (`watch_ttft`) and `done`
//! (`watch_done`).

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use clap::Args;
use futures::{SinkExt, StreamExt, stream};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use super::{Common, Run, join_all_until};
use crate::{
    api::{self, ApiError},
    procfs::{self, ProcStats, Sample},
    stats::{Recorder, RunResult},
    target::{self, Target},
    ws::{self, Frame, Ws},
};

#[derive(Debug, Clone, Args)]
pub struct WsChatArgs {
    #[command(flatten)]
    pub common: Common,
    /// Simulated users, each with its own WebSocket and chat.
    #[arg(long, default_value_t = 100)]
    pub users: usize,
    /// Messages each user sends, one after another (the next after the answer's `done`).
    #[arg(long, default_value_t = 5)]
    pub messages: usize,
    /// Users sharing one account (at most 30: the server allows 32 sockets per
    /// account); 1 gives every user an account of its own.
    #[arg(long, default_value_t = 1)]
    pub per_account: usize,
    /// Pacing: each user starts a message every this many ms (0: back to back).
    #[arg(long, default_value_t = 0)]
    pub interval_ms: u64,
    /// Spread the users' first messages evenly over this many ms.
    #[arg(long, default_value_t = 1000)]
    pub ramp_ms: u64,
    /// Longest wait for one answer's `done`.
    #[arg(long, default_value_t = 60)]
    pub timeout_secs: u64,
    #[arg(
        long,
        default_value = "Tell me, briefly, why load tests should measure latency percentiles."
    )]
    pub content: String,
    /// A model to ask for (default: the server's routing picks).
    #[arg(long)]
    pub model: Option<String>,
    /// Skip the warm-up: by default each socket subscribes to its chat during
    /// setup (so the server has started the chat before the clock runs); with
    /// --cold the first message of every chat pays for that in the measurement.
    #[arg(long)]
    pub cold: bool,
    /// Open loop: send this many messages per second in all, on a fixed
    /// schedule spread over the users, whether or not earlier answers came
    /// back; `ack` is measured from each message's intended send time, so a
    /// slow server cannot hide latency by slowing the sender (0: closed loop).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Another node of the same cluster (repeatable, loopback only): user i
    /// connects to node i mod n, where --url is node 0.
    #[arg(long = "node-url")]
    pub node_urls: Vec<String>,
    /// The other nodes' process ids (same order as --node-url), for their CPU and memory.
    #[arg(long = "node-pid")]
    pub node_pids: Vec<u32>,
    /// Each user also follows its chat from a second socket, on the next node
    /// (the same node when there is only one); closed loop only.
    #[arg(long)]
    pub watch: bool,
}

/// One user's connection.
struct Client {
    ws: Ws,
    chat_id: Uuid,
    /// With `--watch`: when each of this user's messages was sent, by `client_msg_id`.
    sent: Option<Arc<SentAt>>,
}

type SentAt = std::sync::Mutex<HashMap<String, Instant>>;

/// How one exchange ended.
enum Outcome {
    Done,
    /// The message failed (an error frame, a timeout); the socket is still usable.
    Failed,
    /// The socket is gone; this user stops.
    Closed,
}

pub async fn run(args: WsChatArgs) -> Result<RunResult, String> {
    let users = args.users.max(1);
    let per_account = args.per_account.clamp(1, 32);
    let run = Run::new("ws-chat", args.common.clone(), 64).await?;
    let accounts_n = users.div_ceil(per_account);
    let accounts = api::create_accounts(
        &run.api,
        &run.run_id,
        accounts_n,
        run.common.setup_concurrency,
    )
    .await?;

    // A chat per user, then its socket.
    let sources = run.sources(users);
    let setup = Instant::now();
    let api = &run.api;
    let chats: Vec<Result<Uuid, ApiError>> = stream::iter(0..users)
        .map(|i| {
            let token = accounts[i / per_account].token.clone();
            async move { api.create_chat(&token, &format!("load test {i}")).await }
        })
        .buffered(32)
        .collect()
        .await;
    let mut nodes = vec![run.target.clone()];
    for url in &args.node_urls {
        nodes.push(target::resolve(url).await?);
    }
    let nodes = &nodes;
    let watch = args.watch && args.rate <= 0.0;
    let sockets: Vec<Result<(Client, Option<Client>), String>> =
        stream::iter(chats.into_iter().enumerate())
            .map(|(i, chat)| {
                let token = accounts[i / per_account].token.clone();
                let source = (!sources.is_empty()).then(|| sources[i % sources.len()]);
                async move {
                    let chat_id = chat.map_err(|e| format!("cannot create a chat: {e}"))?;
                    let ws = open(&nodes[i % nodes.len()], source, &token).await?;
                    let sent = watch.then(|| Arc::new(SentAt::default()));
                    let watcher = match &sent {
                        Some(sent) => Some(Client {
                            ws: open(&nodes[(i + 1) % nodes.len()], source, &token).await?,
                            chat_id,
                            sent: Some(sent.clone()),
                        }),
                        None => None,
                    };
                    Ok((Client { ws, chat_id, sent }, watcher))
                }
            })
            .buffered(64)
            .collect()
            .await;
    let (mut clients, watchers): (Vec<Client>, Vec<Option<Client>>) = sockets
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .unzip();
    let mut watchers: Vec<Client> = watchers.into_iter().flatten().collect();
    if !args.cold || watch {
        let warmed: Vec<Result<(), String>> = stream::iter(clients.iter_mut())
            .chain(stream::iter(watchers.iter_mut()))
            .map(warm_up)
            .buffer_unordered(64)
            .collect()
            .await;
        warmed.into_iter().collect::<Result<Vec<_>, _>>()?;
    }
    eprintln!(
        "[setup] {users} chats and sockets{} in {:.1}s",
        if args.cold { "" } else { ", subscribed" },
        setup.elapsed().as_secs_f64()
    );

    run.begin_measuring();
    let node_samples: Vec<Option<Sample>> = args
        .node_pids
        .iter()
        .map(|&p| procfs::sample(Some(p)))
        .collect();
    let run = Arc::new(run);
    let watching: Vec<_> = watchers
        .into_iter()
        .map(|w| {
            let run = run.clone();
            tokio::spawn(async move { watch_loop(&run, w).await })
        })
        .collect();
    let issued = Arc::new(AtomicU64::new(0));
    let began = Instant::now();
    let open_loop = args.rate > 0.0;
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, client)| {
            let run = run.clone();
            let issued = issued.clone();
            let args = args.clone();
            tokio::spawn(async move {
                if open_loop {
                    // User i sends every users/rate seconds, i/rate after the start.
                    let every = Duration::from_secs_f64(users as f64 / args.rate);
                    let first = began + Duration::from_secs_f64(i as f64 / args.rate);
                    open_loop_user(&run, &args, &issued, i, client, first, every).await;
                } else {
                    let offset = Duration::from_millis(args.ramp_ms) * i as u32 / users as u32;
                    user_loop(&run, &args, &issued, i, client, began + offset).await;
                }
            })
        })
        .collect();
    let deadline = run.duration() + Duration::from_secs(args.timeout_secs + 5);
    join_all_until(tasks, deadline, &run.rec).await;
    // The watchers have seen every `done` their users saw, or never will.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for w in watching {
        w.abort();
    }
    let node_stats: Vec<Option<ProcStats>> = args
        .node_pids
        .iter()
        .zip(&node_samples)
        .map(|(&pid, before)| {
            let after = procfs::sample(Some(pid))?;
            Some(ProcStats::between(
                Some(pid),
                before.as_ref()?,
                &after,
                after.rss_kib,
            ))
        })
        .collect();

    let params = json!({
        "users": users,
        "messages": args.messages,
        "accounts": accounts_n,
        "per_account": per_account,
        "interval_ms": args.interval_ms,
        "ramp_ms": args.ramp_ms,
        "duration_limit_secs": run.common.duration,
        "count_limit": run.common.count,
        "model": args.model,
        "provider_ttft_ms": run.common.provider_ttft_ms,
        "source_ips": sources.len(),
        "warm_up": !args.cold,
        "mode": if open_loop { "open" } else { "closed" },
        "rate": if open_loop { json!(args.rate) } else { json!(null) },
        "nodes": nodes.len(),
        "watch": watch,
    });
    let mut extra = if open_loop {
        json!({ "answers_done": run.rec.answers.load(Ordering::Relaxed) })
    } else {
        json!({})
    };
    if !node_stats.is_empty() {
        extra["other_nodes"] = json!(node_stats);
    }
    Ok(run.finish(params, extra).await)
}

/// A socket to `node`, authenticated with `token`.
async fn open(node: &Target, source: Option<std::net::IpAddr>, token: &str) -> Result<Ws, String> {
    ws::connect(node, source, token)
        .await
        .map_err(|(code, msg)| format!("cannot open the WebSocket to {}: {code}: {msg}", node.base))
}

/// Subscribes the socket to its chat and waits for the `pong` of a `ping`
/// sent after it (the server handles a socket's frames in order).
async fn warm_up(client: &mut Client) -> Result<(), String> {
    let subscribe = json!({"type": "subscribe", "chat_id": client.chat_id}).to_string();
    for frame in [subscribe, r#"{"type":"ping"}"#.to_owned()] {
        client
            .ws
            .send(Message::text(frame))
            .await
            .map_err(|e| format!("warm-up: send failed: {e}"))?;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match tokio::time::timeout_at(deadline.into(), client.ws.next()).await {
            Err(_) => return Err("warm-up: no pong within 60 s".into()),
            Ok(Some(Ok(Message::Text(t)))) => {
                if let Ok(f) = serde_json::from_str::<Frame>(&t) {
                    match f.kind.as_str() {
                        "pong" => return Ok(()),
                        "error" => {
                            return Err(format!(
                                "warm-up: subscribe failed: {}: {}",
                                f.code.as_deref().unwrap_or("error"),
                                f.error_text()
                            ));
                        }
                        _ => {}
                    }
                }
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => return Err(format!("warm-up: read failed: {e}")),
            Ok(None) => return Err("warm-up: the socket closed".into()),
        }
    }
}

async fn user_loop(
    run: &Run,
    args: &WsChatArgs,
    issued: &AtomicU64,
    user: usize,
    mut client: Client,
    start_at: Instant,
) {
    tokio::time::sleep_until(start_at.into()).await;
    let interval = Duration::from_millis(args.interval_ms);
    for m in 0..args.messages {
        if !run.claim(issued) {
            break;
        }
        let client_msg_id = format!("lt-{}-{user}-{m}", run.run_id);
        match exchange(run, args, &mut client, &client_msg_id).await {
            Outcome::Done | Outcome::Failed => {}
            Outcome::Closed => return,
        }
        if !interval.is_zero() {
            let next = start_at + interval * (m as u32 + 1);
            tokio::time::sleep_until(next.into()).await;
        }
    }
    let _ = client.ws.close(None).await;
}

/// Sends one message and follows it to its answer's `done`.
async fn exchange(
    run: &Run,
    args: &WsChatArgs,
    client: &mut Client,
    client_msg_id: &str,
) -> Outcome {
    let rec: &Recorder = &run.rec;
    let mut frame = json!({
        "type": "send",
        "chat_id": client.chat_id,
        "client_msg_id": client_msg_id,
        "content": args.content,
    });
    if let Some(model) = &args.model {
        frame["model"] = json!(model);
    }
    let sent = Instant::now();
    if let Some(at) = &client.sent {
        at.lock()
            .expect("sent")
            .insert(client_msg_id.to_owned(), sent);
    }
    rec.begin();
    if let Err(e) = client.ws.send(Message::text(frame.to_string())).await {
        rec.error("ws_send_failed");
        eprintln!("[ws-chat] send failed: {e}");
        rec.end(false);
        return Outcome::Closed;
    }
    let deadline = sent + Duration::from_secs(args.timeout_secs);
    let mut acked = false;
    let mut user_message: Option<Uuid> = None;
    let mut answer: Option<Uuid> = None;
    let mut first_delta = false;
    loop {
        let next = match tokio::time::timeout_at(deadline.into(), client.ws.next()).await {
            Ok(n) => n,
            Err(_) => {
                rec.error("timeout");
                rec.end(false);
                return Outcome::Failed;
            }
        };
        let text = match next {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(close))) => {
                let code = close.map_or(1005, |c| u16::from(c.code));
                rec.error(&format!("ws_closed_{code}"));
                rec.end(false);
                return Outcome::Closed;
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                rec.error("ws_read_error");
                eprintln!("[ws-chat] read failed: {e}");
                rec.end(false);
                return Outcome::Closed;
            }
            None => {
                rec.error("ws_closed");
                rec.end(false);
                return Outcome::Closed;
            }
        };
        let Ok(f) = serde_json::from_str::<Frame>(&text) else {
            rec.error("bad_frame");
            continue;
        };
        match f.kind.as_str() {
            "ack" if f.client_msg_id.as_deref() == Some(client_msg_id) => {
                acked = true;
                rec.acked.fetch_add(1, Ordering::Relaxed);
                rec.record("ack", sent.elapsed());
                user_message = user_message.or(f.message_id);
            }
            "message" => {
                if let Some(m) = f.message_info() {
                    if m.role == "user" && m.client_msg_id.as_deref() == Some(client_msg_id) {
                        user_message = Some(m.id);
                    } else if m.role == "assistant"
                        && user_message.is_some()
                        && m.reply_to == user_message
                    {
                        answer = Some(m.id);
                    }
                }
            }
            "delta" if !first_delta && answer.is_some() && f.message_id == answer => {
                first_delta = true;
                rec.record("ttft", sent.elapsed());
            }
            "done" if answer.is_some() && f.message_id == answer => {
                rec.record("total", sent.elapsed());
                if !acked {
                    rec.error("done_without_ack");
                }
                let reason = f.finish_reason.as_deref().unwrap_or("");
                let ok = matches!(reason, "stop" | "length");
                if !ok {
                    rec.error(&format!("finish_{reason}"));
                }
                rec.end(ok);
                return Outcome::Done;
            }
            "error" => {
                let ours = f.chat_id.is_none_or(|c| c == client.chat_id)
                    && f.message_id
                        .is_none_or(|m| Some(m) == user_message || Some(m) == answer);
                if ours {
                    let code = f.code.as_deref().unwrap_or("error");
                    rec.error(code);
                    if rec.error_total() <= 5 {
                        eprintln!("[ws-chat] error {code}: {}", f.error_text());
                    }
                    rec.end(false);
                    return Outcome::Failed;
                }
            }
            _ => {}
        }
    }
}

/// Open loop: sends on a fixed schedule (`first`, then every `every`) until
/// the duration or count runs out, reading acks and answers as they come.
/// One operation is one message until its `ack`; `ack` latency counts from
/// the intended send time, `send_lag` is how late the sender itself was.
async fn open_loop_user(
    run: &Run,
    args: &WsChatArgs,
    issued: &AtomicU64,
    user: usize,
    client: Client,
    first: Instant,
    every: Duration,
) {
    let rec: &Recorder = &run.rec;
    let (mut sink, mut stream) = client.ws.split();
    let pending = std::sync::Mutex::new(std::collections::HashMap::<String, Instant>::new());
    let writing_done = std::sync::atomic::AtomicBool::new(false);
    // Wakes the reader when the writer stops: with every message acked it
    // can stop now instead of waiting for a frame that may never come.
    let stopped = tokio::sync::Notify::new();
    let answers = AtomicU64::new(0);
    let writer = async {
        let mut m = 0u32;
        loop {
            let intended = first + every * m;
            tokio::time::sleep_until(intended.into()).await;
            if !run.claim(issued) {
                break;
            }
            let client_msg_id = format!("lt-{}-{user}-{m}", run.run_id);
            let mut frame = json!({
                "type": "send",
                "chat_id": client.chat_id,
                "client_msg_id": client_msg_id,
                "content": args.content,
            });
            if let Some(model) = &args.model {
                frame["model"] = json!(model);
            }
            pending
                .lock()
                .expect("pending")
                .insert(client_msg_id, intended);
            rec.begin();
            rec.record("send_lag", intended.elapsed());
            if let Err(e) = sink.send(Message::text(frame.to_string())).await {
                rec.error("ws_send_failed");
                eprintln!("[ws-chat] send failed: {e}");
                break;
            }
            m += 1;
        }
        writing_done.store(true, Ordering::Relaxed);
        stopped.notify_one();
    };
    let reader = async {
        let grace = Duration::from_secs(args.timeout_secs);
        loop {
            let idle_done =
                writing_done.load(Ordering::Relaxed) && pending.lock().expect("pending").is_empty();
            if idle_done {
                return;
            }
            let frame = tokio::select! {
                f = tokio::time::timeout(grace, stream.next()) => f,
                () = stopped.notified() => continue,
            };
            let next = match frame {
                Ok(Some(Ok(Message::Text(t)))) => t,
                Ok(Some(Ok(Message::Close(_))) | None) | Ok(Some(Err(_))) => {
                    rec.error("ws_closed");
                    return;
                }
                Ok(Some(Ok(_))) => continue,
                Err(_) => {
                    if writing_done.load(Ordering::Relaxed) {
                        return;
                    }
                    continue;
                }
            };
            let Ok(f) = serde_json::from_str::<Frame>(&next) else {
                rec.error("bad_frame");
                continue;
            };
            match f.kind.as_str() {
                "ack" => {
                    let intended = f
                        .client_msg_id
                        .as_deref()
                        .and_then(|id| pending.lock().expect("pending").remove(id));
                    if let Some(intended) = intended {
                        rec.acked.fetch_add(1, Ordering::Relaxed);
                        rec.record("ack", intended.elapsed());
                        rec.end(true);
                    }
                }
                "done" => {
                    answers.fetch_add(1, Ordering::Relaxed);
                }
                "error" => {
                    let code = f.code.as_deref().unwrap_or("error");
                    rec.error(code);
                    if rec.error_total() <= 5 {
                        eprintln!("[ws-chat] error {code}: {}", f.error_text());
                    }
                }
                _ => {}
            }
        }
    };
    tokio::join!(writer, reader);
    // Messages never acked count as failed.
    let lost = pending.lock().expect("pending").len();
    for _ in 0..lost {
        rec.error("no_ack");
        rec.end(false);
    }
    rec.answers
        .fetch_add(answers.load(Ordering::Relaxed), Ordering::Relaxed);
    if let Ok(ws) = sink.reunite(stream) {
        let mut ws = ws;
        let _ = ws.close(None).await;
    }
}

/// A second socket following a user's chat (`--watch`): times each answer
/// from its message's send to this socket's first delta and `done`. Runs
/// until aborted; what it sees of other messages is ignored.
async fn watch_loop(run: &Run, mut watcher: Client) {
    let Some(sent) = watcher.sent.clone() else {
        return;
    };
    // user message id → send time, then answer id → send time
    let mut questions: HashMap<Uuid, Instant> = HashMap::new();
    let mut answers: HashMap<Uuid, (Instant, bool)> = HashMap::new();
    while let Some(Ok(msg)) = watcher.ws.next().await {
        let Message::Text(text) = msg else { continue };
        let Ok(f) = serde_json::from_str::<Frame>(&text) else {
            continue;
        };
        match f.kind.as_str() {
            "message" => {
                let Some(m) = f.message_info() else { continue };
                if m.role == "user" {
                    let at = m
                        .client_msg_id
                        .as_deref()
                        .and_then(|id| sent.lock().expect("sent").remove(id));
                    if let Some(at) = at {
                        questions.insert(m.id, at);
                    }
                } else if let Some(at) = m.reply_to.and_then(|q| questions.remove(&q)) {
                    answers.entry(m.id).or_insert((at, false));
                }
            }
            "delta" => {
                if let Some((at, seen)) = f.message_id.and_then(|id| answers.get_mut(&id))
                    && !*seen
                {
                    *seen = true;
                    run.rec.record("watch_ttft", at.elapsed());
                }
            }
            "done" => {
                if let Some((at, _)) = f.message_id.and_then(|id| answers.remove(&id)) {
                    run.rec.record("watch_done", at.elapsed());
                }
            }
            _ => {}
        }
    }
}
