//! `GET /metrics` on the admin listener: go-grpc-prometheus's RED metrics
//! for every service, shadow traffic apart, and Switchyard's own. The text
//! is parsed by an independent parser (PyPI `prometheus-client`, installed
//! by `scripts/test`), and the counts must match the calls made.

use std::collections::BTreeMap;

use switchyard::grpc::pb;
use switchyard::grpc::pb::detector_client::DetectorClient;
use tonic::transport::Channel;

use crate::helpers::TestApp;
use crate::kube::python;

/// One sample: metric name, labels, value.
#[derive(Debug, Clone, serde::Deserialize)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses Prometheus text with prometheus_client's own parser.
fn parse(text: &str) -> Vec<Sample> {
    const SCRIPT: &str = "
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out.append({'name': s.name, 'labels': s.labels, 'value': s.value})
print(json.dumps(out))
";
    let stdout = python(
        SCRIPT,
        &[],
        text,
        &format!("the Prometheus parser rejected /metrics (text below)\n--- text ---\n{text}"),
    );
    serde_json::from_slice(&stdout).expect("parser output")
}

/// The value of the sample `name` whose labels include all of `labels`; a
/// missing series fails the test (a renamed metric must not read as 0).
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    value_if_any(samples, name, labels)
        .unwrap_or_else(|| panic!("no series {name} {labels:?} in /metrics"))
}

/// The value of the sample `name` whose labels include all of `labels`, if
/// one is exposed (a labelled counter appears at its first increment).
fn value_if_any(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect();
    assert!(
        matching.len() <= 1,
        "{name} {labels:?} is ambiguous: {matching:?}"
    );
    matching.first().map(|s| s.value)
}

async fn scrape(app: &TestApp) -> Vec<Sample> {
    let (code, text) = app.admin_get("/metrics").await;
    assert_eq!(code, 200);
    tokio::task::spawn_blocking(move || parse(&text))
        .await
        .expect("no panic")
}

const DETECT: [(&str, &str); 3] = [
    ("grpc_type", "unary"),
    ("grpc_service", "switchyard.v1.Detector"),
    ("grpc_method", "Detect"),
];

fn with<'a>(base: &[(&'a str, &'a str)], more: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    base.iter().chain(more).copied().collect()
}

