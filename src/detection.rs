//! The domain service: validate, admit, choose the engine, detect.
//!
//! Nothing here knows about protobuf; the gRPC edge converts to and from
//! these types and maps [`DetectError`] to a status in exactly one place.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use opentelemetry::KeyValue;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use serde_json::{Map, Value};

use crate::configuration::{DetectorSettings, Settings, Track};
use crate::dark_launch::DarkLauncher;
use crate::engine::{Detection, EngineError, EngineKind, Engines, Language};
use crate::execution::{Executor, RunError};
use crate::fault::{FaultInjector, FaultSpec, Injected};
use crate::flags::store::FlagStore;
use crate::flags::{self, FlagSet, Reason};
use crate::metrics::{DetectionLabels, EngineLabels, FlagLabels, Metrics};
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
    executor: Executor,
    flags: Arc<FlagStore>,
    dark: DarkLauncher,
    /// Flag evaluations that failed and served the code default.
    flag_errors: AtomicU64,
    metrics: Arc<Metrics>,
    series: CallSeries,
    /// The `fault-injection` flag's faults.
    faults: FaultInjector,
}

impl DetectionService {
    /// A service with no engines yet: calls get [`DetectError::NotReady`]
    /// until [`DetectionService::warm_up_and_install`].
    pub fn new(settings: &Settings, flags: Arc<FlagStore>, metrics: Arc<Metrics>) -> Self {
        Self {
            engines: OnceLock::new(),
            settings: settings.detector.clone(),
            served_by: ServedBy {
                version: settings.deployment.version.clone(),
                pod: settings.deployment.pod.clone(),
                track: settings.deployment.track,
            },
            executor: Executor::new(
                settings.server.max_concurrent_requests,
                settings.detector.engine_threads(),
                settings.detector.inline_max_chars,
            ),
            flags,
            dark: DarkLauncher::new(
                settings.dark_launch.max_in_flight,
                Duration::from_secs_f64(settings.dark_launch.timeout),
                metrics.dark_launch_seconds.clone(),
            ),
            flag_errors: AtomicU64::new(0),
            series: CallSeries::new(&metrics),
            faults: FaultInjector::new(&metrics),
            metrics,
        }
    }

    /// Flag evaluations that failed (and served the code default) so far.
    pub fn flag_errors(&self) -> u64 {
        self.flag_errors.load(Ordering::Relaxed)
    }

    /// The flag store.
    pub fn flags(&self) -> &Arc<FlagStore> {
        &self.flags
    }

    /// The dark launcher (for its counters).
    pub fn dark_launcher(&self) -> &DarkLauncher {
        &self.dark
    }

    /// The flag evaluation context for a request: `targetingKey` from
    /// `x-user-id`, the configured metadata attributes, and this replica's
    /// `track`, `version`, `pod`, plus the gRPC `method`.
    pub fn flag_context(&self, ctx: &RequestContext) -> flags::Context {
        let mut attributes = Map::new();
        for (name, value) in &ctx.attributes {
            attributes.insert(name.clone(), Value::String(value.clone()));
        }
        let identity = [
            ("track", self.served_by.track.as_str()),
            ("version", self.served_by.version.as_str()),
            ("pod", self.served_by.pod.as_str()),
            ("method", ctx.method),
        ];
        for (name, value) in identity {
            attributes.insert(name.to_owned(), Value::String(value.to_owned()));
        }
        flags::Context::new(ctx.user_id.as_deref(), attributes)
    }

    /// Starts the engine pool and warms every engine up on each of its
    /// threads (what readiness waits for), then installs the engines (once;
    /// later calls are ignored).
    pub async fn warm_up_and_install(&self, mut engines: Engines) -> Result<(), EngineError> {
        self.executor.start(&mut engines).await?;
        let _ = self.engines.set(engines);
        Ok(())
    }

    /// Where engine work runs, and its USE counters.
    pub fn executor(&self) -> &Executor {
        &self.executor
    }

    /// The engines, once loaded.
    pub fn engines(&self) -> Option<&Engines> {
        self.engines.get()
    }

