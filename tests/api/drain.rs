//! The graceful drain, step by step, through the library API (signals are a
//! channel here; `binary.rs` sends real ones).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use switchyard::exit::Exit;
use switchyard::grpc::pb;
use switchyard::shutdown::DrainOutcome;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::helpers::{SLOW_ENGINE, SlowLoader, TestApp, settings};

fn serving(
    reply: Option<Result<tonic_health::pb::HealthCheckResponse, tonic::Status>>,
) -> ServingStatus {
    ServingStatus::try_from(reply.expect("open").expect("status").status).expect("known")
}

/// An app whose Detect takes `engine` (the slow engine answers), with the
/// drain's delay and timeout (seconds).
async fn slow_app(delay: &str, timeout: &str, engine: Duration) -> TestApp {
    TestApp::spawn_with(
        settings(&[
            ("drain.delay", delay),
            ("drain.timeout", timeout),
            SLOW_ENGINE,
        ]),
        Arc::new(SlowLoader(engine)),
    )
    .await
    .ready()
    .await
}

/// A DetectStream: the requests' sender and the replies.
async fn open_stream(
    app: &TestApp,
) -> (
    tokio::sync::mpsc::Sender<pb::DetectRequest>,
    tonic::Streaming<pb::DetectResponse>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::DetectRequest>(8);
    let replies = app
        .detector()
        .await
        .detect_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("stream opens")
        .into_inner();
    (tx, replies)
}

