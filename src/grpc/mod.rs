//! The gRPC edge: generated proto types, the tonic services, the single
//! mapping from domain errors to `tonic::Status`, the request-edge layer, and
//! the canonical names of status codes (shared by the server and the tools).
//!
//! Proto types do not travel past this module: handlers convert requests into
//! domain types on the way in and domain outcomes into replies on the way out.

pub mod admin;
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

/// The canonical upper-case name of a gRPC status code (`UNAVAILABLE`), as
/// the gRPC spec, grpcurl and the `fault-injection` flag spell it (metric
/// labels use Go's spelling instead: [`crate::metrics::code_name`]).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_its_spec_name() {
        let names: Vec<&str> = (0..=16)
            .map(|n| code_name(tonic::Code::from_i32(n)))
            .collect();
        assert_eq!(
            names,
            [
                "OK",
                "CANCELLED",
                "UNKNOWN",
                "INVALID_ARGUMENT",
                "DEADLINE_EXCEEDED",
                "NOT_FOUND",
                "ALREADY_EXISTS",
                "PERMISSION_DENIED",
                "RESOURCE_EXHAUSTED",
                "FAILED_PRECONDITION",
                "ABORTED",
                "OUT_OF_RANGE",
                "UNIMPLEMENTED",
                "INTERNAL",
                "UNAVAILABLE",
                "DATA_LOSS",
                "UNAUTHENTICATED",
            ]
        );
    }
}
