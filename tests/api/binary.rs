//! The real binary: signals, exit codes, bad configuration, `switchyard check`.

use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;
use nix::sys::signal::Signal;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::process::{BIN, Server};

#[tokio::test]
async fn sigterm_drains_and_exits_0_within_the_budget_while_a_watch_is_open() {
    let mut server = Server::start(&["--drain-delay", "0.5", "--drain-timeout", "2"]);
    server.wait_ready().await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.grpc))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut health = HealthClient::new(channel);
    let mut watch = health
        .watch(HealthCheckRequest { service: "".into() })
        .await
        .expect("watch")
        .into_inner();
    assert_eq!(
        watch.next().await.expect("item").expect("status").status,
        ServingStatus::Serving as i32
    );
    // Up for a while first, so uptime and drain time cannot be confused.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let signalled = Instant::now();
    server.signal(Signal::SIGTERM);
    let status = server.wait(Duration::from_millis(500 + 2000 + 1000)).await;
    let drain_took = signalled.elapsed().as_secs_f64();
    assert_eq!(status.code(), Some(0), "clean drain exits 0");
    // The watch saw the transition, then the clean end.
    assert_eq!(
        watch.next().await.expect("item").expect("status").status,
        ServingStatus::NotServing as i32
    );
    let end = watch.next().await.expect("item").expect_err("ends");
    assert_eq!(end.code(), tonic::Code::Unavailable);
    assert!(
        signalled.elapsed() >= Duration::from_millis(500),
        "served through the drain delay"
    );
    // Every drain log line is timed from the signal, not from the start.
    let complete = server
        .log_line("drain complete: every in-flight RPC finished")
        .await;
    let after = complete["after_s"].as_f64().expect("after_s");
    assert!(
        (0.5..=drain_took).contains(&after),
        "after_s {after} should be the drain's time (0.5 s delay, {drain_took:.2} s seen)"
    );
    for step in [
        "drain step 2: readiness NOT_SERVING",
        "drain step 4: closing the listener, sending GOAWAY, ending streams",
    ] {
        let since = server.log_line(step).await["since_signal_s"]
            .as_f64()
            .expect("since_signal_s");
        assert!(since <= after, "{step}: {since} > {after}");
    }
}

#[tokio::test]
async fn sigint_drains_like_sigterm() {
    let mut server = Server::start(&["--drain-delay", "0.1", "--drain-timeout", "1"]);
    server.wait_ready().await;
    server.signal(Signal::SIGINT);
    assert_eq!(server.wait(Duration::from_secs(3)).await.code(), Some(0));
}

#[tokio::test]
async fn a_second_signal_exits_at_once_with_130() {
    let mut server = Server::start(&["--drain-delay", "30"]);
    server.wait_ready().await;
    server.signal(Signal::SIGTERM);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = Instant::now();
    server.signal(Signal::SIGTERM);
    let status = server.wait(Duration::from_secs(2)).await;
    assert_eq!(status.code(), Some(130));
    assert!(second.elapsed() < Duration::from_secs(1));
}

