//! What the operating tools (`smoke`, `watch`) share as gRPC clients: turning
//! the `--addr HOST:PORT` a person typed into a tonic endpoint, strictly, so
//! that a typo is a usage error (exit 2) rather than a failed check (exit 1).

use std::time::Duration;

use http::uri::Authority;
use tonic::transport::Endpoint;

/// An `--addr` that is not `HOST:PORT`.
#[derive(Debug, thiserror::Error)]
#[error("invalid --addr {addr:?}: {reason}")]
pub struct AddrError {
    /// What was given.
    pub addr: String,
    /// What is wrong with it.
    pub reason: String,
}

/// A plaintext HTTP/2 endpoint for `addr` (`HOST:PORT`, no scheme), with
/// `timeout` both for connecting and for each call.
pub fn endpoint(addr: &str, timeout: Duration) -> Result<Endpoint, AddrError> {
    let invalid = |reason: &str| AddrError {
        addr: addr.to_owned(),
        reason: reason.to_owned(),
    };
    if addr.contains("://") {
        return Err(invalid("expected HOST:PORT without a scheme"));
    }
    let authority: Authority = addr
        .parse()
        .map_err(|_| invalid("expected HOST:PORT, e.g. 127.0.0.1:50051"))?;
    if addr.contains('@') || authority.host().is_empty() {
        return Err(invalid("expected HOST:PORT, e.g. 127.0.0.1:50051"));
    }
    match authority.port_u16() {
        Some(port) if port > 0 => {}
        _ => return Err(invalid("a port between 1 and 65535 is required")),
    }
    if timeout.is_zero() {
        return Err(invalid("the timeout must be positive"));
    }
    Endpoint::from_shared(format!("http://{addr}"))
        .map(|e| e.connect_timeout(timeout).timeout(timeout))
        .map_err(|e| invalid(&e.to_string()))
}

/// Whether a failed call was never processed by any server, so sending it
/// again is safe: gRPC's transparent retry (gRFC A6), which tonic's client
/// does not do. Two cases meet a GOAWAY (a connection-age or drain one): the
/// request was still queued in the client when its connection closed
/// (hyper: canceled, never sent), or the server's final GOAWAY named a last
/// stream below it (h2: GOAWAY with NO_ERROR, refused unprocessed).
pub fn never_processed(status: &tonic::Status) -> bool {
    let mut next = std::error::Error::source(status);
    while let Some(cause) = next {
        if cause
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_canceled)
        {
            return true;
        }
        if let Some(h2) = cause.downcast_ref::<h2::Error>()
            && h2.is_go_away()
            && h2.is_remote()
            && h2.reason() == Some(h2::Reason::NO_ERROR)
        {
            return true;
        }
        next = cause.source();
    }
    false
}

/// Why a connection failed, cause by cause (`tcp connect error: Connection
/// refused (os error 111)`), without tonic's generic outer "transport error".
pub fn connect_error(err: &tonic::transport::Error) -> String {
    let mut causes = Vec::new();
    let mut next = std::error::Error::source(err);
    while let Some(cause) = next {
        let cause_text = cause.to_string();
        // tonic and hyper wrap the same connect error twice.
        if causes.last() != Some(&cause_text) {
            causes.push(cause_text);
        }
        next = cause.source();
    }
    if causes.is_empty() {
        err.to_string()
    } else {
        causes.join(": ")
    }
}

/// The canonical upper-case name of a gRPC status code (`UNAVAILABLE`), as
/// grpcurl and the gRPC docs spell it.
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
    fn host_and_port_are_required_and_nothing_else() {
        let t = Duration::from_secs(1);
        for good in ["127.0.0.1:50051", "localhost:1", "[::1]:50051", "svc.ns:80"] {
            assert!(endpoint(good, t).is_ok(), "{good}");
        }
        for bad in [
            "",
            "localhost",
            "127.0.0.1",
            "127.0.0.1:0",
            "127.0.0.1:99999",
            "http://127.0.0.1:50051",
            "user@host:1",
            "not an address",
            ":50051",
            "host:port",
        ] {
            let err = endpoint(bad, t).expect_err(bad);
            assert!(err.to_string().starts_with("invalid --addr"), "{err}");
        }
        assert!(endpoint("127.0.0.1:1", Duration::ZERO).is_err());
    }
}
