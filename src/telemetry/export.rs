//! Where spans go: the SDK's `BatchSpanProcessor` and `opentelemetry-otlp`'s
//! exporter (OTLP/gRPC over tonic, or OTLP/HTTP with protobuf over
//! opentelemetry-http's hyper client; either with TLS and mutual TLS, see
//! [`super::tls`], and gzip), built from [`OtelSettings`], with the
//! specification's retry (the exporter's recommended policy: retryable
//! codes, exponential backoff with jitter, a delay the collector asks for,
//! all within the export timeout).
//!
//! The crates also read some `OTEL_*` variables from the process
//! themselves; every value this pipeline uses is passed to their builders
//! from the settings, and those win, with two exceptions: the exporter
//! adds the headers of `OTEL_EXPORTER_OTLP_[TRACES_]HEADERS` over ours
//! (theirs win for a name in both), and reads the compression when ours
//! say none. In the binary those are the same variables with the same
//! values, since the settings come from the process environment; only an
//! in-process test, which injects its own, could tell the difference, so
//! `scripts/test` clears `OTEL_*` before running the tests.
//!
//! [`Observed`] wraps the exporter to count what it delivers and what it
//! fails to, and to log failures at most once per [`LOG_EVERY`] with the
//! number of failures it did not log. A failure never reaches the request
//! path: a batch that cannot be delivered after its retries is dropped, and
//! spans ended while the processor's queue is full are dropped at once.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use opentelemetry_http::hyper::HyperClient;
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::{
    Compression, Protocol, WithExportConfig, WithHttpConfig, WithTonicConfig,
};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SpanData, SpanExporter,
};
use prometheus_client::metrics::counter::Counter;
use tokio::runtime::Handle;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};

use crate::configuration::{OtelSettings, OtlpProtocol, SamplerSetting};

use super::TelemetryError;
use super::tls::ExportTls;

/// At most one failure line per this interval.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// What the export pipeline counts, shared with the application's registry.
#[derive(Debug, Clone, Default)]
pub struct ExportCounters {
    /// Batches that could not be delivered (after retries).
    pub failures: Counter,
    /// Spans the collector accepted.
    pub exported: Counter,
}

/// The OTLP exporter, counted and logged at a bounded rate, and run in
/// the application's Tokio runtime.
pub struct Observed<E> {
    inner: E,
    /// The batch processor's thread is not a runtime thread; the exporters'
    /// clients (tonic's channel, hyper's connection pool, their timers) need
    /// one.
    runtime: Handle,
    counters: ExportCounters,
    log: Mutex<FailureLog>,
    /// What the HTTP client saw of the last failure.
    cause: TransportCause,
}

impl<E> fmt::Debug for Observed<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Observed").finish_non_exhaustive()
    }
}

/// When the last failure line was written and how many failures were not
/// logged since.
#[derive(Default)]
struct FailureLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl FailureLog {
    /// Whether to log this failure now, and how many were held back before.
    fn admit(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < LOG_EVERY)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

impl<E: SpanExporter> Observed<E> {
    pub fn new(inner: E, counters: ExportCounters, runtime: Handle, cause: TransportCause) -> Self {
        Self {
            inner,
            runtime,
            counters,
            log: Mutex::new(FailureLog::default()),
            cause,
        }
    }
}

impl<E: SpanExporter> SpanExporter for Observed<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len() as u64;
        let result = InRuntime {
            runtime: &self.runtime,
            future: Box::pin(self.inner.export(batch)),
        }
        .await;
        // Taken either way, so that a cause never outlives its export.
        let cause = self.cause.take();
        match &result {
            Ok(()) => {
                self.counters.exported.inc_by(spans);
            }
            Err(error) => {
                self.counters.failures.inc();
                let error = match cause {
                    Some(cause) => format!("{error}: {cause}"),
                    None => error.to_string(),
                };
                let admitted = self
                    .log
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .admit(Instant::now());
                if let Some(suppressed) = admitted {
                    tracing::warn!(
                        %error,
                        spans,
                        suppressed,
                        "trace export failed; the batch is dropped"
                    );
                }
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// Polls `future` inside `runtime`'s context.
struct InRuntime<'a, F> {
    runtime: &'a Handle,
    future: Pin<Box<F>>,
}

impl<F: Future> Future for InRuntime<'_, F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let _entered = this.runtime.enter();
        this.future.as_mut().poll(cx)
    }
}

