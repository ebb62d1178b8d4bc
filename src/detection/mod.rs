//! The domain service: decide, validate, admit, run.
//!
//! Nothing here knows about protobuf; the gRPC edge converts to and from
//! these types and maps [`DetectError`] to a status in exactly one place.
//! Nothing here writes a metric, a log field or a server-span attribute
//! either: [`record::Recorder`] owns those and is told what happened. The
//! two child spans (`flags.evaluate`, `engine.detect`) are opened here,
//! around the work they time.

mod record;

pub use record::Recorder;

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use opentelemetry::KeyValue;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use serde_json::{Map, Value};

use crate::configuration::{DetectorSettings, Settings, Track};
use crate::dark_launch::DarkLauncher;
use crate::engine::{Detection, EngineError, EngineKind, Engines};
use crate::execution::{Executor, RunError};
use crate::fault::{FaultInjector, FaultSpec, Injected};
use crate::flags::store::FlagStore;
use crate::flags::{self, FlagSet, Reason};
use crate::release;
use crate::telemetry::Trace;

/// Who is asking and through which method: the input of release decisions.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    /// The caller (gRPC metadata `x-user-id`): the flag targeting key.
    pub user_id: Option<String>,
    /// The full gRPC method, e.g. `switchyard.v1.Detector/Detect`.
    pub method: &'static str,
    /// Metadata exposed to targeting rules, names without the `x-` prefix
    /// (`user-group`, `client-version`, `country` by default).
    pub attributes: Vec<(String, String)>,
    /// Shadow traffic (a mirrored copy, or any request on the shadow
    /// track), as the gRPC edge decided: counted apart from real traffic.
    pub shadow: bool,
    /// The call's server span (children and attributes go there).
    pub trace: Trace,
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
    /// The `detector-engine` variant and why it was chosen.
    pub variant: Option<String>,
    pub reason: Reason,
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
    /// The `fault-injection` flag failed this call on purpose.
    #[error(transparent)]
    Injected(#[from] Injected),
}

/// Detects languages for the gRPC edge. Cheap to share behind an `Arc`.
pub struct DetectionService {
    engines: OnceLock<Engines>,
    settings: DetectorSettings,
    served_by: ServedBy,
    flags: Arc<FlagStore>,
    executor: Arc<Executor>,
    dark: Arc<DarkLauncher>,
    /// The `fault-injection` flag's faults.
    faults: FaultInjector,
    record: Recorder,
}

/// A release decision for one call, and the fault to inject into it.
struct Decided<'a> {
    release: release::Decision<'a>,
    fault: Option<FaultSpec>,
}

impl DetectionService {
    /// A service with no engines yet: calls get [`DetectError::NotReady`]
    /// until [`DetectionService::warm_up_and_install`]. Reads flags from
    /// `flags`, runs engines on `executor` and candidates on `dark`; its
    /// own series (and the fault injector's) go on `own`, the
    /// `switchyard_` sub-registry.
    pub fn new(
        settings: &Settings,
        flags: Arc<FlagStore>,
        executor: Arc<Executor>,
        dark: Arc<DarkLauncher>,
        own: &mut Registry,
    ) -> Self {
        Self {
            engines: OnceLock::new(),
            settings: settings.detector.clone(),
            served_by: ServedBy {
                version: settings.deployment.version.clone(),
                pod: settings.deployment.pod.clone(),
                track: settings.deployment.track,
            },
            flags,
            executor,
            dark,
            faults: FaultInjector::new(own),
            record: Recorder::new(own),
        }
    }

    /// Flag evaluations that failed and served the code default (the
    /// `switchyard_flag_errors_total` counter; GetInfo reads it too).
    pub fn flag_errors(&self) -> Counter {
        self.record.flag_errors()
    }

    /// The flag evaluation context for a request: `targetingKey` from
    /// `x-user-id`, the configured metadata attributes, and this replica's
    /// `track`, `version`, `pod`, plus the gRPC `method`.
    pub fn flag_context(&self, ctx: &RequestContext) -> flags::Context {
        let mut attributes = Map::new();
        for (name, value) in &ctx.attributes {
            attributes.insert(name.clone(), Value::String(value.clone()));
        }
        let identity = self
            .replica_attributes()
            .into_iter()
            .chain([("method", ctx.method)]);
        for (name, value) in identity {
            attributes.insert(name.to_owned(), Value::String(value.to_owned()));
        }
        flags::Context::new(ctx.user_id.as_deref(), attributes)
    }

