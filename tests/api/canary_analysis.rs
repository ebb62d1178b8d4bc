//! The canary analysis, proven on a real Prometheus: the queries and the pass
//! conditions are read from the manifests themselves (Argo Rollouts'
//! AnalysisTemplate, Flagger's MetricTemplates and Canary, the
//! PrometheusRule), their arguments substituted, evaluated by a real
//! Prometheus (Debian's `prometheus`, unpacked into .tools/ by
//! ./scripts/test) scraping real replicas every second under load, and
//! judged the way the controllers judge them.
//!
//! One Prometheus, one stable replica and five canaries (the real binary,
//! each its own process, with its own flags directory), each canary in its
//! own `namespace` label (the stable one is scraped once per namespace), all
//! loaded at once for a few seconds:
//! - `healthy`: passes every check;
//! - `abort`: `fault-injection` aborts 5 % of calls with UNAVAILABLE: fails
//!   the success rate, and the availability page alert fires;
//! - `delay`: 200 ms on 10 % of calls: fails the relative latency; it
//!   also runs a dark launch of whatlang, a quarter of its calls a text
//!   whatlang answers `und` and lingua `en` (the control of the
//!   informational mismatch metric, 0 everywhere else);
//! - `invalid`: a fifth of its calls are clients' empty texts
//!   (INVALID_ARGUMENT): passes;
//! - `shadow`: every mirrored copy it receives fails with UNAVAILABLE, real
//!   calls succeed: passes, and the same query without its `shadow="false"`
//!   matcher fails (the control: the failures are there to be seen).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchyard::grpc::pb;
use switchyard::grpc::pb::detector_client::DetectorClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;
use tonic::transport::Channel;

use crate::alerts::{prometheus_tool, rule_groups};
use crate::helpers::{ConfigMapDir, detector_at, http_get};
use crate::kube;
use crate::process::Server;

const TEXT: &str = "Good morning, how are you? Today we are going to the market together.";
/// lingua (the default engine) answers `en`, whatlang `und`.
const DISAGREED: &str = "Zero downtime deployments with Kubernetes";
/// Calls per second to each replica, and for how long.
const RPS: u64 = 25;
const LOAD: Duration = Duration::from_secs(20);

/// The pod names and Argo pod-template hashes the scrape gives the replicas:
/// Flagger's naming (`<target>-primary-<hash>-<id>` for the primary,
/// `<target>-<hash>-<id>` for the canary) and the label components/monitoring's
/// PodMonitor copies from Argo's `rollouts-pod-template-hash`.
const STABLE_HASH: &str = "5f7c9d8b6";
const CANARY_HASH: &str = "7d9f6c5b4";
const STABLE_POD: &str = "switchyard-primary-5f7c9d8b6-stbl0";
const CANARY_POD: &str = "switchyard-7d9f6c5b4-cnry0";
/// Flagger's `{{ target }}`: the Deployment.
const TARGET: &str = "switchyard";

