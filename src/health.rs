//! Readiness and liveness, and the standard `grpc.health.v1.Health` service
//! built on them.
//!
//! tonic-health supplies the protocol (its generated server trait and
//! messages); the state machine is ours, because the protocol's finer points
//! matter in Kubernetes: nothing may say SERVING before the engines are
//! loaded, Watch on an unknown service must stay open with SERVICE_UNKNOWN,
//! and Watch streams must end when the server drains so they cannot hold
//! shutdown open.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::Stream;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::Health;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

/// Health service name for readiness: SERVING once the engines are loaded,
/// NOT_SERVING from the moment shutdown begins.
pub const READINESS: &str = "readiness";
/// Health service name for liveness: SERVING while the runtime is responsive,
/// including during the drain.
pub const LIVENESS: &str = "liveness";
/// The overall status (what grpc-health-probe and Envoy check by default);
/// follows readiness.
pub const OVERALL: &str = "";
/// The Detector service's status; follows readiness. The name comes from
/// the generated code, so it cannot drift from the proto.
pub const DETECTOR: &str = crate::grpc::pb::detector_server::SERVICE_NAME;

/// The health services a replica reports, in a stable order.
pub const SERVICES: [&str; 4] = [OVERALL, READINESS, LIVENESS, DETECTOR];

/// Shared health state. Cloning is cheap; all clones see the same state.
#[derive(Clone)]
pub struct HealthState {
    inner: Arc<Inner>,
}

struct Inner {
    statuses: BTreeMap<&'static str, watch::Sender<ServingStatus>>,
    /// Set once shutdown begins; readiness can never return after it.
    draining: AtomicBool,
    ready_file: Option<PathBuf>,
}

impl HealthState {
    /// Everything NOT_SERVING except liveness, which is SERVING from the start
    /// (the process is responsive while it loads).
    pub fn new(ready_file: Option<PathBuf>) -> Self {
        let statuses = SERVICES
            .iter()
            .map(|&name| {
                let initial = if name == LIVENESS {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                };
                (name, watch::channel(initial).0)
            })
            .collect();
        Self {
            inner: Arc::new(Inner {
                statuses,
                draining: AtomicBool::new(false),
                ready_file,
            }),
        }
    }

    /// The status of a health service, `None` when it is unknown.
    pub fn status(&self, service: &str) -> Option<ServingStatus> {
        self.inner.statuses.get(service).map(|tx| *tx.borrow())
    }

    /// Whether readiness is SERVING.
    pub fn is_ready(&self) -> bool {
        self.status(READINESS) == Some(ServingStatus::Serving)
    }

    /// Whether liveness is SERVING.
    pub fn is_live(&self) -> bool {
        self.status(LIVENESS) == Some(ServingStatus::Serving)
    }

    /// Whether shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::SeqCst)
    }

    /// Marks the replica ready (engines loaded) unless it is already draining,
    /// and creates the ready file.
    pub fn set_ready(&self) {
        if self.is_draining() {
            return;
        }
        if let Some(path) = &self.inner.ready_file
            && let Err(e) = std::fs::write(path, b"ready\n")
        {
            tracing::warn!(path = %path.display(), error = %e, "could not create the ready file");
        }
        for name in [READINESS, OVERALL, DETECTOR] {
            self.set(name, ServingStatus::Serving);
        }
        tracing::info!("ready: readiness, \"\" and {DETECTOR} are SERVING");
    }

    /// Step 2 of the drain: readiness and the service statuses turn
    /// NOT_SERVING at once (Watch subscribers see it) and the ready file goes.
    /// Liveness is untouched: a draining pod must not be restarted.
    pub fn begin_drain(&self) {
        self.inner.draining.store(true, Ordering::SeqCst);
        for name in [READINESS, OVERALL, DETECTOR] {
            self.set(name, ServingStatus::NotServing);
        }
        if let Some(path) = &self.inner.ready_file {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "could not remove the ready file")
                }
            }
        }
    }

    /// Sets liveness (the watchdog's lever).
    pub fn set_live(&self, live: bool) {
        let status = if live {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.set(LIVENESS, status);
    }

    fn set(&self, name: &str, status: ServingStatus) {
        if let Some(tx) = self.inner.statuses.get(name) {
            tx.send_if_modified(|current| {
                let changed = *current != status;
                *current = status;
                changed
            });
        }
    }

    /// Each service with its status name, for `Admin/GetInfo`.
    pub fn snapshot(&self) -> BTreeMap<String, String> {
        self.inner
            .statuses
            .iter()
            .map(|(name, tx)| (name.to_string(), tx.borrow().as_str_name().to_owned()))
            .collect()
    }

    fn subscribe(&self, service: &str) -> Option<watch::Receiver<ServingStatus>> {
        self.inner.statuses.get(service).map(|tx| tx.subscribe())
    }
}

/// `switchyard_health_status{service}` and `switchyard_draining`, read from
/// the state at scrape time.
struct HealthCollector(HealthState);

impl std::fmt::Debug for HealthCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HealthCollector")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelSet)]
struct ServiceLabels {
    service: String,
}

