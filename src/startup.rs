//! All the wiring, in one place: [`Application::build`] constructs the whole
//! graph (flags, listeners, the registry, the subsystems and their metrics,
//! the gRPC services and routes, reflection from the one descriptor list,
//! the edge, the background tasks) and binds;
//! [`Application::run_until_stopped`] starts the tasks and the control
//! thread (the probe and admin listeners, [`crate::threads`]), serves,
//! supervises, and after the first stop signal drains in the five steps of
//! the Kubernetes termination contract, one [`crate::drain::Drain`] method
//! each.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;
use futures::{FutureExt, Stream, StreamExt};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::Layer;

use crate::admin_http;
use crate::configuration::{ConnectionSettings, Settings, Track};
use crate::dark_launch::DarkLauncher;
use crate::detection::DetectionService;
use crate::drain::{Drain, ServingHandles};
use crate::engine::{EngineError, EngineKind, EngineLoader, RealEngines};
use crate::execution::Executor;
use crate::flags::definition::DefinitionErrors;
use crate::flags::store::{FlagStore, spawn_watcher};
use crate::grpc::admin::{AdminService, AdminSources};
use crate::grpc::catalog::{DESCRIPTOR_SETS, MethodTable, RpcMetrics};
use crate::grpc::detector::DetectorService;
use crate::grpc::edge::{Edge, EdgeLayer, Observer};
use crate::grpc::pb;
use crate::health::{HealthService, HealthState, spawn_liveness_watchdog};
use crate::metrics::{self, Metrics};
use crate::process_metrics::ProcessCollector;
use crate::shutdown::{DrainOutcome, StopSignal};
use crate::telemetry::Tracing;
use crate::threads::ControlThread;

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

/// The service the gRPC listener serves: every route behind the edge (one
/// [`crate::grpc::serve::GrpcService`]).
pub type EdgeService = Edge<tonic::service::Routes>;

/// A bound, not yet serving, Switchyard replica: the whole graph, built.
pub struct Application {
    settings: Arc<Settings>,
    grpc_listener: TcpListener,
    grpc_addr: SocketAddr,
    admin_addr: SocketAddr,
    probe_addr: SocketAddr,
    health: HealthState,
    /// Every route behind the edge.
    service: EdgeService,
    /// The drain's handles on serving (listener, streams).
    serving: ServingHandles,
    /// Cancelled when the drain is over: the background tasks stop.
    background_stop: CancellationToken,
    /// What the control thread serves until `background_stop`: the probe
    /// and admin listeners.
    control: Control,
    /// Loads and warms the engines, then turns readiness on.
    loading: BoxFuture<'static, Result<(), EngineError>>,
    /// The flag watcher and the liveness watchdog.
    background: Background,
}

/// The control thread's listeners and what they serve
/// ([`crate::threads`]). The listeners are bound but not registered with
/// any runtime: the control thread's own registers them.
struct Control {
    probe_listener: std::net::TcpListener,
    /// The standard Health service alone, behind the same edge.
    probe_service: EdgeService,
    admin_listener: std::net::TcpListener,
    health: HealthState,
    metrics: Arc<Metrics>,
    flags: Arc<FlagStore>,
    /// The replica's flag-context attributes, for OFREP.
    replica: Arc<[(String, String)]>,
    connection: ConnectionSettings,
}

impl Control {
    /// Starts the control thread; it serves both listeners until `stop`,
    /// then sends GOAWAY on the probe listener's connections.
    async fn start(self, stop: &CancellationToken) -> std::io::Result<ControlThread> {
        let stop = stop.clone();
        ControlThread::start(move || async move {
            let Control {
                probe_listener,
                probe_service,
                admin_listener,
                health,
                metrics,
                flags,
                replica,
                connection,
            } = self;
            let probe = async {
                match TcpListener::from_std(probe_listener) {
                    Ok(listener) => {
                        crate::grpc::serve::serve(
                            listener,
                            probe_service,
                            connection,
                            stop.clone(),
                        )
                        .await;
                    }
                    Err(e) => tracing::error!(error = %e, "cannot serve the probe listener"),
                }
            };
            let admin = async {
                let served = match TcpListener::from_std(admin_listener) {
                    Ok(listener) => {
                        admin_http::serve(
                            listener,
                            health,
                            metrics,
                            flags,
                            replica,
                            stop.clone().cancelled_owned(),
                        )
                        .await
                    }
                    Err(e) => Err(e),
                };
                if let Err(e) = served {
                    tracing::error!(error = %e, "the admin listener failed");
                }
            };
            tokio::join!(probe, admin);
        })
        .await
    }
}

