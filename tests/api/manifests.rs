//! The manifests in k8s/ and istio/ are valid Kubernetes, consistent with
//! each other and with the binary they run. Every overlay is rendered with
//! `kubectl kustomize` (offline) and checked as the API server and the
//! kubelet would see it: strict schemas (PyPI `kubernetes-validate
//! --strict`), selectors, probes, the drain budget, the flags ConfigMap, and
//! the container args parsed by the binary's own CLI parser.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value;
use switchyard::engine::RealEngines;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::helpers::{TestApp, settings};
use crate::kube::{self, OVERLAYS, Pod};

/// The Kubernetes version the schemas are checked against.
const KUBERNETES_VERSION: &str = "1.37.0";

/// API groups whose kinds are CRDs (checked against their projects' CRD
/// schemas by ../shared/tools/validate-manifests in `.ci/run`).
const CRD_GROUPS: &[&str] = &[
    "networking.istio.io/",
    "security.istio.io/",
    "gateway.networking.k8s.io/",
    "argoproj.io/",
    "flagger.app/",
    "monitoring.coreos.com/",
];

fn is_crd(doc: &Value) -> bool {
    let api = doc["apiVersion"].as_str().unwrap_or_default();
    CRD_GROUPS.iter().any(|g| api.starts_with(g))
}

/// Every rendering the tests check: base and each overlay.
fn renderings() -> Vec<(String, Vec<Value>)> {
    std::iter::once("k8s/base".to_owned())
        .chain(OVERLAYS.iter().map(|o| format!("k8s/overlays/{o}")))
        .map(|dir| {
            let docs = kube::documents(&kube::render(&dir));
            assert!(!docs.is_empty(), "{dir} renders nothing");
            (dir, docs)
        })
        .collect()
}

/// Runs `kubernetes-validate --strict` on `docs`; returns (success, output).
fn kubernetes_validate(docs: &[&Value]) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("objects.yaml");
    let yaml: Vec<String> = docs
        .iter()
        .map(|d| serde_yaml_ng::to_string(d).expect("yaml"))
        .collect();
    std::fs::write(&path, yaml.join("---\n")).expect("write");
    let out = Command::new(kube::venv_tool(
        "SWITCHYARD_KUBERNETES_VALIDATE",
        "kubernetes-validate",
    ))
    .args(["--strict", "-k", KUBERNETES_VERSION])
    .arg(&path)
    .output()
    .expect("kubernetes-validate runs");
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), output)
}

#[test]
fn every_kubernetes_object_validates_strictly() {
    let mut checked = 0;
    for (dir, docs) in renderings() {
        let objects: Vec<&Value> = docs.iter().filter(|d| !is_crd(d)).collect();
        let (ok, output) = kubernetes_validate(&objects);
        assert!(ok, "{dir}: kubernetes-validate --strict failed:\n{output}");
        checked += objects.len();
    }
    for path in kube::yaml_files("istio") {
        let docs = kube::file(&path);
        let objects: Vec<&Value> = docs
            .iter()
            .filter(|d| !is_crd(d) && kube::kind(d) != "Kustomization")
            .collect();
        if objects.is_empty() {
            continue;
        }
        let (ok, output) = kubernetes_validate(&objects);
        assert!(ok, "{path}: kubernetes-validate --strict failed:\n{output}");
        checked += objects.len();
    }
    assert!(checked >= 20, "only {checked} objects checked");
}

#[test]
fn the_schema_check_sees_a_bad_object() {
    // The control: an unknown field and a wrong type must fail, or the
    // check above proves nothing.
    let docs = kube::documents(&kube::render("k8s/base"));
    let mut deployment = kube::of_kind(&docs, "Deployment")[0].clone();
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] =
        serde_json::json!({});
    let (ok, output) = kubernetes_validate(&[&deployment]);
    assert!(!ok, "an unknown field passed strict validation: {output}");
    let mut service = kube::of_kind(&docs, "Service")[0].clone();
    service["spec"]["ports"][0]["port"] = serde_json::json!("fifty");
    let (ok, output) = kubernetes_validate(&[&service]);
    assert!(!ok, "a string port passed validation: {output}");
}

#[test]
fn selectors_match_the_pods_they_are_for() {
    for (dir, docs) in renderings() {
        let pods = kube::pods(&docs);
        assert!(!pods.is_empty(), "{dir}: no Deployment");
        let all_pods = kube::pod_labels(&docs);
        for deployment in kube::workloads(&docs) {
            let selector = kube::string_map(&deployment["spec"]["selector"]["matchLabels"]);
            let labels = kube::string_map(&deployment["spec"]["template"]["metadata"]["labels"]);
            assert!(
                !selector.is_empty() && kube::selects(&selector, &labels),
                "{dir}: Deployment {} selector {selector:?} does not select its pods {labels:?}",
                kube::name(deployment)
            );
            // Two Deployments must never claim each other's pods.
            for other in &pods {
                if other.deployment != kube::name(deployment) {
                    assert!(
                        !kube::selects(&selector, &other.labels),
                        "{dir}: Deployment {} also selects {}'s pods",
                        kube::name(deployment),
                        other.deployment
                    );
                }
            }
        }
        for service in kube::of_kind(&docs, "Service") {
            let selector = kube::string_map(&service["spec"]["selector"]);
            assert!(
                !selector.is_empty() && all_pods.iter().any(|p| kube::selects(&selector, p)),
                "{dir}: Service {} selects no pods ({selector:?})",
                kube::name(service)
            );
        }
        for pdb in kube::of_kind(&docs, "PodDisruptionBudget") {
            let selector = &pdb["spec"]["selector"];
            assert!(
                pods.iter()
                    .any(|p| kube::label_selector_matches(selector, &p.labels)),
                "{dir}: PodDisruptionBudget selects no pods"
            );
        }
    }
}

