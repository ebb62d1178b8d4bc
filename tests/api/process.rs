//! The real `switchyard serve` as a child process on port 0: signals, exit
//! codes, its stdout log lines.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tonic_health::pb::health_check_response::ServingStatus;

pub const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// A `switchyard serve` child process on port 0.
pub struct Server {
    child: Child,
    pub grpc: SocketAddr,
    /// The admin HTTP listener (`/metrics`).
    pub admin: SocketAddr,
    /// The probe listener (gRPC Health only, for the kubelet).
    pub probe: SocketAddr,
    /// Every stdout line so far (each checked to be JSON).
    pub lines: Arc<Mutex<Vec<String>>>,
}

impl Server {
    pub fn start(extra: &[&str]) -> Self {
        Self::start_with_env(extra, &[])
    }

    /// Like [`Server::start`] with extra environment variables.
    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_on("127.0.0.1:0", extra, env)
    }

    /// Serves gRPC on `grpc_addr` (a fixed port when a proxy's endpoint
    /// list names it in advance).
    pub fn start_on(grpc_addr: &str, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(BIN)
            .args([
                "serve",
                "--grpc-addr",
                grpc_addr,
                "--admin-addr",
                "127.0.0.1:0",
                "--probe-addr",
                "127.0.0.1:0",
            ])
            .args(["--log-format", "json"])
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("binary starts");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let collected = Arc::clone(&lines);
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // Every line is kept; `log` and the drop check that each is
                // JSON (a panic here would only stop the collection).
                let parsed: Option<serde_json::Value> = serde_json::from_str(&line).ok();
                collected
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(line);
                let Some(parsed) = parsed else { continue };
                if parsed["message"] == "listening"
                    && let Some(tx) = tx.take()
                {
                    let addr = |field: &str| parsed[field].as_str().and_then(|a| a.parse().ok());
                    let _ = tx.send(
                        addr("grpc")
                            .zip(addr("admin"))
                            .zip(addr("probe"))
                            .map(|((grpc, admin), probe)| (grpc, admin, probe)),
                    );
                }
            }
        });
        let (grpc, admin, probe) = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the server logs its address")
            .expect("grpc, admin and probe socket addresses");
        Self {
            child,
            grpc,
            admin,
            probe,
            lines,
        }
    }

    /// The stdout lines so far, parsed.
    pub fn log(&self) -> Vec<serde_json::Value> {
        self.lines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {l}"))
            })
            .collect()
    }

    /// The first stdout line whose message is `message`, waiting up to 5 s
    /// for the reader thread (lines can arrive after the process exits).
    pub async fn log_line(&self, message: &str) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(line) = self.log().into_iter().find(|l| l["message"] == message) {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no {message:?} line in {:?}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).expect("signal delivered");
    }

    /// Waits up to `within` for the process to exit. Async, so that the
    /// test's own clients keep answering the server's HTTP/2 GOAWAY and PING
    /// while it drains.
    pub async fn wait(&mut self, within: Duration) -> ExitStatus {
        match self.exited_within(within).await {
            Some(status) => status,
            None => {
                let _ = self.child.kill();
                panic!("the server did not exit within {within:?}");
            }
        }
    }

    /// The exit status if the process ends within `within`, else None
    /// (still running).
    pub async fn exited_within(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let target = self.grpc.to_string().parse().expect("a target");
        loop {
            let status =
                switchyard::tools::check::check(&target, "readiness", Duration::from_secs(1)).await;
            if matches!(status, Ok(ServingStatus::Serving)) {
                return;
            }
            assert!(Instant::now() < deadline, "not ready: {status:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Server {
    /// Kills the process, then fails the test if any stdout line it wrote
    /// before its last was not JSON (unless the test is failing already).
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            return;
        }
        let lines = self
            .lines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // The last line may have been cut by the kill.
        let complete = &lines[..lines.len().saturating_sub(1)];
        if let Some(bad) = complete
            .iter()
            .find(|l| serde_json::from_str::<serde_json::Value>(l).is_err())
        {
            panic!("log line is not JSON: {bad}");
        }
    }
}
