//! The command line: `serve` (the default), `check`, `flags`, and the
//! operating tools `smoke` and `watch`.
//!
//! Flag values stay strings here and become settings overrides, so every
//! value is checked once, by [`crate::configuration`], with the same one-line
//! messages whatever layer it came from.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::configuration::{Overrides, Settings};

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

/// `switchyard serve`'s flags: `--config` and one flag per row of
/// [`SERVE_FLAGS`], each overriding the same setting from the file and the
/// environment (`SWITCHYARD__SECTION__KEY`). Values stay strings: the
/// settings loader checks them, with the same messages whatever the layer.
#[derive(Debug, Default, Clone)]
pub struct ServeArgs {
    /// Settings file, YAML or TOML.
    pub config: Option<PathBuf>,
    /// `(setting key, value)` for each flag given.
    pub values: Vec<(&'static str, String)>,
}

/// A `serve` flag: the setting it overrides and its help. The default shown
/// in `--help` is read from [`Settings::default`], never written here.
#[derive(Debug)]
pub struct ServeFlag {
    /// The long flag, `drain-delay`.
    pub long: &'static str,
    /// The setting, `drain.delay`.
    pub key: &'static str,
    pub value_name: &'static str,
    pub help: &'static str,
    /// What an unset optional setting means, for the help text.
    pub unset: Option<&'static str>,
}

const fn flag(
    long: &'static str,
    key: &'static str,
    value_name: &'static str,
    help: &'static str,
) -> ServeFlag {
    ServeFlag {
        long,
        key,
        value_name,
        help,
        unset: None,
    }
}

const fn optional(
    long: &'static str,
    key: &'static str,
    value_name: &'static str,
    help: &'static str,
    unset: &'static str,
) -> ServeFlag {
    ServeFlag {
        long,
        key,
        value_name,
        help,
        unset: Some(unset),
    }
}

/// Every `serve` flag (public interface: the names stay).
pub const SERVE_FLAGS: &[ServeFlag] = &[
    flag(
        "grpc-addr",
        "server.grpc_addr",
        "HOST:PORT",
        "gRPC listen address",
    ),
    flag(
        "admin-addr",
        "server.admin_addr",
        "HOST:PORT",
        "Admin HTTP listen address",
    ),
    flag(
        "drain-delay",
        "drain.delay",
        "DURATION",
        "Time to keep serving after SIGTERM",
    ),
    flag(
        "drain-timeout",
        "drain.timeout",
        "DURATION",
        "Time to wait for in-flight RPCs",
    ),
    flag(
        "track",
        "deployment.track",
        "TRACK",
        "stable | canary | blue | green | shadow",
    ),
    flag(
        "app-version",
        "deployment.version",
        "VERSION",
        "Release version reported in replies, e.g. `v2`",
    ),
    flag(
        "max-text-chars",
        "detector.max_text_chars",
        "N",
        "Longest text accepted, in characters",
    ),
    flag(
        "engine-threads",
        "detector.engine_threads",
        "N",
        "Engine pool threads; 0 = one per core",
    ),
    flag(
        "inline-max-chars",
        "detector.inline_max_chars",
        "N",
        "Texts up to N characters run inline when the engine is cheap (whatlang)",
    ),
    flag(
        "max-concurrent-requests",
        "server.max_concurrent_requests",
        "N",
        "Detect calls served at once; more are shed",
    ),
    optional(
        "flags",
        "flags.path",
        "PATH",
        "Flag source: a directory (mounted ConfigMap) or a file",
        "the built-in flags",
    ),
    flag(
        "fractional-version",
        "flags.fractional_version",
        "VERSION",
        "v2 | v3: how `fractional` buckets (v2 is flagd's core today)",
    ),
    flag(
        "max-decoding-message-size",
        "server.max_decoding_message_size",
        "BYTES",
        "Largest request message in bytes",
    ),
    flag(
        "default-engine",
        "detector.default_engine",
        "ENGINE",
        "whatlang | lingua",
    ),
    flag(
        "liveness-stall-threshold",
        "health.liveness_stall_threshold",
        "DURATION",
        "Runtime stall before liveness fails",
    ),
    optional(
        "ready-file",
        "health.ready_file",
        "PATH",
        "File created when ready, removed when draining",
        "none",
    ),
    optional(
        "log-format",
        "log.format",
        "FORMAT",
        "json | pretty",
        "json unless stdout is a terminal",
    ),
    optional(
        "otlp-endpoint",
        "telemetry.otlp_endpoint",
        "URL",
        "OTLP trace collector URL; export is off when unset",
        "$OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or $OTEL_EXPORTER_OTLP_ENDPOINT",
    ),
    flag(
        "log-level",
        "log.level",
        "FILTER",
        "Log filter such as `info`; `RUST_LOG` wins when set",
    ),
    flag(
        "max-connection-age",
        "connection.max_age",
        "DURATION",
        "GOAWAY after this connection age, ±10 % jitter; `off` never",
    ),
    flag(
        "max-connection-age-grace",
        "connection.max_age_grace",
        "DURATION",
        "Time calls get after the age GOAWAY before the connection closes; `off` unbounded",
    ),
    flag(
        "http2-keepalive-interval",
        "connection.http2_keepalive_interval",
        "DURATION",
        "HTTP/2 PING interval; `off` disables",
    ),
    flag(
        "http2-keepalive-timeout",
        "connection.http2_keepalive_timeout",
        "DURATION",
        "Unanswered PING closes the connection after",
    ),
    flag(
        "tcp-keepalive",
        "connection.tcp_keepalive",
        "DURATION",
        "TCP keepalive idle time; `off` disables",
    ),
    flag(
        "max-concurrent-streams",
        "connection.max_concurrent_streams",
        "N",
        "Streams open at once per connection",
    ),
    flag(
        "max-header-list-size",
        "connection.max_header_list_size",
        "BYTES",
        "Largest header list in bytes",
    ),
    flag(
        "max-pending-accept-reset-streams",
        "connection.max_pending_accept_reset_streams",
        "N",
        "Reset-before-accepted streams before GOAWAY (rapid reset)",
    ),
];

impl ServeFlag {
    /// `help [default: VALUE] (key)`, the default read from the settings.
    fn help_text(&self) -> String {
        let default = Settings::default_of(self.key)
            .or_else(|| self.unset.map(str::to_owned))
            .unwrap_or_else(|| "none".to_owned());
        format!("{} [default: {default}] ({})", self.help, self.key)
    }
}

impl ServeArgs {
    /// The flags as the top settings layer.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            config_file: self.config.clone(),
            values: self.values.clone(),
        }
    }
}

