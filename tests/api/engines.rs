//! Engine execution: readiness means warm, engine work runs where its cost
//! says (inline, inline on one of the engine turns, or on the pool) and
//! never oversubscribes the cores, threads are bounded, a passed deadline
//! starts no work, and the USE series describe it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use switchyard::engine::{Cost, RealEngines};
use switchyard::grpc::pb;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::helpers::{
    BusyLinguaLoader, GatedWarmUpLoader, TestApp, UnwarmedLinguaLoader, http_get, settings,
};

/// Minor page faults of this process's engine pool threads (`engine-N`),
/// from `/proc/self/task/*/stat`.
fn engine_thread_faults() -> u64 {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let dir = task.expect("task").path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !comm.starts_with("engine-") {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        // Fields after the parenthesised name: state is field 3, minflt 10.
        let after = stat.rsplit_once(") ").map_or("", |(_, rest)| rest);
        total += after
            .split_whitespace()
            .nth(7)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    total
}

/// One lingua Detect; returns the page faults it caused on engine threads.
async fn faults_of_one_call(app: &TestApp, text: &str) -> u64 {
    let before = engine_thread_faults();
    let reply = app.detect(text, "alice").await.expect("detect");
    assert_eq!(reply.engine, "lingua");
    engine_thread_faults() - before
}

/// lingua as the default engine, every call on the engine pool: the models
/// are mapped once per process, so where a call runs does not change what
/// it faults in, and on the pool only the engine's own faults are counted.
fn lingua_settings() -> switchyard::configuration::Settings {
    settings(&[
        ("detector.default_engine", "lingua"),
        ("detector.inline_max_chars", "0"),
    ])
}

#[tokio::test]
async fn readiness_waits_for_the_warm_up() {
    let (loader, warming, gate) = GatedWarmUpLoader::new();
    let app = TestApp::spawn_with(settings(&[]), loader).await;
    let mut watch = app.watch("readiness").await;
    let first = watch.next().await.expect("open").expect("status");
    assert_eq!(first.status, ServingStatus::NotServing as i32);
    // The engines are loaded and a pool thread is warming lingua up.
    tokio::task::spawn_blocking(move || {
        warming
            .recv_timeout(Duration::from_secs(30))
            .expect("warm-up starts")
    })
    .await
    .expect("no panic");
    // Loaded but not warm: still not ready, and Detect is refused.
    let early = app
        .detect("Good morning to you all", "alice")
        .await
        .expect_err("not ready while warming up");
    assert_eq!(early.code(), Code::Unavailable);
    assert!(!app.health.is_ready());
    assert!(
        tokio::time::timeout(Duration::from_millis(200), watch.next())
            .await
            .is_err(),
        "readiness changed while the warm-up was still running"
    );

    gate.open();
    let next = tokio::time::timeout(Duration::from_secs(30), watch.next())
        .await
        .expect("SERVING once warm")
        .expect("open")
        .expect("status");
    assert_eq!(next.status, ServingStatus::Serving as i32);
    let info = app.info().await;
    assert_eq!(info.engines.len(), 2);
    for engine in &info.engines {
        assert!(
            engine.warm_up_seconds > 0.0,
            "{} reports its warm-up time: {engine:?}",
            engine.name
        );
    }
    let lingua = info
        .engines
        .iter()
        .find(|e| e.name == "lingua")
        .expect("lingua");
    assert!(
        lingua.warm_up_seconds >= 0.2,
        "waited on the gate: {lingua:?}"
    );
}

/// The first lingua call after readiness maps in no model data: its engine
/// thread takes (almost) no page faults, where a replica that skipped the
/// warm-up takes hundreds on its first call. Relies on each test running in
/// its own process (nextest, as `scripts/test` runs them), since the
/// models are mapped once per process.
#[tokio::test]
async fn the_first_call_after_readiness_loads_nothing() {
    // Control first, in this fresh process: a replica without warm-up.
    let cold = TestApp::spawn_with(lingua_settings(), Arc::new(UnwarmedLinguaLoader))
        .await
        .ready()
        .await;
    let cold_faults = faults_of_one_call(
        &cold,
        "Zítra ráno pojedeme vlakem do hor a vrátíme se až v neděli večer.",
    )
    .await;
    cold.signal().await;
    cold.outcome().await;
    assert!(
        cold_faults >= 100,
        "control: a cold lingua call should fault its models in, saw {cold_faults} faults"
    );

    let warm = TestApp::spawn_with(lingua_settings(), Arc::new(RealEngines))
        .await
        .ready()
        .await;
    // A language and text the control did not touch, not in the warm-up set.
    let warm_faults = faults_of_one_call(
        &warm,
        "Mi hermana trabaja en un hospital y los domingos cocina para toda la familia.",
    )
    .await;
    assert!(
        warm_faults * 10 <= cold_faults,
        "the first call after readiness faulted {warm_faults} pages (cold: {cold_faults})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saturated_detect_health_still_answers() {
    let app = TestApp::spawn_with(
        settings(&[
            ("detector.default_engine", "lingua"),
            ("server.max_concurrent_requests", "16"),
            ("detector.engine_threads", "2"),
        ]),
        BusyLinguaLoader::new(Duration::from_millis(150), Cost::Unknown),
    )
    .await
    .ready()
    .await;
    let threads_before = process_threads();
    let channel = app.channel().await;
    // 16 calls fill every slot; each keeps an engine thread spinning for
    // 150 ms, so the two threads are busy for ~1.2 s.
    let calls = spawn_calls(&channel, 16);
    // Wait until every slot is taken and the queue holds the rest.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, text) = http_get(app.admin_addr, "/metrics").await;
        if sample(&text, "switchyard_engine_slots_in_use") == 16.0 {
            assert!(
                sample(&text, "switchyard_engine_queue_depth") >= 1.0,
                "16 calls on 2 threads queue: {text}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "slots never filled: {text}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Health and admin answer while both engine threads spin.
    for _ in 0..3 {
        let started = Instant::now();
        let status = tokio::time::timeout(Duration::from_secs(1), app.check(""))
            .await
            .expect("Health/Check answers within 1 s while Detect saturates")
            .expect("check");
        assert_eq!(status, ServingStatus::Serving);
        let (code, _) = tokio::time::timeout(Duration::from_secs(1), app.admin_get("/readyz"))
            .await
            .expect("/readyz answers within 1 s");
        assert_eq!(code, 200);
        assert!(started.elapsed() < Duration::from_secs(1));
    }
    // Above the limit: shed at once, not queued.
    let shed = app
        .detect("One more please", "bob")
        .await
        .expect_err("no slot left");
    assert_eq!(shed.code(), Code::ResourceExhausted);
    // No thread per call: the pool is fixed.
    let during = process_threads();
    assert!(
        during <= threads_before + 2,
        "threads grew from {threads_before} to {during} under load"
    );
    for call in calls {
        call.await.expect("no panic").expect("served");
    }
}

/// A call whose deadline passes while it waits for an engine thread never
/// runs: the thread drops it and counts it abandoned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_whose_deadline_passed_in_the_queue_never_runs() {
    deadline_passes_while_waiting(Cost::Unknown, "pool").await;
}

/// The same for a call waiting for an engine turn to run inline: it leaves
/// the wait at its deadline, counted abandoned, and never runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_whose_deadline_passed_waiting_for_a_turn_never_runs() {
    deadline_passes_while_waiting(Cost::Bounded, "inline").await;
}

/// One engine thread (so one turn), one call holding it for 600 ms, and a
/// second call with a 100 ms deadline behind it.
async fn deadline_passes_while_waiting(cost: Cost, executor: &str) {
    let app = TestApp::spawn_with(
        settings(&[
            ("detector.default_engine", "lingua"),
            ("detector.engine_threads", "1"),
        ]),
        BusyLinguaLoader::new(Duration::from_millis(600), cost),
    )
    .await
    .ready()
    .await;
    let channel = app.channel().await;
    let mut first = pb::detector_client::DetectorClient::new(channel.clone());
    let holding = tokio::spawn(async move {
        first
            .detect(pb::DetectRequest {
                text: "This one holds the only engine thread".into(),
            })
            .await
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while sample(
        &app.admin_get("/metrics").await.1,
        "switchyard_engine_slots_in_use",
    ) < 1.0
    {
        assert!(Instant::now() < deadline, "first call never admitted");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut late = tonic::Request::new(pb::DetectRequest {
        text: "This one waits and gives up".into(),
    });
    late.set_timeout(Duration::from_millis(100));
    let err = pb::detector_client::DetectorClient::new(channel)
        .detect(late)
        .await
        .expect_err("deadline passes in the queue");
    assert!(
        matches!(err.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{err:?}"
    );
    holding.await.expect("no panic").expect("first call served");
    // The abandoned call is counted (on the pool: when the thread frees up).
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let (_, text) = app.admin_get("/metrics").await;
        if sample(
            &text,
            r#"switchyard_engine_errors_total{engine="lingua",error="abandoned"}"#,
        ) >= 1.0
        {
            break text;
        }
        assert!(Instant::now() < deadline, "never counted abandoned: {text}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(
        sample(
            &text,
            &format!(r#"switchyard_engine_calls_total{{engine="lingua",executor="{executor}"}}"#)
        ),
        1.0,
        "only the first call ran: {text}"
    );
    assert_eq!(
        sample(&text, "switchyard_engine_queue_depth"),
        0.0,
        "{text}"
    );
}

/// A [`Cost::Bounded`] engine (lingua) runs inline on the request task, but
/// never more of its calls at once than there are engine turns (one per
/// engine thread): the others wait parked, counted in the queue depth,
/// while health answers. Control: the same engine declared
/// [`Cost::Light`] (inline without a turn) runs as many calls at once as
/// the runtime has workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bounded_engines_run_inline_never_more_at_once_than_the_turns() {
    let (most, queued) = saturate_inline(Cost::Bounded, true).await;
    assert!(most <= 2, "{most} Bounded calls ran at once on 2 turns");
    assert!(queued >= 1.0, "calls beyond the turns wait in the queue");
    let (most, queued) = saturate_inline(Cost::Light, false).await;
    assert!(
        most > 2,
        "control: Light calls are not gated, yet only {most} ran at once on 4 workers"
    );
    assert_eq!(queued, 0.0, "control: Light calls never queue");
}

/// 16 calls of 40 ms each on 2 engine threads; returns the most that ran
/// at once and the deepest queue seen. With `health`, Health/Check must
/// answer within 1 s while more calls are admitted than the turns.
async fn saturate_inline(cost: Cost, health: bool) -> (usize, f64) {
    let loader = BusyLinguaLoader::new(Duration::from_millis(40), cost);
    let app = TestApp::spawn_with(
        settings(&[
            ("detector.default_engine", "lingua"),
            ("server.max_concurrent_requests", "16"),
            ("detector.engine_threads", "2"),
        ]),
        loader.clone(),
    )
    .await
    .ready()
    .await;
    let channel = app.channel().await;
    let calls = spawn_calls(&channel, 16);
    let (mut queued, mut admitted): (f64, f64) = (0.0, 0.0);
    let mut checked = !health;
    while calls.iter().any(|c| !c.is_finished()) {
        let (_, text) = http_get(app.admin_addr, "/metrics").await;
        queued = queued.max(sample(&text, "switchyard_engine_queue_depth"));
        let in_use = sample(&text, "switchyard_engine_slots_in_use");
        admitted = admitted.max(in_use);
        if !checked && in_use > 2.0 {
            let status = tokio::time::timeout(Duration::from_secs(1), app.check(""))
                .await
                .expect("Health/Check answers within 1 s while Detect saturates")
                .expect("check");
            assert_eq!(status, ServingStatus::Serving);
            checked = true;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    for call in calls {
        call.await.expect("no panic").expect("served");
    }
    assert!(
        checked,
        "health was checked while the calls ran (at most {admitted} admitted at once)"
    );
    let (_, text) = app.admin_get("/metrics").await;
    assert_eq!(
        sample(
            &text,
            r#"switchyard_engine_calls_total{engine="lingua",executor="inline"}"#
        ),
        16.0,
        "{text}"
    );
    (loader.most_at_once(), queued)
}

/// `n` concurrent Detect calls on `channel`, each its own task.
fn spawn_calls(
    channel: &tonic::transport::Channel,
    n: usize,
) -> Vec<tokio::task::JoinHandle<Result<tonic::Response<pb::DetectResponse>, tonic::Status>>> {
    (0..n)
        .map(|i| {
            let mut client = pb::detector_client::DetectorClient::new(channel.clone());
            tokio::spawn(async move {
                client
                    .detect(pb::DetectRequest {
                        text: format!("Good morning number {i}"),
                    })
                    .await
            })
        })
        .collect()
}

/// The value of the first sample line starting with `series` (name plus
/// optional labels, as written), or -1.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let rest = l.strip_prefix(series)?;
            let value = rest.strip_prefix(' ')?;
            value.trim().parse().ok()
        })
        .unwrap_or(-1.0)
}

fn process_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task lists this process's threads")
        .count()
}

#[tokio::test]
async fn short_texts_run_inline_and_long_ones_on_the_pool() {
    let long = "word ".repeat(400);
    for engine in ["whatlang", "lingua"] {
        let app = TestApp::spawn_configured(&[("detector.default_engine", engine)]).await;
        let calls = |text: &str, executor: &str| {
            sample(
                text,
                &format!(
                    r#"switchyard_engine_calls_total{{engine="{engine}",executor="{executor}"}}"#
                ),
            )
        };
        app.detect("Good morning, how are you today?", "alice")
            .await
            .expect("short");
        let (_, text) = app.admin_get("/metrics").await;
        assert_eq!(
            (calls(&text, "inline"), calls(&text, "pool")),
            (1.0, 0.0),
            "{engine}: a sentence runs inline: {text}"
        );
        app.detect(&long, "alice").await.expect("long");
        let (_, text) = app.admin_get("/metrics").await;
        assert_eq!(
            (calls(&text, "inline"), calls(&text, "pool")),
            (1.0, 1.0),
            "{engine}: a text over inline_max_chars goes to the pool: {text}"
        );
    }
}
