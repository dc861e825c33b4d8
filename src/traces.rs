//! Distributed traces over OTLP (HTTP/protobuf), only when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (`telemetry.otlp_endpoint`) is set.
//!
//! One trace follows a chat message from the door (the `http` span of the
//! request, or `ws.send` for a WebSocket frame) through admission
//! (`chat.send`), the chat actor (`chat.accept`) and the generation
//! (`generation`) to each provider request (`provider.call`), whose W3C
//! `traceparent` header carries the trace to the provider.
//!
//! Off, nothing is built: no layer, no exporter thread, and the spans that
//! exist only for traces are [`tracing::Span::none`] ([`trace_span!`]).
//! Spans carry ids, names, counts and statuses, never message text, prompts
//! or credentials, and only spans reach the exporter (log events do not).
//!
//! The exporter runs the SDK's batch processor on its own thread with a
//! blocking HTTP client, so it is built and shut down off the async runtime
//! ([`Traces::shutdown`] flushes what is still queued).

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use opentelemetry::{propagation::Injector, trace::TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::{
    Resource,
    propagation::TraceContextPropagator,
    trace::{Sampler, SdkTracerProvider},
};
use tracing::{Level, Metadata, Subscriber, subscriber::Interest};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{
    Layer,
    layer::{Context, Filter},
    registry::LookupSpan,
};

static ENABLED: AtomicBool = AtomicBool::new(false);

/// How long one export may take before the batch is dropped.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether spans are being exported by this process.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// An `info` span that exists only for traces: [`tracing::Span::none`]
/// (no allocation, no subscriber call) when traces are off.
#[macro_export]
macro_rules! trace_span {
    ($($arg:tt)*) => {
        if $crate::traces::enabled() {
            tracing::info_span!($($arg)*)
        } else {
            tracing::Span::none()
        }
    };
}

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("OTLP exporter: {0}")]
    Exporter(String),
    #[error("OTLP exporter thread panicked")]
    Thread,
}

/// The running exporter; [`Traces::shutdown`] flushes it.
pub struct Traces {
    provider: SdkTracerProvider,
}

/// Builds the exporter for `endpoint` (the collector's base URL; spans go to
/// `{endpoint}/v1/traces`) keeping `sample_ratio` of new traces, and the
/// layer that feeds it our spans.
pub fn start<S>(
    endpoint: &str,
    sample_ratio: f64,
) -> Result<(Traces, Box<dyn Layer<S> + Send + Sync>), TraceError>
where
    S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync + 'static,
{
    let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    // The blocking client must not be created on (or dropped by) a runtime thread.
    let provider = std::thread::spawn(move || build_provider(url, sample_ratio))
        .join()
        .map_err(|_| TraceError::Thread)??;
    let tracer = provider.tracer("switchboard");
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(OurSpans)
        .boxed();
    ENABLED.store(true, Ordering::Relaxed);
    Ok((Traces { provider }, layer))
}

/// The exporter's filter: our spans only (dependencies' spans and every log
/// event stay out).
///
/// Its callsite interest is "sometimes", never "always": a callsite every
/// per-layer filter calls "always" skips `enabled`, and its span then takes
/// whatever per-layer verdict a rejected event left behind on that thread
/// (tracing-subscriber resets it only on the next `enabled` call). That is
/// how the spans made in the chat actor and the generation task were lost to
/// both the logs and the exporter, which left `provider.call` without a parent.
struct OurSpans;

impl OurSpans {
    fn wants(meta: &Metadata<'_>) -> bool {
        meta.is_span() && *meta.level() <= Level::INFO && meta.target().starts_with("switchboard")
    }
}

impl<S> Filter<S> for OurSpans {
    fn enabled(&self, meta: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        Self::wants(meta)
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        if Self::wants(meta) {
            Interest::sometimes()
        } else {
            Interest::never()
        }
    }
}

fn build_provider(url: String, sample_ratio: f64) -> Result<SdkTracerProvider, TraceError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url)
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| TraceError::Exporter(e.to_string()))?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            sample_ratio.clamp(0.0, 1.0),
        ))))
        .with_resource(Resource::builder().with_service_name("switchboard").build())
        .build())
}

impl Traces {
    /// Exports every span still queued, then stops the exporter thread.
    pub async fn shutdown(self) {
        ENABLED.store(false, Ordering::Relaxed);
        let provider = self.provider;
        let done = tokio::task::spawn_blocking(move || {
            let r = provider.shutdown();
            drop(provider);
            r
        })
        .await;
        match done {
            Ok(Ok(())) => tracing::info!("traces flushed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "traces: flush at shutdown failed"),
            Err(e) => tracing::warn!(error = %e, "traces: flush at shutdown panicked"),
        }
    }
}

/// The current span, to be carried across a hop to an actor; none when traces are off.
pub fn current_span() -> tracing::Span {
    if enabled() {
        tracing::Span::current()
    } else {
        tracing::Span::none()
    }
}

/// Adds the W3C `traceparent` of `span` to an outgoing request; the request
/// is unchanged when traces are off or the span is not sampled.
pub fn with_traceparent(
    span: &tracing::Span,
    request: reqwest::RequestBuilder,
) -> reqwest::RequestBuilder {
    if !enabled() {
        return request;
    }
    let cx = span.context();
    let mut headers = HeaderInjector(reqwest::header::HeaderMap::new());
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut headers));
    request.headers(headers.0)
}

struct HeaderInjector(reqwest::header::HeaderMap);

impl Injector for HeaderInjector {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            reqwest::header::HeaderName::from_bytes(key.as_bytes()),
            reqwest::header::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}
