//! The baseline for `scripts/bench overhead`: a bare tonic server that
//! serves only `grpc.health.v1.Health` (tonic-health, `""` SERVING), with
//! the same transport settings as Switchyard (multi-thread runtime,
//! TCP_NODELAY, jemalloc) and nothing else: no edge layer, metrics, spans or
//! logs.
//!
//! Run: `cargo run --release --example bare-health -- 127.0.0.1:PORT`
//! (port 0 picks one; the bound address is printed on stdout).

use std::net::SocketAddr;

use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

/// The same allocator as the `switchyard` binary, so the comparison
/// measures the layers, not the allocator.
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".to_owned())
        .parse()?;
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening {}", listener.local_addr()?);
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .add_service(health)
        .serve_with_incoming_shutdown(incoming, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
