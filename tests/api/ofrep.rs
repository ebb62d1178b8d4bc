//! OFREP on the admin listener: the protocol's shapes and status codes over
//! raw HTTP, and the real OpenFeature Python SDK with its OFREP provider
//! (PyPI `openfeature-sdk`, `openfeature-provider-ofrep`, pinned in
//! scripts/test) asking a running Switchyard, before and after a ConfigMap
//! flip.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchyard::grpc::pb;

use crate::helpers::{ConfigMapDir, HttpReply, TestApp, http_request};
use crate::kube::python;

fn flags(banner: &str) -> String {
    json!({
        "metadata": {"team": "search", "version": 1},
        "flags": {
            "banner": {"state": "ENABLED", "variants": {"on": banner, "off": "hidden"},
                "defaultVariant": "on", "metadata": {"version": 2}},
            "rollout": {"state": "ENABLED", "variants": {"a": "a", "b": "b"}, "defaultVariant": "a",
                "targeting": {"fractional": [["a", 50], ["b", 50]]}},
            "beta-limit": {"state": "ENABLED", "variants": {"small": 10, "big": 1000},
                "defaultVariant": "small",
                "targeting": {"if": [{"==": [{"var": "user-group"}, "beta"]}, "big", null]}},
            "off": {"state": "DISABLED", "variants": {"x": true}, "defaultVariant": "x"},
            "broken": {"state": "ENABLED", "variants": {"x": "x"}, "defaultVariant": "x",
                "targeting": {"if": [{"$ref": "missing"}, "x", null]}}
        }
    })
    .to_string()
}

async fn app_on(cm: &ConfigMapDir) -> TestApp {
    let path = cm.path().to_str().expect("utf-8").to_owned();
    TestApp::spawn_configured(&[("flags.path", path.as_str()), ("flags.debounce", "0.02")]).await
}