/// Background work that [`Application::run_until_stopped`] starts.
struct Background {
    flags: Arc<FlagStore>,
    health: HealthState,
    settings: Arc<Settings>,
}

impl Background {
    fn start(self, stop: &CancellationToken) {
        spawn_watcher(
            self.flags,
            self.settings.flags.poll_interval,
            self.settings.flags.debounce,
            stop.clone(),
        );
        spawn_liveness_watchdog(
            self.health,
            self.settings.health.liveness_stall_threshold,
            stop.clone(),
        );
    }
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
        let settings = Arc::new(settings);
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
        // The control thread's listeners, registered by its own runtime.
        let (admin_listener, admin_addr) =
            bind_for_control("admin", settings.server.admin_addr).await?;
        let (probe_listener, probe_addr) =
            bind_for_control("probe", settings.server.probe_addr).await?;

        // The registry: the edge's go-grpc-prometheus series and `process_*`
        // at the root, everything else on the `switchyard_` sub-registry,
        // each subsystem registering what it owns.
        let mut registry = Registry::default();
        let rpc = RpcMetrics::register(&mut registry);
        let methods = MethodTable::from_descriptor_sets(DESCRIPTOR_SETS, &rpc)
            .map_err(|e| StartupError::Reflection(e.to_string()))?;
        registry.register_collector(Box::new(ProcessCollector));
        let own = registry.sub_registry_with_prefix("switchyard");
        tracing.register_metrics(own);
        metrics::register_build_info(
            own,
            settings.deployment.version.clone(),
            settings.deployment.track.as_str(),
        );
        let health = HealthState::new(settings.health.ready_file.clone());
        health.register_metrics(own);
        flags.register_metrics(own);
        let executor = Arc::new(Executor::new(
            settings.server.max_concurrent_requests,
            settings.detector.engine_threads(),
            settings.server.data_plane_nice,
            settings.detector.inline_max_chars,
            own,
        ));
        let dark = Arc::new(DarkLauncher::new(
            settings.dark_launch.max_in_flight,
            settings.dark_launch.timeout,
            own,
        ));
        let detection = Arc::new(DetectionService::new(
            &settings,
            Arc::clone(&flags),
            Arc::clone(&executor),
            Arc::clone(&dark),
            own,
        ));
        let metrics = Arc::new(Metrics::new(registry));

        // The gRPC services; reflection from the one descriptor list.
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
        let serving = ServingHandles::default();
        let max_message = settings.server.max_decoding_message_size;
        let health_server = || {
            tonic_health::pb::health_server::HealthServer::new(HealthService::new(
                health.clone(),
                serving.end_streams.clone(),
            ))
            .max_decoding_message_size(max_message)
        };
        let admin_service = AdminService::new(AdminSources {
            settings: Arc::clone(&settings),
            health: health.clone(),
            detection: Arc::clone(&detection),
            flags: Arc::clone(&flags),
            dark,
            traffic: methods.received_by(pb::detector_server::SERVICE_NAME),
            started,
        });
        let routes = tonic::service::Routes::new(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(
                pb::detector_server::DetectorServer::new(DetectorService::new(
                    Arc::clone(&detection),
                    serving.end_streams.clone(),
                    serving.streams.clone(),
                    &settings.flags.headers(),
                ))
                .max_decoding_message_size(max_message),
            )
            .add_service(
                pb::admin_server::AdminServer::new(admin_service)
                    .max_decoding_message_size(max_message),
            )
            .add_service(health_server());
        let edge = EdgeLayer::new(Observer {
            methods,
            shadow_track: settings.deployment.track == Track::Shadow,
            tracing,
        });
        let service = edge.layer(routes.prepare());
        let probe_service = edge.layer(tonic::service::Routes::new(health_server()).prepare());

        // The background tasks (started by `run_until_stopped`).
        let background_stop = CancellationToken::new();
        let control = Control {
            probe_listener,
            probe_service,
            admin_listener,
            health: health.clone(),
            metrics,
            flags: Arc::clone(&flags),
            replica: detection
                .replica_attributes()
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            connection: settings.connection.clone(),
        };
        let loading =
            load_engines(loader, Arc::clone(&detection), executor, health.clone()).boxed();
        Ok(Self {
            background: Background {
                flags,
                health: health.clone(),
                settings: Arc::clone(&settings),
            },
            settings,
            grpc_listener,
            grpc_addr,
            admin_addr,
            probe_addr,
            health,
            service,
            serving,
            background_stop,
            control,
            loading,
        })
    }

