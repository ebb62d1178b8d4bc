//! The operator tools: every subcommand but `serve`. Each tool owns its clap
//! arguments and a `run` that returns the process's [`Exit`]; the command
//! line ([`crate::cli`]) only lists them, and nothing here imports it.
//!
//! - [`check`]: the health probe (`switchyard check`).
//! - [`flags`]: flag files offline (`switchyard flags validate|eval`).
//! - [`smoke`]: the post-deploy smoke test (`switchyard smoke`).
//! - [`smoke_webhook`]: the smoke test behind Flagger's pre-rollout webhook.
//! - [`watch`]: live shares and failures during a release.
//! - [`client`]: what the gRPC tools share: the one address parser
//!   ([`client::Target`]) and the reading of client-side errors.
//!
//! The asynchronous tools run on the runtime [`run`] builds, one
//! current-thread runtime per invocation: a tool is one client, and an exec
//! probe such as `check` should not start a thread per core every few
//! seconds.

pub mod check;
pub mod client;
pub mod flags;
pub mod smoke;
pub mod smoke_webhook;
pub mod watch;

use std::future::Future;
use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::exit::{Exit, fail};

/// Ctrl-C (SIGINT), listened for from the moment the tool's runtime starts.
/// While it is held, SIGINT no longer ends the process by itself: the tool
/// decides what an interruption means (see [`run_interruptible`]).
#[derive(Debug)]
pub struct Interrupt(Signal);

impl Interrupt {
    /// Completes at the next SIGINT.
    pub async fn recv(&mut self) {
        if self.0.recv().await.is_none() {
            // The signal driver is gone: no SIGINT will ever be seen.
            std::future::pending::<()>().await;
        }
    }
}

/// Runs the tool `tool` builds on the tools' runtime and returns its exit.
/// SIGINT is listened for before the tool starts and handed to it, so a
/// Ctrl-C is never lost to a race with the tool's setup. Tasks the tool
/// leaves behind (a resolver still blocked on DNS) do not delay the exit.
pub fn run<F, Fut>(tool: F) -> Exit
where
    F: FnOnce(Interrupt) -> Fut,
    Fut: Future<Output = Exit>,
{
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(Exit::Failed, &format!("cannot start the runtime: {e}")),
    };
    let exit = runtime.block_on(async {
        match signal(SignalKind::interrupt()) {
            Ok(sigint) => tool(Interrupt(sigint)).await,
            Err(e) => fail(Exit::Failed, &format!("cannot listen for Ctrl-C: {e}")),
        }
    });
    runtime.shutdown_background();
    exit
}

/// [`run`] for a tool whose interruption simply ends it: Ctrl-C stops `tool`
/// where it is, says `switchyard: interrupted` on stderr and exits 130.
pub fn run_interruptible(tool: impl Future<Output = Exit>) -> Exit {
    run(|mut interrupt| async move {
        tokio::select! {
            exit = tool => exit,
            () = interrupt.recv() => fail(Exit::Interrupted, &"interrupted"),
        }
    })
}

/// The longest time a tool's option takes: a year. Longer is a typo, and
/// adding it to a clock could overflow.
const MAX_SECONDS: u64 = 365 * 24 * 3600;

/// A positive number of seconds up to a year, or a usage error naming
/// `flag`.
pub fn seconds(flag: &str, value: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero() && *d <= Duration::from_secs(MAX_SECONDS))
        .ok_or_else(|| {
            format!("invalid {flag} {value}: expected a positive number of seconds, at most {MAX_SECONDS}")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_must_be_positive_and_finite() {
        assert_eq!(seconds("--timeout", 0.5), Ok(Duration::from_millis(500)));
        assert_eq!(
            seconds("--duration", 31_536_000.0),
            Ok(Duration::from_secs(MAX_SECONDS))
        );
        for bad in [
            0.0,
            -1.0,
            f64::NAN,
            f64::INFINITY,
            1e300,
            1.8e19,
            31_536_001.0,
        ] {
            let err = seconds("--timeout", bad).expect_err("refused");
            assert!(err.starts_with("invalid --timeout "), "{err}");
        }
    }

    #[test]
    fn run_returns_the_tools_exit() {
        assert_eq!(run(|_| async { Exit::Failed }), Exit::Failed);
        assert_eq!(run_interruptible(async { Exit::Ok }), Exit::Ok);
    }
}
