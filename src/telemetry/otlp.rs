//! OTLP/gRPC trace export: a span processor that encodes each span the
//! moment it ends, and one thread that ships the batches to
//! `TraceService/Export`.
//!
//! Why not the SDK's `BatchSpanProcessor` and `opentelemetry-otlp`'s
//! exporter: that pair moves every span (a few hundred bytes of
//! `SpanData`) through a channel to a batch thread, converts it there into
//! the owned `opentelemetry-proto` structs (a `String` per attribute key
//! and value, a `Vec` per id), encodes those, and frees everything on a
//! thread that did not allocate it. At 100 % sampling that path cost about
//! as much as the rest of tracing (BENCHMARKS.md, section 4). Here,
//! [`OtlpProcessor::on_end`] writes the span's protobuf bytes straight from
//! the [`SpanData`] on the thread that ended it, and appends them to the
//! pending batch under a short lock; the span data is freed where it was
//! made. The RPC spans, which are recorded without the SDK (`rpc`), take
//! the same way through a [`SpanSink`].
//!
//! The export thread (`otlp-export`) owns a one-thread Tokio runtime for
//! its gRPC client, so an export never queues behind the requests being
//! served. It sends when `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` spans are pending
//! (default 512), every `OTEL_BSP_SCHEDULE_DELAY` (5,000 ms) otherwise, and
//! on a flush; it carries what is pending, at most
//! `OTEL_BSP_MAX_QUEUE_SIZE` spans (8,192 here; beyond, spans are dropped
//! and counted in a warning) and 3 MiB. `OTEL_BSP_EXPORT_TIMEOUT` bounds a
//! flush.
//!
//! The wire format is `opentelemetry/proto/collector/trace/v1`
//! (`ExportTraceServiceRequest`); the unit tests decode what this module
//! writes with the `opentelemetry-proto` crate and compare it, byte for
//! byte, with that crate's own conversion of the same spans.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Buf, BufMut};
use opentelemetry::Context;
use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceState};
use opentelemetry::{Array, InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanProcessor};
use prost::encoding::{DecodeContext, WireType, encoded_len_varint, key_len, skip_field};
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::{Channel, Endpoint};

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// The OTLP default for an export's deadline.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Bytes pending at most: a request stays well under the 4 MiB a collector
/// accepts by default.
const MAX_PENDING_BYTES: usize = 3 << 20;

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

/// When and how much to send (the `OTEL_BSP_*` variables).
#[derive(Debug, Clone, Copy)]
struct Batching {
    schedule_delay: Duration,
    max_queue: usize,
    batch: usize,
    flush_timeout: Duration,
}

