//! The life of a connection: a maximum age (GOAWAY, calls in flight
//! finish, closed after the grace), and what it is for: behind an L4
//! balancer (kube-proxy, a cloud NLB; here a real Envoy as a plain TCP
//! round-robin proxy) a long-lived client reaches replicas added after it
//! connected. The control without an age shows the new replicas starved.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message;
use serde_json::json;
use switchyard::grpc::pb;
use switchyard::grpc::pb::detector_client::DetectorClient;

use crate::helpers::TestApp;
use crate::proxy::Envoy;
use crate::rollout::reserve_port;

const TEXT: &str = "Zero downtime deployments need a little patience";

/// A raw HTTP/2 connection (h2), so the test sees the GOAWAY itself rather
/// than a client library's reconnects.
struct RawConnection {
    send: h2::client::SendRequest<Bytes>,
    connected: Instant,
    closed: tokio::sync::oneshot::Receiver<Instant>,
    addr: SocketAddr,
}

impl RawConnection {
    async fn open(addr: SocketAddr) -> Self {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (send, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
        let (tx, closed) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let _ = connection.await;
            let _ = tx.send(Instant::now());
        });
        Self {
            send,
            connected: Instant::now(),
            closed,
            addr,
        }
    }

    /// Opens a gRPC stream to `path` and sends `first` (not ending it).
    async fn open_stream(
        &mut self,
        path: &str,
        first: &[u8],
    ) -> Result<(h2::client::ResponseFuture, h2::SendStream<Bytes>), h2::Error> {
        let mut send = self.send.clone().ready().await?;
        let request = http::Request::post(format!("http://{}{path}", self.addr))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .expect("request");
        let (response, mut body) = send.send_request(request, false)?;
        body.send_data(Bytes::copy_from_slice(first), false)?;
        Ok((response, body))
    }
}

/// One gRPC message: flag byte, big-endian length, protobuf.
fn frame(message: &impl Message) -> Vec<u8> {
    let mut out = BytesMut::new();
    out.put_u8(0);
    out.put_u32(message.encoded_len() as u32);
    message.encode(&mut out).expect("encode");
    out.to_vec()
}

fn detect_request() -> Vec<u8> {
    frame(&pb::DetectRequest { text: TEXT.into() })
}

/// Reads one gRPC message of the response body.
async fn next_reply(body: &mut h2::RecvStream) -> pb::DetectResponse {
    let mut buffer = BytesMut::new();
    loop {
        if buffer.len() >= 5 {
            let len = u32::from_be_bytes([buffer[1], buffer[2], buffer[3], buffer[4]]) as usize;
            if buffer.len() >= 5 + len {
                buffer.advance(5);
                return pb::DetectResponse::decode(buffer.split_to(len)).expect("reply decodes");
            }
        }
        let chunk = body
            .data()
            .await
            .expect("a reply, not the end")
            .expect("data");
        let _ = body.flow_control().release_capacity(chunk.len());
        buffer.extend_from_slice(&chunk);
    }
}