/// A Prometheus process, killed when dropped.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts Prometheus on a free loopback port, scraping `targets`
    /// (address, target labels) every second and evaluating the
    /// PrometheusRule's rules every second.
    async fn start(targets: &[(SocketAddr, BTreeMap<&str, String>)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("rules.yaml"),
            serde_yaml_ng::to_string(&rule_groups()).expect("yaml"),
        )
        .expect("write rules");
        let static_configs: Vec<Value> = targets
            .iter()
            .map(|(addr, labels)| json!({"targets": [addr.to_string()], "labels": labels}))
            .collect();
        let config = json!({
            "global": {"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"},
            "rule_files": ["rules.yaml"],
            "scrape_configs": [{"job_name": "switchyard", "static_configs": static_configs}]
        });
        std::fs::write(
            dir.path().join("prometheus.yml"),
            serde_yaml_ng::to_string(&config).expect("yaml"),
        )
        .expect("write config");
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let child = Command::new(prometheus_tool("SWITCHYARD_PROMETHEUS", "prometheus"))
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("prometheus starts");
        let prometheus = Self {
            child,
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while get(addr, "/-/ready").await.map(|(code, _)| code) != Some(200) {
            assert!(
                Instant::now() < deadline,
                "Prometheus not ready within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        prometheus
    }

    /// An instant query through the HTTP API: the vector's samples as
    /// (labels, value).
    async fn query(&self, promql: &str) -> Vec<(Value, f64)> {
        let path = format!("/api/v1/query?query={}", encode(promql));
        let (code, body) = get(self.addr, &path).await.expect("Prometheus answers");
        let reply: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{e}: not JSON from Prometheus ({code}): {body}"));
        assert_eq!(reply["status"], "success", "{promql}\n{body}");
        assert_eq!(reply["data"]["resultType"], "vector", "{promql}");
        reply["data"]["result"]
            .as_array()
            .expect("result")
            .iter()
            .map(|s| {
                let value = s["value"][1].as_str().expect("a value");
                (s["metric"].clone(), value.parse().expect("a number"))
            })
            .collect()
    }
}

/// One HTTP/1.0 GET (no chunked replies): (status, body).
async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.ok()?;
    let code = raw.split_whitespace().nth(1)?.parse().ok()?;
    let body = raw.split_once("\r\n\r\n")?.1.to_owned();
    Some((code, body))
}

/// Percent-encodes a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A pass condition as the controllers write it.
#[derive(Debug, Clone)]
enum Condition {
    /// Argo Rollouts' `successCondition`, `result[0] OP NUMBER`.
    Argo(String),
    /// Flagger's `thresholdRange`.
    Range { min: Option<f64>, max: Option<f64> },
    /// No condition: an informational metric.
    None,
}

impl Condition {
    fn passes(&self, value: f64) -> bool {
        match self {
            Condition::Argo(expr) => {
                let rest = expr
                    .trim()
                    .strip_prefix("result[0]")
                    .unwrap_or_else(|| panic!("unsupported successCondition {expr:?}"))
                    .trim();
                let (op, number) = [">=", "<=", "==", ">", "<"]
                    .iter()
                    .find_map(|op| rest.strip_prefix(op).map(|n| (*op, n.trim())))
                    .unwrap_or_else(|| panic!("unsupported successCondition {expr:?}"));
                let bound: f64 = number
                    .parse()
                    .unwrap_or_else(|_| panic!("unsupported successCondition {expr:?}"));
                match op {
                    ">=" => value >= bound,
                    "<=" => value <= bound,
                    ">" => value > bound,
                    "<" => value < bound,
                    _ => value == bound,
                }
            }
            Condition::Range { min, max } => {
                min.is_none_or(|m| value >= m) && max.is_none_or(|m| value <= m)
            }
            Condition::None => true,
        }
    }
}

/// One check a controller runs: a query template and its condition.
#[derive(Debug, Clone)]
struct Check {
    /// `argo/<metric>` or `flagger/<metric>`.
    name: String,
    query: String,
    condition: Condition,
}

impl Check {
    /// The query for the canary of `namespace`, arguments substituted.
    fn query_for(&self, namespace: &str) -> String {
        let q = self
            .query
            .replace("{{args.namespace}}", namespace)
            .replace("{{args.canary-hash}}", CANARY_HASH)
            .replace("{{args.stable-hash}}", STABLE_HASH)
            .replace("{{ namespace }}", namespace)
            .replace("{{ target }}", TARGET);
        assert!(
            !q.contains("{{"),
            "{}: unsubstituted argument in {q}",
            self.name
        );
        q
    }
}

/// The Argo Rollouts checks: AnalysisTemplate `switchyard-canary`.
fn argo_checks() -> Vec<Check> {
    let docs = kube::file("k8s/overlays/argo-rollouts/analysis/analysistemplate.yaml");
    let template = &docs[0];
    assert_eq!(kube::name(template), "switchyard-canary");
    let dry_run: Vec<&str> = template["spec"]["dryRun"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["metricName"].as_str())
        .collect();
    template["spec"]["metrics"]
        .as_array()
        .expect("metrics")
        .iter()
        .map(|m| {
            let name = m["name"].as_str().expect("name");
            let condition = match m["successCondition"].as_str() {
                Some(expr) => Condition::Argo(expr.to_owned()),
                None => {
                    assert!(dry_run.contains(&name), "{name}: no condition, not dryRun");
                    Condition::None
                }
            };
            Check {
                name: format!("argo/{name}"),
                query: m["provider"]["prometheus"]["query"]
                    .as_str()
                    .expect("a prometheus query")
                    .to_owned(),
                condition,
            }
        })
        .collect()
}

/// The Flagger checks: the Canary's metrics, their MetricTemplates, with
/// `{{ interval }}` the metric's interval.
fn flagger_checks() -> Vec<Check> {
    let canary = &kube::file("k8s/overlays/flagger/canary.yaml")[0];
    let templates = kube::file("k8s/overlays/flagger/metrictemplates.yaml");
    canary["spec"]["analysis"]["metrics"]
        .as_array()
        .expect("metrics")
        .iter()
        .map(|m| {
            let name = m["name"].as_str().expect("name");
            let template_name = m["templateRef"]["name"].as_str().expect("a templateRef");
            let template = templates
                .iter()
                .find(|t| kube::name(t) == template_name)
                .unwrap_or_else(|| panic!("{name}: no MetricTemplate {template_name}"));
            let interval = m["interval"].as_str().expect("an interval");
            let range = &m["thresholdRange"];
            Check {
                name: format!("flagger/{name}"),
                query: template["spec"]["query"]
                    .as_str()
                    .expect("query")
                    .replace("{{ interval }}", interval),
                condition: Condition::Range {
                    min: range["min"].as_f64(),
                    max: range["max"].as_f64(),
                },
            }
        })
        .collect()
}

/// Calls Detect on `client` at `RPS` for `LOAD`, each call through `call`;
/// returns the number of calls made.
async fn load<F, Fut>(call: F) -> u64
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let in_flight = Arc::new(Semaphore::new(64));
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / RPS));
    let end = Instant::now() + LOAD;
    let mut n = 0;
    let mut tasks = tokio::task::JoinSet::new();
    while Instant::now() < end {
        ticker.tick().await;
        let permit = Arc::clone(&in_flight)
            .acquire_owned()
            .await
            .expect("open semaphore");
        let call = call(n);
        tasks.spawn(async move {
            call.await;
            drop(permit);
        });
        n += 1;
    }
    while tasks.join_next().await.is_some() {}
    n
}

