//! `switchyard watch`: calls Detect at a steady rate as many users and sums up
//! who answered and what failed. The binary runs with stdout piped, so it
//! prints plain lines (one per second) and the summary.

use std::collections::BTreeMap;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::helpers::TestApp;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

fn watch_command(args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .arg("watch")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Runs `switchyard watch ARGS` to the end, off the test's runtime.
async fn watch_bin(args: &[&str]) -> Output {
    let mut command = watch_command(args);
    tokio::task::spawn_blocking(move || command.output().expect("binary runs"))
        .await
        .expect("joins")
}

/// What the watch printed: the `[Ns]` lines, and the summary's fields
/// (`summary: calls=.. ok=..`, `failures: CODE=N`), and the share lines.
struct Printed {
    seconds: Vec<String>,
    summary: BTreeMap<String, String>,
    failures: BTreeMap<String, u64>,
    shares: Vec<String>,
}

impl Printed {
    fn of(out: &Output) -> Self {
        let stdout = String::from_utf8_lossy(&out.stdout);
        let pairs = |rest: &str| -> BTreeMap<String, String> {
            rest.split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        };
        let mut printed = Printed {
            seconds: Vec::new(),
            summary: BTreeMap::new(),
            failures: BTreeMap::new(),
            shares: Vec::new(),
        };
        for line in stdout.lines() {
            if line.starts_with('[') {
                printed.seconds.push(line.to_owned());
            } else if let Some(rest) = line.strip_prefix("summary: ") {
                printed.summary = pairs(rest);
            } else if let Some(rest) = line.strip_prefix("failures: ") {
                printed.failures = pairs(rest)
                    .into_iter()
                    .map(|(k, v)| (k, v.parse().expect("a count")))
                    .collect();
            } else if let Some(rest) = line.strip_prefix("share: ") {
                printed.shares.push(rest.to_owned());
            }
        }
        assert!(!printed.summary.is_empty(), "a summary line: {stdout}");
        printed
    }

    fn count(&self, key: &str) -> u64 {
        self.summary[key].parse().expect("a count")
    }

    fn seconds_field(&self, key: &str) -> f64 {
        self.summary[key]
            .trim_end_matches('s')
            .parse()
            .expect("seconds")
    }
}

/// An A/B test: half the users on each engine, sticky per `x-user-id`.
const HALF_AND_HALF: &str = r#"{"flags": {"detector-engine": {
    "state": "ENABLED",
    "variants": {"whatlang": "whatlang", "lingua": "lingua"},
    "defaultVariant": "whatlang",
    "targeting": {"fractional": [["lingua", 50], ["whatlang", 50]]}
}}}"#;

#[tokio::test]
async fn two_seconds_at_50_rps_make_about_100_calls_and_show_the_split() {
    let dir = tempfile::tempdir().expect("tempdir");
    let flags = dir.path().join("flags.json");
    std::fs::write(&flags, HALF_AND_HALF).expect("write flags");
    let flags = flags.to_str().expect("utf-8");
    let app =
        TestApp::spawn_configured(&[("flags.path", flags), ("deployment.version", "v2")]).await;
    let addr = app.grpc_addr.to_string();

    let out = watch_bin(&[
        "--addr",
        &addr,
        "--rps",
        "50",
        "--user-ids",
        "20",
        "--duration",
        "2",
    ])
    .await;

    let printed = Printed::of(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let calls = printed.count("calls");
    assert!((90..=101).contains(&calls), "about 100 calls: {calls}");
    assert_eq!(printed.count("failed"), 0);
    assert_eq!(printed.count("ok"), calls);
    assert!(printed.failures.is_empty(), "failures: none");
    let duration = printed.seconds_field("duration");
    assert!((1.9..3.0).contains(&duration), "{duration}");
    // The server counted them too.
    assert_eq!(app.traffic().await.0, calls);
    // Both engines answered (20 users split by the flag), both from v2 stable.
    assert_eq!(printed.shares.len(), 2, "{:?}", printed.shares);
    for engine in ["whatlang", "lingua"] {
        assert!(
            printed.shares.iter().any(
                |s| s.starts_with(&format!("version=v2 track=stable engine={engine} replies="))
            ),
            "{engine}: {:?}",
            printed.shares
        );
    }
    // A plain line per whole second (stdout is not a terminal).
    assert_eq!(printed.seconds.len(), 2, "{:?}", printed.seconds);
    assert!(
        printed.seconds[0].starts_with("[1s] "),
        "{}",
        printed.seconds[0]
    );
    assert!(
        printed.seconds[0].contains("failures/s: none"),
        "{}",
        printed.seconds[0]
    );
}

#[tokio::test]
async fn nothing_listening_counts_every_call_as_unavailable_and_exits_1() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = free.local_addr().expect("addr").to_string();
    drop(free);

    let out = watch_bin(&["--addr", &addr, "--rps", "20", "--duration", "1"]).await;

    let printed = Printed::of(&out);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(printed.count("ok"), 0);
    let failed = printed.count("failed");
    assert!(failed >= 15, "{failed}");
    assert_eq!(
        printed.failures,
        BTreeMap::from([("UNAVAILABLE".to_owned(), failed)])
    );
    assert!(printed.shares.is_empty());
    // No reply at all: the gap is the whole watch.
    assert!(printed.seconds_field("longest_gap") >= 0.9);
}

