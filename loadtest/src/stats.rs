//! Counting a run: latency histograms (HdrHistogram, microseconds), errors by
//! code, operation counters, a progress line every second, and the result
//! that is printed as a table and written as JSON.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::procfs::{self, ProcStats};

/// Latencies up to an hour, three significant digits.
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// Shared by every task of a run.
pub struct Recorder {
    hists: Mutex<BTreeMap<&'static str, Histogram<u64>>>,
    errors: Mutex<BTreeMap<String, u64>>,
    /// Operations begun (messages sent, requests made, sockets opened).
    pub started: AtomicU64,
    /// Operations that finished well (an answer's `done`, a 2xx, a live socket).
    pub completed: AtomicU64,
    /// Operations that ended in an error.
    pub failed: AtomicU64,
    /// Acks (WebSocket) received: "messages accepted".
    pub acked: AtomicU64,
    /// Answers that reached `done` (open-loop runs, where an operation ends at the ack).
    pub answers: AtomicU64,
    in_flight: AtomicI64,
    peak_in_flight: AtomicI64,
    /// Set when the run should stop starting new operations.
    pub stop: AtomicBool,
}

impl Default for Recorder {
    fn default() -> Self {
        Self {
            hists: Mutex::new(BTreeMap::new()),
            errors: Mutex::new(BTreeMap::new()),
            started: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            answers: AtomicU64::new(0),
            in_flight: AtomicI64::new(0),
            peak_in_flight: AtomicI64::new(0),
            stop: AtomicBool::new(false),
        }
    }
}

impl Recorder {
    pub fn record(&self, name: &'static str, d: Duration) {
        let us = (d.as_micros() as u64).clamp(1, 3_600_000_000);
        let mut h = self.hists.lock().expect("histograms");
        h.entry(name)
            .or_insert_with(new_histogram)
            .record(us)
            .expect("value within bounds");
    }

    /// Counts an error under its code (`rate_limited`, `http_502`, `timeout`, ...).
    pub fn error(&self, code: &str) {
        *self
            .errors
            .lock()
            .expect("errors")
            .entry(code.to_owned())
            .or_default() += 1;
    }

    pub fn error_total(&self) -> u64 {
        self.errors.lock().expect("errors").values().sum()
    }

    /// An operation begins: counts it and its concurrency.
    pub fn begin(&self) {
        self.started.fetch_add(1, Ordering::Relaxed);
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak_in_flight.fetch_max(now, Ordering::Relaxed);
    }

    /// An operation ends, well or not.
    pub fn end(&self, ok: bool) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        if ok {
            self.completed.fetch_add(1, Ordering::Relaxed);
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn in_flight(&self) -> i64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn peak(&self) -> i64 {
        self.peak_in_flight.load(Ordering::Relaxed)
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn p50_ms(&self, name: &str) -> Option<f64> {
        let h = self.hists.lock().expect("histograms");
        h.get(name)
            .filter(|h| !h.is_empty())
            .map(|h| h.value_at_quantile(0.5) as f64 / 1000.0)
    }

    pub fn percentiles(&self) -> BTreeMap<String, Percentiles> {
        let h = self.hists.lock().expect("histograms");
        h.iter()
            .map(|(k, v)| ((*k).to_owned(), Percentiles::of(v)))
            .collect()
    }

    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.errors.lock().expect("errors").clone()
    }

    /// The TTFT histogram shifted by the provider's own TTFT: what the server adds.
    pub fn overhead(&self, provider_ttft_ms: f64) -> Option<Overhead> {
        let h = self.hists.lock().expect("histograms");
        let ttft = h.get("ttft").filter(|h| !h.is_empty())?;
        let q = |p: f64| ttft.value_at_quantile(p) as f64 / 1000.0 - provider_ttft_ms;
        Some(Overhead {
            provider_ttft_ms,
            p50_ms: q(0.5),
            p90_ms: q(0.9),
            p99_ms: q(0.99),
            max_ms: ttft.max() as f64 / 1000.0 - provider_ttft_ms,
        })
    }
}

/// One latency in milliseconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p95: ms(h.value_at_quantile(0.95)),
            p99: ms(h.value_at_quantile(0.99)),
            max: ms(h.max()),
            mean: h.mean() / 1000.0,
        }
    }
}

/// Measured TTFT minus the provider's configured TTFT, in milliseconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Overhead {
    pub provider_ttft_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// What one run of one scenario measured; written as JSON, read back by `report`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    pub scenario: String,
    /// Names the run in reports (several runs of one scenario differ by label).
    pub label: String,
    pub run_id: String,
    pub started_at: String,
    pub url: String,
    /// `ok`, or `failed` with `failure` saying why (the run could not be done).
    pub status: String,
    pub failure: Option<String>,
    pub params: serde_json::Value,
    /// Creating users, chats, keys: not part of the measured phase.
    pub setup_secs: f64,
    /// The measured phase, wall time.
    pub duration_secs: f64,
    pub started: u64,
    pub completed: u64,
    pub failed: u64,
    /// Completed operations per second of the measured phase.
    pub throughput_per_sec: f64,
    /// WebSocket acks per second ("messages accepted per second"), when the scenario has acks.
    pub acks_per_sec: Option<f64>,
    pub peak_in_flight: i64,
    pub latency_ms: BTreeMap<String, Percentiles>,
    pub errors: BTreeMap<String, u64>,
    pub overhead_ms: Option<Overhead>,
    pub server: Option<ProcStats>,
    pub client: Option<ProcStats>,
    /// Scenario-specific figures (memory per connection, ...).
    pub extra: serde_json::Value,
}

