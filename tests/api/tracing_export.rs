//! Trace export through the maintained OTLP exporter, in process: each
//! application is handed its own trace pipeline (`Tracing`), so two apps
//! export to two collectors in one process; TLS with a self-signed CA,
//! mutual TLS and gzip, over OTLP/gRPC and OTLP/HTTP; a collector that
//! refuses then accepts (retried, nothing lost), collectors that misbehave
//! (down, refusing, black-holed) while the service keeps serving, and a
//! final flush that ends at its bound.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use switchyard::engine::RealEngines;
use switchyard::grpc::pb;
use switchyard::grpc::pb::detector_client::DetectorClient;
use switchyard::telemetry::{TelemetryGuard, Tracing};
use tonic::codec::CompressionEncoding;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::helpers::{TestApp, http_get, settings_in};
use crate::process::Server;

const PARENT: &str = "b7ad6b7169203331";
const DETECT: &str = "switchyard.v1.Detector/Detect";

/// An OTLP/gRPC collector: records every export; refuses (UNAVAILABLE,
/// which the specification says to retry) the first `refuse` calls.
#[derive(Clone, Default)]
struct Collector(Arc<CollectorState>);

#[derive(Default)]
struct CollectorState {
    requests: Mutex<Vec<ExportTraceServiceRequest>>,
    refuse: AtomicUsize,
    refused: AtomicUsize,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let refuse = self
            .0
            .refuse
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if refuse {
            self.0.refused.fetch_add(1, Ordering::SeqCst);
            return Err(tonic::Status::unavailable("not now"));
        }
        lock(&self.0.requests).push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    fn refusing(calls: usize) -> Self {
        let collector = Self::default();
        collector.0.refuse.store(calls, Ordering::SeqCst);
        collector
    }

    /// Serves on 127.0.0.1 (port 0) for the rest of the test, with TLS
    /// and accepting gzip when asked.
    async fn serve(&self, tls: Option<ServerTlsConfig>, gzip: bool) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut service = TraceServiceServer::new(self.clone());
        if gzip {
            service = service.accept_compressed(CompressionEncoding::Gzip);
        }
        let mut server = tonic::transport::Server::builder();
        if let Some(tls) = tls {
            server = server.tls_config(tls).expect("server TLS");
        }
        tokio::spawn(
            server
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        addr
    }

    fn spans(&self) -> Vec<(BTreeMap<String, String>, Span)> {
        spans_of(&lock(&self.0.requests))
    }

    fn refused(&self) -> usize {
        self.0.refused.load(Ordering::SeqCst)
    }
}

