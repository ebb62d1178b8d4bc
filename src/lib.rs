//! Switchyard: a gRPC language-detection service built to be released with
//! zero downtime on Kubernetes and Istio.
//!
//! The job (detecting the language of a text with one of two engines) is
//! real but small; what the crate teaches is everything around it: standard
//! health with readiness and liveness semantics, a bounded graceful drain that
//! follows the Kubernetes termination contract, and one place that decides
//! which engine answers, which the release machinery (flags, canary, shadow)
//! drives.
//!
//! # Layout
//!
//! - [`configuration`]: the settings, plain documented data layered from
//!   built-in defaults, an optional file, `SWITCHYARD__*` environment and
//!   command-line flags, validated once before anything binds.
//! - [`cli`]: the command line (`serve` and the tools' subcommands);
//!   `serve`'s flags become settings.
//! - [`startup`]: [`startup::Application`] binds the listeners in `build` and
//!   owns all the wiring; `run_until_stopped` serves until a stop signal and
//!   then drains in the five steps of the termination contract.
//! - [`drain`]: the five bounded steps of the termination contract, one
//!   method each, every log line timed from the stop signal.
//! - [`engine`]: the two detection engines (`whatlang`, `lingua`) behind one
//!   trait, and the loader that readies them at startup.
//! - [`accuracy`]: how often each engine is right on the project's labelled
//!   evaluation set, for BENCHMARKS.md and the test suite's accuracy floor.
//! - [`detection`]: the domain service: validates input, sheds load above the
//!   concurrency limit, asks [`release`] which engine answers and runs it.
//! - [`execution`]: where engine work runs: the concurrency slots, inline
//!   execution of cheap engines on short texts, a fixed engine pool (one
//!   thread per core) with a bounded queue, the warm-up readiness waits for,
//!   and the engine and runtime USE metrics.
//! - [`engine::warm_up`]: the texts every engine detects before readiness.
//! - [`release`]: the per-request decisions read from the flags: which
//!   engine answers, which candidate runs dark, the live input limit.
//! - [`fault`]: fault injection by flag (`fault-injection`): aborts and
//!   delays on a share of Detect calls, to rehearse a rollback.
//! - [`flags`]: flagd-format feature flags: the compiled evaluator and the
//!   hot-reloading store over a mounted ConfigMap.
//! - [`dark_launch`]: candidates run off the request path, bounded, compared.
//! - [`health`]: readiness, liveness and the standard `grpc.health.v1`
//!   service built on them, the liveness watchdog and the ready file.
//! - [`grpc`]: the edge: proto types, the tonic services, the one mapping from
//!   domain errors to `tonic::Status`, the request-edge layer (deadlines,
//!   shadow marking, and per-RPC observation: metrics, span, access line),
//!   and [`grpc::serve`], which serves HTTP/2 connections and owns each
//!   one's life (age with jitter and grace, keepalive, limits, the drain's
//!   GOAWAY); [`grpc::codes`] spells status codes for the server and
//!   the tools alike.
//! - [`metrics`]: the per-application Prometheus registry: go-grpc-prometheus
//!   RED metrics and Switchyard's own.
//! - [`process_metrics`]: the conventional `process_*` metrics from `/proc`.
//! - [`admin_http`]: the plain-HTTP admin listener (`/healthz`, `/readyz`,
//!   `/metrics`, and [`ofrep`]: OpenFeature Remote Evaluation of the live
//!   flags).
//! - [`shutdown`]: stop signals and the drain outcome.
//! - [`exit`]: the one exit-code type ([`exit::Exit`]: 0 ok, 1 failed, 2
//!   bad usage or configuration, 130 interrupted) and the one-line error
//!   every command prints before a non-zero exit.
//! - [`tools`]: the operator tools, each with its own arguments and `run`,
//!   on one runtime helper: [`tools::check`] (the health probe),
//!   [`tools::flags`] (flag files offline), [`tools::smoke`] (the
//!   post-deploy smoke test), [`tools::smoke_webhook`] (the smoke test
//!   behind Flagger's pre-rollout webhook), [`tools::watch`] (live shares and
//!   failures during a release; its statistics, [`tools::watch::Tally`], are
//!   pure and unit tested), and [`tools::client`], the one address parser
//!   ([`tools::client::Target`]) they all use.
//! - [`telemetry`]: process-wide logs (JSON lines carrying trace ids) and
//!   OpenTelemetry traces through a handle the application is given
//!   ([`telemetry::Tracing`]: each RPC's spans with W3C and B3 parents, the
//!   SDK's batch processor, `opentelemetry-otlp`'s exporter, no globals);
//!   `init` returns the handle and a guard that flushes the last spans
//!   after the drain.
//!
//! # The path of a request
//!
//! A `Detect` call enters tonic, passes the edge layer (which opens the
//! server span from the caller's trace context, starts the RED metrics and
//! turns the client's `grpc-timeout` into `DEADLINE_EXCEEDED`), reaches
//! [`grpc::detector`], which converts the proto request into a domain
//! [`detection::RequestContext`] and text, and calls
//! [`detection::DetectionService::detect`]. That checks readiness, the text
//! limits and a concurrency permit, asks [`release::decide`] for the
//! engine, runs it inline or on the engine pool ([`execution`]) and returns
//! a domain [`detection::Outcome`], which the edge turns back into a
//! `DetectResponse`.
#![forbid(unsafe_code)]

pub mod accuracy;
pub mod admin_http;
pub mod cli;
pub mod configuration;
pub mod dark_launch;
pub mod detection;
pub mod drain;
pub mod engine;
pub mod execution;
pub mod exit;
pub mod fault;
pub mod flags;
pub mod grpc;
pub mod health;
pub mod metrics;
pub mod ofrep;
pub mod process_metrics;
pub mod release;
pub mod shutdown;
pub mod startup;
pub mod telemetry;
pub mod tools;

/// The build's version (`served_by.version` unless `--app-version` is set).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit the binary was built from ("unknown" outside a checkout).
pub const GIT_COMMIT: &str = env!("SWITCHYARD_GIT_COMMIT");
