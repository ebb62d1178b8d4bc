//! Fault injection by flag (`fault-injection`): aborts and delays on a share
//! of Detect and DetectStream calls, aimed by targeting, counted and never
//! touching Health or Admin; bad variants keep the last good flag set.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use switchyard::grpc::pb;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::helpers::{ConfigMapDir, TestApp};

const ENGLISH: &str = "Good morning, how are you? Today we are going to the market together.";

/// A flag file with `fault-injection` (its variants, default and targeting).
fn fault_flags(variants: Value, default: &str, targeting: Option<Value>) -> String {
    let mut flag = json!({"state": "ENABLED", "variants": variants, "defaultVariant": default});
    if let Some(rule) = targeting {
        flag["targeting"] = rule;
    }
    json!({"flags": {"fault-injection": flag}}).to_string()
}

fn variants() -> Value {
    json!({
        "off": null,
        "unavailable": {"abort": {"code": "UNAVAILABLE", "percent": 100}},
        "internal-20": {"abort": {"code": "INTERNAL", "percent": 20}},
        "slow": {"delay": {"ms": 300, "percent": 100}}
    })
}

/// `switchyard_faults_injected_total{kind, code}` on /metrics (0 if absent).
async fn injected(app: &TestApp, kind: &str, code: &str) -> f64 {
    let (status, body) = app.admin_get("/metrics").await;
    assert_eq!(status, 200);
    let series = format!("switchyard_faults_injected_total{{kind=\"{kind}\",code=\"{code}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .map_or(0.0, |v| v.trim().parse().expect("a number"))
}

async fn detect_as(
    app: &TestApp,
    group: Option<&str>,
) -> Result<pb::DetectResponse, tonic::Status> {
    let mut request = tonic::Request::new(pb::DetectRequest {
        text: ENGLISH.into(),
    });
    if let Some(group) = group {
        request
            .metadata_mut()
            .insert("x-user-group", group.parse().expect("ascii"));
    }
    app.detector()
        .await
        .detect(request)
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn an_abort_fails_detect_and_detect_stream_with_its_code_and_is_counted() {
    let cm = ConfigMapDir::new(&[("flags.json", &fault_flags(variants(), "unavailable", None))]);
    let app = TestApp::spawn_on_flags(&cm, &[]).await;

    let status = app.detect(ENGLISH, "alice").await.expect_err("aborted");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("fault-injection"), "{status:?}");

    let mut replies = app
        .detector()
        .await
        .detect_stream(futures::stream::iter(vec![pb::DetectRequest {
            text: ENGLISH.into(),
        }]))
        .await
        .expect("the stream opens")
        .into_inner();
    let first = replies.next().await.expect("a reply");
    assert_eq!(first.expect_err("aborted").code(), Code::Unavailable);

    // Health and Admin are never touched.
    assert_eq!(
        app.check("readiness").await.expect("check"),
        ServingStatus::Serving
    );
    assert_eq!(app.check("").await.expect("check"), ServingStatus::Serving);
    let info = app.info().await;
    assert!(!info.version.is_empty());

    assert_eq!(injected(&app, "abort", "Unavailable").await, 2.0);
    assert_eq!(injected(&app, "delay", "").await, 0.0);
}

#[tokio::test]
async fn a_delay_holds_the_call_then_serves_it() {
    let cm = ConfigMapDir::new(&[("flags.json", &fault_flags(variants(), "slow", None))]);
    let app = TestApp::spawn_on_flags(&cm, &[]).await;
    let started = Instant::now();
    let reply = app.detect(ENGLISH, "alice").await.expect("served");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(reply.language, "en");
    assert_eq!(injected(&app, "delay", "").await, 1.0);
    // The health check is not delayed.
    let started = Instant::now();
    app.check("readiness").await.expect("check");
    assert!(started.elapsed() < Duration::from_millis(300));
}

#[tokio::test]
async fn the_off_variant_and_a_missing_flag_inject_nothing() {
    let cm = ConfigMapDir::new(&[("flags.json", &fault_flags(variants(), "off", None))]);
    let app = TestApp::spawn_on_flags(&cm, &[]).await;
    for _ in 0..20 {
        app.detect(ENGLISH, "alice").await.expect("served");
    }
    assert_eq!(injected(&app, "abort", "Unavailable").await, 0.0);
    // The built-in flags have no fault-injection flag at all.
    let plain = TestApp::spawn().await;
    plain.detect(ENGLISH, "alice").await.expect("served");
}

#[tokio::test]
async fn targeting_aims_faults_at_the_canary_track_or_a_user_group() {
    let rule = json!({"if": [
        {"or": [{"==": [{"var": "track"}, "canary"]}, {"==": [{"var": "user-group"}, "beta"]}]},
        "unavailable", "off"
    ]});
    let flags = fault_flags(variants(), "off", Some(rule));
    let cm = ConfigMapDir::new(&[("flags.json", &flags)]);
    let stable = TestApp::spawn_on_flags(&cm, &[("deployment.track", "stable")]).await;
    let canary = TestApp::spawn_on_flags(&cm, &[("deployment.track", "canary")]).await;

    detect_as(&stable, None).await.expect("stable serves");
    let status = detect_as(&stable, Some("beta"))
        .await
        .expect_err("beta aborted");
    assert_eq!(status.code(), Code::Unavailable);
    let status = detect_as(&canary, None).await.expect_err("canary aborted");
    assert_eq!(status.code(), Code::Unavailable);
}

#[tokio::test]
async fn the_percentage_is_the_share_of_calls_aborted() {
    let cm = ConfigMapDir::new(&[("flags.json", &fault_flags(variants(), "internal-20", None))]);
    let app = TestApp::spawn_on_flags(&cm, &[]).await;
    let mut client = app.detector().await;
    let (mut ok, mut internal) = (0, 0);
    for _ in 0..500 {
        match client
            .detect(pb::DetectRequest {
                text: ENGLISH.into(),
            })
            .await
        {
            Ok(_) => ok += 1,
            Err(status) if status.code() == Code::Internal => internal += 1,
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    // 100 expected; the bounds are more than 4 standard deviations away.
    assert!(
        (60..140).contains(&internal),
        "{internal} of 500 aborted at 20 %"
    );
    assert_eq!(ok + internal, 500);
    assert_eq!(
        injected(&app, "abort", "Internal").await,
        f64::from(internal)
    );
}

#[tokio::test]
async fn a_bad_variant_keeps_the_last_good_flags_serving() {
    let mut cm = ConfigMapDir::new(&[("flags.json", &fault_flags(variants(), "off", None))]);
    let app = TestApp::spawn_on_flags(&cm, &[]).await;
    let good = app.info().await.flags.expect("flags").revision;

    // 150 % cannot be applied: the whole set is refused, nothing is injected.
    let bad = fault_flags(
        json!({"off": "off", "broken": {"abort": {"code": "UNAVAILABLE", "percent": 150}}}),
        "broken",
        None,
    );
    cm.update(&[("flags.json", &bad)]);
    let info = app
        .info_until(Duration::from_secs(10), "the bad set refused", |i| {
            i.flags.as_ref().is_some_and(|f| !f.last_error.is_empty())
        })
        .await;
    let flags = info.flags.expect("flags");
    assert_eq!(flags.revision, good, "the last good set keeps serving");
    assert!(
        flags.last_error.contains("fault-injection") && flags.last_error.contains("percent"),
        "{}",
        flags.last_error
    );
    for _ in 0..20 {
        app.detect(ENGLISH, "alice")
            .await
            .expect("nothing injected");
    }

    // Mended: the next load succeeds and the fault applies.
    cm.update(&[("flags.json", &fault_flags(variants(), "unavailable", None))]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.detect(ENGLISH, "alice").await.is_ok() {
        assert!(Instant::now() < deadline, "the mended set never served");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn flags_validate_refuses_a_bad_variant_and_accepts_the_documented_shape() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good.json");
    std::fs::write(&good, fault_flags(variants(), "off", None)).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["flags", "validate"])
        .arg(&good)
        .output()
        .expect("runs");
    assert!(out.status.success(), "{out:?}");

    let bad = dir.path().join("bad.json");
    let variants = json!({"off": "off", "typo": {"abort": {"code": "UNAVAILABLE", "percnt": 5}}});
    std::fs::write(&bad, fault_flags(variants, "off", None)).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["flags", "validate"])
        .arg(&bad)
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("fault-injection") && text.contains("typo") && text.contains("percnt"),
        "{text}"
    );
}

#[tokio::test]
async fn faults_are_logged_at_most_once_a_second_with_the_count_since() {
    let cm = ConfigMapDir::new(&[("flags.json", &fault_flags(variants(), "unavailable", None))]);
    let path = cm.path().to_str().expect("utf-8");
    let server = crate::process::Server::start(&["--flags", path]);
    server.wait_ready().await;
    let mut client = crate::helpers::detector_at(server.grpc, "localhost").await;
    let started = Instant::now();
    for _ in 0..200 {
        let status = client
            .detect(pb::DetectRequest {
                text: ENGLISH.into(),
            })
            .await
            .expect_err("aborted");
        assert_eq!(status.code(), Code::Unavailable);
    }
    let elapsed = started.elapsed();
    // The access line of the last call is written after its fault line.
    let deadline = Instant::now() + Duration::from_secs(5);
    let lines = loop {
        let log = server.log();
        let access = log
            .iter()
            .filter(|l| l["target"] == "switchyard::access" && l["grpc_code"] == "Unavailable")
            .count();
        if access == 200 {
            break log;
        }
        assert!(Instant::now() < deadline, "{access} of 200 access lines");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let faults: Vec<&Value> = lines
        .iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("fault injected by flag fault-injection"))
        })
        .collect();
    let most = elapsed.as_secs() + 1;
    assert!(
        !faults.is_empty() && faults.len() as u64 <= most,
        "{} fault lines in {elapsed:?}",
        faults.len()
    );
    assert_eq!(faults[0]["faults_since_last_line"], 1);
    assert_eq!(faults[0]["kind"], "abort");
    assert_eq!(faults[0]["code"], "Unavailable");
}