/// Every span of `requests`, with its resource's string attributes.
fn spans_of(requests: &[ExportTraceServiceRequest]) -> Vec<(BTreeMap<String, String>, Span)> {
    let mut out = Vec::new();
    for request in requests {
        for resource_spans in &request.resource_spans {
            let resource: BTreeMap<String, String> = resource_spans
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .filter_map(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    any_value::Value::StringValue(s) => Some((kv.key.clone(), s.clone())),
                    _ => None,
                })
                .collect();
            for scope in &resource_spans.scope_spans {
                for span in &scope.spans {
                    out.push((resource.clone(), span.clone()));
                }
            }
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A distinct, valid trace id.
fn trace_id(n: usize) -> String {
    format!("{:032x}", 0x5eed_0000_0000 + n)
}

/// An application with its own trace pipeline.
struct Traced {
    app: TestApp,
    tracing: Tracing,
    guard: TelemetryGuard,
}

impl Traced {
    /// The test settings with `env` injected (no process environment).
    async fn spawn(env: &[(&str, &str)]) -> Self {
        // The exporter crate reads these from the process behind the
        // settings (src/telemetry/export.rs); with one set, these tests
        // would not test what they say.
        for name in [
            "OTEL_EXPORTER_OTLP_HEADERS",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
            "OTEL_EXPORTER_OTLP_COMPRESSION",
            "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
        ] {
            assert!(
                std::env::var_os(name).is_none(),
                "{name} is set in the test process: unset it (scripts/test does)"
            );
        }
        let settings = settings_in(env, &[]).expect("valid settings");
        let (tracing, guard) = Tracing::new(&settings).expect("trace pipeline");
        assert!(tracing.exporting(), "an endpoint is configured");
        let app = TestApp::spawn_traced(settings, Arc::new(RealEngines), tracing.clone())
            .await
            .ready()
            .await;
        Self {
            app,
            tracing,
            guard,
        }
    }

    /// One sampled Detect call in trace `trace`.
    async fn detect(&self, trace: &str) {
        self.detect_with(Some(trace)).await;
    }

    /// One Detect call, in trace `trace` (a sampled parent) or in a trace
    /// of its own.
    async fn detect_with(&self, trace: Option<&str>) {
        let mut request = tonic::Request::new(pb::DetectRequest {
            text: "A perfectly ordinary English sentence".into(),
        });
        if let Some(trace) = trace {
            request.metadata_mut().insert(
                "traceparent",
                format!("00-{trace}-{PARENT}-01").parse().expect("ascii"),
            );
        }
        self.app
            .detector()
            .await
            .detect(request)
            .await
            .expect("Detect succeeds");
    }

    /// Drains the application (every call has ended, and so has its server
    /// span, which ends after the reply's trailers), flushes the last spans
    /// (the provider's shutdown, as at the end of the drain) and returns the
    /// export counters: (spans exported, failed batches).
    async fn flush(self) -> (u64, u64) {
        let Traced {
            app,
            tracing,
            guard,
        } = self;
        app.signal().await;
        app.outcome().await;
        tokio::task::spawn_blocking(move || guard.shutdown())
            .await
            .expect("flush");
        let counters = tracing.counters();
        (counters.exported.get(), counters.failures.get())
    }
}

/// An application with `env` makes one sampled call in `trace` and is
/// drained: (spans exported, failed batches).
async fn one_call(env: &[(&str, &str)], trace: &str) -> (u64, u64) {
    let app = Traced::spawn(env).await;
    app.detect(trace).await;
    app.flush().await
}

/// An application with `env` exports nothing of its one call, and counts
/// the failure.
async fn fails_to_export(env: &[(&str, &str)], trace: &str, why: &str) {
    let (exported, failures) = one_call(env, trace).await;
    assert_eq!(exported, 0, "{why}");
    assert!(failures >= 1, "{why}: the failure is counted");
}

/// The names of the spans of trace `trace`, sorted.
fn names_in(spans: &[(BTreeMap<String, String>, Span)], trace: &str) -> Vec<String> {
    let mut names: Vec<String> = spans
        .iter()
        .filter(|(_, s)| hex(&s.trace_id) == trace)
        .map(|(_, s)| s.name.clone())
        .collect();
    names.sort();
    names
}

/// A call's three spans.
fn three_spans() -> Vec<String> {
    let mut names = vec![
        DETECT.to_owned(),
        "engine.detect".to_owned(),
        "flags.evaluate".to_owned(),
    ];
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_applications_in_one_process_export_to_their_own_collectors() {
    let (a, b) = (Collector::default(), Collector::default());
    let a_endpoint = format!("http://{}", a.serve(None, false).await);
    let b_endpoint = format!("http://{}", b.serve(None, false).await);
    let app_a = Traced::spawn(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &a_endpoint),
        ("OTEL_SERVICE_NAME", "app-a"),
    ])
    .await;
    let app_b = Traced::spawn(&[
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &b_endpoint),
        ("OTEL_SERVICE_NAME", "app-b"),
    ])
    .await;
    let (trace_a, trace_b) = (trace_id(1), trace_id(2));
    app_a.detect(&trace_a).await;
    app_b.detect(&trace_b).await;
    // Nothing is sent before the batch delay (5 s); the flush sends it.
    assert!(a.spans().is_empty() && b.spans().is_empty());
    assert_eq!(app_a.flush().await, (3, 0));
    assert_eq!(app_b.flush().await, (3, 0));

    for (collector, mine, other, service) in [
        (&a, &trace_a, &trace_b, "app-a"),
        (&b, &trace_b, &trace_a, "app-b"),
    ] {
        let spans = collector.spans();
        assert_eq!(names_in(&spans, mine), three_spans(), "{service}");
        assert!(
            names_in(&spans, other).is_empty(),
            "{service} got the other app's spans"
        );
        assert!(
            spans
                .iter()
                .all(|(r, _)| r.get("service.name").map(String::as_str) == Some(service)),
            "{service}'s resource"
        );
        let (_, server) = spans
            .iter()
            .find(|(_, s)| s.name == DETECT)
            .expect("server span");
        assert_eq!(hex(&server.parent_span_id), PARENT);
        for (_, child) in spans.iter().filter(|(_, s)| s.name != DETECT) {
            assert_eq!(
                child.parent_span_id, server.span_id,
                "{}'s parent",
                child.name
            );
        }
    }
}

