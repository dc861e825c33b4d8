//! Logs (tracing, JSON in production) and metrics (Prometheus text on `/metrics`);
//! traces are added here when configured (`crate::traces`).
//!
//! The metrics recorder is process-global, so it is installed once even when
//! several apps run in one process (as the tests do).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{EnvFilter, Layer, Registry, fmt, prelude::*};

use crate::{
    config::{Config, LogFormat},
    traces::Traces,
};

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// Seconds; fine at the low end where a gateway's own overhead lives.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

pub fn init_tracing(format: LogFormat) {
    init_tracing_with(format, None);
}

/// A layer beside the log output (the trace exporter's), over the registry.
pub type ExtraLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// Logs filtered by `RUST_LOG` (or the default), plus `extra` with its own
/// filter, so the log level never decides which spans are traced.
pub fn init_tracing_with(format: LogFormat, extra: Option<ExtraLayer>) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=info,lapin=warn"));
    let logs: ExtraLayer = match format {
        LogFormat::Json => fmt::layer()
            .json()
            .with_current_span(true)
            .flatten_event(true)
            .with_filter(filter)
            .boxed(),
        LogFormat::Pretty => fmt::layer().compact().with_filter(filter).boxed(),
    };
    let mut layers = vec![logs];
    layers.extend(extra);
    // try_init: a second call (tests) keeps the first subscriber.
    let _ = tracing_subscriber::registry().with(layers).try_init();
}

/// Logs, and traces when `telemetry.otlp_endpoint` is set: the returned
/// handle must be shut down at exit to flush them.
pub fn init_with_traces(config: &Config) -> Option<Traces> {
    let format = config.server.log_format;
    let Some(endpoint) = config
        .telemetry
        .otlp_endpoint
        .as_deref()
        .filter(|e| !e.trim().is_empty())
    else {
        init_tracing(format);
        return None;
    };
    let ratio = config.telemetry.trace_sample_ratio;
    match crate::traces::start::<Registry>(endpoint, ratio) {
        Ok((traces, layer)) => {
            init_tracing_with(format, Some(layer));
            tracing::info!(sample_ratio = ratio, "exporting traces over OTLP/HTTP");
            Some(traces)
        }
        Err(e) => {
            init_tracing(format);
            tracing::error!(error = %e, "traces are off: the OTLP exporter could not start");
            None
        }
    }
}

/// Installs the global Prometheus recorder, once per process.
#[expect(
    clippy::expect_used,
    reason = "startup: constant buckets, and this process installs no other recorder"
)]
pub fn install_metrics() -> &'static PrometheusHandle {
    PROMETHEUS.get_or_init(|| {
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            .expect("non-empty buckets")
            .install_recorder()
            .expect("the only metrics recorder in this process");
        crate::metric_docs::register();
        handle
    })
}

/// Prometheus text for `/metrics`.
pub fn render_metrics() -> String {
    let handle = install_metrics();
    handle.run_upkeep();
    handle.render()
}
