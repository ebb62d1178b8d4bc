//! All the wiring: [`Application::build`] binds, [`Application::run_until_stopped`]
//! serves and then drains.
//!
//! After the first stop signal it drains in the five steps of the
//! Kubernetes termination contract, one [`crate::drain::Drain`] method each.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use futures::{Stream, StreamExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::admin_http;
use crate::configuration::{Settings, Track};
use crate::detection::DetectionService;
use crate::drain::{Drain, ServingHandles};
use crate::engine::{EngineError, EngineKind, EngineLoader, RealEngines};
use crate::flags::definition::DefinitionErrors;
use crate::flags::store::{FlagStore, spawn_watcher};
use crate::grpc::admin::AdminService;
use crate::grpc::detector::DetectorService;
use crate::grpc::edge::{EdgeLayer, Observer};
use crate::grpc::pb;
use crate::health::{HealthService, HealthState, spawn_liveness_watchdog};
use crate::metrics::{LiveState, MethodTable, Metrics};
use crate::process_metrics::ProcessCollector;
use crate::shutdown::{DrainOutcome, StopSignal};
use crate::telemetry::Tracing;

/// Every service served, as encoded descriptor sets: one list for
/// reflection and for the per-method metrics table.
const DESCRIPTOR_SETS: &[&[u8]] = &[
    pb::FILE_DESCRIPTOR_SET,
    tonic_health::pb::FILE_DESCRIPTOR_SET,
    tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
    tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
];