#[test]
fn the_base_service_selects_on_app_only() {
    let docs = kube::documents(&kube::render("k8s/base"));
    let service = kube::of_kind(&docs, "Service")[0];
    let selector = kube::string_map(&service["spec"]["selector"]);
    assert_eq!(selector.keys().collect::<Vec<_>>(), ["app"]);
    let ports = service["spec"]["ports"].as_array().expect("ports");
    let grpc = ports
        .iter()
        .find(|p| p["name"] == "grpc")
        .expect("a port named grpc");
    assert_eq!(grpc["appProtocol"], "grpc");
}

/// The probe's gRPC service and port.
fn probe(container: &Value, which: &str) -> (String, u64) {
    let grpc = &container[which]["grpc"];
    assert!(grpc.is_object(), "{which} is not a gRPC probe");
    (
        grpc["service"].as_str().unwrap_or_default().to_owned(),
        grpc["port"]
            .as_u64()
            .expect("probe port is a number (named ports are not allowed)"),
    )
}

/// Checks one pod against the binary's view of its args.
fn check_pod(dir: &str, pod: &Pod, docs: &[Value]) -> BTreeMap<String, u64> {
    let who = format!("{dir}: {}", pod.deployment);
    let s = &pod.settings;
    assert_eq!(
        pod.labels.get("track").map(String::as_str),
        Some(s.deployment.track.as_str()),
        "{who}: the track label and --track differ"
    );
    assert_eq!(
        pod.labels.get("version"),
        Some(&s.deployment.version),
        "{who}: the version label and --app-version differ"
    );
    assert_eq!(
        pod.labels.get("app").map(String::as_str),
        Some("switchyard")
    );

    // Ports and probes: the gRPC listener and the probe listener (the
    // control thread), each declared under its name.
    let grpc_port = u64::from(s.server.grpc_addr.port());
    let probe_port = u64::from(s.server.probe_addr.port());
    let ports = pod.container["ports"].as_array().expect("ports");
    for (name, port, flag) in [
        ("grpc", grpc_port, "--grpc-addr"),
        ("grpc-probe", probe_port, "--probe-addr"),
    ] {
        let declared = ports
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{who}: no containerPort named {name}"));
        assert_eq!(
            declared["containerPort"], port,
            "{who}: containerPort {name} != {flag} port"
        );
    }
    assert!(
        s.server.data_plane_nice > 0,
        "{who}: the data plane runs below the probes' control thread"
    );
    let mut services = BTreeMap::new();
    for (which, service) in [
        ("startupProbe", "readiness"),
        ("readinessProbe", "readiness"),
        ("livenessProbe", "liveness"),
    ] {
        let (name, port) = probe(&pod.container, which);
        assert_eq!(name, service, "{who}: {which} checks {name:?}");
        assert_eq!(port, probe_port, "{who}: {which} port");
        services.insert(name, port);
    }

    // The drain budget fits the grace period.
    let pre_stop = pod.container["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_f64()
        .unwrap_or_else(|| panic!("{who}: no preStop sleep"));
    let grace = pod.spec["terminationGracePeriodSeconds"]
        .as_f64()
        .unwrap_or(30.0);
    let budget = pre_stop + s.drain.delay.as_secs_f64() + s.drain.timeout.as_secs_f64();
    assert!(
        grace >= budget + 1.0,
        "{who}: terminationGracePeriodSeconds {grace} does not cover preStop {pre_stop} + drain delay {:?} + drain timeout {:?} + a margin",
        s.drain.delay,
        s.drain.timeout
    );

    // Flags come from the ConfigMap, mounted as a directory.
    let flags_path = s.flags.path.as_deref().expect("--flags is set");
    let mounts = pod.container["volumeMounts"]
        .as_array()
        .expect("volumeMounts");
    let mount = mounts
        .iter()
        .find(|m| m["mountPath"].as_str() == flags_path.to_str())
        .unwrap_or_else(|| panic!("{who}: nothing mounted at --flags {}", flags_path.display()));
    assert!(
        mount.get("subPath").is_none(),
        "{who}: a subPath mount never updates"
    );
    let volume = pod.spec["volumes"]
        .as_array()
        .and_then(|v| v.iter().find(|v| v["name"] == mount["name"]))
        .unwrap_or_else(|| panic!("{who}: no volume {}", mount["name"]));
    let config_map = volume["configMap"]["name"]
        .as_str()
        .expect("a configMap volume");
    assert!(
        kube::of_kind(docs, "ConfigMap")
            .iter()
            .any(|c| kube::name(c) == config_map),
        "{who}: ConfigMap {config_map} is not in the rendering"
    );

    // Hardening.
    let pod_sc = &pod.spec["securityContext"];
    let sc = &pod.container["securityContext"];
    assert_eq!(pod_sc["runAsNonRoot"], true, "{who}");
    let uid = pod_sc["runAsUser"].as_u64().expect("a fixed runAsUser");
    assert!(
        uid != 0 && uid != 1337,
        "{who}: uid {uid} (1337 is the Istio proxy's)"
    );
    assert_eq!(pod_sc["seccompProfile"]["type"], "RuntimeDefault", "{who}");
    assert_eq!(sc["readOnlyRootFilesystem"], true, "{who}");
    assert_eq!(sc["allowPrivilegeEscalation"], false, "{who}");
    assert_eq!(
        sc["capabilities"]["drop"],
        serde_json::json!(["ALL"]),
        "{who}"
    );
    let env: Vec<&str> = pod.container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["valueFrom"]["fieldRef"].is_object())
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert!(
        env.contains(&"POD_NAME") && env.contains(&"POD_NAMESPACE"),
        "{who}: {env:?}"
    );
    // Connections age, so an L4 balancer rebalances them, but not so often
    // that reconnects cost anything; the grace outlasts any unary call.
    let age = s
        .connection
        .max_age
        .expect("{who}: a connection age is set");
    assert!(
        age >= std::time::Duration::from_secs(60),
        "{who}: age {age:?}"
    );
    assert!(
        s.connection.max_age_grace.is_some(),
        "{who}: a grace bounds clients that ignore GOAWAY"
    );
    services
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pod_agrees_with_the_binary() {
    let mut probed = BTreeMap::new();
    for (dir, docs) in renderings() {
        for pod in kube::pods(&docs) {
            probed.extend(check_pod(&dir, &pod, &docs));
        }
    }
    // The probed health services are ones the binary serves on the probe
    // listener.
    let app = TestApp::spawn_with(settings(&[]), std::sync::Arc::new(RealEngines))
        .await
        .ready()
        .await;
    for service in probed.keys() {
        assert_eq!(
            app.probe(service).await.expect("probe answers"),
            ServingStatus::Serving,
            "health service {service:?}"
        );
    }
    assert!(
        app.probe("no-such-service").await.is_err(),
        "the control: unknown services fail"
    );
}

#[test]
fn the_flags_configmap_is_valid_and_equals_the_built_in_flags() {
    let docs = kube::documents(&kube::render("k8s/base"));
    let config_map = kube::of_kind(&docs, "ConfigMap")
        .into_iter()
        .find(|c| kube::name(c) == "switchyard-flags")
        .expect("ConfigMap switchyard-flags");
    let data = config_map["data"].as_object().expect("data");
    let dir = tempfile::tempdir().expect("tempdir");
    for (file, content) in data {
        std::fs::write(dir.path().join(file), content.as_str().expect("text")).expect("write");
    }
    let validated = kube::run(
        Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["flags", "validate"])
            .arg(dir.path()),
    );
    assert!(!validated.is_empty());
    let shipped: Value =
        serde_json::from_str(data["flags.json"].as_str().expect("flags.json")).expect("JSON");
    let built_in: Value = serde_json::from_str(
        &std::fs::read_to_string(kube::root().join("flags/flags.json")).expect("read"),
    )
    .expect("JSON");
    assert_eq!(
        shipped, built_in,
        "the ConfigMap and flags/flags.json differ"
    );
}