#[tokio::test]
async fn an_aged_connection_gets_goaway_lets_its_calls_finish_and_closes_after_the_grace() {
    let app = TestApp::spawn_configured(&[
        ("connection.max_age", "1s"),
        ("connection.max_age_grace", "2s"),
    ])
    .await;
    let mut conn = RawConnection::open(app.grpc_addr).await;
    // A stream opened before the age, kept open across it.
    let (response, mut stream) = conn
        .open_stream("/switchyard.v1.Detector/DetectStream", &detect_request())
        .await
        .expect("stream opens");
    let mut replies = response.await.expect("response").into_body();
    assert!(next_reply(&mut replies).await.language.len() == 2);

    // New streams are refused once the GOAWAY arrives, after 0.9 to 1.1 s.
    let refused = loop {
        if conn
            .open_stream("/switchyard.v1.Detector/DetectStream", &detect_request())
            .await
            .is_err()
        {
            break conn.connected.elapsed();
        }
        assert!(
            conn.connected.elapsed() < Duration::from_secs(3),
            "no GOAWAY"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        refused >= Duration::from_millis(880) && refused < Duration::from_millis(1_500),
        "GOAWAY after {refused:?}, expected 1 s ± 10 %"
    );

    // The stream in flight still works after the GOAWAY...
    stream
        .send_data(Bytes::from(detect_request()), false)
        .expect("still open");
    assert_eq!(next_reply(&mut replies).await.language.len(), 2);
    // ...until the grace ends the connection: age + grace, 3 s ± 0.1 s.
    let closed = tokio::time::timeout(Duration::from_secs(5), &mut conn.closed)
        .await
        .expect("closed within the grace")
        .expect("closed")
        .duration_since(conn.connected);
    assert!(
        closed >= Duration::from_millis(2_850) && closed < Duration::from_millis(3_700),
        "closed after {closed:?}"
    );
}

#[tokio::test]
async fn an_idle_aged_connection_closes_at_its_age_and_without_an_age_lives_on() {
    let aged = TestApp::spawn_configured(&[("connection.max_age", "500ms")]).await;
    let unaged = TestApp::spawn_configured(&[("connection.max_age", "off")]).await;
    let mut to_aged = RawConnection::open(aged.grpc_addr).await;
    let mut to_unaged = RawConnection::open(unaged.grpc_addr).await;
    let closed = tokio::time::timeout(Duration::from_secs(3), &mut to_aged.closed)
        .await
        .expect("an idle connection closes at its age")
        .expect("closed")
        .duration_since(to_aged.connected);
    assert!(closed < Duration::from_millis(1_200), "{closed:?}");
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert!(to_unaged.closed.try_recv().is_err(), "no age: still open");
    let (response, _body) = to_unaged
        .open_stream("/switchyard.v1.Detector/DetectStream", &detect_request())
        .await
        .expect("new streams still accepted");
    assert_eq!(response.await.expect("response").status(), 200);
}

// ---------------------------------------------------------------------------
// Rebalancing behind an L4 proxy.

/// Envoy as kube-proxy: a TCP proxy, round robin over the replica slots,
/// with TCP health checks standing in for endpoint readiness.
fn l4_bootstrap(slots: &[SocketAddr]) -> serde_json::Value {
    let endpoints = crate::proxy::lb_endpoints(slots);
    json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {
            "listeners": [{
                "name": "l4",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.tcp_proxy",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                        "stat_prefix": "l4",
                        "cluster": "replicas"
                    }
                }]}]
            }],
            "clusters": [{
                "name": "replicas",
                "type": "STATIC",
                "connect_timeout": "1s",
                "lb_policy": "ROUND_ROBIN",
                "common_lb_config": {"healthy_panic_threshold": {"value": 0.0}},
                "health_checks": [{
                    "timeout": "1s",
                    "interval": "0.2s",
                    "no_traffic_interval": "0.2s",
                    "unhealthy_threshold": 1,
                    "healthy_threshold": 1,
                    "tcp_health_check": {}
                }],
                "load_assignment": {"cluster_name": "replicas", "endpoints": [{"lb_endpoints": endpoints}]}
            }]
        }
    })
}

/// How long the share is measured once settled: several connection ages,
/// so which replica the last reconnect happened to reach hardly matters.
const MEASURED: Duration = Duration::from_secs(8);

/// What one long-lived client saw.
struct Run {
    /// Replies after the new replicas were up and the settle time passed,
    /// by serving version.
    settled: BTreeMap<String, u64>,
    failed: Vec<String>,
    calls: u64,
    /// Calls retried because no server had processed them.
    retried: u64,
}

impl Run {
    fn new_share(&self) -> f64 {
        let total: u64 = self.settled.values().sum();
        let new: u64 = self
            .settled
            .iter()
            .filter(|(version, _)| *version != "r1")
            .map(|(_, n)| n)
            .sum();
        new as f64 / total.max(1) as f64
    }
}

