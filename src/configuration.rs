//! Settings: plain documented data, layered and validated once at start.
//!
//! Layers, lowest first: built-in defaults < optional file (`--config`, YAML
//! or TOML) < environment `SWITCHYARD__SECTION__KEY` < command-line flags.
//! The environment is read through a map the caller passes in, so tests inject
//! values instead of mutating the process environment; [`process_env`] is the
//! one place that reads the process's (clippy refuses `std::env::var`
//! elsewhere, see `clippy.toml`).
//!
//! Every default lives in the `Default` impls below, next to the field it
//! sets and the reason for it; the layering starts from
//! [`Settings::default`], and `serve --help` prints the same values
//! ([`Settings::default_of`]). Durations are [`Duration`]s, written as
//! humantime strings (`5s`, `250ms`, `5m`) or plain seconds (`2.5`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::engine::EngineKind;

/// Every setting of a running replica.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Listeners and request limits.
    pub server: ServerSettings,
    /// The graceful drain after SIGTERM/SIGINT.
    pub drain: DrainSettings,
    /// Who this replica is in a rollout.
    pub deployment: DeploymentSettings,
    /// Language detection.
    pub detector: DetectorSettings,
    /// Health reporting.
    pub health: HealthSettings,
    /// Logs.
    pub log: LogSettings,
    /// Traces.
    #[serde(default)]
    pub telemetry: TelemetrySettings,
    /// Feature flags.
    pub flags: FlagsSettings,
    /// Dark launches (the `dark-launch-engine` flag).
    pub dark_launch: DarkLaunchSettings,
    /// The life of each gRPC connection: age, keepalive, HTTP/2 limits.
    pub connection: ConnectionSettings,
}

/// The life of each gRPC connection (see the README's "Connections"). Each
/// default is chosen for Kubernetes without a mesh, where clients keep one
/// HTTP/2 connection for their whole life, and is harmless behind Istio's
/// sidecar, which reconnects on its own.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionSettings {
    /// After this age (±10 % jitter per connection, gRFC A9) a connection
    /// gets HTTP/2 GOAWAY, so clients reconnect and a scale-out or a new pod
    /// gets its share through an L4 balancer. `off` never ages connections.
    /// Default 5m: rebalances within minutes for one reconnect per client
    /// per 5 minutes.
    #[serde(with = "optional_duration")]
    pub max_age: Option<Duration>,
    /// How long calls in flight may run after the age GOAWAY before the
    /// connection is closed (bounds clients that ignore GOAWAY and
    /// long-lived streams). `off`: no bound. Default 30s: unary calls take
    /// milliseconds; a DetectStream client reconnects on UNAVAILABLE.
    #[serde(with = "optional_duration")]
    pub max_age_grace: Option<Duration>,
    /// HTTP/2 PING to an idle peer every interval; `off` disables. Default
    /// 60s: a vanished peer (node gone, NAT entry dropped) is found within
    /// interval + timeout and its resources freed, for one PING a minute.
    #[serde(with = "optional_duration")]
    pub http2_keepalive_interval: Option<Duration>,
    /// How long a PING may go unanswered before the connection is closed.
    /// Default 20s (what gRPC servers use).
    #[serde(with = "duration")]
    pub http2_keepalive_timeout: Duration,
    /// TCP keepalive idle time; `off` disables. Default 60s: catches
    /// half-open connections even with HTTP/2 keepalive off.
    #[serde(with = "optional_duration")]
    pub tcp_keepalive: Option<Duration>,
    /// Streams open at once on one connection (SETTINGS_MAX_CONCURRENT_STREAMS).
    /// Default 256, the whole server's `server.max_concurrent_requests`: one
    /// connection (an Istio sidecar's) may use all of it and never more, and
    /// a stream flood on one connection is bounded.
    pub max_concurrent_streams: u32,
    /// Largest header list accepted, in bytes (SETTINGS_MAX_HEADER_LIST_SIZE).
    /// Default 16384: gRPC metadata (trace context, `x-user-id`) is far
    /// smaller; a larger limit only helps an attacker use memory.
    pub max_header_list_size: u32,
    /// Streams a client may open and reset before they are accepted before
    /// the connection gets GOAWAY: the HTTP/2 rapid-reset defence
    /// (CVE-2023-44487). Default 20 (h2's).
    pub max_pending_accept_reset_streams: usize,
}

/// A duration setting: plain seconds (`2`, `0.5`) or a humantime string
/// (`2s`, `500ms`, `5m`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds)
            .map_err(|_| format!("expected a duration such as 2s, 500ms or 5, got {text:?}"));
    }
    humantime::parse_duration(text)
        .map_err(|_| format!("expected a duration such as 2s, 500ms or 5, got {text:?}"))
}

/// serde for a [`Duration`] setting written as [`parse_duration`] reads it.
mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    /// A number of seconds or a string.
    #[derive(Deserialize)]
    #[serde(untagged)]
    pub(super) enum Raw {
        Number(f64),
        Text(String),
    }

    pub(super) fn from_raw(raw: Raw) -> Result<Duration, String> {
        match raw {
            Raw::Number(n) => super::parse_duration(&n.to_string()),
            Raw::Text(t) => super::parse_duration(&t),
        }
    }

    pub fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*value).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        from_raw(Raw::deserialize(d)?).map_err(D::Error::custom)
    }
}

/// serde for an optional [`Duration`] setting: `off` or `0` disables it.
mod optional_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    use super::duration::{Raw, from_raw};

    pub fn serialize<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_str("off"),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        match Raw::deserialize(d)? {
            Raw::Text(t) if t.trim().eq_ignore_ascii_case("off") => Ok(None),
            raw => from_raw(raw)
                .map(|d| Some(d).filter(|d| !d.is_zero()))
                .map_err(|e| D::Error::custom(format!("{e} (or off)"))),
        }
    }
}

