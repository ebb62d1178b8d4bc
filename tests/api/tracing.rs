//! Traces join the mesh's: the real binary exports OTLP/gRPC to an
//! in-process collector (a tonic server implementing the OTLP
//! TraceService), server spans take their parent from W3C `traceparent`
//! or B3 headers, and the last spans are flushed when the server drains.
//! Its JSON log lines carry the trace id of their request and never the
//! request text.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use switchyard::grpc::pb;
use switchyard::grpc::pb::detector_client::DetectorClient;

use crate::process::Server;

/// Everything the collector received, with each export's metadata.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<(tonic::metadata::MetadataMap, ExportTraceServiceRequest)>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((request.metadata().clone(), request.into_inner()));
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    /// Serves on 127.0.0.1 (port 0) for the rest of the test.
    async fn start() -> (Collector, SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let collector = Collector::default();
        let service = TraceServiceServer::new(collector.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        (collector, addr)
    }

    /// A metadata entry of every export received (`None` where absent).
    fn header(&self, name: &str) -> Vec<Option<String>> {
        let requests = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        requests
            .iter()
            .map(|(metadata, _)| {
                metadata
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            })
            .collect()
    }

    /// Every span received, with its resource's attributes.
    fn spans(&self) -> Vec<(BTreeMap<String, String>, Span)> {
        let requests = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = Vec::new();
        for (_, request) in requests.iter() {
            for resource_spans in &request.resource_spans {
                let resource = resource_spans
                    .resource
                    .as_ref()
                    .map(|r| attributes(&r.attributes))
                    .unwrap_or_default();
                for scope in &resource_spans.scope_spans {
                    for span in &scope.spans {
                        out.push((resource.clone(), span.clone()));
                    }
                }
            }
        }
        out
    }
}

fn text(value: &Option<AnyValue>) -> String {
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), text(&kv.value)))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

const W3C_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const W3C_PARENT: &str = "b7ad6b7169203331";
const B3_TRACE: &str = "80f198ee56343ba864fe8b2a57d3eff7";
const B3_PARENT: &str = "e457b5a2e4d86bd1";
const BAD_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const UNSAMPLED_TRACE: &str = "5a2f8c1d3b4e6f708192a3b4c5d6e7f8";
const UNIMPLEMENTED_TRACE: &str = "6b3f9d2e4c5f7081928a3b4c5d6e7f80";
/// Distinctive request text that must never reach a log line.
const SECRET_TEXT: &str = "Zwölf Boxkämpfer jagen Viktor quer über den großen Sylter Deich";