/// The index of the first VirtualService route a call would take.
fn first_match(http: &[Value], path: &str, headers: &[(&str, &str)]) -> usize {
    http.iter()
        .position(|route| {
            let Some(blocks) = route.get("match").and_then(Value::as_array) else {
                return true;
            };
            blocks.iter().any(|block| {
                let uri_ok = match block.get("uri") {
                    None => true,
                    Some(uri) => {
                        uri.get("exact").is_some_and(|e| e == path)
                            || uri
                                .get("prefix")
                                .and_then(Value::as_str)
                                .is_some_and(|p| path.starts_with(p))
                    }
                };
                let headers_ok =
                    block
                        .get("headers")
                        .and_then(Value::as_object)
                        .is_none_or(|wanted| {
                            wanted.iter().all(|(name, m)| {
                                headers.iter().any(|(n, v)| {
                                    n == name
                                        && (m.get("exact").is_some_and(|e| e == v)
                                            || m.get("prefix")
                                                .and_then(Value::as_str)
                                                .is_some_and(|p| v.starts_with(p)))
                                })
                            })
                        });
                uri_ok && headers_ok
            })
        })
        .unwrap_or_else(|| panic!("no route takes {path} with {headers:?}"))
}

const STREAM: &str = "/switchyard.v1.Detector/DetectStream";
const UNARY: &str = "/switchyard.v1.Detector/Detect";