#[tokio::test]
async fn a_replica_that_goes_away_mid_run_shows_failures_and_the_gap() {
    let app = TestApp::spawn_configured(&[("drain.delay", "0.1")]).await;
    let addr = app.grpc_addr.to_string();
    let child = watch_command(&["--addr", &addr, "--rps", "50", "--duration", "3"])
        .spawn()
        .expect("binary runs");
    // Once the watch is getting answers, the replica drains and stops.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while app.traffic().await.0 < 25 {
        assert!(std::time::Instant::now() < deadline, "watch calls arrive");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.signal().await;
    app.outcome().await;

    let out = tokio::task::spawn_blocking(move || child.wait_with_output().expect("waits"))
        .await
        .expect("joins");

    let printed = Printed::of(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(printed.count("ok") >= 25, "{:?}", printed.summary);
    assert!(
        printed.failures.get("UNAVAILABLE").is_some_and(|&n| n > 10),
        "{:?}",
        printed.failures
    );
    assert_eq!(
        printed.count("failed"),
        printed.failures.values().sum::<u64>()
    );
    // Served for about half a second at most, then nothing until the end.
    assert!(
        printed.seconds_field("longest_gap") >= 1.0,
        "{:?}",
        printed.summary
    );
}

#[tokio::test]
async fn bad_usage_exits_2_with_one_line() {
    for args in [
        &["--addr", "nowhere"][..],
        &["--addr", "127.0.0.1:1", "--rps", "0"],
        &["--addr", "127.0.0.1:1", "--user-ids", "0"],
        &["--addr", "127.0.0.1:1", "--duration", "-1"],
    ] {
        let out = watch_bin(args).await;

        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.starts_with("switchyard: invalid"), "{stderr}");
    }
}

/// Starts a watch on `app` and interrupts it once the app has seen calls.
async fn interrupted_watch(app: &TestApp, extra: &[&str]) -> Output {
    let addr = app.grpc_addr.to_string();
    let mut args = vec!["--addr", addr.as_str(), "--rps", "50"];
    args.extend_from_slice(extra);
    let child = watch_command(&args).spawn().expect("binary runs");
    // Answered calls: the watch is running, and listens for Ctrl-C.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while app.traffic().await.0 < 10 {
        assert!(std::time::Instant::now() < deadline, "watch calls arrive");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).expect("signal delivered");
    tokio::time::timeout(
        Duration::from_secs(10),
        tokio::task::spawn_blocking(move || child.wait_with_output().expect("waits")),
    )
    .await
    .expect("the watch ends after Ctrl-C")
    .expect("joins")
}

#[tokio::test]
async fn without_a_duration_ctrl_c_is_the_normal_end_with_the_summary() {
    let app = TestApp::spawn().await;

    let out = interrupted_watch(&app, &[]).await;

    let printed = Printed::of(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
    assert!(printed.count("ok") >= 10, "{:?}", printed.summary);
    assert_eq!(printed.count("failed"), 0);
}

#[tokio::test]
async fn ctrl_c_before_the_duration_passed_prints_the_summary_and_exits_130() {
    let app = TestApp::spawn().await;

    let out = interrupted_watch(&app, &["--duration", "60"]).await;

    let printed = Printed::of(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert_eq!(stderr, "switchyard: interrupted before --duration passed\n");
    assert!(printed.count("ok") >= 10, "{:?}", printed.summary);
    assert!(
        printed.seconds_field("duration") < 30.0,
        "{:?}",
        printed.summary
    );
}
