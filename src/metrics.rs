//! Prometheus metrics, served on the admin listener at `GET /metrics`.
//!
//! Each [`crate::startup::Application`] owns its [`Metrics`] and registry
//! (no process-global recorder), so tests run replicas side by side.
//!
//! - gRPC RED metrics with go-grpc-prometheus's names and labels, which
//!   existing dashboards and alerts query: `grpc_server_started_total`,
//!   `grpc_server_handled_total`, `grpc_server_msg_received_total`,
//!   `grpc_server_msg_sent_total`, `grpc_server_handling_seconds`. Every
//!   series also has `shadow="true|false"`: mirrored copies and the shadow
//!   track never pollute the real numbers.
//! - Switchyard's own, prefixed `switchyard_`: detections, engine latency,
//!   flag evaluations and reloads, dark-launch outcomes, in-flight and shed
//!   requests, health, drain state, build info. Values that already live in
//!   the service (flag store, dark launcher, health) are read at scrape time
//!   by [`LiveState`] instead of being counted twice.

use std::collections::HashMap;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::detection::DetectionService;
use crate::health::HealthState;

/// Prometheus's default buckets (go-grpc-prometheus uses them).
const RPC_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Engine calls take tens of microseconds to tens of milliseconds.
const ENGINE_BUCKETS: [f64; 12] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5,
];

/// How a gRPC method streams, as go-grpc-prometheus names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RpcType {
    Unary,
    ClientStream,
    ServerStream,
    BidiStream,
}

impl RpcType {
    pub fn as_str(self) -> &'static str {
        match self {
            RpcType::Unary => "unary",
            RpcType::ClientStream => "client_stream",
            RpcType::ServerStream => "server_stream",
            RpcType::BidiStream => "bidi_stream",
        }
    }
}

/// A served method: its labels and its metric series, resolved once at
/// startup so a request only bumps counters (no label hashing).
#[derive(Debug)]
pub struct Method {
    pub service: Arc<str>,
    pub method: Arc<str>,
    /// `service/method`, the span name.
    pub full_name: Arc<str>,
    pub kind: RpcType,
    /// Real traffic ([0]) and shadow traffic ([1]).
    series: [RpcSeries; 2],
}

impl Method {
    fn new(service: Arc<str>, method: Arc<str>, kind: RpcType, metrics: &Metrics) -> Self {
        let full_name: Arc<str> = format!("{service}/{method}").into();
        let series = [false, true].map(|shadow| {
            RpcSeries::new(
                RpcLabels {
                    grpc_type: kind.as_str(),
                    grpc_service: Arc::clone(&service),
                    grpc_method: Arc::clone(&method),
                    shadow,
                },
                metrics,
            )
        });
        Self {
            service,
            method,
            full_name,
            kind,
            series,
        }
    }

    /// The series for real (`shadow == false`) or shadow traffic.
    pub fn series(&self, shadow: bool) -> &RpcSeries {
        &self.series[usize::from(shadow)]
    }
}

/// One method's series for one value of `shadow`: handles to the shared
/// counters, so recording is an atomic add.
#[derive(Debug)]
pub struct RpcSeries {
    labels: RpcLabels,
    pub started: Counter,
    pub received: Counter,
    pub sent: Counter,
    pub handling_seconds: Histogram,
    /// `grpc_server_handled_total` by code, created on first use.
    handled: [std::sync::OnceLock<Counter>; 17],
}

impl RpcSeries {
    fn new(labels: RpcLabels, metrics: &Metrics) -> Self {
        Self {
            started: metrics.started.get_or_create_owned(&labels),
            received: metrics.msg_received.get_or_create_owned(&labels),
            sent: metrics.msg_sent.get_or_create_owned(&labels),
            handling_seconds: metrics.handling_seconds.get_or_create_owned(&labels),
            handled: Default::default(),
            labels,
        }
    }

