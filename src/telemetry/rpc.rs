//! The spans of one RPC: the OpenTelemetry server span and its children,
//! and a `tracing` span that only carries the fields of the request's log
//! lines.
//!
//! The three spans of a call (the server span, `flags.evaluate`,
//! `engine.detect`) are recorded here, on OpenTelemetry's types (ids,
//! [`SpanContext`], [`KeyValue`]) and with the SDK's sampler, but without
//! an SDK span: when one ends, its OTLP bytes are written straight into the
//! exporter's batch ([`SpanSink`]).
//!
//! Why: the `tracing-opentelemetry` bridge built its own span state on
//! every `tracing` span (a builder, a field visitor, a context per enter
//! and exit) whether or not the trace was sampled, ~8,000 instructions a
//! span; the SDK span then cost ~1,500 to build and as much again to end
//! (its `SpanData`, the processor call, the drop), with the attributes
//! built as owned `KeyValue`s. A span here costs about a third of that:
//! its fixed attributes are read from the call's [`Method`] when it is
//! encoded (BENCHMARKS.md, section 4). Spans off the hot path (the
//! dark-launch candidate) still go through `tracing`, the bridge and the
//! SDK, to the same exporter.
//!
//! What the SDK would do and this does too: the parent's trace id and
//! flags, the sampler's decision, trace state and extra attributes, a span
//! that ends when dropped. What it does not: span limits (these spans have
//! at most nine attributes and no events), and a `RecordOnly` decision is
//! treated as a drop (only the exporter reads spans, and it takes sampled
//! ones).

use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::SystemTime;

use http::HeaderMap;
use http::header::HeaderName;
use opentelemetry::propagation::Extractor;
use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags};
use opentelemetry::{Context, InstrumentationScope, KeyValue, global};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SamplingDecision, ShouldSample};
use tracing::field::Empty;
use tracing_subscriber::Registry;
use tracing_subscriber::registry::LookupSpan;

use super::json::LogIds;
use super::otlp::{Attributes, SpanHead, SpanSink, write_span};
use crate::grpc::catalog::Method;

/// What recording the RPC spans takes, set once by [`super::init`] when
/// spans are exported. Unset (tests that run the application in-process,
/// or no endpoint): no span is built.
static RECORDER: OnceLock<Recorder> = OnceLock::new();

struct Recorder {
    /// The provider's sampler (`OTEL_TRACES_SAMPLER`, `_ARG`).
    sampler: Box<dyn ShouldSample>,
    ids: RandomIdGenerator,
    sink: SpanSink,
    /// The tracer's scope, as the SDK's `tracer("switchyard")` has it.
    scope: InstrumentationScope,
}

/// Installs the recorder of the RPC spans (the first one wins).
pub(super) fn install(sampler: Box<dyn ShouldSample>, sink: SpanSink) {
    let _ = RECORDER.set(Recorder {
        sampler,
        ids: RandomIdGenerator::default(),
        sink,
        scope: InstrumentationScope::builder(super::SCOPE).build(),
    });
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

/// An RPC's trace: its server span, when spans are built. Cheap to clone;
/// the request carries it as an extension so handlers can add children and
/// attributes.
#[derive(Clone, Debug, Default)]
pub struct Trace(Option<Arc<ServerSpan>>);

/// The server span: its context (ids, sampled or not) and, when sampled,
/// what is recorded until it ends.
#[derive(Debug)]
struct ServerSpan {
    context: SpanContext,
    /// The caller's span; invalid when it sent none.
    parent: SpanId,
    recording: Option<Mutex<Recording>>,
}

#[derive(Debug)]
struct Recording {
    method: Arc<Method>,
    start: SystemTime,
    shadow: bool,
    request_id: Option<String>,
    /// The sampler's, then the handlers' ([`Trace::set_attribute`]).
    attributes: Vec<KeyValue>,
    /// Set once the span has ended (and gone to the exporter).
    ended: bool,
}

impl ServerSpan {
    /// Ends the span (once), with the call's gRPC status when known, and
    /// hands it to the exporter.
    fn end(&self, code: Option<tonic::Code>) {
        let (Some(recording), Some(recorder)) = (&self.recording, RECORDER.get()) else {
            return;
        };
        let mut r = recording.lock().unwrap_or_else(PoisonError::into_inner);
        if std::mem::replace(&mut r.ended, true) {
            return;
        }
        let head = SpanHead {
            context: &self.context,
            parent: self.parent,
            parent_is_remote: self.parent != SpanId::INVALID,
            name: &r.method.full_name,
            kind: SpanKind::Server,
            start: r.start,
            end: SystemTime::now(),
        };
        let status = match code {
            Some(code) if is_server_error(code) => Status::error(""),
            _ => Status::Unset,
        };
        recorder.sink.record(&recorder.scope, |buf| {
            write_span(
                buf,
                &head,
                |a: &mut Attributes<'_>| {
                    a.str("rpc.system", "grpc");
                    a.str("rpc.service", &r.method.service);
                    a.str("rpc.method", &r.method.method);
                    a.value("shadow", &r.shadow.into());
                    if let Some(id) = &r.request_id {
                        a.str("request_id", id);
                    }
                    a.all(&r.attributes);
                    if let Some(code) = code {
                        a.value("rpc.grpc.status_code", &(code as i64).into());
                    }
                },
                &status,
            );
        });
    }
}