/// A client that opens a unary call and never finishes sending it holds the
/// drain open; the deadline ends it and the exit code says so.
#[tokio::test]
async fn a_call_that_never_finishes_is_cut_at_the_drain_timeout_with_exit_1() {
    let mut server = Server::start(&["--drain-delay", "0.2", "--drain-timeout", "1"]);
    server.wait_ready().await;
    let tcp = tokio::net::TcpStream::connect(server.grpc)
        .await
        .expect("connect");
    let (mut h2, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(connection);
    let request = http::Request::post(format!(
        "http://{}/switchyard.v1.Detector/Detect",
        server.grpc
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(())
    .expect("request");
    let (_response, mut body) = h2.send_request(request, false).expect("stream opens");
    // Half a gRPC frame: a 5-byte header announcing 100 bytes, then nothing.
    body.send_data(bytes::Bytes::from_static(&[0, 0, 0, 0, 100]), false)
        .expect("send");
    tokio::time::sleep(Duration::from_millis(200)).await;

    let signalled = Instant::now();
    server.signal(Signal::SIGTERM);
    let status = server.wait(Duration::from_secs(4)).await;
    assert_eq!(status.code(), Some(1), "forced by the deadline");
    let took = signalled.elapsed();
    assert!(
        took >= Duration::from_millis(1100) && took < Duration::from_millis(2500),
        "{took:?}"
    );
    let deadline = server
        .log_line("drain deadline passed with RPCs still in flight: exiting anyway")
        .await;
    let after = deadline["after_s"].as_f64().expect("after_s");
    assert!(
        after >= 1.1 && after <= took.as_secs_f64(),
        "after_s {after} is the time since the signal ({took:?})"
    );
    drop(body);
}

#[test]
fn bad_configuration_exits_2_with_one_line_naming_the_setting_before_binding() {
    // A port in use: had the binary bound first, it would fail differently.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let bad_yaml = dir.path().join("bad.yaml");
    std::fs::write(&bad_yaml, "drain: [unclosed\n").expect("write");
    let bad_yaml = bad_yaml.to_str().expect("utf-8").to_owned();
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (vec!["--drain-delay", "-1"], vec![], "drain.delay"),
        (vec!["--drain-timeout", "soon"], vec![], "drain"),
        (vec!["--track", "beta"], vec![], "track"),
        (vec!["--max-connection-age", "soon"], vec![], "max_age"),
        (
            vec!["--http2-keepalive-timeout", "off"],
            vec![],
            "http2_keepalive_timeout",
        ),
        (
            vec!["--max-concurrent-streams", "none"],
            vec![],
            "max_concurrent_streams",
        ),
        (
            vec![],
            vec![("SWITCHYARD__CONNECTION__TCP_KEEPALIVE", "often")],
            "tcp_keepalive",
        ),
        (
            vec!["--max-text-chars", "0"],
            vec![],
            "detector.max_text_chars",
        ),
        (vec!["--log-format", "xml"], vec![], "format"),
        (
            vec![],
            vec![("SWITCHYARD__SERVER__MAX_CONCURRENT_REQUESTS", "lots")],
            "max_concurrent_requests",
        ),
        (
            vec!["--config", "/nonexistent/switchyard.yaml"],
            vec![],
            "--config",
        ),
        (vec!["--config", &bad_yaml], vec![], "bad.yaml"),
        // Trace export: the exporter's variables, from the specification.
        (
            vec!["--otlp-endpoint", "http://collector:4317"],
            vec![("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon")],
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ),
        (
            vec![],
            vec![("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json")],
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        ),
        // A CA file that holds no certificate, for either protocol.
        (
            vec!["--otlp-endpoint", "https://collector:4318"],
            vec![
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                ("OTEL_EXPORTER_OTLP_CERTIFICATE", &bad_yaml),
            ],
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
        ),
        (
            vec!["--otlp-endpoint", "https://collector:4317"],
            vec![("OTEL_EXPORTER_OTLP_CERTIFICATE", &bad_yaml)],
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
        ),
        (
            vec!["--otlp-endpoint", "https://collector:4317"],
            vec![
                ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", &bad_yaml),
                ("OTEL_EXPORTER_OTLP_CLIENT_KEY", &bad_yaml),
            ],
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
        ),
        (
            vec!["--otlp-endpoint", "http://collector:4317"],
            vec![("OTEL_TRACES_SAMPLER", "sometimes")],
            "OTEL_TRACES_SAMPLER",
        ),
        (
            vec![],
            vec![
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
            ],
            "OTEL_TRACES_SAMPLER_ARG",
        ),
        (
            vec!["--otlp-endpoint", "http://collector:4317"],
            vec![("OTEL_EXPORTER_OTLP_COMPRESSION", "brotli")],
            "OTEL_EXPORTER_OTLP_COMPRESSION",
        ),
        (
            vec!["--otlp-endpoint", "https://collector:4317"],
            vec![("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.pem")],
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
        ),
        (
            vec!["--otlp-endpoint", "http://collector:4317"],
            vec![("OTEL_EXPORTER_OTLP_HEADERS", "no-equals-sign")],
            "OTEL_EXPORTER_OTLP_HEADERS",
        ),
        // A value no HTTP header can carry (a line feed), for either
        // protocol.
        (
            vec!["--otlp-endpoint", "http://collector:4318"],
            vec![
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "authorization=a%0Ab"),
            ],
            "OTEL_EXPORTER_OTLP_HEADERS",
        ),
        (
            vec!["--otlp-endpoint", "http://collector:4317"],
            vec![("OTEL_EXPORTER_OTLP_HEADERS", "bad name=1")],
            "OTEL_EXPORTER_OTLP_HEADERS",
        ),
        (
            vec!["--otlp-endpoint", "http://collector:4317"],
            vec![("OTEL_EXPORTER_OTLP_HEADERS", "token-bin=abc")],
            "OTEL_EXPORTER_OTLP_HEADERS",
        ),
        (
            vec!["--otlp-endpoint", "http://collector:4317"],
            vec![("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "10s")],
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        ),
        (
            vec!["--otlp-endpoint", "http://collector:4317"],
            vec![("OTEL_BSP_MAX_QUEUE_SIZE", "lots")],
            "OTEL_BSP_MAX_QUEUE_SIZE",
        ),
        // Sizes allocated up front, and durations that would overflow.
        (
            vec!["--otlp-endpoint", "http://collector:4317"],
            vec![("OTEL_BSP_MAX_QUEUE_SIZE", "1000000000")],
            "OTEL_BSP_MAX_QUEUE_SIZE",
        ),
        (
            vec!["--max-concurrent-requests", "100000000"],
            vec![],
            "max_concurrent_requests",
        ),
        (
            vec![],
            vec![("SWITCHYARD__DARK_LAUNCH__MAX_IN_FLIGHT", "100000")],
            "dark_launch.max_in_flight",
        ),
        (
            vec!["--max-connection-age", "18000000000000000000"],
            vec![],
            "max_age",
        ),
        (vec!["--tcp-keepalive", "10h"], vec![], "tcp_keepalive"),
        // RUST_LOG wins over --log-level: a typo in it is refused too.
        (vec![], vec![("RUST_LOG", "info,[[")], "RUST_LOG"),
        (
            vec![],
            vec![(
                "SWITCHYARD__FLAGS__CONTEXT_HEADERS",
                "x-user-group,x-trace-bin",
            )],
            "context_headers",
        ),
    ];
    for (args, env, named) in cases {
        let out = Command::new(BIN)
            .args(["serve", "--grpc-addr", &port])
            .args(&args)
            .envs(env.iter().copied())
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(named), "{stderr:?} names {named}");
    }
    // An environment variable that is not UTF-8, ours or not, is no panic:
    // the same one-line refusal of the bad value.
    use std::os::unix::ffi::OsStrExt;
    let not_utf8 = std::ffi::OsStr::from_bytes(b"\xff\xfe");
    let out = Command::new(BIN)
        .args(["serve", "--grpc-addr", &port])
        .env("SOMETHING_ELSE", not_utf8)
        .env("SWITCHYARD__DRAIN__DELAY", not_utf8)
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("drain.delay"), "{stderr:?}");
}

#[tokio::test]
async fn check_exits_0_only_when_serving() {
    let server = Server::start(&["--drain-delay", "3"]);
    server.wait_ready().await;
    let addr = server.grpc.to_string();
    let check_at = |addr: &str, service: &str| {
        Command::new(BIN)
            .args([
                "check",
                "--addr",
                addr,
                "--service",
                service,
                "--timeout",
                "2",
            ])
            .output()
            .expect("runs")
    };
    // The gRPC listener and the probe listener (the kubelet's) agree.
    let probe = server.probe.to_string();
    for at in [addr.as_str(), probe.as_str()] {
        let ok = check_at(at, "readiness");
        assert_eq!(
            ok.status.code(),
            Some(0),
            "{at}: {}",
            String::from_utf8_lossy(&ok.stdout)
        );
        assert!(String::from_utf8_lossy(&ok.stdout).contains("SERVING"));
        assert_eq!(check_at(at, "no.such.Service").status.code(), Some(1));
    }
    server.signal(Signal::SIGTERM);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for at in [addr.as_str(), probe.as_str()] {
        let draining = check_at(at, "readiness");
        assert_eq!(draining.status.code(), Some(1), "{at}");
        assert!(String::from_utf8_lossy(&draining.stdout).contains("NOT_SERVING"));
        assert_eq!(
            check_at(at, "liveness").status.code(),
            Some(0),
            "{at}: liveness stays up while draining"
        );
    }
    drop(server);
    let nobody = Command::new(BIN)
        .args(["check", "--addr", &addr, "--timeout", "0.5"])
        .output()
        .expect("runs");
    assert_eq!(nobody.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&nobody.stderr).contains("cannot connect"));
    // A bad address is bad usage (2), not a failed check, as for smoke and watch.
    for bad in ["nope", "http://127.0.0.1:50051", "127.0.0.1:0"] {
        let out = Command::new(BIN)
            .args(["check", "--addr", bad])
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {stderr}");
        assert!(stderr.contains(bad), "{stderr:?} echoes {bad}");
    }
}

