//! The peer for `scripts/bench peer`: a bare tonic server that answers
//! `switchyard.v1.Detector/Detect` with the same engine Switchyard uses
//! (same crate version, same 12-language set), run inline on the request
//! task, and nothing else: no health service, flags, metrics, spans, logs,
//! limits or pool. The engine is warmed up before the server listens, like
//! Switchyard's before readiness. Same runtime and TCP_NODELAY as
//! Switchyard, and the same allocator (jemalloc).
//!
//! Run: `cargo run --release --example bare-detect -- 127.0.0.1:PORT whatlang|lingua`
//! (port 0 picks one; the bound address is printed on stdout).

use std::net::SocketAddr;
use std::sync::Arc;

use switchyard::engine::{Engine, EngineKind, LinguaEngine, WhatlangEngine};
use switchyard::grpc::pb;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};

/// The same allocator as the `switchyard` binary, so the comparison
/// measures the layers, not the allocator.
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

struct Bare {
    engine: Arc<dyn Engine>,
}

type Replies =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::DetectResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::detector_server::Detector for Bare {
    async fn detect(
        &self,
        request: Request<pb::DetectRequest>,
    ) -> Result<Response<pb::DetectResponse>, Status> {
        let text = request.into_inner().text;
        let detection = self.engine.detect(&text);
        Ok(Response::new(pb::DetectResponse {
            language: detection.language.map_or("und", |l| l.code()).to_owned(),
            confidence: detection.confidence,
            engine: self.engine.kind().as_str().to_owned(),
            served_by: None,
        }))
    }

    type DetectStreamStream = Replies;

    async fn detect_stream(
        &self,
        _request: Request<Streaming<pb::DetectRequest>>,
    ) -> Result<Response<Self::DetectStreamStream>, Status> {
        Err(Status::unimplemented("the bare peer serves Detect only"))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:0".to_owned())
        .parse()?;
    let kind: EngineKind = args
        .next()
        .unwrap_or_else(|| "whatlang".to_owned())
        .parse()?;
    let engine: Arc<dyn Engine> = match kind {
        EngineKind::Whatlang => Arc::new(WhatlangEngine::new()),
        EngineKind::Lingua => Arc::new(LinguaEngine::load()),
    };
    engine.warm_up();
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening {}", listener.local_addr()?);
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .add_service(pb::detector_server::DetectorServer::new(Bare { engine }))
        .serve_with_incoming_shutdown(incoming, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