/// Whether the specification's `TraceIdRatioBased` rule samples
/// `trace_id` at `ratio`: the low 8 bytes, shifted right by one, under
/// `ratio` of 2^63.
fn ratio_samples(trace_id: &[u8], ratio: f64) -> bool {
    let low: [u8; 8] = trace_id[8..16].try_into().expect("16-byte trace id");
    (u64::from_be_bytes(low) >> 1) < (ratio * (1u64 << 63) as f64) as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ratio_sampler_judges_each_server_span_by_its_own_trace_id() {
    // The sampler is asked before the SDK builds a span (dropped calls get
    // none); the span it keeps must carry the trace id it judged, or the
    // SDK would judge a second id and sample a quarter, not a half.
    let collector = Collector::default();
    let endpoint = format!("http://{}", collector.serve(None, false).await);
    let app = Traced::spawn(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_TRACES_SAMPLER", "traceidratio"),
        ("OTEL_TRACES_SAMPLER_ARG", "0.5"),
    ])
    .await;
    const ROOTS: usize = 400;
    for _ in 0..ROOTS {
        app.detect_with(None).await;
    }
    // Not parent-based: a sampled caller is judged by its trace id too.
    let kept = format!("{:016x}{:016x}", 0x5eed_u64, 1_u64);
    let dropped = format!("{:016x}{:016x}", 0x5eed_u64, u64::MAX);
    app.detect(&kept).await;
    app.detect(&dropped).await;
    let (exported, failures) = app.flush().await;
    assert_eq!(failures, 0);

    let spans = collector.spans();
    assert_eq!(exported as usize, spans.len());
    let servers: Vec<&Span> = spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| s.name == DETECT)
        .collect();
    for server in &servers {
        assert!(
            ratio_samples(&server.trace_id, 0.5),
            "exported server span in trace {} is one the ratio drops",
            hex(&server.trace_id)
        );
        assert_eq!(
            names_in(&spans, &hex(&server.trace_id)),
            three_spans(),
            "a sampled call exports its three spans"
        );
    }
    assert_eq!(
        spans.len(),
        3 * servers.len(),
        "no span outside a sampled call"
    );
    assert_eq!(
        names_in(&spans, &kept),
        three_spans(),
        "the low trace id is kept"
    );
    assert!(
        names_in(&spans, &dropped).is_empty(),
        "the high trace id is dropped"
    );
    let roots = servers
        .iter()
        .filter(|s| s.parent_span_id.is_empty())
        .count();
    // At one half: 200 ± 10 (one standard deviation); judged twice, at a
    // quarter: 100 ± 8.7. Outside 150..=250 is five deviations away for
    // the right rate.
    assert!(
        (150..=250).contains(&roots),
        "{roots} of {ROOTS} calls sampled at a ratio of 0.5"
    );
}

/// A test CA, a `localhost` server certificate and a client certificate it
/// signed, written as PEM files.
struct Pki {
    ca: PathBuf,
    ca_pem: String,
    server_cert: String,
    server_key: String,
    client_cert: PathBuf,
    client_key: PathBuf,
}