#[test]
fn istio_routes_point_at_real_subsets_and_treat_streams_apart() {
    let overlay = kube::documents(&kube::render("k8s/overlays/istio"));
    let pods = kube::pods(&overlay);
    let rules = kube::of_kind(&overlay, "DestinationRule");
    assert_eq!(rules.len(), 1, "one DestinationRule");
    let mut subsets = BTreeMap::new();
    for subset in rules[0]["spec"]["subsets"].as_array().expect("subsets") {
        let name = subset["name"].as_str().expect("name").to_owned();
        let labels = kube::string_map(&subset["labels"]);
        subsets.insert(name.clone(), labels);
    }
    for want in ["v1", "v2", "blue", "green"] {
        assert!(subsets.contains_key(want), "no subset {want}");
    }
    // The subsets the overlay deploys select its pods.
    for (name, labels) in &subsets {
        if ["blue", "green"].contains(&name.as_str()) {
            continue; // deployed by the blue-green overlay
        }
        assert!(
            pods.iter().any(|p| kube::selects(labels, &p.labels)),
            "subset {name} {labels:?} selects no Deployment of the istio overlay"
        );
    }
    let blue_green = kube::pods(&kube::documents(&kube::render("k8s/overlays/blue-green")));
    for color in ["blue", "green"] {
        assert!(
            blue_green
                .iter()
                .any(|p| kube::selects(&subsets[color], &p.labels)),
            "subset {color} selects no pod of the blue-green overlay"
        );
    }

    let files: Vec<String> = kube::yaml_files("istio")
        .into_iter()
        .filter(|f| f.contains("virtualservice"))
        .collect();
    assert!(files.len() >= 4, "VirtualServices: {files:?}");
    for file in &files {
        for vs in kube::file(file)
            .iter()
            .filter(|d| kube::kind(d) == "VirtualService")
        {
            let http = vs["spec"]["http"].as_array().expect("http routes");
            for (i, route) in http.iter().enumerate() {
                let dests = route["route"].as_array().expect("destinations");
                let weights: u64 = dests
                    .iter()
                    .map(|d| d["weight"].as_u64().unwrap_or(100))
                    .sum();
                assert!(
                    weights == 100 || (dests.len() == 1 && dests[0].get("weight").is_none()),
                    "{file} http[{i}]: weights sum to {weights}"
                );
                let named = dests
                    .iter()
                    .map(|d| &d["destination"])
                    .chain(route.get("mirror"));
                for d in named {
                    let subset = d["subset"].as_str().unwrap_or_default();
                    assert!(
                        subsets.contains_key(subset),
                        "{file} http[{i}]: subset {subset:?}"
                    );
                }
            }
            assert!(
                http.last().is_some_and(|r| r.get("match").is_none()),
                "{file}: the last route must be a catch-all so unmatched calls never fail"
            );
            for headers in [vec![], vec![("x-user-group", "beta")]] {
                let stream = &http[first_match(http, STREAM, &headers)];
                assert!(
                    stream.get("timeout").is_none() || stream["timeout"] == "0s",
                    "{file}: DetectStream {headers:?} gets a route timeout (it kills long streams)"
                );
                assert_eq!(
                    stream["retries"]["attempts"], 0,
                    "{file}: DetectStream retries"
                );
                assert!(
                    stream.get("mirror").is_none(),
                    "{file}: streams are not mirrored"
                );
                let unary = &http[first_match(http, UNARY, &headers)];
                assert!(
                    unary.get("timeout").is_some(),
                    "{file}: unary route has no timeout"
                );
                let retry_on = unary["retries"]["retryOn"].as_str().unwrap_or_default();
                for condition in ["unavailable", "connect-failure", "refused-stream"] {
                    assert!(
                        retry_on.contains(condition),
                        "{file}: retryOn lacks {condition}"
                    );
                }
            }
        }
    }
}

#[test]
fn gateway_api_routes_name_real_services_and_keep_a_catch_all() {
    let mut services = BTreeMap::new();
    let mut routes = Vec::new();
    for path in kube::yaml_files("istio") {
        for doc in kube::file(&path) {
            match kube::kind(&doc) {
                "Service" => {
                    services.insert(kube::name(&doc).to_owned(), doc.clone());
                }
                "GRPCRoute" => routes.push((path.clone(), doc.clone())),
                _ => {}
            }
        }
    }
    let overlay = kube::pods(&kube::documents(&kube::render("k8s/overlays/istio")));
    services.insert(
        "switchyard".into(),
        serde_json::json!({"spec": {"selector": {"app": "switchyard"}}}),
    );
    assert!(routes.len() >= 2, "GRPCRoutes for canary and A/B");
    for (path, route) in routes {
        let rules = route["spec"]["rules"].as_array().expect("rules");
        for (i, rule) in rules.iter().enumerate() {
            let backends = rule["backendRefs"].as_array().expect("backendRefs");
            if backends.len() > 1 {
                let total: u64 = backends
                    .iter()
                    .map(|b| b["weight"].as_u64().unwrap_or(1))
                    .sum();
                assert_eq!(total, 100, "{path} rule {i}: weights");
            }
            for backend in backends {
                let name = backend["name"].as_str().unwrap_or_default();
                let service = services
                    .get(name)
                    .unwrap_or_else(|| panic!("{path}: backend {name} is not a Service here"));
                let selector = kube::string_map(&service["spec"]["selector"]);
                assert!(
                    overlay.iter().any(|p| kube::selects(&selector, &p.labels)),
                    "{path}: Service {name} selects no pod of the istio overlay"
                );
            }
        }
        assert!(
            rules.iter().any(|r| r.get("matches").is_none()),
            "{path}: no catch-all rule"
        );
    }
}

