//! Trace context from request headers: `traceparent`/`tracestate` (W3C) and
//! both B3 forms, through the server span every RPC opens. The input is
//! header values separated by NUL bytes, given in turn to each name below.
#![no_main]

use std::sync::{Arc, LazyLock};

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use switchyard::grpc::catalog::{Method, MethodTable, RpcMetrics};
use switchyard::telemetry::Tracing;

const NAMES: [&str; 7] = [
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-sampled",
    "x-b3-flags",
];

static METHOD: LazyLock<Arc<Method>> = LazyLock::new(|| {
    let metrics = RpcMetrics::register(&mut prometheus_client::registry::Registry::default());
    let table =
        MethodTable::from_descriptor_sets(&[switchyard::grpc::pb::FILE_DESCRIPTOR_SET], &metrics)
            .expect("descriptors");
    Arc::clone(table.get("/switchyard.v1.Detector/Detect"))
});

/// No export, but the request's log span is enabled (a subscriber is
/// installed), so the caller's trace context is read from the headers as
/// in production.
static TRACING: LazyLock<Tracing> = LazyLock::new(|| {
    use tracing_subscriber::util::SubscriberInitExt;
    let _ = tracing_subscriber::registry().try_init();
    Tracing::default()
});

fuzz_target!(|data: &[u8]| {
    let mut headers = HeaderMap::new();
    for (i, value) in data.split(|b| *b == 0).enumerate() {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append(HeaderName::from_static(NAMES[i % NAMES.len()]), value);
        }
    }
    let _ = TRACING.server_span(&METHOD, &headers, false);
});