    /// The `grpc_server_handled_total` counter for `code`.
    pub fn handled(&self, metrics: &Metrics, code: tonic::Code) -> &Counter {
        let slot = (code as usize).min(self.handled.len() - 1);
        self.handled[slot].get_or_init(|| {
            metrics.handled.get_or_create_owned(&HandledLabels {
                grpc_type: self.labels.grpc_type,
                grpc_service: Arc::clone(&self.labels.grpc_service),
                grpc_method: Arc::clone(&self.labels.grpc_method),
                grpc_code: code_name(code),
                shadow: self.labels.shadow,
            })
        })
    }
}

/// Every served method by path (`/pkg.Service/Method`), from the descriptor
/// sets. Unknown paths share one `unknown` method, so a client cannot grow
/// the series without bound.
#[derive(Debug)]
pub struct MethodTable {
    by_path: HashMap<String, Arc<Method>>,
    unknown: Arc<Method>,
}

impl MethodTable {
    /// Reads the services of encoded `FileDescriptorSet`s and resolves
    /// their series in `metrics`.
    pub fn from_descriptor_sets(
        sets: &[&[u8]],
        metrics: &Metrics,
    ) -> Result<Self, prost::DecodeError> {
        use prost::Message;
        let mut by_path = HashMap::new();
        for bytes in sets {
            let set = prost_types::FileDescriptorSet::decode(*bytes)?;
            for file in set.file {
                let package = file.package.unwrap_or_default();
                for service in file.service {
                    let name = service.name.unwrap_or_default();
                    let full: Arc<str> = if package.is_empty() {
                        name.into()
                    } else {
                        format!("{package}.{name}").into()
                    };
                    for m in service.method {
                        let method_name = m.name.unwrap_or_default();
                        let kind = match (
                            m.client_streaming.unwrap_or(false),
                            m.server_streaming.unwrap_or(false),
                        ) {
                            (false, false) => RpcType::Unary,
                            (true, false) => RpcType::ClientStream,
                            (false, true) => RpcType::ServerStream,
                            (true, true) => RpcType::BidiStream,
                        };
                        let path = format!("/{full}/{method_name}");
                        let method =
                            Method::new(Arc::clone(&full), method_name.into(), kind, metrics);
                        by_path.insert(path, Arc::new(method));
                    }
                }
            }
        }
        let unknown = Method::new("unknown".into(), "unknown".into(), RpcType::Unary, metrics);
        Ok(Self {
            by_path,
            unknown: Arc::new(unknown),
        })
    }

    /// The method a request path names (or the `unknown` method).
    pub fn get(&self, path: &str) -> &Arc<Method> {
        self.by_path.get(path).unwrap_or(&self.unknown)
    }

    /// Messages received by the methods at `paths` (unknown paths are
    /// skipped), real and shadow apart.
    pub fn received(&self, paths: &[&str]) -> Received {
        let series = |shadow| {
            paths
                .iter()
                .filter_map(|p| self.by_path.get(*p))
                .map(|m| m.series(shadow).received.clone())
                .collect()
        };
        Received {
            real: series(false),
            shadow: series(true),
        }
    }
}

/// Messages received by some methods, read from their
/// `grpc_server_msg_received_total` series (the edge counts them once; this
/// only reads the same counters).
#[derive(Debug, Clone, Default)]
pub struct Received {
    real: Vec<Counter>,
    shadow: Vec<Counter>,
}

impl Received {
    /// Messages of real traffic.
    pub fn real(&self) -> u64 {
        self.real.iter().map(Counter::get).sum()
    }