#[tokio::test]
async fn red_metrics_count_exactly_the_calls_made() {
    let app = TestApp::spawn().await;
    for i in 0..7 {
        app.detect(
            "Das ist ein ganz gewöhnlicher deutscher Satz",
            &format!("u{i}"),
        )
        .await
        .expect("ok");
    }
    for _ in 0..3 {
        let err = app.detect("   ", "u").await.expect_err("empty text");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
    }
    let samples = scrape(&app).await;
    let real = [("shadow", "false")];
    let ok = with(&DETECT, &[("grpc_code", "OK"), ("shadow", "false")]);
    let invalid = with(
        &DETECT,
        &[("grpc_code", "InvalidArgument"), ("shadow", "false")],
    );
    assert_eq!(value(&samples, "grpc_server_handled_total", &ok), 7.0);
    assert_eq!(value(&samples, "grpc_server_handled_total", &invalid), 3.0);
    assert_eq!(
        value(&samples, "grpc_server_started_total", &with(&DETECT, &real)),
        10.0
    );
    assert_eq!(
        value(
            &samples,
            "grpc_server_msg_received_total",
            &with(&DETECT, &real)
        ),
        10.0
    );
    assert_eq!(
        value(
            &samples,
            "grpc_server_msg_sent_total",
            &with(&DETECT, &real)
        ),
        7.0
    );
    assert_eq!(
        value(
            &samples,
            "grpc_server_handling_seconds_count",
            &with(&DETECT, &real)
        ),
        10.0
    );
    assert_eq!(
        value(
            &samples,
            "grpc_server_handling_seconds_bucket",
            &with(&DETECT, &[("shadow", "false"), ("le", "+Inf")])
        ),
        10.0
    );
    // Switchyard's own.
    assert_eq!(
        value(
            &samples,
            "switchyard_detections_total",
            &[
                ("engine", "lingua"),
                ("language", "de"),
                ("shadow", "false")
            ]
        ),
        7.0
    );
    assert_eq!(
        value(
            &samples,
            "switchyard_engine_seconds_count",
            &[("engine", "lingua")]
        ),
        7.0
    );
    assert_eq!(
        value(
            &samples,
            "switchyard_flag_evaluations_total",
            &[
                ("flag", "detector-engine"),
                ("variant", "lingua"),
                ("reason", "STATIC")
            ]
        ),
        10.0
    );
    assert_eq!(value(&samples, "switchyard_in_flight_requests", &[]), 0.0);
    assert_eq!(value(&samples, "switchyard_draining", &[]), 0.0);
    assert_eq!(
        value(
            &samples,
            "switchyard_health_status",
            &[("service", "readiness")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &samples,
            "switchyard_build_info",
            &[("version", env!("CARGO_PKG_VERSION")), ("track", "stable")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &samples,
            "switchyard_flag_reloads_total",
            &[("result", "ok")]
        ),
        0.0
    );
    assert!(
        samples
            .iter()
            .any(|s| s.name == "switchyard_flags_revision")
    );
    assert_eq!(
        value(
            &samples,
            "switchyard_dark_launch_total",
            &[("outcome", "match")]
        ),
        0.0
    );
}

#[tokio::test]
async fn health_reflection_and_streams_are_counted_with_their_types() {
    let app = TestApp::spawn().await;
    app.check("readiness").await.expect("check");
    // A stream of 5 messages, answered one by one.
    let mut client = app.detector().await;
    let outbound = futures::stream::iter((0..5).map(|_| pb::DetectRequest {
        text: "Questa è una frase italiana abbastanza lunga".into(),
    }));
    let mut replies = client
        .detect_stream(outbound)
        .await
        .expect("stream")
        .into_inner();
    let mut n = 0;
    while let Some(reply) = replies.message().await.expect("reply") {
        assert_eq!(reply.language, "it");
        n += 1;
    }
    assert_eq!(n, 5);

    let samples = scrape(&app).await;
    let health = [
        ("grpc_type", "unary"),
        ("grpc_service", "grpc.health.v1.Health"),
        ("grpc_method", "Check"),
    ];
    assert_eq!(
        value(
            &samples,
            "grpc_server_handled_total",
            &with(&health, &[("grpc_code", "OK"), ("shadow", "false")])
        ),
        1.0
    );
    let stream = [
        ("grpc_type", "bidi_stream"),
        ("grpc_service", "switchyard.v1.Detector"),
        ("grpc_method", "DetectStream"),
        ("shadow", "false"),
    ];
    assert_eq!(
        value(&samples, "grpc_server_msg_received_total", &stream),
        5.0
    );
    assert_eq!(value(&samples, "grpc_server_msg_sent_total", &stream), 5.0);
    assert_eq!(
        value(
            &samples,
            "grpc_server_handled_total",
            &with(&stream, &[("grpc_code", "OK")])
        ),
        1.0
    );
}

#[tokio::test]
async fn unknown_methods_share_one_label_and_shadow_traffic_is_apart() {
    let app = TestApp::spawn().await;
    // Mirrored copies: authority ending in -shadow.
    let channel = Channel::from_shared(app.endpoint())
        .expect("uri")
        .origin("http://switchyard-shadow:50051".parse().expect("origin"))
        .connect()
        .await
        .expect("connects");
    let mut mirrored = DetectorClient::new(channel.clone());
    for _ in 0..4 {
        mirrored
            .detect(pb::DetectRequest {
                text: "Esta es una frase en español bastante larga".into(),
            })
            .await
            .expect("ok");
    }
    app.detect("This is a sentence in plain English", "u")
        .await
        .expect("ok");
    // A method nobody serves, twice, under two names.
    for path in ["/no.Such/Method", "/another.Fake/Call"] {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await.expect("ready");
        let status = grpc
            .unary::<pb::DetectRequest, pb::DetectResponse, _>(
                tonic::Request::new(pb::DetectRequest::default()),
                path.parse().expect("path"),
                tonic_prost::ProstCodec::default(),
            )
            .await
            .expect_err("unimplemented");
        assert_eq!(status.code(), tonic::Code::Unimplemented);
    }

    let samples = scrape(&app).await;
    let ok = |shadow| with(&DETECT, &[("grpc_code", "OK"), ("shadow", shadow)]);
    assert_eq!(
        value(&samples, "grpc_server_handled_total", &ok("true")),
        4.0
    );
    assert_eq!(
        value(&samples, "grpc_server_handled_total", &ok("false")),
        1.0
    );
    assert_eq!(
        value(
            &samples,
            "switchyard_detections_total",
            &[("language", "es"), ("shadow", "true")]
        ),
        4.0
    );
    assert_eq!(
        value(
            &samples,
            "grpc_server_handled_total",
            &[
                ("grpc_service", "unknown"),
                ("grpc_method", "unknown"),
                ("grpc_code", "Unimplemented")
            ]
        ),
        2.0
    );
}

#[tokio::test]
async fn und_answers_are_counted_per_engine() {
    let app = TestApp::spawn().await;
    for _ in 0..2 {
        let reply = app.detect("12345 67890 !!! ???", "u").await.expect("ok");
        assert_eq!(reply.language, "und");
    }
    app.detect("Das ist ein ganz gewöhnlicher deutscher Satz", "u")
        .await
        .expect("ok");
    let samples = scrape(&app).await;
    let detections = |language| {
        value(
            &samples,
            "switchyard_detections_total",
            &[
                ("engine", "lingua"),
                ("language", language),
                ("shadow", "false"),
            ],
        )
    };
    assert_eq!(detections("und"), 2.0);
    assert_eq!(detections("de"), 1.0);
}

/// Every USE series (engines, runtime, process) is on `/metrics`, parsed
/// by the independent parser, with values that fit what was done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn use_metrics_cover_engines_runtime_and_process() {
    let app = TestApp::spawn_configured(&[("detector.default_engine", "whatlang")]).await;
    app.detect("Good morning, how are you today?", "u1")
        .await
        .expect("whatlang inline");
    app.detect(&"Guten Morgen, wie geht es dir? ".repeat(40), "u2")
        .await
        .expect("whatlang on the pool");
    let samples = scrape(&app).await;
    let has = |name: &str, labels: &[(&str, &str)]| {
        samples.iter().any(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    };
    for engine in ["whatlang", "lingua"] {
        for executor in ["inline", "pool"] {
            let labels = [("engine", engine), ("executor", executor)];
            assert!(
                has("switchyard_engine_busy_seconds_total", &labels),
                "{labels:?}"
            );
            assert!(has("switchyard_engine_calls_total", &labels), "{labels:?}");
        }
        for error in ["abandoned", "failed"] {
            let labels = [("engine", engine), ("error", error)];
            assert!(has("switchyard_engine_errors_total", &labels), "{labels:?}");
            assert_eq!(
                value(&samples, "switchyard_engine_errors_total", &labels),
                0.0
            );
        }
    }
    let calls = |executor| {
        value(
            &samples,
            "switchyard_engine_calls_total",
            &[("engine", "whatlang"), ("executor", executor)],
        )
    };
    assert_eq!((calls("inline"), calls("pool")), (1.0, 1.0));
    assert!(
        value(
            &samples,
            "switchyard_engine_busy_seconds_total",
            &[("engine", "whatlang"), ("executor", "pool")]
        ) > 0.0
    );
    let threads = std::thread::available_parallelism().map_or(1, usize::from) as f64;
    assert_eq!(value(&samples, "switchyard_engine_threads", &[]), threads);
    assert_eq!(value(&samples, "switchyard_engine_slots", &[]), 256.0);
    assert_eq!(value(&samples, "switchyard_engine_slots_in_use", &[]), 0.0);
    assert_eq!(value(&samples, "switchyard_engine_queue_depth", &[]), 0.0);
    assert_eq!(value(&samples, "switchyard_engine_waiting_calls", &[]), 0.0);
    assert_eq!(value(&samples, "switchyard_runtime_workers", &[]), 2.0);
    assert!(value(&samples, "switchyard_runtime_busy_seconds_total", &[]) > 0.0);
    assert!(value(&samples, "switchyard_runtime_alive_tasks", &[]) >= 1.0);
    assert!(has("switchyard_runtime_global_queue_depth", &[]));

    // The process, read from /proc: compare with what this process is.
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let field = |name: &str| -> f64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("field")
    };
    let rss = value(&samples, "process_resident_memory_bytes", &[]);
    assert!(
        rss > 1e6 && rss < 4.0 * field("VmHWM:") * 1024.0,
        "rss {rss}"
    );
    assert!(value(&samples, "process_virtual_memory_bytes", &[]) >= rss);
    assert!(value(&samples, "process_cpu_seconds_total", &[]) > 0.0);
    let open = value(&samples, "process_open_fds", &[]);
    assert!(open >= 3.0, "open fds {open}");
    assert!(value(&samples, "process_max_fds", &[]) >= open);
    assert!(value(&samples, "process_threads", &[]) >= 2.0);
    let start = value(&samples, "process_start_time_seconds", &[]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    assert!(
        start <= now + 1.0 && start > now - 3600.0,
        "start {start}, now {now}"
    );
}
