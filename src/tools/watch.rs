//! `switchyard watch`: what a person runs during a release. It calls Detect at
//! a steady rate as many synthetic users, and shows every second who answered
//! (version, track, engine) and what failed, then sums up: calls, failures by
//! code, and the longest stretch without a successful reply.
//!
//! Three layers: [`Tally`] is pure statistics over timestamped outcomes (unit
//! tested with injected times); [`View`] renders snapshots (a live terminal
//! view with indicatif, or plain lines when stdout is not a terminal);
//! [`watch`] drives the calls, paced and bounded, and feeds the tally. [`run`]
//! is the command: it picks the view and maps the end to an exit code.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::MissedTickBehavior;
use tonic::Code;

use super::client::Target;
use crate::engine::Language;
use crate::exit::{Exit, fail};
use crate::grpc::pb::detector_client::DetectorClient;
use crate::grpc::{codes, pb};

/// `switchyard watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    // This doc comment is the flag's `--help` text, where [IPV6] is literal.
    #[allow(rustdoc::broken_intra_doc_links)]
    /// Server (or mesh entry) address: HOST:PORT or [IPV6]:PORT, no scheme.
    #[arg(long, value_name = "HOST:PORT")]
    pub addr: String,
    /// Detect calls per second.
    #[arg(long, default_value_t = 50, value_name = "N")]
    pub rps: u32,
    /// Synthetic users `user-0`..`user-{N-1}`, sent in turn as `x-user-id`.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub user_ids: u32,
    /// Stop after this many seconds [default: at Ctrl-C].
    #[arg(long, value_name = "SECONDS", allow_hyphen_values = true)]
    pub duration: Option<f64>,
}

/// Runs `switchyard watch` until `--duration` passes or Ctrl-C: a live view
/// on a terminal, a line per second otherwise, then the summary. 0 when no
/// call failed, 1 otherwise, 2 for bad usage; 130 when Ctrl-C cut a
/// `--duration` short (without `--duration`, Ctrl-C is the normal end).
pub fn run(args: &WatchArgs) -> Exit {
    use std::io::IsTerminal;

    let duration = match args
        .duration
        .map(|d| super::seconds("--duration", d))
        .transpose()
    {
        Ok(duration) => duration,
        Err(e) => return fail(Exit::Usage, &e),
    };
    let target: Target = match args.addr.parse() {
        Ok(target) => target,
        Err(e) => return fail(Exit::Usage, &e),
    };
    let opts = WatchOptions {
        target,
        rps: args.rps,
        user_ids: args.user_ids,
        duration,
        deadline: CALL_DEADLINE,
    };
    let mut view: Box<dyn View> = if std::io::stdout().is_terminal() {
        Box::new(LiveView::new(&opts.target.to_string()))
    } else {
        Box::new(PlainView::new(std::io::stdout()))
    };
    super::run(|mut interrupt| async move {
        let interrupted = Cell::new(false);
        let stop = async {
            interrupt.recv().await;
            interrupted.set(true);
        };
        match watch(&opts, stop, view.as_mut()).await {
            Err(e) => fail(Exit::Usage, &e),
            Ok(_) if interrupted.get() && opts.duration.is_some() => {
                fail(Exit::Interrupted, &"interrupted before --duration passed")
            }
            Ok(summary) => Exit::ok_if(summary.total.failed() == 0),
        }
    })
}

// ---------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------

/// Who answered a call: the reply's `served_by.version`, `served_by.track`
/// and `engine`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Served {
    pub version: String,
    pub track: String,
    pub engine: String,
}

impl Served {
    /// From a reply; `?` for anything the reply leaves out.
    pub fn from_reply(reply: &pb::DetectResponse) -> Self {
        let or_unknown = |s: &str| {
            if s.is_empty() {
                "?".to_owned()
            } else {
                s.to_owned()
            }
        };
        let served_by = reply.served_by.clone().unwrap_or_default();
        Self {
            version: or_unknown(&served_by.version),
            track: or_unknown(&served_by.track),
            engine: or_unknown(&reply.engine),
        }
    }
}

/// Outcomes counted over some span: replies by who served them, failures by
/// gRPC code, and calls not made because the in-flight bound was reached.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub replies: BTreeMap<Served, u64>,
    pub failures: BTreeMap<&'static str, u64>,
    pub skipped: u64,
}