#[test]
fn the_image_runs_serve_as_the_pods_user() {
    let dockerfile =
        std::fs::read_to_string(kube::root().join("Dockerfile")).expect("a Dockerfile");
    let entrypoint = dockerfile
        .lines()
        .rfind(|l| l.starts_with("ENTRYPOINT"))
        .expect("ENTRYPOINT");
    assert!(entrypoint.contains("\"serve\""), "{entrypoint}");
    let user = dockerfile
        .lines()
        .rfind(|l| l.starts_with("USER"))
        .expect("USER");
    let uid: u64 = user
        .trim_start_matches("USER")
        .trim()
        .split(':')
        .next()
        .and_then(|u| u.parse().ok())
        .expect("a numeric USER");
    let docs = kube::documents(&kube::render("k8s/base"));
    let pod = &kube::pods(&docs)[0];
    assert_eq!(pod.spec["securityContext"]["runAsUser"], uid);
}

/// Runs `scripts/manifests` (what `.ci/run` validates) on `root`.
fn manifest_targets(root: &std::path::Path) -> std::process::Output {
    Command::new(kube::venv_tool("SWITCHYARD_PYTHON", "python"))
        .arg(kube::root().join("scripts/manifests"))
        .arg(root)
        .output()
        .expect("scripts/manifests runs")
}

#[test]
fn ci_validates_every_overlay_component_and_file_the_readme_applies() {
    let out = manifest_targets(&kube::root());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let listed: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    // Every overlay directory is rendered by CI, and by these tests.
    let overlays: Vec<String> = std::fs::read_dir(kube::root().join("k8s/overlays"))
        .expect("k8s/overlays")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    for overlay in &overlays {
        let dir = format!("k8s/overlays/{overlay}");
        assert!(
            listed.contains(&dir),
            "{dir} is not validated by CI: {listed:?}"
        );
        assert!(
            OVERLAYS.contains(&overlay.as_str()),
            "{dir} is not in tests/api/kube.rs OVERLAYS, so these tests skip it"
        );
    }
    for file in [
        "istio/virtualservice-ab.yaml",
        "istio/virtualservice-shadow.yaml",
        "istio/virtualservice-blue-green.yaml",
        "istio/gateway-api/grpcroute-ab.yaml",
        ".tools/manifests/with-classic-sidecar",
        ".tools/manifests/with-priority-class",
    ] {
        assert!(listed.iter().any(|l| l == file), "{file} not in {listed:?}");
    }
}

/// The control: a README path CI does not validate fails the listing, and a
/// new component is picked up (rendered inside the istio overlay) without
/// being listed anywhere by hand.
#[test]
fn the_manifest_listing_fails_on_what_would_escape_validation() {
    let tree = tempfile::tempdir().expect("tempdir");
    let root = tree.path();
    for dir in ["k8s", "istio"] {
        let out = Command::new("cp")
            .arg("-r")
            .arg(kube::root().join(dir))
            .arg(root.join(dir))
            .output()
            .expect("cp");
        assert!(out.status.success());
    }
    let readme = |text: &str| std::fs::write(root.join("README.md"), text).expect("README");
    readme("kubectl apply -f istio/virtualservice-canary.yaml\n");
    assert!(
        manifest_targets(root).status.success(),
        "the copy is covered"
    );

    std::fs::create_dir_all(root.join("k8s/components/new-one")).expect("mkdir");
    std::fs::write(
        root.join("k8s/components/new-one/kustomization.yaml"),
        "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\n",
    )
    .expect("component");
    let out = manifest_targets(root);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(".tools/manifests/with-new-one"),
        "a new component is rendered for validation"
    );

    readme(
        "kubectl apply -k k8s/overlays/nowhere\nkubectl apply -f istio/virtualservice-canary.yaml\n",
    );
    let out = manifest_targets(root);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("k8s/overlays/nowhere"), "{stderr}");
    assert!(!stderr.contains("canary"), "{stderr}");
}

/// The one object of `kind` named `name` in a rendering.
fn object<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    let found: Vec<&Value> = kube::of_kind(docs, kind)
        .into_iter()
        .filter(|d| kube::name(d) == name)
        .collect();
    assert_eq!(found.len(), 1, "{kind}/{name}: {} found", found.len());
    found[0]
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// The server-fault codes a query counts (`grpc_code=~"..."`).
fn failure_codes(query: &str) -> &str {
    let start = query
        .find("grpc_code=~\"")
        .unwrap_or_else(|| panic!("no grpc_code matcher in {query}"))
        + "grpc_code=~\"".len();
    let end = query[start..].find('"').expect("closing quote") + start;
    &query[start..end]
}

/// The route of `http` named `name`.
fn route<'a>(http: &'a [Value], name: &str) -> &'a Value {
    http.iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no VirtualService route named {name}"))
}