impl RunResult {
    pub fn operation_noun(&self) -> &'static str {
        match self.scenario.as_str() {
            "ws-chat" => "answers",
            "connections" => "sockets",
            "http" => "iterations",
            "openai" => "completions",
            _ => "operations",
        }
    }

    /// The table printed at the end of a run.
    pub fn print_table(&self) {
        println!();
        println!("== {} ({}) — {}", self.label, self.scenario, self.status);
        if let Some(why) = &self.failure {
            println!("   failure: {why}");
        }
        println!(
            "   setup {:.1}s, measured {:.1}s: {} started, {} completed, {} failed; {:.1} {}/s; peak in flight {}",
            self.setup_secs,
            self.duration_secs,
            self.started,
            self.completed,
            self.failed,
            self.throughput_per_sec,
            self.operation_noun(),
            self.peak_in_flight
        );
        if let Some(a) = self.acks_per_sec {
            println!("   acks {a:.1}/s");
        }
        if !self.latency_ms.is_empty() {
            println!(
                "   {:<14} {:>8} {:>10} {:>10} {:>10} {:>10} {:>10}",
                "latency (ms)", "count", "p50", "p90", "p95", "p99", "max"
            );
            for (name, p) in &self.latency_ms {
                println!(
                    "   {:<14} {:>8} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>10.2}",
                    name, p.count, p.p50, p.p90, p.p95, p.p99, p.max
                );
            }
        }
        if let Some(o) = &self.overhead_ms {
            println!(
                "   overhead over the provider's {:.0} ms TTFT: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                o.provider_ttft_ms, o.p50_ms, o.p90_ms, o.p99_ms, o.max_ms
            );
        }
        if self.errors.is_empty() {
            println!("   errors: none");
        } else {
            let list: Vec<String> = self
                .errors
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            println!("   errors: {}", list.join(", "));
        }
        for (who, s) in [("server", &self.server), ("client", &self.client)] {
            if let Some(s) = s {
                println!(
                    "   {who}: RSS {} → {} MiB (max {} MiB), CPU {:.1}s = {:.0}% of one core",
                    s.rss_before_kib / 1024,
                    s.rss_after_kib / 1024,
                    s.rss_max_kib / 1024,
                    s.cpu_secs,
                    s.cpu_percent
                );
            }
        }
        if !self.extra.is_null() && self.extra != serde_json::json!({}) {
            println!("   {}", self.extra);
        }
    }
}

/// Prints a progress line to stderr every second and tracks the server's peak RSS.
pub struct Progress {
    done: Arc<AtomicBool>,
    max_rss: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Progress {
    pub fn start(label: String, rec: Arc<Recorder>, server_pid: Option<u32>) -> Self {
        let done = Arc::new(AtomicBool::new(false));
        let max_rss = Arc::new(AtomicU64::new(0));
        let (d, m) = (done.clone(), max_rss.clone());
        let task = tokio::spawn(async move {
            let began = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            let mut last = 0u64;
            while !d.load(Ordering::Relaxed) {
                tick.tick().await;
                let completed = rec.completed.load(Ordering::Relaxed);
                let server = server_pid.and_then(|p| procfs::sample(Some(p)));
                if let Some(s) = server {
                    m.fetch_max(s.rss_kib, Ordering::Relaxed);
                }
                let lat: Vec<String> = ["ack", "ttft", "total", "signin", "connect"]
                    .iter()
                    .filter_map(|n| rec.p50_ms(n).map(|v| format!("{n} p50 {v:.1}ms")))
                    .collect();
                eprintln!(
                    "[{label} {:>4.0}s] started {} done {} failed {} in flight {} | {}/s | errors {} | {}{}",
                    began.elapsed().as_secs_f64(),
                    rec.started.load(Ordering::Relaxed),
                    completed,
                    rec.failed.load(Ordering::Relaxed),
                    rec.in_flight(),
                    completed - last,
                    rec.error_total(),
                    lat.join(", "),
                    server.map_or_else(String::new, |s| format!(
                        " | server RSS {} MiB",
                        s.rss_kib / 1024
                    )),
                );
                last = completed;
            }
        });
        Self {
            done,
            max_rss,
            task,
        }
    }

    /// Stops the printer; returns the highest server RSS it saw (KiB).
    pub async fn finish(self) -> u64 {
        self.done.store(true, Ordering::Relaxed);
        self.task.abort();
        let _ = self.task.await;
        self.max_rss.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_overhead() {
        let r = Recorder::default();
        for ms in 1..=100u64 {
            r.record("ttft", Duration::from_millis(50 + ms));
        }
        let p = &r.percentiles()["ttft"];
        assert_eq!(p.count, 100);
        assert!((p.p50 - 100.0).abs() < 0.2, "{}", p.p50);
        assert!((p.max - 150.0).abs() < 0.2);
        let o = r.overhead(50.0).unwrap();
        assert!((o.p50_ms - 50.0).abs() < 0.2);
        assert!((o.p99_ms - 99.0).abs() < 0.2);
    }

    #[test]
    fn errors_by_code() {
        let r = Recorder::default();
        r.error("rate_limited");
        r.error("rate_limited");
        r.error("timeout");
        assert_eq!(r.errors()["rate_limited"], 2);
        assert_eq!(r.error_total(), 3);
    }
}
