//! `switchyard smoke`: the post-deploy smoke test, run as the real binary
//! (exit codes, lines) and through the library API.

use std::process::{Command, Output};
use std::time::Duration;

use switchyard::tools::smoke::{self, Check, SmokeError, SmokeOptions};

use crate::helpers::{GatedLoader, TestApp, eventually, http_post, settings};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// Runs `switchyard smoke ARGS` off the test's runtime, which keeps serving.
async fn smoke_bin(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(ToString::to_string).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .arg("smoke")
            .args(args)
            .output()
            .expect("binary runs")
    })
    .await
    .expect("joins")
}

fn stdout_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn opts(addr: std::net::SocketAddr) -> SmokeOptions {
    SmokeOptions {
        target: addr.to_string().parse().expect("a target"),
        expect_version: None,
        timeout: Duration::from_secs(5),
    }
}

#[tokio::test]
async fn a_healthy_replica_passes_with_one_ok_line_per_check_in_order() {
    let app = TestApp::spawn_configured(&[("deployment.version", "v2")]).await;
    let addr = app.grpc_addr.to_string();

    let out = smoke_bin(&["--addr", &addr, "--expect-version", "v2"]).await;

    let lines = stdout_lines(&out);
    assert_eq!(out.status.code(), Some(0), "{lines:#?}");
    let expected = [
        "readiness SERVING",
        "reflection ",
        "detect 12/12 languages",
        "info version v2",
    ];
    assert_eq!(lines.len(), expected.len(), "{lines:#?}");
    for (line, start) in lines.iter().zip(expected) {
        assert!(
            line.starts_with(&format!("ok   {start}")),
            "{line:?} starts with {start:?}"
        );
    }
    assert!(
        lines[1].contains("switchyard.v1.Detector, switchyard.v1.Admin, grpc.health.v1.Health")
    );
    assert!(lines[2].contains("engine lingua"), "{}", lines[2]);
    assert!(lines[3].contains("flags revision "), "{}", lines[3]);
}

#[tokio::test]
async fn every_sentence_is_also_right_for_the_fast_engine() {
    let app = TestApp::spawn_configured(&[("detector.default_engine", "whatlang")]).await;
    let mut out = Vec::new();

    let report = smoke::run_checks(&opts(app.grpc_addr), &mut out)
        .await
        .expect("passes");

    let checks: Vec<Check> = report.passed.iter().map(|p| p.check).collect();
    assert_eq!(checks, Check::ALL);
    assert!(
        report.passed[2].detail.contains("engine whatlang"),
        "{:?}",
        report.passed[2]
    );
}

#[tokio::test]
async fn a_wrong_expected_version_fails_with_exit_1_at_the_first_check_that_sees_it() {
    let app = TestApp::spawn().await;
    let addr = app.grpc_addr.to_string();

    let out = smoke_bin(&["--addr", &addr, "--expect-version", "9.9.9"]).await;

    let lines = stdout_lines(&out);
    assert_eq!(out.status.code(), Some(1), "{lines:#?}");
    assert_eq!(
        lines.len(),
        3,
        "two checks pass, then the failure: {lines:#?}"
    );
    assert!(lines[0].starts_with("ok   readiness") && lines[1].starts_with("ok   reflection"));
    assert!(
        lines[2].starts_with("FAIL detect: served by version")
            && lines[2].contains(switchyard::VERSION)
            && lines[2].contains("9.9.9"),
        "{}",
        lines[2]
    );
}

#[tokio::test]
async fn nothing_listening_is_a_failed_check_with_exit_1() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = free.local_addr().expect("addr").to_string();
    drop(free);

    let out = smoke_bin(&["--addr", &addr, "--timeout", "2"]).await;

    let lines = stdout_lines(&out);
    assert_eq!(out.status.code(), Some(1), "{lines:#?}");
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].starts_with(&format!("FAIL readiness: cannot connect to {addr}")),
        "{}",
        lines[0]
    );
}