impl Counts {
    /// Successful replies.
    pub fn ok(&self) -> u64 {
        self.replies.values().sum()
    }

    /// Failed calls, whatever the code.
    pub fn failed(&self) -> u64 {
        self.failures.values().sum()
    }

    /// Calls made (answered or failed).
    pub fn calls(&self) -> u64 {
        self.ok() + self.failed()
    }

    /// Each (version, track, engine) with its count and its share of replies
    /// (0 to 1), most frequent first.
    pub fn shares(&self) -> Vec<(&Served, u64, f64)> {
        let ok = self.ok();
        let mut shares: Vec<_> = self
            .replies
            .iter()
            .map(|(served, &n)| (served, n, n as f64 / ok.max(1) as f64))
            .collect();
        shares.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        shares
    }

    fn ok_from(&mut self, served: Served) {
        *self.replies.entry(served).or_default() += 1;
    }

    fn failed_with(&mut self, code: Code) {
        *self.failures.entry(codes::name(code)).or_default() += 1;
    }
}

/// The statistics of a watch: outcomes with the time they happened, bucketed
/// per second since `start`, and the longest time without a successful reply.
/// Pure: every time is passed in.
#[derive(Debug, Clone)]
pub struct Tally {
    start: Instant,
    total: Counts,
    seconds: BTreeMap<u64, Counts>,
    /// The latest successful reply (or the start, before the first).
    last_ok: Instant,
    longest_gap: Duration,
}

/// The view of one second, with the totals so far.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Which second since the start (0 is the first).
    pub second: u64,
    /// What happened in that second.
    pub counts: Counts,
    /// Everything so far.
    pub total: Counts,
    /// The longest time without a successful reply so far, including the
    /// current one if it is the longest.
    pub longest_gap: Duration,
}

/// The end of a watch.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// From the start to the end.
    pub elapsed: Duration,
    pub total: Counts,
    /// The longest time without a successful reply, counting from the start
    /// and up to the end.
    pub longest_gap: Duration,
}

impl Tally {
    /// An empty tally whose clock starts at `start`.
    pub fn new(start: Instant) -> Self {
        Self {
            start,
            total: Counts::default(),
            seconds: BTreeMap::new(),
            last_ok: start,
            longest_gap: Duration::ZERO,
        }
    }

    fn bucket(&mut self, at: Instant) -> &mut Counts {
        let second = at.saturating_duration_since(self.start).as_secs();
        self.seconds.entry(second).or_default()
    }

    /// A successful reply at `at`, served by `served`.
    pub fn ok(&mut self, at: Instant, served: Served) {
        // Outcomes can arrive slightly out of order (calls run concurrently):
        // an earlier one falls inside a gap already measured.
        if at > self.last_ok {
            self.longest_gap = self.longest_gap.max(at - self.last_ok);
            self.last_ok = at;
        }
        self.bucket(at).ok_from(served.clone());
        self.total.ok_from(served);
    }

    /// A call that failed at `at` with `code`.
    pub fn failed(&mut self, at: Instant, code: Code) {
        self.bucket(at).failed_with(code);
        self.total.failed_with(code);
    }

    /// `n` calls not made at `at` because too many were in flight.
    pub fn skipped(&mut self, at: Instant, n: u64) {
        self.bucket(at).skipped += n;
        self.total.skipped += n;
    }

    /// The outcomes of `second` (0-based since the start) and the totals.
    pub fn snapshot(&self, second: u64, now: Instant) -> Snapshot {
        Snapshot {
            second,
            counts: self.seconds.get(&second).cloned().unwrap_or_default(),
            total: self.total.clone(),
            longest_gap: self.longest_gap_until(now),
        }
    }

    /// The last whole second before `now`, if one has passed.
    pub fn last_complete_second(&self, now: Instant) -> Option<u64> {
        now.saturating_duration_since(self.start)
            .as_secs()
            .checked_sub(1)
    }

    /// The summary of a watch that ended at `end`.
    pub fn summary(&self, end: Instant) -> Summary {
        Summary {
            elapsed: end.saturating_duration_since(self.start),
            total: self.total.clone(),
            longest_gap: self.longest_gap_until(end),
        }
    }

    fn longest_gap_until(&self, now: Instant) -> Duration {
        self.longest_gap
            .max(now.saturating_duration_since(self.last_ok))
    }
}

// ---------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------

fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

fn failures_line(counts: &Counts, sep: &str) -> String {
    if counts.failures.is_empty() {
        return "none".into();
    }
    let parts: Vec<String> = counts
        .failures
        .iter()
        .map(|(code, n)| format!("{code}{sep}{n}"))
        .collect();
    parts.join(" ")
}

/// One plain line per second: `[3s] 50 replies: 0.1.0/stable/whatlang 100.0% | failures/s: none | total: 150 calls, 0 failed`.
pub fn plain_line(s: &Snapshot) -> String {
    let mut line = format!("[{}s] {} replies:", s.second + 1, s.counts.ok());
    for (served, _, share) in s.counts.shares() {
        let _ = write!(
            line,
            " {}/{}/{} {}",
            served.version,
            served.track,
            served.engine,
            percent(share)
        );
    }
    let _ = write!(
        line,
        " | failures/s: {} | total: {} calls, {} failed",
        failures_line(&s.counts, "="),
        s.total.calls(),
        s.total.failed()
    );
    if s.counts.skipped > 0 {
        let _ = write!(line, ", {} not sent (in-flight bound)", s.counts.skipped);
    }
    line
}

/// The lines of the live terminal view for one second.
pub fn live_lines(addr: &str, s: &Snapshot) -> Vec<String> {
    let mut lines = vec![format!(
        "watching {addr}  {}s  total {} calls, {} failed  longest gap {:.2}s",
        s.second + 1,
        s.total.calls(),
        s.total.failed(),
        s.longest_gap.as_secs_f64()
    )];
    lines.push(format!("  last second: {} replies", s.counts.ok()));
    let width = |f: fn(&Served) -> &str| {
        s.counts
            .replies
            .keys()
            .map(|k| f(k).len())
            .max()
            .unwrap_or(0)
    };
    let (wv, wt, we) = (
        width(|k| &k.version),
        width(|k| &k.track),
        width(|k| &k.engine),
    );
    for (served, n, share) in s.counts.shares() {
        lines.push(format!(
            "    {:wv$}  {:wt$}  {:we$}  {:>6}  ({n}/s)",
            served.version,
            served.track,
            served.engine,
            percent(share)
        ));
    }
    lines.push(format!("  failures/s: {}", failures_line(&s.counts, " ")));
    if s.counts.skipped > 0 {
        lines.push(format!(
            "  not sent (in-flight bound): {}/s",
            s.counts.skipped
        ));
    }
    lines
}

/// The summary, a few `key: ...` lines meant for people and for grep.
pub fn summary_lines(s: &Summary) -> Vec<String> {
    let mut lines = vec![format!(
        "summary: calls={} ok={} failed={} not_sent={} duration={:.2}s longest_gap={:.3}s",
        s.total.calls(),
        s.total.ok(),
        s.total.failed(),
        s.total.skipped,
        s.elapsed.as_secs_f64(),
        s.longest_gap.as_secs_f64()
    )];
    for (served, n, share) in s.total.shares() {
        lines.push(format!(
            "share: version={} track={} engine={} replies={n} ({})",
            served.version,
            served.track,
            served.engine,
            percent(share)
        ));
    }
    lines.push(format!("failures: {}", failures_line(&s.total, "=")));
    lines
}

/// Where snapshots and the summary go.
pub trait View {
    /// A second has passed.
    fn second(&mut self, snapshot: &Snapshot);
    /// The watch is over.
    fn finish(&mut self, summary: &Summary);
}

/// One line per second and the summary, for pipes, files and CI logs.
pub struct PlainView<W: Write> {
    out: W,
}

impl<W: Write> PlainView<W> {
    pub fn new(out: W) -> Self {
        Self { out }
    }

    /// What was written.
    pub fn into_inner(self) -> W {
        self.out
    }
}

impl<W: Write> View for PlainView<W> {
    fn second(&mut self, snapshot: &Snapshot) {
        let _ = writeln!(self.out, "{}", plain_line(snapshot));
        let _ = self.out.flush();
    }

    fn finish(&mut self, summary: &Summary) {
        for line in summary_lines(summary) {
            let _ = writeln!(self.out, "{line}");
        }
        let _ = self.out.flush();
    }
}

/// A block of lines redrawn in place every second, through indicatif (one
/// message-only bar per line), then replaced by the summary.
pub struct LiveView {
    addr: String,
    multi: MultiProgress,
    bars: Vec<ProgressBar>,
    style: ProgressStyle,
}

