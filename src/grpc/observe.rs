//! What the edge layer records for every RPC: go-grpc-prometheus RED
//! metrics, the OpenTelemetry server span, and one access log line.
//!
//! An RPC ends when its response ends: at the trailers (or a trailers-only
//! response), so a stream is measured for its whole life. A response body
//! dropped before its trailers means the client went away: `Canceled`. So
//! does a request body that breaks off (the client closed its connection
//! mid-message, or broke the stream): tonic fails the handler with
//! `Unknown`, a server error by the RPC conventions, although the call was
//! the client's to end.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use prometheus_client::metrics::counter::Counter;

use super::catalog::Method;
use crate::metrics::code_name;
use crate::telemetry::RpcSpan;

/// Counts gRPC messages in a byte stream: each is a 1-byte flag, a 4-byte
/// big-endian length, then the payload.
#[derive(Debug, Default)]
pub struct MessageCounter {
    header: [u8; 5],
    filled: usize,
    remaining: usize,
}

impl MessageCounter {
    /// Feeds bytes; returns how many messages began in them.
    pub fn feed(&mut self, mut data: &[u8]) -> u64 {
        let mut started = 0;
        while !data.is_empty() {
            if self.remaining > 0 {
                let take = self.remaining.min(data.len());
                self.remaining -= take;
                data = &data[take..];
                continue;
            }
            let take = (5 - self.filled).min(data.len());
            self.header[self.filled..self.filled + take].copy_from_slice(&data[..take]);
            self.filled += take;
            data = &data[take..];
            if self.filled == 5 {
                started += 1;
                self.filled = 0;
                let len = u32::from_be_bytes([
                    self.header[1],
                    self.header[2],
                    self.header[3],
                    self.header[4],
                ]);
                self.remaining = len as usize;
            }
        }
        started
    }
}

/// A request or response body that counts the messages passing through.
pub struct CountingBody<B> {
    inner: B,
    counter: MessageCounter,
    messages: Counter,
    /// Response bodies finish the RPC at their trailers.
    completion: Option<Completion>,
    /// Request bodies say here that they broke off.
    broke_off: Option<Arc<AtomicBool>>,
}

impl<B> CountingBody<B> {
    /// A request body; a read error is flagged on the call's [`Completion`]
    /// ([`Completion::request_broke_off`]).
    pub fn request(inner: B, messages: Counter, broke_off: Arc<AtomicBool>) -> Self {
        Self {
            inner,
            counter: MessageCounter::default(),
            messages,
            completion: None,
            broke_off: Some(broke_off),
        }
    }

    /// A response body, which finishes the RPC.
    pub fn response(inner: B, messages: Counter, completion: Completion) -> Self {
        Self {
            inner,
            counter: MessageCounter::default(),
            messages,
            completion: Some(completion),
            broke_off: None,
        }
    }
}

impl<B> Body for CountingBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = this.counter.feed(data);
                    if n > 0 {
                        this.messages.inc_by(n);
                    }
                } else if let Some(trailers) = frame.trailers_ref()
                    && let Some(completion) = this.completion.take()
                {
                    completion.finish(status_of(trailers));
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(completion) = this.completion.take() {
                    completion.finish(tonic::Code::Internal);
                }
                if let Some(broke_off) = &this.broke_off {
                    broke_off.store(true, Ordering::Relaxed);
                }
            }
            Poll::Ready(None) => {
                // Ended without trailers: the stream was reset under it
                // (the client went away).
                if let Some(completion) = this.completion.take() {
                    completion.finish(tonic::Code::Cancelled);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Parsed once: a lookup by `&str` parses the name every time.
pub(super) static GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");

/// The `grpc-status` of trailers (or of a trailers-only response's
/// headers), if present.
pub fn status_in(headers: &HeaderMap) -> Option<tonic::Code> {
    let value = headers.get(&GRPC_STATUS)?.to_str().ok()?;
    value.parse::<i32>().ok().map(tonic::Code::from_i32)
}

fn status_of(trailers: &HeaderMap) -> tonic::Code {
    status_in(trailers).unwrap_or(tonic::Code::Unknown)
}

const HEALTH_SERVICE: &str = tonic_health::pb::health_server::SERVICE_NAME;

/// Records an RPC's end exactly once: metrics, span status, access log.
/// Dropped unfinished, the client went away (`Canceled`).
pub struct Completion {
    method: Arc<Method>,
    shadow: bool,
    started: Instant,
    span: RpcSpan,
    /// Set by the request body when it broke off.
    request_broke_off: Arc<AtomicBool>,
    done: bool,
}

impl Completion {
    pub fn start(method: Arc<Method>, shadow: bool, span: RpcSpan) -> Self {
        let series = method.series(shadow);
        series.started.inc();
        series.in_flight.inc();
        Self {
            method,
            shadow,
            started: Instant::now(),
            span,
            request_broke_off: Arc::new(AtomicBool::new(false)),
            done: false,
        }
    }

    /// The message counters of this RPC's series: (received, sent).
    pub fn message_counters(&self) -> (Counter, Counter) {
        let series = self.method.series(self.shadow);
        (series.received.clone(), series.sent.clone())
    }

    /// Where the request body flags that it broke off
    /// ([`CountingBody::request`]).
    pub fn request_broke_off(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.request_broke_off)
    }

    pub fn finish(mut self, code: tonic::Code) {
        self.record(code);
    }

    fn record(&mut self, code: tonic::Code) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        // The handler failed because the client left: the client's doing.
        let code = if code == tonic::Code::Unknown && self.request_broke_off.load(Ordering::Relaxed)
        {
            tonic::Code::Cancelled
        } else {
            code
        };
        let elapsed = self.started.elapsed();
        let series = self.method.series(self.shadow);
        series.in_flight.dec();
        series.handled(code).inc();
        series.handling_seconds.observe(elapsed.as_secs_f64());
        self.span.finish(code);
        if self.span.log.is_disabled() {
            return;
        }
        let name = code_name(code);
        let latency_ms = elapsed.as_secs_f64() * 1000.0;
        self.span.log.in_scope(|| {
            // Probes and proxy health checks arrive every second or two per
            // prober: their lines are debug, their metrics are kept.
            if &*self.method.service == HEALTH_SERVICE {
                tracing::debug!(target: "switchyard::access", grpc_code = name, latency_ms, "rpc");
            } else {
                tracing::info!(target: "switchyard::access", grpc_code = name, latency_ms, "rpc");
            }
        });
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        self.record(tonic::Code::Cancelled);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(len: u32) -> Vec<u8> {
        let mut m = vec![0u8];
        m.extend_from_slice(&len.to_be_bytes());
        m.extend(std::iter::repeat_n(7u8, len as usize));
        m
    }

    #[test]
    fn counts_messages_across_any_chunking() {
        let mut stream = Vec::new();
        for len in [0, 3, 70_000, 1, 0] {
            stream.extend(message(len));
        }
        for chunk in [1, 2, 5, 7, 4096, stream.len()] {
            let mut counter = MessageCounter::default();
            let n: u64 = stream.chunks(chunk).map(|c| counter.feed(c)).sum();
            assert_eq!(n, 5, "chunk size {chunk}");
        }
    }

    #[test]
    fn grpc_status_names_follow_go() {
        assert_eq!(code_name(tonic::Code::Cancelled), "Canceled");
        assert_eq!(code_name(tonic::Code::InvalidArgument), "InvalidArgument");
        let mut h = HeaderMap::new();
        h.insert("grpc-status", "14".parse().expect("value"));
        assert_eq!(status_in(&h), Some(tonic::Code::Unavailable));
    }
}
