//! The current flag set, its source and hot reload.
//!
//! Kubernetes updates a ConfigMap volume atomically: it writes a new
//! `..<timestamp>` directory, points a `..data_tmp` symlink at it, renames
//! that over `..data` and deletes the old directory; the visible files are
//! symlinks through `..data`. So the store watches the *directory* (a watch
//! on a file dies at the first update), debounces briefly, re-reads on a slow
//! poll as a safety net, reads every file through one resolution of `..data`
//! (a consistent snapshot), and swaps the compiled set in atomically: each
//! request sees the whole old set or the whole new set. Bad content keeps the
//! last good set serving.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use notify::Watcher;
use tokio_util::sync::CancellationToken;

use super::definition::{self, DefinitionError, DefinitionErrors, MAX_CONTENT_BYTES};
use super::{FlagSet, FractionalVersion};

/// What the store reports about itself (Admin/GetInfo, logs).
#[derive(Debug, Clone)]
pub struct StoreStatus {
    /// Where flags come from: a path, or "built-in".
    pub source: String,
    /// Revision (content hash) of the set being served.
    pub revision: String,
    /// When the set being served was loaded.
    pub loaded_at: SystemTime,
    /// Why the latest reload failed, while the content stays bad.
    pub last_error: Option<String>,
    /// Successful reloads that changed the set.
    pub reloads_ok: u64,
    /// Failed reloads: each change to bad content once, however often it
    /// is re-read; a source that cannot be read, once until its error
    /// changes.
    pub reloads_failed: u64,
    /// Load-time warnings in the set being served (problems flagd
    /// tolerates, resolved at evaluation time).
    pub warnings: u64,
}

/// Holds the current [`FlagSet`].
pub struct FlagStore {
    current: ArcSwap<FlagSet>,
    path: Option<PathBuf>,
    fractional: FractionalVersion,
    state: Mutex<State>,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
}

struct State {
    loaded_at: SystemTime,
    last_error: Option<String>,
    last_failed_revision: Option<String>,
}

/// Reads the flag files of `path`: a directory (every `*.json`, `*.yaml`,
/// `*.yml`, in file-name order, read through one resolution of `..data`) or a
/// single file. Returns (name, content) pairs.
pub fn read_source(path: &Path) -> Result<Vec<(String, Vec<u8>)>, DefinitionErrors> {
    let fail = |problem: String| source_error(path, problem);
    let meta = std::fs::metadata(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    if meta.is_file() {
        let name = path.display().to_string();
        return Ok(vec![(name, read_limited(path).map_err(fail)?)]);
    }
    // Read every file through one resolution of `..data`, so all come from
    // the same generation. The kubelet deletes the previous generation right
    // after its rename, so a read that raced a swap is retried on the new one.
    let mut attempts = 0;
    loop {
        attempts += 1;
        let generation = std::fs::read_link(path.join("..data")).ok();
        let result = read_generation(path, generation.as_deref());
        let now = std::fs::read_link(path.join("..data")).ok();
        if generation == now || attempts >= 5 {
            return result;
        }
    }
}

fn read_generation(
    path: &Path,
    generation: Option<&Path>,
) -> Result<Vec<(String, Vec<u8>)>, DefinitionErrors> {
    let fail = |problem: String| source_error(path, problem);
    let base = generation.map_or_else(|| path.to_path_buf(), |g| path.join(g));
    let mut names: Vec<String> = std::fs::read_dir(&base)
        .map_err(|e| fail(format!("cannot list: {e}")))?
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| !name.starts_with('.'))
        .filter(|name| {
            let lower = name.to_ascii_lowercase();
            lower.ends_with(".json") || lower.ends_with(".yaml") || lower.ends_with(".yml")
        })
        .collect();
    names.sort();
    if names.is_empty() {
        return Err(fail("no flag files (*.json, *.yaml, *.yml)".into()));
    }
    names
        .into_iter()
        .map(|name| {
            let content = read_limited(&base.join(&name))
                .map_err(|problem| source_error(&path.join(&name), problem))?;
            Ok((path.join(&name).display().to_string(), content))
        })
        .collect()
}

/// A problem with a file or directory as a whole (no flag to name).
fn source_error(file: &Path, problem: String) -> DefinitionErrors {
    DefinitionErrors(vec![DefinitionError {
        file: file.display().to_string(),
        flag: None,
        problem,
    }])
}