    /// The bound gRPC address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The bound admin HTTP address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The bound probe address (gRPC Health only).
    pub fn probe_addr(&self) -> SocketAddr {
        self.probe_addr
    }

    /// The replica's health state.
    pub fn health(&self) -> HealthState {
        self.health.clone()
    }

    /// The gRPC service the listener serves (every route behind the edge),
    /// for driving the request path without a socket (the fuzzer does).
    pub fn grpc_service(&self) -> EdgeService {
        self.service.clone()
    }

    /// Starts the background tasks and the control thread, loads the
    /// engines and serves until the first stop signal, then drains (see the
    /// module documentation). Returns how the drain ended; an error when the
    /// engines fail to load or a server fails on its own.
    ///
    /// Call it from the thread that drives the application (the one that
    /// `block_on`s it), not from a task on a data-plane worker: the control
    /// thread starts at that thread's CPU priority.
    pub async fn run_until_stopped<S>(self, signals: S) -> Result<DrainOutcome, StartupError>
    where
        S: Stream<Item = StopSignal> + Send + Unpin,
    {
        let Application {
            settings,
            grpc_listener,
            health,
            service,
            serving,
            background_stop,
            control,
            loading,
            background,
            ..
        } = self;
        let mut signals = signals.fuse();
        let control = control
            .start(&background_stop)
            .await
            .map_err(|e| StartupError::Serve(format!("cannot start the control thread: {e}")))?;
        background.start(&background_stop);
        let mut loading = tokio::spawn(loading);
        let mut grpc = tokio::spawn(crate::grpc::serve::serve(
            grpc_listener,
            service,
            settings.connection.clone(),
            serving.stop_accepting.clone(),
        ));

        // Serve until the first stop signal (or a failure).
        let mut loaded = false;
        let signal = loop {
            tokio::select! {
                Some(signal) = signals.next() => break signal,
                result = &mut loading, if !loaded => {
                    loaded = true;
                    let failed = match result {
                        Ok(Ok(())) => None,
                        Ok(Err(e)) => Some(e),
                        Err(e) => Some(EngineError::Load(e.to_string())),
                    };
                    if let Some(e) = failed {
                        return Err(shutdown_on_error(e.into(), &background_stop, &serving.stop_accepting));
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
        if !control.stopped(std::time::Duration::from_secs(1)).await {
            tracing::warn!("the probe and admin listeners did not close within 1 s");
        }
        Ok(outcome)
    }
}

/// Loads the engines, starts the pool and warms every engine up, then turns
/// readiness on: ready means warm.
async fn load_engines(
    loader: Arc<dyn EngineLoader>,
    detection: Arc<DetectionService>,
    executor: Arc<Executor>,
    health: HealthState,
) -> Result<(), EngineError> {
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
    detection.warm_up_and_install(engines).await?;
    if let Some(engines) = detection.engines() {
        for kind in EngineKind::ALL {
            tracing::info!(
                engine = %kind,
                warm_up_ms = engines.warm_up_time(kind).as_millis() as u64,
                threads = executor.threads(),
                "engine warmed up"
            );
        }
    }
    health.set_ready();
    tracing::info!(
        after_ms = started.elapsed().as_millis() as u64,
        "engines loaded and warmed up"
    );
    Ok(())
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

/// Binds on the data plane's runtime, then releases the listener from it
/// (nonblocking, unregistered) for the control thread's runtime.
async fn bind_for_control(
    what: &'static str,
    addr: SocketAddr,
) -> Result<(std::net::TcpListener, SocketAddr), StartupError> {
    let (listener, bound) = bind(what, addr).await?;
    let listener =
        listener
            .into_std()
            .map_err(|source| StartupError::Bind { what, addr, source })?;
    Ok((listener, bound))
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