    /// Validates `text`, admits the call or sheds it, and detects with the
    /// engine [`release::decide`] picks. Unary calls shed when the
    /// limit is reached (`wait_for_permit = false`); a stream's next message
    /// waits for a permit, since a stream is already one slot of work.
    ///
    /// The stages, each a method: count the request, decide from the flags,
    /// validate, admit, run (inline or on the engine pool, see
    /// [`crate::execution`]), record, start the dark launch.
    pub async fn detect(
        &self,
        ctx: &RequestContext,
        text: String,
        wait_for_permit: bool,
    ) -> Result<Outcome, DetectError> {
        // One flag set for the whole request: never a mix of two.
        let flag_set = self.flags.current();
        let (decision, fault) = self.decide(&flag_set, ctx);
        // A rehearsed failure happens where a real one would: before the
        // work, so an injected abort costs no engine time.
        self.faults.apply(fault.as_ref()).await?;
        let chars = validate(&text, decision.max_text_chars)?;
        let engines = self.engines.get().ok_or(DetectError::NotReady)?;
        let permit = self
            .executor
            .admit(wait_for_permit)
            .await
            .map_err(|e| self.run_error(decision.engine, e))?;
        let kind = decision.engine;
        let engine = engines.get(kind);
        // The dark-launch candidate needs the text too: share it.
        let shared: Option<Arc<str>> = decision.dark_launch.map(|_| Arc::from(text.as_str()));
        let started = std::time::Instant::now();
        let span = ctx.trace.child("engine.detect", || {
            vec![KeyValue::new("engine", kind.as_str())]
        });
        // If the caller's deadline passes while the job waits for a pool
        // thread, this future is dropped and the job never runs.
        let detection = self
            .executor
            .run(engine, text, chars, permit, span)
            .await
            .map_err(|e| self.run_error(kind, e))?;
        let served_latency = started.elapsed();
        self.record(kind, &detection, ctx.shadow, served_latency);
        if let (Some(candidate), Some(text)) = (decision.dark_launch, shared) {
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
            variant: decision.engine_variant.map(str::to_owned),
            reason: decision.engine_reason,
            served_by: self.served_by.clone(),
        })
    }

    /// The release decision and the fault to inject for this request from
    /// `flag_set`, counted and put on the span and log line. The evaluation
    /// context is built only when a flag has a targeting rule that could
    /// read it.
    fn decide<'a>(
        &self,
        flag_set: &'a Arc<FlagSet>,
        ctx: &RequestContext,
    ) -> (release::Decision<'a>, Option<FaultSpec>) {
        let (decision, (fault, fault_evaluation)) = {
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
        self.series
            .count_evaluations(flag_set, &decision.evaluations);
        // Only flag sets that define `fault-injection` get here: their
        // series is looked up by label (a rehearsal, not the hot path).
        if let Some((flag, variant, reason)) = fault_evaluation {
            self.metrics
                .flag_evaluations
                .get_or_create(&FlagLabels {
                    flag,
                    variant: variant.unwrap_or_default().to_owned(),
                    reason: reason.as_str(),
                })
                .inc();
        }
        // On the server span, and on the request's log lines.
        let log_span = tracing::Span::current();
        log_span.record("engine", decision.engine.as_str());
        ctx.trace
            .set_attribute(|| KeyValue::new("engine", decision.engine.as_str()));
        if let Some(variant) = decision.engine_variant {
            log_span.record("variant", variant);
            ctx.trace
                .set_attribute(|| KeyValue::new("variant", variant.to_owned()));
        }
        for (flag, error) in &decision.errors {
            self.flag_errors.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                flag,
                error = error.as_str(),
                "flag error: code default served"
            );
        }
        (decision, fault)
    }

    /// The domain error for an execution error; a shed call is counted.
    fn run_error(&self, engine: EngineKind, error: RunError) -> DetectError {
        match error {
            RunError::Overloaded { limit } => {
                self.metrics.shed.inc();
                DetectError::Overloaded { limit }
            }
            RunError::Failed(reason) => DetectError::Engine { engine, reason },
        }
    }

    /// Records a served detection: engine latency and the detection count.
    fn record(&self, kind: EngineKind, detection: &Detection, shadow: bool, latency: Duration) {
        self.series.engine_seconds[kind.index()].observe(latency.as_secs_f64());
        self.series.detection(kind, detection, shadow).inc();
    }
}

