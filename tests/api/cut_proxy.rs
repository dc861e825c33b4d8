//! A TCP proxy between a browser and the app that a test can cut: `cut` closes
//! every connection and refuses new ones until `restore`; `mute_down` swallows
//! what the server sends (so a request arrives but its answer never does);
//! `set_latency` delays what the browser sends (so requests overlap in flight);
//! `set_upstream` points new connections at another server (a restarted one).

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::AbortHandle,
};

pub struct CutProxy {
    pub addr: SocketAddr,
    refusing: Arc<AtomicBool>,
    muted: Arc<AtomicBool>,
    latency_ms: Arc<AtomicU64>,
    upstream: Arc<Mutex<SocketAddr>>,
    live: Arc<Mutex<Vec<AbortHandle>>>,
    accept: AbortHandle,
}

/// Copies one direction until either side closes; drops the bytes while `mute`
/// is set, holds each chunk for `latency` milliseconds.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mute: Option<Arc<AtomicBool>>,
    latency: Option<Arc<AtomicU64>>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if mute.as_ref().is_some_and(|m| m.load(Ordering::SeqCst)) {
            continue;
        }
        let delay = latency.as_ref().map_or(0, |l| l.load(Ordering::SeqCst));
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

impl CutProxy {
    pub async fn start(upstream: SocketAddr) -> CutProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let refusing = Arc::new(AtomicBool::new(false));
        let muted = Arc::new(AtomicBool::new(false));
        let latency_ms = Arc::new(AtomicU64::new(0));
        let live: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let upstream = Arc::new(Mutex::new(upstream));
        let (r, m, l, lat, up) = (
            refusing.clone(),
            muted.clone(),
            live.clone(),
            latency_ms.clone(),
            upstream.clone(),
        );
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if r.load(Ordering::SeqCst) {
                    continue; // dropped: the browser sees the connection close
                }
                let (m, lat) = (m.clone(), lat.clone());
                let upstream = *up.lock().unwrap();
                let task = tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = outbound.set_nodelay(true);
                    let (in_r, in_w) = inbound.into_split();
                    let (out_r, out_w) = outbound.into_split();
                    tokio::join!(
                        pump(in_r, out_w, None, Some(lat)),
                        pump(out_r, in_w, Some(m), None)
                    );
                });
                l.lock().unwrap().push(task.abort_handle());
            }
        })
        .abort_handle();
        CutProxy {
            addr,
            refusing,
            muted,
            latency_ms,
            upstream,
            live,
            accept,
        }
    }

    /// Closes every connection now and refuses new ones.
    pub fn cut(&self) {
        self.refusing.store(true, Ordering::SeqCst);
        for conn in self.live.lock().unwrap().drain(..) {
            conn.abort();
        }
    }

    pub fn restore(&self) {
        self.muted.store(false, Ordering::SeqCst);
        self.refusing.store(false, Ordering::SeqCst);
    }

    /// New connections go to `addr` from now on.
    pub fn set_upstream(&self, addr: SocketAddr) {
        *self.upstream.lock().unwrap() = addr;
    }

    /// Holds everything the browser sends for `ms` before passing it on.
    pub fn set_latency(&self, ms: u64) {
        self.latency_ms.store(ms, Ordering::SeqCst);
    }

    /// From now on nothing the server sends reaches the browser (until `cut` + `restore`).
    pub fn mute_down(&self) {
        self.muted.store(true, Ordering::SeqCst);
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}
