//! The command line: `serve` (the default), `check`, `flags`, and the
//! operating tools `smoke` and `watch`.
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

/// `switchyard flags ...`.
#[derive(Debug, Subcommand)]
pub enum FlagsCommand {
    /// Check flag files: one line per error (file, flag, problem) and exit 1;
    /// load-time warnings (problems flagd tolerates) are listed apart and
    /// keep exit 0.
    Validate {
        /// Files or directories (as `serve --flags` reads them).
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// Evaluate flags for a context and print JSON (value, variant, reason,
    /// errorCode, metadata); exit 1 when a result is an error (such as
    /// FLAG_NOT_FOUND or TYPE_MISMATCH).
    Eval {
        /// A file or directory.
        #[arg(value_name = "PATH")]
        path: PathBuf,
        /// One flag; without it, every flag, keyed by flag key.
        #[arg(long, value_name = "KEY")]
        flag: Option<String>,
        /// The evaluation context in flagd's shape, e.g. '{"targetingKey": "alice"}'.
        #[arg(long, value_name = "JSON", default_value = "{}")]
        context: String,
        /// Evaluate as this type (OpenFeature's typed evaluation): a variant
        /// of another type is a TYPE_MISMATCH. Without it, any type.
        #[arg(long = "type", value_name = "TYPE", value_enum)]
        kind: Option<crate::flags::FlagType>,
        /// How `fractional` buckets, as `serve --fractional-version`.
        #[arg(long, value_name = "VERSION", value_enum, default_value = "v2")]
        fractional_version: crate::flags::FractionalVersion,
    },
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

/// `switchyard smoke`.
#[derive(Debug, Args)]
pub struct SmokeArgs {
    /// Server address.
    #[arg(long, value_name = "HOST:PORT")]
    pub addr: String,
    /// Fail unless GetInfo and every Detect reply report this release version.
    #[arg(long, value_name = "V")]
    pub expect_version: Option<String>,
    /// Bound on connecting and on each call, in seconds.
    #[arg(
        long,
        default_value_t = 5.0,
        value_name = "SECONDS",
        allow_hyphen_values = true
    )]
    pub timeout: f64,
}

/// `switchyard smoke-webhook`.
#[derive(Debug, Args)]
pub struct SmokeWebhookArgs {
    /// Where to listen for the webhook's POSTs.
    #[arg(long, default_value = "0.0.0.0:8080", value_name = "HOST:PORT")]
    pub listen: std::net::SocketAddr,
    /// Bound on connecting and on each smoke call, in seconds.
    #[arg(
        long,
        default_value_t = 5.0,
        value_name = "SECONDS",
        allow_hyphen_values = true
    )]
    pub timeout: f64,
}

/// `switchyard watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Server (or mesh entry) address.
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

/// Runs `switchyard flags ...`, writing results to `out` and problems to
/// `err`. Returns the exit code: 0 valid/evaluated (warnings allowed), 1
/// invalid flags or an evaluation that is an error, 2 bad usage (such as a
/// context that is not JSON).
pub fn run_flags(
    command: &FlagsCommand,
    out: &mut dyn std::io::Write,
    err: &mut dyn std::io::Write,
) -> i32 {
    use crate::flags::{Context, FractionalVersion, store::load_path};
    use serde_json::{Map, Value, json};

    match command {
        FlagsCommand::Validate { paths } => {
            let mut code = 0;
            for path in paths {
                match load_path(path, FractionalVersion::default()) {
                    Ok(set) => {
                        let warnings = set.warnings();
                        let _ = writeln!(
                            out,
                            "ok: {} ({} flags, revision {}, {} warnings)",
                            path.display(),
                            set.keys().len(),
                            set.revision,
                            warnings.len()
                        );
                        for w in warnings {
                            let _ = writeln!(err, "warning: {w}");
                        }
                    }
                    Err(errors) => {
                        code = 1;
                        for e in errors.0 {
                            let _ = writeln!(err, "{e}");
                        }
                    }
                }
            }
            code
        }
        FlagsCommand::Eval {
            path,
            flag,
            context,
            kind,
            fractional_version,
        } => {
            let ctx = match serde_json::from_str::<Value>(context)
                .map_err(|e| e.to_string())
                .and_then(Context::from_json)
            {
                Ok(ctx) => ctx,
                Err(e) => {
                    let _ = writeln!(err, "switchyard: invalid --context: {e}");
                    return 2;
                }
            };
            let set = match load_path(path, *fractional_version) {
                Ok(set) => set,
                Err(errors) => {
                    for e in errors.0 {
                        let _ = writeln!(err, "{e}");
                    }
                    return 1;
                }
            };
            let mut failed = false;
            let mut one = |key: &str| {
                let r = match kind {
                    Some(kind) => set.evaluate_as(key, &ctx, *kind),
                    None => set.evaluate(key, &ctx),
                };
                let mut obj = Map::new();
                obj.insert("key".into(), json!(key));
                obj.insert("value".into(), r.value.cloned().unwrap_or(Value::Null));
                obj.insert(
                    "variant".into(),
                    r.variant.map_or(Value::Null, |v| json!(v)),
                );
                obj.insert("reason".into(), json!(r.reason.as_str()));
                if let Some(e) = r.error {
                    failed = true;
                    obj.insert("errorCode".into(), json!(e.as_str()));
                }
                obj.insert("metadata".into(), Value::Object(r.metadata.clone()));
                Value::Object(obj)
            };
            let result = match flag {
                Some(key) => one(key),
                None => Value::Object(
                    set.keys()
                        .into_iter()
                        .map(|k| (k.to_owned(), one(k)))
                        .collect(),
                ),
            };
            let _ = writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&result).unwrap_or_default()
            );
            i32::from(failed)
        }
    }
}

