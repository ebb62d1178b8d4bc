//! The domain service: validate, admit, choose the engine, detect.
//!
//! Nothing here knows about protobuf; the gRPC edge converts to and from
//! these types and maps [`DetectError`] to a status in exactly one place.

use std::sync::{Arc, OnceLock};

use tokio::sync::Semaphore;

use crate::configuration::{DetectorSettings, Settings, Track};
use crate::engine::{Detection, EngineKind, Engines};
use crate::release;

/// Who is asking and through which method: the input of release decisions.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    /// The caller (gRPC metadata `x-user-id`), later the flag targeting key.
    pub user_id: Option<String>,
    /// The full gRPC method, e.g. `switchyard.v1.Detector/Detect`.
    pub method: &'static str,
}

/// Which build and track served a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedBy {
    pub version: String,
    pub pod: String,
    pub track: Track,
}

/// A detection and who made it.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub detection: Detection,
    pub engine: EngineKind,
    pub served_by: ServedBy,
}

/// Why a detection was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// The text is empty or only whitespace.
    #[error("text must not be empty")]
    EmptyText,
    /// The text is longer than the limit.
    #[error("text has {chars} characters; the limit is {limit} (max_text_chars)")]
    TextTooLong { chars: usize, limit: usize },
    /// Engines are still loading.
    #[error("engines are still loading; retry shortly")]
    NotReady,
    /// Above the concurrency limit: shed rather than queued.
    #[error("server is at its limit of {limit} concurrent requests; retry with backoff")]
    Overloaded { limit: usize },
    /// The engine task failed (it panicked).
    #[error("engine {engine} failed: {reason}")]
    Engine { engine: EngineKind, reason: String },
}

/// Detects languages for the gRPC edge. Cheap to share behind an `Arc`.
pub struct DetectionService {
    engines: OnceLock<Engines>,
    settings: DetectorSettings,
    served_by: ServedBy,
    permits: Arc<Semaphore>,
    max_concurrent: usize,
}

impl DetectionService {
    /// A service with no engines yet: calls get [`DetectError::NotReady`]
    /// until [`DetectionService::install_engines`].
    pub fn new(settings: &Settings) -> Self {
        let max_concurrent = settings.server.max_concurrent_requests;
        Self {
            engines: OnceLock::new(),
            settings: settings.detector.clone(),
            served_by: ServedBy {
                version: crate::VERSION.to_owned(),
                pod: settings.deployment.pod.clone(),
                track: settings.deployment.track,
            },
            permits: Arc::new(Semaphore::new(max_concurrent)),
            max_concurrent,
        }
    }

    /// Installs the loaded engines (once; later calls are ignored).
    pub fn install_engines(&self, engines: Engines) {
        let _ = self.engines.set(engines);
    }

    /// The engines, once loaded.
    pub fn engines(&self) -> Option<&Engines> {
        self.engines.get()
    }

    /// Validates `text`, admits the call or sheds it, and detects with the
    /// engine [`release::choose_engine`] picks. Unary calls shed when the
    /// limit is reached (`wait_for_permit = false`); a stream's next message
    /// waits for a permit, since a stream is already one slot of work.
    pub async fn detect(
        &self,
        ctx: &RequestContext,
        text: String,
        wait_for_permit: bool,
    ) -> Result<Outcome, DetectError> {
        self.validate(&text)?;
        let engines = self.engines.get().ok_or(DetectError::NotReady)?;
        let _permit = if wait_for_permit {
            Arc::clone(&self.permits)
                .acquire_owned()
                .await
                .map_err(|_| DetectError::Overloaded {
                    limit: self.max_concurrent,
                })?
        } else {
            Arc::clone(&self.permits)
                .try_acquire_owned()
                .map_err(|_| DetectError::Overloaded {
                    limit: self.max_concurrent,
                })?
        };
        let kind = release::choose_engine(ctx, &self.settings);
        let engine = Arc::clone(engines.get(kind));
        // CPU-bound work goes to the blocking pool so the runtime keeps
        // answering health checks. If the caller's deadline passes, this
        // future is dropped and no further work starts for the call; the
        // detection already running is bounded by max_text_chars.
        let detection = tokio::task::spawn_blocking(move || engine.detect(&text))
            .await
            .map_err(|e| DetectError::Engine {
                engine: kind,
                reason: e.to_string(),
            })?;
        Ok(Outcome {
            detection,
            engine: kind,
            served_by: self.served_by.clone(),
        })
    }

    fn validate(&self, text: &str) -> Result<(), DetectError> {
        if text.trim().is_empty() {
            return Err(DetectError::EmptyText);
        }
        let limit = self.settings.max_text_chars;
        // Count only as far as needed: a huge text is rejected without a full scan.
        let chars = text.chars().take(limit + 1).count();
        if chars > limit {
            return Err(DetectError::TextTooLong {
                chars: text.chars().count(),
                limit,
            });
        }
        Ok(())
    }
}