/// One replica (r1) behind the L4 proxy, one client calling Detect every
/// 10 ms over one connection, two replicas (r2, r3) added; the share the
/// new ones serve once `settle` has passed after they are up.
async fn rebalance(age: &str, grace: &str, settle: Duration) -> Run {
    let reserved: Vec<_> = (0..3).map(|_| reserve_port()).collect();
    let slots: Vec<SocketAddr> = reserved
        .iter()
        .map(|l| l.local_addr().expect("addr"))
        .collect();
    drop(reserved);
    let replica = |i: usize| {
        let addr = slots[i].to_string();
        let version = format!("r{}", i + 1);
        async move {
            TestApp::spawn_configured(&[
                ("server.grpc_addr", addr.as_str()),
                ("deployment.version", version.as_str()),
                ("connection.max_age", age),
                ("connection.max_age_grace", grace),
            ])
            .await
        }
    };
    let first = replica(0).await;
    let envoy = Envoy::start(&l4_bootstrap(&slots)).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", envoy.listener))
        .expect("uri")
        .connect_lazy();
    let mut client = DetectorClient::new(channel);

    let started = Instant::now();
    let mut added: Option<(Instant, Vec<TestApp>)> = None;
    let mut run = Run {
        settled: BTreeMap::new(),
        failed: Vec::new(),
        calls: 0,
        retried: 0,
    };
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    loop {
        tick.tick().await;
        if added.is_none() && started.elapsed() > Duration::from_millis(1_500) {
            let others = vec![replica(1).await, replica(2).await];
            // Up means the proxy's health checks pass for all three.
            let deadline = Instant::now() + Duration::from_secs(10);
            while envoy
                .host_health("replicas")
                .await
                .values()
                .filter(|flags| flags.as_str() == "healthy")
                .count()
                < 3
            {
                assert!(Instant::now() < deadline, "replicas never healthy");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            added = Some((Instant::now(), others));
        }
        let mut result = client.detect(pb::DetectRequest { text: TEXT.into() }).await;
        run.calls += 1;
        // A call no server processed is sent again, as gRPC's transparent
        // retry does; up to twice, since the channel can hand the first
        // retry to the connection that is closing too (seen once in CI).
        for _ in 0..2 {
            match &result {
                Err(status) if switchyard::tools::client::never_processed(status) => {
                    run.retried += 1;
                    result = client.detect(pb::DetectRequest { text: TEXT.into() }).await;
                }
                _ => break,
            }
        }
        match result {
            Ok(reply) => {
                if let Some((at, _)) = &added
                    && at.elapsed() > settle
                {
                    let version = reply.into_inner().served_by.expect("served_by").version;
                    *run.settled.entry(version).or_default() += 1;
                }
            }
            Err(status) => run.failed.push(format!("{status:?}")),
        }
        if let Some((at, _)) = &added
            && at.elapsed() > settle + MEASURED
        {
            break;
        }
    }
    drop(first);
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_connection_age_new_replicas_behind_an_l4_proxy_get_their_share_and_no_call_fails() {
    // Age 1 s (± 10 %), grace 1 s: the settle time is age + grace + 1 s.
    let run = rebalance("1s", "1s", Duration::from_millis(1_100 + 1_000 + 1_000)).await;
    println!(
        "rebalance with age 1s: {} calls, settled {:?}, new share {:.2}, failed {}, retried {}",
        run.calls,
        run.settled,
        run.new_share(),
        run.failed.len(),
        run.retried
    );
    assert!(run.failed.is_empty(), "failed calls: {:?}", run.failed);
    // At most one never-processed call per connection age (1 s) of the run.
    assert!(run.retried <= 16, "{} calls retried", run.retried);
    assert!(
        run.new_share() >= 0.5,
        "new replicas served {:.2} of {:?}",
        run.new_share(),
        run.settled
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_without_a_connection_age_new_replicas_get_nothing() {
    let run = rebalance("off", "off", Duration::from_millis(3_100)).await;
    println!(
        "rebalance without age: {} calls, settled {:?}, new share {:.2}, failed {}, retried {}",
        run.calls,
        run.settled,
        run.new_share(),
        run.failed.len(),
        run.retried
    );
    assert!(run.failed.is_empty(), "failed calls: {:?}", run.failed);
    assert!(
        run.new_share() <= 0.05,
        "without an age the client stays on r1: {:?}",
        run.settled
    );
    assert!(run.settled.get("r1").copied().unwrap_or(0) > 100);
    assert_eq!(run.retried, 0, "no GOAWAY, nothing to retry");
}

#[tokio::test]
async fn the_serve_flags_set_the_connection_settings() {
    let server = crate::process::Server::start(&[
        "--max-connection-age",
        "2s",
        "--max-connection-age-grace",
        "500ms",
        "--http2-keepalive-interval",
        "off",
        "--http2-keepalive-timeout",
        "5",
        "--tcp-keepalive",
        "0",
        "--max-concurrent-streams",
        "10",
        "--max-header-list-size",
        "8192",
        "--max-pending-accept-reset-streams",
        "7",
    ]);
    server.wait_ready().await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.grpc))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let info = pb::admin_client::AdminClient::new(channel)
        .get_info(pb::GetInfoRequest {})
        .await
        .expect("info")
        .into_inner();
    let config: serde_json::Value =
        serde_json::from_str(&info.effective_config_json).expect("JSON");
    assert_eq!(
        config["connection"],
        json!({
            "max_age": "2s",
            "max_age_grace": "500ms",
            "http2_keepalive_interval": "off",
            "http2_keepalive_timeout": "5s",
            "tcp_keepalive": "off",
            "max_concurrent_streams": 10,
            "max_header_list_size": 8192,
            "max_pending_accept_reset_streams": 7
        })
    );
}
