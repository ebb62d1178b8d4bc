//! Logging: JSON lines on stdout (pretty on a terminal), level from
//! `RUST_LOG` or the settings. `init` returns a guard that flushes on drop.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::configuration::{LogFormat, LogSettings};

/// Keeps telemetry alive; dropping it flushes what is buffered.
#[must_use = "telemetry is flushed when the guard drops"]
pub struct TelemetryGuard {
    _private: (),
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        use std::io::Write;
        let _ = std::io::stdout().flush();
    }
}

/// Installs the global log subscriber. The format defaults to JSON unless
/// stdout is a terminal.
pub fn init(settings: &LogSettings) -> TelemetryGuard {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let format = settings
        .format
        .unwrap_or(if std::io::stdout().is_terminal() {
            LogFormat::Pretty
        } else {
            LogFormat::Json
        });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    let installed = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
    if let Err(e) = installed {
        eprintln!("switchyard: logging already initialised: {e}");
    }
    TelemetryGuard { _private: () }
}