fn write(dir: &std::path::Path, name: &str, content: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, content).expect("write");
    path.to_str().expect("utf-8").to_owned()
}

const FRACTIONAL: &str = r#"{"metadata": {"team": "search"}, "flags": {"fractional-flag": {
    "state": "ENABLED",
    "variants": {"clubs": "clubs", "diamonds": "diamonds", "hearts": "hearts", "spades": "spades"},
    "defaultVariant": "clubs",
    "targeting": {"fractional": [{"cat": [{"var": "$flagd.flagKey"}, {"var": "user.name"}]},
        ["clubs", 25], ["diamonds", 25], ["hearts", 25], ["spades", 25]]},
    "metadata": {"rollout": 3}
}, "off": {"state": "DISABLED", "variants": {"a": 1}, "defaultVariant": "a"}}}"#;

#[test]
fn flags_validate_exits_0_for_valid_files_and_lists_every_error_otherwise() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = write(dir.path(), "good.json", FRACTIONAL);
    let out = Command::new(BIN)
        .args(["flags", "validate", &good])
        .output()
        .expect("runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(&format!("ok: {good} (2 flags")));
    // The repository's own built-in flags pass.
    let builtin = concat!(env!("CARGO_MANIFEST_DIR"), "/flags/flags.json");
    assert_eq!(
        Command::new(BIN)
            .args(["flags", "validate", builtin])
            .status()
            .expect("runs")
            .code(),
        Some(0)
    );

    let bad = write(
        dir.path(),
        "bad.yaml",
        "flags:\n  a:\n    state: ENABLED\n    variants: {x: 1}\n    defaultVariant: y\n  b:\n    state: ENABLED\n    variants: {x: 1}\n    defaultVariant: x\n    targeting: {nope: [1]}\n",
    );
    let out = Command::new(BIN)
        .args(["flags", "validate", &good, &bad])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines[0].starts_with(&format!("{bad}: flag `a`: defaultVariant \"y\"")),
        "{stderr}"
    );
    assert!(
        lines[1].starts_with(&format!(
            "{bad}: flag `b`: targeting does not compile: unknown operator `nope`"
        )),
        "{stderr}"
    );
}

