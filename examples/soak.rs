//! The soak: a release build of `switchyard serve` under steady load for a
//! long time, with everything that could leak or drift switched on, sampled
//! every 10 s. Run by `scripts/bench soak` (which builds, then plots the
//! CSV with scripts/plot-soak); alone:
//! `cargo run --release --example soak -- OUT_DIR`.
//!
//! - Load: first 10 s closed-loop at 64 calls in flight to find the
//!   saturated Detect rate, then an open loop at `SOAK_LOAD` (0.5) of it, as
//!   users `user-0..999` (so fractional rules split them); each call has a
//!   2 s deadline.
//! - Flags: a ConfigMap directory swapped as the kubelet does it (a new
//!   `..<time>` directory, `..data_tmp` renamed over `..data`) `SOAK_RELOADS`
//!   (100) times, evenly; every set samples a dark launch of the other
//!   engine at 10 % and alternates the input limit.
//! - Traces: exported at 100 % to `examples/otlp-sink`, which is down from
//!   30 % to 50 % of the run (the exporter must drop, count and recover).
//! - Calls that raced a connection-age GOAWAY and reached no server are
//!   sent again once and counted apart (gRFC A6's transparent retry, which
//!   tonic lacks: `switchyard::tools::client::never_processed`).
//! - Every 10 s: RSS, open descriptors and threads of the server (from
//!   /proc), calls and failures, Detect p50/p99 of the window. Written to
//!   OUT_DIR/soak.csv; the summary compares the last sample with the first
//!   after warm-up (`SOAK_WARMUP`, 60 s).
//!
//! Bounded: `SOAK_SECS` (600) of load, every process it starts is killed on
//! exit, everything on 127.0.0.1.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchyard::grpc::pb;
use switchyard::grpc::pb::detector_client::DetectorClient;
use tonic::transport::Channel;

const TEXT: &str = "Zero downtime deployments with Kubernetes need careful draining";

// A benchmark's knobs, read where it starts (the service reads the
// environment only through its settings).
#[allow(clippy::disallowed_methods)]
fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A child process killed on drop.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn release_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/release/examples/soak -> target/release/<name>
    let release = exe.parent().and_then(Path::parent).expect("target/release");
    let direct = release.join(name);
    if direct.exists() {
        direct
    } else {
        release.join("examples").join(name)
    }
}

/// Starts the OTLP sink on `addr`; returns it once it printed its address.
fn start_sink(addr: &str) -> Process {
    let mut child = Command::new(release_binary("otlp-sink"))
        .arg(addr)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("otlp-sink starts (cargo build --release --examples)");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("sink address");
    Process(child)
}

/// The flag set of reload `n`: the engine answering stays the default; the
/// other engine runs dark for 10 % of users; the input limit alternates.
fn flags(n: u32) -> String {
    let limit = if n.is_multiple_of(2) {
        "default"
    } else {
        "tight"
    };
    serde_json::json!({
        "flags": {
            "detector-engine": {"state": "ENABLED",
                "variants": {"whatlang": "whatlang", "lingua": "lingua"},
                "defaultVariant": "lingua"},
            "dark-launch-engine": {"state": "ENABLED",
                "variants": {"off": "off", "whatlang": "whatlang"},
                "defaultVariant": "off",
                "targeting": {"fractional": [["whatlang", 10], ["off", 90]]}},
            "max-text-chars": {"state": "ENABLED",
                "variants": {"default": 10000, "tight": 1000},
                "defaultVariant": limit},
            "soak-reload": {"state": "ENABLED", "variants": {"n": n}, "defaultVariant": "n"}
        }
    })
    .to_string()
}

/// The kubelet's AtomicWriter: a new timestamped directory, a `..data_tmp`
/// symlink to it renamed over `..data`, the old directory removed.
fn swap(dir: &Path, content: &str, n: u32) {
    let stamp = format!("..soak_{n:05}");
    let new = dir.join(&stamp);
    std::fs::create_dir_all(&new).expect("mkdir");
    std::fs::write(new.join("flags.json"), content).expect("write");
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&stamp, &tmp).expect("symlink");
    let old = std::fs::read_link(dir.join("..data")).ok();
    std::fs::rename(&tmp, dir.join("..data")).expect("rename");
    if !dir.join("flags.json").exists() {
        std::os::unix::fs::symlink("..data/flags.json", dir.join("flags.json")).expect("symlink");
    }
    if let Some(old) = old {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
}

fn proc_status(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn open_fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64)
}

