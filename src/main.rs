//! The `switchyard` binary: a table of contents. Everything it calls lives in
//! the library; see `src/lib.rs` for the layout.
#![forbid(unsafe_code)]

use clap::Parser;
use switchyard::cli::{Cli, Command, ServeArgs};
use switchyard::exit::{Exit, fail};
use switchyard::startup::{Application, StartupError};
use switchyard::{configuration::Settings, shutdown, telemetry, threads, tools};

/// jemalloc (see `Cargo.toml` and BENCHMARKS.md section 4 for why).
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    let exit = match Cli::parse().command() {
        Command::Serve(args) => serve(&args),
        Command::Check(args) => tools::check::run(&args),
        Command::Flags(cmd) => {
            tools::flags::run(&cmd, &mut std::io::stdout(), &mut std::io::stderr())
        }
        Command::Smoke(args) => tools::smoke::run(&args),
        Command::SmokeWebhook(args) => tools::smoke_webhook::run(&args),
        Command::Watch(args) => tools::watch::run(&args),
    };
    // Exit without waiting for blocking work still running after a forced drain.
    std::process::exit(exit.code());
}

/// Settings (exit 2 if bad), the data-plane runtime, telemetry, build
/// (binds), serve until SIGTERM (this thread drives the application, so the
/// control thread it starts keeps this thread's priority), drain, flush the
/// last spans.
fn serve(args: &ServeArgs) -> Exit {
    let env = switchyard::configuration::process_env();
    let settings = match Settings::load(&env, &args.overrides()) {
        Ok(settings) => settings,
        Err(e) => return fail(Exit::Usage, &e),
    };
    let runtime = match threads::data_plane_runtime(settings.server.data_plane_nice) {
        Ok(runtime) => runtime,
        Err(e) => return fail(Exit::Failed, &e),
    };
    runtime.block_on(async {
        let (tracing, telemetry) = match telemetry::init(&settings) {
            Ok(handles) => handles,
            Err(e) => return fail(Exit::Usage, &e),
        };
        let app = match Application::build(settings, tracing).await {
            Ok(app) => app,
            Err(e @ StartupError::Flags(_)) => return fail(Exit::Usage, &e),
            Err(e) => return fail(Exit::Failed, &e),
        };
        tracing::info!(
            grpc = %app.grpc_addr(),
            probe = %app.probe_addr(),
            admin = %app.admin_addr(),
            "listening"
        );
        let signals = match shutdown::os_signals() {
            Ok(signals) => signals,
            Err(e) => return fail(Exit::Failed, &e),
        };
        let exit = match app.run_until_stopped(signals).await {
            Ok(outcome) => outcome.exit_code(),
            Err(e) => fail(Exit::Failed, &e),
        };
        // Bounded; the runtime keeps driving the exporter meanwhile.
        let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
        exit
    })
}
