//! Where spans go: the SDK's `BatchSpanProcessor` and `opentelemetry-otlp`'s
//! exporter (OTLP/gRPC over tonic, or OTLP/HTTP with protobuf over hyper;
//! either with TLS, mutual TLS and gzip), built from [`OtelSettings`], with
//! the specification's retry (the exporter's recommended policy: retryable
//! codes, exponential backoff with jitter, within the export timeout).
//!
//! The crates also read some `OTEL_*` variables from the process
//! themselves; every value this pipeline uses is passed to their builders
//! from the settings, and those win. What they still read behind the
//! settings is the exporter's headers (merged into ours) and, when ours say
//! none, its compression. In the binary those are the same variables with
//! the same values, since the settings come from the process environment;
//! only an in-process test, which injects its own, could tell the
//! difference, so `scripts/test` clears `OTEL_*` before running the tests.
//!
//! [`Observed`] wraps the exporter to count what it delivers and what it
//! fails to, and to log failures at most once per [`LOG_EVERY`] with the
//! number of failures it did not log. A failure never reaches the request
//! path: a batch that cannot be delivered after its retries is dropped, and
//! spans ended while the processor's queue is full are dropped at once.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use opentelemetry_http::hyper::HyperClient;
use opentelemetry_otlp::{
    Compression, Protocol, WithExportConfig, WithHttpConfig, WithTonicConfig,
};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SpanData, SpanExporter,
};
use prometheus_client::metrics::counter::Counter;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::runtime::Handle;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::configuration::{OtelSettings, OtlpProtocol, SamplerSetting};

use super::TelemetryError;

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
    pub fn new(inner: E, counters: ExportCounters, runtime: Handle) -> Self {
        Self {
            inner,
            runtime,
            counters,
            log: Mutex::new(FailureLog::default()),
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
        match &result {
            Ok(()) => {
                self.counters.exported.inc_by(spans);
            }
            Err(error) => {
                self.counters.failures.inc();
                let admitted = self
                    .log
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
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
    let exporter = exporter(endpoint, otel).map_err(|reason| TelemetryError::Exporter {
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
        BatchSpanProcessor::builder(Observed::new(exporter, counters, runtime))
            .with_batch_config(config)
            .build(),
    )
}

fn exporter(
    endpoint: &str,
    otel: &OtelSettings,
) -> Result<opentelemetry_otlp::SpanExporter, String> {
    let builder = opentelemetry_otlp::SpanExporter::builder();
    let exporter = match otel.protocol {
        OtlpProtocol::Grpc => {
            let mut metadata = MetadataMap::new();
            for (key, value) in &otel.headers {
                let key = MetadataKey::from_bytes(key.as_bytes())
                    .map_err(|_| format!("header name {key:?} is not valid"))?;
                let value = MetadataValue::try_from(value.as_str())
                    .map_err(|_| format!("header {key} has a value that is not valid"))?;
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
            if let Some(files) = TlsFiles::read(endpoint, otel)? {
                b = b.with_tls_config(files.tonic());
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
            if let Some(files) = TlsFiles::read(endpoint, otel)? {
                // opentelemetry-http's hyper client with a rustls connector
                // in place of its plain one.
                let connector = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_tls_config(files.rustls()?)
                    .https_only()
                    .enable_http1()
                    .build();
                b = b.with_http_client(HyperClient::new(connector, otel.timeout, None));
            }
            b.build()
        }
    };
    exporter.map_err(|e| e.to_string())
}

/// The TLS material for an `https://` endpoint, read and checked once for
/// either protocol: the CA from `OTEL_EXPORTER_OTLP_CERTIFICATE` when set
/// (the Mozilla roots compiled in otherwise), and a client identity for
/// mutual TLS when `_CLIENT_CERTIFICATE` and `_CLIENT_KEY` are set.
struct TlsFiles {
    /// The CA's PEM, and the certificates in it.
    ca: Option<(Vec<u8>, Vec<CertificateDer<'static>>)>,
    /// The client's certificate chain and key: PEM, and parsed.
    identity: Option<ClientIdentity>,
}

struct ClientIdentity {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl TlsFiles {
    /// `None` for a plain `http://` endpoint.
    fn read(endpoint: &str, otel: &OtelSettings) -> Result<Option<Self>, String> {
        if !endpoint.starts_with("https://") {
            return Ok(None);
        }
        let ca = match &otel.certificate {
            Some(path) => {
                let pem = read(path)?;
                let certs = certificates(&pem, "OTEL_EXPORTER_OTLP_CERTIFICATE", path)?;
                Some((pem, certs))
            }
            None => None,
        };
        let identity = match (&otel.client_certificate, &otel.client_key) {
            (Some(cert), Some(key)) => {
                let cert_pem = read(cert)?;
                let key_pem = read(key)?;
                let chain = certificates(&cert_pem, "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", cert)?;
                let parsed = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
                    format!(
                        "OTEL_EXPORTER_OTLP_CLIENT_KEY: no private key in {}: {e}",
                        key.display()
                    )
                })?;
                Some(ClientIdentity {
                    cert_pem,
                    key_pem,
                    chain,
                    key: parsed,
                })
            }
            _ => None,
        };
        Ok(Some(Self { ca, identity }))
    }

    /// For tonic (OTLP/gRPC).
    fn tonic(&self) -> ClientTlsConfig {
        let tls = ClientTlsConfig::new();
        let tls = match &self.ca {
            Some((pem, _)) => tls.ca_certificate(Certificate::from_pem(pem)),
            None => tls.with_webpki_roots(),
        };
        match &self.identity {
            Some(id) => tls.identity(Identity::from_pem(&id.cert_pem, &id.key_pem)),
            None => tls,
        }
    }

    /// For hyper (OTLP/HTTP), on the ring provider tonic uses.
    fn rustls(&self) -> Result<rustls::ClientConfig, String> {
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca {
            Some((_, certs)) => {
                for cert in certs {
                    roots
                        .add(cert.clone())
                        .map_err(|e| format!("CA certificate: {e}"))?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
        match &self.identity {
            Some(id) => builder
                .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
                .map_err(|e| format!("client certificate and key: {e}")),
            None => Ok(builder.with_no_client_auth()),
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// The certificates in the PEM file `variable` names; at least one.
fn certificates(
    pem: &[u8],
    variable: &str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{variable}: {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{variable}: no PEM certificate in {}",
            path.display()
        ));
    }
    Ok(certs)
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
