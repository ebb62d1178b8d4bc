//! The application's Prometheus registry, served on the admin listener at
//! `GET /metrics`.
//!
//! Each [`crate::startup::Application`] builds its own registry (no
//! process-global recorder, so tests run replicas side by side) and hands
//! it down while it wires the graph: every subsystem registers the metrics
//! it owns, on the `switchyard_` sub-registry, and keeps the handles it
//! counts with (the way linkerd2-proxy hands sub-registries down). Nothing
//! is counted twice; values a subsystem already keeps (the flag store's
//! reloads, the health state) are read by its own collector at scrape time.
//!
//! | owner | metrics |
//! |---|---|
//! | [`crate::grpc::catalog`] (the edge) | `grpc_server_*` (go-grpc-prometheus names, `shadow` label), `switchyard_in_flight_requests` |
//! | [`crate::detection`] | `switchyard_detections_total`, `switchyard_engine_seconds`, `switchyard_flag_evaluations_total`, `switchyard_flag_errors_total` |
//! | [`crate::execution`] | engine and runtime USE series, `switchyard_requests_shed_total` |
//! | [`crate::fault`] | `switchyard_faults_injected_total` |
//! | [`crate::dark_launch`] | `switchyard_dark_launch_total`, `switchyard_dark_launch_candidate_seconds` |
//! | [`crate::flags::store`] | `switchyard_flag_reloads_total`, `switchyard_flags_revision`, `switchyard_flag_load_warnings` |
//! | [`crate::health`] | `switchyard_health_status`, `switchyard_draining` |
//! | [`crate::process_metrics`] | `process_*` |
//! | [`crate::telemetry`] | `switchyard_trace_spans_exported_total`, `switchyard_trace_export_failures_total` |
//! | this module | `switchyard_build_info`; [`code_name`], the `grpc_code` label values |

use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Engine calls take tens of microseconds to tens of milliseconds.
const ENGINE_BUCKETS: [f64; 12] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5,
];

/// A histogram with buckets for engine latencies.
pub fn engine_histogram() -> Histogram {
    Histogram::new(ENGINE_BUCKETS)
}

/// The registry, complete: built once while the application is wired,
/// then only encoded.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    /// Takes the registry the subsystems registered on.
    pub fn new(registry: Registry) -> Self {
        Self { registry }
    }

    /// The Prometheus text format (0.0.4).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
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

/// Registers `build_info` (value 1) on `own`: the release identity to join
/// other series on (version and track).
pub fn register_build_info(own: &mut Registry, version: String, track: &'static str) {
    let info = Family::<BuildLabels, Gauge>::default();
    info.get_or_create(&BuildLabels {
        version,
        build_version: crate::VERSION,
        commit: crate::GIT_COMMIT,
        track,
    })
    .set(1);
    own.register("build_info", "Build and release identity (value 1)", info);
}

/// Encodes one unlabelled metric (for collectors).
pub fn single<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    value: M,
) -> Result<(), std::fmt::Error> {
    value.encode(encoder.encode_descriptor(name, help, None, kind)?)
}

/// Encodes one metric with several label sets (for collectors).
pub fn family<L: EncodeLabelSet, M: EncodeMetric>(
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