/// The sampler the settings name.
pub fn sampler(setting: SamplerSetting) -> Sampler {
    use SamplerSetting::*;
    match setting {
        AlwaysOn => Sampler::AlwaysOn,
        AlwaysOff => Sampler::AlwaysOff,
        TraceIdRatio(r) => Sampler::TraceIdRatioBased(r),
        ParentBasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        ParentBasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        ParentBasedTraceIdRatio(r) => Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(r))),
    }
}

/// The batch processor over the configured exporter. Must run inside a
/// Tokio runtime (the gRPC channel's connection task runs on it).
pub fn processor(
    endpoint: &str,
    otel: &OtelSettings,
    counters: ExportCounters,
) -> Result<BatchSpanProcessor, TelemetryError> {
    let (exporter, cause) =
        exporter(endpoint, otel).map_err(|reason| TelemetryError::Exporter {
            endpoint: endpoint.to_owned(),
            reason,
        })?;
    let runtime = Handle::try_current().map_err(|e| TelemetryError::Exporter {
        endpoint: endpoint.to_owned(),
        reason: e.to_string(),
    })?;
    let config = BatchConfigBuilder::default()
        .with_max_queue_size(otel.bsp_max_queue_size)
        .with_max_export_batch_size(otel.bsp_max_export_batch_size)
        .with_scheduled_delay(otel.bsp_schedule_delay)
        .build();
    Ok(
        BatchSpanProcessor::builder(Observed::new(exporter, counters, runtime, cause))
            .with_batch_config(config)
            .build(),
    )
}

/// The configured exporter, and where its HTTP client leaves the cause of
/// a transport failure.
fn exporter(
    endpoint: &str,
    otel: &OtelSettings,
) -> Result<(opentelemetry_otlp::SpanExporter, TransportCause), String> {
    let tls = ExportTls::read(endpoint, otel)?;
    let cause = TransportCause::default();
    let builder = opentelemetry_otlp::SpanExporter::builder();
    let exporter = match otel.protocol {
        OtlpProtocol::Grpc => {
            let mut metadata = MetadataMap::new();
            for (key, value) in &otel.headers {
                // Names and values are checked with the settings; a `-bin`
                // name is the one thing gRPC's ASCII metadata refuses.
                let key = MetadataKey::from_bytes(key.as_bytes()).map_err(|_| {
                    format!("OTEL_EXPORTER_OTLP_HEADERS: {key:?} is not a gRPC ASCII metadata name")
                })?;
                let value = MetadataValue::try_from(value.as_str()).map_err(|_| {
                    format!("OTEL_EXPORTER_OTLP_HEADERS: the value of {key} is not valid")
                })?;
                metadata.insert(key, value);
            }
            let mut b = builder
                .with_tonic()
                .with_endpoint(endpoint)
                .with_protocol(Protocol::Grpc)
                .with_timeout(otel.timeout)
                .with_metadata(metadata);
            if otel.gzip {
                b = b.with_compression(Compression::Gzip);
            }
            if let Some(tls) = &tls {
                b = b.with_tls_config(tls.tonic());
            }
            b.build()
        }
        OtlpProtocol::HttpProtobuf => {
            // The general endpoint is a base URL; the traces one is used as is.
            let url = if otel.endpoint_is_base {
                format!("{}/v1/traces", endpoint.trim_end_matches('/'))
            } else {
                endpoint.to_owned()
            };
            let mut b = builder
                .with_http()
                .with_endpoint(url)
                .with_protocol(Protocol::HttpBinary)
                .with_timeout(otel.timeout)
                .with_headers(otel.headers.iter().cloned().collect::<HashMap<_, _>>());
            if otel.gzip {
                b = b.with_compression(Compression::Gzip);
            }
            // opentelemetry-http's hyper client, with a rustls connector for
            // `https://`.
            b = match &tls {
                Some(tls) => {
                    let connector = hyper_rustls::HttpsConnectorBuilder::new()
                        .with_tls_config(tls.rustls())
                        .https_only()
                        .enable_http1()
                        .build();
                    b.with_http_client(Diagnosed {
                        inner: HyperClient::new(connector, otel.timeout, None),
                        cause: cause.clone(),
                    })
                }
                None => b.with_http_client(Diagnosed {
                    inner: HyperClient::with_default_connector(otel.timeout, None),
                    cause: cause.clone(),
                }),
            };
            b.build()
        }
    };
    Ok((exporter.map_err(|e| e.to_string())?, cause))
}

