//! `connections`: open N authenticated WebSockets, check each is live (a
//! `ping` frame answered by `pong`), hold them idle, and report the server's
//! memory per connection: (RSS with the sockets open − RSS before) / N.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use clap::Args;
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

use super::{Common, Run, join_all_until};
use crate::{
    api, procfs,
    stats::RunResult,
    ws::{self, Frame, Ws},
};

#[derive(Debug, Clone, Args)]
pub struct ConnectionsArgs {
    #[command(flatten)]
    pub common: Common,
    /// Sockets to open and hold.
    #[arg(long, default_value_t = 2000)]
    pub connections: usize,
    /// Sockets per account (the server allows `ws.max_connections_per_user`, 32 by default).
    #[arg(long, default_value_t = 30)]
    pub per_account: usize,
    /// Connection attempts in flight at once.
    #[arg(long, default_value_t = 128)]
    pub connect_concurrency: usize,
    /// How long to hold the sockets open once all are live, in seconds (within --duration).
    #[arg(long, default_value_t = 10)]
    pub hold_secs: u64,
    /// Wait after the last pong before reading the server's RSS.
    #[arg(long, default_value_t = 2000)]
    pub settle_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Hold,
    Ping,
    Close,
}

/// What a socket task reports back.
enum Report {
    Connected(bool),
    Ponged(bool),
}

pub async fn run(args: ConnectionsArgs) -> Result<RunResult, String> {
    let n = args.connections.max(1);
    let per_account = args.per_account.max(1);
    let run = Arc::new(Run::new("connections", args.common.clone(), 16).await?);

    // File descriptors: each socket needs one here and one in the server.
    let own = procfs::max_open_files(None).unwrap_or(0);
    if own < n as u64 + 64 {
        return Err(format!(
            "this process may open {own} files; {n} sockets need about {} (raise `ulimit -n`)",
            n + 64
        ));
    }
    let server_limit = run
        .common
        .server_pid
        .and_then(|p| procfs::max_open_files(Some(p)));
    if let Some(limit) = server_limit
        && limit < n as u64 + 64
    {
        return Err(format!(
            "the server may open {limit} files; {n} sockets need more (start it with a higher `ulimit -n`)"
        ));
    }

    let accounts = api::create_accounts(
        &run.api,
        &run.run_id,
        n.div_ceil(per_account),
        run.common.setup_concurrency,
    )
    .await?;
    let sources = run.sources(n);

    // Let the server settle after the sign-ups before the baseline.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = run.common.server_pid;
    let before = pid.and_then(|p| procfs::sample(Some(p)));
    run.begin_measuring();
    let began = Instant::now();

    let (phase_tx, phase_rx) = watch::channel(Phase::Hold);
    let (report_tx, mut report_rx) = mpsc::unbounded_channel();
    let permits = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let run = run.clone();
            let token = accounts[i / per_account].token.clone();
            let source = (!sources.is_empty()).then(|| sources[i % sources.len()]);
            let permits = permits.clone();
            let phase = phase_rx.clone();
            let report = report_tx.clone();
            tokio::spawn(async move {
                let permit = permits.acquire_owned().await.expect("semaphore open");
                if run.rec.stopping() {
                    let _ = report.send(Report::Connected(false));
                    return;
                }
                run.rec.begin();
                let t = Instant::now();
                let ws = match ws::connect(&run.target, source, &token).await {
                    Ok(ws) => ws,
                    Err((code, msg)) => {
                        run.rec.error(&code);
                        if run.rec.error_total() <= 5 {
                            eprintln!("[connections] connect failed: {code}: {msg}");
                        }
                        run.rec.end(false);
                        let _ = report.send(Report::Connected(false));
                        return;
                    }
                };
                run.rec.record("connect", t.elapsed());
                drop(permit);
                let _ = report.send(Report::Connected(true));
                hold(&run, ws, phase, report).await;
            })
        })
        .collect();
    drop(report_tx);

    // 1. Every attempt has ended.
    let (mut connected, mut attempts) = (0usize, 0usize);
    // Sockets that closed early answer the ping round at once, with a failure.
    let (mut ponged, mut answered) = (0usize, 0usize);
    while attempts < n {
        match tokio::time::timeout(run.duration(), report_rx.recv()).await {
            Ok(Some(Report::Connected(ok))) => {
                attempts += 1;
                connected += usize::from(ok);
            }
            Ok(Some(Report::Ponged(ok))) => {
                answered += 1;
                ponged += usize::from(ok);
            }
            Ok(None) | Err(_) => break,
        }
    }
    let connect_secs = began.elapsed().as_secs_f64();
    eprintln!("[connections] {connected} of {n} sockets open in {connect_secs:.1}s");

    // 2. Every open socket answers a ping frame, so the server has finished setting each up.
    let _ = phase_tx.send(Phase::Ping);
    while answered < connected {
        match tokio::time::timeout(Duration::from_secs(30), report_rx.recv()).await {
            Ok(Some(Report::Ponged(ok))) => {
                answered += 1;
                ponged += usize::from(ok);
            }
            Ok(Some(Report::Connected(_))) => {}
            Ok(None) | Err(_) => break,
        }
    }
    let _ = phase_tx.send(Phase::Hold);
    tokio::time::sleep(Duration::from_millis(args.settle_ms)).await;
    let loaded = pid.and_then(|p| procfs::sample(Some(p)));

    // 3. Hold them idle, within --duration.
    let hold_until = (began + Duration::from_secs(args.hold_secs.max(1)))
        .max(Instant::now())
        .min(began + run.duration());
    tokio::time::sleep_until(hold_until.into()).await;
    let held = pid.and_then(|p| procfs::sample(Some(p)));
    let open_at_end = run.rec.in_flight();

    // 4. Close them all, and see what the server gives back.
    let _ = phase_tx.send(Phase::Close);
    join_all_until(tasks, Duration::from_secs(30), &run.rec).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let closed = pid.and_then(|p| procfs::sample(Some(p)));

    let kib = |s: &Option<procfs::Sample>| s.map(|s| s.rss_kib);
    let per_conn = match (before, loaded) {
        (Some(b), Some(l)) if ponged > 0 => {
            Some((l.rss_kib as f64 - b.rss_kib as f64) * 1024.0 / ponged as f64)
        }
        _ => None,
    };
    let extra = json!({
        "requested": n,
        "connected": connected,
        "live": ponged,
        "open_at_end_of_hold": open_at_end,
        "connect_secs": connect_secs,
        "connects_per_sec": if connect_secs > 0.0 { connected as f64 / connect_secs } else { 0.0 },
        "server_rss_before_kib": kib(&before),
        "server_rss_loaded_kib": kib(&loaded),
        "server_rss_end_of_hold_kib": kib(&held),
        "server_rss_after_close_kib": kib(&closed),
        "server_bytes_per_connection": per_conn,
        "server_open_files_limit": server_limit,
    });
    let params = json!({
        "connections": n,
        "per_account": per_account,
        "accounts": n.div_ceil(per_account),
        "connect_concurrency": args.connect_concurrency,
        "hold_secs": args.hold_secs,
        "settle_ms": args.settle_ms,
        "source_ips": sources.len(),
    });
    Ok(run.finish(params, extra).await)
}

