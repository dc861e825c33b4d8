//! The HTTP/1 connection loop: accepts TCP connections, holds them to the
//! node-wide and per-address caps, and serves each with hyper under the edge
//! timeouts (`[edge]`, docs/CONFIGURATION.md).
//!
//! Owns what happens below the router: a connection past a cap gets a short
//! canned answer and is closed without reaching axum; a peer that dribbles its
//! request head is closed by hyper's header-read timer; a keep-alive
//! connection with nothing in flight and no bytes moving is closed after
//! `edge.keepalive_timeout_secs`. A connection's slot is held by its socket,
//! so an upgraded WebSocket counts until the socket itself is closed.
//! It must not know about routes: the router is handed in.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{Router, extract::ConnectInfo};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::{TcpListener, TcpStream},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::ServiceExt;

use crate::{
    config::EdgeConfig,
    edge::{ConnLimits, ConnSlot, Refusal},
};

/// The socket plus its slot and a note of when bytes last moved. Dropping it
/// (connection end, or the end of an upgraded WebSocket) closes the socket
/// and frees the slot together.
struct EdgeIo {
    tcp: TcpStream,
    _slot: ConnSlot,
    activity: Arc<Activity>,
}

/// When bytes last moved on a connection and how many requests are in flight.
#[derive(Debug)]
struct Activity {
    started: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn touch(&self) {
        self.last_ms
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }
}

impl AsyncRead for EdgeIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.tcp).poll_read(cx, buf);
        if matches!(res, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        res
    }
}

impl AsyncWrite for EdgeIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.tcp).poll_write(cx, buf);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        res
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// Counts a request in flight from its start until its response body is
/// done (or dropped), so a long answer or an SSE stream is never "idle".
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: &Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.touch();
    }
}

/// A response body that holds its request's [`InFlight`] until it is dropped.
struct TrackedBody {
    inner: axum::body::Body,
    _in_flight: InFlight,
}

impl http_body::Body for TrackedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A request body that notes when it has been read to its end. hyper drops a
/// connection whose request body the handler left unread (an early 401, 403
/// or 413) unless the rest is already buffered, and that can be decided after
/// the response head went out without `connection: close`: a client reusing
/// the connection then sees it closed without an answer. So such a response
/// says `connection: close` itself.
struct WatchedBody {
    inner: Incoming,
    ended: Arc<AtomicBool>,
}

impl http_body::Body for WatchedBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let res = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(res, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.ended.store(true, Ordering::Release);
        }
        res
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then stops
/// accepting, asks every connection to finish its request in progress, and
/// returns once they have (the caller bounds that with its grace period).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Arc<ConnLimits>,
    cfg: EdgeConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let tracker = TaskTracker::new();
    let stopping = CancellationToken::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors (EMFILE) or a peer that reset before
                    // accept: wait a little rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Small frames (acks, deltas) must not wait out Nagle's algorithm
        // against the peer's delayed ACK: that alone cost ~40 ms per ack.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "cannot set TCP_NODELAY");
        }
        match limits.admit(peer.ip(), &cfg) {
            Ok(slot) => {
                tracker.spawn(connection(
                    tcp,
                    peer,
                    slot,
                    router.clone(),
                    cfg.clone(),
                    stopping.clone(),
                ));
            }
            Err(why) => {
                metrics::counter!("switchboard_http_connections_refused_total",
                    "reason" => match why { Refusal::Full => "node", Refusal::PerIp => "per_ip" })
                .increment(1);
                tracker.spawn(refuse(tcp, why));
            }
        }
    }
    drop(listener);
    stopping.cancel();
    tracker.close();
    tracker.wait().await;
    Ok(())
}

/// One connection: hyper with the header-read timer, plus the keep-alive
/// watchdog; both end it gracefully (a request in progress finishes).
async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    slot: ConnSlot,
    router: Router,
    cfg: EdgeConfig,
    stopping: CancellationToken,
) {
    let activity = Arc::new(Activity {
        started: Instant::now(),
        last_ms: AtomicU64::new(0),
        in_flight: AtomicUsize::new(0),
    });
    let io = TokioIo::new(EdgeIo {
        tcp,
        _slot: slot,
        activity: activity.clone(),
    });
    let counting = activity.clone();
    let service = tower::service_fn(move |mut req: axum::extract::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        // In flight from its head on, until its response body is done.
        let in_flight = InFlight::start(&counting);
        let router = router.clone();
        let ended = Arc::new(AtomicBool::new(http_body::Body::is_end_stream(req.body())));
        let req = req.map(|inner| {
            axum::body::Body::new(WatchedBody {
                inner,
                ended: ended.clone(),
            })
        });
        async move {
            let res = router.oneshot(req).await;
            res.map(|mut res| {
                if !ended.load(Ordering::Acquire) {
                    res.headers_mut().insert(
                        axum::http::header::CONNECTION,
                        axum::http::HeaderValue::from_static("close"),
                    );
                }
                res.map(|inner| {
                    axum::body::Body::new(TrackedBody {
                        inner,
                        _in_flight: in_flight,
                    })
                })
            })
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(cfg.header_read_timeout_secs));
    let conn = builder
        .serve_connection(io, TowerToHyperService::new(service))
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let keepalive = Duration::from_secs(cfg.keepalive_timeout_secs);
    let mut check = tokio::time::interval(keepalive.min(Duration::from_secs(1)));
    let mut closing = false;
    loop {
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            () = stopping.cancelled(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = check.tick(), if !closing => {
                if activity.in_flight.load(Ordering::Acquire) == 0 && activity.idle_for() >= keepalive {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// A connection past a cap: a short answer in our error shape, then close.
/// Bounded in time, so refused peers cannot pile up here either.
async fn refuse(mut tcp: TcpStream, why: Refusal) {
    let (status, code, message) = match why {
        Refusal::Full => (
            "503 Service Unavailable",
            "unavailable",
            "this node holds all the connections it may; retry shortly",
        ),
        Refusal::PerIp => (
            "429 Too Many Requests",
            "rate_limited",
            "too many open connections from your address",
        ),
    };
    let body = format!(r#"{{"error":{{"code":"{code}","message":"{message}"}}}}"#);
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let goodbye = async {
        tcp.write_all(response.as_bytes()).await?;
        tcp.shutdown().await?;
        // Read what the peer already sent, so closing does not reset the
        // connection before it has read our answer.
        let mut sink = [0u8; 1024];
        while tcp.read(&mut sink).await? > 0 {}
        Ok::<_, io::Error>(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), goodbye).await;
}