impl Drop for ServerSpan {
    /// A call dropped before its status (the client went away): the span
    /// still ends, without a status code.
    fn drop(&mut self) {
        let ended = self
            .recording
            .as_mut()
            .is_none_or(|r| r.get_mut().unwrap_or_else(PoisonError::into_inner).ended);
        if !ended {
            self.end(None);
        }
    }
}

impl Trace {
    /// Whether there is a server span (spans are exported; sampled or not).
    pub fn has_span(&self) -> bool {
        self.0.is_some()
    }

    /// The server span, when it is recorded (sampled).
    fn recording(&self) -> Option<(&ServerSpan, &Mutex<Recording>)> {
        let span = self.0.as_deref()?;
        Some((span, span.recording.as_ref()?))
    }

    /// Sets an attribute of the server span. The attribute is only built
    /// when the span is recorded: without an exporter, or for a call that
    /// is not sampled, the call costs nothing.
    pub fn set_attribute(&self, attribute: impl FnOnce() -> KeyValue) {
        if let Some((_, recording)) = self.recording() {
            let attribute = attribute();
            let mut r = recording.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(old) = r.attributes.iter_mut().find(|kv| kv.key == attribute.key) {
                *old = attribute;
            } else {
                r.attributes.push(attribute);
            }
        }
    }

    /// A child of the server span, started now and ended when dropped. Its
    /// attributes are only built when it is recorded. A child is sampled
    /// when its server span is: what the standard samplers decide for a
    /// span whose parent is local.
    pub fn child(
        &self,
        name: &'static str,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) -> ChildSpan {
        let (Some((server, _)), Some(recorder)) = (self.recording(), RECORDER.get()) else {
            return ChildSpan(None);
        };
        let parent = &server.context;
        ChildSpan(Some(Child {
            context: SpanContext::new(
                parent.trace_id(),
                recorder.ids.new_span_id(),
                parent.trace_flags(),
                false,
                parent.trace_state().clone(),
            ),
            parent: parent.span_id(),
            name,
            start: SystemTime::now(),
            attributes: attributes(),
        }))
    }

    /// The server span's context, to link other spans to it.
    pub fn span_context(&self) -> Option<SpanContext> {
        self.0.as_ref().map(|span| span.context.clone())
    }

    /// Ends the server span with the call's gRPC status. Server errors, as
    /// the RPC conventions list them, get the error status.
    fn finish(&self, code: tonic::Code) {
        if let Some(span) = &self.0 {
            span.end(Some(code));
        }
    }
}

/// A child span of an RPC; ends when dropped. Empty when not recorded.
#[must_use = "the span ends when dropped"]
pub struct ChildSpan(Option<Child>);

struct Child {
    context: SpanContext,
    parent: SpanId,
    name: &'static str,
    start: SystemTime,
    attributes: Vec<KeyValue>,
}

impl Drop for ChildSpan {
    fn drop(&mut self) {
        let (Some(child), Some(recorder)) = (&self.0, RECORDER.get()) else {
            return;
        };
        let head = SpanHead {
            context: &child.context,
            parent: child.parent,
            parent_is_remote: false,
            name: child.name,
            kind: SpanKind::Internal,
            start: child.start,
            end: SystemTime::now(),
        };
        recorder.sink.record(&recorder.scope, |buf| {
            write_span(buf, &head, |a| a.all(&child.attributes), &Status::Unset);
        });
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
pub fn server_span(method: &Arc<Method>, headers: &HeaderMap, shadow: bool) -> RpcSpan {
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
    let recorder = RECORDER.get();
    if log.is_disabled() && recorder.is_none() {
        return RpcSpan {
            log,
            trace: Trace(None),
        };
    }
    let parent = remote_parent(headers);
    let trace = recorder.map(|recorder| {
        Arc::new(start_server_span(
            recorder,
            method,
            parent.as_ref(),
            shadow,
            request_id,
        ))
    });
    if !log.is_disabled() {
        let (trace_id, span_id) = match &trace {
            Some(span) => (span.context.trace_id(), span.context.span_id()),
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

/// Starts the server span as the SDK's tracer would: the caller's trace
/// and flags when it sent a parent, a new trace otherwise, and the
/// sampler's decision. A span the sampler only records (`RecordOnly`) is
/// not kept: nothing but the exporter reads spans, and it takes sampled
/// ones only.
fn start_server_span(
    recorder: &Recorder,
    method: &Arc<Method>,
    parent: Option<&Context>,
    shadow: bool,
    request_id: Option<&str>,
) -> ServerSpan {
    let parent_span = parent.map(|cx| cx.span().span_context().clone());
    let (trace_id, flags, parent_id) = match &parent_span {
        Some(p) => (p.trace_id(), p.trace_flags(), p.span_id()),
        None => (
            recorder.ids.new_trace_id(),
            TraceFlags::default(),
            SpanId::INVALID,
        ),
    };
    // The standard samplers read neither the attributes nor the links.
    let result = recorder.sampler.should_sample(
        parent,
        trace_id,
        &method.full_name,
        &SpanKind::Server,
        &[],
        &[],
    );
    let sampled = result.decision == SamplingDecision::RecordAndSample;
    let context = SpanContext::new(
        trace_id,
        recorder.ids.new_span_id(),
        flags.with_sampled(sampled),
        false,
        result.trace_state,
    );
    let recording = sampled.then(|| {
        Mutex::new(Recording {
            method: Arc::clone(method),
            start: SystemTime::now(),
            shadow,
            request_id: request_id.map(str::to_owned),
            attributes: result.attributes,
            ended: false,
        })
    });
    ServerSpan {
        context,
        parent: parent_id,
        recording,
    }
}