#[tokio::test]
async fn a_replica_still_loading_its_engines_is_not_ready() {
    let (loader, _gate) = GatedLoader::new();
    let app = TestApp::spawn_with(settings(&[]), loader).await;
    let addr = app.grpc_addr.to_string();

    let out = smoke_bin(&["--addr", &addr]).await;

    let lines = stdout_lines(&out);
    assert_eq!(out.status.code(), Some(1), "{lines:#?}");
    assert_eq!(lines, ["FAIL readiness: readiness is NOT_SERVING"]);
}

#[tokio::test]
async fn a_draining_replica_fails_readiness_though_it_still_answers() {
    let app = TestApp::spawn_configured(&[("drain.delay", "5")]).await;
    app.signal().await;
    eventually(Duration::from_secs(2), "draining", || {
        app.health.is_draining()
    })
    .await;
    // Still inside the drain delay: Detect answers, readiness does not.
    app.detect("Still serving during the drain delay, as promised.", "u")
        .await
        .expect("served");
    let mut out = Vec::new();

    let err = smoke::run_checks(&opts(app.grpc_addr), &mut out)
        .await
        .expect_err("fails");

    assert!(
        matches!(&err, SmokeError { check: Check::Readiness, reason } if reason.contains("NOT_SERVING")),
        "{err}"
    );
    assert_eq!(
        String::from_utf8_lossy(&out),
        "FAIL readiness: readiness is NOT_SERVING\n"
    );
}

#[tokio::test]
async fn a_bad_addr_is_bad_usage_exit_2_with_one_line() {
    for addr in ["localhost", "http://127.0.0.1:50051", "not an address"] {
        let out = smoke_bin(&["--addr", addr]).await;

        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{addr}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.starts_with("switchyard: invalid --addr"), "{stderr}");
        assert!(out.stdout.is_empty(), "no check ran");
    }
}

#[tokio::test]
async fn the_smoke_webhook_answers_flagger_with_the_smoke_verdict() {
    let app = TestApp::spawn_configured(&[("deployment.version", "v2")]).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(switchyard::tools::smoke_webhook::serve(
        listener,
        Duration::from_secs(5),
        async move {
            let _ = stopped.await;
        },
    ));
    // Flagger's pre-rollout payload, metadata from the Canary's webhook.
    let payload = |metadata: serde_json::Value| {
        serde_json::json!({"name": "switchyard", "namespace": "switchyard", "phase": "Progressing", "metadata": metadata})
            .to_string()
    };
    let canary = app.grpc_addr.to_string();

    let (code, body) = http_post(
        addr,
        "/",
        &payload(serde_json::json!({"addr": canary, "expect-version": "v2"})),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body.lines().filter(|l| l.starts_with("ok ")).count(),
        4,
        "{body}"
    );

    let (code, body) = http_post(
        addr,
        "/",
        &payload(serde_json::json!({"addr": canary, "expect-version": "v3"})),
    )
    .await;
    assert_eq!(code, 500, "{body}");
    assert!(body.contains("FAIL") && body.contains("v3"), "{body}");

    // Nothing listening: the smoke's own failure, not the webhook's.
    let (code, body) = http_post(
        addr,
        "/",
        &payload(serde_json::json!({"addr": "127.0.0.1:1"})),
    )
    .await;
    assert_eq!(code, 500, "{body}");
    assert!(body.contains("FAIL readiness"), "{body}");

    let (code, body) = http_post(addr, "/", &payload(serde_json::json!({}))).await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("addr"), "{body}");
    // The same address rule as `--addr`, named after where it came from.
    let (code, body) = http_post(
        addr,
        "/",
        &payload(serde_json::json!({"addr": "http://127.0.0.1:1"})),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body.starts_with("invalid metadata.addr \"http://127.0.0.1:1\": a scheme is not accepted"),
        "{body}"
    );
    assert!(!body.contains("FAIL"), "no check ran: {body}");
    let (code, _) = http_post(addr, "/", "not json").await;
    assert_eq!(code, 400);

    let _ = stop.send(());
    server.await.expect("joins").expect("served");
}