/// Feature flags (flagd format).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlagsSettings {
    /// A directory (a mounted ConfigMap: every `*.json`, `*.yaml`, `*.yml`)
    /// or a single file. Unset: the built-in flags (`flags/flags.json`).
    pub path: Option<PathBuf>,
    /// Time between safety-net re-reads of the source (the directory
    /// watch normally reloads within milliseconds). Default 10s: a missed
    /// event costs at most ten seconds, for one read and hash of the
    /// source's files (a few KiB; unchanged content is not parsed).
    #[serde(with = "duration")]
    pub poll_interval: Duration,
    /// Time to wait after a change event before reloading, so one
    /// ConfigMap update (several file events) is one reload. Default 50ms:
    /// the kubelet's swap takes a few milliseconds.
    #[serde(with = "duration")]
    pub debounce: Duration,
    /// Comma-separated request metadata exposed to targeting rules, without
    /// the `x-` prefix (`x-user-group` becomes `user-group`).
    pub context_headers: String,
    /// `v2` | `v3`: how `fractional` buckets. Default `v2`, what flagd's
    /// core does today (MurmurHash3 of the string key); `v3` hashes the
    /// deterministic CBOR of any JSON bucketing value (flagd's
    /// "fractional-non-string-rand-units" design, already in the Python
    /// evaluator `openfeature-flagd-core` 2.x). Switch when every other
    /// evaluator of the same flags buckets with v3, or users change buckets
    /// between services.
    pub fractional_version: crate::flags::FractionalVersion,
}

impl FlagsSettings {
    /// The metadata names, trimmed and lower-cased.
    pub fn headers(&self) -> Vec<String> {
        self.context_headers
            .split(',')
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect()
    }
}

/// Dark launches: the candidate engine runs off the request path.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DarkLaunchSettings {
    /// Candidate detections running at once; when all are busy the candidate
    /// is skipped (and counted), never queued. At most 1,024 (one thread
    /// each, started up front).
    pub max_in_flight: usize,
    /// Time a candidate may take before it counts as a timeout. Default 1s.
    #[serde(with = "duration")]
    pub timeout: Duration,
}

/// Listeners and request limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// gRPC listener (Detector, Admin, Health, reflection). Port 0 picks a
    /// free port; [`crate::startup::Application::grpc_addr`] reports it.
    pub grpc_addr: SocketAddr,
    /// Plain-HTTP admin listener (`/healthz`, `/readyz`, `/metrics`).
    pub admin_addr: SocketAddr,
    /// The kubelet's gRPC listener: the standard Health service only, the
    /// same statuses as on `grpc_addr`, served by the control thread (with
    /// the admin listener) so probes never wait for a busy Detect worker
    /// (see `data_plane_nice`). Default `0.0.0.0:50052`, the port after
    /// the gRPC one, so the pod's ports read as a pair (see
    /// [`crate::threads`]).
    pub probe_addr: SocketAddr,
    /// The nice value (0–19) of the data plane's threads: the runtime that
    /// serves `grpc_addr` and the engine threads; the control thread stays
    /// at the default priority. Default 0: priorities left alone, so the
    /// service competes with the machine's other programs as any program
    /// does. 10 (the manifests' value) puts the probes ahead of Detect: on
    /// two saturated cores the probe listener's p99 drops from a time
    /// slice (4–5 ms) to 0.5 ms (BENCHMARKS.md, "The probe listener"); in
    /// a pod, nice orders only the
    /// container's own threads, so it costs no throughput there.
    pub data_plane_nice: i32,
    /// Detect calls served at once; calls above it are shed with
    /// RESOURCE_EXHAUSTED instead of queueing without bound. At most
    /// 65,536 (the execution queue allocates its slots up front).
    pub max_concurrent_requests: usize,
    /// Largest request message accepted, in bytes; larger ones get
    /// RESOURCE_EXHAUSTED.
    pub max_decoding_message_size: usize,
}

/// The graceful drain (see the README's timing budget).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrainSettings {
    /// Time to keep serving normally after the stop signal while load
    /// balancers and the mesh remove the endpoint. Default 5s: endpoint
    /// removal reaches kube-proxy and Envoy within a few seconds.
    #[serde(with = "duration")]
    pub delay: Duration,
    /// Time to wait for in-flight RPCs after the listener closes before
    /// exiting anyway (with a non-zero code). Default 20s: delay + timeout
    /// fit the pod's 30 s grace period with room for the preStop hook.
    #[serde(with = "duration")]
    pub timeout: Duration,
}

/// The release track a replica serves on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Track {
    Stable,
    Canary,
    Blue,
    Green,
    Shadow,
}

impl Track {
    /// The name used on the wire and in labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Track::Stable => "stable",
            Track::Canary => "canary",
            Track::Blue => "blue",
            Track::Green => "green",
            Track::Shadow => "shadow",
        }
    }
}

impl FromStr for Track {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "stable" => Ok(Track::Stable),
            "canary" => Ok(Track::Canary),
            "blue" => Ok(Track::Blue),
            "green" => Ok(Track::Green),
            "shadow" => Ok(Track::Shadow),
            other => Err(format!(
                "unknown track {other:?} (expected stable, canary, blue, green or shadow)"
            )),
        }
    }
}

/// Who this replica is in a rollout.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentSettings {
    /// The release track, reported in `served_by`.
    pub track: Track,
    /// The release version reported in `served_by`, `GetInfo` and metrics
    /// (e.g. the pod's `version` label, `v1`); defaults to the build version.
    pub version: String,
    /// Pod name (downward API `POD_NAME`; outside Kubernetes `$HOSTNAME`
    /// when exported, else `localhost`).
    pub pod: String,
    /// Namespace (downward API `POD_NAMESPACE`).
    pub namespace: String,
}

/// Language detection.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorSettings {
    /// The engine that answers when nothing else decides. Default lingua:
    /// the one that meets the accuracy goals on the evaluation set (100 % on
    /// 20-40 characters, where whatlang has 94 %; BENCHMARKS.md, "Accuracy").
    pub default_engine: EngineKind,
    /// Longest text accepted, in characters (Unicode scalar values).
    pub max_text_chars: usize,
    /// Engine pool threads, and engine turns: every detection but a light
    /// one (whatlang inline) holds a turn while it runs, inline or on the
    /// pool. 0 (the default) means one per available core (the cgroup CPU
    /// quota counts), so CPU-bound detections never outnumber the cores.
    pub engine_threads: usize,
    /// Texts up to this many characters run inline on the request task:
    /// whatlang at once, lingua once it holds an engine turn; longer ones
    /// go to the engine pool. Default 1000: whatlang takes ~20 µs on a
    /// sentence and ~30 µs at 1,000 characters, lingua ~270 µs and ~440 µs,
    /// so a runtime worker is never held for more than about half a
    /// millisecond; a handoff to another thread costs whatlang more than
    /// its call, and cost lingua 12–16 % of its throughput against a bare
    /// server (BENCHMARKS.md, "Execution model"); 0 sends everything to the
    /// pool.
    pub inline_max_chars: usize,
}

impl DetectorSettings {
    /// [`DetectorSettings::engine_threads`], with 0 resolved to the cores.
    pub fn engine_threads(&self) -> usize {
        match self.engine_threads {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        }
    }
}

