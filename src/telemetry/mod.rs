//! Logs and traces. [`init`] installs, process-wide:
//!
//! - logs: JSON lines on stdout (pretty on a terminal), level from
//!   `RUST_LOG` or the settings; each line of a request carries its
//!   `trace_id`, `span_id` and `request_id` (see [`json`]);
//! - traces: OpenTelemetry, exported over OTLP/gRPC ([`otlp`]) when an
//!   endpoint is configured (no span is built otherwise; log lines still
//!   get ids). Each RPC's server span and its children are recorded by
//!   the `rpc` module ([`server_span`], [`Trace`]) straight into the exporter's
//!   batches, with the SDK's sampler, with parents taken
//!   from W3C `traceparent`/`tracestate` or B3 ([`b3`]) headers so spans
//!   join the mesh's traces; other `tracing` spans at info and above (the
//!   dark-launch candidate) reach the exporter through
//!   `tracing-opentelemetry`.
//!
//! It returns a [`TelemetryGuard`]: [`TelemetryGuard::shutdown`] flushes the
//! last spans (bounded) at the end of the drain.
//!
//! Metrics are not here: each application owns its registry
//! ([`crate::metrics`]).

pub mod b3;
pub mod json;
pub mod otlp;
mod rpc;

pub use rpc::{ChildSpan, RpcSpan, Trace, server_span};

use std::io::IsTerminal;
use std::time::Duration;

use opentelemetry::propagation::TextMapCompositePropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{KeyValue, global};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Config, SdkTracerProvider, ShouldSample};
use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

use crate::configuration::{LogFormat, Settings};

/// The instrumentation scope of Switchyard's spans.
const SCOPE: &str = "switchyard";

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
    /// Blocking: call it off the async runtime (`spawn_blocking`). The
    /// exporter's gRPC client runs on its own thread.
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
        Some(endpoint) => {
            let (provider, sampler, sink) = tracer_provider(settings, endpoint)?;
            // The RPC spans: same sampler, same batches.
            rpc::install(sampler, sink);
            Some(provider)
        }
        None => None,
    };
    // Spans for traces do not depend on the log level. Access lines are not
    // span events: the span already carries every field they have.
    let otel = provider.as_ref().map(|provider| {
        // Only the attributes of the RPC conventions and ours: no source
        // location, thread, target or busy/idle time on every span.
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(SCOPE))
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            // Nothing reads the current OpenTelemetry context (parents and
            // links come from the tracing spans): no context switch on every
            // poll of an instrumented future.
            .with_context_activation(false)
            .with_filter(
                Targets::new()
                    .with_target("switchyard", LevelFilter::INFO)
                    .with_target("switchyard::access", LevelFilter::OFF)
                    // The RPC spans are recorded directly (see `rpc`).
                    .with_target(rpc::LOG_TARGET, LevelFilter::OFF),
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

/// The provider, its sampler and where its processor batches spans.
fn tracer_provider(
    settings: &Settings,
    endpoint: &str,
) -> Result<(SdkTracerProvider, Box<dyn ShouldSample>, otlp::SpanSink), TelemetryError> {
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
    // The sampler comes from OTEL_TRACES_SAMPLER(_ARG), read by the SDK
    // (its default is parent-based always-on); batching from OTEL_BSP_*
    // (see `otlp`).
    let sampler = Config::default().sampler;
    let processor = otlp::OtlpProcessor::new(endpoint).map_err(|e| TelemetryError::Exporter {
        endpoint: endpoint.to_owned(),
        reason: e.to_string(),
    })?;
    let sink = processor.sink();
    let provider = SdkTracerProvider::builder()
        .with_resource(resource)
        .with_sampler(sampler.clone())
        .with_span_processor(processor)
        .build();
    Ok((provider, sampler, sink))
}
