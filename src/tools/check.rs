//! `switchyard check`: a health-probe client for exec probes on old clusters
//! and Docker HEALTHCHECK. Exit 0 only when the service is SERVING.

use std::time::Duration;

use clap::Args;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use super::client::{Target, connect_error};
use crate::exit::{Exit, fail};

/// `switchyard check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    // This doc comment is the flag's `--help` text, where [IPV6] is literal.
    #[allow(rustdoc::broken_intra_doc_links)]
    /// Server address: HOST:PORT or [IPV6]:PORT, no scheme.
    #[arg(long, default_value = "127.0.0.1:50051", value_name = "HOST:PORT")]
    pub addr: String,
    /// Health service to check ("" is the overall status).
    #[arg(long, default_value = "readiness", value_name = "NAME")]
    pub service: String,
    /// Give up after this many seconds.
    #[arg(
        long,
        default_value_t = 2.0,
        value_name = "SECONDS",
        allow_hyphen_values = true
    )]
    pub timeout: f64,
}

/// Why a probe could not get an answer (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// No connection within the timeout.
    #[error("cannot connect to {target}: {reason}")]
    Connect { target: Target, reason: String },
    /// The server answered with an error status (e.g. NOT_FOUND).
    #[error("health check failed: {code:?}: {message}")]
    Rpc { code: tonic::Code, message: String },
}

/// Runs `switchyard check`: prints `"SERVICE": STATUS`; 0 when SERVING, 1
/// otherwise or without an answer, 2 for bad usage, 130 at Ctrl-C.
pub fn run(args: &CheckArgs) -> Exit {
    let timeout = match super::seconds("--timeout", args.timeout) {
        Ok(timeout) => timeout,
        Err(e) => return fail(Exit::Usage, &e),
    };
    let target: Target = match args.addr.parse() {
        Ok(target) => target,
        Err(e) => return fail(Exit::Usage, &e),
    };
    super::run_interruptible(async {
        match check(&target, &args.service, timeout).await {
            Ok(status) => {
                println!("{:?}: {}", args.service, status.as_str_name());
                Exit::ok_if(status == ServingStatus::Serving)
            }
            Err(e) => fail(Exit::Failed, &e),
        }
    })
}

/// Asks `target` for the status of `service`, within `timeout`.
pub async fn check(
    target: &Target,
    service: &str,
    timeout: Duration,
) -> Result<ServingStatus, CheckError> {
    let channel = target
        .endpoint(timeout)
        .connect()
        .await
        .map_err(|e| CheckError::Connect {
            target: target.clone(),
            reason: connect_error(&e),
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