impl prometheus_client::collector::Collector for HealthCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::metrics::MetricType;
        use prometheus_client::metrics::gauge::ConstGauge;
        let health: Vec<_> = self
            .0
            .snapshot()
            .into_iter()
            .map(|(service, status)| {
                let serving = i64::from(status == "SERVING");
                (ServiceLabels { service }, ConstGauge::new(serving))
            })
            .collect();
        crate::metrics::family(
            &mut encoder,
            "health_status",
            "1 when the gRPC health service is SERVING, else 0",
            MetricType::Gauge,
            &health,
        )?;
        crate::metrics::single(
            &mut encoder,
            "draining",
            "1 once a stop signal started the drain",
            MetricType::Gauge,
            ConstGauge::new(i64::from(self.0.is_draining())),
        )
    }
}

impl HealthState {
    /// Registers the health series on `own` (the `switchyard_` sub-registry).
    pub fn register_metrics(&self, own: &mut prometheus_client::registry::Registry) {
        own.register_collector(Box::new(HealthCollector(self.clone())));
    }
}

/// The `grpc.health.v1.Health` service over a [`HealthState`].
pub struct HealthService {
    state: HealthState,
    /// Cancelled at step 4 of the drain: every Watch stream then ends with
    /// UNAVAILABLE so that none can hold the server open.
    streams_stop: CancellationToken,
}

impl HealthService {
    /// Serves `state`; Watch streams end when `streams_stop` is cancelled.
    pub fn new(state: HealthState, streams_stop: CancellationToken) -> Self {
        Self {
            state,
            streams_stop,
        }
    }
}

/// Where a Watch stream is in its life.
enum WatchState {
    /// Nothing sent yet; `None` for an unknown service.
    Start(Option<watch::Receiver<ServingStatus>>),
    /// Sending every transition of a known service.
    Known(watch::Receiver<ServingStatus>),
    /// SERVICE_UNKNOWN sent; open until the drain.
    Unknown,
    /// Ended with UNAVAILABLE.
    Done,
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

fn reply(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status as i32,
    }
}

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let service = request.into_inner().service;
        match self.state.status(&service) {
            Some(status) => Ok(Response::new(reply(status))),
            None => Err(Status::not_found(format!(
                "unknown health service {service:?}; known: \"\", readiness, liveness, {DETECTOR}"
            ))),
        }
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let service = request.into_inner().service;
        let stop = self.streams_stop.clone();
        let start = WatchState::Start(self.state.subscribe(&service));
        let stream = futures::stream::unfold((start, stop), |(state, stop)| async move {
            match state {
                WatchState::Start(Some(mut rx)) => {
                    let current = *rx.borrow_and_update();
                    Some((Ok(reply(current)), (WatchState::Known(rx), stop)))
                }
                WatchState::Start(None) => Some((
                    Ok(reply(ServingStatus::ServiceUnknown)),
                    (WatchState::Unknown, stop),
                )),
                WatchState::Known(mut rx) => tokio::select! {
                    biased;
                    () = stop.cancelled() => Some((Err(draining()), (WatchState::Done, stop))),
                    changed = rx.changed() => match changed {
                        Ok(()) => {
                            let current = *rx.borrow_and_update();
                            Some((Ok(reply(current)), (WatchState::Known(rx), stop)))
                        }
                        Err(_) => Some((Err(draining()), (WatchState::Done, stop))),
                    },
                },
                WatchState::Unknown => {
                    stop.cancelled().await;
                    Some((Err(draining()), (WatchState::Done, stop)))
                }
                WatchState::Done => None,
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// The status a long-lived stream ends with when the server drains.
pub fn draining() -> Status {
    Status::unavailable("server is draining")
}

/// Watches the runtime: a task on the runtime beats a heartbeat, and a plain
/// OS thread (which a wedged runtime cannot stop) turns liveness NOT_SERVING
/// when the heartbeat is older than `threshold`, and SERVING again when it
/// resumes. Stops when `stop` is cancelled.
pub fn spawn_liveness_watchdog(state: HealthState, threshold: Duration, stop: CancellationToken) {
    let epoch = Instant::now();
    let last_beat = Arc::new(AtomicU64::new(0));
    let beat_every = (threshold / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));

    let beat = Arc::clone(&last_beat);
    let beat_stop = stop.clone();
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(beat_every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    beat.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
                }
                () = beat_stop.cancelled() => break,
            }
        }
    });

    let spawned = std::thread::Builder::new()
        .name("liveness-watchdog".into())
        .spawn(move || {
            let threshold_ms = threshold.as_millis() as u64;
            while !stop.is_cancelled() {
                std::thread::sleep(beat_every);
                let age = (epoch.elapsed().as_millis() as u64)
                    .saturating_sub(last_beat.load(Ordering::Relaxed));
                let live = age <= threshold_ms;
                if live != state.is_live() {
                    if live {
                        tracing::warn!(
                            stall_ms = age,
                            "runtime heartbeat resumed: liveness SERVING"
                        );
                    } else {
                        tracing::error!(
                            stall_ms = age,
                            threshold_ms,
                            "runtime heartbeat stalled: liveness NOT_SERVING"
                        );
                    }
                    state.set_live(live);
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "could not start the liveness watchdog thread");
    }
}
