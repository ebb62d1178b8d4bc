//! The OTLP/gRPC span exporter: `TraceService/Export` with the batch
//! encoded straight from the SDK's [`SpanData`] into protobuf bytes.
//!
//! Why not `opentelemetry-otlp`'s exporter: it first converts every span
//! into the owned `opentelemetry-proto` structs (a `String` per attribute
//! key and value, a `Vec` per id), encodes those, then frees them. At 100 %
//! sampling that was a third of the whole cost of tracing (BENCHMARKS.md,
//! section 4); this encoder writes the same message in one pass over the
//! batch, with one allocation for the request body.
//!
//! Its gRPC channel lives on a runtime of its own (one thread,
//! `otlp-export`), so an export does not queue behind the requests being
//! served: under load the batch processor's queue drains as fast as spans
//! arrive instead of overflowing.
//!
//! The wire format is `opentelemetry/proto/collector/trace/v1`
//! (`ExportTraceServiceRequest`); the unit tests decode what this module
//! writes with the `opentelemetry-proto` crate and compare it with that
//! crate's own conversion of the same spans.

use std::borrow::Cow;
use std::fmt;
use std::time::{Duration, SystemTime};

use bytes::{Buf, BufMut};
use opentelemetry::trace::{SpanKind, Status, TraceState};
use opentelemetry::{Array, InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use prost::encoding::{DecodeContext, WireType, encoded_len_varint, key_len, skip_field};
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::{Channel, Endpoint};

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// The OTLP default for an export's deadline.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the exporter could not be built.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("invalid endpoint: {0}")]
    Endpoint(String),
    #[error(
        "https endpoints are not supported (no TLS in this build; in a mesh the sidecar encrypts)"
    )]
    Https,
    #[error("{name} is invalid: {reason}")]
    Env { name: &'static str, reason: String },
    #[error("cannot start the export thread: {0}")]
    Thread(#[from] std::io::Error),
}

/// Exports spans over OTLP/gRPC. See the module documentation.
pub struct OtlpExporter {
    endpoint: String,
    client: tonic::client::Grpc<Channel>,
    headers: MetadataMap,
    timeout: Duration,
    runtime: tokio::runtime::Handle,
    /// Stops the export thread when the exporter is dropped.
    _stop: tokio::sync::oneshot::Sender<()>,
    /// The encoded `Resource` message, set by the SDK.
    resource: Vec<u8>,
    resource_schema_url: String,
}

impl fmt::Debug for OtlpExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtlpExporter")
            .field("endpoint", &self.endpoint)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl OtlpExporter {
    /// An exporter to `endpoint` (`http://host:port`), with the headers and
    /// timeout of the standard variables (`OTEL_EXPORTER_OTLP_TRACES_HEADERS`
    /// or `OTEL_EXPORTER_OTLP_HEADERS`, `..._TIMEOUT` in milliseconds).
    /// Connects lazily: a collector that is down costs failed exports, not
    /// a failed start.
    pub fn new(endpoint: &str) -> Result<Self, OtlpError> {
        let headers = headers_from_env()?;
        let timeout = timeout_from_env()?;
        if endpoint.starts_with("https://") {
            return Err(OtlpError::Https);
        }
        let endpoint_config = Endpoint::from_shared(endpoint.to_owned())
            .map_err(|e| OtlpError::Endpoint(e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("otlp-export".into())
            .spawn(move || {
                // Ends when the exporter (the sender) is dropped.
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })?;
        // The channel's background tasks run on the export thread.
        let channel = {
            let _entered = handle.enter();
            endpoint_config.connect_lazy()
        };
        Ok(Self {
            endpoint: endpoint.to_owned(),
            client: tonic::client::Grpc::new(channel),
            headers,
            timeout,
            runtime: handle,
            _stop: stop,
            resource: Vec::new(),
            resource_schema_url: String::new(),
        })
    }
}

impl SpanExporter for OtlpExporter {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        let body = encode_request(&self.resource, &self.resource_schema_url, &batch);
        drop(batch);
        let mut client = self.client.clone();
        let mut request = tonic::Request::new(Encoded(body));
        *request.metadata_mut() = self.headers.clone();
        request.set_timeout(self.timeout);
        let timeout = self.timeout;
        let call = self.runtime.spawn(async move {
            let call = async {
                client
                    .ready()
                    .await
                    .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
                let codec = tonic_prost::ProstCodec::<Encoded, ExportResponse>::default();
                client
                    .unary(
                        request,
                        http::uri::PathAndQuery::from_static(EXPORT_PATH),
                        codec,
                    )
                    .await
            };
            match tokio::time::timeout(timeout, call).await {
                Ok(Ok(response)) => Ok(response.into_inner()),
                Ok(Err(status)) => Err(OTelSdkError::InternalFailure(format!(
                    "export failed: {:?}: {}",
                    status.code(),
                    status.message()
                ))),
                Err(_) => Err(OTelSdkError::Timeout(timeout)),
            }
        });
        async move {
            let response = call
                .await
                .map_err(|e| OTelSdkError::InternalFailure(e.to_string()))??;
            if let Some(partial) = response.partial_success
                && partial.rejected_spans > 0
            {
                tracing::warn!(
                    rejected_spans = partial.rejected_spans,
                    error = partial.error_message,
                    "the collector rejected spans"
                );
            }
            Ok(())
        }
    }

    fn set_resource(&mut self, resource: &Resource) {
        let mut body = Vec::new();
        for (key, value) in resource.iter() {
            put_key_value(&mut body, 1, key.as_str(), value);
        }
        self.resource = body;
        self.resource_schema_url = resource.schema_url().unwrap_or_default().to_owned();
    }
}

fn env_var(traces: &'static str, general: &'static str) -> Option<(&'static str, String)> {
    std::env::var(traces)
        .ok()
        .map(|v| (traces, v))
        .or_else(|| std::env::var(general).ok().map(|v| (general, v)))
}

/// `key1=value1,key2=value2`, values percent-decoded (the OTLP exporter
/// specification's format).
fn headers_from_env() -> Result<MetadataMap, OtlpError> {
    let mut headers = MetadataMap::new();
    let Some((name, list)) = env_var(
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        "OTEL_EXPORTER_OTLP_HEADERS",
    ) else {
        return Ok(headers);
    };
    let invalid = |reason: String| OtlpError::Env { name, reason };
    for pair in list.split(',').filter(|p| !p.trim().is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| invalid(format!("{pair:?} is not key=value")))?;
        let key = MetadataKey::from_bytes(key.trim().to_ascii_lowercase().as_bytes())
            .map_err(|_| invalid(format!("{key:?} is not a header name")))?;
        let value = percent_decode(value.trim())
            .and_then(|v| MetadataValue::try_from(v.as_str()).ok())
            .ok_or_else(|| invalid(format!("the value of {key} is not a header value")))?;
        headers.insert(key, value);
    }
    Ok(headers)
}

fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = [bytes.next()?, bytes.next()?];
            out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

fn timeout_from_env() -> Result<Duration, OtlpError> {
    match env_var(
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
    ) {
        None => Ok(DEFAULT_TIMEOUT),
        Some((name, ms)) => ms
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis)
            .ok_or_else(|| OtlpError::Env {
                name,
                reason: format!("{ms:?} is not a positive number of milliseconds"),
            }),
    }
}

