//! The spans of one RPC: the OpenTelemetry server span and its children,
//! recorded through the OpenTelemetry API, and a `tracing` span that only
//! carries the fields of the request's log lines.
//!
//! Why not `tracing-opentelemetry` for these three spans per call: the
//! bridge builds its own span state on every `tracing` span (a builder, a
//! field visitor, a context per enter and exit) whether or not the trace is
//! sampled, about 8,000 instructions per span against ~1,500 for the SDK
//! span itself. At 100 % sampling that bridge was most of the cost of
//! tracing; at 1 % it still cost ~15 % of throughput (BENCHMARKS.md,
//! section 4). Spans off the hot path (the dark-launch candidate) still go
//! through `tracing` and the bridge.

use std::borrow::Cow;
use std::sync::OnceLock;

use http::HeaderMap;
use http::header::HeaderName;
use opentelemetry::propagation::Extractor;
use opentelemetry::trace::{
    Span as _, SpanContext, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue, global};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SdkTracer, SdkTracerProvider};
use tracing::field::Empty;
use tracing_subscriber::Registry;
use tracing_subscriber::registry::LookupSpan;

use super::json::LogIds;
use crate::metrics::Method;

/// The tracer of the RPC spans, set once by [`super::init`] when spans are
/// exported. Unset (tests that run the application in-process, or no
/// endpoint): no OpenTelemetry span is built.
static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// Installs the tracer of the RPC spans (the first provider wins).
pub(super) fn install(provider: &SdkTracerProvider) {
    let _ = TRACER.set(provider.tracer("switchyard"));
}

/// The target of the log span: the trace bridge ignores it.
pub(super) const LOG_TARGET: &str = "switchyard::rpc";

/// The headers a W3C or B3 parent can come in (names parsed once: a
/// lookup by `&str` parses the name every time).
static PROPAGATION_HEADERS: [HeaderName; 3] = [
    HeaderName::from_static("traceparent"),
    HeaderName::from_static("b3"),
    HeaderName::from_static("x-b3-traceid"),
];

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

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

/// The caller's trace context, when its headers carry a valid one.
fn remote_parent(headers: &HeaderMap) -> Option<Context> {
    // Most calls carry no trace context: skip the propagators then.
    PROPAGATION_HEADERS
        .iter()
        .any(|h| headers.contains_key(h))
        .then(|| global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers))))
        .filter(|cx| cx.span().span_context().is_valid())
}

/// An RPC's OpenTelemetry context: its server span, when spans are built.
/// Cheap to clone; the request carries it as an extension so handlers can
/// add children and attributes.
#[derive(Clone, Debug, Default)]
pub struct Trace(Option<Context>);

impl Trace {
    /// Whether there is a server span (spans are exported; sampled or not).
    pub fn has_span(&self) -> bool {
        self.0.is_some()
    }

    /// Sets an attribute of the server span. The attribute is only built
    /// when there is a span: without an exporter the call costs nothing.
    pub fn set_attribute(&self, attribute: impl FnOnce() -> KeyValue) {
        if let Some(cx) = &self.0 {
            cx.span().set_attribute(attribute());
        }
    }

    /// A child of the server span, started now and ended when dropped. Its
    /// attributes are only built when there is a span.
    pub fn child(
        &self,
        name: &'static str,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) -> ChildSpan {
        let (Some(cx), Some(tracer)) = (&self.0, TRACER.get()) else {
            return ChildSpan(None);
        };
        let span = tracer
            .span_builder(name)
            .with_kind(SpanKind::Internal)
            .with_attributes(attributes())
            .start_with_context(tracer, cx);
        ChildSpan(Some(span))
    }

    /// The server span's context, to link other spans to it.
    pub fn span_context(&self) -> Option<SpanContext> {
        self.0.as_ref().map(|cx| cx.span().span_context().clone())
    }

    /// Ends the server span with the call's gRPC status. Server errors, as
    /// the RPC conventions list them, get the error status.
    fn finish(&self, code: tonic::Code) {
        let Some(cx) = &self.0 else { return };
        let span = cx.span();
        span.set_attribute(KeyValue::new("rpc.grpc.status_code", code as i64));
        if is_server_error(code) {
            span.set_status(Status::error(""));
        }
        span.end();
    }
}