impl Batching {
    fn from_env() -> Result<Self, OtlpError> {
        let max_queue = env_number("OTEL_BSP_MAX_QUEUE_SIZE")?.unwrap_or(8192) as usize;
        Ok(Self {
            schedule_delay: Duration::from_millis(
                env_number("OTEL_BSP_SCHEDULE_DELAY")?.unwrap_or(5000),
            ),
            max_queue,
            // The specification: never more than the queue.
            batch: (env_number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE")?.unwrap_or(512) as usize)
                .min(max_queue),
            flush_timeout: Duration::from_millis(
                env_number("OTEL_BSP_EXPORT_TIMEOUT")?.unwrap_or(30_000),
            ),
        })
    }
}

/// A positive integer variable, if set.
fn env_number(name: &'static str) -> Result<Option<u64>, OtlpError> {
    let Ok(value) = std::env::var(name) else {
        return Ok(None);
    };
    match value.trim().parse::<u64>() {
        Ok(n) if n > 0 => Ok(Some(n)),
        _ => Err(OtlpError::Env {
            name,
            reason: format!("{value:?} is not a positive integer"),
        }),
    }
}

/// The gRPC client of `TraceService/Export`.
struct Client {
    grpc: tonic::client::Grpc<Channel>,
    headers: MetadataMap,
    timeout: Duration,
}

impl Client {
    async fn export(&self, body: Vec<u8>) -> OTelSdkResult {
        let mut grpc = self.grpc.clone();
        let mut request = tonic::Request::new(Encoded(body));
        *request.metadata_mut() = self.headers.clone();
        request.set_timeout(self.timeout);
        let call = async {
            grpc.ready()
                .await
                .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
            let codec = tonic_prost::ProstCodec::<Encoded, ExportResponse>::default();
            grpc.unary(
                request,
                http::uri::PathAndQuery::from_static(EXPORT_PATH),
                codec,
            )
            .await
        };
        let response = match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => {
                return Err(OTelSdkError::InternalFailure(format!(
                    "export failed: {:?}: {}",
                    status.code(),
                    status.message()
                )));
            }
            Err(_) => return Err(OTelSdkError::Timeout(self.timeout)),
        };
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

/// What the span-ending threads and the export thread share.
#[derive(Default)]
struct Pending {
    /// Per instrumentation scope, its encoded spans (`ScopeSpans.spans`
    /// fields, each with its key and length).
    scopes: Vec<(InstrumentationScope, Vec<u8>)>,
    spans: usize,
    bytes: usize,
    dropped: u64,
    /// The encoded `Resource` message and its schema URL.
    resource: Arc<(Vec<u8>, String)>,
    /// Flushes waiting for the next export's result.
    flushes: Vec<std::sync::mpsc::SyncSender<Result<(), String>>>,
    stop: bool,
    /// Buffers of past batches, emptied, for the next ones (no regrowing
    /// them for every batch).
    spare: Vec<Vec<u8>>,
}

struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
    batching: Batching,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The span processor: see the module documentation.
pub struct OtlpProcessor {
    endpoint: String,
    sink: SpanSink,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Where encoded spans join the pending batch: the processor's, and the
/// RPC spans' that are recorded without the SDK (see `rpc`). Cheap to
/// clone.
#[derive(Clone)]
pub struct SpanSink(Arc<Shared>);

impl fmt::Debug for SpanSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SpanSink").finish_non_exhaustive()
    }
}

impl SpanSink {
    /// Encodes one sampled span of `scope` (`write` writes the fields of
    /// its `Span` message) and adds it to the pending batch, or counts it
    /// dropped when the queue is full or the exporter is shut down.
    pub(super) fn record(&self, scope: &InstrumentationScope, write: impl FnOnce(&mut Vec<u8>)) {
        let shared = &*self.0;
        SCRATCH.with_borrow_mut(|scratch| {
            scratch.clear();
            write(scratch);
            let batch = shared.batching.batch;
            let mut pending = shared.lock();
            let full = pending.spans >= shared.batching.max_queue
                || pending.bytes + scratch.len() > MAX_PENDING_BYTES;
            if pending.stop || full {
                pending.dropped += 1;
                return;
            }
            let before = pending.spans;
            let body = match pending.scopes.iter().rposition(|(s, _)| s == scope) {
                Some(i) => &mut pending.scopes[i].1,
                None => {
                    let buffer = pending.spare.pop().unwrap_or_default();
                    pending.scopes.push((scope.clone(), buffer));
                    &mut pending.scopes.last_mut().expect("just pushed").1
                }
            };
            let start = body.len();
            put_len_prefix(body, 2, scratch.len());
            body.extend_from_slice(scratch);
            let added = body.len() - start;
            pending.spans += 1;
            pending.bytes += added;
            if before + 1 == batch {
                shared.wake.notify_one();
            }
        });
    }
}

impl fmt::Debug for OtlpProcessor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtlpProcessor")
            .field("endpoint", &self.endpoint)
            .field("batching", &self.sink.0.batching)
            .finish_non_exhaustive()
    }
}

thread_local! {
    /// Where a span is encoded before it joins the batch.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(1024));
}

