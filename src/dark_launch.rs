//! Dark launches: a candidate engine answers the same text off the request
//! path and its answer is compared with the served one (like GitHub's
//! Scientist, but the reply never waits for the candidate).
//!
//! Bounded on every side: a semaphore caps candidates in flight (when it is
//! full the candidate is skipped and counted, never queued), each candidate
//! has a timeout, and a panicking candidate is caught by the blocking pool.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::engine::{Detection, Engine};

/// Outcome counters (exported as metrics by the observability work).
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
}

/// At most one mismatch sample is logged per this interval.
const MISMATCH_LOG_EVERY: Duration = Duration::from_secs(1);

impl DarkLauncher {
    /// At most `max_in_flight` candidates at once, each within `timeout`.
    pub fn new(max_in_flight: usize, timeout: Duration) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max_in_flight)),
            timeout,
            stats: Arc::new(DarkLaunchStats::default()),
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
        tokio::spawn(async move {
            let started = Instant::now();
            // The permit lives with the work itself: a timed-out candidate
            // still occupies its slot until it really ends.
            let work = tokio::task::spawn_blocking(move || {
                let _permit = permit;
                candidate.detect(&text)
            });
            match tokio::time::timeout(timeout, work).await {
                Err(_) => {
                    stats.timed_out.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Err(e)) => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(candidate = %kind, error = %e, "dark-launch candidate failed");
                }
                Ok(Ok(candidate_answer)) => {
                    let micros = started.elapsed().as_micros() as u64;
                    stats.candidate_micros.fetch_add(micros, Ordering::Relaxed);
                    stats
                        .served_micros
                        .fetch_add(served_latency.as_micros() as u64, Ordering::Relaxed);
                    if candidate_answer.language == served.language {
                        stats.matched.fetch_add(1, Ordering::Relaxed);
                    } else {
                        stats.mismatched.fetch_add(1, Ordering::Relaxed);
                        log_mismatch(&stats, kind.as_str(), served, candidate_answer);
                    }
                }
            }
        });
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