    /// Messages of shadow traffic.
    pub fn shadow(&self) -> u64 {
        self.shadow.iter().map(Counter::get).sum()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RpcLabels {
    pub grpc_type: &'static str,
    pub grpc_service: Arc<str>,
    pub grpc_method: Arc<str>,
    pub shadow: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct HandledLabels {
    pub grpc_type: &'static str,
    pub grpc_service: Arc<str>,
    pub grpc_method: Arc<str>,
    pub grpc_code: &'static str,
    pub shadow: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct DetectionLabels {
    pub engine: &'static str,
    pub language: &'static str,
    pub shadow: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct EngineLabels {
    pub engine: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct FlagLabels {
    pub flag: &'static str,
    pub variant: String,
    pub reason: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn rpc_histogram() -> Histogram {
    Histogram::new(RPC_BUCKETS)
}

fn engine_histogram() -> Histogram {
    Histogram::new(ENGINE_BUCKETS)
}

/// The metrics the request path records. Cheap to clone handles; share
/// behind an `Arc`.
#[derive(Debug)]
pub struct Metrics {
    /// Locked only to add a collector and to scrape.
    registry: std::sync::Mutex<Registry>,
    pub started: Family<RpcLabels, Counter>,
    pub handled: Family<HandledLabels, Counter>,
    pub msg_received: Family<RpcLabels, Counter>,
    pub msg_sent: Family<RpcLabels, Counter>,
    pub handling_seconds: HistogramFamily<RpcLabels>,
    pub in_flight: Gauge,
    pub detections: Family<DetectionLabels, Counter>,
    pub engine_seconds: HistogramFamily<EngineLabels>,
    pub dark_launch_seconds: HistogramFamily<EngineLabels>,
    pub flag_evaluations: Family<FlagLabels, Counter>,
    pub shed: Counter,
}

impl Metrics {
    /// A registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let started = Family::<RpcLabels, Counter>::default();
        let handled = Family::<HandledLabels, Counter>::default();
        let msg_received = Family::<RpcLabels, Counter>::default();
        let msg_sent = Family::<RpcLabels, Counter>::default();
        let handling_seconds: HistogramFamily<RpcLabels> =
            Family::new_with_constructor(rpc_histogram);
        let in_flight = Gauge::default();
        let detections = Family::<DetectionLabels, Counter>::default();
        let engine_seconds: HistogramFamily<EngineLabels> =
            Family::new_with_constructor(engine_histogram);
        let dark_launch_seconds: HistogramFamily<EngineLabels> =
            Family::new_with_constructor(engine_histogram);
        let flag_evaluations = Family::<FlagLabels, Counter>::default();
        let shed = Counter::default();

        registry.register(
            "grpc_server_started",
            "RPCs started on the server",
            started.clone(),
        );
        registry.register(
            "grpc_server_handled",
            "RPCs completed on the server, whatever their status",
            handled.clone(),
        );
        registry.register(
            "grpc_server_msg_received",
            "Stream messages received by the server",
            msg_received.clone(),
        );
        registry.register(
            "grpc_server_msg_sent",
            "Stream messages sent by the server",
            msg_sent.clone(),
        );
        registry.register(
            "grpc_server_handling_seconds",
            "Time from the start of an RPC to its end, in seconds",
            handling_seconds.clone(),
        );
        registry.register(
            "switchyard_in_flight_requests",
            "RPCs in progress",
            in_flight.clone(),
        );
        registry.register(
            "switchyard_detections",
            "Detections served, by engine and detected language",
            detections.clone(),
        );
        registry.register(
            "switchyard_engine_seconds",
            "Time an engine took to detect a served request, in seconds",
            engine_seconds.clone(),
        );
        registry.register(
            "switchyard_dark_launch_candidate_seconds",
            "Time the dark-launch candidate took, in seconds",
            dark_launch_seconds.clone(),
        );
        registry.register(
            "switchyard_flag_evaluations",
            "Flag evaluations, by flag, variant and reason",
            flag_evaluations.clone(),
        );
        registry.register(
            "switchyard_requests_shed",
            "Detect calls refused with RESOURCE_EXHAUSTED at the concurrency limit",
            shed.clone(),
        );
        Self {
            registry: std::sync::Mutex::new(registry),
            started,
            handled,
            msg_received,
            msg_sent,
            handling_seconds,
            in_flight,
            detections,
            engine_seconds,
            dark_launch_seconds,
            flag_evaluations,
            shed,
        }
    }

    /// Registers a subsystem's own metric (it keeps its handle and counts;
    /// the registry only encodes it at scrape time).
    pub fn register(
        &self,
        name: &str,
        help: &str,
        metric: impl prometheus_client::registry::Metric,
    ) {
        self.registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .register(name, help, metric);
    }

    /// Adds a collector read at scrape time.
    pub fn register_collector(&self, collector: Box<dyn Collector>) {
        self.registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .register_collector(collector);
    }

    /// The Prometheus text format (0.0.4).
    pub fn encode(&self) -> String {
        let registry = self
            .registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The content type of [`Metrics::encode`].
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The name gRPC's Go implementation (and so go-grpc-prometheus) gives a
/// status code.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Canceled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

/// Build identity for `switchyard_build_info`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    build_version: &'static str,
    commit: &'static str,
    track: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RevisionLabels {
    revision: String,
    source: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ServiceLabels {
    service: String,
}

/// Values the service already keeps, read at scrape time: flag reloads and
/// the loaded revision, dark-launch outcomes, health per service, the drain
/// state, build info.
pub struct LiveState {
    pub detection: Arc<DetectionService>,
    pub health: HealthState,
    pub version: String,
    pub track: &'static str,
}

impl std::fmt::Debug for LiveState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveState").finish_non_exhaustive()
    }
}

/// Encodes one unlabelled metric.
pub(crate) fn single<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    value: M,
) -> Result<(), std::fmt::Error> {
    value.encode(encoder.encode_descriptor(name, help, None, kind)?)
}

/// Encodes one metric with several label sets.
pub(crate) fn family<L: EncodeLabelSet, M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    series: &[(L, M)],
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in series {
        value.encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

impl Collector for LiveState {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counts = self.detection.dark_launcher().stats().counts();
        let outcomes = [
            ("match", counts.matched),
            ("mismatch", counts.mismatched),
            ("skipped", counts.skipped),
            ("timeout", counts.timed_out),
            ("error", counts.errors),
        ];
        let series: Vec<_> = outcomes
            .iter()
            .map(|(outcome, n)| (OutcomeLabels { outcome }, ConstCounter::new(*n)))
            .collect();
        family(
            &mut encoder,
            "switchyard_dark_launch",
            "Dark-launch comparisons, by outcome",
            MetricType::Counter,
            &series,
        )?;

        let status = self.detection.flags().status();
        family(
            &mut encoder,
            "switchyard_flag_reloads",
            "Flag source reloads, by result (a failed reload keeps the last good flags)",
            MetricType::Counter,
            &[
                (
                    ResultLabels { result: "ok" },
                    ConstCounter::new(status.reloads_ok),
                ),
                (
                    ResultLabels { result: "failed" },
                    ConstCounter::new(status.reloads_failed),
                ),
            ],
        )?;
        family(
            &mut encoder,
            "switchyard_flags_revision",
            "The loaded flag revision (value 1)",
            MetricType::Gauge,
            &[(
                RevisionLabels {
                    revision: status.revision,
                    source: status.source,
                },
                ConstGauge::new(1i64),
            )],
        )?;
        single(
            &mut encoder,
            "switchyard_flag_load_warnings",
            "Problems flagd tolerates in the served flags (each logged with its flag and rule at load)",
            MetricType::Gauge,
            ConstGauge::new(i64::try_from(status.warnings).unwrap_or(i64::MAX)),
        )?;
        single(
            &mut encoder,
            "switchyard_flag_errors",
            "Flag evaluations that failed and served the code default",
            MetricType::Counter,
            ConstCounter::new(self.detection.flag_errors()),
        )?;

        let health: Vec<_> = self
            .health
            .snapshot()
            .into_iter()
            .map(|(service, status)| {
                let serving = i64::from(status == "SERVING");
                (ServiceLabels { service }, ConstGauge::new(serving))
            })
            .collect();
        family(
            &mut encoder,
            "switchyard_health_status",
            "1 when the gRPC health service is SERVING, else 0",
            MetricType::Gauge,
            &health,
        )?;
        single(
            &mut encoder,
            "switchyard_draining",
            "1 once a stop signal started the drain",
            MetricType::Gauge,
            ConstGauge::new(i64::from(self.health.is_draining())),
        )?;
        family(
            &mut encoder,
            "switchyard_build_info",
            "Build and release identity (value 1)",
            MetricType::Gauge,
            &[(
                BuildLabels {
                    version: self.version.clone(),
                    build_version: crate::VERSION,
                    commit: crate::GIT_COMMIT,
                    track: self.track,
                },
                ConstGauge::new(1i64),
            )],
        )?;
        Ok(())
    }
}
