//! Where engine work runs: CPU-bound detections on a Tokio server with two
//! cores, without a thread handoff where none pays and without unbounded
//! thread growth.
//!
//! - **Admission.** `server.max_concurrent_requests` slots (a semaphore).
//!   A unary call that finds none is shed at once (RESOURCE_EXHAUSTED); a
//!   stream's next message waits for one (the stream already is one slot of
//!   work), counted as waiting.
//! - **Turns.** `detector.engine_threads` engine turns (one per core by
//!   default): every detection except a light one holds a turn while it
//!   runs, so CPU-bound engine work never outnumbers the cores. A call
//!   waits for its turn parked (not runnable, so it delays nobody), FIFO,
//!   counted in the queue depth; a caller that leaves while waiting (its
//!   deadline passed, or it cancelled) never runs and counts as abandoned.
//! - **Inline.** On a text of at most `detector.inline_max_chars`
//!   characters, an engine whose [`Engine::cost`] is [`Cost::Light`]
//!   (whatlang: tens of microseconds) runs on the request task at once, and
//!   one whose cost is [`Cost::Bounded`] (lingua: under a millisecond) runs
//!   on the request task once it holds a turn. No thread handoff: a handoff
//!   to another thread and back costs more than whatlang's call, and for
//!   lingua it cost 12–16 % of throughput against a bare server, because
//!   the runtime workers preempted the engine threads mid-detection about
//!   twice a call (BENCHMARKS.md, "Execution model"). At most as many
//!   detections hold workers as there are cores. A call runs as soon as it
//!   has its turn, without yielding first: the workers then poll for I/O
//!   only every few dozen tasks, so Health/Check on the gRPC listener
//!   waits tens of ms at p99 under lingua saturation, as on a bare tonic
//!   server. The kubelet's probes do not wait: they go to the probe
//!   listener, on the control thread, which the data plane's nice value
//!   can put first ([`crate::threads`]). An earlier yield before every
//!   lingua call bounded the gRPC listener's Health p99 at 0.7–4 ms but
//!   cost 5–10 % of lingua's short-text throughput (BENCHMARKS.md, "Engine
//!   turns" and "The probe listener").
//! - **Pool.** Everything else (an engine of [`Cost::Unknown`], texts over
//!   the inline bound) runs on `detector.engine_threads` threads fed by
//!   one queue, each job holding its turn and its slot; a job whose caller
//!   has gone when a thread takes it is dropped without running. The
//!   threads run at the data plane's priority ([`crate::threads`]). Before
//!   this, every call went to Tokio's blocking pool, which grew to ~120
//!   threads at saturation on two cores.
//! - **Warm-up.** [`Executor::start`] starts the pool threads, and each runs
//!   every engine's [`Engine::warm_up`] before readiness turns SERVING.
//! - **USE.** Busy time per engine and executor (against the threads that
//!   can run it), queue depth, waiting calls, and calls abandoned or failed,
//!   all read at scrape time by its own collector.
//!
//! The measurements behind these choices are in BENCHMARKS.md, "Execution
//! model".

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::engine::{Cost, Detection, Engine, EngineError, EngineKind, Engines};
use crate::telemetry::ChildSpan;

/// Where a detection runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// On the request task.
    Inline,
    /// On an engine pool thread.
    Pool,
}

/// Why a detection did not run to an answer.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No slot free (a unary call is shed).
    #[error("no free slot of {limit}")]
    Overloaded { limit: usize },
    /// The engine panicked or the pool is gone.
    #[error("{0}")]
    Failed(String),
}

/// Counters the executor keeps (read at scrape time and by GetInfo).
#[derive(Debug, Default)]
pub struct ExecutionStats {
    /// Nanoseconds engines spent detecting, by `[engine][inline, pool]`.
    busy_nanos: [[AtomicU64; 2]; 2],
    /// Detections run, by `[engine][inline, pool]`.
    runs: [[AtomicU64; 2]; 2],
    /// Calls waiting for an engine turn, and jobs queued for a pool thread
    /// not yet taken.
    queued: AtomicUsize,
    /// Stream messages waiting for a slot.
    waiting: AtomicUsize,
    /// Jobs whose caller had gone, by engine.
    abandoned: [AtomicU64; 2],
    /// Detections that panicked, by engine.
    failed: [AtomicU64; 2],
}

