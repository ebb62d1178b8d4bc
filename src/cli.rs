//! The command line: `serve` (the default) and `check`.
//!
//! Flag values stay strings here and become settings overrides, so every
//! value is checked once, by [`crate::configuration`], with the same one-line
//! messages whatever layer it came from.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::configuration::Overrides;

/// Switchyard: language detection over gRPC, built for zero-downtime releases.
#[derive(Debug, Parser)]
#[command(
    name = "switchyard",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// What to run; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// `serve`'s flags, accepted without the subcommand too.
    #[command(flatten)]
    pub serve: ServeArgs,
}

impl Cli {
    /// The command to run: a bare `switchyard [FLAGS]` is `serve [FLAGS]`.
    pub fn command(self) -> Command {
        self.command.unwrap_or(Command::Serve(Box::new(self.serve)))
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve gRPC (the default).
    Serve(Box<ServeArgs>),
    /// Probe a server's health; exit 0 only when the service is SERVING.
    Check(CheckArgs),
}

/// `switchyard serve`. Every flag overrides the same setting from the file
/// and the environment (`SWITCHYARD__SECTION__KEY`).
#[derive(Debug, Default, Args)]
pub struct ServeArgs {
    /// Settings file, YAML or TOML.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// gRPC listen address [default: 0.0.0.0:50051] (server.grpc_addr).
    #[arg(long, value_name = "HOST:PORT")]
    pub grpc_addr: Option<String>,
    /// Admin HTTP listen address [default: 0.0.0.0:9090] (server.admin_addr).
    #[arg(long, value_name = "HOST:PORT")]
    pub admin_addr: Option<String>,
    /// Seconds to keep serving after SIGTERM [default: 5] (drain.delay).
    #[arg(long, value_name = "SECONDS", allow_hyphen_values = true)]
    pub drain_delay: Option<String>,
    /// Seconds to wait for in-flight RPCs [default: 20] (drain.timeout).
    #[arg(long, value_name = "SECONDS", allow_hyphen_values = true)]
    pub drain_timeout: Option<String>,
    /// stable | canary | blue | green | shadow [default: stable] (deployment.track).
    #[arg(long, value_name = "TRACK")]
    pub track: Option<String>,
    /// Longest text accepted, in characters [default: 10000] (detector.max_text_chars).
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub max_text_chars: Option<String>,
    /// Detect calls served at once; more are shed [default: 256] (server.max_concurrent_requests).
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub max_concurrent_requests: Option<String>,
    /// Largest request message in bytes [default: 4194304] (server.max_decoding_message_size).
    #[arg(long, value_name = "BYTES", allow_hyphen_values = true)]
    pub max_decoding_message_size: Option<String>,
    /// whatlang | lingua [default: whatlang] (detector.default_engine).
    #[arg(long, value_name = "ENGINE")]
    pub default_engine: Option<String>,
    /// Seconds of runtime stall before liveness fails [default: 10] (health.liveness_stall_threshold).
    #[arg(long, value_name = "SECONDS", allow_hyphen_values = true)]
    pub liveness_stall_threshold: Option<String>,
    /// File created when ready, removed when draining (health.ready_file).
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<String>,
    /// json | pretty [default: json unless stdout is a terminal] (log.format).
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// Log filter such as `info`; `RUST_LOG` wins when set [default: info] (log.level).
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
}

impl ServeArgs {
    /// The flags as the top settings layer.
    pub fn overrides(&self) -> Overrides {
        let pairs: [(&'static str, &Option<String>); 13] = [
            ("server.grpc_addr", &self.grpc_addr),
            ("server.admin_addr", &self.admin_addr),
            ("drain.delay", &self.drain_delay),
            ("drain.timeout", &self.drain_timeout),
            ("deployment.track", &self.track),
            ("detector.max_text_chars", &self.max_text_chars),
            (
                "server.max_concurrent_requests",
                &self.max_concurrent_requests,
            ),
            (
                "server.max_decoding_message_size",
                &self.max_decoding_message_size,
            ),
            ("detector.default_engine", &self.default_engine),
            (
                "health.liveness_stall_threshold",
                &self.liveness_stall_threshold,
            ),
            ("health.ready_file", &self.ready_file),
            ("log.format", &self.log_format),
            ("log.level", &self.log_level),
        ];
        Overrides {
            config_file: self.config.clone(),
            values: pairs
                .into_iter()
                .filter_map(|(key, value)| value.clone().map(|v| (key, v)))
                .collect(),
        }
    }
}

/// `switchyard check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Server address.
    #[arg(long, default_value = "127.0.0.1:50051", value_name = "HOST:PORT")]
    pub addr: String,
    /// Health service to check ("" is the overall status).
    #[arg(long, default_value = "readiness", value_name = "NAME")]
    pub service: String,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 2.0, value_name = "SECONDS")]
    pub timeout: f64,
}