impl clap::FromArgMatches for ServeArgs {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let mut args = Self::default();
        args.update_from_arg_matches(matches)?;
        Ok(args)
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        if let Some(config) = matches.get_one::<PathBuf>("config") {
            self.config = Some(config.clone());
        }
        for flag in SERVE_FLAGS {
            if let Some(value) = matches.get_one::<String>(flag.key) {
                self.values.retain(|(key, _)| *key != flag.key);
                self.values.push((flag.key, value.clone()));
            }
        }
        Ok(())
    }
}

impl Args for ServeArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        let config = clap::Arg::new("config")
            .long("config")
            .value_name("FILE")
            .value_parser(clap::value_parser!(PathBuf))
            .help("Settings file, YAML or TOML");
        SERVE_FLAGS.iter().fold(cmd.arg(config), |cmd, flag| {
            cmd.arg(
                clap::Arg::new(flag.key)
                    .long(flag.long)
                    .value_name(flag.value_name)
                    .allow_hyphen_values(true)
                    .help(flag.help_text()),
            )
        })
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
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

#[cfg(test)]
mod serve_flag_tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn every_serve_flag_names_a_real_setting_and_shows_its_default() {
        let settings = serde_json::to_value(Settings::default()).expect("serialize");
        for flag in SERVE_FLAGS {
            let exists = flag
                .key
                .split('.')
                .try_fold(&settings, |v, part| v.get(part))
                .is_some();
            assert!(exists, "--{} names no setting {}", flag.long, flag.key);
            let default_known = Settings::default_of(flag.key).is_some() || flag.unset.is_some();
            assert!(default_known, "--{}: say what unset means", flag.long);
        }
        let help = SERVE_FLAGS
            .iter()
            .find(|f| f.long == "drain-delay")
            .expect("drain-delay")
            .help_text();
        assert_eq!(
            help,
            "Time to keep serving after SIGTERM [default: 5s] (drain.delay)"
        );
    }

    #[test]
    fn serve_flags_become_overrides_of_their_settings() {
        let cli = Cli::try_parse_from([
            "switchyard",
            "--drain-delay",
            "250ms",
            "--max-connection-age",
            "off",
            "--config",
            "s.yaml",
        ])
        .expect("parses");
        let Command::Serve(args) = cli.command() else {
            panic!("a bare switchyard serves");
        };
        let overrides = args.overrides();
        assert_eq!(overrides.config_file, Some(PathBuf::from("s.yaml")));
        assert_eq!(
            overrides.values,
            vec![
                ("drain.delay", "250ms".to_owned()),
                ("connection.max_age", "off".to_owned())
            ]
        );
        let without_file = Overrides {
            config_file: None,
            values: overrides.values,
        };
        let settings = Settings::load(&Default::default(), &without_file).expect("valid");
        assert_eq!(settings.drain.delay, std::time::Duration::from_millis(250));
        assert_eq!(settings.connection.max_age, None);
    }
}