impl Pki {
    fn new(dir: &Path) -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "switchyard test CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
        let issuer = Issuer::from_params(&ca, &ca_key);
        let server_key = KeyPair::generate().expect("server key");
        let server_cert = CertificateParams::new(vec!["localhost".to_owned()])
            .expect("server params")
            .signed_by(&server_key, &issuer)
            .expect("server certificate");
        let client_key = KeyPair::generate().expect("client key");
        let mut client = CertificateParams::new(vec!["switchyard".to_owned()]).expect("params");
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_cert = client
            .signed_by(&client_key, &issuer)
            .expect("client certificate");
        let write = |name: &str, pem: String| {
            let path = dir.join(name);
            std::fs::write(&path, pem).expect("write PEM");
            path
        };
        Self {
            ca: write("ca.pem", ca_cert.pem()),
            ca_pem: ca_cert.pem(),
            server_cert: server_cert.pem(),
            server_key: server_key.serialize_pem(),
            client_cert: write("client.pem", client_cert.pem()),
            client_key: write("client-key.pem", client_key.serialize_pem()),
        }
    }

    /// tonic's server side: the `localhost` identity, and when
    /// `client_auth`, client certificates signed by the CA required.
    fn tonic(&self, client_auth: bool) -> ServerTlsConfig {
        let tls = ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.server_cert, &self.server_key));
        if client_auth {
            tls.client_ca_root(Certificate::from_pem(&self.ca_pem))
        } else {
            tls
        }
    }

    /// The same for a rustls server (the OTLP/HTTP collector).
    fn rustls(&self, client_auth: bool) -> rustls::ServerConfig {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("TLS versions");
        let builder = if client_auth {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
                roots.add(cert.expect("CA PEM")).expect("CA");
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let chain = CertificateDer::pem_slice_iter(self.server_cert.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("server PEM");
        let key = PrivateKeyDer::from_pem_slice(self.server_key.as_bytes()).expect("key PEM");
        builder.with_single_cert(chain, key).expect("server TLS")
    }

    fn ca(&self) -> &str {
        self.ca.to_str().expect("utf-8")
    }

    fn client_identity(&self) -> [(&'static str, &str); 2] {
        [
            (
                "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
                self.client_cert.to_str().expect("utf-8"),
            ),
            (
                "OTEL_EXPORTER_OTLP_CLIENT_KEY",
                self.client_key.to_str().expect("utf-8"),
            ),
        ]
    }
}

/// The TLS checks both protocols pass, against a collector at `endpoint`
/// whose received spans `spans` reads: without the test CA configured
/// nothing is exported; with it (and, when the collector requires one, a
/// client certificate: without it nothing either) the call's spans arrive.
async fn exports_only_when_trusted(
    pki: &Pki,
    endpoint: &str,
    protocol: &[(&'static str, &'static str)],
    client_auth: bool,
    spans: impl Fn() -> Vec<(BTreeMap<String, String>, Span)>,
) {
    let mut env = vec![("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)];
    env.extend_from_slice(protocol);
    fails_to_export(&env, &trace_id(10), "the test CA is not a Mozilla root").await;
    env.push(("OTEL_EXPORTER_OTLP_CERTIFICATE", pki.ca()));
    if client_auth {
        fails_to_export(&env, &trace_id(11), "no client certificate").await;
        env.extend(pki.client_identity());
    }
    assert!(spans().is_empty(), "nothing arrived from the controls");
    assert_eq!(one_call(&env, &trace_id(12)).await, (3, 0));
    assert_eq!(names_in(&spans(), &trace_id(12)), three_spans());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_over_tls_and_mutual_tls_to_a_collector_whose_ca_is_configured() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = Pki::new(dir.path());
    for client_auth in [false, true] {
        let collector = Collector::default();
        let tls = pki.tonic(client_auth);
        let port = collector.serve(Some(tls), false).await.port();
        let endpoint = format!("https://localhost:{port}");
        exports_only_when_trusted(&pki, &endpoint, &[], client_auth, || collector.spans()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_compression_is_sent_when_configured() {
    let gzip = Collector::default();
    let gzip_endpoint = format!("http://{}", gzip.serve(None, true).await);
    let plain = Collector::default();
    let plain_endpoint = format!("http://{}", plain.serve(None, false).await);

    // A collector that does not accept gzip rejects the compressed export
    // (so the export really is compressed)...
    let compressed = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", plain_endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
    ];
    assert_eq!(
        one_call(&compressed, &trace_id(20)).await,
        (0, 1),
        "gzip to a plain collector"
    );
    assert!(plain.spans().is_empty());
    // ...and takes an uncompressed one (the control).
    let uncompressed = [("OTEL_EXPORTER_OTLP_ENDPOINT", plain_endpoint.as_str())];
    assert_eq!(one_call(&uncompressed, &trace_id(21)).await, (3, 0));
    assert_eq!(names_in(&plain.spans(), &trace_id(21)), three_spans());

    let compressed = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", gzip_endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "gzip"),
    ];
    assert_eq!(one_call(&compressed, &trace_id(22)).await, (3, 0));
    assert_eq!(names_in(&gzip.spans(), &trace_id(22)), three_spans());
}

/// An OTLP/HTTP collector (`POST /v1/traces`, protobuf bodies, gzip when
/// the request says `content-encoding: gzip`), over TLS when asked. It
/// refuses the first `refuse` attempts: the second with 429 and
/// `Retry-After: 1`, the others with 503 (both retryable, the spec says).
#[derive(Clone, Default)]
struct HttpCollector(Arc<HttpState>);

#[derive(Default)]
struct HttpState {
    exports: Mutex<Vec<HttpExport>>,
    /// When each request came, accepted or not.
    attempts: Mutex<Vec<Instant>>,
    refuse: usize,
}

/// One export as the HTTP collector received it.
#[derive(Clone)]
struct HttpExport {
    content_type: String,
    content_encoding: Option<String>,
    request: ExportTraceServiceRequest,
}

impl HttpCollector {
    fn refusing(refuse: usize) -> Self {
        Self(Arc::new(HttpState {
            refuse,
            ..HttpState::default()
        }))
    }

    async fn serve(&self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(axum::serve(listener, self.router()).into_future());
        addr
    }

    async fn serve_tls(&self, tls: rustls::ServerConfig) -> SocketAddr {
        let listener = TlsListener {
            tcp: tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind"),
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(tls)),
        };
        let addr = listener.tcp.local_addr().expect("addr");
        tokio::spawn(axum::serve(listener, self.router()).into_future());
        addr
    }

    fn router(&self) -> axum::Router {
        let this = self.clone();
        axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |headers: http::HeaderMap, body: bytes::Bytes| {
                let this = this.clone();
                async move { this.receive(&headers, &body) }
            }),
        )
    }

    fn receive(&self, headers: &http::HeaderMap, body: &[u8]) -> axum::response::Response {
        use axum::response::IntoResponse;
        use http::StatusCode;
        let attempt = {
            let mut attempts = lock(&self.0.attempts);
            attempts.push(Instant::now());
            attempts.len()
        };
        if attempt <= self.0.refuse {
            return if attempt == 2 {
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(http::header::RETRY_AFTER, "1")],
                )
                    .into_response()
            } else {
                StatusCode::SERVICE_UNAVAILABLE.into_response()
            };
        }
        let header = |name| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let content_encoding = header(http::header::CONTENT_ENCODING);
        let body = match content_encoding.as_deref() {
            None => body.to_vec(),
            Some("gzip") => {
                let mut plain = Vec::new();
                let mut gunzip = flate2::read::GzDecoder::new(body);
                if std::io::Read::read_to_end(&mut gunzip, &mut plain).is_err() {
                    return StatusCode::BAD_REQUEST.into_response();
                }
                plain
            }
            Some(_) => return StatusCode::UNSUPPORTED_MEDIA_TYPE.into_response(),
        };
        let Ok(request) = ExportTraceServiceRequest::decode(&body[..]) else {
            return StatusCode::BAD_REQUEST.into_response();
        };
        lock(&self.0.exports).push(HttpExport {
            content_type: header(http::header::CONTENT_TYPE).unwrap_or_default(),
            content_encoding,
            request,
        });
        ExportTraceServiceResponse::default()
            .encode_to_vec()
            .into_response()
    }

    fn requests(&self) -> Vec<HttpExport> {
        lock(&self.0.exports).clone()
    }

    fn attempts(&self) -> Vec<Instant> {
        lock(&self.0.attempts).clone()
    }

    fn spans(&self) -> Vec<(BTreeMap<String, String>, Span)> {
        let bodies: Vec<_> = self.requests().into_iter().map(|e| e.request).collect();
        spans_of(&bodies)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A TCP listener that hands axum only connections whose TLS handshake
/// succeeded (a client the server does not accept is dropped there).
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(tls) = self.acceptor.accept(tcp).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_otlp_http_protobuf_when_the_protocol_says_so() {
    // Control: without the protocol variable the export is gRPC, which an
    // HTTP/1.1 collector cannot take.
    let collector = HttpCollector::default();
    let endpoint = format!("http://{}", collector.serve().await);
    let grpc = [("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())];
    fails_to_export(&grpc, &trace_id(30), "gRPC to an HTTP/1.1 collector").await;
    assert!(collector.requests().is_empty());

    // Plain and gzip bodies. The collector decodes a body as gzip only when
    // the request says so, and a body that is not gzip fails the export.
    for (n, compression, encoding) in [(31, "none", None), (32, "gzip", Some("gzip"))] {
        let collector = HttpCollector::default();
        // The general endpoint is a base URL: `/v1/traces` is appended.
        let endpoint = format!("http://{}", collector.serve().await);
        let http = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", compression),
            ("OTEL_SERVICE_NAME", "over-http"),
        ];
        assert_eq!(one_call(&http, &trace_id(n)).await, (3, 0), "{compression}");
        let requests = collector.requests();
        assert!(
            requests
                .iter()
                .all(|e| e.content_type == "application/x-protobuf"
                    && e.content_encoding.as_deref() == encoding),
            "{compression}: {:?}",
            requests
                .iter()
                .map(|e| (&e.content_type, &e.content_encoding))
                .collect::<Vec<_>>()
        );
        let spans = collector.spans();
        assert_eq!(names_in(&spans, &trace_id(n)), three_spans());
        assert!(
            spans
                .iter()
                .all(|(r, _)| r.get("service.name").map(String::as_str) == Some("over-http"))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_http_exports_over_tls_and_mutual_tls() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pki = Pki::new(dir.path());
    let http = [("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")];
    for client_auth in [false, true] {
        let collector = HttpCollector::default();
        let port = collector.serve_tls(pki.rustls(client_auth)).await.port();
        let endpoint = format!("https://localhost:{port}");
        exports_only_when_trusted(&pki, &endpoint, &http, client_auth, || collector.spans()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_refuses_then_accepts_gets_every_span() {
    // UNAVAILABLE twice: the exporter retries with backoff (100 ms, then
    // 200 ms, with jitter) within its timeout.
    let collector = Collector::refusing(2);
    let endpoint = format!("http://{}", collector.serve(None, false).await);
    let app = Traced::spawn(&[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)]).await;
    let calls = 20;
    for n in 0..calls {
        app.detect(&trace_id(100 + n)).await;
    }
    let (exported, failures) = app.flush().await;
    assert_eq!(collector.refused(), 2, "the collector refused twice");
    assert_eq!(failures, 0, "retried, not failed");
    assert_eq!(exported, 3 * calls as u64);
    let spans = collector.spans();
    for n in 0..calls {
        assert_eq!(
            names_in(&spans, &trace_id(100 + n)),
            three_spans(),
            "call {n}"
        );
    }

    // Control: a collector that never accepts gets nothing and the failure
    // is counted.
    let never = Collector::refusing(usize::MAX);
    let endpoint = format!("http://{}", never.serve(None, false).await);
    let app = Traced::spawn(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "2000"),
    ])
    .await;
    app.detect(&trace_id(200)).await;
    assert_eq!(app.flush().await, (0, 1));
    assert!(never.refused() >= 2, "retried before giving up");
    assert!(never.spans().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_http_retries_throttling_and_unavailable_then_delivers() {
    let collector = HttpCollector::refusing(2);
    let endpoint = format!("http://{}", collector.serve().await);
    let http = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
    ];
    assert_eq!(
        one_call(&http, &trace_id(50)).await,
        (3, 0),
        "retried, not failed"
    );
    let attempts = collector.attempts();
    assert_eq!(attempts.len(), 3, "503, 429, then accepted");
    // The backoff alone would retry after ~200 ms; the collector asked for 1 s.
    let waited = attempts[2] - attempts[1];
    assert!(
        waited >= Duration::from_millis(950),
        "Retry-After: 1, waited {waited:?}"
    );
    assert_eq!(names_in(&collector.spans(), &trace_id(50)), three_spans());

    // Control: a collector that never accepts gets nothing and the failure
    // is counted.
    let never = HttpCollector::refusing(usize::MAX);
    let endpoint = format!("http://{}", never.serve().await);
    let http = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "2000"),
    ];
    assert_eq!(one_call(&http, &trace_id(51)).await, (0, 1));
    assert!(never.attempts().len() >= 2, "retried before giving up");
    assert!(never.requests().is_empty());
}

/// The final flush is part of the drain and has a deadline: to a collector
/// that accepts connections and never answers, with an export timeout of a
/// minute, the process exits once `OTEL_BSP_EXPORT_TIMEOUT` has passed,
/// over either protocol, and after 5 s when it is not set (its default, 30
/// s, is capped). That each exits at its own bound shows the flush really
/// waits on the collector until then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_final_flush_to_a_collector_that_never_answers_is_bounded() {
    let endpoint = format!("http://{}", black_hole().await);
    // (protocol, OTEL_BSP_EXPORT_TIMEOUT, the bound in ms)
    let cases = [
        ("grpc", Some("1000"), 1000),
        ("http/protobuf", Some("1000"), 1000),
        ("grpc", None, 5000),
    ];
    let mut servers: Vec<Server> = cases
        .iter()
        .map(|&(protocol, export_timeout, _)| {
            let mut env = vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "60000"),
                // Nothing is exported before the drain's flush.
                ("OTEL_BSP_SCHEDULE_DELAY", "60000"),
            ];
            env.extend(export_timeout.map(|ms| ("OTEL_BSP_EXPORT_TIMEOUT", ms)));
            Server::start_with_env(&["--drain-delay", "0"], &env)
        })
        .collect();
    for server in &servers {
        server.wait_ready().await;
        let mut client = DetectorClient::connect(format!("http://{}", server.grpc))
            .await
            .expect("connect");
        client
            .detect(pb::DetectRequest {
                text: "A span waiting for the final flush".into(),
            })
            .await
            .expect("Detect succeeds");
    }
    let signalled = Instant::now();
    for server in &servers {
        server.signal(nix::sys::signal::Signal::SIGTERM);
    }
    let exits = futures::future::join_all(servers.iter_mut().map(|server| async {
        server.wait(Duration::from_secs(20)).await;
        signalled.elapsed()
    }))
    .await;
    for ((protocol, _, bound), took) in cases.into_iter().zip(exits) {
        let bound = Duration::from_millis(bound);
        assert!(
            took >= bound.mul_f64(0.9),
            "{protocol}: exited {took:?} after SIGTERM, before the {bound:?} bound: \
             the flush did not wait for the collector"
        );
        assert!(
            took <= bound + Duration::from_millis(2500),
            "{protocol}: exited {took:?} after SIGTERM with a {bound:?} bound"
        );
    }
}

/// A TCP listener that accepts connections and never answers.
async fn black_hole() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    addr
}

