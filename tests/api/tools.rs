//! The operator tools as one family: the same address forms for every client
//! tool, the same exit code for the same outcome (2 bad usage, 1 a failed
//! check, 130 Ctrl-C), always with one line on stderr. Runs the real binary.

use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::process::BIN;

/// What the README's "Addresses" section shows for `--addr nope`.
const NOPE_LINE: &str = "switchyard: invalid --addr \"nope\": expected HOST:PORT or [IPV6]:PORT without a scheme, e.g. 127.0.0.1:50051, localhost:50051 or [::1]:50051\n";

/// `switchyard TOOL --addr ADDR` with the tool's flags for a short run.
fn tool_command(tool: &str, addr: &str) -> Command {
    let mut command = Command::new(BIN);
    command.args([tool, "--addr", addr]);
    match tool {
        "watch" => command.args(["--rps", "5", "--duration", "0.3"]),
        _ => command.args(["--timeout", "0.5"]),
    };
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    command
}

/// Runs `command` to the end, off the test's runtime.
async fn output(mut command: Command) -> Output {
    tokio::task::spawn_blocking(move || command.output().expect("binary runs"))
        .await
        .expect("joins")
}

/// Waits for `child` to end, at most `limit`, and returns what it printed.
async fn finish(child: Child, limit: Duration) -> Output {
    let pid = child.id();
    let waited = tokio::time::timeout(
        limit,
        tokio::task::spawn_blocking(move || child.wait_with_output().expect("waits")),
    )
    .await;
    match waited {
        Ok(joined) => joined.expect("joins"),
        Err(_) => {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            panic!("pid {pid} still running after {limit:?}");
        }
    }
}

fn interrupt(child: &Child) {
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).expect("signal delivered");
}

#[tokio::test]
async fn check_smoke_and_watch_refuse_a_bad_address_with_exit_2_and_one_line() {
    for tool in ["check", "smoke", "watch"] {
        for bad in [
            "nope",
            "",
            "localhost",
            "http://127.0.0.1:50051",
            "::1:50051",
            "127.0.0.1:0",
            "127.0.0.1:65536",
            "user@127.0.0.1:50051",
        ] {
            let out = output(tool_command(tool, bad)).await;

            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{tool} {bad:?}: {stderr}");
            assert_eq!(stderr.lines().count(), 1, "{tool} {bad:?}: {stderr}");
            assert!(
                stderr.starts_with(&format!("switchyard: invalid --addr {bad:?}: ")),
                "{tool} {bad:?}: {stderr}"
            );
            assert!(out.stdout.is_empty(), "{tool} {bad:?}: nothing was asked");
        }
        let out = output(tool_command(tool, "nope")).await;
        assert_eq!(String::from_utf8_lossy(&out.stderr), NOPE_LINE, "{tool}");
    }
    let readme = std::fs::read_to_string(crate::kube::root().join("README.md")).expect("README");
    assert!(
        readme.contains(NOPE_LINE.trim_end()),
        "the README shows the line as printed"
    );
}

#[tokio::test]
async fn check_smoke_and_watch_accept_every_documented_form() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = free.local_addr().expect("addr").port();
    drop(free);
    for form in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
    ] {
        for tool in ["check", "smoke", "watch"] {
            let out = output(tool_command(tool, &form)).await;

            // Nothing listens there: the address was used, and the check
            // failed (1), which is not bad usage (2).
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(1),
                "{tool} {form}: {stderr}{stdout}"
            );
            match tool {
                "check" => assert!(
                    stderr.starts_with(&format!("switchyard: cannot connect to {form}: ")),
                    "{stderr}"
                ),
                "smoke" => assert!(
                    stdout.starts_with(&format!("FAIL readiness: cannot connect to {form}: ")),
                    "{stdout}"
                ),
                _ => assert!(stdout.contains("summary: calls="), "{stdout}"),
            }
        }
    }
}

#[tokio::test]
async fn ctrl_c_stops_check_and_smoke_with_130_and_one_line() {
    // A server that accepts connections and never answers: the tools wait
    // (their timeout is long) until the interrupt.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = silent.local_addr().expect("addr").to_string();
    for tool in ["check", "smoke"] {
        let child = Command::new(BIN)
            .args([tool, "--addr", &addr, "--timeout", "30"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("binary runs");
        // Connected: the tool is running, and it listens for SIGINT before
        // it starts.
        let (_connection, _) = tokio::time::timeout(Duration::from_secs(10), silent.accept())
            .await
            .expect("the tool connects")
            .expect("accepted");

        interrupt(&child);
        let out = finish(child, Duration::from_secs(5)).await;

        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(130), "{tool}: {stderr}");
        assert_eq!(stderr, "switchyard: interrupted\n", "{tool}");
        assert!(out.stdout.is_empty(), "{tool}: no check finished");
    }
}

#[tokio::test]
async fn the_smoke_webhook_stops_at_ctrl_c_with_0() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = free.local_addr().expect("addr");
    drop(free);
    let child = Command::new(BIN)
        .args(["smoke-webhook", "--listen", &addr.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary runs");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(std::time::Instant::now() < deadline, "the webhook listens");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    interrupt(&child);
    let out = finish(child, Duration::from_secs(5)).await;

    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
