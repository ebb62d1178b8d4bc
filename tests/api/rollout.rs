//! Zero downtime, proven the way Kubernetes and the mesh exercise it: three
//! replicas (the real binary) behind a real Envoy configured like a
//! sidecar's outbound cluster (HTTP/2 upstream, active gRPC health checks
//! of the `""` service, no retries), under constant load: unary Detect
//! calls at a fixed rate plus long-lived DetectStream streams that send
//! continuously and reconnect when their stream ends.
//!
//! - A rolling update with maxSurge 1 / maxUnavailable 0 semantics fails
//!   no unary call; every stream the drain ends closes with UNAVAILABLE and
//!   reconnects.
//! - Negative controls prove the harness sees failures: SIGKILL instead of
//!   SIGTERM; `--drain-delay 0` with health checks slower than the drain; a
//!   Recreate rollout, whose downtime window is measured.
//! - 100 ConfigMap swaps (the kubelet's `..data` rename) flip
//!   `detector-engine` under load without a failed call.
//!
//! Figures are printed (run with `--no-capture` to see them). Longer runs
//! for reports: `SWITCHYARD_ROLLOUT_RPS` (default 500) and
//! `SWITCHYARD_ROLLOUT_STEADY_SECS` (default 2).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::json;
use switchyard::grpc::pb;
use switchyard::grpc::pb::detector_client::DetectorClient;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::helpers::{ConfigMapDir, engine_flags};
use crate::process::Server;
use crate::proxy::Envoy;

const CLUSTER: &str = "switchyard";
const TEXT: &str = "The quick brown fox jumps over the lazy dog";
/// Seconds each replica keeps serving after SIGTERM (covers the health
/// checker noticing: interval × unhealthy threshold + timeout).
const DRAIN_DELAY: &str = "2.5";
const DRAIN_TIMEOUT: &str = "5";
/// What the kubelet would wait before SIGKILL: drain delay + timeout + margin.
const GRACE: Duration = Duration::from_secs(10);
const STREAMS: usize = 3;

/// `name` from the environment, or `default` when unset; a value that is
/// not a number fails the test rather than running another experiment.
fn env_number(name: &str, default: f64) -> f64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

fn rate() -> f64 {
    env_number("SWITCHYARD_ROLLOUT_RPS", 500.0)
}

fn steady() -> Duration {
    Duration::from_secs_f64(env_number("SWITCHYARD_ROLLOUT_STEADY_SECS", 2.0))
}

// ---------------------------------------------------------------------------
// Envoy: one static cluster over every replica slot, health-checked.

/// How Envoy health-checks the replicas.
#[derive(Clone, Copy)]
struct HealthChecks {
    interval: Duration,
    unhealthy_threshold: u32,
}

/// Like a sidecar's outbound cluster: HTTP/2 upstream, active gRPC health
/// checks of "", no retries, no route timeout; panic routing off (the mesh
/// would otherwise spray traffic at unhealthy hosts).
fn bootstrap(slots: &[SocketAddr], hc: HealthChecks) -> serde_json::Value {
    let secs = |d: Duration| format!("{}s", d.as_secs_f64());
    let endpoints = crate::proxy::lb_endpoints(slots);
    let routes =
        json!([{"match": {"prefix": "/"}, "route": {"cluster": CLUSTER, "timeout": "0s"}}]);
    let cluster = json!({
        "name": CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "lb_policy": "ROUND_ROBIN",
        "common_lb_config": {"healthy_panic_threshold": {"value": 0.0}},
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}
            }
        },
        "health_checks": [{
            "timeout": "2s",
            "interval": secs(hc.interval),
            "no_traffic_interval": secs(hc.interval),
            "unhealthy_interval": secs(hc.interval),
            "unhealthy_threshold": hc.unhealthy_threshold,
            "healthy_threshold": 1,
            "grpc_health_check": {"service_name": ""}
        }],
        "load_assignment": {"cluster_name": CLUSTER, "endpoints": [{"lb_endpoints": endpoints}]}
    });
    crate::proxy::bootstrap(routes, json!([cluster]))
}