/// Health reporting.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSettings {
    /// Time the runtime heartbeat may stall before `liveness` turns
    /// NOT_SERVING (so the kubelet restarts a wedged pod). Default 10s: far
    /// above any pause a healthy runtime has, well under the probe budget.
    #[serde(with = "duration")]
    pub liveness_stall_threshold: Duration,
    /// A file created when ready and removed when the drain begins, for exec
    /// readiness probes (`cat /tmp/ready`). Its directory must exist at
    /// start.
    pub ready_file: Option<PathBuf>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line (the default when stdout is not a terminal).
    Json,
    /// Human-readable lines (the default on a terminal).
    Pretty,
}

/// Logs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// `json` or `pretty`; unset means json unless stdout is a terminal.
    pub format: Option<LogFormat>,
    /// A `tracing` filter such as `info` or `switchyard=debug,info`;
    /// `RUST_LOG` wins when set.
    pub level: String,
}

/// Traces (OpenTelemetry). Export is configured the way the OpenTelemetry
/// specification says, from the environment `load` is given (never the
/// process's): `OTEL_EXPORTER_OTLP_[TRACES_]{ENDPOINT, PROTOCOL, HEADERS,
/// TIMEOUT, COMPRESSION, CERTIFICATE, CLIENT_CERTIFICATE, CLIENT_KEY}`,
/// `OTEL_BSP_*`, `OTEL_TRACES_SAMPLER(_ARG)`, `OTEL_SERVICE_NAME` and
/// `OTEL_RESOURCE_ATTRIBUTES`. Only the endpoint is also a setting (file,
/// `SWITCHYARD__TELEMETRY__OTLP_ENDPOINT`, `--otlp-endpoint`); the rest is
/// read by [`TelemetrySettings::read_env`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySettings {
    /// OTLP collector, e.g. `http://otel-collector:4317`. Export is on
    /// when set (defaults to `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`), off otherwise.
    pub otlp_endpoint: Option<String>,
    /// Everything else, from the `OTEL_*` variables.
    #[serde(skip)]
    pub otel: OtelSettings,
    /// `RUST_LOG`, which wins over `log.level` when set.
    #[serde(skip)]
    pub rust_log: Option<String>,
}

/// OTLP transport (`OTEL_EXPORTER_OTLP_PROTOCOL`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// `grpc` (the default here, as before the variable was read).
    #[default]
    Grpc,
    /// `http/protobuf`.
    HttpProtobuf,
}

/// The sampler (`OTEL_TRACES_SAMPLER`, with its ratio from
/// `OTEL_TRACES_SAMPLER_ARG`, default 1.0).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub enum SamplerSetting {
    AlwaysOn,
    AlwaysOff,
    TraceIdRatio(f64),
    #[default]
    ParentBasedAlwaysOn,
    ParentBasedAlwaysOff,
    ParentBasedTraceIdRatio(f64),
}

/// The `OTEL_*` trace settings, parsed and checked once.
#[derive(Debug, Clone, PartialEq)]
pub struct OtelSettings {
    pub protocol: OtlpProtocol,
    /// The endpoint came from `OTEL_EXPORTER_OTLP_ENDPOINT` (a base URL:
    /// OTLP/HTTP appends `/v1/traces` to it).
    pub endpoint_is_base: bool,
    /// Extra request headers (`key=value,...`, values percent-decoded).
    pub headers: Vec<(String, String)>,
    /// Per export attempt (default 10 s).
    pub timeout: Duration,
    /// `gzip` when set; `none` or unset: no compression.
    pub gzip: bool,
    /// PEM file of the CA(s) that sign the collector's certificate.
    pub certificate: Option<PathBuf>,
    /// PEM files of the client certificate and key (mutual TLS).
    pub client_certificate: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub sampler: SamplerSetting,
    /// `OTEL_SERVICE_NAME`; `switchyard` when unset.
    pub service_name: Option<String>,
    /// `OTEL_RESOURCE_ATTRIBUTES` (`key=value,...`).
    pub resource_attributes: Vec<(String, String)>,
    /// `OTEL_BSP_SCHEDULE_DELAY` (ms, default 5000).
    pub bsp_schedule_delay: Duration,
    /// `OTEL_BSP_EXPORT_TIMEOUT` (ms, default 30000): bounds the final
    /// flush, which the drain also caps at 5 s.
    pub bsp_export_timeout: Duration,
    /// `OTEL_BSP_MAX_QUEUE_SIZE`: spans waiting for export; beyond, new
    /// spans are dropped. Default 32,768: the spec's 2,048 (and 8,192)
    /// drop spans at this service's rate with every call sampled, 32,768
    /// delivers them all for ~12 MB of resident memory, allocated when
    /// export is on (BENCHMARKS.md, section 4). At most 1,048,576.
    pub bsp_max_queue_size: usize,
    /// `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` (default 512).
    pub bsp_max_export_batch_size: usize,
}

/// Upper bound of `server.max_concurrent_requests`.
const MAX_CONCURRENT_REQUESTS: usize = 65_536;
/// Upper bound of `dark_launch.max_in_flight`.
const MAX_DARK_LAUNCH_IN_FLIGHT: usize = 1024;
/// Upper bound of `OTEL_BSP_MAX_QUEUE_SIZE`: 32 times the default.
const MAX_BSP_QUEUE_SIZE: usize = 1 << 20;

/// Spans a replica may hold for export (see [`OtelSettings::bsp_max_queue_size`]).
pub const DEFAULT_BSP_MAX_QUEUE_SIZE: usize = 32_768;

impl Default for OtelSettings {
    fn default() -> Self {
        Self {
            protocol: OtlpProtocol::Grpc,
            endpoint_is_base: false,
            headers: Vec::new(),
            timeout: Duration::from_secs(10),
            gzip: false,
            certificate: None,
            client_certificate: None,
            client_key: None,
            sampler: SamplerSetting::default(),
            service_name: None,
            resource_attributes: Vec::new(),
            bsp_schedule_delay: Duration::from_millis(5000),
            bsp_export_timeout: Duration::from_millis(30_000),
            bsp_max_queue_size: DEFAULT_BSP_MAX_QUEUE_SIZE,
            bsp_max_export_batch_size: 512,
        }
    }
}