/// A child span of an RPC; ends when dropped. Empty when not exporting.
#[must_use = "the span ends when dropped"]
pub struct ChildSpan(Option<opentelemetry_sdk::trace::Span>);

impl Drop for ChildSpan {
    fn drop(&mut self) {
        if let Some(span) = &mut self.0 {
            span.end();
        }
    }
}

/// The spans of one RPC. [`RpcSpan::finish`] records its status and ends
/// it.
pub struct RpcSpan {
    /// Carries the fields of the request's log lines (and their trace and
    /// span ids). Disabled when no log line would be written.
    pub log: tracing::Span,
    /// The OpenTelemetry server span.
    pub trace: Trace,
}

impl RpcSpan {
    /// Records the gRPC status on both spans and ends the server span.
    pub fn finish(&self, code: tonic::Code) {
        self.trace.finish(code);
        if !self.log.is_disabled() {
            self.log.record("rpc.grpc.status_code", code as i32);
        }
    }
}

/// The codes the OpenTelemetry RPC conventions count as a server error.
fn is_server_error(code: tonic::Code) -> bool {
    use tonic::Code::*;
    matches!(
        code,
        Unknown | DeadlineExceeded | Unimplemented | Internal | Unavailable | DataLoss
    )
}

/// The spans of one RPC, following the OpenTelemetry RPC conventions
/// (name `service/method`, kind server, `rpc.system`, `rpc.service`,
/// `rpc.method`, then `rpc.grpc.status_code`), parented by the caller's
/// trace context when it sent one (W3C or B3). Without an exporter no
/// OpenTelemetry span is built; log lines still get ids, in the caller's
/// trace when it sent one.
pub fn server_span(method: &Method, headers: &HeaderMap, shadow: bool) -> RpcSpan {
    let request_id = headers.get(&X_REQUEST_ID).and_then(|v| v.to_str().ok());
    let log = tracing::info_span!(
        target: LOG_TARGET,
        "grpc.server",
        rpc.service = &*method.service,
        rpc.method = &*method.method,
        rpc.grpc.status_code = Empty,
        request_id,
        engine = Empty,
        variant = Empty,
        shadow,
    );
    let tracer = TRACER.get();
    if log.is_disabled() && tracer.is_none() {
        return RpcSpan {
            log,
            trace: Trace(None),
        };
    }
    let parent = remote_parent(headers);
    let trace = tracer.map(|tracer| {
        let mut attributes = Vec::with_capacity(8);
        attributes.extend([
            KeyValue::new("rpc.system", "grpc"),
            KeyValue::new("rpc.service", method.service.clone()),
            KeyValue::new("rpc.method", method.method.clone()),
            KeyValue::new("shadow", shadow),
        ]);
        if let Some(id) = request_id {
            attributes.push(KeyValue::new("request_id", id.to_owned()));
        }
        let span = tracer
            .span_builder(Cow::Owned(method.full_name.to_string()))
            .with_kind(SpanKind::Server)
            .with_attributes(attributes)
            .start_with_context(tracer, parent.as_ref().unwrap_or(&Context::new()));
        Context::new().with_span(span)
    });
    if !log.is_disabled() {
        let (trace_id, span_id) = match &trace {
            Some(cx) => {
                let span = cx.span();
                let sc = span.span_context();
                (sc.trace_id(), sc.span_id())
            }
            None => {
                // Ids for the log lines only, in the caller's trace when it
                // sent one.
                let ids = RandomIdGenerator::default();
                let trace_id = parent
                    .as_ref()
                    .map(|p| p.span().span_context().trace_id())
                    .unwrap_or_else(|| ids.new_trace_id());
                (trace_id, ids.new_span_id())
            }
        };
        log.with_subscriber(|(id, dispatch)| {
            if let Some(registry) = dispatch.downcast_ref::<Registry>()
                && let Some(data) = registry.span(id)
            {
                data.extensions_mut().replace(LogIds { trace_id, span_id });
            }
        });
    }
    RpcSpan {
        log,
        trace: Trace(trace),
    }
}