/// `name`'s value in a Prometheus text exposition.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Sequential Detect calls for at least `at_least`, and until `done`
/// holds (at most 60 s): each call's latency.
async fn calls_for(server: &Server, at_least: Duration, done: impl AsyncCheck) -> Vec<Duration> {
    let mut client = DetectorClient::connect(format!("http://{}", server.grpc))
        .await
        .expect("connect");
    let started = Instant::now();
    let mut latencies = Vec::new();
    loop {
        for _ in 0..20 {
            let t = Instant::now();
            client
                .detect(pb::DetectRequest {
                    text: "A perfectly ordinary English sentence".into(),
                })
                .await
                .expect("every call succeeds while the collector misbehaves");
            latencies.push(t.elapsed());
        }
        if started.elapsed() >= at_least && done.check(server).await {
            return latencies;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "not done in 60 s"
        );
    }
}

/// A condition checked against a server between rounds of calls.
trait AsyncCheck {
    async fn check(&self, server: &Server) -> bool;
}

/// Always done.
struct Always;

impl AsyncCheck for Always {
    async fn check(&self, _: &Server) -> bool {
        true
    }
}

/// Done once the export-failure counter reaches `.0`.
struct Failures(f64);

impl AsyncCheck for Failures {
    async fn check(&self, server: &Server) -> bool {
        failures(server).await >= self.0
    }
}