impl LiveView {
    pub fn new(addr: &str) -> Self {
        Self {
            addr: addr.to_owned(),
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stdout()),
            bars: Vec::new(),
            style: ProgressStyle::with_template("{wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        }
    }
}

impl View for LiveView {
    fn second(&mut self, snapshot: &Snapshot) {
        let lines = live_lines(&self.addr, snapshot);
        while self.bars.len() < lines.len() {
            let bar = ProgressBar::new_spinner().with_style(self.style.clone());
            self.bars.push(self.multi.add(bar));
        }
        while self.bars.len() > lines.len() {
            if let Some(bar) = self.bars.pop() {
                bar.finish_and_clear();
                self.multi.remove(&bar);
            }
        }
        for (bar, line) in self.bars.iter().zip(lines) {
            bar.set_message(line);
        }
    }

    fn finish(&mut self, summary: &Summary) {
        for bar in self.bars.drain(..) {
            bar.finish_and_clear();
        }
        let _ = self.multi.clear();
        let mut out = std::io::stdout().lock();
        for line in summary_lines(summary) {
            let _ = writeln!(out, "{line}");
        }
    }
}

// ---------------------------------------------------------------------------
// Driving the calls
// ---------------------------------------------------------------------------

/// The deadline of each Detect call.
pub const CALL_DEADLINE: Duration = Duration::from_secs(2);

/// What to watch and how hard.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// The server (or the mesh's entry).
    pub target: Target,
    /// Calls per second.
    pub rps: u32,
    /// Synthetic users `user-0` .. `user-{N-1}`, in turn as `x-user-id`.
    pub user_ids: u32,
    /// How long to watch; `None` until `stop` completes.
    pub duration: Option<Duration>,
    /// The deadline of each call.
    pub deadline: Duration,
}

impl WatchOptions {
    /// Calls allowed in flight at once: enough to keep the rate when every
    /// call takes the whole deadline, and never unbounded.
    pub fn max_in_flight(&self) -> usize {
        let sustain = (f64::from(self.rps) * self.deadline.as_secs_f64()).ceil() as usize;
        sustain.clamp(1, 4096)
    }
}

/// Why a watch could not start (bad usage, exit 2).
#[derive(Debug, thiserror::Error)]
#[error("invalid {0}")]
pub struct WatchError(String);

/// The highest `--rps` accepted.
pub const MAX_RPS: u32 = 10_000;