impl OtlpProcessor {
    /// A processor exporting to `endpoint` (`http://host:port`), with the
    /// standard variables: `OTEL_EXPORTER_OTLP_TRACES_HEADERS` or
    /// `OTEL_EXPORTER_OTLP_HEADERS`, `..._TIMEOUT` in milliseconds, and
    /// `OTEL_BSP_*`. Connects lazily: a collector that is down costs failed
    /// exports, not a failed start.
    pub fn new(endpoint: &str) -> Result<Self, OtlpError> {
        Self::with_batching(endpoint, Batching::from_env()?)
    }

    fn with_batching(endpoint: &str, batching: Batching) -> Result<Self, OtlpError> {
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
        // The channel's tasks run on this runtime, inside the export
        // thread's `block_on`.
        let channel = {
            let _entered = runtime.enter();
            endpoint_config.connect_lazy()
        };
        let client = Client {
            grpc: tonic::client::Grpc::new(channel),
            headers,
            timeout,
        };
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            batching,
        });
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("otlp-export".into())
                .spawn(move || export_loop(&shared, &client, &runtime))?
        };
        Ok(Self {
            endpoint: endpoint.to_owned(),
            sink: SpanSink(shared),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Where spans recorded without the SDK join this processor's batches.
    pub fn sink(&self) -> SpanSink {
        self.sink.clone()
    }

    /// Asks for an export now and waits for its result, at most `timeout`.
    /// With `stop`, the export thread ends after it.
    fn flush(&self, stop: bool, timeout: Duration) -> OTelSdkResult {
        let (done, result) = std::sync::mpsc::sync_channel(1);
        {
            let mut pending = self.sink.0.lock();
            if pending.stop {
                return Err(OTelSdkError::AlreadyShutdown);
            }
            pending.flushes.push(done);
            pending.stop |= stop;
        }
        self.sink.0.wake.notify_one();
        let outcome = match result.recv_timeout(timeout) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(OTelSdkError::InternalFailure(e)),
            Err(_) => Err(OTelSdkError::Timeout(timeout)),
        };
        if stop
            && outcome.is_ok()
            && let Some(thread) = self
                .thread
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
        {
            let _ = thread.join();
        }
        outcome
    }
}

impl SpanProcessor for OtlpProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if span.span_context.is_sampled() {
            self.sink.record(&span.instrumentation_scope, |buf| {
                write_span_data(buf, &span)
            });
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.flush(false, self.sink.0.batching.flush_timeout)
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.flush(true, timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.sink.0.lock().resource = Arc::new(encode_resource(resource));
    }
}

impl Drop for OtlpProcessor {
    fn drop(&mut self) {
        // Not shut down: the thread exports what is pending, then ends.
        self.sink.0.lock().stop = true;
        self.sink.0.wake.notify_one();
    }
}

/// The export thread: waits for a full batch, the schedule delay, a flush
/// or the stop, then sends what is pending.
fn export_loop(shared: &Shared, client: &Client, runtime: &tokio::runtime::Runtime) {
    let batching = shared.batching;
    let mut next = Instant::now() + batching.schedule_delay;
    let mut failures = Failures::default();
    loop {
        let (scopes, resource, flushes, dropped, stop) = {
            let mut pending = shared.lock();
            loop {
                let now = Instant::now();
                if pending.stop
                    || !pending.flushes.is_empty()
                    || pending.spans >= batching.batch
                    || now >= next
                {
                    break;
                }
                pending = shared
                    .wake
                    .wait_timeout(pending, next - now)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            next = Instant::now() + batching.schedule_delay;
            pending.spans = 0;
            pending.bytes = 0;
            (
                std::mem::take(&mut pending.scopes),
                Arc::clone(&pending.resource),
                std::mem::take(&mut pending.flushes),
                std::mem::take(&mut pending.dropped),
                pending.stop,
            )
        };
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "spans dropped: the export queue was full (OTEL_BSP_MAX_QUEUE_SIZE)"
            );
        }
        let result = if scopes.is_empty() {
            Ok(())
        } else {
            let body = encode_request(&resource.0, &resource.1, &scopes);
            runtime.block_on(client.export(body)).map_err(|e| {
                failures.record(&e);
                e.to_string()
            })
        };
        for flush in flushes {
            let _ = flush.send(result.clone());
        }
        if stop {
            return;
        }
        let mut pending = shared.lock();
        for (_, mut buffer) in scopes {
            buffer.clear();
            // A burst may have grown it to MAX_PENDING_BYTES: keep 1 MiB.
            buffer.shrink_to(1 << 20);
            pending.spare.push(buffer);
        }
    }
}

