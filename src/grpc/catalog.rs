//! The RPC catalog: every served method, resolved once at startup from the
//! descriptor sets the server also gives reflection ([`DESCRIPTOR_SETS`]),
//! with its go-grpc-prometheus RED series ([`RpcMetrics`]), so the edge
//! names a call's span and bumps its counters without hashing a label set.
//!
//! The edge owns these metrics: `grpc_server_started_total`,
//! `grpc_server_handled_total`, `grpc_server_msg_received_total`,
//! `grpc_server_msg_sent_total`, `grpc_server_handling_seconds` (every series
//! also labelled `shadow="true|false"`: mirrored copies and the shadow track
//! never pollute the real numbers) and `switchyard_in_flight_requests`.

use std::sync::Arc;

use foldhash::{HashMap, HashMapExt};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::pb;
use crate::metrics::code_name;

/// Every service served, as encoded descriptor sets: the one list that
/// reflection and the method table are built from.
pub const DESCRIPTOR_SETS: &[&[u8]] = &[
    pb::FILE_DESCRIPTOR_SET,
    tonic_health::pb::FILE_DESCRIPTOR_SET,
    tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
    tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
];

/// Prometheus's default buckets (go-grpc-prometheus uses them).
const RPC_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn rpc_histogram() -> Histogram {
    Histogram::new(RPC_BUCKETS)
}

/// The edge's metric families, registered once per application.
#[derive(Debug, Clone)]
pub struct RpcMetrics {
    started: Family<RpcLabels, Counter>,
    handled: Family<HandledLabels, Counter>,
    msg_received: Family<RpcLabels, Counter>,
    msg_sent: Family<RpcLabels, Counter>,
    handling_seconds: Family<RpcLabels, Histogram, fn() -> Histogram>,
    in_flight: Gauge,
}

impl RpcMetrics {
    /// Registers the go-grpc-prometheus families on `registry` (their
    /// names have no prefix) and the in-flight gauge on a `switchyard_`
    /// sub-registry of it.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            started: Family::default(),
            handled: Family::default(),
            msg_received: Family::default(),
            msg_sent: Family::default(),
            handling_seconds: Family::new_with_constructor(rpc_histogram),
            in_flight: Gauge::default(),
        };
        registry.register(
            "grpc_server_started",
            "RPCs started on the server",
            metrics.started.clone(),
        );
        registry.register(
            "grpc_server_handled",
            "RPCs completed on the server, whatever their status",
            metrics.handled.clone(),
        );
        registry.register(
            "grpc_server_msg_received",
            "Stream messages received by the server",
            metrics.msg_received.clone(),
        );
        registry.register(
            "grpc_server_msg_sent",
            "Stream messages sent by the server",
            metrics.msg_sent.clone(),
        );
        registry.register(
            "grpc_server_handling_seconds",
            "Time from the start of an RPC to its end, in seconds",
            metrics.handling_seconds.clone(),
        );
        registry.sub_registry_with_prefix("switchyard").register(
            "in_flight_requests",
            "RPCs in progress",
            metrics.in_flight.clone(),
        );
        metrics
    }
}

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
    fn new(service: Arc<str>, method: Arc<str>, kind: RpcType, metrics: &RpcMetrics) -> Self {
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
    /// `switchyard_in_flight_requests` (one gauge for every method).
    pub in_flight: Gauge,
    /// The `grpc_server_handled_total` family, for the slots below.
    handled_family: Family<HandledLabels, Counter>,
    /// `grpc_server_handled_total` by code, created on first use.
    handled: [std::sync::OnceLock<Counter>; 17],
}

impl RpcSeries {
    fn new(labels: RpcLabels, metrics: &RpcMetrics) -> Self {
        Self {
            started: metrics.started.get_or_create_owned(&labels),
            received: metrics.msg_received.get_or_create_owned(&labels),
            sent: metrics.msg_sent.get_or_create_owned(&labels),
            handling_seconds: metrics.handling_seconds.get_or_create_owned(&labels),
            in_flight: metrics.in_flight.clone(),
            handled_family: metrics.handled.clone(),
            handled: Default::default(),
            labels,
        }
    }

    /// The `grpc_server_handled_total` counter for `code`.
    pub fn handled(&self, code: tonic::Code) -> &Counter {
        let slot = (code as usize).min(self.handled.len() - 1);
        self.handled[slot].get_or_init(|| {
            self.handled_family.get_or_create_owned(&HandledLabels {
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
        metrics: &RpcMetrics,
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

    /// Messages received by every method of `service`
    /// (`switchyard.v1.Detector`), real and shadow apart.
    pub fn received_by(&self, service: &str) -> Received {
        let series = |shadow| {
            self.by_path
                .values()
                .filter(|m| &*m.service == service)
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