/// A message already encoded (the request), or one whose content is
/// skipped.
#[derive(Debug, Default, Clone)]
struct Encoded(Vec<u8>);

impl prost::Message for Encoded {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.0);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

/// `ExportTraceServiceResponse`.
#[derive(Clone, PartialEq, prost::Message)]
struct ExportResponse {
    #[prost(message, optional, tag = "1")]
    partial_success: Option<PartialSuccess>,
}

/// `ExportTracePartialSuccess`.
#[derive(Clone, PartialEq, prost::Message)]
struct PartialSuccess {
    #[prost(int64, tag = "1")]
    rejected_spans: i64,
    #[prost(string, tag = "2")]
    error_message: String,
}

// The encoder. Small messages whose size is known up front (`AnyValue`,
// `KeyValue`, `Status`) are written after their length prefix; larger ones
// (a span, a link, an event, a scope) are written into a scratch buffer and
// then copied behind their prefix. Fields with their default value are left
// out, as protobuf encoders do; messages the reference always sets (status,
// resource, scope) are always written.

fn len_field(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

/// A varint, byte by byte into the `Vec` (prost's `encode_varint` goes
/// through `BufMut::put_u8`, several times slower here).
fn put_raw_varint(buf: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        buf.push((value as u8) | 0x80);
        value >>= 7;
    }
    buf.push(value as u8);
}