/// Watches until `opts.duration` passes or `stop` completes (Ctrl-C), then
/// waits for the calls in flight (each bounded by its deadline) and returns
/// the summary, which it has also handed to `view`.
pub async fn watch(
    opts: &WatchOptions,
    stop: impl Future<Output = ()>,
    view: &mut dyn View,
) -> Result<Summary, WatchError> {
    if opts.rps == 0 || opts.rps > MAX_RPS {
        return Err(WatchError(format!(
            "--rps {}: expected 1 to {MAX_RPS}",
            opts.rps
        )));
    }
    if opts.user_ids == 0 {
        return Err(WatchError("--user-ids 0: expected at least 1".into()));
    }
    if opts.duration.is_some_and(|d| d.is_zero()) {
        return Err(WatchError("--duration: must be positive".into()));
    }
    let channel = opts.target.endpoint(opts.deadline).connect_lazy();
    let client = DetectorClient::new(channel);

    let max_in_flight = opts.max_in_flight();
    let permits = Arc::new(Semaphore::new(max_in_flight));
    let (tx, mut rx) = mpsc::channel::<(Instant, Result<Served, Code>)>(max_in_flight);
    let mut tx = Some(tx);

    let start = Instant::now();
    let mut tally = Tally::new(start);
    let rps = f64::from(opts.rps);
    // Calls k = 0, 1, ... are due at k / rps; within the duration there are
    // exactly ceil(duration * rps) of them.
    let planned = opts.duration.map(|d| (d.as_secs_f64() * rps).ceil() as u64);
    let mut pacer =
        tokio::time::interval(Duration::from_secs_f64(1.0 / rps).max(Duration::from_millis(5)));
    pacer.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let tokio_start = tokio::time::Instant::from_std(start);
    let mut display =
        tokio::time::interval_at(tokio_start + Duration::from_secs(1), Duration::from_secs(1));
    display.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let until = async {
        match opts.duration {
            Some(d) => tokio::time::sleep_until(tokio_start + d).await,
            None => std::future::pending().await,
        }
    };
    let mut stop = std::pin::pin!(stop);
    let mut until = std::pin::pin!(until);
    let mut issued: u64 = 0;
    let mut shown: Option<u64> = None;

    loop {
        tokio::select! {
            _ = pacer.tick(), if tx.is_some() => {
                let now = Instant::now();
                let due = ((now - start).as_secs_f64() * rps) as u64 + 1;
                let due = planned.map_or(due, |p| due.min(p));
                while issued < due {
                    let Some(sender) = tx.clone() else { break };
                    let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                        // At the bound: these calls are not made (and not
                        // made up later), and the view says so.
                        tally.skipped(now, due - issued);
                        issued = due;
                        break;
                    };
                    let user = format!("user-{}", issued % u64::from(opts.user_ids));
                    let text = Language::ALL[(issued % Language::ALL.len() as u64) as usize];
                    tokio::spawn(call(client.clone(), user, super::smoke::sentence(text), opts.deadline, sender, permit));
                    issued += 1;
                }
            }
            _ = display.tick() => shown = show_seconds(&tally, shown, view),
            outcome = rx.recv() => match outcome {
                Some((at, Ok(served))) => tally.ok(at, served),
                Some((at, Err(code))) => tally.failed(at, code),
                // Stopped and every call in flight has reported.
                None => break,
            },
            () = &mut stop, if tx.is_some() => tx = None,
            () = &mut until, if tx.is_some() => tx = None,
        }
    }
    // The last whole second, if the display tick lost the race with the end.
    show_seconds(&tally, shown, view);
    let summary = tally.summary(Instant::now());
    view.finish(&summary);
    Ok(summary)
}

/// Shows the last whole second if it is newer than `shown`; returns the
/// second now shown.
fn show_seconds(tally: &Tally, shown: Option<u64>, view: &mut dyn View) -> Option<u64> {
    let now = Instant::now();
    match tally.last_complete_second(now) {
        Some(second) if shown.is_none_or(|s| second > s) => {
            view.second(&tally.snapshot(second, now));
            Some(second)
        }
        _ => shown,
    }
}