/// Latencies and failures of the current 10 s window.
#[derive(Default)]
struct Window {
    latencies_us: Vec<u64>,
    failed: u64,
}

async fn call(client: &mut DetectorClient<Channel>, user: u64) -> Result<(), tonic::Status> {
    let mut request = tonic::Request::new(pb::DetectRequest { text: TEXT.into() });
    request.set_timeout(Duration::from_secs(2));
    request.metadata_mut().insert(
        "x-user-id",
        format!("user-{}", user % 1000).parse().expect("ascii"),
    );
    client.detect(request).await.map(|_| ())
}

#[tokio::main]
async fn main() {
    let out: PathBuf = std::env::args()
        .nth(1)
        .map_or_else(|| PathBuf::from("target/soak"), PathBuf::from);
    std::fs::create_dir_all(&out).expect("out dir");
    let secs = env_f64("SOAK_SECS", 600.0);
    let reloads = env_f64("SOAK_RELOADS", 100.0) as u32;
    let load = env_f64("SOAK_LOAD", 0.5);
    let warmup = env_f64("SOAK_WARMUP", 60.0);

    let flags_dir = tempfile::tempdir().expect("tempdir");
    swap(flags_dir.path(), &flags(0), 0);
    let sink_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let sink_addr = format!("127.0.0.1:{sink_port}");
    let mut sink = Some(start_sink(&sink_addr));

    let mut server = Command::new(release_binary("switchyard"))
        .args([
            "serve",
            "--grpc-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
            "--probe-addr",
            "127.0.0.1:0",
        ])
        .args([
            "--log-format",
            "json",
            "--log-level",
            "warn,switchyard=info",
        ])
        .arg("--flags")
        .arg(flags_dir.path())
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{sink_addr}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("switchyard starts (cargo build --release)");
    let pid = server.id();
    let stdout = server.stdout.take().expect("stdout");
    let server = Process(server);
    let (tx, rx) = std::sync::mpsc::channel();
    let log = Arc::new(Mutex::new(
        std::fs::File::create(out.join("server.log")).expect("log"),
    ));
    let log_writer = Arc::clone(&log);
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(mut f) = log_writer.lock() {
                let _ = writeln!(f, "{line}");
            }
            if line.contains("\"listening\"")
                && let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(v["grpc"].as_str().unwrap_or_default().to_owned());
            }
        }
    });
    let grpc: SocketAddr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the server logs its address")
        .parse()
        .expect("address");
    let channel = Channel::from_shared(format!("http://{grpc}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    // Readiness: the first successful Detect.
    let mut client = DetectorClient::new(channel.clone());
    let ready_by = Instant::now() + Duration::from_secs(60);
    while call(&mut client, 0).await.is_err() {
        assert!(Instant::now() < ready_by, "never ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Saturation: 64 calls in flight for 10 s.
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(10);
    let mut workers = Vec::new();
    for w in 0..64u64 {
        let (mut client, done) = (DetectorClient::new(channel.clone()), Arc::clone(&done));
        workers.push(tokio::spawn(async move {
            let mut user = w;
            while Instant::now() < until {
                if call(&mut client, user).await.is_ok() {
                    done.fetch_add(1, Ordering::Relaxed);
                }
                user += 64;
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    let saturated = done.load(Ordering::Relaxed) as f64 / 10.0;
    let rate = (saturated * load).max(1.0);
    println!("soak: saturated at {saturated:.0} Detect/s; running at {rate:.0}/s for {secs:.0} s");

    // The open loop, sampled every 10 s.
    let window = Arc::new(Mutex::new(Window::default()));
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(secs);
    let interval = Duration::from_secs_f64(1.0 / rate);
    let in_flight = Arc::new(tokio::sync::Semaphore::new(4096));
    // Calls retried because no server had processed them.
    let retried = Arc::new(AtomicU64::new(0));
    let pacer = {
        let (window, channel, in_flight) =
            (Arc::clone(&window), channel.clone(), Arc::clone(&in_flight));
        let retried = Arc::clone(&retried);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut user = 0u64;
            while Instant::now() < end {
                tick.tick().await;
                user += 1;
                let Ok(permit) = Arc::clone(&in_flight).try_acquire_owned() else {
                    window.lock().expect("window").failed += 1;
                    continue;
                };
                let (window, mut client) =
                    (Arc::clone(&window), DetectorClient::new(channel.clone()));
                let retried = Arc::clone(&retried);
                tokio::spawn(async move {
                    let asked = Instant::now();
                    let mut result = call(&mut client, user).await;
                    // gRFC A6's transparent retry, which tonic lacks: a call
                    // that raced a GOAWAY and reached no server.
                    if let Err(status) = &result
                        && switchyard::tools::client::never_processed(status)
                    {
                        retried.fetch_add(1, Ordering::Relaxed);
                        result = call(&mut client, user).await;
                    }
                    let mut w = window.lock().expect("window");
                    match result {
                        Ok(()) => w.latencies_us.push(asked.elapsed().as_micros() as u64),
                        Err(_) => w.failed += 1,
                    }
                    drop(permit);
                });
            }
        })
    };

    let mut csv = std::fs::File::create(out.join("soak.csv")).expect("csv");
    writeln!(
        csv,
        "t_s,rss_kib,fds,threads,calls,failed,p50_ms,p99_ms,sink_up,reloads"
    )
    .expect("csv");
    let reload_every = Duration::from_secs_f64(secs / f64::from(reloads.max(1)));
    let (mut next_reload, mut reloaded) = (started + reload_every, 0u32);
    let (mut next_sample, mut samples) = (started + Duration::from_secs(10), Vec::new());
    let mut total_failed = 0u64;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let elapsed = started.elapsed().as_secs_f64();
        // The collector is down from 30 % to 50 % of the run.
        let down = elapsed >= secs * 0.3 && elapsed < secs * 0.5;
        if down && sink.is_some() {
            sink = None;
        } else if !down && sink.is_none() {
            sink = Some(start_sink(&sink_addr));
        }
        if Instant::now() >= next_reload && reloaded < reloads {
            reloaded += 1;
            swap(flags_dir.path(), &flags(reloaded), reloaded);
            next_reload += reload_every;
        }
        if Instant::now() >= next_sample {
            next_sample += Duration::from_secs(10);
            let mut w = std::mem::take(&mut *window.lock().expect("window"));
            w.latencies_us.sort_unstable();
            let pct = |p: usize| {
                w.latencies_us
                    .get(
                        (w.latencies_us.len() * p / 100)
                            .min(w.latencies_us.len().saturating_sub(1)),
                    )
                    .map_or(0.0, |us| *us as f64 / 1000.0)
            };
            let row = (
                elapsed,
                proc_status(pid, "VmRSS:"),
                open_fds(pid),
                proc_status(pid, "Threads:"),
                w.latencies_us.len() as u64 + w.failed,
                w.failed,
                pct(50),
                pct(99),
            );
            total_failed += w.failed;
            writeln!(
                csv,
                "{:.0},{},{},{},{},{},{:.3},{:.3},{},{}",
                row.0,
                row.1,
                row.2,
                row.3,
                row.4,
                row.5,
                row.6,
                row.7,
                u8::from(sink.is_some()),
                reloaded
            )
            .expect("csv");
            println!(
                "[{:>4.0}s] rss {} KiB fds {} threads {} calls {} failed {} p50 {:.2} ms p99 {:.2} ms sink {} reloads {}",
                row.0,
                row.1,
                row.2,
                row.3,
                row.4,
                row.5,
                row.6,
                row.7,
                if sink.is_some() { "up" } else { "DOWN" },
                reloaded
            );
            samples.push(row);
        }
    }
    let _ = pacer.await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    total_failed += window.lock().expect("window").failed;

    let after_warmup: Vec<_> = samples.iter().filter(|s| s.0 >= warmup).collect();
    let (Some(first), Some(last)) = (after_warmup.first(), after_warmup.last()) else {
        println!("soak: too short for a summary (warm-up {warmup} s)");
        return;
    };
    let growth = |a: u64, b: u64| (b as f64 - a as f64) / (a.max(1) as f64) * 100.0;
    let retried = retried.load(Ordering::Relaxed);
    let summary = format!(
        "soak: {secs:.0} s at {rate:.0}/s ({load} of {saturated:.0}/s), {reloaded} flag reloads, collector down 30-50 %: \
         failed {total_failed} (retried, never processed: {retried}); after {warmup:.0} s warm-up: RSS {} -> {} KiB ({:+.1} %), fds {} -> {} ({:+.1} %), \
         threads {} -> {} ({:+.1} %), p99 {:.2} -> {:.2} ms",
        first.1,
        last.1,
        growth(first.1, last.1),
        first.2,
        last.2,
        growth(first.2, last.2),
        first.3,
        last.3,
        growth(first.3, last.3),
        first.7,
        last.7
    );
    println!("{summary}");
    std::fs::write(out.join("summary.txt"), format!("{summary}\n")).expect("summary");
    drop(server);
}