/// A Detect call with a 2 s deadline; its outcome does not matter here (the
/// server counts it).
fn detect(
    client: &DetectorClient<Channel>,
    text: &str,
    group: Option<&'static str>,
) -> impl std::future::Future<Output = ()> + Send + use<> {
    let mut client = client.clone();
    let mut request = tonic::Request::new(pb::DetectRequest { text: text.into() });
    request.set_timeout(Duration::from_secs(2));
    if let Some(group) = group {
        request
            .metadata_mut()
            .insert("x-user-group", group.parse().expect("ascii"));
    }
    async move {
        let _ = client.detect(request).await;
    }
}

/// A replica of the real binary with `flags` as its ConfigMap, ready.
async fn replica(track: &str, version: &str, flags: &ConfigMapDir) -> Server {
    let path = flags.path().to_str().expect("utf-8");
    let server = Server::start(&["--flags", path, "--track", track, "--app-version", version]);
    server.wait_ready().await;
    server
}

/// A flag file with `fault-injection` (default variant, targeting) and
/// `dark-launch-engine`.
fn flags(fault_default: &str, targeting: Option<Value>, dark: &str) -> String {
    let mut fault = json!({
        "state": "ENABLED",
        "variants": {
            "off": null,
            "unavailable-5": {"abort": {"code": "UNAVAILABLE", "percent": 5}},
            "unavailable-100": {"abort": {"code": "UNAVAILABLE", "percent": 100}},
            "delay-200ms-10": {"delay": {"ms": 200, "percent": 10}}
        },
        "defaultVariant": fault_default
    });
    if let Some(rule) = targeting {
        fault["targeting"] = rule;
    }
    json!({"flags": {
        "fault-injection": fault,
        "dark-launch-engine": {"state": "ENABLED", "variants": {"off": "off", "whatlang": "whatlang"}, "defaultVariant": dark}
    }})
    .to_string()
}

