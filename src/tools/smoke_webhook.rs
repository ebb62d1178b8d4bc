//! `switchyard smoke-webhook`: the smoke test behind an HTTP webhook, for
//! Flagger's `pre-rollout` hook. Flagger POSTs a JSON payload whose
//! `metadata` (strings) carries `addr` (required, in the tools' one address
//! form: [`super::client::Target`]) and optionally `expect-version`; the
//! runner runs [`super::smoke::run_checks`] against it and
//! answers 200 when every check passed, 500 with the failing check's line
//! otherwise (Flagger then holds the rollout), 400 for a payload it cannot
//! use. Flagger's own load tester runs commands in an Alpine image, where
//! this glibc binary does not start: hence a runner from our own image.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use clap::Args;
use futures::StreamExt;
use serde::Deserialize;
use tokio::net::TcpListener;

use super::client::Target;
use super::smoke::{SmokeOptions, run_checks};
use crate::exit::{Exit, fail};

/// `switchyard smoke-webhook`.
#[derive(Debug, Args)]
pub struct SmokeWebhookArgs {
    /// Where to listen for the webhook's POSTs (IP:PORT, as `serve --grpc-addr`).
    #[arg(long, default_value = "0.0.0.0:8080", value_name = "IP:PORT")]
    pub listen: std::net::SocketAddr,
    /// Bound on connecting and on each smoke call, in seconds.
    #[arg(
        long,
        default_value_t = 5.0,
        value_name = "SECONDS",
        allow_hyphen_values = true
    )]
    pub timeout: f64,
}

/// Runs `switchyard smoke-webhook` until SIGTERM or Ctrl-C (then 0); 2 for
/// bad usage, 1 when it cannot listen.
pub fn run(args: &SmokeWebhookArgs) -> Exit {
    let timeout = match super::seconds("--timeout", args.timeout) {
        Ok(timeout) => timeout,
        Err(e) => return fail(Exit::Usage, &e),
    };
    // SIGINT is the webhook's normal stop, with SIGTERM: both through
    // `os_signals`, listened for before the port opens.
    super::run(|_| async move {
        let mut signals = match crate::shutdown::os_signals() {
            Ok(signals) => signals,
            Err(e) => return fail(Exit::Failed, &e),
        };
        let listener = match TcpListener::bind(args.listen).await {
            Ok(listener) => listener,
            Err(e) => {
                return fail(
                    Exit::Failed,
                    &format!("cannot listen on {}: {e}", args.listen),
                );
            }
        };
        let stop = async move {
            signals.next().await;
        };
        match serve(listener, timeout, stop).await {
            Ok(()) => Exit::Ok,
            Err(e) => fail(Exit::Failed, &e),
        }
    })
}

/// Flagger's webhook payload (its other fields are ignored).
#[derive(Debug, Deserialize)]
struct Payload {
    #[serde(default)]
    metadata: std::collections::HashMap<String, String>,
}

/// Serves the webhook on `listener` (any path, POST) until `shutdown`;
/// `timeout` bounds connecting and each smoke call.
pub async fn serve(
    listener: TcpListener,
    timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/", post(smoke))
        .fallback(post(smoke))
        .with_state(timeout);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn smoke(State(timeout): State<Duration>, body: Bytes) -> (StatusCode, String) {
    let payload: Payload = match serde_json::from_slice(&body) {
        Ok(payload) => payload,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("not a webhook payload: {e}\n"),
            );
        }
    };
    let Some(addr) = payload.metadata.get("addr") else {
        return (
            StatusCode::BAD_REQUEST,
            "the webhook's metadata has no `addr` (HOST:PORT of the canary)\n".into(),
        );
    };
    let target: Target = match addr.parse() {
        Ok(target) => target,
        Err(e) => {
            let e = e.in_field("metadata.addr");
            tracing::info!(%addr, status = 400, report = %e, "smoke webhook");
            return (StatusCode::BAD_REQUEST, format!("{e}\n"));
        }
    };
    let opts = SmokeOptions {
        target,
        expect_version: payload.metadata.get("expect-version").cloned(),
        timeout,
    };
    let mut out = Vec::new();
    let result = run_checks(&opts, &mut out).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = match result {
        Ok(_) => StatusCode::OK,
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    tracing::info!(%addr, status = status.as_u16(), report = %text.trim_end(), "smoke webhook");
    (status, text)
}