/// Exit code for bad configuration or flags at startup (before binding).
pub const EXIT_BAD_CONFIG: i32 = 2;

/// Prints `switchyard: ERR` on one line to stderr and returns `code`.
pub fn fail(code: i32, err: &dyn std::fmt::Display) -> i32 {
    let line = err
        .to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    eprintln!("switchyard: {line}");
    code
}

/// Runs `switchyard check`: 0 when SERVING, 1 otherwise, 2 for bad usage.
pub fn run_check(args: &CheckArgs) -> i32 {
    let Ok(timeout) = std::time::Duration::try_from_secs_f64(args.timeout) else {
        return fail(
            EXIT_BAD_CONFIG,
            &format!("invalid --timeout {}", args.timeout),
        );
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let result =
        runtime.map(|rt| rt.block_on(crate::check::check(&args.addr, &args.service, timeout)));
    match result {
        Ok(Ok(status)) => {
            println!("{:?}: {}", args.service, status.as_str_name());
            i32::from(status.as_str_name() != "SERVING")
        }
        Ok(Err(e @ crate::check::CheckError::Invalid(_))) => fail(EXIT_BAD_CONFIG, &e),
        Ok(Err(e)) => fail(1, &e),
        Err(e) => fail(1, &e),
    }
}

/// A positive, finite number of seconds, or a usage error naming `flag`.
fn seconds(flag: &str, value: f64) -> Result<std::time::Duration, String> {
    std::time::Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("invalid {flag} {value}: expected a positive number of seconds"))
}

fn current_thread_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// Runs `switchyard smoke`: a line per check on stdout; 0 when all pass, 1 at
/// the first failure, 2 for bad usage.
pub fn run_smoke(args: &SmokeArgs) -> i32 {
    let timeout = match seconds("--timeout", args.timeout) {
        Ok(timeout) => timeout,
        Err(e) => return fail(EXIT_BAD_CONFIG, &e),
    };
    let opts = crate::smoke::SmokeOptions {
        addr: args.addr.clone(),
        expect_version: args.expect_version.clone(),
        timeout,
    };
    let runtime = match current_thread_runtime() {
        Ok(runtime) => runtime,
        Err(e) => return fail(1, &e),
    };
    let mut out = std::io::stdout();
    match runtime.block_on(crate::smoke::run(&opts, &mut out)) {
        Ok(_) => 0,
        Err(e @ crate::smoke::SmokeError::Addr(_)) => fail(e.exit_code(), &e),
        // The FAIL line is already on stdout.
        Err(e) => e.exit_code(),
    }
}

/// Runs `switchyard smoke-webhook` until SIGTERM or Ctrl-C; 2 for bad usage,
/// 1 when it cannot listen.
pub fn run_smoke_webhook(args: &SmokeWebhookArgs) -> i32 {
    let timeout = match seconds("--timeout", args.timeout) {
        Ok(timeout) => timeout,
        Err(e) => return fail(EXIT_BAD_CONFIG, &e),
    };
    let runtime = match current_thread_runtime() {
        Ok(runtime) => runtime,
        Err(e) => return fail(1, &e),
    };
    runtime.block_on(async {
        use futures::StreamExt;
        let listener = match tokio::net::TcpListener::bind(args.listen).await {
            Ok(listener) => listener,
            Err(e) => return fail(1, &format!("cannot listen on {}: {e}", args.listen)),
        };
        let mut signals = match crate::shutdown::os_signals() {
            Ok(signals) => signals,
            Err(e) => return fail(1, &e),
        };
        let stop = async move {
            signals.next().await;
        };
        match crate::smoke_webhook::serve(listener, timeout, stop).await {
            Ok(()) => 0,
            Err(e) => fail(1, &e),
        }
    })
}

/// Runs `switchyard watch` until `--duration` passes or Ctrl-C: a live view
/// on a terminal, a line per second otherwise, then the summary. 0 when no
/// call failed, 1 otherwise, 2 for bad usage.
pub fn run_watch(args: &WatchArgs) -> i32 {
    use std::io::IsTerminal;

    use crate::watch::{self, LiveView, PlainView, View, WatchOptions};

    let duration = match args.duration.map(|d| seconds("--duration", d)).transpose() {
        Ok(duration) => duration,
        Err(e) => return fail(EXIT_BAD_CONFIG, &e),
    };
    let opts = WatchOptions {
        addr: args.addr.clone(),
        rps: args.rps,
        user_ids: args.user_ids,
        duration,
        deadline: watch::CALL_DEADLINE,
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => return fail(1, &e),
    };
    let mut view: Box<dyn View> = if std::io::stdout().is_terminal() {
        Box::new(LiveView::new(&args.addr))
    } else {
        Box::new(PlainView::new(std::io::stdout()))
    };
    let ctrl_c = async {
        // Without a handler, Ctrl-C ends the process the usual way.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    match runtime.block_on(watch::run(&opts, ctrl_c, view.as_mut())) {
        Ok(summary) => i32::from(summary.total.failed() > 0),
        Err(e) => fail(EXIT_BAD_CONFIG, &e),
    }
}
