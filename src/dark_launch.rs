//! Dark launches: a candidate engine answers the same text off the request
//! path and its answer is compared with the served one (like GitHub's
//! Scientist, but the reply never waits for the candidate).
//!
//! Bounded on every side: a semaphore caps candidates in flight (when it is
//! full the candidate is skipped and counted, never queued), each candidate
//! has a timeout, and a panicking candidate is caught by the blocking pool.
//! Each candidate runs in its own trace, linked to the request's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry::trace::TraceContextExt;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::Semaphore;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::engine::{Detection, Engine};
use crate::metrics::EngineLabels;

/// Outcome counters (GetInfo; `switchyard_dark_launch_total` at scrape time).
#[derive(Debug, Default)]
pub struct DarkLaunchStats {
    matched: AtomicU64,
    mismatched: AtomicU64,
    skipped: AtomicU64,
    timed_out: AtomicU64,
    errors: AtomicU64,
    /// Sum of candidate latencies in microseconds (for a mean).
    candidate_micros: AtomicU64,
    /// Sum of the served engine's latencies in microseconds, for the same
    /// requests (compared ones), so the two means are comparable.
    served_micros: AtomicU64,
    last_mismatch_log: Mutex<Option<Instant>>,
}

/// A snapshot of [`DarkLaunchStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DarkLaunchCounts {
    pub matched: u64,
    pub mismatched: u64,
    pub skipped: u64,
    pub timed_out: u64,
    pub errors: u64,
    pub candidate_micros: u64,
    pub served_micros: u64,
}

impl DarkLaunchStats {
    /// The counters now.
    pub fn counts(&self) -> DarkLaunchCounts {
        DarkLaunchCounts {
            matched: self.matched.load(Ordering::Relaxed),
            mismatched: self.mismatched.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            timed_out: self.timed_out.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            candidate_micros: self.candidate_micros.load(Ordering::Relaxed),
            served_micros: self.served_micros.load(Ordering::Relaxed),
        }
    }
}

/// Runs candidates.
pub struct DarkLauncher {
    permits: Arc<Semaphore>,
    timeout: Duration,
    stats: Arc<DarkLaunchStats>,
    latency: CandidateLatency,
}

/// The candidate latency histogram (by engine).
pub type CandidateLatency = Family<EngineLabels, Histogram, fn() -> Histogram>;

/// At most one mismatch sample is logged per this interval.
const MISMATCH_LOG_EVERY: Duration = Duration::from_secs(1);

impl DarkLauncher {
    /// At most `max_in_flight` candidates at once, each within `timeout`.
    pub fn new(max_in_flight: usize, timeout: Duration, latency: CandidateLatency) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max_in_flight)),
            timeout,
            stats: Arc::new(DarkLaunchStats::default()),
            latency,
        }
    }

    /// The outcome counters.
    pub fn stats(&self) -> &DarkLaunchStats {
        &self.stats
    }

    /// Starts `candidate` on `text` and returns at once; `served` is the
    /// answer the client got and `served_latency` how long it took.
    pub fn launch(
        &self,
        candidate: Arc<dyn Engine>,
        text: Arc<str>,
        served: Detection,
        served_latency: Duration,
    ) {
        let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() else {
            self.stats.skipped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let stats = Arc::clone(&self.stats);
        let timeout = self.timeout;
        let kind = candidate.kind();
        let latency = self.latency.clone();
        // Its own trace, linked to the request's: it never extends it.
        let span = tracing::info_span!(
            parent: None,
            "dark_launch.candidate",
            otel.name = "dark_launch.candidate",
            candidate = kind.as_str(),
            outcome = tracing::field::Empty,
        );
        if !span.is_disabled() {
            let request = tracing::Span::current().context();
            span.add_link(request.span().span_context().clone());
        }
        let task = async move {
            let started = Instant::now();
            // The permit lives with the work itself: a timed-out candidate
            // still occupies its slot until it really ends.
            let work = tokio::task::spawn_blocking(move || {
                let _permit = permit;
                candidate.detect(&text)
            });
            let outcome = match tokio::time::timeout(timeout, work).await {
                Err(_) => {
                    stats.timed_out.fetch_add(1, Ordering::Relaxed);
                    "timeout"
                }
                Ok(Err(e)) => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(candidate = %kind, error = %e, "dark-launch candidate failed");
                    "error"
                }
                Ok(Ok(candidate_answer)) => {
                    let elapsed = started.elapsed();
                    latency
                        .get_or_create(&EngineLabels {
                            engine: kind.as_str(),
                        })
                        .observe(elapsed.as_secs_f64());
                    let micros = elapsed.as_micros() as u64;
                    stats.candidate_micros.fetch_add(micros, Ordering::Relaxed);
                    stats
                        .served_micros
                        .fetch_add(served_latency.as_micros() as u64, Ordering::Relaxed);
                    if candidate_answer.language == served.language {
                        stats.matched.fetch_add(1, Ordering::Relaxed);
                        "match"
                    } else {
                        stats.mismatched.fetch_add(1, Ordering::Relaxed);
                        log_mismatch(&stats, kind.as_str(), served, candidate_answer);
                        "mismatch"
                    }
                }
            };
            tracing::Span::current().record("outcome", outcome);
        };
        tokio::spawn(task.instrument(span));
    }
}

fn log_mismatch(stats: &DarkLaunchStats, candidate: &str, served: Detection, got: Detection) {
    let mut last = stats
        .last_mismatch_log
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if last.is_some_and(|t| t.elapsed() < MISMATCH_LOG_EVERY) {
        return;
    }
    *last = Some(Instant::now());
    // Never the text itself: languages and confidences only.
    tracing::info!(
        candidate,
        served_language = served.language.map_or("und", |l| l.code()),
        candidate_language = got.language.map_or("und", |l| l.code()),
        confidence_delta = (got.confidence - served.confidence).abs(),
        "dark-launch mismatch (sampled)"
    );
}