impl TelemetrySettings {
    /// Reads the `OTEL_*` variables and `RUST_LOG` from `env` (empty means
    /// unset). A value the specification does not define, or one this
    /// build cannot honour (`http/json`), is an error naming the variable.
    pub fn read_env(&mut self, env: &HashMap<String, String>) -> Result<(), ConfigError> {
        let get = |name: &str| env.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
        // The traces-specific variable first, then the general one.
        let otlp = |suffix: &str| {
            let specific = format!("OTEL_EXPORTER_OTLP_TRACES_{suffix}");
            let general = format!("OTEL_EXPORTER_OTLP_{suffix}");
            match get(&specific) {
                Some(v) => Some((specific, v.to_owned())),
                None => get(&general).map(|v| (general, v.to_owned())),
            }
        };
        let millis = |name: String, value: &str| {
            value
                .parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|_| {
                    ConfigError::setting(&name, format!("must be milliseconds, got {value:?}"))
                })
        };
        let mut o = OtelSettings {
            endpoint_is_base: get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
                && get("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
                && self.otlp_endpoint.as_deref() == get("OTEL_EXPORTER_OTLP_ENDPOINT"),
            ..OtelSettings::default()
        };
        if let Some((name, value)) = otlp("PROTOCOL") {
            o.protocol = match value.as_str() {
                "grpc" => OtlpProtocol::Grpc,
                "http/protobuf" => OtlpProtocol::HttpProtobuf,
                "http/json" => {
                    return Err(ConfigError::setting(
                        &name,
                        "http/json is not supported: use grpc or http/protobuf",
                    ));
                }
                other => {
                    return Err(ConfigError::setting(
                        &name,
                        format!("must be grpc or http/protobuf, got {other:?}"),
                    ));
                }
            };
        }
        if let Some((name, value)) = otlp("HEADERS") {
            o.headers = key_values(&value).map_err(|e| ConfigError::setting(&name, e))?;
            // Checked here for both protocols (the HTTP exporter would drop
            // a header it cannot send without a word).
            for (key, value) in &o.headers {
                if http::HeaderName::from_bytes(key.as_bytes()).is_err() {
                    return Err(ConfigError::setting(
                        &name,
                        format!("{key:?} is not a valid header name"),
                    ));
                }
                if http::HeaderValue::from_str(value).is_err() {
                    return Err(ConfigError::setting(
                        &name,
                        format!("the value of {key:?} is not a valid header value"),
                    ));
                }
            }
        }
        if let Some((name, value)) = otlp("TIMEOUT") {
            o.timeout = millis(name, &value)?;
        }
        if let Some((name, value)) = otlp("COMPRESSION") {
            o.gzip = match value.as_str() {
                "gzip" => true,
                "none" => false,
                other => {
                    return Err(ConfigError::setting(
                        &name,
                        format!("must be gzip or none, got {other:?}"),
                    ));
                }
            };
        }
        for (suffix, field) in [
            ("CERTIFICATE", &mut o.certificate),
            ("CLIENT_CERTIFICATE", &mut o.client_certificate),
            ("CLIENT_KEY", &mut o.client_key),
        ] {
            if let Some((name, value)) = otlp(suffix) {
                let path = PathBuf::from(value);
                if !path.is_file() {
                    return Err(ConfigError::setting(
                        &name,
                        format!("file {} does not exist", path.display()),
                    ));
                }
                *field = Some(path);
            }
        }
        if o.client_certificate.is_some() != o.client_key.is_some() {
            return Err(ConfigError::setting(
                "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
                "and OTEL_EXPORTER_OTLP_CLIENT_KEY must be set together",
            ));
        }
        let ratio = match get("OTEL_TRACES_SAMPLER_ARG") {
            None => 1.0,
            Some(arg) => arg
                .parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or_else(|| {
                    ConfigError::setting(
                        "OTEL_TRACES_SAMPLER_ARG",
                        format!("must be a ratio between 0 and 1, got {arg:?}"),
                    )
                })?,
        };
        if let Some(sampler) = get("OTEL_TRACES_SAMPLER") {
            o.sampler = match sampler {
                "always_on" => SamplerSetting::AlwaysOn,
                "always_off" => SamplerSetting::AlwaysOff,
                "traceidratio" => SamplerSetting::TraceIdRatio(ratio),
                "parentbased_always_on" => SamplerSetting::ParentBasedAlwaysOn,
                "parentbased_always_off" => SamplerSetting::ParentBasedAlwaysOff,
                "parentbased_traceidratio" => SamplerSetting::ParentBasedTraceIdRatio(ratio),
                other => {
                    return Err(ConfigError::setting(
                        "OTEL_TRACES_SAMPLER",
                        format!(
                            "must be always_on, always_off, traceidratio, parentbased_always_on, \
                             parentbased_always_off or parentbased_traceidratio, got {other:?}"
                        ),
                    ));
                }
            };
        }
        o.service_name = get("OTEL_SERVICE_NAME").map(str::to_owned);
        if let Some(value) = get("OTEL_RESOURCE_ATTRIBUTES") {
            o.resource_attributes = key_values(value)
                .map_err(|e| ConfigError::setting("OTEL_RESOURCE_ATTRIBUTES", e))?;
        }
        let count = |name: &str, default: usize| match get(name) {
            None => Ok(default),
            Some(v) => v.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                ConfigError::setting(name, format!("must be a positive integer, got {v:?}"))
            }),
        };
        if let Some(v) = get("OTEL_BSP_SCHEDULE_DELAY") {
            o.bsp_schedule_delay = millis("OTEL_BSP_SCHEDULE_DELAY".into(), v)?;
        }
        if let Some(v) = get("OTEL_BSP_EXPORT_TIMEOUT") {
            o.bsp_export_timeout = millis("OTEL_BSP_EXPORT_TIMEOUT".into(), v)?;
        }
        o.bsp_max_queue_size = count("OTEL_BSP_MAX_QUEUE_SIZE", o.bsp_max_queue_size)?;
        o.bsp_max_export_batch_size = count(
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
            o.bsp_max_export_batch_size,
        )?;
        if o.bsp_max_export_batch_size > o.bsp_max_queue_size {
            return Err(ConfigError::setting(
                "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
                "must not exceed OTEL_BSP_MAX_QUEUE_SIZE",
            ));
        }
        if o.bsp_max_queue_size > MAX_BSP_QUEUE_SIZE {
            return Err(ConfigError::setting(
                "OTEL_BSP_MAX_QUEUE_SIZE",
                format!(
                    "must be at most {MAX_BSP_QUEUE_SIZE} (the queue is allocated up front), got {}",
                    o.bsp_max_queue_size
                ),
            ));
        }
        self.otel = o;
        // It wins over `log.level`, so a typo must not pass unseen.
        if let Some(filter) = get("RUST_LOG")
            && let Err(e) = tracing_subscriber::EnvFilter::try_new(filter)
        {
            return Err(ConfigError::setting("RUST_LOG", e));
        }
        self.rust_log = get("RUST_LOG").map(str::to_owned);
        Ok(())
    }
}

