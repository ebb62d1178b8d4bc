//! Reading the manifests as Kubernetes would: overlays rendered by
//! `kubectl kustomize`, YAML documents as JSON values, and the Deployments'
//! container arguments run through the binary's own CLI parser. Support for
//! `manifests.rs` and `envoy.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Parser;
use serde_json::Value;
use switchyard::cli::{Cli, Command as SubCommand};
use switchyard::configuration::Settings;

pub const OVERLAYS: &[&str] = &[
    "recreate",
    "rolling",
    "blue-green",
    "canary",
    "istio",
    "argo-rollouts",
    "flagger",
];

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A test tool: `$env_var` if set, else `.tools/venv/bin/<name>`. Fails the
/// test with the fix when it is missing.
pub fn venv_tool(env_var: &str, name: &str) -> PathBuf {
    let path = std::env::var_os(env_var)
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".tools/venv/bin").join(name));
    assert!(
        path.is_file(),
        "{name} not found at {}: run ./scripts/test (it installs {name} into .tools/) or set {env_var}",
        path.display()
    );
    path
}

/// Runs `script` with the test venv's Python (`$SWITCHYARD_PYTHON`), `args`
/// after it and `input` on stdin; returns stdout, failing the test with
/// stderr and `what` when the script fails.
pub fn python(script: &str, args: &[&str], input: &str, what: &str) -> Vec<u8> {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(venv_tool("SWITCHYARD_PYTHON", "python"))
        .args(["-c", script])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("python finishes");
    assert!(
        out.status.success(),
        "{what}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// kubectl (`$SWITCHYARD_KUBECTL` or the one on PATH), for
/// `kubectl kustomize`, which renders offline.
pub fn kubectl() -> PathBuf {
    let named = std::env::var_os("SWITCHYARD_KUBECTL").map(PathBuf::from);
    let found = named.clone().filter(|p| p.is_file()).or_else(|| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("kubectl"))
                .find(|p| p.is_file())
        })
    });
    found.unwrap_or_else(|| {
        panic!(
            "kubectl not found ({}): the manifest tests render overlays with `kubectl kustomize`; install kubectl or set SWITCHYARD_KUBECTL",
            named.map_or("not on PATH".into(), |p| format!("SWITCHYARD_KUBECTL={}", p.display()))
        )
    })
}

/// Runs a command to completion; panics with its output if it fails.
pub fn run(command: &mut Command) -> String {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?} does not start: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// `kubectl kustomize <dir>` (relative to the repository root).
pub fn render(dir: &str) -> String {
    run(Command::new(kubectl())
        .arg("kustomize")
        .arg(root().join(dir)))
}

/// Every document of a YAML stream, as JSON values (empty ones skipped).
pub fn documents(yaml: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|doc| Value::deserialize(doc).expect("valid YAML"))
        .filter(|doc| !doc.is_null())
        .collect()
}

/// The documents of one YAML file (relative to the repository root).
pub fn file(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(root().join(path))
        .unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    documents(&text)
}

/// Every `*.yaml` file under `dir` (relative), recursively, sorted.
pub fn yaml_files(dir: &str) -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
            .map(|e| e.expect("dir entry").path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&root().join(dir), &mut out);
    out.iter()
        .map(|p| {
            p.strip_prefix(root())
                .expect("under root")
                .display()
                .to_string()
        })
        .collect()
}

pub fn kind(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or("")
}

pub fn name(doc: &Value) -> &str {
    doc["metadata"]["name"].as_str().unwrap_or("")
}

/// The documents of `kind`.
pub fn of_kind<'a>(docs: &'a [Value], k: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| kind(d) == k).collect()
}

