//! The spans of one RPC: the OpenTelemetry server span and its children,
//! SDK spans of the application's tracer, and a `tracing` span that only
//! carries the fields of the request's log lines (and, as an extension,
//! the trace and span ids those lines print).
//!
//! Attributes are only built for a span that records (sampled): a call
//! that is not sampled, or a replica that does not export, costs no
//! attribute allocation.
//!
//! The sampler is asked before the SDK is: a call it drops (nine in ten
//! with the manifests' ratio) gets only a span context (ids for its logs and
//! for a dark-launch candidate's link), no SDK span, and the request
//! headers are read in one pass. Measured with `parentbased_traceidratio`
//! 0, which starts a server span for every call and samples none
//! (`scripts/bench export` and `callgrind-export`, BENCHMARKS.md section
//! 4): with the SDK's non-recording span and four header lookups, export
//! cost 2,840 instructions a call (+3.9 % server CPU, throughput 0.966×);
//! this way it costs 842 (throughput 1.002×). For a call it samples, the
//! SDK starts the span with the trace id the sampler judged
//! ([`JudgedTraceIds`]), so a ratio sampler's decision stays a function of
//! the span's own trace id.

use std::cell::Cell;
use std::sync::{Arc, Mutex, PoisonError};

use http::HeaderMap;
use http::header::HeaderName;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{
    Link, Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId,
    Tracer as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{
    IdGenerator, RandomIdGenerator, SamplingDecision, SdkTracer, ShouldSample, Span,
};
use tracing::field::Empty;
use tracing_subscriber::Registry;
use tracing_subscriber::registry::LookupSpan;

use super::Tracing;
use super::json::LogIds;
use crate::grpc::catalog::Method;

/// The target of the log span.
const LOG_TARGET: &str = "switchyard::rpc";

/// The headers a W3C or B3 parent can come in (names parsed once: a
/// lookup by `&str` parses the name every time).
static PROPAGATION_HEADERS: [HeaderName; 3] = [
    HeaderName::from_static("traceparent"),
    HeaderName::from_static("b3"),
    HeaderName::from_static("x-b3-traceid"),
];

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What the span needs from the request headers, read in one pass.
#[derive(Default)]
struct Incoming<'a> {
    /// A W3C or B3 header is present.
    propagated: bool,
    request_id: Option<&'a str>,
}

impl<'a> Incoming<'a> {
    fn read(headers: &'a HeaderMap) -> Self {
        let mut incoming = Self::default();
        for (name, value) in headers {
            if *name == X_REQUEST_ID {
                if incoming.request_id.is_none() {
                    incoming.request_id = value.to_str().ok();
                }
            } else if PROPAGATION_HEADERS.contains(name) {
                incoming.propagated = true;
            }
        }
        incoming
    }
}

thread_local! {
    /// The trace id the sampler judged for the server span being started
    /// on this thread, for [`JudgedTraceIds`] to hand to the SDK.
    static JUDGED: Cell<Option<TraceId>> = const { Cell::new(None) };
}

/// Hands `trace_id` to [`JudgedTraceIds`] for the span about to start on
/// this thread; the hand-over ends when dropped, whether the SDK took it
/// or not (its provider is shut down, or it panicked).
struct Judged;

impl Judged {
    fn hand_over(trace_id: TraceId) -> Self {
        JUDGED.with(|judged| judged.set(Some(trace_id)));
        Judged
    }
}

impl Drop for Judged {
    fn drop(&mut self) {
        JUDGED.with(|judged| judged.set(None));
    }
}

/// The provider's id generator: random ids, except that the server span
/// [`Tracing::server_span`] starts gets the trace id its sampler already
/// judged (without a remote parent, the SDK asks for a new one).
#[derive(Debug, Default)]
pub(super) struct JudgedTraceIds(RandomIdGenerator);

impl IdGenerator for JudgedTraceIds {
    fn new_trace_id(&self) -> TraceId {
        JUDGED
            .with(Cell::take)
            .unwrap_or_else(|| self.0.new_trace_id())
    }

