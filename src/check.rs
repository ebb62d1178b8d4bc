//! `switchyard check`: a health-probe client for exec probes on old clusters
//! and Docker HEALTHCHECK. Exit 0 only when the service is SERVING.

use std::time::Duration;

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Why a probe could not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The address or timeout is unusable (bad usage, exit 2).
    #[error("invalid probe: {0}")]
    Invalid(String),
    /// No connection within the timeout.
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    /// The server answered with an error status (e.g. NOT_FOUND).
    #[error("health check failed: {code:?}: {message}")]
    Rpc { code: tonic::Code, message: String },
}

/// Asks `addr` for the status of `service`, within `timeout`.
pub async fn check(
    addr: &str,
    service: &str,
    timeout: Duration,
) -> Result<ServingStatus, CheckError> {
    // The same `HOST:PORT` parser as `smoke` and `watch`: one address form
    // for every tool.
    let endpoint =
        crate::client::endpoint(addr, timeout).map_err(|e| CheckError::Invalid(e.to_string()))?;
    let channel = endpoint.connect().await.map_err(|e| CheckError::Connect {
        addr: addr.to_owned(),
        reason: std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string()),
    })?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .map_err(|s| CheckError::Rpc {
            code: s.code(),
            message: s.message().to_owned(),
        })?;
    Ok(ServingStatus::try_from(response.into_inner().status).unwrap_or(ServingStatus::Unknown))
}