/// `key=value` pairs separated by commas, values percent-decoded (the W3C
/// Baggage format the specification uses for headers and resource
/// attributes).
fn key_values(list: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let Some((key, value)) = item.split_once('=') else {
            return Err(format!("must be key=value pairs, got {item:?}"));
        };
        let value = percent_decode(value.trim())
            .ok_or_else(|| format!("has a malformed percent escape in {item:?}"))?;
        pairs.push((key.trim().to_owned(), value));
    }
    Ok(pairs)
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A setting that is missing, malformed or out of range. Its message is one
/// line naming the setting.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

impl ConfigError {
    fn setting(name: &str, problem: impl std::fmt::Display) -> Self {
        Self(format!("`{name}` {problem}"))
    }
}

/// Overrides from the command line, highest layer. `None` keeps the layers
/// below. Values stay strings so that every value, whatever its layer, is
/// checked by the same code with the same messages.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Optional settings file (YAML or TOML by extension).
    pub config_file: Option<PathBuf>,
    /// `(dotted.key, value)` pairs, e.g. `("drain.delay", "2.5")`.
    pub values: Vec<(&'static str, String)>,
}

impl Default for Settings {
    /// The built-in defaults: what `switchyard serve` runs with on a machine
    /// with no configuration (outside Kubernetes: pod `localhost`).
    fn default() -> Self {
        Self {
            server: ServerSettings::default(),
            drain: DrainSettings::default(),
            deployment: DeploymentSettings::default(),
            detector: DetectorSettings::default(),
            health: HealthSettings::default(),
            log: LogSettings::default(),
            telemetry: TelemetrySettings::default(),
            flags: FlagsSettings::default(),
            dark_launch: DarkLaunchSettings::default(),
            connection: ConnectionSettings::default(),
        }
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            grpc_addr: SocketAddr::from(([0, 0, 0, 0], 50051)),
            admin_addr: SocketAddr::from(([0, 0, 0, 0], 9090)),
            probe_addr: SocketAddr::from(([0, 0, 0, 0], 50052)),
            data_plane_nice: 0,
            max_concurrent_requests: 256,
            max_decoding_message_size: 4 * 1024 * 1024,
        }
    }
}

impl Default for DrainSettings {
    fn default() -> Self {
        Self {
            delay: Duration::from_secs(5),
            timeout: Duration::from_secs(20),
        }
    }
}

impl Default for DeploymentSettings {
    fn default() -> Self {
        Self {
            track: Track::Stable,
            version: crate::VERSION.to_owned(),
            pod: "localhost".to_owned(),
            namespace: "default".to_owned(),
        }
    }
}

impl Default for DetectorSettings {
    fn default() -> Self {
        Self {
            default_engine: EngineKind::Lingua,
            max_text_chars: 10_000,
            engine_threads: 0,
            inline_max_chars: 1000,
        }
    }
}

impl Default for HealthSettings {
    fn default() -> Self {
        Self {
            liveness_stall_threshold: Duration::from_secs(10),
            ready_file: None,
        }
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: None,
            level: "info".to_owned(),
        }
    }
}

impl Default for FlagsSettings {
    fn default() -> Self {
        Self {
            path: None,
            poll_interval: Duration::from_secs(10),
            debounce: Duration::from_millis(50),
            context_headers: "x-user-group,x-client-version,x-country".to_owned(),
            fractional_version: crate::flags::FractionalVersion::V2,
        }
    }
}

impl Default for DarkLaunchSettings {
    fn default() -> Self {
        Self {
            max_in_flight: 4,
            timeout: Duration::from_secs(1),
        }
    }
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        Self {
            max_age: Some(Duration::from_secs(300)),
            max_age_grace: Some(Duration::from_secs(30)),
            http2_keepalive_interval: Some(Duration::from_secs(60)),
            http2_keepalive_timeout: Duration::from_secs(20),
            tcp_keepalive: Some(Duration::from_secs(60)),
            max_concurrent_streams: 256,
            max_header_list_size: 16384,
            max_pending_accept_reset_streams: 20,
        }
    }
}

/// The process's environment: the one place it is read (`main` passes it
/// to [`Settings::load`]; everything else gets values from the settings).
/// A name or value that is not UTF-8 is taken lossily, U+FFFD for the bad
/// bytes (`std::env::vars` would panic on it): a number, duration or name
/// of ours then fails validation with its name in the message, and a path
/// names a file that is not there.
#[allow(clippy::disallowed_methods)]
pub fn process_env() -> HashMap<String, String> {
    std::env::vars_os()
        .map(|(name, value)| {
            (
                name.to_string_lossy().into_owned(),
                value.to_string_lossy().into_owned(),
            )
        })
        .collect()
}

impl Settings {
    /// The built-in defaults through the whole loader (an empty
    /// environment, no file, no flags): [`Settings::default`], validated.
    pub fn defaults() -> Result<Self, ConfigError> {
        Self::load(&HashMap::new(), &Overrides::default())
    }

    /// The default of the setting at `key` (`drain.delay`) as the settings
    /// file would write it (`5s`), or `None` when it has no value (unset
    /// options) or no such setting exists: what `serve --help` shows.
    pub fn default_of(key: &str) -> Option<String> {
        let json = serde_json::to_value(Settings::default()).ok()?;
        let value = key.split('.').try_fold(&json, |v, part| v.get(part))?;
        match value {
            serde_json::Value::Null => None,
            serde_json::Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        }
    }