fn read_limited(path: &Path) -> Result<Vec<u8>, String> {
    let len = std::fs::metadata(path)
        .map_err(|e| format!("cannot read: {e}"))?
        .len();
    if len > MAX_CONTENT_BYTES as u64 {
        return Err(format!("{len} bytes is over the 1 MiB ConfigMap limit"));
    }
    std::fs::read(path).map_err(|e| format!("cannot read: {e}"))
}

/// Parses, validates and compiles `sources` into one set, with `fractional`
/// bucketing.
pub fn build(
    sources: &[(String, Vec<u8>)],
    fractional: FractionalVersion,
) -> Result<FlagSet, DefinitionErrors> {
    let mut parsed = Vec::new();
    let mut errors = Vec::new();
    for (name, content) in sources {
        match definition::parse_file(name, content) {
            Ok(file) => parsed.push(file),
            Err(DefinitionErrors(mut e)) => errors.append(&mut e),
        }
    }
    if !errors.is_empty() {
        return Err(DefinitionErrors(errors));
    }
    Ok(
        definition::merge(parsed, definition::revision(sources))
            .with_fractional_version(fractional),
    )
}

/// Loads and compiles the flags at `path` (what `flags validate` checks).
pub fn load_path(path: &Path, fractional: FractionalVersion) -> Result<FlagSet, DefinitionErrors> {
    build(&read_source(path)?, fractional)
}

/// Logs each load-time warning of `set` (file, flag and rule).
fn log_warnings(set: &FlagSet) {
    for warning in set.warnings() {
        tracing::warn!(
            file = %warning.file,
            flag = warning.flag.as_deref().unwrap_or(""),
            problem = %warning.problem,
            "flag loaded with a problem flagd tolerates"
        );
    }
}

impl FlagStore {
    /// A store serving the built-in flags (see [`FlagSet::built_in`]), with
    /// no source to watch.
    pub fn built_in(
        default_engine: &str,
        max_text_chars: usize,
        fractional: FractionalVersion,
    ) -> Self {
        Self::with(
            FlagSet::built_in(default_engine, max_text_chars).with_fractional_version(fractional),
            None,
        )
    }

    /// Loads `path` with `fractional` bucketing; bad content is an error (at
    /// startup, refuse to start). Load-time warnings are logged.
    pub fn open(path: &Path, fractional: FractionalVersion) -> Result<Self, DefinitionErrors> {
        let set = load_path(path, fractional)?;
        log_warnings(&set);
        Ok(Self::with(set, Some(path.to_path_buf())))
    }

    fn with(set: FlagSet, path: Option<PathBuf>) -> Self {
        let fractional = set.fractional_version();
        Self {
            current: ArcSwap::from_pointee(set),
            path,
            fractional,
            state: Mutex::new(State {
                loaded_at: SystemTime::now(),
                last_error: None,
                last_failed_revision: None,
            }),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
        }
    }

    /// The set being served. Hold it for a whole request so the request sees
    /// one set.
    pub fn current(&self) -> Arc<FlagSet> {
        self.current.load_full()
    }

