//! The command line: `serve` (the default) and the operator tools, whose
//! arguments each tool owns ([`crate::tools`]; this module imports them, they
//! never import it).
//!
//! `serve`'s flag values stay strings here and become settings overrides, so
//! every value is checked once, by [`crate::configuration`], with the same
//! one-line messages whatever layer it came from.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::configuration::Overrides;
use crate::tools::check::CheckArgs;
use crate::tools::flags::FlagsCommand;
use crate::tools::smoke::SmokeArgs;
use crate::tools::smoke_webhook::SmokeWebhookArgs;
use crate::tools::watch::WatchArgs;

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
    /// Work with flag files offline.
    #[command(subcommand)]
    Flags(FlagsCommand),
    /// Post-deploy smoke test: readiness, reflection, Detect in every language, GetInfo.
    Smoke(SmokeArgs),
    /// Serve the smoke test as an HTTP webhook (Flagger's pre-rollout hook).
    SmokeWebhook(SmokeWebhookArgs),
    /// Call Detect continuously and show live who answers and what fails (during a release).
    Watch(WatchArgs),
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
    /// Release version reported in replies, e.g. `v2` [default: the build version] (deployment.version).
    #[arg(long, value_name = "VERSION")]
    pub app_version: Option<String>,
    /// Longest text accepted, in characters [default: 10000] (detector.max_text_chars).
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub max_text_chars: Option<String>,
    /// Engine pool threads; 0 = one per core [default: 0] (detector.engine_threads).
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub engine_threads: Option<String>,
    /// Texts up to N characters run inline when the engine is cheap (whatlang) [default: 1000] (detector.inline_max_chars).
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub inline_max_chars: Option<String>,
    /// Detect calls served at once; more are shed [default: 256] (server.max_concurrent_requests).
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub max_concurrent_requests: Option<String>,
    /// Flag source: a directory (mounted ConfigMap) or a file [default: built-in flags] (flags.path).
    #[arg(long, value_name = "PATH")]
    pub flags: Option<String>,
    /// v2 | v3: how `fractional` buckets [default: v2, flagd's core today] (flags.fractional_version).
    #[arg(long, value_name = "VERSION")]
    pub fractional_version: Option<String>,
    /// Largest request message in bytes [default: 4194304] (server.max_decoding_message_size).
    #[arg(long, value_name = "BYTES", allow_hyphen_values = true)]
    pub max_decoding_message_size: Option<String>,
    /// whatlang | lingua [default: lingua] (detector.default_engine).
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
    /// OTLP/gRPC trace collector URL; export is off when unset [default: $OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or $OTEL_EXPORTER_OTLP_ENDPOINT] (telemetry.otlp_endpoint).
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// Log filter such as `info`; `RUST_LOG` wins when set [default: info] (log.level).
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// GOAWAY after this connection age, ±10 % jitter; `off` never [default: 5m] (connection.max_age).
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    pub max_connection_age: Option<String>,
    /// Time calls get after the age GOAWAY before the connection closes; `off` unbounded [default: 30s] (connection.max_age_grace).
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    pub max_connection_age_grace: Option<String>,
    /// HTTP/2 PING interval; `off` disables [default: 60s] (connection.http2_keepalive_interval).
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    pub http2_keepalive_interval: Option<String>,
    /// Unanswered PING closes the connection after [default: 20s] (connection.http2_keepalive_timeout).
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    pub http2_keepalive_timeout: Option<String>,
    /// TCP keepalive idle time; `off` disables [default: 60s] (connection.tcp_keepalive).
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    pub tcp_keepalive: Option<String>,
    /// Streams open at once per connection [default: 256] (connection.max_concurrent_streams).
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub max_concurrent_streams: Option<String>,
    /// Largest header list in bytes [default: 16384] (connection.max_header_list_size).
    #[arg(long, value_name = "BYTES", allow_hyphen_values = true)]
    pub max_header_list_size: Option<String>,
    /// Reset-before-accepted streams before GOAWAY (rapid reset) [default: 20] (connection.max_pending_accept_reset_streams).
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub max_pending_accept_reset_streams: Option<String>,
}

impl ServeArgs {
    /// The flags as the top settings layer.
    pub fn overrides(&self) -> Overrides {
        let pairs: [(&'static str, &Option<String>); 27] = [
            ("flags.path", &self.flags),
            ("flags.fractional_version", &self.fractional_version),
            ("server.grpc_addr", &self.grpc_addr),
            ("server.admin_addr", &self.admin_addr),
            ("drain.delay", &self.drain_delay),
            ("drain.timeout", &self.drain_timeout),
            ("deployment.track", &self.track),
            ("deployment.version", &self.app_version),
            ("telemetry.otlp_endpoint", &self.otlp_endpoint),
            ("detector.max_text_chars", &self.max_text_chars),
            ("detector.engine_threads", &self.engine_threads),
            ("detector.inline_max_chars", &self.inline_max_chars),
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
            ("connection.max_age", &self.max_connection_age),
            ("connection.max_age_grace", &self.max_connection_age_grace),
            (
                "connection.http2_keepalive_interval",
                &self.http2_keepalive_interval,
            ),
            (
                "connection.http2_keepalive_timeout",
                &self.http2_keepalive_timeout,
            ),
            ("connection.tcp_keepalive", &self.tcp_keepalive),
            (
                "connection.max_concurrent_streams",
                &self.max_concurrent_streams,
            ),
            (
                "connection.max_header_list_size",
                &self.max_header_list_size,
            ),
            (
                "connection.max_pending_accept_reset_streams",
                &self.max_pending_accept_reset_streams,
            ),
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