    /// Layers defaults, the optional file, the environment `env` (pass
    /// [`process_env`] in production) and `overrides`, then
    /// validates the result.
    pub fn load(env: &HashMap<String, String>, overrides: &Overrides) -> Result<Self, ConfigError> {
        // The lowest layer: the defaults, with the downward API's identity.
        let mut defaults = Settings::default();
        if let Some(pod) = env.get("POD_NAME").or_else(|| env.get("HOSTNAME")) {
            defaults.deployment.pod.clone_from(pod);
        }
        if let Some(ns) = env.get("POD_NAMESPACE") {
            defaults.deployment.namespace.clone_from(ns);
        }
        let otlp = [
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ]
        .iter()
        .find_map(|name| env.get(*name).filter(|v| !v.is_empty()));
        if let Some(endpoint) = otlp {
            defaults.telemetry.otlp_endpoint = Some(endpoint.clone());
        }
        let mut builder = config::Config::builder().add_source(
            config::Config::try_from(&defaults).map_err(|e| ConfigError(one_line(&e)))?,
        );

        if let Some(path) = &overrides.config_file {
            if !path.is_file() {
                return Err(ConfigError::setting(
                    "--config",
                    format!("file {} does not exist", path.display()),
                ));
            }
            builder = builder.add_source(config::File::from(path.as_path()).required(true));
        }

        let from_env: HashMap<String, String> = env
            .iter()
            .filter(|(k, _)| k.starts_with("SWITCHYARD__"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix("SWITCHYARD")
                .prefix_separator("__")
                .separator("__")
                .source(Some(from_env)),
        );

        for (key, value) in &overrides.values {
            builder = builder
                .set_override(*key, value.as_str())
                .map_err(|e| ConfigError::setting(key, e))?;
        }

        let raw = builder.build().map_err(|e| ConfigError(one_line(&e)))?;
        let mut settings: Settings = raw
            .clone()
            .try_deserialize()
            .map_err(|e| ConfigError(with_value(&e, &raw)))?;
        settings.telemetry.read_env(env)?;
        settings.validate()?;
        Ok(settings)
    }

    /// Range checks that types alone do not express.
    fn validate(&self) -> Result<(), ConfigError> {
        let hour = Duration::from_secs(3600);
        let durations = [
            ("drain.delay", self.drain.delay, Duration::ZERO),
            ("drain.timeout", self.drain.timeout, Duration::ZERO),
            (
                "health.liveness_stall_threshold",
                self.health.liveness_stall_threshold,
                Duration::from_millis(100),
            ),
            (
                "flags.poll_interval",
                self.flags.poll_interval,
                Duration::from_millis(100),
            ),
            ("flags.debounce", self.flags.debounce, Duration::ZERO),
            (
                "dark_launch.timeout",
                self.dark_launch.timeout,
                Duration::from_millis(1),
            ),
        ];
        for (name, value, min) in durations {
            if value < min || value > hour {
                return Err(ConfigError::setting(
                    name,
                    format!(
                        "must be between {} and 1h, got {}",
                        humantime::format_duration(min),
                        humantime::format_duration(value)
                    ),
                ));
            }
        }
        // Both allocate up front: the execution queue's slots and one
        // candidate thread each.
        let counts = [
            (
                "server.max_concurrent_requests",
                self.server.max_concurrent_requests,
                MAX_CONCURRENT_REQUESTS,
            ),
            (
                "dark_launch.max_in_flight",
                self.dark_launch.max_in_flight,
                MAX_DARK_LAUNCH_IN_FLIGHT,
            ),
        ];
        for (name, value, max) in counts {
            if value == 0 || value > max {
                return Err(ConfigError::setting(
                    name,
                    format!("must be between 1 and {max}, got {value}"),
                ));
            }
        }
        if !(0..=19).contains(&self.server.data_plane_nice) {
            return Err(ConfigError::setting(
                "server.data_plane_nice",
                format!(
                    "must be between 0 and 19, got {}",
                    self.server.data_plane_nice
                ),
            ));
        }
        if self
            .flags
            .headers()
            .iter()
            .any(|h| tonic::metadata::AsciiMetadataKey::from_bytes(h.as_bytes()).is_err())
        {
            return Err(ConfigError::setting(
                "flags.context_headers",
                "must be comma-separated ASCII metadata names (not `-bin` ones)",
            ));
        }
        if self.detector.engine_threads > 1024 {
            return Err(ConfigError::setting(
                "detector.engine_threads",
                "must be at most 1024 (0 means one per core)",
            ));
        }
        if self.detector.max_text_chars == 0 {
            return Err(ConfigError::setting(
                "detector.max_text_chars",
                "must be at least 1",
            ));
        }
        if self.server.max_decoding_message_size < 1024 {
            return Err(ConfigError::setting(
                "server.max_decoding_message_size",
                "must be at least 1024 bytes",
            ));
        }
        if self.deployment.version.trim().is_empty() {
            return Err(ConfigError::setting(
                "deployment.version",
                "must not be empty",
            ));
        }
        if let Some(endpoint) = &self.telemetry.otlp_endpoint {
            let ok = endpoint.parse::<http::Uri>().is_ok_and(|u| {
                matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some()
            });
            if !ok {
                return Err(ConfigError::setting(
                    "telemetry.otlp_endpoint",
                    format!("must be an http:// or https:// URL, got {endpoint:?}"),
                ));
            }
        }
        if self.deployment.pod.is_empty() {
            return Err(ConfigError::setting("deployment.pod", "must not be empty"));
        }
        if let Some(file) = &self.health.ready_file {
            if file.as_os_str().is_empty() {
                return Err(ConfigError::setting(
                    "health.ready_file",
                    "must not be empty",
                ));
            }
            // Its directory must be there: otherwise the replica would
            // serve but its exec readiness probe never pass.
            let dir = match file.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => std::path::Path::new("."),
            };
            if !dir.is_dir() {
                return Err(ConfigError::setting(
                    "health.ready_file",
                    format!("its directory {} does not exist", dir.display()),
                ));
            }
        }
        let connection = &self.connection;
        let timeout = connection.http2_keepalive_timeout;
        if timeout.is_zero() || timeout > hour {
            return Err(ConfigError::setting(
                "connection.http2_keepalive_timeout",
                format!(
                    "must be positive and at most 1h, got {}",
                    humantime::format_duration(timeout)
                ),
            ));
        }
        let day = 24 * hour;
        let connection_durations = [
            (
                "connection.max_age",
                connection.max_age,
                Duration::from_millis(100),
                30 * day,
            ),
            // `0` means off, so the shortest bound is a millisecond.
            (
                "connection.max_age_grace",
                connection.max_age_grace,
                Duration::from_millis(1),
                day,
            ),
            (
                "connection.http2_keepalive_interval",
                connection.http2_keepalive_interval,
                Duration::from_secs(1),
                day,
            ),
            // Linux refuses a TCP_KEEPIDLE above 32767 s.
            (
                "connection.tcp_keepalive",
                connection.tcp_keepalive,
                Duration::from_secs(1),
                Duration::from_secs(32_767),
            ),
        ];
        for (name, value, min, max) in connection_durations {
            if let Some(value) = value.filter(|v| *v < min || *v > max) {
                return Err(ConfigError::setting(
                    name,
                    format!(
                        "must be off or between {} and {}, got {}",
                        humantime::format_duration(min),
                        humantime::format_duration(max),
                        humantime::format_duration(value)
                    ),
                ));
            }
        }
        if connection.max_concurrent_streams == 0 {
            return Err(ConfigError::setting(
                "connection.max_concurrent_streams",
                "must be at least 1",
            ));
        }
        if connection.max_header_list_size < 1024 {
            return Err(ConfigError::setting(
                "connection.max_header_list_size",
                format!(
                    "must be at least 1024 bytes, got {}",
                    connection.max_header_list_size
                ),
            ));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(ConfigError::setting("log.level", e));
        }
        Ok(())
    }