async fn post(app: &TestApp, path: &str, headers: &[(&str, &str)], body: &str) -> HttpReply {
    let mut all = vec![("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    http_request(app.admin_addr, "POST", path, &all, body.as_bytes()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ofrep_answers_in_the_protocols_shapes() {
    let cm = ConfigMapDir::new(&[("flags.json", &flags("shown"))]);
    let app = app_on(&cm).await;
    let one = "/ofrep/v1/evaluate/flags/";

    let r = post(
        &app,
        &format!("{one}banner"),
        &[],
        r#"{"context": {"targetingKey": "u1"}}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        r.json(),
        json!({"key": "banner", "reason": "STATIC", "variant": "on", "value": "shown",
            "metadata": {"team": "search", "version": 2}})
    );

    let r = post(
        &app,
        &format!("{one}beta-limit"),
        &[],
        r#"{"context": {"user-group": "beta"}}"#,
    )
    .await;
    assert_eq!(
        (
            r.status,
            r.json()["value"].clone(),
            r.json()["reason"].clone()
        ),
        (200, json!(1000), json!("TARGETING_MATCH"))
    );

    // Disabled: no value, so the caller's code default applies.
    let r = post(&app, &format!("{one}off"), &[], "{}").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["reason"], "DISABLED");
    assert!(r.json().get("value").is_none(), "{}", r.body);

    let r = post(&app, &format!("{one}nope"), &[], "{}").await;
    assert_eq!(r.status, 404);
    assert_eq!(
        (r.json()["key"].clone(), r.json()["errorCode"].clone()),
        (json!("nope"), json!("FLAG_NOT_FOUND"))
    );

    let r = post(&app, &format!("{one}broken"), &[], "{}").await;
    assert_eq!(
        (r.status, r.json()["errorCode"].clone()),
        (400, json!("PARSE_ERROR"))
    );
    // That flag loaded with a warning, which is counted.
    let (_, metrics) = app.admin_get("/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l == "switchyard_flag_load_warnings 1"),
        "{metrics}"
    );

    // Bad input: JSON errors, never a dropped connection.
    for body in [
        "{not json",
        "[1]",
        r#"{"context": 5}"#,
        r#"{"context": {"targetingKey": 7}}"#,
    ] {
        let r = post(&app, &format!("{one}banner"), &[], body).await;
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert_eq!(r.json()["errorCode"], "INVALID_CONTEXT", "{body}");
        assert!(
            r.json()["errorDetails"]
                .as_str()
                .is_some_and(|d| !d.is_empty())
        );
    }
    let huge = format!(r#"{{"context": {{"pad": "{}"}}}}"#, "x".repeat(100 * 1024));
    let r = post(&app, &format!("{one}banner"), &[], &huge).await;
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(r.json()["errorCode"], "INVALID_CONTEXT");

    // Bulk: every flag, an ETag, and 304 for a matching If-None-Match.
    let bulk = "/ofrep/v1/evaluate/flags";
    let ctx = r#"{"context": {"targetingKey": "u1"}}"#;
    let r = post(&app, bulk, &[], ctx).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let etag = r.header("etag").expect("ETag").to_owned();
    let listed: Vec<Value> = r.json()["flags"].as_array().expect("flags").clone();
    assert_eq!(listed.len(), 5);
    let broken = listed
        .iter()
        .find(|f| f["key"] == "broken")
        .expect("broken");
    assert_eq!(broken["errorCode"], "PARSE_ERROR");
    let r = post(&app, bulk, &[("If-None-Match", &etag)], ctx).await;
    assert_eq!((r.status, r.body.as_str()), (304, ""));
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    // Another answer (a context that changes `beta-limit`): another ETag.
    let r = post(
        &app,
        bulk,
        &[("If-None-Match", &etag)],
        r#"{"context": {"targetingKey": "u1", "user-group": "beta"}}"#,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_ne!(r.header("etag"), Some(etag.as_str()));
}

/// Evaluates `(key, type, context)` triples with the OpenFeature Python SDK
/// through its OFREP provider pointed at `base_url`.
fn sdk_evaluate(base_url: &str, cases: &Value) -> Vec<Value> {
    const SCRIPT: &str = r#"
import json, sys
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.contrib.provider.ofrep import OFREPProvider
base_url, cases = sys.argv[1], json.loads(sys.argv[2])
api.set_provider(OFREPProvider(base_url))
client = api.get_client()
out = []
for key, kind, default, ctx in cases:
    ctx = dict(ctx)
    tk = ctx.pop("targetingKey", None)
    get = getattr(client, "get_%s_details" % kind)
    d = get(key, default, EvaluationContext(tk, ctx))
    out.append({"value": d.value, "variant": d.variant, "reason": d.reason,
                "error": d.error_code.value if d.error_code else None,
                "metadata": dict(d.flag_metadata)})
print(json.dumps(out))
"#;
    let stdout = python(
        SCRIPT,
        &[base_url, &cases.to_string()],
        "",
        "the OpenFeature SDK failed (installed by ./scripts/test)",
    );
    serde_json::from_slice(&stdout).expect("sdk output")
}

/// Admin/EvaluateFlags for `targeting_key` and string `attributes`.
async fn admin_view(
    app: &TestApp,
    targeting_key: &str,
    attributes: &[(&str, &str)],
) -> Vec<pb::FlagEvaluation> {
    app.admin()
        .await
        .evaluate_flags(pb::EvaluateFlagsRequest {
            context: Some(pb::EvaluationContext {
                targeting_key: targeting_key.into(),
                attributes: attributes
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            }),
        })
        .await
        .expect("evaluate")
        .into_inner()
        .flags
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openfeature_python_sdk_reads_switchyards_flags_over_ofrep() {
    let mut cm = ConfigMapDir::new(&[("flags.json", &flags("shown"))]);
    let app = app_on(&cm).await;
    let base_url = format!("http://{}", app.admin_addr);
    let users = ["alice", "bob", "carol", "dave", "erin", "frank"];
    let mut cases = Vec::new();
    for user in users {
        cases.push(json!(["banner", "string", "dflt", {"targetingKey": user}]));
        cases.push(json!(["rollout", "string", "dflt", {"targetingKey": user}]));
        cases.push(
            json!(["beta-limit", "integer", 0, {"targetingKey": user, "user-group": "beta"}]),
        );
    }
    let cases = Value::Array(cases);
    let sdk = sdk_evaluate(&base_url, &cases);
    // What Admin/EvaluateFlags says for the same contexts.
    for (case, got) in cases.as_array().expect("cases").iter().zip(&sdk) {
        let key = case[0].as_str().expect("key");
        let user = case[3]["targetingKey"].as_str().expect("user");
        let attributes: Vec<(&str, &str)> = case[3]
            .as_object()
            .expect("ctx")
            .iter()
            .filter(|(k, _)| *k != "targetingKey")
            .map(|(k, v)| (k.as_str(), v.as_str().expect("string attribute")))
            .collect();
        let admin = admin_view(&app, user, &attributes).await;
        let expected = admin.iter().find(|f| f.key == key).expect("listed");
        let value: Value = serde_json::from_str(&expected.value_json).expect("value json");
        let metadata: Value = serde_json::from_str(&expected.metadata_json).expect("metadata json");
        assert_eq!(
            (
                &got["value"],
                got["variant"].as_str(),
                got["reason"].as_str(),
                &got["metadata"]
            ),
            (
                &value,
                Some(expected.variant.as_str()),
                Some(expected.reason.as_str()),
                &metadata
            ),
            "{case}"
        );
        assert_eq!(got["error"], Value::Null, "{case}");
    }
    // A missing flag is FLAG_NOT_FOUND to the SDK, with its default.
    let missing = sdk_evaluate(&base_url, &json!([["nope", "boolean", true, {}]]));
    assert_eq!(
        (&missing[0]["value"], &missing[0]["error"]),
        (&json!(true), &json!("FLAG_NOT_FOUND"))
    );
    // Both splits are used, so the agreement above is not one constant.
    let rollout: std::collections::HashSet<&str> = sdk
        .iter()
        .filter_map(|r| r["variant"].as_str())
        .filter(|v| *v == "a" || *v == "b")
        .collect();
    assert_eq!(rollout.len(), 2, "{sdk:?}");

    // Flip `banner` through the kubelet's swap; the bulk ETag changes once
    // the replica reloaded, and the SDK then sees the new value.
    let bulk = "/ofrep/v1/evaluate/flags";
    let ctx = r#"{"context": {"targetingKey": "alice"}}"#;
    let before = post(&app, bulk, &[], ctx)
        .await
        .header("etag")
        .expect("etag")
        .to_owned();
    cm.update(&[("flags.json", &flags("flipped"))]);
    let started = Instant::now();
    loop {
        let r = post(&app, bulk, &[("If-None-Match", &before)], ctx).await;
        if r.status == 200 {
            assert_ne!(r.header("etag"), Some(before.as_str()));
            break;
        }
        assert_eq!(r.status, 304);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no reload within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after = sdk_evaluate(
        &base_url,
        &json!([["banner", "string", "dflt", {"targetingKey": "alice"}]]),
    );
    assert_eq!(after[0]["value"], "flipped");
}

/// `flags.fractional_version` reaches the served set: the testbed's
/// shorthand vector (`fractional-flag-shorthand`, jon@company.com: heads in
/// v2, tails in v3) through OFREP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fractional_version_setting_picks_the_bucketing_served() {
    let shorthand = json!({"flags": {"fractional-flag-shorthand": {
        "state": "ENABLED", "variants": {"heads": "heads", "tails": "tails", "draw": "draw"},
        "defaultVariant": "draw", "targeting": {"fractional": [["heads"], ["tails", 1]]}}}})
    .to_string();
    let cm = ConfigMapDir::new(&[("flags.json", &shorthand)]);
    let path = cm.path().to_str().expect("utf-8").to_owned();
    for (version, expected) in [("v2", "heads"), ("v3", "tails")] {
        let app = TestApp::spawn_configured(&[
            ("flags.path", path.as_str()),
            ("flags.fractional_version", version),
        ])
        .await;
        let r = post(
            &app,
            "/ofrep/v1/evaluate/flags/fractional-flag-shorthand",
            &[],
            r#"{"context": {"targetingKey": "jon@company.com"}}"#,
        )
        .await;
        assert_eq!(r.json()["variant"], expected, "{version}");
    }
}

/// "What would user X get on this pod?" answers what Detect would: OFREP
/// and Admin/EvaluateFlags add the replica's `track`, `version` and `pod`
/// to a given context where it does not set them, as a Detect call's
/// context has them; a caller's own value wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_given_context_is_evaluated_as_on_this_replica() {
    let by_track = json!({"flags": {
        "canary-engine": {"state": "ENABLED", "variants": {"new": "new", "old": "old"},
            "defaultVariant": "old",
            "targeting": {"if": [{"==": [{"var": "track"}, "canary"]}, "new", "old"]}},
        "by-version": {"state": "ENABLED", "variants": {"v9": "v9", "other": "other"},
            "defaultVariant": "other",
            "targeting": {"if": [{"==": [{"var": "version"}, "v9"]}, "v9", "other"]}}}})
    .to_string();
    let cm = ConfigMapDir::new(&[("flags.json", &by_track)]);
    let path = cm.path().to_str().expect("utf-8").to_owned();
    let app = TestApp::spawn_configured(&[
        ("flags.path", path.as_str()),
        ("deployment.track", "canary"),
        ("deployment.version", "v9"),
    ])
    .await;
    let one = "/ofrep/v1/evaluate/flags/";
    let bulk_for_u1 = |app| {
        post(
            app,
            "/ofrep/v1/evaluate/flags",
            &[],
            r#"{"context": {"targetingKey": "u1"}}"#,
        )
    };
    let variant = |body: &str| {
        let body = body.to_owned();
        let app = &app;
        async move {
            let r = post(app, &format!("{one}canary-engine"), &[], &body).await;
            assert_eq!(r.status, 200, "{}", r.body);
            r.json()["variant"].as_str().expect("a variant").to_owned()
        }
    };
    assert_eq!(
        variant(r#"{"context": {"targetingKey": "u1"}}"#).await,
        "new"
    );
    assert_eq!(variant("").await, "new", "no context at all");
    assert_eq!(
        variant(r#"{"context": {"targetingKey": "u1", "track": "stable"}}"#).await,
        "old",
        "the caller's own track wins"
    );
    let bulk = bulk_for_u1(&app).await;
    assert_eq!(bulk.status, 200, "{}", bulk.body);
    let variants: Vec<(String, String)> = bulk.json()["flags"]
        .as_array()
        .expect("flags")
        .iter()
        .map(|f| {
            (
                f["key"].as_str().unwrap_or("").to_owned(),
                f["variant"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert!(
        variants.contains(&("canary-engine".into(), "new".into())),
        "{variants:?}"
    );
    assert!(
        variants.contains(&("by-version".into(), "v9".into())),
        "{variants:?}"
    );

    // Admin/EvaluateFlags with an explicit context, the same way.
    let view = |evaluations: Vec<pb::FlagEvaluation>, key: &str| {
        evaluations
            .into_iter()
            .find(|f| f.key == key)
            .map(|f| f.variant)
            .unwrap_or_else(|| panic!("no {key}"))
    };
    assert_eq!(
        view(admin_view(&app, "u1", &[]).await, "canary-engine"),
        "new"
    );
    assert_eq!(view(admin_view(&app, "u1", &[]).await, "by-version"), "v9");
    assert_eq!(
        view(
            admin_view(&app, "u1", &[("track", "stable")]).await,
            "canary-engine"
        ),
        "old"
    );

    // The control: a stable replica of the same flags answers `old`.
    let stable = TestApp::spawn_configured(&[("flags.path", path.as_str())]).await;
    let r = post(
        &stable,
        &format!("{one}canary-engine"),
        &[],
        r#"{"context": {"targetingKey": "u1"}}"#,
    )
    .await;
    assert_eq!(r.json()["variant"], "old", "{}", r.body);
    // The ETag is the answer's: same flags, same context, other answers
    // (canary, stable) get other tags, so a client polling through one
    // Service never takes one replica's 304 for the other's answers, and
    // two stable replicas (other pods) giving the same answer share one.
    let stable_bulk = bulk_for_u1(&stable).await;
    assert_eq!(stable_bulk.status, 200, "{}", stable_bulk.body);
    let (canary_tag, stable_tag) = (bulk.header("etag"), stable_bulk.header("etag"));
    assert!(canary_tag.is_some() && stable_tag.is_some());
    assert_ne!(canary_tag, stable_tag);
    let other_pod = TestApp::spawn_configured(&[
        ("flags.path", path.as_str()),
        ("deployment.pod", "switchyard-other-pod"),
    ])
    .await;
    let other_bulk = bulk_for_u1(&other_pod).await;
    assert_eq!(other_bulk.body, stable_bulk.body);
    assert_eq!(other_bulk.header("etag"), stable_tag);
}
