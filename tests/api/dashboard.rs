//! The Grafana dashboard (`k8s/dashboards/switchyard.json`) stays honest:
//! every metric a panel queries is one a running replica really exposes on
//! `GET /metrics`, RED panels leave shadow traffic out, and every query
//! gets its version and track from the `switchyard_build_info` join.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::TestApp;

const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/k8s/dashboards/switchyard.json"
);

/// Metric-name prefixes the dashboard queries.
const PREFIXES: [&str; 3] = ["grpc_server_", "switchyard_", "process_"];

/// One panel query: the panel's title and the target's `expr`.
struct Query {
    panel: String,
    expr: String,
}

fn load_dashboard() -> Value {
    let text = std::fs::read_to_string(DASHBOARD).expect("the dashboard file exists");
    serde_json::from_str(&text).expect("the dashboard is valid JSON")
}

/// Every panel, rows' nested panels included (a collapsed row keeps its
/// panels inside it).
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for panel in list.as_array().into_iter().flatten() {
            out.push(panel);
            if let Some(nested) = panel.get("panels") {
                walk(nested, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// The `expr` of every target of every panel.
fn queries(dashboard: &Value) -> Vec<Query> {
    panels(dashboard)
        .into_iter()
        .flat_map(|panel| {
            let title = panel["title"].as_str().unwrap_or_default().to_owned();
            panel["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t["expr"].as_str())
                .map(move |expr| Query {
                    panel: title.clone(),
                    expr: expr.to_owned(),
                })
        })
        .collect()
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b':'
}

/// The metric names in a PromQL expression: identifiers that start with
/// `grpc_server_`, `switchyard_` or `process_` (at an identifier boundary, so a label
/// value such as `switchyard.v1.Detector` is not one).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let bytes = expr.as_bytes();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < bytes.len() {
        let at_boundary = i == 0 || !is_ident(bytes[i - 1]);
        if at_boundary && PREFIXES.iter().any(|p| expr[i..].starts_with(p)) {
            let end = (i..bytes.len())
                .find(|&j| !is_ident(bytes[j]))
                .unwrap_or(bytes.len());
            names.insert(expr[i..end].to_owned());
            i = end;
        } else {
            i += 1;
        }
    }
    names
}

/// The sample names in a Prometheus text exposition (comments skipped).
fn exposed(text: &str) -> BTreeSet<&str> {
    text.lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split(['{', ' ']).next())
        .collect()
}

/// The names no sample of `text` carries.
fn missing<'a>(names: impl IntoIterator<Item = &'a str>, text: &str) -> Vec<&'a str> {
    let exposed = exposed(text);
    names
        .into_iter()
        .filter(|name| !exposed.contains(name))
        .collect()
}

#[test]
fn metric_names_are_extracted_at_identifier_boundaries() {
    let expr = r#"sum by (version) (rate(grpc_server_handled_total{grpc_service="switchyard.v1.Detector"}[1m]) * on(namespace, pod) group_left(version) group by (namespace, pod, version) (switchyard_build_info))"#;
    let names: Vec<_> = metric_names(expr).into_iter().collect();
    assert_eq!(
        names,
        ["grpc_server_handled_total", "switchyard_build_info"]
    );
    assert!(metric_names("not_switchyard_x + xgrpc_server_y").is_empty());
}

#[test]
fn the_dashboard_is_a_templated_prometheus_dashboard() {
    let dashboard = load_dashboard();
    assert!(
        dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "schemaVersion: {}",
        dashboard["schemaVersion"]
    );
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .expect("template variables")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    for name in ["datasource", "namespace", "version", "track"] {
        assert!(variables.contains(&name), "variable {name}: {variables:?}");
    }

    let all = panels(&dashboard);
    let graphs: Vec<&Value> = all.iter().copied().filter(|p| p["type"] != "row").collect();
    assert!(graphs.len() >= 10, "only {} panels", graphs.len());
    for panel in &graphs {
        let title = &panel["title"];
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "panel {title} uses the datasource variable"
        );
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {title} has no query");
        for target in targets {
            let expr = target["expr"].as_str().unwrap_or_default();
            assert!(!expr.trim().is_empty(), "panel {title} has an empty query");
            assert_eq!(target["datasource"]["uid"], "${datasource}", "{title}");
        }
    }
}