    /// The attributes this replica adds to every call's flag context:
    /// `track`, `version` and `pod`.
    pub fn replica_attributes(&self) -> [(&'static str, &str); 3] {
        [
            ("track", self.served_by.track.as_str()),
            ("version", self.served_by.version.as_str()),
            ("pod", self.served_by.pod.as_str()),
        ]
    }

    /// A context a caller gives (OFREP, `Admin/EvaluateFlags`) completed
    /// with this replica's attributes where it does not set them (a Detect
    /// call's context always has them; a caller may set `track` or
    /// `version` to ask about another release, and must name `method` for
    /// rules on it). So "what would user X get on this pod?" gets what a
    /// Detect call with the same attributes would.
    pub fn on_this_replica(&self, ctx: flags::Context) -> flags::Context {
        ctx.with_defaults(self.replica_attributes())
    }

    /// Starts the engine pool and warms every engine up on each of its
    /// threads (what readiness waits for), then installs the engines (once;
    /// later calls are ignored).
    pub async fn warm_up_and_install(&self, mut engines: Engines) -> Result<(), EngineError> {
        self.executor.start(&mut engines).await?;
        let _ = self.engines.set(engines);
        Ok(())
    }

    /// The engines, once loaded.
    pub fn engines(&self) -> Option<&Engines> {
        self.engines.get()
    }

    /// Detects `text` with the engine the flags pick, in four steps:
    /// decide (first, because the input limit is a live flag), validate,
    /// admit, run. Unary calls shed when the limit is reached
    /// (`wait_for_permit = false`); a stream's next message waits for a
    /// permit, since a stream is already one slot of work.
    pub async fn detect(
        &self,
        ctx: &RequestContext,
        text: String,
        wait_for_permit: bool,
    ) -> Result<Outcome, DetectError> {
        // One flag set for the whole request: never a mix of two.
        let flag_set = self.flags.current();
        let Decided { release, fault } = self.decide(&flag_set, ctx);
        // A rehearsed failure happens where a real one would: before the
        // work, so an injected abort costs no engine time.
        self.faults.apply(fault.as_ref()).await?;
        let chars = validate(&text, release.max_text_chars)?;
        let engines = self.engines.get().ok_or(DetectError::NotReady)?;
        let kind = release.engine;
        let permit = self
            .executor
            .admit(wait_for_permit)
            .await
            .map_err(|e| run_error(kind, e))?;
        // The dark-launch candidate needs the text too: share it.
        let shared: Option<Arc<str>> = release.dark_launch.map(|_| Arc::from(text.as_str()));
        let started = Instant::now();
        let span = ctx.trace.child("engine.detect", || {
            vec![KeyValue::new("engine", kind.as_str())]
        });
        // If the caller's deadline passes while the job waits for a pool
        // thread, this future is dropped and the job never runs.
        let detection = self
            .executor
            .run(engines.get(kind), text, chars, permit, span)
            .await
            .map_err(|e| run_error(kind, e))?;
        let served_latency = started.elapsed();
        self.record
            .served(kind, &detection, ctx.shadow, served_latency);
        if let (Some(candidate), Some(text)) = (release.dark_launch, shared) {
            self.dark.launch(
                Arc::clone(engines.get(candidate)),
                text,
                detection,
                served_latency,
                &ctx.trace,
            );
        }
        Ok(Outcome {
            detection,
            engine: kind,
            variant: release.engine_variant.map(str::to_owned),
            reason: release.engine_reason,
            served_by: self.served_by.clone(),
        })
    }

    /// The release decision and the fault to inject for this request from
    /// `flag_set`. The evaluation context is built only when a flag has a
    /// targeting rule that could read it.
    fn decide<'a>(&self, flag_set: &'a Arc<FlagSet>, ctx: &RequestContext) -> Decided<'a> {
        let (release, (fault, fault_evaluation)) = {
            let _span = ctx.trace.child("flags.evaluate", || {
                vec![KeyValue::new("revision", flag_set.revision.clone())]
            });
            let flag_ctx = if flag_set.uses_context() {
                self.flag_context(ctx)
            } else {
                flags::Context::default()
            };
            (
                release::decide(flag_set, &flag_ctx, &self.settings),
                release::fault(flag_set, &flag_ctx),
            )
        };
        self.record
            .decided(flag_set, &release, fault_evaluation, &ctx.trace);
        Decided { release, fault }
    }
}

/// The domain error for an execution error.
fn run_error(engine: EngineKind, error: RunError) -> DetectError {
    match error {
        RunError::Overloaded { limit } => DetectError::Overloaded { limit },
        RunError::Failed(reason) => DetectError::Engine { engine, reason },
    }
}

/// Empty text and text over the (live) limit are refused; returns the
/// length in characters.
fn validate(text: &str, limit: usize) -> Result<usize, DetectError> {
    if text.trim().is_empty() {
        return Err(DetectError::EmptyText);
    }
    let chars = text.chars().count();
    if chars > limit {
        return Err(DetectError::TextTooLong { chars, limit });
    }
    Ok(chars)
}