    fn new_span_id(&self) -> SpanId {
        self.0.new_span_id()
    }
}

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

impl Tracing {
    /// The caller's trace context, when its headers carry a valid one.
    fn remote_parent(&self, headers: &HeaderMap, incoming: &Incoming<'_>) -> Option<Context> {
        // Most calls carry no trace context: skip the propagators then.
        incoming
            .propagated
            .then(|| self.propagator.extract(&HeaderExtractor(headers)))
            .filter(|cx| cx.span().span_context().is_valid())
    }

    /// The server span: a span context alone when the sampler drops the
    /// call, else an SDK span on the trace id the sampler judged.
    fn start_server_span(
        &self,
        tracer: &SdkTracer,
        method: &Method,
        parent: Option<&Context>,
        request_id: Option<&str>,
        shadow: bool,
    ) -> ServerSpan {
        let root;
        let parent_cx = match parent {
            Some(parent) => parent,
            None => {
                root = Context::new();
                &root
            }
        };
        let ids = RandomIdGenerator::default();
        let trace_id = match parent {
            Some(parent) => parent.span().span_context().trace_id(),
            None => ids.new_trace_id(),
        };
        let decided = self.sampler.should_sample(
            Some(parent_cx),
            trace_id,
            &method.full_name,
            &SpanKind::Server,
            &[],
            &[],
        );
        if decided.decision == SamplingDecision::Drop {
            return ServerSpan {
                context: SpanContext::new(
                    trace_id,
                    ids.new_span_id(),
                    TraceFlags::default(),
                    false,
                    decided.trace_state,
                ),
                tracer: tracer.clone(),
                span: None,
            };
        }
        let handed_over = parent.is_none().then(|| Judged::hand_over(trace_id));
        let mut span = tracer
            .span_builder(method.full_name.to_string())
            .with_kind(SpanKind::Server)
            .start_with_context(tracer, parent_cx);
        drop(handed_over);
        if span.is_recording() {
            span.set_attributes([
                KeyValue::new("rpc.system", "grpc"),
                // Shared with the method table: no copy per span.
                KeyValue::new("rpc.service", Arc::clone(&method.service)),
                KeyValue::new("rpc.method", Arc::clone(&method.method)),
                KeyValue::new("shadow", shadow),
            ]);
            if let Some(id) = request_id {
                span.set_attribute(KeyValue::new("request_id", id.to_owned()));
            }
        }
        ServerSpan {
            context: span.span_context().clone(),
            tracer: tracer.clone(),
            span: Some(Mutex::new(span)),
        }
    }