const SCENARIOS: [&str; 5] = ["healthy", "abort", "delay", "invalid", "shadow"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_analysis_judges_grpc_codes_and_relative_latency_on_a_real_prometheus() {
    let argo = argo_checks();
    let flagger = flagger_checks();
    assert_eq!(argo.len(), 3, "{argo:?}");
    assert_eq!(flagger.len(), 2, "{flagger:?}");

    // Arrange: the replicas, each with its own flags.
    let stable_flags = ConfigMapDir::new(&[("flags.json", &flags("off", None, "off"))]);
    let mirror_rule =
        json!({"if": [{"==": [{"var": "user-group"}, "mirror"]}, "unavailable-100", "off"]});
    let canary_flags = [
        flags("off", None, "whatlang"), // healthy, with a dark launch in flight
        flags("unavailable-5", None, "off"),
        flags("delay-200ms-10", None, "whatlang"),
        flags("off", None, "off"),
        flags("off", Some(mirror_rule), "off"),
    ]
    .map(|f| ConfigMapDir::new(&[("flags.json", &f)]));
    let stable = replica("stable", "v1", &stable_flags).await;
    let mut canaries = Vec::new();
    for cm in &canary_flags {
        canaries.push(replica("canary", "v2", cm).await);
    }
    let mut targets = Vec::new();
    for (namespace, canary) in SCENARIOS.iter().zip(&canaries) {
        for (app, pod, hash) in [
            (&stable, STABLE_POD, STABLE_HASH),
            (canary, CANARY_POD, CANARY_HASH),
        ] {
            let labels = BTreeMap::from([
                ("namespace", namespace.to_string()),
                ("pod", pod.to_owned()),
                ("rollouts_pod_template_hash", hash.to_owned()),
            ]);
            targets.push((app.admin, labels));
        }
    }
    let prometheus = Prometheus::start(&targets).await;

    // Act: every replica under load at once.
    let authority = "switchyard.switchyard.svc.cluster.local:50051";
    let mirrored = "switchyard.switchyard.svc.cluster.local-shadow:50051";
    let stable_client = detector_at(stable.grpc, authority).await;
    let mut runs = vec![tokio::spawn(load(move |_| {
        detect(&stable_client, TEXT, None)
    }))];
    for (namespace, canary) in SCENARIOS.iter().zip(&canaries) {
        let real = detector_at(canary.grpc, authority).await;
        let invalid = *namespace == "invalid";
        let disagreed = *namespace == "delay";
        runs.push(tokio::spawn(load(move |n| {
            // A fifth of the calls are clients' mistakes (empty text).
            let text = if invalid && n % 5 == 0 {
                ""
            } else if disagreed && n % 4 == 0 {
                DISAGREED
            } else {
                TEXT
            };
            detect(&real, text, None)
        })));
        if *namespace == "shadow" {
            let copy = detector_at(canary.grpc, mirrored).await;
            runs.push(tokio::spawn(load(move |_| {
                detect(&copy, TEXT, Some("mirror"))
            })));
        }
    }
    let started = Instant::now();
    for run in runs {
        assert!(run.await.expect("load ran") > RPS * LOAD.as_secs() / 2);
    }
    eprintln!("load: {:.1} s", started.elapsed().as_secs_f64());

    // Wait until Prometheus has scraped every call each canary counted.
    for (namespace, canary) in SCENARIOS.iter().zip(&canaries) {
        let (_, body) = http_get(canary.admin, "/metrics").await;
        let counted: f64 = body
            .lines()
            .filter(|l| l.starts_with("grpc_server_handled_total{") && l.contains("Detector"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        let query = format!(
            "sum(grpc_server_handled_total{{namespace=\"{namespace}\", pod=\"{CANARY_POD}\", grpc_service=\"switchyard.v1.Detector\"}})"
        );
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let scraped = prometheus.query(&query).await.first().map_or(0.0, |s| s.1);
            if scraped >= counted {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{namespace}: {scraped} of {counted} scraped"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // Assert: judge every check for every canary.
    let mut verdicts: BTreeMap<(&str, String), (f64, bool)> = BTreeMap::new();
    for namespace in SCENARIOS {
        for check in argo.iter().chain(&flagger) {
            let result = prometheus.query(&check.query_for(namespace)).await;
            assert_eq!(result.len(), 1, "{namespace} {}: {result:?}", check.name);
            let value = result[0].1;
            let pass = check.condition.passes(value);
            eprintln!(
                "{namespace:8} {:32} {value:>10.4} {}",
                check.name,
                if pass { "pass" } else { "FAIL" }
            );
            verdicts.insert((namespace, check.name.clone()), (value, pass));
        }
    }
    let passes = |namespace: &str, check: &str| -> bool {
        verdicts
            .get(&(namespace, check.to_owned()))
            .unwrap_or_else(|| panic!("no verdict for {namespace} {check}"))
            .1
    };
    let judged = ["success-rate", "latency-p99-ratio"]
        .map(|m| format!("argo/{m}"))
        .into_iter()
        .chain(["grpc-success-rate", "grpc-latency-p99-ratio"].map(|m| format!("flagger/{m}")));
    for check in judged {
        let is_success = check.contains("success");
        for namespace in SCENARIOS {
            let expected = match namespace {
                "abort" => !is_success,
                "delay" => is_success,
                _ => true,
            };
            assert_eq!(
                passes(namespace, &check),
                expected,
                "{namespace} {check}: {:?}",
                verdicts[&(namespace, check.clone())]
            );
        }
    }
    // The dark launch in flight on the healthy canary: whatlang agrees with
    // lingua on its text, so every comparison matched (informational
    // only). The control: on the delay canary a quarter of the texts are
    // answered differently, and the metric shows it.
    for namespace in SCENARIOS {
        let dark = verdicts[&(namespace, "argo/dark-launch-mismatch".to_owned())].0;
        if namespace == "delay" {
            assert!(
                (0.1..0.5).contains(&dark),
                "delay: a quarter of the comparisons mismatched, read {dark}"
            );
        } else {
            assert_eq!(
                dark, 0.0,
                "{namespace}: no dark launch or no mismatch reads 0"
            );
        }
    }
    let compared = prometheus
        .query("sum(switchyard_dark_launch_total{namespace=\"healthy\", outcome=\"match\"})")
        .await;
    assert!(
        compared.first().is_some_and(|s| s.1 > 0.0),
        "no dark-launch comparisons: {compared:?}"
    );

    // The clients' errors and the mirrored failures were really there.
    let seen = |q: String| {
        let prometheus = &prometheus;
        async move { prometheus.query(&q).await.first().map_or(0.0, |s| s.1) }
    };
    let invalid = seen(format!(
        "sum(grpc_server_handled_total{{namespace=\"invalid\", pod=\"{CANARY_POD}\", grpc_code=\"InvalidArgument\"}})"
    ))
    .await;
    assert!(invalid > 50.0, "{invalid} InvalidArgument calls");
    let shadow_failed = seen(format!(
        "sum(grpc_server_handled_total{{namespace=\"shadow\", pod=\"{CANARY_POD}\", shadow=\"true\", grpc_code=\"Unavailable\"}})"
    ))
    .await;
    assert!(
        shadow_failed > 50.0,
        "{shadow_failed} failed mirrored calls"
    );
    // The control: without its shadow="false" matcher, the success rate
    // sees the mirrored failures and fails the shadow canary.
    let success = argo
        .iter()
        .find(|c| c.name == "argo/success-rate")
        .expect("success-rate");
    let unfiltered = success
        .query_for("shadow")
        .replace(", shadow=\"false\"", "");
    let value = prometheus.query(&unfiltered).await[0].1;
    assert!(
        !success.condition.passes(value),
        "mirrored failures unseen: {value}"
    );

    // The PrometheusRule on the same data: per-version recording rules (the
    // build_info join) and the availability page for the aborting canary only.
    let by_version = prometheus
        .query(
            "namespace_version_track:switchyard_detect_success:ratio_rate1m{namespace=\"abort\"}",
        )
        .await;
    let ratio = |version: &str| {
        by_version
            .iter()
            .find(|(labels, _)| labels["version"] == version)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("no {version} in {by_version:?}"))
    };
    assert_eq!(ratio("v1"), 1.0);
    assert!(ratio("v2") < 0.99, "{by_version:?}");
    let p99 = prometheus
        .query("namespace_version_track:switchyard_detect_latency_seconds:p99_rate1m{namespace=\"delay\"}")
        .await;
    let of = |version: &str| {
        p99.iter()
            .find(|(labels, _)| labels["version"] == version && labels["track"].is_string())
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("no {version} in {p99:?}"))
    };
    assert!(of("v2") > 0.1 && of("v1") < 0.1, "{p99:?}");
    let firing = prometheus
        .query("ALERTS{alertname=\"SwitchyardAvailabilityBudgetBurnFast\", alertstate=\"firing\"}")
        .await;
    let namespaces: Vec<&str> = firing
        .iter()
        .filter_map(|(labels, _)| labels["namespace"].as_str())
        .collect();
    assert_eq!(namespaces, ["abort"], "{firing:?}");
}
