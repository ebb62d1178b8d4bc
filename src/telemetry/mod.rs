//! Logs and traces. [`init`] installs, process-wide:
//!
//! - logs: JSON lines on stdout (pretty on a terminal), level from
//!   `RUST_LOG` or the settings; each line of a request carries its
//!   `trace_id`, `span_id` and `request_id` (see [`json`]);
//! - traces: OpenTelemetry through `tracing-opentelemetry`, exported over
//!   OTLP/gRPC when an endpoint is configured (no span is built otherwise;
//!   log lines still get ids); parents are taken from W3C
//!   `traceparent`/`tracestate` or B3 ([`b3`]) headers, so spans join the
//!   mesh's traces.
//!
//! It returns a [`TelemetryGuard`]: [`TelemetryGuard::shutdown`] flushes the
//! last spans (bounded) at the end of the drain.
//!
//! Metrics are not here: each application owns its registry
//! ([`crate::metrics`]).

pub mod b3;
pub mod json;

use std::io::IsTerminal;
use std::time::Duration;

use http::HeaderMap;
use opentelemetry::propagation::{Extractor, TextMapCompositePropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::{KeyValue, global};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SdkTracerProvider};
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

use crate::configuration::{LogFormat, Settings};
use crate::metrics::Method;

/// How long the final flush of spans may take.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot create the OTLP exporter for {endpoint}: {reason}")]
    Exporter { endpoint: String, reason: String },
}

/// Keeps telemetry alive. Call [`TelemetryGuard::shutdown`] at the end of
/// the drain; dropping it flushes stdout.
#[must_use = "call shutdown() so the last spans are exported"]
pub struct TelemetryGuard {
    /// Present when spans are exported.
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Flushes and shuts down the trace provider, bounded by a deadline.
    /// Blocking: call it off the async runtime (`spawn_blocking`), which
    /// must still be running for the exporter's gRPC client.
    pub fn shutdown(self) {
        if let Some(provider) = &self.provider
            && let Err(e) = provider.shutdown_with_timeout(FLUSH_TIMEOUT)
        {
            tracing::warn!(error = %e, "trace export did not flush cleanly");
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        use std::io::Write;
        let _ = std::io::stdout().flush();
    }
}

/// Installs logging and tracing for the process. Must run inside a Tokio
/// runtime (the OTLP exporter's gRPC channel needs one).
pub fn init(settings: &Settings) -> Result<TelemetryGuard, TelemetryError> {
    global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
        Box::new(b3::B3Propagator::default()),
        // Last, so it wins when both are present.
        Box::new(TraceContextPropagator::new()),
    ]));
    // Only an exporter needs OpenTelemetry spans: without one, no span is
    // built (log lines still get trace ids, see `server_span`).
    let provider = match &settings.telemetry.otlp_endpoint {
        Some(endpoint) => Some(tracer_provider(settings, endpoint)?),
        None => None,
    };
    // Spans for traces do not depend on the log level. Access lines are not
    // span events: the span already carries every field they have.
    let otel = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("switchyard"))
            .with_filter(
                Targets::new()
                    .with_target("switchyard", LevelFilter::INFO)
                    .with_target("switchyard::access", LevelFilter::OFF),
            )
    });

    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let format = settings
        .log
        .format
        .unwrap_or(if std::io::stdout().is_terminal() {
            LogFormat::Pretty
        } else {
            LogFormat::Json
        });
    let logs: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Json => Box::new(json::JsonLayer::new(std::io::stdout).with_filter(filter)),
        LogFormat::Pretty => Box::new(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stdout)
                .with_filter(filter),
        ),
    };
    if let Err(e) = tracing_subscriber::registry()
        .with(logs)
        .with(otel)
        .try_init()
    {
        eprintln!("switchyard: telemetry already initialised: {e}");
    }
    Ok(TelemetryGuard { provider })
}

fn tracer_provider(
    settings: &Settings,
    endpoint: &str,
) -> Result<SdkTracerProvider, TelemetryError> {
    let d = &settings.deployment;
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("switchyard");
    }
    let resource = resource
        .with_attributes([
            KeyValue::new("service.version", d.version.clone()),
            KeyValue::new("k8s.pod.name", d.pod.clone()),
            KeyValue::new("k8s.namespace.name", d.namespace.clone()),
            KeyValue::new("switchyard.track", d.track.as_str()),
        ])
        .build();
    // The sampler comes from OTEL_TRACES_SAMPLER(_ARG); the SDK's default
    // is parent-based always-on.
    use opentelemetry_otlp::WithExportConfig;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| TelemetryError::Exporter {
            endpoint: endpoint.to_owned(),
            reason: e.to_string(),
        })?;
    Ok(SdkTracerProvider::builder()
        .with_resource(resource)
        .with_batch_exporter(exporter)
        .build())
}

/// The headers a W3C or B3 parent can come in.
const PROPAGATION_HEADERS: [&str; 3] = ["traceparent", "b3", "x-b3-traceid"];

/// Reads propagation headers from HTTP/2 request headers.
struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The server span of one RPC, following the OpenTelemetry RPC
/// conventions, parented by the caller's trace context when it sent one.
/// Disabled (and free) when no subscriber is installed, as in tests that
/// run the application in-process.
pub fn server_span(method: &Method, headers: &HeaderMap, shadow: bool) -> tracing::Span {
    let request_id = headers.get("x-request-id").and_then(|v| v.to_str().ok());
    let span = tracing::info_span!(
        "grpc.server",
        otel.name = &*method.full_name,
        otel.kind = "server",
        otel.status_code = Empty,
        rpc.system = "grpc",
        rpc.service = &*method.service,
        rpc.method = &*method.method,
        rpc.grpc.status_code = Empty,
        request_id,
        trace_id = Empty,
        span_id = Empty,
        engine = Empty,
        variant = Empty,
        shadow,
    );
    if span.is_disabled() {
        return span;
    }
    // Most calls carry no trace context: skip the propagators then.
    let parent = PROPAGATION_HEADERS
        .iter()
        .any(|h| headers.contains_key(*h))
        .then(|| global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers))))
        .filter(|cx| cx.span().span_context().is_valid());
    if let Some(parent) = &parent {
        let _ = span.set_parent(parent.clone());
    }
    let cx = span.context();
    let (trace_id, span_id) = {
        let otel_span = cx.span();
        let sc = otel_span.span_context();
        if sc.is_valid() {
            (sc.trace_id(), sc.span_id())
        } else {
            // Not exporting (no OpenTelemetry layer): ids for the log lines
            // only, in the caller's trace when it sent one.
            let ids = RandomIdGenerator::default();
            let trace_id = parent
                .as_ref()
                .map(|p| p.span().span_context().trace_id())
                .unwrap_or_else(|| ids.new_trace_id());
            (trace_id, ids.new_span_id())
        }
    };
    span.record("trace_id", tracing::field::display(trace_id));
    span.record("span_id", tracing::field::display(span_id));
    span
}