#[tokio::test]
async fn the_five_steps_in_order() {
    let app = TestApp::spawn_configured(&[("drain.delay", "1")]).await;
    let mut watch = app.watch("readiness").await;
    assert_eq!(serving(watch.next().await), ServingStatus::Serving);
    let mut stream_tx_rx = open_stream(&app).await;
    let ask = |text: &str| pb::DetectRequest { text: text.into() };
    stream_tx_rx
        .0
        .send(ask("Good morning, how are you today?"))
        .await
        .expect("send");
    assert_eq!(
        stream_tx_rx
            .1
            .next()
            .await
            .expect("reply")
            .expect("ok")
            .language,
        "en"
    );

    // Steps 1-2: readiness goes NOT_SERVING at once; Watch sees it.
    let signalled = Instant::now();
    app.signal().await;
    let next = tokio::time::timeout(Duration::from_millis(500), watch.next())
        .await
        .expect("prompt");
    assert_eq!(serving(next), ServingStatus::NotServing);
    assert_eq!(
        app.check("").await.expect("check"),
        ServingStatus::NotServing
    );
    assert_eq!(
        app.check("switchyard.v1.Detector").await.expect("check"),
        ServingStatus::NotServing
    );
    assert_eq!(
        app.check("liveness").await.expect("check"),
        ServingStatus::Serving
    );

    // Step 3: still serving normally, new connections included, streams too.
    app.detect("Guten Morgen, wie geht es dir heute?", "alice")
        .await
        .expect("served during delay");
    stream_tx_rx
        .0
        .send(ask("Buenos días, ¿cómo estás hoy?"))
        .await
        .expect("send");
    assert_eq!(
        stream_tx_rx
            .1
            .next()
            .await
            .expect("reply")
            .expect("ok")
            .language,
        "es"
    );

    // Step 4: streams end with UNAVAILABLE, the watch too, after the delay.
    let end = tokio::time::timeout(Duration::from_secs(3), stream_tx_rx.1.next())
        .await
        .expect("stream ends")
        .expect("an item")
        .expect_err("a status");
    assert_eq!(
        (end.code(), end.message()),
        (Code::Unavailable, "server is draining")
    );
    assert!(
        signalled.elapsed() >= Duration::from_millis(950),
        "not before the drain delay"
    );
    let end = watch.next().await.expect("an item").expect_err("a status");
    assert_eq!(end.code(), Code::Unavailable);
    // A new connection is refused once the listener is closed.
    let addr = app.grpc_addr;
    let mut refused = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "connect after step 4 must be refused");

    // Step 5: nothing in flight, so the drain completes at once.
    assert_eq!(app.outcome().await, DrainOutcome::Drained);
    assert!(signalled.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn an_in_flight_unary_call_completes_during_the_drain() {
    let app = slow_app("0.1", "5", Duration::from_millis(1500)).await;
    let mut client = app.detector().await;
    let call = tokio::spawn(async move {
        client
            .detect(pb::DetectRequest {
                text: "Good morning, how are you today?".into(),
            })
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.signal().await;
    let reply = call
        .await
        .expect("no panic")
        .expect("the in-flight call succeeds");
    assert_eq!(reply.into_inner().language, "en");
    assert_eq!(app.outcome().await, DrainOutcome::Drained);
}

#[tokio::test]
async fn a_stream_reply_computed_when_streams_end_is_sent_before_unavailable() {
    // The drain ends streams (step 4) while this stream's detection runs:
    // the reply still goes out, then the stream ends with UNAVAILABLE,
    // never with OK (which a client reads as "the server is done").
    let app = slow_app("0.1", "5", Duration::from_millis(1000)).await;
    let (tx, mut replies) = open_stream(&app).await;
    tx.send(pb::DetectRequest {
        text: "Good morning, how are you today?".into(),
    })
    .await
    .expect("send");
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.signal().await;
    let first = tokio::time::timeout(Duration::from_secs(3), replies.next())
        .await
        .expect("prompt")
        .expect("an item, not the end of the stream")
        .expect("the reply computed during the drain");
    assert_eq!(first.language, "en");
    let end = tokio::time::timeout(Duration::from_secs(3), replies.next())
        .await
        .expect("prompt")
        .expect("a status, not the end of the stream")
        .expect_err("a status");
    assert_eq!(
        (end.code(), end.message()),
        (Code::Unavailable, "server is draining")
    );
    drop(tx);
    assert_eq!(app.outcome().await, DrainOutcome::Drained);
}

#[tokio::test]
async fn the_drain_timeout_bounds_a_call_that_will_not_finish() {
    let app = slow_app("0", "0.5", Duration::from_secs(3)).await;
    let mut client = app.detector().await;
    let _call = tokio::spawn(async move {
        client
            .detect(pb::DetectRequest {
                text: "Good morning".into(),
            })
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let signalled = Instant::now();
    app.signal().await;
    let outcome = app.outcome().await;
    assert_eq!(outcome, DrainOutcome::DeadlineExceeded);
    assert_eq!(outcome.exit_code(), Exit::Failed);
    let took = signalled.elapsed();
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(2),
        "{took:?}"
    );
}

#[tokio::test]
async fn a_second_signal_ends_the_drain_at_once() {
    let app = TestApp::spawn_configured(&[("drain.delay", "30")]).await;
    app.signal().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let signalled = Instant::now();
    app.signal().await;
    let outcome = app.outcome().await;
    assert_eq!(outcome, DrainOutcome::Forced);
    assert_eq!(outcome.exit_code(), Exit::Interrupted);
    assert!(signalled.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn readiness_never_returns_once_draining_even_if_loading_finishes_late() {
    let (loader, gate) = crate::helpers::GatedLoader::new();
    let app = TestApp::spawn_with(settings(&[("drain.delay", "30")]), loader).await;
    app.signal().await;
    gate.send(()).expect("gate");
    // Until loading and warm-up are over (GetInfo lists warmed engines),
    // so the check below follows them.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info = app.info().await;
        if !info.engines.is_empty() && info.engines.iter().all(|e| e.warm_up_seconds > 0.0) {
            break;
        }
        assert!(Instant::now() < deadline, "engines never warmed: {info:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Readiness would be set right after the engines are installed: it
    // stays NOT_SERVING however long we look.
    for _ in 0..10 {
        assert_eq!(
            app.check("readiness").await.expect("check"),
            ServingStatus::NotServing
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}