impl ExecutionStats {
    fn ran(&self, kind: EngineKind, place: Place, took: Duration) {
        let (e, p) = (kind.index(), place as usize);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.busy_nanos[e][p].fetch_add(nanos, Ordering::Relaxed);
        self.runs[e][p].fetch_add(1, Ordering::Relaxed);
    }

    /// Detections run by `kind` at `place` so far.
    pub fn runs(&self, kind: EngineKind, place: Place) -> u64 {
        self.runs[kind.index()][place as usize].load(Ordering::Relaxed)
    }
}

/// One detection for a pool thread. The slot travels with the work: a call
/// abandoned at its deadline keeps its slot until the engine really stops.
struct Job {
    engine: Arc<dyn Engine>,
    text: String,
    _permit: OwnedSemaphorePermit,
    _turn: OwnedSemaphorePermit,
    _span: ChildSpan,
    reply: oneshot::Sender<std::thread::Result<Detection>>,
}

/// Admission, inline execution and the engine pool (see the module docs).
pub struct Executor {
    slots: Arc<Semaphore>,
    /// One per engine thread: held by every detection of a
    /// [`Cost::Bounded`] engine and every pool job while it runs.
    turns: Arc<Semaphore>,
    max_concurrent: usize,
    inline_max_chars: usize,
    threads: usize,
    /// The pool threads' nice value (`server.data_plane_nice`).
    nice: i32,
    jobs: SyncSender<Job>,
    queue: Arc<Mutex<Receiver<Job>>>,
    started: std::sync::atomic::AtomicBool,
    stats: Arc<ExecutionStats>,
    /// `switchyard_requests_shed_total`.
    shed: Counter,
}

