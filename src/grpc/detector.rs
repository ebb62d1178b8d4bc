//! `switchyard.v1.Detector`: converts proto requests into domain calls.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::metadata::{Ascii, MetadataKey, MetadataMap};
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
    /// Metadata exposed to flag targeting.
    context_headers: ContextHeaders,
}

impl DetectorService {
    /// Serves `detection`; streams end when `streams_stop` is cancelled.
    pub fn new(
        detection: Arc<DetectionService>,
        streams_stop: CancellationToken,
        streams: TaskTracker,
        context_headers: &[String],
    ) -> Self {
        Self {
            detection,
            streams_stop,
            streams,
            context_headers: ContextHeaders::new(context_headers),
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

/// The metadata exposed to flag targeting, parsed once (a lookup by `&str`
/// parses the name on every call): `x-user-id`, the targeting key, and each
/// configured key with the attribute it becomes, without the `x-` prefix.
#[derive(Debug, Clone)]
pub struct ContextHeaders {
    user_id: MetadataKey<Ascii>,
    attributes: Arc<[(MetadataKey<Ascii>, String)]>,
}

impl ContextHeaders {
    /// From the configured names (the configuration has checked them; a
    /// name that is not a metadata key is skipped).
    pub fn new(names: &[String]) -> Self {
        let keys = names
            .iter()
            .filter_map(|name| {
                let key = MetadataKey::from_bytes(name.as_bytes()).ok()?;
                Some((key, name.strip_prefix("x-").unwrap_or(name).to_owned()))
            })
            .collect();
        Self {
            user_id: MetadataKey::from_static("x-user-id"),
            attributes: keys,
        }
    }
}

/// The request context from the call's metadata: `x-user-id` and the
/// configured attribute headers.
pub fn context(
    metadata: &MetadataMap,
    method: &'static str,
    headers: &ContextHeaders,
) -> RequestContext {
    let text = |key: &MetadataKey<Ascii>| {
        metadata
            .get(key)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    let attributes = headers
        .attributes
        .iter()
        .filter_map(|(key, attribute)| Some((attribute.clone(), text(key)?)))
        .collect();
    RequestContext {
        user_id: text(&headers.user_id),
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
                let sent = tokio::select! {
                    biased;
                    // A reply with room goes out, even once the drain has
                    // begun (the loop then ends the stream with
                    // UNAVAILABLE); a send error means the client went away.
                    sent = tx.send(result) => sent.is_ok(),
                    // A client that stops reading fills the channel and its
                    // flow-control window; the drain must still end this
                    // task, with the status if there is room for it.
                    () = stop.cancelled() => {
                        let _ = tx.try_send(Err(draining()));
                        false
                    }
                };
                if !sent || failed {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
