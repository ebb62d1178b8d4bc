//! The plain-HTTP admin listener, for tooling without gRPC: `GET /healthz`
//! (liveness) and `GET /readyz` (readiness) answer 200 or 503; `GET
//! /metrics` is the Prometheus scrape endpoint; `POST /ofrep/v1/...` is
//! OFREP flag evaluation (see [`crate::ofrep`]).

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::flags::store::FlagStore;
use crate::health::HealthState;
use crate::metrics::{self, Metrics};

/// Serves the admin endpoints on `listener` until `shutdown` completes. It
/// keeps answering during the drain (readyz 503, healthz 200).
pub async fn serve(
    listener: TcpListener,
    health: HealthState,
    metrics: Arc<Metrics>,
    flags: Arc<FlagStore>,
    replica: Arc<[(String, String)]>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(health)
        .merge(
            Router::new()
                .route("/metrics", get(scrape))
                .with_state(metrics),
        )
        .merge(crate::ofrep::router(flags, replica));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn healthz(State(health): State<HealthState>) -> (StatusCode, &'static str) {
    if health.is_live() {
        (StatusCode::OK, "live\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not live: runtime stalled\n",
        )
    }
}

async fn readyz(State(health): State<HealthState>) -> (StatusCode, &'static str) {
    if health.is_ready() {
        (StatusCode::OK, "ready\n")
    } else if health.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: draining\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: loading\n")
    }
}

async fn scrape(
    State(metrics): State<Arc<Metrics>>,
) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    (
        [(axum::http::header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        metrics.encode(),
    )
}