/// A free loopback port for a replica that binds it later (a new replica
/// starts seconds after Envoy learned its address). Taken below the
/// ephemeral range, so no outgoing connection can occupy it meanwhile.
/// The listener is held until every slot is chosen, then released.
pub fn reserve_port() -> std::net::TcpListener {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let span = u64::from(low.saturating_sub(10_000).max(1));
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos() as u64
        ^ u64::from(std::process::id());
    for i in 0..1000u64 {
        let port =
            10_000 + ((seed.wrapping_mul(2_654_435_761).wrapping_add(i * 7919)) % span) as u16;
        if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            return listener;
        }
    }
    panic!("no free port below {low}");
}

// ---------------------------------------------------------------------------
// The load: fixed-rate unary calls and continuous streams.

#[derive(Debug, Clone)]
struct Call {
    /// When the call was sent, since the load started.
    sent: Duration,
    latency: Duration,
    /// (version, engine) of the reply, or the failure.
    outcome: Result<(String, String), tonic::Code>,
}

#[derive(Debug, Default, Clone)]
struct StreamStats {
    opened: u64,
    messages: u64,
    /// Streams ended by a drain: UNAVAILABLE.
    ended_unavailable: u64,
    /// New streams that got their first reply after such an end.
    reconnected: u64,
    /// Anything else: a failure.
    failures: Vec<String>,
}

struct Load {
    started: Instant,
    stop: watch::Sender<bool>,
    calls: Arc<Mutex<Vec<Call>>>,
    unary: JoinHandle<()>,
    streams: Vec<JoinHandle<StreamStats>>,
}

struct LoadReport {
    calls: Vec<Call>,
    streams: StreamStats,
}

impl Load {
    fn start(channel: Channel, rps: f64, streams: usize) -> Load {
        let started = Instant::now();
        let (stop, stopped) = watch::channel(false);
        let calls = Arc::new(Mutex::new(Vec::new()));
        let unary = tokio::spawn(unary_load(
            channel.clone(),
            rps,
            started,
            stopped.clone(),
            Arc::clone(&calls),
        ));
        let streams = (0..streams)
            .map(|_| tokio::spawn(stream_load(channel.clone(), stopped.clone())))
            .collect();
        Load {
            started,
            stop,
            calls,
            unary,
            streams,
        }
    }

    /// Time since the load started.
    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    async fn finish(self) -> LoadReport {
        let _ = self.stop.send(true);
        self.unary.await.expect("unary load");
        let mut streams = StreamStats::default();
        for s in self.streams {
            let s = s.await.expect("stream load");
            streams.opened += s.opened;
            streams.messages += s.messages;
            streams.ended_unavailable += s.ended_unavailable;
            streams.reconnected += s.reconnected;
            streams.failures.extend(s.failures);
        }
        let calls = std::mem::take(&mut *self.calls.lock().expect("calls"));
        LoadReport { calls, streams }
    }
}

async fn unary_load(
    channel: Channel,
    rps: f64,
    started: Instant,
    mut stopped: watch::Receiver<bool>,
    calls: Arc<Mutex<Vec<Call>>>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rps));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut in_flight = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            _ = tick.tick() => {}
        }
        let mut client = DetectorClient::new(channel.clone());
        let calls = Arc::clone(&calls);
        in_flight.spawn(async move {
            let sent = started.elapsed();
            let begun = Instant::now();
            let request = pb::DetectRequest { text: TEXT.into() };
            let outcome =
                match tokio::time::timeout(Duration::from_secs(10), client.detect(request)).await {
                    Ok(Ok(reply)) => {
                        let reply = reply.into_inner();
                        let version = reply.served_by.map(|s| s.version).unwrap_or_default();
                        Ok((version, reply.engine))
                    }
                    Ok(Err(status)) => Err(status.code()),
                    Err(_) => Err(tonic::Code::DeadlineExceeded),
                };
            calls.lock().expect("calls").push(Call {
                sent,
                latency: begun.elapsed(),
                outcome,
            });
        });
        while in_flight.try_join_next().is_some() {}
    }
    while in_flight.join_next().await.is_some() {}
}

