//! The standard health protocol with readiness and liveness semantics.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use switchyard::engine::RealEngines;
use switchyard::startup::Application;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::helpers::{GatedLoader, TestApp, eventually, http_get, settings};

fn status(
    reply: Option<Result<tonic_health::pb::HealthCheckResponse, tonic::Status>>,
) -> ServingStatus {
    let reply = reply.expect("stream open").expect("a status, not an error");
    ServingStatus::try_from(reply.status).expect("known status")
}

#[tokio::test]
async fn watch_sees_not_serving_until_engines_load_then_serving() {
    let (loader, gate) = GatedLoader::new();
    let app = TestApp::spawn_with(settings(&[]), loader).await;
    let mut client = app.health_client().await;
    let mut watches = Vec::new();
    for service in ["", "readiness", "switchyard.v1.Detector"] {
        let stream = client
            .watch(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("watch opens")
            .into_inner();
        watches.push((service, stream));
    }
    for (service, stream) in &mut watches {
        assert_eq!(
            status(stream.next().await),
            ServingStatus::NotServing,
            "{service:?} before load"
        );
    }
    // Liveness is SERVING while loading: the process is responsive.
    assert_eq!(
        app.check("liveness").await.expect("check"),
        ServingStatus::Serving
    );
    // Detect is refused until ready.
    let early = app
        .detect("Good morning to you all", "alice")
        .await
        .expect_err("not ready yet");
    assert_eq!(early.code(), Code::Unavailable);
    let (code, body) = app.admin_get("/readyz").await;
    assert_eq!((code, body.trim()), (503, "not ready: loading"));
    let (code, _) = app.admin_get("/healthz").await;
    assert_eq!(code, 200);

    gate.send(()).expect("loader waits on the gate");
    for (service, stream) in &mut watches {
        let next = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("transition within 10 s");
        assert_eq!(
            status(next),
            ServingStatus::Serving,
            "{service:?} after load"
        );
    }
    assert_eq!(app.admin_get("/readyz").await.0, 200);
    app.detect("Good morning to you all", "alice")
        .await
        .expect("ready now");
}

#[tokio::test]
async fn check_of_an_unknown_service_is_not_found() {
    let app = TestApp::spawn().await;
    let err = app
        .check("no.such.Service")
        .await
        .expect_err("unknown service");
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn watch_of_an_unknown_service_says_service_unknown_and_stays_open_until_drain() {
    let app = TestApp::spawn().await;
    let mut stream = app
        .health_client()
        .await
        .watch(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .expect("watch opens")
        .into_inner();
    assert_eq!(status(stream.next().await), ServingStatus::ServiceUnknown);
    let quiet = tokio::time::timeout(Duration::from_millis(300), stream.next()).await;
    assert!(quiet.is_err(), "the stream stays open and quiet: {quiet:?}");

    app.signal().await;
    let end = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("ends at drain")
        .expect("an item")
        .expect_err("ends with a status");
    assert_eq!(end.code(), Code::Unavailable);
    assert_eq!(end.message(), "server is draining");
    assert!(stream.next().await.is_none());
}

#[tokio::test]
async fn ready_file_exists_while_ready_and_goes_when_the_drain_begins() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ready");
    let path_str = path.to_str().expect("utf-8 path").to_owned();
    let (loader, gate) = GatedLoader::new();
    let app = TestApp::spawn_with(
        settings(&[("health.ready_file", &path_str), ("drain.delay", "2")]),
        loader,
    )
    .await;
    assert!(!path.exists(), "no ready file before the engines load");
    gate.send(()).expect("gate");
    let app = app.ready().await;
    assert!(path.exists(), "ready file once ready");
    app.signal().await;
    eventually(Duration::from_secs(1), "ready file removed", || {
        !path.exists()
    })
    .await;
    // Still serving during the drain delay, but not ready.
    assert_eq!(
        app.check("readiness").await.expect("check"),
        ServingStatus::NotServing
    );
    assert_eq!(
        app.admin_get("/readyz").await,
        (503, "not ready: draining\n".into())
    );
    assert_eq!(
        app.admin_get("/healthz").await.0,
        200,
        "liveness stays up while draining"
    );
}

/// A runtime that stops turning (a blocking call on a current-thread
/// runtime) turns liveness NOT_SERVING; it recovers when the runtime does.
#[test]
fn liveness_fails_when_the_runtime_stalls_and_recovers_after() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let app = runtime.block_on(async {
        Application::build_with_loader(
            settings(&[("health.liveness_stall_threshold", "0.3")]),
            Arc::new(RealEngines),
            switchyard::telemetry::Tracing::default(),
        )
        .await
        .expect("builds")
    });
    let health = app.health();
    let (stop_tx, stop_rx) = tokio::sync::mpsc::channel(1);
    let server = std::thread::spawn(move || {
        runtime.block_on(async move {
            let run = tokio::spawn(
                app.run_until_stopped(tokio_stream::wrappers::ReceiverStream::new(stop_rx)),
            );
            // Let it come up, then wedge the only runtime thread for 1.5 s.
            tokio::time::sleep(Duration::from_millis(500)).await;
            std::thread::sleep(Duration::from_millis(1500));
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(run);
        })
    });
    let watch = |want: bool, within: Duration| {
        let deadline = std::time::Instant::now() + within;
        while health.is_live() != want {
            assert!(
                std::time::Instant::now() < deadline,
                "liveness never became {want}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    assert!(health.is_live(), "live at start");
    watch(false, Duration::from_secs(3));
    watch(true, Duration::from_secs(3));
    drop(stop_tx);
    drop(server);
}

#[tokio::test]
async fn admin_endpoints_answer_plain_http() {
    let app = TestApp::spawn().await;
    assert_eq!(
        http_get(app.admin_addr, "/healthz").await,
        (200, "live\n".into())
    );
    assert_eq!(
        http_get(app.admin_addr, "/readyz").await,
        (200, "ready\n".into())
    );
    assert_eq!(http_get(app.admin_addr, "/nope").await.0, 404);
}
