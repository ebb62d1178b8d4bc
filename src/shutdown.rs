//! Stop signals and how a drain ended (and so how `serve` exits).
//!
//! The server takes its stop signals as a stream parameter: production passes
//! SIGTERM/SIGINT, tests pass a channel. The first signal starts the drain, a
//! second one ends it at once.

use futures::Stream;

use crate::exit::Exit;

/// A request to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGTERM: the kubelet's termination signal.
    Terminate,
    /// SIGINT: Ctrl-C.
    Interrupt,
}

/// How `run_until_stopped` ended, and the process exit code for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainOutcome {
    /// Every in-flight RPC finished within the drain timeout.
    Drained,
    /// The drain timeout passed with RPCs still in flight.
    DeadlineExceeded,
    /// A second stop signal arrived during the drain.
    Forced,
}

impl DrainOutcome {
    /// 0 when everything drained, 1 when the deadline forced the exit, 130
    /// when a second signal did.
    pub fn exit_code(self) -> Exit {
        match self {
            DrainOutcome::Drained => Exit::Ok,
            DrainOutcome::DeadlineExceeded => Exit::Failed,
            DrainOutcome::Forced => Exit::Interrupted,
        }
    }
}

/// SIGTERM and SIGINT as a stream of [`StopSignal`]s.
pub fn os_signals() -> std::io::Result<impl Stream<Item = StopSignal> + Send + Unpin + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        loop {
            let sig = tokio::select! {
                Some(()) = term.recv() => StopSignal::Terminate,
                Some(()) = int.recv() => StopSignal::Interrupt,
                else => break,
            };
            if tx.send(sig).await.is_err() {
                break;
            }
        }
    });
    Ok(tokio_stream::wrappers::ReceiverStream::new(rx))
}