    /// The effective settings as JSON, for `Admin/GetInfo` (there are no
    /// secrets among them).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

/// The config crate's messages sometimes span lines; ours never do.
/// [`one_line`], plus the offending value when the error names a key but
/// not its value (e.g. "invalid socket address syntax"), like the range
/// checks' "got -1".
fn with_value(e: &config::ConfigError, raw: &config::Config) -> String {
    let line = one_line(e);
    let key = match e {
        config::ConfigError::At { key: Some(key), .. }
        | config::ConfigError::Type { key: Some(key), .. } => key,
        _ => return line,
    };
    match raw.get_string(key) {
        Ok(value) if !line.contains(&value) => format!("{line}, got {value:?}"),
        _ => line,
    }
}

fn one_line(e: &config::ConfigError) -> String {
    e.to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let s = Settings::defaults().expect("defaults are valid");
        assert_eq!(s.server.grpc_addr.port(), 50051);
        assert_eq!(s.server.admin_addr.port(), 9090);
        assert_eq!(s.server.probe_addr.port(), 50052);
        assert_eq!(s.server.data_plane_nice, 0);
        assert_eq!(s.drain.delay, Duration::from_secs(5));
        assert_eq!(s.drain.timeout, Duration::from_secs(20));
        assert_eq!(s.deployment.track, Track::Stable);
        assert_eq!(s.detector.max_text_chars, 10_000);
        assert_eq!(s.detector.default_engine, EngineKind::Lingua);
    }

