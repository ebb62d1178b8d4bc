//! Dark launches: a candidate engine answers the same text off the request
//! path and its answer is compared with the served one (like GitHub's
//! Scientist, but the reply never waits for the candidate).
//!
//! Bounded on every side: a semaphore caps candidates in flight (when it is
//! full the candidate is skipped and counted, never queued), each candidate
//! has a timeout, and a panicking candidate is caught on its thread.
//! Each candidate runs in its own trace, linked to the request's.
//!
//! Candidates run on their own threads at the lowest CPU priority (nice
//! 19): when the cores are busy, the scheduler serves requests first and the
//! candidate waits, so a dark launch does not raise the served latency.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::Semaphore;
use tracing::Instrument;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::registry::Registry;

use crate::engine::{Detection, Engine};
use crate::telemetry::Trace;

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
    pool: CandidatePool,
}

type Job = Box<dyn FnOnce() + Send + 'static>;

/// `max_in_flight` threads at nice 19. Jobs only arrive with a permit, so
/// there is never more work queued than threads to run it. The threads end
/// when the launcher is dropped.
struct CandidatePool {
    jobs: std::sync::mpsc::Sender<Job>,
    threads: usize,
}

impl CandidatePool {
    fn new(threads: usize) -> Self {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        let mut started = 0;
        for i in 0..threads {
            let queue = Arc::clone(&queue);
            let spawned = std::thread::Builder::new()
                .name(format!("dark-launch-{i}"))
                .spawn(move || {
                    // Linux keeps the nice value per thread.
                    if let Err(e) = rustix::process::nice(19) {
                        tracing::debug!(error = %e, "cannot lower the candidate thread's priority");
                    }
                    loop {
                        let next = queue
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .recv();
                        match next {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                });
            match spawned {
                Ok(_) => started += 1,
                Err(e) => tracing::warn!(error = %e, "cannot start a dark-launch thread"),
            }
        }
        Self {
            jobs,
            threads: started,
        }
    }

    /// Runs `work` on a pool thread; `None` if the pool cannot take it.
    fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Option<tokio::sync::oneshot::Receiver<std::thread::Result<T>>> {
        if self.threads == 0 {
            return None;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
            let _ = tx.send(result);
        });
        self.jobs.send(job).ok()?;
        Some(rx)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EngineLabels {
    engine: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// The candidate latency histogram (by engine).
type CandidateLatency = Family<EngineLabels, Histogram, fn() -> Histogram>;

/// `switchyard_dark_launch_total{outcome}`, read from the launcher's own
/// counters at scrape time.
#[derive(Debug)]
struct OutcomeCollector(Arc<DarkLaunchStats>);

impl Collector for OutcomeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counts = self.0.counts();
        let series = [
            ("match", counts.matched),
            ("mismatch", counts.mismatched),
            ("skipped", counts.skipped),
            ("timeout", counts.timed_out),
            ("error", counts.errors),
        ]
        .map(|(outcome, n)| (OutcomeLabels { outcome }, ConstCounter::new(n)));
        crate::metrics::family(
            &mut encoder,
            "dark_launch",
            "Dark-launch comparisons, by outcome",
            MetricType::Counter,
            &series,
        )
    }
}

/// At most one mismatch sample is logged per this interval.
const MISMATCH_LOG_EVERY: Duration = Duration::from_secs(1);

impl DarkLauncher {
    /// At most `max_in_flight` candidates at once, each within `timeout`.
    /// Registers its outcomes and candidate latencies on `own` (the
    /// `switchyard_` sub-registry).
    pub fn new(max_in_flight: usize, timeout: Duration, own: &mut Registry) -> Self {
        let stats = Arc::new(DarkLaunchStats::default());
        let latency: CandidateLatency =
            Family::new_with_constructor(crate::metrics::engine_histogram);
        own.register(
            "dark_launch_candidate_seconds",
            "Time the dark-launch candidate took, in seconds",
            latency.clone(),
        );
        own.register_collector(Box::new(OutcomeCollector(Arc::clone(&stats))));
        Self {
            permits: Arc::new(Semaphore::new(max_in_flight)),
            timeout,
            stats,
            latency,
            pool: CandidatePool::new(max_in_flight),
        }
    }

    /// The outcome counters.
    pub fn stats(&self) -> &DarkLaunchStats {
        &self.stats
    }

    /// Starts `candidate` on `text` and returns at once; `served` is the
    /// answer the client got and `served_latency` how long it took. The
    /// candidate's span (`dark_launch.candidate`) is in a trace of its own,
    /// linked to the request's server span.
    pub fn launch(
        &self,
        candidate: Arc<dyn Engine>,
        text: Arc<str>,
        served: Detection,
        served_latency: Duration,
        request: &Trace,
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
        let mut trace_span = request.linked_root("dark_launch.candidate", || {
            vec![KeyValue::new("candidate", kind.as_str())]
        });
        // The candidate's log lines.
        let span = tracing::info_span!(
            parent: None,
            "dark_launch.candidate",
            candidate = kind.as_str(),
            outcome = tracing::field::Empty,
        );
        let started = Instant::now();
        // The permit lives with the work itself: a timed-out candidate
        // still occupies its slot until it really ends.
        let work = self.pool.run(move || {
            let _permit = permit;
            candidate.detect(&text)
        });
        let task = async move {
            // Answered, failed (panicked, or no thread to run it), or late.
            let ran = match work {
                None => None,
                Some(answer) => match tokio::time::timeout(timeout, answer).await {
                    Err(_) => Some(Err(())),
                    Ok(Ok(Ok(answer))) => Some(Ok(answer)),
                    Ok(_) => None,
                },
            };
            let outcome = match ran {
                Some(Err(())) => {
                    stats.timed_out.fetch_add(1, Ordering::Relaxed);
                    "timeout"
                }
                None => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(candidate = %kind, "dark-launch candidate failed (panicked or could not run)");
                    "error"
                }
                Some(Ok(candidate_answer)) => {
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
            trace_span.set_attribute(|| KeyValue::new("outcome", outcome));
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
