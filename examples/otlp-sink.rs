//! The collector for `scripts/bench export`: an OTLP/gRPC TraceService
//! (`opentelemetry.proto.collector.trace.v1.TraceService/Export`), and
//! OTLP/HTTP with protobuf (`POST /v1/traces`, HTTP/1.1 or h2c) on the same
//! port, that only counts the spans it receives, so the benchmark measures
//! Switchyard's export cost and not a collector's. It walks the request's wire format
//! down to the spans and skips each one whole: nothing is materialised. One
//! runtime thread, to take as little of the machine as it can.
//!
//! Run: `cargo run --release --example otlp-sink -- 127.0.0.1:PORT`
//! (port 0 picks one; the bound address is printed on stdout). On SIGTERM or
//! Ctrl-C it prints `spans N exports M` and exits.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::{Buf, BufMut};
use prost::encoding::{DecodeContext, WireType, message, skip_field};
use tonic::body::Body;
use tonic::server::{Grpc, NamedService, UnaryService};

/// A message reduced to one number: how many spans it holds. Its field
/// `$field` is either a message of type `$inner` (its count is added) or,
/// without `$inner`, a span (skipped whole, counted once).
macro_rules! counter {
    ($name:ident, $field:literal, $inner:ty) => {
        counter!(@message $name, $field, |wire_type, buf, ctx| {
            let mut inner = <$inner>::default();
            message::merge(wire_type, &mut inner, buf, ctx)?;
            inner.0
        });
    };
    ($name:ident, $field:literal) => {
        counter!(@message $name, $field, |wire_type, buf, ctx| {
            skip_field(wire_type, $field, buf, ctx)?;
            1
        });
    };
    (@message $name:ident, $field:literal, |$wire_type:ident, $buf:ident, $ctx:ident| $count:block) => {
        #[derive(Debug, Default)]
        struct $name(u64);

        impl prost::Message for $name {
            fn encode_raw(&self, _: &mut impl BufMut) {}

            fn merge_field(
                &mut self,
                tag: u32,
                $wire_type: WireType,
                $buf: &mut impl Buf,
                $ctx: DecodeContext,
            ) -> Result<(), prost::DecodeError> {
                if tag != $field {
                    return skip_field($wire_type, tag, $buf, $ctx);
                }
                self.0 += $count;
                Ok(())
            }

            fn encoded_len(&self) -> usize {
                0
            }

            fn clear(&mut self) {
                self.0 = 0;
            }
        }
    };
}

// ExportTraceServiceRequest.resource_spans (1) -> ResourceSpans.scope_spans
// (2) -> ScopeSpans.spans (2).
counter!(ScopeSpans, 2);
counter!(ResourceSpans, 2, ScopeSpans);
counter!(ExportRequest, 1, ResourceSpans);

/// `ExportTraceServiceResponse` with no partial success: an empty message.
#[derive(Clone, PartialEq, prost::Message)]
struct ExportResponse {}

#[derive(Default)]
struct Counts {
    spans: AtomicU64,
    exports: AtomicU64,
}

#[derive(Clone, Default)]
struct Sink(Arc<Counts>);

impl UnaryService<ExportRequest> for Sink {
    type Response = ExportResponse;
    type Future = std::future::Ready<Result<tonic::Response<ExportResponse>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<ExportRequest>) -> Self::Future {
        self.0
            .spans
            .fetch_add(request.get_ref().0, Ordering::Relaxed);
        self.0.exports.fetch_add(1, Ordering::Relaxed);
        std::future::ready(Ok(tonic::Response::new(ExportResponse {})))
    }
}

impl NamedService for Sink {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

impl tower::Service<http::Request<Body>> for Sink {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>,
    >;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let sink = self.clone();
        Box::pin(async move {
            if request.uri().path() != "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
            {
                return Ok(tonic::Status::unimplemented("only Export").into_http());
            }
            let codec = tonic_prost::ProstCodec::<ExportResponse, ExportRequest>::default();
            Ok(Grpc::new(codec).unary(sink, request).await)
        })
    }
}

impl Sink {
    /// OTLP/HTTP: the same request, protobuf in the body; an empty
    /// `ExportTraceServiceResponse` (no partial success) in the reply.
    fn export_http(&self, body: &[u8]) -> http::Response<axum::body::Body> {
        use axum::response::IntoResponse;
        match <ExportRequest as prost::Message>::decode(body) {
            Ok(request) => {
                self.0.spans.fetch_add(request.0, Ordering::Relaxed);
                self.0.exports.fetch_add(1, Ordering::Relaxed);
                (
                    [(http::header::CONTENT_TYPE, "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
                    .into_response()
            }
            Err(e) => (http::StatusCode::BAD_REQUEST, e.to_string()).into_response(),
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".to_owned())
        .parse()?;
    let sink = Sink::default();
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening {}", listener.local_addr()?);
    let stop = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    let http_sink = sink.clone();
    let routes = tonic::service::Routes::new(sink.clone())
        .into_axum_router()
        .route(
            "/v1/traces",
            axum::routing::post(move |body: axum::body::Bytes| {
                let response = http_sink.export_http(&body);
                async move { response }
            }),
        );
    // Large HTTP/2 windows: a batch (hundreds of KiB) arrives without
    // waiting for window updates.
    tonic::transport::Server::builder()
        .accept_http1(true)
        .initial_stream_window_size(8 << 20)
        .initial_connection_window_size(8 << 20)
        .add_routes(routes.into())
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            stop,
        )
        .await?;
    println!(
        "spans {} exports {}",
        sink.0.spans.load(Ordering::Relaxed),
        sink.0.exports.load(Ordering::Relaxed)
    );
    Ok(())
}
