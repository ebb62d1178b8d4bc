//! The PrometheusRule (k8s/components/monitoring) as Prometheus reads it:
//! `promtool check rules` accepts it, and `promtool test rules` runs the
//! unit tests of tests/prometheus/ (every alert fires on a burn, stays quiet
//! on a healthy series and on shadow traffic). promtool comes from Debian's
//! `prometheus` package, which ./scripts/test unpacks into .tools/.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::kube;

const RULE: &str = "k8s/components/monitoring/prometheusrule.yaml";

/// A tool that ./scripts/test installs (`$env_var`, else `.tools/prometheus`).
pub fn prometheus_tool(env_var: &str, name: &str) -> PathBuf {
    let path = std::env::var_os(env_var)
        .map(PathBuf::from)
        .unwrap_or_else(|| kube::root().join(".tools/prometheus/usr/bin").join(name));
    assert!(
        path.is_file(),
        "{name} not found at {}: run ./scripts/test (it unpacks Debian's prometheus package into .tools/) or set {env_var}",
        path.display()
    );
    path
}

/// The PrometheusRule's `spec` (its rule groups), as a Prometheus rule file.
pub fn rule_groups() -> Value {
    let docs = kube::file(RULE);
    let rule = docs
        .iter()
        .find(|d| kube::kind(d) == "PrometheusRule")
        .expect("a PrometheusRule");
    rule["spec"].clone()
}

/// Writes `groups` as rules.yaml and the unit tests next to it; runs
/// promtool with `args` on them. Returns (success, output).
fn promtool(dir: &Path, groups: &Value, args: &[&str]) -> (bool, String) {
    std::fs::write(
        dir.join("rules.yaml"),
        serde_yaml_ng::to_string(groups).expect("yaml"),
    )
    .expect("write rules");
    for test in unit_tests() {
        std::fs::copy(&test, dir.join(test.file_name().expect("name"))).expect("copy test");
    }
    let out = Command::new(prometheus_tool("SWITCHYARD_PROMTOOL", "promtool"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool runs");
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), output)
}

fn unit_tests() -> Vec<PathBuf> {
    let mut tests: Vec<PathBuf> = std::fs::read_dir(kube::root().join("tests/prometheus"))
        .expect("tests/prometheus")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".test.yaml"))
        .collect();
    tests.sort();
    assert!(!tests.is_empty(), "no promtool unit tests");
    tests
}

fn test_names() -> Vec<String> {
    unit_tests()
        .iter()
        .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
        .collect()
}

fn alert_names(groups: &Value) -> Vec<String> {
    groups["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .filter_map(|r| r["alert"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn promtool_accepts_the_prometheus_rule() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ok, output) = promtool(
        dir.path(),
        &rule_groups(),
        &["check", "rules", "rules.yaml"],
    );
    assert!(ok, "promtool check rules:\n{output}");
    assert!(output.contains("SUCCESS"), "{output}");
}

#[test]
fn every_alert_fires_on_a_burn_and_stays_quiet_when_healthy() {
    let groups = rule_groups();
    let alerts = alert_names(&groups);
    assert_eq!(alerts.len(), 4, "{alerts:?}");
    // Each alert has a test where it fires (a non-empty exp_alerts) and one
    // where it must not (an empty one).
    let docs: Vec<Value> = unit_tests()
        .iter()
        .flat_map(|p| kube::documents(&std::fs::read_to_string(p).expect("read")))
        .collect();
    let cases: Vec<&Value> = docs
        .iter()
        .flat_map(|d| d["tests"].as_array().into_iter().flatten())
        .flat_map(|t| t["alert_rule_test"].as_array().into_iter().flatten())
        .collect();
    for alert in &alerts {
        let of = |firing: bool| {
            cases.iter().any(|c| {
                c["alertname"] == alert.as_str()
                    && c["exp_alerts"]
                        .as_array()
                        .is_some_and(|a| a.is_empty() != firing)
            })
        };
        assert!(of(true), "{alert}: no unit test where it fires");
        assert!(of(false), "{alert}: no unit test where it stays quiet");
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let mut args = vec!["test", "rules"];
    let names = test_names();
    args.extend(names.iter().map(String::as_str));
    let (ok, output) = promtool(dir.path(), &groups, &args);
    assert!(ok, "promtool test rules:\n{output}");
}

#[test]
fn the_unit_tests_fail_when_an_alert_is_broken() {
    // The control: a page alert computed against a 100 % budget (instead of
    // 0.1 %) never fires, and the unit tests must say so, or passing them
    // proves nothing.
    let mut groups = rule_groups();
    let broken = groups["groups"]
        .as_array_mut()
        .expect("groups")
        .iter_mut()
        .flat_map(|g| g["rules"].as_array_mut().expect("rules").iter_mut())
        .find(|r| r["alert"] == "SwitchyardAvailabilityBudgetBurnFast")
        .expect("the fast availability alert");
    let expr = broken["expr"].as_str().expect("expr").to_owned();
    assert!(expr.contains("(14.4 * 0.001)"), "{expr}");
    broken["expr"] = Value::String(expr.replace(" * 0.001)", " * 1)"));
    let dir = tempfile::tempdir().expect("tempdir");
    let (ok, output) = promtool(
        dir.path(),
        &groups,
        &["test", "rules", "slo-alerts-fast.test.yaml"],
    );
    assert!(!ok, "a broken alert passed its unit tests:\n{output}");
    assert!(
        output.contains("SwitchyardAvailabilityBudgetBurnFast"),
        "{output}"
    );
}
