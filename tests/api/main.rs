//! Switchyard's behaviour, one module per capability. Every test talks to a
//! real server on 127.0.0.1 (port 0) with a real tonic client, or runs the
//! real binary.

// Tests find their tools (grpcurl, kubectl, promtool, ...) through the
// environment, which the service itself reads only through its settings.
#![allow(clippy::disallowed_methods)]

mod accuracy;
mod admin;
mod alerts;
mod bad_input;
mod binary;
mod canary_analysis;
mod connections;
mod dashboard;
mod detect;
mod drain;
mod engines;
mod envoy;
mod fault_injection;
mod flagd_testbed;
mod flags;
mod flags_python;
mod grpcurl;
mod health;
mod helpers;
mod hostile;
mod kube;
mod layout;
mod manifests;
mod metrics;
mod ofrep;
mod process;
mod proxy;
mod readme;
mod rollout;
mod shadow;
mod smoke;
mod tools;
mod tracing;
mod tracing_export;
mod watch;
