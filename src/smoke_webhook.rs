//! `switchyard smoke-webhook`: the smoke test behind an HTTP webhook, for
//! Flagger's `pre-rollout` hook. Flagger POSTs a JSON payload whose
//! `metadata` (strings) carries `addr` (`HOST:PORT`, required) and optionally
//! `expect-version`; the runner runs [`crate::smoke::run`] against it and
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
use serde::Deserialize;
use tokio::net::TcpListener;

use crate::smoke::{SmokeError, SmokeOptions};

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
    let opts = SmokeOptions {
        addr: addr.clone(),
        expect_version: payload.metadata.get("expect-version").cloned(),
        timeout,
    };
    let mut out = Vec::new();
    let result = crate::smoke::run(&opts, &mut out).await;
    let mut text = String::from_utf8_lossy(&out).into_owned();
    let status = match result {
        Ok(_) => StatusCode::OK,
        Err(e @ SmokeError::Addr(_)) => {
            text.push_str(&format!("{e}\n"));
            StatusCode::BAD_REQUEST
        }
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    tracing::info!(%addr, status = status.as_u16(), report = %text.trim_end(), "smoke webhook");
    (status, text)
}
