//! The request path through the service's own `tower::Service` (every
//! route behind the edge, as the listener serves it), with arbitrary paths,
//! metadata and bodies: the edge (deadlines, shadow marking, trace context),
//! tonic's framing and decoding, and each handler's validation. One
//! application is built and made ready once (real engines, port 0); each
//! input is one request.
//!
//! Input: the first byte picks the path (its low bits) and whether the
//! body gets a well-formed gRPC frame around it (bit 7, so the protobuf
//! decoder sees arbitrary messages); then `name:value` metadata lines up to
//! the first NUL; the rest is the body.
//!
//! The property: every request ends, within a bound, with a gRPC status
//! (in the headers or the trailers) and no panic.
#![no_main]

use std::sync::LazyLock;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use libfuzzer_sys::fuzz_target;
use switchyard::configuration::{Overrides, Settings};
use switchyard::startup::{Application, EdgeService};
use switchyard::telemetry::Tracing;
use tower::ServiceExt;

const PATHS: [&str; 8] = [
    "/switchyard.v1.Detector/Detect",
    "/switchyard.v1.Detector/DetectStream",
    "/switchyard.v1.Admin/GetInfo",
    "/switchyard.v1.Admin/EvaluateFlags",
    "/grpc.health.v1.Health/Check",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/switchyard.v1.Detector/Nope",
    "/not-a-service",
];

struct Served {
    runtime: tokio::runtime::Runtime,
    service: EdgeService,
}

static SERVED: LazyLock<Served> = LazyLock::new(|| {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let overrides = Overrides {
        config_file: None,
        values: vec![
            ("server.grpc_addr", "127.0.0.1:0".to_owned()),
            ("server.admin_addr", "127.0.0.1:0".to_owned()),
            ("log.level", "off".to_owned()),
        ],
    };
    let settings = Settings::load(&Default::default(), &overrides).expect("settings");
    let service = runtime.block_on(async {
        let app = Application::build(settings, Tracing::default())
            .await
            .expect("build");
        let service = app.grpc_service();
        let health = app.health();
        tokio::spawn(app.run_until_stopped(futures::stream::pending()));
        while !health.is_ready() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        service
    });
    Served { runtime, service }
});

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let path = PATHS[usize::from(first) % PATHS.len()];
    let (meta, body) = match rest.iter().position(|b| *b == 0) {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &[][..]),
    };
    let mut request = http::Request::builder()
        .method(http::Method::POST)
        .uri(format!("http://switchyard{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for line in meta.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(&line[..colon]),
            http::HeaderValue::from_bytes(&line[colon + 1..]),
        ) else {
            continue;
        };
        request = request.header(name, value);
    }
    let body = if first & 0x80 != 0 {
        let mut framed = vec![0u8];
        framed.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes());
        framed.extend_from_slice(body);
        framed
    } else {
        body.to_vec()
    };
    let Ok(request) = request.body(tonic::body::Body::new(Full::new(Bytes::from(body)))) else {
        return;
    };
    let served = &*SERVED;
    let service = served.service.clone();
    served.runtime.block_on(async move {
        let answer = tokio::time::timeout(Duration::from_secs(10), async move {
            let response = service.oneshot(request).await.expect("the service answers");
            let status_in_headers = response.headers().contains_key("grpc-status");
            let collected = response.into_body().collect().await;
            let status_in_trailers = collected
                .ok()
                .and_then(|c| c.trailers().map(|t| t.contains_key("grpc-status")))
                .unwrap_or(false);
            assert!(
                status_in_headers || status_in_trailers,
                "a gRPC call ended without a status"
            );
        })
        .await;
        assert!(answer.is_ok(), "a request took over 10 s");
    });
});
