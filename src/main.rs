//! The `switchyard` binary: a table of contents. Everything it calls lives in
//! the library; see `src/lib.rs` for the layout.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::time::Duration;

use clap::Parser;
use switchyard::cli::{CheckArgs, Cli, Command, ServeArgs};
use switchyard::{check, configuration::Settings, shutdown, startup::Application, telemetry};

/// Exit code for bad configuration (before anything binds).
const EXIT_BAD_CONFIG: i32 = 2;

fn main() {
    let code = match Cli::parse().command() {
        Command::Serve(args) => serve(&args),
        Command::Check(args) => probe(&args),
    };
    std::process::exit(code);
}

fn serve(args: &ServeArgs) -> i32 {
    let env: HashMap<String, String> = std::env::vars().collect();
    let settings = match Settings::load(&env, &args.overrides()) {
        Ok(settings) => settings,
        Err(e) => return fail(EXIT_BAD_CONFIG, &e),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => return fail(1, &e),
    };
    let _telemetry = telemetry::init(&settings.log);
    runtime
        .block_on(async {
            let app = Application::build(settings).await?;
            tracing::info!(grpc = %app.grpc_addr(), admin = %app.admin_addr(), "listening");
            let outcome = app.run_until_stopped(shutdown::os_signals()?).await?;
            Ok::<_, anyhow::Error>(outcome.exit_code())
        })
        .unwrap_or_else(|e| fail(1, &e))
}

fn probe(args: &CheckArgs) -> i32 {
    let Ok(timeout) = Duration::try_from_secs_f64(args.timeout) else {
        return fail(
            EXIT_BAD_CONFIG,
            &format!("invalid --timeout {}", args.timeout),
        );
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let result = runtime.map(|rt| rt.block_on(check::check(&args.addr, &args.service, timeout)));
    match result {
        Ok(Ok(status)) => {
            println!("{:?}: {}", args.service, status.as_str_name());
            i32::from(status.as_str_name() != "SERVING")
        }
        Ok(Err(e)) => fail(1, &e),
        Err(e) => fail(1, &e),
    }
}

fn fail(code: i32, err: &dyn std::fmt::Display) -> i32 {
    eprintln!("switchyard: {err}");
    code
}
