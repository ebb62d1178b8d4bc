//! The drain: the five steps of the Kubernetes termination contract as one
//! type with a method per step, named like the README's steps. Every step is
//! bounded, and every log line gives its time since the stop signal
//! (`since_signal_s`), never the process's uptime.
//!
//! 1. [`Drain::signal_received`]: the first stop signal, logged with the budget.
//! 2. [`Drain::mark_not_ready`]: readiness and the service statuses turn
//!    NOT_SERVING at once.
//! 3. [`Drain::keep_serving`]: serving continues for `drain.delay` while load
//!    balancers and the mesh remove the endpoint.
//! 4. [`Drain::close_listener`]: the listener closes, GOAWAY goes out,
//!    long-lived streams end with UNAVAILABLE.
//! 5. [`Drain::wait_for_in_flight`]: in-flight RPCs get up to
//!    `drain.timeout`; the outcome says whether everything finished.
//!
//! A second stop signal during steps 3 or 5 ends the drain at once.

use std::future::Future;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::configuration::DrainSettings;
use crate::health::HealthState;
use crate::shutdown::{DrainOutcome, StopSignal};

/// What step 4 stops: the gRPC listener (and with it HTTP/2 GOAWAY), and the
/// long-lived streams, which a GOAWAY alone would let run forever.
#[derive(Clone, Default)]
pub struct ServingHandles {
    /// Cancelled at step 4: tonic stops accepting and sends GOAWAY.
    pub stop_accepting: CancellationToken,
    /// Cancelled at step 4: DetectStream and health Watch end with
    /// UNAVAILABLE ("server is draining").
    pub end_streams: CancellationToken,
    /// Every long-lived stream; step 5 waits for them to end.
    pub streams: TaskTracker,
}

/// A drain in progress, from the first stop signal on.
pub struct Drain<S> {
    /// The rest of the signal stream: a second signal forces the exit.
    signals: S,
    /// When the first signal arrived: every duration is measured from here.
    signalled: Instant,
    delay: Duration,
    timeout: Duration,
}

impl<S> Drain<S>
where
    S: Stream<Item = StopSignal> + Unpin,
{
    /// Step 1: the first stop signal arrived; logs it with the drain budget.
    pub fn signal_received(signal: StopSignal, signals: S, settings: &DrainSettings) -> Self {
        let (delay, timeout) = (settings.delay, settings.timeout);
        tracing::info!(
            ?signal,
            drain_delay_s = delay.as_secs_f64(),
            drain_timeout_s = timeout.as_secs_f64(),
            budget_s = (delay + timeout).as_secs_f64(),
            "stop signal received: draining"
        );
        Self {
            signals,
            signalled: Instant::now(),
            delay,
            timeout,
        }
    }

    /// Seconds since the stop signal, for the log lines.
    pub fn since_signal(&self) -> Duration {
        self.signalled.elapsed()
    }

    /// Step 2: readiness, `""` and `switchyard.v1.Detector` turn NOT_SERVING.
    pub fn mark_not_ready(&self, health: &HealthState) {
        health.begin_drain();
        tracing::info!(
            since_signal_s = self.since_signal().as_secs_f64(),
            "drain step 2: readiness NOT_SERVING"
        );
    }

    /// Step 3: keeps serving for `drain.delay`. `Err(Forced)` when a second
    /// signal arrives meanwhile.
    pub async fn keep_serving(&mut self) -> Result<(), DrainOutcome> {
        tokio::select! {
            () = tokio::time::sleep(self.delay) => Ok(()),
            Some(signal) = self.signals.next() => Err(self.forced(signal)),
        }
    }

    /// Step 4: closes the listener (GOAWAY to every client) and ends the
    /// long-lived streams.
    pub fn close_listener(&self, serving: &ServingHandles) {
        tracing::info!(
            since_signal_s = self.since_signal().as_secs_f64(),
            "drain step 4: closing the listener, sending GOAWAY, ending streams"
        );
        serving.stop_accepting.cancel();
        serving.end_streams.cancel();
        serving.streams.close();
    }

    /// Step 5: waits up to `drain.timeout` for `in_flight` (the server's
    /// connections and every stream) to finish, and logs how it ended.
    pub async fn wait_for_in_flight(
        &mut self,
        in_flight: impl Future<Output = ()>,
    ) -> DrainOutcome {
        let outcome = tokio::select! {
            finished = tokio::time::timeout(self.timeout, in_flight) => match finished {
                Ok(()) => DrainOutcome::Drained,
                Err(_) => DrainOutcome::DeadlineExceeded,
            },
            Some(signal) = self.signals.next() => return self.forced(signal),
        };
        let after_s = self.since_signal().as_secs_f64();
        match outcome {
            DrainOutcome::Drained => {
                tracing::info!(after_s, "drain complete: every in-flight RPC finished")
            }
            _ => tracing::warn!(
                after_s,
                drain_timeout_s = self.timeout.as_secs_f64(),
                "drain deadline passed with RPCs still in flight: exiting anyway"
            ),
        }
        outcome
    }

    fn forced(&self, signal: StopSignal) -> DrainOutcome {
        tracing::warn!(
            ?signal,
            since_signal_s = self.since_signal().as_secs_f64(),
            "second stop signal: exiting now"
        );
        DrainOutcome::Forced
    }
}
