//! The `switchyard` binary: a table of contents. Everything it calls lives in
//! the library; see `src/lib.rs` for the layout.
#![forbid(unsafe_code)]

use clap::Parser;
use switchyard::cli::{self, Cli, Command, EXIT_BAD_CONFIG, ServeArgs, fail};
use switchyard::startup::{Application, StartupError};
use switchyard::{configuration::Settings, shutdown, telemetry};

fn main() {
    let code = match Cli::parse().command() {
        Command::Serve(args) => serve(&args),
        Command::Check(args) => cli::run_check(&args),
        Command::Flags(cmd) => cli::run_flags(&cmd, &mut std::io::stdout(), &mut std::io::stderr()),
        Command::Smoke(args) => cli::run_smoke(&args),
        Command::SmokeWebhook(args) => cli::run_smoke_webhook(&args),
        Command::Watch(args) => cli::run_watch(&args),
    };
    // Exit without waiting for blocking work still running after a forced drain.
    std::process::exit(code);
}

/// Settings (exit 2 if bad), telemetry, build (binds), serve until SIGTERM,
/// drain, flush the last spans.
fn serve(args: &ServeArgs) -> i32 {
    let env = std::env::vars().collect();
    let settings = match Settings::load(&env, &args.overrides()) {
        Ok(settings) => settings,
        Err(e) => return fail(EXIT_BAD_CONFIG, &e),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => return fail(1, &e),
    };
    runtime.block_on(async {
        let (tracing, telemetry) = match telemetry::init(&settings) {
            Ok(handles) => handles,
            Err(e) => return fail(EXIT_BAD_CONFIG, &e),
        };
        let app = match Application::build(settings, tracing).await {
            Ok(app) => app,
            Err(e @ StartupError::Flags(_)) => return fail(EXIT_BAD_CONFIG, &e),
            Err(e) => return fail(1, &e),
        };
        tracing::info!(grpc = %app.grpc_addr(), admin = %app.admin_addr(), "listening");
        let signals = match shutdown::os_signals() {
            Ok(signals) => signals,
            Err(e) => return fail(1, &e),
        };
        let code = match app.run_until_stopped(signals).await {
            Ok(outcome) => outcome.exit_code(),
            Err(e) => fail(1, &e),
        };
        // Bounded; the runtime keeps driving the exporter meanwhile.
        let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
        code
    })
}