/// Failed exports, logged at most once every [`Failures::EVERY`]: a
/// collector that is down must not flood the logs.
#[derive(Default)]
struct Failures {
    since_last_line: u64,
    last_line: Option<Instant>,
}

impl Failures {
    const EVERY: Duration = Duration::from_secs(10);

    fn record(&mut self, error: &OTelSdkError) {
        self.since_last_line += 1;
        if self.last_line.is_none_or(|at| at.elapsed() >= Self::EVERY) {
            tracing::warn!(
                %error,
                failed_exports = self.since_last_line,
                "trace export failed (logged at most every 10 s)"
            );
            self.since_last_line = 0;
            self.last_line = Some(Instant::now());
        }
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
    put_key_value_with(buf, tag, key, any_value_len(value), |b| {
        put_any_value(b, value)
    });
}

/// `KeyValue` whose `AnyValue`, `value_len` bytes long, `write_value`
/// writes.
fn put_key_value_with(
    buf: &mut Vec<u8>,
    tag: u32,
    key: &str,
    value_len: usize,
    write_value: impl FnOnce(&mut Vec<u8>),
) {
    put_len_prefix(
        buf,
        tag,
        bytes_len(1, key.as_bytes()) + len_field(2, value_len),
    );
    put_bytes(buf, 1, key.as_bytes());
    put_len_prefix(buf, 2, value_len);
    write_value(buf);
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

/// What every span has, however it was recorded.
pub(super) struct SpanHead<'a> {
    pub context: &'a SpanContext,
    /// Invalid for a root span.
    pub parent: SpanId,
    pub parent_is_remote: bool,
    pub name: &'a str,
    pub kind: SpanKind,
    pub start: SystemTime,
    pub end: SystemTime,
}

impl<'a> SpanHead<'a> {
    /// The head of a span the SDK recorded.
    fn of(span: &'a SpanData) -> Self {
        Self {
            context: &span.span_context,
            parent: span.parent_span_id,
            parent_is_remote: span.parent_span_is_remote,
            name: &span.name,
            kind: span.span_kind.clone(),
            start: span.start_time,
            end: span.end_time,
        }
    }
}

/// The fields of a `Span` message, in tag order as prost writes them
/// (`flags`, 16, last). `attributes` writes the attributes (field 9) with
/// an [`Attributes`] writer.
pub(super) fn write_span(
    buf: &mut Vec<u8>,
    head: &SpanHead<'_>,
    attributes: impl FnOnce(&mut Attributes<'_>),
    status: &Status,
) {
    write_span_with(buf, head, attributes, status, |_| {});
}

/// [`write_span`] with fields 10 to 14 (dropped attributes, events,
/// links) written by `middle`.
fn write_span_with(
    buf: &mut Vec<u8>,
    head: &SpanHead<'_>,
    attributes: impl FnOnce(&mut Attributes<'_>),
    status: &Status,
    middle: impl FnOnce(&mut Vec<u8>),
) {
    let cx = head.context;
    put_bytes(buf, 1, &cx.trace_id().to_bytes());
    put_bytes(buf, 2, &cx.span_id().to_bytes());
    put_bytes(buf, 3, trace_state(cx.trace_state()).as_bytes());
    if head.parent != SpanId::INVALID {
        put_bytes(buf, 4, &head.parent.to_bytes());
    }
    put_bytes(buf, 5, head.name.as_bytes());
    put_varint(buf, 6, span_kind(&head.kind));
    put_fixed64(buf, 7, nanos(head.start));
    put_fixed64(buf, 8, nanos(head.end));
    attributes(&mut Attributes(buf));
    middle(buf);
    put_status(buf, 15, status);
    put_fixed32(
        buf,
        16,
        span_flags(cx.trace_flags().to_u8(), head.parent_is_remote),
    );
}

/// A span the SDK recorded.
fn write_span_data(buf: &mut Vec<u8>, span: &SpanData) {
    write_span_with(
        buf,
        &SpanHead::of(span),
        |a| a.all(&span.attributes),
        &span.status,
        |buf| {
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
        },
    );
}

/// Writes a span's attributes (`Span` field 9), each a `KeyValue`.
pub(super) struct Attributes<'a>(&'a mut Vec<u8>);

impl Attributes<'_> {
    /// A string attribute, without building a [`Value`].
    pub fn str(&mut self, key: &str, value: &str) {
        put_key_value_with(self.0, 9, key, len_field(1, value.len()), |b| {
            put_str_always(b, 1, value)
        });
    }

    pub fn value(&mut self, key: &str, value: &Value) {
        put_key_value(self.0, 9, key, value);
    }

    pub fn all(&mut self, attributes: &[KeyValue]) {
        put_attributes(self.0, 9, attributes);
    }
}

/// `InstrumentationScope`: name (1), version (2), attributes (3).
fn write_scope(buf: &mut Vec<u8>, scope: &InstrumentationScope) {
    put_bytes(buf, 1, scope.name().as_bytes());
    put_bytes(buf, 2, scope.version().unwrap_or_default().as_bytes());
    for kv in scope.attributes() {
        put_key_value(buf, 3, kv.key.as_str(), &kv.value);
    }
}

/// The `Resource` message (its attributes) and the resource's schema URL.
fn encode_resource(resource: &Resource) -> (Vec<u8>, String) {
    let mut body = Vec::new();
    for (key, value) in resource.iter() {
        put_key_value(&mut body, 1, key.as_str(), value);
    }
    (body, resource.schema_url().unwrap_or_default().to_owned())
}

/// `ExportTraceServiceRequest` with one `ResourceSpans` (field 1) holding a
/// `ScopeSpans` per instrumentation scope. `resource` is the encoded
/// `Resource` message; each scope comes with its spans already encoded.
fn encode_request(
    resource: &[u8],
    resource_schema_url: &str,
    scopes: &[(InstrumentationScope, Vec<u8>)],
) -> Vec<u8> {
    // Each ScopeSpans: its scope (field 1), its spans, its schema URL (3).
    let mut scratch = Vec::new();
    let heads: Vec<Vec<u8>> = scopes
        .iter()
        .map(|(scope, _)| {
            let mut head = Vec::new();
            put_nested(&mut head, 1, &mut scratch, |b| write_scope(b, scope));
            head
        })
        .collect();
    let scope_len = |i: usize| {
        let (scope, spans) = &scopes[i];
        heads[i].len()
            + spans.len()
            + bytes_len(3, scope.schema_url().unwrap_or_default().as_bytes())
    };
    let resource_spans_len = len_field(1, resource.len())
        + (0..scopes.len())
            .map(|i| len_field(2, scope_len(i)))
            .sum::<usize>()
        + bytes_len(3, resource_schema_url.as_bytes());

    let mut buf = Vec::with_capacity(len_field(1, resource_spans_len));
    put_len_prefix(&mut buf, 1, resource_spans_len);
    put_len_prefix(&mut buf, 1, resource.len());
    buf.extend_from_slice(resource);
    for (i, (scope, spans)) in scopes.iter().enumerate() {
        put_len_prefix(&mut buf, 2, scope_len(i));
        buf.extend_from_slice(&heads[i]);
        buf.extend_from_slice(spans);
        put_bytes(
            &mut buf,
            3,
            scope.schema_url().unwrap_or_default().as_bytes(),
        );
    }
    put_bytes(&mut buf, 3, resource_schema_url.as_bytes());
    buf
}

/// Groups and encodes spans as [`OtlpProcessor::on_end`] does, for tests.
#[cfg(test)]
fn encode_spans(spans: &[SpanData]) -> Vec<(InstrumentationScope, Vec<u8>)> {
    let mut scopes: Vec<(InstrumentationScope, Vec<u8>)> = Vec::new();
    let mut scratch = Vec::new();
    for span in spans {
        let i = match scopes
            .iter()
            .position(|(s, _)| *s == span.instrumentation_scope)
        {
            Some(i) => i,
            None => {
                scopes.push((span.instrumentation_scope.clone(), Vec::new()));
                scopes.len() - 1
            }
        };
        put_nested(&mut scopes[i].1, 2, &mut scratch, |b| {
            write_span_data(b, span)
        });
    }
    scopes
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
    use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
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
        let (encoded, schema_url) = encode_resource(&resource);
        let bytes = encode_request(&encoded, &schema_url, &encode_spans(&spans()));
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
        let changed = encode_request(&encoded, &schema_url, &encode_spans(&changed));
        assert_ne!(
            ExportTraceServiceRequest::decode(changed.as_slice()).expect("decodes"),
            reference
        );
    }