/// A string map (labels, selectors) as a sorted map.
pub fn string_map(value: &Value) -> BTreeMap<String, String> {
    value
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `labels` has every pair of `selector`.
pub fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// A Deployment's (or Rollout's) pod: its labels, its `switchyard` container, the settings
/// the binary derives from the container's args.
pub struct Pod {
    pub deployment: String,
    pub labels: BTreeMap<String, String>,
    pub spec: Value,
    pub container: Value,
    pub settings: Settings,
}

impl Pod {
    /// Reads a Deployment; its args must parse with the binary's CLI parser
    /// (`switchyard serve ARGS`, the image's entrypoint) and load as
    /// settings, with the container's literal env as the environment.
    pub fn of(deployment: &Value) -> Pod {
        let name = name(deployment).to_owned();
        let spec = deployment["spec"]["template"]["spec"].clone();
        let container = spec["containers"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["name"] == "switchyard"))
            .unwrap_or_else(|| panic!("{name}: no container named switchyard"))
            .clone();
        let args: Vec<String> = container["args"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|v| v.as_str().expect("args are strings").to_owned())
                    .collect()
            })
            .unwrap_or_default();
        let argv = ["switchyard", "serve"]
            .into_iter()
            .map(str::to_owned)
            .chain(args.iter().cloned());
        let cli = Cli::try_parse_from(argv)
            .unwrap_or_else(|e| panic!("{name}: the binary rejects args {args:?}: {e}"));
        let serve = match cli.command {
            Some(SubCommand::Serve(serve)) => serve,
            other => panic!("{name}: args {args:?} are not `serve` flags: {other:?}"),
        };
        let env: std::collections::HashMap<String, String> = container["env"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| {
                Some((
                    e["name"].as_str()?.to_owned(),
                    e["value"].as_str()?.to_owned(),
                ))
            })
            .collect();
        let settings = Settings::load(&env, &serve.overrides())
            .unwrap_or_else(|e| panic!("{name}: args {args:?} do not load: {e}"));
        Pod {
            labels: string_map(&deployment["spec"]["template"]["metadata"]["labels"]),
            deployment: name,
            spec,
            container,
            settings,
        }
    }
}

/// The workloads in `docs` that own pods: Deployments and Argo Rollouts.
pub fn workloads(docs: &[Value]) -> Vec<&Value> {
    docs.iter()
        .filter(|d| matches!(kind(d), "Deployment" | "Rollout"))
        .collect()
}

/// The pod labels of every workload in `docs` (Switchyard's and helpers').
pub fn pod_labels(docs: &[Value]) -> Vec<BTreeMap<String, String>> {
    workloads(docs)
        .into_iter()
        .map(|w| string_map(&w["spec"]["template"]["metadata"]["labels"]))
        .collect()
}

/// Whether a `LabelSelector` (`matchLabels` and `In` / `NotIn` /
/// `Exists` / `DoesNotExist` expressions) selects `labels`. An empty
/// selector selects nothing here: none of ours is meant to.
pub fn label_selector_matches(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    let match_labels = string_map(&selector["matchLabels"]);
    let expressions = selector["matchExpressions"].as_array();
    if match_labels.is_empty() && expressions.is_none_or(Vec::is_empty) {
        return false;
    }
    selects(&match_labels, labels)
        && expressions.into_iter().flatten().all(|e| {
            let key = e["key"].as_str().expect("a key");
            let values: Vec<&str> = e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let value = labels.get(key).map(String::as_str);
            match e["operator"].as_str().expect("an operator") {
                "In" => value.is_some_and(|v| values.contains(&v)),
                "NotIn" => !value.is_some_and(|v| values.contains(&v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                other => panic!("unknown selector operator {other}"),
            }
        })
}

/// The pods of every Switchyard workload (pod label `app: switchyard`) in
/// `docs`: Deployments and Argo Rollouts.
pub fn pods(docs: &[Value]) -> Vec<Pod> {
    workloads(docs)
        .into_iter()
        .filter(|w| w["spec"]["template"]["metadata"]["labels"]["app"] == "switchyard")
        .map(Pod::of)
        .collect()
}