/// The cause of the last transport failure of the HTTP client (connection
/// refused, a certificate the roots do not trust, ...), which the exporter
/// reports only as "network error"; taken by the failure line.
#[derive(Debug, Clone, Default)]
pub struct TransportCause(Arc<Mutex<Option<String>>>);

impl TransportCause {
    fn set(&self, cause: Option<String>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = cause;
    }

    fn take(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// An HTTP client that keeps the cause of its failures.
#[derive(Debug)]
struct Diagnosed<C> {
    inner: C,
    cause: TransportCause,
}

impl<C: HttpClient> HttpClient for Diagnosed<C> {
    // The trait is `#[async_trait]`: this is its signature, spelled out.
    fn send_bytes<'a, 'f>(
        &'a self,
        request: http::Request<bytes::Bytes>,
    ) -> Pin<Box<dyn Future<Output = Result<http::Response<bytes::Bytes>, HttpError>> + Send + 'f>>
    where
        'a: 'f,
        Self: 'f,
    {
        Box::pin(async move {
            let result = self.inner.send_bytes(request).await;
            // The last attempt's: an answer (any status) clears it.
            self.cause
                .set(result.as_ref().err().map(|error| chain(error.as_ref())));
            result
        })
    }
}

/// An error and its sources, `: `-separated.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let more = e.to_string();
        if !text.ends_with(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::configuration::{Overrides, Settings};

    fn otel(env: &[(&str, &str)]) -> OtelSettings {
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::load(&env, &Overrides::default())
            .expect("valid")
            .telemetry
            .otel
    }

    #[test]
    fn the_specification_variables_are_read_from_the_given_environment() {
        let o = otel(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "a=1, Authorization=Bearer%20x",
            ),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "250"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.1"),
            ("OTEL_RESOURCE_ATTRIBUTES", "team=search,zone=eu%2Dwest"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "4096"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ]);
        assert_eq!(o.protocol, OtlpProtocol::HttpProtobuf, "TRACES_ wins");
        assert!(o.endpoint_is_base);
        assert_eq!(
            o.headers,
            [("a", "1"), ("Authorization", "Bearer x")].map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        assert_eq!(o.timeout, Duration::from_millis(250));
        assert!(o.gzip);
        assert_eq!(o.sampler, SamplerSetting::ParentBasedTraceIdRatio(0.1));
        assert_eq!(o.resource_attributes[1], ("zone".into(), "eu-west".into()));
        assert_eq!(o.bsp_max_queue_size, 4096);
        assert_eq!(o.bsp_schedule_delay, Duration::from_millis(100));

        // The control: nothing set, the defaults.
        let d = otel(&[]);
        assert_eq!(d, OtelSettings::default());
        assert_eq!(d.sampler, SamplerSetting::ParentBasedAlwaysOn);
        assert!(
            !otel(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/x")]).endpoint_is_base
        );
    }

    #[tokio::test]
    async fn the_http_client_keeps_the_cause_of_a_transport_failure() {
        // A port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let cause = TransportCause::default();
        let client = Diagnosed {
            inner: HyperClient::with_default_connector(Duration::from_secs(5), None),
            cause: cause.clone(),
        };
        let request = http::Request::post(format!("http://127.0.0.1:{port}/v1/traces"))
            .body(bytes::Bytes::new())
            .expect("request");
        assert!(client.send_bytes(request).await.is_err());
        let text = cause.take().expect("the cause is kept");
        assert!(text.to_lowercase().contains("refused"), "{text}");
        assert_eq!(cause.take(), None, "and taken once");
    }

    #[test]
    fn failure_lines_are_bounded_and_count_what_they_held_back() {
        let mut log = FailureLog::default();
        let t0 = Instant::now();
        assert_eq!(log.admit(t0), Some(0), "the first failure is logged");
        for i in 1..=5 {
            assert_eq!(log.admit(t0 + Duration::from_secs(i)), None);
        }
        assert_eq!(
            log.admit(t0 + LOG_EVERY + Duration::from_millis(1)),
            Some(5),
            "the next line after the interval reports the five held back"
        );
        assert_eq!(log.admit(t0 + LOG_EVERY + Duration::from_secs(2)), None);
    }
}
