//! The gRPC edge: generated proto types, the tonic services, the single
//! mapping from domain errors to `tonic::Status`, the RPC catalog, the
//! request-edge layer, and the canonical names of status codes ([`codes`],
//! shared by the server and the tools).
//!
//! Proto types do not travel past this module: handlers convert requests into
//! domain types on the way in and domain outcomes into replies on the way out.

pub mod admin;
pub mod catalog;
pub mod codes;
pub mod detector;
pub mod edge;
pub mod observe;
pub mod serve;

use tonic::Status;

use crate::detection::DetectError;

/// The generated `switchyard.v1` types and services.
pub mod pb {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("switchyard.v1");

    /// The encoded descriptor set of proto/, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/switchyard_descriptor.bin"));
}

/// The one mapping from the domain error to a gRPC status.
impl From<DetectError> for Status {
    fn from(err: DetectError) -> Self {
        let message = err.to_string();
        match err {
            DetectError::EmptyText | DetectError::TextTooLong { .. } => {
                Status::invalid_argument(message)
            }
            DetectError::NotReady => Status::unavailable(message),
            DetectError::Overloaded { .. } => Status::resource_exhausted(message),
            DetectError::Engine { .. } => {
                tracing::error!(error = %message, "engine failure");
                Status::internal(message)
            }
            DetectError::Injected(injected) => Status::new(injected.code, message),
        }
    }
}