    /// A span written field by field (the RPC spans' way) is the same
    /// bytes as the SDK's span data with the same content.
    #[test]
    fn a_span_written_directly_equals_the_same_span_data() {
        let [server, _, child] = spans().try_into().expect("three spans");
        for span in [
            SpanData {
                attributes: vec![
                    KeyValue::new("rpc.system", "grpc"),
                    KeyValue::new("rpc.service", "switchyard.v1.Detector"),
                    KeyValue::new("shadow", true),
                    KeyValue::new("rpc.grpc.status_code", 14_i64),
                ],
                dropped_attributes_count: 0,
                events: SpanEvents::default(),
                links: SpanLinks::default(),
                ..server
            },
            child,
        ] {
            let mut reference = Vec::new();
            write_span_data(&mut reference, &span);
            let mut direct = Vec::new();
            write_span(
                &mut direct,
                &SpanHead::of(&span),
                |a| {
                    for kv in &span.attributes {
                        match &kv.value {
                            Value::String(s) => a.str(kv.key.as_str(), s.as_str()),
                            other => a.value(kv.key.as_str(), other),
                        }
                    }
                },
                &span.status,
            );
            assert_eq!(direct, reference, "{}", span.name);
        }
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
        let err = OtlpProcessor::new("https://collector:4317").expect_err("https");
        assert!(err.to_string().contains("https"), "{err}");
        let err = OtlpProcessor::new("not a uri").expect_err("bad uri");
        assert!(err.to_string().contains("invalid endpoint"), "{err}");
        assert_eq!(percent_decode("a%20b%2Cc"), Some("a b,c".to_owned()));
        assert_eq!(percent_decode("bad%2"), None);
    }