/// Why the application could not start or stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// A listener could not be bound.
    #[error("cannot bind the {what} listener on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// Loading the engines failed.
    #[error(transparent)]
    Engines(#[from] EngineError),
    /// The flags at startup are invalid (refuse to start: with
    /// maxUnavailable 0 the old pods keep serving).
    #[error("invalid flags: {0}")]
    Flags(#[from] DefinitionErrors),
    /// The reflection service (or the method table) could not be built
    /// from the descriptors.
    #[error("cannot read the service descriptors: {0}")]
    Reflection(String),
    /// The gRPC server stopped with an error.
    #[error("the gRPC server failed: {0}")]
    Serve(String),
}

/// A bound, not yet serving, Switchyard replica.
pub struct Application {
    settings: Arc<Settings>,
    grpc_listener: TcpListener,
    admin_listener: TcpListener,
    grpc_addr: SocketAddr,
    admin_addr: SocketAddr,
    health: HealthState,
    detection: Arc<DetectionService>,
    metrics: Arc<Metrics>,
    methods: MethodTable,
    loader: Arc<dyn EngineLoader>,
    tracing: Tracing,
    started: Instant,
}

impl Application {
    /// Binds both listeners with the real engines. Port 0 picks free ports.
    /// Spans go to `tracing` (from [`crate::telemetry::init`]).
    pub async fn build(settings: Settings, tracing: Tracing) -> Result<Self, StartupError> {
        Self::build_with_loader(settings, Arc::new(RealEngines), tracing).await
    }

    /// Like [`Application::build`] with another engine loader (tests use slow
    /// or failing ones).
    pub async fn build_with_loader(
        settings: Settings,
        loader: Arc<dyn EngineLoader>,
        tracing: Tracing,
    ) -> Result<Self, StartupError> {
        let started = Instant::now();
        // Flags first: bad flags refuse to start before anything binds. The
        // first successful load is part of readiness (it precedes it).
        let flags = Arc::new(match &settings.flags.path {
            Some(path) => FlagStore::open(path, settings.flags.fractional_version)?,
            None => FlagStore::built_in(
                settings.detector.default_engine.as_str(),
                settings.detector.max_text_chars,
                settings.flags.fractional_version,
            ),
        });
        let status = flags.status();
        tracing::info!(source = %status.source, revision = %status.revision, "flags loaded");
        let (grpc_listener, grpc_addr) = bind("gRPC", settings.server.grpc_addr).await?;
        let (admin_listener, admin_addr) = bind("admin", settings.server.admin_addr).await?;
        let health = HealthState::new(settings.health.ready_file.clone());
        let metrics = Arc::new(Metrics::new());
        let detection = Arc::new(DetectionService::new(
            &settings,
            flags,
            Arc::clone(&metrics),
        ));
        metrics.register_collector(Box::new(detection.executor().collector()));
        metrics.register_collector(Box::new(ProcessCollector));
        tracing.register_metrics(&metrics);
        metrics.register_collector(Box::new(LiveState {
            detection: Arc::clone(&detection),
            health: health.clone(),
            version: settings.deployment.version.clone(),
            track: settings.deployment.track.as_str(),
        }));
        let methods = MethodTable::from_descriptor_sets(DESCRIPTOR_SETS, &metrics)
            .map_err(|e| StartupError::Reflection(e.to_string()))?;
        Ok(Self {
            settings: Arc::new(settings),
            grpc_listener,
            admin_listener,
            grpc_addr,
            admin_addr,
            health,
            detection,
            metrics,
            methods,
            loader,
            tracing,
            started,
        })
    }

    /// The replica's metrics registry (what `GET /metrics` serves).
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// The bound gRPC address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The bound admin HTTP address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The replica's health state.
    pub fn health(&self) -> HealthState {
        self.health.clone()
    }

    /// Serves until the first stop signal, then drains (see the module
    /// documentation). Returns how the drain ended; an error when the engines
    /// fail to load or the server fails on its own.
    pub async fn run_until_stopped<S>(self, signals: S) -> Result<DrainOutcome, StartupError>
    where
        S: Stream<Item = StopSignal> + Send + Unpin,
    {
        let Application {
            settings,
            grpc_listener,
            admin_listener,
            health,
            detection,
            metrics,
            methods,
            loader,
            tracing,
            started,
            ..
        } = self;
        let mut signals = signals.fuse();

        // Built before any task starts, so a failure here leaves nothing running.
        let reflection = || {
            DESCRIPTOR_SETS.iter().fold(
                tonic_reflection::server::Builder::configure(),
                |builder, set| builder.register_encoded_file_descriptor_set(set),
            )
        };
        let reflection_v1 = reflection()
            .build_v1()
            .map_err(|e| StartupError::Reflection(e.to_string()))?;
        let reflection_v1alpha = reflection()
            .build_v1alpha()
            .map_err(|e| StartupError::Reflection(e.to_string()))?;

        // Step 4 stops serving through these.
        let serving = ServingHandles::default();
        // Cancelled when the drain is over: watchdog and admin listener.
        let background_stop = CancellationToken::new();

        spawn_watcher(
            Arc::clone(detection.flags()),
            std::time::Duration::from_secs_f64(settings.flags.poll_interval),
            std::time::Duration::from_secs_f64(settings.flags.debounce),
            background_stop.clone(),
        );
        spawn_liveness_watchdog(
            health.clone(),
            settings.health.liveness_stall_threshold(),
            background_stop.clone(),
        );

        let mut loading = {
            let (detection, health) = (Arc::clone(&detection), health.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                let engines = tokio::task::spawn_blocking(move || loader.load())
                    .await
                    .map_err(|e| EngineError::Load(e.to_string()))??;
                for loaded in engines.loaded() {
                    tracing::info!(
                        engine = %loaded.engine.kind(),
                        load_ms = loaded.load_time.as_millis() as u64,
                        "engine loaded"
                    );
                }
                // Ready means warm: the pool threads start and warm every
                // engine up before readiness turns SERVING.
                detection.warm_up_and_install(engines).await?;
                if let Some(engines) = detection.engines() {
                    for kind in EngineKind::ALL {
                        tracing::info!(
                            engine = %kind,
                            warm_up_ms = engines.warm_up_time(kind).as_millis() as u64,
                            threads = detection.executor().threads(),
                            "engine warmed up"
                        );
                    }
                }
                health.set_ready();
                tracing::info!(
                    after_ms = started.elapsed().as_millis() as u64,
                    "engines loaded and warmed up"
                );
                Ok::<(), EngineError>(())
            })
        };

        let max_message = settings.server.max_decoding_message_size;
        let routes = tonic::service::Routes::new(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(
                pb::detector_server::DetectorServer::new(DetectorService::new(
                    Arc::clone(&detection),
                    serving.end_streams.clone(),
                    serving.streams.clone(),
                    settings.flags.headers(),
                ))
                .max_decoding_message_size(max_message),
            )
            .add_service(
                pb::admin_server::AdminServer::new(AdminService::new(
                    Arc::clone(&settings),
                    health.clone(),
                    Arc::clone(&detection),
                    methods.received(&[
                        "/switchyard.v1.Detector/Detect",
                        "/switchyard.v1.Detector/DetectStream",
                    ]),
                    started,
                ))
                .max_decoding_message_size(max_message),
            )
            .add_service(
                tonic_health::pb::health_server::HealthServer::new(HealthService::new(
                    health.clone(),
                    serving.end_streams.clone(),
                ))
                .max_decoding_message_size(max_message),
            );
        let service = tower::ServiceBuilder::new()
            .layer(EdgeLayer::new(Observer {
                metrics: Arc::clone(&metrics),
                methods,
                shadow_track: settings.deployment.track == Track::Shadow,
                tracing,
            }))
            .service(routes.prepare());
        let mut grpc = tokio::spawn(crate::grpc::serve::serve(
            grpc_listener,
            service,
            settings.connection.clone(),
            serving.stop_accepting.clone(),
        ));
        let admin = tokio::spawn(admin_http::serve(
            admin_listener,
            health.clone(),
            Arc::clone(&metrics),
            Arc::clone(detection.flags()),
            background_stop.clone().cancelled_owned(),
        ));

        // Serve until the first stop signal (or a failure).
        let mut loaded = false;
        let signal = loop {
            tokio::select! {
                Some(signal) = signals.next() => break signal,
                result = &mut loading, if !loaded => {
                    loaded = true;
                    match result {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => return Err(shutdown_on_error(e.into(), &background_stop, &serving.stop_accepting)),
                        Err(e) => return Err(shutdown_on_error(EngineError::Load(e.to_string()).into(), &background_stop, &serving.stop_accepting)),
                    }
                }
                result = &mut grpc => {
                    let message = match result {
                        Ok(()) => "stopped unexpectedly".to_owned(),
                        Err(e) => e.to_string(),
                    };
                    return Err(shutdown_on_error(StartupError::Serve(message), &background_stop, &serving.stop_accepting));
                }
            }
        };

        let mut drain = Drain::signal_received(signal, signals, &settings.drain);
        drain.mark_not_ready(&health);
        let outcome = match drain.keep_serving().await {
            Err(forced) => forced,
            Ok(()) => {
                drain.close_listener(&serving);
                drain
                    .wait_for_in_flight(async {
                        let _ = (&mut grpc).await;
                        serving.streams.wait().await;
                    })
                    .await
            }
        };
        background_stop.cancel();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), admin).await;
        Ok(outcome)
    }
}

fn shutdown_on_error(
    err: StartupError,
    background_stop: &CancellationToken,
    stop_accepting: &CancellationToken,
) -> StartupError {
    tracing::error!(error = %err, "stopping");
    background_stop.cancel();
    stop_accepting.cancel();
    err
}

async fn bind(
    what: &'static str,
    addr: SocketAddr,
) -> Result<(TcpListener, SocketAddr), StartupError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| StartupError::Bind { what, addr, source })?;
    let bound =
        listener
            .local_addr()
            .map_err(|source| StartupError::Bind { what, addr, source })?;
    Ok((listener, bound))
}
