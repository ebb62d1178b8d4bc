//! The command line: `serve` (the default) and the operator tools, whose
//! arguments each tool owns ([`crate::tools`]; this module imports them, they
//! never import it).
//!
//! `serve`'s flag values stay strings here and become settings overrides, so
//! every value is checked once, by [`crate::configuration`], with the same
//! one-line messages whatever layer it came from.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::configuration::{Overrides, Settings};
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
        "probe-addr",
        "server.probe_addr",
        "HOST:PORT",
        "gRPC Health listen address for the kubelet's probes",
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
        "Engine threads and turns (detections run at once); 0 = one per core",
    ),
    flag(
        "inline-max-chars",
        "detector.inline_max_chars",
        "N",
        "Texts up to N characters run inline (lingua on an engine turn); longer on the pool",
    ),
    flag(
        "max-concurrent-requests",
        "server.max_concurrent_requests",
        "N",
        "Detect calls served at once (1-65536); more are shed",
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
        "GOAWAY after this connection age (100ms-30d), ±10 % jitter; `off` never",
    ),
    flag(
        "max-connection-age-grace",
        "connection.max_age_grace",
        "DURATION",
        "Time calls get after the age GOAWAY before the connection closes (up to 1d); `off` unbounded",
    ),
    flag(
        "http2-keepalive-interval",
        "connection.http2_keepalive_interval",
        "DURATION",
        "HTTP/2 PING interval (1s-1d); `off` disables",
    ),
    flag(
        "http2-keepalive-timeout",
        "connection.http2_keepalive_timeout",
        "DURATION",
        "Unanswered PING closes the connection after (up to 1h)",
    ),
    flag(
        "tcp-keepalive",
        "connection.tcp_keepalive",
        "DURATION",
        "TCP keepalive idle time (1s-32767s); `off` disables",
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
