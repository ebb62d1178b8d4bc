//! `TestApp`: a real Switchyard on 127.0.0.1 port 0, driven through the
//! library API, with typed request helpers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use switchyard::configuration::{Overrides, Settings};
use switchyard::engine::{
    Detection, Engine, EngineError, EngineKind, EngineLoader, Engines, LoadedEngine, RealEngines,
    WhatlangEngine,
};
use switchyard::grpc::pb;
use switchyard::grpc::pb::admin_client::AdminClient;
use switchyard::grpc::pb::detector_client::DetectorClient;
use switchyard::health::HealthState;
use switchyard::shutdown::{DrainOutcome, StopSignal};
use switchyard::startup::{Application, StartupError};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Settings for tests: loopback, port 0, a short drain, plus `extra` flags.
pub fn settings(extra: &[(&'static str, &str)]) -> Settings {
    let mut values = vec![
        ("server.grpc_addr", "127.0.0.1:0".to_owned()),
        ("server.admin_addr", "127.0.0.1:0".to_owned()),
        ("drain.delay", "0.2".to_owned()),
        ("drain.timeout", "5".to_owned()),
        ("deployment.pod", "test-pod".to_owned()),
    ];
    values.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    Settings::load(
        &Default::default(),
        &Overrides {
            config_file: None,
            values,
        },
    )
    .expect("test settings are valid")
}

/// A running replica and the levers a test needs.
pub struct TestApp {
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub health: HealthState,
    signals: mpsc::Sender<StopSignal>,
    pub run: JoinHandle<Result<DrainOutcome, StartupError>>,
}

impl TestApp {
    /// Real engines, default test settings, ready before it returns.
    pub async fn spawn() -> Self {
        Self::spawn_with(settings(&[]), Arc::new(RealEngines))
            .await
            .ready()
            .await
    }

    /// Any settings and loader; does not wait for readiness.
    pub async fn spawn_with(settings: Settings, loader: Arc<dyn EngineLoader>) -> Self {
        let app = Application::build_with_loader(settings, loader)
            .await
            .expect("application builds");
        let (grpc_addr, admin_addr, health) = (app.grpc_addr(), app.admin_addr(), app.health());
        let (signals, rx) = mpsc::channel(4);
        let run =
            tokio::spawn(app.run_until_stopped(tokio_stream::wrappers::ReceiverStream::new(rx)));
        Self {
            grpc_addr,
            admin_addr,
            health,
            signals,
            run,
        }
    }

    /// Waits (bounded) until readiness is SERVING.
    pub async fn ready(self) -> Self {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.health.is_ready() {
            assert!(Instant::now() < deadline, "not ready within 30 s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.grpc_addr)
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.endpoint())
            .expect("valid uri")
            .connect()
            .await
            .expect("connects")
    }

    pub async fn detector(&self) -> DetectorClient<Channel> {
        DetectorClient::new(self.channel().await)
    }

    pub async fn health_client(&self) -> HealthClient<Channel> {
        HealthClient::new(self.channel().await)
    }

    pub async fn admin(&self) -> AdminClient<Channel> {
        AdminClient::new(self.channel().await)
    }

    /// Detect as user `user` (metadata `x-user-id`).
    pub async fn detect(
        &self,
        text: &str,
        user: &str,
    ) -> Result<pb::DetectResponse, tonic::Status> {
        let mut request = tonic::Request::new(pb::DetectRequest { text: text.into() });
        request
            .metadata_mut()
            .insert("x-user-id", user.parse().expect("ascii user id"));
        self.detector()
            .await
            .detect(request)
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn check(&self, service: &str) -> Result<ServingStatus, tonic::Status> {
        let reply = self
            .health_client()
            .await
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await?;
        Ok(ServingStatus::try_from(reply.into_inner().status).expect("known status"))
    }

    /// Sends a stop signal, as SIGTERM would.
    pub async fn signal(&self) {
        self.signals
            .send(StopSignal::Terminate)
            .await
            .expect("app is running");
    }

    /// Waits (bounded) for `run_until_stopped` to return.
    pub async fn outcome(self) -> DrainOutcome {
        tokio::time::timeout(Duration::from_secs(30), self.run)
            .await
            .expect("stops within 30 s")
            .expect("run task did not panic")
            .expect("run returned Ok")
    }

    /// A plain HTTP/1.1 GET on the admin listener: (status code, body).
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        http_get(self.admin_addr, path).await
    }
}

/// Minimal HTTP/1.1 GET, enough for the admin endpoints.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("admin connects");
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.expect("read");
    let code = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let body = raw.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    (code, body)
}

/// Loads the real engines only once the test opens the gate.
pub struct GatedLoader {
    gate: Mutex<std_mpsc::Receiver<()>>,
}

impl GatedLoader {
    pub fn new() -> (Arc<Self>, std_mpsc::Sender<()>) {
        let (tx, rx) = std_mpsc::channel();
        (
            Arc::new(Self {
                gate: Mutex::new(rx),
            }),
            tx,
        )
    }
}

impl EngineLoader for GatedLoader {
    fn load(&self) -> Result<Engines, EngineError> {
        let gate = self
            .gate
            .lock()
            .map_err(|e| EngineError::Load(e.to_string()))?;
        gate.recv_timeout(Duration::from_secs(30))
            .map_err(|e| EngineError::Load(format!("gate never opened: {e}")))?;
        RealEngines.load()
    }
}

/// whatlang that takes `delay` per call: an in-flight request a test can hold.
pub struct SlowEngine {
    inner: WhatlangEngine,
    delay: Duration,
}

impl Engine for SlowEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Whatlang
    }

    fn detect(&self, text: &str) -> Detection {
        std::thread::sleep(self.delay);
        self.inner.detect(text)
    }
}

/// Loads a [`SlowEngine`] as whatlang and the real lingua.
pub struct SlowLoader(pub Duration);

impl EngineLoader for SlowLoader {
    fn load(&self) -> Result<Engines, EngineError> {
        let real = RealEngines.load()?;
        let lingua = real
            .loaded()
            .into_iter()
            .find(|l| l.engine.kind() == EngineKind::Lingua)
            .cloned()
            .ok_or_else(|| EngineError::Load("no lingua".into()))?;
        let slow: Arc<dyn Engine> = Arc::new(SlowEngine {
            inner: WhatlangEngine::new(),
            delay: self.0,
        });
        Engines::new(
            LoadedEngine {
                engine: slow,
                load_time: Duration::ZERO,
            },
            lingua,
        )
    }
}

/// Polls `condition` every 5 ms until it holds, failing after `within`.
pub async fn eventually(within: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