impl Executor {
    /// `max_concurrent` slots, `threads` pool threads at nice `nice`
    /// (started by [`Executor::start`]), inline up to `inline_max_chars`
    /// characters. Registers its USE series and the shed counter on `own`
    /// (the `switchyard_` sub-registry).
    pub fn new(
        max_concurrent: usize,
        threads: usize,
        nice: i32,
        inline_max_chars: usize,
        own: &mut Registry,
    ) -> Self {
        // Every job holds a slot, so this bound is never the one that bites.
        let (jobs, queue) = std::sync::mpsc::sync_channel(max_concurrent);
        let executor = Self {
            slots: Arc::new(Semaphore::new(max_concurrent)),
            turns: Arc::new(Semaphore::new(threads.max(1))),
            max_concurrent,
            inline_max_chars,
            threads: threads.max(1),
            nice,
            jobs,
            queue: Arc::new(Mutex::new(queue)),
            started: std::sync::atomic::AtomicBool::new(false),
            stats: Arc::new(ExecutionStats::default()),
            shed: Counter::default(),
        };
        own.register(
            "requests_shed",
            "Detect calls refused with RESOURCE_EXHAUSTED at the concurrency limit",
            executor.shed.clone(),
        );
        own.register_collector(Box::new(executor.collector()));
        executor
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<ExecutionStats> {
        &self.stats
    }

    /// Pool threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// A slot: at once or [`RunError::Overloaded`] (`wait = false`, unary
    /// calls), or when one frees up (`wait = true`, stream messages).
    pub async fn admit(&self, wait: bool) -> Result<OwnedSemaphorePermit, RunError> {
        let overloaded = || RunError::Overloaded {
            limit: self.max_concurrent,
        };
        if !wait {
            return Arc::clone(&self.slots).try_acquire_owned().map_err(|_| {
                self.shed.inc();
                overloaded()
            });
        }
        if let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() {
            return Ok(permit);
        }
        self.stats.waiting.fetch_add(1, Ordering::Relaxed);
        let _waiting = Decrement(&self.stats.waiting);
        Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .map_err(|_| overloaded())
    }

    /// Where an engine of `cost` runs `chars` characters.
    fn place_by_cost(&self, cost: Cost, chars: usize) -> Place {
        match cost {
            Cost::Light | Cost::Bounded if chars <= self.inline_max_chars => Place::Inline,
            _ => Place::Pool,
        }
    }

    /// One of the engine turns: at once, or when one frees up (counted in
    /// the queue depth while waiting; a caller that leaves while waiting,
    /// e.g. at its deadline, is counted abandoned and never runs).
    async fn turn(&self, kind: EngineKind) -> Result<OwnedSemaphorePermit, RunError> {
        if let Ok(turn) = Arc::clone(&self.turns).try_acquire_owned() {
            return Ok(turn);
        }
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        let mut waiting = Waiting {
            _queued: Decrement(&self.stats.queued),
            abandoned: &self.stats.abandoned[kind.index()],
            served: false,
        };
        let turn = Arc::clone(&self.turns)
            .acquire_owned()
            .await
            .map_err(|_| RunError::Failed("the engine turns are closed".into()))?;
        waiting.served = true;
        Ok(turn)
    }

    /// Detects `text` (of `chars` characters) with `engine`, inline or on the
    /// pool. If the caller's future is dropped while the job waits, the job
    /// never runs.
    pub async fn run(
        &self,
        engine: &Arc<dyn Engine>,
        text: String,
        chars: usize,
        permit: OwnedSemaphorePermit,
        span: ChildSpan,
    ) -> Result<Detection, RunError> {
        let (kind, cost) = (engine.kind(), engine.cost());
        if self.place_by_cost(cost, chars) == Place::Inline {
            let turn = match cost {
                Cost::Light => None,
                _ => Some(self.turn(kind).await?),
            };
            let started = Instant::now();
            let answer = std::panic::catch_unwind(AssertUnwindSafe(|| engine.detect(&text)));
            self.stats.ran(kind, Place::Inline, started.elapsed());
            drop((turn, permit, span));
            return answer.map_err(|panic| self.failed(kind, &panic));
        }
        let turn = self.turn(kind).await?;
        let (reply, answer) = oneshot::channel();
        let job = Job {
            engine: Arc::clone(engine),
            text,
            _permit: permit,
            _turn: turn,
            _span: span,
            reply,
        };
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.jobs.try_send(job) {
            self.stats.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(match e {
                TrySendError::Full(_) => RunError::Overloaded {
                    limit: self.max_concurrent,
                },
                TrySendError::Disconnected(_) => RunError::Failed("the engine pool is gone".into()),
            });
        }
        match answer.await {
            Ok(Ok(detection)) => Ok(detection),
            Ok(Err(panic)) => Err(self.failed(kind, &panic)),
            Err(_) => Err(RunError::Failed("the engine pool dropped the call".into())),
        }
    }

    fn failed(&self, kind: EngineKind, panic: &(dyn std::any::Any + Send)) -> RunError {
        self.stats.failed[kind.index()].fetch_add(1, Ordering::Relaxed);
        let reason = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panicked".to_owned());
        RunError::Failed(reason)
    }

    /// Starts the pool threads; each warms up every engine first. Returns
    /// once all have, recording each engine's warm-up time (the longest
    /// over the threads) in `engines`. Only the first call starts threads.
    pub async fn start(&self, engines: &mut Engines) -> Result<(), EngineError> {
        if self.started.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let mut warmed = Vec::with_capacity(self.threads);
        for i in 0..self.threads {
            let (done, warm) = oneshot::channel();
            let worker = Worker {
                nice: self.nice,
                queue: Arc::clone(&self.queue),
                stats: Arc::clone(&self.stats),
                engines: EngineKind::ALL.map(|k| Arc::clone(engines.get(k))),
            };
            std::thread::Builder::new()
                .name(format!("engine-{i}"))
                .spawn(move || worker.run(done))
                .map_err(|e| EngineError::Load(format!("cannot start an engine thread: {e}")))?;
            warmed.push(warm);
        }
        let mut longest = [Duration::ZERO; 2];
        for warm in warmed {
            let times = warm
                .await
                .map_err(|_| EngineError::Load("an engine thread ended during warm-up".into()))?
                .map_err(EngineError::Load)?;
            for (slot, took) in longest.iter_mut().zip(times) {
                *slot = (*slot).max(took);
            }
        }
        for kind in EngineKind::ALL {
            engines.set_warm_up_time(kind, longest[kind.index()]);
        }
        Ok(())
    }

    /// The USE series of this executor, read at scrape time.
    fn collector(&self) -> ExecutionCollector {
        ExecutionCollector {
            stats: Arc::clone(&self.stats),
            slots: Arc::clone(&self.slots),
            max_concurrent: self.max_concurrent,
            threads: self.threads,
            runtime: tokio::runtime::Handle::try_current().ok(),
        }
    }
}

/// A call waiting for an engine turn: leaves the queue when dropped, and
/// counts as abandoned if it never got its turn.
struct Waiting<'a> {
    _queued: Decrement<'a>,
    abandoned: &'a AtomicU64,
    served: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if !self.served {
            self.abandoned.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Decrements a gauge when dropped (a waiting call that is cancelled too).
struct Decrement<'a>(&'a AtomicUsize);

impl Drop for Decrement<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A pool thread.
struct Worker {
    nice: i32,
    queue: Arc<Mutex<Receiver<Job>>>,
    stats: Arc<ExecutionStats>,
    engines: [Arc<dyn Engine>; 2],
}

type WarmUpTimes = Result<[Duration; 2], String>;

impl Worker {
    fn run(self, warmed: oneshot::Sender<WarmUpTimes>) {
        crate::threads::lower_to(self.nice);
        let times = std::panic::catch_unwind(AssertUnwindSafe(|| {
            self.engines.each_ref().map(|engine| {
                let started = Instant::now();
                engine.warm_up();
                started.elapsed()
            })
        }))
        .map_err(|_| "an engine panicked during warm-up".to_owned());
        let failed = times.is_err();
        if warmed.send(times).is_err() || failed {
            return;
        }
        loop {
            // The lock is held only while waiting for the next job.
            let next = self
                .queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .recv();
            let Ok(job) = next else { return };
            self.stats.queued.fetch_sub(1, Ordering::Relaxed);
            let Job {
                engine,
                text,
                _permit: permit,
                _turn: turn,
                _span: span,
                reply,
            } = job;
            let kind = engine.kind();
            if reply.is_closed() {
                // The caller has gone: its deadline passed while queued.
                self.stats.abandoned[kind.index()].fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let started = Instant::now();
            let answer = std::panic::catch_unwind(AssertUnwindSafe(|| engine.detect(&text)));
            self.stats.ran(kind, Place::Pool, started.elapsed());
            // Slot and span end before the caller hears back, so a caller
            // that has its answer never sees its own call still in use.
            drop((turn, permit, span));
            if reply.send(answer).is_err() {
                self.stats.abandoned[kind.index()].fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BusyLabels {
    engine: &'static str,
    executor: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ErrorLabels {
    engine: &'static str,
    error: &'static str,
}

/// Engine and runtime USE series, read at scrape time:
///
/// - utilization: `switchyard_engine_busy_seconds_total{engine,executor}`
///   (with `switchyard_engine_calls_total` for the mean cost of a call)
///   against `switchyard_engine_threads` (pool) or
///   `switchyard_runtime_workers` (inline), and the runtime's own
///   `switchyard_runtime_busy_seconds_total`;
/// - saturation: `switchyard_engine_queue_depth`,
///   `switchyard_engine_waiting_calls`, `switchyard_engine_slots_in_use` of
///   `switchyard_engine_slots`, `switchyard_runtime_global_queue_depth`;
/// - errors: `switchyard_engine_errors_total{engine,error}` (`abandoned`:
///   the caller had gone; `failed`: the engine panicked), beside
///   `switchyard_requests_shed_total`.
struct ExecutionCollector {
    stats: Arc<ExecutionStats>,
    slots: Arc<Semaphore>,
    max_concurrent: usize,
    threads: usize,
    runtime: Option<tokio::runtime::Handle>,
}

impl std::fmt::Debug for ExecutionCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecutionCollector").finish_non_exhaustive()
    }
}

fn gauge(n: usize) -> ConstGauge<i64> {
    ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX))
}

impl Collector for ExecutionCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use crate::metrics::{family, single};
        let s = &self.stats;
        let mut busy = Vec::with_capacity(4);
        let mut calls = Vec::with_capacity(4);
        for kind in EngineKind::ALL {
            for (place, name) in [(Place::Inline, "inline"), (Place::Pool, "pool")] {
                let labels = BusyLabels {
                    engine: kind.as_str(),
                    executor: name,
                };
                let nanos = s.busy_nanos[kind.index()][place as usize].load(Ordering::Relaxed);
                busy.push((labels.clone(), ConstCounter::new(nanos as f64 / 1e9)));
                calls.push((labels, ConstCounter::new(s.runs(kind, place))));
            }
        }
        family(
            &mut encoder,
            "engine_calls",
            "Detections engines ran, by engine and where they ran",
            MetricType::Counter,
            &calls,
        )?;
        family(
            &mut encoder,
            "engine_busy_seconds",
            "Time engines spent detecting, by engine and where they ran (inline on the request task, or on the engine pool)",
            MetricType::Counter,
            &busy,
        )?;
        single(
            &mut encoder,
            "engine_threads",
            "Engine pool threads, and engine turns: detections that may run at once, inline or on the pool (the engines' capacity)",
            MetricType::Gauge,
            gauge(self.threads),
        )?;
        single(
            &mut encoder,
            "engine_queue_depth",
            "Detections waiting for an engine turn or an engine pool thread",
            MetricType::Gauge,
            gauge(s.queued.load(Ordering::Relaxed)),
        )?;
        single(
            &mut encoder,
            "engine_waiting_calls",
            "DetectStream messages waiting for a free slot",
            MetricType::Gauge,
            gauge(s.waiting.load(Ordering::Relaxed)),
        )?;
        single(
            &mut encoder,
            "engine_slots",
            "Detections admitted at once (server.max_concurrent_requests)",
            MetricType::Gauge,
            gauge(self.max_concurrent),
        )?;
        single(
            &mut encoder,
            "engine_slots_in_use",
            "Detections admitted and not yet finished",
            MetricType::Gauge,
            gauge(
                self.max_concurrent
                    .saturating_sub(self.slots.available_permits()),
            ),
        )?;
        let mut errors = Vec::with_capacity(4);
        for kind in EngineKind::ALL {
            for (error, counts) in [("abandoned", &s.abandoned), ("failed", &s.failed)] {
                errors.push((
                    ErrorLabels {
                        engine: kind.as_str(),
                        error,
                    },
                    ConstCounter::new(counts[kind.index()].load(Ordering::Relaxed)),
                ));
            }
        }
        family(
            &mut encoder,
            "engine_errors",
            "Engine calls that gave no answer: abandoned (the caller had gone, e.g. its deadline passed) or failed (the engine panicked)",
            MetricType::Counter,
            &errors,
        )?;
        if let Some(runtime) = &self.runtime {
            let m = runtime.metrics();
            let workers = m.num_workers();
            let busy: f64 = (0..workers)
                .map(|w| m.worker_total_busy_duration(w).as_secs_f64())
                .sum();
            single(
                &mut encoder,
                "runtime_workers",
                "Tokio runtime worker threads",
                MetricType::Gauge,
                gauge(workers),
            )?;
            single(
                &mut encoder,
                "runtime_busy_seconds",
                "Time the Tokio workers spent busy, summed over workers",
                MetricType::Counter,
                ConstCounter::new(busy),
            )?;
            single(
                &mut encoder,
                "runtime_global_queue_depth",
                "Tasks waiting in the Tokio runtime's global queue",
                MetricType::Gauge,
                gauge(m.global_queue_depth()),
            )?;
            single(
                &mut encoder,
                "runtime_alive_tasks",
                "Tasks alive in the Tokio runtime",
                MetricType::Gauge,
                gauge(m.num_alive_tasks()),
            )?;
        }
        Ok(())
    }
}
