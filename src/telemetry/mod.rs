//! Logs and traces.
//!
//! - Logs are process-wide (one `tracing` subscriber, installed by
//!   [`init`]): JSON lines on stdout (pretty on a terminal), level from
//!   `RUST_LOG` (read from the settings' environment) or `log.level`; each
//!   line of a request carries its `trace_id`, `span_id` and `request_id`
//!   (see [`json`]).
//! - Traces are not process-wide: [`Tracing`] is a handle (the SDK tracer
//!   of one provider and the W3C + B3 propagators) that the application is
//!   given and passes down, like its metrics registry. Each sampled RPC's
//!   server span and its children (`flags.evaluate`, `engine.detect`) and
//!   the dark-launch candidate are SDK spans of that tracer (a call the
//!   sampler drops gets a span context only, see `rpc.rs`), batched by the
//!   SDK's `BatchSpanProcessor` and exported by `opentelemetry-otlp`
//!   (OTLP/gRPC or OTLP/HTTP, either with TLS, mutual TLS and gzip),
//!   configured from the `OTEL_*` variables the settings read ([`export`],
//!   [`tls`]). Two applications in one process can export to two
//!   collectors.
//!
//! [`Tracing::new`] returns the handle and a [`TelemetryGuard`]:
//! [`TelemetryGuard::shutdown`] flushes the last spans (bounded) at the end
//! of the drain.

pub mod b3;
pub mod export;
pub mod json;
mod rpc;
pub mod tls;

pub use export::ExportCounters;
pub use rpc::{ChildSpan, RpcSpan, Trace};

use std::fmt;
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::propagation::TextMapCompositePropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use tracing_subscriber::filter::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

use crate::configuration::{LogFormat, Settings};

/// The instrumentation scope of Switchyard's spans.
const SCOPE: &str = "switchyard";

/// How long the final flush of spans may take at most
/// (`OTEL_BSP_EXPORT_TIMEOUT` may shorten it).
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot create the OTLP exporter for {endpoint}: {reason}")]
    Exporter { endpoint: String, reason: String },
}

/// Keeps the trace pipeline alive. Call [`TelemetryGuard::shutdown`] at
/// the end of the drain; dropping it flushes stdout.
#[must_use = "call shutdown() so the last spans are exported"]
pub struct TelemetryGuard {
    /// Present when spans are exported.
    provider: Option<SdkTracerProvider>,
    /// The bound of the final flush.
    flush_timeout: Duration,
}

impl TelemetryGuard {
    /// Flushes and shuts down the trace provider, bounded by a deadline.
    /// Blocking: call it off the async runtime (`spawn_blocking`).
    pub fn shutdown(self) {
        if let Some(provider) = &self.provider
            && let Err(e) = provider.shutdown_with_timeout(self.flush_timeout)
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

/// What an application records spans with: the tracer and its sampler
/// (absent when export is off: no span is built, log lines still get ids),
/// the propagators that read the caller's context (W3C
/// `traceparent`/`tracestate`, B3), and the export counters. Cheap to
/// clone.
#[derive(Clone)]
pub struct Tracing {
    tracer: Option<SdkTracer>,
    /// The provider's sampler, asked before a server span is built (see
    /// [`rpc`]).
    sampler: Sampler,
    propagator: Arc<TextMapCompositePropagator>,
    counters: ExportCounters,
}

impl fmt::Debug for Tracing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracing")
            .field("exporting", &self.tracer.is_some())
            .finish_non_exhaustive()
    }
}

impl Default for Tracing {
    /// No export.
    fn default() -> Self {
        Self {
            tracer: None,
            sampler: Sampler::AlwaysOff,
            propagator: Arc::new(TextMapCompositePropagator::new(vec![
                Box::new(b3::B3Propagator::default()),
                // Last, so it wins when both are present.
                Box::new(TraceContextPropagator::new()),
            ])),
            counters: ExportCounters::default(),
        }
    }
}

impl Tracing {
    /// A pipeline to the collector the settings name (none when no
    /// endpoint is set). Must run inside a Tokio runtime (the gRPC
    /// channel's connection task runs on it). Installs nothing globally.
    pub fn new(settings: &Settings) -> Result<(Self, TelemetryGuard), TelemetryError> {
        let mut tracing = Self::default();
        let Some(endpoint) = &settings.telemetry.otlp_endpoint else {
            return Ok((
                tracing,
                TelemetryGuard {
                    provider: None,
                    flush_timeout: FLUSH_TIMEOUT,
                },
            ));
        };
        let otel = &settings.telemetry.otel;
        let d = &settings.deployment;
        let resource = Resource::builder_empty()
            .with_service_name(
                otel.service_name
                    .clone()
                    .unwrap_or_else(|| "switchyard".to_owned()),
            )
            .with_attributes(
                otel.resource_attributes
                    .iter()
                    .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
            )
            .with_attributes([
                KeyValue::new("service.version", d.version.clone()),
                KeyValue::new("k8s.pod.name", d.pod.clone()),
                KeyValue::new("k8s.namespace.name", d.namespace.clone()),
                KeyValue::new("switchyard.track", d.track.as_str()),
            ])
            .build();
        let processor = export::processor(endpoint, otel, tracing.counters.clone())?;
        let sampler = export::sampler(otel.sampler);
        let provider = SdkTracerProvider::builder()
            .with_resource(resource)
            .with_sampler(sampler.clone())
            .with_id_generator(rpc::JudgedTraceIds::default())
            .with_span_processor(processor)
            .build();
        tracing.tracer = Some(provider.tracer(SCOPE));
        tracing.sampler = sampler;
        Ok((
            tracing,
            TelemetryGuard {
                provider: Some(provider),
                flush_timeout: otel.bsp_export_timeout.min(FLUSH_TIMEOUT),
            },
        ))
    }

    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.tracer.is_some()
    }

    /// What the export pipeline has counted.
    pub fn counters(&self) -> &ExportCounters {
        &self.counters
    }

    /// Registers the export counters on `own` (an application's
    /// `switchyard_` sub-registry).
    pub fn register_metrics(&self, own: &mut prometheus_client::registry::Registry) {
        own.register(
            "trace_export_failures",
            "Span batches the OTLP exporter could not deliver after its retries (dropped)",
            self.counters.failures.clone(),
        );
        own.register(
            "trace_spans_exported",
            "Spans the OTLP collector accepted",
            self.counters.exported.clone(),
        );
    }
}

/// Installs logging for the process and builds the trace pipeline
/// ([`Tracing::new`]). Must run inside a Tokio runtime.
pub fn init(settings: &Settings) -> Result<(Tracing, TelemetryGuard), TelemetryError> {
    let filter = settings
        .telemetry
        .rust_log
        .as_deref()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .or_else(|| EnvFilter::try_new(&settings.log.level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
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
    if let Err(e) = tracing_subscriber::registry().with(logs).try_init() {
        eprintln!("switchyard: telemetry already initialised: {e}");
    }
    Tracing::new(settings)
}