#[test]
fn every_query_joins_build_info_and_red_leaves_shadow_out() {
    let dashboard = load_dashboard();
    for Query { panel, expr } in queries(&dashboard) {
        // Version and track come from build_info, joined per pod.
        assert!(
            expr.contains("on(namespace, pod) group_left(version, track)")
                && expr.contains("switchyard_build_info"),
            "{panel}: no build_info join in {expr}"
        );
        // Series that carry a shadow label are filtered on it: the shadow
        // panel shows only shadow traffic, every other only real traffic.
        let has_shadow_label = metric_names(&expr)
            .iter()
            .any(|n| n.starts_with("grpc_server_") || n.starts_with("switchyard_detections"));
        if has_shadow_label {
            let wanted = if panel.to_lowercase().contains("shadow") {
                r#"shadow="true""#
            } else {
                r#"shadow="false""#
            };
            let selectors = expr.matches("grpc_server_").count()
                + expr.matches("switchyard_detections").count();
            assert_eq!(
                expr.matches(wanted).count(),
                selectors,
                "{panel}: every selector needs {wanted}: {expr}"
            );
        }
    }
}

/// A flag file that dark-launches lingua behind whatlang.
fn dark_launch_flags() -> String {
    serde_json::json!({"flags": {
        "detector-engine": {"state": "ENABLED", "variants": {"whatlang": "whatlang", "lingua": "lingua"}, "defaultVariant": "whatlang"},
        "dark-launch-engine": {"state": "ENABLED", "variants": {"off": "off", "lingua": "lingua"}, "defaultVariant": "lingua"}
    }})
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_queries_is_exposed() {
    let dashboard = load_dashboard();
    let names: BTreeSet<String> = queries(&dashboard)
        .iter()
        .flat_map(|q| metric_names(&q.expr))
        .collect();
    assert!(names.len() >= 15, "too few metric names: {names:?}");

    let dir = tempfile::tempdir().expect("tempdir");
    let flags = dir.path().join("flags.json");
    std::fs::write(&flags, dark_launch_flags()).expect("write flags");
    let path = flags.to_str().expect("utf-8 path");
    let app = TestApp::spawn_configured(&[("flags.path", path)]).await;

    for (i, text) in [
        "Good morning, how are you? Today we are going to the market together.",
        "Das ist ein ganz gewöhnlicher deutscher Satz über das Wetter.",
        "Ceci est une phrase française tout à fait ordinaire.",
    ]
    .into_iter()
    .enumerate()
    {
        let reply = app
            .detect(text, &format!("user-{i}"))
            .await
            .expect("detect");
        assert_eq!(reply.engine, "whatlang", "the candidate is never served");
    }
    let err = app.detect("", "user-empty").await.expect_err("empty text");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    // The candidate runs off the request path: wait (bounded) for its
    // first observation.
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let (code, text) = app.admin_get("/metrics").await;
        assert_eq!(code, 200);
        if missing(["switchyard_dark_launch_candidate_seconds_count"], &text).is_empty() {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no dark-launch candidate observed within 10 s:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    let absent = missing(names.iter().map(String::as_str), &text);
    assert!(
        absent.is_empty(),
        "the dashboard queries metrics /metrics does not expose: {absent:?}\n--- /metrics ---\n{text}"
    );
    // Negative control: the same check reports a name that does not exist,
    // and a family name is not a sample name.
    assert_eq!(
        missing(
            ["switchyard_no_such_metric", "switchyard_detections"],
            &text
        ),
        ["switchyard_no_such_metric", "switchyard_detections"]
    );
}