    /// A collector on its own runtime thread: every request it received.
    fn collector() -> (String, Arc<Mutex<Vec<ExportTraceServiceRequest>>>) {
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
        use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
            TraceService, TraceServiceServer,
        };

        #[derive(Clone, Default)]
        struct Collector(Arc<Mutex<Vec<ExportTraceServiceRequest>>>);

        #[tonic::async_trait]
        impl TraceService for Collector {
            async fn export(
                &self,
                request: tonic::Request<ExportTraceServiceRequest>,
            ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
                self.0
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(request.into_inner());
                Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
            }
        }

        let collector = Collector::default();
        let received = Arc::clone(&collector.0);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        listener.set_nonblocking(true).expect("nonblocking");
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let _ = tonic::transport::Server::builder()
                    .add_service(TraceServiceServer::new(collector))
                    .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                    .await;
            });
        });
        (format!("http://{addr}"), received)
    }

    fn span_names(requests: &[ExportTraceServiceRequest]) -> Vec<String> {
        requests
            .iter()
            .flat_map(|r| &r.resource_spans)
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .map(|s| s.name.clone())
            .collect()
    }

    fn batching(max_queue: usize) -> Batching {
        Batching {
            // Longer than the test: only a full batch or a flush sends.
            schedule_delay: Duration::from_secs(600),
            max_queue,
            batch: max_queue,
            flush_timeout: Duration::from_secs(10),
        }
    }

    #[test]
    fn spans_are_sent_on_flush_and_a_full_batch_sends_by_itself() {
        let (endpoint, received) = collector();
        let mut processor =
            OtlpProcessor::with_batching(&endpoint, batching(4)).expect("processor");
        // One instance: its attributes iterate in one order.
        let resource = resource();
        processor.set_resource(&resource);
        let mut spans = spans();
        // Not sampled: never exported.
        let unsampled = SpanData {
            span_context: SpanContext::new(
                TraceId::from(5_u128),
                SpanId::from(6_u64),
                TraceFlags::default(),
                false,
                TraceState::NONE,
            ),
            name: "unsampled".into(),
            ..spans[1].clone()
        };
        spans.push(unsampled);
        for span in spans.clone() {
            processor.on_end(span);
        }
        processor.force_flush().expect("flush");
        let requests = received
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        assert_eq!(requests.len(), 1, "one export");
        let mut names = span_names(&requests);
        names.sort();
        assert_eq!(
            names,
            ["", "engine.detect", "switchyard.v1.Detector/Detect"]
        );
        // The export is the reference conversion of the sampled spans.
        spans.pop();
        assert_eq!(
            requests[0],
            ExportTraceServiceRequest {
                resource_spans: group_spans_by_resource_and_scope(
                    spans.clone(),
                    &ResourceAttributesWithSchema::from(&resource),
                ),
            }
        );

        // Four spans fill the batch: sent without a flush.
        for span in spans.iter().chain(&spans[..1]).cloned() {
            processor.on_end(span);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while received
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
            < 2
        {
            assert!(Instant::now() < deadline, "a full batch was not sent");
            std::thread::sleep(Duration::from_millis(10));
        }
        processor.shutdown().expect("shutdown");
        assert!(matches!(
            processor.shutdown(),
            Err(OTelSdkError::AlreadyShutdown)
        ));
    }

    #[test]
    fn beyond_the_queue_spans_are_dropped_and_shutdown_sends_the_rest() {
        let (endpoint, received) = collector();
        let processor = OtlpProcessor::with_batching(
            &endpoint,
            Batching {
                batch: 100,
                ..batching(2)
            },
        )
        .expect("processor");
        for span in spans() {
            processor.on_end(span);
        }
        assert_eq!(processor.sink.0.lock().dropped, 1, "the third span");
        processor.shutdown().expect("shutdown");
        let requests = received
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        assert_eq!(span_names(&requests).len(), 2);
        // After shutdown nothing is queued.
        processor.on_end(spans().remove(0));
        assert_eq!(processor.sink.0.lock().spans, 0);
    }

    #[test]
    fn a_collector_that_is_down_fails_the_flush_with_a_reason() {
        // A port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let processor =
            OtlpProcessor::with_batching(&format!("http://127.0.0.1:{port}"), batching(8))
                .expect("processor");
        processor.on_end(spans().remove(0));
        let err = processor.force_flush().expect_err("nobody listens");
        assert!(err.to_string().contains("export failed"), "{err}");
    }

    #[test]
    fn failed_exports_are_logged_at_most_every_ten_seconds() {
        let mut failures = Failures::default();
        let error = OTelSdkError::InternalFailure("down".into());
        failures.record(&error);
        assert_eq!(failures.since_last_line, 0, "the first failure is logged");
        failures.record(&error);
        failures.record(&error);
        assert_eq!(failures.since_last_line, 2, "the next ones are counted");
        failures.last_line = Instant::now().checked_sub(Failures::EVERY);
        failures.record(&error);
        assert_eq!(failures.since_last_line, 0, "logged again, with the count");
    }
}
