//! What every scenario shares: the common options, the measured-phase
//! bookkeeping (server and client /proc samples, progress) and writing the result.

pub mod connections;
pub mod http;
pub mod openai;
pub mod ws_chat;

use std::{
    path::PathBuf,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use clap::Args;

use crate::{
    api::{self, Api},
    procfs::{self, ProcStats, Sample},
    stats::{Progress, Recorder, RunResult},
    target::{self, Target},
};

#[derive(Debug, Clone, Args)]
pub struct Common {
    /// The server, loopback only (127.0.0.0/8, ::1 or localhost).
    #[arg(long, env = "LOADTEST_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The server's process id: its RSS and CPU are reported when given.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Longest measured phase, in seconds: no new operation starts after it.
    #[arg(long, default_value_t = 60)]
    pub duration: u64,
    /// Most operations (messages, requests, sockets) to start in all.
    #[arg(long)]
    pub count: Option<u64>,
    /// Where to write the JSON result (default: <results-dir>/<scenario>-<timestamp>.json).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long, default_value = "loadtest/results")]
    pub results_dir: PathBuf,
    /// Names this run in reports (default: the scenario's name).
    #[arg(long)]
    pub label: Option<String>,
    /// The provider's configured time to first token (ms), to report what the
    /// server adds on top of it (`SWITCHBOARD_SIMULATED__TTFT_MS`, or the mock's).
    #[arg(long)]
    pub provider_ttft_ms: Option<f64>,
    /// Spread client sockets over this many source addresses 127.0.0.2.. (0: auto).
    #[arg(long, default_value_t = 0)]
    pub source_ips: usize,
    /// Sign-ups and sign-ins in flight at once while setting up.
    #[arg(long, default_value_t = 8)]
    pub setup_concurrency: usize,
}

/// One scenario run in progress.
pub struct Run {
    pub scenario: &'static str,
    pub common: Common,
    pub target: Target,
    pub api: Api,
    pub run_id: String,
    pub rec: Arc<Recorder>,
    pub started_at: chrono::DateTime<chrono::Utc>,
    setup_began: Instant,
    measured: std::sync::Mutex<Option<Measured>>,
}

struct Measured {
    began: Instant,
    server: Option<Sample>,
    client: Option<Sample>,
    progress: Progress,
}

impl Run {
    pub async fn new(scenario: &'static str, common: Common, pool: usize) -> Result<Self, String> {
        let target = target::resolve(&common.url).await?;
        let api = Api::new(&target, pool);
        if let Some(pid) = common.server_pid
            && procfs::sample(Some(pid)).is_none()
        {
            return Err(format!(
                "--server-pid {pid}: no such process (cannot read /proc/{pid})"
            ));
        }
        api.ready().await.map_err(|e| {
            format!(
                "the server at {} is not ready: {e} (start it, and check /ready)",
                target.base
            )
        })?;
        Ok(Self {
            scenario,
            common,
            target,
            api,
            run_id: api::run_id(),
            rec: Arc::new(Recorder::default()),
            started_at: chrono::Utc::now(),
            setup_began: Instant::now(),
            measured: std::sync::Mutex::new(None),
        })
    }

    pub fn label(&self) -> String {
        self.common
            .label
            .clone()
            .unwrap_or_else(|| self.scenario.to_owned())
    }

    pub fn duration(&self) -> Duration {
        Duration::from_secs(self.common.duration.max(1))
    }

    /// Claims one operation against `--count`; false once it is used up.
    pub fn claim(&self, issued: &std::sync::atomic::AtomicU64) -> bool {
        let n = issued.fetch_add(1, Ordering::Relaxed);
        self.common.count.is_none_or(|c| n < c) && !self.rec.stopping()
    }

    pub fn sources(&self, sockets: usize) -> Vec<std::net::IpAddr> {
        let n = if self.common.source_ips == 0 {
            target::auto_sources(sockets)
        } else {
            self.common.source_ips
        };
        target::source_ips(n, &self.target)
    }

    /// Setup is done: samples the processes, starts progress and the duration guard.
    pub fn begin_measuring(&self) {
        let rec = self.rec.clone();
        let limit = self.duration();
        tokio::spawn(async move {
            tokio::time::sleep(limit).await;
            rec.stop.store(true, Ordering::Relaxed);
        });
        *self.measured.lock().expect("measured") = Some(Measured {
            began: Instant::now(),
            server: self.common.server_pid.and_then(|p| procfs::sample(Some(p))),
            client: procfs::sample(None),
            progress: Progress::start(self.label(), self.rec.clone(), self.common.server_pid),
        });
    }

    pub fn setup_secs(&self) -> f64 {
        match &*self.measured.lock().expect("measured") {
            Some(m) => m.began.duration_since(self.setup_began).as_secs_f64(),
            None => self.setup_began.elapsed().as_secs_f64(),
        }
    }

    /// Ends the measured phase and builds the result.
    pub async fn finish(&self, params: serde_json::Value, extra: serde_json::Value) -> RunResult {
        let setup_secs = self.setup_secs();
        let measured = self.measured.lock().expect("measured").take();
        let (duration, server, client) = match measured {
            Some(m) => {
                let duration = m.began.elapsed().as_secs_f64();
                let server_max = m.progress.finish().await;
                let pid = self.common.server_pid;
                let server = match (m.server, pid.and_then(|p| procfs::sample(Some(p)))) {
                    (Some(a), Some(b)) => Some(ProcStats::between(pid, &a, &b, server_max)),
                    _ => None,
                };
                let client = match (m.client, procfs::sample(None)) {
                    (Some(a), Some(b)) => Some(ProcStats::between(None, &a, &b, b.rss_kib)),
                    _ => None,
                };
                (duration, server, client)
            }
            None => (0.0, None, None),
        };
        let rec = &self.rec;
        let completed = rec.completed.load(Ordering::Relaxed);
        let acked = rec.acked.load(Ordering::Relaxed);
        let per_sec = |n: u64| {
            if duration > 0.0 {
                n as f64 / duration
            } else {
                0.0
            }
        };
        RunResult {
            scenario: self.scenario.to_owned(),
            label: self.label(),
            run_id: self.run_id.clone(),
            started_at: self.started_at.to_rfc3339(),
            url: self.target.base.clone(),
            status: "ok".into(),
            failure: None,
            params,
            setup_secs,
            duration_secs: duration,
            started: rec.started.load(Ordering::Relaxed),
            completed,
            failed: rec.failed.load(Ordering::Relaxed),
            throughput_per_sec: per_sec(completed),
            acks_per_sec: (acked > 0).then(|| per_sec(acked)),
            peak_in_flight: rec.peak(),
            latency_ms: rec.percentiles(),
            errors: rec.errors(),
            overhead_ms: self.common.provider_ttft_ms.and_then(|p| rec.overhead(p)),
            server,
            client,
            extra,
        }
    }
}

/// A result for a run that could not be done (the server lacks an endpoint, setup failed).
pub fn failed_result(scenario: &str, common: &Common, why: &str) -> RunResult {
    RunResult {
        scenario: scenario.to_owned(),
        label: common.label.clone().unwrap_or_else(|| scenario.to_owned()),
        run_id: String::new(),
        started_at: chrono::Utc::now().to_rfc3339(),
        url: common.url.clone(),
        status: "failed".into(),
        failure: Some(why.to_owned()),
        params: serde_json::Value::Null,
        setup_secs: 0.0,
        duration_secs: 0.0,
        started: 0,
        completed: 0,
        failed: 0,
        throughput_per_sec: 0.0,
        acks_per_sec: None,
        peak_in_flight: 0,
        latency_ms: Default::default(),
        errors: Default::default(),
        overhead_ms: None,
        server: None,
        client: None,
        extra: serde_json::Value::Null,
    }
}

/// Writes the result as JSON; answers the path.
pub fn write_result(common: &Common, result: &RunResult) -> Result<PathBuf, String> {
    let path = common.out.clone().unwrap_or_else(|| {
        common.results_dir.join(format!(
            "{}-{}.json",
            result.label,
            chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
        ))
    });
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let json = serde_json::to_string_pretty(result).expect("result serialises");
    std::fs::write(&path, json + "\n")
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

/// Waits for `tasks`, but no longer than `deadline` from now; aborts the rest.
pub async fn join_all_until(
    tasks: Vec<tokio::task::JoinHandle<()>>,
    deadline: Duration,
    rec: &Recorder,
) {
    let aborts: Vec<_> = tasks.iter().map(|t| t.abort_handle()).collect();
    if tokio::time::timeout(deadline, futures::future::join_all(tasks))
        .await
        .is_err()
    {
        let left = aborts.iter().filter(|a| !a.is_finished()).count();
        eprintln!("[run] {left} tasks still running at the deadline; stopping them");
        for _ in 0..left {
            rec.error("aborted_at_deadline");
        }
        for a in aborts {
            a.abort();
        }
    }
}
