//! `TestApp`: a real Switchyard on 127.0.0.1 port 0, driven through the
//! library API, with typed request helpers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use switchyard::configuration::{Overrides, Settings};
use switchyard::engine::{
    Cost, Detection, Engine, EngineError, EngineKind, EngineLoader, Engines, LoadedEngine,
    RealEngines, WhatlangEngine,
};
use switchyard::grpc::pb;
use switchyard::grpc::pb::admin_client::AdminClient;
use switchyard::grpc::pb::detector_client::DetectorClient;
use switchyard::health::HealthState;
use switchyard::shutdown::{DrainOutcome, StopSignal};
use switchyard::startup::{Application, StartupError};
use switchyard::telemetry::Tracing;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

/// Settings for tests: loopback, port 0, a short drain, plus `extra` flags.
pub fn settings(extra: &[(&'static str, &str)]) -> Settings {
    settings_in(&[], extra).expect("test settings are valid")
}

/// [`settings`] with an injected environment (`OTEL_*`, ...).
pub fn settings_in(
    env: &[(&str, &str)],
    extra: &[(&'static str, &str)],
) -> Result<Settings, switchyard::configuration::ConfigError> {
    let mut values = vec![
        ("server.grpc_addr", "127.0.0.1:0".to_owned()),
        ("server.admin_addr", "127.0.0.1:0".to_owned()),
        ("server.probe_addr", "127.0.0.1:0".to_owned()),
        ("drain.delay", "0.2".to_owned()),
        ("drain.timeout", "5".to_owned()),
        ("deployment.pod", "test-pod".to_owned()),
    ];
    values.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let env = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Settings::load(
        &env,
        &Overrides {
            config_file: None,
            values,
        },
    )
}

/// A running replica and the levers a test needs.
pub struct TestApp {
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub probe_addr: SocketAddr,
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

    /// Real engines, the test settings plus `extra`, ready before it returns.
    pub async fn spawn_configured(extra: &[(&'static str, &str)]) -> Self {
        Self::spawn_with(settings(extra), Arc::new(RealEngines))
            .await
            .ready()
            .await
    }

    /// Any settings and loader; does not wait for readiness.
    pub async fn spawn_with(settings: Settings, loader: Arc<dyn EngineLoader>) -> Self {
        Self::spawn_traced(settings, loader, Tracing::default()).await
    }

    /// Like [`TestApp::spawn_with`], exporting spans through `tracing`.
    pub async fn spawn_traced(
        settings: Settings,
        loader: Arc<dyn EngineLoader>,
        tracing: Tracing,
    ) -> Self {
        let app = Application::build_with_loader(settings, loader, tracing)
            .await
            .expect("application builds");
        let (grpc_addr, admin_addr, probe_addr, health) = (
            app.grpc_addr(),
            app.admin_addr(),
            app.probe_addr(),
            app.health(),
        );
        let (signals, rx) = mpsc::channel(4);
        let run =
            tokio::spawn(app.run_until_stopped(tokio_stream::wrappers::ReceiverStream::new(rx)));
        Self {
            grpc_addr,
            admin_addr,
            probe_addr,
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

    /// A Detector client whose requests carry `authority` (e.g. a mirror's
    /// `...-shadow` one) while connecting to this replica.
    pub async fn detector_as(&self, authority: &str) -> DetectorClient<Channel> {
        detector_at(self.grpc_addr, authority).await
    }

    /// Real engines and the flags of `cm` (debounced 20 ms), plus `extra`
    /// settings; ready before it returns.
    pub async fn spawn_on_flags(cm: &ConfigMapDir, extra: &[(&'static str, &str)]) -> Self {
        let path = cm.path().to_str().expect("utf-8").to_owned();
        let mut all = vec![("flags.path", path.as_str()), ("flags.debounce", "0.02")];
        all.extend_from_slice(extra);
        Self::spawn_with(settings(&all), Arc::new(RealEngines))
            .await
            .ready()
            .await
    }

    pub async fn health_client(&self) -> HealthClient<Channel> {
        HealthClient::new(self.channel().await)
    }

    pub async fn admin(&self) -> AdminClient<Channel> {
        AdminClient::new(self.channel().await)
    }

    /// Admin/GetInfo.
    pub async fn info(&self) -> pb::Info {
        self.admin()
            .await
            .get_info(pb::GetInfoRequest {})
            .await
            .expect("get_info")
            .into_inner()
    }

    /// The detection requests this replica has counted (real, shadow).
    pub async fn traffic(&self) -> (u64, u64) {
        let t = self.info().await.traffic.expect("traffic");
        (t.requests, t.shadow)
    }

    /// Polls GetInfo until `ready` holds, for at most `within`; returns that
    /// Info, or fails the test naming `what` and the last Info seen.
    pub async fn info_until(
        &self,
        within: Duration,
        what: &str,
        ready: impl Fn(&pb::Info) -> bool,
    ) -> pb::Info {
        let deadline = Instant::now() + within;
        loop {
            let info = self.info().await;
            if ready(&info) {
                return info;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {within:?}: {info:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (bounded) until at least `n` shadow requests are counted (the
    /// mirror's copies arrive after the replies); returns the counts.
    pub async fn traffic_once_shadow(&self, n: u64) -> (u64, u64) {
        let info = self
            .info_until(Duration::from_secs(10), "shadow copies counted", |i| {
                i.traffic.as_ref().is_some_and(|t| t.shadow >= n)
            })
            .await;
        let t = info.traffic.expect("traffic");
        (t.requests, t.shadow)
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

    /// Opens a health Watch on `service`.
    pub async fn watch(&self, service: &str) -> tonic::Streaming<HealthCheckResponse> {
        self.health_client()
            .await
            .watch(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("watch opens")
            .into_inner()
    }

    pub async fn check(&self, service: &str) -> Result<ServingStatus, tonic::Status> {
        check_at(self.grpc_addr, service).await
    }

    /// Health/Check on the probe listener (the kubelet's).
    pub async fn probe(&self, service: &str) -> Result<ServingStatus, tonic::Status> {
        check_at(self.probe_addr, service).await
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

/// A Detector client for the server at `addr` whose requests carry
/// `authority`.
pub async fn detector_at(addr: SocketAddr, authority: &str) -> DetectorClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("valid uri")
        .origin(format!("http://{authority}").parse().expect("origin"))
        .connect()
        .await
        .expect("connects");
    DetectorClient::new(channel)
}

/// Minimal HTTP/1.1 GET, enough for the admin endpoints.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    http(addr, &request).await
}

/// Minimal HTTP/1.1 POST of a JSON body (webhooks).
pub async fn http_post(addr: SocketAddr, path: &str, body: &str) -> (u16, String) {
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    http(addr, &request).await
}

/// Sends one request, reads to the end: (status code, body).
async fn http(addr: SocketAddr, request: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connects");
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

/// An HTTP/1.1 response as the tests read it.
pub struct HttpReply {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpReply {
    /// The first value of header `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// Minimal HTTP/1.1 request with a body (`Content-Length` framed both ways,
/// as the admin listener answers).
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpReply {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("admin connects");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    // The server may answer (413) before reading a large body.
    let _ = stream.write_all(body).await;
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw).await;
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw.as_str(), ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("status line in {raw:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    HttpReply {
        status,
        headers,
        body: body.to_owned(),
    }
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

/// An engine that takes `delay` per call: an in-flight request a test can hold.
pub struct SlowEngine {
    inner: Arc<dyn Engine>,
    delay: Duration,
}

impl Engine for SlowEngine {
    fn kind(&self) -> EngineKind {
        self.inner.kind()
    }

    fn detect(&self, text: &str) -> Detection {
        std::thread::sleep(self.delay);
        self.inner.detect(text)
    }

    /// Only calls are slow; the warm-up is the real engine's.
    fn warm_up(&self) {
        self.inner.warm_up();
    }
}

/// Loads a [`SlowEngine`] as whatlang and the real lingua. Tests that hold
/// a call with it serve with whatlang: [`SLOW_ENGINE`].
pub struct SlowLoader(pub Duration);

/// The setting that makes [`SlowLoader`]'s slow engine the one that answers
/// (lingua is the default).
pub const SLOW_ENGINE: (&str, &str) = ("detector.default_engine", "whatlang");

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
            inner: Arc::new(WhatlangEngine::new()),
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

/// Loads the real whatlang and a lingua that takes the given time per call
/// (a slow dark-launch candidate).
pub struct SlowLinguaLoader(pub Duration);

impl EngineLoader for SlowLinguaLoader {
    fn load(&self) -> Result<Engines, EngineError> {
        let real = RealEngines.load()?;
        let [whatlang, lingua] = real.loaded().map(Clone::clone);
        let slow: Arc<dyn Engine> = Arc::new(SlowEngine {
            inner: lingua.engine,
            delay: self.0,
        });
        Engines::new(
            whatlang,
            LoadedEngine {
                engine: slow,
                load_time: Duration::ZERO,
            },
        )
    }
}

/// A directory updated exactly the way the kubelet's AtomicWriter updates a
/// ConfigMap volume: files live in a `..<timestamp>` directory, `..data`
/// points at it, and the visible names are symlinks through `..data`. An
/// update writes a new timestamped directory, points `..data_tmp` at it,
/// renames `..data_tmp` over `..data`, fixes the visible symlinks and
/// deletes the old directory.
pub struct ConfigMapDir {
    pub dir: tempfile::TempDir,
    generation: u32,
    current: Option<String>,
    names: Vec<String>,
}

impl ConfigMapDir {
    pub fn new(files: &[(&str, &str)]) -> Self {
        let mut cm = Self {
            dir: tempfile::tempdir().expect("tempdir"),
            generation: 0,
            current: None,
            names: Vec::new(),
        };
        cm.update(files);
        cm
    }

    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// After the directory was deleted: a fresh volume at the same path.
    pub fn recreate(&mut self, files: &[(&str, &str)]) {
        std::fs::create_dir_all(self.dir.path()).expect("recreate");
        self.current = None;
        self.names.clear();
        self.update(files);
    }

    /// One atomic update to exactly `files`.
    pub fn update(&mut self, files: &[(&str, &str)]) {
        use std::os::unix::fs::symlink;
        let root = self.dir.path();
        self.generation += 1;
        let stamp = format!("..2026_11_25_21_00_00.{:09}", self.generation);
        let new_dir = root.join(&stamp);
        std::fs::create_dir(&new_dir).expect("timestamped dir");
        for (name, content) in files {
            std::fs::write(new_dir.join(name), content).expect("write file");
        }
        let tmp = root.join("..data_tmp");
        symlink(&stamp, &tmp).expect("..data_tmp symlink");
        std::fs::rename(&tmp, root.join("..data")).expect("rename over ..data");
        let new_names: Vec<String> = files.iter().map(|(n, _)| n.to_string()).collect();
        for name in &new_names {
            let visible = root.join(name);
            if std::fs::symlink_metadata(&visible).is_err() {
                symlink(format!("..data/{name}"), &visible).expect("visible symlink");
            }
        }
        for old in self.names.iter().filter(|n| !new_names.contains(n)) {
            let _ = std::fs::remove_file(root.join(old));
        }
        if let Some(old) = self.current.replace(stamp) {
            std::fs::remove_dir_all(root.join(old)).expect("remove old generation");
        }
        self.names = new_names;
    }
}

/// A flag file setting `detector-engine` and `max-text-chars`.
pub fn engine_flags(engine: &str, max_text_chars: usize) -> String {
    serde_json::json!({"flags": {
        "detector-engine": {"state": "ENABLED", "variants": {"whatlang": "whatlang", "lingua": "lingua"}, "defaultVariant": engine},
        "max-text-chars": {"state": "ENABLED", "variants": {"limit": max_text_chars}, "defaultVariant": "limit"}
    }})
    .to_string()
}

/// A lingua that panics on every call: a broken dark-launch candidate.
struct PanickingLingua;

impl Engine for PanickingLingua {
    fn kind(&self) -> EngineKind {
        EngineKind::Lingua
    }

    fn detect(&self, _text: &str) -> Detection {
        panic!("candidate engine bug")
    }

    /// Warms up fine: the bug is in serving calls.
    fn warm_up(&self) {}
}

/// Loads the real whatlang and a lingua that panics.
pub struct PanickingLinguaLoader;

impl EngineLoader for PanickingLinguaLoader {
    fn load(&self) -> Result<Engines, EngineError> {
        let [whatlang, _] = RealEngines.load()?.loaded().map(Clone::clone);
        let broken: Arc<dyn Engine> = Arc::new(PanickingLingua);
        Engines::new(
            whatlang,
            LoadedEngine {
                engine: broken,
                load_time: Duration::ZERO,
            },
        )
    }
}

/// Replaces lingua in the real engines with `wrap(lingua)`.
fn with_lingua(
    wrap: impl FnOnce(Arc<dyn Engine>) -> Arc<dyn Engine>,
) -> Result<Engines, EngineError> {
    let [whatlang, lingua] = RealEngines.load()?.loaded().map(Clone::clone);
    Engines::new(
        whatlang,
        LoadedEngine {
            engine: wrap(lingua.engine),
            load_time: lingua.load_time,
        },
    )
}

/// An open-once gate threads can wait on.
#[derive(Default)]
pub struct Gate {
    open: Mutex<bool>,
    opened: std::sync::Condvar,
}

impl Gate {
    pub fn open(&self) {
        *self.open.lock().expect("gate lock") = true;
        self.opened.notify_all();
    }

    /// Waits until open, for at most 30 s; false if it never opened.
    fn wait(&self) -> bool {
        let open = self.open.lock().expect("gate lock");
        let (open, _) = self
            .opened
            .wait_timeout_while(open, Duration::from_secs(30), |open| !*open)
            .expect("gate lock");
        *open
    }
}

/// A lingua whose warm-up reports that it started, then waits for a gate
/// before warming up for real: a slow warm-up the test controls.
struct GatedWarmUp {
    inner: Arc<dyn Engine>,
    started: Mutex<std_mpsc::Sender<()>>,
    gate: Arc<Gate>,
}

impl Engine for GatedWarmUp {
    fn kind(&self) -> EngineKind {
        self.inner.kind()
    }

    fn detect(&self, text: &str) -> Detection {
        self.inner.detect(text)
    }

    fn warm_up(&self) {
        let _ = self.started.lock().expect("lock").send(());
        assert!(self.gate.wait(), "the test never opened the warm-up gate");
        self.inner.warm_up();
    }
}

/// Loads the real engines at once; lingua's warm-up waits for the gate.
/// The receiver gets one message per engine thread that starts warming up.
pub struct GatedWarmUpLoader {
    started: std_mpsc::Sender<()>,
    gate: Arc<Gate>,
}

impl GatedWarmUpLoader {
    pub fn new() -> (Arc<Self>, std_mpsc::Receiver<()>, Arc<Gate>) {
        let (started, rx) = std_mpsc::channel();
        let gate = Arc::new(Gate::default());
        let loader = Self {
            started,
            gate: Arc::clone(&gate),
        };
        (Arc::new(loader), rx, gate)
    }
}

impl EngineLoader for GatedWarmUpLoader {
    fn load(&self) -> Result<Engines, EngineError> {
        with_lingua(|inner| {
            Arc::new(GatedWarmUp {
                inner,
                started: Mutex::new(self.started.clone()),
                gate: Arc::clone(&self.gate),
            })
        })
    }
}

/// A lingua that skips its warm-up: a replica that would be "ready" cold.
struct Unwarmed(Arc<dyn Engine>);

impl Engine for Unwarmed {
    fn kind(&self) -> EngineKind {
        self.0.kind()
    }

    fn detect(&self, text: &str) -> Detection {
        self.0.detect(text)
    }

    fn warm_up(&self) {}
}

/// Loads the real engines with lingua's warm-up skipped (a control).
pub struct UnwarmedLinguaLoader;

impl EngineLoader for UnwarmedLinguaLoader {
    fn load(&self) -> Result<Engines, EngineError> {
        with_lingua(|inner| Arc::new(Unwarmed(inner)))
    }
}

/// A lingua that keeps a core busy for `spin` per call (spinning, not
/// sleeping): CPU-bound work that saturates the engine threads or turns.
/// It declares the [`Cost`] it is given and records the most detections
/// that ran at once.
pub struct BusyLinguaLoader {
    spin: Duration,
    cost: Cost,
    running: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
}

impl BusyLinguaLoader {
    /// Spins `spin` per call; declares `cost` (which decides where it runs).
    pub fn new(spin: Duration, cost: Cost) -> Arc<Self> {
        Arc::new(Self {
            spin,
            cost,
            running: Arc::new(AtomicUsize::new(0)),
            most: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// The most detections that were running at the same moment.
    pub fn most_at_once(&self) -> usize {
        self.most.load(Ordering::SeqCst)
    }
}

struct Busy {
    inner: Arc<dyn Engine>,
    spin: Duration,
    cost: Cost,
    running: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
}

impl Engine for Busy {
    fn kind(&self) -> EngineKind {
        self.inner.kind()
    }

    fn detect(&self, text: &str) -> Detection {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        let until = Instant::now() + self.spin;
        let mut x = 0u64;
        while Instant::now() < until {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        self.running.fetch_sub(1, Ordering::SeqCst);
        self.inner.detect(text)
    }

    fn warm_up(&self) {}

    fn cost(&self) -> Cost {
        self.cost
    }
}

impl EngineLoader for BusyLinguaLoader {
    fn load(&self) -> Result<Engines, EngineError> {
        with_lingua(|inner| {
            Arc::new(Busy {
                inner,
                spin: self.spin,
                cost: self.cost,
                running: Arc::clone(&self.running),
                most: Arc::clone(&self.most),
            })
        })
    }
}

/// Health/Check for `service` at `addr`, on a new connection.
pub async fn check_at(addr: SocketAddr, service: &str) -> Result<ServingStatus, tonic::Status> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("valid uri")
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let reply = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await?;
    Ok(ServingStatus::try_from(reply.into_inner().status).expect("known status"))
}