/// Keeps one socket open (reading, so the server's pings get their pongs)
/// and follows the phases: answer a `ping` round, then close.
async fn hold(
    run: &Run,
    mut ws: Ws,
    mut phase: watch::Receiver<Phase>,
    report: mpsc::UnboundedSender<Report>,
) {
    let mut ping_sent: Option<Instant> = None;
    // Whether this socket has answered the ping round (well or not).
    let mut answered = false;
    loop {
        tokio::select! {
            changed = phase.changed() => {
                if changed.is_err() {
                    break;
                }
                let now = *phase.borrow_and_update();
                match now {
                    Phase::Ping => {
                        ping_sent = Some(Instant::now());
                        if ws.send(Message::text(r#"{"type":"ping"}"#)).await.is_err() {
                            run.rec.error("ws_send_failed");
                            if !answered {
                                let _ = report.send(Report::Ponged(false));
                            }
                            run.rec.end(false);
                            return;
                        }
                    }
                    Phase::Close => break,
                    Phase::Hold => {}
                }
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    if let Ok(f) = serde_json::from_str::<Frame>(&t) {
                        if f.kind == "pong" {
                            if let Some(sent) = ping_sent.take() {
                                run.rec.record("pong", sent.elapsed());
                                answered = true;
                                let _ = report.send(Report::Ponged(true));
                            }
                        } else if f.kind == "error" {
                            run.rec.error(f.code.as_deref().unwrap_or("error"));
                        }
                    }
                }
                Some(Ok(Message::Close(close))) => {
                    let code = close.map_or(1005, |c| u16::from(c.code));
                    run.rec.error(&format!("ws_closed_{code}"));
                    if !answered {
                        let _ = report.send(Report::Ponged(false));
                    }
                    run.rec.end(false);
                    return;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    run.rec.error("ws_closed");
                    if !answered {
                        let _ = report.send(Report::Ponged(false));
                    }
                    run.rec.end(false);
                    return;
                }
            }
        }
    }
    let ok = ws.close(None).await.is_ok();
    if !ok {
        run.rec.error("ws_close_failed");
    }
    run.rec.end(ok);
}
