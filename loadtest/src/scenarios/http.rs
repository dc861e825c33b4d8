//! `http`: C workers, each with its own account and chat, each iteration
//! signing in, listing chats and sending a message over REST (JSON answer:
//! the finished assistant message). Each step has its own latency.
//!
//! With `--signin-rate R` it is an open loop of sign-ins alone instead: R a
//! second in all, round-robin over the C accounts, each timed from its
//! intended start, so a server that falls behind cannot hide it.

use std::{
    sync::{Arc, atomic::AtomicU64},
    time::{Duration, Instant},
};

use clap::Args;
use futures::{StreamExt, stream};
use serde_json::{Value, json};

use super::{Common, Run, join_all_until};
use crate::{
    api::{self, Account, ApiError},
    stats::RunResult,
};

#[derive(Debug, Clone, Args)]
pub struct HttpArgs {
    #[command(flatten)]
    pub common: Common,
    /// Workers, each with its own account (sign-in is throttled per email).
    #[arg(long, default_value_t = 50)]
    pub concurrency: usize,
    #[arg(
        long,
        default_value = "What is a good way to measure an API's tail latency?"
    )]
    pub content: String,
    /// Open loop: only sign-ins, this many a second (0: the closed-loop iterations).
    #[arg(long, default_value_t = 0.0)]
    pub signin_rate: f64,
}

pub async fn run(args: HttpArgs) -> Result<RunResult, String> {
    let c = args.concurrency.max(1);
    let run = Run::new("http", args.common.clone(), c).await?;
    let accounts =
        api::create_accounts(&run.api, &run.run_id, c, run.common.setup_concurrency).await?;
    let api = &run.api;
    let chats: Vec<Result<uuid::Uuid, ApiError>> = stream::iter(&accounts)
        .map(|a| api.create_chat(&a.token, "load test (REST)"))
        .buffered(16)
        .collect()
        .await;
    let chats = chats
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot create a chat: {e}"))?;

    run.begin_measuring();
    let run = Arc::new(run);
    let issued = Arc::new(AtomicU64::new(0));
    if args.signin_rate > 0.0 {
        return Ok(signin_open_loop(run, &accounts, &issued, args.signin_rate).await);
    }
    let tasks: Vec<_> = accounts
        .into_iter()
        .zip(chats)
        .enumerate()
        .map(|(w, (account, chat))| {
            let run = run.clone();
            let issued = issued.clone();
            let content = args.content.clone();
            tokio::spawn(async move {
                let mut i = 0u64;
                while run.claim(&issued) {
                    run.rec.begin();
                    let ok = iteration(
                        &run,
                        &account,
                        chat,
                        &content,
                        &format!("lt-{}-{w}-{i}", run.run_id),
                    )
                    .await;
                    run.rec.end(ok);
                    if !ok {
                        // Do not spin on a failing server.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    i += 1;
                }
            })
        })
        .collect();
    join_all_until(tasks, run.duration() + Duration::from_secs(330), &run.rec).await;
    let params = json!({
        "concurrency": c,
        "duration_limit_secs": run.common.duration,
        "count_limit": run.common.count,
        "steps": ["POST /api/auth/signin", "GET /api/chats", "POST /api/chats/{id}/messages (JSON)"],
    });
    Ok(run.finish(params, json!({})).await)
}

/// Starts a sign-in every 1/`rate` s until the duration or count runs out;
/// `signin` latency counts from each one's intended start.
async fn signin_open_loop(
    run: Arc<Run>,
    accounts: &[Account],
    issued: &AtomicU64,
    rate: f64,
) -> RunResult {
    let every = Duration::from_secs_f64(1.0 / rate);
    let began = Instant::now();
    let mut tasks = Vec::new();
    let mut n = 0u32;
    loop {
        let intended = began + every * n;
        tokio::time::sleep_until(intended.into()).await;
        if !run.claim(issued) {
            break;
        }
        let account = accounts[n as usize % accounts.len()].clone();
        let run = run.clone();
        tasks.push(tokio::spawn(async move {
            run.rec.begin();
            run.rec.record("send_lag", intended.elapsed());
            let ok = match run.api.signin(&account.email, &account.password).await {
                Ok(_) => {
                    run.rec.record("signin", intended.elapsed());
                    true
                }
                Err(e) => {
                    run.rec.error(&e.code);
                    false
                }
            };
            run.rec.end(ok);
        }));
        n += 1;
    }
    join_all_until(tasks, Duration::from_secs(60), &run.rec).await;
    let params = json!({
        "concurrency": accounts.len(),
        "mode": "open",
        "signin_rate": rate,
        "duration_limit_secs": run.common.duration,
        "count_limit": run.common.count,
        "steps": ["POST /api/auth/signin"],
    });
    run.finish(params, json!({})).await
}

/// One sign-in, one listing, one REST send; false at the first failure.
async fn iteration(
    run: &Run,
    account: &Account,
    chat: uuid::Uuid,
    content: &str,
    client_msg_id: &str,
) -> bool {
    let rec = &run.rec;
    let fail = |e: ApiError| {
        rec.error(&e.code);
        if rec.error_total() <= 5 {
            eprintln!("[http] {e}");
        }
        false
    };
    let t = Instant::now();
    let token = match run.api.signin(&account.email, &account.password).await {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    rec.record("signin", t.elapsed());
    let t = Instant::now();
    if let Err(e) = run.api.list_chats(&token).await {
        return fail(e);
    }
    rec.record("list_chats", t.elapsed());
    let t = Instant::now();
    match run
        .api
        .send_message(&token, chat, content, client_msg_id)
        .await
    {
        Ok(answer) => {
            rec.record("rest_send", t.elapsed());
            let status = answer.get("status").and_then(Value::as_str).unwrap_or("");
            if status != "complete" {
                rec.error(&format!("answer_{status}"));
                return false;
            }
            true
        }
        Err(e) => fail(e),
    }
}
