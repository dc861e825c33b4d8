//! A socket's writer task: drains its bounded outbound queue (batched, one
//! flush per batch), pings, and closes — on the reader's word, a slow
//! consumer (4008), a silent peer (4002) or shutdown (`error` + 1001, after
//! what is queued). Every write has a deadline.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::extract::ws::{Message as WsMessage, WebSocket};
use futures::SinkExt;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{CLOSE_GOING_AWAY, CLOSE_HEARTBEAT, CLOSE_SLOW_CONSUMER, WRITE_BATCH, close, text};
use crate::{actors::hub::Outbound, error::ErrorCode, protocol::ServerFrame};

pub(super) struct WriterTiming {
    pub(super) ping_every: Duration,
    pub(super) idle: Duration,
    pub(super) started: Instant,
    pub(super) last_seen: Arc<AtomicU64>,
    /// One write (or flush) may take this long; then the peer is given up.
    pub(super) write_timeout: Duration,
    /// The slow consumer's goodbye (error frame and close) may take this long.
    pub(super) slow_grace: Duration,
    /// Cancelled when the writer returns, for whatever reason.
    pub(super) gone: CancellationToken,
}

/// Runs `op` (a write or flush) under `limit`; false when it failed or took too long.
async fn within<E>(limit: Duration, op: impl Future<Output = Result<(), E>>) -> bool {
    matches!(tokio::time::timeout(limit, op).await, Ok(Ok(())))
}

pub(super) async fn write_loop(
    mut sink: futures::stream::SplitSink<WebSocket, WsMessage>,
    mut rx: mpsc::Receiver<Outbound>,
    mut close_rx: oneshot::Receiver<(u16, &'static str)>,
    overflow: CancellationToken,
    closing: CancellationToken,
    t: WriterTiming,
) {
    let _gone = t.gone.clone().drop_guard();
    let limit = t.write_timeout;
    let mut ping = tokio::time::interval(t.ping_every);
    ping.tick().await;
    // Until the reader asked for a close or ended without one.
    let mut close_pending = true;
    loop {
        // Biased: a close decided by the reader wins over frames still queued.
        tokio::select! {
            biased;
            asked = &mut close_rx, if close_pending => {
                close_pending = false;
                if let Ok((code, reason)) = asked {
                    let _ = within(limit, sink.send(close(code, reason))).await;
                    return;
                }
            }
            () = overflow.cancelled() => {
                let err = ServerFrame::error(ErrorCode::SlowConsumer, "outbound queue full: reading too slowly");
                let goodbye = async {
                    sink.send(text(&err)).await?;
                    sink.send(close(CLOSE_SLOW_CONSUMER, "slow consumer")).await
                };
                let _ = within(t.slow_grace, goodbye).await;
                return;
            }
            out = rx.recv() => match out {
                Some(out) => {
                    // Everything already queued goes out with one flush (one
                    // syscall) instead of one per frame.
                    if !within(limit, sink.feed(WsMessage::Text(out.json.as_ref().into()))).await {
                        return;
                    }
                    for _ in 0..WRITE_BATCH {
                        let Ok(more) = rx.try_recv() else { break };
                        if !within(limit, sink.feed(WsMessage::Text(more.json.as_ref().into()))).await {
                            return;
                        }
                    }
                    if !within(limit, sink.flush()).await {
                        return;
                    }
                }
                None if closing.is_cancelled() => return going_away(&mut sink, limit).await,
                None => {
                    let _ = within(limit, sink.close()).await;
                    return;
                }
            },
            // Below the queue: frames already queued (the answers' `done`) go first.
            () = closing.cancelled() => {
                while let Ok(more) = rx.try_recv() {
                    if !within(limit, sink.feed(WsMessage::Text(more.json.as_ref().into()))).await {
                        return;
                    }
                }
                return going_away(&mut sink, limit).await;
            }
            _ = ping.tick() => {
                let seen = Duration::from_millis(t.last_seen.load(Ordering::Relaxed));
                if t.started.elapsed().saturating_sub(seen) > t.idle {
                    let _ = within(limit, sink.send(close(CLOSE_HEARTBEAT, "heartbeat timeout"))).await;
                    return;
                }
                if !within(limit, sink.send(WsMessage::Ping(Default::default()))).await {
                    return;
                }
            }
        }
    }
}

/// Shutdown's last words on a socket: why, then close 1001.
async fn going_away(sink: &mut futures::stream::SplitSink<WebSocket, WsMessage>, limit: Duration) {
    if within(limit, sink.feed(text(&ServerFrame::shutting_down()))).await {
        let _ = within(
            limit,
            sink.send(close(CLOSE_GOING_AWAY, "server shutting down")),
        )
        .await;
    }
}