fn put_key(buf: &mut Vec<u8>, tag: u32, wire_type: WireType) {
    put_raw_varint(buf, u64::from(tag << 3 | wire_type as u32));
}

fn put_len_prefix(buf: &mut Vec<u8>, tag: u32, len: usize) {
    put_key(buf, tag, WireType::LengthDelimited);
    put_raw_varint(buf, len as u64);
}

fn put_bytes(buf: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    if !bytes.is_empty() {
        put_len_prefix(buf, tag, bytes.len());
        buf.extend_from_slice(bytes);
    }
}

fn bytes_len(tag: u32, bytes: &[u8]) -> usize {
    if bytes.is_empty() {
        0
    } else {
        len_field(tag, bytes.len())
    }
}

fn put_varint(buf: &mut Vec<u8>, tag: u32, value: u64) {
    if value != 0 {
        put_key(buf, tag, WireType::Varint);
        put_raw_varint(buf, value);
    }
}

fn varint_len(tag: u32, value: u64) -> usize {
    if value == 0 {
        0
    } else {
        key_len(tag) + encoded_len_varint(value)
    }
}

fn put_fixed64(buf: &mut Vec<u8>, tag: u32, value: u64) {
    if value != 0 {
        put_key(buf, tag, WireType::SixtyFourBit);
        buf.extend_from_slice(&value.to_le_bytes());
    }
}

fn put_fixed32(buf: &mut Vec<u8>, tag: u32, value: u32) {
    if value != 0 {
        put_key(buf, tag, WireType::ThirtyTwoBit);
        buf.extend_from_slice(&value.to_le_bytes());
    }
}

/// Writes a message of unknown size as field `tag`: into `scratch`, then
/// behind its length prefix.
fn put_nested(
    buf: &mut Vec<u8>,
    tag: u32,
    scratch: &mut Vec<u8>,
    write: impl FnOnce(&mut Vec<u8>),
) {
    scratch.clear();
    write(scratch);
    put_len_prefix(buf, tag, scratch.len());
    buf.extend_from_slice(scratch);
}

fn nanos(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// `AnyValue`: a oneof, so the set variant is written even when it is the
/// default (an empty string, `false`, 0).
fn any_value_len(value: &Value) -> usize {
    match value {
        Value::Bool(_) => key_len(2) + 1,
        Value::I64(i) => key_len(3) + encoded_len_varint(*i as u64),
        Value::F64(_) => key_len(4) + 8,
        Value::String(s) => len_field(1, s.as_str().len()),
        Value::Array(array) => len_field(5, array_len(array)),
        other => len_field(1, other.as_str().len()),
    }
}

fn put_any_value(buf: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Bool(b) => {
            put_key(buf, 2, WireType::Varint);
            buf.push(u8::from(*b));
        }
        Value::I64(i) => {
            put_key(buf, 3, WireType::Varint);
            put_raw_varint(buf, *i as u64);
        }
        Value::F64(f) => {
            put_key(buf, 4, WireType::SixtyFourBit);
            buf.extend_from_slice(&f.to_le_bytes());
        }
        Value::String(s) => put_str_always(buf, 1, s.as_str()),
        Value::Array(array) => {
            put_len_prefix(buf, 5, array_len(array));
            put_array(buf, array);
        }
        other => put_str_always(buf, 1, &other.as_str()),
    }
}

fn put_str_always(buf: &mut Vec<u8>, tag: u32, s: &str) {
    put_len_prefix(buf, tag, s.len());
    buf.extend_from_slice(s.as_bytes());
}

/// The elements of an array, each an `AnyValue` (field 1 of `ArrayValue`).
fn array_values(array: &Array) -> Vec<Value> {
    fn strings(values: &[StringValue]) -> Vec<Value> {
        values.iter().cloned().map(Value::String).collect()
    }
    match array {
        Array::Bool(v) => v.iter().copied().map(Value::Bool).collect(),
        Array::I64(v) => v.iter().copied().map(Value::I64).collect(),
        Array::F64(v) => v.iter().copied().map(Value::F64).collect(),
        Array::String(v) => strings(v),
        other => vec![Value::String(other.to_string().into())],
    }
}

fn array_len(array: &Array) -> usize {
    array_values(array)
        .iter()
        .map(|v| len_field(1, any_value_len(v)))
        .sum()
}

fn put_array(buf: &mut Vec<u8>, array: &Array) {
    for value in array_values(array) {
        put_len_prefix(buf, 1, any_value_len(&value));
        put_any_value(buf, &value);
    }
}