/// The series a detection bumps, resolved once (or on first use) so a call
/// neither hashes a label set nor allocates one.
struct CallSeries {
    metrics: Arc<Metrics>,
    /// `switchyard_engine_seconds` by engine.
    engine_seconds: [Histogram; 2],
    /// `switchyard_detections_total` by engine, language (the last slot is
    /// `und`) and shadow.
    detections: [[[OnceLock<Counter>; 2]; 13]; 2],
    /// `switchyard_flag_evaluations_total` for the flag set being served.
    flags: ArcSwapOption<FlagSeries>,
}

/// `switchyard_flag_evaluations_total` counters for one flag set, by the
/// release flag (in [`release::Decision::evaluations`] order), the variant's
/// index in the flag (the last slot: no variant) and the reason.
struct FlagSeries {
    set: Arc<FlagSet>,
    counters: [Vec<[OnceLock<Counter>; 5]>; 3],
}

fn reason_index(reason: Reason) -> usize {
    match reason {
        Reason::Static => 0,
        Reason::TargetingMatch => 1,
        Reason::Default => 2,
        Reason::Disabled => 3,
        Reason::Error => 4,
    }
}

impl CallSeries {
    fn new(metrics: &Arc<Metrics>) -> Self {
        Self {
            engine_seconds: EngineKind::ALL.map(|kind| {
                metrics.engine_seconds.get_or_create_owned(&EngineLabels {
                    engine: kind.as_str(),
                })
            }),
            detections: Default::default(),
            flags: ArcSwapOption::empty(),
            metrics: Arc::clone(metrics),
        }
    }

    fn detection(&self, kind: EngineKind, detection: &Detection, shadow: bool) -> &Counter {
        let language = detection
            .language
            .and_then(|l| Language::ALL.iter().position(|x| *x == l))
            .unwrap_or(Language::ALL.len());
        self.detections[kind.index()][language][usize::from(shadow)].get_or_init(|| {
            self.metrics
                .detections
                .get_or_create_owned(&DetectionLabels {
                    engine: kind.as_str(),
                    language: detection.language.map_or("und", |l| l.code()),
                    shadow,
                })
        })
    }

    fn count_evaluations(&self, set: &Arc<FlagSet>, evaluations: &[release::Evaluation<'_>; 3]) {
        let current = self.flags.load();
        let series = match current.as_ref() {
            Some(series) if Arc::ptr_eq(&series.set, set) => Arc::clone(series),
            // A new flag set (rare): new slots, sized by its variants.
            _ => {
                let fresh = Arc::new(FlagSeries {
                    set: Arc::clone(set),
                    counters: evaluations.each_ref().map(|(flag, _, _)| {
                        let variants = set.flag(flag).map_or(0, |f| f.variants.len());
                        (0..=variants).map(|_| Default::default()).collect()
                    }),
                });
                self.flags.store(Some(Arc::clone(&fresh)));
                fresh
            }
        };
        for (i, (flag, variant, reason)) in evaluations.iter().enumerate() {
            let slots = &series.counters[i];
            let slot = variant
                .and_then(|v| {
                    set.flag(flag)
                        .and_then(|f| f.variants.iter().position(|(name, _)| name == v))
                })
                .unwrap_or(slots.len() - 1);
            let Some(by_reason) = slots.get(slot) else {
                continue;
            };
            by_reason[reason_index(*reason)]
                .get_or_init(|| {
                    self.metrics
                        .flag_evaluations
                        .get_or_create_owned(&FlagLabels {
                            flag,
                            variant: variant.unwrap_or_default().to_owned(),
                            reason: reason.as_str(),
                        })
                })
                .inc();
        }
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