async fn failures(server: &Server) -> f64 {
    let (status, text) = http_get(server.admin, "/metrics").await;
    assert_eq!(status, 200);
    metric(&text, "switchyard_trace_export_failures_total")
        .expect("the export-failure counter is exposed")
}

fn percentile(latencies: &[Duration], p: f64) -> Duration {
    let mut sorted = latencies.to_vec();
    sorted.sort();
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

const FAILURE_LINE: &str = "trace export failed; the batch is dropped";

/// Issue 16: a collector that is down, refuses, or accepts connections
/// and never answers costs the calls nothing: every call succeeds with the
/// latency of a replica that does not export, the failures are counted,
/// and the failure log lines are bounded (one per 10 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misbehaving_collector_costs_the_calls_nothing() {
    let started = Instant::now();
    let down = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let refusing = Collector::refusing(usize::MAX);
    let refusing_addr = refusing.serve(None, false).await;
    let hole = black_hole().await;
    // Batches every 20 ms, one second per export: a request that waited
    // for an export would take a second.
    let start = |addr: Option<SocketAddr>, protocol: &str| {
        let endpoint = addr.map(|a| format!("http://{a}"));
        let mut env = vec![
            ("OTEL_BSP_SCHEDULE_DELAY", "20".to_owned()),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "1000".to_owned()),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "1024".to_owned()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.to_owned()),
        ];
        if let Some(endpoint) = endpoint {
            env.push(("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint));
        }
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Server::start_with_env(&["--drain-delay", "0"], &env)
    };
    let control = start(None, "grpc");
    let servers = [
        ("down", start(Some(down), "grpc")),
        ("refusing", start(Some(refusing_addr), "grpc")),
        ("black-holed", start(Some(hole), "grpc")),
        ("black-holed, OTLP/HTTP", start(Some(hole), "http/protobuf")),
    ];
    control.wait_ready().await;
    for (_, server) in &servers {
        server.wait_ready().await;
    }
    assert_eq!(failures(&control).await, 0.0, "the control exports nothing");

    let run = Duration::from_secs(3);
    let (control_latencies, results) = tokio::join!(
        calls_for(&control, run, Always),
        futures::future::join_all(servers.iter().map(|(_, server)| calls_for(
            server,
            run,
            Failures(3.0)
        ))),
    );
    let control_p50 = percentile(&control_latencies, 0.5);
    for ((name, server), latencies) in servers.iter().zip(results) {
        let p50 = percentile(&latencies, 0.5);
        let max = percentile(&latencies, 1.0);
        assert!(
            p50 <= control_p50 * 3 + Duration::from_millis(5),
            "{name}: median {p50:?} against {control_p50:?} without export"
        );
        assert!(
            max < Duration::from_millis(1000),
            "{name}: a call took {max:?}, as long as an export"
        );
        let failed = failures(server).await;
        assert!(failed >= 3.0, "{name}: {failed} failures counted");
        let lines: Vec<_> = server
            .log()
            .into_iter()
            .filter(|l| l["message"] == FAILURE_LINE)
            .collect();
        let allowed = 1 + started.elapsed().as_secs() / 10;
        assert!(
            (1..=allowed).contains(&(lines.len() as u64)),
            "{name}: {} failure lines for {failed} failures in {:?}",
            lines.len(),
            started.elapsed()
        );
        for line in &lines {
            // The HTTP exporter says only "network error"; the line adds
            // what the client saw (here, its timeout).
            let error = line["error"].as_str().unwrap_or_default();
            assert!(
                !error.ends_with("network error"),
                "{name}: the failure line names the cause: {error}"
            );
        }
    }
}