/// `KeyValue`: key (1), value (2).
fn put_key_value(buf: &mut Vec<u8>, tag: u32, key: &str, value: &Value) {
    let value_len = any_value_len(value);
    put_len_prefix(
        buf,
        tag,
        bytes_len(1, key.as_bytes()) + len_field(2, value_len),
    );
    put_bytes(buf, 1, key.as_bytes());
    put_len_prefix(buf, 2, value_len);
    put_any_value(buf, value);
}

fn put_attributes(buf: &mut Vec<u8>, tag: u32, attributes: &[KeyValue]) {
    for kv in attributes {
        put_key_value(buf, tag, kv.key.as_str(), &kv.value);
    }
}

/// The W3C `tracestate` header, empty when there is none.
fn trace_state(state: &TraceState) -> Cow<'static, str> {
    if *state == TraceState::NONE {
        Cow::Borrowed("")
    } else {
        Cow::Owned(state.header())
    }
}

/// `flags`: the W3C trace flags, plus "whether the parent is remote is
/// known" (bit 8) and "the parent is remote" (bit 9).
fn span_flags(trace_flags: u8, parent_is_remote: bool) -> u32 {
    u32::from(trace_flags) | 0x100 | if parent_is_remote { 0x200 } else { 0 }
}

fn span_kind(kind: &SpanKind) -> u64 {
    match kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

/// `Status`: message (2) and code (3; unset 0, ok 1, error 2).
fn put_status(buf: &mut Vec<u8>, tag: u32, status: &Status) {
    let (message, code) = match status {
        Status::Unset => ("", 0),
        Status::Ok => ("", 1),
        Status::Error { description } => (&**description, 2),
    };
    put_len_prefix(
        buf,
        tag,
        bytes_len(2, message.as_bytes()) + varint_len(3, code),
    );
    put_bytes(buf, 2, message.as_bytes());
    put_varint(buf, 3, code);
}

/// `Event`: time (1), name (2), attributes (3), dropped count (4).
fn write_event(buf: &mut Vec<u8>, event: &opentelemetry::trace::Event) {
    put_fixed64(buf, 1, nanos(event.timestamp));
    put_bytes(buf, 2, event.name.as_bytes());
    put_attributes(buf, 3, &event.attributes);
    put_varint(buf, 4, u64::from(event.dropped_attributes_count));
}

/// `Link`: trace id (1), span id (2), trace state (3), attributes (4),
/// dropped count (5), flags (6).
fn write_link(buf: &mut Vec<u8>, link: &opentelemetry::trace::Link) {
    let cx = &link.span_context;
    put_bytes(buf, 1, &cx.trace_id().to_bytes());
    put_bytes(buf, 2, &cx.span_id().to_bytes());
    put_bytes(buf, 3, trace_state(cx.trace_state()).as_bytes());
    put_attributes(buf, 4, &link.attributes);
    put_varint(buf, 5, u64::from(link.dropped_attributes_count));
    put_fixed32(buf, 6, span_flags(cx.trace_flags().to_u8(), cx.is_remote()));
}

/// `Span`, fields in tag order as prost writes them (`flags`, 16, last).
fn write_span(buf: &mut Vec<u8>, span: &SpanData) {
    let cx = &span.span_context;
    put_bytes(buf, 1, &cx.trace_id().to_bytes());
    put_bytes(buf, 2, &cx.span_id().to_bytes());
    put_bytes(buf, 3, trace_state(cx.trace_state()).as_bytes());
    let parent = span.parent_span_id.to_bytes();
    if parent != [0; 8] {
        put_bytes(buf, 4, &parent);
    }
    put_bytes(buf, 5, span.name.as_bytes());
    put_varint(buf, 6, span_kind(&span.span_kind));
    put_fixed64(buf, 7, nanos(span.start_time));
    put_fixed64(buf, 8, nanos(span.end_time));
    put_attributes(buf, 9, &span.attributes);
    put_varint(buf, 10, u64::from(span.dropped_attributes_count));
    let mut scratch = Vec::new();
    for event in span.events.iter() {
        put_nested(buf, 11, &mut scratch, |b| write_event(b, event));
    }
    put_varint(buf, 12, u64::from(span.events.dropped_count));
    for link in span.links.iter() {
        put_nested(buf, 13, &mut scratch, |b| write_link(b, link));
    }
    put_varint(buf, 14, u64::from(span.links.dropped_count));
    put_status(buf, 15, &span.status);
    put_fixed32(
        buf,
        16,
        span_flags(cx.trace_flags().to_u8(), span.parent_span_is_remote),
    );
}

/// `InstrumentationScope`: name (1), version (2), attributes (3).
fn write_scope(buf: &mut Vec<u8>, scope: &InstrumentationScope) {
    put_bytes(buf, 1, scope.name().as_bytes());
    put_bytes(buf, 2, scope.version().unwrap_or_default().as_bytes());
    for kv in scope.attributes() {
        put_key_value(buf, 3, kv.key.as_str(), &kv.value);
    }
}

/// `ExportTraceServiceRequest` with one `ResourceSpans` (field 1) holding a
/// `ScopeSpans` per instrumentation scope, in order of first appearance.
/// `resource` is the encoded `Resource` message.
fn encode_request(resource: &[u8], resource_schema_url: &str, batch: &[SpanData]) -> Vec<u8> {
    // Spans grouped by scope (a batch has very few scopes: a scan will do).
    let mut scopes: Vec<(&InstrumentationScope, Vec<&SpanData>)> = Vec::new();
    for span in batch {
        match scopes
            .iter_mut()
            .find(|(scope, _)| **scope == span.instrumentation_scope)
        {
            Some((_, spans)) => spans.push(span),
            None => scopes.push((&span.instrumentation_scope, vec![span])),
        }
    }
    let mut scratch = Vec::with_capacity(1024);
    let scope_spans: Vec<Vec<u8>> = scopes
        .iter()
        .map(|(scope, spans)| {
            let mut body = Vec::with_capacity(spans.len() * 512);
            put_nested(&mut body, 1, &mut scratch, |b| write_scope(b, scope));
            for span in spans {
                put_nested(&mut body, 2, &mut scratch, |b| write_span(b, span));
            }
            put_bytes(
                &mut body,
                3,
                scope.schema_url().unwrap_or_default().as_bytes(),
            );
            body
        })
        .collect();
    let resource_spans_len = len_field(1, resource.len())
        + scope_spans
            .iter()
            .map(|body| len_field(2, body.len()))
            .sum::<usize>()
        + bytes_len(3, resource_schema_url.as_bytes());

    let mut buf = Vec::with_capacity(len_field(1, resource_spans_len));
    put_len_prefix(&mut buf, 1, resource_spans_len);
    put_len_prefix(&mut buf, 1, resource.len());
    buf.extend_from_slice(resource);
    for body in &scope_spans {
        put_len_prefix(&mut buf, 2, body.len());
        buf.extend_from_slice(body);
    }
    put_bytes(&mut buf, 3, resource_schema_url.as_bytes());
    buf
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use opentelemetry::trace::{
        Event, Link, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
    };
    use opentelemetry::{Array, InstrumentationScope, KeyValue, Value};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
    use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter, SpanLinks};
    use prost::Message;

    use super::*;

    fn context(trace: u128, span: u64, state: TraceState, remote: bool) -> SpanContext {
        SpanContext::new(
            TraceId::from(trace),
            SpanId::from(span),
            TraceFlags::SAMPLED,
            remote,
            state,
        )
    }

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_000_000 + seconds)
    }

    /// Spans with every kind of field: attribute types, events, links,
    /// remote and local parents, trace state, statuses, two scopes.
    fn spans() -> Vec<SpanData> {
        let scope = InstrumentationScope::builder("switchyard")
            .with_version("1.2.3")
            .with_schema_url("https://opentelemetry.io/schemas/1.30.0")
            .with_attributes([KeyValue::new("scope.attr", "x")])
            .build();
        let other_scope = InstrumentationScope::builder("other").build();
        let state =
            TraceState::from_key_value([("vendor", "value"), ("other", "1")]).expect("trace state");
        let server = SpanData {
            span_context: context(0x0af7651916cd43dd8448eb211c80319c, 0x1111, state, false),
            parent_span_id: SpanId::from(0xb7ad6b7169203331),
            parent_span_is_remote: true,
            span_kind: SpanKind::Server,
            name: "switchyard.v1.Detector/Detect".into(),
            start_time: at(0),
            end_time: at(1),
            attributes: vec![
                KeyValue::new("rpc.system", "grpc"),
                KeyValue::new("rpc.grpc.status_code", 0_i64),
                KeyValue::new("negative", -42_i64),
                KeyValue::new("shadow", false),
                KeyValue::new("ratio", 0.25),
                KeyValue::new("empty", ""),
                KeyValue::new("ids", Value::Array(Array::I64(vec![1, -2, 3]))),
                KeyValue::new(
                    "names",
                    Value::Array(Array::String(vec!["a".into(), "".into()])),
                ),
                KeyValue::new("flags", Value::Array(Array::Bool(vec![true, false]))),
                KeyValue::new("weights", Value::Array(Array::F64(vec![0.5, -1.0]))),
            ],
            dropped_attributes_count: 2,
            events: {
                let mut events = SpanEvents::default();
                events.events.push(Event::new(
                    "exception",
                    at(0),
                    vec![KeyValue::new("exception.message", "boom")],
                    1,
                ));
                events.dropped_count = 3;
                events
            },
            links: {
                let mut links = SpanLinks::default();
                links.links.push(Link::new(
                    context(7, 8, TraceState::NONE, true),
                    vec![KeyValue::new("link.kind", "candidate")],
                    0,
                ));
                links.dropped_count = 1;
                links
            },
            status: Status::error("deadline exceeded"),
            instrumentation_scope: scope.clone(),
        };
        let child = SpanData {
            span_context: context(
                0x0af7651916cd43dd8448eb211c80319c,
                0x2222,
                TraceState::NONE,
                false,
            ),
            parent_span_id: SpanId::from(0x1111),
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: "engine.detect".into(),
            start_time: at(0),
            end_time: at(0),
            attributes: vec![KeyValue::new("engine", "whatlang")],
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Ok,
            instrumentation_scope: scope,
        };
        let root = SpanData {
            span_context: context(99, 0x3333, TraceState::NONE, false),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Client,
            name: "".into(),
            start_time: at(2),
            end_time: at(3),
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: Status::Unset,
            instrumentation_scope: other_scope,
        };
        vec![server, root, child]
    }

    fn resource() -> Resource {
        Resource::builder_empty()
            .with_schema_url(
                [KeyValue::new("service.name", "switchyard")],
                "https://opentelemetry.io/schemas/1.30.0",
            )
            .with_attributes([
                KeyValue::new("service.version", "v2"),
                KeyValue::new("switchyard.replicas", 3_i64),
            ])
            .build()
    }

    /// What this module writes, decoded by `opentelemetry-proto`, equals
    /// that crate's own conversion of the same spans.
    #[test]
    fn the_request_decodes_to_the_reference_conversion() {
        let resource = resource();
        let mut exporter = OtlpExporter::new("http://127.0.0.1:1").expect("exporter");
        exporter.set_resource(&resource);
        let bytes = encode_request(&exporter.resource, &exporter.resource_schema_url, &spans());
        let ours = ExportTraceServiceRequest::decode(bytes.as_slice()).expect("decodes");
        let reference = ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(
                spans(),
                &ResourceAttributesWithSchema::from(&resource),
            ),
        };
        assert_eq!(ours, reference);
        // And byte for byte: the same fields in the same order.
        assert_eq!(bytes, reference.encode_to_vec());
        // The control: a different span does not compare equal.
        let mut changed = spans();
        changed[2].name = "flags.evaluate".into();
        let changed = encode_request(&exporter.resource, &exporter.resource_schema_url, &changed);
        assert_ne!(
            ExportTraceServiceRequest::decode(changed.as_slice()).expect("decodes"),
            reference
        );
    }

    #[test]
    fn an_empty_batch_is_one_empty_resource() {
        let bytes = encode_request(&[], "", &[]);
        let request = ExportTraceServiceRequest::decode(bytes.as_slice()).expect("decodes");
        assert_eq!(request.resource_spans.len(), 1);
        assert!(request.resource_spans[0].scope_spans.is_empty());
    }

    #[test]
    fn https_and_bad_variables_are_refused_with_a_reason() {
        let err = OtlpExporter::new("https://collector:4317").expect_err("https");
        assert!(err.to_string().contains("https"), "{err}");
        let err = OtlpExporter::new("not a uri").expect_err("bad uri");
        assert!(err.to_string().contains("invalid endpoint"), "{err}");
        assert_eq!(percent_decode("a%20b%2Cc"), Some("a b,c".to_owned()));
        assert_eq!(percent_decode("bad%2"), None);
    }
}
