//! `switchyard.v1.Detector`: converts proto requests into domain calls.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

use super::edge::{Shadow, inbound_status};
use super::pb;
use crate::detection::{DetectionService, Outcome, RequestContext};
use crate::health::draining;
use crate::telemetry::Trace;

const DETECT: &str = "switchyard.v1.Detector/Detect";
const DETECT_STREAM: &str = "switchyard.v1.Detector/DetectStream";

/// The Detector service.
pub struct DetectorService {
    detection: Arc<DetectionService>,
    /// Cancelled at step 4 of the drain: open DetectStream calls then end with
    /// UNAVAILABLE ("server is draining") so clients reconnect elsewhere.
    streams_stop: CancellationToken,
    /// Tracks the stream tasks so the drain can tell when they are gone.
    streams: TaskTracker,
    /// Metadata names exposed to flag targeting.
    context_headers: Arc<[String]>,
}

impl DetectorService {
    /// Serves `detection`; streams end when `streams_stop` is cancelled.
    pub fn new(
        detection: Arc<DetectionService>,
        streams_stop: CancellationToken,
        streams: TaskTracker,
        context_headers: Vec<String>,
    ) -> Self {
        Self {
            detection,
            streams_stop,
            streams,
            context_headers: context_headers.into(),
        }
    }

    fn context<T>(&self, request: &Request<T>, method: &'static str) -> RequestContext {
        RequestContext {
            shadow: request.extensions().get::<Shadow>().is_some(),
            trace: request
                .extensions()
                .get::<Trace>()
                .cloned()
                .unwrap_or_default(),
            ..context(request.metadata(), method, &self.context_headers)
        }
    }
}

/// The request context from the call's metadata: `x-user-id` and the
/// configured attribute headers (exposed without their `x-` prefix).
pub fn context(metadata: &MetadataMap, method: &'static str, headers: &[String]) -> RequestContext {
    let text = |name: &str| {
        metadata
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    let attributes = headers
        .iter()
        .filter_map(|name| {
            let value = text(name)?;
            Some((name.strip_prefix("x-").unwrap_or(name).to_owned(), value))
        })
        .collect();
    RequestContext {
        user_id: text("x-user-id"),
        method,
        attributes,
        shadow: false,
        trace: Trace::default(),
    }
}

fn reply(outcome: Outcome) -> pb::DetectResponse {
    pb::DetectResponse {
        language: outcome
            .detection
            .language
            .map_or("und", |l| l.code())
            .to_owned(),
        confidence: outcome.detection.confidence,
        engine: outcome.engine.as_str().to_owned(),
        served_by: Some(pb::ServedBy {
            version: outcome.served_by.version,
            pod: outcome.served_by.pod,
            track: outcome.served_by.track.as_str().to_owned(),
        }),
    }
}

type DetectStream = Pin<Box<dyn Stream<Item = Result<pb::DetectResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::detector_server::Detector for DetectorService {
    async fn detect(
        &self,
        request: Request<pb::DetectRequest>,
    ) -> Result<Response<pb::DetectResponse>, Status> {
        let ctx = self.context(&request, DETECT);
        let text = request.into_inner().text;
        let outcome = self.detection.detect(&ctx, text, false).await?;
        Ok(Response::new(reply(outcome)))
    }

    type DetectStreamStream = DetectStream;

    async fn detect_stream(
        &self,
        request: Request<Streaming<pb::DetectRequest>>,
    ) -> Result<Response<Self::DetectStreamStream>, Status> {
        let ctx = self.context(&request, DETECT_STREAM);
        let mut inbound = request.into_inner();
        let detection = Arc::clone(&self.detection);
        let stop = self.streams_stop.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        self.streams.spawn(async move {
            loop {
                let next = tokio::select! {
                    biased;
                    () = stop.cancelled() => {
                        let _ = tx.send(Err(draining())).await;
                        break;
                    }
                    next = inbound.message() => next,
                };
                let result = match next {
                    Ok(Some(req)) => detection
                        .detect(&ctx, req.text, true)
                        .await
                        .map(reply)
                        .map_err(Status::from),
                    Ok(None) => break,
                    Err(status) => Err(inbound_status(status)),
                };
                let failed = result.is_err();
                // A client that stops reading fills the channel and its
                // flow-control window; the drain must still end this task.
                let sent = tokio::select! {
                    biased;
                    () = stop.cancelled() => false,
                    // A send error means the client went away.
                    sent = tx.send(result) => sent.is_ok(),
                };
                if !sent || failed {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