#[test]
fn flags_eval_prints_flagd_style_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(dir.path(), "flags.json", FRACTIONAL);
    let eval = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(["flags", "eval", &file])
            .args(args)
            .output()
            .expect("runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stdout, _) = eval(&[
        "--flag",
        "fractional-flag",
        "--context",
        r#"{"targetingKey": "alice", "user": {"name": "jack"}}"#,
    ]);
    assert_eq!(code, Some(0));
    let one: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(
        one,
        serde_json::json!({"key": "fractional-flag", "value": "hearts", "variant": "hearts",
            "reason": "TARGETING_MATCH", "metadata": {"team": "search", "rollout": 3}})
    );

    let (code, stdout, _) = eval(&["--context", r#"{"user": {"name": "queen"}}"#]);
    assert_eq!(code, Some(0));
    let all: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(all["fractional-flag"]["variant"], "spades");
    assert_eq!(all["off"]["reason"], "DISABLED");
    assert_eq!(all["off"]["value"], serde_json::Value::Null);

    // An error result exits 1, so a script can tell.
    let (code, stdout, _) = eval(&["--flag", "nope"]);
    assert_eq!(code, Some(1));
    let missing: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(
        (missing["reason"].as_str(), missing["errorCode"].as_str()),
        (Some("ERROR"), Some("FLAG_NOT_FOUND"))
    );

    // Typed evaluation: a string variant asked for as an integer.
    let (code, stdout, _) = eval(&["--flag", "fractional-flag", "--type", "integer"]);
    assert_eq!(code, Some(1), "{stdout}");
    let typed: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(typed["errorCode"], "TYPE_MISMATCH");
    let (code, stdout, _) = eval(&["--flag", "fractional-flag", "--type", "string"]);
    assert_eq!(code, Some(0), "{stdout}");

    // v3 bucketing of the same user, as the testbed's vector has it
    // (gherkin/targeting.feature, `@fractional-v3`: jack is in diamonds).
    let (code, stdout, _) = eval(&[
        "--flag",
        "fractional-flag",
        "--fractional-version",
        "v3",
        "--context",
        r#"{"user": {"name": "jack"}}"#,
    ]);
    assert_eq!(code, Some(0));
    let v3: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(v3["variant"], "diamonds");

    let (code, _, stderr) = eval(&["--context", "[1, 2]"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("--context"), "{stderr}");
}

#[test]
fn flags_validate_lists_tolerated_problems_as_warnings_and_exits_0() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "warn.json",
        r#"{"flags": {"f": {"state": "ENABLED", "variants": {"a": "a"}, "defaultVariant": null,
            "targeting": {"if": [{"sem_ver": [{"var": "v"}, "=>", "1.0.0"]}, "a", null]}}}}"#,
    );
    let out = Command::new(BIN)
        .args(["flags", "validate", &file])
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("(1 flags, revision"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].starts_with(&format!(
            "warning: {file}: flag `f`: targeting: `sem_ver` operator"
        )),
        "{stderr}"
    );
}

#[test]
fn bad_flags_at_startup_exit_2_naming_the_file_and_flag() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "flags.json",
        r#"{"flags": {"detector-engine": {"state": "ENABLED", "variants": {"a": "a"}, "defaultVariant": "b"}}}"#,
    );
    let out = Command::new(BIN)
        .args([
            "serve",
            "--grpc-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
            "--probe-addr",
            "127.0.0.1:0",
        ])
        .args(["--flags", dir.path().to_str().expect("utf-8")])
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("flags.json: flag `detector-engine`: defaultVariant \"b\""),
        "{stderr}"
    );
}

#[test]
fn a_busy_port_exits_1_after_the_flags_loaded() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").to_string();
    let out = Command::new(BIN)
        .args(["serve", "--grpc-addr", &port, "--admin-addr", "127.0.0.1:0"])
        .args(["--probe-addr", "127.0.0.1:0"])
        .args(["--log-format", "json"])
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot bind the gRPC listener") && stderr.contains(&port),
        "{stderr}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("flags loaded"),
        "the flags load before anything binds"
    );
}