async fn detect(server: &Server, text: &str, headers: &[(&'static str, &str)]) -> tonic::Code {
    let mut client = DetectorClient::connect(format!("http://{}", server.grpc))
        .await
        .expect("connect");
    let mut request = tonic::Request::new(pb::DetectRequest { text: text.into() });
    for (name, value) in headers {
        request
            .metadata_mut()
            .insert(*name, value.parse().expect("ascii"));
    }
    match client.detect(request).await {
        Ok(_) => tonic::Code::Ok,
        Err(status) => status.code(),
    }
}

/// Drains the server with SIGTERM and waits for a clean exit.
async fn drain(mut server: Server) -> Server {
    server.signal(Signal::SIGTERM);
    let status = server.wait(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0), "clean drain");
    server
}

fn the_span<'a>(
    spans: &'a [(BTreeMap<String, String>, Span)],
    trace: &str,
    name: &str,
) -> &'a (BTreeMap<String, String>, Span) {
    let found: Vec<_> = spans
        .iter()
        .filter(|(_, s)| hex(&s.trace_id) == trace && s.name == name)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "spans named {name} in trace {trace}: {found:?}"
    );
    found[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_spans_join_w3c_and_b3_traces_and_are_flushed_on_drain() {
    let (collector, collector_addr) = Collector::start().await;
    let flags = tempfile::NamedTempFile::with_suffix(".json").expect("temp file");
    std::fs::write(
        flags.path(),
        serde_json::json!({"flags": {
            "dark-launch-engine": {"state": "ENABLED", "variants": {"on": "lingua"}, "defaultVariant": "on"}
        }})
        .to_string(),
    )
    .expect("write flags");
    let endpoint = format!("http://{collector_addr}");
    let server = Server::start_with_env(
        &[
            "--otlp-endpoint",
            &endpoint,
            "--app-version",
            "v7",
            "--track",
            "canary",
            "--drain-delay",
            "0",
            // whatlang serves so that lingua, the candidate, runs apart.
            "--default-engine",
            "whatlang",
            "--flags",
            flags.path().to_str().expect("utf-8 path"),
        ],
        &[("POD_NAME", "trace-pod"), ("POD_NAMESPACE", "prod")],
    );
    server.wait_ready().await;

    let traceparent = format!("00-{W3C_TRACE}-{W3C_PARENT}-01");
    let code = detect(
        &server,
        SECRET_TEXT,
        &[("traceparent", &traceparent), ("x-request-id", "req-w3c")],
    )
    .await;
    assert_eq!(code, tonic::Code::Ok);
    let code = detect(
        &server,
        "A perfectly ordinary English sentence for the B3 call",
        &[
            ("x-b3-traceid", B3_TRACE),
            ("x-b3-spanid", B3_PARENT),
            ("x-b3-sampled", "1"),
            ("x-request-id", "req-b3"),
        ],
    )
    .await;
    assert_eq!(code, tonic::Code::Ok);
    let bad_parent = format!("00-{BAD_TRACE}-{W3C_PARENT}-01");
    assert_eq!(
        detect(&server, "  ", &[("traceparent", &bad_parent)]).await,
        tonic::Code::InvalidArgument
    );
    // The default sampler is parent-based: a caller that did not sample
    // its trace gets no span exported (the calls above are the control).
    let unsampled = format!("00-{UNSAMPLED_TRACE}-{W3C_PARENT}-00");
    assert_eq!(
        detect(
            &server,
            "Ein ganz gewöhnlicher Satz",
            &[("traceparent", &unsampled)]
        )
        .await,
        tonic::Code::Ok
    );
    // A method nobody serves: UNIMPLEMENTED, a server error for the RPC
    // conventions.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let mut request = tonic::Request::new(pb::DetectRequest::default());
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{UNIMPLEMENTED_TRACE}-{W3C_PARENT}-01")
            .parse()
            .expect("ascii"),
    );
    let status = grpc
        .unary::<pb::DetectRequest, pb::DetectResponse, _>(
            request,
            "/no.Such/Method".parse().expect("path"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .expect_err("unimplemented");
    assert_eq!(status.code(), tonic::Code::Unimplemented);
    // Give the dark-launch candidate (lingua) time to finish before the drain.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Nothing is exported before the batch delay; the drain flushes.
    let server = drain(server).await;
    let spans = collector.spans();
    assert!(!spans.is_empty(), "no span reached the collector");
    // No OTEL_EXPORTER_OTLP_HEADERS here: the control for the test below.
    assert!(collector.header("x-tenant").iter().all(Option::is_none));

    let detect_name = "switchyard.v1.Detector/Detect";
    let (resource, w3c) = the_span(&spans, W3C_TRACE, detect_name);
    assert_eq!(hex(&w3c.parent_span_id), W3C_PARENT);
    assert_eq!(w3c.kind, 2, "SPAN_KIND_SERVER");
    // Sampled (0x1), "is the parent remote" known (0x100), and it is (0x200).
    assert_eq!(w3c.flags, 0x301, "flags {:#x}", w3c.flags);
    assert!(w3c.end_time_unix_nano > w3c.start_time_unix_nano);
    let attrs = attributes(&w3c.attributes);
    for (key, want) in [
        ("rpc.system", "grpc"),
        ("rpc.service", "switchyard.v1.Detector"),
        ("rpc.method", "Detect"),
        ("rpc.grpc.status_code", "0"),
        ("request_id", "req-w3c"),
        ("engine", "whatlang"),
    ] {
        assert_eq!(
            attrs.get(key).map(String::as_str),
            Some(want),
            "{key} in {attrs:?}"
        );
    }
    for (key, want) in [
        ("service.name", "switchyard"),
        ("service.version", "v7"),
        ("k8s.pod.name", "trace-pod"),
        ("k8s.namespace.name", "prod"),
        ("switchyard.track", "canary"),
    ] {
        assert_eq!(
            resource.get(key).map(String::as_str),
            Some(want),
            "{key} in {resource:?}"
        );
    }
    // Child spans: flag evaluation and the engine, under the server span.
    for child in ["flags.evaluate", "engine.detect"] {
        let (_, span) = the_span(&spans, W3C_TRACE, child);
        assert_eq!(span.parent_span_id, w3c.span_id, "{child}'s parent");
        assert_eq!(span.flags, 0x101, "{child}'s parent is local");
        assert!(span.start_time_unix_nano >= w3c.start_time_unix_nano);
        assert!(span.end_time_unix_nano <= w3c.end_time_unix_nano);
    }
    let (_, evaluate) = the_span(&spans, W3C_TRACE, "flags.evaluate");
    assert!(attributes(&evaluate.attributes).contains_key("revision"));
    let (_, engine) = the_span(&spans, W3C_TRACE, "engine.detect");
    assert_eq!(
        attributes(&engine.attributes)
            .get("engine")
            .map(String::as_str),
        Some("whatlang")
    );
    // The dark-launch candidate: its own trace, linked to the request.
    let candidate: Vec<_> = spans
        .iter()
        .filter(|(_, s)| s.name == "dark_launch.candidate")
        .filter(|(_, s)| s.links.iter().any(|l| l.span_id == w3c.span_id))
        .collect();
    assert_eq!(
        candidate.len(),
        1,
        "one candidate span linked to the request"
    );
    let (_, candidate) = candidate[0];
    assert_ne!(
        hex(&candidate.trace_id),
        W3C_TRACE,
        "never extends the request's trace"
    );
    assert_eq!(hex(&candidate.links[0].trace_id), W3C_TRACE);

    let (_, b3) = the_span(&spans, B3_TRACE, detect_name);
    assert_eq!(hex(&b3.parent_span_id), B3_PARENT);
    let (_, bad) = the_span(&spans, BAD_TRACE, detect_name);
    assert_eq!(
        attributes(&bad.attributes)
            .get("rpc.grpc.status_code")
            .map(String::as_str),
        Some("3"),
        "INVALID_ARGUMENT recorded"
    );
    // A client error leaves the span's status unset; a server error sets it.
    assert_eq!(bad.status.as_ref().map_or(0, |s| s.code), 0, "unset");
    assert_eq!(w3c.status.as_ref().map_or(0, |s| s.code), 0, "unset");
    let (_, unimplemented) = the_span(&spans, UNIMPLEMENTED_TRACE, "unknown/unknown");
    assert_eq!(
        attributes(&unimplemented.attributes)
            .get("rpc.grpc.status_code")
            .map(String::as_str),
        Some("12")
    );
    assert_eq!(
        unimplemented.status.as_ref().map(|s| s.code),
        Some(2),
        "STATUS_CODE_ERROR for UNIMPLEMENTED"
    );
    assert!(
        spans
            .iter()
            .all(|(_, s)| hex(&s.trace_id) != UNSAMPLED_TRACE),
        "a span whose parent was not sampled was exported"
    );

    // Logs: JSON lines (Server checks each), the request's trace id on its
    // lines, the text nowhere.
    let raw = server.lines.lock().expect("lines").clone();
    assert!(
        raw.iter().all(|l| !l.contains("Boxkämpfer")),
        "the request text was logged"
    );
    let log = server.log();
    let access: Vec<_> = log
        .iter()
        .filter(|l| l["target"] == "switchyard::access" && l["rpc.method"] == "Detect")
        .collect();
    assert_eq!(access.len(), 4, "one access line per Detect call");
    let w3c_line = access
        .iter()
        .find(|l| l["request_id"] == "req-w3c")
        .expect("the W3C call's access line");
    assert_eq!(w3c_line["trace_id"], W3C_TRACE);
    assert_eq!(w3c_line["span_id"], hex(&w3c.span_id));
    assert_eq!(w3c_line["grpc_code"], "OK");
    assert_eq!(w3c_line["engine"], "whatlang");
    assert!(w3c_line["latency_ms"].as_f64().is_some());
    let b3_line = access
        .iter()
        .find(|l| l["request_id"] == "req-b3")
        .expect("B3 line");
    assert_eq!(b3_line["trace_id"], B3_TRACE);
    // Not sampled, still in the caller's trace.
    assert!(
        access.iter().any(|l| l["trace_id"] == UNSAMPLED_TRACE),
        "the unsampled call's access line"
    );
    // Every line written inside a request carries its trace id.
    for line in log.iter().filter(|l| l.get("rpc.method").is_some()) {
        assert!(
            line["trace_id"].as_str().is_some_and(|t| t.len() == 32),
            "{line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standard_endpoint_variable_turns_export_on_and_its_absence_off() {
    let (collector, collector_addr) = Collector::start().await;
    let endpoint = format!("http://{collector_addr}");
    let traceparent = format!("00-{W3C_TRACE}-{W3C_PARENT}-01");

    // Off: no endpoint anywhere. The control: nothing arrives.
    let off = Server::start(&["--drain-delay", "0"]);
    off.wait_ready().await;
    assert_eq!(
        detect(
            &off,
            "Une phrase française",
            &[("traceparent", &traceparent)]
        )
        .await,
        tonic::Code::Ok
    );
    let off = drain(off).await;
    // Log lines keep the caller's trace id without an exporter.
    let access = off
        .log()
        .into_iter()
        .find(|l| l["target"] == "switchyard::access" && l["rpc.method"] == "Detect")
        .expect("an access line");
    assert_eq!(access["trace_id"], W3C_TRACE);
    assert!(access["span_id"].as_str().is_some_and(|s| s.len() == 16));
    assert!(
        collector.spans().is_empty(),
        "export must be off without an endpoint"
    );

    // On: OTEL_EXPORTER_OTLP_ENDPOINT alone, with the exporter's headers.
    let on = Server::start_with_env(
        &["--drain-delay", "0"],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_SERVICE_NAME", "switchyard-test"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "Authorization=Bearer%20t0ken, x-tenant=blue",
            ),
        ],
    );
    on.wait_ready().await;
    assert_eq!(
        detect(
            &on,
            "Une phrase française",
            &[("traceparent", &traceparent)]
        )
        .await,
        tonic::Code::Ok
    );
    drain(on).await;
    let tenants = collector.header("x-tenant");
    assert!(!tenants.is_empty(), "nothing exported");
    assert!(
        tenants.iter().all(|t| t.as_deref() == Some("blue")),
        "{tenants:?}"
    );
    assert!(
        collector
            .header("authorization")
            .iter()
            .all(|t| t.as_deref() == Some("Bearer t0ken"))
    );
    let spans = collector.spans();
    let (resource, span) = the_span(&spans, W3C_TRACE, "switchyard.v1.Detector/Detect");
    assert_eq!(hex(&span.parent_span_id), W3C_PARENT);
    assert_eq!(
        resource.get("service.name").map(String::as_str),
        Some("switchyard-test")
    );

    // The sampler variables apply: always_off exports nothing.
    let sampled_out = Server::start_with_env(
        &["--drain-delay", "0", "--otlp-endpoint", &endpoint],
        &[("OTEL_TRACES_SAMPLER", "always_off")],
    );
    sampled_out.wait_ready().await;
    let other = format!("00-{B3_TRACE}-{B3_PARENT}-01");
    assert_eq!(
        detect(
            &sampled_out,
            "Une phrase française",
            &[("traceparent", &other)]
        )
        .await,
        tonic::Code::Ok
    );
    drain(sampled_out).await;
    assert!(
        collector
            .spans()
            .iter()
            .all(|(_, s)| hex(&s.trace_id) != B3_TRACE),
        "OTEL_TRACES_SAMPLER=always_off must export nothing"
    );
}
