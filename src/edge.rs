//! Counters that keep the edge bounded: open connections (node-wide and per
//! client address), SSE streams per user, and WebSockets still waiting for
//! their `auth` frame. Each slot is a guard that frees itself when dropped,
//! so a slot lives exactly as long as what it counts.
//!
//! Only counting lives here; the transports decide what a refusal looks like.

use std::{
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use dashmap::DashMap;
use uuid::Uuid;

use crate::config::EdgeConfig;

/// The edge's counters, one set per node (held in `AppState`).
#[derive(Debug, Default)]
pub struct EdgeCounters {
    pub conns: Arc<ConnLimits>,
    sse: Arc<DashMap<Uuid, usize>>,
    unauthenticated_ws: Arc<AtomicUsize>,
}

impl EdgeCounters {
    /// A slot for one more SSE stream of `user`, or `None` at the cap.
    pub fn sse_slot(&self, user: Uuid, cap: usize) -> Option<SseSlot> {
        let mut n = self.sse.entry(user).or_insert(0);
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(SseSlot {
            map: self.sse.clone(),
            user,
        })
    }

    /// A slot for one more socket still authenticating, or `None` at the cap.
    pub fn unauthenticated_slot(&self, cap: usize) -> Option<UnauthenticatedSlot> {
        let counter = self.unauthenticated_ws.clone();
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < cap).then_some(n + 1)
            })
            .ok()
            .map(|_| UnauthenticatedSlot(counter))
    }
}

/// One open SSE stream of a user; freed when the response is dropped.
#[derive(Debug)]
pub struct SseSlot {
    map: Arc<DashMap<Uuid, usize>>,
    user: Uuid,
}

impl Drop for SseSlot {
    fn drop(&mut self) {
        self.map.remove_if_mut(&self.user, |_, n| {
            *n = n.saturating_sub(1);
            *n == 0
        });
    }
}

/// One socket between upgrade and its `auth` frame.
#[derive(Debug)]
pub struct UnauthenticatedSlot(Arc<AtomicUsize>);

impl Drop for UnauthenticatedSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Open connections, node-wide and per client address.
#[derive(Debug, Default)]
pub struct ConnLimits {
    total: AtomicUsize,
    per_ip: DashMap<IpAddr, usize>,
}

/// Why a connection was turned away at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The node holds `edge.max_connections`.
    Full,
    /// This address holds `edge.max_connections_per_ip`.
    PerIp,
}

impl ConnLimits {
    /// Takes a slot for a connection from `ip`, or says which cap refuses it.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, cfg: &EdgeConfig) -> Result<ConnSlot, Refusal> {
        {
            let mut n = self.per_ip.entry(ip).or_insert(0);
            if *n >= cfg.max_connections_per_ip {
                return Err(Refusal::PerIp);
            }
            *n += 1;
        }
        if self.total.fetch_add(1, Ordering::AcqRel) >= cfg.max_connections {
            self.total.fetch_sub(1, Ordering::AcqRel);
            self.release_ip(ip);
            return Err(Refusal::Full);
        }
        metrics::gauge!("switchboard_http_connections").increment(1.0);
        Ok(ConnSlot {
            limits: self.clone(),
            ip,
        })
    }

    /// Connections open from `ip` now.
    pub fn open_from(&self, ip: IpAddr) -> usize {
        self.per_ip.get(&ip).map_or(0, |n| *n)
    }

    /// Connections open in all.
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }

    fn release_ip(&self, ip: IpAddr) {
        // Removing at zero keeps the map as small as the set of open addresses.
        self.per_ip.remove_if_mut(&ip, |_, n| {
            *n = n.saturating_sub(1);
            *n == 0
        });
    }
}

/// One admitted connection's place under the caps; freed when dropped.
#[derive(Debug)]
pub struct ConnSlot {
    limits: Arc<ConnLimits>,
    ip: IpAddr,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.limits.total.fetch_sub(1, Ordering::AcqRel);
        self.limits.release_ip(self.ip);
        metrics::gauge!("switchboard_http_connections").decrement(1.0);
    }
}
