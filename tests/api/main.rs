//! Switchyard's behaviour, one module per capability. Every test talks to a
//! real server on 127.0.0.1 (port 0) with a real tonic client, or runs the
//! real binary.

mod admin;
mod bad_input;
mod binary;
mod dashboard;
mod detect;
mod drain;
mod engines;
mod envoy;
mod flags;
mod grpcurl;
mod health;
mod helpers;
mod kube;
mod manifests;
mod metrics;
mod process;
mod proxy;
mod rollout;
mod shadow;
mod smoke;
mod tracing;
mod watch;
