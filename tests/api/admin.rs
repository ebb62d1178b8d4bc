//! Admin/GetInfo tells a person what this replica is.

use crate::helpers::TestApp;

#[tokio::test]
async fn get_info_reports_identity_engines_health_and_config() {
    let app = TestApp::spawn().await;
    let info = app.info().await;
    assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(info.build_version, env!("CARGO_PKG_VERSION"));
    assert!(!info.git_commit.is_empty());
    assert_eq!(info.track, "stable");
    assert_eq!(info.pod, "test-pod");
    assert!(info.uptime_seconds > 0.0);
    assert!(!info.draining);
    let engines: Vec<_> = info.engines.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(engines, ["whatlang", "lingua"]);
    assert!(
        info.engines
            .iter()
            .all(|e| e.languages.len() == 12 && e.load_seconds > 0.0 && e.warm_up_seconds > 0.0)
    );
    assert_eq!(
        info.health.get("readiness").map(String::as_str),
        Some("SERVING")
    );
    assert_eq!(
        info.health.get("liveness").map(String::as_str),
        Some("SERVING")
    );
    let config: serde_json::Value =
        serde_json::from_str(&info.effective_config_json).expect("config is JSON");
    assert_eq!(config["drain"]["delay"], "200ms");
    assert_eq!(config["detector"]["max_text_chars"], 10000);
}

#[tokio::test]
async fn app_version_names_the_release_in_info_and_replies() {
    let app =
        TestApp::spawn_configured(&[("deployment.version", "v2"), ("deployment.track", "canary")])
            .await;
    let info = app.info().await;
    assert_eq!(info.version, "v2");
    assert_eq!(info.build_version, env!("CARGO_PKG_VERSION"));
    let reply = app
        .detect(
            "Der schnelle braune Fuchs springt über den faulen Hund",
            "u1",
        )
        .await
        .expect("detect");
    let served_by = reply.served_by.expect("served_by");
    assert_eq!(
        (served_by.version.as_str(), served_by.track.as_str()),
        ("v2", "canary")
    );
}