    /// The spans of one RPC, following the OpenTelemetry RPC conventions
    /// (name `service/method`, kind server, `rpc.system`, `rpc.service`,
    /// `rpc.method`, then `rpc.grpc.status_code`), parented by the caller's
    /// trace context when it sent one (W3C or B3). Without export no
    /// OpenTelemetry span is built; log lines still get ids, in the
    /// caller's trace when it sent one.
    pub fn server_span(&self, method: &Arc<Method>, headers: &HeaderMap, shadow: bool) -> RpcSpan {
        let log = tracing::info_span!(
            target: LOG_TARGET,
            "grpc.server",
            rpc.service = &*method.service,
            rpc.method = &*method.method,
            rpc.grpc.status_code = Empty,
            request_id = Empty,
            engine = Empty,
            variant = Empty,
            shadow,
        );
        if log.is_disabled() && self.tracer.is_none() {
            return RpcSpan {
                log,
                trace: Trace(None),
            };
        }
        let incoming = Incoming::read(headers);
        if let Some(id) = incoming.request_id {
            log.record("request_id", id);
        }
        let parent = self.remote_parent(headers, &incoming);
        let trace = self.tracer.as_ref().map(|tracer| {
            Arc::new(self.start_server_span(
                tracer,
                method,
                parent.as_ref(),
                incoming.request_id,
                shadow,
            ))
        });
        if !log.is_disabled() {
            let (trace_id, span_id) = match &trace {
                Some(span) => (span.context.trace_id(), span.context.span_id()),
                None => {
                    // Ids for the log lines only, in the caller's trace
                    // when it sent one.
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
}

/// An RPC's trace: its server span, when spans are exported. Cheap to
/// clone; the request carries it as an extension so handlers can add
/// children and attributes.
#[derive(Clone, Debug, Default)]
pub struct Trace(Option<Arc<ServerSpan>>);

/// The server span's context, the tracer its children and linked spans
/// come from, and the SDK span when the call is sampled.
struct ServerSpan {
    context: SpanContext,
    tracer: SdkTracer,
    span: Option<Mutex<Span>>,
}

impl std::fmt::Debug for ServerSpan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerSpan")
            .field("context", &self.context)
            .finish_non_exhaustive()
    }
}

impl ServerSpan {
    /// The SDK span, when sampled.
    fn lock(&self) -> Option<std::sync::MutexGuard<'_, Span>> {
        self.span
            .as_ref()
            .map(|span| span.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Trace {
    /// Whether there is a server span (spans are exported; sampled or not).
    pub fn has_span(&self) -> bool {
        self.0.is_some()
    }

    /// The server span, when it records (sampled).
    fn recording(&self) -> Option<&ServerSpan> {
        self.0
            .as_deref()
            .filter(|s| s.span.is_some() && s.context.is_sampled())
    }

    /// Sets an attribute of the server span. The attribute is only built
    /// when the span records: without export, or for a call that is not
    /// sampled, the call costs nothing.
    pub fn set_attribute(&self, attribute: impl FnOnce() -> KeyValue) {
        if let Some(mut span) = self.recording().and_then(ServerSpan::lock) {
            span.set_attribute(attribute());
        }
    }

    /// A child of the server span, started now and ended when dropped. Its
    /// attributes are only built when it records. A child is sampled when
    /// its server span is (the parent-based samplers' rule for a local
    /// parent).
    pub fn child(
        &self,
        name: &'static str,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) -> ChildSpan {
        let Some(server) = self.recording() else {
            return ChildSpan(None);
        };
        let parent = Context::new().with_remote_span_context(server.context.clone());
        let span = server
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Internal)
            .with_attributes(attributes())
            .start_with_context(&server.tracer, &parent);
        ChildSpan(Some(span))
    }

    /// A span in a trace of its own (the sampler decides), linked to the
    /// server span: work that runs after the reply (a dark-launch
    /// candidate). Empty without export or when not sampled.
    pub fn linked_root(
        &self,
        name: &'static str,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) -> ChildSpan {
        let Some(server) = self.0.as_deref() else {
            return ChildSpan(None);
        };
        let span = server
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Internal)
            .with_links(vec![Link::with_context(server.context.clone())])
            .start_with_context(&server.tracer, &Context::new());
        let mut span = ChildSpan(Some(span).filter(|s| s.is_recording()));
        if let Some(s) = &mut span.0 {
            s.set_attributes(attributes());
        }
        span
    }

    /// Ends the server span with the call's gRPC status. Server errors, as
    /// the RPC conventions list them, get the error status.
    fn finish(&self, code: tonic::Code) {
        if let Some(mut span) = self.0.as_deref().and_then(ServerSpan::lock) {
            if span.is_recording() {
                span.set_attribute(KeyValue::new("rpc.grpc.status_code", code as i64));
                if is_server_error(code) {
                    span.set_status(Status::error(""));
                }
            }
            span.end();
        }
    }
}

/// A span that ends when dropped (a child of an RPC's server span, or a
/// linked one). Empty when not recorded.
#[must_use = "the span ends when dropped"]
pub struct ChildSpan(Option<Span>);

impl ChildSpan {
    /// Sets an attribute (built only when the span records).
    pub fn set_attribute(&mut self, attribute: impl FnOnce() -> KeyValue) {
        if let Some(span) = &mut self.0 {
            span.set_attribute(attribute());
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