/// The identity the AuthorizationPolicy lets call switchyard.v1.Admin.
fn admin_principal(docs: &[Value]) -> String {
    let policy = object(
        docs,
        "AuthorizationPolicy",
        "switchyard-admin-operator-only",
    );
    let principal = strings(&policy["spec"]["rules"][0]["from"][0]["source"]["notPrincipals"])[0];
    principal.to_owned()
}

/// Parses a container's args as the binary's command line.
fn command_line(container: &Value) -> switchyard::cli::Command {
    use clap::Parser;
    let args: Vec<String> = std::iter::once("switchyard")
        .chain(strings(&container["args"]))
        .map(str::to_owned)
        .collect();
    switchyard::cli::Cli::try_parse_from(&args)
        .unwrap_or_else(|e| panic!("the binary rejects {args:?}: {e}"))
        .command()
}

#[test]
fn the_argo_rollout_moves_istio_weights_and_is_judged_on_grpc_codes() {
    let docs = kube::documents(&kube::render("k8s/overlays/argo-rollouts"));
    let rollout = object(&docs, "Rollout", "switchyard");
    let pod = Pod::of(rollout);
    let canary = &rollout["spec"]["strategy"]["canary"];
    // The base's zero-downtime budget.
    assert_eq!(canary["maxSurge"], 1);
    assert_eq!(canary["maxUnavailable"], 0);
    // The smoke test's --expect-version reads the Rollout's version label.
    assert_eq!(
        rollout["metadata"]["labels"]["version"].as_str(),
        Some(pod.settings.deployment.version.as_str()),
        "the Rollout's version label and --app-version differ"
    );

    // Istio: the subsets Argo pins and the routes whose weights it moves.
    let istio = &canary["trafficRouting"]["istio"];
    let rule = object(
        &docs,
        "DestinationRule",
        istio["destinationRule"]["name"].as_str().expect("name"),
    );
    let subsets = rule["spec"]["subsets"].as_array().expect("subsets");
    for key in ["stableSubsetName", "canarySubsetName"] {
        let name = istio["destinationRule"][key].as_str().expect(key);
        let subset = subsets
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no subset {name}"));
        assert!(
            kube::selects(&kube::string_map(&subset["labels"]), &pod.labels),
            "subset {name} does not select the Rollout's pods"
        );
    }
    let service = object(
        &docs,
        "VirtualService",
        istio["virtualService"]["name"].as_str().expect("name"),
    );
    let http = service["spec"]["http"].as_array().expect("http");
    let managed = strings(&istio["virtualService"]["routes"]);
    assert_eq!(
        managed.len(),
        http.len(),
        "every route moves with the canary"
    );
    for name in &managed {
        let destinations = route(http, name)["route"].as_array().expect("route");
        let by_subset: BTreeMap<&str, u64> = destinations
            .iter()
            .map(|d| {
                (
                    d["destination"]["subset"].as_str().expect("subset"),
                    d["weight"].as_u64().expect("weight"),
                )
            })
            .collect();
        assert_eq!(
            by_subset,
            BTreeMap::from([("canary", 0), ("stable", 100)]),
            "route {name}"
        );
    }
    let stream = &http[first_match(http, "/switchyard.v1.Detector/DetectStream", &[])];
    assert!(managed.contains(&stream["name"].as_str().expect("name")));
    assert_eq!(
        stream["retries"]["attempts"], 0,
        "DetectStream is never retried"
    );
    assert!(
        stream.get("timeout").is_none(),
        "DetectStream has no timeout"
    );
    let canary_service = object(
        &docs,
        "Service",
        canary["canaryService"].as_str().expect("canaryService"),
    );
    assert!(kube::selects(
        &kube::string_map(&canary_service["spec"]["selector"]),
        &pod.labels
    ));

    // Analysis: every template used exists and gets every argument it needs;
    // the step template is the background one with a count.
    let mut uses: Vec<&Value> = vec![&canary["analysis"]];
    uses.extend(
        canary["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .filter_map(|s| s.get("analysis")),
    );
    assert!(
        uses.len() >= 4,
        "background, smoke and a step analysis per weight"
    );
    for usage in &uses {
        let given: Vec<&str> = usage["args"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a["name"].as_str())
            .collect();
        for template in usage["templates"].as_array().expect("templates") {
            let name = template["templateName"].as_str().expect("templateName");
            let template = object(&docs, "AnalysisTemplate", name);
            for arg in template["spec"]["args"].as_array().expect("args") {
                let arg = arg["name"].as_str().expect("arg name");
                assert!(given.contains(&arg), "{name} needs argument {arg}");
            }
        }
    }
    let background = object(&docs, "AnalysisTemplate", "switchyard-canary");
    let step = object(&docs, "AnalysisTemplate", "switchyard-canary-step");
    let metrics = background["spec"]["metrics"].as_array().expect("metrics");
    let step_metrics = step["spec"]["metrics"].as_array().expect("metrics");
    assert_eq!(metrics.len(), step_metrics.len());
    for (b, s) in metrics.iter().zip(step_metrics) {
        assert!(
            b.get("count").is_none(),
            "the background analysis runs to the end"
        );
        assert!(
            s["count"].as_u64().is_some_and(|c| c > 1),
            "a step analysis ends"
        );
        let mut without_count = s.clone();
        without_count
            .as_object_mut()
            .expect("object")
            .remove("count");
        assert_eq!(
            &without_count, b,
            "the step metric differs from the background one"
        );
    }
    assert_eq!(background["spec"]["dryRun"], step["spec"]["dryRun"]);

    // The smoke Job runs `switchyard smoke` against the canary Service, as
    // the one identity allowed to call Admin/GetInfo.
    let smoke = object(&docs, "AnalysisTemplate", "switchyard-smoke");
    let job = &smoke["spec"]["metrics"][0]["provider"]["job"]["spec"]["template"]["spec"];
    let mut container = job["containers"][0].clone();
    let args: Vec<String> = strings(&container["args"])
        .iter()
        .map(|a| a.replace("{{args.canary-version}}", "v2"))
        .collect();
    container["args"] = serde_json::json!(args);
    match command_line(&container) {
        switchyard::cli::Command::Smoke(smoke) => {
            assert_eq!(smoke.expect_version.as_deref(), Some("v2"));
            // The tools' own address parser: the Job's `--addr` is usable.
            let target: switchyard::tools::client::Target =
                smoke.addr.parse().expect("the smoke Job's --addr");
            assert_eq!(
                target.host(),
                format!(
                    "{}.switchyard.svc.cluster.local",
                    kube::name(canary_service)
                )
            );
        }
        other => panic!("the smoke Job runs {other:?}"),
    }
    let account = job["serviceAccountName"]
        .as_str()
        .expect("serviceAccountName");
    object(&docs, "ServiceAccount", account);
    assert_eq!(
        admin_principal(&docs),
        format!("cluster.local/ns/switchyard/sa/{account}")
    );
}

#[test]
fn the_flagger_canary_is_judged_on_grpc_codes_and_smoke_tested_first() {
    let docs = kube::documents(&kube::render("k8s/overlays/flagger"));
    let canary = object(&docs, "Canary", "switchyard");
    let target = canary["spec"]["targetRef"]["name"]
        .as_str()
        .expect("targetRef");
    let deployment = object(&docs, "Deployment", target);
    let pod = Pod::of(deployment);
    // Flagger generates the Services, VirtualService and DestinationRules.
    for kind in ["Service", "VirtualService", "DestinationRule"] {
        assert!(
            kube::of_kind(&docs, kind)
                .iter()
                .all(|d| kube::name(d) != target),
            "{kind}/{target} would fight Flagger's own"
        );
    }
    // One generated route for every method, so stream-safe: no retries, no timeout.
    let service = &canary["spec"]["service"];
    assert_eq!(service["retries"]["attempts"], 0);
    assert!(service.get("timeout").is_none());
    let grpc_port = u64::from(pod.settings.server.grpc_addr.port());
    assert_eq!(service["port"], grpc_port);
    assert_eq!(service["targetPort"], grpc_port);

    // Custom MetricTemplates only, each with a threshold.
    let analysis = &canary["spec"]["analysis"];
    for metric in analysis["metrics"].as_array().expect("metrics") {
        let name = metric["name"].as_str().expect("name");
        assert!(
            !["request-success-rate", "request-duration"].contains(&name),
            "{name}: Flagger's built-in HTTP metric"
        );
        object(
            &docs,
            "MetricTemplate",
            metric["templateRef"]["name"].as_str().expect("templateRef"),
        );
        assert!(metric["thresholdRange"].is_object(), "{name}: no threshold");
    }
    let weights: Vec<u64> = analysis["stepWeights"]
        .as_array()
        .expect("stepWeights")
        .iter()
        .map(|w| w.as_u64().expect("a weight"))
        .collect();
    assert!(weights.windows(2).all(|w| w[0] < w[1]) && weights[0] <= 10);

    // The pre-rollout webhook reaches the smoke runner, which smoke-tests the
    // canary Service Flagger generates (`<target>-canary`).
    let hook = analysis["webhooks"]
        .as_array()
        .expect("webhooks")
        .iter()
        .find(|w| w["type"] == "pre-rollout")
        .expect("a pre-rollout webhook");
    let url = hook["url"].as_str().expect("url");
    let authority = url
        .strip_prefix("http://")
        .and_then(|u| u.split('/').next())
        .expect("an http URL");
    let (host, port) = authority.split_once(':').expect("host:port");
    let runner = host.split('.').next().expect("service name");
    let runner_service = object(&docs, "Service", runner);
    let port: u64 = port.parse().expect("port");
    assert!(
        runner_service["spec"]["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .any(|p| p["port"] == port),
        "Service {runner} has no port {port}"
    );
    let selector = kube::string_map(&runner_service["spec"]["selector"]);
    let runner_deployment = kube::of_kind(&docs, "Deployment")
        .into_iter()
        .find(|d| {
            kube::selects(
                &selector,
                &kube::string_map(&d["spec"]["template"]["metadata"]["labels"]),
            )
        })
        .expect("a Deployment behind the webhook Service");
    let runner_pod = &runner_deployment["spec"]["template"]["spec"];
    match command_line(&runner_pod["containers"][0]) {
        switchyard::cli::Command::SmokeWebhook(args) => {
            let target_port = runner_service["spec"]["ports"][0]["targetPort"].as_u64();
            assert_eq!(Some(u64::from(args.listen.port())), target_port);
        }
        other => panic!("the webhook runner runs {other:?}"),
    }
    let addr = hook["metadata"]["addr"].as_str().expect("metadata.addr");
    let _: switchyard::tools::client::Target = addr.parse().expect("metadata.addr is a target");
    assert_eq!(
        addr,
        format!("{target}-canary.switchyard.svc.cluster.local:{grpc_port}")
    );
    let account = runner_pod["serviceAccountName"].as_str().expect("account");
    object(&docs, "ServiceAccount", account);
    assert_eq!(
        admin_principal(&docs),
        format!("cluster.local/ns/switchyard/sa/{account}")
    );
    // Admin stays operator-only on the primary's pods too.
    let guarded: Vec<&str> = kube::of_kind(&docs, "AuthorizationPolicy")
        .iter()
        .filter_map(|p| p["spec"]["selector"]["matchLabels"]["app"].as_str())
        .collect();
    assert!(guarded.contains(&target) && guarded.contains(&format!("{target}-primary").as_str()));
}

#[test]
fn the_analyses_and_the_slo_rules_count_the_same_failures_from_the_same_scrape() {
    let argo = kube::documents(&kube::render("k8s/overlays/argo-rollouts"));
    let flagger = kube::documents(&kube::render("k8s/overlays/flagger"));
    let rule = &kube::file("k8s/components/monitoring/prometheusrule.yaml")[0];
    let slo_codes = failure_codes(
        rule["spec"]["groups"][1]["rules"][0]["expr"]
            .as_str()
            .expect("expr"),
    )
    .to_owned();
    // Every rule that counts failures counts these.
    for group in rule["spec"]["groups"].as_array().expect("groups") {
        for r in group["rules"].as_array().expect("rules") {
            let expr = r["expr"].as_str().expect("expr");
            if expr.contains("grpc_code") {
                assert_eq!(failure_codes(expr), slo_codes, "{expr}");
            }
        }
    }
    let mut queries = Vec::new();
    for template in kube::of_kind(&argo, "AnalysisTemplate") {
        for metric in template["spec"]["metrics"].as_array().expect("metrics") {
            if let Some(prometheus) = metric["provider"].get("prometheus") {
                queries.push((prometheus["address"].clone(), prometheus["query"].clone()));
            }
        }
    }
    for template in kube::of_kind(&flagger, "MetricTemplate") {
        queries.push((
            template["spec"]["provider"]["address"].clone(),
            template["spec"]["query"].clone(),
        ));
    }
    assert!(queries.len() >= 6, "{queries:?}");
    let address = &queries[0].0;
    for (addr, query) in &queries {
        assert_eq!(addr, address, "one Prometheus for every analysis");
        let query = query.as_str().expect("query");
        if query.contains("grpc_server_handled_total") {
            assert_eq!(failure_codes(query), slo_codes, "{query}");
        }
        if query.contains("grpc_server") {
            assert!(
                query.contains("shadow=\"false\""),
                "mirrored traffic counted: {query}"
            );
        }
    }
    // Every code in the list is a gRPC-Go name the server emits.
    for code in slo_codes.split('|') {
        assert!(
            (0..=16).any(|c| switchyard::metrics::code_name(tonic::Code::from_i32(c)) == code),
            "{code} is not a grpc_code value"
        );
    }

    // The scrape: the PodMonitor selects both Switchyard's and Flagger's
    // primary pods on the admin port they declare, and writes the label the
    // AnalysisTemplate selects ReplicaSets by.
    let monitor = object(&argo, "PodMonitor", "switchyard");
    let endpoint = &monitor["spec"]["podMetricsEndpoints"][0];
    let pod = &kube::pods(&argo)[0];
    let port = endpoint["port"].as_str().expect("port name");
    let declared = pod.container["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .find(|p| p["name"] == port)
        .unwrap_or_else(|| panic!("no containerPort {port}"));
    assert_eq!(
        declared["containerPort"],
        u64::from(pod.settings.server.admin_addr.port())
    );
    assert_eq!(endpoint["path"], "/metrics");
    let mut primary = pod.labels.clone();
    primary.insert("app".into(), "switchyard-primary".into());
    for labels in [&pod.labels, &primary] {
        assert!(kube::label_selector_matches(
            &monitor["spec"]["selector"],
            labels
        ));
    }
    let relabel = endpoint["relabelings"]
        .as_array()
        .expect("relabelings")
        .iter()
        .find(|r| {
            strings(&r["sourceLabels"])
                == ["__meta_kubernetes_pod_label_rollouts_pod_template_hash"]
        })
        .expect("the pod-template-hash relabeling");
    let label = relabel["targetLabel"].as_str().expect("targetLabel");
    let background = object(&argo, "AnalysisTemplate", "switchyard-canary");
    for metric in background["spec"]["metrics"].as_array().expect("metrics") {
        let query = metric["provider"]["prometheus"]["query"]
            .as_str()
            .expect("query");
        assert!(
            query.contains(&format!("{label}=\"{{{{args.canary-hash}}}}\"")),
            "{query}"
        );
    }
}