/// One Detect call as `user`, bounded by `deadline`, reported on `report`.
async fn call(
    mut client: DetectorClient<tonic::transport::Channel>,
    user: String,
    text: &'static str,
    deadline: Duration,
    report: mpsc::Sender<(Instant, Result<Served, Code>)>,
    _permit: tokio::sync::OwnedSemaphorePermit,
) {
    let mut request = tonic::Request::new(pb::DetectRequest { text: text.into() });
    request.set_timeout(deadline);
    if let Ok(value) = user.parse() {
        request.metadata_mut().insert("x-user-id", value);
    }
    let outcome = match tokio::time::timeout(deadline, client.detect(request)).await {
        Ok(Ok(reply)) => Ok(Served::from_reply(reply.get_ref())),
        Ok(Err(status)) => Err(status.code()),
        Err(_) => Err(Code::DeadlineExceeded),
    };
    let _ = report.send((Instant::now(), outcome)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(version: &str, track: &str, engine: &str) -> Served {
        Served {
            version: version.into(),
            track: track.into(),
            engine: engine.into(),
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn shares_are_by_version_track_and_engine_most_frequent_first() {
        let t0 = Instant::now();
        let mut tally = Tally::new(t0);
        for i in 0..10 {
            let engine = if i < 8 { "whatlang" } else { "lingua" };
            tally.ok(t0 + ms(10 * i), served("v1", "stable", engine));
        }
        tally.ok(t0 + ms(200), served("v2", "canary", "lingua"));
        let summary = tally.summary(t0 + ms(300));
        let shares: Vec<(String, u64, String)> = summary
            .total
            .shares()
            .into_iter()
            .map(|(s, n, share)| {
                (
                    format!("{}/{}/{}", s.version, s.track, s.engine),
                    n,
                    percent(share),
                )
            })
            .collect();
        assert_eq!(
            shares,
            vec![
                ("v1/stable/whatlang".into(), 8, "72.7%".into()),
                ("v1/stable/lingua".into(), 2, "18.2%".into()),
                ("v2/canary/lingua".into(), 1, "9.1%".into()),
            ]
        );
        assert_eq!((summary.total.calls(), summary.total.failed()), (11, 0));
    }

    #[test]
    fn each_second_counts_only_its_own_outcomes_and_failures_by_code() {
        let t0 = Instant::now();
        let mut tally = Tally::new(t0);
        let v1 = served("v1", "stable", "whatlang");
        tally.ok(t0 + ms(100), v1.clone());
        tally.failed(t0 + ms(500), Code::Unavailable);
        tally.failed(t0 + ms(1_100), Code::Unavailable);
        tally.failed(t0 + ms(1_200), Code::Unavailable);
        tally.failed(t0 + ms(1_300), Code::DeadlineExceeded);
        tally.ok(t0 + ms(1_900), v1.clone());

        assert_eq!(tally.last_complete_second(t0 + ms(999)), None);
        assert_eq!(tally.last_complete_second(t0 + ms(1_001)), Some(0));
        let first = tally.snapshot(0, t0 + ms(1_001));
        assert_eq!(first.counts.ok(), 1);
        assert_eq!(first.counts.failures, BTreeMap::from([("UNAVAILABLE", 1)]));
        let second = tally.snapshot(1, t0 + ms(2_001));
        assert_eq!(second.counts.ok(), 1);
        assert_eq!(
            second.counts.failures,
            BTreeMap::from([("DEADLINE_EXCEEDED", 1), ("UNAVAILABLE", 2)])
        );
        assert_eq!(second.total.failed(), 4);
        assert_eq!(second.total.calls(), 6);
        assert_eq!(
            plain_line(&second),
            "[2s] 1 replies: v1/stable/whatlang 100.0% | failures/s: DEADLINE_EXCEEDED=1 UNAVAILABLE=2 | total: 6 calls, 4 failed"
        );
        // A second with nothing in it is empty, not an error.
        assert_eq!(tally.snapshot(7, t0 + ms(8_001)).counts, Counts::default());
    }

    #[test]
    fn the_longest_gap_is_the_longest_time_without_a_successful_reply() {
        let t0 = Instant::now();
        let mut tally = Tally::new(t0);
        let v = served("v1", "stable", "whatlang");
        tally.ok(t0 + ms(20), v.clone());
        tally.ok(t0 + ms(40), v.clone());
        // The server goes away: failures do not end a gap.
        tally.failed(t0 + ms(100), Code::Unavailable);
        tally.failed(t0 + ms(600), Code::Unavailable);
        tally.ok(t0 + ms(740), v.clone());
        // Late, out-of-order arrival inside an already measured gap.
        tally.ok(t0 + ms(500), v.clone());
        tally.ok(t0 + ms(760), v.clone());
        assert_eq!(tally.summary(t0 + ms(800)).longest_gap, ms(700));
        // A gap still open at the end counts too.
        assert_eq!(tally.summary(t0 + ms(2_000)).longest_gap, ms(1_240));
        assert_eq!(tally.snapshot(1, t0 + ms(2_000)).longest_gap, ms(1_240));
    }

    #[test]
    fn a_watch_with_no_successful_reply_has_a_gap_as_long_as_itself() {
        let t0 = Instant::now();
        let mut tally = Tally::new(t0);
        tally.failed(t0 + ms(10), Code::Unavailable);
        tally.skipped(t0 + ms(20), 3);
        let summary = tally.summary(t0 + ms(1_500));
        assert_eq!(summary.longest_gap, ms(1_500));
        assert_eq!(summary.total.skipped, 3);
        assert_eq!(
            summary_lines(&summary),
            vec![
                "summary: calls=1 ok=0 failed=1 not_sent=3 duration=1.50s longest_gap=1.500s"
                    .to_owned(),
                "failures: UNAVAILABLE=1".to_owned(),
            ]
        );
    }

    #[test]
    fn the_in_flight_bound_sustains_the_rate_at_the_deadline_and_is_capped() {
        let opts = |rps| WatchOptions {
            target: "127.0.0.1:1".parse().expect("a target"),
            rps,
            user_ids: 1,
            duration: None,
            deadline: Duration::from_secs(2),
        };
        assert_eq!(opts(50).max_in_flight(), 100);
        assert_eq!(opts(1).max_in_flight(), 2);
        assert_eq!(opts(10_000).max_in_flight(), 4096);
    }
}