/// One client that keeps a DetectStream open, sending every 20 ms, and
/// opens a new one whenever its stream ends.
async fn stream_load(channel: Channel, mut stopped: watch::Receiver<bool>) -> StreamStats {
    let mut stats = StreamStats::default();
    let mut after_drain = false;
    while !*stopped.borrow() {
        let mut client = DetectorClient::new(channel.clone());
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let outbound = tokio_stream::wrappers::ReceiverStream::new(rx);
        let sender = tokio::spawn(async move {
            loop {
                if tx
                    .send(pb::DetectRequest { text: TEXT.into() })
                    .await
                    .is_err()
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        stats.opened += 1;
        let mut replies = match client.detect_stream(outbound).await {
            Ok(response) => response.into_inner(),
            Err(status) => {
                sender.abort();
                stats.failures.push(format!("open: {status}"));
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let mut first = true;
        loop {
            let next = tokio::select! {
                _ = stopped.changed() => None,
                next = replies.message() => Some(next),
            };
            match next {
                None => break,
                Some(Ok(Some(_))) => {
                    stats.messages += 1;
                    if first && after_drain {
                        stats.reconnected += 1;
                        after_drain = false;
                    }
                    first = false;
                }
                Some(Ok(None)) => {
                    stats.failures.push("stream ended without a status".into());
                    break;
                }
                Some(Err(status)) if status.code() == tonic::Code::Unavailable => {
                    stats.ended_unavailable += 1;
                    after_drain = true;
                    break;
                }
                Some(Err(status)) => {
                    stats.failures.push(format!("{status}"));
                    break;
                }
            }
        }
        sender.abort();
    }
    stats
}

// ---------------------------------------------------------------------------
// The fleet: replica slots behind Envoy.

struct Fleet {
    envoy: Envoy,
    slots: Vec<SocketAddr>,
    running: BTreeMap<usize, Server>,
    replica_args: Vec<String>,
    flags: Option<String>,
}

impl Fleet {
    /// `old` replicas (v1) running, `new` slots (v2) reserved.
    async fn start(old: usize, new: usize, hc: HealthChecks, replica_args: &[&str]) -> Fleet {
        Self::start_with_flags(old, new, hc, replica_args, None).await
    }

    async fn start_with_flags(
        old: usize,
        new: usize,
        hc: HealthChecks,
        replica_args: &[&str],
        flags: Option<String>,
    ) -> Fleet {
        let reserved: Vec<_> = (0..old + new).map(|_| reserve_port()).collect();
        let slots: Vec<SocketAddr> = reserved
            .iter()
            .map(|l| l.local_addr().expect("addr"))
            .collect();
        drop(reserved);
        let mut fleet = Fleet {
            envoy: Envoy::start(&bootstrap(&slots, hc)).await,
            slots,
            running: BTreeMap::new(),
            replica_args: replica_args.iter().map(|s| s.to_string()).collect(),
            flags,
        };
        for slot in 0..old {
            fleet.launch(slot, "v1");
        }
        for slot in 0..old {
            fleet.until_healthy(slot).await;
        }
        fleet
    }

    fn launch(&mut self, slot: usize, version: &str) {
        // No access lines: thousands of calls would only fill the test's memory.
        let mut args: Vec<&str> = vec![
            "--app-version",
            version,
            "--log-level",
            "info,switchyard::access=warn",
        ];
        args.extend(self.replica_args.iter().map(String::as_str));
        if let Some(flags) = &self.flags {
            args.extend(["--flags", flags.as_str()]);
        }
        let server = Server::start_on(&self.slots[slot].to_string(), &args, &[]);
        self.running.insert(slot, server);
    }

    /// Waits (bounded) until Envoy's health checks pass for `slot`.
    async fn until_healthy(&self, slot: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let health = self.envoy.host_health(CLUSTER).await;
            if health
                .get(&self.slots[slot])
                .is_some_and(|f| f == "healthy")
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "slot {slot} never healthy: {health:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops a replica: `signal`, then SIGKILL if it outlives the grace
    /// period. Returns whether it had to be killed.
    async fn stop(&mut self, slot: usize, signal: Signal) -> bool {
        let mut server = self.running.remove(&slot).expect("running");
        server.signal(signal);
        if server.exited_within(GRACE).await.is_some() {
            return false;
        }
        server.signal(Signal::SIGKILL);
        server.wait(Duration::from_secs(5)).await;
        true
    }

    async fn channel(&self) -> Channel {
        self.envoy
            .channel("http://switchyard.switchyard.svc.cluster.local:50051")
            .await
    }
}

// ---------------------------------------------------------------------------
// Reporting.

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// (p50, p99) of the successful calls sent in `window`.
fn latencies(calls: &[Call], window: std::ops::Range<Duration>) -> (Duration, Duration, usize) {
    let mut l: Vec<Duration> = calls
        .iter()
        .filter(|c| c.outcome.is_ok() && window.contains(&c.sent))
        .map(|c| c.latency)
        .collect();
    l.sort();
    (percentile(&l, 0.5), percentile(&l, 0.99), l.len())
}

fn failures(calls: &[Call]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for c in calls {
        if let Err(code) = c.outcome {
            *out.entry(format!("{code:?}")).or_default() += 1;
        }
    }
    out
}

/// The longest time between two consecutive successful replies (by send
/// time): the downtime a client saw.
fn longest_gap(calls: &[Call]) -> Duration {
    let mut ok: Vec<Duration> = calls
        .iter()
        .filter(|c| c.outcome.is_ok())
        .map(|c| c.sent)
        .collect();
    ok.sort();
    ok.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default()
}

fn versions(calls: &[Call]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for c in calls {
        if let Ok((version, _)) = &c.outcome {
            *out.entry(version.clone()).or_default() += 1;
        }
    }
    out
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

// ---------------------------------------------------------------------------
// Scenarios.

/// How each old replica is taken down.
#[derive(Clone, Copy, Debug)]
enum Stop {
    /// SIGTERM, SIGKILL after the grace period: the kubelet.
    Term,
    /// SIGKILL at once (negative control).
    Kill,
}

/// Steady state, then a rolling update (maxSurge 1, maxUnavailable 0),
/// then steady state again. Returns the report and the rollout window.
async fn rolling_update(
    hc: HealthChecks,
    replica_args: &[&str],
    stop: Stop,
) -> (LoadReport, std::ops::Range<Duration>, usize) {
    let mut fleet = Fleet::start(3, 3, hc, replica_args).await;
    let load = Load::start(fleet.channel().await, rate(), STREAMS);
    tokio::time::sleep(steady()).await;
    let begin = load.now();
    let mut killed = 0;
    for i in 0..3 {
        fleet.launch(3 + i, "v2");
        fleet.until_healthy(3 + i).await;
        let forced = match stop {
            Stop::Term => fleet.stop(i, Signal::SIGTERM).await,
            Stop::Kill => fleet.stop(i, Signal::SIGKILL).await,
        };
        killed += usize::from(forced);
    }
    let end = load.now();
    // Steady state again; streams the last drain ended reconnect meanwhile.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    (load.finish().await, begin..end, killed)
}

fn report(name: &str, r: &LoadReport, rollout: &std::ops::Range<Duration>) {
    let (p50_s, p99_s, n_s) = latencies(&r.calls, Duration::ZERO..rollout.start);
    let (p50_r, p99_r, n_r) = latencies(&r.calls, rollout.clone());
    eprintln!(
        "[rollout] {name}: {} unary calls ({:.0}/s), failures {:?}, versions {:?}; steady p50 {} ms p99 {} ms (n={n_s}); \
         during rollout ({:.1} s) p50 {} ms p99 {} ms (n={n_r}); longest gap {} ms; \
         streams opened {} messages {} ended UNAVAILABLE {} reconnected {} other failures {} (first: {:?})",
        r.calls.len(),
        r.calls.len() as f64
            / r.calls
                .iter()
                .map(|c| c.sent)
                .max()
                .unwrap_or_default()
                .as_secs_f64()
                .max(0.001),
        failures(&r.calls),
        versions(&r.calls),
        ms(p50_s),
        ms(p99_s),
        (rollout.end - rollout.start).as_secs_f64(),
        ms(p50_r),
        ms(p99_r),
        ms(longest_gap(&r.calls)),
        r.streams.opened,
        r.streams.messages,
        r.streams.ended_unavailable,
        r.streams.reconnected,
        r.streams.failures.len(),
        r.streams.failures.first(),
    );
}

const MESH_LIKE: HealthChecks = HealthChecks {
    interval: Duration::from_millis(500),
    unhealthy_threshold: 2,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_update_under_load_fails_no_call() {
    let args = [
        "--drain-delay",
        DRAIN_DELAY,
        "--drain-timeout",
        DRAIN_TIMEOUT,
    ];
    let (r, rollout, killed) = rolling_update(MESH_LIKE, &args, Stop::Term).await;
    report("rolling update (SIGTERM)", &r, &rollout);
    // The rate is a target; on a loaded two-core machine the client may
    // fall short, but the load must have been real.
    let expected = rate() * (rollout.end.as_secs_f64() + 0.5);
    assert!(
        r.calls.len() as f64 > 0.5 * expected,
        "the load did not run: {} calls, target about {expected:.0}",
        r.calls.len()
    );
    assert_eq!(failures(&r.calls), BTreeMap::new(), "failed unary calls");
    assert_eq!(killed, 0, "every replica drained within its grace period");
    let v = versions(&r.calls);
    assert!(v.contains_key("v1") && v.contains_key("v2"), "{v:?}");
    let s = &r.streams;
    assert!(
        s.failures.is_empty(),
        "streams failed otherwise: {:?}",
        s.failures
    );
    assert!(
        s.ended_unavailable >= STREAMS as u64,
        "every stream on an old replica ends with UNAVAILABLE: {s:?}"
    );
    assert_eq!(
        s.reconnected, s.ended_unavailable,
        "every ended stream reconnected: {s:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_sigkill_instead_of_sigterm_fails_calls() {
    let args = [
        "--drain-delay",
        DRAIN_DELAY,
        "--drain-timeout",
        DRAIN_TIMEOUT,
    ];
    let (r, rollout, _) = rolling_update(MESH_LIKE, &args, Stop::Kill).await;
    report("control: SIGKILL", &r, &rollout);
    let failed: usize = failures(&r.calls).values().sum();
    assert!(
        failed > 0,
        "the harness must see the failures SIGKILL causes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_no_drain_delay_with_slow_health_checks_fails_calls() {
    let slow = HealthChecks {
        interval: Duration::from_secs(3),
        unhealthy_threshold: 2,
    };
    let args = ["--drain-delay", "0", "--drain-timeout", DRAIN_TIMEOUT];
    let (r, rollout, _) = rolling_update(slow, &args, Stop::Term).await;
    report(
        "control: --drain-delay 0, health checks every 3 s",
        &r,
        &rollout,
    );
    let failed: usize = failures(&r.calls).values().sum();
    assert!(
        failed > 0,
        "closing before the proxy notices must fail calls"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_recreate_has_a_downtime_window() {
    let args = [
        "--drain-delay",
        DRAIN_DELAY,
        "--drain-timeout",
        DRAIN_TIMEOUT,
    ];
    let mut fleet = Fleet::start(3, 3, MESH_LIKE, &args).await;
    let load = Load::start(fleet.channel().await, rate(), STREAMS);
    tokio::time::sleep(steady()).await;
    let begin = load.now();
    // Recreate: every old replica stopped (concurrently, as the controller
    // deletes them together) before any new one starts.
    for slot in 0..3 {
        fleet
            .running
            .get(&slot)
            .expect("running")
            .signal(Signal::SIGTERM);
    }
    for slot in 0..3 {
        fleet.stop(slot, Signal::SIGTERM).await;
    }
    for slot in 3..6 {
        fleet.launch(slot, "v2");
    }
    for slot in 3..6 {
        fleet.until_healthy(slot).await;
    }
    let end = load.now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = load.finish().await;
    report("control: Recreate", &r, &(begin..end));
    let gap = longest_gap(&r.calls);
    let failed: usize = failures(&r.calls).values().sum();
    eprintln!(
        "[rollout] Recreate downtime window: {} ms, {failed} failed calls",
        ms(gap)
    );
    assert!(
        failed > 0 && gap > Duration::from_millis(200),
        "Recreate must show downtime"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_flag_flips_under_load_fail_no_call() {
    let mut volume = ConfigMapDir::new(&[("flags.json", &engine_flags("whatlang", 10_000))]);
    let flags = volume.path().to_str().expect("utf-8").to_owned();
    let mut fleet = Fleet::start_with_flags(
        3,
        0,
        MESH_LIKE,
        &[
            "--drain-delay",
            DRAIN_DELAY,
            "--drain-timeout",
            DRAIN_TIMEOUT,
        ],
        Some(flags),
    )
    .await;
    // lingua costs more CPU than whatlang: a lower rate on two cores.
    let load = Load::start(fleet.channel().await, rate() / 2.0, 0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut propagation = Vec::new();
    let mut engine = "whatlang";
    for _ in 0..100 {
        engine = if engine == "whatlang" {
            "lingua"
        } else {
            "whatlang"
        };
        volume.update(&[("flags.json", &engine_flags(engine, 10_000))]);
        let renamed = load.now();
        let deadline = Instant::now() + Duration::from_secs(5);
        let seen = loop {
            let seen = load
                .calls
                .lock()
                .expect("calls")
                .iter()
                .filter(|c| c.sent >= renamed)
                .filter(|c| matches!(&c.outcome, Ok((_, e)) if e == engine))
                .map(|c| c.sent + c.latency)
                .min();
            if let Some(done) = seen {
                break done;
            }
            assert!(
                Instant::now() < deadline,
                "no reply with {engine} within 5 s of the swap"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        propagation.push(seen - renamed);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = load.finish().await;
    for slot in 0..3 {
        fleet.stop(slot, Signal::SIGTERM).await;
    }
    propagation.sort();
    let engines: BTreeMap<String, usize> = r.calls.iter().fold(BTreeMap::new(), |mut m, c| {
        if let Ok((_, e)) = &c.outcome {
            *m.entry(e.clone()).or_default() += 1;
        }
        m
    });
    eprintln!(
        "[rollout] 100 flag flips: {} calls, failures {:?}, engines {engines:?}; rename to first reply with the new engine p50 {} ms p99 {} ms",
        r.calls.len(),
        failures(&r.calls),
        ms(percentile(&propagation, 0.5)),
        ms(percentile(&propagation, 0.99)),
    );
    assert_eq!(
        failures(&r.calls),
        BTreeMap::new(),
        "failed calls during flag flips"
    );
    assert!(engines.contains_key("whatlang") && engines.contains_key("lingua"));
}