    /// The watched source, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Re-reads the source. `Ok(true)` when a new set was swapped in,
    /// `Ok(false)` when the content is unchanged; on bad content the last
    /// good set keeps serving and the error is recorded.
    pub fn reload(&self) -> Result<bool, DefinitionErrors> {
        let Some(path) = &self.path else {
            return Ok(false);
        };
        // Content that changed and is bad: a failed reload even when its
        // message matches the last one's.
        let mut new_bad_content = false;
        let result = read_source(path).and_then(|sources| {
            let revision = definition::revision(&sources);
            if revision == self.current.load().revision {
                return Ok(None);
            }
            if self.lock().last_failed_revision.as_deref() == Some(revision.as_str()) {
                // Same bad content as last time: already counted and logged.
                return Err(DefinitionErrors(Vec::new()));
            }
            build(&sources, self.fractional).map(Some).inspect_err(|_| {
                self.lock().last_failed_revision = Some(revision.clone());
                new_bad_content = true;
            })
        });
        match result {
            Ok(None) => {
                let mut state = self.lock();
                state.last_error = None;
                state.last_failed_revision = None;
                Ok(false)
            }
            Ok(Some(set)) => {
                let revision = set.revision.clone();
                let keys = set.keys().len();
                log_warnings(&set);
                self.current.store(Arc::new(set));
                self.reloads_ok.fetch_add(1, Ordering::Relaxed);
                let mut state = self.lock();
                state.loaded_at = SystemTime::now();
                state.last_error = None;
                state.last_failed_revision = None;
                tracing::info!(%revision, flags = keys, source = %path.display(), "flags reloaded");
                Ok(true)
            }
            Err(DefinitionErrors(errors)) if errors.is_empty() => Ok(false),
            Err(errors) => {
                let message = errors.to_string();
                let mut state = self.lock();
                if !new_bad_content && state.last_error.as_deref() == Some(message.as_str()) {
                    // Still the same problem reading the source (e.g. a
                    // missing directory on every poll): counted and logged
                    // once.
                    return Err(errors);
                }
                state.last_error = Some(message);
                drop(state);
                self.reloads_failed.fetch_add(1, Ordering::Relaxed);
                for error in &errors.0 {
                    tracing::warn!(
                        file = %error.file,
                        flag = error.flag.as_deref().unwrap_or(""),
                        problem = %error.problem,
                        "flag reload failed: keeping the last good flags"
                    );
                }
                Err(errors)
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The store's status.
    pub fn status(&self) -> StoreStatus {
        let state = self.lock();
        StoreStatus {
            source: self
                .path
                .as_ref()
                .map_or_else(|| "built-in".to_owned(), |p| p.display().to_string()),
            revision: self.current.load().revision.clone(),
            loaded_at: state.loaded_at,
            last_error: state.last_error.clone(),
            reloads_ok: self.reloads_ok.load(Ordering::Relaxed),
            reloads_failed: self.reloads_failed.load(Ordering::Relaxed),
            warnings: self.current.load().warnings().len() as u64,
        }
    }
}

/// Watches the store's source directory and reloads on change (debounced),
/// and on every `poll` as a safety net, until `stop` is cancelled.
pub fn spawn_watcher(
    store: Arc<FlagStore>,
    poll: Duration,
    debounce: Duration,
    stop: CancellationToken,
) {
    let Some(path) = store.path().map(Path::to_path_buf) else {
        return;
    };
    let dir = if path.is_dir() {
        path.clone()
    } else {
        path.parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            // Full channel: a reload is already pending, which will see this change.
            let _ = tx.try_send(());
        }
    })
    .and_then(|mut w| {
        w.watch(&dir, notify::RecursiveMode::NonRecursive)
            .map(|()| w)
    });
    let watcher = match watcher {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the flag directory; polling only");
            None
        }
    };
    tokio::spawn(async move {
        let _watcher = watcher;
        let mut ticker = tokio::time::interval(poll);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                Some(()) = rx.recv() => {
                    tokio::time::sleep(debounce).await;
                    while rx.try_recv().is_ok() {}
                }
                _ = ticker.tick() => {}
            }
            let store = Arc::clone(&store);
            // File reads and compilation are blocking work.
            let _ = tokio::task::spawn_blocking(move || store.reload()).await;
        }
    });
}

/// `switchyard_flag_reloads_total{result}`, `switchyard_flags_revision` and
/// `switchyard_flag_load_warnings`, read from the store at scrape time.
struct StoreCollector(Arc<FlagStore>);

impl std::fmt::Debug for StoreCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreCollector")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelSet)]
struct RevisionLabels {
    revision: String,
    source: String,
}

impl prometheus_client::collector::Collector for StoreCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::metrics::MetricType;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        let status = self.0.status();
        crate::metrics::family(
            &mut encoder,
            "flag_reloads",
            "Flag source reloads, by result (a failed reload keeps the last good flags)",
            MetricType::Counter,
            &[
                (
                    ResultLabels { result: "ok" },
                    ConstCounter::new(status.reloads_ok),
                ),
                (
                    ResultLabels { result: "failed" },
                    ConstCounter::new(status.reloads_failed),
                ),
            ],
        )?;
        crate::metrics::family(
            &mut encoder,
            "flags_revision",
            "The loaded flag revision (value 1)",
            MetricType::Gauge,
            &[(
                RevisionLabels {
                    revision: status.revision,
                    source: status.source,
                },
                ConstGauge::new(1i64),
            )],
        )?;
        crate::metrics::single(
            &mut encoder,
            "flag_load_warnings",
            "Problems flagd tolerates in the served flags (each logged with its flag and rule at load)",
            MetricType::Gauge,
            ConstGauge::new(i64::try_from(status.warnings).unwrap_or(i64::MAX)),
        )
    }
}

impl FlagStore {
    /// Registers the store's series on `own` (the `switchyard_` sub-registry).
    pub fn register_metrics(self: &Arc<Self>, own: &mut prometheus_client::registry::Registry) {
        own.register_collector(Box::new(StoreCollector(Arc::clone(self))));
    }
}