    #[test]
    fn layers_apply_in_order_defaults_file_env_flags() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("switchyard.yaml");
        std::fs::write(
            &file,
            "drain:\n  delay: 1.5\n  timeout: 7\ndeployment:\n  track: canary\n",
        )
        .expect("write");
        let env = env(&[
            ("SWITCHYARD__DRAIN__TIMEOUT", "9"),
            ("SWITCHYARD__DETECTOR__MAX_TEXT_CHARS", "500"),
            ("POD_NAME", "switchyard-abc"),
            ("POD_NAMESPACE", "prod"),
        ]);
        let overrides = Overrides {
            config_file: Some(file),
            values: vec![("detector.max_text_chars", "42".into())],
        };
        let s = Settings::load(&env, &overrides).expect("valid");
        assert_eq!(
            s.drain.delay,
            Duration::from_millis(1500),
            "file beats defaults"
        );
        assert_eq!(s.drain.timeout, Duration::from_secs(9), "env beats file");
        assert_eq!(s.detector.max_text_chars, 42, "flags beat env");
        assert_eq!(s.deployment.track, Track::Canary);
        assert_eq!(s.deployment.pod, "switchyard-abc");
        assert_eq!(s.deployment.namespace, "prod");
    }

    #[test]
    fn durations_take_humantime_strings_and_plain_seconds() {
        for (value, expected) in [
            ("250ms", Duration::from_millis(250)),
            ("2.5", Duration::from_millis(2500)),
            ("5s", Duration::from_secs(5)),
            ("1m", Duration::from_secs(60)),
        ] {
            let overrides = Overrides {
                config_file: None,
                values: vec![
                    ("drain.delay", value.to_owned()),
                    ("flags.poll_interval", value.to_owned()),
                ],
            };
            let s = Settings::load(&HashMap::new(), &overrides).expect(value);
            assert_eq!(s.drain.delay, expected, "{value}");
            assert_eq!(s.flags.poll_interval, expected, "{value}");
        }
    }

    #[test]
    fn the_loader_starts_from_the_defaults_of_the_settings_types() {
        let loaded = serde_json::to_value(Settings::defaults().expect("valid")).expect("json");
        let typed = serde_json::to_value(Settings::default()).expect("json");
        assert_eq!(loaded, typed);
        assert_eq!(Settings::default_of("drain.delay").as_deref(), Some("5s"));
        assert_eq!(
            Settings::default_of("connection.max_age").as_deref(),
            Some("5m")
        );
        assert_eq!(Settings::default_of("health.ready_file"), None);
        assert_eq!(Settings::default_of("no.such_setting"), None);
    }

    #[test]
    fn toml_files_work_too() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("switchyard.toml");
        std::fs::write(&file, "[detector]\ndefault_engine = \"whatlang\"\n").expect("write");
        let overrides = Overrides {
            config_file: Some(file),
            values: vec![],
        };
        let s = Settings::load(&HashMap::new(), &overrides).expect("valid");
        assert_eq!(s.detector.default_engine, EngineKind::Whatlang);
    }

    /// The settings with one override, `key` = `value`.
    fn load_one(key: &'static str, value: &str) -> Result<Settings, ConfigError> {
        let overrides = Overrides {
            config_file: None,
            values: vec![(key, value.to_string())],
        };
        Settings::load(&HashMap::new(), &overrides)
    }

    #[test]
    fn bad_values_name_the_setting_on_one_line() {
        let cases: &[(&'static str, &str, &str)] = &[
            ("drain.delay", "-1", "drain.delay"),
            ("drain.timeout", "soon", "drain"),
            ("deployment.track", "beta", "track"),
            ("server.grpc_addr", "nowhere", "grpc_addr"),
            ("server.data_plane_nice", "-5", "server.data_plane_nice"),
            ("server.data_plane_nice", "20", "server.data_plane_nice"),
            (
                "server.max_concurrent_requests",
                "0",
                "server.max_concurrent_requests",
            ),
            ("detector.default_engine", "cld3", "default_engine"),
            ("log.level", "[[", "log.level"),
            ("flags.fractional_version", "v4", "fractional_version"),
            ("drain.timeout", "2h", "drain.timeout"),
            ("flags.debounce", "soon", "debounce"),
            ("dark_launch.timeout", "0", "dark_launch.timeout"),
            // Allocated up front: bounded.
            (
                "server.max_concurrent_requests",
                "65537",
                "server.max_concurrent_requests",
            ),
            (
                "dark_launch.max_in_flight",
                "1025",
                "dark_launch.max_in_flight",
            ),
            (
                "dark_launch.max_in_flight",
                "0",
                "dark_launch.max_in_flight",
            ),
            // Connection timing: a reconnect storm, or an overflow later.
            ("connection.max_age", "50ms", "connection.max_age"),
            ("connection.max_age", "31d", "connection.max_age"),
            ("connection.max_age_grace", "2d", "connection.max_age_grace"),
            (
                "connection.http2_keepalive_interval",
                "100ms",
                "connection.http2_keepalive_interval",
            ),
            (
                "connection.http2_keepalive_timeout",
                "2h",
                "connection.http2_keepalive_timeout",
            ),
            (
                "connection.tcp_keepalive",
                "32768",
                "connection.tcp_keepalive",
            ),
            // The exec probe could never see it.
            (
                "health.ready_file",
                "/nonexistent-dir/ready",
                "health.ready_file",
            ),
            // Binary metadata cannot be a targeting attribute.
            (
                "flags.context_headers",
                "x-user-group,x-trace-bin",
                "context_headers",
            ),
        ];
        for (key, value, named) in cases {
            let err = load_one(key, value)
                .expect_err(&format!("{key}={value} must be rejected"))
                .to_string();
            assert!(err.contains(named), "{err:?} should name {named}");
            assert!(!err.contains('\n'), "{err:?} should be one line");
        }
    }

    #[test]
    fn the_bounds_themselves_are_accepted() {
        for (key, value) in [
            ("server.max_concurrent_requests", "65536"),
            ("dark_launch.max_in_flight", "1024"),
            ("connection.max_age", "100ms"),
            ("connection.max_age", "30d"),
            ("connection.max_age_grace", "1ms"),
            ("connection.http2_keepalive_interval", "1s"),
            ("connection.tcp_keepalive", "32767"),
        ] {
            load_one(key, value).unwrap_or_else(|e| panic!("{key}={value}: {e}"));
        }
    }

    #[test]
    fn a_bad_rust_log_or_an_oversized_span_queue_is_refused() {
        let load = |name: &str, value: &str| {
            let env = HashMap::from([(name.to_owned(), value.to_owned())]);
            Settings::load(&env, &Overrides::default())
        };
        for (name, value) in [
            ("RUST_LOG", "info,[["),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "1048577"),
        ] {
            let err = load(name, value).expect_err(value).to_string();
            assert!(err.contains(name), "{err}");
            assert!(!err.contains('\n'), "{err}");
        }
        let ok = load("RUST_LOG", "switchyard=debug,info").expect("a valid filter");
        assert_eq!(
            ok.telemetry.rust_log.as_deref(),
            Some("switchyard=debug,info")
        );
        load("OTEL_BSP_MAX_QUEUE_SIZE", "1048576").expect("the bound itself");
        // Empty means unset.
        assert_eq!(
            load("RUST_LOG", "").expect("unset").telemetry.rust_log,
            None
        );
    }

    #[test]
    fn connection_durations_take_units_plain_seconds_and_off() {
        let load = |key: &'static str, value: &str| {
            Settings::load(
                &HashMap::new(),
                &Overrides {
                    config_file: None,
                    values: vec![(key, value.to_owned())],
                },
            )
        };
        let age = |value: &str| {
            load("connection.max_age", value)
                .expect("valid")
                .connection
                .max_age
        };
        assert_eq!(age("2s"), Some(Duration::from_secs(2)));
        assert_eq!(age("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(age("5m"), Some(Duration::from_secs(300)));
        assert_eq!(age("1.5"), Some(Duration::from_millis(1500)));
        assert_eq!(age("off"), None);
        assert_eq!(age("0"), None);
        let defaults = Settings::defaults().expect("defaults");
        assert_eq!(defaults.connection.max_age, Some(Duration::from_secs(300)));
        assert_eq!(
            defaults.connection.max_age_grace,
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            defaults.connection.http2_keepalive_timeout,
            Duration::from_secs(20)
        );
        for (key, bad) in [
            ("connection.max_age", "soon"),
            ("connection.max_age", "-1"),
            ("connection.http2_keepalive_timeout", "off"),
            ("connection.http2_keepalive_timeout", "0"),
            ("connection.max_concurrent_streams", "0"),
            ("connection.max_header_list_size", "10"),
        ] {
            let err = load(key, bad).expect_err(bad).to_string();
            assert!(err.contains(key.rsplit('.').next().unwrap_or(key)), "{err}");
            assert!(!err.contains('\n'), "{err}");
        }
        // A settings file may write seconds as numbers.
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("s.yaml");
        std::fs::write(&file, "connection:\n  max_age: 90\n  tcp_keepalive: off\n").expect("write");
        let s = Settings::load(
            &HashMap::new(),
            &Overrides {
                config_file: Some(file),
                values: vec![],
            },
        )
        .expect("valid");
        assert_eq!(s.connection.max_age, Some(Duration::from_secs(90)));
        assert_eq!(s.connection.tcp_keepalive, None);
    }

    #[test]
    fn a_malformed_value_is_echoed_in_the_message() {
        for (key, value) in [
            ("server.grpc_addr", "nope"),
            ("server.admin_addr", "localhost"),
            ("server.probe_addr", "kubelet"),
            ("server.max_concurrent_requests", "many"),
        ] {
            let overrides = Overrides {
                config_file: None,
                values: vec![(key, value.to_owned())],
            };
            let err = Settings::load(&HashMap::new(), &overrides)
                .expect_err("rejected")
                .to_string();
            assert!(
                err.contains(&format!("\"{value}\"")),
                "{err:?} should echo {value}"
            );
            assert!(
                err.contains(key.rsplit('.').next().unwrap_or(key)),
                "{err:?}"
            );
        }
    }

    #[test]
    fn fractional_version_defaults_to_v2_and_takes_v3() {
        let s = Settings::defaults().expect("defaults");
        assert_eq!(
            s.flags.fractional_version,
            crate::flags::FractionalVersion::V2
        );
        let overrides = Overrides {
            config_file: None,
            values: vec![("flags.fractional_version", "v3".to_string())],
        };
        let s = Settings::load(&HashMap::new(), &overrides).expect("valid");
        assert_eq!(
            s.flags.fractional_version,
            crate::flags::FractionalVersion::V3
        );
    }

    #[test]
    fn unknown_keys_in_a_file_are_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("s.yaml");
        std::fs::write(&file, "drain:\n  dellay: 3\n").expect("write");
        let overrides = Overrides {
            config_file: Some(file),
            values: vec![],
        };
        let err = Settings::load(&HashMap::new(), &overrides).expect_err("typo rejected");
        assert!(err.to_string().contains("dellay"), "{err}");
    }
}
