//! What a detection leaves behind: its metrics, its log fields and its span
//! attributes. [`super::DetectionService`] runs the domain steps and tells
//! the [`Recorder`] what happened; the recorder owns every series it bumps,
//! registered on the sub-registry it was given:
//!
//! - `switchyard_detections_total{engine,language,shadow}`;
//! - `switchyard_engine_seconds{engine}` (served detections);
//! - `switchyard_flag_evaluations_total{flag,variant,reason}`;
//! - `switchyard_flag_errors_total`: evaluations that failed and served the
//!   code default (a broken or mistyped flag). Not the same number as
//!   `reason="ERROR"` evaluations: an optional flag that is not defined
//!   (`dark-launch-engine`, `max-text-chars`) evaluates to ERROR but is no
//!   error, and a variant of the wrong type is an error whatever the reason.
//!
//! Every series is resolved once (or on first use) and kept in a slot, so a
//! call neither hashes a label set nor allocates one.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use opentelemetry::KeyValue;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::engine::{Detection, EngineKind, Language};
use crate::flags::{FlagSet, Reason};
use crate::release;
use crate::telemetry::Trace;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DetectionLabels {
    engine: &'static str,
    language: &'static str,
    shadow: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EngineLabels {
    engine: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FlagLabels {
    flag: &'static str,
    variant: String,
    reason: &'static str,
}

/// Records detections (see the module documentation).
pub struct Recorder {
    detections_family: Family<DetectionLabels, Counter>,
    evaluations_family: Family<FlagLabels, Counter>,
    flag_errors: Counter,
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

impl Recorder {
    /// Registers the detection series on `own` (the `switchyard_`
    /// sub-registry).
    pub fn new(own: &mut Registry) -> Self {
        let detections_family = Family::<DetectionLabels, Counter>::default();
        let engine_family =
            Family::<EngineLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                crate::metrics::engine_histogram,
            );
        let evaluations_family = Family::<FlagLabels, Counter>::default();
        let flag_errors = Counter::default();
        own.register(
            "detections",
            "Detections served, by engine and detected language",
            detections_family.clone(),
        );
        own.register(
            "engine_seconds",
            "Time an engine took to detect a served request, in seconds",
            engine_family.clone(),
        );
        own.register(
            "flag_evaluations",
            "Flag evaluations, by flag, variant and reason",
            evaluations_family.clone(),
        );
        own.register(
            "flag_errors",
            "Flag evaluations that failed and served the code default",
            flag_errors.clone(),
        );
        Self {
            engine_seconds: EngineKind::ALL.map(|kind| {
                engine_family.get_or_create_owned(&EngineLabels {
                    engine: kind.as_str(),
                })
            }),
            detections: Default::default(),
            flags: ArcSwapOption::empty(),
            detections_family,
            evaluations_family,
            flag_errors,
        }
    }

    /// The `switchyard_flag_errors_total` counter.
    pub fn flag_errors(&self) -> Counter {
        self.flag_errors.clone()
    }

    /// A release decision was made: its evaluations are counted, its
    /// engine and variant go on the server span and the request's log
    /// lines, its flag errors are counted and logged (debug).
    pub fn decided(
        &self,
        set: &Arc<FlagSet>,
        decision: &release::Decision<'_>,
        fault: Option<release::Evaluation<'_>>,
        trace: &Trace,
    ) {
        self.count_evaluations(set, &decision.evaluations);
        // Only flag sets that define `fault-injection` get here: their
        // series is looked up by label (a rehearsal, not the hot path).
        if let Some((flag, variant, reason)) = fault {
            self.evaluations_family
                .get_or_create(&FlagLabels {
                    flag,
                    variant: variant.unwrap_or_default().to_owned(),
                    reason: reason.as_str(),
                })
                .inc();
        }
        let log_span = tracing::Span::current();
        log_span.record("engine", decision.engine.as_str());
        trace.set_attribute(|| KeyValue::new("engine", decision.engine.as_str()));
        if let Some(variant) = decision.engine_variant {
            log_span.record("variant", variant);
            trace.set_attribute(|| KeyValue::new("variant", variant.to_owned()));
        }
        for (flag, error) in &decision.errors {
            self.flag_errors.inc();
            tracing::debug!(
                flag,
                error = error.as_str(),
                "flag error: code default served"
            );
        }
    }

    /// A detection was served by `kind` in `latency`.
    pub fn served(&self, kind: EngineKind, detection: &Detection, shadow: bool, latency: Duration) {
        self.engine_seconds[kind.index()].observe(latency.as_secs_f64());
        self.detection(kind, detection, shadow).inc();
    }

    fn detection(&self, kind: EngineKind, detection: &Detection, shadow: bool) -> &Counter {
        let language = detection
            .language
            .and_then(|l| Language::ALL.iter().position(|x| *x == l))
            .unwrap_or(Language::ALL.len());
        self.detections[kind.index()][language][usize::from(shadow)].get_or_init(|| {
            self.detections_family
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
                    self.evaluations_family.get_or_create_owned(&FlagLabels {
                        flag,
                        variant: variant.unwrap_or_default().to_owned(),
                        reason: reason.as_str(),
                    })
                })
                .inc();
        }
    }
}
