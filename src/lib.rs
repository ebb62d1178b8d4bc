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
//! One line per module, one owner per concern. Dependencies point one way
//! (`tests/api/layout.rs` keeps the module graph free of cycles).
//!
//! Wiring and configuration:
//! - [`startup`]: the one wiring place: `Application::build` constructs the
//!   graph and binds; `run_until_stopped` starts, serves, supervises, drains.
//! - [`configuration`]: the settings: defaults in the types, layered, validated once.
//! - [`cli`]: the command line; `serve`'s flags and help derived from the settings.
//! - [`drain`]: the five bounded steps of the termination contract, one method each.
//! - [`shutdown`]: stop signals as a stream, and how a drain ended.
//! - [`exit`]: the one exit-code type (0, 1, 2, 130) and the one-line error.
//! - [`threads`]: the data-plane runtime (at `server.data_plane_nice`) and
//!   the control thread (probe and admin listeners) at the default priority.
//!
//! The job:
//! - [`detection`]: the domain service (decide, validate, admit, run) and its
//!   [`detection::Recorder`] (its metrics, log fields, span attributes).
//! - [`release`]: the per-request decisions read from the flags.
//! - [`execution`]: where engine work runs (slots, engine turns, inline, the engine pool) and its USE series.
//! - [`engine`]: the two engines behind one trait, their loader and [`engine::warm_up`].
//! - [`dark_launch`]: candidates off the request path, bounded, compared.
//! - [`fault`]: fault injection by the `fault-injection` flag.
//! - [`accuracy`]: the labelled evaluation set and the accuracy tables.
//!
//! Flags, health, the edge:
//! - [`flags`]: flagd-format flags: the compiled evaluator and the hot-reloading store.
//! - [`health`]: readiness, liveness, `grpc.health.v1`, the watchdog, the ready file.
//! - [`grpc`]: the edge: proto types, services, the one `DetectError` →
//!   `Status` mapping, [`grpc::catalog`] (the RPC catalog and its RED series),
//!   [`grpc::edge`] (deadlines, shadow, observation), [`grpc::serve`]
//!   (HTTP/2 connections and their life), [`grpc::codes`].
//! - [`admin_http`]: `/healthz`, `/readyz`, `/metrics`, and [`ofrep`] (OpenFeature remote evaluation).
//!
//! Observability:
//! - [`metrics`]: the application's registry; each subsystem registers what it owns.
//! - [`process_metrics`]: the conventional `process_*` series from `/proc`.
//! - [`telemetry`]: JSON logs, and traces through a [`telemetry::Tracing`]
//!   handle passed down (SDK spans, `opentelemetry-otlp`, no globals).
//!
//! Operator tools:
//! - [`tools`]: `check`, `flags`, `smoke`, `smoke-webhook`, `watch`, and the
//!   one address parser ([`tools::client::Target`]).
//!
//! # The path of a request
//!
//! A `Detect` call enters [`grpc::serve`]'s HTTP/2 connection, then the
//! edge ([`grpc::edge`]: the method from [`grpc::catalog`], the server span
//! from the caller's trace context, RED metrics, `grpc-timeout` as
//! `DEADLINE_EXCEEDED`), then tonic's routes to [`grpc::detector`], which
//! converts the proto request into a [`detection::RequestContext`] and text
//! and calls [`detection::DetectionService::detect`]: decide (one flag set
//! for the whole call, [`release::decide`]), validate, admit (a slot or
//! `RESOURCE_EXHAUSTED`), run (inline or on the engine pool,
//! [`execution`]), hand the text to the dark launcher if a candidate is
//! set. The [`detection::Outcome`] goes back to the edge as a
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
pub mod threads;
pub mod tools;

/// The build's version (`served_by.version` unless `--app-version` is set).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit the binary was built from ("unknown" outside a checkout).
pub const GIT_COMMIT: &str = env!("SWITCHYARD_GIT_COMMIT");
