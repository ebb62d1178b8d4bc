//! The standard health protocol with readiness and liveness semantics.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use switchyard::engine::{Cost, RealEngines};
use switchyard::startup::Application;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::helpers::{
    BusyLinguaLoader, GatedLoader, TestApp, check_at, detector_at, eventually, http_get, settings,
};

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
    let (health, probe) = (app.health(), app.probe_addr());
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
    // The kubelet hears it: the probe listener (not on the wedged runtime)
    // answers NOT_SERVING, where the gRPC listener cannot answer at all.
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    assert_eq!(
        client
            .block_on(check_at(probe, "liveness"))
            .expect("the probe listener answers while the runtime is wedged"),
        ServingStatus::NotServing
    );
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

/// The kubelet's listener (`--probe-addr`) serves the standard Health
/// service alone, with the gRPC listener's statuses at every stage: before
/// warm-up, ready, and draining.
#[tokio::test]
async fn the_probe_listener_serves_health_alone_with_the_same_statuses() {
    use ServingStatus::{NotServing, Serving};
    let (loader, gate) = GatedLoader::new();
    let app = TestApp::spawn_with(settings(&[("drain.delay", "2")]), loader).await;
    same_on_both(&app, [NotServing, NotServing, Serving]).await;
    gate.send(()).expect("gate");
    let app = app.ready().await;
    same_on_both(&app, [Serving, Serving, Serving]).await;
    assert_eq!(
        app.probe("no.such.Service")
            .await
            .expect_err("unknown")
            .code(),
        Code::NotFound
    );
    // Health alone: Detect is not served there (and is on the gRPC listener).
    let request = || switchyard::grpc::pb::DetectRequest {
        text: "Zero downtime deployments with Kubernetes".into(),
    };
    let refused = detector_at(app.probe_addr, "switchyard")
        .await
        .detect(request())
        .await
        .expect_err("no Detector on the probe listener");
    assert_eq!(refused.code(), Code::Unimplemented);
    detector_at(app.grpc_addr, "switchyard")
        .await
        .detect(request())
        .await
        .expect("the control: Detect on the gRPC listener");

    app.signal().await;
    eventually(Duration::from_secs(1), "not ready", || {
        !app.health.is_ready()
    })
    .await;
    same_on_both(&app, [NotServing, NotServing, Serving]).await;
}

/// Health/Check of "", readiness and liveness answers `want` on both the
/// probe listener and the gRPC listener.
async fn same_on_both(app: &TestApp, want: [ServingStatus; 3]) {
    for (service, want) in ["", "readiness", "liveness"].into_iter().zip(want) {
        let probed = app.probe(service).await.expect("probe listener");
        let checked = app.check(service).await.expect("gRPC listener");
        assert_eq!((probed, checked), (want, want), "service {service:?}");
    }
}

/// The point of the probe listener: with every data-plane worker running
/// Detect (at the default priority, as `main` runs it), a probe answers at
/// once. The control: the same check on the gRPC listener waits for the
/// busy workers, so the harness sees the waiting it rules out.
#[test]
fn the_probe_listener_answers_at_once_while_detect_saturates_the_data_plane() {
    let settings = settings(&[
        ("detector.default_engine", "lingua"),
        ("detector.engine_threads", "2"),
        ("server.max_concurrent_requests", "64"),
    ]);
    // As `main` does: the data-plane runtime, driven from a thread at the
    // default priority (this one), which starts the control thread.
    let runtime =
        switchyard::threads::data_plane_runtime(settings.server.data_plane_nice).expect("runtime");
    let app = runtime.block_on(async {
        Application::build_with_loader(
            settings,
            BusyLinguaLoader::new(Duration::from_millis(20), Cost::Bounded),
            switchyard::telemetry::Tracing::default(),
        )
        .await
        .expect("builds")
    });
    let (grpc, probe, health) = (app.grpc_addr(), app.probe_addr(), app.health());
    let (stop_tx, stop_rx) = tokio::sync::mpsc::channel(1);
    let server = std::thread::spawn(move || {
        runtime
            .block_on(app.run_until_stopped(tokio_stream::wrappers::ReceiverStream::new(stop_rx)))
    });
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    let (probed, checked) = client.block_on(async {
        eventually(Duration::from_secs(30), "ready", || health.is_ready()).await;
        // 16 callers, each calling Detect again as soon as it is answered:
        // both data-plane workers run 20 ms detections back to back.
        let stop = tokio_util::sync::CancellationToken::new();
        let mut callers = Vec::new();
        for _ in 0..16 {
            let mut detector = detector_at(grpc, "switchyard").await;
            let stop = stop.clone();
            callers.push(tokio::spawn(async move {
                let mut served = 0u32;
                while !stop.is_cancelled() {
                    detector
                        .detect(switchyard::grpc::pb::DetectRequest {
                            text: "Zero downtime deployments with Kubernetes".into(),
                        })
                        .await
                        .expect("served");
                    served += 1;
                }
                served
            }));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let timed = |addr| async move {
            let started = std::time::Instant::now();
            let status = tokio::time::timeout(Duration::from_secs(5), check_at(addr, "readiness"))
                .await
                .expect("answers within 5 s")
                .expect("check");
            assert_eq!(status, ServingStatus::Serving);
            started.elapsed()
        };
        let (mut probed, mut checked) = (Vec::new(), Vec::new());
        for _ in 0..9 {
            probed.push(timed(probe).await);
            checked.push(timed(grpc).await);
        }
        stop.cancel();
        for caller in callers {
            assert!(
                caller.await.expect("no panic") > 0,
                "every caller was served"
            );
        }
        probed.sort();
        checked.sort();
        (probed, checked)
    });
    stop_tx
        .blocking_send(switchyard::shutdown::StopSignal::Terminate)
        .expect("signal");
    server.join().expect("no panic").expect("drains");
    let (probe_median, grpc_median) = (probed[4], checked[4]);
    eprintln!("Health/Check under saturation: probe {probed:?}, gRPC {checked:?}");
    assert!(
        probe_median * 5 < grpc_median,
        "probe listener median {probe_median:?} is not well under the gRPC listener's \
         {grpc_median:?} (probe {probed:?}, gRPC {checked:?})"
    );
    assert!(
        probed[8] < Duration::from_millis(500),
        "every probe answered at once: {probed:?}"
    );
}
